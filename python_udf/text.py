"""The text rule, in Python, for runs outside dbt.

Inside dbt the model ``stg_posts`` applies this rule in SQL; both versions are
tested on the same cases. The rule:

* control characters are removed, except newline and tab (``\\r`` goes too,
  so CRLF text gives the same features as LF text; NUL bytes go, which
  Postgres cannot store);
* outer whitespace is trimmed;
* a NULL text becomes the empty string, so it is embedded as an empty post
  (the tokenizer sees only its special tokens) and never as ``NaN`` or
  ``"nan"``. Every empty post therefore gets the same vector and cluster.
"""

from __future__ import annotations

import hashlib
import re

_CONTROL = re.compile(r"[\x00-\x08\x0b\x0c\x0d\x0e-\x1f\x7f]")
_OUTER_SPACE = re.compile(r"^[\t\n\f\r ]+|[\t\n\f\r ]+$")


def clean_text(text: object) -> str:
    """Apply the storage rule above to one text (``None`` and NaN give ``""``)."""
    if text is None or (isinstance(text, float) and text != text):
        return ""
    if not isinstance(text, str):
        raise TypeError(f"text must be str or None, got {type(text).__name__}")
    return _OUTER_SPACE.sub("", _CONTROL.sub("", text))


def text_hash(text: str) -> str:
    """MD5 of the UTF-8 text, hex; the same value as DuckDB's ``md5(text)``."""
    return hashlib.md5(text.encode("utf-8")).hexdigest()
