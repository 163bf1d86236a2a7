"""A model observer: a second model answers a study's trials (``accentuate study observe``).

Before recruiting anyone, a lab can check that a study is neither trivial nor impossible: the
observer picks, in each trial, the query whose representation in the observer model is more like
the strong references than like the weak ones (mean cosine similarity to the strong references
minus that to the weak ones, at one layer, averaged over positions). Without references
(condition ``none``) it can only guess: a seeded coin. Its answers are written as a participant's
file (``DIR/observers/<name>.json``, rows as the page writes them, ``"observer": true``), which
:func:`accentuate.study.analyze` reports beside the people, never among them.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..analysis.setup import analysis_spec
from ..hooks import ModelRunner
from ..images import load_image, resize
from ..objectives.reference import default_like_layer
from ..outputs.io import atomic_write, output_folder
from ..runs.work import slug
from .design import pooled_activations
from .files import read_trials

__all__ = ["observe"]


def _embeddings(runner: ModelRunner, directory: Path, files: list[str], layer: str,
                size: tuple[int, int]) -> dict[str, torch.Tensor]:
    views = torch.stack([resize(load_image(directory / f), size) for f in files])
    pooled = pooled_activations(runner, views, layer)
    unit = pooled / pooled.norm(dim=1, keepdim=True).clamp(min=1e-8)
    return dict(zip(files, unit))


def observe(directory: str | os.PathLike, model: nn.Module, *, layer: str | None = None, name: str | None = None,
            seed: int = 0, **kwargs: Any) -> Path:
    """Answer every trial of the study in ``directory`` with ``model``; returns the file written.

    Args:
        directory: a study folder (``trials.json``).
        model: the observer model (e.g. ``acc.load_model("dinov2_vits14_focus")``).
        layer: where its representations are compared (default: its like layer,
            :func:`accentuate.objectives.reference.default_like_layer`).
        name: the observer's name in the tables (default: the model's spec name).
        seed: the seed of its guesses in trials without references.
        **kwargs: model-spec keys for a model without a spec.
    """
    directory = Path(directory)
    doc = read_trials(directory)
    spec = analysis_spec(model, kwargs)
    runner = ModelRunner(model, spec)
    layer = layer or default_like_layer(model, spec, runner=runner)
    name = name or spec.name.split(" (", 1)[0]  # the model's name without its description
    files = sorted({f for t in doc["trials"] for f in [*t["queries"], *t["references"]["strong"],
                                                       *t["references"]["weak"]]})
    emb = _embeddings(runner, directory, files, layer, spec.input_size)
    rng = random.Random(seed)
    rows = []
    for t in doc["trials"]:
        strong, weak = t["references"]["strong"], t["references"]["weak"]
        if strong and weak:
            s = torch.stack([emb[f] for f in strong])
            w = torch.stack([emb[f] for f in weak])
            scores = [float((s @ emb[q]).mean() - (w @ emb[q]).mean()) for q in t["queries"]]
            chosen = int(scores[1] > scores[0])
        else:
            scores, chosen = [], rng.randrange(2)
        rows.append({"study_id": doc["study_id"], "participant": f"model-{slug(name)}", "observer": True,
                     "observer_model": name, "observer_layer": layer, "trial_id": t["id"],
                     "condition": t["condition"], "feature": t["feature"], "feature_kind": t["feature_kind"],
                     "catch": t["catch"], "stronger": t["stronger"], "chosen": chosen,
                     "correct": chosen == t["stronger"], "rt": None, "scores": scores})
    out = output_folder(directory / "observers") / f"{slug(name)}.json"
    atomic_write(out, json.dumps(rows, indent=1).encode())
    return out
