"""The run configuration: every option of a run, typed, with its default, built the same way from the command
line and from Python.

``main.py`` parses the command line into the options the user typed (the parser is generated from the fields
below, in ``extractors/cli.py``); the Python API takes a dict. Both go through :func:`resolve_config`, which
gives one :class:`RunConfig`: values converted and checked, today's alternative spellings mapped onto the
canonical options, every option the feature type does not read refused, and the model's own defaults (window,
frame rate, weights) filled in. So ``main.py`` and ``ExtractCLIP(dict(feature_type=..., extract_method="uni_12"))``
hold the same object, and the model layer never sees argparse.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, fields, replace
from fractions import Fraction
from pathlib import Path
from typing import Any, Callable, Mapping

from extractors.presets import preset
from extractors.registry import feature_type
from io_utils.errors import UsageError
from io_utils.manifest import read_manifest
from io_utils.outputs import FLOW_IMAGE_MODES, ON_EXTRACTION_CHOICES
from io_utils.sampling import SamplingMethod, parse_extract_method
from io_utils.weights import WEIGHTS_DIR_ENV

CROP_CHOICES = (1, 3, 5, 10)  # see extractors.transforms.crop_views


def positive_int(value: Any) -> int:
    number = int(value)
    if number < 1 or (isinstance(value, float) and value != number):
        raise ValueError(f"must be a positive integer, got {value}")
    return number


def positive_float(value: Any) -> float:
    number = float(value)
    if not (number > 0 and math.isfinite(number)):
        raise ValueError(f"must be a positive number, got {value}")
    return number


def parse_shard(value: Any) -> tuple[int, int]:
    """``INDEX/COUNT`` (or a pair), 0 <= INDEX < COUNT."""
    index, count = (int(part) for part in (value.split("/") if isinstance(value, str) else value))
    if not 0 <= index < count:
        raise ValueError(f"INDEX/COUNT with 0 <= INDEX < COUNT, got {value}")
    return index, count


def option(default: Any, help: str, group: str = "run", convert: Callable[[Any], Any] | None = None,
           choices: tuple | None = None, many: bool = False, metavar: str | None = None,
           exclusive: str | None = None) -> Any:
    """A :class:`RunConfig` field and what the command line needs to offer it (``many``: one or more values;
    ``exclusive``: at most one option of that name's group may be given)."""
    metadata = dict(help=help, group=group, convert=convert, choices=choices, many=many, metavar=metavar,
                    exclusive=exclusive)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class RunConfig:
    """Every option of a run. Sequences are tuples; ``None`` means "not given" (a model default applies)."""

    feature_type: str = option(None, "what to extract (or given by --preset or --from_manifest)",
                               metavar="FEATURE_TYPE")
    # recipes
    preset: str | None = option(None, "start from the options of a published feature set (see --list_presets); "
                                      "options given explicitly override them", "recipes", metavar="NAME")
    from_manifest: str | None = option(None, "re-run with the configuration recorded in a manifest.json; options "
                                             "given explicitly override it", "recipes", metavar="FILE")
    # inputs
    video_paths: tuple[str, ...] | None = option(None, "video files", "inputs", many=True, metavar="PATH",
                                                 exclusive="inputs")
    video_dir: str | None = option(None, "a folder of videos (by file extension)", "inputs", metavar="DIR",
                                   exclusive="inputs")
    file_with_video_paths: str | None = option(
        None, "one video path per line, or a CSV with the header video_path,feature_path", "inputs",
        metavar="FILE", exclusive="inputs")
    frames_dir: str | None = option(None, "a folder of frame folders: every folder of images under DIR is one video, "
                                          "its images in natural sort order (needs --frames_fps)", "inputs",
                                    metavar="DIR", exclusive="inputs")
    recursive: bool = option(False, "with --video_dir: also take sub-folders", "inputs")
    frames_fps: float | None = option(None, "with --frames_dir: the frames' rate; image k is on screen from k / F s",
                                      "inputs", convert=positive_float, metavar="F")
    # sampling
    extract_method: SamplingMethod | None = option(
        None, "uni_N: N evenly spaced frames; fix_F: F frames per second; all: every frame (default: the model's: "
              "fix_1 for image models, an example every 0.96 s for vggish)", "sampling", convert=parse_extract_method,
        metavar="METHOD")
    batch_size: int = option(32, "frames per forward pass", "sampling", convert=positive_int)
    extraction_fps: float | None = option(
        None, "take frames at this rate for windows and flow (default: the model's, else every frame)",
        "sampling", convert=positive_float, metavar="FPS")
    stack_size: int | None = option(None, "frames per window (default: the model's)", "sampling",
                                    convert=positive_int)
    step_size: int | None = option(None, "frames between window starts (default: --stack_size)", "sampling",
                                   convert=positive_int)
    pad_last: bool = option(False, "pad the frames after the last full window (or of a too short video) into one "
                                   "more window", "sampling")
    views: int | None = option(None, "N frames or N windows spread uniformly over the whole video, instead of "
                                     "--extract_method or --step_size; for tsn and slowonly, the number of clips "
                                     "(default 25 and 10)", "sampling", convert=positive_int, metavar="N")
    # devices
    device_ids: tuple[int, ...] = option((0,), "CUDA devices, one worker each", "devices", convert=int, many=True,
                                         metavar="ID", exclusive="devices")
    cpu: bool = option(False, "run on the CPU", "devices", exclusive="devices")
    num_workers: int = option(1, "with --cpu: worker processes (Ray: actors)", "devices", convert=positive_int)
    backend: str = option("local", "local: worker processes on this machine; ray: actors on a Ray cluster", "devices",
                          choices=("local", "ray"))
    ray_address: str | None = option(None, "with --backend ray: the cluster (default: $RAY_ADDRESS, else a running "
                                           "cluster, else a Ray instance started for the run)", "devices",
                                     metavar="ADDRESS")
    cpus_per_worker: int = option(1, "with --backend ray --cpu: CPUs each actor reserves (and its torch threads)",
                                  "devices", convert=positive_int)
    shard: tuple[int, int] | None = option(None, "INDEX/COUNT: only the videos of shard INDEX of COUNT, chosen by a "
                                                 "hash of their paths (for Slurm arrays and several machines)",
                                           "inputs", convert=parse_shard, metavar="INDEX/COUNT")
    # outputs
    on_extraction: str = option("print", "what to do with the features", "outputs", choices=ON_EXTRACTION_CHOICES)
    output_path: str = option("./output", "where outputs go", "outputs", metavar="DIR")
    output_direct: bool = option(False, "write into --output_path itself, not a sub-folder named after the feature "
                                        "type", "outputs")
    overwrite: bool = option(False, "extract again videos whose outputs already exist (they are skipped "
                                    "otherwise)", "outputs")
    crops: int = option(1, "1: centre crop; 3: three crops along the long side; 5: four corners and centre; 10: "
                           "those five and their mirror images (outputs get a crop axis; order in the README)",
                        "outputs", convert=int, choices=CROP_CHOICES)
    pool: str | None = option(None, "mean: save one vector per video, the mean over every frame, window or clip "
                                    "(and crop); none: one per frame, window or clip (the default, except for tsn "
                                    "and slowonly)", "outputs", choices=("mean", "none"))
    l2_normalize: bool = option(False, "scale every saved vector to unit L2 norm", "outputs")
    collect_pickle: str | None = option(
        None, "when the run ends, also write one pickle at PATH: a list of every video's main features in the order "
              "of the video list, None for a video without them (MMAction2's clip_feature_extraction layout; needs "
              "save_numpy or save_pickle)", "outputs", metavar="PATH")
    dtype: str = option("float32", "of the saved features", "outputs", choices=("float32", "float16"))
    verbose: bool = option(False, "report skipped videos, tracebacks of unexpected errors", "outputs")
    # models
    weights_dir: str | None = option(
        None, f"folder of checkpoints under their official file names (or ${WEIGHTS_DIR_ENV})", "models",
        metavar="DIR")
    weights: str | None = option(None, "which published weights", "models", metavar="NAME")
    checkpoint: str | None = option(None, "a local checkpoint in the official format, instead of the published one",
                                    "models", metavar="PATH")
    model_name: str | None = option(None, "timm: the timm model name", "models", metavar="NAME")
    show_pred: bool = option(False, "print the top-5 classes per frame or window", "models")
    pred_texts: tuple[str, ...] | None = option(None, "with --show_pred: score these texts instead of the "
                                                      "Kinetics-400 classes", "models", many=True, metavar="TEXT")
    clip_checkpoint: str | None = option(None, "the former spelling of --checkpoint for CLIP", "models",
                                         metavar="PATH")
    # optical flow
    flow_batch_size: int = option(8, "frame pairs per flow forward pass", "flow", convert=positive_int)
    side_size: int | None = option(None, "flow: resize frames to this short side first (default: original size); "
                                         "resnet: the whole frame at this short side, not a centre crop",
                                   "flow", convert=positive_int, metavar="N")
    flow_bound: float = option(20.0, "flow is clipped to +-bound and mapped to 0..255 in flow images", "flow",
                               convert=positive_float)
    raft_model: str = option("large", "which RAFT", "flow", choices=("large", "small"))
    raft_weights: str | None = option(None, "i3d: the RAFT weights of the flow stream (raft: the former spelling "
                                            "of --weights)", "flow", metavar="NAME")
    raft_iters: int = option(20, "RAFT's recurrent refinement steps", "flow", convert=positive_int)
    flow_checkpoint: str | None = option(None, "i3d: a local checkpoint of the flow network (raft, pwc: the former "
                                               "spelling of --checkpoint)", "flow", metavar="PATH")
    streams: tuple[str, ...] = option(("rgb", "flow"), "the I3D streams to extract", "flow", many=True,
                                      choices=("rgb", "flow"))
    flow_type: str = option("raft", "where I3D's flow stream comes from", "flow", choices=("raft", "pwc", "precomputed"))
    flow_dir: str | None = option(None, "with --flow_type precomputed: DIR/<video stem>/flow_x_00001.jpg, ...", "flow",
                                  metavar="DIR")
    # audio
    vggish_postprocess: bool = option(False, "apply AudioSet's PCA, clipping to [-2, 2] and 8-bit quantisation "
                                             "(values 0..255) to the embeddings", "audio")
    timestamps_from: str | None = option(None, "centre one example on each row of DIR/<stem>_timestamps_ms.npy, "
                                               "written by an earlier run of any feature type", "audio", metavar="DIR")

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> RunConfig:
        """Options by name, each converted and checked as the command line would (strings parsed, sequences
        made tuples); an unknown name or a bad value is a :class:`UsageError` naming the option."""
        values = _converted_options(options)
        if values.get("preset") and values.get("from_manifest"):
            raise UsageError("--preset and --from_manifest both give a whole configuration; give one")
        if values.get("preset"):
            values = {**_converted_options(preset(values["preset"]).options), **values}
        if values.get("from_manifest"):
            values = {**_converted_options(recorded_options(values["from_manifest"])), **values}
        if values.get("feature_type") is None:
            raise UsageError("--feature_type is required (or --preset NAME, or --from_manifest FILE)")
        return cls(**values)

    def recorded(self) -> dict[str, Any]:
        """The options of this feature type that make the features what they are, as JSON values: what a
        manifest records and compares (inputs, outputs, devices and speed settings are left out; the device
        type is in)."""
        reads = feature_type(self.feature_type).extractor.reads | {"feature_type", "frames_fps"}
        values = {spec.name: _jsonable(getattr(self, spec.name)) for spec in fields(self)
                  if spec.name in reads and spec.name not in NOT_RECORDED}
        return {**values, "device_type": "cpu" if self.cpu else "cuda"}

    def sampling(self) -> SamplingMethod | None:
        """Which frames to take: ``--views N`` is ``uni_N``, else ``--extract_method`` (None: the model's own)."""
        return SamplingMethod("uni", Fraction(self.views)) if self.views else self.extract_method

    def given(self) -> dict[str, Any]:
        """The options whose value is not their default: what the user asked for."""
        return {spec.name: getattr(self, spec.name) for spec in fields(self)
                if getattr(self, spec.name) != spec.default}


COMMON_OPTIONS = frozenset({"feature_type", "video_paths", "video_dir", "file_with_video_paths", "recursive",
                            "frames_dir", "frames_fps",
                            "device_ids", "cpu", "num_workers", "on_extraction", "output_path", "output_direct",
                            "overwrite", "verbose", "weights_dir", "backend", "ray_address", "cpus_per_worker",
                            "shard", "collect_pickle", "preset", "from_manifest"})


# Options models read that do not change the features (speed, printing); the options of every run are not
# recorded either (where inputs come from and outputs go, devices), except --frames_fps.
NOT_RECORDED = frozenset({"batch_size", "flow_batch_size", "show_pred", "pred_texts"})


def recorded_options(manifest_path: str) -> dict[str, Any]:
    """The options recorded in a manifest (what it records beyond options, such as digests, is left out)."""
    names = {spec.name for spec in fields(RunConfig)}
    return {name: value for name, value in read_manifest(Path(manifest_path))["configuration"].items()
            if name in names and value is not None}


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, SamplingMethod):
        return str(value)
    return value


def _converted_options(options: Mapping[str, Any]) -> dict[str, Any]:
    known = {spec.name: spec for spec in fields(RunConfig)}
    values = {}
    for name, value in options.items():
        if name not in known:
            raise UsageError(f"unknown option {name!r}")
        values[name] = _converted(known[name], value)
    return values


def _converted(spec, value: Any) -> Any:
    if value is None:
        return None
    metadata = spec.metadata
    try:
        if metadata["many"]:
            value = tuple([value] if isinstance(value, (str, int, float)) else value)
            value = tuple(metadata["convert"](item) for item in value) if metadata["convert"] else value
        elif metadata["convert"] is not None:
            value = metadata["convert"](value)
    except (TypeError, ValueError) as error:
        raise UsageError(f"--{spec.name} {value}: {error}") from None
    items = value if metadata["many"] else (value,)
    if metadata["choices"] is not None and any(item not in metadata["choices"] for item in items):
        raise UsageError(f"--{spec.name} {value}: choose from {', '.join(map(str, metadata['choices']))}")
    return value


def resolve_config(options: RunConfig | Mapping[str, Any]) -> RunConfig:
    """The complete configuration of a run of one feature type (see the module's docstring). Idempotent."""
    config = options if isinstance(options, RunConfig) else RunConfig.from_options(options)
    spec = feature_type(config.feature_type)
    extractor = spec.extractor
    config = _canonical_spellings(config, extractor.option_aliases)
    for name in config.given():
        if name not in COMMON_OPTIONS and name not in extractor.reads:
            raise UsageError(f"--{name} is not read by {config.feature_type}; {_reads_line(extractor)}")
    if bool(config.frames_dir) != bool(config.frames_fps):
        raise UsageError("--frames_dir and --frames_fps go together: the frame rate gives the images their times")
    if config.collect_pickle and config.on_extraction not in ("save_numpy", "save_pickle"):
        raise UsageError("--collect_pickle gathers the saved features: give --on_extraction save_numpy or save_pickle")
    if config.on_extraction in FLOW_IMAGE_MODES and not extractor.writes_flow:
        raise UsageError(f"--on_extraction {config.on_extraction} writes optical flow; use it with raft or pwc")
    weights = spec.weights_for(config)
    config = replace(config, **extractor.option_defaults(config, weights))
    extractor.validate(config, weights)
    return config


def _canonical_spellings(config: RunConfig, aliases: Mapping[str, str]) -> RunConfig:
    """``--model_name`` for r21d is ``--weights``, ``--clip_checkpoint`` is ``--checkpoint``, ...: the old
    spellings keep working; both spellings with different values are refused."""
    changes = {}
    for old, new in aliases.items():
        value = getattr(config, old)
        if value is None:
            continue
        if getattr(config, new) not in (None, value):
            raise UsageError(f"--{old} and --{new} are the same option for {config.feature_type}; give one")
        changes.update({old: None, new: value})
    return replace(config, **changes)


def _reads_line(extractor) -> str:
    specific = sorted(extractor.reads - COMMON_OPTIONS)
    return f"it reads {', '.join('--' + name for name in specific)}" if specific else "it reads no model option"
