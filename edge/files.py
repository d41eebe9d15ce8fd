"""Reading the project's JSON files (bundle manifests, scan manifests) with one-line errors."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from edge.errors import UserError


def read_json(path: Path, what: str) -> Any:
    """The parsed JSON of `path`; a missing or unparsable file is a UserError naming `what`."""
    if not path.is_file():
        raise UserError(f"{path}: no such file (not {what})")
    try:
        return json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: invalid JSON ({exc})") from exc
