"""One frozen settings object, built from the environment in one place.

Every process (API, worker, scheduler, CLI) calls :func:`Settings.from_env` once at start.
A malformed value raises :class:`~service.errors.SettingsError` naming the variable, and the
CLI turns that into a one-line message and exit status 2.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from types import MappingProxyType
from typing import Final
from urllib.parse import urlsplit

from service.errors import SettingsError

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


@dataclass(frozen=True, slots=True)
class Settings:
    database_url: str = "postgresql://postgres@127.0.0.1:5432/analytics"
    rabbitmq_url: str = "amqp://guest:guest@127.0.0.1:5672/%2F"
    #: Name of the RabbitMQ queue the export actors consume (delay/dead-letter queues derive from it).
    queue_name: str = "exports"
    s3_endpoint: str | None = None
    s3_access_key: str | None = None
    s3_secret_key: str | None = None
    s3_bucket: str = "analytics-exports"
    s3_region: str = "us-east-1"
    s3_bucket_overrides: Mapping[uuid.UUID, str] = field(default_factory=lambda: MappingProxyType({}))
    export_worker_interval: float = 30.0
    export_worker_concurrency: int = 2
    export_signed_url_ttl: float = 24 * 3600.0
    export_part_size: int = 8 * MIB
    #: Part uploads on their way while the next part fills (1 = no overlap of reading and upload).
    export_parts_in_flight: int = 2
    #: Attempts (claims not handed back cleanly) before a job is failed for good.
    export_max_attempts: int = 3
    #: A running job's lease; its worker renews it every third of this. Reclaimable once lapsed.
    export_lease_ttl: float = 60.0
    #: How long one attempt keeps retrying a failing S3 call (with backoff) before it gives up.
    export_retry_window: float = 30.0
    #: On SIGTERM, how long a worker lets running exports finish before handing them back.
    export_shutdown_grace: float = 30.0
    #: Pending + running exports one org may have; the next POST gets 429.
    export_max_active_per_org: int = 5
    http_host: str = "127.0.0.1"
    http_port: int = 8084
    #: A request's line and headers must have arrived this long after its first byte (or after
    #: the connection opened); else the connection gets 408 and is closed.
    http_header_timeout: float = 10.0
    #: A request's body must have arrived this long after the handler starts reading it (408).
    http_body_timeout: float = 30.0
    #: An idle keep-alive connection is closed after this (above a load balancer's idle timeout).
    http_keepalive_timeout: float = 75.0
    #: Connections the API holds open at once; the next one gets 503 and is closed at once.
    http_max_connections: int = 1024
    #: Where a worker serves /metrics (on HTTP_HOST); 0 turns it off. The API serves its own on
    #: HTTP_PORT.
    metrics_port: int = 9191
    #: The HS256 key tokens are signed and verified with. No default: the API refuses to start
    #: without it (or AUTH_JWKS_URL), and `make run` generates one per run. Kept out of repr.
    auth_jwt_secret: str | None = field(default=None, repr=False)
    #: Former HS256 keys, still accepted for verification (never used to mint) while tokens signed
    #: with them run out: what makes rotating AUTH_JWT_SECRET possible without downtime. Kept out
    #: of repr.
    auth_jwt_previous_secrets: tuple[str, ...] = field(default=(), repr=False)
    #: When set, tokens must carry exactly this ``iss`` / this ``aud``.
    auth_jwt_issuer: str | None = None
    auth_jwt_audience: str | None = None
    #: When set, RS256 tokens are also accepted, verified with the keys this JWKS URL publishes.
    auth_jwks_url: str | None = None
    #: Rollups older than this many months are gone; exports may not start before that.
    data_retention_months: int = 13
    log_level: str = "INFO"

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> Settings:
        """Build settings from an environment mapping; unset or empty variables take defaults."""

        def get(name: str) -> str | None:
            value = env.get(name)
            return value if value not in (None, "") else None

        values: dict[str, object] = {}
        if (v := get("DATABASE_URL")) is not None:
            values["database_url"] = parse_url("DATABASE_URL", v, ("postgresql", "postgres"))
        if (v := get("RABBITMQ_URL")) is not None:
            values["rabbitmq_url"] = parse_url("RABBITMQ_URL", v, ("amqp", "amqps"))
        if (v := get("EXPORT_QUEUE")) is not None:
            if not re.fullmatch(r"[A-Za-z0-9_.-]{1,200}", v):
                raise SettingsError("EXPORT_QUEUE", f"{v!r} is not a valid queue name")
            values["queue_name"] = v
        if (v := get("S3_ENDPOINT")) is not None:
            values["s3_endpoint"] = parse_url("S3_ENDPOINT", v, ("http", "https"))
        values["s3_access_key"] = get("S3_ACCESS_KEY")
        values["s3_secret_key"] = get("S3_SECRET_KEY")
        if (values["s3_access_key"] is None) != (values["s3_secret_key"] is None):
            raise SettingsError("S3_SECRET_KEY", "S3_ACCESS_KEY and S3_SECRET_KEY must be set together")
        if (v := get("S3_BUCKET")) is not None:
            values["s3_bucket"] = parse_bucket("S3_BUCKET", v)
        if (v := get("S3_REGION")) is not None:
            if not re.fullmatch(r"[a-z0-9-]{2,40}", v):
                raise SettingsError("S3_REGION", f"{v!r} is not a region name")
            values["s3_region"] = v
        if (v := get("S3_BUCKET_OVERRIDES")) is not None:
            values["s3_bucket_overrides"] = parse_bucket_overrides("S3_BUCKET_OVERRIDES", v)
        if (v := get("EXPORT_WORKER_INTERVAL")) is not None:
            values["export_worker_interval"] = parse_duration("EXPORT_WORKER_INTERVAL", v)
        if (v := get("EXPORT_WORKER_CONCURRENCY")) is not None:
            values["export_worker_concurrency"] = parse_int(
                "EXPORT_WORKER_CONCURRENCY", v, minimum=1, maximum=64
            )
        if (v := get("EXPORT_SIGNED_URL_TTL")) is not None:
            ttl = parse_duration("EXPORT_SIGNED_URL_TTL", v)
            # SigV4 presigned URLs are valid for at most 7 days.
            if not 1 <= ttl <= 7 * 86400:
                raise SettingsError("EXPORT_SIGNED_URL_TTL", f"{v!r} must be between 1s and 7d")
            values["export_signed_url_ttl"] = ttl
        if (v := get("EXPORT_PART_SIZE")) is not None:
            size = parse_size("EXPORT_PART_SIZE", v)
            if not MIN_PART_SIZE <= size <= MAX_PART_SIZE:
                raise SettingsError("EXPORT_PART_SIZE", f"{v!r} must be between 5MiB and 5GiB")
            values["export_part_size"] = size
        if (v := get("EXPORT_PARTS_IN_FLIGHT")) is not None:
            values["export_parts_in_flight"] = parse_int("EXPORT_PARTS_IN_FLIGHT", v, minimum=1, maximum=8)
        if (v := get("EXPORT_MAX_ACTIVE_PER_ORG")) is not None:
            values["export_max_active_per_org"] = parse_int(
                "EXPORT_MAX_ACTIVE_PER_ORG", v, minimum=1, maximum=10_000
            )
        if (v := get("EXPORT_MAX_ATTEMPTS")) is not None:
            values["export_max_attempts"] = parse_int("EXPORT_MAX_ATTEMPTS", v, minimum=1, maximum=100)
        for variable, name in (
            ("EXPORT_LEASE_TTL", "export_lease_ttl"),
            ("EXPORT_RETRY_WINDOW", "export_retry_window"),
            ("EXPORT_SHUTDOWN_GRACE", "export_shutdown_grace"),
            ("HTTP_HEADER_TIMEOUT", "http_header_timeout"),
            ("HTTP_BODY_TIMEOUT", "http_body_timeout"),
            ("HTTP_KEEPALIVE_TIMEOUT", "http_keepalive_timeout"),
        ):
            if (v := get(variable)) is not None:
                values[name] = parse_duration(variable, v)
        if float(values.get("export_lease_ttl", 3.0)) < 3:  # type: ignore[arg-type]
            raise SettingsError("EXPORT_LEASE_TTL", "must be at least 3s (it is renewed every third)")
        if (v := get("HTTP_HOST")) is not None:
            values["http_host"] = v
        if (v := get("HTTP_PORT")) is not None:
            values["http_port"] = parse_int("HTTP_PORT", v, minimum=0, maximum=65535)
        if (v := get("HTTP_MAX_CONNECTIONS")) is not None:
            values["http_max_connections"] = parse_int(
                "HTTP_MAX_CONNECTIONS", v, minimum=1, maximum=1_000_000
            )
        if (v := get("METRICS_PORT")) is not None:
            values["metrics_port"] = parse_int("METRICS_PORT", v, minimum=0, maximum=65535)
        defaults = cls()
        http_port = values.get("http_port", defaults.http_port)
        metrics_port = values.get("metrics_port", defaults.metrics_port)
        if metrics_port and metrics_port == http_port:
            raise SettingsError("METRICS_PORT", f"must differ from HTTP_PORT ({http_port}), or be 0")
        if (v := get("AUTH_JWT_SECRET")) is not None:
            values["auth_jwt_secret"] = parse_secret("AUTH_JWT_SECRET", v)
        if (v := get("AUTH_JWT_PREVIOUS_SECRETS")) is not None:
            values["auth_jwt_previous_secrets"] = parse_previous_secrets("AUTH_JWT_PREVIOUS_SECRETS", v)
        values["auth_jwt_issuer"] = get("AUTH_JWT_ISSUER")
        values["auth_jwt_audience"] = get("AUTH_JWT_AUDIENCE")
        if (v := get("AUTH_JWKS_URL")) is not None:
            values["auth_jwks_url"] = parse_url("AUTH_JWKS_URL", v, ("https", "http"))
        if (v := get("DATA_RETENTION_MONTHS")) is not None:
            values["data_retention_months"] = parse_int("DATA_RETENTION_MONTHS", v, minimum=1, maximum=240)
        if (v := get("LOG_LEVEL")) is not None:
            if v.upper() not in {"DEBUG", "INFO", "WARNING", "ERROR"}:
                raise SettingsError("LOG_LEVEL", f"{v!r} is not DEBUG, INFO, WARNING or ERROR")
            values["log_level"] = v.upper()
        return replace(cls(), **values)  # type: ignore[arg-type]

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

    def bucket_for(self, org_id: uuid.UUID) -> str:
        """The bucket an org's exports go to: its override, or the default bucket."""
        return self.s3_bucket_overrides.get(org_id, self.s3_bucket)
