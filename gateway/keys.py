"""Typed keys of what the application holds (aiohttp ``AppKey``s)."""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web
from cachetools import LRUCache

from captcha.pool import TakeCounters
from core.passwords import PasswordHasher
from core.redis import AutoPipeline
from core.sessions import SessionSettings
from gateway.config import Settings

if TYPE_CHECKING:
    from gateway.catalogue import CatalogueCache
    from gateway.clientip import ClientIp
    from gateway.configstore import ConfigStore, LiveConfigWatcher
    from gateway.metrics import LoopLagMonitor, RequestTally
    from gateway.registration_refs import RegistrationRefs
    from gateway.shedding import Shedder
    from gateway.stats import StatsRecorder
    from lookups.service import Lookups
    from payments.runtime import PaymentsRuntime
    from queueing.holds import Replication
    from ratelimit.limiter import Limiter

SETTINGS = web.AppKey("settings", Settings)
PG = web.AppKey("pg", asyncpg.Pool)
REDIS = web.AppKey("redis", AutoPipeline)
REDIS_PY = web.AppKey("redis_py", aioredis.Redis)
CATALOGUE: web.AppKey[CatalogueCache] = web.AppKey("catalogue")
LIVE: web.AppKey[LiveConfigWatcher] = web.AppKey("live")
CONFIG_STORE: web.AppKey[ConfigStore] = web.AppKey("config_store")
STATS: web.AppKey[StatsRecorder] = web.AppKey("stats")
LOOP_LAG: web.AppKey[LoopLagMonitor] = web.AppKey("loop_lag")
TALLY: web.AppKey[RequestTally] = web.AppKey("request_tally")  # answers counted in memory until exported
SHEDDER: web.AppKey[Shedder] = web.AppKey("shedder")
CLIENT_IP: web.AppKey[ClientIp] = web.AppKey("client_ip")
LIMITER: web.AppKey[Limiter] = web.AppKey("limiter")
HASHER = web.AppKey("hasher", PasswordHasher)
SESSIONS = web.AppKey("session_settings", SessionSettings)
POW_KEY = web.AppKey("pow_key", bytes)
LOADTEST_KEY = web.AppKey("loadtest_key", bytes)
RECOVERY_KEY = web.AppKey("recovery_key", bytes)
CAPTCHA_TAKES = web.AppKey("captcha_takes", TakeCounters)
ADMISSION_KEY = web.AppKey("admission_key", bytes)
REGISTRATION_REFS: web.AppKey[RegistrationRefs] = web.AppKey("registration_refs")
PAYMENTS: web.AppKey[PaymentsRuntime | None] = web.AppKey("payments")
LOOKUPS: web.AppKey[Lookups] = web.AppKey("lookups")
# (ticket number, exam id) → signed PDF path
TICKET_LINKS: web.AppKey[Callable[[str, int], str]] = web.AppKey("ticket_links")
TICKET_PDF_KEY = web.AppKey("ticket_pdf_key", bytes)
# Session key → candidate, for sessions this process has resolved on routes with candidate-keyed rules
# (``gateway.auth.submit_candidate`` sends those rules beside the session lookup).
SEEN_SESSIONS = web.AppKey("seen_sessions", LRUCache)
# Routes whose handler decides every rate limit itself (from the route table: ``gateway.routing``).
HANDLER_DECIDES = web.AppKey("handler_decides", frozenset)
# How seat holds are made to survive a Redis failover (None: answered on the master's word).
HOLD_REPLICATION: web.AppKey[Replication | None] = web.AppKey("hold_replication")
