"""Presets: the options of widely used published feature sets, kept as data.

``--preset NAME`` starts from a preset's options; options given explicitly override them. ``--list_presets``
prints each preset, what it reproduces, what is known to differ, and its resolved configuration.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Mapping


@dataclass(frozen=True)
class Preset:
    options: Mapping[str, Any]
    reproduces: str  # the paper or repository whose features these are
    differs: str  # what is known to differ from the original extractor ("" if nothing is known)


PRESETS: dict[str, Preset] = {
    "howto100m_2d": Preset(
        dict(feature_type="resnet152", extract_method="fix_1", side_size=224, l2_normalize=True, dtype="float16"),
        "HowTo100M 2D features (Miech et al., ICCV 2019; antoine77340/video_feature_extractor, --type 2d): "
        "ImageNet ResNet-152, 1 frame per second, the whole frame at a short side of 224, globally average-pooled, "
        "L2-normalised, float16",
        "frames are resized with torchvision's antialiased bilinear filter where the original uses FFmpeg's "
        "bicubic scale filter, and taken on screen at k s where FFmpeg's fps filter rounds to the nearest frame",
    ),
    "howto100m_3d": Preset(
        dict(feature_type="resnext101_3d", l2_normalize=True, dtype="float16"),
        "HowTo100M 3D features (Miech et al., ICCV 2019; antoine77340/video_feature_extractor, --type 3d): "
        "Kinetics 3D ResNeXt-101, 24 fps, 16-frame windows (1.5 features per second), 112x112, L2-normalised, "
        "float16",
        "the last partial window is dropped (the original zero-pads it; --pad_last repeats its last frame); "
        "frames are taken on screen at k/24 s where FFmpeg's fps filter rounds to the nearest frame",
    ),
    "i3d_two_stream": Preset(
        dict(feature_type="i3d", streams=("rgb", "flow"), flow_type="raft", stack_size=64, step_size=64),
        "two-stream I3D as v-iashin/video_features extracts it by default: 64-frame windows every 64 frames of "
        "the original frame rate, RAFT flow between consecutive frames, Kinetics-400 I3D (piergiaj's weights)",
        "RAFT is torchvision's raft_large (C_T_SKHT_V2) unless --raft_weights says otherwise; the peer loads "
        "princeton-vl's raft-sintel.pth (pass it with --flow_checkpoint to match)",
    ),
    "i3d_rgb_ten_crop": Preset(
        dict(feature_type="i3d", streams=("rgb",), stack_size=16, step_size=16, extraction_fps=25.0, crops=10),
        "ten-crop I3D RGB features of the weakly supervised anomaly-detection baselines (RTFM, MGFN, ... on "
        "UCF-Crime and ShanghaiTech): 16-frame windows at 25 fps, four corners, centre and their mirror images",
        "those features were made with GowthamGottimukkala/I3D_Feature_Extraction_resnet (an I3D ResNet-50, "
        "frames resized to 340x256); this preset uses piergiaj's Inception I3D at a short side of 256",
    ),
    "clip_vit_b32_1fps": Preset(
        dict(feature_type="CLIP-ViT-B/32", extract_method="fix_1"),
        "CLIP ViT-B/32 image embeddings at 1 frame per second (CLIP4Clip-style retrieval and captioning "
        "pipelines), OpenAI's weights and preprocessing (bicubic short side 224, centre crop)",
        "",
    ),
    "clip_vit_l14_1fps": Preset(
        dict(feature_type="CLIP-ViT-L/14", extract_method="fix_1"),
        "CLIP ViT-L/14 image embeddings at 1 frame per second, as video-LLM and moment-retrieval pipelines take "
        "them: OpenAI's weights and preprocessing (bicubic resize of the short side of a PIL image to 224, centre "
        "crop)",
        "frames are taken on screen at k s (presentation time); pipelines that sample with FFmpeg's fps filter "
        "or by frame index can take a neighbouring frame",
    ),
    "qvhighlights_slowfast": Preset(
        dict(feature_type="slowfast", pad_last=True, dtype="float16"),
        "QVHighlights / Moment-DETR SlowFast features (Lei et al., NeurIPS 2021; linjieli222/"
        "HERO_Video_Feature_Extractor with --clip_len 2): PySlowFast's Kinetics-400 SLOWFAST_8x8_R50 (Caffe2 "
        "checkpoint), 30 fps, one 2304-d feature per 2 s clip from 32 of its frames, short side 224 and centre "
        "crop, float16, the last clip padded with its last frame",
        "frames are taken on screen at k/30 s and resized with a bicubic filter on tensors, where the original "
        "uses FFmpeg's fps and bicubic scale filters; its crop offset rounds down where torchvision's rounds",
    ),
    "siglip2_b16_1fps": Preset(
        dict(feature_type="open_clip", model_name="ViT-B-16-SigLIP2", pretrained="webli", extract_method="fix_1"),
        "SigLIP 2 ViT-B/16 (WebLI) image embeddings at 1 frame per second, open_clip's release of Google's "
        "weights with the tag's preprocessing (bicubic squash of a PIL image to 224x224, mean and std 0.5)",
        "these are open_clip's port; Google's big_vision pipeline and the transformers port resize with their own "
        "filters, so their inputs differ from these by a few grey levels",
    ),
}


def preset(name: str) -> Preset:
    from io_utils.errors import UsageError

    if name not in PRESETS:
        raise UsageError(f"--preset {name}: unknown; choose one of {', '.join(PRESETS)} (see --list_presets)")
    return PRESETS[name]
