"""Reading import files without a database: line numbers, headers, encodings and JSON types."""

from __future__ import annotations

import pytest

from core.imports import ImportRejected
from core.imports.base import Column
from core.imports.parse import parse

pytestmark = pytest.mark.unit

COLUMNS = (Column("a", "甲"), Column("b", "乙"), Column("n", "数", type="score"))


def test_records_carry_the_line_they_start_on() -> None:
    data = b'a,b,n\n\nx,"two\nlines",1\ny,z,2\r\n'
    parsed = parse(data, "text/csv", COLUMNS)
    assert parsed.records == [(3, "x", "two\nlines", "1"), (5, "y", "z", "2")]
    assert parsed.errors == []


def test_bad_bytes_and_wrong_widths_are_reported_per_line() -> None:
    data = b"n,b,a\n1,x,y\n1,\xff,y\n1,2\n3,\x00,z\n"
    parsed = parse(data, "text/csv", COLUMNS)
    assert parsed.records == [(2, "y", "x", "1")]
    assert [line for line, _ in parsed.errors] == [3, 4, 5]
    assert "UTF-8" in parsed.errors[0][1] and "实有 2 列" in parsed.errors[1][1] and "NUL" in parsed.errors[2][1]


def test_a_wrong_header_is_one_error_on_line_one() -> None:
    with pytest.raises(ImportRejected) as caught:
        parse(b"a,a,c\n", "text/csv", COLUMNS)
    [(line, reason)] = caught.value.rows
    assert line == 1 and "未知的列 c" in reason and "缺少列 b、n" in reason and "重复的列 a" in reason


def test_ndjson_numbers_strings_and_nulls() -> None:
    data = b'{"a": "x", "b": null, "n": 85.5}\n{"a": "x", "b": "y", "n": 7}\n{"a": 1, "b": "y", "n": 7}\n'
    parsed = parse(data, "application/x-ndjson", COLUMNS)
    assert parsed.records == [(1, "x", None, "85.5"), (2, "x", "y", "7")]
    assert parsed.errors == [(3, "字段 a 应为字符串，而不是数字")]
