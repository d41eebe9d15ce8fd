"""Reading the daemon's TOML file: every key checked, errors that name it; the effective
configuration as TOML (`ssum edge check-config`) and the key tables of docs/configuration.md.

Unknown sections or keys, wrong types and out-of-range values raise UserError naming the key,
e.g. ``edge.toml: [batching] max_batch must be a positive integer, got -1``.
"""

from __future__ import annotations

import tomllib
from dataclasses import Field, fields
from pathlib import Path
from typing import Any

from edge.errors import UserError
from edge.serve.config import EdgeConfig, sections


def _build_section(where: str, section: str, values: Any) -> Any:
    if not isinstance(values, dict):
        raise UserError(f"{where}: [{section}] must be a table")
    keys = {f.name: f for f in fields(sections()[section])}
    normalised = {}
    for name, value in values.items():
        if name not in keys:
            raise UserError(f"{where}: [{section}] has no key {name!r} (known: {', '.join(keys)})")
        meta = keys[name].metadata
        problem = meta["check"](value)
        if problem:
            raise UserError(f"{where}: [{section}] {name} {problem}, got {value!r}")
        normalised[name] = meta["normalise"](value) if meta["normalise"] else value
    return sections()[section](**normalised)


def _merge_overrides(data: dict[str, Any], overrides: dict[str, Any] | None) -> dict[str, Any]:
    """Overrides as {"section.key": value} or {"section": {"key": value}}; None values skipped."""
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in data.items()}
    for name, value in (overrides or {}).items():
        if isinstance(value, dict):
            items = [(name, k, v) for k, v in value.items()]
        else:
            section, _, key = name.partition(".")
            items = [(section, key, value)]
        for section, key, val in items:
            if val is None:
                continue
            target = merged.setdefault(section, {})
            if isinstance(target, dict):
                target[key] = val
    return merged


def _cross_checks(where: str, config: EdgeConfig) -> None:
    tiling = config.tiling
    if tiling.patch_size and tiling.overlap * 2 >= tiling.patch_size:
        raise UserError(
            f"{where}: [tiling] overlap must be less than half of patch_size "
            f"({tiling.patch_size}), got {tiling.overlap}"
        )
    model = config.model
    if model.repository and (model.bundle or not model.name):
        raise UserError(f"{where}: [model] repository needs name, and excludes bundle")
    if config.mosaic.enabled and not config.mosaic.directory:
        raise UserError(f"{where}: [mosaic] directory must be set when enabled = true")
    inspection = config.inspection
    if inspection.enabled and not inspection.directory:
        raise UserError(f"{where}: [inspection] directory must be set when enabled = true")
    if inspection.enabled and inspection.mode != "cell" and not inspection.reference:
        raise UserError(f'{where}: [inspection] reference must be set for mode "{inspection.mode}"')
    if inspection.enabled and inspection.confirm and inspection.mode == "golden" \
            and not inspection.optical_reference:
        raise UserError(f"{where}: [inspection] optical_reference must be set for confirm = true "
                        'in mode "golden"')
    sec = config.security
    if sec.curve:
        if not config.output.bind:
            raise UserError(f'{where}: [output] mode must be "bind" when [security] curve = true')
        needs = ["server_secret_key", "authorized_clients"]
        if not config.input.bind:
            needs += ["client_secret_key", "rig_public_key"]
        for key in needs:
            if not getattr(sec, key):
                raise UserError(f"{where}: [security] {key} must be set when curve = true")


def build_config(data: dict[str, Any], where: str = "config",
                 overrides: dict[str, Any] | None = None) -> EdgeConfig:
    """An EdgeConfig from parsed TOML (a dict) plus overrides; raises UserError naming the key."""
    merged = _merge_overrides(data, overrides)
    known = sections()
    built = {}
    for name, values in merged.items():
        if name not in known:
            raise UserError(f"{where}: unknown section [{name}] (known: {', '.join(known)})")
        built[name] = _build_section(where, name, values)
    config = EdgeConfig(**built, source=where)
    _cross_checks(where, config)
    return config


def load_config(path: str | Path | None, overrides: dict[str, Any] | None = None) -> EdgeConfig:
    """Read and validate the daemon's TOML file (None: defaults only) and apply overrides."""
    if path is None:
        return build_config({}, "defaults", overrides)
    path = Path(path)
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError as exc:
        raise UserError(f"{path}: configuration file not found") from exc
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"{path}: cannot read the configuration ({exc})") from exc
    except tomllib.TOMLDecodeError as exc:
        raise UserError(f"{path.name}: invalid TOML ({exc})") from exc
    return build_config(data, path.name, overrides)


def to_toml(config: EdgeConfig) -> str:
    """The effective configuration as TOML text (what `ssum edge check-config` prints)."""
    lines = []
    for section, values in config.to_dict().items():
        lines.append(f"[{section}]")
        for key, value in values.items():
            lines.append(f"{key} = {toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list | tuple):
        return "[" + ", ".join(toml_value(v) for v in value) + "]"
    return repr(value)


def reference_table(section: str) -> str:
    """The markdown table of a section's keys, as docs/configuration.md shows it."""
    rows = ["| key | default | meaning |", "|---|---|---|"]
    for key in fields(sections()[section]):
        rows.append(f"| `{key.name}` | {_shown_default(key)} | {_meaning(key)} |")
    return "\n".join(rows) + "\n"


def _shown_default(key: Field[Any]) -> str:
    return str(key.metadata["shown"] or f"`{toml_value(key.default)}`")


def _meaning(key: Field[Any]) -> str:
    choices = [f'`"{c}"`' for c in key.metadata["choices"]]
    listed = ""
    if choices:
        listed = (", ".join(choices[:-1]) + " or " + choices[-1]) if len(choices) > 1 else choices[0]
        listed += "."
    return " ".join(part for part in (listed, key.metadata["doc"]) if part)
