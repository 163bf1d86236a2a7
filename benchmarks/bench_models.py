"""Models for timing only: architectures whose cost differs from the embedded model's.

The ratios of ``bench_step.py`` depend on how much work the model does per step
against the fixed work outside it (crops, noise, parameterization, optimizer), and
on where that work sits (what the regularizer's prefix costs). A model's cost
does not depend on its weights, so these are built with random weights and need
no download:

    python benchmarks/bench_step.py --model bench_models:resnet50
    python benchmarks/bench_step.py --model bench_models:vit_s14

(``bench_step.py`` runs from ``benchmarks/``, so this module imports by its name.)
"""

from __future__ import annotations

from dataclasses import replace

import torch
from torch import nn

from accentuate import load_model as acc_load
from accentuate.spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec


class Bottleneck(nn.Module):
    """ResNet v1.5 bottleneck: 1x1, 3x3 (strided), 1x1, with a projection shortcut when needed."""

    def __init__(self, cin: int, width: int, stride: int) -> None:
        super().__init__()
        cout = width * 4
        self.conv1, self.bn1 = nn.Conv2d(cin, width, 1, bias=False), nn.BatchNorm2d(width)
        self.conv2, self.bn2 = nn.Conv2d(width, width, 3, stride, 1, bias=False), nn.BatchNorm2d(width)
        self.conv3, self.bn3 = nn.Conv2d(width, cout, 1, bias=False), nn.BatchNorm2d(cout)
        self.relu = nn.ReLU(inplace=True)
        self.downsample = (nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))
                           if stride != 1 or cin != cout else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = self.relu(self.bn1(self.conv1(x)))
        out = self.relu(self.bn2(self.conv2(out)))
        out = self.bn3(self.conv3(out))
        return self.relu(out + (x if self.downsample is None else self.downsample(x)))


class ResNet(nn.Module):
    """ResNet for ImageNet (1000 classes) with the given blocks per stage."""

    def __init__(self, blocks: tuple[int, int, int, int] = (3, 4, 6, 3)) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 64, 7, 2, 3, bias=False)
        self.bn1 = nn.BatchNorm2d(64)
        self.relu = nn.ReLU(inplace=True)
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        layers, cin = [], 64
        for i, n in enumerate(blocks):
            width = 64 * 2 ** i
            stage = []
            for j in range(n):
                stage.append(Bottleneck(cin, width, 2 if (j == 0 and i > 0) else 1))
                cin = width * 4
            layers.append(nn.Sequential(*stage))
        self.layer1, self.layer2, self.layer3, self.layer4 = layers
        self.fc = nn.Linear(cin, 1000)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.maxpool(self.relu(self.bn1(self.conv1(x))))
        x = self.layer4(self.layer3(self.layer2(self.layer1(x))))
        return self.fc(x.mean(dim=(2, 3)))


def resnet50() -> nn.Module:
    """ResNet-50 with random weights (fixed seed) and BatchNorm statistics, eval mode."""
    torch.manual_seed(0)
    model = ResNet((3, 4, 6, 3)).eval()
    model.accentuate_spec = ModelSpec(  # type: ignore[assignment]
        name="resnet50 (random weights, timing only)", input_size=(224, 224),
        normalize=(IMAGENET_MEAN, IMAGENET_STD))
    return model


def vit_s14() -> nn.Module:
    """DINOv2 ViT-S/14 (``transformers.Dinov2Model``, 224 px input, 1 + 16 x 16 tokens), eval mode.

    The real ``dinov2_vits14_focus`` when the ``vit`` extra is installed; otherwise a
    ``Dinov2Model`` of the same config with random weights (fixed seed): the cost is the
    same. Its spec's name says which. Needs ``transformers``.
    """
    from accentuate.errors import ModelNameError
    from accentuate.models import dinov2

    try:
        return acc_load(dinov2.NAME)
    except ModelNameError:
        pass
    import transformers

    torch.manual_seed(0)
    model = transformers.Dinov2Model(transformers.Dinov2Config(**dinov2.DINOV2_CONFIG)).eval()
    model.accentuate_spec = replace(  # type: ignore[assignment]
        dinov2.dinov2_spec(), name="DINOv2 ViT-S/14 (random weights, timing only)")
    return model
