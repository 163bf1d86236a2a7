"""Layer layouts: where the channels and the spatial positions are in a layer's output.

A :class:`Layout` is a small value per layer, inferred once from the shape the layer
produced (see :func:`infer_layout`) and overridable per layer through the model's
spec (``ModelSpec.layouts``, or ``layouts=`` in :func:`accentuate.accentuate`):

- ``nchw``: conv output ``(B, C, H, W)``;
- ``nhwc``: a channels-last stage ``(B, H, W, C)`` (Swin, some ConvNeXt blocks);
- ``tokens``: ``(B, prefix + H * W, C)``, with ``prefix`` leading non-spatial tokens
  (a class token, register tokens) before a row-major ``H x W`` patch grid;
- ``vector``: ``(B, C)`` (logits, pooled features): one position.

Everything that reads a position or a channel (objectives, the regularizer's
per-position norm, pooling in the analyses, the default regularization layer rule)
asks the layout; nothing else looks at ``dim()``.

Example:
    >>> lay = infer_layout((2, 261, 384), (224, 224))   # DINOv2 with 4 registers
    >>> lay
    Layout('tokens', channels=384, grid=(16, 16), prefix=5)
    >>> t = torch.randn(2, 261, 384)
    >>> lay.pool(t).shape, lay.at(t, 0, 0).shape
    (torch.Size([2, 384]), torch.Size([2, 384]))
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass

import torch

__all__ = ["KINDS", "Layout", "infer_layout", "parse_layout"]

#: The layout kinds.
KINDS = ("nchw", "nhwc", "tokens", "vector")

#: Most leading non-spatial tokens :func:`infer_layout` assumes (class + registers).
MAX_PREFIX = 16


@dataclass(frozen=True)
class Layout:
    """Where a layer's channels and positions are.

    Attributes:
        kind: ``"nchw"``, ``"nhwc"``, ``"tokens"`` or ``"vector"``.
        channels: size of the channel axis.
        grid: ``(H, W)`` of the spatial positions (``(1, 1)`` for vectors).
        prefix: leading non-spatial tokens (``tokens`` only).
    """

    kind: str
    channels: int
    grid: tuple[int, int] = (1, 1)
    prefix: int = 0

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"layout kind must be one of {', '.join(KINDS)}; got {self.kind!r}")
        if self.prefix and self.kind != "tokens":
            raise ValueError(f"only a tokens layout has leading tokens; got prefix={self.prefix} for {self.kind}")

    def __repr__(self) -> str:
        if self.kind == "vector":
            return f"Layout('vector', channels={self.channels})"
        extra = f", prefix={self.prefix}" if self.kind == "tokens" else ""
        return f"Layout({self.kind!r}, channels={self.channels}, grid={self.grid}{extra})"

    def __str__(self) -> str:
        """Short form, as ``accentuate layers`` shows it: ``nchw 40x28x28``, ``tokens 1+16x16 x384``."""
        h, w = self.grid
        if self.kind == "vector":
            return f"vector {self.channels}"
        if self.kind == "tokens":
            return f"tokens {self.prefix}+{h}x{w} x{self.channels}"
        return f"{self.kind} {self.channels}x{h}x{w}"

    @property
    def spatial(self) -> bool:
        """More than one spatial position (what the default regularization layer rule needs)."""
        return self.kind != "vector" and self.grid[0] * self.grid[1] > 1

    @property
    def channel_axis(self) -> int:
        """The channel axis of a batch of this layout."""
        return 1 if self.kind == "nchw" else -1

    def shape(self, batch: int = 1) -> tuple[int, ...]:
        """The tensor shape of a batch with this layout."""
        h, w = self.grid
        return {
            "nchw": (batch, self.channels, h, w),
            "nhwc": (batch, h, w, self.channels),
            "tokens": (batch, self.prefix + h * w, self.channels),
            "vector": (batch, self.channels),
        }[self.kind]

    def check(self, t: torch.Tensor, layer: str = "") -> None:
        """Raise ``ValueError`` if ``t`` does not have this layout (batch size aside)."""
        if tuple(t.shape[1:]) != self.shape()[1:]:
            where = f"layer {layer!r}" if layer else "a layer"
            raise ValueError(
                f"{where} produced shape {tuple(t.shape)}, which does not fit its layout {self!r}; "
                "pass layouts={name: ...} for this model"
            )

    # -- reading a batch --------------------------------------------------------------------
    def channel(self, t: torch.Tensor, c: int) -> torch.Tensor:
        """Channel ``c`` at every spatial position, ``(B, H * W)`` (leading tokens left out)."""
        if self.kind == "nchw":
            return t[:, c].reshape(t.shape[0], -1)
        if self.kind == "nhwc":
            return t[..., c].reshape(t.shape[0], -1)
        if self.kind == "tokens":
            return t[:, self.prefix:, c]
        return t[:, c : c + 1]

    def at(self, t: torch.Tensor, y: int, x: int) -> torch.Tensor:
        """The channel vector at grid position ``(y, x)``, ``(B, C)``."""
        if self.kind == "nchw":
            return t[:, :, y, x]
        if self.kind == "nhwc":
            return t[:, y, x, :]
        if self.kind == "tokens":
            return t[:, self.prefix + y * self.grid[1] + x, :]
        return t

    def token(self, t: torch.Tensor, i: int) -> torch.Tensor:
        """Leading token ``i`` (e.g. 0, the class token), ``(B, C)``."""
        if self.kind != "tokens" or not 0 <= i < self.prefix:
            raise ValueError(f"leading token {i} does not exist in a layer of layout {self!r}")
        return t[:, i, :]

    def positions(self, t: torch.Tensor) -> torch.Tensor:
        """Channel vectors at the spatial positions, ``(B, H * W, C)``."""
        if self.kind == "nchw":
            return t.flatten(2).transpose(1, 2)
        if self.kind == "nhwc":
            return t.flatten(1, 2)
        if self.kind == "tokens":
            return t[:, self.prefix:, :]
        return t[:, None, :]

    def pool(self, t: torch.Tensor) -> torch.Tensor:
        """Mean over the spatial positions, ``(B, C)`` (leading tokens left out)."""
        if self.kind == "nchw":
            return t.mean(dim=(2, 3))
        if self.kind == "nhwc":
            return t.mean(dim=(1, 2))
        if self.kind == "tokens":
            return t[:, self.prefix:, :].mean(dim=1)
        return t

    def norms(self, t: torch.Tensor, eps: float = 0.0) -> torch.Tensor:
        """L2 norm over the channels at every position, leading tokens included, ``(B, P)``.

        ``eps`` is added under the square root (it gives the norm a zero gradient where
        ``t`` is zero, as the regularizer needs).
        """
        sq = t.pow(2).sum(dim=self.channel_axis)
        return (sq + eps).sqrt().reshape(t.shape[0], -1)


def parse_layout(value: Layout | str, shape: tuple[int, ...] | None = None) -> Layout:
    """A layout from a :class:`Layout`, or from text: ``"nchw"``, ``"nhwc"``, ``"vector"``,
    ``"tokens"`` (prefix and grid inferred from ``shape``), ``"tokens:5"`` (5 leading tokens,
    square grid) or ``"tokens:1:16x12"``.

    ``shape`` (the layer's output shape, batch first) fills in channels and grid.
    """
    if isinstance(value, Layout):
        return value
    text = str(value).strip().lower()
    m = re.fullmatch(r"(nchw|nhwc|vector|tokens)(?::(\d+))?(?::(\d+)x(\d+))?", text)
    if not m or (m.group(1) != "tokens" and (m.group(2) or m.group(3))):
        raise ValueError(
            f"cannot read layout {value!r}; use nchw, nhwc, vector, tokens, tokens:PREFIX or tokens:PREFIX:HxW"
        )
    kind = m.group(1)
    if shape is None:
        raise ValueError(f"layout {value!r} needs the layer's shape to be complete")
    dims = tuple(int(s) for s in shape)
    want = {"nchw": 4, "nhwc": 4, "tokens": 3, "vector": 2}[kind]
    if len(dims) != want:
        raise ValueError(f"layout {kind} needs a {want}-d output; the layer produced shape {dims}")
    if kind == "nchw":
        return Layout("nchw", dims[1], (dims[2], dims[3]))
    if kind == "nhwc":
        return Layout("nhwc", dims[3], (dims[1], dims[2]))
    if kind == "vector":
        return Layout("vector", dims[1])
    tokens, channels = dims[1], dims[2]
    if m.group(3):
        grid = (int(m.group(3)), int(m.group(4)))
        prefix = tokens - grid[0] * grid[1]
        if m.group(2) is not None and int(m.group(2)) != prefix:
            raise ValueError(f"layout {value!r} does not fit {tokens} tokens")
    elif m.group(2) is not None:
        prefix = int(m.group(2))
        side = math.isqrt(max(0, tokens - prefix))
        grid = (side, side)
        if side * side != tokens - prefix:
            raise ValueError(
                f"layout {value!r}: {tokens} tokens minus {prefix} is not a square grid; give tokens:PREFIX:HxW"
            )
    else:
        found = _token_grid(tokens, (1, 1))
        if found is None:
            raise ValueError(f"cannot find a patch grid in {tokens} tokens; give tokens:PREFIX:HxW")
        prefix, grid = found
    if prefix < 0:
        raise ValueError(f"layout {value!r} has more grid positions than the layer's {tokens} tokens")
    return Layout("tokens", channels, grid, prefix)


def _token_grid(tokens: int, input_size: tuple[int, int], patch: int | None = None
                ) -> tuple[int, tuple[int, int]] | None:
    """``(prefix, (H, W))`` of a token sequence: the largest grid with the input's aspect
    ratio that leaves at most :data:`MAX_PREFIX` leading tokens (or the grid of ``patch``)."""
    h, w = input_size
    if patch:
        grid = (h // patch, w // patch)
        prefix = tokens - grid[0] * grid[1]
        if 0 <= prefix <= MAX_PREFIX:
            return prefix, grid
    ratio = h / w
    for gw in range(math.isqrt(int(tokens / ratio)) + 2, 0, -1):
        gh = max(1, round(gw * ratio))
        prefix = tokens - gh * gw
        if 0 <= prefix <= MAX_PREFIX:
            return prefix, (gh, gw)
    return None


def infer_layout(shape: tuple[int, ...], input_size: tuple[int, int], patch: int | None = None) -> Layout | None:
    """The layout of a layer from the shape it produced for an input of ``input_size``.

    Rules: 2-d is a vector; 3-d is tokens, with the largest grid of the input's aspect
    ratio that leaves at most 16 leading tokens (exactly the ``patch`` grid when the
    spec gives a patch size); 4-d is ``nchw`` unless only the ``nhwc`` reading has the
    input's aspect ratio (e.g. ``(B, 56, 56, 96)`` for a square input). Returns ``None``
    for other shapes.
    """
    dims = tuple(int(s) for s in shape)
    if len(dims) == 2:
        return Layout("vector", dims[1])
    if len(dims) == 3:
        found = _token_grid(dims[1], input_size, patch)
        if found is None:
            return None
        return Layout("tokens", dims[2], found[1], found[0])
    if len(dims) == 4:
        _, a, b, c = dims
        if not _aspect(b, c, input_size) and _aspect(a, b, input_size):
            return Layout("nhwc", c, (a, b))
        return Layout("nchw", a, (b, c))
    return None


def _aspect(gh: int, gw: int, input_size: tuple[int, int]) -> bool:
    """Whether a ``gh x gw`` grid has the input's aspect ratio (to within one position)."""
    h, w = input_size
    # gh / gw ~ h / w, allowing one position of rounding on the shorter side.
    return abs(gh * w - gw * h) <= max(h, w)
