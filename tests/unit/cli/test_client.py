"""`analytics-exports export`: the progress display and the exit statuses, against a fake API.

The fake API is an aiohttp app on a loopback port (aiohttp's TestServer), served from a thread of
its own so the command runs exactly as from a shell: ``main([...])``, with its own event loop.
"""

from __future__ import annotations

import asyncio
import hashlib
import io
import threading
import uuid
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from cli.client import (
    EXIT_INCOMPLETE,
    EXIT_SUCCEEDED,
    EXIT_UNSUCCESSFUL,
    EXIT_USAGE,
    ApiUnreachable,
    CreateExportBody,
    ExportsClient,
    JobView,
    ProgressDisplay,
    progress_line,
)
from cli.main import main
from devtools.local import free_port

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TOKEN = "good-token"
ORG = "5f0c6d3e-2b1a-4c8e-9f3d-7a6b5c4d3e21"
JOB_ID = "1b2c3d4e-0000-4000-8000-000000000001"
CSV = b"bucket_start,organization_id,model_id,request_count,tokens_total,error_count,cost_total,currency\n"
CSV += f"2026-10-01T00:00:00Z,{ORG},gpt-4o,10,100,0,1.250000,USD\n".encode() * 3
CHECKSUM = hashlib.sha256(CSV).hexdigest()


def manifest_of(content: bytes, cost: str = "3.750000") -> bytes:
    """A manifest as the worker writes one, stating the facts of ``content`` (and ``cost``)."""
    document = {
        "manifestVersion": 1,
        "jobId": JOB_ID,
        "orgId": ORG,
        "request": {"format": "csv", "schema": "native"},
        "files": [
            {
                "key": f"analytics/exports/{ORG}/{JOB_ID}.csv",
                "rows": 3,
                "bytes": len(content),
                "sha256": hashlib.sha256(content).hexdigest(),
                "contentType": "text/csv; charset=utf-8",
                "contentEncoding": None,
            }
        ],
        "totals": {"USD": {"costTotal": cost, "requestCount": 30, "tokensTotal": 300, "errorCount": 0}},
    }
    return orjson.dumps(document, option=orjson.OPT_INDENT_2) + b"\n"


MANIFEST = manifest_of(CSV)
DONE = {
    "rowCount": 3,
    "byteCount": len(CSV),
    "checksum": CHECKSUM,
    "expiresAt": "2026-10-02T00:00:00Z",
    "manifestChecksum": hashlib.sha256(MANIFEST).hexdigest(),
}


def problem(status: int, title: str, detail: str) -> web.Response:
    body = {
        "type": "https://analytics-exports.dev/problems/x",
        "title": title,
        "status": status,
        "detail": detail,
    }
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/problem+json")


@dataclass
class FakeApi:
    """The export endpoints of one org. The job moves through ``states`` (fields of the job), one
    per GET of the job."""

    states: list[dict[str, object]] = field(
        default_factory=lambda: [
            {"status": "pending", "attempts": 0},
            {"status": "running", "attempts": 1},
            {"status": "running", "attempts": 1},
            {"status": "succeeded", "attempts": 1, **DONE},
        ]
    )
    content: bytes = CSV
    manifest: bytes = MANIFEST
    #: When set, the POST answers this problem (status, title, detail) instead of a job...
    refuse: tuple[int, str, str] | None = None
    #: ... for this many POSTs first (0: for all of them).
    refuse_first: int = 0
    base: str = ""
    gets: int = 0
    posted: list[object] = field(default_factory=list)
    post_headers: list[dict[str, str]] = field(default_factory=list)
    file_headers: list[dict[str, str]] = field(default_factory=list)
    file_paths: list[str] = field(default_factory=list)

    def current(self) -> dict[str, object]:
        return self.states[min(self.gets, len(self.states)) - 1] if self.gets else {"status": "pending"}

    def job(self) -> dict[str, object]:
        return {"jobId": JOB_ID, "orgId": ORG, "errorMessage": None, "checksum": None, **self.current()}

    def app(self) -> web.Application:
        exports = f"/analytics/v1/orgs/{ORG}/exports"

        @web.middleware
        async def bearer(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.path.startswith("/analytics/") and request.headers.get("Authorization") != (
                f"Bearer {TOKEN}"
            ):
                return problem(401, "Missing or invalid bearer token", "the token's signature is invalid")
            return await handler(request)

        async def create(request: web.Request) -> web.Response:
            self.posted.append(await request.json())
            self.post_headers.append(dict(request.headers))
            if self.refuse is not None and (not self.refuse_first or len(self.posted) <= self.refuse_first):
                return problem(*self.refuse)
            replayed = {"Idempotent-Replayed": "true"} if "Idempotency-Key" in request.headers else {}
            return web.json_response(self.job(), status=202, headers=replayed)

        async def get(request: web.Request) -> web.Response:
            self.gets += 1
            answer = self.current().get("answer")
            if answer is not None:  # the API is away for this poll: a problem with Retry-After 0
                reply = problem(int(str(answer)), "A backing service is unavailable", "PostgreSQL is down")
                reply.headers["Retry-After"] = "0"
                return reply
            return web.json_response(self.job())

        async def download(request: web.Request) -> web.Response:
            return web.Response(
                status=302, headers={"Location": f"{self.base}/bucket/export.csv?X-Sig=a%2Fb"}
            )

        async def manifest(request: web.Request) -> web.Response:
            return web.Response(body=self.manifest, content_type="application/json")

        async def file(request: web.Request) -> web.Response:
            self.file_headers.append(dict(request.headers))
            if "Authorization" in request.headers:  # as S3: two kinds of credentials are refused
                return web.Response(status=400, text="<Error>InvalidArgument</Error>")
            self.file_paths.append(request.raw_path)
            return web.Response(body=self.content)

        app = web.Application(middlewares=[bearer])
        app.router.add_post(exports, create)
        app.router.add_get(exports + "/{job_id}", get)
        app.router.add_get(exports + "/{job_id}/download", download)
        app.router.add_get(exports + "/{job_id}/manifest", manifest)
        app.router.add_get("/bucket/export.csv", file)
        return app


@pytest.fixture
def api() -> Iterator[FakeApi]:
    fake = FakeApi()
    loop = asyncio.new_event_loop()
    server = TestServer(fake.app(), host="127.0.0.1", loop=loop)
    loop.run_until_complete(server.start_server())
    fake.base = str(server.make_url("")).rstrip("/")
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    try:
        yield fake
    finally:
        asyncio.run_coroutine_threadsafe(server.close(), loop).result(timeout=10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(timeout=10)
        loop.close()


def export(api: FakeApi, *extra: str, token: str = TOKEN) -> int:
    return main(
        [
            "export",
            "--api",
            api.base,
            "--token",
            token,
            "--org",
            ORG,
            "--start",
            "2026-10-01T00:00:00Z",
            "--end",
            "2026-10-08T00:00:00Z",
            "--granularity",
            "daily",
            "--poll-interval",
            "10ms",
            *extra,
        ]
    )


class Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


# --- the progress line ------------------------------------------------------------------------------


def test_progress_line_shows_status_attempt_elapsed_and_then_rows_and_size() -> None:
    assert progress_line(JobView(JOB_ID, "pending"), 0.2) == "export 1b2c3d4e  pending  0s"
    running = JobView(JOB_ID, "running", attempts=2)
    assert progress_line(running, 12.6) == "export 1b2c3d4e  running  attempt 2  13s"
    done = JobView(JOB_ID, "succeeded", row_count=12345, byte_count=3 * 1024 * 1024, attempts=1)
    assert progress_line(done, 61) == "export 1b2c3d4e  succeeded  attempt 1  61s  12,345 rows  3.0 MiB"


def test_on_a_terminal_the_line_is_redrawn_in_place_and_ended_once() -> None:
    # Given a terminal
    screen = Terminal()
    display = ProgressDisplay(screen, tty=True, width=lambda: 80)
    # When the job goes from a longer line to a shorter one, then finishes
    display.update(JobView(JOB_ID, "succeeded", row_count=5, byte_count=10, attempts=1), 3)
    display.update(JobView(JOB_ID, "running", attempts=1), 4)
    display.finish()
    display.finish()
    # Then each update returns to the start of the line and blanks what the longer one left
    first = "export 1b2c3d4e  succeeded  attempt 1  3s  5 rows  10 B"
    second = "export 1b2c3d4e  running  attempt 1  4s"
    assert screen.getvalue() == f"\r{first}\r{second}{' ' * (len(first) - len(second))}\n"


def test_on_a_terminal_the_line_never_wraps() -> None:
    screen = Terminal()
    ProgressDisplay(screen, tty=True, width=lambda: 30).update(JobView(JOB_ID, "running", attempts=1), 4)
    assert screen.getvalue() == "\r" + "export 1b2c3d4e  running  attempt 1  4s"[:29]


def test_elsewhere_there_is_one_line_per_change_of_status_or_attempt() -> None:
    # Given a log file, not a terminal
    log = io.StringIO()
    display = ProgressDisplay(log, tty=False)
    # When the job is polled many times
    for status, attempts, elapsed in [
        ("pending", 0, 0),
        ("pending", 0, 1),
        ("running", 1, 2),
        ("running", 1, 3),
        ("pending", 1, 4),
        ("running", 2, 5),
    ]:
        display.update(JobView(JOB_ID, status, attempts=attempts), elapsed)
    display.finish()
    # Then only the changes are written, each on a line of its own, without carriage returns
    assert log.getvalue().splitlines() == [
        "export 1b2c3d4e  pending  0s",
        "export 1b2c3d4e  running  attempt 1  2s",
        "export 1b2c3d4e  pending  attempt 1  4s",
        "export 1b2c3d4e  running  attempt 2  5s",
    ]
    assert "\r" not in log.getvalue()


# --- the command against the fake API -----------------------------------------------------------------


def test_wait_follows_the_job_and_ends_with_status_checksum_rows_and_link(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    # When an export is requested and waited for
    code = export(api, "--wait")
    out, err = capsys.readouterr()
    # Then it succeeds, and says so with what a finance user needs
    assert code == EXIT_SUCCEEDED, err
    assert api.posted == [
        {
            "timeRange": {"start": "2026-10-01T00:00:00Z", "end": "2026-10-08T00:00:00Z"},
            "granularity": "daily",
        }
    ]
    assert out.splitlines()[0] == f"export {JOB_ID}: pending"
    assert f"export {JOB_ID}: succeeded after" in out
    assert ", attempt 1" in out
    assert "rows      3" in out
    assert f"checksum  sha256 {CHECKSUM}" in out
    assert f"download  {api.base}/bucket/export.csv?X-Sig=a%2Fb (valid until 2026-10-02T00:00:00Z)" in out
    # And, not on a terminal, the progress is one line per change, on stderr
    progress = [line.split("  ")[1:3] for line in err.splitlines()]
    assert progress == [["pending", "0s"], ["running", "attempt 1"], ["succeeded", "attempt 1"]]
    assert err.splitlines()[-1].endswith(f"3 rows  {len(CSV)} B")


def test_a_time_zone_is_sent_when_given(api: FakeApi) -> None:
    assert export(api, "--time-zone", "Europe/Berlin") == EXIT_SUCCEEDED
    assert api.posted[0]["timeZone"] == "Europe/Berlin"


def test_on_a_terminal_progress_is_redrawn_with_carriage_returns(
    api: FakeApi, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    screen = Terminal()
    monkeypatch.setattr("sys.stderr", screen)
    assert export(api, "--wait") == EXIT_SUCCEEDED
    drawn = screen.getvalue()
    assert drawn.startswith("\rexport 1b2c3d4e  pending")
    assert "\rexport 1b2c3d4e  running  attempt 1" in drawn
    assert drawn.count("\n") == 1
    assert drawn.endswith("\n")


def test_download_saves_the_file_and_checks_it_against_the_checksum(
    api: FakeApi, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # When the file is asked for too (which implies waiting)
    code = export(api, "--download", str(tmp_path / "export.csv"))
    out, err = capsys.readouterr()
    # Then it is saved whole, fetched without the bearer token, and said to match
    assert code == EXIT_SUCCEEDED, err
    assert (tmp_path / "export.csv").read_bytes() == CSV
    assert [h.get("Authorization") for h in api.file_headers] == [None]
    assert api.file_paths == ["/bucket/export.csv?X-Sig=a%2Fb"]  # the presigned query, byte for byte
    assert f"saved     {tmp_path / 'export.csv'}: {len(CSV)} bytes, SHA-256 matches the API's checksum" in out
    # And its manifest is kept beside it, the file's rows and totals recounted against it
    assert (tmp_path / "export.csv.manifest.json").read_bytes() == MANIFEST
    manifest = tmp_path / "export.csv.manifest.json"
    assert f"manifest  {manifest}: rows and totals match (cost 3.750000 USD)" in out
    assert sorted(p.name for p in tmp_path.iterdir()) == ["export.csv", "export.csv.manifest.json"]


def test_a_file_whose_totals_differ_from_its_manifest_fails_naming_the_difference(
    api: FakeApi, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Given a manifest (the one the job vouches for) whose total is one cent off the file's rows
    api.manifest = manifest_of(CSV, cost="3.760000")
    api.states[-1] = {**api.states[-1], "manifestChecksum": hashlib.sha256(api.manifest).hexdigest()}
    # When the export is downloaded, then the command fails and says which total differs
    code = export(api, "--download", str(tmp_path / "export.csv"))
    _, err = capsys.readouterr()
    assert code == EXIT_INCOMPLETE
    assert "USD costTotal: the file has 3.750000, the manifest states 3.760000" in err


def test_a_manifest_that_is_not_the_jobs_is_refused(
    api: FakeApi, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    api.manifest = manifest_of(CSV, cost="3.760000")  # the job still vouches for the right one
    code = export(api, "--download", str(tmp_path / "export.csv"))
    assert code == EXIT_INCOMPLETE
    assert "the manifest's SHA-256 is not the job's manifestChecksum" in capsys.readouterr().err


def test_download_into_a_directory_names_the_file_after_the_job(
    api: FakeApi, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    assert export(api, "--download", str(tmp_path)) == EXIT_SUCCEEDED
    assert (tmp_path / f"export-{JOB_ID}.csv").read_bytes() == CSV


def test_a_download_into_a_missing_directory_is_refused_before_anything_is_requested(
    api: FakeApi, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    code = export(api, "--download", str(tmp_path / "nowhere" / "export.csv"))
    assert code == EXIT_USAGE
    assert f"no such directory {tmp_path / 'nowhere'}" in capsys.readouterr().err
    assert api.posted == []


def test_a_file_that_does_not_match_the_checksum_is_not_left_under_the_name_asked_for(
    api: FakeApi, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    # Given S3 hands out bytes other than the ones the worker hashed
    api.content = CSV.replace(b"1.250000", b"9.250000")
    # When it is downloaded
    code = export(api, "--download", str(tmp_path / "export.csv"))
    _, err = capsys.readouterr()
    # Then the command fails with a clear line, and the bytes are kept aside for inspection
    assert code == EXIT_INCOMPLETE
    assert f"expected {CHECKSUM}" in err
    assert not (tmp_path / "export.csv").exists()
    assert (tmp_path / "export.csv.mismatch").read_bytes() == api.content
    assert "Traceback" not in err


@pytest.mark.parametrize(
    ("final", "message"),
    [
        ({"status": "failed", "attempts": 3, "errorMessage": "gave up after 3 attempts: S3 down"}, "S3 down"),
        ({"status": "cancelled", "attempts": 1}, "cancelled"),
        ({"status": "expired", "attempts": 1}, "expired"),
    ],
)
def test_an_export_that_ends_without_a_file_exits_1(
    api: FakeApi, capsys: pytest.CaptureFixture[str], tmp_path: Path, final: dict[str, object], message: str
) -> None:
    api.states = [{"status": "running", "attempts": 1}, final]
    code = export(api, "--download", str(tmp_path / "export.csv"))
    out, _ = capsys.readouterr()
    assert code == EXIT_UNSUCCESSFUL
    assert f"export {JOB_ID}: {final['status']} after" in out
    assert message in out
    assert "download" not in out
    assert not (tmp_path / "export.csv").exists()


@pytest.mark.parametrize(
    ("status", "title", "detail", "exit_code"),
    [
        (400, "Request validation failed", "timeRange may span at most 31 days", EXIT_USAGE),
        (403, "Not allowed", "the token does not grant this org", EXIT_USAGE),
        (
            429,
            "Too many exports in progress for this org",
            "5 exports are pending or running",
            EXIT_INCOMPLETE,
        ),
    ],
)
def test_a_problem_answer_is_one_line_with_its_title_and_detail(
    api: FakeApi, capsys: pytest.CaptureFixture[str], status: int, title: str, detail: str, exit_code: int
) -> None:
    api.refuse = (status, title, detail)
    code = export(api, "--wait")
    out, err = capsys.readouterr()
    assert code == exit_code
    assert err == f"analytics-exports export: the API answered {status} {title}: {detail}\n"
    assert out == ""


def test_a_create_answered_503_is_sent_again_with_the_same_key_and_then_given_up(
    api: FakeApi, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cli.client.UNAVAILABLE_GRACE", 0.5)
    api.refuse = (503, "A backing service is unavailable", "PostgreSQL is unavailable")
    code = export(api, "--wait")
    out, err = capsys.readouterr()
    assert code == EXIT_INCOMPLETE
    assert out == ""
    keys = {headers["Idempotency-Key"] for headers in api.post_headers}
    assert len(api.post_headers) >= 2  # sent again...
    [key] = keys  # ...always with the same key
    assert key.startswith("cli-")
    assert err.splitlines() == [
        "creating the export (API unavailable: 503; retrying)",
        "analytics-exports export: the API answered 503 A backing service is unavailable: PostgreSQL is"
        " unavailable; stopped after 0.5 s without an answer; the export may or may not have been"
        f" created: run the command again with --idempotency-key {key} to find out",
    ]


def test_a_create_that_gets_through_on_a_second_try_is_one_export(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.refuse_first = 1
    api.refuse = (503, "A backing service is unavailable", "PostgreSQL is unavailable")
    assert export(api) == EXIT_SUCCEEDED
    out, err = capsys.readouterr()
    assert out == f"export {JOB_ID}: pending\n"  # our own key's replay is not news to the user
    assert err == "creating the export (API unavailable: 503; retrying)\n"
    assert len({headers["Idempotency-Key"] for headers in api.post_headers}) == 1
    assert len(api.posted) == 2


def test_a_create_whose_connection_dropped_is_resent_with_the_same_key(
    api: FakeApi, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a first POST whose connection drops before the answer (it may have been stored)
    real = ExportsClient.create_export
    keys: list[str | None] = []

    async def dropped_once(self: ExportsClient, request: CreateExportBody) -> tuple[JobView, bool]:
        keys.append(request.idempotency_key)
        if len(keys) == 1:
            raise ApiUnreachable("lost the connection to the API: ServerDisconnectedError", connected=True)
        return await real(self, request)

    monkeypatch.setattr(ExportsClient, "create_export", dropped_once)
    # Then it is sent again, with the same key, and makes one export
    assert export(api) == EXIT_SUCCEEDED
    assert len(keys) == 2
    assert keys[0] == keys[1]
    assert api.post_headers[0]["Idempotency-Key"] == keys[0]
    assert capsys.readouterr().err == "creating the export (API unavailable; retrying)\n"


def test_a_bad_token_is_a_usage_error_naming_the_problem(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    assert export(api, "--wait", token="stale") == EXIT_USAGE
    assert "401 Missing or invalid bearer token: the token's signature is invalid" in capsys.readouterr().err


def test_an_unreachable_api_is_one_line_that_says_where_and_what_to_do(
    capsys: pytest.CaptureFixture[str],
) -> None:
    closed = FakeApi(base=f"http://127.0.0.1:{free_port()}")
    code = export(closed, "--wait")
    _, err = capsys.readouterr()
    assert code == EXIT_INCOMPLETE
    assert err == (
        f"analytics-exports export: cannot reach the API at {closed.base} (connection refused): is it"
        " running? `make run` starts it and prints the API, TOKEN and ORG to use\n"
    )


def test_without_wait_it_only_creates_the_export(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    assert export(api, "--model", "gpt-4o", "--model", "claude-haiku", "--idempotency-key", "k-1") == 0
    out, err = capsys.readouterr()
    assert out == f"export {JOB_ID}: pending (replayed: the job this Idempotency-Key created earlier)\n"
    assert err == ""
    assert api.gets == 0
    assert api.posted[0] == {
        "timeRange": {"start": "2026-10-01T00:00:00Z", "end": "2026-10-08T00:00:00Z"},
        "granularity": "daily",
        "models": ["gpt-4o", "claude-haiku"],
    }
    assert api.post_headers[0]["Idempotency-Key"] == "k-1"


def test_the_wait_rides_out_an_api_that_is_away_for_a_few_polls(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    # Given an API that answers 503, then 502, in the middle of the export (a restart, a failover)
    api.states = [
        {"status": "running", "attempts": 1},
        {"answer": 503},
        {"answer": 502},
        {"status": "succeeded", "attempts": 1, **DONE},
    ]
    # Then the wait goes on through them, says so while it lasts, and ends as usual
    code = export(api, "--wait")
    out, err = capsys.readouterr()
    assert code == EXIT_SUCCEEDED, err
    assert f"export {JOB_ID}: succeeded after" in out
    notes = [line.split("  ")[-1] for line in err.splitlines() if "API unavailable" in line]
    assert notes == ["(API unavailable: 503; retrying)", "(API unavailable: 502; retrying)"]


def test_the_wait_rides_out_a_dropped_connection(
    api: FakeApi, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Given a poll that gets no HTTP answer at all (the API restarting behind its address)
    real = ExportsClient.get_export
    calls = 0

    async def once_unreachable(self: ExportsClient, job_id: str) -> JobView:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise ApiUnreachable("lost the connection to the API: ServerDisconnectedError", connected=True)
        return await real(self, job_id)

    monkeypatch.setattr(ExportsClient, "get_export", once_unreachable)
    code = export(api, "--wait")
    _, err = capsys.readouterr()
    assert code == EXIT_SUCCEEDED, err
    assert "(API unavailable; retrying)" in err


def test_the_wait_gives_up_once_the_api_has_been_away_for_the_grace_period(
    api: FakeApi, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr("cli.client.UNAVAILABLE_GRACE", 0.2)
    api.states = [{"status": "running", "attempts": 1}, {"answer": 503}]
    code = export(api, "--wait")
    _, err = capsys.readouterr()
    assert code == EXIT_INCOMPLETE
    last = err.splitlines()[-1]
    assert last.startswith("analytics-exports export: the API answered 503 A backing service is unavailable")
    assert last.endswith(f"stopped after 0.2 s without an answer; export {JOB_ID} goes on")


def test_a_client_error_while_waiting_is_not_retried(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.states = [{"status": "running", "attempts": 1}, {"answer": 404}]
    code = export(api, "--wait")
    _, err = capsys.readouterr()
    assert code == EXIT_USAGE
    assert api.gets == 2  # no poll after the 404
    assert "the API answered 404" in err.splitlines()[-1]


def test_timeout_stops_waiting_but_says_the_export_goes_on(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.states = [{"status": "pending", "attempts": 0}]
    code = export(api, "--wait", "--timeout", "100ms")
    _, err = capsys.readouterr()
    assert code == EXIT_INCOMPLETE
    assert err.splitlines()[-1] == (
        f"analytics-exports export: stopped waiting after 0.1 s; export {JOB_ID} is still pending and"
        " goes on (is a worker running?)"
    )


def test_api_token_and_org_default_to_the_variables_make_run_prints(
    api: FakeApi, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API", api.base)
    monkeypatch.setenv("TOKEN", TOKEN)
    monkeypatch.setenv("ORG", ORG)
    args = ["export", "--start", "2026-10-01T00:00:00Z", "--end", "2026-10-08T00:00:00Z"]
    assert main([*args, "--granularity", "daily", "--wait", "--poll-interval", "10ms"]) == EXIT_SUCCEEDED


def test_missing_connection_details_are_a_usage_error_that_says_where_to_get_them(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("API", "TOKEN", "ORG"):
        monkeypatch.delenv(variable, raising=False)
    code = main(
        ["export", "--start", "a", "--end", "b", "--granularity", "daily", "--org", str(uuid.uuid4())]
    )
    assert code == EXIT_USAGE
    assert capsys.readouterr().err == (
        "analytics-exports export: missing --api (or API), --token (or TOKEN); `make run` prints the"
        " `export API=... TOKEN=... ORG=...` lines to paste\n"
    )


@pytest.mark.parametrize(
    "argv",
    [
        ["--granularity", "weekly"],
        ["--granularity", "daily", "--timeout", "soon"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["export", "--api", "http://127.0.0.1:1", "--start", "a", "--end", "b", *argv])
    assert exited.value.code == EXIT_USAGE


def test_an_api_url_without_a_scheme_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    code = export(FakeApi(base="127.0.0.1:8084"), "--wait")
    assert code == EXIT_USAGE
    assert "--api must be an http(s) URL such as http://127.0.0.1:8084" in capsys.readouterr().err
