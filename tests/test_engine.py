import json

import pytest
import torch
from conftest import FAST, ColorNet
from torch import nn

import accentuate as acc


def test_same_seed_bit_identical(tiny, seed_img):
    a = acc.accentuate(tiny, seed_img, [1, 2], **FAST)
    b = acc.accentuate(tiny, seed_img, [1, 2], **FAST)
    assert torch.equal(a.images, b.images) and torch.equal(a.masks, b.masks)
    c = acc.accentuate(tiny, seed_img, [1, 2], **{**FAST, "seed": 1})
    assert not torch.equal(a.images, c.images)


def test_batch_equals_single_runs(tiny, seed_img, device):
    """Two seeds x two targets in one call match each pair run alone: proves the pairing."""
    tiny = tiny.to(device)
    other = seed_img.flip(-1).roll(7, dims=-2)
    batch = acc.accentuate(tiny, [seed_img, other], [1, acc.channel("conv2", 3)], **FAST)
    assert torch.device(batch.run["device"]).type == device.type and batch.images.device.type == "cpu"
    for i, s in enumerate([seed_img, other]):
        for j, t in enumerate([1, acc.channel("conv2", 3)]):
            single = acc.accentuate(tiny, s, t, **FAST)
            assert torch.allclose(batch.images[i, j], single.images[0, 0], atol=2e-4), (i, j)
            assert torch.allclose(batch.lam_effective[i, j], single.lam_effective[0, 0], rtol=1e-3)


def test_lambda_keeps_image_near_seed(tiny, seed_img):
    opts = {**FAST, "steps": 15, "lr": 0.1, "balance": False}
    free = acc.accentuate(tiny, seed_img, 2, lam=0.0, **opts)
    tight = acc.accentuate(tiny, seed_img, 2, lam=50.0, **opts)
    d_free = (free.images[0, 0] - seed_img).abs().mean()
    d_tight = (tight.images[0, 0] - seed_img).abs().mean()
    assert d_tight < 0.5 * d_free
    assert free.after["value"][0, 0] > tight.after["value"][0, 0]


def test_balance_measured_at_step_one(tiny, seed_img):
    res = acc.accentuate(tiny, seed_img, 2, lam=2.0, **FAST)
    w = res.history.weight[:, 0, 0]
    assert w[0] == 0 and w[1] > 0  # step 0 is objective-only (distance is exactly zero there)
    assert torch.all(w[1:] == w[1])
    assert res.history.distance[0, 0, 0] < 1e-5 and res.history.distance[-1, 0, 0] > 0
    unbalanced = acc.accentuate(tiny, seed_img, 2, lam=2.0, balance=False, **FAST)
    assert torch.all(unbalanced.history.weight == 2.0)


@pytest.mark.parametrize("reg", ["pixel", "none", "conv1", "conv3"])
def test_regularizer_choices_run_and_target_rises(tiny, seed_img, reg, device):
    res = acc.accentuate(tiny.to(device), seed_img, 3, reg_layer=reg, lam=0.5, **FAST)
    assert res.after["value"][0, 0] > res.before["value"][0, 0]
    assert str(res.config.reg_layer) == reg


def test_noise_seeded_feature_visualization(tiny):
    res = acc.accentuate(tiny, None, [acc.channel("conv2", 2)], **FAST)
    assert res.seeds is None and res.images.shape == (1, 1, 3, 48, 48)
    assert res.after["value"][0, 0] > res.before["value"][0, 0]


def test_opacity_concentrates_where_the_neuron_looks(tiny, seed_img, device):
    # A neuron at the top-left of conv3 (8 x 8 grid, receptive field ~ top-left of each crop).
    res = acc.accentuate(tiny.to(device), seed_img, acc.neuron("conv1", 0, y=2, x=2),
                         **{**FAST, "crop_range": (0.99, 0.99)})
    m = res.masks[0, 0]
    assert m.shape == (48, 48) and (m >= 0).all() and m.sum() > 0
    assert m[:12, :12].sum() > 10 * m[24:, 24:].sum()
    alpha = res.alpha()
    assert alpha.shape == (1, 1, 48, 48) and alpha.max() == pytest.approx(1.0) and alpha.min() >= 0


def test_opacity_is_target_gradient_not_regularizer(tiny, seed_img):
    """Over steps where the regularizer pulls (its gradient reaches every pixel), the mask stays where
    the target's gradient goes: a neuron at the top-left of conv1 (full-frame crops) never lights the
    bottom-right, which a mask that added the regularizer's gradient would."""
    opts = {**FAST, "steps": 6, "crop_range": (0.99, 0.99), "param": "fourier"}
    res = acc.accentuate(tiny, seed_img, acc.neuron("conv1", 0, y=2, x=2), **opts, lam=100.0, balance=False)
    assert float(res.history.distance[-1].max()) > 0  # the regularizer was pulling
    m = res.masks[0, 0]
    assert float(m[:12, :12].sum()) > 0
    assert float(m[28:, 28:].max()) <= 1e-6 * float(m.max())


def test_until_top1_stops_early_on_the_same_trajectory(device):
    seed = torch.stack([torch.full((48, 48), 0.7), torch.full((48, 48), 0.4), torch.full((48, 48), 0.2)])
    seed = (seed + 0.1 * torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(0))).clamp(0, 1)
    opts = dict(input_size=32, normalize=None, labels=["red", "green", "blue"], reg_layer="conv",
                lam=0.01, param="pixel", **{**FAST, "steps": 100, "lr": 0.1})
    net = ColorNet().to(device)
    res = acc.accentuate(net, seed, "blue", until="top1", **opts)
    assert int(res.before["rank"][0, 0]) == 3 and int(res.after["rank"][0, 0]) == 1
    used = int(res.steps_used[0, 0])
    assert used < 100 and used % 5 == 0
    # It is the same trajectory, stopped early: a fixed run of `used` steps gives the same image.
    short = acc.accentuate(net, seed, "blue", **{**opts, "steps": used})
    assert torch.allclose(res.images, short.images, atol=1e-5)
    with pytest.raises(ValueError, match="until"):
        acc.accentuate(net, seed, 0, until="sometimes", **opts)


def test_history_and_result_fields(tiny, seed_img, tmp_path):
    res = acc.accentuate(tiny, seed_img, ["banana", 3], snapshots=4, **FAST)
    assert len(res.history) == FAST["steps"]
    assert res.history.value.shape == (FAST["steps"], 1, 2)
    assert set(res.snapshots) == {0, 4, 8}
    assert res.snapshots[0].dtype == torch.uint8
    assert torch.allclose(res.snapshots[0][0, 0].float() / 255, res.seeds[0], atol=1 / 255 + 1e-3)
    files = res.save(tmp_path)
    assert (tmp_path / "seed0__date_rgba.png").exists() and len(files) == 2 * 4 + 3  # png rgba figure gif
    doc = json.loads((tmp_path / "run.json").read_text())
    assert doc["pairs"][0]["objective"] == "Logit(1 'banana')" and doc["pairs"][0]["id"] == "seed0__banana"
    assert doc["engine_config"]["steps"] == FAST["steps"]


def test_record_every_skips_evaluations_not_results(tiny, seed_img, monkeypatch):
    calls = []
    real = acc.Accentuator.evaluate

    def counting(self, *a, **k):
        calls.append(self.t)
        return real(self, *a, **k)

    monkeypatch.setattr(acc.Accentuator, "evaluate", counting)
    steps = FAST["steps"]  # 8
    every = acc.accentuate(tiny, seed_img, ["banana", 3], **FAST)
    n_every = len(calls)
    calls.clear()
    sparse = acc.accentuate(tiny, seed_img, ["banana", 3], record_every=3, **FAST)
    # Before, after steps 3 and 6, after the last step, and the result's own evaluation.
    assert sorted(set(calls)) == [0, 3, 6, steps] and len(calls) < n_every
    assert torch.equal(every.images, sparse.images) and torch.equal(every.masks, sparse.masks)
    h = sparse.history
    assert len(h) == steps and h.objective.shape == (steps, 1, 2) and not torch.isnan(h.objective).any()
    recorded = ~torch.isnan(h.value[:, 0, 0])
    assert recorded.nonzero().flatten().tolist() == [2, 5, steps - 1]  # records of steps 3, 6, 8
    assert torch.equal(h.value[recorded], every.history.value[recorded])
    rows = h.to_records()
    assert "value" in rows[2] and "value" not in rows[0] and "objective" in rows[0]
    with pytest.raises(ValueError, match="record_every"):
        acc.accentuate(tiny, seed_img, 1, record_every=0, **FAST)


def test_record_every_still_checks_until_on_its_steps():
    """``until`` is checked every 5 steps whatever ``record_every`` is."""
    seed = torch.full((3, 32, 32), 0.5)
    res = acc.accentuate(ColorNet(), seed, 0, until="top1", record_every=7, steps=20, crops=2, canvas=32,
                         lr=0.1, reg_layer="none", seed=0, input_size=32, normalize=None, labels=None)
    assert res.after["rank"][0, 0] == 1
    assert int(res.steps_used[0, 0]) in (5, 10, 15)


def test_nan_in_one_pair_keeps_others(tiny, seed_img):
    class Poison(nn.Module):
        """Returns NaN logits for inputs whose mean is above a threshold after a few calls."""

        def __init__(self, inner):
            super().__init__()
            self.inner = inner
            self.calls = 0

        def forward(self, x):
            out = self.inner(x)
            self.calls += 1
            if self.calls > 4 and x.shape[0] > 2:
                out = out.clone()
                out[: x.shape[0] // 2] = float("nan")  # first seed's rows only
            return out

    model = Poison(tiny)
    bright = seed_img * 0.5 + 0.5
    with pytest.warns(UserWarning, match="non-finite"):
        res = acc.accentuate(model, [seed_img, bright], 1, input_size=32, normalize=None,
                             labels=None, reg_layer="inner.conv2", **FAST)
    assert (0, 0) in res.failed and (1, 0) not in res.failed
    assert torch.isfinite(res.images).all()
    assert int(res.steps_used[0, 0]) < FAST["steps"] and int(res.steps_used[1, 0]) == FAST["steps"]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"steps": 0}, "steps must be a positive integer"),
        ({"lam": -1.0}, "lam must be a finite number >= 0"),
        ({"crop_range": (0.5, 0.2)}, "crop_range"),
        ({"canvas": 16}, "canvas 16 is smaller than the model input"),
        ({"param": "wavelet"}, "unknown parameterization"),
    ],
)
def test_bad_options(tiny, seed_img, kwargs, message):
    with pytest.raises(ValueError, match=message):
        acc.accentuate(tiny, seed_img, 1, **{**FAST, **kwargs})


def test_user_model_without_spec_warns_and_reads_tuple_and_dict_outputs(seed_img):
    from conftest import TinyNet

    class TupleNet(TinyNet):
        def forward(self, x):
            return super().forward(x), "aux"

    class DictNet(TinyNet):
        def forward(self, x):
            return {"features": x.mean(), "logits": super().forward(x)}

    for cls in (TupleNet, DictNet):
        with pytest.warns(UserWarning) as rec:
            res = acc.accentuate(cls(), seed_img, 1, **{**FAST, "canvas": 224})
        text = " ".join(str(w.message) for w in rec)
        assert "input_size" in text and "normalize" in text
        assert res.after["value"][0, 0] > res.before["value"][0, 0]
        assert str(res.config.reg_layer)  # chosen by the stated rule


def test_default_reg_layer_rule(tiny):
    from accentuate.hooks import default_reg_layer
    from accentuate.spec import ModelSpec

    # TinyNet's weighted layers: conv1, conv2, conv3, fc -> a third is 1.33 -> conv2 is the first past it.
    assert default_reg_layer(tiny, ModelSpec(input_size=(32, 32), normalize=None)) == "conv2"


def test_opacity_off_gives_the_same_images_and_no_masks(tiny, seed_img, tmp_path):
    kw = dict(FAST, steps=4, lam=0.5)
    on = acc.accentuate(tiny, seed_img, [1, 2], **kw)
    off = acc.accentuate(tiny, seed_img, [1, 2], opacity=False, **kw)
    assert on.has_opacity and not off.has_opacity and off.config.opacity is False
    assert torch.allclose(on.images, off.images, atol=2e-3)
    assert float((on.images - on.seeds[:, None]).abs().mean()) > 0.01  # the images did move
    with pytest.raises(ValueError, match="no opacity masks .* opacity=False"):
        off.alpha()
    names = sorted(p.name for p in off.save(tmp_path))
    assert names == ["contact_sheet.png", "result.npz", "run.json", "seed0__banana.png", "seed0__banana_figure.png",
                     "seed0__cherry.png", "seed0__cherry_figure.png"]  # no RGBA files
