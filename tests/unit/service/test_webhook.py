"""Webhooks' pure rules: which URLs and addresses a delivery may reach, and when a failed attempt
is tried again."""

from __future__ import annotations

import uuid
from datetime import timedelta

import pytest

from service.settings import Settings, SettingsError
from service.webhook import (
    DEFAULT_RETRY_SCHEDULE,
    AddressRefused,
    check_url,
    message_id,
    refused_ip,
    retry_delay,
)


@pytest.mark.parametrize(
    "url",
    [
        "https://hooks.example.com/exports",
        "https://hooks.example.com:8443/a?b=c",
        "https://93.184.216.34/hook",
        "https://[2606:2800:220:1:248:1893:25c8:1946]/hook",
    ],
)
def test_public_https_urls_are_accepted(url: str) -> None:
    assert check_url(url, allow_private=False)


@pytest.mark.parametrize(
    ("url", "why"),
    [
        ("http://hooks.example.com/x", "https://"),
        ("ftp://hooks.example.com/x", "https://"),
        ("hooks.example.com/x", "https://"),
        ("https:///x", "no host"),
        ("https://user:pw@hooks.example.com/x", "credentials"),
        ("https://hooks.example.com/x#frag", "fragment"),
        ("https://hooks.example.com:99999/x", "not a URL"),
        ("https://" + "a" * 2050 + ".com/", "longer than"),
        ("https://localhost/x", "internal host"),
        ("https://api.localhost/x", "internal host"),
        ("https://db.internal/x", "internal host"),
        ("https://printer.local/x", "internal host"),
        ("https://intranet/x", "internal host"),
        ("https://127.0.0.1/x", "loopback"),
        ("https://[::1]/x", "loopback"),
        ("https://10.0.0.8/x", "private"),
        ("https://172.16.3.4/x", "private"),
        ("https://192.168.1.1/x", "private"),
        ("https://169.254.169.254/latest/meta-data", "private"),
        ("https://100.64.0.1/x", "private"),
        ("https://0.0.0.0/x", "private"),
        ("https://[fd00::1]/x", "private"),
        ("https://[::ffff:10.0.0.1]/x", "private"),
        ("https://[2002:a00:1::]/x", "private"),  # 6to4 of 10.0.0.1
        ("https://224.0.0.1/x", "private"),
    ],
)
def test_other_urls_are_refused_with_the_reason(url: str, why: str) -> None:
    with pytest.raises(AddressRefused, match=why):
        check_url(url, allow_private=False)


def test_the_development_setting_allows_http_and_private_addresses_but_not_other_schemes() -> None:
    assert check_url("http://127.0.0.1:8080/hook", allow_private=True) == "127.0.0.1"
    assert check_url("https://localhost/hook", allow_private=True) == "localhost"
    with pytest.raises(AddressRefused, match="https:// or http://"):
        check_url("ftp://127.0.0.1/", allow_private=True)


def test_refused_ip_names_public_addresses_none() -> None:
    assert refused_ip("8.8.8.8") is None
    assert refused_ip("2001:4860:4860::8888") is None
    assert refused_ip("fe80::1%eth0") is not None


def test_each_failed_attempt_waits_its_delay_and_the_last_one_ends_the_delivery() -> None:
    schedule = (5.0, 300.0)
    assert retry_delay(1, schedule) == timedelta(seconds=5)
    assert retry_delay(2, schedule) == timedelta(seconds=300)
    assert retry_delay(3, schedule) is None
    # The default retries for over a day, as the Standard Webhooks schedule does
    assert sum(DEFAULT_RETRY_SCHEDULE) > 24 * 3600


def test_the_message_id_is_the_deliverys_own() -> None:
    delivery = uuid.UUID("0f0e0d0c-0b0a-0908-0706-050403020100")
    assert message_id(delivery) == "msg_0f0e0d0c0b0a09080706050403020100"


def test_webhook_settings_parse_and_refuse_nonsense() -> None:
    settings = Settings.from_env(
        {
            "WEBHOOK_RETRY_SCHEDULE": "1s, 2m,1h",
            "WEBHOOK_ALLOW_PRIVATE_URLS": "TRUE",
            "API_PUBLIC_URL": "https://x.io/",
        }
    )
    assert settings.webhook_retry_schedule == (1.0, 120.0, 3600.0)
    assert settings.webhook_allow_private_urls is True
    assert settings.public_api_url == "https://x.io"
    assert Settings().public_api_url == "http://127.0.0.1:8084"
    for variable, raw in (
        ("WEBHOOK_RETRY_SCHEDULE", "1s,,2s"),
        ("WEBHOOK_RETRY_SCHEDULE", ",".join(["1s"] * 21)),
        ("WEBHOOK_ALLOW_PRIVATE_URLS", "yes"),
        ("WEBHOOK_TIMEOUT", "31s"),
    ):
        with pytest.raises(SettingsError, match=variable):
            Settings.from_env({variable: raw})
