"""Settings.from_env: documented defaults, parsing, and errors that name the variable."""

from __future__ import annotations

import dataclasses
import uuid

import pytest

from service.errors import SettingsError
from service.settings import PUBLIC_SECRETS, Settings
from tests.support.fakes import ORG_A, ORG_B

MIB = 1024 * 1024


def test_defaults_are_the_documented_ones() -> None:
    # Given an empty environment
    # When settings are built
    settings = Settings.from_env({})
    # Then every documented default applies
    assert settings.database_url == "postgresql://postgres@127.0.0.1:5432/analytics"
    assert settings.rabbitmq_url == "amqp://guest:guest@127.0.0.1:5672/%2F"
    assert settings.s3_bucket == "analytics-exports"
    assert settings.s3_region == "us-east-1"
    assert settings.export_worker_interval == 30
    assert settings.export_worker_concurrency == 2
    assert settings.export_signed_url_ttl == 24 * 60 * 60
    assert settings.export_part_size == 8 * MIB
    assert settings.http_port == 8084
    assert settings.s3_endpoint is None
    assert settings.s3_access_key is None
    assert settings.s3_secret_key is None
    assert dict(settings.s3_bucket_overrides) == {}
    # No signing secret unless one is given: nothing falls back to a secret anyone could know.
    assert settings.auth_jwt_secret is None


def test_empty_values_take_the_defaults() -> None:
    settings = Settings.from_env({"S3_BUCKET": "", "HTTP_PORT": "", "EXPORT_PART_SIZE": ""})
    assert settings == Settings()


@pytest.mark.parametrize(
    ("raw", "seconds"),
    [("30s", 30), ("15m", 15 * 60), ("24h", 24 * 3600), ("1h30m", 90 * 60), ("1d", 86400)],
)
def test_durations_parse_to_seconds(raw: str, seconds: int) -> None:
    settings = Settings.from_env({"EXPORT_WORKER_INTERVAL": raw})
    assert settings.export_worker_interval == seconds


def test_signed_url_ttl_parses_as_a_duration() -> None:
    assert Settings.from_env({"EXPORT_SIGNED_URL_TTL": "2h"}).export_signed_url_ttl == 7200


@pytest.mark.parametrize(("raw", "size"), [("8MiB", 8 * MIB), ("16 MiB", 16 * MIB), ("5242880", 5 * MIB)])
def test_part_size_parses_units(raw: str, size: int) -> None:
    assert Settings.from_env({"EXPORT_PART_SIZE": raw}).export_part_size == size


def test_values_from_the_environment_are_used() -> None:
    settings = Settings.from_env(
        {
            "DATABASE_URL": "postgres://u:p@db.internal:5433/x",
            "RABBITMQ_URL": "amqps://u:p@mq.internal/vhost",
            "S3_ENDPOINT": "http://127.0.0.1:9000",
            "S3_ACCESS_KEY": "access",
            "S3_SECRET_KEY": "secret",
            "S3_BUCKET": "my-exports",
            "S3_REGION": "eu-west-1",
            "EXPORT_WORKER_CONCURRENCY": "8",
            "HTTP_PORT": "9000",
            "AUTH_JWT_SECRET": SECRET,
            "LOG_LEVEL": "debug",
        }
    )
    assert settings.database_url == "postgres://u:p@db.internal:5433/x"
    assert settings.rabbitmq_url == "amqps://u:p@mq.internal/vhost"
    assert settings.s3_endpoint == "http://127.0.0.1:9000"
    assert (settings.s3_access_key, settings.s3_secret_key) == ("access", "secret")
    assert settings.s3_bucket == "my-exports"
    assert settings.s3_region == "eu-west-1"
    assert settings.export_worker_concurrency == 8
    assert settings.http_port == 9000
    assert settings.auth_jwt_secret == SECRET
    assert settings.log_level == "DEBUG"


@pytest.mark.parametrize(
    ("variable", "raw"),
    [
        ("EXPORT_WORKER_INTERVAL", "thirty"),
        ("EXPORT_WORKER_INTERVAL", "30"),
        ("EXPORT_WORKER_INTERVAL", "30s5"),
        ("EXPORT_WORKER_INTERVAL", "-5s"),
        ("EXPORT_WORKER_INTERVAL", "0s"),
        ("EXPORT_WORKER_INTERVAL", "0h0m"),
        ("EXPORT_SIGNED_URL_TTL", "0s"),
        ("EXPORT_SIGNED_URL_TTL", "8d"),
        ("EXPORT_PART_SIZE", "4MiB"),
        ("EXPORT_PART_SIZE", str(5 * MIB - 1)),
        ("EXPORT_PART_SIZE", "lots"),
        ("EXPORT_PART_SIZE", "6GiB"),
        ("EXPORT_WORKER_CONCURRENCY", "0"),
        ("EXPORT_WORKER_CONCURRENCY", "two"),
        ("EXPORT_WORKER_CONCURRENCY", "65"),
        ("HTTP_PORT", "http"),
        ("HTTP_PORT", "65536"),
        ("HTTP_PORT", "-1"),
        ("S3_BUCKET", "Analytics_Exports"),
        ("S3_BUCKET", "ab"),
        ("S3_BUCKET", "a" * 64),
        ("S3_BUCKET", "bad..name"),
        ("S3_BUCKET", "-leading-dash"),
        ("S3_REGION", "US EAST"),
        ("AUTH_JWT_SECRET", "too-short"),
        ("AUTH_JWT_SECRET", "x" * 31),
        ("AUTH_JWT_SECRET", "x" * 64),  # long, but nothing a generator makes
        ("AUTH_JWT_SECRET", "change-me-to-a-random-secret-of-32-bytes-or-more"),
        ("AUTH_JWT_SECRET", "analytics-exports-dev-secret-change-me-in-production"),
        ("AUTH_JWT_SECRET", "replace_me_with_your_secret_value_please"),
        ("DATABASE_URL", "mysql://root@127.0.0.1/analytics"),
        ("DATABASE_URL", "not a url"),
        ("RABBITMQ_URL", "http://127.0.0.1:15672/"),
        ("S3_ENDPOINT", "ftp://127.0.0.1"),
        ("EXPORT_QUEUE", "exports queue"),
        ("LOG_LEVEL", "LOUD"),
        ("ROLLUP_HOURLY_TABLE", "analytics_hourly_rollups"),  # no schema
        ("ROLLUP_HOURLY_TABLE", "Public.Hourly"),  # PostgreSQL would fold it; say it as it is
        ("ROLLUP_DAILY_TABLE", 'analytics."daily rollups"'),
        ("ROLLUP_DAILY_TABLE", "a.b.c"),
        ("ROLLUP_DAILY_TABLE", "analytics.daily$4"),  # COPY with arguments would read $4 as one
        ("ROLLUP_DAILY_TABLE", "analytics." + "d" * 50),  # its index's name would be cut
        ("ROLLUP_DAILY_TABLE", "analytics.daily; DROP TABLE x"),
        ("ROLLUP_DAILY_TABLE", "analytics.hourly_rollups"),  # the hourly table's name
    ],
)
def test_bad_values_raise_settings_error_naming_the_variable(variable: str, raw: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({variable: raw})
    assert caught.value.variable == variable
    assert variable in str(caught.value)


@pytest.mark.parametrize(
    "raw",
    [
        f"{ORG_A}",  # no '='
        "not-a-uuid=bucket-one",
        f"{ORG_A}=bucket-one,{ORG_A}=bucket-two",  # the same org twice
        f"{ORG_A}=Bad_Bucket",
    ],
)
def test_bad_bucket_overrides_are_rejected(raw: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"S3_BUCKET_OVERRIDES": raw})
    assert caught.value.variable == "S3_BUCKET_OVERRIDES"
    assert "S3_BUCKET_OVERRIDES" in str(caught.value)


def test_duplicate_override_names_the_org() -> None:
    with pytest.raises(SettingsError, match=str(ORG_A)):
        Settings.from_env({"S3_BUCKET_OVERRIDES": f"{ORG_A}=one-bucket, {ORG_A.hex}=two-bucket"})


@pytest.mark.parametrize("given", ["S3_ACCESS_KEY", "S3_SECRET_KEY"])
def test_access_and_secret_key_go_together(given: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({given: "value"})
    assert caught.value.variable in {"S3_ACCESS_KEY", "S3_SECRET_KEY"}
    assert "S3_ACCESS_KEY" in str(caught.value)
    assert "S3_SECRET_KEY" in str(caught.value)


def test_overrides_parse_into_a_mapping_and_bucket_for_uses_them() -> None:
    # Given an override for one org (with spaces and a trailing comma)
    settings = Settings.from_env(
        {"S3_BUCKET": "default-exports", "S3_BUCKET_OVERRIDES": f" {ORG_A} = org-a-exports ,"}
    )
    # Then the mapping holds exactly that org, and bucket_for picks the override or the default
    assert dict(settings.s3_bucket_overrides) == {ORG_A: "org-a-exports"}
    assert settings.bucket_for(ORG_A) == "org-a-exports"
    assert settings.bucket_for(ORG_B) == "default-exports"
    assert settings.bucket_for(uuid.uuid4()) == "default-exports"


def test_several_overrides() -> None:
    settings = Settings.from_env({"S3_BUCKET_OVERRIDES": f"{ORG_A}=bucket-a,{ORG_B}=bucket-b"})
    assert dict(settings.s3_bucket_overrides) == {ORG_A: "bucket-a", ORG_B: "bucket-b"}


def test_settings_are_frozen() -> None:
    settings = Settings.from_env({"S3_BUCKET_OVERRIDES": f"{ORG_A}=bucket-a"})
    with pytest.raises(dataclasses.FrozenInstanceError):
        settings.s3_bucket = "other-bucket"  # type: ignore[misc]
    with pytest.raises(TypeError):
        settings.s3_bucket_overrides[ORG_B] = "bucket-b"  # type: ignore[index]


@pytest.mark.parametrize("published", sorted(PUBLIC_SECRETS))
def test_a_published_secret_is_refused_without_being_echoed(published: str) -> None:
    # Given a secret that was ever written in this repository (the old development default, the
    # compose placeholder), when it is configured as the current secret
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"AUTH_JWT_SECRET": published})
    # Then the process refuses it, naming the variable and how to make a real one
    assert caught.value.variable == "AUTH_JWT_SECRET"
    assert "openssl rand" in str(caught.value)
    assert published not in str(caught.value)


def test_a_signing_secret_is_required_to_serve_the_api_or_mint_tokens() -> None:
    settings = Settings.from_env({})
    for check in (settings.require_token_verification, settings.signing_secret):
        with pytest.raises(SettingsError) as caught:
            check()
        assert caught.value.variable == "AUTH_JWT_SECRET"
    # An identity provider's keys alone are enough to verify tokens (not to mint them)
    Settings.from_env({"AUTH_JWKS_URL": "https://idp.example.com/jwks"}).require_token_verification()
    assert Settings.from_env({"AUTH_JWT_SECRET": SECRET}).signing_secret() == SECRET


def test_the_signing_secret_stays_out_of_repr() -> None:
    assert SECRET not in repr(Settings.from_env({"AUTH_JWT_SECRET": SECRET}))


SECRET = "Qm9Z-secret-for-settings-tests-4fT8xW2k"
OLD_SECRET = "old-7Hk2Lp9Qw3Zx8Vb5Nm1Rt6Yc4Jd0Gs"
OLDER_SECRET = "older-Px4Wq8Ln2Kz6Hb9Tj3Vr7Ys1Mc5Dg0Fe"


def test_previous_jwt_secrets_default_to_none() -> None:
    assert Settings.from_env({}).auth_jwt_previous_secrets == ()
    assert Settings.from_env({"AUTH_JWT_PREVIOUS_SECRETS": ""}).auth_jwt_previous_secrets == ()


@pytest.mark.parametrize(
    ("raw", "expected"),
    [
        (OLD_SECRET, (OLD_SECRET,)),
        (f"{OLD_SECRET},{OLDER_SECRET}", (OLD_SECRET, OLDER_SECRET)),
        (f" {OLD_SECRET} , {OLDER_SECRET} ,", (OLD_SECRET, OLDER_SECRET)),  # spaces, a trailing comma
        (f"{OLD_SECRET},{OLD_SECRET}", (OLD_SECRET,)),  # a repeat is dropped
        ("äöüßéèêëïîôûùç" + "ü" * 2, ("äöüßéèêëïîôûùç" + "ü" * 2,)),  # 32 bytes in UTF-8 as it counts
    ],
)
def test_previous_jwt_secrets_parse_in_order(raw: str, expected: tuple[str, ...]) -> None:
    settings = Settings.from_env({"AUTH_JWT_SECRET": SECRET, "AUTH_JWT_PREVIOUS_SECRETS": raw})
    assert settings.auth_jwt_previous_secrets == expected
    # Tokens are minted with the current secret only; the previous ones only verify.
    assert settings.auth_jwt_secret == SECRET


@pytest.mark.parametrize(
    "raw",
    [
        "too-short",
        "x" * 31,
        f"{OLD_SECRET},short-one",
        f"{OLD_SECRET},analytics-exports-dev-secret-change-me-in-production",  # published: never verifies
    ],
)
def test_bad_previous_jwt_secrets_name_the_variable_and_not_the_secret(raw: str) -> None:
    with pytest.raises(SettingsError) as caught:
        Settings.from_env({"AUTH_JWT_PREVIOUS_SECRETS": raw})
    assert caught.value.variable == "AUTH_JWT_PREVIOUS_SECRETS"
    assert "AUTH_JWT_PREVIOUS_SECRETS" in str(caught.value)
    for secret in filter(None, raw.split(",")):
        assert secret not in str(caught.value)


def test_previous_jwt_secrets_stay_out_of_repr() -> None:
    settings = Settings.from_env({"AUTH_JWT_PREVIOUS_SECRETS": OLD_SECRET})
    assert OLD_SECRET not in repr(settings)


def test_the_rollup_tables_are_where_the_settings_say() -> None:
    settings = Settings.from_env(
        {
            "ROLLUP_HOURLY_TABLE": "public.analytics_hourly_rollups",
            "ROLLUP_DAILY_TABLE": "public.analytics_daily_rollups",
        }
    )
    assert settings.rollup_tables.placeholders()["hourly_rollups"] == '"public"."analytics_hourly_rollups"'
    assert settings.rollup_tables.daily == "public.analytics_daily_rollups"
    assert Settings().rollup_tables.hourly == "analytics.hourly_rollups"
