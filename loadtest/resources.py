"""What a soak samples every ``interval_s``: processes' RSS, Redis's memory, clients and keys, PostgreSQL's connections.

Every key of the Redis database is counted by *family* (``key_family``: ids, hashes and addresses in
a key's segments become ``*``), and a few keys of each family have their TTL read. Inside the exams'
keys, where one key holds many things, the entries are counted: seat holds (expiring, and *overdue*:
past their expiry by more than ``grace_s``), waiting-room places (live, and expired but still
stored), positions, admissions, the hold stream. PostgreSQL's connections to the database are
counted in ``pg_stat_activity``, the sampler's own left out. A source that does not answer leaves its
figures empty and says so in the sample's ``errors``.
"""

from __future__ import annotations

import asyncio
import json
import re
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import Any, NamedTuple

__all__ = [
    "ResourceSampler", "Sample",
    "key_family", "processes_of", "read_samples", "take_sample",
    "OVERDUE_GRACE_S", "SAMPLES_FILE", "SAMPLE_INTERVAL_S",
]  # fmt: skip

SAMPLES_FILE = "soak.jsonl"
SAMPLE_INTERVAL_S = 10.0
SCAN_COUNT = 1000
TTL_PROBES = 3  # keys of a family whose TTL is read at each sample
PLACES_SCAN_MAX = 200_000  # place records read per room and sample at most (HSCAN), so a sample stays short
OVERDUE_GRACE_S = 30.0  # a hold past its expiry by more than this should have been released by the sweeper
_DIGIT = re.compile(r"\d")
_TAG = re.compile(r"\{(\w+):[^}]*\}")
_LONG = re.compile(r"^[A-Za-z0-9_\-+/=.]{20,}$")  # tokens and hashes without a digit are rare, but exist
_EXAM_KEY = re.compile(r"^eg:\{exam:(\d+)\}:(.+)$")


def key_family(key: str) -> str:
    """The key with its variable parts as ``*``: a hash tag's value, and every segment holding a digit or a token.

    ``eg:session:9f86…`` → ``eg:session:*``; ``eg:{exam:12}:site:3:left`` → ``eg:{exam:*}:site:*:left``.
    """
    parts = _TAG.sub(r"{\1:*}", key).split(":")
    out: list[str] = []
    for part in parts:
        if not part.startswith("{") and (_DIGIT.search(part) or _LONG.match(part) or (not part and out)):
            if out and out[-1] == "*":
                continue  # an address or a token with colons in it (2001:db8::1) is one variable part
            out.append("*")
        else:
            out.append(part)
    return ":".join(out)


class Sample(NamedTuple):
    """What one sampling saw, ``t`` seconds (unix) after the epoch."""

    t: float
    rss: dict[str, int]  # "gateway 1234", "gateway child 1240", "worker 1250" → bytes
    redis_memory: int | None
    redis_clients: int | None
    keys: dict[str, int]  # family → keys
    entries: dict[str, int]  # kind of entry kept inside the exams' keys → count
    pg_connections: int | None
    errors: list[str]
    ttls: dict[str, float]  # family → the longest TTL of a few of its keys, s (-1: a key without one)

    def as_json(self) -> dict[str, Any]:
        """The line of ``soak.jsonl``."""
        return {"t": round(self.t, 3), "rss": self.rss, "redis": {"used_memory": self.redis_memory,
                "connected_clients": self.redis_clients}, "keys": self.keys, "entries": self.entries,
                "pg_connections": self.pg_connections, "errors": self.errors, "ttls": self.ttls}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> Sample:
        """A line of ``soak.jsonl`` read back."""
        redis = data.get("redis") or {}
        return cls(float(data["t"]), dict(data.get("rss") or {}), redis.get("used_memory"),
                   redis.get("connected_clients"), dict(data.get("keys") or {}), dict(data.get("entries") or {}),
                   data.get("pg_connections"), list(data.get("errors") or []), dict(data.get("ttls") or {}))


def processes_of(roots: dict[str, int]) -> list[tuple[str, int]]:
    """Each named process and its children, as (label, pid): ``{"gateway": 1234}`` → gateway, gateway child ….

    A pid file's process that is gone is left out (a process killed during the run is a new series).
    """
    import psutil

    found: list[tuple[str, int]] = []
    for label, pid in roots.items():
        try:
            root = psutil.Process(pid)
            children = root.children(recursive=True)
        except psutil.Error:
            continue
        found.append((label, pid))
        found += [(f"{label} child", child.pid) for child in sorted(children, key=lambda c: c.pid)]
    return found


def _rss(processes: Sequence[tuple[str, int]]) -> dict[str, int]:
    import psutil

    sizes: dict[str, int] = {}
    for label, pid in processes:
        try:
            sizes[f"{label} {pid}"] = int(psutil.Process(pid).memory_info().rss)
        except psutil.Error:
            continue
    return sizes


def _exam_entries(client: Any, exam_keys: dict[int, set[str]], now_ms: int, grace_s: float) -> Counter[str]:
    """The entries kept inside the exams' keys: holds, places and the hold stream, summed over the exams."""
    entries: Counter[str] = Counter()
    for exam_id, suffixes in exam_keys.items():
        tag = f"eg:{{exam:{exam_id}}}:"
        if "holds" in suffixes:
            entries["holds"] += int(client.hlen(tag + "holds"))
        if "holds:expiry" in suffixes:
            expiry = tag + "holds:expiry"
            entries["holds expiring"] += int(client.zcard(expiry))
            entries["holds overdue"] += int(client.zcount(expiry, "-inf", now_ms - int(grace_s * 1000)))
        if "holds:stream" in suffixes:
            entries["hold stream events"] += int(client.xlen(tag + "holds:stream"))
        if "holds:last" in suffixes:
            entries["hold last-event marks"] += int(client.hlen(tag + "holds:last"))
        if "seat_rights" in suffixes:
            entries["seat rights"] += int(client.hlen(tag + "seat_rights"))
        if "q:cand" in suffixes:
            entries["waiting-room candidates"] += int(client.hlen(tag + "q:cand"))
        if "q:order" in suffixes:
            entries["waiting-room positions"] += int(client.hlen(tag + "q:order"))
        if "q:adm" in suffixes:
            entries["waiting-room admissions"] += int(client.hlen(tag + "q:adm"))
        if "q:tix" in suffixes:
            ttl_ms = client.hget(tag + "q:meta", "ttl_ms")
            ttl = int(ttl_ms) if ttl_ms is not None else None
            live = expired = read = 0
            for _, record in client.hscan_iter(tag + "q:tix", count=SCAN_COUNT):
                read += 1
                seen = int(record.rsplit(b":", 1)[1])
                if seen > 0 and (ttl is None or now_ms - seen <= ttl):
                    live += 1
                else:
                    expired += 1
                if read >= PLACES_SCAN_MAX:
                    break
            entries["waiting-room places"] += int(client.hlen(tag + "q:tix"))
            entries["waiting-room places live"] += live
            entries["waiting-room places expired"] += expired
    return entries


async def _pg_connections(dsn: str) -> int:
    import asyncpg

    conn = await asyncpg.connect(dsn, timeout=5)
    try:
        return int(await conn.fetchval("SELECT count(*) FROM pg_stat_activity "
                                       "WHERE datname = current_database() AND pid <> pg_backend_pid()"))
    finally:
        await conn.close()


def take_sample(redis_url: str, pg_dsn: str | None, processes: Sequence[tuple[str, int]],
                grace_s: float = OVERDUE_GRACE_S) -> Sample:
    """One sample; what could not be read is None (or left out) and said in ``errors``."""
    import redis

    errors: list[str] = []
    t = time.time()
    rss = _rss(processes)
    memory = clients = None
    keys: Counter[str] = Counter()
    entries: Counter[str] = Counter()
    ttls: dict[str, float] = {}
    try:
        with redis.Redis.from_url(redis_url, socket_timeout=10, socket_connect_timeout=5) as client:
            info = client.info()
            memory, clients = int(info["used_memory"]), int(info["connected_clients"])
            exam_keys: dict[int, set[str]] = {}
            probes: dict[str, list[bytes]] = {}
            for raw in client.scan_iter(count=SCAN_COUNT):
                key = raw.decode(errors="replace")
                family = key_family(key)
                keys[family] += 1
                if len(probe := probes.setdefault(family, [])) < TTL_PROBES:
                    probe.append(raw)
                exam = _EXAM_KEY.match(key)
                if exam:
                    exam_keys.setdefault(int(exam.group(1)), set()).add(exam.group(2))
            ttls = _ttls(client, probes)
            seconds, micros = client.time()
            entries = _exam_entries(client, exam_keys, int(seconds) * 1000 + int(micros) // 1000, grace_s)
    except (redis.RedisError, OSError) as exc:
        errors.append(f"redis: {exc}")
    pg = None
    if pg_dsn is not None:
        try:
            pg = asyncio.run(_pg_connections(pg_dsn))
        except Exception as exc:  # any driver or network error: the sample says so and goes on
            errors.append(f"postgresql: {exc}")
    return Sample(t, rss, memory, clients, dict(keys), dict(entries), pg, errors, ttls)


def _ttls(client: Any, probes: dict[str, list[bytes]]) -> dict[str, float]:
    """Each family's longest TTL among its probed keys, in seconds; -1 when one of them has none."""
    pipe = client.pipeline(transaction=False)
    order = [(family, key) for family, keys in probes.items() for key in keys]
    for _, key in order:
        pipe.pttl(key)
    found: dict[str, float] = {}
    for (family, _), ttl_ms in zip(order, pipe.execute(), strict=True):
        if ttl_ms == -2:
            continue  # expired since the scan
        ttl = -1.0 if ttl_ms == -1 else ttl_ms / 1000
        found[family] = -1.0 if ttl < 0 or found.get(family) == -1.0 else max(ttl, found.get(family, 0.0))
    return found


class ResourceSampler(AbstractContextManager["ResourceSampler"]):
    """A background thread taking a ``Sample`` every ``interval_s`` into ``out`` (``soak.jsonl``).

    ``processes`` is asked at every sample, so a restarted process is found again under its new pid.
    """

    def __init__(self, redis_url: str, pg_dsn: str | None, processes: Callable[[], list[tuple[str, int]]],
                 out: Path, interval_s: float = SAMPLE_INTERVAL_S, grace_s: float = OVERDUE_GRACE_S) -> None:
        self.redis_url, self.pg_dsn, self.processes = redis_url, pg_dsn, processes
        self.out, self.interval_s, self.grace_s = out, interval_s, grace_s
        self.samples: list[Sample] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="soak-sampler", daemon=True)

    def __enter__(self) -> ResourceSampler:
        self.out.parent.mkdir(parents=True, exist_ok=True)
        self.out.write_text("")
        self._thread.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self._stop.set()
        self._thread.join()
        self._take()  # the run's end, whenever it falls between two ticks

    def _take(self) -> None:
        try:
            processes = self.processes()
        except Exception as exc:  # a pid file gone: sample the stores anyway
            processes = []
            error = f"processes: {exc}"
        else:
            error = ""
        sample = take_sample(self.redis_url, self.pg_dsn, processes, self.grace_s)
        if error:
            sample.errors.append(error)
        self.samples.append(sample)
        with self.out.open("a") as fh:
            fh.write(json.dumps(sample.as_json(), ensure_ascii=False) + "\n")

    def _run(self) -> None:
        next_at = time.monotonic()
        while not self._stop.is_set():
            self._take()
            next_at += self.interval_s
            self._stop.wait(max(0.0, next_at - time.monotonic()))


def read_samples(path: Path) -> Iterator[Sample]:
    """The samples of a ``soak.jsonl``."""
    with path.open() as fh:
        for line in fh:
            if line.strip():
                yield Sample.from_json(json.loads(line))
