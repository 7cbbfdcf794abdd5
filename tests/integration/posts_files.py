"""Helpers shared by the integration tests: writing post files, the text rule.

The text rule of stg_posts (models/staging/_stg_models.yml) is written out
here independently of the project's regexes: control characters other than
newline and tab go, outer whitespace is trimmed, NULL becomes ''.
"""

from __future__ import annotations

import csv
from pathlib import Path

# Control characters the text rule removes: everything below 0x20 except \t and \n, plus DEL.
REMOVED_CONTROL = {chr(c) for c in range(0x20) if chr(c) not in "\t\n"} | {"\x7f"}


def write_posts_csv(path: Path, rows: list[tuple]) -> None:
    """post_id,text,topic; None is written as an empty unquoted field (NULL)."""
    with open(path, "w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle, lineterminator="\n")
        writer.writerow(["post_id", "text", "topic"])
        for post_id, text, topic in rows:
            writer.writerow([str(post_id), text, topic])


def untouched_by_text_rule(text: str) -> bool:
    """Text the rule leaves as it is: no removed control character, no outer whitespace."""
    return text == text.strip() and not set(text) & REMOVED_CONTROL
