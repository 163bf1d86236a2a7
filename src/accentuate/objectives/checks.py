"""The checks every kind of objective makes of a layer: a channel, a leading token, a grid position
in range (each a one-line ``ValueError`` naming the valid range), and a layer's short name for
file names."""

from __future__ import annotations

from ..layout import Layout

__all__ = ["check_channel", "check_position", "check_token", "short_layer"]


def check_channel(layer: str, c: int, layout: Layout) -> None:
    """``ValueError`` unless channel ``c`` exists in the layer."""
    n = layout.channels
    if not 0 <= c < n:
        raise ValueError(
            f"channel {c} is out of range for layer {layer!r}, which has {n} channels (0..{n - 1})"
        )


def check_token(layer: str, i: int, layout: Layout) -> None:
    """``ValueError`` unless leading token ``i`` (0: the class token) exists in the layer."""
    n = layout.prefix if layout.kind == "tokens" else 0
    if n == 0:
        raise ValueError(
            f"layer {layer!r} has no leading (class/register) tokens (its layout is {layout}); "
            "read its patch tokens instead (a channel mean or a neuron at y,x)"
        )
    if not 0 <= i < n:
        raise ValueError(
            f"token {i} is out of range for layer {layer!r}, which has {n} leading token(s) (0..{n - 1})"
        )


def check_position(layer: str, y: int, x: int, layout: Layout) -> None:
    """``ValueError`` unless grid position ``(y, x)`` exists in the layer."""
    h, w = layout.grid
    if not (0 <= y < h and 0 <= x < w):
        raise ValueError(
            f"position (y={y}, x={x}) is outside layer {layer!r}, whose grid is {h} x {w} "
            f"(y 0..{h - 1}, x 0..{w - 1})"
        )


def short_layer(layer: str) -> str:
    """The last two dotted parts of a layer name, for short file names (``layers.1`` of
    ``vision_model.encoder.layers.1``)."""
    return ".".join(layer.split(".")[-2:]) or layer
