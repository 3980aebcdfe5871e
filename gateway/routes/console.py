"""The operators' console: a static page that asks for an admin token and drives the admin API.

The page holds no data and needs no token to load; its script keeps the token the operator
types in ``sessionStorage`` and calls the ``/admin/api/v1/...`` routes with
``Authorization: Bearer``: live figures (``stats``, plus a few series of ``/metrics``), the
live config (read with its ETag, changed by merge patch with ``If-Match``) and the audit trail.
"""

from __future__ import annotations

from aiohttp import web

from gateway.routes.pages import COMMON, declare_page, shells
from gateway.routing import Routes
from gateway.web.shells import PageSpec

CONSOLE = PageSpec("console", "/console", "运行控制台", "console", (COMMON, "js/console.js", "js/console-operators.js",
                                                                     "js/console-refunds.js",
                                                                     "js/console-cancellations.js"),
                   header="console")
routes = Routes("Pages")
declare_page(routes, CONSOLE)


def setup(app: web.Application) -> None:
    """Assemble the console page's shell."""
    shells(app).add(CONSOLE)
