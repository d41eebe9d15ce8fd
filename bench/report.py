"""The record a bench writes: what ran, when, on which machine, and its figures, as JSON."""

from __future__ import annotations

import json
import sys
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from run import machine, relative


def write_report(path: Path, benchmark: str, argv: list[str] | None, fields: dict[str, Any]) -> None:
    """bench/results/<...>.json: the benchmark's name, date, command line and machine first."""
    script = Path(sys.argv[0]).name
    report = {"benchmark": benchmark, "date": datetime.now(UTC).isoformat(timespec="seconds"),
              "command": f"python bench/{script} " + " ".join(sys.argv[1:] if argv is None else argv),
              "machine": machine(), **fields}
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n")
    print(f"wrote {relative(path)}")
