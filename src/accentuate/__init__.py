"""accentuate: feature accentuation for PyTorch vision models.

Feature accentuation (Hamblin et al., arXiv 2402.10039) is image-seeded feature
visualization: it changes a real photo so a chosen feature (a class logit, a
neuron, a channel, a direction) rises, while keeping the model's intermediate
activations close to the photo's. The result shows *what* in the photo drives
the feature; the accumulated gradient shows *where*.

>>> import accentuate as acc                                       # doctest: +SKIP
>>> model = acc.load_model("efficientnet_lite0")                   # doctest: +SKIP
>>> res = acc.accentuate(model, "photo.jpg", ["goldfish", 207])    # doctest: +SKIP
>>> res.images.shape  # (seeds, targets, 3, H, W)                  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
from typing import Any

from ._version import __version__
from .analysis.concepts import Concepts, concepts
from .analysis.leastchange import LeastChange, least_change
from .analysis.sae_training import SAETraining, train_sae
from .augment import Crops, apply_crops, sample_crops
from .clip import CLIPImage, clip_text, load_clip
from .engine import Accentuator, accentuate
from .errors import (
    AccentuateError,
    ClassNameError,
    ImageError,
    JudgeError,
    LayerError,
    ModelError,
    ModelNameError,
    OutputError,
    TargetError,
    UsageError,
)
from .hooks import INPUT, OUTPUT, LayerInfo, ModelRunner, capture, default_reg_layer, input_of, layers, model_state
from .images import image_files, load_image, prepare_seeds
from .judges import Judge, Judgement, judge, weights_digest
from .labels import find_class, imagenet_labels, search_classes
from .layout import Layout
from .models import load as load_model
from .objectives import (
    Objective,
    channel,
    direction,
    head,
    head_projection,
    heads_of,
    latent,
    like,
    logit,
    neuron,
    objective,
    parse_target,
)
from .opacity import to_alpha
from .params import PARAMS, FourierParam, ImageParam, PhaseParam, PixelParam, make_param, register_param
from .photos import PHOTOS, photo
from .regularize import Regularizer
from .result import History, Result
from .runs import saved as _saved  # noqa: F401 (registers Result.save/load: see accentuate.saving)
from .sae import SparseAutoencoder, load_sae, save_sae
from .settings import PRESETS, Settings, Until
from .spec import ModelSpec, resolve_spec

__all__ = [
    "AccentuateError", "Accentuator", "CLIPImage", "ClassNameError", "Concepts", "Crops", "FourierParam", "History", "INPUT",
    "ImageError", "ImageParam", "Judge", "JudgeError", "Judgement", "LayerError", "LayerInfo", "Layout", "LeastChange", "ModelError", "ModelNameError",
    "ModelRunner", "ModelSpec", "OUTPUT", "Objective", "OutputError", "PARAMS", "PHOTOS", "PRESETS", "PhaseParam",
    "PixelParam", "Regularizer", "Result", "SAETraining", "Settings", "SparseAutoencoder", "TargetError", "Until",
    "UsageError", "__version__", "accentuate",
    "apply_crops", "capture", "channel", "clip_text", "concepts", "default_reg_layer", "direction", "find_class", "head",
    "head_projection", "heads_of", "image_files", "imagenet_labels", "input_of", "judge", "latent", "layers",
    "least_change", "like", "load_clip", "load_image", "load_model", "load_sae", "logit", "make_param", "model_state",
    "neuron", "objective", "parse_target", "photo",
    "prepare_seeds", "register_param", "resolve_spec", "sample_crops", "save_sae", "search_classes", "to_alpha",
    "train_sae", "weights_digest",
]


def __getattr__(name: str) -> Any:
    """``acc.study`` (the human study kit: ``build``, ``observe``, ``analyze``) is imported on first
    use, so that ``import accentuate`` does not load it; it is not in ``__all__``: pdoc documents the
    package once."""
    if name == "study":
        module = importlib.import_module(f"{__name__}.study")
        globals()[name] = module
        return module
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
