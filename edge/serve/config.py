"""The daemon's configuration keys: a frozen dataclass per TOML section, one field per key.

Each field is declared once, with `key(default, check, doc)`: its default (taken from the part
it configures where that part has one: ConverterSettings, PipelineSettings, protocol.Limits),
the check of its value and the sentence docs/configuration.md shows. Reading and validating
files is edge/serve/config_file.py.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from edge.inference.backends import BACKENDS
from edge.inference.bundle import PRECISIONS
from edge.inference.converter import ConverterSettings
from edge.inference.tiling import WINDOWS
from edge.inference.trust import MODES as TRUST_MODES
from edge.inference.trust import TrustSettings
from edge.inspection.settings import MODES as INSPECTION_MODES
from edge.inspection.settings import InspectionSettings
from edge.protocol import Kind, Limits, topic
from edge.serve import config_checks as check
from edge.serve.pipeline import OVERLOAD_POLICIES, PipelineSettings
from edge.serve.stacks import StackSettings
from edge.transport import CurveOptions

LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")
MODES = ("connect", "bind")
SERVING = ConverterSettings()
QUEUING = PipelineSettings()
LIMITS = Limits()
INSPECTING = InspectionSettings()
STACKING = StackSettings()
TRUSTING = TrustSettings()


def key(default: Any, value_check: check.Check, doc: str, shown: str = "",
        normalise: Callable[[Any], Any] | None = None, choices: tuple[str, ...] = ()) -> Any:
    """A configuration key: `shown` replaces the default in the docs table when it is not a
    plain value; `normalise` turns a valid TOML value into the field's type."""
    return field(default=default, metadata={"check": value_check, "doc": doc, "shown": shown,
                                            "normalise": normalise, "choices": choices})


def choice(default: str, choices: tuple[str, ...], doc: str, **options: Any) -> Any:
    """A key whose value is one of `choices` (listed in the docs table before `doc`)."""
    return key(default, check.one_of(*choices), doc, choices=choices, **options)


@dataclass(frozen=True)
class InputConfig:
    socket: str = choice("sub", ("sub", "pull"),
                         '`"sub"`: subscribe to the rig\'s PUB socket. The rig never waits; when the '
                         "daemon falls behind, tiles are dropped and counted. `\"pull\"`: take tiles "
                         "from the rig's PUSH socket: lossless, the rig is slowed down when the "
                         "daemon is full, and several daemons can pull from one rig (each tile goes "
                         "to one of them).")
    endpoint: str = key("tcp://127.0.0.1:5555", check.endpoint,
                        "ZeroMQ endpoint: the rig's address (connect) or this daemon's (bind).")
    mode: str = choice("", MODES, "", shown='`"connect"` for sub, `"bind"` for pull')
    topics: tuple[str, ...] = key(
        (topic(Kind.TILE),), check.topics,
        'SUB topic prefixes, e.g. `["tile/wafer7-"]` for one family of scan ids. For every '
        "`tile/...` prefix the matching `scan-end/...` prefix is subscribed too. Ignored for pull.",
        normalise=tuple)
    hwm: int = key(1000, check.nonneg_int,
                   "ZeroMQ receive high-water mark (messages). With sub, messages beyond it are "
                   "lost in the network layer (they never reach the daemon and show up as "
                   "sequence gaps); with pull, the sender blocks. `0` = unlimited.")

    def __post_init__(self) -> None:
        if not self.mode:
            object.__setattr__(self, "mode", "connect" if self.socket == "sub" else "bind")

    @property
    def bind(self) -> bool:
        return self.mode == "bind"


@dataclass(frozen=True)
class OutputConfig:
    socket: str = choice("pub", ("pub", "push"),
                         '`"pub"`: consumers subscribe to `sem/`, `error/` and `scan-end/` topics '
                         '(prefix filters). `"push"`: consumers pull; each message goes to one '
                         "consumer; the daemon waits while no consumer is connected.")
    endpoint: str = key("tcp://127.0.0.1:5556", check.endpoint, "ZeroMQ endpoint.")
    mode: str = choice("bind", MODES,
                       '`"bind"`: consumers connect here. `"connect"`: to a collector that binds a '
                       "PULL socket (how several daemons merge their output).")
    hwm: int = key(1000, check.nonneg_int,
                   "Send high-water mark. A PUB socket drops messages for a subscriber that is "
                   "this far behind.")

    @property
    def bind(self) -> bool:
        return self.mode == "bind"


@dataclass(frozen=True)
class ModelConfig:
    bundle: str = key("", check.string,
                      'Model bundle directory, or a symlink to one (resolved again at every '
                      'reload). `""`: `$SSUM_BUNDLE`, else `models/default`. Every model file is '
                      "checked against its sha256; a mismatch stops the daemon (or fails a "
                      "reload).")
    repository: str = key("", check.string,
                          "A model repository `<repository>/<name>/<version>/` (versions are "
                          "integers) instead of `bundle`; with `name` and `version`.")
    name: str = key("", check.string, "The model's folder in `repository`.")
    version: str = key("latest", check.nonempty,
                       '`"latest"` (the highest version, at start and at every reload) or one '
                       'version, e.g. `"3"` (pinned; rollback = pin the previous one, reload).')
    backend: str = choice(SERVING.backend, BACKENDS,
                          "The inference backend. One that cannot be loaded falls back to ONNX "
                          "Runtime with a warning in the log; `ssum_edge_model_info` shows what "
                          "actually runs.")
    precision: str = choice(SERVING.precision, PRECISIONS,
                            "The bundle must hold that variant.")
    device: str = key(SERVING.device, check.string,
                      'E.g. `"cuda:0"` or `"cpu"`; `""` = the backend\'s choice.')
    threads: int = key(SERVING.threads, check.nonneg_int,
                       "CPU threads for the CPU backends; `0` = automatic.")
    invert_input: bool = key(SERVING.invert_input, check.boolean,
                             "The microscope shows the materials in the reverse order of "
                             "brightness to the bundle's training data (e.g. metal dark on a "
                             "bright oxide where the model learned it bright): every tile is "
                             "taken as 1 - x before conversion and trust. A property of the "
                             "instrument and the material stack, set once per line "
                             "([conversion.md](conversion.md#input-polarity)).")
    trusted_keys: str = key("", check.string,
                            "A public signing key (`NAME.sign.pub`) or a directory of them. When "
                            "set, the bundle's manifest must carry a valid signature by one of "
                            "them (`ssum bundle sign`), or the daemon refuses it. `\"\"`: no "
                            "signature required (the sha256 checks still apply).")


@dataclass(frozen=True)
class TilingConfig:
    window: str = choice(SERVING.window, WINDOWS,
                         'Seam blending between overlapping patches (`"crop"`: margin cropping); see '
                         "docs/conversion.md. With the shipped model all give the same pixels "
                         "(tiling is exact); they differ for models that are not.")
    patch_size: int = key(SERVING.patch_size, check.nonneg_int,
                          "`0`: each tile is planned on its own, as the fewest, largest patches "
                          "(one patch of the whole tile when it fits; docs/conversion.md). A "
                          "size: fixed patches of that many pixels (TensorRT always uses the "
                          "bundle's fixed patch).")
    overlap: int = key(SERVING.overlap, check.nonneg_int,
                       "Context each patch discards on every side it shares with another patch, "
                       "in pixels (rounded up to a multiple of 4). Below the bundle's "
                       "`receptive_margin` patches are no longer exact and the daemon logs a "
                       "warning; `0` = the bundle's receptive margin.")
    max_pixels: int = key(SERVING.max_pixels, check.positive_int,
                          "The most input pixels of one patch, and of one inference call (a "
                          "larger batch runs as several calls): the runtime's working memory "
                          "grows with it (about 1 GB per megapixel for the shipped model on "
                          "ONNX Runtime).")


@dataclass(frozen=True)
class BatchingConfig:
    max_batch: int = key(SERVING.max_batch, check.nonneg_int,
                         "Patches per inference call; patches of consecutive tiles share a batch. "
                         "0: chosen for the device the model runs on: 1 on a CPU (where a batch "
                         "of 8 is slower and GBs larger: `python bench/run.py` measures it), 8 "
                         "on a GPU (and TensorRT's profile).")
    max_delay_ms: float = key(QUEUING.max_delay_ms, check.nonneg_number,
                              "The longest the batcher waits for more patches before running a "
                              "partial batch, and only while another tile is queued or being "
                              "prepared: a tile that arrives alone (at the rig's rate) runs at "
                              "once. Larger = fuller batches under load.", normalise=float)


@dataclass(frozen=True)
class QueuesConfig:
    capacity: int = key(QUEUING.capacity, check.positive_int, "Tiles each queue holds.")
    overload: str = choice("auto", ("auto", *OVERLOAD_POLICIES),
                           'What happens when the input queue is full. `"block"`: stop reading '
                           "input (with pull, the rig waits: nothing is lost). `\"drop-oldest\"`: "
                           "drop the oldest waiting tile, log it and count it in "
                           '`ssum_edge_tiles_dropped_total{reason="queue_full"}` (the newest tiles '
                           'are kept). `"auto"`: block for pull, drop-oldest for sub.')


@dataclass(frozen=True)
class LimitsConfig:
    max_width: int = key(LIMITS.max_width, check.positive_int, "Pixels.")
    max_height: int = key(LIMITS.max_height, check.positive_int, "Pixels.")
    max_bytes: int = key(LIMITS.max_bytes, check.positive_int,
                         f"Bytes of the pixels frame ({LIMITS.max_bytes >> 20} MiB). ZeroMQ "
                         "disconnects a peer that sends a larger frame (of any kind) before it "
                         "is read.")
    scan_idle_s: float = key(QUEUING.scan_idle_s, check.positive_number,
                             "Seconds after which the counts of a scan that sent no tile and no "
                             "scan-end are forgotten (its late scan-end then reports zeros).",
                             normalise=float)


@dataclass(frozen=True)
class StacksConfig:
    size: int = key(STACKING.size, check.nonneg_int,
                    "Planes per z-stack of the tiles whose header has `z_nm` but no `stack_size` "
                    "(docs/protocol.md). `0`: only tiles with a `stack_size` of 2 or more are "
                    "stacked; every other tile is converted on its own.")
    timeout_s: float = key(STACKING.timeout_s, check.positive_number,
                           "A stack no plane came to for this long is fused from the planes it "
                           'has and counted in `ssum_edge_stacks_incomplete_total{reason="timeout"}` '
                           "(so are stacks still open when their scan-end arrives, "
                           '`reason="scan_end"`).', normalise=float)
    max_planes: int = key(STACKING.max_planes, check.positive_int,
                          "The most planes held in open stacks (memory: this many tiles); beyond "
                          'it the oldest stack is fused incomplete (`reason="evicted"`).')
    height_map: bool = key(STACKING.height_map, check.boolean,
                           "Publish each fused tile's height map (depth from focus, nm) as a "
                           "`height/<scan_id>` message right after the converted tile.")


@dataclass(frozen=True)
class TrustConfig:
    mode: str = choice(TRUSTING.mode, TRUST_MODES,
                       "Which converted tiles get a trust score ([trust.md](trust.md)): every "
                       "tile, one in `every_n` (the first, the (n+1)-th, ...), or none (`\"off\"` "
                       "does not even load the bundle's SEM->OSR generator). A bundle without "
                       "trust statistics (`ssum bundle stats`) gives no tile one. A judged "
                       "tile's header carries `trust`; its score is counted in "
                       "`ssum_edge_trust_score`. The cycle runs a second generator, which costs "
                       "about as much as the conversion (bench/results/trust_cpu.json).")
    every_n: int = key(TRUSTING.every_n, check.positive_int,
                       'With `mode = "nth"`: judge one tile in this many.')
    map: bool = key(TRUSTING.map, check.boolean,
                    "Publish each judged tile's trust map (a score per block of about 64 px) as a "
                    "`trust/<scan_id>` message right after the converted tile.")

    def settings(self) -> TrustSettings:
        return TrustSettings(self.mode, self.every_n, self.map)


@dataclass(frozen=True)
class ShutdownConfig:
    drain_timeout_s: float = key(20.0, check.positive_number,
                                 "On SIGTERM, the longest the daemon converts and publishes what "
                                 "it has received; what is left then is dropped "
                                 '(`ssum_edge_tiles_dropped_total{reason="shutdown"}`) and the '
                                 "exit code is 3. Keep it 5 s or more below the unit's "
                                 "`TimeoutStopSec` (30 s).", normalise=float)


@dataclass(frozen=True)
class MetricsConfig:
    enabled: bool = key(True, check.boolean, "Serve Prometheus metrics ([metrics.md](metrics.md)).")
    host: str = key("127.0.0.1", check.nonempty,
                    'Address to listen on; `"0.0.0.0"` to let a remote Prometheus scrape.')
    port: int = key(9108, check.port, "Port; `0` picks a free one and logs it.")


@dataclass(frozen=True)
class MosaicConfig:
    enabled: bool = key(False, check.boolean,
                        "Assemble each scan's converted tiles at their stage positions and write "
                        "`DIRECTORY/<scan_id>.ome.tif` when the scan's scan-end message has been "
                        "forwarded. Tiles are held in memory until then.")
    directory: str = key("", check.string,
                         "Output directory (required when enabled; created if missing). Under "
                         "systemd, use a directory below `/var/lib/ssum-edge`.")
    refine: bool = key(False, check.boolean,
                       "Refine tile positions by registering their overlaps (slower, corrects "
                       "stage errors).")
    raw: bool = key(False, check.boolean,
                    "Also write the raw tiles' mosaic, `DIRECTORY/<scan_id>.raw.ome.tif`, at "
                    "the converted tiles' placements: a defect-free die's raw mosaic is the "
                    "`[inspection] optical_reference` that confirmation needs. It doubles the "
                    "memory held per scan.")


def _pair(value: Any) -> tuple[float, float]:
    return float(value[0]), float(value[1])


@dataclass(frozen=True)
class InspectionConfig:
    enabled: bool = key(False, check.boolean,
                        "Inspect every converted tile for defects: `defect/<scan_id>` messages "
                        "before each scan-end, `DIRECTORY/<scan_id>.klarf` (+ `.klarf.json`, "
                        "`.defects.tif`), and the defect metrics ([inspection.md](inspection.md)).")
    directory: str = key("", check.string,
                         "Where the KLARF files go (required when enabled; created if missing).")
    mode: str = choice("golden", INSPECTION_MODES,
                       "The reference: a golden image (`reference`), the tile's own repeating "
                       "cells (`pitch_nm`), or the layout (`reference`: a raster or GDSII file).")
    reference: str = key("", check.string,
                         "The golden image (e.g. a defect-free die's converted mosaic, an "
                         "OME-TIFF from `[mosaic]`) or the layout file.")
    reference_origin_nm: tuple[float, float] = key(
        (0.0, 0.0), check.number_pair, "Stage position `[x, y]` of the reference's pixel (0, 0).",
        normalise=_pair)
    reference_pixel_nm: float = key(0.0, check.nonneg_number,
                                    "The reference's pixel size; `0` = an OME-TIFF's own, else "
                                    "the tiles'.", normalise=float)
    gds_layer: int = key(-1, check.layer, "The GDSII layer of the pattern; `-1` = every layer.")
    pitch_nm: tuple[float, float] = key(
        (0.0, 0.0), check.number_pair,
        "Cell mode: the repeat `[x, y]`; `0` = detected in each tile (the shortest shift at "
        "which the tile matches itself; none along lines parallel to the axis).",
        normalise=_pair)
    false_alarm_rate: float = key(INSPECTING.false_alarm_rate, check.rate,
                                  "The nominal probability that a defect-free pixel exceeds "
                                  "the threshold; each tile's threshold is extrapolated from "
                                  "its own difference statistics to it ([inspection.md]"
                                  "(inspection.md) gives the false alarms per tile it made).",
                                  normalise=float)
    confirm: bool = key(False, check.boolean,
                        "Keep a converted tile's detection only where the raw tile differs from "
                        "its reference too (golden: `optical_reference`; cell and database: the "
                        "raw tile's own cells, the layout in its look). It removes the detail "
                        "the model paints differently into two images of one pattern.")
    optical_reference: str = key("", check.string,
                                 "Golden mode with `confirm`: the reference as the microscope "
                                 "saw it, before conversion (same placement and pixel size as "
                                 "`reference`, e.g. the raw image that was converted to it).")
    confirm_rate: float = key(INSPECTING.confirm_rate, check.rate,
                              "With `confirm`: the false-alarm rate of the raw difference that "
                              "confirms a detection.", normalise=float)
    confirm_distance_nm: float = key(INSPECTING.confirm_distance_nm, check.nonneg_number,
                                     "With `confirm`: how far from a detection's box the raw "
                                     "difference that confirms it may lie.", normalise=float)
    min_defect_nm: float = key(INSPECTING.min_defect_nm, check.positive_number,
                               "The smallest defect of interest (sets the matched smoothing).",
                               normalise=float)
    max_defect_nm: float = key(INSPECTING.max_defect_nm, check.positive_number,
                               "The largest defect measured in full; wider differences are "
                               "treated as shading.", normalise=float)
    shift_tolerance_px: float = key(INSPECTING.shift_tolerance_px, check.nonneg_number,
                                    "Residual misregistration and edge jitter tolerated.",
                                    normalise=float)
    border_px: int = key(INSPECTING.border_px, check.nonneg_int,
                         "Pixels at each tile border not judged (the model's padding shows "
                         "there); keep it below half the scan's tile overlap.")
    merge_distance_nm: float = key(INSPECTING.merge_distance_nm, check.nonneg_number,
                                   "Detections closer than this, in a tile or across tiles, "
                                   "are one defect.", normalise=float)
    thumbnail_px: int = key(INSPECTING.thumbnail_px, check.positive_int,
                            "Side of each defect's thumbnail (in its message and the KLARF's "
                            "TIFF).")
    die_pitch_nm: tuple[float, float] = key(
        (0.0, 0.0), check.number_pair,
        "The KLARF's DiePitch `[x, y]`; `0` = the scan is one die (its extent).",
        normalise=_pair)
    die_origin_nm: tuple[float, float] = key(
        (0.0, 0.0), check.number_pair, "The KLARF's DieOrigin (stage nm).", normalise=_pair)
    lot_id: str = key("ssum-edge", check.string, "The KLARF's LotID.")
    device_id: str = key("unknown", check.string, "The KLARF's DeviceID.")
    step_id: str = key("unknown", check.string, "The KLARF's StepID.")

    def settings(self) -> InspectionSettings:
        return InspectionSettings(
            false_alarm_rate=self.false_alarm_rate, min_defect_nm=self.min_defect_nm,
            max_defect_nm=self.max_defect_nm, border_px=self.border_px,
            shift_tolerance_px=self.shift_tolerance_px, merge_distance_nm=self.merge_distance_nm,
            thumbnail_px=self.thumbnail_px, confirm_rate=self.confirm_rate,
            confirm_distance_nm=self.confirm_distance_nm)


@dataclass(frozen=True)
class SecurityConfig:
    curve: bool = key(False, check.boolean, "Turn CURVE on for both sockets.")
    server_secret_key: str = key("", check.string,
                                 "This daemon's `NAME.key_secret`, for its bound sockets "
                                 "(required with curve).")
    authorized_clients: str = key("", check.string,
                                  "Directory of the public keys (`*.key`) of the rigs and "
                                  "consumers allowed to connect (required with curve).")
    client_secret_key: str = key("", check.string,
                                 "This daemon's secret key file when its input connects to the "
                                 "rig.")
    rig_public_key: str = key("", check.string,
                              "The rig's public key file, when the input connects to a rig that "
                              "is a CURVE server.")

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
    level: str = key("INFO", check.one_of_any_case(*LOG_LEVELS), "`ssum -v edge run` forces DEBUG.",
                     normalise=str.upper, choices=LOG_LEVELS)


@dataclass(frozen=True)
class EdgeConfig:
    input: InputConfig = field(default_factory=InputConfig)
    output: OutputConfig = field(default_factory=OutputConfig)
    model: ModelConfig = field(default_factory=ModelConfig)
    tiling: TilingConfig = field(default_factory=TilingConfig)
    batching: BatchingConfig = field(default_factory=BatchingConfig)
    queues: QueuesConfig = field(default_factory=QueuesConfig)
    limits: LimitsConfig = field(default_factory=LimitsConfig)
    stacks: StacksConfig = field(default_factory=StacksConfig)
    trust: TrustConfig = field(default_factory=TrustConfig)
    shutdown: ShutdownConfig = field(default_factory=ShutdownConfig)
    metrics: MetricsConfig = field(default_factory=MetricsConfig)
    mosaic: MosaicConfig = field(default_factory=MosaicConfig)
    inspection: InspectionConfig = field(default_factory=InspectionConfig)
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
                                 patch_size=tiling.patch_size, overlap=tiling.overlap,
                                 max_pixels=tiling.max_pixels, trust=self.trust.mode != "off",
                                 invert_input=model.invert_input)

    def pipeline_settings(self) -> PipelineSettings:
        """How [batching], [queues], [limits], [stacks], [trust] and [input] set the pipeline
        up."""
        limits, stacks = self.limits, self.stacks
        return PipelineSettings(max_delay_ms=self.batching.max_delay_ms,
                                capacity=self.queues.capacity, overload=self.overload_policy,
                                limits=Limits(limits.max_width, limits.max_height,
                                              limits.max_bytes),
                                detect_gaps=self.input.socket == "sub",
                                scan_idle_s=limits.scan_idle_s,
                                stacks=StackSettings(stacks.size, stacks.timeout_s,
                                                     stacks.max_planes, stacks.height_map),
                                trust=self.trust.settings())

    def to_dict(self) -> dict[str, dict[str, Any]]:
        out = {}
        for name in sections():
            values = dataclasses.asdict(getattr(self, name))
            out[name] = {k: list(v) if isinstance(v, tuple) else v for k, v in values.items()}
        return out


def sections() -> dict[str, type]:
    """TOML section name -> its dataclass, in file order."""
    return {f.name: f.default_factory for f in fields(EdgeConfig)  # type: ignore[misc]
            if f.name != "source"}


DEFAULTS = EdgeConfig()
