"""Page shells: the HTML of every candidate page and of the console, assembled once and served from memory.

A shell is a page template (``templates/<template>.html``) inside the layout
(``templates/layout.html``) with its header and the versioned URLs of its assets filled in at
start-up. Pages hold no data: their scripts call the JSON API. The one part that varies is the
captcha mode of the routes a page posts to (live config), written into the ``data-live``
attribute of ``<body>`` so the page knows whether to solve a proof-of-work or show an image;
shells are cached per live-config version, so serving one costs a dict lookup and no store.

Template syntax: ``{{ name }}`` for a value of the page (``title``, ``name``, ``header``,
``content``, ``scripts``), ``{{ asset js/common.js }}`` for an asset's versioned URL. An
unknown name or asset stops start-up, so a typo never reaches a candidate.
"""

from __future__ import annotations

import hashlib
import html
import re
from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import orjson

from gateway.liveconfig import LiveConfig
from gateway.web.assets import AssetStore, compress

TEMPLATES_DIR = Path(__file__).parent / "templates"
LIVE_MARK = "\x00live\x00"
_PLACEHOLDER = re.compile(r"\{\{\s*(asset\s+)?([A-Za-z0-9_./-]+)\s*\}\}")

# No inline script or style anywhere, so the policy can forbid them; data: is for the image captcha, blob: for
# the photo page's preview of the chosen file (an object URL, made by the page's own script).
CONTENT_SECURITY_POLICY = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data: blob:; "
                           "connect-src 'self'; worker-src 'self'; object-src 'none'; base-uri 'none'; "
                           "form-action 'self'; frame-ancestors 'none'")
PAGE_HEADERS = {
    "Content-Type": "text/html; charset=utf-8",
    # Revalidated on every visit (cheap: an ETag), because the shell carries live captcha modes.
    "Cache-Control": "no-cache",
    "Content-Security-Policy": CONTENT_SECURITY_POLICY,
    "X-Content-Type-Options": "nosniff",
    "X-Frame-Options": "DENY",
    "Referrer-Policy": "same-origin",
}


@dataclass(frozen=True)
class PageSpec:
    """One page: route name ``pages.<name>``, its path, title, template, scripts and captcha-guarded routes."""

    name: str
    path: str
    title: str
    template: str
    scripts: tuple[str, ...]
    captcha_routes: tuple[str, ...] = ()
    header: str = "candidate"


class Shell(NamedTuple):
    """A rendered page: its bytes, gzipped bytes (when smaller) and ETag."""

    body: bytes
    gzipped: bytes | None
    etag: str


class TemplateError(ValueError):
    """A template names a value or an asset that does not exist."""


class ShellRenderer:
    """Assembles the shells of the registered pages and keeps them per live-config version."""

    def __init__(self, assets: AssetStore, templates_dir: Path = TEMPLATES_DIR) -> None:
        self._assets = assets
        self._dir = templates_dir
        self._layout = self._read("layout")
        self._specs: dict[str, PageSpec] = {}
        self._halves: dict[str, tuple[str, str]] = {}
        self._cache: dict[str, tuple[int, Shell]] = {}

    def _read(self, template: str) -> str:
        return (self._dir / f"{template}.html").read_text(encoding="utf-8")

    def add(self, spec: PageSpec) -> None:
        """Assemble ``spec``'s shell (everything but the live part); raises TemplateError on a mistake."""
        scripts = "\n".join(f'<script defer src="{self._assets.url(path)}"></script>' for path in spec.scripts)
        values = {
            "title": html.escape(spec.title),
            "name": spec.name,
            "header": self._read(f"header-{spec.header}"),
            "content": self._read(spec.template),
            "scripts": scripts,
        }
        # Two passes: the header and content bring placeholders of their own (assets, the title).
        text = self._fill(self._fill(self._layout, values, spec), values, spec)
        if text.count(LIVE_MARK) != 1:
            raise TemplateError(f"the layout must hold {{{{ live }}}} exactly once (page {spec.name})")
        before, after = text.split(LIVE_MARK)
        self._specs[spec.name] = spec
        self._halves[spec.name] = (before, after)

    def _fill(self, text: str, values: dict[str, str], spec: PageSpec) -> str:
        def replace(match: re.Match[str]) -> str:
            is_asset, key = match.group(1), match.group(2)
            if is_asset:
                try:
                    return self._assets.url(key)
                except KeyError:
                    raise TemplateError(f"page {spec.name}: no static asset {key!r}") from None
            if key == "live":
                return LIVE_MARK
            if key not in values:
                raise TemplateError(f"page {spec.name}: unknown template value {key!r}")
            return values[key]

        return _PLACEHOLDER.sub(replace, text)

    def spec(self, name: str) -> PageSpec:
        """The registered page ``name``."""
        return self._specs[name]

    def shell(self, name: str, live: LiveConfig) -> Shell:
        """The shell of page ``name`` under the live config ``live`` (cached per version)."""
        cached = self._cache.get(name)
        if cached is not None and cached[0] == live.version:
            return cached[1]
        spec = self._specs[name]
        state = {"captcha": {route: live.captcha_for(route) for route in spec.captcha_routes}}
        before, after = self._halves[name]
        body = (before + html.escape(orjson.dumps(state).decode(), quote=True) + after).encode()
        shell = Shell(body, compress(body), '"' + hashlib.sha256(body).hexdigest()[:16] + '"')
        self._cache[name] = (live.version, shell)
        return shell
