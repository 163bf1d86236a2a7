"""Hugging Face image classifiers: ``hf:NAME`` (the hub) and ``hf:/path/to/dir`` (offline).

A directory written by ``model.save_pretrained(dir)`` (and, for the preprocessing,
``processor.save_pretrained(dir)``) is the offline path: nothing is downloaded.
:func:`load_hf` builds the model with ``AutoModelForImageClassification`` and its
:class:`~accentuate.spec.ModelSpec` from what was saved with it:

- ``input_size``: the processor's ``crop_size`` when it centre-crops, else its
  ``size`` (``height`` x ``width``, or ``shortest_edge`` squared), else the config's
  ``image_size``;
- ``normalize``: the processor's ``image_mean`` / ``image_std``, rescaled to input in
  [0, 1] (``(x * 255 * rescale_factor - mean) / std``); ``None`` when it does neither;
- ``labels``: ``config.id2label`` in index order, or ``None`` when those are the
  generic ``LABEL_0``, ``LABEL_1`` ... that ``transformers`` fills in;
- ``output="logits"``; ``patch_size`` from the config when it has one (ViT, DeiT, BEiT,
  DINOv2), so token layers get their exact patch grid.

``transformers`` is imported only here, when an ``hf:`` name is loaded.
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelError, ModelNameError
from ..spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec, declared_labels, field_of

__all__ = ["hf_spec", "is_local", "load_hf"]


def is_local(name: str) -> bool:
    """Whether ``name`` means a directory rather than a hub id: it exists, or it starts
    like a path (``/``, ``./``, ``../``, ``~``) or is a Windows drive path."""
    return (name.startswith(("/", "./", "../", "~", ".\\", "..\\")) or (len(name) > 1 and name[1] == ":")
            or os.path.isdir(os.path.expanduser(name)))


def _size(processor: Any, config: Any) -> tuple[int, int] | None:
    crop = field_of(processor, "crop_size")
    if crop is not None and field_of(processor, "do_center_crop") is not False:
        h, w = field_of(crop, "height"), field_of(crop, "width")
        if h and w:
            return int(h), int(w)
    size = field_of(processor, "size")
    if isinstance(size, int):
        return size, size
    h, w = field_of(size, "height"), field_of(size, "width")
    if h and w:
        return int(h), int(w)
    edge = field_of(size, "shortest_edge")
    if edge:
        return int(edge), int(edge)
    image_size = getattr(config, "image_size", None)
    if isinstance(image_size, int):
        return image_size, image_size
    if isinstance(image_size, Sequence) and len(image_size) == 2:
        return int(image_size[0]), int(image_size[1])
    return None


def _triple(value: Any, what: str) -> tuple[float, float, float]:
    values = [float(value)] * 3 if isinstance(value, (int, float)) else [float(v) for v in value]
    if len(values) != 3:
        raise ModelError(f"the processor's {what} has {len(values)} values; accentuate feeds 3-channel RGB")
    return values[0], values[1], values[2]


def _normalize(processor: Any) -> tuple[tuple[float, ...], tuple[float, ...]] | None:
    """``(mean, std)`` for input in [0, 1] that reproduce the processor's rescale + normalize."""
    # The processor sees 0..255 pixels, multiplies them by rescale_factor (when do_rescale),
    # then normalizes: (255 k x - mean) / std = (x - mean / (255 k)) / (std / (255 k)).
    rescale = field_of(processor, "do_rescale") is not False
    scale = 255.0 * float(field_of(processor, "rescale_factor") or 1 / 255) if rescale else 255.0
    if field_of(processor, "do_normalize") is False:
        if abs(scale - 1.0) < 1e-9:
            return None
        mean, std = (0.0, 0.0, 0.0), (1.0, 1.0, 1.0)
    else:
        mean = _triple(field_of(processor, "image_mean") or IMAGENET_MEAN, "image_mean")
        std = _triple(field_of(processor, "image_std") or IMAGENET_STD, "image_std")
    return tuple(m / scale for m in mean), tuple(s / scale for s in std)


def hf_spec(name: str, config: Any, processor: Any | None) -> ModelSpec:
    """The spec of a Hugging Face classifier from its config and image processor.

    With no processor, the config's ``image_size`` (else 224) and ImageNet mean/std
    are used, with a warning saying so.
    """
    if processor is None:
        warnings.warn(
            f"hf:{name} has no image processor (preprocessor_config.json); assuming ImageNet mean/std and the "
            "config's image_size (save the processor with processor.save_pretrained(dir) to use its own)",
            stacklevel=3,
        )
    size = _size(processor, config) or (224, 224)
    patch = getattr(config, "patch_size", None)
    return ModelSpec(
        name=f"hf:{name}",
        input_size=size,
        normalize=_normalize(processor) if processor is not None else (IMAGENET_MEAN, IMAGENET_STD),
        labels=declared_labels(getattr(config, "id2label", None)),
        output="logits",
        patch_size=patch if isinstance(patch, int) else None,
    )


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


def load_hf(name: str) -> nn.Module:
    """Load a Hugging Face image classifier by hub id or ``save_pretrained`` directory.

    Args:
        name: ``google/vit-base-patch16-224`` (downloaded by ``transformers``, or read from
            its cache) or a directory (``/path/to/dir``, ``./dir``, ``~/dir``).

    Returns:
        The model in eval mode, float32, with ``accentuate_spec`` (see the module docstring).

    Raises:
        ModelNameError: ``transformers`` is missing, the directory does not exist or holds no
            ``config.json``, or the hub id cannot be loaded (e.g. offline).
        ModelError: the checkpoint has no trained classification head.
    """
    try:
        transformers = importlib.import_module("transformers")
    except Exception as e:
        raise ModelNameError(
            f"hf:{name} needs transformers ({type(e).__name__}: {e}); `pip install transformers`"
        ) from None
    local = is_local(name)
    source = os.path.expanduser(name) if local else name
    if local:
        if not Path(source).is_dir():
            raise ModelNameError(f"hf:{name}: no such directory; give a folder written by save_pretrained()")
        if not (Path(source) / "config.json").is_file():
            raise ModelNameError(
                f"hf:{name} has no config.json; give a folder written by model.save_pretrained(dir)"
            )
    try:
        model, info = transformers.AutoModelForImageClassification.from_pretrained(source, output_loading_info=True)
    except (OSError, ValueError) as e:
        hint = ("" if local else "; offline, save the model with save_pretrained(dir) where it can be downloaded "
                "and pass hf:/path/to/dir")
        raise ModelNameError(f"cannot load hf:{name} as an image classifier ({_first_line(e)}){hint}") from None
    missing = sorted(info.get("missing_keys") or ())
    if missing:
        raise ModelError(
            f"hf:{name} has no trained weights for {', '.join(missing[:3])}"
            f"{' ...' if len(missing) > 3 else ''}: it is not an image classifier (a base model without its "
            "head?); save the classifier itself, or load the model yourself and pass it with module:function"
        )
    try:
        processor = transformers.AutoImageProcessor.from_pretrained(source)
    except (OSError, ValueError):
        processor = None
    if any(p.dtype != torch.float32 for p in model.parameters() if p.is_floating_point()):
        model = model.float()  # half-precision checkpoints: accentuate runs float32 (autocast= lowers it)
    model.accentuate_spec = hf_spec(name, model.config, processor)  # type: ignore[assignment]
    return model.eval()
