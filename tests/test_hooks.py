import pytest
import torch
from conftest import FAST
from torch import nn

import accentuate as acc
from accentuate.hooks import capture


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules())


def test_wrong_layer_names_closest(tiny, seed_img):
    with pytest.raises(acc.LayerError, match=r"layer 'conv22' is not in the model \(closest: conv2"):
        acc.accentuate(tiny, seed_img, acc.channel("conv22", 0), **FAST)
    with pytest.raises(KeyError):  # also a KeyError for callers catching that
        acc.accentuate(tiny, seed_img, 0, reg_layer="cnv1", **FAST)


def test_layer_that_never_runs(tiny, seed_img):
    tiny.unused = nn.Conv2d(3, 3, 1)
    with pytest.raises(acc.LayerError, match="never ran"):
        acc.accentuate(tiny, seed_img, acc.channel("unused", 0), **FAST)
    assert hook_count(tiny) == 0


def test_capture_clones_against_inplace_relu(tiny):
    x = torch.randn(2, 3, 16, 16)
    with capture(tiny, ["conv1"]) as cap:
        cap.run(tiny, x)
    assert (cap["conv1"] < 0).any()  # relu1 is in-place; our copy kept the negatives
    assert hook_count(tiny) == 0


def test_user_hooks_untouched_and_ours_removed(tiny, seed_img):
    seen = []
    h = tiny.conv2.register_forward_hook(lambda m, i, o: seen.append(1))
    acc.accentuate(tiny, seed_img, 1, **FAST)
    assert hook_count(tiny) == 1 and seen
    h.remove()
    assert hook_count(tiny) == 0


def test_no_hooks_after_model_raises(tiny, seed_img):
    calls = {"n": 0}

    def boom(module, args, output):
        calls["n"] += 1
        if calls["n"] > 3:
            raise RuntimeError("kaboom")

    h = tiny.conv3.register_forward_hook(boom)
    with pytest.raises(acc.ModelError, match="RuntimeError in its forward pass: kaboom"):
        acc.accentuate(tiny, seed_img, 1, **FAST)
    h.remove()
    assert hook_count(tiny) == 0


def test_interrupt_returns_partial_result_without_hooks(tiny, seed_img):
    calls = {"n": 0}

    def interrupt(module, args, output):
        calls["n"] += 1
        if calls["n"] == 12:
            raise KeyboardInterrupt

    h = tiny.fc.register_forward_hook(interrupt)
    with pytest.warns(UserWarning, match="interrupted"):
        res = acc.accentuate(tiny, seed_img, 1, **FAST)
    h.remove()
    assert res.interrupted and 0 < res.steps_done < FAST["steps"]
    assert res.images.shape == (1, 1, 3, 48, 48)
    assert hook_count(tiny) == 0


def test_model_state_and_seed_unchanged(tiny, seed_img):
    tiny.train()
    tiny.conv1.weight.requires_grad_(False)
    flags = [p.requires_grad for p in tiny.parameters()]
    weights = [p.detach().clone() for p in tiny.parameters()]
    buffers = [b.clone() for b in tiny.buffers()]
    seed_copy = seed_img.clone()
    acc.accentuate(tiny, seed_img, [0, acc.channel("conv2", 1)], **FAST)
    assert tiny.training and all(m.training for m in tiny.modules())
    assert [p.requires_grad for p in tiny.parameters()] == flags
    assert all(torch.equal(a, b) for a, b in zip(weights, tiny.parameters()))
    assert all(torch.equal(a, b) for a, b in zip(buffers, tiny.buffers()))
    assert torch.equal(seed_img, seed_copy)
    assert all(p.grad is None for p in tiny.parameters())


def test_layers_lists_names_and_shapes(tiny):
    rows = {r.name: r.shape for r in acc.layers(tiny)}
    assert rows["conv1"] == (1, 8, 32, 32)
    assert rows["conv3"] == (1, 16, 8, 8)
    assert rows["fc"] == (1, 4)
    assert hook_count(tiny) == 0


def test_attach_gives_the_gradient_at_a_layer_and_passes_a_copy_on():
    class Pair(nn.Module):  # returns a tuple, as Hugging Face blocks do
        def forward(self, x):
            return (x * 2, x)

    class Net(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.pair, self.relu = nn.Conv2d(3, 4, 1), Pair(), nn.ReLU(inplace=True)

        def forward(self, x):
            return self.relu(self.pair(self.conv(x))[0]).sum(dim=(1, 2, 3))

    net = Net()
    x = torch.randn(2, 3, 5, 5, requires_grad=True)
    with capture(net, ["conv", "pair"], attach=True) as cap:
        out = cap.run(net, x)
    g_pair, g_conv = torch.autograd.grad(out.sum(), [cap["pair"], cap["conv"]])
    assert (cap["pair"] < 0).any()  # the in-place ReLU changed the copy, not what was kept
    assert torch.equal(g_pair, (cap["pair"] > 0).float())
    assert torch.equal(g_conv, 2 * (cap["conv"] > 0).float())
    assert hook_count(net) == 0

    net.pair.forward = lambda x: {"hidden": x}
    with pytest.raises(acc.LayerError, match="returns dict"):
        with capture(net, ["pair"], attach=True) as cap:
            cap.run(net, x)
    assert hook_count(net) == 0
