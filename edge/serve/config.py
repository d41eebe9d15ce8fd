"""The daemon's configuration: one TOML file, a frozen dataclass per section, every key checked.

Unknown sections or keys, wrong types and out-of-range values raise UserError naming the key,
e.g. ``edge.toml: [batching] max_batch must be a positive integer, got -1``. Every key is
documented in docs/configuration.md and deploy/edge.example.toml.
"""

from __future__ import annotations

import dataclasses
import math
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from edge.errors import UserError
from edge.inference.converter import ConverterSettings
from edge.transport import CurveOptions

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")


@dataclass(frozen=True)
class InputConfig:
    socket: str = "sub"
    endpoint: str = "tcp://127.0.0.1:5555"
    mode: str = ""  # "" = connect for sub, bind for pull
    topics: tuple[str, ...] = ("tile/",)
    hwm: int = 1000

    def __post_init__(self) -> None:
        if not self.mode:
            object.__setattr__(self, "mode", "connect" if self.socket == "sub" else "bind")

    @property
    def bind(self) -> bool:
        return self.mode == "bind"


@dataclass(frozen=True)
class OutputConfig:
    socket: str = "pub"
    endpoint: str = "tcp://127.0.0.1:5556"
    mode: str = "bind"
    hwm: int = 1000

    @property
    def bind(self) -> bool:
        return self.mode == "bind"


@dataclass(frozen=True)
class ModelConfig:
    bundle: str = ""
    backend: str = "onnxruntime"
    precision: str = "fp32"
    device: str = ""
    threads: int = 0


@dataclass(frozen=True)
class TilingConfig:
    window: str = "hann"
    patch_size: int = 0
    overlap: int = 0


@dataclass(frozen=True)
class BatchingConfig:
    max_batch: int = 8
    max_delay_ms: float = 5.0


@dataclass(frozen=True)
class QueuesConfig:
    capacity: int = 64
    overload: str = "auto"


@dataclass(frozen=True)
class LimitsConfig:
    max_width: int = 8192
    max_height: int = 8192
    max_bytes: int = 256 * 2**20


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = True
    host: str = "127.0.0.1"
    port: int = 9108


@dataclass(frozen=True)
class MosaicConfig:
    enabled: bool = False
    directory: str = ""
    refine: bool = False


@dataclass(frozen=True)
class SecurityConfig:
    curve: bool = False
    server_secret_key: str = ""
    authorized_clients: str = ""
    client_secret_key: str = ""
    rig_public_key: str = ""

    def curve_options(self, bind: bool) -> CurveOptions | None:
        """The keys of a daemon socket: a bound one serves, a connecting one dials the rig."""
        if not self.curve:
            return None
        if bind:
            return CurveOptions(Path(self.server_secret_key), Path(self.authorized_clients))
        return CurveOptions(Path(self.client_secret_key),
                            server_key=Path(self.rig_public_key) if self.rig_public_key else None)


@dataclass(frozen=True)
class LogConfig:
    level: str = "INFO"


@dataclass(frozen=True)
class EdgeConfig:
    input: InputConfig = field(default_factory=InputConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    tiling: TilingConfig = field(default_factory=TilingConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    queues: QueuesConfig = field(default_factory=QueuesConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    mosaic: MosaicConfig = field(default_factory=MosaicConfig)
    security: SecurityConfig = field(default_factory=SecurityConfig)
    log: LogConfig = field(default_factory=LogConfig)
    source: str = "defaults"

    @property
    def overload_policy(self) -> str:
        """"block" or "drop-oldest"; auto = block for PULL input, drop-oldest for SUB."""
        if self.queues.overload != "auto":
            return self.queues.overload
        return "block" if self.input.socket == "pull" else "drop-oldest"

    def converter_settings(self) -> ConverterSettings:
        """How [model], [tiling] and [batching] ask the bundle to be served."""
        model, tiling = self.model, self.tiling
        return ConverterSettings(backend=model.backend, precision=model.precision,
                                 device=model.device, threads=model.threads,
                                 max_batch=self.batching.max_batch, window=tiling.window,
                                 patch_size=tiling.patch_size, overlap=tiling.overlap)

    def to_dict(self) -> dict[str, dict[str, Any]]:
        out = {}
        for section in fields(self):
            if section.name == "source":
                continue
            values = dataclasses.asdict(getattr(self, section.name))
            out[section.name] = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
        return out


DEFAULTS = EdgeConfig()


# A check returns an error phrase ("must be ...") or None when the value is fine.
Check = Callable[[Any], str | None]


def _one_of(*choices: str) -> Check:
    return lambda v: None if v in choices else "must be one of " + ", ".join(
        f'"{c}"' for c in choices
    )


def _string(v: Any) -> str | None:
    return None if isinstance(v, str) else "must be a string"


def _nonempty(v: Any) -> str | None:
    return None if isinstance(v, str) and v.strip() else "must be a non-empty string"


def _endpoint(v: Any) -> str | None:
    ok = isinstance(v, str) and "://" in v and v.split("://", 1)[1]
    return None if ok else 'must be a ZeroMQ endpoint such as "tcp://127.0.0.1:5555"'


def _is_int(v: Any) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def _positive_int(v: Any) -> str | None:
    return None if _is_int(v) and v > 0 else "must be a positive integer"


def _nonneg_int(v: Any) -> str | None:
    return None if _is_int(v) and v >= 0 else "must be an integer >= 0"


def _port(v: Any) -> str | None:
    return None if _is_int(v) and 0 <= v <= 65535 else "must be a port number 0-65535"


def _nonneg_number(v: Any) -> str | None:
    ok = (_is_int(v) or isinstance(v, float)) and math.isfinite(v) and v >= 0
    return None if ok else "must be a number >= 0"


def _boolean(v: Any) -> str | None:
    return None if isinstance(v, bool) else "must be true or false"


def _topics(v: Any) -> str | None:
    ok = isinstance(v, list | tuple) and v and all(isinstance(t, str) for t in v)
    return None if ok else 'must be a non-empty list of strings, e.g. ["tile/"]'


def _log_level(v: Any) -> str | None:
    return None if isinstance(v, str) and v.upper() in LOG_LEVELS else _one_of(*LOG_LEVELS)(v)


CHECKS: dict[str, dict[str, Check]] = {
    "input": {
        "socket": _one_of("sub", "pull"), "endpoint": _endpoint,
        "mode": _one_of("connect", "bind"), "topics": _topics, "hwm": _nonneg_int,
    },
    "output": {
        "socket": _one_of("pub", "push"), "endpoint": _endpoint,
        "mode": _one_of("connect", "bind"), "hwm": _nonneg_int,
    },
    "model": {
        "bundle": _string, "backend": _one_of("onnxruntime", "torch", "tensorrt"),
        "precision": _one_of("fp32", "fp16", "int8"), "device": _string, "threads": _nonneg_int,
    },
    "tiling": {
        "window": _one_of("hann", "gaussian", "linear", "constant", "crop"),
        "patch_size": _nonneg_int, "overlap": _nonneg_int,
    },
    "batching": {"max_batch": _positive_int, "max_delay_ms": _nonneg_number},
    "queues": {"capacity": _positive_int, "overload": _one_of("auto", "block", "drop-oldest")},
    "limits": {"max_width": _positive_int, "max_height": _positive_int, "max_bytes": _positive_int},
    "metrics": {"enabled": _boolean, "host": _nonempty, "port": _port},
    "mosaic": {"enabled": _boolean, "directory": _string, "refine": _boolean},
    "security": {
        "curve": _boolean, "server_secret_key": _string, "authorized_clients": _string,
        "client_secret_key": _string, "rig_public_key": _string,
    },
    "log": {"level": _log_level},
}
SECTION_TYPES: dict[str, type] = {f.name: f.default_factory for f in fields(EdgeConfig)  # type: ignore[misc]
                                  if f.name != "source"}


def _normalise(section: str, key: str, value: Any) -> Any:
    if key == "topics":
        return tuple(value)
    if key == "max_delay_ms":
        return float(value)
    if section == "log" and key == "level":
        return value.upper()
    return value


def _build_section(where: str, section: str, values: Any) -> Any:
    if not isinstance(values, dict):
        raise UserError(f"{where}: [{section}] must be a table")
    checks = CHECKS[section]
    for key, value in values.items():
        if key not in checks:
            raise UserError(
                f"{where}: [{section}] has no key {key!r} (known: {', '.join(checks)})"
            )
        problem = checks[key](value)
        if problem:
            raise UserError(f"{where}: [{section}] {key} {problem}, got {value!r}")
    normalised = {k: _normalise(section, k, v) for k, v in values.items()}
    return SECTION_TYPES[section](**normalised)


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
    if config.mosaic.enabled and not config.mosaic.directory:
        raise UserError(f"{where}: [mosaic] directory must be set when enabled = true")
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
    sections = {}
    for name, values in merged.items():
        if name not in CHECKS:
            raise UserError(f"{where}: unknown section [{name}] (known: {', '.join(CHECKS)})")
        sections[name] = _build_section(where, name, values)
    config = EdgeConfig(**sections, source=where)
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
            lines.append(f"{key} = {_toml_value(value)}")
        lines.append("")
    return "\n".join(lines)


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str):
        return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(value, list):
        return "[" + ", ".join(_toml_value(v) for v in value) + "]"
    return repr(value)
