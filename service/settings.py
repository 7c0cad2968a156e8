"""One frozen settings object, built from the environment in one place.

Every process (API, worker, scheduler, CLI) calls :func:`Settings.from_env` once at start.
A malformed value raises :class:`~service.errors.SettingsError` naming the variable, and the
CLI turns that into a one-line message and exit status 2.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Final
from urllib.parse import urlsplit

from service.errors import SettingsError
from service.rollups import DEFAULT_TABLES, TABLE_NAME, TABLE_NAME_RULE, RollupTables
from service.webhook import DEFAULT_RETRY_SCHEDULE

MIB = 1024 * 1024
#: S3 rejects non-final multipart parts below 5 MiB; AWS caps a part at 5 GiB.
MIN_PART_SIZE = 5 * MIB
MAX_PART_SIZE = 5 * 1024 * MIB
#: Signing secrets that were ever published (in this code, its docs or docker-compose.yml): anyone
#: could mint tokens with them, so no process accepts one, as the current or a previous secret.
PUBLIC_SECRETS: Final = frozenset(
    {
        "analytics-exports-dev-secret-change-me-in-production",
        "change-me-to-a-random-secret-of-32-bytes-or-more",
    }
)
#: Words that mark a value as a template's placeholder rather than a generated secret.
_PLACEHOLDER_WORDS: Final = re.compile(r"change[-_ ]?me|replace[-_ ]?me|your[-_ ]?secret|example", re.I)
#: A generated secret of 32 bytes or more shows far more variety than this (hex already has 16).
_MIN_DISTINCT_CHARACTERS: Final = 8
SECRET_HINT: Final = "generate one with `openssl rand -base64 48`"  # noqa: S105 (advice, not a secret)

_DURATION_PART = re.compile(r"(\d+(?:\.\d+)?)(ms|s|m|h|d)")
_DURATION_UNITS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_SIZE = re.compile(r"(\d+)\s*(B|KiB|MiB|GiB|KB|MB|GB)?", re.IGNORECASE)
_SIZE_UNITS = {"b": 1, "kib": 1024, "mib": MIB, "gib": 1024 * MIB, "kb": 1000, "mb": 10**6, "gb": 10**9}
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def parse_duration(variable: str, raw: str) -> float:
    """Parse ``30s``, ``15m``, ``24h``, ``1h30m`` or ``250ms`` into seconds (> 0)."""
    text = raw.strip()
    pos, total = 0, 0.0
    for match in _DURATION_PART.finditer(text):
        if match.start() != pos:
            break
        total += float(match.group(1)) * _DURATION_UNITS[match.group(2)]
        pos = match.end()
    if pos != len(text) or not text:
        raise SettingsError(variable, f"{raw!r} is not a duration (examples: 30s, 15m, 24h)")
    if total <= 0:
        raise SettingsError(variable, f"{raw!r} must be greater than zero")
    return total


def parse_size(variable: str, raw: str) -> int:
    """Parse a byte size: ``8388608``, ``8MiB``, ``16 MiB``."""
    match = _SIZE.fullmatch(raw.strip())
    if not match:
        raise SettingsError(variable, f"{raw!r} is not a size (examples: 8MiB, 16777216)")
    return int(match.group(1)) * _SIZE_UNITS[(match.group(2) or "b").lower()]


def parse_int(variable: str, raw: str, *, minimum: int, maximum: int) -> int:
    try:
        value = int(raw.strip())
    except ValueError:
        raise SettingsError(variable, f"{raw!r} is not an integer") from None
    if not minimum <= value <= maximum:
        raise SettingsError(variable, f"{value} is outside {minimum}..{maximum}")
    return value


def parse_bucket(variable: str, raw: str) -> str:
    name = raw.strip()
    if not _BUCKET.fullmatch(name) or ".." in name:
        raise SettingsError(variable, f"{raw!r} is not a valid S3 bucket name")
    return name


def parse_bucket_overrides(variable: str, raw: str) -> Mapping[uuid.UUID, str]:
    """Parse ``ORG_UUID=bucket,ORG_UUID=bucket``."""
    overrides: dict[uuid.UUID, str] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        org, sep, bucket = item.partition("=")
        if not sep:
            raise SettingsError(variable, f"{item!r} is not ORG_UUID=bucket")
        try:
            org_id = uuid.UUID(org.strip())
        except ValueError:
            raise SettingsError(variable, f"{org.strip()!r} is not a UUID") from None
        if org_id in overrides:
            raise SettingsError(variable, f"org {org_id} is listed twice")
        overrides[org_id] = parse_bucket(variable, bucket)
    return MappingProxyType(overrides)


def secret_problem(secret: str) -> str | None:
    """Why ``secret`` cannot sign or verify tokens, or ``None``: shorter than 32 bytes (HS256's
    key length), a secret that was ever published, or a template's placeholder. Never echoes it."""
    if len(secret.encode()) < 32:
        return "is shorter than 32 bytes (HS256 needs 32 or more)"
    if secret in PUBLIC_SECRETS:
        return "is a published example secret that anyone can sign tokens with"
    if _PLACEHOLDER_WORDS.search(secret) or len(set(secret)) < _MIN_DISTINCT_CHARACTERS:
        return "looks like a placeholder, not a generated secret"
    return None


def parse_secret(variable: str, raw: str) -> str:
    secret = raw.strip()
    if (problem := secret_problem(secret)) is not None:
        raise SettingsError(variable, f"{problem}; {SECRET_HINT}")
    return secret


def parse_previous_secrets(variable: str, raw: str) -> tuple[str, ...]:
    """Parse ``secret,secret``: former HS256 keys, each held to AUTH_JWT_SECRET's rules.
    Surrounding spaces and empty items are ignored, so a secret cannot contain a comma or begin or
    end with a space. Errors never echo a secret."""
    items = [item.strip() for item in raw.split(",")]
    secrets = [item for item in items if item]
    for number, secret in enumerate(secrets, 1):
        if (problem := secret_problem(secret)) is not None:
            raise SettingsError(variable, f"secret {number} of {len(secrets)} {problem}")
    return tuple(dict.fromkeys(secrets))


def parse_url(variable: str, raw: str, schemes: tuple[str, ...]) -> str:
    parts = urlsplit(raw.strip())
    if parts.scheme not in schemes or not parts.hostname:
        raise SettingsError(variable, f"{raw!r} is not a {'/'.join(schemes)} URL")
    return raw.strip()


Parser = Callable[[str, str], object]


def ranged_int(minimum: int, maximum: int) -> Parser:
    return lambda variable, raw: parse_int(variable, raw, minimum=minimum, maximum=maximum)


def ranged_duration(minimum: float, maximum: float | None = None, why: str = "") -> Parser:
    """A duration of at least ``minimum`` (and at most ``maximum``) seconds."""

    def parse(variable: str, raw: str) -> float:
        seconds = parse_duration(variable, raw)
        if seconds < minimum or (maximum is not None and seconds > maximum):
            raise SettingsError(variable, f"{raw!r} is out of range{why}")
        return seconds

    return parse


def parse_part_size(variable: str, raw: str) -> int:
    size = parse_size(variable, raw)
    if not MIN_PART_SIZE <= size <= MAX_PART_SIZE:
        raise SettingsError(variable, f"{raw!r} must be between 5MiB and 5GiB")
    return size


def matching(pattern: str, what: str) -> Parser:
    def parse(variable: str, raw: str) -> str:
        if not re.fullmatch(pattern, raw):
            raise SettingsError(variable, f"{raw!r} is not {what}")
        return raw

    return parse


def urls(*schemes: str) -> Parser:
    return lambda variable, raw: parse_url(variable, raw, schemes)


def text(variable: str, raw: str) -> str:
    return raw


def parse_flag(variable: str, raw: str) -> bool:
    value = raw.strip().lower()
    if value not in {"true", "false", "1", "0"}:
        raise SettingsError(variable, f"{raw!r} is not true or false")
    return value in {"true", "1"}


def parse_retry_schedule(variable: str, raw: str) -> tuple[float, ...]:
    """Durations separated by commas: ``5s,5m,30m``."""
    delays = tuple(parse_duration(variable, part) for part in raw.split(","))
    if len(delays) > 20:
        raise SettingsError(variable, "at most 20 retries")
    return delays


def parse_log_level(variable: str, raw: str) -> str:
    if raw.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
        raise SettingsError(variable, f"{raw!r} is not DEBUG, INFO, WARNING or ERROR")
    return raw.upper()


@dataclass(frozen=True, slots=True)
class Settings:
    """Every setting of every process, with its default. What each one means, and the variable
    that sets it: :data:`VARIABLES`."""

    database_url: str = "postgresql://postgres@127.0.0.1:5432/analytics"
    database_read_url: str | None = None
    rabbitmq_url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    queue_name: str = "exports"
    s3_endpoint: str | None = None
    s3_public_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_bucket: str = "analytics-exports"
    s3_region: str = "us-east-1"
    s3_bucket_overrides: Mapping[uuid.UUID, str] = field(default_factory=lambda: MappingProxyType({}))
    export_worker_interval: float = 30.0
    export_worker_concurrency: int = 2
    export_signed_url_ttl: float = 24 * 3600.0
    export_part_size: int = 8 * MIB
    export_parts_in_flight: int = 2
    export_max_attempts: int = 3
    export_lease_ttl: float = 60.0
    export_retry_window: float = 30.0
    export_shutdown_grace: float = 30.0
    export_max_active_per_org: int = 5
    http_host: str = "127.0.0.1"
    http_port: int = 8084
    http_header_timeout: float = 10.0
    http_body_timeout: float = 30.0
    http_keepalive_timeout: float = 75.0
    http_max_connections: int = 1024
    metrics_port: int = 9191
    auth_jwt_secret: str | None = field(default=None, repr=False)
    auth_jwt_previous_secrets: tuple[str, ...] = field(default=(), repr=False)
    auth_jwt_issuer: str | None = None
    auth_jwt_audience: str | None = None
    auth_jwks_url: str | None = None
    data_retention_months: int = 13
    billing_currency: str = "USD"
    focus_provider_name: str = "AI Platform"
    focus_service_name: str = "Model inference"
    log_level: str = "INFO"
    api_public_url: str | None = None
    webhook_timeout: float = 5.0
    webhook_retry_schedule: tuple[float, ...] = DEFAULT_RETRY_SCHEDULE
    webhook_disable_after: float = 24 * 3600.0
    webhook_allow_private_urls: bool = False
    restatement_check_interval: float = 3600.0
    rollup_prune: bool = False
    rollup_hourly_table: str = DEFAULT_TABLES.hourly
    rollup_daily_table: str = DEFAULT_TABLES.daily

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Build settings from an environment mapping, one :data:`VARIABLES` entry at a time;
        unset or empty variables take the field's default. Then the rules that span variables."""
        values: dict[str, object] = {}
        for variable in VARIABLES:
            raw = env.get(variable.name)
            if raw not in (None, ""):
                values[variable.field] = variable.parse(variable.name, raw)
        settings = replace(cls(), **values)  # type: ignore[arg-type]
        settings._check_together()
        return settings

    def _check_together(self) -> None:
        if (self.s3_access_key is None) != (self.s3_secret_key is None):
            raise SettingsError("S3_SECRET_KEY", "S3_ACCESS_KEY and S3_SECRET_KEY must be set together")
        if self.rollup_hourly_table == self.rollup_daily_table:
            raise SettingsError("ROLLUP_DAILY_TABLE", "must name another table than ROLLUP_HOURLY_TABLE")
        if self.metrics_port and self.metrics_port == self.http_port:
            raise SettingsError("METRICS_PORT", f"must differ from HTTP_PORT ({self.http_port}), or be 0")

    def signing_secret(self) -> str:
        """AUTH_JWT_SECRET, for whatever mints tokens; a SettingsError naming it when unset."""
        if self.auth_jwt_secret is None:
            raise SettingsError("AUTH_JWT_SECRET", f"is required to sign tokens; {SECRET_HINT}")
        return self.auth_jwt_secret

    def require_token_verification(self) -> None:
        """What the API checks before it starts: it can verify tokens (AUTH_JWT_SECRET or
        AUTH_JWKS_URL), so it never falls back to a secret anyone could know."""
        if self.auth_jwt_secret is None and self.auth_jwks_url is None:
            raise SettingsError(
                "AUTH_JWT_SECRET",
                f"is required by the API (or AUTH_JWKS_URL for an identity provider's tokens); {SECRET_HINT}",
            )

    @property
    def rollup_tables(self) -> RollupTables:
        return RollupTables(self.rollup_hourly_table, self.rollup_daily_table, pruned=self.rollup_prune)

    @property
    def public_api_url(self) -> str:
        """Where users reach the API (webhook payloads name its download URL): API_PUBLIC_URL, or
        this process's own address."""
        return (self.api_public_url or f"http://{self.http_host}:{self.http_port}").rstrip("/")

    def bucket_for(self, org_id: uuid.UUID) -> str:
        """The bucket an org's exports go to: its override, or the default bucket."""
        return self.s3_bucket_overrides.get(org_id, self.s3_bucket)

    @property
    def buckets(self) -> list[str]:
        """Every bucket exports may go to, each once, sorted."""
        return sorted({self.s3_bucket, *self.s3_bucket_overrides.values()})


@dataclass(frozen=True, slots=True)
class Variable:
    """One environment variable: the field it sets, how it is parsed, and what the README says of
    it (its default as written there, and one line of meaning)."""

    name: str
    field: str
    parse: Parser
    default: str
    doc: str


#: Every variable any process reads, in the README's order: the one declaration from which
#: ``Settings.from_env``, the README's settings table (tests/house) and compose's environment
#: check (tests/house) all read.
VARIABLES: Final[tuple[Variable, ...]] = (
    Variable(
        "DATABASE_URL",
        "database_url",
        urls("postgresql", "postgres"),
        "`postgresql://postgres@127.0.0.1:5432/analytics`",
        "PostgreSQL",
    ),
    Variable(
        "DATABASE_READ_URL",
        "database_read_url",
        urls("postgresql", "postgres"),
        "unset: `DATABASE_URL`",
        "a streaming replica exports read their rows from (job state stays on `DATABASE_URL`); an"
        " export waits up to 10 s for it to replay past the job's creation, else reads the primary",
    ),
    Variable(
        "RABBITMQ_URL",
        "rabbitmq_url",
        urls("amqp", "amqps"),
        "`amqp://guest:guest@127.0.0.1:5672/%2F`",
        "RabbitMQ",
    ),
    Variable(
        "EXPORT_QUEUE",
        "queue_name",
        matching(r"[A-Za-z0-9_.-]{1,200}", "a valid queue name"),
        "`exports`",
        "queue name (Dramatiq adds `.DQ` and `.XQ`)",
    ),
    Variable(
        "S3_ENDPOINT",
        "s3_endpoint",
        urls("http", "https"),
        "unset: AWS S3",
        "S3-compatible endpoint (MinIO, moto); path-style addressing when set",
    ),
    Variable(
        "S3_PUBLIC_ENDPOINT",
        "s3_public_endpoint",
        urls("http", "https"),
        "unset: `S3_ENDPOINT`",
        "the S3 address download links name: where users' browsers reach S3 when the services"
        " reach it at another (compose: `http://localhost:9000`, the services `http://minio:9000`)",
    ),
    Variable(
        "S3_ACCESS_KEY",
        "s3_access_key",
        text,
        "unset: the AWS credential chain",
        "set it and `S3_SECRET_KEY`, or neither",
    ),
    Variable(
        "S3_SECRET_KEY",
        "s3_secret_key",
        text,
        "unset: the AWS credential chain",
        "set it and `S3_ACCESS_KEY`, or neither",
    ),
    Variable("S3_BUCKET", "s3_bucket", parse_bucket, "`analytics-exports`", "default bucket"),
    Variable(
        "S3_REGION",
        "s3_region",
        matching(r"[a-z0-9-]{2,40}", "a region name"),
        "`us-east-1`",
        "the S3 region to sign for",
    ),
    Variable(
        "S3_BUCKET_OVERRIDES",
        "s3_bucket_overrides",
        parse_bucket_overrides,
        "empty",
        "per-org buckets: `ORG_UUID=bucket,ORG_UUID=bucket`",
    ),
    Variable(
        "EXPORT_WORKER_INTERVAL",
        "export_worker_interval",
        parse_duration,
        "`30s`",
        "scheduler tick (expiry, sweep, rollup retention, schedules, webhooks, restatements)",
    ),
    Variable(
        "EXPORT_WORKER_CONCURRENCY",
        "export_worker_concurrency",
        ranged_int(1, 64),
        "`2`",
        "exports one worker process runs at once (and its prefetch)",
    ),
    Variable(
        "EXPORT_SIGNED_URL_TTL",
        "export_signed_url_ttl",
        ranged_duration(1, 7 * 86400, " (1s to 7d: SigV4's limit)"),
        "`24h`",
        "how long a succeeded export can be downloaded (max `7d`, SigV4's limit)",
    ),
    Variable(
        "EXPORT_PART_SIZE",
        "export_part_size",
        parse_part_size,
        "`8MiB`",
        "multipart part size, `5MiB`..`5GiB`",
    ),
    Variable(
        "EXPORT_PARTS_IN_FLIGHT",
        "export_parts_in_flight",
        ranged_int(1, 8),
        "`2`",
        "part uploads on their way while the next part fills (1 = read and upload in turn)",
    ),
    Variable(
        "EXPORT_MAX_ACTIVE_PER_ORG",
        "export_max_active_per_org",
        ranged_int(1, 10_000),
        "`5`",
        "pending + running exports per org; the next POST gets 429 with `Retry-After`",
    ),
    Variable(
        "EXPORT_MAX_ATTEMPTS",
        "export_max_attempts",
        ranged_int(1, 100),
        "`3`",
        "attempts (claims not handed back at shutdown) before a job fails for good",
    ),
    Variable(
        "EXPORT_LEASE_TTL",
        "export_lease_ttl",
        ranged_duration(3, None, ": at least 3s (it is renewed every third)"),
        "`60s`",
        "a running job's lease, renewed every third; reclaimed by the sweep once lapsed (min `3s`)",
    ),
    Variable(
        "EXPORT_RETRY_WINDOW",
        "export_retry_window",
        parse_duration,
        "`30s`",
        "how long one attempt retries a failing S3 call, with backoff",
    ),
    Variable(
        "EXPORT_SHUTDOWN_GRACE",
        "export_shutdown_grace",
        parse_duration,
        "`30s`",
        "on SIGTERM, how long running exports may finish before they are handed back",
    ),
    Variable(
        "HTTP_HOST",
        "http_host",
        text,
        "`127.0.0.1`",
        "where the API and `METRICS_PORT` listen (containers use `0.0.0.0`)",
    ),
    Variable("HTTP_PORT", "http_port", ranged_int(0, 65535), "`8084`", "the API's port"),
    Variable(
        "HTTP_HEADER_TIMEOUT",
        "http_header_timeout",
        parse_duration,
        "`10s`",
        "a request line and headers slower than this (from their first byte) get 408 and the"
        " connection is closed",
    ),
    Variable(
        "HTTP_BODY_TIMEOUT",
        "http_body_timeout",
        parse_duration,
        "`30s`",
        "a request body slower than this gets 408 and the connection is closed",
    ),
    Variable(
        "HTTP_KEEPALIVE_TIMEOUT",
        "http_keepalive_timeout",
        parse_duration,
        "`75s`",
        "an idle keep-alive connection is closed after this (keep it above a load balancer's idle timeout)",
    ),
    Variable(
        "HTTP_MAX_CONNECTIONS",
        "http_max_connections",
        ranged_int(1, 1_000_000),
        "`1024`",
        "connections the API holds at once; the next gets 503 and is closed",
    ),
    Variable(
        "METRICS_PORT",
        "metrics_port",
        ranged_int(0, 65535),
        "`9191`",
        "the operators' port (on `HTTP_HOST`, keep it internal): a worker's `/metrics` and liveness"
        " `/healthz`; the API's `/metrics` and `/readyz` with its checks (on `HTTP_PORT` then `/readyz`"
        " says only ready or not, and there is no `/metrics`). `0`: a worker serves neither, the API"
        " serves both on `HTTP_PORT`; `make run` gives the API `METRICS_PORT + 1`",
    ),
    Variable(
        "AUTH_JWT_SECRET",
        "auth_jwt_secret",
        parse_secret,
        "none: the API and `token` refuse to start without it",
        "HS256 key: at least 32 bytes, generated (`openssl rand -base64 48`); published or placeholder"
        " values are refused. `make run` makes one per run",
    ),
    Variable(
        "AUTH_JWT_PREVIOUS_SECRETS",
        "auth_jwt_previous_secrets",
        parse_previous_secrets,
        "empty",
        "former HS256 keys, comma-separated, each held to `AUTH_JWT_SECRET`'s rules: tokens they signed"
        " are still accepted, new ones are signed only with `AUTH_JWT_SECRET` (rotation without"
        " downtime: docs/runbooks/exports.md)",
    ),
    Variable(
        "AUTH_JWT_ISSUER", "auth_jwt_issuer", text, "unset", "when set, tokens must carry exactly this `iss`"
    ),
    Variable(
        "AUTH_JWT_AUDIENCE",
        "auth_jwt_audience",
        text,
        "unset",
        "when set, tokens must carry exactly this `aud`",
    ),
    Variable(
        "AUTH_JWKS_URL",
        "auth_jwks_url",
        urls("https", "http"),
        "unset",
        "when set, RS256 tokens are accepted too, verified with the keys this JWKS URL publishes",
    ),
    Variable(
        "DATA_RETENTION_MONTHS",
        "data_retention_months",
        ranged_int(1, 240),
        "`13`",
        "rollups are kept this long; an export may not start earlier",
    ),
    Variable(
        "BILLING_CURRENCY",
        "billing_currency",
        matching(r"[A-Z]{3}", "an ISO 4217 currency code (three capital letters: USD, EUR)"),
        "`USD`",
        "the currency of rollup rows that name none in the tables `migrate up --with-rollups` makes"
        " (the column's default); `seed-demo` writes in it",
    ),
    Variable(
        "FOCUS_PROVIDER_NAME",
        "focus_provider_name",
        matching(r"[^\x00-\x1f]{1,100}", "1 to 100 printable characters"),
        "`AI Platform`",
        "the platform in FOCUS datasets: their ProviderName, PublisherName and InvoiceIssuerName",
    ),
    Variable(
        "FOCUS_SERVICE_NAME",
        "focus_service_name",
        matching(r"[^\x00-\x1f]{1,100}", "1 to 100 printable characters"),
        "`Model inference`",
        "the ServiceName of FOCUS datasets",
    ),
    Variable("LOG_LEVEL", "log_level", parse_log_level, "`INFO`", "JSON logs on stderr"),
    Variable(
        "API_PUBLIC_URL",
        "api_public_url",
        urls("https", "http"),
        "unset: `http://HTTP_HOST:HTTP_PORT`",
        "where users reach the API: webhook payloads name the download URL under it",
    ),
    Variable(
        "WEBHOOK_TIMEOUT",
        "webhook_timeout",
        ranged_duration(1, 30, " (1s to 30s)"),
        "`5s`",
        "how long one delivery attempt may take, connecting and answering",
    ),
    Variable(
        "WEBHOOK_RETRY_SCHEDULE",
        "webhook_retry_schedule",
        parse_retry_schedule,
        "`5s,5m,30m,2h,5h,10h,10h`",
        "the wait before each retry of a delivery the receiver did not take (2xx); after the last"
        " it is failed (the default retries for 27 hours)",
    ),
    Variable(
        "WEBHOOK_DISABLE_AFTER",
        "webhook_disable_after",
        ranged_duration(1, 30 * 86400, " (1s to 30d)"),
        "`24h`",
        "an endpoint whose every attempt failed for this long is disabled",
    ),
    Variable(
        "WEBHOOK_ALLOW_PRIVATE_URLS",
        "webhook_allow_private_urls",
        parse_flag,
        "`false`",
        "`true` accepts `http://` webhook URLs and loopback, private and internal addresses:"
        " for development and tests only",
    ),
    Variable(
        "RESTATEMENT_CHECK_INTERVAL",
        "restatement_check_interval",
        parse_duration,
        "`1h`",
        "how often each scheduled export delivered in the last 35 days has its totals compared with"
        " the rollups (a change makes a restatement)",
    ),
    Variable(
        "ROLLUP_PRUNE",
        "rollup_prune",
        parse_flag,
        "`false`",
        "`true`: the `prune_rollups` tick deletes rollup rows past `DATA_RETENTION_MONTHS`; only where"
        " this service owns the rollup tables (`make run`, tests, compose): the platform's"
        " are its own",
    ),
    Variable(
        "ROLLUP_HOURLY_TABLE",
        "rollup_hourly_table",
        matching(TABLE_NAME.pattern, TABLE_NAME_RULE),
        "`analytics.hourly_rollups`",
        "the table of hourly rollups exports read, written by the platform (what it must hold:"
        " docs/operations.md#rollup-tables); `migrate up --with-rollups` creates it for dev and demos",
    ),
    Variable(
        "ROLLUP_DAILY_TABLE",
        "rollup_daily_table",
        matching(TABLE_NAME.pattern, TABLE_NAME_RULE),
        "`analytics.daily_rollups`",
        "the table of daily rollups (whole UTC days), as `ROLLUP_HOURLY_TABLE`",
    ),
)


def settings_table() -> str:
    """The README's settings table, as VARIABLES declares it."""
    rows = [f"| `{v.name}` | {v.default} | {v.doc} |" for v in VARIABLES]
    return "\n".join(["| variable | default | meaning |", "|---|---|---|", *rows]) + "\n"
