"""A client of the exports REST API, over HTTP, and ``analytics-exports export`` built on it.

It talks to the API only (never to the database or the queue), so it works against any
deployment: create an export, follow it with a one-line progress display, then fetch the file
and check it against the SHA-256 the API vouches for.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import os
import shutil
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Final, TextIO, TypeVar
from urllib.parse import quote, urlencode, urlsplit

import aiohttp
import orjson
from multidict import CIMultiDict
from yarl import URL

from cli.verification import VerificationError, verify

BASE_PATH: Final = "/analytics/v1"
TERMINAL_STATUSES: Final = frozenset({"succeeded", "failed", "cancelled", "expired"})

EXIT_SUCCEEDED: Final = 0
#: The export finished without a file: failed, cancelled or expired.
EXIT_UNSUCCESSFUL: Final = 1
#: The request is wrong: bad or missing arguments, or the API refused it with a 4xx.
EXIT_USAGE: Final = 2
#: The command could not finish: API unreachable, 429 or 5xx, download failed or did not match
#: the checksum, or --timeout passed. The export itself may well go on.
EXIT_INCOMPLETE: Final = 3
EXIT_INTERRUPTED: Final = 130

#: How long one API call may take; the download only bounds each read.
REQUEST_TIMEOUT = aiohttp.ClientTimeout(total=30, connect=10)
#: How long the API may go without answering before the command gives up.
UNAVAILABLE_GRACE = 120.0
T = TypeVar("T")
DOWNLOAD_TIMEOUT = aiohttp.ClientTimeout(total=None, connect=10, sock_read=60)
DOWNLOAD_CHUNK = 1024 * 1024


class CommandError(Exception):
    """The command could not do what was asked; the message is one line for the user."""

    exit_code: int = EXIT_INCOMPLETE


class UsageError(CommandError):
    exit_code = EXIT_USAGE


class ApiUnreachable(CommandError):
    """No HTTP answer at all: refused, unknown host, timeout, connection dropped."""

    def __init__(self, message: str, *, connected: bool) -> None:
        super().__init__(message)
        #: Whether the connection was made (the request may have reached the API) or not.
        self.connected = connected


class ApiProblem(CommandError):
    """The API answered with an error status; carries the problem's title and detail."""

    def __init__(
        self,
        status: int,
        title: str,
        detail: str,
        errors: Mapping[str, str] | None = None,
        retry_after: float | None = None,
    ) -> None:
        fields = "; ".join(f"{name}: {why}" for name, why in (errors or {}).items())
        text = f"the API answered {status} {title}"
        if detail and detail != title:
            text += f": {detail}"
        if fields:
            text += f" ({fields})"
        super().__init__(text)
        self.status = status
        self.title = title
        self.detail = detail
        #: The answer's Retry-After, in seconds, if it had one.
        self.retry_after = retry_after
        # 4xx: the request must change (arguments, token, org); 429 and 5xx: try again later.
        self.exit_code = EXIT_USAGE if 400 <= status < 500 and status != 429 else EXIT_INCOMPLETE


class DownloadFailed(CommandError):
    """The file could not be fetched, or its bytes are not the ones the API vouches for."""


@dataclass(frozen=True, slots=True)
class JobView:
    """What the client needs of the API's job representation."""

    job_id: str
    status: str
    row_count: int | None = None
    byte_count: int | None = None
    checksum: str | None = None
    error_message: str | None = None
    expires_at: str | None = None
    #: Attempts a worker has made so far (the running one included).
    attempts: int = 0
    manifest_checksum: str | None = None

    @classmethod
    def from_json(cls, data: object) -> JobView:
        if not isinstance(data, dict):
            raise CommandError("the API answered with something that is not a job")
        job_id, status = data.get("jobId"), data.get("status")
        if not isinstance(job_id, str) or not isinstance(status, str):
            raise CommandError("the API answered with a job without jobId or status")

        def integer(name: str) -> int | None:
            value = data.get(name)
            return value if isinstance(value, int) and not isinstance(value, bool) else None

        def text(name: str) -> str | None:
            value = data.get(name)
            return value if isinstance(value, str) else None

        return cls(
            job_id=job_id,
            status=status,
            row_count=integer("rowCount"),
            byte_count=integer("byteCount"),
            checksum=text("checksum"),
            error_message=text("errorMessage"),
            expires_at=text("expiresAt"),
            attempts=integer("attempts") or 0,
            manifest_checksum=text("manifestChecksum"),
        )


@dataclass(frozen=True, slots=True)
class CreateExportBody:
    start: str
    end: str
    granularity: str
    models: tuple[str, ...] = ()
    idempotency_key: str | None = None
    time_zone: str | None = None
    output_format: str | None = None
    output_schema: str | None = None

    def body(self) -> dict[str, object]:
        body: dict[str, object] = {
            "timeRange": {"start": self.start, "end": self.end},
            "granularity": self.granularity,
        }
        if self.time_zone:
            body["timeZone"] = self.time_zone
        if self.output_format:
            body["format"] = self.output_format
        if self.output_schema:
            body["schema"] = self.output_schema
        if self.models:
            body["models"] = list(self.models)
        return body


@dataclass(frozen=True, slots=True)
class _Reply:
    status: int
    headers: Mapping[str, str]  # case-insensitive
    body: bytes


def check_api_url(api: str) -> str:
    """``api`` without a trailing slash, or a UsageError when it is not an http(s) URL."""
    parts = urlsplit(api.strip())
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UsageError(f"--api must be an http(s) URL such as http://127.0.0.1:8084, not {api!r}")
    return api.strip().rstrip("/")


class ExportsClient:
    """The export endpoints of one org, with one bearer token."""

    def __init__(self, session: aiohttp.ClientSession, api: str, token: str, org: str) -> None:
        self._session = session
        self._api = check_api_url(api)
        self._org = f"{self._api}{BASE_PATH}/orgs/{quote(org, safe='')}"
        self._exports = f"{self._org}/exports"
        self._auth = {"Authorization": f"Bearer {token}"}

    async def create_export(self, request: CreateExportBody) -> tuple[JobView, bool]:
        """POST the export; the job, and whether the API replayed an earlier one (Idempotency-Key)."""
        headers = {**self._auth, "Content-Type": "application/json"}
        if request.idempotency_key is not None:
            headers["Idempotency-Key"] = request.idempotency_key
        reply = await self._send("POST", self._exports, headers, orjson.dumps(request.body()))
        self._expect(reply, 202)
        return JobView.from_json(_json(reply)), reply.headers.get("Idempotent-Replayed") == "true"

    async def get_export(self, job_id: str) -> JobView:
        reply = await self._send("GET", f"{self._exports}/{quote(job_id, safe='')}", self._auth)
        self._expect(reply, 200)
        return JobView.from_json(_json(reply))

    async def schedules(
        self, method: str, schedule_id: str | None = None, body: Mapping[str, object] | None = None
    ) -> object:
        """One call to the org's export schedules (``schedule_id`` for one of them); its JSON, or
        None for a 204."""
        return await self._resource(method, ("export-schedules", schedule_id), body)

    async def webhooks(
        self,
        method: str,
        webhook_id: str | None = None,
        body: Mapping[str, object] | None = None,
        *,
        action: str | None = None,
        query: Mapping[str, object] | None = None,
    ) -> object:
        """One call to the org's webhook endpoints (``webhook_id`` for one of them, ``action`` for
        one of its sub-resources: ``rotate-secret``, ``deliveries``); its JSON, or None for a 204."""
        path = ("webhooks", webhook_id, action)
        return await self._resource(method, path, body, query, created=action is None)

    async def _resource(
        self,
        method: str,
        path: tuple[str | None, ...],
        body: Mapping[str, object] | None = None,
        query: Mapping[str, object] | None = None,
        *,
        created: bool = True,
    ) -> object:
        """One JSON call to a resource of the org: ``path``'s segments (None ones left out) under
        it, ``query``'s parameters (None ones left out). Success is 204 for a DELETE, 201 for a
        POST when it ``created`` something, else 200; the answer's JSON, or None for a 204."""
        url = "/".join([self._org, *(quote(part, safe="") for part in path if part is not None)])
        parameters = {name: str(value) for name, value in (query or {}).items() if value is not None}
        if parameters:
            url += f"?{urlencode(parameters)}"
        headers = dict(self._auth)
        if body is not None:
            headers["Content-Type"] = "application/json"
        reply = await self._send(method, url, headers, orjson.dumps(body) if body is not None else None)
        expected = {"POST": 201 if created else 200, "DELETE": 204}.get(method, 200)
        self._expect(reply, expected)
        return None if reply.status == 204 else _json(reply)

    async def get_manifest(self, job_id: str) -> bytes:
        """The manifest of a succeeded export, byte for byte."""
        reply = await self._send("GET", f"{self._exports}/{quote(job_id, safe='')}/manifest", self._auth)
        self._expect(reply, 200)
        return reply.body

    async def download_link(self, job_id: str) -> str:
        """A fresh presigned link to the file (the API answers 302 to it)."""
        url = f"{self._exports}/{quote(job_id, safe='')}/download"
        reply = await self._send("GET", url, self._auth, allow_redirects=False)
        self._expect(reply, 302)
        location = reply.headers.get("Location")
        if not location:
            raise CommandError("the API's download answer has no Location")
        return location

    async def download(self, link: str, target: Path) -> tuple[str, int]:
        """Stream the file at ``link`` to ``target`` (via ``target.part``); its SHA-256 and size.

        Sent without the bearer token: S3 refuses a request that carries two kinds of credentials.
        """
        digest, size = hashlib.sha256(), 0
        partial = target.with_name(target.name + ".part")
        try:
            # encoded=True: the presigned signature covers the query exactly as S3 wrote it.
            async with self._session.get(URL(link, encoded=True), timeout=DOWNLOAD_TIMEOUT) as response:
                if response.status != 200:
                    text = (await response.text(errors="replace"))[:200].replace("\n", " ")
                    raise DownloadFailed(f"the download link answered {response.status}: {text}")
                with partial.open("wb") as file:
                    async for chunk in response.content.iter_chunked(DOWNLOAD_CHUNK):
                        digest.update(chunk)
                        size += len(chunk)
                        file.write(chunk)
        except (aiohttp.ClientError, TimeoutError) as exc:
            partial.unlink(missing_ok=True)
            raise DownloadFailed(f"the download failed: {_reason(exc)}") from exc
        except OSError as exc:
            partial.unlink(missing_ok=True)
            raise DownloadFailed(f"cannot write {partial}: {exc.strerror or exc}") from exc
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
        partial.replace(target)
        return digest.hexdigest(), size

    async def _send(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str],
        body: bytes | None = None,
        *,
        allow_redirects: bool = True,
    ) -> _Reply:
        try:
            async with self._session.request(
                method,
                url,
                headers=dict(headers),
                data=body,
                allow_redirects=allow_redirects,
                timeout=REQUEST_TIMEOUT,
            ) as response:
                return _Reply(response.status, CIMultiDict(response.headers), await response.read())
        except TimeoutError as exc:
            raise ApiUnreachable(f"the API at {self._api} did not answer in time", connected=True) from exc
        except aiohttp.ClientConnectorError as exc:
            raise ApiUnreachable(
                f"cannot reach the API at {self._api} ({_reason(exc)}): is it running? "
                "`make run` starts it and prints the API, TOKEN and ORG to use",
                connected=False,
            ) from exc
        except aiohttp.ClientError as exc:
            raise ApiUnreachable(
                f"lost the connection to the API at {self._api}: {_reason(exc)}", connected=True
            ) from exc

    @staticmethod
    def _expect(reply: _Reply, status: int) -> None:
        if reply.status == status:
            return
        try:
            data = orjson.loads(reply.body)
        except orjson.JSONDecodeError:
            data = None
        retry_after = reply.headers.get("Retry-After", "")
        wait = float(retry_after) if retry_after.isdigit() else None
        if isinstance(data, dict) and isinstance(data.get("title"), str):
            errors = data.get("errors")
            raise ApiProblem(
                reply.status,
                data["title"],
                str(data.get("detail") or ""),
                {str(k): str(v) for k, v in errors.items()} if isinstance(errors, dict) else None,
                wait,
            )
        snippet = reply.body[:200].decode("utf-8", "replace").strip().replace("\n", " ")
        raise ApiProblem(reply.status, f"(expected {status})", snippet, retry_after=wait)


def _json(reply: _Reply) -> object:
    try:
        return orjson.loads(reply.body)
    except orjson.JSONDecodeError as exc:
        raise CommandError(f"the API answered {reply.status} with a body that is not JSON") from exc


def _reason(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        error = exc.os_error
        if isinstance(error, ConnectionRefusedError):
            return "connection refused"
        return error.strerror or str(error) or type(error).__name__
    if isinstance(exc, TimeoutError):
        return "timed out"
    return str(exc) or type(exc).__name__


# --- the progress display -------------------------------------------------------------------------


def format_bytes(count: int) -> str:
    size = float(count)
    for unit in ("B", "KiB", "MiB", "GiB"):
        if size < 1024 or unit == "GiB":
            return f"{count} B" if unit == "B" else f"{size:.1f} {unit}"
        size /= 1024
    raise AssertionError("unreachable")


def progress_line(job: JobView, elapsed: float, note: str | None = None) -> str:
    """``export 1b2c3d4e  running  attempt 1  12s``, with rows and size once the job has them,
    and ``note`` (why the job shown may be out of date) last."""
    parts = [f"export {job.job_id[:8]}", job.status]
    if job.attempts:
        parts.append(f"attempt {job.attempts}")
    parts.append(f"{elapsed:.0f}s")
    if job.row_count is not None:
        parts.append(f"{job.row_count:,} rows")
    if job.byte_count is not None:
        parts.append(format_bytes(job.byte_count))
    if note:
        parts.append(note)
    return "  ".join(parts)


class ProgressDisplay:
    """On a terminal, one line redrawn in place; otherwise one line per change of status,
    attempt or row count, so a log file shows the job's history and nothing else."""

    def __init__(self, stream: TextIO, *, tty: bool, width: Callable[[], int] | None = None) -> None:
        self._stream = stream
        self._tty = tty
        self._width = width or (lambda: shutil.get_terminal_size().columns)
        self._drawn = 0
        self._last: tuple[str, int, int | None, str | None] | None = None

    def update(self, job: JobView, elapsed: float, note: str | None = None) -> None:
        line = progress_line(job, elapsed, note)
        if self._tty:
            line = line[: max(self._width() - 1, 20)]
            self._stream.write("\r" + line + " " * max(self._drawn - len(line), 0))
            self._drawn = len(line)
        else:
            key = (job.status, job.attempts, job.row_count, note)
            if key == self._last:
                return
            self._last = key
            self._stream.write(line + "\n")
        self._stream.flush()

    def finish(self) -> None:
        """End the redrawn line, so what is printed next starts on a line of its own."""
        if self._tty and self._drawn:
            self._stream.write("\n")
            self._stream.flush()
            self._drawn = 0


async def patiently(
    call: Callable[[], Awaitable[T]],
    *,
    interval: float,
    on_wait: Callable[[str], None],
    gave_up: str,
    refused_too: bool = True,
    clock: Callable[[], float] = time.monotonic,
) -> T:
    """``call()``, tried again while the API is away: 502, 503, 504 (a restart, a deploy, a
    database failover), no answer on a connection made, and, with ``refused_too``, no connection
    at all. Each wait is ``interval``, or the answer's Retry-After if longer, and ``on_wait`` gets
    a note to show meanwhile. After ``UNAVAILABLE_GRACE`` seconds without an answer: a
    CommandError ending with ``gave_up``. Any other error is raised at once. Use it only for
    calls that are safe to repeat."""
    away_since: float | None = None
    while True:
        try:
            return await call()
        except (ApiUnreachable, ApiProblem) as exc:
            status = exc.status if isinstance(exc, ApiProblem) else None
            if isinstance(exc, ApiUnreachable) and not (exc.connected or refused_too):
                raise
            if status not in (None, 502, 503, 504):
                raise
            away_since = clock() if away_since is None else away_since
            if clock() - away_since >= UNAVAILABLE_GRACE:
                raise CommandError(
                    f"{exc}; stopped after {UNAVAILABLE_GRACE:g} s without an answer{gave_up}"
                ) from exc
            on_wait(f"(API unavailable{f': {status}' if status else ''}; retrying)")
            retry_after = exc.retry_after if isinstance(exc, ApiProblem) else None
            await asyncio.sleep(max(interval, min(retry_after or 0, UNAVAILABLE_GRACE)))


async def follow(
    client: ExportsClient,
    job: JobView,
    display: ProgressDisplay,
    *,
    interval: float,
    give_up_after: float | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> JobView:
    """Poll the job until it is finished, showing progress; the final job. The export goes on
    without us, so a poll the API does not answer is tried again (``patiently``)."""
    started = clock()
    while True:
        elapsed = clock() - started
        display.update(job, elapsed)
        if job.status in TERMINAL_STATUSES:
            display.finish()
            return job
        if give_up_after is not None and elapsed >= give_up_after:
            display.finish()
            raise CommandError(
                f"stopped waiting after {give_up_after:g} s; export {job.job_id} is still {job.status} "
                "and goes on (is a worker running?)"
            )
        await asyncio.sleep(interval)

        def waiting(note: str, shown: JobView = job) -> None:
            display.update(shown, clock() - started, note)

        job = await patiently(
            functools.partial(client.get_export, job.job_id),
            interval=interval,
            on_wait=waiting,
            gave_up=f"; export {job.job_id} goes on",
            clock=clock,
        )


# --- the command ------------------------------------------------------------------------------------


@dataclass
class ExportCommand:
    """``analytics-exports export``: create, optionally wait (with progress) and download."""

    api: str
    token: str
    org: str
    request: CreateExportBody
    wait: bool = False
    download: Path | None = None
    interval: float = 0.5
    timeout: float | None = None
    out: TextIO = field(default_factory=lambda: sys.stdout)
    err: TextIO = field(default_factory=lambda: sys.stderr)
    #: Whether ``err`` is a terminal (progress redrawn in place); None: ask it.
    tty: bool | None = None
    #: Set once the API has the job, so an interrupted wait can say which job goes on.
    job_id: str | None = field(default=None, init=False)
    _display: ProgressDisplay | None = field(default=None, init=False, repr=False)
    _into_directory: bool = field(default=False, init=False, repr=False)

    def run(self) -> int:
        """Run to the end; the exit status (see the EXIT_* constants), messages already printed."""
        try:
            if self.download is not None:
                self._into_directory = self.download.is_dir()
                if not self._into_directory and not self.download.parent.is_dir():
                    raise UsageError(f"--download {self.download}: no such directory {self.download.parent}")
            return asyncio.run(self._run())
        except CommandError as exc:
            self._end_progress()
            print(f"analytics-exports export: {exc}", file=self.err)
            return exc.exit_code
        except KeyboardInterrupt:
            self._end_progress()
            goes_on = f"; export {self.job_id} goes on" if self.job_id else ""
            print(f"analytics-exports export: stopped waiting{goes_on}", file=self.err)
            return EXIT_INTERRUPTED

    def _end_progress(self) -> None:
        if self._display is not None:
            self._display.finish()

    async def _run(self) -> int:
        async with aiohttp.ClientSession() as session:
            client = ExportsClient(session, self.api, self.token, self.org)
            request = self.request
            if request.idempotency_key is None:
                # A key of our own makes the create safe to send again through an API blip: a
                # retry gets the job the first try created, if it got that far.
                request = replace(request, idempotency_key=f"cli-{uuid.uuid4()}")
            told: list[str] = []

            def waiting(note: str) -> None:
                if not told:  # once: the wait may last a while
                    told.append(note)
                    print(f"creating the export {note}", file=self.err, flush=True)

            # A refused connection is not retried here: before the API has ever answered, it more
            # likely means a wrong --api or a stack that is not running than a restart.
            job, replayed = await patiently(
                functools.partial(client.create_export, request),
                interval=max(self.interval, 1.0),
                on_wait=waiting,
                gave_up=(
                    "; the export may or may not have been created: run the command again with "
                    f"--idempotency-key {request.idempotency_key} to find out"
                ),
                refused_too=False,
            )
            self.job_id = job.job_id
            asked = replayed and self.request.idempotency_key is not None
            again = " (replayed: the job this Idempotency-Key created earlier)" if asked else ""
            print(f"export {job.job_id}: {job.status}{again}", file=self.out, flush=True)
            if not (self.wait or self.download):
                return EXIT_SUCCEEDED
            tty = self.err.isatty() if self.tty is None else self.tty
            self._display = ProgressDisplay(self.err, tty=tty)
            started = time.monotonic()
            job = await follow(client, job, self._display, interval=self.interval, give_up_after=self.timeout)
            self._report(job, time.monotonic() - started)
            if job.status != "succeeded":
                return EXIT_UNSUCCESSFUL
            link = await client.download_link(job.job_id)
            until = f" (valid until {job.expires_at})" if job.expires_at else ""
            print(f"  download  {link}{until}", file=self.out, flush=True)
            if self.download is not None:
                await self._fetch(client, job, link, self.download)
            return EXIT_SUCCEEDED

    def _report(self, job: JobView, elapsed: float) -> None:
        tried = f", attempt {job.attempts}" if job.attempts else ""
        line = f"export {job.job_id}: {job.status} after {elapsed:.0f}s{tried}"
        if job.error_message:
            line += f": {job.error_message}"
        print(line, file=self.out)
        if job.status == "succeeded":
            if job.row_count is not None:
                print(f"  rows      {job.row_count:,}", file=self.out)
            if job.byte_count is not None:
                print(f"  bytes     {job.byte_count:,} ({format_bytes(job.byte_count)})", file=self.out)
            print(f"  checksum  sha256 {job.checksum}", file=self.out)
        self.out.flush()

    async def _fetch(self, client: ExportsClient, job: JobView, link: str, target: Path) -> None:
        if self._into_directory:
            target = target / f"export-{job.job_id}.{self.request.output_format or 'csv'}"
        digest, size = await client.download(link, target)
        if job.checksum is None or digest != job.checksum.lower() or job.byte_count not in (None, size):
            kept = target.with_name(target.name + ".mismatch")
            os.replace(target, kept)
            raise DownloadFailed(
                f"the file does not match what the API vouches for: SHA-256 {digest} and {size:,} bytes,"
                f" expected {job.checksum} and {job.byte_count:,} bytes; the bytes are kept in {kept}"
                if job.byte_count is not None
                else f"the file's SHA-256 {digest} is not the API's checksum {job.checksum};"
                f" the bytes are kept in {kept}"
            )
        print(f"  saved     {target}: {size:,} bytes, SHA-256 matches the API's checksum", file=self.out)
        await self._check_manifest(client, job, target)
        self.out.flush()

    async def _check_manifest(self, client: ExportsClient, job: JobView, target: Path) -> None:
        """Fetch the manifest (it must be the one the job vouches for), keep it beside the file,
        and check the file against it: rows and every total, recounted here."""
        manifest = await client.get_manifest(job.job_id)
        if hashlib.sha256(manifest).hexdigest() != job.manifest_checksum:
            raise DownloadFailed(
                f"the manifest's SHA-256 is not the job's manifestChecksum {job.manifest_checksum}"
            )
        kept = target.with_name(target.name + ".manifest.json")
        kept.write_bytes(manifest)
        document = orjson.loads(manifest)
        try:
            report = verify(target, document)
        except VerificationError as exc:
            raise DownloadFailed(f"cannot check {target} against its manifest: {exc}") from exc
        if not report.ok:
            raise DownloadFailed(
                f"{target} does not match its manifest {kept}: " + "; ".join(report.problems)
            )
        costs = ", ".join(f"{t['costTotal']} {c}" for c, t in document["totals"].items()) or "no rows"
        print(f"  manifest  {kept}: rows and totals match (cost {costs})", file=self.out)


def run_and_print(
    label: str, call: Callable[[], Coroutine[Any, Any, object]], out: TextIO, err: TextIO, deleted: str
) -> int:
    """Run one REST call and print its JSON answer (``deleted`` for an empty one), or one line
    ``label: why`` on ``err``; the exit status."""
    try:
        answer = asyncio.run(call())
    except CommandError as exc:
        print(f"{label}: {exc}", file=err)
        return exc.exit_code
    if answer is None:
        print(deleted, file=out)
    else:
        out.write(orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode() + "\n")
    return 0
