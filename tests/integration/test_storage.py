"""The S3 port against a real S3 HTTP server (moto): download links for the address users reach."""

from __future__ import annotations

from dataclasses import replace
from urllib.parse import urlsplit

import aiohttp
from yarl import URL

from service.settings import Settings
from service.storage import ObjectStore, open_s3_client
from tests.conftest import BUCKET


async def test_download_links_name_the_public_endpoint_and_work_there(settings: Settings) -> None:
    # Given the services reach S3 at 127.0.0.1 and users at localhost (compose: minio vs localhost)
    assert settings.s3_endpoint is not None
    port = urlsplit(settings.s3_endpoint).port
    public = replace(settings, s3_public_endpoint=f"http://localhost:{port}")
    async with open_s3_client(public) as client, open_s3_client(public, public=True) as signer:
        await client.create_bucket(Bucket=BUCKET)  # type: ignore[attr-defined]
        await client.put_object(Bucket=BUCKET, Key="k.csv", Body=b"a,b\n")  # type: ignore[attr-defined]
        store = ObjectStore.from_settings(client, public, signer=signer)
        # When a download link is made
        link = await store.presign_download(BUCKET, "k.csv", expires_in=60)
        # Then it names the public address, and the file is there
        assert urlsplit(link).netloc == f"localhost:{port}"
        async with aiohttp.ClientSession() as http, http.get(URL(link, encoded=True)) as reply:
            assert reply.status == 200
            assert await reply.read() == b"a,b\n"
        # And without a public address the link names the services' own
        assert (
            urlsplit(
                await ObjectStore.from_settings(client, settings).presign_download(BUCKET, "k.csv", 60)
            ).netloc
            == urlsplit(settings.s3_endpoint).netloc
        )
