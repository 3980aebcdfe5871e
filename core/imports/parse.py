"""Reading an import file: CSV with a header row, or NDJSON (one JSON object a line).

The reader yields records ``(line, value, …)`` in the kind's column order, every value text (or
None for an absent optional value): the types are checked later in SQL, all rows at once. What
cannot be staged — a wrong column count, bytes that are not UTF-8, a line that is not a JSON
object, an unknown or missing key — is reported here with the line it starts on.
"""

from __future__ import annotations

import csv
import io
from collections.abc import Sequence
from dataclasses import dataclass

import orjson

from core.errors import CoreError
from core.imports.base import Column, ImportRejected

__all__ = ["CONTENT_TYPES", "FormatNotAccepted", "Parsed", "UnsupportedContentType", "media_type", "parse"]

CSV = "text/csv"
NDJSON = "application/x-ndjson"
CONTENT_TYPES = (CSV, NDJSON)

Record = tuple[object, ...]


class UnsupportedContentType(CoreError):
    """The file is neither CSV nor NDJSON."""

    def __init__(self, content_type: str) -> None:
        super().__init__(f"unsupported content type {content_type!r}")
        self.content_type = content_type


class FormatNotAccepted(UnsupportedContentType):
    """The kind takes other content types than this one (``accepted``)."""

    def __init__(self, content_type: str, kind: str, accepted: Sequence[str]) -> None:
        super().__init__(content_type)
        self.kind = kind
        self.accepted = tuple(accepted)


@dataclass
class Parsed:
    """The records to stage and the rows refused while reading."""

    records: list[Record]
    errors: list[tuple[int, str]]


def media_type(content_type: str) -> str:
    """``text/csv; charset=utf-8`` → ``text/csv``; raises UnsupportedContentType for anything else."""
    base = content_type.split(";", 1)[0].strip().lower()
    if base in ("application/jsonl", "application/x-jsonlines", "application/jsonlines"):
        base = NDJSON
    if base not in CONTENT_TYPES:
        raise UnsupportedContentType(content_type)
    return base


def parse(data: bytes, content_type: str, columns: Sequence[Column]) -> Parsed:
    """Read ``data`` as the given content type for these columns."""
    text, mangled = _decode(data)
    if media_type(content_type) == CSV:
        return _parse_csv(text, mangled, columns)
    return _parse_ndjson(text, mangled, columns)


def _decode(data: bytes) -> tuple[str, bool]:
    """The text and whether some bytes were not UTF-8 (kept as surrogates, found per row)."""
    if data.startswith(b"\xef\xbb\xbf"):  # a spreadsheet's byte-order mark
        data = data[3:]
    try:
        return data.decode("utf-8"), False
    except UnicodeDecodeError:
        return data.decode("utf-8", "surrogateescape"), True


_NOT_UTF8 = "含有非 UTF-8 编码的字节（文件须为 UTF-8 编码）"
_NUL = "含有不允许的空字符（NUL）"


def _bad_text(values: Sequence[str], mangled: bool, nul: bool) -> str | None:
    if mangled:
        for v in values:
            try:
                v.encode("utf-8")
            except UnicodeEncodeError:
                return _NOT_UTF8
    if nul and any("\x00" in v for v in values):
        return _NUL
    return None


def _parse_csv(text: str, mangled: bool, columns: Sequence[Column]) -> Parsed:
    names = [c.name for c in columns]
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    try:
        header = next(reader, None)
    except csv.Error as exc:
        raise ImportRejected([(1, f"表头无法解析：{exc}")]) from exc
    if not header:
        raise ImportRejected([(1, "文件为空或缺少表头行（应为：" + ",".join(names) + "）")])
    header = [h.strip() for h in header]
    problems = []
    unknown = [h for h in header if h not in names]
    missing = [n for n in names if n not in header]
    twice = sorted({h for h in header if header.count(h) > 1})
    if unknown:
        problems.append("未知的列 " + "、".join(unknown))
    if missing:
        problems.append("缺少列 " + "、".join(missing))
    if twice:
        problems.append("重复的列 " + "、".join(twice))
    if problems:
        raise ImportRejected([(1, "表头有误：" + "；".join(problems) + "（应为：" + ",".join(names) + "）")])
    order = [header.index(n) for n in names]
    in_order = order == list(range(len(names)))
    width = len(names)
    nul = "\x00" in text
    check_text = mangled or nul
    nested = [(header.index(c.name), c.name) for c in columns if c.type == "json"]
    records: list[Record] = []
    errors: list[tuple[int, str]] = []
    line = reader.line_num + 1
    while True:
        try:
            row = next(reader, None)
        except csv.Error as exc:
            errors.append((line, f"CSV 格式错误：{exc}"))
            line = reader.line_num + 1
            continue
        if row is None:
            break
        if not row:  # a blank line
            line = reader.line_num + 1
            continue
        if len(row) != width:
            errors.append((line, f"应有 {width} 列，实有 {len(row)} 列"))
        elif check_text and (bad := _bad_text(row, mangled, nul)) is not None:
            errors.append((line, bad))
        elif nested and (bad := _bad_json(row, nested)) is not None:
            errors.append((line, bad))
        elif in_order:
            records.append((line, *row))
        else:
            records.append((line, *[row[i] for i in order]))
        line = reader.line_num + 1
    return Parsed(records, errors)


def _bad_json(row: Sequence[str], nested: Sequence[tuple[int, str]]) -> str | None:
    for i, name in nested:
        if row[i]:
            try:
                orjson.loads(row[i])
            except orjson.JSONDecodeError:
                return f"字段 {name} 不是有效的 JSON"
    return None


def _parse_ndjson(text: str, mangled: bool, columns: Sequence[Column]) -> Parsed:
    names = [c.name for c in columns]
    known = frozenset(names)
    numeric = {c.name for c in columns if c.type in ("int", "score")}
    nested = {c.name for c in columns if c.type == "json"}
    nul = "\x00" in text
    records: list[Record] = []
    errors: list[tuple[int, str]] = []
    for line, raw in enumerate(text.split("\n"), start=1):
        raw = raw.strip()
        if not raw:
            continue
        if mangled and (bad := _bad_text((raw,), True, False)) is not None:
            errors.append((line, bad))
            continue
        try:
            obj = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            errors.append((line, f"不是有效的 JSON：{exc}"))
            continue
        if not isinstance(obj, dict):
            errors.append((line, "每行应为一个 JSON 对象"))
            continue
        if obj.keys() != known:
            problems = []
            if unknown := [k for k in obj if k not in known]:
                problems.append("未知字段 " + "、".join(unknown))
            if missing := [n for n in names if n not in obj]:
                problems.append("缺少字段 " + "、".join(missing))
            errors.append((line, "；".join(problems)))
            continue
        values: list[object] = [line]
        wrong: str | None = None
        for name in names:
            v = obj[name]
            if name in nested:
                dumped = None if v is None else orjson.dumps(v).decode()
                if dumped is not None and "\\u0000" in dumped:  # jsonb takes no NUL
                    wrong = f"字段 {name} {_NUL}"
                    break
                values.append(dumped)
            elif v is None or isinstance(v, str):
                if isinstance(v, str) and name in numeric:
                    wrong = f"字段 {name} 应为数字，而不是字符串"
                    break
                values.append(v)
            elif isinstance(v, bool) or not isinstance(v, int | float):
                wrong = f"字段 {name} 的类型有误（{_json_type(v)}）"
                break
            elif name not in numeric:
                wrong = f"字段 {name} 应为字符串，而不是数字"
                break
            else:
                values.append(str(v) if isinstance(v, int) else repr(v))
        if wrong is not None:
            errors.append((line, wrong))
        elif nul and any(isinstance(v, str) and "\x00" in v for v in values):
            errors.append((line, _NUL))
        else:
            records.append(tuple(values))
    return Parsed(records, errors)


def _json_type(v: object) -> str:
    if isinstance(v, bool):
        return "布尔值"
    if isinstance(v, list):
        return "数组"
    if isinstance(v, dict):
        return "对象"
    return type(v).__name__
