"""`analytics-exports webhook`: the arguments it checks, the calls it makes, what it prints and its
exit statuses, against a fake API (an aiohttp app on a loopback port, served from a thread of its
own, as in test_client.py) that records each request."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field

import orjson
import pytest
from aiohttp import web
from aiohttp.test_utils import TestServer

from cli.client import EXIT_INCOMPLETE, EXIT_USAGE
from cli.main import build_parser, main
from cli.webhooks import ACTIONS
from devtools.local import free_port

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
TOKEN = "good-token"
ORG = "5f0c6d3e-2b1a-4c8e-9f3d-7a6b5c4d3e21"
WEBHOOK_ID = "7d1e2f3a-0000-4000-8000-000000000001"
SECRET = "whsec_c2VjcmV0LW9mLXRoZS13ZWJob29r"
WEBHOOK: dict[str, object] = {
    "webhookId": WEBHOOK_ID,
    "orgId": ORG,
    "createdBy": "finance@example.com",
    "url": "https://hooks.example.com/exports",
    "events": ["export.succeeded", "export.failed"],
    "enabled": True,
    "disabledReason": None,
    "disabledAt": None,
    "failingSince": None,
    "previousSecretExpiresAt": None,
    "createdAt": "2026-10-01T00:00:00Z",
    "updatedAt": "2026-10-01T00:00:00Z",
}
DELIVERIES: dict[str, object] = {"items": [], "nextCursor": None}
REMINDER = "keep the secret now: the API shows it only this once (`webhook rotate-secret` makes a new one)\n"


def problem(status: int, title: str, detail: str, errors: dict[str, str] | None = None) -> web.Response:
    body: dict[str, object] = {"type": "about:blank", "title": title, "status": status, "detail": detail}
    if errors:
        body["errors"] = errors
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/problem+json")


@dataclass(frozen=True)
class Call:
    method: str
    #: The path under the org's webhooks: "", "/{id}", "/{id}/rotate-secret", ...
    path: str
    query: dict[str, str]
    body: object
    #: The body's Content-Type (None: no body).
    content_type: str | None


@dataclass
class FakeApi:
    """The webhook endpoints of one org, answering as the API does; ``refuse`` maps (method, path)
    to the problem (status, title, detail, errors) to answer instead."""

    base: str = ""
    calls: list[Call] = field(default_factory=list)
    refuse: dict[tuple[str, str], tuple[int, str, str, dict[str, str] | None]] = field(default_factory=dict)

    def answer(self, call: Call) -> web.Response:
        one, rotate, deliveries = (
            f"/{WEBHOOK_ID}",
            f"/{WEBHOOK_ID}/rotate-secret",
            f"/{WEBHOOK_ID}/deliveries",
        )
        if (call.method, call.path) in self.refuse:
            return problem(*self.refuse[call.method, call.path])
        if (call.method, call.path) == ("POST", ""):
            return web.json_response({**WEBHOOK, "secret": SECRET}, status=201)
        if (call.method, call.path) == ("GET", ""):
            return web.json_response({"items": [WEBHOOK]})
        if (call.method, call.path) == ("GET", one):
            return web.json_response(WEBHOOK)
        if (call.method, call.path) == ("PATCH", one):
            assert isinstance(call.body, dict)
            return web.json_response({**WEBHOOK, **call.body})
        if (call.method, call.path) == ("DELETE", one):
            return web.Response(status=204)
        if (call.method, call.path) == ("POST", rotate):
            return web.json_response({**WEBHOOK, "secret": SECRET + "2"})
        if (call.method, call.path) == ("GET", deliveries):
            return web.json_response(DELIVERIES)
        return problem(404, "Not Found", "no such webhook")

    def app(self) -> web.Application:
        @web.middleware
        async def bearer(request: web.Request, handler: Handler) -> web.StreamResponse:
            if request.headers.get("Authorization") != f"Bearer {TOKEN}":
                return problem(401, "Missing or invalid bearer token", "the token's signature is invalid")
            return await handler(request)

        async def webhooks(request: web.Request) -> web.Response:
            raw = await request.read()
            call = Call(
                request.method,
                request.match_info["tail"],
                dict(request.query),
                orjson.loads(raw) if raw else None,
                request.headers.get("Content-Type") if raw else None,
            )
            self.calls.append(call)
            return self.answer(call)

        app = web.Application(middlewares=[bearer])
        app.router.add_route("*", f"/analytics/v1/orgs/{ORG}/webhooks{{tail:.*}}", webhooks)
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


def webhook(api: FakeApi, *args: str, token: str = TOKEN) -> int:
    return main(["webhook", *args, "--api", api.base, "--token", token, "--org", ORG])


def printed_json(out: str) -> object:
    assert out.endswith("\n")
    return orjson.loads(out)


# --- what each action sends and prints --------------------------------------------------------------


def test_create_sends_the_url_and_events_prints_the_answer_and_says_the_secret_is_shown_once(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    url = "https://hooks.example.com/exports"
    assert webhook(api, "create", "--url", url, "--events", "export.succeeded, export.failed") == 0
    out, err = capsys.readouterr()
    assert api.calls == [
        Call(
            "POST", "", {}, {"url": url, "events": ["export.succeeded", "export.failed"]}, "application/json"
        )
    ]
    assert printed_json(out) == {**WEBHOOK, "secret": SECRET}
    assert err == f"analytics-exports webhook create: {REMINDER}"


def test_rotate_secret_posts_to_the_webhook_and_says_the_new_secret_is_shown_once(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    assert webhook(api, "rotate-secret", WEBHOOK_ID) == 0
    out, err = capsys.readouterr()
    assert api.calls == [Call("POST", f"/{WEBHOOK_ID}/rotate-secret", {}, None, None)]
    assert printed_json(out) == {**WEBHOOK, "secret": SECRET + "2"}  # 200, not 201, is its success
    assert err == f"analytics-exports webhook rotate-secret: {REMINDER}"


@pytest.mark.parametrize(
    ("args", "path", "answer"),
    [
        (["list"], "", {"items": [WEBHOOK]}),
        (["show", WEBHOOK_ID], f"/{WEBHOOK_ID}", WEBHOOK),
        (["deliveries", WEBHOOK_ID], f"/{WEBHOOK_ID}/deliveries", DELIVERIES),
    ],
)
def test_reads_print_the_apis_json_and_nothing_else(
    api: FakeApi, capsys: pytest.CaptureFixture[str], args: list[str], path: str, answer: object
) -> None:
    assert webhook(api, *args) == 0
    out, err = capsys.readouterr()
    assert api.calls == [Call("GET", path, {}, None, None)]
    assert out == orjson.dumps(answer, option=orjson.OPT_INDENT_2).decode() + "\n"
    assert err == ""


@pytest.mark.parametrize(
    ("args", "sent"),
    [
        (["--disable"], {"enabled": False}),
        (["--enable"], {"enabled": True}),
        (["--url", "https://other.example.com/"], {"url": "https://other.example.com/"}),
        (["--events", "export.restated"], {"events": ["export.restated"]}),
    ],
)
def test_update_sends_only_the_fields_given(
    api: FakeApi, capsys: pytest.CaptureFixture[str], args: list[str], sent: dict[str, object]
) -> None:
    assert webhook(api, "update", WEBHOOK_ID, *args) == 0
    out, err = capsys.readouterr()
    assert api.calls == [Call("PATCH", f"/{WEBHOOK_ID}", {}, sent, "application/json")]
    assert printed_json(out) == {**WEBHOOK, **sent}
    assert err == ""


def test_delete_prints_one_line(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    assert webhook(api, "delete", WEBHOOK_ID) == 0
    assert api.calls == [Call("DELETE", f"/{WEBHOOK_ID}", {}, None, None)]
    assert capsys.readouterr() == (f"deleted webhook {WEBHOOK_ID}\n", "")


def test_deliveries_sends_limit_and_cursor(api: FakeApi) -> None:
    assert webhook(api, "deliveries", WEBHOOK_ID, "--limit", "5", "--cursor", "c/1+") == 0
    assert api.calls == [
        Call("GET", f"/{WEBHOOK_ID}/deliveries", {"limit": "5", "cursor": "c/1+"}, None, None)
    ]


def test_fields_and_paging_go_only_to_the_actions_that_take_them(api: FakeApi) -> None:
    assert webhook(api, "show", WEBHOOK_ID, "--url", "https://x.example.com/", "--limit", "5") == 0
    assert api.calls == [Call("GET", f"/{WEBHOOK_ID}", {}, None, None)]


# --- refusals and failures --------------------------------------------------------------------------


def test_a_refused_field_is_one_line_with_the_apis_explanation_and_exits_2(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    api.refuse["POST", ""] = (
        400,
        "Request validation failed",
        "url must be an https:// URL",
        {"url": "must be an https:// URL"},
    )
    code = webhook(api, "create", "--url", "ftp://x", "--events", "export.failed")
    assert code == EXIT_USAGE
    assert capsys.readouterr() == (
        "",
        "analytics-exports webhook create: the API answered 400 Request validation failed: url must be"
        " an https:// URL (url: must be an https:// URL)\n",
    )


@pytest.mark.parametrize(
    ("status", "title", "exit_code"),
    [
        (404, "Not Found", EXIT_USAGE),
        (403, "Forbidden", EXIT_USAGE),
        (429, "Too Many Requests", EXIT_INCOMPLETE),
        (503, "A backing service is unavailable", EXIT_INCOMPLETE),
    ],
)
def test_a_problem_answer_is_one_line_and_its_exit_status(
    api: FakeApi, capsys: pytest.CaptureFixture[str], status: int, title: str, exit_code: int
) -> None:
    api.refuse["GET", f"/{WEBHOOK_ID}"] = (status, title, "why", None)
    assert webhook(api, "show", WEBHOOK_ID) == exit_code
    assert capsys.readouterr() == (
        "",
        f"analytics-exports webhook show: the API answered {status} {title}: why\n",
    )


def test_a_bad_token_is_a_usage_error_naming_the_problem(
    api: FakeApi, capsys: pytest.CaptureFixture[str]
) -> None:
    assert webhook(api, "list", token="stale") == EXIT_USAGE
    assert "401 Missing or invalid bearer token: the token's signature is invalid" in capsys.readouterr().err


def test_a_secret_refused_is_not_announced(api: FakeApi, capsys: pytest.CaptureFixture[str]) -> None:
    api.refuse["POST", f"/{WEBHOOK_ID}/rotate-secret"] = (404, "Not Found", "no such webhook", None)
    assert webhook(api, "rotate-secret", WEBHOOK_ID) == EXIT_USAGE
    out, err = capsys.readouterr()
    assert out == ""
    assert "shows it only this once" not in err


def test_an_unreachable_api_is_one_line_that_says_where_and_what_to_do(
    capsys: pytest.CaptureFixture[str],
) -> None:
    closed = FakeApi(base=f"http://127.0.0.1:{free_port()}")
    assert webhook(closed, "list") == EXIT_INCOMPLETE
    assert capsys.readouterr() == (
        "",
        f"analytics-exports webhook list: cannot reach the API at {closed.base} (connection refused):"
        " is it running? `make run` starts it and prints the API, TOKEN and ORG to use\n",
    )


# --- arguments ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("action", ["create", "update"])
def test_create_and_update_without_fields_are_refused_before_anything_is_sent(
    api: FakeApi, capsys: pytest.CaptureFixture[str], action: str
) -> None:
    args = [action] if action == "create" else [action, WEBHOOK_ID]
    assert webhook(api, *args) == EXIT_USAGE
    assert capsys.readouterr().err == f"analytics-exports webhook {action}: give the fields to set\n"
    assert api.calls == []


@pytest.mark.parametrize("action", ["show", "update", "delete", "rotate-secret", "deliveries"])
def test_the_actions_on_one_webhook_need_its_id(
    api: FakeApi, capsys: pytest.CaptureFixture[str], action: str
) -> None:
    assert webhook(api, action, "--disable") == EXIT_USAGE
    assert capsys.readouterr().err == f"analytics-exports webhook {action}: which webhook? give its id\n"
    assert api.calls == []


@pytest.mark.parametrize(
    "argv",
    [
        ["rename", WEBHOOK_ID],
        ["create", "--url", "https://x.example.com/", "--events", "export.started"],
        ["create", "--url", "https://x.example.com/", "--events", ","],
        ["create", "--url", "https://x.example.com/", "--events", "export.failed,export.failed"],
        ["update", WEBHOOK_ID, "--enable", "--disable"],
        ["deliveries", WEBHOOK_ID, "--limit", "ten"],
    ],
)
def test_bad_arguments_exit_2(argv: list[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["webhook", *argv, "--api", "http://127.0.0.1:1", "--token", TOKEN, "--org", ORG])
    assert exited.value.code == EXIT_USAGE


def test_an_unknown_event_is_named_with_the_ones_there_are(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["webhook", "create", "--events", "export.succeeded,export.started"])
    assert (
        "argument --events: unknown event 'export.started'; give one or more of export.succeeded,"
        " export.failed, export.restated, export.cancelled, comma-separated" in capsys.readouterr().err
    )


def test_the_parser_offers_exactly_the_commands_actions(capsys: pytest.CaptureFixture[str]) -> None:
    for action in ACTIONS:
        assert build_parser().parse_args(["webhook", action]).action == action
    with pytest.raises(SystemExit):
        build_parser().parse_args(["webhook", "rename"])
    assert f"(choose from {', '.join(map(repr, ACTIONS))})" in capsys.readouterr().err


def test_api_token_and_org_default_to_the_variables_make_run_prints(
    api: FakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("API", api.base)
    monkeypatch.setenv("TOKEN", TOKEN)
    monkeypatch.setenv("ORG", ORG)
    assert main(["webhook", "list"]) == 0
    assert [call.path for call in api.calls] == [""]


def test_missing_connection_details_are_a_usage_error_that_says_where_to_get_them(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    for variable in ("API", "TOKEN", "ORG"):
        monkeypatch.delenv(variable, raising=False)
    assert main(["webhook", "list", "--token", TOKEN]) == EXIT_USAGE
    assert capsys.readouterr().err == (
        "analytics-exports webhook: missing --api (or API), --org (or ORG); `make run` prints the"
        " `export API=... TOKEN=... ORG=...` lines to paste\n"
    )
