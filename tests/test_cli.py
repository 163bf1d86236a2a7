"""The command line, driven through its entry point (in-process and as a subprocess).

A tiny model (``--model cli_models:tiny``, see tests/cli_models.py) and small settings
keep each run to a few seconds.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import types
from importlib.machinery import ModuleSpec
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import accentuate as acc
from accentuate.cli import main
from accentuate.outputs.animation import mp4_available
from accentuate.runs.record import file_sha256

TESTS = Path(__file__).parent
FAST = ["--model", "cli_models:tiny", "--steps", "4", "--crops", "2", "--canvas", "48", "--frames", "3"]


def _photo(path: Path, w: int = 64, h: int = 48, phase: float = 0.0) -> Path:
    y, x = np.mgrid[0:h, 0:w]
    img = np.stack([128 + 100 * np.sin(x / 6 + phase), 128 + 90 * np.cos(y / 5), (x * 3 + y * 2) % 255], -1)
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path)
    return path


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A working directory with two small photos of different aspect ratios."""
    monkeypatch.chdir(tmp_path)
    _photo(tmp_path / "wide.png", 64, 48)
    _photo(tmp_path / "square.png", 40, 40, phase=1.0)
    return tmp_path


def _record(out: Path) -> dict:
    return json.loads((out / "run.json").read_text())


def _pairs(doc: dict) -> dict[tuple[str, str], dict]:
    return {(p["image"], p["objective"]): p for p in doc["pairs"]}


# -- run ---------------------------------------------------------------------------------

def test_run_writes_every_file_and_record(work: Path, capsys: pytest.CaptureFixture) -> None:
    rc = main(["run", "wide.png", "square.png", "--target", "apple", "conv2:3", "conv3:1@1,1",
               "--out", "out", *FAST])
    assert rc == 0
    out = work / "out"
    doc = _record(out)
    assert doc["status"] == "complete" and doc["format"] == "accentuate-run/1"
    assert doc["counts"] == {"complete": 6, "total": 6, "resumed": 0}
    assert doc["settings"]["steps"] == 4 and doc["settings"]["crops"] == 2 and doc["settings"]["seed"] == 0
    assert doc["settings"]["reg_layer"] == "conv2"  # the spec's, filled in
    assert doc["versions"]["torch"] == torch.__version__ and doc["device"] == "cpu"
    # Two canvas shapes -> two batches, each with all three targets.
    assert [b["canvas"] for b in doc["timings"]["batches"]] == [[36, 48], [48, 48]]
    assert [t["kind"] for t in doc["targets"]] == ["class", "channel", "neuron"]
    video = mp4_available() is None
    assert doc["outputs"]["mp4"] is video and (doc["outputs"]["mp4_note"] is None) is video
    assert doc["outputs"]["opacity"] == "per pair"
    for p in doc["pairs"]:
        assert p["status"] == "complete"
        assert set(p["files"]) == {"image", "rgba", "figure", "gif"} | ({"mp4"} if video else set())
        for kind, name in p["files"].items():
            assert file_sha256(out / name) == p["sha256"][kind]
        assert 0 <= p["distance"]["pixel_rmse"] < 1 and -1 <= p["distance"]["ssim"] <= 1
        assert p["distance"]["reg_layer"] > 0 and p["distance"]["reg_layer_name"] == "conv2"
        assert len(p["before"]["top5"]) == 5 and len(p["after"]["top5"]) == 5
    # The class target has rank and probability even in a batch mixed with channels.
    apple = _pairs(doc)[("wide.png", "Logit(0 'apple')")]
    assert isinstance(apple["after"]["rank"], int) and 0 < apple["after"]["prob"] < 1
    rgba = Image.open(out / apple["files"]["rgba"])
    assert rgba.mode == "RGBA" and rgba.size == (48, 36)
    assert np.asarray(rgba)[..., 3].max() == 255  # alpha = opacity normalized to 1
    gif = Image.open(out / apple["files"]["gif"])
    assert gif.n_frames >= 3
    sheet = Image.open(out / "contact_sheet.png")
    assert sheet.size[0] > 4 * 224 and doc["outputs"]["contact_sheet"] == "contact_sheet.png"
    text = capsys.readouterr().out
    assert "wide.png -> apple (0): rank" in text and "contact sheet" in text


def test_run_numbers_equal_the_api(work: Path, device: torch.device) -> None:
    """run.json holds what the library returns for the same settings (and the batch's generator seed,
    which the record gives), on each device."""
    assert main(["run", "wide.png", "--target", "banana", "cherry", "--out", "out", "-q", *FAST,
                 "--device", device.type]) == 0
    doc = _record(work / "out")
    (batch,) = doc["timings"]["batches"]
    assert doc["device"].split(":")[0] == device.type
    if device.type == "cpu":
        assert batch["threads"] == torch.get_num_threads()  # a CPU run's pictures depend on them
    else:
        assert batch["cuda_peak_memory_bytes"] > 0
    model = acc.load_model("cli_models:tiny", device=torch.device(doc["device"]))
    seed = acc.prepare_seeds(acc.load_image("wide.png"), 48)
    res = acc.accentuate(model, seed, ["banana", "cherry"], steps=4, crops=2, canvas=(36, 48),
                         seed=batch["generator_seed"])
    pairs = _pairs(doc)
    for j, name in enumerate(["Logit(1 'banana')", "Logit(2 'cherry')"]):
        p = pairs[("wide.png", name)]
        assert p["after"]["rank"] == int(res.after["rank"][0, j])
        assert p["before"]["rank"] == int(res.before["rank"][0, j])
        assert p["after"]["value"] == pytest.approx(float(res.after["value"][0, j]), rel=1e-4, abs=1e-5)
        assert p["after"]["prob"] == pytest.approx(float(res.after["prob"][0, j]), rel=1e-4, abs=1e-6)
        assert p["after"]["top5"][0]["index"] == res.top("after", 5)[0][j][0][0]
        png = np.asarray(Image.open(work / "out" / p["files"]["image"])).astype(np.float32) / 255
        assert np.abs(png - res.images[0, j].permute(1, 2, 0).numpy()).max() < 1 / 255 + 1e-6


def test_run_resume_skips_complete_and_redoes_corrupted(work: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["run", "wide.png", "--target", "apple", "banana", "--out", "out", *FAST]
    assert main(args) == 0
    out = work / "out"
    first = _pairs(_record(out))
    apple, banana = first[("wide.png", "Logit(0 'apple')")], first[("wide.png", "Logit(1 'banana')")]
    (out / banana["files"]["image"]).write_bytes(b"not a png any more")
    mtime_apple = (out / apple["files"]["figure"]).stat().st_mtime_ns
    capsys.readouterr()
    assert main(args) == 0
    assert "1 pair(s) already complete" in capsys.readouterr().err
    second = _pairs(_record(out))
    assert second[("wide.png", "Logit(0 'apple')")]["resumed"] is True
    assert second[("wide.png", "Logit(1 'banana')")]["resumed"] is False
    assert (out / apple["files"]["figure"]).stat().st_mtime_ns == mtime_apple  # not rewritten
    # The redone pair is the same (deterministic) and its file intact again.
    assert file_sha256(out / banana["files"]["image"]) == banana["sha256"]["image"]
    assert _record(out)["counts"] == {"complete": 2, "total": 2, "resumed": 1}


def test_resume_redoes_pairs_when_settings_change(work: Path) -> None:
    assert main(["run", "wide.png", "--target", "apple", "--out", "out", "-q", *FAST]) == 0
    assert main(["run", "wide.png", "--target", "apple", "--out", "out", "-q", "--lam", "0.5", *FAST]) == 0
    doc = _record(work / "out")
    assert doc["counts"]["resumed"] == 0 and doc["settings"]["lam"] == 0.5


def test_default_out_is_a_fresh_timestamped_folder(work: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["run", "square.png", "--target", "apple", *FAST]) == 0
    assert main(["run", "square.png", "--target", "apple", *FAST]) == 0
    runs = sorted((work / "accentuate-runs").iterdir())
    assert len(runs) == 2 and all((r / "run.json").exists() for r in runs)
    assert all(_record(r)["counts"]["resumed"] == 0 for r in runs)


def test_ctrl_c_writes_finished_and_partial_pairs(work: Path, monkeypatch: pytest.MonkeyPatch,
                                                  capsys: pytest.CaptureFixture) -> None:
    import accentuate.runs.job as runner

    real = runner.steps_bar
    calls = {"n": 0}

    def interrupting(quiet, desc, total, position=0):  # noqa: ANN001
        calls["n"] += 1
        update, close = real(True, desc, total, position)
        if calls["n"] < 2:
            return update, close

        def update_then_stop(t: int, n: int) -> None:
            if t == 2:
                raise KeyboardInterrupt

        return update_then_stop, close

    monkeypatch.setattr(runner, "steps_bar", interrupting)
    args = ["run", "wide.png", "--target", "apple", "banana", "--batch", "1", "--out", "out", *FAST]
    assert main(args) == 130
    err = capsys.readouterr().err
    assert "interrupted" in err and "partial" in err and "Traceback" not in err
    doc = _record(work / "out")
    assert doc["status"] == "interrupted"
    status = {p["objective"]: (p["status"], p["steps_done"]) for p in doc["pairs"]}
    assert status == {"Logit(0 'apple')": ("complete", 4), "Logit(1 'banana')": ("partial", 2)}
    for p in doc["pairs"]:
        assert all((work / "out" / f).exists() for f in p["files"].values())
    # Rerunning finishes the partial pair and keeps the finished one.
    monkeypatch.setattr(runner, "steps_bar", real)
    assert main(args) == 0
    doc = _record(work / "out")
    assert doc["status"] == "complete"
    assert {p["objective"]: (p["status"], p["resumed"]) for p in doc["pairs"]} == {
        "Logit(0 'apple')": ("complete", True), "Logit(1 'banana')": ("complete", False)}


def test_numerical_failure_is_reported_and_others_continue(work: Path, monkeypatch: pytest.MonkeyPatch,
                                                           capsys: pytest.CaptureFixture) -> None:
    import accentuate.runs.job as runner

    real = runner.accentuate

    def failing(*a, **k):  # noqa: ANN002, ANN003
        res = real(*a, **k)
        res.failed[(0, 1)] = "non-finite loss or gradient at step 3; kept the image of step 3"
        return res

    monkeypatch.setattr(runner, "accentuate", failing)
    rc = main(["run", "wide.png", "--target", "apple", "banana", "--out", "out", *FAST])
    assert rc == 1
    err = capsys.readouterr().err
    assert "banana (1) failed: non-finite" in err and "1 of 2 pair(s) failed" in err
    doc = _record(work / "out")
    status = {p["objective"]: (p["status"], p["failed"]) for p in doc["pairs"]}
    assert status["Logit(0 'apple')"] == ("complete", None)
    assert status["Logit(1 'banana')"][0] == "failed" and "non-finite" in status["Logit(1 'banana')"][1]


# -- errors: exit status 2, one line, no traceback ---------------------------------------

@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["run", "nope.jpg", "--target", "apple"], "image not found: 'nope.jpg'; check the path"),
        (["run", "wide.png", "--target", "appel"], "unknown class name 'appel'; closest: 'apple' (0)"),
        (["run", "wide.png", "--target", "crane"], "class name 'crane' is ambiguous"),
        (["run", "wide.png", "--target", "conv9:1"], "layer 'conv9' is not in the model"),
        (["run", "wide.png", "--target", "conv2:99"], "channel 99 is out of range for layer 'conv2'"),
        (["run", "wide.png", "--target", "conv3:1@9,9"], "outside layer 'conv3'"),
        (["run", "wide.png", "--target", "17"], "class index 17 is out of range"),
        (["run", "wide.png", "--target", "apple", "--reg-layer", "conv7"], "layer 'conv7' is not in the model"),
        (["run", "wide.png", "--target", "apple", "--crop-range", "0.5", "0.2"],
         "--crop-range must satisfy 0 < MIN <= MAX <= 1; got 0.5 0.2"),
        (["run", "wide.png", "--target", "apple", "--crop-range", "0", "1"], "--crop-range must satisfy"),
        (["run", "wide.png", "--target", "apple", "--steps", "0"], "--steps must be a positive integer; got '0'"),
        (["run", "wide.png", "--target", "apple", "--lam", "-1"], "--lam must be a finite number >= 0"),
        (["run", "wide.png", "--target", "apple", "--canvas", "16"], "canvas 16 is smaller than the model input"),
        (["run", "wide.png", "--target", "apple", "--until", "sometimes"], "--until: until must be"),
        (["run", "wide.png", "--target", "apple", "--check-every", "2"], "--check-every needs a stop rule; add --until"),
        (["run", "wide.png", "--target", "apple", "--until", "0.9", "--check-every", "0"],
         "--check-every must be a positive integer; got 0"),
        (["run", "wide.png", "--target", "apple", "--param", "wavelet"], "invalid choice: 'wavelet'"),
        (["run", "wide.png"], "no target given; use --target T"),
        (["run", "--target", "apple", "wide.png"], "is an image file; put the images before --target"),
        (["run", "wide.png", "--target", "apple", "--out", "wide.png/sub"], "cannot write to output folder"),
        (["run", "wide.png", "--target", "apple", "--out", "wide.png"], "is a file, not a folder"),
        (["explain", "wide.png", "--top", "0"], "nothing to explain"),
        (["explain", "wide.png", "--label", "appel"], "unknown class name 'appel'"),
        (["layers", "--model", "nomodel"], "unknown model 'nomodel'"),
        (["layers", "--model", "cli_models:missing"], "has no callable 'missing'"),
        (["frobnicate"], "invalid choice: 'frobnicate'"),
    ],
)
def test_usage_errors_exit_2_with_one_line(work: Path, capsys: pytest.CaptureFixture, args: list[str],
                                          message: str) -> None:
    extra = [] if args[0] in ("layers", "frobnicate") or "--model" in args else ["--model", "cli_models:tiny"]
    if args[0] == "run" or args[0] == "explain":
        extra += ["--steps", "2", "--crops", "2"] if "--steps" not in args else []
    rc = main([*args, *extra])
    err = capsys.readouterr().err
    assert rc == 2, err
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("accentuate: error: "), err
    assert message in lines[0]
    assert "Traceback" not in err
    assert not (work / "accentuate-runs").exists()  # nothing written for a usage mistake


@pytest.mark.skipif(torch.cuda.is_available(), reason="CUDA is available here")
def test_unavailable_device_is_a_usage_error(capsys: pytest.CaptureFixture) -> None:
    assert main(["layers", "--device", "cuda"]) == 2
    assert "CUDA is not available here; use --device cpu" in capsys.readouterr().err
    assert main(["layers", "--device", "toaster"]) == 2
    assert "is not a torch device" in capsys.readouterr().err


def test_model_failure_before_the_run_exits_1_and_writes_nothing(work: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["run", "wide.png", "--target", "apple", "--model", "cli_models:broken", "--out", "out",
            "--steps", "2", "--crops", "2"]
    assert main(args) == 1
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    assert lines[0].startswith("accentuate: error: the model raised RuntimeError in its forward pass: boom")
    assert "--debug" in lines[0] and not (work / "out").exists()


def test_model_failure_exits_1_and_debug_shows_traceback(work: Path, capsys: pytest.CaptureFixture) -> None:
    args = ["run", "wide.png", "--target", "apple", "--model", "cli_models:broken_on_batches", "--out", "out",
            "--steps", "2", "--crops", "2"]
    assert main(args) == 1
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1].split("\r")[-1]
    assert last.startswith("accentuate: error: the model raised RuntimeError in its forward pass: boom")
    assert "Traceback" not in err and "--debug" in last
    doc = _record(work / "out")
    assert doc["status"] == "error" and "boom" in doc["error"] and doc["pairs"] == []
    assert main([*args, "--debug"]) == 1
    assert "Traceback (most recent call last)" in capsys.readouterr().err


def test_help_of_every_command_has_an_example(capsys: pytest.CaptureFixture) -> None:
    assert main(["--help"]) == 0
    top = capsys.readouterr().out
    for cmd in ("demo", "run", "explain", "layers", "classes"):
        assert cmd in top
        assert main([cmd, "--help"]) == 0
        text = capsys.readouterr().out
        assert "examples:" in text and f"accentuate {cmd}" in text


def test_no_command_prints_help_and_exits_2(capsys: pytest.CaptureFixture) -> None:
    assert main([]) == 2
    assert "usage: accentuate" in capsys.readouterr().err


def test_analyses_module_is_picked_up(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture) -> None:
    name = "accentuate.cli.analyses"
    fake = types.ModuleType(name)
    fake.__spec__ = ModuleSpec(name, None)

    def register(subparsers) -> None:  # noqa: ANN001
        p = subparsers.add_parser("fake-analysis", help="a test command")
        p.set_defaults(func=lambda args: 7)

    fake.register = register
    monkeypatch.setitem(sys.modules, name, fake)
    assert main(["fake-analysis", "--quiet"]) == 7


# -- explain, layers, classes ------------------------------------------------------------

def test_explain_top_k_with_label(work: Path, capsys: pytest.CaptureFixture) -> None:
    rc = main(["explain", "wide.png", "--top", "2", "--label", "date", "--out", "ex", *FAST])
    assert rc == 0
    out = work / "ex"
    doc = _record(out)
    model = acc.load_model("cli_models:tiny")
    seed = acc.prepare_seeds(acc.load_image("wide.png"), 48)
    with torch.no_grad():
        view = torch.nn.functional.interpolate(seed, (32, 32), mode="bilinear", antialias=True)
        probs = model(view).softmax(-1)[0]
    top2 = probs.argsort(descending=True)[:2].tolist()
    expected = top2 + ([3] if 3 not in top2 else [])
    assert doc["explain"]["classes"] == expected
    order = probs.argsort(descending=True).tolist()
    reasons = ["top-1", "top-2"] + ([f"label, rank {order.index(3) + 1}"] if 3 not in top2 else [])
    if 3 in top2:
        reasons[top2.index(3)] += ", label"
    assert doc["explain"]["reasons"] == reasons
    assert [p["target"] for p in doc["pairs"]] == list(range(len(expected)))
    assert (out / "explain_panel.png").exists() and doc["outputs"]["explain_panel"] == "explain_panel.png"
    assert doc["outputs"]["opacity"] == "collective"
    for p in doc["pairs"]:
        assert p["before"]["prob"] == pytest.approx(float(probs[expected[p["target"]]]), abs=1e-4)
    assert "explain_panel.png" in capsys.readouterr().out


def test_layers_lists_names_and_shapes(capsys: pytest.CaptureFixture) -> None:
    assert main(["layers", "--model", "cli_models:tiny"]) == 0
    out = capsys.readouterr().out
    assert "conv2  1 x 16 x 16 x 16  nchw 16x16x16  <- default --reg-layer" in out
    assert "fc     1 x 6" in out
    assert main(["layers", "--model", "cli_models:tiny", "--grep", "conv3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[1].startswith("conv3")


def test_classes_search(capsys: pytest.CaptureFixture) -> None:
    assert main(["classes", "retriever"]) == 0
    out = capsys.readouterr().out
    assert "  207  golden retriever" in out and "208" in out
    assert main(["classes", "crane", "--model", "cli_models:tiny"]) == 0
    assert capsys.readouterr().out.split() == ["4", "crane", "5", "crane"]
    assert main(["classes", "zzzzzz"]) == 0  # no match is an answer: empty stdout, a message on stderr
    got = capsys.readouterr()
    assert got.out == "" and got.err.strip() == "no class name contains 'zzzzzz'"
    assert main(["classes", "retreiver"]) == 0
    got = capsys.readouterr()
    assert got.out == "" and "closest: " in got.err and "'golden retriever'" in got.err


# -- the installed entry point, as a real process ------------------------------------------

def _cli(*args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    return subprocess.run([sys.executable, "-m", "accentuate", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_subprocess_run_and_errors(work: Path) -> None:
    p = _cli("run", "wide.png", "--target", "apple", "--out", "sub", *FAST, cwd=work)
    assert p.returncode == 0, p.stderr
    assert _record(work / "sub")["status"] == "complete"
    assert "results in sub/" in p.stdout
    p = _cli("run", "missing.jpg", "--target", "apple", *FAST, cwd=work)
    assert p.returncode == 2
    assert p.stderr.strip() == "accentuate: error: image not found: 'missing.jpg'; check the path"


def test_console_script_is_installed() -> None:
    script = Path(sys.executable).parent / "accentuate"
    if not script.exists():
        pytest.skip("the console script is not installed next to this interpreter")
    p = subprocess.run([str(script), "classes", "goldfish"], capture_output=True, text=True, timeout=120)
    assert p.returncode == 0 and p.stdout.split() == ["1", "goldfish,", "Carassius", "auratus"]


@pytest.mark.slow
def test_demo_with_the_real_model(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                  capsys: pytest.CaptureFixture) -> None:
    monkeypatch.chdir(tmp_path)
    rc = main(["demo", "--steps", "2", "--crops", "2", "--canvas", "224", "--frames", "2", "--out", "demo"])
    assert rc == 0
    doc = _record(tmp_path / "demo")
    assert doc["subcommand"] == "demo" and doc["model"]["name"] == "efficientnet_lite0"
    assert [t["class_name"] for t in doc["targets"]] == ["tiger cat", "goldfish"]
    assert doc["settings"]["reg_layer"] == "blocks.4"
    assert all(p["status"] == "complete" for p in doc["pairs"])
    out = capsys.readouterr().out
    assert "contact sheet" in out and "accentuate run YOUR_PHOTO.jpg" in out


def test_the_same_image_twice_gives_two_rows(work: Path) -> None:
    assert main(["run", "square.png", "square.png", "--target", "apple", "--out", "out", "-q", *FAST]) == 0
    doc = _record(work / "out")
    assert [p["id"] for p in doc["pairs"]] == ["square__apple", "square-2__apple"]
    assert doc["counts"]["complete"] == 2 and len({p["key"] for p in doc["pairs"]}) == 2


def test_wide_image_whose_short_side_is_below_the_model_input(work: Path) -> None:
    # 64 x 48 at --canvas 40 is 40 x 30: smaller than the 32 x 32 input on one side, as a
    # 3:2 photo at --canvas 224 is for a 224 px model. Allowed, as in the library.
    args = ["run", "wide.png", "--target", "apple", "--out", "out", "-q", *FAST, "--canvas", "40"]
    assert main(args) == 0
    doc = _record(work / "out")
    assert doc["images"][0]["canvas"] == [30, 40] and doc["settings"]["canvas"] == 40


def test_explain_with_a_failed_pair_prints_na(work: Path, capsys: pytest.CaptureFixture) -> None:
    rc = main(["explain", "wide.png", "--top", "2", "--out", "exf", *FAST[2:],
               "--model", "cli_models:nan_when_optimized"])
    doc = _record(work / "exf")
    assert rc != 0 and all(p["status"] == "failed" and p["after"]["prob"] is None for p in doc["pairs"])
    assert (work / "exf" / "explain_panel.png").exists()
    assert "n/a" in capsys.readouterr().out


def test_the_figure_names_the_runs_seed_not_a_batchs_generator() -> None:
    from accentuate.runs.record import RunWriter

    writer = RunWriter.__new__(RunWriter)  # only the record is read
    writer.doc = {"settings": {"seed": 7}}
    assert writer._seed_text(660276990006584316) == "7"  # what `--seed` takes to give the picture again
    writer.doc = {"settings": {"seed": None}}
    assert writer._seed_text(12) == "12"
