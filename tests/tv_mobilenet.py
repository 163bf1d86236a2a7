"""A torchvision-style model brought by the user: MobileNetV2 in torchvision's module layout, without
an ``accentuate_spec`` (the package's definition, ``accentuate.models.mobilenet``, used as a plain
module), so the test of "bring your own model" runs without torchvision."""

from __future__ import annotations

from accentuate.models.mobilenet import MobileNetV2, load_mobilenet_v2, mobilenet_v2_weights

__all__ = ["MobileNetV2", "pretrained", "weights_path"]


def weights_path() -> str:
    return mobilenet_v2_weights()


def pretrained() -> MobileNetV2:
    """The factory used by `--model tv_mobilenet:pretrained`."""
    return load_mobilenet_v2()
