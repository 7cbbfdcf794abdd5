"""The text rule: python_udf.text.clean_text and its SQL twin, macros/clean_post_text.sql.

The SQL side is the macro itself, rendered with Jinja from the file, so the
two versions cannot drift apart without this test noticing.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import duckdb
import jinja2
import pandas as pd
import pytest

from python_udf.text import clean_text, text_hash

MACRO_FILE = Path(__file__).resolve().parents[2] / "macros" / "clean_post_text.sql"

# (raw text, expected after the rule), expected values worked out from the rule
CASES = [
    ("a\x00b", "ab"),  # NUL removed
    ("x\x01\x02\x03\x04\x05\x06\x07\x08\x0b\x0c\x0e\x0f\x10\x1a\x1b\x1f\x7fy", "xy"),  # other controls
    ("keep\ttabs\nand\nnewlines", "keep\ttabs\nand\nnewlines"),  # \t and \n kept inside
    ("line one\r\nline two\r\n", "line one\nline two"),  # \r removed, then the final \n trimmed
    ("  \t padded on both sides \n ", "padded on both sides"),  # outer whitespace trimmed
    ("\x00 \x00text\x00 \x00", "text"),  # controls go first, then the space they hid is trimmed
    ("inner   spaces\t\tstay", "inner   spaces\t\tstay"),
    ("£5 café naïve — ok", "£5 café naïve — ok"),  # non-ASCII untouched
    ("\r\n\t \x0c", ""),  # only whitespace and controls
    ("", ""),
]

# Extra inputs where only agreement between Python and SQL is asserted
TWIN_ONLY = [
    "\u0085 next line (C1 control)",
    "\u00a0no-break spaces\u00a0",
    "line\u2028separator",
    "trailing newline\n",
    "\nleading newline",
    "a\x0bb\x0cc",
    "\t\n",
    " \x7f ",
    "tab\t\n\r\n  ",
    "emoji 😀 and quotes ' \" \\x00",
]


def test_clean_text_applies_the_rule():
    for raw, expected in CASES:
        assert clean_text(raw) == expected, repr(raw)


@pytest.mark.parametrize("missing", [None, float("nan")])
def test_clean_text_maps_null_to_empty_string(missing):
    assert clean_text(missing) == ""


def test_clean_text_refuses_other_types():
    with pytest.raises(TypeError):
        clean_text(42)


def test_clean_text_is_idempotent():
    for raw, _ in CASES:
        assert clean_text(clean_text(raw)) == clean_text(raw)


def render_macro(column: str) -> str:
    """The SQL expression ``clean_post_text(column)`` renders to, read from the macro file."""
    source = MACRO_FILE.read_text(encoding="utf-8")
    assert "macro clean_post_text(" in source
    rendered = jinja2.Environment().from_string(source + "{{ clean_post_text('%s') }}" % column).render()
    return rendered.strip()


def sql_clean(texts: list[str | None]) -> list[str]:
    frame = pd.DataFrame({"i": range(len(texts)), "t": pd.Series(texts, dtype=object)})
    con = duckdb.connect()
    try:
        con.register("cases", frame)
        rows = con.execute(f"select i, {render_macro('t')} from cases order by i").fetchall()
    finally:
        con.close()
    return [value for _, value in rows]


def test_rendered_macro_uses_the_two_regexes():
    expression = render_macro("t")
    assert expression.count("regexp_replace(") == 2 and "coalesce(" in expression
    assert "cast(t as varchar)" in expression


def test_sql_macro_gives_the_expected_results():
    raws = [raw for raw, _ in CASES] + [None]
    expected = [want for _, want in CASES] + [""]
    assert sql_clean(raws) == expected


def test_sql_macro_and_python_agree_on_tricky_inputs():
    raws = [raw for raw, _ in CASES] + TWIN_ONLY
    assert sql_clean(raws) == [clean_text(t) for t in raws]


def test_sql_macro_and_python_agree_on_the_bundled_corpus(bundled_posts):
    texts = bundled_posts["text"].tolist()
    assert sql_clean(texts) == [clean_text(t) for t in texts]


# ---------------------------------------------------------------- text_hash


def test_text_hash_is_md5_of_utf8():
    # RFC 1321 test vectors
    assert text_hash("") == "d41d8cd98f00b204e9800998ecf8427e"
    assert text_hash("abc") == "900150983cd24fb0d6963f7d28e17f72"
    # the pound sign is U+00A3, two bytes in UTF-8 (C2 A3), not one as in Latin-1
    assert text_hash("£") == hashlib.md5(b"\xc2\xa3").hexdigest()
    assert text_hash("£") != hashlib.md5(b"\xa3").hexdigest()


def test_text_hash_equals_duckdb_md5():
    texts = [clean_text(raw) for raw, _ in CASES] + ["£5 million", "a\nb\tc", "emoji 😀"]
    con = duckdb.connect()
    try:
        for text in texts:
            assert con.execute("select md5(?)", [text]).fetchone()[0] == text_hash(text), repr(text)
    finally:
        con.close()


def test_text_hash_equals_duckdb_md5_on_the_bundled_corpus(bundled_posts):
    texts = [clean_text(t) for t in bundled_posts["text"]]
    assert sum("£" in t for t in texts) > 100  # the corpus does exercise the pound sign
    frame = pd.DataFrame({"i": range(len(texts)), "t": pd.Series(texts, dtype=object)})
    con = duckdb.connect()
    try:
        con.register("posts", frame)
        sql_hashes = [h for _, h in con.execute("select i, md5(t) from posts order by i").fetchall()]
    finally:
        con.close()
    assert sql_hashes == [text_hash(t) for t in texts]
