"""``examgate ctl``: the operators' command line, a thin client of the admin API over HTTP."""

from __future__ import annotations

import csv
import hashlib
import json
import re
import time
import urllib.error
import urllib.parse
import urllib.request
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import click

TIMEOUT_S = 10.0
# Maps keyed by route names, which contain dots: in ``config set`` the rest of the path is one key.
ROUTE_MAPS = (("captcha", "routes"), ("maintenance",))
_SEGMENT = re.compile(r'\[\s*"([^"]+)"\s*\]|([^.\[\]]+)')
STATS_COLUMNS = ("requests_per_s", "rejections_per_s", "4xx_per_s", "5xx_per_s", "429_per_s", "503_per_s")


class CtlError(click.ClickException):
    """A failure shown as ``error: …`` (exit code 1)."""

    def show(self, file: IO[Any] | None = None) -> None:
        """Print the message to stderr."""
        click.echo(f"error: {self.format_message()}", err=True, file=file)


@dataclass
class AdminClient:
    """The admin API at ``url`` with an operator's token."""

    url: str
    token: str

    def call(self, method: str, path: str, body: Any = None, headers: dict[str, str] | None = None) -> Any:
        """One request; the decoded JSON answer, or CtlError describing the API's error."""
        data = None if body is None else json.dumps(body).encode()
        try:
            request = urllib.request.Request(self.url.rstrip("/") + path, data=data, method=method)
        except ValueError:
            raise CtlError(f"not an http URL: {self.url}") from None
        request.add_header("Authorization", f"Bearer {self.token}")
        request.add_header("Accept", "application/json")
        if data is not None:
            request.add_header("Content-Type", "application/merge-patch+json")
        for name, value in (headers or {}).items():
            request.add_header(name, value)
        try:
            with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
                return json.loads(response.read() or b"null")
        except urllib.error.HTTPError as exc:
            with exc:
                raise _api_error(exc) from None
        except ValueError:
            raise CtlError(f"{self.url} answered something other than JSON; is it an examgate gateway?") from None
        except (urllib.error.URLError, OSError) as exc:
            reason = getattr(exc, "reason", exc)
            raise CtlError(f"cannot reach the gateway at {self.url}: {reason}") from None


def _api_error(exc: urllib.error.HTTPError) -> CtlError:
    try:
        error = json.loads(exc.read())["error"]
        text = f"{error['code']}: {error['message']}"
        fields = error.get("details", {}).get("fields") or {}
        current = error.get("details", {}).get("current_version")
    except (ValueError, KeyError, TypeError):
        return CtlError(f"http_{exc.code}: {exc.reason}")
    lines = [text, *(f"  {path}: {problem}" for path, problem in fields.items())]
    if current is not None:
        lines.append(f"  current version: {current}")
    return CtlError("\n".join(lines))


def parse_path(path: str) -> list[str]:
    """``queue.exams.2.admit_per_s`` → its keys; ``maintenance["scores.*"]`` quotes a key with dots."""
    parts = [quoted or plain for quoted, plain in _SEGMENT.findall(path)]
    if not parts:
        raise CtlError(f"not a config path: {path!r}")
    if '"' not in path:
        for prefix in ROUTE_MAPS:
            if tuple(parts[: len(prefix)]) == prefix and len(parts) > len(prefix) + 1:
                parts = [*prefix, ".".join(parts[len(prefix):])]
    return parts


def parse_value(raw: str) -> Any:
    """VALUE as JSON when it parses (``50``, ``true``, ``null``, ``{"a": 1}``), else as a string."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw


def _table(headers: list[str], rows: list[list[Any]]) -> str:
    cells = [headers, *[[str(cell) for cell in row] for row in rows]]
    widths = [max(len(row[i]) for row in cells) for i in range(len(headers))]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
             for row in cells]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)


def _client(ctx: click.Context) -> AdminClient:
    client: AdminClient = ctx.ensure_object(dict)["client"]
    return client


@click.group()
@click.option("--url", help="Gateway base URL (default http://EXAMGATE_HOST:EXAMGATE_PORT).")
@click.option("--token", help="Admin token (default: the first one in the settings / secrets file).")
@click.pass_context
def ctl(ctx: click.Context, url: str | None, token: str | None) -> None:
    """Operate a running gateway: live config, throttles, audit, stats."""
    if url is None or token is None:
        from gateway import config as configmod

        try:
            settings = configmod.load()
        except configmod.ConfigError as exc:
            raise CtlError(f"invalid configuration: {exc}") from None
        url = url or f"http://{settings.host}:{settings.port}"
        token = token or next(iter(settings.admin_tokens.values()))
    ctx.ensure_object(dict)["client"] = AdminClient(url, token)


@ctl.group("config")
def config_group() -> None:
    """Read and change the live config."""


@config_group.command("get")
@click.pass_context
def config_get(ctx: click.Context) -> None:
    """Print the live config and its version as JSON."""
    click.echo(json.dumps(_client(ctx).call("GET", "/admin/api/v1/config"), indent=2, ensure_ascii=False))


@config_group.command("set")
@click.argument("path")
@click.argument("value")
@click.option("--if-match", type=int, help="Apply only if the config is still at this version.")
@click.pass_context
def config_set(ctx: click.Context, path: str, value: str, if_match: int | None) -> None:
    """Set PATH (e.g. queue.exams.2.admit_per_s) to VALUE (JSON, else a string; null removes it)."""
    patch: Any = parse_value(value)
    for key in reversed(parse_path(path)):
        patch = {key: patch}
    headers = {"If-Match": str(if_match)} if if_match is not None else None
    answer = _client(ctx).call("PATCH", "/admin/api/v1/config", patch, headers)
    click.echo(f"config version {answer['version']}")


@ctl.group("throttle")
def throttle_group() -> None:
    """Change rate-limit rules."""


@throttle_group.command("list")
@click.pass_context
def throttle_list(ctx: click.Context) -> None:
    """Show the rate-limit rules in force."""
    current = _client(ctx).call("GET", "/admin/api/v1/config")
    rules = current["config"].get("ratelimit", {}).get("rules", [])
    fields = ["id", "routes", "key", "rate", "period_s", "burst", "mode", "on_redis_error"]
    rows = [[", ".join(r["routes"]) if f == "routes" else r.get(f, "") for f in fields] for r in rules]
    click.echo(f"config version {current['version']}")
    click.echo(_table(fields, rows))


@throttle_group.command("set")
@click.argument("rule_id", metavar="RULE")
@click.option("--rate", type=click.IntRange(1), help="Requests allowed per period.")
@click.option("--period-s", type=click.FloatRange(0.001), help="The period, in seconds.")
@click.option("--burst", type=click.IntRange(1), help="Requests allowed at once.")
@click.option("--mode", type=click.Choice(["enforce", "shadow", "off"]), help="Block, only count, or skip.")
@click.pass_context
def throttle_set(ctx: click.Context, rule_id: str, rate: int | None, period_s: float | None,
                 burst: int | None, mode: str | None) -> None:
    """Change one rule of ratelimit.rules (the list is replaced whole, guarded by If-Match)."""
    changes = {k: v for k, v in {"rate": rate, "period_s": period_s, "burst": burst, "mode": mode}.items()
               if v is not None}
    if not changes:
        raise CtlError("nothing to change: give --rate, --period-s, --burst or --mode")
    client = _client(ctx)
    current = client.call("GET", "/admin/api/v1/config")
    rules = current["config"].get("ratelimit", {}).get("rules", [])
    matching = [rule for rule in rules if isinstance(rule, dict) and rule.get("id") == rule_id]
    if not matching:
        known = ", ".join(str(rule.get("id")) for rule in rules if isinstance(rule, dict)) or "none"
        raise CtlError(f"no rate-limit rule {rule_id!r} (rules: {known})")
    matching[0].update(changes)
    answer = client.call("PATCH", "/admin/api/v1/config", {"ratelimit": {"rules": rules}},
                         {"If-Match": str(current["version"])})
    click.echo(f"rule {rule_id} updated: config version {answer['version']}")


@ctl.command("audit")
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True, help="How many changes.")
@click.pass_context
def audit(ctx: click.Context, limit: int) -> None:
    """List the latest config changes, newest first."""
    answer = _client(ctx).call("GET", f"/admin/api/v1/audit?limit={limit}")
    rows = []
    for change in answer["changes"]:
        diffs = change["diff"] or [{"path": "-", "old": None, "new": None}]
        for index, item in enumerate(diffs):
            head = [change["version"], change["actor"], change["changed_at"]] if index == 0 else ["", "", ""]
            rows.append([*head, item["path"], _short(item["old"]), _short(item["new"])])
    click.echo(_table(["version", "actor", "changed_at", "path", "old", "new"], rows))


def _short(value: Any, width: int = 40) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= width else text[: width - 1] + "…"


def render_stats(figures: dict[str, Any]) -> str:
    """The stats answer as a table of per-route rates, followed by the other sections."""
    rows = [[route, *(rates[c] for c in STATS_COLUMNS)] for route, rates in figures["routes"].items()]
    rows.append(["(all)", *(figures["totals"][c] for c in STATS_COLUMNS)])
    lines = [f"config version {figures.get('config_version')} · last {figures['window_s']} s, per second",
             _table(["route", *(c.removesuffix("_per_s") for c in STATS_COLUMNS)], rows)]
    for name, section in figures.items():
        if name not in {"window_s", "routes", "totals", "config_version"}:
            lines.append(f"{name}: {json.dumps(section, ensure_ascii=False)}")
    return "\n".join(lines)


@ctl.command("stats")
@click.option("--watch/--once", default=True, help="Refresh until interrupted, or print once.")
@click.option("--interval", type=click.FloatRange(0.2), default=2.0, show_default=True,
              help="Seconds between refreshes.")
@click.pass_context
def stats(ctx: click.Context, watch: bool, interval: float) -> None:
    """Show live per-route request and rejection rates across all processes."""
    client = _client(ctx)
    try:
        while True:
            table = render_stats(client.call("GET", "/admin/api/v1/stats"))
            if not watch:
                click.echo(table)
                return
            click.clear()
            click.echo(f"{time.strftime('%H:%M:%S')}  (Ctrl-C to stop)\n{table}")
            time.sleep(interval)
    except KeyboardInterrupt:
        return


@ctl.group("deadletters")
def deadletters_group() -> None:
    """Hold events the write-behind gave up on (kept in Redis until replayed)."""


@deadletters_group.command("list")
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True, help="How many, oldest first.")
@click.pass_context
def deadletters_list(ctx: click.Context, limit: int) -> None:
    """List dead-lettered hold events with their last error."""
    answer = _client(ctx).call("GET", f"/admin/api/v1/dead-letters?limit={limit}")
    letters = answer["dead_letters"]
    if not letters:
        click.echo("(no dead letters)")
        return
    rows = [[d["id"], d["stream"], d["entry_id"], d["deliveries"], d["fields"].get("type", ""),
             d["fields"].get("registration", ""), d["error"][:60]] for d in letters]
    click.echo(_table(["id", "stream", "entry", "deliveries", "type", "registration", "error"], rows))


@deadletters_group.command("replay")
@click.argument("ids", nargs=-1)
@click.pass_context
def deadletters_replay(ctx: click.Context, ids: tuple[str, ...]) -> None:
    """Put dead letters back on their streams (IDS, or all of them); stale ones are then skipped."""
    body = {"ids": list(ids)} if ids else {}
    answer = _client(ctx).call("POST", "/admin/api/v1/dead-letters/replay", body)
    click.echo(f"replayed {answer['replayed']} dead letter(s)")


REFUND_STATUSES = ("pending", "requested", "succeeded", "failed")


@ctl.group("refunds", invoke_without_command=True)
@click.option("--limit", type=click.IntRange(1, 1000), default=100, show_default=True, help="How many, newest first.")
@click.option("--status", type=click.Choice(REFUND_STATUSES), help="Only the refunds in this status.")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@click.pass_context
def refunds(ctx: click.Context, limit: int, status: str | None, as_json: bool) -> None:
    """Refunds, newest first: payments that must go back (late, for a closed order, a second trade) and
    approved cancellations, with their status, attempts and last error. `refunds execute ID` sends one again."""
    if ctx.invoked_subcommand is not None:
        return
    query = f"limit={limit}" + (f"&status={status}" if status else "")
    found = _client(ctx).call("GET", f"/admin/api/v1/refunds?{query}")["refunds"]
    if as_json:
        click.echo(json.dumps(found, ensure_ascii=False, indent=2))
        return
    if not found:
        click.echo("(no refunds)")
        return
    rows = [[r["refund_id"], r["status"], r["attempts"], r["provider"], r["order_no"], r["registration_id"],
             f"{r['amount_fen'] / 100:.2f}", r["reason"], r["next_attempt_at"] or "-", _clip(r["last_error"], 50)]
            for r in found]
    click.echo(_table(["refund", "status", "attempts", "provider", "order", "registration", "yuan", "reason", "next",
                       "last error"], rows))


def _clip(text: str | None, width: int) -> str:
    text = (text or "").replace("\n", " ")
    return text if len(text) <= width else text[: width - 1] + "…"


@refunds.command("show")
@click.argument("refund_id")
@click.option("--json", "as_json", is_flag=True, help="Print the refund and its ledger as JSON.")
@click.pass_context
def refunds_show(ctx: click.Context, refund_id: str, as_json: bool) -> None:
    """One refund and its ledger: every request sent, answer and notification received, operator's action."""
    found = _client(ctx).call("GET", f"/admin/api/v1/refunds/{urllib.parse.quote(refund_id, safe='')}")
    if as_json:
        click.echo(json.dumps(found, ensure_ascii=False, indent=2))
        return
    click.echo(f"refund {found['refund_id']}: {found['status']}, {found['attempts']} attempt(s), "
               f"{found['amount_fen'] / 100:.2f} yuan of {found['provider']} trade {found['trade_no']} "
               f"(order {found['order_no']}, {found['reason']}, asked by {found['requested_by']})")
    if found["last_error"]:
        click.echo(f"last error: {found['last_error']}")
    rows = [[e["at"], e["kind"], e["actor"], e["outcome"] or "", _clip(e["detail"], 60)] for e in found["events"]]
    click.echo(_table(["at", "kind", "actor", "outcome", "detail"], rows))


@refunds.command("execute")
@click.argument("refund_id")
@click.pass_context
def refunds_execute(ctx: click.Context, refund_id: str) -> None:
    """Send REFUND_ID (again) now: the worker sends it, or asks the provider about it, at its next pass."""
    found = _client(ctx).call("POST", f"/admin/api/v1/refunds/{urllib.parse.quote(refund_id, safe='')}/execute")
    click.echo(f"refund {found['refund_id']} queued ({found['status']}, {found['attempts']} attempt(s) so far)")


# -- operators -------------------------------------------------------------------------------------

OPERATOR_ROLES = ("reviewer", "operator", "admin")
_DURATION = re.compile(r"([0-9]{1,9})([smhd]?)")
_DURATION_UNITS_S = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}
_JSON_BODY = {"Content-Type": "application/json"}


def parse_duration(raw: str) -> int:
    """``30d``, ``12h``, ``90m``, ``3600s`` or ``3600`` as seconds."""
    match = _DURATION.fullmatch(raw.strip().lower())
    if match is None:
        raise CtlError(f"not a duration: {raw!r} (e.g. 30d, 12h, 90m or 3600s)")
    return int(match[1]) * _DURATION_UNITS_S[match[2]]


def _scope(provinces: list[str] | None) -> str:
    return "national" if provinces is None else ",".join(provinces)


def _operator_line(found: dict[str, Any]) -> str:
    state = " (disabled)" if found.get("disabled") else ""
    return f"operator {found['name']}: role {found['role']}, scope {_scope(found['provinces'])}{state}"


@ctl.group("operators")
def operators_group() -> None:
    """Operator accounts: roles, scopes and tokens (admins only)."""


@operators_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
@click.pass_context
def operators_list(ctx: click.Context, as_json: bool) -> None:
    """List the operators (and their tokens not revoked) within your scope."""
    found = _client(ctx).call("GET", "/admin/api/v1/operators")["operators"]
    if as_json:
        click.echo(json.dumps(found, ensure_ascii=False, indent=2))
        return
    rows = [[o["name"], o["role"], _scope(o["provinces"]), "disabled" if o["disabled"] else "enabled",
             o["source"], o["display_name"]] for o in found]
    click.echo(_table(["name", "role", "scope", "state", "source", "display name"], rows))
    tokens = [[t["id"], o["name"], t["label"], t["expires_at"], t["last_used_at"] or "-",
               "active" if t["active"] else "expired"] for o in found for t in o["tokens"]]
    if tokens:
        click.echo("")
        click.echo(_table(["token", "operator", "label", "expires", "last used", "state"], tokens))


@operators_group.command("add")
@click.argument("name")
@click.option("--role", type=click.Choice(OPERATOR_ROLES), required=True, help="What the operator may do.")
@click.option("--province", "provinces", multiple=True, metavar="CODE",
              help="A province it may see (11, 31, …); repeat for several. None: national.")
@click.option("--display-name", default="", help="A name for people, e.g. 张三（北京考试院）.")
@click.pass_context
def operators_add(ctx: click.Context, name: str, role: str, provinces: tuple[str, ...], display_name: str) -> None:
    """Add an operator NAME (no token yet: see ``operators token``)."""
    body = {"name": name, "role": role, "provinces": list(provinces) or None, "display_name": display_name}
    click.echo(_operator_line(_client(ctx).call("POST", "/admin/api/v1/operators", body, _JSON_BODY)) + " added")


def _change(ctx: click.Context, name: str, change: dict[str, Any]) -> None:
    found = _client(ctx).call("PATCH", f"/admin/api/v1/operators/{urllib.parse.quote(name, safe='')}", change)
    click.echo(_operator_line(found))


@operators_group.command("set")
@click.argument("name")
@click.option("--role", type=click.Choice(OPERATOR_ROLES), help="A new role.")
@click.option("--province", "provinces", multiple=True, metavar="CODE",
              help="The provinces it may see from now on; repeat for several.")
@click.option("--national", is_flag=True, help="Make its scope the whole country.")
@click.option("--display-name", help="A new name for people.")
@click.pass_context
def operators_set(ctx: click.Context, name: str, role: str | None, provinces: tuple[str, ...], national: bool,
                  display_name: str | None) -> None:
    """Change NAME's role, scope or display name."""
    if provinces and national:
        raise CtlError("give --province or --national, not both")
    change: dict[str, Any] = {"role": role, "display_name": display_name}
    change = {key: value for key, value in change.items() if value is not None}
    if provinces or national:
        change["provinces"] = list(provinces) or None
    if not change:
        raise CtlError("nothing to change: give --role, --province, --national or --display-name")
    _change(ctx, name, change)


@operators_group.command("disable")
@click.argument("name")
@click.pass_context
def operators_disable(ctx: click.Context, name: str) -> None:
    """Disable NAME: its tokens stop working (within the gateway's cache time)."""
    _change(ctx, name, {"disabled": True})


@operators_group.command("enable")
@click.argument("name")
@click.pass_context
def operators_enable(ctx: click.Context, name: str) -> None:
    """Enable NAME again: its tokens not revoked nor expired work again."""
    _change(ctx, name, {"disabled": False})


@operators_group.command("token")
@click.argument("name")
@click.option("--expires-in", help="Lifetime, e.g. 30d, 12h (default: the gateway's EXAMGATE_OPERATOR_TOKEN_DAYS).")
@click.option("--label", default="", help="What the token is for (shown in lists).")
@click.pass_context
def operators_token(ctx: click.Context, name: str, expires_in: str | None, label: str) -> None:
    """Issue a token to NAME: printed alone on stdout, this once (the gateway keeps only its digest)."""
    body: dict[str, Any] = {"label": label}
    if expires_in is not None:
        body["expires_in_s"] = parse_duration(expires_in)
    issued = _client(ctx).call("POST", f"/admin/api/v1/operators/{urllib.parse.quote(name, safe='')}/tokens",
                               body, _JSON_BODY)
    click.echo(f"token {issued['id']} for {issued['operator']}, expires {issued['expires_at']} "
               "(shown once; revoke with: examgate ctl operators revoke "
               f"{issued['operator']} {issued['id']})", err=True)
    click.echo(issued["token"])


@operators_group.command("revoke")
@click.argument("name")
@click.argument("token_id", type=click.IntRange(1))
@click.pass_context
def operators_revoke(ctx: click.Context, name: str, token_id: int) -> None:
    """Revoke NAME's token TOKEN_ID (it stops working within the gateway's cache time)."""
    revoked = _client(ctx).call("DELETE", f"/admin/api/v1/operators/{urllib.parse.quote(name, safe='')}"
                                          f"/tokens/{token_id}")
    click.echo(f"token {revoked['id']} of {name} revoked at {revoked['revoked_at']}")


@operators_group.command("audit")
@click.option("--name", help="Only this operator's changes.")
@click.option("--limit", type=click.IntRange(1, 500), default=20, show_default=True, help="How many changes.")
@click.pass_context
def operators_audit(ctx: click.Context, name: str | None, limit: int) -> None:
    """Who changed which operator or token, and when, newest first."""
    query = urllib.parse.urlencode({"limit": limit, **({"name": name} if name else {})})
    changes = _client(ctx).call("GET", f"/admin/api/v1/operator-audit?{query}")["changes"]
    rows = [[c["changed_at"], c["actor"], c["action"], c["operator"], c["token_id"] or "",
             _short(c["changes"], 60)] for c in changes]
    click.echo(_table(["changed_at", "actor", "action", "operator", "token", "changes"], rows))


# -- the lifecycle: integrity archive, cancellations -------------------------------------------------

ARCHIVE_FIELDS = ("id_number", "exam_family", "violation", "starts_on", "ends_on")


def read_archive_file(path: str) -> list[dict[str, str]]:
    """Records from a CSV (header ``id_number,exam_family,violation,starts_on,ends_on``) or a JSON list."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as handle:
            if path.lower().endswith(".json"):
                found = json.load(handle)
                records = found.get("records", found) if isinstance(found, dict) else found
                if not isinstance(records, list):
                    raise CtlError(f"{path}: expected a JSON list of records (or {{\"records\": [...]}})")
                return records
            reader = csv.DictReader(handle)
            header = set(reader.fieldnames or ())
            if not {"id_number", "violation", "starts_on", "ends_on"} <= header or not header <= set(ARCHIVE_FIELDS):
                raise CtlError(f"{path}: the header must be {','.join(ARCHIVE_FIELDS)} (exam_family optional)")
            return [{k: v for k, v in row.items() if v not in (None, "")} for row in reader]
    except OSError as exc:
        raise CtlError(f"cannot read {path}: {exc.strerror}") from None
    except (ValueError, csv.Error) as exc:
        raise CtlError(f"{path}: {exc}") from None


@ctl.group("archive")
def archive_group() -> None:
    """The integrity archive (诚信档案库): candidates recorded for a violation, within a period."""


@archive_group.command("import")
@click.argument("path", type=click.Path(dir_okay=False))
@click.pass_context
def archive_import(ctx: click.Context, path: str) -> None:
    """Import the records of PATH (CSV or JSON), all or none; a record already there is kept."""
    records = read_archive_file(path)
    if not records:
        raise CtlError(f"{path}: no records")
    csv_file = not path.lower().endswith(".json")
    try:
        found = _client(ctx).call("POST", "/admin/api/v1/integrity-records", {"records": records}, _JSON_BODY)
    except CtlError as exc:
        # records.<i>.<field> in the answer: the file's line (CSV: the header is line 1).
        message = re.sub(r"records\.([0-9]+)\.",
                         lambda m: f"line {int(m[1]) + 2}: " if csv_file else f"record {int(m[1]) + 1}: ",
                         exc.format_message())
        raise CtlError(message) from None
    click.echo(f"imported {found['imported']} record(s), {found['already_there']} already there")


@archive_group.command("list")
@click.option("--id-number", help="Only this person's records.")
@click.option("--json", "as_json", is_flag=True, help="Print the records as JSON.")
@click.pass_context
def archive_list(ctx: click.Context, id_number: str | None, as_json: bool) -> None:
    """Records by id, removed ones marked."""
    query = f"?id_number={urllib.parse.quote(id_number)}" if id_number else ""
    found = _client(ctx).call("GET", f"/admin/api/v1/integrity-records{query}")["records"]
    if as_json:
        click.echo(json.dumps(found, ensure_ascii=False, indent=2))
        return
    if not found:
        click.echo("(no records)")
        return
    rows = [[r["id"], r["id_number"], r["exam_family"], r["starts_on"], r["ends_on"], _clip(r["violation"], 30),
             "removed" if r["removed_at"] else ""] for r in found]
    click.echo(_table(["id", "id number", "family", "from", "until", "violation", ""], rows))


@archive_group.command("remove")
@click.argument("record_id", type=click.IntRange(1))
@click.pass_context
def archive_remove(ctx: click.Context, record_id: int) -> None:
    """Remove RECORD_ID from the archive (it stays, marked removed)."""
    _client(ctx).call("DELETE", f"/admin/api/v1/integrity-records/{record_id}")
    click.echo(f"record {record_id} removed")


@ctl.group("cancellations", invoke_without_command=True)
@click.option("--status", type=click.Choice(("pending", "approved", "refused")), default="pending",
              show_default=True)
@click.pass_context
def cancellations(ctx: click.Context, status: str) -> None:
    """Paid candidates' cancellation requests (放弃报名 after payment); approve one into a refund, or refuse it."""
    if ctx.invoked_subcommand is not None:
        return
    found = _client(ctx).call("GET", f"/admin/api/v1/cancellations?status={status}")["cancellations"]
    if not found:
        click.echo(f"(no {status} cancellation requests)")
        return
    rows = [[c["registration_id"], c["exam_id"], c["province"], c["requested_at"], c["decided_by"] or "",
             c["refund_id"] or ""] for c in found]
    click.echo(_table(["registration", "exam", "province", "requested", "decided by", "refund"], rows))


@cancellations.command("approve")
@click.argument("registration_id", type=click.IntRange(1))
@click.pass_context
def cancellations_approve(ctx: click.Context, registration_id: int) -> None:
    """Cancel REGISTRATION_ID and refund its payment through the provider."""
    found = _client(ctx).call("POST", f"/admin/api/v1/registrations/{registration_id}/cancellation",
                              {"decision": "approve"}, _JSON_BODY)
    click.echo(f"registration {registration_id} cancelled; refund {found['refund_id']} requested")


@cancellations.command("refuse")
@click.argument("registration_id", type=click.IntRange(1))
@click.option("--note", default="", help="Why, for the candidate's record.")
@click.pass_context
def cancellations_refuse(ctx: click.Context, registration_id: int, note: str) -> None:
    """Refuse REGISTRATION_ID's cancellation request; it stays paid."""
    _client(ctx).call("POST", f"/admin/api/v1/registrations/{registration_id}/cancellation",
                      {"decision": "refuse", "note": note}, _JSON_BODY)
    click.echo(f"registration {registration_id}: cancellation refused")


IMPORT_TIMEOUT_S = 900.0
IMPORT_TYPES = {".csv": "text/csv", ".ndjson": "application/x-ndjson", ".jsonl": "application/x-ndjson"}


def _import_progress(sent: int, total: int) -> None:
    click.echo(f"\rsent {sent / 2**20:,.1f} of {total / 2**20:,.1f} MiB ({sent * 100 // max(total, 1)} %)",
               err=True, nl=sent >= total)


@ctl.command("import")
@click.argument("kind")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--batch-id", help="The batch id (default: KIND-<first 16 hex digits of the file's sha256>).")
@click.option("--dry-run", is_flag=True, help="Validate only: report the bad rows, apply nothing.")
@click.pass_context
def import_file(ctx: click.Context, kind: str, file: Path, batch_id: str | None, dry_run: bool) -> None:
    """Import FILE (.csv with a header row, .ndjson or .jsonl) as one batch of KIND (scores, pass_marks, …)."""
    from examgate.upload import post_file

    content_type = IMPORT_TYPES.get(file.suffix.lower())
    if content_type is None:
        raise CtlError(f"{file.name}: the file must end in " + ", ".join(IMPORT_TYPES))
    data = file.read_bytes()
    batch_id = batch_id or f"{kind}-{hashlib.sha256(data).hexdigest()[:16]}"
    client = _client(ctx)
    path = f"/admin/api/v1/imports/{urllib.parse.quote(kind, safe='')}" + ("?dry_run=true" if dry_run else "")
    try:
        answer = post_file(client.url, client.token, path, data,
                           {"Content-Type": content_type, "Idempotency-Key": batch_id},
                           timeout_s=IMPORT_TIMEOUT_S, progress=_import_progress)
    except ValueError as exc:
        raise CtlError(str(exc)) from None
    except OSError as exc:
        raise CtlError(f"cannot reach the gateway at {client.url}: {exc}") from None
    body = answer.body
    if answer.status == 200 and isinstance(body, dict):
        if body.get("dry_run"):
            state = "already applied before" if body["already_applied"] else "valid, nothing applied (dry run)"
        elif body["already_applied"]:
            state = f"already applied before ({body['applied']} rows changed then); nothing changed now"
        else:
            state = f"applied: {body['applied']} rows changed"
        click.echo(f"batch {body['batch_id']} ({body['kind']}): {body['rows']} rows, {state}, "
                   f"{body['seconds']:.1f} s")
        return
    error = body.get("error") if isinstance(body, dict) else None
    if not isinstance(error, dict):
        raise CtlError(f"http_{answer.status}: the gateway answered something other than its JSON error")
    lines = [f"{error.get('code')}: {error.get('message')}"]
    details = error.get("details") or {}
    lines += [f"  line {row['line']}: {row['reason']}" for row in details.get("rows", [])]
    if details.get("more"):
        lines.append(f"  … and {details['more']} more rows")
    lines += [f"  {name}: {problem}" for name, problem in (details.get("fields") or {}).items()]
    if answer.status == 409:
        lines.append(f"  batch id {batch_id} was used for another file; pass --batch-id to choose another")
    raise CtlError("\n".join(lines))
