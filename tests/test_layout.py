"""Explicit layer layouts: conv (NCHW), channels-last stages (NHWC), token layers with 0, 1 or 5
leading tokens. Objectives, the regularizer and pooling read them, never ``dim()``."""

from __future__ import annotations

import pytest
import torch
from torch import nn

import accentuate as acc
from accentuate.analysis.activations import layouts_of
from accentuate.hooks import OUTPUT, ModelRunner
from accentuate.layout import Layout, infer_layout, parse_layout
from accentuate.regularize import Regularizer, distance
from accentuate.spec import ModelSpec

B, C, H, W = 2, 6, 3, 4


def _grid() -> torch.Tensor:
    """The reference values, (B, C, H, W), each entry distinct."""
    return torch.arange(B * C * H * W, dtype=torch.float32).view(B, C, H, W) / 7 - 3


def _as(kind: str, x: torch.Tensor, prefix: int = 0) -> tuple[torch.Tensor, Layout]:
    """``x`` (B, C, H, W) laid out as ``kind``, with ``prefix`` leading tokens of their own values."""
    if kind == "nchw":
        return x.clone(), Layout("nchw", C, (H, W))
    if kind == "nhwc":
        return x.permute(0, 2, 3, 1).contiguous(), Layout("nhwc", C, (H, W))
    tokens = x.flatten(2).transpose(1, 2)  # (B, H * W, C), row-major grid
    lead = 100 + torch.arange(B * prefix * C, dtype=torch.float32).view(B, prefix, C)
    return torch.cat([lead, tokens], dim=1), Layout("tokens", C, (H, W), prefix)


CASES = [("nchw", 0), ("nhwc", 0), ("tokens", 0), ("tokens", 1), ("tokens", 5)]


@pytest.mark.parametrize(("kind", "prefix"), CASES)
def test_channel_neuron_pooling_and_regularizer_read_the_layout(kind, prefix):
    x = _grid()
    t, lay = _as(kind, x, prefix)
    acts, lays = {"L": t}, {"L": lay}
    # Channel: the mean over the grid positions (leading tokens are not positions).
    assert torch.allclose(acc.channel("L", 4)(acts, lays), x[:, 4].mean(dim=(1, 2)))
    # Neuron at (y, x) of the grid, and the centre by default.
    assert torch.equal(acc.neuron("L", 2, y=2, x=1)(acts, lays), x[:, 2, 2, 1])
    assert torch.equal(acc.neuron("L", 5)(acts, lays), x[:, 5, H // 2, W // 2])
    # Pooling (the analyses' channel vectors).
    assert torch.allclose(lay.pool(t), x.mean(dim=(2, 3)))
    # A direction averages the dot product over the grid positions.
    v = torch.arange(C, dtype=torch.float32) - 2
    want = (x * (v / v.norm()).view(1, C, 1, 1)).sum(1).mean(dim=(1, 2))
    assert torch.allclose(acc.direction("L", v)(acts, lays), want, atol=1e-5)
    # The regularizer: per-position L2 over channels, leading tokens count as positions.
    seed_x = x.flip(-1)
    s, _ = _as(kind, seed_x, prefix)
    s = s.clone()
    if prefix:
        s[:, :prefix] += 1.0  # a leading token moved by 1 in every channel: norm sqrt(C)
    per_pos = (x - seed_x).pow(2).sum(1).sqrt().flatten(1)  # (B, H * W)
    if prefix:
        per_pos = torch.cat([torch.full((B, prefix), C ** 0.5), per_pos], dim=1)
    d = distance(t, s, B, 1, lay)  # each row its own seed
    assert torch.allclose(d[:, 0], per_pos.mean(1), rtol=1e-5)
    assert torch.allclose(Regularizer.at("L").distance(t, s, B, 1, lay), d)


@pytest.mark.parametrize(("kind", "prefix"), CASES)
def test_positions_out_of_range_name_the_grid(kind, prefix):
    _, lay = _as(kind, _grid(), prefix)
    with pytest.raises(ValueError, match=r"outside layer 'L', whose grid is 3 x 4 \(y 0..2, x 0..3\)"):
        acc.neuron("L", 0, y=3, x=0).validate({"L": lay})
    with pytest.raises(ValueError, match=r"channel 6 is out of range.*6 channels \(0..5\)"):
        acc.channel("L", 6).validate({"L": lay})


def test_layouts_are_inferred_from_shapes():
    size = (224, 224)
    assert infer_layout((1, 96, 56, 56), size) == Layout("nchw", 96, (56, 56))
    assert infer_layout((1, 56, 56, 96), size) == Layout("nhwc", 96, (56, 56))  # a Swin / ConvNeXt stage
    assert infer_layout((1, 197, 768), size) == Layout("tokens", 768, (14, 14), 1)  # ViT-B/16
    assert infer_layout((1, 261, 384), size) == Layout("tokens", 384, (16, 16), 5)  # DINOv2 + 4 registers
    assert infer_layout((1, 49, 768), size) == Layout("tokens", 768, (7, 7), 0)  # Swin stage, no class token
    assert infer_layout((1, 1000), size) == Layout("vector", 1000)
    assert infer_layout((1, 64, 56, 80), (224, 320)) == Layout("nchw", 64, (56, 80))  # non-square input
    assert infer_layout((1, 1 + 14 * 20, 32), (224, 320), patch=16) == Layout("tokens", 32, (14, 20), 1)
    assert infer_layout((1, 2, 3, 4, 5), size) is None
    # Overrides for odd models, as text.
    assert parse_layout("nhwc", (1, 8, 8, 4)) == Layout("nhwc", 4, (8, 8))
    assert parse_layout("tokens:5", (1, 261, 384)) == Layout("tokens", 384, (16, 16), 5)
    assert parse_layout("tokens:1:16x12", (1, 193, 8)) == Layout("tokens", 8, (16, 12), 1)
    with pytest.raises(ValueError, match="cannot read layout 'nhcw'"):
        parse_layout("nhcw", (1, 8, 8, 4))
    with pytest.raises(ValueError, match="nchw needs a 4-d output"):
        parse_layout("nchw", (1, 8, 4))


class ChannelsLastNet(nn.Module):
    """A conv stem, then a stage that works channels-last, (B, H, W, C), as Swin and ConvNeXt do."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.stem = nn.Conv2d(3, 16, 4, stride=4)
        self.stage = nn.Sequential(nn.LayerNorm(16), nn.Linear(16, 16))  # on (B, H, W, C)
        self.head = nn.Linear(16, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.stage(self.stem(x).permute(0, 2, 3, 1))
        return self.head(y.mean(dim=(1, 2)))


class TokenNet(nn.Module):
    """Patch tokens after ``prefix`` learned leading tokens (class + registers), then a block."""

    def __init__(self, prefix: int) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.patch = nn.Conv2d(3, 12, 8, stride=8)
        self.lead = nn.Parameter(torch.randn(1, prefix, 12))
        self.block = nn.Sequential(nn.Linear(12, 12), nn.GELU())
        self.head = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)
        t = self.block(torch.cat([self.lead.expand(x.shape[0], -1, -1), t], dim=1))
        return self.head(t[:, 0] if self.lead.shape[1] else t.mean(1))


def _spec(input_size: int = 32) -> ModelSpec:
    return ModelSpec(name="test", input_size=(input_size, input_size), normalize=None,
                     labels=("a", "b", "c"), reg_layer=None)


@pytest.mark.parametrize("model, layer, want", [
    (ChannelsLastNet(), "stage", Layout("nhwc", 16, (8, 8))),
    (TokenNet(0), "block", Layout("tokens", 12, (4, 4), 0)),
    (TokenNet(1), "block", Layout("tokens", 12, (4, 4), 1)),
    (TokenNet(5), "block", Layout("tokens", 12, (4, 4), 5)),
])
def test_real_layers_get_their_layout_and_objectives_rise_there(model, layer, want, seed_img):
    model.accentuate_spec = _spec()
    assert layouts_of(model, model.accentuate_spec, [layer])[layer] == want
    rows = {r.name: r for r in acc.layers(model)}
    assert rows[layer].layout == want
    # A neuron at a grid position reads exactly that element of the module's output.
    obj = acc.neuron(layer, 3, y=1, x=2)
    res = acc.accentuate(model, seed_img, obj, reg_layer=layer, steps=10, crops=4, canvas=48, lr=0.05,
                         seed=0)
    with torch.no_grad(), acc.capture(model, [layer]) as cap:
        model(acc.images.resize(res.images[0], (32, 32)))
    out = cap[layer]
    idx = (0, 1, 2, 3) if want.kind == "nhwc" else (0, want.prefix + 1 * 4 + 2, 3)
    assert float(res.after["value"][0, 0]) == pytest.approx(float(out[idx]), rel=1e-4, abs=1e-5)
    assert res.after["value"][0, 0] > res.before["value"][0, 0]
    ch = acc.accentuate(model, seed_img, acc.channel(layer, 5), reg_layer=layer, steps=10, crops=4, canvas=48,
                        seed=0)
    assert ch.after["value"][0, 0] > ch.before["value"][0, 0]
    assert torch.isfinite(ch.after["reg_distance"]).all() and float(ch.after["reg_distance"][0, 0]) > 0


def test_layout_override_through_the_spec(seed_img):
    model = TokenNet(5)
    model.accentuate_spec = _spec()
    # Read as 1 class token + a 4 x 5 grid on purpose: the override wins over the inference.
    lay = layouts_of(model, acc.resolve_spec(model, layouts={"block": "tokens:1:4x5"}), ["block"])["block"]
    assert lay == Layout("tokens", 12, (4, 5), 1)
    res = acc.accentuate(model, seed_img, acc.neuron("block", 0, y=3, x=4), layouts={"block": "tokens:1:4x5"},
                         reg_layer="none", steps=2, crops=2, canvas=48, seed=0)
    assert torch.isfinite(res.after["value"]).all()
    with pytest.raises(ValueError, match=r"outside layer 'block', whose grid is 4 x 4"):
        acc.accentuate(model, seed_img, acc.neuron("block", 0, y=3, x=4), reg_layer="none", steps=1, canvas=48)


def test_default_reg_layer_rule_sees_token_and_channels_last_layers():
    for model in (ChannelsLastNet(), TokenNet(5)):
        spec = _spec()
        reg = acc.default_reg_layer(model, spec)
        assert reg is not None
        lay = ModelRunner(model, spec).layouts([reg])[reg]
        assert lay.spatial


def test_layers_leaves_a_train_mode_batchnorm_model_as_found():
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 30 * 30, 2))
    net.train()
    net[4].weight.requires_grad_(False)  # a user's frozen layer stays frozen, the others trainable
    before = {k: v.clone() for k, v in net.state_dict().items()}
    flags = [p.requires_grad for p in net.parameters()]
    rows = acc.layers(net, input_size=32, example=torch.rand(2, 3, 32, 32) * 5)
    assert [r.name for r in rows][:2] == ["0", "1"]
    assert net.training and all(m.training for m in net.modules())
    assert [p.requires_grad for p in net.parameters()] == flags
    for k, v in net.state_dict().items():
        assert torch.equal(v, before[k]), k  # running mean/var and num_batches_tracked unchanged
    # The same holds when the forward raises halfway.
    bad = nn.Sequential(nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(5, 2)).train()
    stats = bad[0].running_mean.clone()
    with pytest.raises(acc.ModelError, match="the model raised RuntimeError"):
        acc.layers(bad, input_size=8)
    assert bad.training and torch.equal(bad[0].running_mean, stats)
    assert not bad[0]._forward_hooks


def test_runner_runs_the_model_one_way(tiny, seed_img):
    spec = tiny.accentuate_spec
    runner = ModelRunner(tiny, spec)
    x = acc.images.resize(seed_img, spec.input_size)[None]
    acts = runner(x, ["conv2", OUTPUT])
    assert set(acts) == {"conv2", OUTPUT} and acts["conv2"].shape == (1, 16, 16, 16)
    cut = runner(x, ["conv2"], stop_at=["conv2"])
    assert set(cut) == {"conv2"} and torch.equal(cut["conv2"], acts["conv2"])
    many = runner.activations(x.repeat(5, 1, 1, 1), ["conv2", OUTPUT], batch=2)
    assert many[OUTPUT].shape == (5, 4) and torch.allclose(many[OUTPUT][3], acts[OUTPUT][0], atol=1e-6)
    tiny.train()
    with runner.state():
        assert not tiny.training and not any(p.requires_grad for p in tiny.parameters())
    assert tiny.training and all(p.requires_grad for p in tiny.parameters())
    tiny.eval()
    with pytest.raises(acc.LayerError, match="never ran"):
        ModelRunner(tiny, spec)(x, ["conv1", "conv3"], stop_at=["conv1"])  # conv3 is cut off


class _Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.mlp = nn.Sequential(nn.Linear(12, 24), nn.GELU(), nn.Linear(24, 12))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        return t + self.mlp(t)


class StackNet(nn.Module):
    """Patch tokens through a stack of 6 residual blocks (each with an MLP ``Sequential``)."""

    def __init__(self) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.patch = nn.Conv2d(3, 12, 8, stride=8)
        self.blocks = nn.ModuleList(_Block() for _ in range(6))
        self.head = nn.Linear(12, 3)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.patch(x).flatten(2).transpose(1, 2)
        for b in self.blocks:
            t = b(t)
        return self.head(t.mean(1))


def test_default_reg_layer_rule_takes_the_block_of_a_token_stack():
    """The rule's token layer (inside block 1's MLP) becomes the block, the residual stream; an
    MLP's Sequential of unlike layers is not a stack, nor is a wrapper Sequential(backbone, head)."""
    spec = _spec()
    net = StackNet()
    assert acc.default_reg_layer(net, spec) == "blocks.1"
    wrapped = nn.Sequential(net, nn.Identity())
    assert acc.default_reg_layer(wrapped, spec) == "0.blocks.1"
