"""Every option is either read by a feature type or refused for it; the run configuration is the same object
from the command line and from Python; former spellings keep working. The options tried are the declarations
themselves (each with its example value), so a new option is covered without an edit here."""
from __future__ import annotations

import pytest

from extractors.cli import build_parser, parse_options
from extractors.config import RUN_OPTIONS, resolve_config
from extractors.registry import declared_everywhere, declared_options, extractor_class, feature_types, former_spellings
from io_utils.errors import UsageError
from io_utils.sampling import parse_extract_method

MODEL_OPTIONS = {option.name: option for option in declared_everywhere()}
# every name the command line takes: options of every run, of some family, and former spellings (with the example
# of the option they stand for)
EXAMPLES = {**{name: option.example for name, option in {**RUN_OPTIONS, **MODEL_OPTIONS}.items()},
            **{former: MODEL_OPTIONS[next(iter(stands_for))].example
               for former, stands_for in former_spellings().items() if former not in MODEL_OPTIONS}}
EXAMPLES.pop("feature_type")


def required_options(feature_type: str) -> dict:
    """What a feature type cannot run without, at its example value."""
    family = extractor_class(feature_type)
    return {**{option.name: option.example for option in declared_options(family).values() if option.required},
            **family.examples}


def test_every_example_differs_from_its_default_and_the_parser_offers_exactly_the_declared_names():
    for option in [*RUN_OPTIONS.values(), *MODEL_OPTIONS.values()]:
        assert option.example != option.default, option.name
        assert option.converted(option.example) is not None, option.name
    parser_only = ("help", "list_presets", "list_models", "per_type")  # per_type: spells "TYPE:OPTION" keys
    offered = {action.dest for action in build_parser()._actions if action.dest not in parser_only}
    assert offered == set(EXAMPLES) | {"feature_type"}


@pytest.mark.parametrize("feature_type", feature_types())
@pytest.mark.parametrize("option", sorted(EXAMPLES))
def test_every_option_is_read_or_refused(feature_type, option):
    family = extractor_class(feature_type)
    refusal = f"--{option} is not read by {feature_type}"
    options = {"feature_type": feature_type, **required_options(feature_type), option: EXAMPLES[option]}
    read = option in RUN_OPTIONS or any(option in (declared.name, *declared.former) for declared in family.options)
    try:
        resolve_config(options)
    except UsageError as error:  # a read option may need others (--pred_texts needs --show_pred, i3d's
        refused = str(error).startswith(refusal + ";")  # --flow_dir needs --flow_type precomputed...)
        assert refused != read, str(error)
    else:
        assert read, f"{option} is accepted by {feature_type} but not among the options it reads"


@pytest.mark.parametrize("options, message", [
    (dict(feature_type="CLIP-ViT-B/32", stack_size=16), "--stack_size is not read by CLIP-ViT-B/32; it reads "),
    (dict(feature_type="resnet50", step_size=8), "--step_size is not read by resnet50"),
    (dict(feature_type="r21d", pred_texts=["a dog"]), "--pred_texts is not read by r21d"),
    (dict(feature_type="resnet50", clip_checkpoint="x.pt"), "--clip_checkpoint is not read by resnet50"),
    (dict(feature_type="s3d", flow_dir="x"), "--flow_dir is not read by s3d"),
    (dict(feature_type="raft", stack_size=16), "--stack_size is not read by raft"),
    (dict(feature_type="raft", pool="mean"), "--pool is not read by raft"),
    (dict(feature_type="vggish", crops=10), "--crops is not read by vggish"),
    (dict(feature_type="tsn", collect_pickle="all.pkl"), "--collect_pickle gathers the saved features: give "),
    (dict(feature_type="CLIP-ViT-B/32", checkpoint="x.pt", clip_checkpoint="y.pt"),
     "--clip_checkpoint and --checkpoint are the same option for CLIP-ViT-B/32; give one"),
    (dict(feature_type="timm", model_name="test_vit", show_pred=True), "--show_pred is not read by timm"),
    (dict(feature_type="timm"), "--feature_type timm needs --model_name (e.g. resnet50.a1_in1k)"),
    (dict(feature_type="i3d", flow_type="pwc", raft_model="small"), "--raft_model is not read by i3d with --flow_type pwc"),
    (dict(feature_type="i3d", streams=["rgb"], flow_type="pwc"), "--flow_type is not read by i3d with --streams without flow"),
    (dict(feature_type="i3d", flow_dir="x"), "--flow_dir is not read by i3d with --flow_type raft"),
    (dict(feature_type="pwc", flow_bound=10), "--flow_bound is read only with --on_extraction save_flow_images"),
    (dict(feature_type="CLIP-ViT-B/32", pred_texts=["a dog"]), "--pred_texts are the texts that --show_pred scores"),
    (dict(feature_type="CLIP-ViT-B/32", views=3, extract_method="uni_4"), "--views N takes N frames"),
    (dict(feature_type="CLIP-ViT-B/32", on_extraction="save_flow_images"), "writes optical flow; use it with raft or pwc"),
    (dict(feature_type="r21d", weights="r2plus1d_50"), "--weights r2plus1d_50: not available for r21d; choose one of"),
    (dict(feature_type="raft", raft_model="small", weights="kitti"), "--weights kitti: not available for raft; choose"),
    (dict(feature_type="i3d", raft_model="small", raft_weights="kitti"),
     "--raft_weights kitti: not available for raft_small; choose one of"),
    (dict(feature_type="resnet18", batch_size=0), "--batch_size 0: must be a positive integer"),
    (dict(feature_type="resnet18", extract_method="uni_0"), "must be positive; accepted forms"),
    (dict(feature_type="resnet18", crops=4), "--crops 4: choose from 1, 3, 5, 10"),
    (dict(feature_type="nope"), "unknown feature type 'nope'"),
    (dict(feature_type="resnet18", stack=16), "unknown option 'stack'"),
])
def test_refusals_are_one_line_naming_the_option(options, message):
    with pytest.raises(UsageError) as caught:
        resolve_config(options)
    assert message in str(caught.value) and "\n" not in str(caught.value)


def test_command_line_and_python_give_the_same_config():
    argv = ["--feature_type", "r21d", "--cpu", "--video_paths", "a.mp4", "--extraction_fps", "2", "--model_name",
            "r2plus1d_34_8_ig65m_ft_kinetics", "--crops", "3"]
    from_cli = resolve_config(parse_options(argv))
    from_python = resolve_config(dict(feature_type="r21d", cpu=True, video_paths=["a.mp4"], extraction_fps=2,
                                      weights="r2plus1d_34_8_ig65m_ft_kinetics", crops=3))
    assert from_cli == from_python
    assert {name: from_cli.model_options[name] for name in ("weights", "stack_size", "step_size")} == dict(
        weights="r2plus1d_34_8_ig65m_ft_kinetics", stack_size=8, step_size=8)
    assert "model_name" not in from_cli.model_options  # the former spelling became --weights
    assert resolve_config(from_cli) is from_cli  # resolved once: a worker takes it as it is
    changed = from_cli.with_options(crops=1)
    assert not changed.resolved and resolve_config(changed).resolved  # a changed one is resolved again
    with pytest.raises(UsageError, match="--weights nope: not available for r21d"):
        resolve_config(from_cli.with_options(weights="nope"))


def test_defaults_come_from_the_weights_and_former_spellings_map_onto_options():
    resnext = resolve_config(dict(feature_type="resnext101_3d"))
    names = ("stack_size", "step_size", "extraction_fps", "weights")
    assert {name: resnext.model_options[name] for name in names} == dict(
        stack_size=16, step_size=16, extraction_fps=24.0, weights="howto100m")
    raft = resolve_config(dict(feature_type="raft", raft_model="small", raft_weights="things", flow_checkpoint="f.pth"))
    assert (raft.model_options["weights"], raft.model_options["checkpoint"]) == ("C_T_V2", "f.pth")
    assert "raft_weights" not in raft.model_options and "flow_checkpoint" not in raft.model_options
    assert resolve_config(dict(feature_type="raft")).model_options["weights"] == "C_T_SKHT_V2"
    clip = resolve_config(dict(feature_type="CLIP-ViT-B/32", clip_checkpoint="c.pt", extract_method="all"))
    assert clip.model_options["checkpoint"] == "c.pt"
    assert clip.model_options["extract_method"] == parse_extract_method("all")
    assert resolve_config(dict(feature_type="i3d", streams=["flow"])).model_options["stack_size"] == 64


def test_a_feature_type_reads_only_the_options_it_declares():
    clip = resolve_config(dict(feature_type="CLIP-ViT-B/32"))
    assert set(clip.model_options) == {option.name for option in extractor_class("CLIP-ViT-B/32").options}
    assert "stack_size" not in clip.model_options  # config[STACK_SIZE] gives the engine the option's default
