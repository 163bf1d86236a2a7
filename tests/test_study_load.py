"""``accentuate study serve`` under a burst (benchmarks/study_load.py), on loopback only: 400
participants' data sent twice each (the page's retry) and 200 malformed bodies from 64 threads,
with 50 clients that stall in the middle of a body held open. Nothing may be lost, nothing written
twice, nothing printed (the server is quiet), and a page must come back quickly afterwards.
Timings are not asserted, but for the page request's one-second bound (docs/study.md has the rates).
"""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def load() -> Iterator[ModuleType]:
    spec = importlib.util.spec_from_file_location("study_load", ROOT / "benchmarks" / "study_load.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["study_load"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("study_load", None)


def test_a_burst_with_stalled_clients_loses_nothing(load: ModuleType) -> None:
    figures = load.run(participants=400, sends=2, bad=200, stalled=50, threads=64, retries=6,
                       server_kwargs={"timeout": 5.0}, drop_limit=20)
    assert figures["saved"] == {"files": 400, "participants_saved": 400, "participants": 400,
                                "most_files_of_one": 1, "damaged": []}  # each saved, once, as sent
    assert figures["valid_final"] == {"201": 400, "200": 400}  # the second send: "already saved"
    assert figures["same_name_for_both_sends"]
    # no connection reset and no 5xx, even at the first try
    assert set(figures["first_attempts"]) <= {"200", "201", "400", "409", "413", "left"}, figures["first_attempts"]
    bad = figures["bad_final"]
    assert sum(bad.values()) == 200 and set(bad) <= {"400", "409", "413", "left"}, bad
    assert figures["page_after"]["status"] == 200 and figures["page_after"]["seconds"] < 1.0
    assert figures["stalled_dropped"]["count"] == 50  # by the server's timeout (5 s here, 10 s by default)
    assert figures["server_alive"] and figures["stderr"]["lines"] == 0


def test_the_load_counts_what_was_lost(load: ModuleType, tmp_path: Path) -> None:
    """The check itself: a missing file, a second file and a damaged one are seen."""
    bodies = {f"p{i}": load.body(load.STUDY_ID, f"p{i}", f"{i:032d}", trials=2) for i in range(3)}
    out = tmp_path / "responses"
    out.mkdir()
    (out / "p0.json").write_bytes(bodies["p0"])
    (out / "p0-2.json").write_bytes(bodies["p0"])
    (out / "p1.json").write_bytes(bodies["p1"][:-5])
    assert load.check_saved(tmp_path, {"bodies": bodies}) == {
        "files": 3, "participants_saved": 2, "participants": 3, "most_files_of_one": 2, "damaged": ["p1.json"]}


def test_the_participant_table_uses_the_analysis_interval() -> None:
    """benchmarks/study_power.py (docs/study.md, "How many participants") on a tiny scale."""
    import torch

    spec = importlib.util.spec_from_file_location("study_power", ROOT / "benchmarks" / "study_power.py")
    power = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(power)
    a = power.offset(0.8, 1.0)
    z = torch.randn(200_000, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert float(torch.sigmoid(a + z).mean()) == pytest.approx(0.8, abs=0.003)
    few = power.simulate(5, 20, 0.8, 0.5, 0.0, studies=3, replicates=100, seed=0)
    many = power.simulate(60, 20, 0.8, 0.5, 0.0, studies=3, replicates=100, seed=0)
    assert 0 < many["half_width"] < few["half_width"] < 0.5
    assert 0 <= many["coverage"] <= 1
