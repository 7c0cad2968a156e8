"""`analytics-exports webhook` against the real processes: an endpoint created (its secret shown
once), read, disabled and enabled, its secret rotated, its deliveries listed, deleted; and a URL
the API refuses."""

from __future__ import annotations

import json
import subprocess
import uuid

import pytest

from tests.conftest import BIN
from tests.e2e.conftest import Stack

pytestmark = pytest.mark.usefixtures("clean_state")
#: The stack accepts http:// and loopback URLs (WEBHOOK_ALLOW_PRIVATE_URLS=true); nothing listens.
HOOK_URL = "http://127.0.0.1:9/exports-hook"
ONCE = "the API shows it only this once"


def test_the_cli_manages_a_webhook_from_creation_to_deletion(stack: Stack) -> None:
    org = uuid.uuid4()
    env = {**stack.env, "API": stack.base, "TOKEN": stack.token(org), "ORG": str(org)}

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        command = [str(BIN / "analytics-exports"), "webhook", *args]
        return subprocess.run(command, env=env, capture_output=True, text=True, timeout=60, check=False)

    made = cli("create", "--url", HOOK_URL, "--events", "export.succeeded,export.failed")
    assert made.returncode == 0, made.stderr
    created = json.loads(made.stdout)
    webhook_id, secret = created["webhookId"], created["secret"]
    assert (created["url"], created["events"], created["enabled"]) == (
        HOOK_URL,
        ["export.succeeded", "export.failed"],
        True,
    )
    assert secret.startswith("whsec_")
    assert made.stdout.count(secret) == 1
    assert secret not in made.stderr
    assert ONCE in made.stderr
    assert len(made.stderr.splitlines()) == 1

    listed = cli("list")
    assert listed.returncode == 0, listed.stderr
    items = json.loads(listed.stdout)["items"]
    assert [item["webhookId"] for item in items] == [webhook_id]
    assert "secret" not in items[0]
    shown = cli("show", webhook_id)
    assert shown.returncode == 0, shown.stderr
    assert json.loads(shown.stdout) == {k: v for k, v in created.items() if k != "secret"}
    assert (secret not in shown.stdout, shown.stderr) == (True, "")

    disabled = cli("update", webhook_id, "--disable")
    assert disabled.returncode == 0, disabled.stderr
    assert json.loads(disabled.stdout)["enabled"] is False
    assert json.loads(cli("show", webhook_id).stdout)["enabled"] is False
    enabled = cli("update", webhook_id, "--enable")
    assert enabled.returncode == 0, enabled.stderr
    assert json.loads(enabled.stdout)["enabled"] is True
    assert json.loads(cli("show", webhook_id).stdout)["enabled"] is True

    rotated = cli("rotate-secret", webhook_id)
    assert rotated.returncode == 0, rotated.stderr
    answer = json.loads(rotated.stdout)
    assert answer["webhookId"] == webhook_id
    assert answer["secret"].startswith("whsec_")
    assert answer["secret"] != secret
    assert answer["previousSecretExpiresAt"] is not None  # the old secret still signs for a while
    assert ONCE in rotated.stderr

    deliveries = cli("deliveries", webhook_id, "--limit", "10")
    assert deliveries.returncode == 0, deliveries.stderr
    assert json.loads(deliveries.stdout) == {"items": [], "nextCursor": None}

    deleted = cli("delete", webhook_id)
    assert (deleted.returncode, deleted.stdout, deleted.stderr) == (0, f"deleted webhook {webhook_id}\n", "")
    gone = cli("show", webhook_id)
    assert gone.returncode == 2
    assert "404" in gone.stderr
    assert json.loads(cli("list").stdout) == {"items": []}


def test_the_cli_prints_why_the_api_refuses_a_url(stack: Stack) -> None:
    org = uuid.uuid4()
    env = {**stack.env, "API": stack.base, "TOKEN": stack.token(org), "ORG": str(org)}
    command = [str(BIN / "analytics-exports"), "webhook", "create", "--url", "ftp://x", "--events"]
    refused = subprocess.run(
        [*command, "export.failed"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert refused.returncode == 2
    assert refused.stdout == ""
    [line] = refused.stderr.splitlines()
    assert line.startswith("analytics-exports webhook create: the API answered 400 ")
    assert "url: must be an https:// or http:// URL" in line  # the stack allows http (loopback)
    assert ONCE not in line
