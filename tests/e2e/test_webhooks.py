"""Webhooks through the real processes: a receiver on loopback whose first attempts answer 500 and
time out gets one accepted `export.succeeded` per job, every attempt with the same webhook-id and
a valid signature; the finance guide's verification script accepts it and refuses it tampered."""

from __future__ import annotations

import asyncio
import subprocess
import sys
import time
import uuid
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import aiohttp
import orjson
import pytest

from service import webhook_signing
from tests.e2e.conftest import Stack, create_export, wait_for_job
from tests.support.docblocks import marked_block
from tests.support.webhook_receiver import Receiver, running_receiver

pytestmark = pytest.mark.usefixtures("clean_state")
GUIDE = Path(__file__).resolve().parents[2] / "docs" / "metrics" / "report.md"


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    async with running_receiver() as found:
        yield found


def webhooks_url(stack: Stack, org: uuid.UUID) -> str:
    return f"{stack.base}/analytics/v1/orgs/{org}/webhooks"


async def eventually(condition: Any, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "not within the time allowed"
        await asyncio.sleep(0.1)


def run_guide_script(
    tmp_path: Path, secret: str, headers: dict[str, str], body: bytes
) -> subprocess.CompletedProcess[str]:
    script = tmp_path / "verify_webhook.py"
    script.write_text(marked_block(GUIDE, "webhook-verify", language="python"))
    (tmp_path / "body.json").write_bytes(body)
    env = {
        "WEBHOOK_SECRET": secret,
        "WEBHOOK_ID": headers["webhook-id"],
        "WEBHOOK_TIMESTAMP": headers["webhook-timestamp"],
        "WEBHOOK_SIGNATURE": headers["webhook-signature"],
    }
    return subprocess.run(
        [sys.executable, str(script), "body.json"],
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=30,
    )


async def test_one_accepted_delivery_per_job_through_500s_and_timeouts(
    http: aiohttp.ClientSession, stack: Stack, receiver: Receiver, tmp_path: Path
) -> None:
    # Given an org with usage and a webhook for finished exports, whose receiver first answers
    # 500, then does not answer in time
    org = stack.seed_demo("--days", "3", "--models", "2")
    async with http.post(
        webhooks_url(stack, org),
        json={"url": receiver.url, "events": ["export.succeeded", "export.failed"]},
        headers=stack.auth(org),
    ) as reply:
        assert reply.status == 201, await reply.text()
        created = await reply.json()
    secret, webhook_id = created["secret"], created["webhookId"]
    receiver.answers = (500, "slow")
    # When two exports succeed
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    jobs = []
    for days in (1, 2):
        span = {
            "start": f"{end - timedelta(days=days):%Y-%m-%dT%H:%M:%SZ}",
            "end": f"{end:%Y-%m-%dT%H:%M:%SZ}",
        }
        job = await create_export(http, stack, org, {"timeRange": span, "granularity": "daily"})
        jobs.append(await wait_for_job(http, stack, org, str(job["jobId"])))
    assert [job["status"] for job in jobs] == ["succeeded", "succeeded"]
    await eventually(lambda: len(receiver.accepted()) == 2)
    await asyncio.sleep(3)  # several more ticks: no delivery is sent again once accepted

    # Then each job was accepted exactly once, and every attempt of a delivery carried its id
    by_job: dict[str, list[tuple[dict[str, str], bytes, int | str]]] = {}
    for headers, body, answer in receiver.received:
        webhook_signing.verify(secret, headers, body, now=time.time())
        by_job.setdefault(orjson.loads(body)["data"]["job"]["jobId"], []).append((headers, body, answer))
    assert sorted(by_job) == sorted(str(job["jobId"]) for job in jobs)
    for attempts in by_job.values():
        assert [answer for *_, answer in attempts].count(200) == 1
        assert attempts[-1][2] == 200
        assert len({headers["webhook-id"] for headers, *_ in attempts}) == 1
        assert len({body for _, body, _ in attempts}) == 1
        assert [answer for *_, answer in attempts] == [500, "slow", 200]

    # The body: the job as the API returns it, the manifest's totals, and the API's download URL
    for job in jobs:
        [(headers, body, _)] = [r for r in by_job[str(job["jobId"])] if r[2] == 200]
        event = orjson.loads(body)
        assert event["type"] == "export.succeeded"
        assert event["data"]["job"] == job
        async with http.get(
            f"{stack.exports_url(org)}/{job['jobId']}/manifest", headers=stack.auth(org)
        ) as reply:
            assert event["data"]["totals"] == orjson.loads(await reply.read())["totals"]
        download = event["data"]["downloadUrl"]
        assert download == f"{stack.exports_url(org)}/{job['jobId']}/download"
        async with http.get(download, headers=stack.auth(org), allow_redirects=False) as reply:
            assert reply.status == 302

    # The API lists each delivery with its attempts' status codes
    async with http.get(
        f"{webhooks_url(stack, org)}/{webhook_id}/deliveries", headers=stack.auth(org)
    ) as reply:
        assert reply.status == 200, await reply.text()
        page = await reply.json()
    assert [[a["statusCode"] for a in d["attempts"]] for d in page["items"]] == [[500, None, 200]] * 2
    assert {d["status"] for d in page["items"]} == {"delivered"}
    assert {d["messageId"] for d in page["items"]} == {
        attempts[0][0]["webhook-id"] for attempts in by_job.values()
    }

    # And the finance guide's script verifies a delivery as received, and refuses it tampered
    headers, body, _ = receiver.accepted()[0]
    verified = run_guide_script(tmp_path, secret, headers, body)
    assert verified.returncode == 0, verified.stdout + verified.stderr
    assert verified.stdout.strip() == "signature OK"
    tampered = run_guide_script(tmp_path, secret, headers, body.replace(b'"succeeded"', b'"Succeeded"'))
    assert tampered.returncode == 1
    assert tampered.stderr.startswith("signature INVALID")
    wrong_secret = run_guide_script(tmp_path, webhook_signing.new_secret(), headers, body)
    assert wrong_secret.returncode == 1


async def test_webhook_urls_are_checked_and_another_orgs_webhook_is_not_found(
    http: aiohttp.ClientSession, stack: Stack
) -> None:
    org = uuid.uuid4()
    for url, why in (("ftp://example.com/hook", "https"), ("not a url", "https")):
        async with http.post(
            webhooks_url(stack, org), json={"url": url, "events": ["export.failed"]}, headers=stack.auth(org)
        ) as reply:
            assert reply.status == 400
            problem = await reply.json()
            assert why in problem["errors"]["url"], problem
    async with http.post(
        webhooks_url(stack, org),
        json={"url": "https://example.com/h", "events": ["export.sent"]},
        headers=stack.auth(org),
    ) as reply:
        assert reply.status == 400
        assert "events" in str((await reply.json())["errors"])
    async with http.post(
        webhooks_url(stack, org),
        json={"url": "https://example.com/h", "events": ["export.failed"]},
        headers=stack.auth(org),
    ) as reply:
        assert reply.status == 201
        webhook_id = (await reply.json())["webhookId"]
    # Listed and read without the secret; another org's token finds nothing
    async with http.get(webhooks_url(stack, org), headers=stack.auth(org)) as reply:
        [listed] = (await reply.json())["items"]
    assert "secret" not in listed
    other = uuid.uuid4()
    for method, suffix in (
        ("GET", ""),
        ("PATCH", ""),
        ("DELETE", ""),
        ("POST", "/rotate-secret"),
        ("GET", "/deliveries"),
    ):
        kwargs: dict[str, Any] = {"json": {"enabled": False}} if method == "PATCH" else {}
        async with http.request(
            method, f"{webhooks_url(stack, other)}/{webhook_id}{suffix}", headers=stack.auth(other), **kwargs
        ) as reply:
            assert reply.status == 404, (method, suffix)
