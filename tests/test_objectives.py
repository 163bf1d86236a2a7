import pytest
import torch
from conftest import FAST
from torch import nn

import accentuate as acc
from accentuate.hooks import OUTPUT


def test_repr_and_algebra():
    obj = acc.channel("conv2", 3) - 0.5 * acc.logit(1) + acc.neuron("conv1", 2, y=1, x=2)
    assert repr(obj) == "Channel(conv2, 3) - 0.5 * Logit(1) + Neuron(conv1, 2, y=1, x=2)"
    assert obj.layers == {"conv2", OUTPUT, "conv1"}
    assert repr(-acc.channel("a", 1)) == "-Channel(a, 1)"
    assert repr(2 * acc.channel("a", 1)) == "2 * Channel(a, 1)"


def test_values_by_hand_conv_and_tokens():
    conv = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)
    tokens = torch.arange(2 * 5 * 3, dtype=torch.float32).view(2, 5, 3)  # 1 class token + 2x2 grid
    acts = {"c": conv, "t": tokens, OUTPUT: torch.tensor([[1.0, 2.0], [3.0, 4.0]])}
    lay = {"c": acc.Layout("nchw", 3, (2, 2)), "t": acc.Layout("tokens", 3, (2, 2), prefix=1),
           OUTPUT: acc.Layout("vector", 2)}
    assert torch.allclose(acc.channel("c", 1)(acts, lay), conv[:, 1].mean((1, 2)))
    assert acc.neuron("c", 2, y=1, x=0)(acts, lay).tolist() == conv[:, 2, 1, 0].tolist()
    # a channel of a token layer is its mean over the patch tokens (the class token left out)
    assert torch.allclose(acc.channel("t", 2)(acts, lay), tokens[:, 1:, 2].mean(1))
    # token neuron at grid (1, 1) is token 1 + 1*2 + 1 = 4
    assert acc.neuron("t", 0, y=1, x=1)(acts, lay).tolist() == tokens[:, 4, 0].tolist()
    assert acc.logit(1)(acts, lay).tolist() == [2.0, 4.0]
    v = torch.tensor([0.0, 3.0, 4.0])
    d = acc.direction("c", v)(acts, lay)
    expect = (conv * (v / 5).view(1, 3, 1, 1)).sum(1).mean((1, 2))
    assert torch.allclose(d, expect)
    cos = acc.direction("t", v, kind="cosine")(acts, lay)
    assert (cos.abs() <= 1).all()
    combo = (acc.logit(0) - 2 * acc.logit(1))(acts, lay)
    assert combo.tolist() == [1 - 4, 3 - 8]


def test_class_names_resolve_and_errors(tiny):
    labels = tiny.accentuate_spec.labels
    assert acc.logit("Banana").resolve(labels).c == 1
    with pytest.raises(acc.ClassNameError, match="unknown class name 'bananna'.*banana"):
        acc.logit("bananna").resolve(labels)
    with pytest.raises(acc.ClassNameError, match="out of range"):
        acc.logit(7).resolve(labels)
    with pytest.raises(acc.ClassNameError, match="no labels"):
        acc.logit("x").resolve(None)


def test_imagenet_ambiguous_name_lists_candidates():
    labels = acc.imagenet_labels()
    assert len(labels) == 1000 and labels[0] == "tench" and labels[1] == "goldfish"
    with pytest.raises(acc.ClassNameError, match="ambiguous.*134.*517"):
        acc.find_class("crane", labels)
    assert acc.find_class("Tiger Cat", labels) == 282
    assert acc.find_class("Carassius auratus", labels) == 1  # a synonym


@pytest.mark.parametrize(
    "target",
    [
        acc.logit(2),
        acc.logit("cherry"),
        acc.channel("conv2", 5),
        acc.neuron("conv3", 4),
        acc.neuron("conv1", 1, y=3, x=20),
        acc.direction("conv2", torch.linspace(-1, 1, 16)),
        acc.direction("conv3", torch.linspace(1, 2, 16), kind="cosine"),
        acc.channel("conv2", 1) - acc.logit(0),
    ],
    ids=repr,
)
def test_every_objective_goes_up(tiny, seed_img, target, device):
    res = acc.accentuate(tiny.to(device), seed_img, target, reg_layer="none", **FAST)
    assert res.after["value"][0, 0] > res.before["value"][0, 0] + 1e-3


def test_token_model_objectives_go_up():
    class TokenNet(nn.Module):
        def __init__(self):
            super().__init__()
            torch.manual_seed(0)
            self.patch = nn.Conv2d(3, 12, 8, stride=8)
            self.mix = nn.Linear(12, 12)
            self.head = nn.Linear(12, 3)

        def forward(self, x):
            t = self.patch(x).flatten(2).transpose(1, 2)  # (B, 16, 12)
            t = self.mix(t)
            return self.head(t.mean(1))

    model = TokenNet()
    for target in (acc.channel("mix", 3), acc.neuron("mix", 2, y=0, x=3), acc.logit(1)):
        res = acc.accentuate(model, torch.rand(3, 48, 48), target, input_size=32, normalize=None,
                             labels=None, reg_layer="mix", lam=0.1, **FAST)
        assert res.after["value"][0, 0] > res.before["value"][0, 0]


def test_channel_out_of_range_is_caught_before_first_step(tiny, seed_img):
    with pytest.raises(ValueError, match="channel 99 is out of range for layer 'conv2', which has 16"):
        acc.accentuate(tiny, seed_img, acc.channel("conv2", 99), **FAST)
    with pytest.raises(ValueError, match="direction has 3 entries but layer 'conv2' has 16"):
        acc.accentuate(tiny, seed_img, acc.direction("conv2", [1, 2, 3]), **FAST)
    with pytest.raises(ValueError, match=r"position \(y=50, x=0\) is outside"):
        acc.accentuate(tiny, seed_img, acc.neuron("conv2", 1, y=50, x=0), **FAST)
