"""Tiny models for command-line tests, loaded with ``--model cli_models:tiny``."""

from __future__ import annotations

import torch
from torch import nn

from accentuate.spec import ModelSpec

#: Six classes; "crane" names two of them (as in ImageNet) so the name is ambiguous.
LABELS = ("apple", "banana", "cherry", "date", "crane", "crane")


class Tiny(nn.Module):
    """A small conv net: conv1 -> relu -> conv2 -> relu -> conv3 -> pool -> fc."""

    def __init__(self, classes: int = len(LABELS), seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1)
        self.conv2 = nn.Conv2d(8, 16, 3, stride=2, padding=1)
        self.conv3 = nn.Conv2d(16, 16, 3, stride=2, padding=1)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, classes)
        with torch.no_grad():
            for p in self.parameters():
                p.copy_(torch.randn(p.shape, generator=g) * 0.3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.conv1(x))
        x = torch.relu(self.conv2(x))
        x = self.conv3(x)
        return self.fc(self.pool(x).flatten(1))


def tiny() -> nn.Module:
    """The tiny model with a spec (input 32 x 32, [0, 1] input, six labels)."""
    model = Tiny()
    model.accentuate_spec = ModelSpec(name="tiny", input_size=(32, 32), normalize=None, labels=LABELS,
                                      reg_layer="conv2", defaults={"steps": 6, "canvas": 48, "lam": 1.0})
    return model.eval()


def other() -> nn.Module:
    """Another tiny model (other weights, the same labels and spec): a judge of ``tiny``'s runs."""
    model = Tiny(seed=1)
    model.accentuate_spec = ModelSpec(name="tiny_other", input_size=(32, 32), normalize=None, labels=LABELS)
    return model.eval()


def twin() -> nn.Module:
    """``tiny`` under another name (the same weights): a judge of ``tiny``'s runs that is refused."""
    model = tiny()
    model.accentuate_spec = ModelSpec(name="twin", input_size=(32, 32), normalize=None, labels=LABELS)
    return model


def broken() -> nn.Module:
    """A model whose forward raises on every input (to test the exit status of failures)."""
    model = tiny()

    def fail(x: torch.Tensor) -> torch.Tensor:
        raise RuntimeError("boom")

    model.forward = fail  # type: ignore[method-assign]
    return model


def broken_on_batches() -> nn.Module:
    """A model whose forward raises only for batches of more than one image: the checks
    before a run (one example input) pass, and the run itself fails."""
    model = tiny()
    forward = model.forward

    def fail(x: torch.Tensor) -> torch.Tensor:
        if x.shape[0] > 1:
            raise RuntimeError("boom")
        return forward(x)

    model.forward = fail  # type: ignore[method-assign]
    return model


class WithUnused(Tiny):
    """The tiny model plus a layer that never runs in its forward pass."""

    def __init__(self) -> None:
        super().__init__()
        self.unused = nn.Conv2d(16, 4, 1)


def with_unused() -> nn.Module:
    """:func:`tiny` with a layer ``unused`` that its forward pass never calls."""
    model = WithUnused()
    model.accentuate_spec = tiny().accentuate_spec
    return model.eval()


#: Class names with markup in them, to test that reports show them as text.
XSS_LABELS = ("apple", "<script>alert(2)</script>", "cherry", "date", "crane", "fig")


def xss() -> nn.Module:
    """:func:`tiny` whose class 1 is named ``<script>alert(2)</script>``."""
    model = tiny()
    spec = model.accentuate_spec
    model.accentuate_spec = ModelSpec(name="tiny", input_size=spec.input_size, normalize=None, labels=XSS_LABELS,
                                      reg_layer="conv2", defaults=dict(spec.defaults))
    return model


def nan_on_dark() -> nn.Module:
    """:func:`tiny` whose logits are NaN for a dark image (mean below 0.1): a run over a dark
    seed fails numerically for real, and the other seeds are unaffected."""
    model = tiny()
    forward = model.forward

    def maybe_nan(x: torch.Tensor) -> torch.Tensor:
        out = forward(x)
        dark = (x.mean(dim=(1, 2, 3)) < 0.1)[:, None]
        return torch.where(dark, torch.full_like(out, float("nan")), out)

    model.forward = maybe_nan  # type: ignore[method-assign]
    return model


def nan_when_optimized() -> nn.Module:
    """A model whose logits turn NaN from the first input that needs a gradient on: the checks and the
    "before" numbers are finite, every pair fails at step 0 and its "after" numbers are NaN (None in run.json)."""
    model = tiny()
    forward = model.forward
    broken = []

    def nan(x: torch.Tensor) -> torch.Tensor:
        if torch.is_grad_enabled() and x.requires_grad:
            broken.append(True)
        out = forward(x)
        return out * float("nan") if broken else out

    model.forward = nan  # type: ignore[method-assign]
    return model


class Color(nn.Module):
    """Logits: the mean red, green and blue of the image minus their mean (ranks one can predict)."""

    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 3, 1, bias=False)
        with torch.no_grad():
            self.conv.weight.copy_(torch.eye(3).view(3, 3, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.conv(x).mean(dim=(2, 3))
        return m - m.mean(dim=1, keepdim=True)


def color() -> nn.Module:
    """The colour model with a spec (input 32 x 32, labels red, green, blue; fast pixel settings)."""
    model = Color()
    model.accentuate_spec = ModelSpec(name="color", input_size=(32, 32), normalize=None, labels=("red", "green", "blue"),
                                      reg_layer="conv", defaults={"steps": 8, "canvas": 48, "crops": 4,
                                                                  "param": "pixel", "lam": 0.5})
    return model.eval()
