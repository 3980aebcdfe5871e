"""Static assets (CSS, JavaScript) read once at start-up and served from memory under content-hashed URLs.

An asset's URL carries the first hex digits of its SHA-256 (``/static/<digest>/js/common.js``), so
a changed file gets a new URL and every URL can be cached for a year (``immutable``). Every gateway
process computes the same digests from the same files. A request naming another digest (a page from
before a deploy, or a guess) gets the current file with ``no-cache`` rather than a 404, so a page
being upgraded still works and nothing wrong is cached for long.
"""

from __future__ import annotations

import gzip
import hashlib
from collections.abc import Iterator
from pathlib import Path
from typing import NamedTuple

STATIC_DIR = Path(__file__).parent / "static"
STATIC_PREFIX = "/static"
DIGEST_CHARS = 12
IMMUTABLE = "public, max-age=31536000, immutable"
REVALIDATE = "no-cache"
CONTENT_TYPES = {
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".svg": "image/svg+xml",
    ".png": "image/png",
    ".txt": "text/plain; charset=utf-8",
}
# Compressing saves nothing worth a Content-Encoding header below this size.
GZIP_MIN_BYTES = 512


class Asset(NamedTuple):
    """One static file: its bytes (and gzipped bytes when that is smaller), type and content digest."""

    path: str
    body: bytes
    gzipped: bytes | None
    content_type: str
    digest: str

    @property
    def url(self) -> str:
        """The versioned URL pages link to."""
        return f"{STATIC_PREFIX}/{self.digest}/{self.path}"


def compress(body: bytes) -> bytes | None:
    """``body`` gzipped (deterministically: no timestamp) when that makes it smaller by a tenth, else None."""
    if len(body) < GZIP_MIN_BYTES:
        return None
    packed = gzip.compress(body, compresslevel=9, mtime=0)
    return packed if len(packed) < len(body) * 0.9 else None


def accepts_gzip(accept_encoding: str) -> bool:
    """True when an ``Accept-Encoding`` header allows gzip (``gzip;q=0`` refuses it)."""
    for part in accept_encoding.split(","):
        token, _, params = part.partition(";")
        if token.strip().lower() in ("gzip", "*"):
            params = params.strip().lower()
            if not params.startswith("q="):
                return True
            try:
                return float(params[2:]) > 0
            except ValueError:
                return False
    return False


class AssetStore:
    """Every file under the static directory, loaded once; looked up by its relative path."""

    def __init__(self, root: Path = STATIC_DIR) -> None:
        self._assets: dict[str, Asset] = {}
        for file in sorted(p for p in root.rglob("*") if p.is_file()):
            content_type = CONTENT_TYPES.get(file.suffix)
            if content_type is None:
                continue  # editor leftovers and the like are not served
            body = file.read_bytes()
            path = file.relative_to(root).as_posix()
            digest = hashlib.sha256(body).hexdigest()[:DIGEST_CHARS]
            self._assets[path] = Asset(path, body, compress(body), content_type, digest)

    def get(self, path: str) -> Asset | None:
        """The asset at ``path`` (relative, like ``js/common.js``), or None."""
        return self._assets.get(path)

    def url(self, path: str) -> str:
        """The versioned URL of ``path``; KeyError for a file that does not exist (a template mistake)."""
        return self._assets[path].url

    def __iter__(self) -> Iterator[Asset]:
        return iter(self._assets.values())
