"""ops/iam-policy.json is proven: the real worker, readiness check, download, sweep and expiry run
against an S3 server that enforces IAM, with the service's credentials holding exactly that policy,
and pass; without any one of its actions, the same scenario fails at a known step.

The server is a moto of its own (the shared one of conftest runs without IAM), started with
``INITIAL_NO_AUTH_ACTION_COUNT=0``: from its first request on, every S3 request must be signed by
a known access key and allowed by that key's IAM policies. Each case sets up the buckets, the IAM
user, its policy and access key, and two orphaned uploads with enforcement suspended
(``/moto-api/reset-auth``, what moto's ``set_initial_no_auth_action_count`` uses), then enforces
again for the scenario.

Two gaps between moto 5 and AWS are bridged here, on purpose and in view:

- moto authorizes an S3 request by its API operation name (``s3:CreateMultipartUpload``,
  ``s3:HeadBucket``, ``s3:ListMultipartUploads``...), not by the IAM action AWS checks
  (``s3:PutObject``, ``s3:ListBucket``, ``s3:ListBucketMultipartUploads``...). ``MOTO_NAMES``
  rewrites each IAM action of the policy into the operations AWS authorizes with it (those the
  service calls), so removing an action removes exactly what it grants on AWS. What moto cannot
  express: on AWS a CreateMultipartUpload that carries tags needs ``s3:PutObjectTagging`` as well;
  moto checks only the operation, so only the multi-part export proves that action.
- moto cannot authorize a presigned (query-string signed) request while it enforces IAM (it reads
  an Authorization header that such a request lacks, and answers 500). AWS authorizes a presigned
  GET as ``s3:GetObject`` by the identity that signed it, so the download step makes that same
  request (same credentials, object and action) signed in a header, and fetches the presigned link
  itself over HTTP with enforcement suspended, to prove it returns the file.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import json
import logging
import os
import re
import subprocess
import uuid
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import aiohttp
import asyncpg
import pytest
from aiobotocore.session import get_session
from botocore.exceptions import ClientError

from devtools.local import free_port, stop, wait_http
from service.exporter import Exporter
from service.exports import ExportService
from service.housekeeping import Housekeeper
from service.job import EXPORT_PREFIX, ExportRequest, Granularity, JobStatus
from service.repository import JobRepository, create_pool
from service.rollups import DEFAULT_TABLES
from service.settings import Settings
from service.storage import ObjectStore, open_s3_client
from tests.conftest import BIN, BUCKET, OVERRIDE_BUCKET, S3_KEYS, service_env
from tests.support.fakes import FakeQueue
from tests.support.rollups import hourly_rollups, insert

pytestmark = pytest.mark.usefixtures("clean_state")
POLICY_FILE = Path(__file__).resolve().parents[2] / "ops" / "iam-policy.json"
POLICY = json.loads(POLICY_FILE.read_text("utf-8"))
ACTIONS = sorted({action for statement in POLICY["Statement"] for action in statement["Action"]})
START = datetime(2026, 10, 1, tzinfo=UTC)
END = datetime(2026, 11, 1, tzinfo=UTC)
REGION = "us-east-1"
USER = "analytics-exports"
#: The bucket ops/iam-policy.json names: the default S3_BUCKET.
POLICY_BUCKET = "analytics-exports"

#: The operations AWS authorizes with each IAM action (only those the service calls), as moto
#: names them when it authorizes a request.
MOTO_NAMES = {
    "s3:ListBucket": ["s3:HeadBucket"],
    "s3:ListBucketMultipartUploads": ["s3:ListMultipartUploads"],
    "s3:PutObject": [
        "s3:CreateMultipartUpload",
        "s3:UploadPart",
        "s3:CompleteMultipartUpload",
        "s3:PutObject",
    ],
    "s3:PutObjectTagging": ["s3:PutObjectTagging"],
    "s3:GetObject": ["s3:GetObject"],
    "s3:DeleteObject": ["s3:DeleteObject"],
    "s3:AbortMultipartUpload": ["s3:AbortMultipartUpload"],
}
#: The steps of the scenario that fail without each action: what proves the action is needed.
FAILS_WITHOUT = {
    "s3:ListBucket": {"readiness"},
    "s3:ListBucketMultipartUploads": {"sweep"},
    # Both exports start with CreateMultipartUpload (download and expiry then have no export).
    "s3:PutObject": {"one-part export", "multi-part export"},
    # The one-part export tags at creation, which moto authorizes as s3:PutObject alone.
    "s3:PutObjectTagging": {"multi-part export"},
    "s3:GetObject": {"download"},
    "s3:DeleteObject": {"expiry"},
    "s3:AbortMultipartUpload": {"sweep"},
}
STEPS = ("readiness", "one-part export", "multi-part export", "download", "sweep", "expiry")
SKIPPED = "skipped: no export succeeded"
#: What S3 answers a request its policy does not allow (HEAD has no body: just the status).
DENIED = re.compile(r"AccessDenied|\b403\b")


def bucket_arn(bucket: str) -> str:
    return f"arn:aws:s3:::{bucket}"


def objects_arn(bucket: str) -> str:
    return f"arn:aws:s3:::{bucket}/{EXPORT_PREFIX}*"


def for_buckets(policy: dict, buckets: list[str]) -> dict:
    """The policy for more buckets (S3_BUCKET_OVERRIDES): each bucket's ARN beside the bucket ARNs,
    its ``analytics/exports/*`` ARN beside the object ARNs (what docs/operations.md tells operators)."""
    policy = copy.deepcopy(policy)
    for statement in policy["Statement"]:
        for bucket in buckets:
            if bucket_arn(POLICY_BUCKET) in statement["Resource"]:
                statement["Resource"].append(bucket_arn(bucket))
            if objects_arn(POLICY_BUCKET) in statement["Resource"]:
                statement["Resource"].append(objects_arn(bucket))
    return policy


def without(policy: dict, action: str) -> dict:
    """The policy with ``action`` removed (and a statement left with no action dropped)."""
    policy = copy.deepcopy(policy)
    for statement in policy["Statement"]:
        statement["Action"] = [a for a in statement["Action"] if a != action]
    policy["Statement"] = [statement for statement in policy["Statement"] if statement["Action"]]
    return policy


def for_moto(policy: dict) -> dict:
    """The policy as moto must read it: each IAM action beside the operation names it covers."""
    policy = copy.deepcopy(policy)
    for statement in policy["Statement"]:
        statement["Action"] = sorted({n for a in statement["Action"] for n in [a, *MOTO_NAMES[a]]})
    return policy


# --- the enforcing S3 server --------------------------------------------------------------------


@pytest.fixture(scope="module")
def iam_endpoint() -> Iterator[str]:
    """A moto server that enforces IAM on every request from its first one."""
    port = free_port()
    proc = subprocess.Popen(
        [str(BIN / "moto_server"), "-H", "127.0.0.1", "-p", str(port)],
        env={**os.environ, "INITIAL_NO_AUTH_ACTION_COUNT": "0"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    endpoint = f"http://127.0.0.1:{port}"
    try:
        if not wait_http(endpoint + "/moto-api/", 30, proc):
            raise RuntimeError(f"moto_server did not answer on {endpoint}")
        yield endpoint
    finally:
        stop(proc)


async def moto_api(endpoint: str, path: str, data: str = "") -> None:
    async with aiohttp.ClientSession() as http, http.post(f"{endpoint}/moto-api/{path}", data=data) as reply:
        assert reply.status == 200, await reply.text()


@contextlib.asynccontextmanager
async def enforcement_suspended(endpoint: str) -> AsyncIterator[None]:
    """Requests go unchecked (any key, any action) until the block ends; then every one is checked."""
    await moto_api(endpoint, "reset-auth", "inf")
    try:
        yield
    finally:
        await moto_api(endpoint, "reset-auth", "0")


def client(endpoint: str, service: str, key: str, secret: str) -> Any:
    return get_session().create_client(
        service,
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=key,
        aws_secret_access_key=secret,
    )


def admin(endpoint: str, service: str) -> Any:
    """A client with conftest's keys, which IAM does not know: only usable while enforcement is off."""
    return client(endpoint, service, S3_KEYS["S3_ACCESS_KEY"], S3_KEYS["S3_SECRET_KEY"])


async def install(endpoint: str, policy: dict) -> tuple[str, str]:
    """A fresh server state (``/moto-api/reset`` empties every service, IAM included): both buckets,
    an orphaned upload in each, and an IAM user whose only permissions are ``policy`` (a managed
    policy, attached). Returns the user's access key."""
    await moto_api(endpoint, "reset")
    async with enforcement_suspended(endpoint), admin(endpoint, "s3") as s3, admin(endpoint, "iam") as iam:
        for bucket in (BUCKET, OVERRIDE_BUCKET):
            await s3.create_bucket(Bucket=bucket)
            # A worker that died between starting an upload and recording it left this one.
            await s3.create_multipart_upload(
                Bucket=bucket, Key=f"{EXPORT_PREFIX}{uuid.uuid4()}/{uuid.uuid4()}.csv"
            )
        await iam.create_user(UserName=USER)
        arn = (await iam.create_policy(PolicyName=USER, PolicyDocument=json.dumps(for_moto(policy))))[
            "Policy"
        ]["Arn"]
        await iam.attach_user_policy(UserName=USER, PolicyArn=arn)
        key = (await iam.create_access_key(UserName=USER))["AccessKey"]
    return key["AccessKeyId"], key["SecretAccessKey"]


# --- the scenario -------------------------------------------------------------------------------


async def seed(database_url: str, org: uuid.UUID, models: int) -> None:
    conn = await asyncpg.connect(database_url)
    try:
        await insert(
            conn, "hourly_rollups", hourly_rollups(org, START, 24 * 31, [f"m-{i:03d}" for i in range(models)])
        )
    finally:
        await conn.close()


def housekeeping_problems(caplog: pytest.LogCaptureFixture) -> list[str]:
    """What the housekeeper could not do since the last ``caplog.clear()``: its warnings that give
    a reason (or an exception)."""
    found = []
    for record in caplog.records:
        if record.name == "service.housekeeping" and record.levelno >= logging.WARNING:
            reason = getattr(record, "reason", None) or (record.exc_info and str(record.exc_info[1]))
            if reason:
                found.append(f"{record.getMessage()}: {reason}")
    return found


async def scenario(
    settings: Settings, endpoint: str, caplog: pytest.LogCaptureFixture
) -> dict[str, str | None]:
    """Run every path of the service that touches S3, with ``settings``' credentials. Each step's
    outcome: ``None`` if it did all its work, else why not (or why it was skipped)."""
    outcome: dict[str, str | None] = {}
    caplog.set_level(logging.WARNING, logger="service")
    pool = await create_pool(settings.database_url, max_size=5)
    try:
        async with open_s3_client(settings) as s3:
            repository = JobRepository(pool, tables=DEFAULT_TABLES)
            store = ObjectStore.from_settings(s3, settings)
            api = ExportService(repository, store, FakeQueue())
            exporter = Exporter(repository, store, settings)
            housekeeper = Housekeeper(repository, store, settings)

            checks = await api.dependencies([BUCKET, OVERRIDE_BUCKET])
            outcome["readiness"] = "; ".join(f"{k}: {v}" for k, v in checks.items() if v) or None

            succeeded = []
            for step, models in (("one-part export", 3), ("multi-part export", 80)):
                org = uuid.uuid4()
                await seed(settings.database_url, org, models)
                request = ExportRequest(org, "me", START, END, Granularity.HOURLY, None)
                job = (await repository.create(request)).job
                done = await exporter.run(job.job_id)
                assert done is not None
                if done.status is JobStatus.SUCCEEDED:
                    assert done.byte_count is not None
                    one_part = done.byte_count <= settings.export_part_size
                    assert one_part is (step == "one-part export"), f"{step}: {done.byte_count} bytes"
                    succeeded.append(done)
                    outcome[step] = None
                else:
                    outcome[step] = f"{done.status.value}: {done.error_message}"

            outcome["download"] = SKIPPED
            if succeeded:
                job = succeeded[0]
                link = await api.download(job.org_id, job.job_id)
                try:
                    # What S3 authorizes when the link is followed: s3:GetObject by the signer.
                    response = await s3.get_object(Bucket=BUCKET, Key=job.object_key)  # type: ignore[attr-defined]
                    async with response["Body"] as body:
                        assert hashlib.sha256(await body.read()).hexdigest() == job.checksum
                    async with (
                        enforcement_suspended(endpoint),
                        aiohttp.ClientSession() as http,
                        http.get(link.url) as reply,
                    ):
                        assert reply.status == 200, await reply.text()
                        assert hashlib.sha256(await reply.read()).hexdigest() == job.checksum
                    outcome["download"] = None
                except ClientError as exc:
                    outcome["download"] = str(exc)

            caplog.clear()
            report = await housekeeper.sweep(FakeQueue())
            problems = housekeeping_problems(caplog)
            outcome["sweep"] = verdict(problems, "aborted", report.aborted, 2)  # one orphan per bucket

            outcome["expiry"] = SKIPPED
            if succeeded:
                conn = await asyncpg.connect(settings.database_url)
                try:
                    await conn.execute(
                        "UPDATE analytics.export_jobs SET expires_at = now() - interval '1 second'"
                        " WHERE job_id = ANY($1::uuid[])",
                        [job.job_id for job in succeeded],
                    )
                finally:
                    await conn.close()
                caplog.clear()
                expired = await housekeeper.expire_due()
                problems = housekeeping_problems(caplog)
                outcome["expiry"] = verdict(problems, "expired", expired, len(succeeded))
    finally:
        await pool.close()
    assert set(outcome) == set(STEPS)
    return outcome


def verdict(problems: list[str], did: str, count: int, expected: int) -> str | None:
    if problems:
        return "; ".join(problems)
    return None if count == expected else f"{did} {count} of {expected}"


def failures(outcome: dict[str, str | None]) -> dict[str, str]:
    return {step: why for step, why in outcome.items() if why is not None and why != SKIPPED}


@pytest.fixture
def settings_for(database_url: str, queue_name: str, iam_endpoint: str) -> Callable[[str, str], Settings]:
    def make(key: str, secret: str) -> Settings:
        env = service_env(database_url, iam_endpoint, queue_name, S3_ACCESS_KEY=key, S3_SECRET_KEY=secret)
        return Settings.from_env(env)

    return make


# --- the tests ----------------------------------------------------------------------------------


def test_the_policy_file_is_least_privilege_on_the_export_prefix() -> None:
    assert POLICY["Version"] == "2012-10-17"
    assert POLICY_BUCKET == BUCKET == Settings().s3_bucket
    sids = [statement["Sid"] for statement in POLICY["Statement"]]
    assert all(re.fullmatch(r"[A-Za-z0-9]+", sid) for sid in sids)
    assert len(set(sids)) == len(sids)
    # Every action is proven below: the scenario needs it, and moto is told what it covers.
    assert set(ACTIONS) == set(FAILS_WITHOUT) == set(MOTO_NAMES)
    bucket_level = {"s3:ListBucket", "s3:ListBucketMultipartUploads"}
    for statement in POLICY["Statement"]:
        assert statement["Effect"] == "Allow"
        # No NotAction, NotResource, Condition or Principal; no wildcard action
        assert set(statement) == {"Sid", "Effect", "Action", "Resource"}
        assert all("*" not in action for action in statement["Action"])
        # Bucket actions on the bucket, object actions on the export prefix only
        bucket = set(statement["Action"]) <= bucket_level
        expected = bucket_arn(POLICY_BUCKET) if bucket else objects_arn(POLICY_BUCKET)
        assert statement["Resource"] == [expected], statement["Sid"]


async def test_the_service_works_with_exactly_the_policy(
    iam_endpoint: str, settings_for: Callable[[str, str], Settings], caplog: pytest.LogCaptureFixture
) -> None:
    key, secret = await install(iam_endpoint, for_buckets(POLICY, [OVERRIDE_BUCKET]))
    settings = settings_for(key, secret)
    # The server checks every request: an unknown key is refused, and so is the service's own key
    # outside the export prefix.
    async with admin(iam_endpoint, "s3") as s3:
        with pytest.raises(ClientError, match="InvalidAccessKeyId"):
            await s3.list_multipart_uploads(Bucket=BUCKET)
    async with client(iam_endpoint, "s3", key, secret) as s3:
        with pytest.raises(ClientError, match="AccessDenied"):
            await s3.put_object(Bucket=BUCKET, Key="elsewhere/x.csv", Body=b"x")

    outcome = await scenario(settings, iam_endpoint, caplog)

    assert outcome == dict.fromkeys(STEPS)
    # And S3 holds what it should: the orphans aborted, the expired exports and manifests deleted.
    async with enforcement_suspended(iam_endpoint), admin(iam_endpoint, "s3") as s3:
        for bucket in (BUCKET, OVERRIDE_BUCKET):
            assert not (await s3.list_multipart_uploads(Bucket=bucket)).get("Uploads")
            assert not (await s3.list_objects_v2(Bucket=bucket)).get("Contents")


@pytest.mark.parametrize("action", ACTIONS)
async def test_without_any_one_action_a_step_fails(
    action: str,
    iam_endpoint: str,
    settings_for: Callable[[str, str], Settings],
    caplog: pytest.LogCaptureFixture,
) -> None:
    key, secret = await install(iam_endpoint, for_buckets(without(POLICY, action), [OVERRIDE_BUCKET]))

    outcome = await scenario(settings_for(key, secret), iam_endpoint, caplog)

    failed = failures(outcome)
    assert set(failed) == FAILS_WITHOUT[action], outcome
    for step, why in failed.items():
        assert DENIED.search(why), f"{step}: {why}"
