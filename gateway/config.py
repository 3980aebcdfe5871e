"""Settings: the one place that reads the environment (``EXAMGATE_*``).

``Settings`` is a pydantic-settings model: every field declares its default, bounds and
meaning once, and ``examgate config --variables`` (``describe``) is generated from them.
``Settings(**values)`` takes values only (tests and tools get exactly what they pass);
``load()`` is where the environment is read, and turns pydantic's errors into a
``ConfigError`` naming each bad variable.
"""

from __future__ import annotations

import hashlib
import hmac
import ipaddress
import json
import os
import re
import secrets
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from annotated_types import Ge, Le
from pydantic import AfterValidator, BeforeValidator, Field, StringConstraints, ValidationError, model_validator
from pydantic_core import ErrorDetails
from pydantic_settings import BaseSettings, EnvSettingsSource, NoDecode, PydanticBaseSettingsSource, SettingsConfigDict

from core.phone_codes import CodeSettings

__all__ = ["PREFIX", "ConfigError", "Settings", "describe", "load"]

PREFIX = "EXAMGATE_"
MASK = "********"


class ConfigError(ValueError):
    """A setting has a value examgate cannot start with; the message names it."""


def _url(*schemes: str) -> Callable[[str], str]:
    def check(raw: str) -> str:
        parts = urlsplit(raw)
        if parts.scheme not in schemes or not parts.hostname:
            raise ValueError(f"must be a {' or '.join(schemes)} URL with a host, got {raw!r}")
        try:
            _ = parts.port  # raises ValueError on a bad port
        except ValueError:
            raise ValueError(f"has an invalid port: {raw!r}") from None
        return raw

    return check


def _flag(raw: Any) -> Any:
    # An empty variable is "off", as before; pydantic reads the rest (1/0, true/false, yes/no, on/off).
    return (raw.strip().lower() or False) if isinstance(raw, str) else raw


def _choice(raw: Any) -> Any:
    return raw.strip().lower() if isinstance(raw, str) else raw


def _tokens(raw: Any) -> Any:
    """``name:token,name:token`` (admin bearer tokens, each named for the audit)."""
    if isinstance(raw, str):
        pairs = [item.partition(":") for item in filter(None, (part.strip() for part in raw.split(",")))]
        if any(not sep for _, sep, _ in pairs):
            raise ValueError("must be name:token pairs separated by commas, tokens of 16+ characters")
        raw = {name: token for name, _, token in pairs}
    if isinstance(raw, Mapping) and any(not name or len(token) < 16 for name, token in raw.items()):
        raise ValueError("must be name:token pairs separated by commas, tokens of 16+ characters")
    return raw


def _networks(raw: Any) -> Any:
    """Comma-separated addresses or CIDR networks, each checked and written out as a network."""
    items = raw.split(",") if isinstance(raw, str) else raw
    found = []
    for item in filter(None, (str(part).strip() for part in items)):
        try:
            found.append(str(ipaddress.ip_network(item, strict=False)))
        except ValueError:
            raise ValueError(f"{item!r} is not an IP address or network") from None
    return tuple(found)


def _scrape_token(raw: Any) -> Any:
    if isinstance(raw, str):
        raw = raw.strip()
        if len(raw) < 16 or any(c.isspace() for c in raw):
            raise ValueError("must be a token of 16+ characters without spaces")
    return raw


def _template_codes(raw: Any) -> Any:
    """``template:code,…``: SMS templates the provider approved under other codes than the built-in ones."""
    from core.sms import TEMPLATES

    if isinstance(raw, str):
        pairs = [item.partition(":") for item in filter(None, (part.strip() for part in raw.split(",")))]
        if any(not sep or not code.strip() for _, sep, code in pairs):
            raise ValueError("must be template:code pairs separated by commas, e.g. password_reset_code:SMS_123456789")
        raw = {name.strip(): code.strip() for name, _, code in pairs}
    unknown = sorted(set(raw) - TEMPLATES.keys()) if isinstance(raw, Mapping) else []
    if unknown:
        raise ValueError(f"unknown SMS templates {', '.join(unknown)} (known: {', '.join(TEMPLATES)})")
    return raw


Text = Annotated[str, StringConstraints(strip_whitespace=True, min_length=1)]
Flag = Annotated[bool, BeforeValidator(_flag)]
RedisUrl = Annotated[str, AfterValidator(_url("redis", "rediss", "unix"))]
PostgresUrl = Annotated[str, AfterValidator(_url("postgresql", "postgres"))]
HttpUrl = Annotated[str, AfterValidator(_url("http", "https"))]
Networks = Annotated[tuple[str, ...], NoDecode, BeforeValidator(_networks)]
Tokens = Annotated[Mapping[str, str], NoDecode, BeforeValidator(_tokens)]
SecretKey = Annotated[str, StringConstraints(min_length=32)]
ScrapeToken = Annotated[str, BeforeValidator(_scrape_token)]
AccessSecret = Annotated[str, StringConstraints(strip_whitespace=True, min_length=8)]
TemplateCodes = Annotated[Mapping[str, str], NoDecode, BeforeValidator(_template_codes)]
LogLevel = Annotated[Literal["debug", "info", "warning", "error"], BeforeValidator(_choice)]


def setting(default: Any, meaning: str, *, secret: bool = False, **bounds: Any) -> Any:
    """A field: its default, its meaning (``config --variables``), bounds (``ge``/``le``), and whether it is masked."""
    extra: dict[str, Any] | None = {"secret": True} if secret else None
    if isinstance(default, dict):
        return Field(default_factory=lambda: dict(default), description=meaning, repr=not secret,
                     json_schema_extra=extra, **bounds)
    return Field(default, description=meaning, repr=not secret, json_schema_extra=extra, **bounds)


class Settings(BaseSettings):
    """Every setting examgate reads, with its local default; ``EXAMGATE_`` + the field name in upper case."""

    # Defaults are not validated: the secrets' empty default means "not set, generate one", which is
    # not a value their variables may take.
    model_config = SettingsConfigDict(env_prefix=PREFIX, case_sensitive=False, frozen=True, extra="forbid",
                                      validate_default=False)

    host: Text = setting("127.0.0.1", "address the gateway binds")
    port: int = setting(8080, "port the gateway binds", ge=1, le=65_535)
    workers: int = setting(1, "gateway processes sharing the port", ge=1, le=64)
    redis_url: RedisUrl = setting("redis://127.0.0.1:6379/0", "Redis for cache and coordination")
    redis_cluster: bool = setting(
        False, "Redis is a Redis Cluster; EXAMGATE_REDIS_URL names any one of its nodes (database 0)")
    database_url: PostgresUrl = setting(
        "postgresql://postgres@127.0.0.1:5432/examgate", "PostgreSQL, the source of truth")
    pg_pool_min: int = setting(2, "asyncpg pool minimum size", ge=1, le=200)
    pg_pool_max: int = setting(10, "asyncpg pool maximum size", ge=1, le=500)
    hold_replicas: int = setting(
        0, "a seat hold is answered once this many Redis replicas have it (WAIT); 0: on the master's word",
        ge=0, le=5)
    hold_replica_wait_ms: int = setting(
        200, "how long a seat hold waits for EXAMGATE_HOLD_REPLICAS before answering 503", ge=1, le=10_000)
    redis_connections: int = setting(2, "auto-pipelined Redis connections per process", ge=1, le=32)
    redis_timeout_ms: int = setting(1000, "time budget of one hot-path Redis call", ge=10, le=60_000)
    max_body_bytes: int = setting(65_536, "largest request body (413 above)", ge=1024, le=16_777_216)
    import_max_bytes: int = setting(
        200 * 2**20, "largest import file POST /admin/api/v1/imports/{kind} takes (413 above)", ge=1024, le=2**31)
    header_timeout_s: float = setting(
        10.0, "a new connection's first request must have sent its headers within this; else the "
        "connection is closed", ge=0.1, le=600)
    body_timeout_s: float = setting(
        10.0, "a request's body must be in within this of its headers (408 and close after)", ge=0.1, le=600)
    keepalive_timeout_s: float = setting(
        75.0, "an idle connection is closed this long after its last answer; the next request's "
        "headers must be in by then", ge=1, le=3600)
    max_connections_per_address: int = setting(
        512, "open connections per client address and process, beyond which new ones are closed at "
        "once (trusted proxies exempt; 0: no cap)", ge=0, le=1_000_000)
    max_in_flight_per_address: int = setting(
        128, "requests being handled per client address and process, beyond which 429 (payment "
        "notifications exempt; 0: no cap)", ge=0, le=1_000_000)
    shutdown_timeout_s: float = setting(10.0, "how long SIGTERM waits for in-flight requests", ge=0, le=600)
    drain_s: float = setting(
        0.0, "behind a load balancer: on SIGTERM, keep serving this long with /readyz 503 and every answer "
        "closing its connection, so the balancer's health check takes the host out before it stops "
        "listening (0: stop listening at once)", ge=0, le=600)
    catalogue_refresh_s: float = setting(5.0, "how often the exam catalogue is re-read", ge=0.1, le=3600)
    trusted_proxies: Networks = setting(
        (), "proxies whose X-Forwarded-For is believed (addresses or CIDRs, comma-separated)")
    ratelimit_budget_ms: int = setting(75, "time budget of one rate-limit decision in Redis", ge=5, le=5000)
    access_log: Flag = setting(False, "write an access log line per request")
    log_level: LogLevel = setting("info", "logging level")
    run_dir: Text = setting(".run", "directory for pid files, logs and metrics")
    bench_routes: Flag = setting(False, "serve the /_bench/* calibration routes")
    added_latency_ms: int = setting(
        0, "every request waits this long in the edge before its handler: a deliberately slowed gateway, to "
        "rehearse the load tests' verdicts (examgate rehearse); never in production", ge=0, le=60_000)
    argon2_memory_kib: int = setting(
        19_456, "argon2id memory per password hash, KiB (OWASP: 19456)", ge=1024, le=1_048_576)
    argon2_time_cost: int = setting(2, "argon2id passes over the memory", ge=1, le=10)
    argon2_parallelism: int = setting(1, "argon2id lanes per hash", ge=1, le=16)
    hasher_threads: int = setting(2, "password hashing threads per gateway process", ge=1, le=64)
    hasher_max_queue: int = setting(
        64, "hashes allowed to wait per process; beyond it login answers 503 at once", ge=0, le=10_000)
    hasher_max_wait_ms: int = setting(
        600, "longest a login may wait for the hashing pool; beyond it 503 at once (0: no bound)", ge=0, le=60_000)
    session_idle_timeout_s: float = setting(1800.0, "a candidate session ends after this long unused", ge=1, le=604_800)
    session_absolute_timeout_s: float = setting(
        43200.0, "a candidate session ends this long after sign-in, used or not", ge=1, le=2_592_000)
    captcha_answer_ttl_s: int = setting(300, "how long an issued image captcha can be answered", ge=10, le=3600)
    pow_challenge_ttl_s: int = setting(300, "how long a proof-of-work challenge can be solved", ge=10, le=3600)
    captcha_pool_target: int = setting(
        5000, "images the worker keeps drawn ahead in Redis (~2 KB each; 0: no refill)", ge=0, le=1_000_000)
    captcha_refill_batch: int = setting(50, "images drawn per refill job", ge=1, le=1000)
    captcha_refill_processes: int = setting(2, "processes the worker draws captcha images in", ge=1, le=64)
    queue_advance_interval_ms: int = setting(
        200, "how often the worker moves each enabled waiting room's serving counter on", ge=10, le=60_000)
    writebehind_batch_size: int = setting(
        500, "hold events the worker writes to PostgreSQL in one transaction", ge=1, le=10_000)
    writebehind_claim_min_idle_ms: int = setting(
        60_000, "how long a hold event read by a dead consumer waits before another takes it over",
        ge=100, le=3_600_000)
    sweeper_interval_s: float = setting(1.0, "how often the worker releases expired seat holds", ge=0.05, le=3600)
    inventory_check_s: float = setting(
        5.0, "how often the worker checks seat inventory in Redis and reconciles it when missing", ge=0.1, le=3600)
    worker_exams_refresh_s: float = setting(
        5.0, "how often the worker re-reads which exams' hold streams and holds it watches", ge=0.1, le=3600)
    worker_heartbeat_s: float = setting(
        5.0, "how often the worker says it is alive; readiness counts it gone after 3 missed beats "
        "(set the same for the gateway and the worker)", ge=0.05, le=600)
    keys_dir: Text = setting(".run/keys", "payment provider keys (`examgate keys generate` writes them)")
    alipay_app_id: Text = setting("2021000000000001", "our Alipay app id; notifications for another are rejected")
    wechat_app_id: Text = setting("wx00000000000000e1", "our WeChat Pay app id")
    wechat_mch_id: Text = setting("1900000001", "our WeChat Pay merchant id")
    paysim_url: HttpUrl = setting(
        "http://127.0.0.1:8090", "payment provider base URL (pay pages, trade create and query)")
    alipay_url: HttpUrl = setting(
        "", "Alipay's open-platform base URL, POST …/gateway.do (unset: EXAMGATE_PAYSIM_URL; "
        "https://openapi.alipay.com for the real one)")
    wechat_url: HttpUrl = setting(
        "", "WeChat Pay's API v3 base URL, …/v3/… (unset: EXAMGATE_PAYSIM_URL; "
        "https://api.mch.weixin.qq.com for the real one)")
    alipay_seller_id: Text = setting(
        "2088000000000001", "our Alipay seller id (merchant PID, 2088…); notifications naming another are rejected")
    public_url: HttpUrl = setting(
        "http://127.0.0.1:8080", "the gateway's own base URL, where providers send notifications")
    paysim_port: int = setting(8090, "port `examgate paysim` binds", ge=1, le=65_535)
    paysim_time_scale: float = setting(
        1.0, "the simulator's retry schedules are multiplied by this (0.001: a 4 min wait takes 0.24 s)",
        ge=0.00001, le=1000)
    sms_url: HttpUrl = setting(
        "http://127.0.0.1:8091", "the SMS provider's endpoint (Alibaba Cloud SMS: signed POSTs of SendSms and "
        "QuerySendDetails; https://dysmsapi.aliyuncs.com for the real one, `examgate smssim` by default)")
    sms_access_key_id: Text = setting("LTAI5tExamgateDevKey01", "our AccessKey id at the SMS provider")
    sms_access_key_secret: AccessSecret = setting(
        "", "our AccessKey secret at the SMS provider, signing every request (generated into the secrets file if "
        "unset; the simulator reads the same file)", secret=True)
    sms_sign_name: Text = setting("考试报名", "our SMS signature (SignName, the 【签名】 carriers show)")
    sms_template_codes: TemplateCodes = setting(
        {}, "template:code pairs, comma-separated, for templates the provider approved under other codes than the "
        "built-in ones (e.g. password_reset_code:SMS_123456789)")
    smssim_port: int = setting(8091, "port `examgate smssim` binds", ge=1, le=65_535)
    sms_send_rate: float = setting(
        200.0, "most messages per second the delivery workers send, all of them together (shared in Redis)",
        ge=0.1, le=100_000)
    sms_concurrency: int = setting(16, "messages one delivery worker has at the provider at once", ge=1, le=1000)
    sms_batch_size: int = setting(200, "messages a delivery worker claims at once", ge=1, le=10_000)
    sms_max_attempts: int = setting(
        6, "sends of one message before it is marked failed (throttled answers do not count)", ge=1, le=100)
    sms_retry_s: float = setting(
        2.0, "wait before the first retry of a message the provider did not take; doubled at each further one, "
        "with jitter", ge=0.001, le=3600)
    sms_retry_max_s: float = setting(300.0, "longest wait between two sends of one message", ge=0.001, le=86_400)
    sms_lease_s: float = setting(
        60.0, "how long a claimed message is its worker's alone; one whose worker died is taken again after this "
        "and first looked up at the provider (at least 3 × EXAMGATE_SMS_TIMEOUT_S)", ge=0.03, le=3600)
    sms_timeout_s: float = setting(5.0, "time budget of one call to the SMS provider", ge=0.01, le=120)
    sms_throttle_pause_s: float = setting(
        1.0, "every delivery worker pauses this long when the provider says our sending rate is exceeded",
        ge=0, le=600)
    sms_code_ttl_s: int = setting(300, "how long an SMS verification code stays valid", ge=30, le=3600)
    sms_code_attempts: int = setting(5, "tries of one SMS verification code before it is dead", ge=1, le=20)
    sms_phone_interval_s: float = setting(
        60.0, "least time between two SMS codes to one phone, whatever the purpose", ge=1, le=3600)
    sms_phone_per_hour: int = setting(5, "most SMS codes to one phone in an hour, whatever the purpose", ge=1, le=100)
    order_query_after_s: float = setting(
        300.0, "a pending order without a notification this long is queried at the provider", ge=0.01, le=86_400)
    payments_interval_s: float = setting(
        5.0, "how often the worker reconciles pending and expired orders", ge=0.01, le=3600)
    refunds_interval_s: float = setting(
        2.0, "how often the worker looks for refunds due to be sent or asked about", ge=0.01, le=3600)
    refund_concurrency: int = setting(4, "refunds the worker sends at once", ge=1, le=64)
    refund_max_attempts: int = setting(
        5, "a refund the provider refuses or does not answer is retried this many times in all, then left "
        "failed for an operator to execute again", ge=1, le=100)
    refund_retry_s: float = setting(
        60.0, "wait before the first retry of a failed refund; doubled at each further one, at most an hour",
        ge=0.01, le=86_400)
    refund_query_after_s: float = setting(
        60.0, "a refund the provider is still processing is asked about again after this (if no notification "
        "came)", ge=0.01, le=86_400)
    notify_group_max: int = setting(
        256, "most payment notifications committed in one transaction (group commit)", ge=1, le=10_000)
    notify_rejected_interval_s: float = setting(
        60.0, "a notification failing verification is recorded (as a summary) once per provider, "
        "reason and sender address per this interval and process; the others are counted", ge=0.1, le=86_400)
    notify_rejected_rows_max: int = setting(
        100, "most summaries of notifications failing verification recorded per interval and process", ge=0, le=100_000)
    lookup_pg_max_in_flight: int = setting(
        16, "ticket/score lookups answered from PostgreSQL at once per process (503 beyond)", ge=1, le=1000)
    lookup_memory_ttl_s: float = setting(
        10.0, "how long an answer PostgreSQL gave a lookup (found or not) is kept in process memory", ge=0, le=3600)
    prewarm_before_s: float = setting(
        3600.0, "the worker prewarms an exam's tickets and scores this long before they open", ge=0, le=604_800)
    ticket_link_ttl_s: int = setting(600, "how long a ticket PDF link stays valid", ge=10, le=86_400)
    ticket_font: Text = setting(
        "/usr/share/fonts/truetype/droid/DroidSansFallbackFull.ttf",
        "TrueType font with Chinese glyphs for ticket and registration form PDFs")
    photo_threads: int = setting(2, "threads per process that check and normalise uploaded photos", ge=1, le=64)
    photo_max_queue: int = setting(
        4, "uploaded photos allowed to wait for a photo thread per process (503 beyond)", ge=0, le=1000)
    photo_link_ttl_s: int = setting(600, "how long a candidate's photo link stays valid", ge=10, le=86_400)
    form_link_ttl_s: int = setting(600, "how long a registration form (报名表) PDF link stays valid", ge=10, le=86_400)
    photo_sample_percent: float = setting(
        2.0, "share (%) of the photos the checks approve that are also shown to operators for a look", ge=0, le=100)
    secret_key: SecretKey = setting(
        "", "HMAC key for signed tokens (generated into the secrets file if unset)", secret=True)
    admin_tokens: Tokens = setting({}, "operator bearer tokens, name:token,… (generated if unset)", secret=True)
    operator_token_days: int = setting(
        90, "lifetime of an operator token issued without --expires-in (days)", ge=1, le=3650)
    operator_token_cache_s: float = setting(
        5.0, "a stored operator token is trusted this long per process once looked up; a revoked or expired token, "
        "or a disabled operator, stops working within it", ge=0, le=300)
    metrics_token: ScrapeToken = setting(
        "", "bearer token the metrics scraper sends to /metrics (admin tokens work too; generated if unset)",
        secret=True)
    metrics_cache_s: float = setting(
        1.0, "a /metrics render is reused this long per process (scrapes meanwhile share it)", ge=0, le=60)
    ready_cache_s: float = setting(
        1.0, "a /readyz verdict is reused this long per process (calls meanwhile share it)", ge=0, le=60)
    secrets_file: Text = setting(".run/secrets.json", "where generated secrets are kept (mode 0600)")

    def code_settings(self) -> CodeSettings:
        """The SMS verification codes' lifetime, tries and per-phone limits (``core.phone_codes``)."""
        return CodeSettings(self.sms_code_ttl_s, self.sms_code_attempts, self.sms_phone_interval_s, 3600.0,
                            self.sms_phone_per_hour)

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
        for name in type(self).model_fields:
            value = getattr(self, name)
            if _is_secret(name):
                value = dict.fromkeys(value, MASK) if isinstance(value, Mapping) else (MASK if value else "")
            elif name.endswith("_url"):
                value = _mask_url_password(value)
            shown[name] = value
        return shown

    @model_validator(mode="before")
    @classmethod
    def _provider_urls(cls, values: Any) -> Any:
        # Each provider's base URL is the simulator's unless set: one variable points a demo at paysim.
        if isinstance(values, dict):
            paysim = values.get("paysim_url") or cls.model_fields["paysim_url"].default
            for name in ("alipay_url", "wechat_url"):
                if not values.get(name):
                    values = {**values, name: paysim}
        return values

    @model_validator(mode="after")
    def _bounds_agree(self) -> Settings:
        if self.pg_pool_min > self.pg_pool_max:
            raise ValueError(f"{PREFIX}PG_POOL_MIN ({self.pg_pool_min}) exceeds "
                             f"{PREFIX}PG_POOL_MAX ({self.pg_pool_max})")
        if self.sms_phone_per_hour * self.sms_phone_interval_s > 3600:
            raise ValueError(f"{PREFIX}SMS_PHONE_PER_HOUR codes cannot be sent an hour "
                             f"{self.sms_phone_interval_s:g} s apart ({PREFIX}SMS_PHONE_INTERVAL_S)")
        if self.sms_lease_s < 3 * self.sms_timeout_s:
            raise ValueError(f"{PREFIX}SMS_LEASE_S ({self.sms_lease_s:g}) must be at least 3 × "
                             f"{PREFIX}SMS_TIMEOUT_S ({self.sms_timeout_s:g})")
        if self.redis_cluster and not re.fullmatch(r"rediss?://[^/]*(/0?)?", self.redis_url):
            raise ValueError(f"{PREFIX}REDIS_URL must name a cluster node over TCP, database 0, when "
                             f"{PREFIX}REDIS_CLUSTER is true")
        if self.session_idle_timeout_s > self.session_absolute_timeout_s:
            raise ValueError(f"{PREFIX}SESSION_IDLE_TIMEOUT_S ({self.session_idle_timeout_s:g}) exceeds "
                             f"{PREFIX}SESSION_ABSOLUTE_TIMEOUT_S ({self.session_absolute_timeout_s:g})")
        return self

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # Values only: load() reads the environment (any mapping, os.environ by default) and passes it in.
        return (init_settings,)


def _is_secret(name: str) -> bool:
    extra = Settings.model_fields[name].json_schema_extra
    return isinstance(extra, dict) and bool(extra.get("secret"))


def _mask_url_password(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        netloc = parts.netloc.replace(f":{parts.password}@", f":{MASK}@")
        return parts._replace(netloc=netloc).geturl()
    return url


def env_name(field_name: str) -> str:
    """The environment variable of a setting: ``port`` → ``EXAMGATE_PORT``."""
    return PREFIX + field_name.upper()


def describe() -> list[tuple[str, str, str]]:
    """(environment variable, default, meaning) for every setting; the README's table."""
    rows = []
    for name, info in Settings.model_fields.items():
        default = info.get_default(call_default_factory=True)
        if _is_secret(name):
            default = "(generated)"
        elif default == "":
            default = "(unset)"
        elif isinstance(default, tuple | dict):
            default = ",".join(default) or "(none)"
        rows.append((env_name(name), str(default), info.description or ""))
    return rows


class _Environ(EnvSettingsSource):
    """The ``EXAMGATE_*`` variables of a given mapping (``os.environ`` unless a test passes its own)."""

    def __init__(self, environ: Mapping[str, str]) -> None:
        self._environ = environ
        super().__init__(Settings)

    def _load_env_vars(self) -> Mapping[str, str | None]:
        return {key.lower(): value for key, value in self._environ.items()}


def load(environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
    """Read settings from ``environ`` (default ``os.environ``); raise ConfigError naming every bad one."""
    values = _Environ(os.environ if environ is None else environ)()
    try:
        settings = Settings(**{**values, **overrides})
    except ValidationError as exc:
        raise ConfigError("; ".join(_explain(error) for error in exc.errors())) from None
    if (not settings.secret_key or not settings.admin_tokens or not settings.metrics_token
            or not settings.sms_access_key_secret):
        settings = _with_generated_secrets(settings)
    return settings


def _explain(error: ErrorDetails) -> str:
    """One pydantic error as ``EXAMGATE_NAME: what is wrong, got …`` (a check across settings names its own)."""
    kind, value, ctx = error["type"], error["input"], error.get("ctx", {})
    if "error" in ctx:  # raised by our own validators, worded for operators already
        problem = str(ctx["error"])
    elif kind in {"int_parsing", "int_type", "int_from_float"}:
        problem = f"must be an integer, got {value!r}"
    elif kind in {"float_parsing", "float_type"}:
        problem = f"must be a number, got {value!r}"
    elif kind in {"greater_than_equal", "less_than_equal"}:
        lo, hi = _bounds(str(error["loc"][0]))
        problem = f"must be between {lo} and {hi}, got {value}"
    elif kind in {"bool_parsing", "bool_type"}:
        problem = f"must be true or false, got {value!r}"
    elif kind == "literal_error":
        options = get_args(Settings.model_fields[str(error["loc"][0])].annotation)
        problem = f"must be one of {', '.join(options)}, got {value!r}"
    elif kind == "string_too_short":
        minimum = ctx["min_length"]
        problem = "must not be empty" if minimum == 1 else f"must be at least {minimum} characters"
    else:
        problem = error["msg"]
    if not error["loc"]:
        return problem
    return f"{env_name(str(error['loc'][0]))}: {problem}"


def _bounds(name: str) -> tuple[Any, Any]:
    metadata = Settings.model_fields[name].metadata
    lo = next(m.ge for m in metadata if isinstance(m, Ge))
    hi = next(m.le for m in metadata if isinstance(m, Le))
    return lo, hi


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
    if "sms_access_key_secret" not in stored:
        stored["sms_access_key_secret"] = secrets.token_urlsafe(22)
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
                              f"{PREFIX}ADMIN_TOKENS, {PREFIX}METRICS_TOKEN and {PREFIX}SMS_ACCESS_KEY_SECRET "
                              "instead") from None
    return settings.model_copy(update={
        "secret_key": settings.secret_key or stored["secret_key"],
        "admin_tokens": settings.admin_tokens or dict(stored["admin_tokens"]),
        "metrics_token": settings.metrics_token or stored["metrics_token"],
        "sms_access_key_secret": settings.sms_access_key_secret or stored["sms_access_key_secret"],
    })
