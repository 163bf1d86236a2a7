"""Sparse autoencoders: a planted dictionary is recovered by ``train_sae``; a hand-written checkpoint
gives the codes computed by hand; bad checkpoints are one-line errors; a latent is a target that
rises under its accentuation more than the other latents, records itself by its checkpoint and comes
back from ``Result.load``; the command line trains, targets and shows latents."""

from __future__ import annotations

import json
import math
import shutil
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

import accentuate as acc
from accentuate.analysis.dictionary import fit_sae, linear_assignment, match_latents, sae_quality
from accentuate.cli import main
from accentuate.errors import CheckpointError
from accentuate.layout import Layout
from accentuate.objectives import Recorded, SAELatent, from_record, parse_sae_target
from accentuate.sae import SparseAutoencoder, load_sae, save_sae
from accentuate.spec import ModelSpec

DATA = Path(acc.__file__).parent / "data"


@pytest.fixture(autouse=True)
def _one_thread() -> object:
    """These tests run many small steps: on a busy machine, one thread is many times faster than two."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


# -- a planted dictionary ----------------------------------------------------------------------------
def _atoms(m: int = 24, d: int = 12, seed: int = 0) -> torch.Tensor:
    return torch.nn.functional.normalize(torch.randn(m, d, generator=torch.Generator().manual_seed(seed)), dim=1)


class Planted(nn.Module):
    """``dict`` is a synthetic layer: at each of its 8 x 8 positions, a sum of 3 of the 24 planted
    directions (``atoms``, 12-d) with positive coefficients; which 3, and how much of each, is read
    from the input's 4 x 4 patch by a fixed random convolution (its 3 largest outputs)."""

    def __init__(self, atoms: torch.Tensor, active: int = 3) -> None:
        super().__init__()
        m, d = atoms.shape
        self.select = nn.Conv2d(3, m, 4, stride=4, bias=False)
        self.dict = nn.Conv2d(m, d, 1, bias=False)
        self.fc = nn.Linear(d, 2)
        self.active = active
        with torch.no_grad():
            self.select.weight.copy_(torch.randn(self.select.weight.shape, generator=torch.Generator().manual_seed(3)))
            self.dict.weight.copy_(atoms.T[:, :, None, None])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        s = self.select(x - 0.5)
        top = s.topk(self.active, dim=1)
        codes = torch.zeros_like(s).scatter(1, top.indices, 0.5 + top.values.abs())
        return self.fc(self.dict(codes).mean(dim=(2, 3)))


def planted() -> tuple[nn.Module, torch.Tensor]:
    atoms = _atoms()
    model = Planted(atoms).eval()
    model.accentuate_spec = ModelSpec(name="planted", input_size=(32, 32), normalize=None,  # type: ignore[assignment]
                                      labels=("a", "b"), defaults={"canvas": 32})
    return model, atoms


def test_a_planted_dictionary_is_recovered(tmp_path: Path) -> None:
    model, atoms = planted()
    photos = torch.rand(150, 3, 32, 32, generator=torch.Generator().manual_seed(1))
    run = acc.train_sae(model, photos, layer="dict", latents=24, k=3, epochs=30, batch=256, out=tmp_path / "sae")
    assert run.layout == Layout("nchw", 12, (8, 8)) and len(run.held_out) == 15 and len(run.photos) == 135
    matched = match_latents(run.sae, atoms)["cosine"]
    assert (matched > 0.9).mean() >= 0.9, np.sort(matched)  # most atoms found
    assert float(np.median(matched)) > 0.97
    held = run.quality["held_out"]
    assert held["rows"] == 15 * 64 and held["fve"] > 0.8 and held["l0"] <= 3 and run.quality["train"]["dead"] == 0
    # the two seeds found the same dictionary
    assert run.stability is not None and run.stability["median_cosine"] > 0.95 and run.stability["above_0.9"] >= 0.8
    # the decoder rows have unit norm; the checkpoint as written is what load_sae reads
    assert torch.allclose(run.sae.W_dec.norm(dim=1), torch.ones(24), atol=1e-5)
    back = load_sae(tmp_path / "sae")
    assert back.digest == run.sae.digest and back.config["layer"] == "dict" and back.k == 3
    x = torch.randn(5, 12)
    assert torch.equal(back.encode(x), run.sae.encode(x))
    doc = json.loads((tmp_path / "sae" / "quality.json").read_text())
    assert doc["quality"]["held_out"]["fve"] == pytest.approx(held["fve"]) and len(doc["frequency"]) == 24
    assert load_sae(tmp_path / "sae" / "seed-1").config["training"]["seed"] == 1
    # the same call again resumes everything: no step is trained twice, the result is the same
    again = acc.train_sae(model, photos, layer="dict", latents=24, k=3, epochs=30, batch=256, out=tmp_path / "sae",
                          stability=False)
    assert again.resumed_from == run.config["steps"] and torch.equal(again.sae.W_enc, run.sae.W_enc)


def test_an_interrupted_collection_of_rows_continues(tmp_path: Path) -> None:
    """Ctrl-C while the photos are read: the chunks already written stay, and the next call reads only the
    rest; the rows are those of a collection that was never stopped."""
    from accentuate.analysis.sae_training import collect_rows

    model, _ = planted()
    spec = acc.resolve_spec(model)
    photos = list(torch.rand(40, 3, 32, 32, generator=torch.Generator().manual_seed(2)))
    held = np.zeros(40, dtype=bool)
    held[[3, 20]] = True
    lay = Layout("nchw", 12, (8, 8))
    opts = dict(spec=spec, canvas=32, held=held, chunk=16)
    calls = []

    def stop(module: nn.Module, args: object, out: torch.Tensor) -> None:
        calls.append(1)
        if len(calls) == 2:
            raise KeyboardInterrupt

    handle = model.dict.register_forward_hook(stop)
    with pytest.raises(KeyboardInterrupt):
        collect_rows(model, photos, "dict", lay, folder=tmp_path / "rows", **opts)
    handle.remove()
    assert json.loads((tmp_path / "rows" / "rows.json").read_text())["photos_done"] == 16
    seen = []
    handle = model.dict.register_forward_hook(lambda m, a, o: seen.append(o.shape[0]))
    train, held_rows = collect_rows(model, photos, "dict", lay, folder=tmp_path / "rows", **opts)
    handle.remove()
    assert seen == [16, 8]  # the second and third chunks only
    fresh_train, fresh_held = collect_rows(model, photos, "dict", lay, folder=None, **opts)
    assert train.shape == (38 * 64, 12) and held_rows.shape == (2 * 64, 12)
    assert np.allclose(np.asarray(train, dtype=np.float32), fresh_train.numpy(), rtol=1e-3, atol=1e-3)
    assert np.allclose(np.asarray(held_rows, dtype=np.float32), fresh_held.numpy(), rtol=1e-3, atol=1e-3)


def test_scale_is_folded_into_the_checkpoint() -> None:
    """Rows 1000 times larger give the same latents, with codes 1000 times larger."""
    g = torch.Generator().manual_seed(0)
    atoms = _atoms(8, 6)
    idx = torch.stack([torch.randperm(8, generator=g)[:2] for _ in range(2000)])
    x = torch.zeros(2000, 8).scatter(1, idx, 0.5 + torch.rand(2000, 2, generator=g)) @ atoms
    small = fit_sae(x, 8, 2, steps=60, batch=256, seed=0).sae
    big = fit_sae(1000 * x, 8, 2, steps=60, batch=256, seed=0).sae
    assert torch.allclose(big.W_dec, small.W_dec, atol=1e-4)
    assert torch.allclose(big.encode(1000 * x[:50]), 1000 * small.encode(x[:50]), rtol=1e-3, atol=1e-2)
    q = sae_quality(big, 1000 * x)
    assert q["fve"] == pytest.approx(sae_quality(small, x)["fve"], abs=1e-4)


def _clusters(n: int = 2000, centers: int = 4, d: int = 8, noise: float = 0.1) -> torch.Tensor:
    """Rows near a few points: most of 64 latents never win a top-2 there (they die)."""
    g = torch.Generator().manual_seed(0)
    c = torch.randn(centers, d, generator=g) * 2
    return c[torch.randint(0, centers, (n,), generator=g)] + noise * torch.randn(n, d, generator=g)


def test_an_interrupted_training_resumes_where_it_stopped(tmp_path: Path) -> None:
    x = _clusters(600)
    opts = dict(steps=40, batch=64, seed=3, revive_every=5, dead_after=64)
    straight = fit_sae(x, 64, 2, **opts).sae

    def stop(step: int) -> None:
        if step == 16:
            raise KeyboardInterrupt

    state = tmp_path / "state.pt"
    with pytest.raises(KeyboardInterrupt):
        fit_sae(x, 64, 2, state=state, on_step=stop, **opts)
    resumed = fit_sae(x, 64, 2, state=state, **opts)
    assert resumed.resumed_from == 17 and resumed.revived > 0
    for name in ("W_enc", "b_enc", "W_dec", "b_dec"):
        assert torch.equal(getattr(resumed.sae, name), getattr(straight, name)), name
    with pytest.raises(ValueError, match="holds a training with other settings \\(k\\)"):
        fit_sae(x, 64, 3, state=state, **opts)


def test_dead_latents_are_revived() -> None:
    """On rows near four points most latents never fire; revival moves them to poorly reconstructed rows,
    where some of them stay alive."""
    x = _clusters()
    without = fit_sae(x, 64, 2, steps=150, batch=200, seed=0, revive_every=10**6)
    with_ = fit_sae(x, 64, 2, steps=150, batch=200, seed=0, revive_every=10, dead_after=400)
    dead = [sae_quality(f.sae, x)["dead"] for f in (without, with_)]
    assert with_.revived > 0 and dead[1] < dead[0], dead


@pytest.mark.parametrize("shape", [(5, 5), (7, 4), (4, 9), (30, 40)])
def test_linear_assignment_finds_the_optimum(shape: tuple[int, int]) -> None:
    scipy = pytest.importorskip("scipy.optimize")
    rng = np.random.default_rng(sum(shape))
    for _ in range(5):
        c = rng.normal(size=shape)
        rows, cols = linear_assignment(c)
        r2, c2 = scipy.linear_sum_assignment(c)
        assert len(rows) == min(shape) and len(set(cols.tolist())) == len(cols)
        assert c[rows, cols].sum() == pytest.approx(c[r2, c2].sum(), abs=1e-9)
        rows, cols = linear_assignment(c, maximize=True)
        r2, c2 = scipy.linear_sum_assignment(c, maximize=True)
        assert c[rows, cols].sum() == pytest.approx(c[r2, c2].sum(), abs=1e-9)


def test_matching_finds_a_permuted_dictionary() -> None:
    w = _atoms(50, 20)
    perm = torch.randperm(50, generator=torch.Generator().manual_seed(0))
    m = match_latents(w, w[perm])
    assert m["mean_cosine"] == pytest.approx(1.0) and m["above_0.9"] == 1.0
    assert (perm[m["pairs"][:, 1]] == torch.as_tensor(m["pairs"][:, 0])).all()


# -- hand-written checkpoints ------------------------------------------------------------------------
W_ENC = torch.tensor([[1.0, 0.0, 2.0, -1.0], [0.0, 1.0, 1.0, 1.0]])  # (d_in=2, d_sae=4)
B_ENC = torch.tensor([0.0, -0.5, 0.0, 0.5])
B_DEC = torch.tensor([1.0, 0.0])
X = torch.tensor([[2.0, 1.0], [0.0, 3.0]])
# x - b_dec = [1, 1] and [-1, 3]; pre = [1, 0.5, 3, 0.5] and [-1, 2.5, 1, 4.5]


def _write(folder: Path, cfg: dict, tensors: dict[str, torch.Tensor], fmt: str = "safetensors") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "cfg.json").write_text(json.dumps(cfg))
    if fmt == "safetensors":
        from safetensors.torch import save_file

        save_file(tensors, str(folder / "sae_weights.safetensors"))
    else:
        torch.save(tensors, folder / "sae.pt")
    return folder


WEIGHTS = {"W_enc": W_ENC, "b_enc": B_ENC, "b_dec": B_DEC, "W_dec": torch.eye(4, 2)}


@pytest.mark.parametrize("cfg, extra, codes", [
    ({"activation": "relu"}, {}, [[1, 0.5, 3, 0.5], [0, 2.5, 1, 4.5]]),
    ({"architecture": "standard"}, {}, [[1, 0.5, 3, 0.5], [0, 2.5, 1, 4.5]]),
    ({"activation": "topk", "k": 2}, {}, [[1, 0, 3, 0], [0, 2.5, 0, 4.5]]),
    ({"activation_fn_str": "topk", "activation_fn_kwargs": {"k": 1}}, {}, [[0, 0, 3, 0], [0, 0, 0, 4.5]]),
    ({"architecture": "jumprelu"}, {"threshold": torch.tensor([0.5, 0.6, 3.5, 0.0])},
     [[1, 0, 0, 0.5], [0, 2.5, 0, 4.5]]),
    ({"architecture": "jumprelu"}, {"log_threshold": torch.tensor([0.5, 0.6, 3.5, 1.0]).log()},
     [[1, 0, 0, 0], [0, 2.5, 0, 4.5]]),
    ({"activation": "relu", "apply_b_dec_to_input": False}, {}, [[2, 0.5, 5, 0], [0, 2.5, 3, 3.5]]),
])
@pytest.mark.parametrize("fmt", ["safetensors", "pt"])
def test_a_hand_written_checkpoint_gives_the_codes_computed_by_hand(tmp_path: Path, cfg: dict, extra: dict,
                                                                    codes: list, fmt: str) -> None:
    folder = _write(tmp_path / "ckpt", {"d_in": 2, "d_sae": 4, **cfg}, {**WEIGHTS, **extra}, fmt)
    sae = load_sae(folder)
    assert torch.allclose(sae.encode(X), torch.tensor(codes, dtype=torch.float32))
    assert torch.equal(sae(X[:, None]), sae.encode(X)[:, None])  # any leading shape: (N, positions, d_in)
    assert torch.allclose(sae.decode(sae.encode(X)), sae.encode(X) @ torch.eye(4, 2) + B_DEC)
    # the weights file itself, with cfg.json beside it, is read the same way
    weights = next(p for p in folder.iterdir() if p.suffix in (".safetensors", ".pt"))
    assert torch.equal(load_sae(weights).encode(X), sae.encode(X)) and load_sae(weights).digest == sae.digest


def test_save_and_load_round_trip_and_the_digest_follows_the_contents(tmp_path: Path) -> None:
    sae = SparseAutoencoder(W_ENC, B_ENC, B_DEC, torch.eye(4, 2), activation="topk", k=2)
    save_sae(sae, tmp_path / "a", layer="feat")
    back = load_sae(tmp_path / "a")
    assert back.config["layer"] == "feat" and back.k == 2 and back.path == str((tmp_path / "a").resolve())
    assert torch.equal(back.encode(X), sae.encode(X)) and len(back.digest) == 16
    save_sae(sae, tmp_path / "b", layer="feat")
    assert load_sae(tmp_path / "b").digest == back.digest  # the same contents elsewhere: the same digest
    sae.b_enc[0] = 0.25
    save_sae(sae, tmp_path / "a", layer="feat")
    assert load_sae(tmp_path / "a").digest != back.digest
    # SAELens' own reader would find what it expects
    from safetensors.torch import load_file

    keys = load_file(str(tmp_path / "a" / "sae_weights.safetensors"))
    assert set(keys) == {"W_enc", "b_enc", "b_dec", "W_dec"} and keys["W_enc"].shape == (2, 4)
    cfg = json.loads((tmp_path / "a" / "cfg.json").read_text())
    assert cfg["architecture"] == "topk" and cfg["d_in"] == 2 and cfg["d_sae"] == 4 and cfg["k"] == 2


@pytest.mark.parametrize("cfg, tensors, message", [
    ({"d_in": 2, "d_sae": 4, "activation": "relu"}, {"W_enc": W_ENC, "b_dec": B_DEC},
     "has no b_enc (it holds W_enc, b_dec); an SAE checkpoint holds W_enc (d_in, d_sae)"),
    ({"d_in": 3, "d_sae": 4, "activation": "relu"}, WEIGHTS, "cfg.json says d_in=3 but sae_weights.safetensors has d_in=2"),
    ({"d_in": 2, "d_sae": 4, "activation": "gelu"}, WEIGHTS, "unknown activation 'gelu'; use one of relu, topk, jumprelu"),
    ({"d_in": 2, "d_sae": 4, "architecture": "gated"}, WEIGHTS, "architecture 'gated' is not supported"),
    ({"d_in": 2, "d_sae": 4}, WEIGHTS, "no activation; add \"activation\""),
    ({"d_in": 2, "d_sae": 4, "activation": "topk"}, WEIGHTS, "a topk SAE needs k, an integer in 1..d_sae=4"),
    ({"d_in": 2, "d_sae": 4, "activation": "jumprelu"}, WEIGHTS, "a jumprelu SAE needs threshold"),
    ({"d_in": 2, "d_sae": 4, "activation": "relu"}, {**WEIGHTS, "b_enc": torch.zeros(3)},
     "b_enc has shape (3) but W_enc (2, 4) (d_in=2, d_sae=4) needs b_enc of shape (4,)"),
    ({"d_in": 2, "d_sae": 4, "activation": "relu"}, {**WEIGHTS, "W_dec": torch.zeros(2, 4)},
     "W_dec has shape (2, 4)"),
    ({"d_in": 2, "d_sae": 4, "activation": "relu", "normalize_activations": "expected_average_only_in"}, WEIGHTS,
     "normalize_activations='expected_average_only_in' is not supported"),
    ({"d_in": 2, "d_sae": 4, "activation": "relu"}, {**WEIGHTS, "b_dec": torch.tensor([1.0, math.nan])},
     "b_dec has NaN or infinite entries"),
])
def test_bad_checkpoints_are_one_line_errors(tmp_path: Path, cfg: dict, tensors: dict, message: str) -> None:
    folder = _write(tmp_path / "bad", cfg, tensors)
    with pytest.raises(CheckpointError) as e:
        load_sae(folder)
    assert message in str(e.value) and "\n" not in str(e.value)


def test_missing_files_are_one_line_errors(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError, match="not found"):
        load_sae(tmp_path / "nothing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(CheckpointError, match="holds no weights file"):
        load_sae(tmp_path / "empty")
    folder = _write(tmp_path / "nocfg", {}, WEIGHTS)
    (folder / "cfg.json").unlink()
    with pytest.raises(CheckpointError, match="no cfg.json beside"):
        load_sae(folder)
    (folder / "cfg.json").write_text("{not json")
    with pytest.raises(CheckpointError, match="cannot read .* as JSON"):
        load_sae(folder)
    (folder / "cfg.json").write_text('{"d_in": 2, "d_sae": 4, "activation": "relu"}')
    (folder / "sae_weights.safetensors").write_bytes(b"garbage")
    with pytest.raises(CheckpointError, match="cannot read .* as safetensors"):
        load_sae(folder)
    (folder / "sae_weights.safetensors").unlink()
    torch.save([1, 2], folder / "x.pt")
    with pytest.raises(CheckpointError, match="holds a list; an SAE checkpoint is a dict of tensors"):
        load_sae(folder)
    torch.save(WEIGHTS, folder / "y.pt")
    with pytest.raises(CheckpointError, match="holds 2 weights files \\(x.pt, y.pt\\); give the path of one"):
        load_sae(folder)
    assert torch.equal(load_sae(folder / "y.pt").W_enc, W_ENC)
    with pytest.raises(CheckpointError, match="reads 2-wide activations \\(d_in=2\\) but layer 'feat' has 6 channels"):
        load_sae(folder / "y.pt", layer="feat", width=6)


# -- the objective ---------------------------------------------------------------------------------
def _sae(activation: str = "topk", k: int | None = 2, **kw) -> SparseAutoencoder:
    return SparseAutoencoder(W_ENC, B_ENC, B_DEC, torch.eye(4, 2), activation=activation,
                             k=k if activation == "topk" else None, **kw)


LAY = Layout("nchw", 2, (1, 2))


def _acts(x: torch.Tensor) -> dict[str, torch.Tensor]:
    """Rows of ``x`` ``(2, 2)`` as the two positions of one image of layer ``feat``."""
    return {"feat": x.T.reshape(1, 2, 1, 2).clone()}


def test_latent_values_are_the_codes() -> None:
    sae = _sae()
    codes = sae.encode(X)  # two positions
    for u in range(4):
        assert torch.allclose(acc.latent("feat", sae, u)(_acts(X), {"feat": LAY}), codes[:, u].mean()[None])
        assert torch.allclose(acc.latent("feat", sae, u, "max")(_acts(X), {"feat": LAY}), codes[:, u].max()[None])
    # any module or callable that returns (N, positions, K) codes is an encoder
    lin = nn.Linear(2, 3)
    assert torch.allclose(acc.latent("feat", lin, 2)(_acts(X), {"feat": LAY}), lin(X)[:, 2].mean()[None])
    assert torch.allclose(acc.latent("feat", lambda t: t * 2, 1, "max")(_acts(X), {"feat": LAY}), torch.tensor([6.0]))
    # they compose like any objective
    both = acc.latent("feat", sae, 2) - 0.5 * acc.latent("feat", sae, 3)
    assert torch.allclose(both(_acts(X), {"feat": LAY}), (codes[:, 2].mean() - 0.5 * codes[:, 3].mean())[None])
    assert both.layers == frozenset({"feat"})
    # a leading token instead of the patch positions
    tok = Layout("tokens", 2, (1, 1), prefix=1)
    acts = {"feat": torch.stack([X[0], X[1]])[None]}  # token 0 = X[0], the one patch = X[1]
    assert torch.allclose(acc.latent("feat", sae, 2, token=0)(acts, {"feat": tok}), codes[0, 2:3])
    assert torch.allclose(acc.latent("feat", sae, 3)(acts, {"feat": tok}), codes[1, 3:4])


def test_a_latent_that_is_off_still_has_a_gradient() -> None:
    """Latent 0 is off at both positions under top-1 (its pre-activations 1 and -1 lose to 3 and 4.5): its
    code has no gradient, and the straight-through value has the pre-activation's."""
    sae = _sae(k=1)
    x = X.clone().requires_grad_(True)
    acts = {"feat": x.T.reshape(1, 2, 1, 2)}
    value = acc.latent("feat", sae, 0)(acts, {"feat": LAY})
    assert float(value.detach()) == 0
    (grad,) = torch.autograd.grad(value.sum(), x)
    assert torch.allclose(grad, W_ENC[:, 0].expand(2, 2) / 2)  # d mean(pre_0) / dx
    plain = acc.latent("feat", sae, 0, straight_through=False)(acts, {"feat": LAY})
    (grad,) = torch.autograd.grad(plain.sum(), x, allow_unused=True)
    assert grad is None or float(grad.abs().sum()) == 0
    # "max" of a latent that is off everywhere follows its largest pre-activation
    value = acc.latent("feat", sae, 0, "max")(acts, {"feat": LAY})
    (grad,) = torch.autograd.grad(value.sum(), x)
    assert float(value.detach()) == 0 and torch.allclose(grad, torch.stack([W_ENC[:, 0], torch.zeros(2)]))
    assert sae.W_enc.grad is None and not sae.W_enc.requires_grad  # the SAE's weights are left alone


def test_latent_checks_its_layer_and_unit() -> None:
    sae = _sae()
    with pytest.raises(CheckpointError, match="reads 2-wide activations \\(d_in=2\\) but layer 'feat' has 6"):
        acc.latent("feat", sae, 1).validate({"feat": Layout("nchw", 6, (2, 2))})
    with pytest.raises(ValueError, match="latent 4 is out of range for SparseAutoencoder, which has 4 latents"):
        acc.latent("feat", sae, 4)
    with pytest.raises(ValueError, match="reduce must be 'mean' or 'max'"):
        acc.latent("feat", sae, 1, "sum")
    with pytest.raises(ValueError, match="must return codes \\(N, positions, K\\)"):
        acc.latent("feat", lambda t: t.sum(-1), 1)(_acts(X), {"feat": LAY})
    with pytest.raises(ValueError, match="token 1 is out of range"):
        acc.latent("feat", sae, 1, token=1).validate({"feat": Layout("tokens", 2, (1, 1), prefix=1)})


# -- accentuation: a latent rises more than the others -----------------------------------------------
def _palette_sae() -> SparseAutoencoder:
    """A TopK (k=1) SAE on the palette model's layer whose latents are its three planted colours, measured
    from their mean (the layer's 3 empty channels are in no latent)."""
    from test_concepts import COLOURS

    mean = COLOURS.mean(dim=0)
    dirs = torch.nn.functional.normalize(COLOURS - mean, dim=1)
    w = torch.zeros(3, 6)
    w[:, :3] = dirs
    b = torch.zeros(6)
    b[:3] = mean
    return SparseAutoencoder(w.T.clone(), torch.zeros(3), b, w, activation="topk", k=1)


def test_each_latent_accentuation_raises_its_latent_most(tmp_path: Path) -> None:
    """The palette model's layer is each pixel's colour; latent i is on where a pixel has colour i. On its
    top photo, its accentuation raises latent i, and more than any other latent (every latent of the SAE
    is measured before and after). On a photo without colour i, latent i is off everywhere: only the
    straight-through gradient moves the photo, toward colour i, and its pre-activation rises (in these
    10 steps it does not yet win the top-1 from the photo's own colours: Adam in the decorrelated colour
    space also darkens the photo, which the other latents feel)."""
    from test_concepts import palette, palette_photos

    model = palette()
    photos = palette_photos()
    con = acc.concepts(model, photos, method="sae", sae=_palette_sae(), latents=3, layer="feat", top=1, weak=1)
    assert con.method == "sae" and sorted(con.units) == [0, 1, 2] and con.layout.grid == (16, 16)
    assert len(con.accentuations) == 6 and {a.kind for a in con.accentuations} == {"top", "weak"}
    for a in con.accentuations:
        assert a.all_before is not None and a.all_before.shape == (3,) and a.unit == con.units[a.concept]
        if a.kind == "top":
            assert a.own_gain > 0 and a.own_gain > a.max_other_gain, (a.concept, a.gain)
        else:
            assert float(a.before[a.concept]) == 0  # off everywhere before
    # the atlas and the records of the latents, as for concepts
    written = {p.name for p in con.save(tmp_path)}
    assert {"concepts.json", "concepts.md", "concepts.png", "concept-0.png", "concept-2.npy"} <= written
    saved = json.loads((tmp_path / "concepts.json").read_text())
    assert saved["factorization"]["method"] == "sae" and saved["factorization"]["units"] == con.units
    assert [c["unit"] for c in saved["concepts"]] == con.units and saved["concepts"][0]["target"] is None  # no file
    assert "latent" in con._repr_html_() and con.rows()[0]["latent"] == con.units[0]
    sae = con.sae
    assert sae is not None
    weak = next(a for a in con.accentuations if a.kind == "weak")

    def mean_pre(img: torch.Tensor) -> float:
        view = torch.nn.functional.interpolate(img[None], size=(16, 16), mode="bilinear", antialias=True)
        with torch.no_grad():
            return float(sae.pre_activation(model.feat(view).flatten(2).transpose(1, 2))[..., weak.unit].mean())

    assert weak.accentuated is not None and mean_pre(weak.accentuated) > mean_pre(photos[weak.image]) + 0.02
    # without the straight-through gradient, a latent that is off everywhere gives the photo no push at all
    off = acc.accentuate(model, photos[weak.image], acc.latent("feat", sae, weak.unit, straight_through=False),
                         seed=0)
    assert float(off.after["value"][0, 0]) == 0 and float(off.before["value"][0, 0]) == 0
    assert float((off.images[0, 0] - photos[weak.image]).abs().max()) < 0.01


def test_latents_are_picked_by_share_among_the_frequent_and_not_dense() -> None:
    from accentuate.analysis.concepts import select_latents

    shares = torch.tensor([0.30, 0.25, 0.20, 0.15, 0.10])
    photos = torch.tensor([50, 2, 40, 40, 40])
    freq = torch.tensor([0.60, 0.01, 0.05, 0.02, 0.03])
    assert select_latents(shares, photos, 2) == [0, 2]  # latent 1 is in too few photos
    assert select_latents(shares, photos, 2, frequency=freq, max_active=0.2) == [2, 3]  # latent 0 is dense
    assert select_latents(shares, photos, 5, frequency=freq, max_active=0.2) == [2, 3, 4, 0, 1]  # then the rest
    assert select_latents(shares, photos, [4, 1]) == [4, 1]
    with pytest.raises(ValueError, match="latent 7 is out of range; the SAE has 5 latents"):
        select_latents(shares, photos, [1, 7])
    with pytest.raises(ValueError, match="give each latent once"):
        select_latents(shares, photos, [1, 1])


# -- records -------------------------------------------------------------------------------------------
def _checkpoint(folder: Path, sae: SparseAutoencoder | None = None, layer: str = "feat") -> Path:
    save_sae(sae if sae is not None else _sae(), folder, layer=layer)
    return folder


def test_latent_records_its_checkpoint_not_its_weights(tmp_path: Path, recwarn: pytest.WarningsRecorder) -> None:
    obj = acc.latent("feat", load_sae(_checkpoint(tmp_path / "sae")), 2, "max")
    rec = json.loads(json.dumps(obj.to_record()))
    assert rec["type"] == "sae_latent" and rec["sae"]["path"] == str((tmp_path / "sae").resolve())
    assert "W_enc" not in json.dumps(rec) and len(json.dumps(rec)) < 1000
    back = from_record(rec)
    assert isinstance(back, SAELatent) and repr(back) == repr(obj) == "SAELatent(feat, sae:2, max)"
    assert back.identity() == obj.identity() and back.to_record() == rec and not recwarn.list
    assert torch.equal(back(_acts(X), {"feat": LAY}), obj(_acts(X), {"feat": LAY}))
    # another checkpoint under the same path is another target; the old record no longer rebuilds
    changed = _sae()
    changed.b_enc[1] = 2.0
    _checkpoint(tmp_path / "sae", changed)
    again = acc.latent("feat", load_sae(tmp_path / "sae"), 2, "max")
    assert repr(again) == repr(obj) and again.identity() != obj.identity()
    with pytest.warns(UserWarning, match="has changed since the target .* was recorded"):
        assert isinstance(from_record(rec), Recorded)
    shutil.rmtree(tmp_path / "sae")
    with pytest.warns(UserWarning, match="cannot be rebuilt \\(SAE checkpoint .* not found"):
        gone = from_record(rec)
    assert isinstance(gone, Recorded) and repr(gone) == repr(obj)
    # an encoder that is not a checkpoint: identified by its weights, recorded by its name
    lin = nn.Linear(2, 3)
    mod = acc.latent("feat", lin, 1)
    first = mod.identity()
    with torch.no_grad():
        lin.bias[0] += 1
    assert mod.identity() != first and repr(mod) == "SAELatent(feat, Linear:1, mean)"
    with pytest.warns(UserWarning, match="not a checkpoint"):
        assert isinstance(from_record(json.loads(json.dumps(mod.to_record()))), Recorded)


def test_a_checkpoint_round_trips_through_run_json_and_result_load(tmp_path: Path) -> None:
    from cli_models import tiny

    model = tiny()
    g = torch.Generator().manual_seed(0)
    w = torch.nn.functional.normalize(torch.randn(16, 32, generator=g), dim=0)
    folder = _checkpoint(tmp_path / "sae", SparseAutoencoder(w, torch.zeros(32), torch.zeros(16), w.T.clone(),
                                                             activation="topk", k=4), layer="conv2")
    obj = parse_sae_target(f"sae:{folder}:7@conv2", model)
    assert repr(obj) == "SAELatent(conv2, sae:7, mean)"
    assert parse_sae_target(f"sae:{folder}:7", model).identity() == obj.identity()  # the layer from cfg.json
    seed = acc.load_image(DATA / "chelsea.jpg")
    res = acc.accentuate(model, seed, obj, steps=3, crops=2, canvas=40, seed=0)
    res.save(tmp_path / "saved")
    back = acc.Result.load(tmp_path / "saved")
    (t,) = back.targets
    assert isinstance(t, SAELatent) and t.identity() == obj.identity() and t.sae.digest == obj.sae.digest
    doc = json.loads((tmp_path / "saved" / "run.json").read_text())
    assert doc["targets"][0]["definition"]["sae"]["digest"] == obj.sae.digest
    # the command line: the same target, the same record
    out = tmp_path / "cli"
    code = main(["run", str(DATA / "chelsea.jpg"), "--target", f"sae:{folder}:7@conv2", "--model", "cli_models:tiny",
                 "--steps", "2", "--crops", "2", "--canvas", "40", "--frames", "0", "--out", str(out), "-q"])
    assert code == 0
    (t,) = acc.Result.load(out).targets
    assert isinstance(t, SAELatent) and t.identity() == obj.identity()


def test_the_target_grammar_reads_sae_targets(tmp_path: Path) -> None:
    """``sae:PATH:UNIT@LAYER`` is one form of ``acc.parse_target``, so Python's target strings take it too."""
    from cli_models import tiny

    model = tiny()
    w = torch.nn.functional.normalize(torch.randn(16, 32, generator=torch.Generator().manual_seed(0)), dim=0)
    folder = _checkpoint(tmp_path / "sae", SparseAutoencoder(w, torch.zeros(32), torch.zeros(16), w.T.clone(),
                                                             activation="topk", k=4), layer="conv2")
    obj = acc.parse_target(f"sae:{folder}:7@conv2", model)
    assert isinstance(obj, SAELatent) and (obj.layer, obj.unit) == ("conv2", 7)
    assert obj.identity() == parse_sae_target(f"sae:{folder}:7", model).identity()
    res = acc.accentuate(model, acc.load_image(DATA / "chelsea.jpg"), [f"sae:{folder}:7@conv2", f"sae:{folder}:3"],
                         steps=2, crops=2, canvas=40)
    assert [t.identity() for t in res.targets] == [obj.identity(),
                                                    parse_sae_target(f"sae:{folder}:3@conv2", model).identity()]
    with pytest.raises(acc.TargetError, match="latent 40 is out of range"):
        acc.parse_target(f"sae:{folder}:40@conv2", model)
    with pytest.raises(CheckpointError, match="reads 16-wide activations"):
        acc.parse_target(f"sae:{folder}:3@conv1", model)
    with pytest.raises(acc.TargetError, match="use .*sae:PATH:UNIT@LAYER"):
        acc.parse_target("conv2@sae", model)


@pytest.mark.parametrize("target, message", [
    ("sae:{folder}:99@conv2", "latent 99 is out of range; sae has 32 latents (0..31)"),
    ("sae:{folder}:3@conv3x", "layer 'conv3x' is not in the model"),
    ("sae:{folder}:3@conv1", "reads 16-wide activations (d_in=16) but layer 'conv1' has 8 channels"),
    ("sae:{missing}:3@conv2", "not found"),
    ("sae:{folder}", "an SAE latent is sae:PATH:UNIT@LAYER"),
])
def test_bad_sae_targets_are_one_line(tmp_path: Path, capsys: pytest.CaptureFixture, target: str,
                                      message: str) -> None:
    w = torch.nn.functional.normalize(torch.randn(16, 32, generator=torch.Generator().manual_seed(0)), dim=0)
    folder = _checkpoint(tmp_path / "sae", SparseAutoencoder(w, torch.zeros(32), torch.zeros(16), w.T.clone(),
                                                             activation="topk", k=4))
    text = target.format(folder=folder, missing=tmp_path / "missing")
    code = main(["run", str(DATA / "chelsea.jpg"), "--target", text, "--model", "cli_models:tiny", "--steps", "1",
                 "--out", str(tmp_path / "o"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err


# -- the command line ------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sae_folder(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """Four bundled photos in two folders and an SAE trained on them by ``accentuate sae train``."""
    from test_concepts import _photo_tree

    tmp = tmp_path_factory.mktemp("sae-cli")
    photos = _photo_tree(tmp / "photos")
    out = tmp / "sae"
    assert main(["sae", "train", str(photos), "--model", "cli_models:tiny", "--layer", "conv2", "--latents", "24",
                 "--k", "3", "--epochs", "4", "--batch", "256", "--out", str(out), "-q"]) == 0
    return photos, out


def test_cli_trains_a_checkpoint(sae_folder: tuple[Path, Path], capsys: pytest.CaptureFixture) -> None:
    photos, out = sae_folder
    sae = load_sae(out)
    assert (sae.d_in, sae.d_sae, sae.k, sae.config["layer"]) == (16, 24, 3, "conv2")
    doc = json.loads((out / "quality.json").read_text())
    assert doc["photos"] == 3 and len(doc["held_out_photos"]) == 1 and doc["stability"]["mean_cosine"] > 0
    assert doc["quality"]["held_out"]["rows"] == 256 and doc["config"]["steps"] == 4 * (3 * 256 // 256)
    # again: the rows and both seeds' states are reused, and the numbers are printed
    assert main(["sae", "train", str(photos), "--model", "cli_models:tiny", "--layer", "conv2", "--latents", "24",
                 "--k", "3", "--epochs", "4", "--batch", "256", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "variance explained:" in printed and "on the held-out photos" in printed and "dead latents" in printed
    assert "stability (seed 0 vs 1, Hungarian matching" in printed
    assert load_sae(out).digest == sae.digest


@pytest.mark.parametrize("extra, message", [
    (["--k", "30"], "--k must be in 1..--latents (24)"),
    (["--layer", "fc"], "has no spatial positions"),
    (["--layer", "conv9"], "layer 'conv9' is not in the model"),
    (["--held-out", "1.5"], "--held-out must be in [0, 1)"),
])
def test_cli_train_bad_input_is_one_line(sae_folder: tuple[Path, Path], tmp_path: Path,
                                         capsys: pytest.CaptureFixture, extra: list[str], message: str) -> None:
    photos, _ = sae_folder
    code = main(["sae", "train", str(photos), "--model", "cli_models:tiny", "--layer", "conv2", "--latents", "24",
                 "--k", "3", "--out", str(tmp_path / "o"), "-q", *extra])
    err = capsys.readouterr().err
    assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err


def test_cli_concepts_of_an_sae(sae_folder: tuple[Path, Path], tmp_path: Path) -> None:
    photos, sae = sae_folder
    out = tmp_path / "atlas"
    code = main(["concepts", str(photos), "--method", "sae", "--sae", str(sae), "--latents", "2", "--top", "1",
                 "--weak", "1", "--out", str(out), "--model", "cli_models:tiny", "--steps", "2", "--crops", "2",
                 "--seed", "0", "-q"])
    assert code == 0
    doc = json.loads((out / "run.json").read_text())
    f = doc["factorization"]
    assert f["method"] == "sae" and f["layer"] == "conv2" and f["d_sae"] == 24 and len(f["units"]) == 2
    assert f["checkpoint"] == str(sae.resolve()) and f["digest"] == load_sae(sae).digest
    for c, unit in zip(doc["concepts"], f["units"]):
        assert c["unit"] == unit and c["target"] == f"sae:{sae.resolve()}:{unit}@conv2"
        assert [a["kind"] for a in c["accentuated"]] == ["top", "weak"]
        for a in c["accentuated"]:
            assert len(a["before_all"]) == 2 and 0 <= a["largest_other_latent"] < 24
        assert (out / c["atlas"]).stat().st_size > 1000
    html = (out / "report.html").read_text()
    assert f"Concept 0: latent {f['units'][0]}" in html and "of the code energy" in html
    targets = [t["definition"] for t in doc["targets"]]
    assert [t["type"] for t in targets] == ["sae_latent", "sae_latent"] and [t["unit"] for t in targets] == f["units"]
    # a list of units, and one trained here when no --sae is given
    out2 = tmp_path / "atlas2"
    assert main(["concepts", str(photos / "a"), "--method", "sae", "--latents", "3,0", "--top", "0", "--weak", "0",
                 "--layer", "conv2", "--out", str(out2), "--model", "cli_models:tiny", "-q"]) == 0
    doc2 = json.loads((out2 / "run.json").read_text())
    assert doc2["factorization"]["units"] == [3, 0] and load_sae(out2 / "sae").d_sae == 2048
    assert doc2["factorization"]["training"]["held_out_photos"] == 1


def test_cli_concepts_sae_resumes_with_the_sae_it_trained(sae_folder: tuple[Path, Path], tmp_path: Path,
                                                         capsys: pytest.CaptureFixture,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """Without --sae the SAE is trained into OUT/sae; the same command again reads it back (its pairs'
    targets are the same, so they are resumed, not redone), and torchrun's ranks are told to train first."""
    photos, _ = sae_folder
    out = tmp_path / "atlas"
    argv = ["concepts", str(photos / "a"), "--method", "sae", "--latents", "2", "--top", "1", "--weak", "0",
            "--layer", "conv2", "--out", str(out), "--model", "cli_models:tiny", "--steps", "2", "--crops", "2", "-q"]
    assert main(argv) == 0
    weights = out / "sae" / "sae_weights.safetensors"
    stamp, digest = weights.stat().st_mtime_ns, load_sae(out / "sae").digest
    first = json.loads((out / "run.json").read_text())
    assert main(argv) == 0
    again = json.loads((out / "run.json").read_text())
    assert weights.stat().st_mtime_ns == stamp and again["factorization"]["digest"] == digest
    assert again["factorization"]["units"] == first["factorization"]["units"]
    assert [(p["id"], p["sha256"]) for p in again["pairs"]] == [(p["id"], p["sha256"]) for p in first["pairs"]]
    assert again["pairs"] and all(p["resumed"] for p in again["pairs"])
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    capsys.readouterr()
    code = main([*argv[:-1], "--out", str(tmp_path / "other"), "-q"])
    err = capsys.readouterr().err
    assert code == 2 and "train it once (`accentuate sae train" in err and len(err.strip().splitlines()) == 1, err


def test_cli_concepts_sae_options_are_checked(sae_folder: tuple[Path, Path], tmp_path: Path,
                                             capsys: pytest.CaptureFixture) -> None:
    photos, sae = sae_folder
    base = ["concepts", str(photos), "--out", str(tmp_path / "o"), "--model", "cli_models:tiny", "-q"]
    for extra, message in ((["--sae", str(sae)], "--sae and --latents are for --method sae"),
                           (["--method", "sae", "--sae", str(sae), "--latents", "2,99"], "latent 99 is out of range"),
                           (["--method", "sae", "--sae", str(sae), "--layer", "conv1"],
                            "reads 16-wide activations (d_in=16) but layer 'conv1' has 8 channels")):
        code = main([*base, *extra])
        err = capsys.readouterr().err
        assert code == 2 and len(err.strip().splitlines()) == 1 and message in err, err


@pytest.mark.slow
def test_lite0_latent_of_a_trained_sae_rises(lite0: nn.Module, tmp_path: Path) -> None:
    """On the real model: an SAE on blocks.10 over the bundled photos, and one latent accentuated."""
    run = acc.train_sae(lite0, DATA, layer="blocks.10", latents=128, k=8, epochs=20, batch=256, stability=False,
                        out=tmp_path / "sae", canvas=224)
    assert run.quality["train"]["fve"] > 0.3
    unit = int(torch.argmax(run.frequency))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = acc.accentuate(lite0, DATA / "coffee.jpg", acc.latent("blocks.10", run.sae, unit), steps=10, crops=4,
                             canvas=224, seed=0)
    assert float(res.after["value"][0, 0]) > float(res.before["value"][0, 0])
