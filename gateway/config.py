"""Settings: the one place that reads the environment (``EXAMGATE_*``)."""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import secrets
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping
from urllib.parse import urlsplit

PREFIX = "EXAMGATE_"


class ConfigError(ValueError):
    """A setting has a value examgate cannot start with; the message names it."""


def _int(lo: int, hi: int) -> Callable[[str], int]:
    def parse(raw: str) -> int:
        try:
            value = int(raw)
        except ValueError:
            raise ValueError(f"must be an integer, got {raw!r}") from None
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}, got {value}")
        return value

    return parse


def _float(lo: float, hi: float) -> Callable[[str], float]:
    def parse(raw: str) -> float:
        try:
            value = float(raw)
        except ValueError:
            raise ValueError(f"must be a number, got {raw!r}") from None
        if not lo <= value <= hi:
            raise ValueError(f"must be between {lo} and {hi}, got {value}")
        return value

    return parse


def _bool(raw: str) -> bool:
    lowered = raw.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off", ""}:
        return False
    raise ValueError(f"must be true or false, got {raw!r}")


def _url(*schemes: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        parts = urlsplit(raw)
        if parts.scheme not in schemes or not parts.hostname:
            raise ValueError(f"must be a {' or '.join(schemes)} URL with a host, got {raw!r}")
        try:
            _ = parts.port  # raises ValueError on a bad port
        except ValueError:
            raise ValueError(f"has an invalid port: {raw!r}") from None
        return raw

    return parse


def _str(raw: str) -> str:
    if not raw.strip():
        raise ValueError("must not be empty")
    return raw.strip()


def _choice(*options: str) -> Callable[[str], str]:
    def parse(raw: str) -> str:
        value = raw.strip().lower()
        if value not in options:
            raise ValueError(f"must be one of {', '.join(options)}, got {raw!r}")
        return value

    return parse


def _tokens(raw: str) -> dict[str, str]:
    """Parse ``name:token,name:token`` (admin bearer tokens, each named for the audit)."""
    result: dict[str, str] = {}
    for item in filter(None, (part.strip() for part in raw.split(","))):
        name, sep, token = item.partition(":")
        if not sep or not name or len(token) < 16:
            raise ValueError("must be name:token pairs separated by commas, tokens of 16+ characters")
        result[name] = token
    return result


def _networks(raw: str) -> tuple[str, ...]:
    """Comma-separated addresses or CIDR networks, each checked."""
    import ipaddress

    found = []
    for item in filter(None, (part.strip() for part in raw.split(","))):
        try:
            found.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network") from None
    return tuple(found)


def _secret(raw: str) -> str:
    if len(raw) < 32:
        raise ValueError("must be at least 32 characters")
    return raw


def _scrape_token(raw: str) -> str:
    token = raw.strip()
    if len(token) < 16 or any(c.isspace() for c in token):
        raise ValueError("must be a token of 16+ characters without spaces")
    return token


def _meta(env: str, parse: Callable[[str], Any], help: str, secret: bool = False) -> dict[str, Any]:
    return {"env": PREFIX + env, "parse": parse, "help": help, "secret": secret}


@dataclass(frozen=True)
class Settings:
    """Every setting examgate reads, with its local default."""

    host: str = field(default="127.0.0.1", metadata=_meta("HOST", _str, "address the gateway binds"))
    port: int = field(default=8080, metadata=_meta("PORT", _int(1, 65535), "port the gateway binds"))
    workers: int = field(default=1, metadata=_meta("WORKERS", _int(1, 64), "gateway processes sharing the port"))
    redis_url: str = field(
        default="redis://127.0.0.1:6379/0",
        metadata=_meta("REDIS_URL", _url("redis", "rediss", "unix"), "Redis for cache and coordination"),
    )
    database_url: str = field(
        default="postgresql://postgres@127.0.0.1:5432/examgate",
        metadata=_meta("DATABASE_URL", _url("postgresql", "postgres"), "PostgreSQL, the source of truth"),
    )
    pg_pool_min: int = field(default=2, metadata=_meta("PG_POOL_MIN", _int(1, 200), "asyncpg pool minimum size"))
    pg_pool_max: int = field(default=10, metadata=_meta("PG_POOL_MAX", _int(1, 500), "asyncpg pool maximum size"))
    redis_connections: int = field(
        default=2, metadata=_meta("REDIS_CONNECTIONS", _int(1, 32), "auto-pipelined Redis connections per process")
    )
    redis_timeout_ms: int = field(
        default=1000, metadata=_meta("REDIS_TIMEOUT_MS", _int(10, 60000), "time budget of one hot-path Redis call")
    )
    max_body_bytes: int = field(
        default=64 * 1024, metadata=_meta("MAX_BODY_BYTES", _int(1024, 16 * 1024 * 1024), "largest request body (413 above)")
    )
    header_timeout_s: float = field(
        default=10.0, metadata=_meta("HEADER_TIMEOUT_S", _float(0.1, 600),
                                     "a new connection's first request must have sent its headers within this; "
                                     "else the connection is closed")
    )
    body_timeout_s: float = field(
        default=10.0, metadata=_meta("BODY_TIMEOUT_S", _float(0.1, 600),
                                     "a request's body must be in within this of its headers (408 and close after)")
    )
    keepalive_timeout_s: float = field(
        default=75.0, metadata=_meta("KEEPALIVE_TIMEOUT_S", _float(1, 3600),
                                     "an idle connection is closed this long after its last answer; the next "
                                     "request's headers must be in by then")
    )
    max_connections_per_address: int = field(
        default=512, metadata=_meta("MAX_CONNECTIONS_PER_ADDRESS", _int(0, 1_000_000),
                                    "open connections per client address and process, beyond which new ones are "
                                    "closed at once (trusted proxies exempt; 0: no cap)")
    )
    max_in_flight_per_address: int = field(
        default=128, metadata=_meta("MAX_IN_FLIGHT_PER_ADDRESS", _int(0, 1_000_000),
                                   "requests being handled per client address and process, beyond which 429 "
                                   "(payment notifications exempt; 0: no cap)")
    )
    shutdown_timeout_s: float = field(
        default=10.0, metadata=_meta("SHUTDOWN_TIMEOUT_S", _float(0, 600), "how long SIGTERM waits for in-flight requests")
    )
    catalogue_refresh_s: float = field(
        default=5.0, metadata=_meta("CATALOGUE_REFRESH_S", _float(0.1, 3600), "how often the exam catalogue is re-read")
    )
    trusted_proxies: tuple[str, ...] = field(
        default=(), metadata=_meta("TRUSTED_PROXIES", _networks,
                                   "proxies whose X-Forwarded-For is believed (addresses or CIDRs, comma-separated)")
    )
    ratelimit_budget_ms: int = field(
        default=75, metadata=_meta("RATELIMIT_BUDGET_MS", _int(5, 5000), "time budget of one rate-limit decision in Redis")
    )
    access_log: bool = field(default=False, metadata=_meta("ACCESS_LOG", _bool, "write an access log line per request"))
    log_level: str = field(
        default="info", metadata=_meta("LOG_LEVEL", _choice("debug", "info", "warning", "error"), "logging level")
    )
    run_dir: str = field(default=".run", metadata=_meta("RUN_DIR", _str, "directory for pid files, logs and metrics"))
    bench_routes: bool = field(
        default=False, metadata=_meta("BENCH_ROUTES", _bool, "serve the /_bench/* calibration routes")
    )
    argon2_memory_kib: int = field(
        default=19456, metadata=_meta("ARGON2_MEMORY_KIB", _int(1024, 1024 * 1024),
                                      "argon2id memory per password hash, KiB (OWASP: 19456)")
    )
    argon2_time_cost: int = field(
        default=2, metadata=_meta("ARGON2_TIME_COST", _int(1, 10), "argon2id passes over the memory")
    )
    argon2_parallelism: int = field(
        default=1, metadata=_meta("ARGON2_PARALLELISM", _int(1, 16), "argon2id lanes per hash")
    )
    hasher_threads: int = field(
        default=2, metadata=_meta("HASHER_THREADS", _int(1, 64), "password hashing threads per gateway process")
    )
    hasher_max_queue: int = field(
        default=64, metadata=_meta("HASHER_MAX_QUEUE", _int(0, 10_000),
                                   "hashes allowed to wait per process; beyond it login answers 503 at once")
    )
    hasher_max_wait_ms: int = field(
        default=600, metadata=_meta("HASHER_MAX_WAIT_MS", _int(0, 60_000),
                                    "longest a login may wait for the hashing pool; beyond it 503 at once (0: no bound)")
    )
    session_idle_timeout_s: float = field(
        default=30 * 60.0, metadata=_meta("SESSION_IDLE_TIMEOUT_S", _float(1, 7 * 86400),
                                          "a candidate session ends after this long unused")
    )
    session_absolute_timeout_s: float = field(
        default=12 * 3600.0, metadata=_meta("SESSION_ABSOLUTE_TIMEOUT_S", _float(1, 30 * 86400),
                                            "a candidate session ends this long after sign-in, used or not")
    )
    captcha_answer_ttl_s: int = field(
        default=300, metadata=_meta("CAPTCHA_ANSWER_TTL_S", _int(10, 3600),
                                    "how long an issued image captcha can be answered")
    )
    pow_challenge_ttl_s: int = field(
        default=300, metadata=_meta("POW_CHALLENGE_TTL_S", _int(10, 3600),
                                    "how long a proof-of-work challenge can be solved")
    )
    captcha_pool_target: int = field(
        default=5000, metadata=_meta("CAPTCHA_POOL_TARGET", _int(0, 1_000_000),
                                     "images the worker keeps drawn ahead in Redis (~2 KB each; 0: no refill)")
    )
    captcha_refill_batch: int = field(
        default=50, metadata=_meta("CAPTCHA_REFILL_BATCH", _int(1, 1000), "images drawn per refill job")
    )
    captcha_refill_processes: int = field(
        default=2, metadata=_meta("CAPTCHA_REFILL_PROCESSES", _int(1, 64),
                                  "processes the worker draws captcha images in")
    )
    queue_advance_interval_ms: int = field(
        default=200, metadata=_meta("QUEUE_ADVANCE_INTERVAL_MS", _int(10, 60_000),
                                    "how often the worker moves each enabled waiting room's serving counter on")
    )
    writebehind_batch_size: int = field(
        default=500, metadata=_meta("WRITEBEHIND_BATCH_SIZE", _int(1, 10_000),
                                    "hold events the worker writes to PostgreSQL in one transaction")
    )
    writebehind_claim_min_idle_ms: int = field(
        default=60_000, metadata=_meta("WRITEBEHIND_CLAIM_MIN_IDLE_MS", _int(100, 3_600_000),
                                       "how long a hold event read by a dead consumer waits before another takes it over")
    )
    sweeper_interval_s: float = field(
        default=1.0, metadata=_meta("SWEEPER_INTERVAL_S", _float(0.05, 3600),
                                    "how often the worker releases expired seat holds")
    )
    inventory_check_s: float = field(
        default=5.0, metadata=_meta("INVENTORY_CHECK_S", _float(0.1, 3600),
                                    "how often the worker checks seat inventory in Redis and reconciles it when missing")
    )
    worker_exams_refresh_s: float = field(
        default=5.0, metadata=_meta("WORKER_EXAMS_REFRESH_S", _float(0.1, 3600),
                                    "how often the worker re-reads which exams' hold streams and holds it watches")
    )
    worker_heartbeat_s: float = field(
        default=5.0, metadata=_meta("WORKER_HEARTBEAT_S", _float(0.05, 600),
                                    "how often the worker says it is alive; readiness counts it gone after 3 missed "
                                    "beats (set the same for the gateway and the worker)")
    )
    keys_dir: str = field(
        default=".run/keys", metadata=_meta("KEYS_DIR", _str, "payment provider keys (`examgate keys generate` writes them)")
    )
    alipay_app_id: str = field(
        default="2021000000000001", metadata=_meta("ALIPAY_APP_ID", _str, "our Alipay app id; notifications for another are rejected")
    )
    wechat_app_id: str = field(
        default="wx00000000000000e1", metadata=_meta("WECHAT_APP_ID", _str, "our WeChat Pay app id")
    )
    wechat_mch_id: str = field(
        default="1900000001", metadata=_meta("WECHAT_MCH_ID", _str, "our WeChat Pay merchant id")
    )
    paysim_url: str = field(
        default="http://127.0.0.1:8090",
        metadata=_meta("PAYSIM_URL", _url("http", "https"), "payment provider base URL (pay pages, trade create and query)"),
    )
    public_url: str = field(
        default="http://127.0.0.1:8080",
        metadata=_meta("PUBLIC_URL", _url("http", "https"), "the gateway's own base URL, where providers send notifications"),
    )
    paysim_port: int = field(default=8090, metadata=_meta("PAYSIM_PORT", _int(1, 65535), "port `examgate paysim` binds"))
    paysim_time_scale: float = field(
        default=1.0, metadata=_meta("PAYSIM_TIME_SCALE", _float(0.00001, 1000),
                                    "the simulator's retry schedules are multiplied by this (0.001: a 4 min wait takes 0.24 s)")
    )
    order_query_after_s: float = field(
        default=300.0, metadata=_meta("ORDER_QUERY_AFTER_S", _float(0.01, 86400),
                                      "a pending order without a notification this long is queried at the provider")
    )
    payments_interval_s: float = field(
        default=5.0, metadata=_meta("PAYMENTS_INTERVAL_S", _float(0.01, 3600),
                                    "how often the worker reconciles pending and expired orders")
    )
    notify_group_max: int = field(
        default=256, metadata=_meta("NOTIFY_GROUP_MAX", _int(1, 10000),
                                    "most payment notifications committed in one transaction (group commit)")
    )
    notify_rejected_interval_s: float = field(
        default=60.0, metadata=_meta("NOTIFY_REJECTED_INTERVAL_S", _float(0.1, 86400),
                                     "a notification failing verification is recorded (as a summary) once per "
                                     "provider, reason and sender address per this interval and process; "
                                     "the others are counted")
    )
    notify_rejected_rows_max: int = field(
        default=100, metadata=_meta("NOTIFY_REJECTED_ROWS_MAX", _int(0, 100_000),
                                    "most summaries of notifications failing verification recorded per interval "
                                    "and process")
    )
    lookup_pg_max_in_flight: int = field(
        default=16, metadata=_meta("LOOKUP_PG_MAX_IN_FLIGHT", _int(1, 1000),
                                   "ticket/score lookups answered from PostgreSQL at once per process (503 beyond)")
    )
    lookup_memory_ttl_s: float = field(
        default=10.0, metadata=_meta("LOOKUP_MEMORY_TTL_S", _float(0, 3600),
                                     "how long an answer PostgreSQL gave a lookup (found or not) is kept in process memory")
    )
    prewarm_before_s: float = field(
        default=3600.0, metadata=_meta("PREWARM_BEFORE_S", _float(0, 7 * 86400),
                                       "the worker prewarms an exam's tickets and scores this long before they open")
    )
    ticket_link_ttl_s: int = field(
        default=600, metadata=_meta("TICKET_LINK_TTL_S", _int(10, 86400), "how long a ticket PDF link stays valid")
    )
    ticket_font: str = field(
        default="/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
        metadata=_meta("TICKET_FONT", _str, "TrueType font with Chinese glyphs for ticket PDFs"),
    )
    secret_key: str = field(
        default="",
        metadata=_meta("SECRET_KEY", _secret, "HMAC key for signed tokens (generated into the secrets file if unset)", True),
    )
    admin_tokens: Mapping[str, str] = field(
        default_factory=dict,
        metadata=_meta("ADMIN_TOKENS", _tokens, "operator bearer tokens, name:token,… (generated if unset)", True),
    )
    metrics_token: str = field(
        default="",
        metadata=_meta("METRICS_TOKEN", _scrape_token,
                       "bearer token the metrics scraper sends to /metrics (admin tokens work too; generated if unset)",
                       True),
    )
    metrics_cache_s: float = field(
        default=1.0, metadata=_meta("METRICS_CACHE_S", _float(0, 60),
                                    "a /metrics render is reused this long per process (scrapes meanwhile share it)")
    )
    ready_cache_s: float = field(
        default=1.0, metadata=_meta("READY_CACHE_S", _float(0, 60),
                                    "a /readyz verdict is reused this long per process (calls meanwhile share it)")
    )
    secrets_file: str = field(
        default=".run/secrets.json", metadata=_meta("SECRETS_FILE", _str, "where generated secrets are kept (mode 0600)")
    )

    def derived_key(self, purpose: str) -> bytes:
        """A key for one purpose (``captcha-pow``, ``loadtest``, ``recovery``): HMAC-SHA256(secret_key, purpose).

        Each use gets its own key, so a value signed for one purpose is worthless for another.
        """
        if not self.secret_key:
            raise ConfigError(f"{PREFIX}SECRET_KEY is not set")
        return hmac.new(self.secret_key.encode(), purpose.encode(), hashlib.sha256).digest()

    @property
    def metrics_dir(self) -> Path:
        """Where the worker processes share their Prometheus counters."""
        return Path(self.run_dir) / "metrics"

    def masked(self) -> dict[str, Any]:
        """The effective settings for display, secrets replaced by a mask."""
        shown: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            if f.metadata["secret"]:
                if isinstance(value, Mapping):
                    value = {name: "********" for name in value}
                else:
                    value = "********" if value else ""
            elif f.name.endswith("_url"):
                value = _mask_url_password(value)
            shown[f.name] = value
        return shown


def _mask_url_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", ":********@")
        return parts._replace(netloc=netloc).geturl()
    return url


def describe() -> list[tuple[str, str, str]]:
    """(environment variable, default, meaning) for every setting; the README's table."""
    rows = []
    defaults = Settings()
    for f in fields(Settings):
        default = getattr(defaults, f.name)
        if f.metadata["secret"]:
            default = "(generated)"
        elif isinstance(default, tuple):
            default = ",".join(default) or "(none)"
        rows.append((f.metadata["env"], str(default), f.metadata["help"]))
    return rows


def load(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read settings from ``environ`` (default ``os.environ``); raise ConfigError naming a bad one."""
    env = os.environ if environ is None else environ
    values: dict[str, Any] = {}
    for f in fields(Settings):
        name = f.metadata["env"]
        if name in env:
            try:
                values[f.name] = f.metadata["parse"](env[name])
            except ValueError as exc:
                raise ConfigError(f"{name}: {exc}") from None
    values.update(overrides)
    settings = Settings(**values)
    if settings.pg_pool_min > settings.pg_pool_max:
        raise ConfigError(f"{PREFIX}PG_POOL_MIN ({settings.pg_pool_min}) exceeds {PREFIX}PG_POOL_MAX ({settings.pg_pool_max})")
    if settings.session_idle_timeout_s > settings.session_absolute_timeout_s:
        raise ConfigError(f"{PREFIX}SESSION_IDLE_TIMEOUT_S ({settings.session_idle_timeout_s:g}) exceeds "
                          f"{PREFIX}SESSION_ABSOLUTE_TIMEOUT_S ({settings.session_absolute_timeout_s:g})")
    if not settings.secret_key or not settings.admin_tokens or not settings.metrics_token:
        settings = _with_generated_secrets(settings)
    return settings


def _with_generated_secrets(settings: Settings) -> Settings:
    """Fill missing secrets from the secrets file, creating it (0600) on first use."""
    path = Path(settings.secrets_file)
    stored: dict[str, Any] = {}
    if path.exists():
        try:
            stored = json.loads(path.read_text())
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{PREFIX}SECRETS_FILE: cannot read {path}: {exc}") from None
    changed = False
    if "secret_key" not in stored:
        stored["secret_key"] = secrets.token_urlsafe(32)
        changed = True
    if "admin_tokens" not in stored:
        stored["admin_tokens"] = {"operator": secrets.token_urlsafe(32)}
        changed = True
    if "metrics_token" not in stored:
        stored["metrics_token"] = secrets.token_urlsafe(32)
        changed = True
    if changed:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as fh:
                json.dump(stored, fh)
            os.replace(tmp, path)
        except OSError as exc:
            raise ConfigError(f"{PREFIX}SECRETS_FILE: cannot write {path} ({exc.strerror}); set {PREFIX}SECRET_KEY, "
                              f"{PREFIX}ADMIN_TOKENS and {PREFIX}METRICS_TOKEN instead") from None
    return replace(
        settings,
        secret_key=settings.secret_key or stored["secret_key"],
        admin_tokens=settings.admin_tokens or dict(stored["admin_tokens"]),
        metrics_token=settings.metrics_token or stored["metrics_token"],
    )
