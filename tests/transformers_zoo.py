"""Small random hub repositories of the transformers models that ``--feature_type transformers`` must run.

Each entry is the model's own configuration shrunk (fewer, narrower layers; small frames) so that a forward pass
takes milliseconds on a CPU, written with transformers' own ``save_pretrained`` (``config.json`` +
``model.safetensors``) beside the processor file its published repositories carry, written by the processor
class transformers itself uses for it. The tests run the tool on these folders and compare it with
transformers' own pipeline.
"""
from __future__ import annotations

import functools
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch

TINY = dict(hidden_size=32, num_hidden_layers=2, num_attention_heads=2, intermediate_size=64)
TINY_TEXT = dict(vocab_size=99, max_position_embeddings=64, **TINY)


@dataclass(frozen=True)
class Repository:
    """One model: its type, the architecture its repository saves, its shrunk configuration and its processor."""

    name: str
    modality: str  # video, image or audio
    architecture: str
    config: Callable[[], Any]
    processor: Callable[[], Any]
    reference: Callable[[Any, Any, Any], torch.Tensor]  # (model, processor, one input's frames or samples)
    options: dict = field(default_factory=dict)
    other_processor: Callable[[], Any] | None = None  # of a model of two modalities, the other one's

    def write(self, folder: Path, seed: int = 0) -> Path:
        import transformers

        torch.manual_seed(seed)
        network = getattr(transformers, self.architecture)(self.config())
        with torch.no_grad():  # constants (norms, biases) made random: a loader that dropped one would show
            for parameter in network.parameters():
                parameter.add_(0.02 * torch.randn_like(parameter))
        network.save_pretrained(folder)
        self.processor().save_pretrained(folder)
        if self.other_processor is not None:
            self.other_processor().save_pretrained(folder)
        return folder


def _config(name: str, **values: Any) -> Callable[[], Any]:
    def build():
        import transformers

        return getattr(transformers, name)(**values)
    return build


def _processor(name: str, **values: Any) -> Callable[[], Any]:
    return _config(name, **values)


# How each model's documentation page runs it on one input (a window's frames, one frame, or an example's samples).
def _video_features(model, processor, frames):
    """Video processors take the window as one video, their frame sampling off (the window is the sample)."""
    inputs = processor(videos=[np.stack(frames)], do_sample_frames=False, return_tensors="pt")
    return _pooled(model.get_video_features(**inputs))


def _frames_as_one_video(model, processor, frames, pooling="pooler"):
    """Image processors of video models (VideoMAE's, ViViT's) take a list of frames as one video."""
    outputs = model(**processor(list(frames), return_tensors="pt"))
    return outputs.pooler_output if pooling == "pooler" else outputs.last_hidden_state.mean(dim=1)


def _xclip(model, processor, frames):
    """XCLIPProcessor gives the frames to CLIP's image processor, one video of T images."""
    pixel_values = processor(images=list(frames), return_tensors="pt").pixel_values[None]
    return model.get_video_features(pixel_values=pixel_values).pooler_output


def _videoprism_video(model, processor, frames):
    inputs = processor(videos=[np.stack(frames)], do_sample_frames=False, return_tensors="pt")
    return model(**inputs).pooler_output.reshape(1, -1)


def _image(model, processor, frame, method=None):
    inputs = processor(images=frame, return_tensors="pt")
    return _pooled(getattr(model, method)(**inputs)) if method else model(**inputs).pooler_output


def _audio(model, processor, samples, pooling="mean"):
    inputs = processor(samples, sampling_rate=processor.sampling_rate, return_tensors="pt")
    outputs = model(**inputs)
    return outputs.pooler_output if pooling == "pooler" else outputs.last_hidden_state.mean(dim=1)


def _whisper(model, processor, samples):
    inputs = processor(samples, sampling_rate=processor.sampling_rate, return_tensors="pt")
    return model.encoder(inputs.input_features).last_hidden_state.mean(dim=1)


def _pe_video(model, processor, frames):
    """Perception Encoder's video embedding as its model's forward computes it (``video_embeds``; transformers
    5.23 defines ``PeVideoModel.get_video_features`` inside ``__init__``, so the class lacks it)."""
    video_model = getattr(model, "video_model", model)  # PeAudioVideoModel holds a PeVideoModel
    inputs = processor(videos=[np.stack(frames)], do_sample_frames=False, return_tensors="pt")
    return video_model(input_ids=torch.tensor([[1, 5, 2]]), **inputs).video_embeds


def _pe_audio(model, processor, samples):
    inputs = processor(samples, sampling_rate=processor.sampling_rate, return_tensors="pt")
    return model.get_audio_embeds(**inputs)


def _pooled(output):
    return output if isinstance(output, torch.Tensor) else output.pooler_output.reshape(len(output.pooler_output), -1)


_PE = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, num_key_value_heads=2,
           head_dim=16)
_PE_TEXT = dict(hidden_size=32, intermediate_size=64, num_hidden_layers=1, num_attention_heads=2, vocab_size=99,
                pad_token_id=0, bos_token_id=1, eos_token_id=2, cls_token_id=1, sep_token_id=2)
_PE_VIDEO = dict(vision_config=dict(architecture="vit_pe_core_tiny_patch16_384", do_pooling=True, num_classes=32,
                                    global_pool="map", model_args=dict(img_size=32, depth=1)), **_PE)
_PE_AUDIO = dict(dac_config=dict(encoder_hidden_size=8, downsampling_ratios=[2, 4], decoder_hidden_size=8, hidden_size=16,
                                 codebook_dim=8), **_PE)
_PE_VIDEO_PROCESSOR = _processor("PeVideoVideoProcessor", do_resize=True, size={"height": 32, "width": 32},
                                 do_rescale=True, do_normalize=True, image_mean=[0.5] * 3, image_std=[0.5] * 3)
_IMAGE = dict(size={"shortest_edge": 40}, crop_size={"height": 32, "width": 32})
ZOO = [
    Repository("videoprism", "video", "VideoPrismClipModel", _config(
        "VideoPrismConfig", text_config=dict(TINY_TEXT), vision_config=dict(
            image_size=32, num_frames=4, tubelet_size=(1, 8, 8), hidden_size=32, num_attention_heads=2,
            intermediate_size=64, num_spatial_layers=1, num_temporal_layers=1, num_auxiliary_layers=1)),
        _processor("LlavaOnevisionVideoProcessor", size={"height": 32, "width": 32}), _video_features),
    Repository("videoprism_video", "video", "VideoPrismVideoModel", _config(
        "VideoPrismVisionConfig", image_size=32, num_frames=4, tubelet_size=(1, 8, 8), hidden_size=32,
        num_attention_heads=2, intermediate_size=64, num_spatial_layers=1, num_temporal_layers=1),
        _processor("LlavaOnevisionVideoProcessor", size={"height": 32, "width": 32}), _videoprism_video),
    Repository("xclip", "video", "XCLIPModel", _config(
        "XCLIPConfig", projection_dim=32, prompt_layers=1, prompt_num_attention_heads=2,
        text_config=dict(TINY_TEXT), vision_config=dict(image_size=32, patch_size=8, num_frames=4, mit_hidden_size=32,
                                                        mit_intermediate_size=64, mit_num_attention_heads=2, **TINY)),
        _processor("CLIPImageProcessor", **_IMAGE), _xclip),
    Repository("timesformer", "video", "TimesformerModel", _config(
        "TimesformerConfig", image_size=32, patch_size=8, num_frames=4, **TINY),
        _processor("VideoMAEImageProcessor", **_IMAGE), functools.partial(_frames_as_one_video, pooling="mean")),
    Repository("vivit", "video", "VivitModel", _config(
        "VivitConfig", image_size=32, num_frames=4, tubelet_size=(2, 8, 8), **TINY),
        _processor("VivitImageProcessor", **_IMAGE), _frames_as_one_video),
    Repository("dinov3", "image", "DINOv3ViTModel", _config(
        "DINOv3ViTConfig", image_size=32, patch_size=8, **TINY),
        _processor("DINOv3ViTImageProcessorFast", size={"height": 32, "width": 32}), _image),
    Repository("siglip2", "image", "Siglip2Model", _config(
        "Siglip2Config", text_config=dict(TINY_TEXT), vision_config=dict(patch_size=8, num_patches=16, **TINY)),
        _processor("Siglip2ImageProcessor", patch_size=8, max_num_patches=16), functools.partial(_image, method="get_image_features")),
    Repository("ast", "audio", "ASTModel", _config(
        "ASTConfig", max_length=128, num_mel_bins=32, patch_size=16, frequency_stride=10, time_stride=10, **TINY),
        _processor("ASTFeatureExtractor", max_length=128, num_mel_bins=32), functools.partial(_audio, pooling="pooler")),
    Repository("whisper", "audio", "WhisperModel", _config(
        "WhisperConfig", num_mel_bins=16, d_model=32, encoder_layers=1, decoder_layers=1, encoder_attention_heads=2,
        decoder_attention_heads=2, encoder_ffn_dim=64, decoder_ffn_dim=64, max_source_positions=150,
        vocab_size=99, max_target_positions=32, pad_token_id=0, bos_token_id=1, eos_token_id=2,
        decoder_start_token_id=1),
        _processor("WhisperFeatureExtractor", feature_size=16, chunk_length=3), _whisper),
    Repository("wav2vec2", "audio", "Wav2Vec2Model", _config(
        "Wav2Vec2Config", conv_dim=(16, 16), conv_kernel=(10, 3), conv_stride=(5, 2), num_feat_extract_layers=2,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, **TINY),
        _processor("Wav2Vec2FeatureExtractor", do_normalize=True), _audio),
    Repository("hubert", "audio", "HubertModel", _config(
        "HubertConfig", conv_dim=(16, 16), conv_kernel=(10, 3), conv_stride=(5, 2), num_feat_extract_layers=2,
        num_conv_pos_embeddings=16, num_conv_pos_embedding_groups=2, **TINY),
        _processor("Wav2Vec2FeatureExtractor", do_normalize=False), _audio),
    Repository("pe_video", "video", "PeVideoModel", _config(
        "PeVideoConfig", text_config=_PE_TEXT, video_config=_PE_VIDEO), _PE_VIDEO_PROCESSOR, _pe_video,
        options=dict(stack_size=4)),
    Repository("pe_audio", "audio", "PeAudioModel", _config(
        "PeAudioConfig", text_config=_PE_TEXT, audio_config=_PE_AUDIO),
        _processor("PeAudioFeatureExtractor"), _pe_audio),
    Repository("pe_audio_video", "video", "PeAudioVideoModel", _config(
        "PeAudioVideoConfig", text_config=_PE_TEXT, audio_video_config=dict(
            audio_config=_PE_AUDIO, video_config=_PE_VIDEO, **_PE)), _PE_VIDEO_PROCESSOR, _pe_video,
        options=dict(stack_size=4), other_processor=_processor("PeAudioFeatureExtractor")),
    Repository("pe_audio_video_audio", "audio", "PeAudioVideoModel", _config(
        "PeAudioVideoConfig", text_config=_PE_TEXT, audio_video_config=dict(
            audio_config=_PE_AUDIO, video_config=_PE_VIDEO, **_PE)), _processor("PeAudioFeatureExtractor"), _pe_audio,
        options=dict(modality="audio"), other_processor=_PE_VIDEO_PROCESSOR),
]
