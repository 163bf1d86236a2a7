"""How many participants a study needs for a given interval width (docs/study.md, "How many participants").

    python benchmarks/study_power.py                   # 30 trials per condition, accuracy 0.8
    python benchmarks/study_power.py --trials 30 60 --participants 5 10 20 40 80 --studies 40

Simulated studies are analyzed with the analysis's own interval (``accentuate.study.scoring``: the
95 % percentile bootstrap that resamples participants *and* trials). A participant ``i`` answers
trial ``j`` right with probability ``sigmoid(a + u_i + v_j)``: ``u_i ~ N(0, sd_participant)`` is the
participant's skill, ``v_j ~ N(0, sd_trial)`` the pair's ease, and ``a`` is set so that the mean
accuracy over people and pairs is ``--accuracy``. For each number of participants, ``--studies``
studies are drawn; the table gives the median half-width of the interval, and how often the
interval covered the true accuracy. ``sd_trial = 0`` is the binomial floor (all pairs alike); with
pairs that differ, the interval cannot shrink below what the trials alone leave, however many
people take part.
"""

from __future__ import annotations

import argparse
import math
import os
import statistics
import time

import torch

from accentuate.study.scoring import _interval


def offset(accuracy: float, sd: float, draws: int = 400_000, seed: int = 0) -> float:
    """The ``a`` for which the mean of ``sigmoid(a + z)``, ``z ~ N(0, sd)``, is ``accuracy`` (Newton's method
    on ``draws`` fixed draws of ``z``)."""
    z = torch.randn(draws, generator=torch.Generator().manual_seed(seed), dtype=torch.float64) * sd
    a = math.log(accuracy / (1 - accuracy))
    for _ in range(50):
        p = torch.sigmoid(a + z)
        step = float((p.mean() - accuracy) / (p * (1 - p)).mean())
        a -= step
        if abs(step) < 1e-12:
            break
    return a


def simulate(participants: int, trials: int, accuracy: float, sd_participant: float, sd_trial: float,
             studies: int, replicates: int, seed: int) -> dict[str, float]:
    """Median half-width and coverage of the analysis's interval over ``studies`` simulated studies."""
    a = offset(accuracy, math.hypot(sd_participant, sd_trial))
    g = torch.Generator().manual_seed(seed)
    widths, covered = [], 0
    for s in range(studies):
        u = torch.randn(participants, 1, generator=g, dtype=torch.float64) * sd_participant
        v = torch.randn(1, trials, generator=g, dtype=torch.float64) * sd_trial
        answers = (torch.rand(participants, trials, generator=g, dtype=torch.float64)
                   < torch.sigmoid(a + u + v)).double()
        ci = _interval(answers, replicates, 0.95, seed * 1000 + s)
        widths.append((float(ci.upper) - float(ci.lower)) / 2)
        covered += float(ci.lower) <= accuracy <= float(ci.upper)
    return {"half_width": statistics.median(widths), "coverage": covered / studies}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--trials", type=int, nargs="+", default=[30], help="trials per condition (default 30)")
    ap.add_argument("--participants", type=int, nargs="+", default=[5, 10, 20, 40, 80, 160])
    ap.add_argument("--accuracy", type=float, default=0.8)
    ap.add_argument("--sd-participant", type=float, default=0.5, help="spread of skill, in logits (default 0.5)")
    ap.add_argument("--sd-trial", type=float, nargs="+", default=[0.0, 1.0],
                    help="spreads of the pairs' ease, in logits (default 0 and 1)")
    ap.add_argument("--studies", type=int, default=40, help="simulated studies per cell (default 40)")
    ap.add_argument("--replicates", type=int, default=1000, help="bootstrap replicates (default 1000)")
    args = ap.parse_args()
    torch.set_num_threads(min(2, torch.get_num_threads()))
    started = time.perf_counter()
    cols = [(t, sd) for t in args.trials for sd in args.sd_trial]
    print("| participants | " + " | ".join(f"{t} trials, sd_trial {sd:g}" for t, sd in cols) + " |")
    print("|---:|" + "---:|" * len(cols))
    for n in args.participants:
        cells = []
        for t, sd in cols:
            r = simulate(n, t, args.accuracy, args.sd_participant, sd, args.studies, args.replicates, seed=n * 7 + t)
            cells.append(f"±{r['half_width']:.3f} ({round(100 * r['coverage'])} %)")
        print(f"| {n} | " + " | ".join(cells) + " |", flush=True)
    print(f"\naccuracy {args.accuracy}, sd_participant {args.sd_participant}, {args.studies} studies per cell, "
          f"{args.replicates} bootstrap replicates; {time.perf_counter() - started:.0f} s, "
          f"load average {os.getloadavg()[0]:.1f}")


if __name__ == "__main__":
    main()
