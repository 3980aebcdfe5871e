"""Typed keys of what the application holds (aiohttp ``AppKey``s)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import asyncpg
import redis.asyncio as aioredis
from aiohttp import web

from core.redis import AutoPipeline
from gateway.config import Settings

if TYPE_CHECKING:
    from gateway.catalogue import CatalogueCache

SETTINGS = web.AppKey("settings", Settings)
PG = web.AppKey("pg", asyncpg.Pool)
REDIS = web.AppKey("redis", AutoPipeline)
REDIS_PY = web.AppKey("redis_py", aioredis.Redis)
CATALOGUE: web.AppKey[CatalogueCache] = web.AppKey("catalogue")
