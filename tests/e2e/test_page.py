"""The self-serve page at /analytics/, driven in Chromium by its accessible roles and labels
against the real processes: sign-in, a month-to-date export verified in the browser (SHA-256 and
totals), a read-only token, a tampered object, a field error, schedules and webhooks, and the
keyboard at 200 % zoom. Every test fails on a console error (a CSP violation is one) and on a
request whose URL holds the token; each writes screenshots of what it showed to build/screenshots/."""

from __future__ import annotations

import asyncio
import concurrent.futures
import csv
import hashlib
import io
import json
import re
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Callable, Coroutine, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import asyncpg
import pytest
from playwright.sync_api import Browser, BrowserContext, Locator, Page, Request, Route, expect

from service.api.auth import READ
from service.job import object_key
from service.storage import open_s3_client
from tests.conftest import BIN
from tests.e2e.conftest import Stack

TOKEN_KEY = "analytics-exports.token"
#: Chromium logs an API answer of 4xx as a console error: tests that expect one say which.
FAILED_LOAD = re.compile(r"Failed to load resource: the server responded with a status of (\d{3})")
WAIT_MS = 60_000


@dataclass
class Browsing:
    """A page in a context of its own, and everything it logged and requested."""

    context: BrowserContext
    page: Page
    errors: list[str] = field(default_factory=list)
    requests: list[tuple[str, dict[str, str]]] = field(default_factory=list)
    #: Statuses whose "Failed to load resource" console errors the test expects.
    expected_statuses: set[int] = field(default_factory=set)
    tokens: list[str] = field(default_factory=list)

    def problems(self) -> list[str]:
        unexpected = []
        for error in self.errors:
            failed = FAILED_LOAD.search(error)
            if not (failed and int(failed[1]) in self.expected_statuses):
                unexpected.append(error)
        leaked = [url for url, _ in self.requests for token in self.tokens if token in url]
        return unexpected + [f"token in a requested URL: {url}" for url in leaked]


@pytest.fixture
def browsing(chromium: Browser) -> Iterator[Callable[..., Browsing]]:
    """Open pages (``browsing(viewport=…)``); at the end, none may have logged a console error
    or put a token in a URL it requested."""
    opened: list[Browsing] = []

    def open_page(**options: Any) -> Browsing:
        context = chromium.new_context(**{"viewport": {"width": 1280, "height": 900}, **options})
        page = context.new_page()
        seen = Browsing(context, page)
        page.on("console", lambda m: seen.errors.append(f"console: {m.text}") if m.type == "error" else None)
        page.on("pageerror", lambda e: seen.errors.append(f"pageerror: {e}"))
        page.on("request", lambda r: seen.requests.append((r.url, r.headers)))
        opened.append(seen)
        return seen

    yield open_page
    for seen in opened:
        seen.context.close()
    for seen in opened:
        assert not seen.problems(), seen.problems()


def sign_in(seen: Browsing, stack: Stack, org: uuid.UUID, scope: str | None = None) -> str:
    """Follow the link `make run` prints: the page at /analytics/#token=…"""
    token = stack.token(org) if scope is None else stack.token(org, scope=scope)
    seen.tokens.append(token)
    seen.page.goto(f"{stack.base}/analytics/#token={token}")
    expect(seen.page.get_by_role("region", name="Signed in")).to_contain_text(str(org))
    return token


#: What a slip in the page's code prints instead of a value.
SLIPS = re.compile(r"\b(null|undefined|NaN)\b|\[object ")


def shot(page: Page, folder: Path, name: str) -> None:
    """A screenshot of the whole page, once it shows no slip of the page's code."""
    expect(page.locator("body")).not_to_contain_text(SLIPS)
    page.screenshot(path=folder / f"{name}.png", full_page=True)


# --- the API and S3, from Python -----------------------------------------------------------------


def call(stack: Stack, token: str, method: str, path: str, body: object = None) -> Any:
    request = urllib.request.Request(  # noqa: S310 (the stack's http://127.0.0.1 address)
        stack.base + path,
        method=method,
        data=None if body is None else json.dumps(body).encode(),
        headers={"Authorization": f"Bearer {token}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=30) as reply:  # noqa: S310
        raw = reply.read()
    return json.loads(raw) if raw else None


def wait_for_job(stack: Stack, org: uuid.UUID, job_id: str) -> dict[str, Any]:
    token = stack.token(org)
    deadline = time.monotonic() + 60
    while True:
        job: dict[str, Any] = call(stack, token, "GET", f"/analytics/v1/orgs/{org}/exports/{job_id}")
        if job["status"] not in ("pending", "running"):
            return job
        assert time.monotonic() < deadline, f"job {job_id} still {job['status']}"
        time.sleep(0.2)


def last_day_body() -> dict[str, object]:
    """An export of the last 24 whole hours (demo data covers them, whatever the date)."""
    end = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    return {
        "timeRange": {
            "start": (end - timedelta(days=1)).isoformat().replace("+00:00", "Z"),
            "end": end.isoformat().replace("+00:00", "Z"),
        },
        "granularity": "daily",
    }


def in_thread(make: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """Run a coroutine to completion off this thread (the sync Playwright API owns its loop)."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, make()).result()


def hold_pending(stack: Stack, org: uuid.UUID) -> str:
    """A pending export no worker may start for an hour (as one waiting to be retried)."""
    job_id = uuid.uuid4()

    async def insert() -> None:
        conn = await asyncpg.connect(stack.settings.database_url)
        try:
            await conn.execute(
                "INSERT INTO analytics.export_jobs (job_id, org_id, requested_by, time_range_start,"
                " time_range_end, granularity, available_at) VALUES ($1, $2, 'finance@example.com',"
                " '2026-11-01T00:00Z', '2026-11-02T00:00Z', 'daily', now() + interval '1 hour')",
                job_id,
                org,
            )
        finally:
            await conn.close()

    in_thread(insert)
    return str(job_id)


def month_to_date_zone() -> tuple[str, datetime]:
    """A zone whose month to date holds a whole hour now, and its wall clock: UTC, except in the
    first hour of a UTC month, when New York is still in the month before."""
    now = datetime.now(UTC)
    zone = "America/New_York" if now.day == 1 and now.hour == 0 else "UTC"
    return zone, now.astimezone(ZoneInfo(zone))


def choose_zone(page: Page, zone: str) -> None:
    if zone != "UTC":
        page.get_by_label("Time zone").fill(zone)
        page.get_by_label("Time zone").dispatch_event("change")


# --- the tests ---------------------------------------------------------------------------------------


def test_sign_in_from_the_link_shows_who_and_keeps_the_token_in_session_storage_only(
    stack: Stack, browsing: Callable[..., Browsing], screenshots: Path
) -> None:
    org = uuid.uuid4()
    seen = browsing()
    page = seen.page
    # A token as an operator mints one: `analytics-exports token`
    minted = subprocess.run(
        [str(BIN / "analytics-exports"), "token", "--org", str(org), "--sub", "finance@example.com"],
        env=stack.env,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    token = minted.stdout.strip()
    seen.tokens.append(token)
    served = page.goto(f"{stack.base}/analytics/#token={token}")
    assert served is not None
    assert "script-src 'self'" in served.headers["content-security-policy"]

    identity = page.get_by_role("region", name="Signed in")
    expect(identity).to_contain_text("finance@example.com")
    expect(identity).to_contain_text(str(org))
    expect(identity).to_contain_text("exports:read, exports:write")
    expect(page.get_by_role("heading", name="Exports", level=1)).to_be_visible()
    expect(page.get_by_role("link", name="Exports")).to_have_attribute("aria-current", "page")
    # The fragment is gone from the address bar (and so from history and bookmarks).
    assert token not in page.url, page.url
    assert "token=" not in page.url, page.url
    assert page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") == token
    assert page.evaluate("localStorage.length") == 0
    assert page.evaluate("document.cookie") == ""
    # Every API call carried it in the header, and none in its URL (checked for every test).
    api_calls = [(url, headers) for url, headers in seen.requests if "/analytics/v1/" in url]
    assert api_calls, seen.requests
    assert all(headers.get("authorization") == f"Bearer {token}" for _, headers in api_calls)
    shot(page, screenshots, "signed-in")

    page.get_by_role("button", name="Sign out").click()
    expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
    expect(page.get_by_role("region", name="Signed in")).to_be_hidden()
    assert page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") is None


def test_a_bad_token_goes_back_to_sign_in_with_the_problem(
    stack: Stack, browsing: Callable[..., Browsing], screenshots: Path
) -> None:
    seen = browsing()
    seen.expected_statuses.add(401)
    page = seen.page
    page.goto(f"{stack.base}/analytics/")
    page.get_by_label("Bearer token").fill("not-a-token")
    page.get_by_role("button", name="Sign in").click()
    alert = page.get_by_role("alert")
    expect(alert).to_contain_text("invalid token")
    expect(page.get_by_role("button", name="Sign out")).to_be_hidden()
    expect(page.get_by_role("navigation", name="Sections")).to_be_hidden()
    expect(page.get_by_label("Bearer token")).to_be_visible()
    assert page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") is None
    shot(page, screenshots, "bad-token")


def test_a_damaged_sign_in_link_shows_the_sign_in_form_with_the_problem(
    stack: Stack, browsing: Callable[..., Browsing], screenshots: Path
) -> None:
    seen = browsing()
    page = seen.page
    page.goto(f"{stack.base}/analytics/#token=eyJhbGciOi%E0%A4%A")  # a % escape cut short
    expect(page.get_by_role("alert")).to_contain_text("This sign-in link is damaged")
    expect(page.get_by_label("Bearer token")).to_be_focused()
    assert "token=" not in page.url, page.url
    assert page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") is None
    shot(page, screenshots, "damaged-link")


def test_a_single_sign_on_proxy_in_front_signs_the_page_in_without_a_token(
    stack: Stack, browsing: Callable[..., Browsing], screenshots: Path
) -> None:
    # An identity-aware proxy puts the caller's token on every request it forwards to the API;
    # the browser context's extra header stands in for it.
    org = uuid.uuid4()
    token = stack.token(org, scope=READ)
    seen = browsing(extra_http_headers={"Authorization": f"Bearer {token}"})
    page = seen.page
    page.goto(f"{stack.base}/analytics/")
    expect(page.get_by_role("region", name="Signed in")).to_contain_text(str(org))
    expect(page.get_by_role("heading", name="Exports", level=1)).to_be_visible()
    # The page holds no token of its own, so it offers no sign-out (the proxy's is the one)
    assert page.evaluate(f"sessionStorage.getItem('{TOKEN_KEY}')") is None
    expect(page.get_by_role("button", name="Sign out")).to_be_hidden()
    shot(page, screenshots, "single-sign-on")


def test_a_month_to_date_export_is_requested_followed_downloaded_and_verified(
    stack: Stack, browsing: Callable[..., Browsing], screenshots: Path
) -> None:
    zone, now = month_to_date_zone()
    org = stack.seed_demo("--days", "10", "--models", "3")
    seen = browsing()
    page = seen.page
    token = sign_in(seen, stack, org)
    page.evaluate("window.sameDocument = true")  # gone if the page reloads

    choose_zone(page, zone)
    page.get_by_role("button", name="Month to date").click()
    expect(page.get_by_role("button", name="Month to date")).to_have_attribute("aria-pressed", "true")
    expect(page.get_by_label("Start")).to_have_value(f"{now:%Y-%m}-01T00:00")
    expect(page.get_by_label("End")).to_have_value(re.compile(rf"^{now:%Y-%m-%d}T\d\d:00$"))
    shot(page, screenshots, "request-form")
    page.get_by_role("button", name="Request export").click()

    detail = page.get_by_role("region", name=re.compile(r"^Export [0-9a-f]{8}$"))
    expect(detail).to_be_visible()
    download = detail.get_by_role("button", name="Download", exact=True)
    expect(download).to_be_visible(timeout=WAIT_MS)  # only once it succeeded
    expect(detail).to_contain_text("succeeded")
    assert page.evaluate("window.sameDocument") is True, "the page reloaded"

    jobs = call(stack, token, "GET", f"/analytics/v1/orgs/{org}/exports")["items"]
    assert len(jobs) == 1
    job = jobs[0]
    assert job["status"] == "succeeded"
    assert job["rowCount"] > 0
    expect(detail.get_by_role("heading", level=2)).to_have_text(f"Export {job['jobId'][:8]}")
    row = page.get_by_role("table", name="Exports, newest first").get_by_role("row").nth(1)
    expect(row).to_contain_text("succeeded")
    expect(detail).to_contain_text("Manifest matches the service's manifest checksum")

    download.click()
    expect(detail.get_by_text("SHA-256 matches the service's checksum")).to_be_visible(timeout=WAIT_MS)
    expect(detail.get_by_text("The file's totals agree with the manifest")).to_be_visible()
    expect(detail.get_by_text(job["checksum"]).first).to_be_visible()

    # The totals shown: the manifest's, as the API serves it, and the file's recounted alike.
    manifest = call(stack, token, "GET", f"/analytics/v1/orgs/{org}/exports/{job['jobId']}/manifest")
    assert manifest["totals"]
    shown = table_rows(detail.get_by_role("table", name="Totals per currency"))
    expected = []
    for currency, totals in sorted(manifest["totals"].items()):
        for measure, key in (
            ("Cost", "costTotal"),
            ("Requests", "requestCount"),
            ("Tokens", "tokensTotal"),
            ("Errors", "errorCount"),
        ):
            value = str(totals[key])
            expected.append([currency, measure, value, value, "agrees"])
    assert shown == expected

    # The file offered is the one verified: its bytes hash to the service's checksum.
    with page.expect_download() as saving:
        detail.get_by_role("link", name=f"Save export-{job['jobId']}.csv").click()
    saved = Path(saving.value.path()).read_bytes()
    assert hashlib.sha256(saved).hexdigest() == job["checksum"]
    assert decimal_totals(saved) == {c: Decimal(t["costTotal"]) for c, t in manifest["totals"].items()}
    shot(page, screenshots, "export-verified")

    detail.get_by_role("button", name="Audit events").click()
    events = detail.get_by_role("table", name="Audit events, oldest first")
    for event in ("created", "started", "succeeded", "download_url_issued"):
        expect(events.get_by_role("cell", name=event, exact=True).first).to_be_visible()
    assert_fits(page)
    shot(page, screenshots, "audit-events")


def test_a_read_only_token_sees_exports_but_no_request_or_cancel(
    stack: Stack, browsing: Callable[..., Browsing], screenshots: Path
) -> None:
    org = stack.seed_demo("--days", "3", "--models", "2")
    done = call(stack, stack.token(org), "POST", f"/analytics/v1/orgs/{org}/exports", last_day_body())
    wait_for_job(stack, org, done["jobId"])
    waiting = hold_pending(stack, org)

    # The same list with a read+write token offers a cancel for the pending export...
    writer = browsing()
    sign_in(writer, stack, org)
    table = writer.page.get_by_role("table", name="Exports, newest first")
    expect(table.get_by_role("row")).to_have_count(3)
    expect(writer.page.get_by_role("button", name=f"Cancel export {waiting[:8]}")).to_be_visible()

    # ...and none with a read-only one, nor anything that requests or changes.
    reader = browsing()
    page = reader.page
    sign_in(reader, stack, org, scope=READ)
    identity = page.get_by_role("region", name="Signed in")
    expect(identity).to_contain_text("exports:read")
    expect(identity).not_to_contain_text("exports:write")
    table = page.get_by_role("table", name="Exports, newest first")
    expect(table.get_by_role("row")).to_have_count(3)
    expect(table).to_contain_text("pending")
    expect(table).to_contain_text("succeeded")
    expect(page.get_by_role("button", name="Request export")).to_have_count(0)
    expect(page.get_by_role("button", name=re.compile("Cancel"))).to_have_count(0)
    page.get_by_role("button", name=f"Details of export {waiting[:8]}").click()
    detail = page.get_by_role("region", name=f"Export {waiting[:8]}")
    expect(detail).to_contain_text("pending")
    expect(page.get_by_role("button", name=re.compile("Cancel"))).to_have_count(0)
    # The row whose details are open says so, to assistive technology and in words on screen.
    details_button = page.get_by_role("button", name=f"Details of export {waiting[:8]}")
    opened = table.get_by_role("row").filter(has=details_button)
    expect(opened).to_have_attribute("aria-current", "true")
    marker = opened.locator("td").first.locator(":scope > span")
    assert "details below" in marker.evaluate("el => getComputedStyle(el, '::after').content")
    expect(table.locator("tr[aria-current]")).to_have_count(1)
    shot(page, screenshots, "read-only-exports")

    page.get_by_role("link", name="Schedules").click()
    expect(page.get_by_role("heading", name="Schedules", level=1)).to_be_visible()
    expect(page.get_by_role("button", name="Create schedule")).to_have_count(0)
    page.get_by_role("link", name="Webhooks").click()
    expect(page.get_by_role("heading", name="Webhooks", level=1)).to_be_visible()
    expect(page.get_by_role("button", name="Create webhook")).to_have_count(0)
    shot(page, screenshots, "read-only-webhooks")

    # The writer cancels it: its row turns cancelled in place, focus stays in the row, and the
    # status filter finds it.
    page = writer.page
    page.get_by_role("button", name=f"Cancel export {waiting[:8]}").click()
    details = page.get_by_role("button", name=f"Details of export {waiting[:8]}")
    expect(page.get_by_role("row").filter(has=details)).to_contain_text("cancelled")
    expect(page.get_by_role("button", name=re.compile("Cancel"))).to_have_count(0)
    expect(details).to_be_focused()
    page.get_by_label("Show").select_option("cancelled")
    table = page.get_by_role("table", name="Exports, newest first")
    expect(table.get_by_role("row")).to_have_count(2)
    expect(table).to_contain_text("cancelled")
    shot(page, screenshots, "cancelled-filtered")


def test_an_object_overwritten_in_s3_shows_the_mismatch(
    stack: Stack, browsing: Callable[..., Browsing], screenshots: Path
) -> None:
    org = stack.seed_demo("--days", "3", "--models", "2")
    token = stack.token(org)
    created = call(stack, token, "POST", f"/analytics/v1/orgs/{org}/exports", last_day_body())
    job = wait_for_job(stack, org, created["jobId"])
    assert job["status"] == "succeeded"

    # Someone with write access to the bucket replaces the file with other figures.
    forged = (
        "bucket_start,organization_id,model_id,request_count,tokens_total,error_count,cost_total,currency\n"
        f"2026-11-01T00:00:00Z,{org},gpt-forged,1,10,0,999.000000,USD\n"
    ).encode()

    async def overwrite() -> None:
        async with open_s3_client(stack.settings) as client:
            key = object_key(org, uuid.UUID(job["jobId"]))
            await client.put_object(Bucket=stack.settings.s3_bucket, Key=key, Body=forged)

    in_thread(overwrite)

    seen = browsing()
    page = seen.page
    sign_in(seen, stack, org)
    page.get_by_role("button", name=f"Details of export {job['jobId'][:8]}").click()
    detail = page.get_by_role("region", name=f"Export {job['jobId'][:8]}")
    detail.get_by_role("button", name="Download", exact=True).click()
    mismatch = detail.get_by_text("Mismatch: the file's SHA-256 is not the service's checksum")
    expect(mismatch).to_be_visible(timeout=WAIT_MS)
    expect(mismatch).to_have_css("color", "rgb(176, 0, 32)")
    expect(detail.get_by_text(hashlib.sha256(forged).hexdigest())).to_be_visible()
    expect(detail.get_by_text("SHA-256 matches the service's checksum")).to_have_count(0)
    expect(detail.get_by_text("The file's totals differ from the manifest")).to_be_visible()
    expect(detail.get_by_role("link", name=re.compile(r"anyway \(not verified\)"))).to_be_visible()
    shot(page, screenshots, "checksum-mismatch")


def test_a_bad_range_shows_the_api_field_error_next_to_the_field(
    stack: Stack, browsing: Callable[..., Browsing], screenshots: Path
) -> None:
    org = uuid.uuid4()
    seen = browsing()
    seen.expected_statuses.add(400)
    page = seen.page
    sign_in(seen, stack, org)

    page.get_by_label("Start").fill("2026-11-03T00:00")
    page.get_by_label("End").fill("2026-11-02T00:00")
    page.get_by_role("button", name="Request export").click()
    form = page.get_by_role("form", name="Request an export")
    expect(form.get_by_role("alert")).to_contain_text("Request validation failed")
    expect(form.get_by_role("alert")).to_contain_text("timeRange.start must be before timeRange.end")
    group = form.get_by_role("group", name="Time range")
    expect(group.get_by_text("start >= end")).to_be_visible()
    for label in ("Start", "End"):
        expect(page.get_by_label(label)).to_have_attribute("aria-invalid", "true")
        expect(page.get_by_label(label)).to_have_accessible_description(re.compile("start >= end"))
    expect(page.get_by_label("Start")).to_be_focused()
    shot(page, screenshots, "range-error")

    # A field of its own: the message is beside that field, and the earlier one is gone.
    page.get_by_label("Start").fill("2026-11-01T00:00")
    page.get_by_label("Time zone").fill("Mars/Olympus_Mons")
    page.get_by_role("button", name="Request export").click()
    expect(page.get_by_label("Time zone")).to_have_accessible_description(re.compile("unknown time zone"))
    expect(page.get_by_label("Start")).not_to_have_attribute("aria-invalid", "true")
    expect(group.get_by_text("start >= end")).to_have_count(0)
    shot(page, screenshots, "time-zone-error")


def test_a_refused_cancel_is_an_alert_by_the_list_and_live_updates_pause_while_hidden(
    stack: Stack, browsing: Callable[..., Browsing], screenshots: Path
) -> None:
    org = uuid.uuid4()
    waiting = hold_pending(stack, org)
    seen = browsing()
    seen.expected_statuses.add(409)
    page = seen.page
    token = sign_in(seen, stack, org)
    live = page.get_by_text("Live: following 1 unfinished export(s).")
    expect(live).to_be_visible()

    # The tab is hidden: nothing is fetched again until it is shown.
    page.evaluate(
        """() => {
          Object.defineProperty(document, "hidden", { configurable: true, get: () => true });
          document.dispatchEvent(new Event("visibilitychange"));
        }"""
    )
    page.wait_for_timeout(500)
    polls = [url for url, _ in seen.requests if url.endswith(f"/exports/{waiting}")]
    assert polls, "the unfinished export was not followed"
    call(stack, token, "POST", f"/analytics/v1/orgs/{org}/exports/{waiting}/cancel")  # elsewhere
    page.wait_for_timeout(2500)
    assert [url for url, _ in seen.requests if url.endswith(f"/exports/{waiting}")] == polls

    # So the page still offers the cancel; the API refuses it, and says so by the list, in an
    # alert of its own that the live note (rewritten each second) does not overwrite.
    page.get_by_role("button", name=f"Cancel export {waiting[:8]}").click()
    alert = page.get_by_role("region", name="Recent exports").get_by_role("alert")
    expect(alert).to_contain_text(f"Export {waiting[:8]} not cancelled")
    expect(alert).to_contain_text("already cancelled")
    expect(live).to_be_visible()
    shot(page, screenshots, "cancel-refused")

    # Shown again: it follows the export again, and its row turns cancelled.
    page.evaluate(
        """() => {
          delete document.hidden;
          document.dispatchEvent(new Event("visibilitychange"));
        }"""
    )
    details = page.get_by_role("button", name=f"Details of export {waiting[:8]}")
    expect(page.get_by_role("row").filter(has=details)).to_contain_text("cancelled")
    expect(alert).to_contain_text("not cancelled")  # still there, not rewritten by the poller
    expect(live).to_have_count(0)


def test_paging_turns_one_page_per_click_and_only_the_latest_answer_is_shown(
    stack: Stack, browsing: Callable[..., Browsing], screenshots: Path
) -> None:
    org = uuid.uuid4()
    for _ in range(25):
        hold_pending(stack, org)
    seen = browsing()
    page = seen.page
    sign_in(seen, stack, org)
    table = page.get_by_role("table", name="Exports, newest first")
    expect(table.locator("tbody tr")).to_have_count(20)

    # A double click is one turn: the buttons are disabled while the page loads.
    page.get_by_role("button", name="Next page").dblclick()
    expect(page.get_by_text("Page 2", exact=True)).to_be_visible()
    expect(table.locator("tbody tr")).to_have_count(5)
    expect(page.get_by_role("button", name="Next page")).to_be_disabled()
    expect(table).to_be_focused()  # the pressed button is disabled now: focus on the page shown
    page.get_by_role("button", name="Previous page").click()
    expect(page.get_by_text("Page 1", exact=True)).to_be_visible()
    expect(table.locator("tbody tr")).to_have_count(20)
    page.get_by_role("button", name="Next page").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_text("Page 2", exact=True)).to_be_visible()
    page.get_by_role("button", name="Previous page").focus()
    page.keyboard.press("Enter")
    expect(page.get_by_text("Page 1", exact=True)).to_be_visible()
    expect(page.get_by_role("button", name="Next page")).to_be_enabled()

    # An answer overtaken by a later one is dropped: "cancelled" is held back until "pending"
    # is shown, and then changes nothing.
    held: list[Route] = []
    page.route(re.compile(r"/exports\?.*status=cancelled"), lambda route: held.append(route))
    with page.expect_request(re.compile(r"status=cancelled")):
        page.get_by_label("Show").select_option("cancelled")
    page.get_by_label("Show").select_option("pending")
    expect(table.locator("tbody tr")).to_have_count(20)
    with page.expect_response(re.compile(r"status=cancelled")):
        held[0].continue_()
    page.wait_for_timeout(300)
    expect(table.locator("tbody tr")).to_have_count(20)
    expect(page.get_by_text("No cancelled exports.")).to_have_count(0)
    shot(page, screenshots, "latest-answer")


def test_a_request_retried_after_a_lost_answer_makes_one_export(
    stack: Stack, browsing: Callable[..., Browsing], screenshots: Path
) -> None:
    org = stack.seed_demo("--days", "3", "--models", "2")
    seen = browsing()
    page = seen.page
    token = sign_in(seen, stack, org)
    posts: list[Request] = []
    page.on("request", lambda r: posts.append(r) if r.method == "POST" else None)

    def lose_the_answer(route: Route) -> None:
        """The request reaches the API, which makes the export; its answer never reaches the page."""
        if route.request.method != "POST":
            route.continue_()
            return
        route.fetch()
        route.abort()

    page.route(re.compile(r"/exports$"), lose_the_answer)
    page.get_by_label("Time zone").fill("")  # the API's default: UTC
    page.get_by_role("button", name="Yesterday").click()
    page.get_by_role("button", name="Request export").click()
    form = page.get_by_role("form", name="Request an export")
    expect(form.get_by_role("alert")).to_contain_text("The service could not be reached")
    assert len(call(stack, token, "GET", f"/analytics/v1/orgs/{org}/exports")["items"]) == 1
    page.unroute(re.compile(r"/exports$"))

    # The same request again: the same Idempotency-Key, so the API answers with the export made.
    with page.expect_response(lambda r: r.request.method == "POST") as answer:
        page.get_by_role("button", name="Request export").click()
    assert answer.value.status == 202
    assert answer.value.headers.get("idempotent-replayed") == "true"
    expect(page.get_by_role("region", name=re.compile(r"^Export [0-9a-f]{8}$"))).to_be_visible()
    assert len(call(stack, token, "GET", f"/analytics/v1/orgs/{org}/exports")["items"]) == 1
    first, second = posts
    key = first.headers["idempotency-key"]
    assert re.fullmatch(r"[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}", key), key
    assert second.headers["idempotency-key"] == key
    assert "timeZone" not in json.loads(second.post_data or "{}")
    # The page saw a network error on purpose (the answer dropped above).
    seen.errors[:] = [e for e in seen.errors if "net::ERR_FAILED" not in e]
    shot(page, screenshots, "retried-once")


def test_a_large_file_is_checked_only_when_asked_and_once_at_a_time(
    stack: Stack, browsing: Callable[..., Browsing], screenshots: Path
) -> None:
    org = stack.seed_demo("--days", "3", "--models", "2")
    created = call(stack, stack.token(org), "POST", f"/analytics/v1/orgs/{org}/exports", last_day_body())
    job = wait_for_job(stack, org, created["jobId"])
    seen = browsing()
    page = seen.page
    sign_in(seen, stack, org)

    def larger(route: Route) -> None:
        """The job as if its file were 300 MB."""
        answer = route.fetch()
        route.fulfill(response=answer, json={**answer.json(), "byteCount": 300_000_000})

    page.route(re.compile(rf"/exports/{job['jobId']}$"), larger)
    page.get_by_role("button", name=f"Details of export {job['jobId'][:8]}").click()
    detail = page.get_by_role("region", name=f"Export {job['jobId'][:8]}")
    download = detail.get_by_role("button", name="Download", exact=True)
    download.click()
    warning = detail.get_by_text("This file is 300 MB: the check holds all of it in this tab's memory")
    expect(warning).to_be_visible()
    assert not [url for url, _ in seen.requests if url.endswith("/download")]
    shot(page, screenshots, "large-file-warning")

    held: list[Route] = []
    page.route(re.compile(r"/download$"), lambda route: held.append(route))
    detail.get_by_role("button", name="Download and check 300 MB anyway").click()
    expect(download).to_be_disabled()  # no second run while this one goes on
    expect(detail.get_by_text("Downloading…")).to_be_visible()
    held[0].continue_()
    expect(detail.get_by_text("SHA-256 matches the service's checksum")).to_be_visible(timeout=WAIT_MS)
    expect(download).to_be_enabled()
    expect(download).to_be_focused()
    assert len([url for url, _ in seen.requests if url.endswith("/download")]) == 1


def test_schedules_and_webhooks_pages(
    stack: Stack, browsing: Callable[..., Browsing], screenshots: Path
) -> None:
    org = uuid.uuid4()
    seen = browsing()
    seen.expected_statuses.add(400)  # the webhook with no event
    page = seen.page
    token = sign_in(seen, stack, org)

    page.get_by_role("link", name="Schedules").click()
    expect(page.get_by_role("heading", name="Schedules", level=1)).to_be_focused()
    expect(page.get_by_text("No schedules yet.")).to_be_visible()
    page.get_by_label("Cadence").select_option("weekly")
    page.get_by_label("Each run exports").select_option("previous_week")
    page.get_by_label("Time zone").fill("Europe/Berlin")
    page.get_by_label("Hour of the runs (0 to 23)").fill("7")
    page.get_by_role("button", name="Create schedule").click()
    schedules = page.get_by_role("table", name="Export schedules, oldest first")
    expect(schedules.get_by_role("row")).to_have_count(2)
    expect(schedules).to_contain_text("weekly at 07:00 Europe/Berlin")
    expect(schedules).to_contain_text("enabled")
    [made] = call(stack, token, "GET", f"/analytics/v1/orgs/{org}/export-schedules")["items"]
    assert (made["cadence"], made["period"], made["runAtHour"]) == ("weekly", "previous_week", 7)
    which = f"schedule {made['scheduleId'][:8]}"
    # Focus goes to the new schedule's row, and stays on the control used as the list is redrawn.
    expect(page.get_by_role("button", name=f"Disable {which}")).to_be_focused()
    shot(page, screenshots, "schedules")
    page.keyboard.press("Enter")
    expect(page.get_by_role("button", name=f"Enable {which}")).to_be_focused()
    expect(schedules).to_contain_text("disabled")
    page.once("dialog", lambda dialog: dialog.accept())
    page.get_by_role("button", name=f"Delete {which}").click()
    expect(page.get_by_text("No schedules yet.")).to_be_visible()
    assert page.evaluate("document.activeElement.textContent") == "No schedules yet."

    page.get_by_role("link", name="Webhooks").click()
    expect(page.get_by_role("heading", name="Webhooks", level=1)).to_be_focused()
    # No event chosen: the API's error is linked to the event boxes.
    page.get_by_label("URL").fill("http://127.0.0.1:9/hook")
    for event in ("export.succeeded", "export.failed"):
        page.get_by_label(event).uncheck()
    page.get_by_role("button", name="Create webhook").click()
    for event in ("export.succeeded", "export.failed", "export.restated", "export.cancelled"):
        expect(page.get_by_label(event)).to_have_attribute("aria-invalid", "true")
        expect(page.get_by_label(event)).to_have_accessible_description(re.compile("at least 1 item"))
    page.get_by_label("export.succeeded").check()
    page.get_by_label("export.failed").check()
    page.get_by_role("button", name="Create webhook").click()
    secret_box = page.get_by_text("its signing secret, shown only now").locator("..")
    secret = secret_box.locator("code").inner_text()
    assert re.fullmatch(r"whsec_[A-Za-z0-9+/]+={0,2}", secret), secret
    # Never in a live region (a screen reader would read it out): what is announced is where it is.
    live = "el => el.closest('[aria-live], [role=status], [role=alert]')"
    assert secret_box.locator("code").evaluate(live) is None
    announced = "Webhook created: its signing secret is shown below, only now."
    expect(page.locator("#announcer")).to_have_text(announced)
    expect(page.get_by_role("button", name="Copy secret")).to_be_focused()
    hooks = page.get_by_role("table", name="Webhook endpoints, oldest first")
    expect(hooks).to_contain_text("http://127.0.0.1:9/hook")
    expect(hooks).to_contain_text("export.succeeded, export.failed")
    expect(hooks).not_to_contain_text(secret)
    shot(page, screenshots, "webhook-secret-once")

    page.get_by_role("button", name="I have stored it: hide the secret").click()
    assert secret not in page.content()
    page.reload()
    expect(hooks).to_contain_text("http://127.0.0.1:9/hook")
    assert secret not in page.content()
    listed = call(stack, token, "GET", f"/analytics/v1/orgs/{org}/webhooks")["items"]
    assert len(listed) == 1
    assert "secret" not in listed[0]
    page.get_by_role("button", name="Disable of http://127.0.0.1:9/hook").click()
    expect(page.get_by_role("button", name="Enable of http://127.0.0.1:9/hook")).to_be_focused()
    expect(hooks).to_contain_text("disabled")
    page.get_by_role("button", name="Deliveries of http://127.0.0.1:9/hook").click()
    expect(page.get_by_role("heading", name="Deliveries to http://127.0.0.1:9/hook")).to_be_focused()
    expect(page.get_by_text("No deliveries yet.")).to_be_visible()
    shot(page, screenshots, "webhooks")


def test_keyboard_only_at_200_percent_zoom(
    stack: Stack, browsing: Callable[..., Browsing], screenshots: Path
) -> None:
    zone, _ = month_to_date_zone()
    org = stack.seed_demo("--days", "3", "--models", "2")
    token = stack.token(org)
    # 1280 x 960 CSS pixels at 200 %: 640 x 480 of them, each drawn with 2 x 2 device pixels.
    seen = browsing(viewport={"width": 640, "height": 480}, device_scale_factor=2)
    seen.tokens.append(token)
    seen.expected_statuses.add(401)  # the first look, before any token: no proxy in front here
    page = seen.page
    page.goto(f"{stack.base}/analytics/")
    expect(page.get_by_label("Bearer token")).to_be_focused()
    assert_fits(page)
    shot(page, screenshots, "sign-in-200")
    page.keyboard.insert_text(token)
    page.keyboard.press("Enter")
    expect(page.get_by_role("region", name="Signed in")).to_contain_text(str(org))

    choose_zone(page, zone)
    tab_to(page, "Month to date")
    assert page.evaluate("getComputedStyle(document.activeElement).outlineStyle") != "none"
    page.keyboard.press("Enter")
    expect(page.get_by_label("Start")).not_to_have_value("")
    tab_to(page, "Request export")
    page.keyboard.press("Enter")
    detail = page.get_by_role("region", name=re.compile(r"^Export [0-9a-f]{8}$"))
    expect(detail.get_by_role("heading", level=2)).to_be_focused()
    expect(detail.get_by_role("button", name="Download", exact=True)).to_be_visible(timeout=WAIT_MS)
    tab_to(page, "Download")
    page.keyboard.press("Enter")
    expect(detail.get_by_text("SHA-256 matches the service's checksum")).to_be_visible(timeout=WAIT_MS)
    assert_fits(page)
    shot(page, screenshots, "exports-200")

    for name in ("Schedules", "Webhooks"):
        page.get_by_role("link", name=name).click()
        expect(page.get_by_role("heading", name=name, level=1)).to_be_visible()
        assert_fits(page)
        shot(page, screenshots, f"{name.lower()}-200")
    page.set_viewport_size({"width": 320, "height": 640})
    page.get_by_role("link", name="Exports").click()
    expect(page.get_by_role("table", name="Exports, newest first")).to_be_visible()
    assert_fits(page)
    shot(page, screenshots, "exports-320")


# --- helpers ---------------------------------------------------------------------------------------


def table_rows(table: Locator) -> list[list[str]]:
    """The body rows of a table, each as its cells' text."""
    return [
        [cell.inner_text().strip() for cell in row.get_by_role("cell").all()]
        for row in table.locator("tbody").get_by_role("row").all()
    ]


def decimal_totals(data: bytes) -> dict[str, Decimal]:
    """The file's cost per currency, summed with Decimal: the page's sums checked another way."""
    totals: dict[str, Decimal] = {}
    for row in csv.DictReader(io.StringIO(data.decode())):
        totals[row["currency"]] = totals.get(row["currency"], Decimal(0)) + Decimal(row["cost_total"])
    return totals


def tab_to(page: Page, name: str, limit: int = 60) -> None:
    """Press Tab until the focused control is the one named ``name``."""
    for _ in range(limit):
        page.keyboard.press("Tab")
        focused = page.evaluate(
            "(() => { const e = document.activeElement;"
            " return (e.getAttribute('aria-label') || e.textContent || '').trim(); })()"
        )
        if focused == name:
            return
    raise AssertionError(f"{name!r} not reached with Tab")


def assert_fits(page: Page) -> None:
    width, inner = page.evaluate("[document.documentElement.scrollWidth, window.innerWidth]")
    assert width <= inner, f"horizontal scrolling: {width} px of content in {inner} px"


def test_text_from_the_api_is_shown_as_text_never_run(
    stack: Stack, browsing: Callable[..., Browsing], screenshots: Path
) -> None:
    # A model id is whatever the platform recorded: here, markup that would run if inserted as HTML
    org = uuid.uuid4()
    hostile = '<img src=x onerror="window.injected=1">'
    token = stack.token(org)
    job = call(
        stack, token, "POST", f"/analytics/v1/orgs/{org}/exports", {**last_day_body(), "models": [hostile]}
    )
    seen = browsing()
    page = seen.page
    sign_in(seen, stack, org)
    page.get_by_role("button", name=f"Details of export {job['jobId'][:8]}").click()
    expect(page.get_by_text(hostile)).to_be_visible()
    # The markup is text on the page: no element was made of it, nothing ran
    assert page.locator("main img").count() == 0
    assert page.evaluate("window.injected") is None
    shot(page, screenshots, "hostile-text")
