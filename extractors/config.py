"""The run configuration: the options of every run, typed, and the feature type's own options, built the same way
from the command line and from Python.

:class:`RunConfig`'s fields are the options every run shares: where the videos come from, the devices, where the
outputs go. A feature type's own options (its sampling, windows, crops, weights, flow network...) are declared by
its family's module and the engine (``extractors/options.py``) and held in ``model_options``; they are read one
way, by their declaration: ``config[STACK_SIZE]`` (so every reader of an option is found by its name).

``main.py`` parses the command line into the options the user typed (the parser is generated from these
declarations, in ``extractors/cli.py``); the Python API takes a dict. Both go through :func:`resolve_config`,
which gives one :class:`RunConfig`: values converted and checked, former spellings mapped onto the canonical
options, every option the feature type does not read refused, and the model's own defaults (window, frame rate,
weights) filled in. So ``main.py`` and ``ExtractCLIP(dict(feature_type=..., extract_method="uni_12"))`` hold the
same object, and the model layer never sees argparse.
"""
from __future__ import annotations

from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable, Mapping

from extractors.options import Option, OptionValues, Section, non_negative_float, positive_float, positive_int
from extractors.presets import preset
from extractors.registry import declared_options, feature_type, feature_types, known_options, reserve_run_options
from io_utils.checkpoints import WEIGHTS_DIR_ENV
from io_utils.errors import UsageError
from io_utils.limits import InputLimits, parse_limit
from io_utils.manifest import MANIFEST_FILE, read_manifest
from io_utils.outputs import FLOW_IMAGE_MODES, ON_EXTRACTION_CHOICES, SHARD_SUFFIXES, OutputLayout, output_folder
from io_utils.shards import DEFAULT_SHARD_SIZE
from io_utils.remote_outputs import STAGING_ROOT
from io_utils.sampling import SamplingMethod
from io_utils.sources import is_url


def parse_shard(value: Any) -> tuple[int, int]:
    """``INDEX/COUNT`` (or a pair), 0 <= INDEX < COUNT."""
    index, count = (int(part) for part in (value.split("/") if isinstance(value, str) else value))
    if not 0 <= index < count:
        raise ValueError(f"INDEX/COUNT with 0 <= INDEX < COUNT, got {value}")
    return index, count


def run_option(default: Any, help: str, section: str, example: Any, convert: Callable[[Any], Any] | None = None,
               choices: tuple | None = None, many: bool = False, metavar: str | None = None,
               exclusive: str | None = None) -> Any:
    """A :class:`RunConfig` field, with what its :class:`Option` needs (see :func:`run_options`)."""
    return field(default=default, metadata=dict(help=help, section=section, example=example, convert=convert,
                                                choices=choices, many=many, metavar=metavar, exclusive=exclusive))


@dataclass(frozen=True)
class RunConfig:
    """The options of a run. Sequences are tuples; ``None`` means "not given" (a model default applies)."""

    feature_type: str = run_option(None, "what to extract (or given by --preset or --from_manifest; see "
                                         "--list_models); several (A B ...) are extracted from one decode of each "
                                         "video, each into its own folder as a run of it alone would",
                                   Section.MODELS, "resnet18", metavar="FEATURE_TYPE")
    # recipes
    preset: str | None = run_option(None, "start from the options of a published feature set (see --list_presets); "
                                          "options given explicitly override them", Section.RECIPES,
                                    "clip_vit_b32_1fps", metavar="NAME")
    from_manifest: str | None = run_option(None, "re-run with the configuration recorded in a manifest.json; options "
                                                 "given explicitly override it", Section.RECIPES, "manifest.json",
                                           metavar="FILE")
    # inputs
    video_paths: tuple[str, ...] | None = run_option(None, "video files", Section.INPUTS, ("a.mp4",), many=True,
                                                     metavar="PATH", exclusive="inputs")
    video_dir: str | None = run_option(None, "a folder of videos (by file extension)", Section.INPUTS, "videos",
                                       metavar="DIR", exclusive="inputs")
    file_with_video_paths: str | None = run_option(
        None, "one video path per line, or a CSV with the header video_path,feature_path", Section.INPUTS,
        "list.txt", metavar="FILE", exclusive="inputs")
    frames_dir: str | None = run_option(None, "a folder of frame folders: every folder of images under DIR is one "
                                              "video, its images in natural sort order (needs --frames_fps)",
                                        Section.INPUTS, "frames", metavar="DIR", exclusive="inputs")
    shards: str | None = run_option(
        None, "WebDataset tar shards, local or remote, with brace expansion (video2dataset's layout): each video "
              "member is one video, named by its sample's key", Section.INPUTS, "shards/{00000..00009}.tar",
        metavar="PATTERN", exclusive="inputs")
    recursive: bool = run_option(False, "with --video_dir: also take sub-folders", Section.INPUTS, True)
    frames_fps: float | None = run_option(None, "with --frames_dir: the frames' rate; image k is on screen from k / F "
                                                "s", Section.INPUTS, 25.0, convert=positive_float, metavar="F")
    shard: tuple[int, int] | None = run_option(None, "INDEX/COUNT: only the videos of shard INDEX of COUNT, chosen by "
                                                     "a hash of their paths (for Slurm arrays and several machines)",
                                               Section.INPUTS, "1/4", convert=parse_shard, metavar="INDEX/COUNT")
    # devices
    device_ids: tuple[int, ...] = run_option((0,), "CUDA devices, one worker each", Section.DEVICES, (1,),
                                             convert=int, many=True, metavar="ID", exclusive="devices")
    cpu: bool = run_option(False, "run on the CPU", Section.DEVICES, True, exclusive="devices")
    num_workers: int = run_option(1, "with --cpu: worker processes (Ray: actors)", Section.DEVICES, 2,
                                  convert=positive_int)
    backend: str = run_option("local", "local: worker processes on this machine; ray: actors on a Ray cluster",
                              Section.DEVICES, "ray", choices=("local", "ray"))
    ray_address: str | None = run_option(None, "with --backend ray: the cluster (default: $RAY_ADDRESS, else a "
                                               "running cluster, else a Ray instance started for the run)",
                                         Section.DEVICES, "127.0.0.1:6379", metavar="ADDRESS")
    cpus_per_worker: int = run_option(1, "with --backend ray --cpu: CPUs each actor reserves (and its torch threads)",
                                      Section.DEVICES, 2, convert=positive_int)
    stall_timeout: float = run_option(
        300.0, "seconds a video may make no progress (no byte or packet read, no frame decoded, no step of the model) "
               "before its worker is replaced and the video fails as stalled; also how long a run waits for a worker "
               "to be able to run at all (a Ray cluster that lost its nodes); 0: no limit", Section.DEVICES, 60.0,
        convert=non_negative_float, metavar="SECONDS")
    input_limits: tuple[tuple[str, float], ...] = run_option(
        (), "NAME=VALUE ...: raise (or lower) the bounds an input's header is checked against before decoding "
            f"(defaults: {InputLimits().described()}); a file beyond one fails with the reason", Section.INPUTS,
        ("frame_pixels=134217728",), convert=parse_limit, many=True, metavar="NAME=VALUE")
    # outputs
    on_extraction: str = run_option("print", "what to do with the features", Section.OUTPUTS, "save_numpy",
                                    choices=ON_EXTRACTION_CHOICES)
    shard_size: int | None = run_option(
        None, f"with save_parquet or save_webdataset and no --shards input: videos per output shard, in list order "
              f"(default {DEFAULT_SHARD_SIZE}; with --shards, output shard k holds input shard k's videos)",
        Section.OUTPUTS, 1000, convert=positive_int, metavar="N")
    output_path: str = run_option("./output", "where outputs go", Section.OUTPUTS, "out", metavar="DIR")
    output_direct: bool = run_option(False, "write into --output_path itself, not a sub-folder named after the "
                                            "feature type", Section.OUTPUTS, True)
    overwrite: bool = run_option(False, "extract again videos whose outputs already exist (they are skipped "
                                        "otherwise)", Section.OUTPUTS, True)
    collect_pickle: str | None = run_option(
        None, "when the run ends, also write one pickle at PATH: a list of every video's main features in the order "
              "of the video list, None for a video without them (MMAction2's clip_feature_extraction layout; needs "
              "save_numpy or save_pickle)", Section.OUTPUTS, "all.pkl", metavar="PATH")
    verbose: bool = run_option(False, "report skipped videos, tracebacks of unexpected errors", Section.OUTPUTS, True)
    # models
    weights_dir: str | None = run_option(
        None, f"folder of checkpoints under their official file names (or ${WEIGHTS_DIR_ENV})", Section.MODELS,
        "weights", metavar="DIR")
    # the feature type's own options, declared by its family (see the module's docstring)
    model_options: OptionValues = field(default_factory=OptionValues, repr=False)
    # set by resolve_config: a worker (or an extractor built from this configuration) takes it as it is
    resolved: bool = field(default=False, compare=False, repr=False)

    @classmethod
    def from_options(cls, options: Mapping[str, Any]) -> RunConfig:
        """Options by name (a recipe's already resolved: :func:`with_recipe`), each converted and checked as the
        command line would (strings parsed, sequences made tuples); an unknown name, an option the feature type
        does not read or a bad value is a :class:`UsageError` naming the option."""
        values = dict(options)
        _refuse_unknown(values)
        if values.get("feature_type") is None:
            raise UsageError("--feature_type is required (or --preset NAME, or --from_manifest FILE)")
        shared = {name: RUN_OPTIONS[name].converted(value) for name, value in values.items() if name in RUN_OPTIONS}
        model = _model_values(shared["feature_type"], {name: value for name, value in values.items()
                                                       if name not in RUN_OPTIONS})
        return cls(**shared, model_options=OptionValues(model))

    def __getitem__(self, option: Option) -> Any:
        """The value of a feature type's own option (``config[STACK_SIZE]``), or the option's default for a
        feature type that does not read it (for the engine, which serves every feature type)."""
        return self.model_options.get(option.name, option.default)

    def with_options(self, **values: Any) -> RunConfig:
        """A copy with these options (of the run, or of the feature type) changed; nothing is checked."""
        shared = {name: value for name, value in values.items() if name in RUN_OPTIONS}
        model = {name: value for name, value in values.items() if name not in RUN_OPTIONS}
        return replace(self, **shared, model_options=self.model_options.updated(model), resolved=False)

    def given(self) -> dict[str, Any]:
        """The options whose value is not their default: what the user asked for (and, once resolved, the
        model's own defaults that differ from the option's)."""
        declared = declared_options(feature_type(self.feature_type).extractor)
        shared = {name: getattr(self, name) for name, option in RUN_OPTIONS.items()
                  if getattr(self, name) != option.default}
        model = {name: value for name, value in self.model_options.items() if value != declared[name].default}
        return {**shared, **model}

    def recorded(self) -> dict[str, Any]:
        """The options that make the features what they are, as JSON values: what a manifest records and
        compares (inputs, outputs, devices and speed settings are left out; the device type is in)."""
        declared = declared_options(feature_type(self.feature_type).extractor)
        values = {name: _jsonable(value) for name, value in self.model_options.items()
                  if declared[name].changes_features}
        return {"feature_type": self.feature_type, "frames_fps": self.frames_fps, **values,
                "device_type": "cpu" if self.cpu else "cuda"}


def with_recipe(options: Mapping[str, Any]) -> dict[str, Any]:
    """``options`` over the recipe they name (``--preset``, ``--from_manifest``): a recipe is options, resolved
    before the configuration is built from them. Unknown names are refused first."""
    _refuse_unknown(options)
    if options.get("preset") and options.get("from_manifest"):
        raise UsageError("--preset and --from_manifest both give a whole configuration; give one")
    recipe: Mapping[str, Any] = {}
    if options.get("preset"):
        recipe = preset(options["preset"]).options
    if options.get("from_manifest"):
        recipe = recorded_options(options["from_manifest"])
    return {**recipe, **options}


def _refuse_unknown(options: Mapping[str, Any]) -> None:
    unknown = sorted(name for name in options if name not in RUN_OPTIONS and name not in known_options())
    if unknown:
        raise UsageError(f"unknown option {unknown[0]!r}")


def run_options() -> dict[str, Option]:
    """The options of every run, from :class:`RunConfig`'s fields."""
    return {spec.name: Option(spec.name, spec.default, **spec.metadata) for spec in fields(RunConfig)
            if spec.name not in ("model_options", "resolved")}


RUN_OPTIONS = run_options()
reserve_run_options(RUN_OPTIONS)


def _model_values(name: str, values: Mapping[str, Any]) -> dict[str, Any]:
    """The values of feature type ``name``'s own options, converted, former spellings mapped onto the canonical
    names (both spellings with different values are refused); any option it does not read is refused."""
    family = feature_type(name).extractor
    declared = declared_options(family)
    canonical = {former: option.name for option in declared.values() for former in option.former}
    converted: dict[str, Any] = {}
    for option_name in sorted(values, key=lambda key: key in canonical):  # canonical spellings first
        target = canonical.get(option_name, option_name)
        if target not in declared:
            raise UsageError(f"--{option_name} is not read by {name}; {reads_line(family)}")
        value = declared[target].converted(values[option_name])
        if option_name != target and converted.get(target) not in (None, value):
            raise UsageError(f"--{option_name} and --{target} are the same option for {name}; give one")
        if value is not None or target not in converted:
            converted[target] = value
    return converted


def reads_line(family) -> str:
    """What a family reads, for a refusal: ``it reads --a, --b``."""
    names = sorted(declared_options(family))
    return f"it reads {', '.join('--' + name for name in names)}" if names else "it reads no model option"


def recorded_options(manifest_path: str) -> dict[str, Any]:
    """The options recorded in a manifest (what it records beyond options, such as digests, is left out)."""
    known = set(RUN_OPTIONS) | set(known_options())
    return {name: value for name, value in read_manifest(Path(manifest_path))["configuration"].items()
            if name in known and value is not None}


def _jsonable(value: Any) -> Any:
    if isinstance(value, tuple):
        return [_jsonable(item) for item in value]
    if isinstance(value, SamplingMethod):
        return str(value)
    return value


def resolve_config(options: RunConfig | Mapping[str, Any]) -> RunConfig:
    """The complete configuration of a run of one feature type (see the module's docstring). A configuration it
    returned is returned as it is: the main process resolves once (reading a repository's files, checking every
    option), and each worker takes the result."""
    if isinstance(options, RunConfig) and options.resolved:
        return options
    config = options if isinstance(options, RunConfig) else RunConfig.from_options(with_recipe(options))
    spec = feature_type(config.feature_type)
    family = spec.extractor
    declared = declared_options(family)
    for name in config.model_options:
        if name not in declared:
            raise UsageError(f"--{name} is not read by {config.feature_type}; {reads_line(family)}")
    for option in declared.values():
        if option.required and config.model_options.get(option.name) is None:
            example = family.examples.get(option.name, option.example)
            raise UsageError(f"--feature_type {config.feature_type} needs --{option.name} (e.g. {example})")
    defaults = {name: option.default for name, option in declared.items()}
    config = replace(config, model_options=OptionValues({**defaults, **config.model_options}))
    if bool(config.frames_dir) != bool(config.frames_fps):
        raise UsageError("--frames_dir and --frames_fps go together: the frame rate gives the images their times")
    if is_url(config.output_path) and config.collect_pickle:
        raise UsageError("--collect_pickle writes one local file from the outputs: give a local --output_path")
    if config.collect_pickle and config.on_extraction not in ("save_numpy", "save_pickle"):
        raise UsageError("--collect_pickle gathers the saved features: give --on_extraction save_numpy or save_pickle")
    if config.shard_size is not None and (config.on_extraction not in SHARD_SUFFIXES or config.shards):
        raise UsageError("--shard_size sizes the output shards of save_parquet and save_webdataset when the input "
                         "is not --shards (whose shards the output follows)")
    if config.on_extraction in FLOW_IMAGE_MODES and not family.writes_flow:
        writers = [name for name in feature_types() if feature_type(name).extractor.writes_flow]
        raise UsageError(f"--on_extraction {config.on_extraction} writes optical flow; use it with "
                         f"{' or '.join(writers)}")
    weights = spec.weights_for(config)
    config = config.with_options(**family.option_defaults(config, weights))
    family.validate(config, weights)
    return replace(config, resolved=True)


ONE_MODEL_OPTIONS = ("checkpoint", "weights")  # name one model's file or weights: never given to several types


def joint_configs(options: Mapping[str, Any]) -> list[RunConfig]:
    """The configurations of a run of several feature types from one decode of each video (``feature_type``: a
    list): each type gets the run's options and the model options it reads, and is resolved as a run of that type
    alone would be, so its features, folder and manifest are that run's. ``TYPE:option`` gives an option to one
    type only. An option that none of the types reads is refused, as are the options that would make their
    outputs collide and, given to several types at once, those that name one model's weights."""
    types = [options["feature_type"]] if isinstance(options.get("feature_type"), str) else list(options["feature_type"])
    repeated = sorted({name for name in types if types.count(name) > 1})
    if repeated:
        raise UsageError(f"--feature_type names {repeated[0]} twice")
    for name in ("preset", "from_manifest", "output_direct", "collect_pickle"):
        if len(types) > 1 and options.get(name):
            raise UsageError(f"--{name} is for a run of one feature type: its folder, pickle or recipe would be "
                             f"shared by {', '.join(types)}")
    shared = {name: value for name, value in options.items() if name in RUN_OPTIONS and name != "feature_type"}
    model = {name: value for name, value in options.items() if name not in RUN_OPTIONS and ":" not in name}
    readers = {name: _reads(name) for name in types}
    for name in model:
        reading = [kind for kind in types if name in readers[kind]]
        if not reading:
            raise UsageError(f"--{name} is not read by any of {', '.join(types)}")
        if name in ONE_MODEL_OPTIONS and len(reading) > 1:
            raise UsageError(f"--{name} is read by {' and '.join(reading)}: give it to one, with --per_type "
                             f"{reading[0]}:{name}=VALUE (from Python: the option '{reading[0]}:{name}')")
    own: dict[str, dict[str, Any]] = {name: {} for name in types}
    for key, value in options.items():
        if ":" in key:
            kind, name = key.rsplit(":", 1)
            if kind not in own:
                raise UsageError(f"{key}: {kind} is not one of the feature types of this run ({', '.join(types)})")
            own[kind][name] = value
    return [resolve_config({**shared, "feature_type": name,
                            **{option: value for option, value in model.items() if option in readers[name]},
                            **own[name]})
            for name in types]


def _reads(name: str) -> set[str]:
    """Every spelling of the model options feature type ``name`` reads."""
    declared = declared_options(feature_type(name).extractor)
    return {spelling for option in declared.values() for spelling in (option.name, *option.former)}


def output_layout(config: RunConfig) -> OutputLayout:
    """Where a run's outputs go: built once per run (by the runner) and handed to everything that writes or reads
    them."""
    keys = feature_type(config.feature_type).extractor.feature_keys(config)
    folder = output_folder(config.output_path, config.feature_type, config.output_direct)
    if isinstance(folder, str):  # in object storage: each process stages into a folder of its own
        return OutputLayout(STAGING_ROOT / "unstaged", (*keys, "fps", "timestamps_ms"), config.on_extraction, folder)
    return OutputLayout(folder, (*keys, "fps", "timestamps_ms"), config.on_extraction)


def finished_layout(folder: Path, feature_type: str | None = None, on_extraction: str | None = None) -> OutputLayout:
    """The layout of a finished local output folder of one feature type, for reading it back (``pack``,
    ``open_features``): the configuration its ``manifest.json`` records, else ``feature_type`` with default
    options; its files ``.npy`` or, where the folder holds only pickles of the main output, ``.pkl`` (or as
    ``on_extraction`` says)."""
    manifest = folder / MANIFEST_FILE
    if manifest.exists():
        config = resolve_config({"from_manifest": str(manifest)})
    elif feature_type:
        config = resolve_config({"feature_type": feature_type})
    else:
        raise UsageError(f"{folder}: no {MANIFEST_FILE}; give the feature type that made it (--feature_type)")
    layout = output_layout(config.with_options(output_path=str(folder), output_direct=True, on_extraction="save_numpy"))
    if on_extraction is None:
        pickled = not any(folder.rglob(f"*_{layout.main_key}.npy")) and any(folder.rglob(f"*_{layout.main_key}.pkl"))
        on_extraction = "save_pickle" if pickled else "save_numpy"
    return layout.in_folder(folder, on_extraction)