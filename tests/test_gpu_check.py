"""benchmarks/gpu_check.sh: its CUDA half names tests and options that exist, and its CPU half runs.

The CUDA half cannot run here (no GPU), so it is read: each test file it names exists and holds the
device tests the check is for, with their CUDA variants (``pytest --collect-only -m cuda``), its
markers are registered, and each ``bench_step.py`` command it runs parses with the real argument
parser. The CPU half (``--cpu-only``) runs: a step that fails makes the exit status non-zero, and
the whole CPU half passes and writes its report (``slow``: 115 CPU-seconds, which took 5.5 minutes
on a shared 2-core machine at load average 12 to 17).
"""

from __future__ import annotations

import importlib
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

import accentuate.models

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "gpu_check.sh"

#: The device tests the check exists for (the issue's list), each to be collected with a CUDA variant,
#: with the parameters each must cover.
REQUIRED = {
    "tests/test_devices.py::test_one_step_on_the_device": (),
    "tests/test_engine.py::test_batch_equals_single_runs": (),
    "tests/test_engine.py::test_opacity_concentrates_where_the_neuron_looks": (),
    "tests/test_engine.py::test_until_top1_stops_early_on_the_same_trajectory": (),
    "tests/test_engine.py::test_regularizer_choices_run_and_target_rises": ("pixel", "conv1", "none"),
    "tests/test_params.py::test_round_trip_with_black_and_white_pixels": ("pixel", "fourier", "phase"),
    "tests/test_params.py::test_noise_start_is_valid_image": ("pixel", "fourier", "phase"),
    "tests/test_objectives.py::test_every_objective_goes_up": ("Channel", "Neuron", "Direction", "Logit"),
    "tests/test_fast_paths.py::test_autocast_stays_close_to_float32": ("bfloat16", "float16"),
    "tests/test_fast_paths.py::test_channels_last_option_changes_rounding_only": (),
    "tests/test_devices.py::test_a_device_run_saves_and_loads": (),
    "tests/test_torchrun.py::test_two_processes_make_the_same_pictures_as_one": (),
    "tests/test_cli.py::test_run_numbers_equal_the_api": (),
    "tests/test_analysis.py::test_pathway_averages_pairs_exactly": (),
    "tests/test_analysis.py::test_latent_sorted_by_gain_collective_masks_and_batching": (),
}


def _script() -> str:
    return SCRIPT.read_text().replace("\\\n", " ")  # join continued lines


def _bench_lines(text: str) -> list[list[str]]:
    """The options of every ``bench NAME LIMIT OPTIONS...`` call."""
    calls = []
    for line in text.splitlines():
        words = line.strip()
        if words.startswith("bench ") and "()" not in words:
            name, limit, *opts = shlex.split(words)[1:]
            assert re.fullmatch(r"[a-z0-9.-]+", name) and limit.isdigit(), line
            calls.append(opts)
    return calls


@pytest.fixture(scope="module")
def bench_step():
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        yield importlib.import_module("bench_step")
    finally:
        sys.path.remove(str(ROOT / "benchmarks"))


def test_the_bench_commands_parse_and_cover_the_cuda_half(bench_step):
    calls = _bench_lines(_script())
    assert len(calls) >= 8
    for opts in calls:
        cfg = bench_step.config_from_args(bench_step.parse_args(opts))  # an unknown option exits (status 2)
        assert cfg.sweep, opts  # every run is a sweep: the full suite would not fit the time
        if ":" in cfg.model:
            module, func = cfg.model.split(":")
            sys.path.insert(0, str(ROOT / "benchmarks"))
            try:
                assert callable(getattr(importlib.import_module(module), func)), cfg.model
            finally:
                sys.path.remove(str(ROOT / "benchmarks"))
        elif cfg.model != "tiny":
            assert accentuate.models.spec_by_name(cfg.model) is not None, cfg.model
    cuda = [bench_step.config_from_args(bench_step.parse_args(o)) for o in calls if "cuda" in o]
    for model in ("efficientnet_lite0", "bench_models:resnet50"):
        for dtype in ("float32", "bfloat16"):
            assert any(c.model == model and c.dtype == dtype and {1, 16, 64} <= set(c.sweep) for c in cuda), (model, dtype)
        assert any(c.model == model and c.compile and c.compile_backend == "inductor" for c in cuda), model
    cpu = [bench_step.config_from_args(bench_step.parse_args(o)) for o in calls if "cuda" not in o]
    assert cpu and all(c.device == "cpu" for c in cpu) and any(c.compile for c in cpu)


def test_the_tests_it_runs_exist_with_their_cuda_variants(pytestconfig: pytest.Config):
    text = _script()
    files = re.search(r"^DEVICE_TESTS=\(\n(.*?)\n\)", text, re.S | re.M).group(1).split()
    assert files and all((ROOT / f).is_file() for f in files), files
    marks = {k: re.search(rf'^{k}="([^"]+)"', text, re.M).group(1) for k in ("CUDA_MARK", "CPU_MARK")}
    registered = {m.split(":")[0] for m in pytestconfig.getini("markers")}
    for expr in marks.values():
        words = set(re.findall(r"\w+", expr)) - {"and", "or", "not"}
        assert words and words <= registered, (expr, registered)
    proc = subprocess.run([sys.executable, "-m", "pytest", "--collect-only", "-q", "-p", "no:cacheprovider",
                           "-m", marks["CUDA_MARK"], *files], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    nodes = [line for line in proc.stdout.splitlines() if "::" in line]
    assert all("cuda" in n.split("[", 1)[-1] for n in nodes)  # only CUDA variants
    for test, params in REQUIRED.items():
        mine = [n for n in nodes if n.split("[")[0] == test]
        assert mine, f"{test} has no CUDA variant: it must take the `device` fixture"
        for p in params:
            assert any(p in n for n in mine), (test, p)


def _run(*args: str, tmp_path: Path, timeout: float) -> subprocess.CompletedProcess:
    return subprocess.run(["bash", str(SCRIPT), "--cpu-only", "--python", sys.executable, "--out",
                           str(tmp_path / "check"), *args], cwd=ROOT, capture_output=True, text=True, timeout=timeout)


def test_a_failing_step_makes_the_exit_status_non_zero(tmp_path: Path):
    proc = _run("--skip-bench", "--pytest-args", "-k no_test_has_this_name", tmp_path=tmp_path, timeout=300)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-2000:]
    report = (tmp_path / "check" / "results.md").read_text()
    assert "FAILED: exit status 5" in report  # pytest: no tests ran
    assert (tmp_path / "check" / "log.txt").stat().st_size > 0


def test_a_set_up_error_is_one_line_and_status_2(tmp_path: Path):
    bad = tmp_path / "python"
    bad.write_text("#!/bin/sh\nexit 1\n")
    bad.chmod(0o755)
    proc = subprocess.run(["bash", str(SCRIPT), "--python", str(bad), "--out", str(tmp_path / "o")], cwd=ROOT,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and proc.stderr.strip().count("\n") == 0, proc.stderr
    assert "torch does not import there" in proc.stderr


@pytest.mark.slow
def test_the_cpu_half_runs_and_writes_its_report(tmp_path: Path):
    """The whole CPU half: the device tests on the CPU, the tiny sweep with the compile check. Its own
    budget is 170 s; here it gets 600 s, so that a loaded machine does not fail it."""
    proc = _run("--budget", "600", tmp_path=tmp_path, timeout=900)
    assert proc.returncode == 0, proc.stdout[-4000:] + proc.stderr[-2000:]
    out = tmp_path / "check"
    report = (out / "results.md").read_text()
    summary = re.search(r"^(\d+) tests: (\d+) passed, 0 failed, 0 errors", report, re.M)
    assert summary and int(summary.group(2)) >= 30, report[:3000]
    assert report.count("| 4 | 16 |") == 2  # the batch of 4 in both dtypes (4 accentuations of 4 crops)
    assert "- floor: eager" in report and "- step + history: eager" in report
    assert {p.name for p in (out / "raw").iterdir()} >= {"tests.xml", "environment.md", "tiny-float32.json",
                                                         "tiny-bfloat16.json"}
