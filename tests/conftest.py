"""Shared fixtures: a tiny conv net with a spec, photos, and helpers."""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

import accentuate as acc
from accentuate.spec import ModelSpec

#: The headless-Chromium fixture of the report tests (tests/browser.py).
pytest_plugins = ["browser"]


class TinyNet(nn.Module):
    """Conv net with an in-place ReLU (to test clone-on-capture) and a 4-class head."""

    def __init__(self, classes: int = 4) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.relu1 = nn.ReLU(inplace=True)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.relu2 = nn.ReLU(inplace=True)
        self.conv3 = nn.Conv2d(16, 16, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.relu1(self.conv1(x))
        x = self.relu2(self.conv2(x))
        x = self.conv3(x)
        return self.fc(self.pool(x).flatten(1))


class ColorNet(nn.Module):
    """Logits are the mean red, green and blue minus their mean: ranks we can predict."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))

    def forward(self, x):
        m = self.conv(x).mean(dim=(2, 3))
        return m - m.mean(dim=1, keepdim=True)


def color_seed(size: int = 48) -> torch.Tensor:
    """Reddish image (red > green > blue) with a little texture."""
    seed = torch.stack([torch.full((size, size), 0.7), torch.full((size, size), 0.4),
                        torch.full((size, size), 0.2)])
    return (seed + 0.1 * torch.rand(3, size, size, generator=torch.Generator().manual_seed(0))).clamp(0, 1)


COLOR_OPTS = dict(input_size=32, normalize=None, labels=["red", "green", "blue"], reg_layer="conv",
                  param="pixel", crops=4, canvas=48, seed=0)


TINY_SPEC = ModelSpec(
    name="tiny",
    input_size=(32, 32),
    normalize=None,
    labels=("apple", "banana", "cherry", "date"),
    reg_layer="conv2",
)

#: Fast settings for engine tests on the tiny model.
FAST = dict(steps=8, crops=4, canvas=48, lr=0.05, seed=0)


#: Where the device tests run: the CPU everywhere, and CUDA where there is a GPU. The CUDA
#: variants carry the ``cuda`` marker (``pytest -m cuda``, what ``benchmarks/gpu_check.sh``
#: runs on a GPU machine); every test that takes ``device`` carries the ``device`` marker.
DEVICES = [
    "cpu",
    pytest.param("cuda", marks=[pytest.mark.cuda, pytest.mark.skipif(
        not torch.cuda.is_available(), reason="no CUDA device here (on a GPU machine: benchmarks/gpu_check.sh)")]),
]


@pytest.fixture(params=DEVICES)
def device(request: pytest.FixtureRequest) -> Iterator[torch.device]:
    """A device to run on (see :data:`DEVICES`).

    On CUDA, TensorFloat-32 is off while the test runs: the tests compare with float32
    rounding tolerances (a batch against its single runs, one layout against another), and
    TF32 convolutions and matrix products round inputs to 10 bits. Reduced precision is
    tested where it is asked for (``autocast``).
    """
    dev = torch.device(request.param)
    if dev.type != "cuda":
        yield dev
        return
    saved = torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32
    torch.backends.cudnn.allow_tf32 = torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield dev
    finally:
        torch.backends.cudnn.allow_tf32, torch.backends.cuda.matmul.allow_tf32 = saved


@pytest.fixture
def tiny() -> nn.Module:
    model = TinyNet()
    model.accentuate_spec = TINY_SPEC
    return model.eval()


@pytest.fixture
def seed_img() -> torch.Tensor:
    """A smooth, structured 48 x 48 image in [0, 1] (not noise)."""
    y, x = torch.meshgrid(torch.linspace(0, 1, 48), torch.linspace(0, 1, 48), indexing="ij")
    img = torch.stack([0.5 + 0.4 * torch.sin(6 * x), 0.5 + 0.4 * torch.cos(5 * y), x * y])
    return img.clamp(0, 1)


@pytest.fixture(scope="session")
def lite0() -> nn.Module:
    return acc.load_model("efficientnet_lite0")


@pytest.fixture
def photo_tensor() -> torch.Tensor:
    return acc.load_image(acc.photo("chelsea"))


def save_png(path, arr: np.ndarray, mode: str | None = None) -> None:
    Image.fromarray(arr, mode).save(path)


#: Doctests that load the pretrained weights (marked ``slow`` like the tests that do).
WEIGHT_DOCTESTS = {"accentuate.models.load"}


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    for item in items:
        if isinstance(item, pytest.DoctestItem) and item.name in WEIGHT_DOCTESTS:
            item.add_marker(pytest.mark.slow)
        if "device" in getattr(item, "fixturenames", ()):
            item.add_marker(pytest.mark.device)
