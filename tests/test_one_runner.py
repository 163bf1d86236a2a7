"""One command, one model runner: the targets, the settings, a reference image and every batch read
what one traced pass of the model found (before, ``run --like`` traced the model three times before
its first step)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import accentuate as acc
from accentuate.cli import main
from accentuate.hooks import ModelRunner

FAST = ["--model", "cli_models:tiny", "--steps", "2", "--crops", "2", "--canvas", "48", "--frames", "0", "-q"]


@pytest.fixture
def passes(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """The traced passes of the model (a :meth:`ModelRunner.trace` that runs the model), and the
    runners the command made."""
    seen: list[str] = []
    trace = ModelRunner.trace

    def counted(self: ModelRunner, example: torch.Tensor | None = None) -> list:
        if example is not None or "trace" not in self._cache:
            seen.append("trace")
        return trace(self, example)

    monkeypatch.setattr(ModelRunner, "trace", counted)
    return seen


def _photos(tmp_path: Path) -> tuple[Path, Path]:
    rng = np.random.default_rng(0)
    a, b = tmp_path / "a.png", tmp_path / "b.png"
    for p in (a, b):
        Image.fromarray(rng.integers(0, 255, (40, 52, 3), dtype=np.uint8)).save(p)
    return a, b


def test_run_with_every_kind_of_target_traces_the_model_once(tmp_path: Path, passes: list[str],
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    a, b = _photos(tmp_path)
    assert main(["run", str(a), "--target", "banana", "conv2:3", "--like", str(b), *FAST, "--out", "o"]) == 0
    assert passes == ["trace"]
    assert json.loads((tmp_path / "o" / "run.json").read_text())["counts"]["complete"] == 3


def test_manifest_with_own_settings_traces_the_model_once(tmp_path: Path, passes: list[str],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    a, b = _photos(tmp_path)
    (tmp_path / "m.csv").write_text(f"image,target,lam\n{a},banana,\n{b},conv2:1,0.5\n")
    assert main(["run", "--manifest", "m.csv", *FAST, "--out", "o"]) == 0
    assert passes == ["trace"]


def test_explain_traces_the_model_once(tmp_path: Path, passes: list[str], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    a, _ = _photos(tmp_path)
    assert main(["explain", str(a), "--top", "2", *FAST, "--out", "o"]) == 0
    assert passes == ["trace"]


def test_a_runner_is_reused_only_for_its_own_model() -> None:
    model = acc.load_model("cli_models:tiny")
    runner = ModelRunner(model, acc.spec.resolve_spec(model))
    rows = runner.trace()
    fed = runner.configured(channels_last=True)
    assert fed is not runner and fed.channels_last and fed.trace() is rows  # what was traced is shared
    assert ModelRunner.reuse(runner, model, runner.spec) is runner
    with pytest.raises(ValueError, match="runs another model"):
        ModelRunner.reuse(runner, acc.load_model("cli_models:tiny"), runner.spec)
    # A run given the runner gives the same images as one without it.
    seed = torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(1))
    kw = dict(steps=2, crops=2, canvas=40, seed=3)
    with_runner = acc.accentuate(model, seed, "banana", runner=runner, **kw)
    without = acc.accentuate(model, seed, "banana", **kw)
    assert torch.equal(with_runner.images, without.images)


@pytest.mark.parametrize("model, crops, crop_range, steps", [
    ("efficientnet_lite0", "16", "0.05 0.99", "40"),
    ("dinov2_vits14_focus", "4", "0.5 1", "30"),
])
def test_help_shows_the_chosen_models_own_defaults(model: str, crops: str, crop_range: str, steps: str,
                                                   capsys: pytest.CaptureFixture) -> None:
    extra = [] if model == "efficientnet_lite0" else ["--model", model]
    assert main(["run", *extra, "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())  # argparse wraps lines
    assert f"augmented crops per step (default for {model}: {crops})" in text
    assert f"short side (default for {model}: {crop_range})" in text
    assert f"optimization steps (default for {model}: {steps})" in text


def test_help_for_a_model_known_only_once_loaded(capsys: pytest.CaptureFixture) -> None:
    assert main(["run", "--model=cli_models:tiny", "--help"]) == 0
    text = " ".join(capsys.readouterr().out.split())
    assert "augmented crops per step (default: the model's spec, else 16)" in text
    assert "defaults: the spec of --model cli_models:tiny once loaded" in text
