"""Rewrite the key tables of docs/configuration.md from the daemon's configuration fields.

    .venv/bin/python tools/config_docs.py     # after adding or changing a key

tests/test_config.py fails while the file and the fields disagree.
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

from edge.serve.config import sections
from edge.serve.config_file import reference_table

DOC = Path(__file__).resolve().parents[1] / "docs" / "configuration.md"
TABLE = re.compile(r"(\| key \| default \| meaning \|\n(?:\|.*\|\n)+)")


def rewrite(text: str) -> str:
    for section in sections():
        header = text.index(f"## `[{section}]`")
        match = TABLE.search(text, header)
        if match is None:
            raise SystemExit(f"{DOC}: no key table after the [{section}] header")
        text = text[: match.start()] + reference_table(section) + text[match.end():]
    return text


if __name__ == "__main__":
    DOC.write_text(rewrite(DOC.read_text()))
    sys.exit(0)
