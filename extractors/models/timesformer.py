"""TimeSformer clip features, a named entry of the transformers path (``extractors/models/transformers_models.py``).

``--weights k400_base`` (default): ``facebook/timesformer-base-finetuned-k400``, divided space-time attention
fine-tuned on Kinetics-400 at 8 frames of 224 px. Windows are 8 frames at 30/32 fps: the authors' Kinetics
configuration (``TimeSformer_divST_8x32_224``) takes 8 frames every 32nd frame of 30 fps video. The feature is the
classifier's input: the class token of the last hidden state, after the final norm (768-d).
"""
from __future__ import annotations

from extractors.models.hub_repository import hub_entry
from extractors.models.transformers_models import TransformersEntry
from extractors.predictions import kinetics400_labels
from extractors.registry import FeatureType, ModelDocs, register
from extractors.weights import WeightsTable


def _kinetics_classifier():
    from transformers import TimesformerConfig, TimesformerForVideoClassification

    return TimesformerForVideoClassification(TimesformerConfig(id2label=dict(enumerate(kinetics400_labels()))))


class ExtractTimeSformer(TransformersEntry):
    """One 768-d feature per 8-frame window; key ``timesformer``."""

    key = "timesformer"
    docs = ModelDocs("transformers", "transformers.md", "TimeSformer (Kinetics-400), 8-frame windows, a named "
                     "entry of the transformers path", "windows", "`timesformer`, 768")
    default_embedding = "cls"

    @staticmethod
    def publishes_processor(network):
        from transformers import VideoMAEImageProcessor

        return VideoMAEImageProcessor(image_mean=[0.45] * 3, image_std=[0.225] * 3)


TIMESFORMER_WEIGHTS = WeightsTable([hub_entry("k400_base", "facebook/timesformer-base-finetuned-k400",
                                              _kinetics_classifier, embed_dim=768, stack_size=8, fps=30 / 32)],
                                   default="k400_base")
register(FeatureType("timesformer", ExtractTimeSformer, TIMESFORMER_WEIGHTS))
