"""Photo uploads (PUT /api/v1/me/photo) against a bare decode-and-re-encode of the same images on as many threads.

**Uploads.** One gateway process pinned to core 0 with the shipped photo settings
(``EXAMGATE_PHOTO_THREADS=2``, ``EXAMGATE_PHOTO_MAX_QUEUE=4``: 6 places), captcha off for
``photos.put`` (the default), ``CANDIDATES`` candidates without a photo (written to PostgreSQL),
each with a session made as a sign-in makes it (``core.sessions.create`` straight into Redis:
signing 2,000 candidates in over HTTP would spend a minute on argon2id). A closed-loop client
(this module's ``load`` child, its own process on core 1) keeps ``CONCURRENCY`` uploads in
flight — the two photo threads always busy, the pool never full — each by a candidate who has not
uploaded before (the checks approve these photos, and an approved photo is locked: a second upload
would be refused), with one of ``IMAGES`` camera-like JPEGs of 1–2 MP (``loadtest.photos``, a few
hundred KB each) in rotation. It counts the 201s completed inside the window; every answer must be
201 with ``status`` ``approved``, or the figure fails.

**The bare work.** The same image files in the same rotation, each opened and decoded by Pillow
(``Image.open`` + ``load``), resized to 295 × 413 and saved as JPEG (Pillow's defaults): no HTTP,
no checks, no storage, on a pool of as many threads as the photo pool with as many jobs in flight,
in a child process pinned to core 0 as well. Pinned the same way, uploads ÷ bare is what the
upload path costs beyond decoding and re-encoding (the gateway's pool threads share core 0 with
its event loop, as the bare threads share it with nothing). The two are measured in interleaved
rounds, each idle while the other runs; the ratio is the median of the per-round ratios. Target
≥ 0.8.

**Where the time goes.** Each round reads the CPU time of the gateway's serving process from
``/proc/PID/task/*/schedstat``, split into its main thread (the event loop: HTTP and the 300 KB
body, the session, PostgreSQL, the answer) and its other threads (the photo pool: checks,
normalisation, the SHA-256; asyncpg and aiohttp start no threads of their own on this path), per
accepted upload, beside the bare work's CPU per image. After the rounds, the bare child profiles
``core.photos.process`` and the bare work over the same images on one thread (cProfile) and splits
each image's time into the Pillow steps it calls (``STEPS``): what the checks cost beyond the bare
work, step by step.
"""

from __future__ import annotations

import asyncio
import cProfile
import io
import json
import pstats
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import asyncpg

from benchmarks.common import scratch_stores
from benchmarks.load import percentile
from benchmarks.profile import listening_pid
from core import sessions
from core.redis import AutoPipeline
from core.timeutil import utcnow
from loadtest.photos import portrait_jpeg
from loadtest.processes import start_gateway

PHOTO_THREADS = 2  # the shipped EXAMGATE_PHOTO_THREADS
PHOTO_MAX_QUEUE = 4  # the shipped EXAMGATE_PHOTO_MAX_QUEUE
CONCURRENCY = PHOTO_THREADS + 2  # the threads always have a job waiting; the 6 places are never all taken
CANDIDATES = 2_000  # each round uses a few dozen to a few hundred: one upload per candidate, never wrapping round
IMAGES = 24
ROUNDS = 5
ROUND_S = 4.0
WARMUP_S = 1.0
TARGET_RATIO = 0.8
PHOTO = "/api/v1/me/photo"
SIZE = (295, 413)
# The Pillow steps of an upload's checks and of the bare work, by (file ending, function) as cProfile names them.
STEPS: dict[str, tuple[tuple[str, str], ...]] = {
    "open (header)": (("PIL/Image.py", "open"),),
    "decode (load)": (("PIL/ImageFile.py", "load"),),
    "orientation (exif_transpose)": (("PIL/ImageOps.py", "exif_transpose"),),
    "convert": (("PIL/Image.py", "convert"),),
    "crop": (("PIL/Image.py", "crop"),),
    "resize": (("PIL/Image.py", "resize"),),
    "statistics (ImageStat)": (("PIL/ImageStat.py", "__init__"), ("PIL/ImageStat.py", "mean"),
                               ("PIL/ImageStat.py", "stddev")),
    "encode (save)": (("PIL/Image.py", "save"),),
    "sha256": (("~", "<built-in method _hashlib.openssl_sha256>"),),
}  # fmt: skip


# -- the images -----------------------------------------------------------------------------------


def write_images(directory: Path, count: int) -> list[Path]:
    """``count`` camera-like portraits (``loadtest.photos``, seeds 1…count) written as JPEG files."""
    paths = []
    for number in range(1, count + 1):
        path = directory / f"portrait-{number:03d}.jpg"
        path.write_bytes(portrait_jpeg(number))
        paths.append(path)
    return paths


def bare(data: bytes) -> bytes:
    """The bare work: decode, resize to 295 × 413, encode (Pillow's defaults)."""
    from PIL import Image

    with Image.open(io.BytesIO(data)) as image:
        image.load()
        small = image.resize(SIZE)
    out = io.BytesIO()
    small.save(out, "JPEG")
    return out.getvalue()


# -- the bare rate (child process on core 0) ------------------------------------------------------


def _bare_rate(images: list[bytes], threads: int, concurrency: int, warmup_s: float,
               duration_s: float) -> dict[str, Any]:
    """Bare jobs completed per second on ``threads`` threads with ``concurrency`` in flight, and CPU per image."""
    from concurrent.futures import Future, ThreadPoolExecutor

    window = {"open": False, "done": 0, "next": 0}
    lock = threading.Lock()
    stop = threading.Event()

    def submit(pool: ThreadPoolExecutor) -> None:
        with lock:
            n = window["next"]
            window["next"] += 1
        pool.submit(bare, images[n % len(images)]).add_done_callback(lambda job: done(pool, job))

    def done(pool: ThreadPoolExecutor, job: Future[bytes]) -> None:
        job.result()
        with lock:
            if window["open"] and not stop.is_set():
                window["done"] += 1
        if not stop.is_set():
            submit(pool)

    with ThreadPoolExecutor(max_workers=threads, thread_name_prefix="bare") as pool:
        for _ in range(concurrency):
            submit(pool)
        time.sleep(warmup_s)
        cpu_before = time.process_time()
        with lock:
            window["open"] = True
        opened = time.perf_counter()
        time.sleep(duration_s)
        with lock:
            stop.set()
            completed = window["done"]
        elapsed_s = time.perf_counter() - opened
        cpu_s = time.process_time() - cpu_before
    return {"images": completed, "images_per_s": completed / elapsed_s,
            "cpu_ms_per_image": cpu_s * 1000 / completed if completed else None}


def _steps(images: list[bytes]) -> dict[str, Any]:
    """Milliseconds per image of ``core.photos.process`` and of the bare work, split into Pillow's steps (cProfile)."""
    from core import photos

    result: dict[str, Any] = {}
    for name, work in (("process", photos.process), ("bare", bare)):
        for data in images[:2]:
            work(data)  # plugins imported, caches warm
        profiler = cProfile.Profile()
        started = time.perf_counter()
        profiler.enable()
        for data in images:
            work(data)
        profiler.disable()
        total_ms = (time.perf_counter() - started) * 1000 / len(images)
        split = step_split(pstats.Stats(profiler).stats, len(images))  # type: ignore[attr-defined]
        split["other (Python around the steps)"] = round(max(0.0, total_ms - sum(split.values())), 2)
        result[name] = {"ms_per_image": round(total_ms, 2), "steps_ms": split}
    return result


def step_split(stats: dict[tuple[str, int, str], tuple[Any, ...]], images: int) -> dict[str, float]:
    """Cumulative ms per image of each of ``STEPS`` in cProfile's raw stats (each function counted once)."""
    split: dict[str, float] = {}
    for step, functions in STEPS.items():
        total_s = sum(ct for (filename, _, function), (_, _, _, ct, _) in stats.items()
                      if any(filename.endswith(end) and function == name for end, name in functions))
        if total_s:
            split[step] = round(total_s * 1000 / images, 2)
    return split


def bare_child(mode: str, spec: dict[str, Any], *, cpus: str | None = "0") -> dict[str, Any]:
    """Run this module's ``bare`` or ``steps`` measurement in a child pinned to ``cpus``; its result."""
    command = [sys.executable, "-m", "benchmarks.bench_photos", mode, json.dumps(spec)]
    if cpus is not None and shutil.which("taskset"):
        command = ["taskset", "-c", cpus, *command]
    done = subprocess.run(command, capture_output=True, text=True, timeout=spec.get("duration_s", 0) + 120)
    if done.returncode != 0:
        raise RuntimeError(f"bare {mode} measurement failed:\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# -- the uploads (load child process on core 1) ---------------------------------------------------


async def _uploads(spec: dict[str, Any], images: list[bytes]) -> dict[str, Any]:
    """A closed loop of uploads of ``images``, each by the next unused token; 201s per second inside the window."""
    import aiohttp

    tokens: list[str] = spec["tokens"]
    url = spec["url"] + PHOTO
    counter = {"next": 0, "ok": 0, "ok_total": 0, "exhausted": False}
    window = {"open": False}
    statuses: dict[str, int] = {}
    problems: list[str] = []
    latencies_ms: list[float] = []
    stop = asyncio.Event()

    async def client(session: aiohttp.ClientSession) -> None:
        while not stop.is_set():
            n = counter["next"]
            if n >= len(tokens):
                counter["exhausted"] = True
                return
            counter["next"] += 1
            headers = {"Authorization": f"Bearer {tokens[n]}", "Content-Type": "image/jpeg"}
            started = time.perf_counter()
            try:
                async with session.put(url, data=images[n % len(images)], headers=headers) as resp:
                    raw = await resp.read()
                    status = resp.status
            except (TimeoutError, aiohttp.ClientError) as exc:
                status, raw = 0, type(exc).__name__.encode()
            key = str(status)
            if status == 201:
                if json.loads(raw).get("status") != "approved":
                    key = "201 not approved"
            elif status:
                try:
                    key += " " + str(json.loads(raw)["error"]["code"])
                except (ValueError, KeyError, TypeError):
                    pass
            statuses[key] = statuses.get(key, 0) + 1
            if key != "201" and len(problems) < 5:
                problems.append(f"{key}: {raw[:200]!r}")
            if key == "201":
                counter["ok_total"] += 1
                if window["open"] and not stop.is_set():
                    counter["ok"] += 1
                    latencies_ms.append((time.perf_counter() - started) * 1000)

    connector = aiohttp.TCPConnector(limit=0)
    async with aiohttp.ClientSession(connector=connector, timeout=aiohttp.ClientTimeout(total=30)) as session:
        tasks = [asyncio.create_task(client(session)) for _ in range(spec["concurrency"])]
        await asyncio.sleep(spec["warmup_s"])
        window["open"] = True
        opened = time.perf_counter()
        await asyncio.sleep(spec["duration_s"])
        stop.set()
        elapsed_s = time.perf_counter() - opened
        await asyncio.wait(tasks, timeout=30)
    if counter["exhausted"]:
        raise RuntimeError(f"ran out of candidates after {len(tokens)} uploads: raise CANDIDATES")
    return {"ok": counter["ok"], "ok_per_s": counter["ok"] / elapsed_s, "ok_total": counter["ok_total"],
            "used": counter["next"], "statuses": statuses, "problems": problems,
            "latency_ms": {"p50": percentile(latencies_ms, 50), "p99": percentile(latencies_ms, 99)}}


def upload_load(spec: dict[str, Any], *, cpus: str | None = "1") -> dict[str, Any]:
    """Run the uploads in a child process pinned to ``cpus`` (the spec goes on stdin: it holds the tokens)."""
    command = [sys.executable, "-m", "benchmarks.bench_photos", "load"]
    if cpus is not None and shutil.which("taskset"):
        command = ["taskset", "-c", cpus, *command]
    done = subprocess.run(command, input=json.dumps(spec), capture_output=True, text=True,
                          timeout=spec["warmup_s"] + spec["duration_s"] + 90)
    if done.returncode != 0:
        raise RuntimeError(f"upload load failed ({done.returncode}):\n{done.stderr}")
    result: dict[str, Any] = json.loads(done.stdout)
    return result


# -- the gateway's CPU --------------------------------------------------------------------------


def thread_cpu_s(pid: int) -> tuple[float, float]:
    """Seconds on a core so far of ``pid``'s main thread and of all its other threads together."""
    main = others = 0.0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            run_ns = int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):  # a thread that ended meanwhile
            continue
        if task.name == str(pid):
            main += run_ns / 1e9
        else:
            others += run_ns / 1e9
    return main, others


# -- the benchmark ------------------------------------------------------------------------------


async def _candidates_signed_in(pg_dsn: str, redis_url: str, count: int) -> list[str]:
    """``count`` new candidates without a photo, each with a session made as a sign-in makes it; the tokens.

    Written straight to PostgreSQL rather than seeded: a seed may give its candidates a photo already,
    and an approved photo is locked against the upload measured here.
    """
    conn = await asyncpg.connect(pg_dsn)
    try:
        rows = await conn.fetch(
            """INSERT INTO candidates (username, password_hash, name, id_type, id_number, phone, email,
                                       security_question, security_answer_hash)
               SELECT 'photo-bench-' || g, 'x', '考生' || g, 'passport', 'PB' || lpad(g::text, 8, '0'),
                      '139' || lpad(g::text, 8, '0'), 'photo-bench-' || g || '@example.com', 'q', 'x'
                 FROM generate_series(1, $1::int) AS g
               RETURNING id""", count)
    finally:
        await conn.close()
    client = AutoPipeline(redis_url, connections=2, timeout_ms=10_000)
    try:
        now = utcnow()
        made = await asyncio.gather(*(sessions.create(client, row["id"], now=now) for row in rows))
    finally:
        await client.close()
    return [session.token for session in made]


def _rounds(url: str, pid: int, tokens: list[str], paths: list[Path], rounds: int,
            round_s: float, say: Callable[[str], None]) -> dict[str, list[Any]]:
    images = [str(path) for path in paths]
    bare_spec = {"images": images, "threads": PHOTO_THREADS, "concurrency": CONCURRENCY, "warmup_s": WARMUP_S,
                 "duration_s": round_s}
    samples: dict[str, list[Any]] = {key: [] for key in (
        "uploads_per_s", "bare_per_s", "ratio", "statuses", "upload_p50_ms", "upload_p99_ms",
        "loop_cpu_ms_per_upload", "pool_cpu_ms_per_upload", "bare_cpu_ms_per_image")}
    used = 0
    for round_no in range(rounds):
        order = ("bare", "uploads") if round_no % 2 == 0 else ("uploads", "bare")
        measured: dict[str, dict[str, Any]] = {}
        for side in order:
            if side == "bare":
                measured[side] = bare_child("bare", bare_spec)
            else:
                spec = {"url": url, "tokens": tokens[used:], "images": images, "concurrency": CONCURRENCY,
                        "warmup_s": WARMUP_S, "duration_s": round_s}
                main_before, others_before = thread_cpu_s(pid)
                measured[side] = upload_load(spec)
                main_after, others_after = thread_cpu_s(pid)
                used += measured[side]["used"]
                accepted = max(1, measured[side]["ok_total"])
                measured[side]["loop_cpu_ms"] = (main_after - main_before) * 1000 / accepted
                measured[side]["pool_cpu_ms"] = (others_after - others_before) * 1000 / accepted
            time.sleep(0.3)
        uploads, bare_result = measured["uploads"], measured["bare"]
        samples["uploads_per_s"].append(round(uploads["ok_per_s"], 2))
        samples["bare_per_s"].append(round(bare_result["images_per_s"], 2))
        samples["ratio"].append(round(uploads["ok_per_s"] / bare_result["images_per_s"], 4))
        samples["statuses"].append(uploads["statuses"])
        samples["upload_p50_ms"].append(uploads["latency_ms"]["p50"])
        samples["upload_p99_ms"].append(uploads["latency_ms"]["p99"])
        samples["loop_cpu_ms_per_upload"].append(round(uploads["loop_cpu_ms"], 2))
        samples["pool_cpu_ms_per_upload"].append(round(uploads["pool_cpu_ms"], 2))
        samples["bare_cpu_ms_per_image"].append(round(bare_result["cpu_ms_per_image"] or 0.0, 2))
        say(f"  round {round_no + 1}/{rounds}: bare {bare_result['images_per_s']:.1f}/s "
            f"({bare_result['cpu_ms_per_image'] or 0:.1f} ms CPU each), uploads {uploads['ok_per_s']:.1f}/s "
            f"(p99 {uploads['latency_ms']['p99'] or 0:.0f} ms; CPU per upload: loop {uploads['loop_cpu_ms']:.1f} ms, "
            f"photo threads {uploads['pool_cpu_ms']:.1f} ms) {uploads['statuses']} → "
            f"{uploads['ok_per_s'] / bare_result['images_per_s']:.3f}×")
        if uploads["problems"]:
            say(f"  unexpected answers: {uploads['problems']}")
    samples["candidates_used"] = [used]
    return samples


def run(*, rounds: int = ROUNDS, round_s: float = ROUND_S, candidates: int = CANDIDATES,
        images: int = IMAGES) -> list[dict[str, Any]]:
    """Measure and return the figures with their targets (the defaults are the benchmark's; tests run it tiny)."""
    started = time.perf_counter()

    def say(line: str) -> None:
        print(line, flush=True)

    with scratch_stores() as (pg_dsn, redis_url), tempfile.TemporaryDirectory(prefix="bench-photos-") as tmp:
        tokens = asyncio.run(_candidates_signed_in(pg_dsn, redis_url, candidates))
        paths = write_images(Path(tmp), images)
        sizes = [path.stat().st_size for path in paths]
        say(f"  {candidates:,} candidates signed in; {images} images of {min(sizes) // 1024}–{max(sizes) // 1024} KB")
        gateway = start_gateway(pg_dsn, redis_url, workers=1, cpus="0", EXAMGATE_PHOTO_THREADS=str(PHOTO_THREADS),
                                EXAMGATE_PHOTO_MAX_QUEUE=str(PHOTO_MAX_QUEUE))
        try:
            pid = listening_pid(gateway.url)
            samples = _rounds(gateway.url, pid, tokens, paths, rounds, round_s, say)
        finally:
            gateway.stop()
        steps = bare_child("steps", {"images": [str(path) for path in paths]})
    say(f"  per image, one thread: process {steps['process']['ms_per_image']} ms {steps['process']['steps_ms']}; "
        f"bare {steps['bare']['ms_per_image']} ms {steps['bare']['steps_ms']}")
    ratio = statistics.median(samples["ratio"])
    unexpected = {key: n for answers in samples["statuses"] for key, n in answers.items() if key != "201"}
    passed = ratio >= TARGET_RATIO and not unexpected
    setup = {"gateway_processes": 1, "gateway_cpus": "0", "load_cpus": "1", "bare_cpus": "0",
             "photo_threads": PHOTO_THREADS, "photo_max_queue": PHOTO_MAX_QUEUE, "concurrency": CONCURRENCY,
             "images": images, "image_bytes": {"min": min(sizes), "max": max(sizes)}, "rounds": rounds,
             "round_s": round_s, "elapsed_s": round(time.perf_counter() - started, 1)}
    where = {"loop_cpu_ms_per_upload": statistics.median(samples["loop_cpu_ms_per_upload"]),
             "photo_threads_cpu_ms_per_upload": statistics.median(samples["pool_cpu_ms_per_upload"]),
             "bare_cpu_ms_per_image": statistics.median(samples["bare_cpu_ms_per_image"]),
             "one_thread_ms_per_image": steps}
    return [
        {"benchmark": "photos", "metric": "upload_vs_bare_decode_resize_encode", "value": round(ratio, 3), "unit": "×",
         "target": f">= {TARGET_RATIO}", "passed": passed,
         "details": {"uploads_per_s": statistics.median(samples["uploads_per_s"]),
                     "bare_per_s": statistics.median(samples["bare_per_s"]), "unexpected_answers": unexpected,
                     "samples": samples, "where_the_time_goes": where, **setup}},
        {"benchmark": "photos", "metric": "accepted_uploads_per_s_per_process",
         "value": round(statistics.median(samples["uploads_per_s"]), 1), "unit": "/s", "target": None, "passed": None,
         "details": {}},
        {"benchmark": "photos", "metric": "upload_cpu_ms_event_loop", "value": where["loop_cpu_ms_per_upload"],
         "unit": "ms", "target": None, "passed": None, "details": {}},
        {"benchmark": "photos", "metric": "upload_cpu_ms_photo_threads",
         "value": where["photo_threads_cpu_ms_per_upload"], "unit": "ms", "target": None, "passed": None,
         "details": {}},
        {"benchmark": "photos", "metric": "bare_cpu_ms_per_image", "value": where["bare_cpu_ms_per_image"],
         "unit": "ms", "target": None, "passed": None, "details": {}},
    ]


def _child(argv: list[str]) -> dict[str, Any]:
    mode = argv[0]
    spec = json.loads(sys.stdin.read() if mode == "load" else argv[1])
    images = [Path(path).read_bytes() for path in spec["images"]]
    if mode == "load":
        try:
            import uvloop
        except ImportError:
            return asyncio.run(_uploads(spec, images))
        return uvloop.run(_uploads(spec, images))
    if mode == "bare":
        return _bare_rate(images, spec["threads"], spec["concurrency"], spec["warmup_s"], spec["duration_s"])
    if mode == "steps":
        return _steps(images)
    raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    if sys.argv[1:2] and sys.argv[1] in ("load", "bare", "steps"):
        print(json.dumps(_child(sys.argv[1:])))
    else:
        for figure in run():
            print(figure)
