"""Unit tests of the page's own modules, run where they run: in Chromium, imported by a page
served as the API serves it (its Content-Security-Policy included), with no Node and no
databases. proof.js: CSV parsing, exact money, totals per currency and the manifest's
comparison. period.js: wall times to RFC 3339 across clock changes, and the presets."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import pytest
from aiohttp import web
from playwright.sync_api import Page, sync_playwright

from devtools.local import free_port
from service.api.app import wired_app
from service.settings import Settings
from tests.e2e.conftest import CHROMIUM, CHROMIUM_ARGS
from tests.support.fakes import SECRET, FakeQueue

#: Values the page's modules answer made JSON: a BigInt as "12n", a Map as an object.
SHOW = """(value) => JSON.stringify(value, (key, x) =>
  typeof x === "bigint" ? `${x}n` : x instanceof Map ? Object.fromEntries(x) : x)"""


@pytest.fixture(scope="module")
def site() -> Iterator[str]:
    """The page's files served by the API app (no database: only its page routes answer), from a
    thread of its own: the sync Playwright API keeps this thread's event loop."""
    port = free_port()
    ready = threading.Event()
    serving: list[tuple[asyncio.AbstractEventLoop, asyncio.Event]] = []

    async def serve() -> None:
        runner = web.AppRunner(wired_app(Settings(auth_jwt_secret=SECRET), FakeQueue()))
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        stop = asyncio.Event()
        serving.append((asyncio.get_running_loop(), stop))
        ready.set()
        await stop.wait()
        await runner.cleanup()

    thread = threading.Thread(target=asyncio.run, args=(serve(),), daemon=True)
    thread.start()
    assert ready.wait(10), "the page was not served"
    yield f"http://127.0.0.1:{port}"
    loop, stop = serving[0]
    loop.call_soon_threadsafe(stop.set)
    thread.join(10)


@pytest.fixture(scope="module")
def page(site: str) -> Iterator[Page]:
    """One page (the sign-in form, as no token is given) whose scripts import the modules."""
    with sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=CHROMIUM, args=list(CHROMIUM_ARGS))
        errors: list[str] = []
        page = browser.new_page()
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(f"{site}/analytics/")
        page.get_by_label("Bearer token").wait_for()
        yield page
        browser.close()
        assert not errors, errors


def run(page: Page, body: str) -> Any:
    """`body` run in the page with `proof` and `period` imported; what it returns, through SHOW."""
    script = f"""async () => {{
      const proof = await import("/analytics/proof.js");
      const period = await import("/analytics/period.js");
      return ({SHOW})(await (async () => {{ {body} }})());
    }}"""
    answer = page.evaluate(script)
    return None if answer is None else json.loads(answer)


def fails(page: Page, call: str) -> str:
    """The message of the error that `call` throws (an assertion error if it throws none)."""
    message = run(page, f"try {{ {call}; return null; }} catch (error) {{ return error.message; }}")
    assert message is not None, f"{call} did not throw"
    return str(message)


# --- proof.js ------------------------------------------------------------------------------------

NATIVE = "bucket_start,organization_id,model_id,request_count,tokens_total,error_count,cost_total,currency"


def test_csv_rows_read_quotes_commas_line_breaks_and_crlf(page: Page) -> None:
    text = 'a,"b,c","line\nbreak"\r\n"say ""hi""",,z\r\n"cr\r\nlf",x,\n'
    rows = run(page, f"return [...proof.csvRows({json.dumps(text)})];")
    assert rows == [["a", "b,c", "line\nbreak"], ['say "hi"', "", "z"], ["cr\r\nlf", "x", ""]]
    # A trailing newline ends the last row: no empty row after it; without one, the last row still counts.
    assert run(page, 'return [...proof.csvRows("a,b\\n")];') == [["a", "b"]]
    assert run(page, 'return [...proof.csvRows("a,b\\nc,d")];') == [["a", "b"], ["c", "d"]]


def test_csv_totals_per_currency_are_exact(page: Page) -> None:
    rows = [
        '2026-11-01T00:00:00Z,org,"gpt-4o, mini",3,100,1,-0.000001,USD',
        "2026-11-01T01:00:00Z,org,gpt-4o,2,50,0,1.5,USD",
        "2026-11-01T00:00:00Z,org,claude,1,7,0,1,EUR",
        "2026-11-01T01:00:00Z,org,claude,4,9007199254740993,2,-0,EUR",
        "2026-11-01T02:00:00Z,org,claude,1,1,0,0.1,EUR",
    ]
    # A byte-order mark, CRLF line ends, a blank line and a trailing newline change nothing.
    text = "\ufeff" + NATIVE + "\r\n" + "\r\n".join(rows[:3]) + "\r\n\r\n" + "\n".join(rows[3:]) + "\n"
    result = run(page, f"return proof.csvTotals({json.dumps(text)}, 'native');")
    assert result == {
        "rows": 5,
        "totals": {
            "USD": {
                "costMicros": "1499999n",
                "requestCount": "5n",
                "tokensTotal": "150n",
                "errorCount": "1n",
            },
            "EUR": {
                "costMicros": "1100000n",
                "requestCount": "6n",
                "tokensTotal": "9007199254741001n",
                "errorCount": "2n",
            },
        },
    }


def test_focus_totals_read_empty_cells_as_zero_and_decimal_quantities(page: Page) -> None:
    header = "BillingCurrency,BilledCost,x_RequestCount,ConsumedQuantity,x_ErrorCount,ChargeDescription"
    text = f'{header}\nUSD,0.25,2,1.5,,"a, b"\nUSD,,1,2,1,c\n'
    result = run(page, f"return proof.csvTotals({json.dumps(text)}, 'focus-1.0');")
    assert result == {
        "rows": 2,
        "totals": {
            "USD": {
                "costMicros": "250000n",
                "requestCount": "3n",
                "tokensTotal": "3.500000",
                "errorCount": "1n",
            }
        },
    }


@pytest.mark.parametrize(
    ("text", "micros", "formatted"),
    [
        ("-0.000001", "-1n", "-0.000001"),
        ("1.5", "1500000n", "1.500000"),
        ("1", "1000000n", "1.000000"),
        ("-0", "0n", "0.000000"),
        ("0.1234560", "123456n", "0.123456"),
        ("123456789012345.678901", "123456789012345678901n", "123456789012345.678901"),
    ],
)
def test_costs_are_read_and_written_as_exact_micro_units(
    page: Page, text: str, micros: str, formatted: str
) -> None:
    value = run(page, f"return proof.micros({json.dumps(text)});")
    assert value == micros
    assert run(page, f"return proof.formatMicros(proof.micros({json.dumps(text)}));") == formatted


@pytest.mark.parametrize("text", ["", "abc", "1.2.3", "1e3", "+1", ".5", "1.0000001", "0x10"])
def test_what_is_not_an_amount_is_refused(page: Page, text: str) -> None:
    assert fails(page, f"proof.micros({json.dumps(text)})")


@pytest.mark.parametrize(
    ("rows", "message"),
    [
        (["t,o,m,1,1,0,abc,USD"], 'row 2: not a number: "abc"'),
        (["t,o,m,1,1,0,1,USD", "t,o,m,1.5,1,0,1,USD"], 'row 3: not an integer: "1.5"'),
        (["t,o,m,1,1,0,1,USD", "", "t,o,m,1,1,0,1"], "row 4: 7 cells where the header has 8"),
        (["t,o,m,1,1,0,1,USD", "t,o,m,1,1,0,1.00000001,USD"], "row 3: more than 6 decimals: 1.00000001"),
        (['t,o,"m,1,1,0,1,USD'], "row 2: the file ends inside a quoted cell"),
    ],
)
def test_a_malformed_csv_names_its_row(page: Page, rows: list[str], message: str) -> None:
    text = "\n".join([NATIVE, *rows]) + "\n"
    assert fails(page, f"proof.csvTotals({json.dumps(text)}, 'native')") == message


def test_a_csv_without_a_totalled_column_is_refused(page: Page) -> None:
    text = NATIVE.replace("cost_total", "cost") + "\n"
    message = fails(page, f"proof.csvTotals({json.dumps(text)}, 'native')")
    assert message == "the file has no cost_total column"


def test_totals_are_compared_per_currency_and_measure(page: Page) -> None:
    text = "\n".join([NATIVE, "t,o,m,3,100,1,1.5,USD", "t,o,m,1,1,0,2,EUR"])
    manifest = {
        "USD": {"costTotal": "1.50", "requestCount": 3, "tokensTotal": 100, "errorCount": 1},
        "GBP": {"costTotal": "0.000000", "requestCount": 0, "tokensTotal": 0, "errorCount": 0},
    }
    lines = run(
        page,
        f"""const file = proof.csvTotals({json.dumps(text)}, "native");
        const manifest = proof.parseExact({json.dumps(json.dumps(manifest))}).doc;
        return proof.compareTotals(manifest, file);""",
    )
    by = {(line["currency"], line["measure"]): line for line in lines}
    assert [line["currency"] for line in lines] == ["EUR"] * 4 + ["GBP"] * 4 + ["USD"] * 4
    # Money is compared as an amount: the manifest's "1.50" is the file's 1.500000.
    assert by["USD", "Cost"] == {
        "currency": "USD",
        "measure": "Cost",
        "manifest": "1.50",
        "file": "1.500000",
        "agrees": True,
    }
    judged = {key: (line["manifest"], line["file"], line["agrees"]) for key, line in by.items()}
    assert judged["USD", "Requests"] == ("3", "3", True)
    assert judged["EUR", "Cost"] == ("absent", "2.000000", False)
    assert judged["GBP", "Errors"] == ("0", "absent", False)
    # Without the file's totals: the manifest's alone, nothing judged.
    alone = run(page, f"return proof.compareTotals({json.dumps(manifest)}, null);")
    assert {(line["file"], line["agrees"]) for line in alone} == {(None, None)}


@pytest.mark.parametrize(
    "manifest_totals",
    [
        {"USD": {"costTotal": "not money", "requestCount": 3}},
        {"USD": {"costTotal": {"nested": 1}, "requestCount": None}},
        {"USD": None},
        {"USD": 5},
        None,
        "totals",
        7,
    ],
)
def test_a_malformed_manifest_differs_and_never_throws(page: Page, manifest_totals: Any) -> None:
    text = "\n".join([NATIVE, "t,o,m,3,100,1,1.5,USD"])
    lines = run(
        page,
        f"""const file = proof.csvTotals({json.dumps(text)}, "native");
        return proof.compareTotals({json.dumps(manifest_totals)}, file);""",
    )
    usd = {line["measure"]: line for line in lines if line["currency"] == "USD"}
    assert list(usd) == ["Cost", "Requests", "Tokens", "Errors"]
    assert usd["Cost"]["agrees"] is False
    assert usd["Tokens"]["agrees"] is False


def test_manifest_integers_stay_exact_from_their_source_text(page: Page) -> None:
    text = json.dumps({"totals": {"USD": {"tokensTotal": 12345678901234567891, "errorCount": 0}}, "x": 1.5})
    parsed = run(page, f"return proof.parseExact({json.dumps(text)});")
    assert parsed == {
        "doc": {"totals": {"USD": {"tokensTotal": "12345678901234567891n", "errorCount": "0n"}}, "x": 1.5},
        "exact": True,
    }


def test_without_source_text_big_integers_are_marked_not_verifiable(page: Page) -> None:
    # A browser whose JSON.parse gives revivers no source text (no `context`).
    without_source = """const parse = JSON.parse;
      JSON.parse = (text, reviver) => parse(text, reviver && ((key, value) => reviver(key, value)));
      try { return [TEXTS].map((text) => proof.parseExact(text).exact); }
      finally { JSON.parse = parse; }"""
    texts = [
        json.dumps({"tokensTotal": 2**53 + 1}),
        json.dumps({"tokensTotal": 2**53 - 1, "requestCount": -(2**53 - 1)}),
    ]
    answer = run(page, without_source.replace("TEXTS", ", ".join(json.dumps(t) for t in texts)))
    assert answer == [False, True]


# --- period.js -----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("local", "zone", "expected"),
    [
        ("2026-12-01T00:00", "Europe/Berlin", "2026-12-01T00:00:00+01:00"),
        ("2026-07-01T00:00", "Europe/Berlin", "2026-07-01T00:00:00+02:00"),
        ("2026-07-01T00:00:30", "UTC", "2026-07-01T00:00:30Z"),
        ("2026-07-01T00:00", "Mars/Olympus_Mons", "2026-07-01T00:00:00Z"),  # the API names the zone
        ("", "Europe/Berlin", ""),
        # Spring forward: a skipped wall time names the later instant, with the offset after the change.
        ("2026-03-29T02:00", "Europe/Berlin", "2026-03-29T03:00:00+02:00"),
        ("2026-03-29T02:30", "Europe/Berlin", "2026-03-29T03:30:00+02:00"),
        ("2026-03-08T02:00", "America/New_York", "2026-03-08T03:00:00-04:00"),
        ("2026-03-08T02:30", "America/New_York", "2026-03-08T03:30:00-04:00"),
        ("2026-03-29T01:59", "Europe/Berlin", "2026-03-29T01:59:00+01:00"),
        ("2026-03-29T03:00", "Europe/Berlin", "2026-03-29T03:00:00+02:00"),
        # Fall back: a repeated wall time names the earlier instant (the offset before the change).
        ("2026-10-25T02:00", "Europe/Berlin", "2026-10-25T02:00:00+02:00"),
        ("2026-10-25T02:30", "Europe/Berlin", "2026-10-25T02:30:00+02:00"),
        ("2026-11-01T01:00", "America/New_York", "2026-11-01T01:00:00-04:00"),
        ("2026-11-01T01:30", "America/New_York", "2026-11-01T01:30:00-04:00"),
        ("2026-10-25T03:00", "Europe/Berlin", "2026-10-25T03:00:00+01:00"),
        # Clocks that change at midnight: the skipped midnight is the day's first instant, 01:00.
        ("2026-09-06T00:00", "America/Santiago", "2026-09-06T01:00:00-03:00"),
        ("2026-03-08T00:00", "America/Havana", "2026-03-08T01:00:00-04:00"),
        ("2026-04-04T23:30", "America/Santiago", "2026-04-04T23:30:00-03:00"),
    ],
)
def test_wall_times_become_rfc3339_across_clock_changes(
    page: Page, local: str, zone: str, expected: str
) -> None:
    assert run(page, f"return period.toRfc3339({json.dumps(local)}, {json.dumps(zone)});") == expected


@pytest.mark.parametrize(
    ("zone", "day"),
    [
        ("Europe/Berlin", "2026-03-29"),
        ("Europe/Berlin", "2026-10-25"),
        ("America/New_York", "2026-03-08"),
        ("America/New_York", "2026-11-01"),
        ("America/Santiago", "2026-09-05"),
        ("America/Santiago", "2026-04-04"),
        ("America/Havana", "2026-03-07"),
        ("Australia/Lord_Howe", "2026-10-04"),
    ],
)
def test_wall_times_agree_with_python_around_a_clock_change(page: Page, zone: str, day: str) -> None:
    """Every half hour of two days, as Python's zoneinfo reads them (fold=0: a skipped time moved
    on by the gap, a repeated one the earlier), which is the rule the page follows."""
    start = datetime.fromisoformat(day)
    walls = [(start + timedelta(minutes=30 * n)).strftime("%Y-%m-%dT%H:%M") for n in range(96)]
    shown = run(page, f"return {json.dumps(walls)}.map((w) => period.toRfc3339(w, {json.dumps(zone)}));")
    tz = ZoneInfo(zone)
    expected = [
        datetime.fromisoformat(w).replace(tzinfo=tz).astimezone(UTC).astimezone(tz).isoformat() for w in walls
    ]
    assert shown == [e.replace("+00:00", "Z") for e in expected]


def presets(page: Page, zone: str, now: str) -> dict[str, Any]:
    """Each preset's range in `zone` at the instant `now` (RFC 3339)."""
    answer: dict[str, Any] = run(
        page,
        f"""const now = Date.parse({json.dumps(now)});
        return Object.fromEntries(period.PRESETS.map(([key]) =>
          [key, period.presetRange(key, {json.dumps(zone)}, now)]));""",
    )
    return answer


def test_presets_start_at_the_first_instant_of_a_day_whose_midnight_is_skipped(page: Page) -> None:
    # Santiago's clocks go from 00:00 to 01:00 on 6 September 2026: that day starts at 01:00.
    assert presets(page, "America/Santiago", "2026-09-06T12:00:00-03:00") == {
        "last-month": {"start": "2026-08-01T00:00", "end": "2026-09-01T00:00"},
        "month-to-date": {"start": "2026-09-01T00:00", "end": "2026-09-06T12:00"},
        "yesterday": {"start": "2026-09-05T00:00", "end": "2026-09-06T01:00"},
    }
    assert presets(page, "America/Santiago", "2026-09-07T08:15:00-03:00")["yesterday"] == {
        "start": "2026-09-06T01:00",
        "end": "2026-09-07T00:00",
    }
    # Havana's on 8 March 2026, the same way.
    assert presets(page, "America/Havana", "2026-03-09T10:00:00-04:00")["yesterday"] == {
        "start": "2026-03-08T01:00",
        "end": "2026-03-09T00:00",
    }
    # And the wall times a preset gives name the instants meant.
    assert run(page, 'return period.toRfc3339("2026-09-06T01:00", "America/Santiago");') == (
        "2026-09-06T01:00:00-03:00"
    )


def test_month_to_date_in_the_first_hour_of_the_month_is_last_month(page: Page) -> None:
    first_hour = presets(page, "UTC", "2026-09-01T00:30:00Z")
    assert first_hour["month-to-date"] == {
        "start": "2026-08-01T00:00",
        "end": "2026-09-01T00:00",
        "instead": "no whole hour of this month yet, so last month",
    }
    assert first_hour["last-month"] == {"start": "2026-08-01T00:00", "end": "2026-09-01T00:00"}
    # In Berlin it is the 1st at 00:30 when UTC is still in August.
    berlin = presets(page, "Europe/Berlin", "2026-08-31T22:30:00Z")["month-to-date"]
    assert (berlin["start"], berlin["end"]) == ("2026-08-01T00:00", "2026-09-01T00:00")
    assert "instead" in berlin
    # An hour later the month has its first whole hour.
    assert presets(page, "UTC", "2026-09-01T01:30:00Z")["month-to-date"] == {
        "start": "2026-09-01T00:00",
        "end": "2026-09-01T01:00",
    }
    # January's last month is December of the year before; the chosen range says why.
    assert presets(page, "UTC", "2027-01-01T00:10:00Z")["month-to-date"]["start"] == "2026-12-01T00:00"
    described = run(
        page,
        """const range = period.presetRange("month-to-date", "UTC", Date.parse("2026-09-01T00:30Z"));
        return period.describeRange(range, "UTC");""",
    )
    assert described == (
        "no whole hour of this month yet, so last month: "
        "2026-08-01 00:00 to 2026-09-01 00:00 (UTC, end exclusive)"
    )


def test_an_unknown_or_empty_zone_gives_presets_in_utc(page: Page) -> None:
    for zone in ("", "Mars/Olympus_Mons"):
        assert presets(page, zone, "2026-09-15T10:20:00Z")["yesterday"] == {
            "start": "2026-09-14T00:00",
            "end": "2026-09-15T00:00",
        }
