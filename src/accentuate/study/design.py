"""Build a two-alternative forced-choice study of a model's features (``accentuate study build``).

The design is Borowski et al. (ICLR 2021) and Zimmermann et al. (NeurIPS 2021): a trial shows
reference images of one feature, the images on which it is strong and those on which it is weak,
and two query photos; the participant picks the query on which the feature is stronger. The
conditions differ only in the references:

- ``accentuation``: photos from the middle of the feature's ranking, accentuated toward the
  feature (strong) and away from it (weak: the negated feature), at the model's settings;
- ``feature_vis``: noise-seeded feature visualizations of the feature and of its negation;
- ``natural``: the photos on which the feature is strongest and weakest;
- ``none``: no references (the chance baseline).

Everything is picked by the model's own responses on the photos, with one seed: the features
(``classes:N``, ``channels:LAYER:N``, ``directions:LAYER:N`` or given targets), the references,
and the query pairs (one from the top of the feature's ranking and one from its bottom, never a
photo used as a reference or seed of that feature; the same pairs in every condition, the
stronger one left in half of each condition's trials). Catch trials show a strong and a weak
reference themselves as the queries: their answer is obvious, and the analysis excludes a
participant who fails them.

The engine's references of every feature are one run (:func:`accentuate.runs.execute`) in
``DIR/work``: each feature's seed photos toward the feature and toward its negation, and
``references`` noise-seeded rows toward each (without the regularizer), in batches. An
interrupted build resumes where it stopped (the pairs already written are kept, checked by their
files' SHA-256), it runs under torchrun like ``accentuate run``, and the same seed gives the same
trials and the same images.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import random
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..analysis.setup import analysis_settings, analysis_spec
from ..digest import name_seed
from ..errors import ImageError, UsageError
from ..hooks import OUTPUT, ModelRunner
from ..images import load_image, photo_set, resize, square_crop, square_side
from ..objectives import Objective, as_objective, channel, direction
from ..objectives.basic import Channel, Direction, Logit, TokenChannel
from ..outputs.figures import to_pil
from ..outputs.io import atomic_write, output_folder
from ..runs import ImageInfo, TargetInfo, execute
from ..runs import plan as runs_plan
from ..runs.work import slug
from ..settings import Settings
from .files import FORMAT

__all__ = ["CONDITIONS", "Feature", "Study", "build", "feature_values", "needed_photos", "pick_features"]

#: The conditions, in the order the tables show them.
CONDITIONS = ("accentuation", "feature_vis", "natural", "none")
#: The conditions whose references are made by the engine.
MADE = ("accentuation", "feature_vis")
#: Side of the pictures written for the page (pixels).
DISPLAY = 256


@dataclass
class Feature:
    """A feature of the study: its name, kind (``class``, ``channel``, ``direction`` or
    ``objective``), objective and its value on every photo."""

    name: str
    kind: str
    objective: Objective
    values: torch.Tensor  # (P,)

    def record(self, names: Sequence[str]) -> dict[str, Any]:
        order = torch.argsort(self.values, descending=True).tolist()
        return {"name": self.name, "kind": self.kind, "objective": self.objective.to_record(),
                "values": {names[i]: round(float(self.values[i]), 5) for i in order}}


@dataclass
class Study:
    """What :func:`build` wrote: the folder, ``trials.json``'s content and how each engine run went."""

    directory: Path
    doc: dict[str, Any]
    runs: dict[str, dict[str, Any]] = field(default_factory=dict)

    @property
    def trials(self) -> list[dict[str, Any]]:
        return self.doc["trials"]

    @property
    def study_id(self) -> str:
        return self.doc["study_id"]


# -- the photos and the model's responses -------------------------------------------------------
def _read_photos(files: Sequence[tuple[Any, bool, str]], side: int, input_size: tuple[int, int]
                 ) -> tuple[list[Path], list[str], torch.Tensor, torch.Tensor, list[str]]:
    """The readable photos' paths, names, model views ``(P, 3, h, w)``, display pictures
    ``(P, 3, DISPLAY, DISPLAY)`` (each the centre square of the photo) and SHA-256s."""
    paths, names, views, shown, digests = [], [], [], [], []
    for file, _, name in files:
        path = Path(file)
        try:
            img = load_image(path)
        except ImageError:
            continue  # an unreadable file in a folder is skipped, as run does
        sq = square_crop(img, side)
        views.append(resize(sq, input_size))
        shown.append(resize(sq, (DISPLAY, DISPLAY)))
        paths.append(path)
        names.append(name)
        digests.append(hashlib.sha256(path.read_bytes()).hexdigest())
    if not paths:
        raise ImageError("no readable photo among the given files; give a folder of JPEG, PNG or WebP photos")
    return paths, names, torch.stack(views), torch.stack(shown), digests


def feature_values(runner: ModelRunner, objectives: Sequence[Objective], views: torch.Tensor,
                   batch: int = 16) -> torch.Tensor:
    """Each objective's value on each view (the model's input size), ``(len(objectives), N)``."""
    layers = sorted(set().union(*(o.layers for o in objectives)))
    acts = runner.activations(views, layers, batch=batch)
    lays = runner.layouts(layers)
    with torch.no_grad():
        return torch.stack([o(acts, lays).float() for o in objectives])


def _kind(obj: Objective) -> str:
    if isinstance(obj, Logit):
        return "class"
    if isinstance(obj, (Channel, TokenChannel)):
        return "channel"
    if isinstance(obj, Direction):
        return "direction"
    return "objective"


def _auto(request: str, runner: ModelRunner, views: torch.Tensor, labels: Sequence[str] | None
          ) -> list[tuple[str, Objective]]:
    """The features an automatic request picks from the photos (see :func:`pick_features`)."""
    parts = request.split(":")
    what, count = parts[0], parts[-1]
    if len(parts) != (2 if what == "classes" else 3):
        form = "classes:N" if what == "classes" else f"{what}:LAYER:N"
        raise UsageError(f"unknown feature request {request!r}; write {form} (e.g. classes:4, channels:blocks.14:2)")
    try:
        n = int(count)
    except ValueError:
        raise UsageError(f"feature request {request!r}: the count must be a whole number (e.g. classes:4)") from None
    if n < 1:
        raise UsageError(f"feature request {request!r}: ask for at least 1 feature")
    if what == "classes":
        if not labels:
            raise UsageError("classes:N needs a model with classes; for this model ask for channels:LAYER:N or "
                             "directions:LAYER:N")
        logits = runner.activations(views, [OUTPUT])[OUTPUT]
        top = logits.argmax(dim=1)
        counts = torch.bincount(top, minlength=logits.shape[1]).float()
        spread = logits.std(dim=0)
        order = sorted(range(logits.shape[1]), key=lambda c: (-float(counts[c]), -float(spread[c])))
        return [(labels[c], as_objective(c)) for c in order[:n]]
    if what in ("channels", "directions"):
        layer = parts[1]
        pooled = pooled_activations(runner, views, layer)
        if what == "channels":
            mean, sd = pooled.mean(dim=0), pooled.std(dim=0).clamp(min=1e-8)
            m = max(3, pooled.shape[0] // 10)
            selectivity = (pooled.topk(m, dim=0).values.mean(dim=0) - mean) / sd
            chosen = torch.argsort(selectivity, descending=True)[:n].tolist()
            return [(f"{layer}:{c}", channel(layer, int(c))) for c in chosen]
        centred = pooled - pooled.mean(dim=0)
        _, _, vh = torch.linalg.svd(centred.double(), full_matrices=False)
        return [(f"{layer}:pc{i}", direction(layer, vh[i].float())) for i in range(min(n, vh.shape[0]))]
    raise UsageError(f"unknown feature request {request!r}; write classes:N, channels:LAYER:N, directions:LAYER:N "
                     "or give a target")


def pooled_activations(runner: ModelRunner, views: torch.Tensor, layer: str) -> torch.Tensor:
    """``(N, C)``: the layer's activation averaged over positions (a conv map's pixels, the patch
    tokens), as :func:`accentuate.channel` and :func:`accentuate.direction` read it."""
    lay = runner.layouts([layer]).get(layer)
    if lay is None or not lay.channels:
        raise UsageError(f"layer {layer!r} has no channels to pick features from; choose a conv or token layer "
                         "(`accentuate layers` lists them)")
    acts = runner.activations(views, [layer])[layer]
    return lay.positions(acts).mean(dim=1).float()


#: The automatic feature requests: ``classes:N``, ``channels:LAYER:N``, ``directions:LAYER:N``.
REQUESTS = ("classes", "channels", "directions")


def is_request(r: Any) -> bool:
    """Whether ``r`` is an automatic feature request (see :func:`pick_features`), not a target."""
    return isinstance(r, str) and ":" in r and r.split(":")[0] in REQUESTS


def pick_features(runner: ModelRunner, views: torch.Tensor, requests: Sequence[Any],
                  labels: Sequence[str] | None) -> list[Feature]:
    """The study's features with their values on the photos.

    Args:
        runner: the model's runner.
        views: ``(P, 3, h, w)`` the photos at the model's input size.
        requests: each an automatic request (``"classes:N"``: the N classes that are the model's
            top class on most photos; ``"channels:LAYER:N"``: the N most selective channels of
            LAYER, by how far their top tenth of photos sits above their mean, in SDs;
            ``"directions:LAYER:N"``: the first N principal directions of LAYER's activations over
            the photos), a target (class index, target string as on the command line, e.g. ``"goldfish"`` or
            ``"blocks.5:20"``, or :class:`Objective`) or ``(name, target)``.
        labels: the model's class names, if it has classes.
    """
    chosen: list[tuple[str, Objective]] = []
    for r in requests:
        if is_request(r):
            chosen += _auto(r, runner, views, labels)
        elif isinstance(r, tuple):
            chosen.append((str(r[0]), as_objective(r[1], runner.model, runner.spec, runner=runner)))
        else:
            obj = as_objective(r, runner.model, runner.spec, runner=runner)
            idx = obj.class_index
            name = labels[idx] if labels and idx is not None else (r.strip() if isinstance(r, str) else repr(obj))
            chosen.append((name, obj))
    names = [n for n, _ in chosen]
    twice = sorted({n for n in names if names.count(n) > 1})
    if twice:
        raise UsageError(f"feature {twice[0]!r} is asked for twice; give each feature once")
    if not chosen:
        raise UsageError("no feature to study; give --features (e.g. classes:4)")
    values = feature_values(runner, [o for _, o in chosen], views)
    return [Feature(n, _kind(o), o, values[i]) for i, (n, o) in enumerate(chosen)]


# -- the design ---------------------------------------------------------------------------------
@dataclass
class _Plan:
    """One feature's photos: natural references, accentuation seeds and query pairs (photo indices)."""

    strong: list[int]
    weak: list[int]
    seeds: list[int]
    pairs: list[tuple[int, int]]  # (stronger, weaker)


def _pool(trials: int) -> int:
    """Photos at each end of the ranking that the query pairs draw from: ``ceil(trials / 2)``, and
    enough for ``trials`` different pairs."""
    return max(math.ceil(trials / 2), math.ceil(math.sqrt(trials)))


def needed_photos(references: int, trials: int) -> int:
    """The photos a feature needs: its natural references (``2 x references``), the accentuation
    seeds (``references``) and the two pools of query photos (:func:`_pool` each)."""
    return 3 * references + 2 * _pool(trials)


def _plan(name: str, values: torch.Tensor, references: int, trials: int, rng: random.Random) -> _Plan:
    """The photos of one feature, from its ranking: the top and bottom ``references`` are the
    natural references, the ``references`` nearest the median the accentuation seeds, and the
    query pairs are drawn from the next photos at the top and at the bottom, without repeats."""
    order = torch.argsort(values, descending=True).tolist()
    k = references
    strong, weak = order[:k], order[len(order) - k:]
    middle = order[k:len(order) - k]
    mid = len(middle) // 2
    seeds = sorted(middle[max(0, mid - k // 2):max(0, mid - k // 2) + k], key=order.index)
    rest = [i for i in middle if i not in seeds]
    pool = _pool(trials)
    high, low = rest[:pool], rest[len(rest) - pool:]
    pairs = [(h, lo) for h in high for lo in low if float(values[h]) > float(values[lo])]
    if len(pairs) < trials:
        raise UsageError(f"feature {name!r} is the same on too many photos (only {len(pairs)} query pairs differ, "
                         f"{trials} asked): a sparse channel is 0 on most photos; choose another feature or layer, "
                         "or lower trials")
    rng.shuffle(pairs)
    return _Plan(strong, weak, seeds, pairs[:trials])


def _sides(n: int, rng: random.Random) -> list[int]:
    """Which side (0 left, 1 right) the stronger query takes in each of ``n`` trials: half each."""
    sides = [0] * (n // 2) + [1] * (n - n // 2)
    rng.shuffle(sides)
    return sides


# -- the references -----------------------------------------------------------------------------
def _engine_pairs(feature: Feature, plan: _Plan, photos: Mapping[int, ImageInfo], references: int, side: int,
                  conditions: Sequence[str], images: list[ImageInfo], targets: list[TargetInfo],
                  pairs: list[tuple[int, int]], rows: dict[int, int]) -> dict[str, list[tuple[int, int]]]:
    """Add one feature's engine pairs to the work list being built (``images``, ``targets``,
    ``pairs``; ``rows`` maps a photo to its row): its seed photos toward the feature and its negation
    (``accentuation``), and ``references`` noise-seeded rows toward each, without the regularizer
    (``feature_vis``). Returns, per condition, the pairs of the strong references, then the weak."""
    def column(text: str, obj: Objective, own: dict[str, Any]) -> int:
        targets.append(TargetInfo(text, obj, own))
        return len(targets) - 1

    out: dict[str, list[tuple[int, int]]] = {}
    if "accentuation" in conditions:
        up, down = column(feature.name, feature.objective, {}), column(f"-{feature.name}", -feature.objective, {})
        for i in plan.seeds:
            if i not in rows:
                rows[i] = len(images)
                images.append(photos[i])
        out["accentuation"] = [(rows[i], up) for i in plan.seeds] + [(rows[i], down) for i in plan.seeds]
    if "feature_vis" in conditions:
        alone = {"reg_layer": "none"}
        up, down = column(feature.name, feature.objective, alone), column(f"-{feature.name}", -feature.objective, alone)
        noise = []
        for k in range(references):
            noise.append(len(images))
            images.append(ImageInfo.noise_row(f"{slug(feature.name)}-noise-{k}", (side, side)))
        out["feature_vis"] = [(r, up) for r in noise] + [(r, down) for r in noise]
    for cond_pairs in out.values():
        pairs += cond_pairs
    return out


def _write_picture(directory: Path, rel: str, img: torch.Tensor) -> str:
    """Write ``img`` (3, H, W) as ``directory/rel`` at :data:`DISPLAY` pixels (PNG, or JPEG for
    ``.jpg``), atomically; returns ``rel``."""
    pil = to_pil(resize(img, (DISPLAY, DISPLAY)) if tuple(img.shape[-2:]) != (DISPLAY, DISPLAY) else img)
    buf = io.BytesIO()
    if rel.endswith(".jpg"):
        pil.convert("RGB").save(buf, format="JPEG", quality=92)
    else:
        pil.save(buf, format="PNG")
    atomic_write(directory / rel, buf.getvalue())
    return rel




def _check(conditions: Sequence[str], trials: int, references: int, catch: int) -> list[str]:
    conds = list(dict.fromkeys(conditions))
    unknown = [c for c in conds if c not in CONDITIONS]
    if unknown:
        raise UsageError(f"unknown condition {unknown[0]!r}; choose from {', '.join(CONDITIONS)}")
    if not conds:
        raise UsageError(f"give at least one condition ({', '.join(CONDITIONS)})")
    for name, v, low in (("trials", trials, 1), ("references", references, 1), ("catch", catch, 0)):
        if isinstance(v, bool) or not isinstance(v, int) or v < low:
            raise UsageError(f"{name} must be a whole number >= {low}; got {v!r}")
    return conds


class _Pictures:
    """The study's pictures under ``DIR/images``: each photo written once, each reference by name,
    and the model's value of a feature on a written picture (read back as the participant sees it)."""

    def __init__(self, directory: Path, names: list[str], shown: torch.Tensor, digests: list[str],
                 runner: ModelRunner, input_size: tuple[int, int]) -> None:
        self.directory, self.names, self.shown, self.digests = directory, names, shown, digests
        self.runner, self.input_size = runner, input_size
        self.photo_files: dict[int, str] = {}
        output_folder(directory / "images")

    def photo(self, i: int) -> str:
        if i not in self.photo_files:
            rel = f"images/photo-{slug(self.names[i], 48)}-{self.digests[i][:8]}.jpg"
            self.photo_files[i] = _write_picture(self.directory, rel, self.shown[i])
        return self.photo_files[i]

    def reference(self, rel: str, img: torch.Tensor) -> str:
        return _write_picture(self.directory, rel, img)

    def values(self, feature: Feature, rels: Sequence[str]) -> list[float]:
        views = torch.stack([resize(load_image(self.directory / r), self.input_size) for r in rels])
        return [round(float(v), 5) for v in feature_values(self.runner, [feature.objective], views)[0]]


def _feature_trials(feature: Feature, plan: _Plan, refs: dict[str, tuple[list[str], list[str]]],
                    ref_values: dict[str, tuple[list[float], list[float]]], conditions: list[str], catch: int,
                    pics: _Pictures, rng: random.Random) -> list[dict[str, Any]]:
    """The trials of one feature: every query pair in every condition (the stronger one left in
    half of each condition's trials), then ``catch`` catch trials per condition with references."""
    out: list[dict[str, Any]] = []
    base = {"feature": feature.name, "feature_kind": feature.kind}
    for cond in conditions:
        strong, weak = refs.get(cond, ([], []))
        references = {"strong": list(strong), "weak": list(weak)}
        for (hi, lo), side in zip(plan.pairs, _sides(len(plan.pairs), rng)):
            q = [hi, lo] if side == 0 else [lo, hi]
            out.append({**base, "condition": cond, "catch": False, "references": references,
                        "queries": [pics.photo(i) for i in q], "query_names": [pics.names[i] for i in q],
                        "stronger": side, "values": [round(float(feature.values[i]), 5) for i in q]})
        if cond == "none":
            continue
        sv, wv = ref_values[cond]
        for c, side in zip(range(catch), _sides(catch, rng)):
            i = c % len(strong)
            files, v = [strong[i], weak[i]], [sv[i], wv[i]]
            if side == 1:
                files, v = files[::-1], v[::-1]
            out.append({**base, "condition": cond, "catch": True, "references": references, "queries": files,
                        "query_names": [Path(x).stem for x in files], "stronger": side, "values": v})
    return out


def _references(feature: Feature, plan: _Plan, conditions: list[str], made: dict[str, list[torch.Tensor]],
                pics: _Pictures) -> tuple[dict[str, tuple[list[str], list[str]]], dict[str, tuple[list[float], list[float]]]]:
    """Each condition's strong and weak reference pictures (written), with the feature's value on each;
    ``made``: the engine's pictures of a condition, the strong references, then the weak."""
    refs: dict[str, tuple[list[str], list[str]]] = {}
    if "natural" in conditions:
        refs["natural"] = ([pics.photo(i) for i in plan.strong], [pics.photo(i) for i in plan.weak])
    fs = slug(feature.name)
    for cond in MADE:
        if cond in conditions:
            pictures = made[cond]
            half = len(pictures) // 2
            refs[cond] = ([pics.reference(f"images/{fs}-{cond}-strong-{i}.png", t) for i, t in enumerate(pictures[:half])],
                          [pics.reference(f"images/{fs}-{cond}-weak-{i}.png", t) for i, t in enumerate(pictures[half:])])
    values = {c: (pics.values(feature, s), pics.values(feature, w)) for c, (s, w) in refs.items()}
    return refs, values


def _make_references(model: nn.Module, runner: ModelRunner, settings: Settings, feats: list[Feature],
                     plans: dict[str, _Plan], paths: list[Path], names: list[str], digests: list[str], references: int,
                     side: int, conditions: list[str], work: Path, progress: bool
                     ) -> tuple[dict[str, dict[str, list[torch.Tensor]]], dict[str, dict[str, Any]], bool]:
    """Every feature's engine references as one run in ``work`` (:func:`accentuate.runs.execute`:
    batches, resume, torchrun), read back from the written pictures.

    Returns:
        ``({feature: {condition: pictures (strong, then weak)}}, {pair: how it was made}, lead)``;
        ``lead``: this process wrote the run's record (the only one, or torchrun's rank 0).

    Raises:
        KeyboardInterrupt: the run was interrupted (what it finished is kept in ``work``).
        RuntimeError: an accentuation failed numerically.
    """
    photos = {i: _photo_info(paths[i], names[i], digests[i], side) for f in feats for i in plans[f.name].seeds
              if any(c in conditions for c in MADE)}
    images: list[ImageInfo] = []
    targets: list[TargetInfo] = []
    pairs: list[tuple[int, int]] = []
    rows: dict[int, int] = {}
    asked = {f.name: _engine_pairs(f, plans[f.name], photos, references, side, conditions, images, targets, pairs,
                                   rows) for f in feats}
    if not pairs:
        return {}, {}, True
    plan = runs_plan(model, runner.spec, settings, images, targets, output_folder(work), pairs=pairs, kind="study",
                     batch=2 * references, frames=0, subcommand="study build", quiet=not progress, runner=runner)
    outcome = execute(plan)
    if outcome.status == 130:
        raise KeyboardInterrupt(f"the study's engine run in {work} was interrupted")
    if outcome.failed:
        e = outcome.failed[0]
        raise RuntimeError(f"{len(outcome.failed)} reference(s) failed numerically (e.g. {e['image']} -> "
                           f"{e['target_label']}: {e['failed']}); rerun with another --seed or a lower --lr")
    if not outcome.lead:
        return {}, {}, False
    at = {(e["seed"], e["target"]): e for e in outcome.entries}
    made = {name: {cond: [load_image(work / at[p]["files"]["image"]) for p in cond_pairs]
                   for cond, cond_pairs in conds.items()} for name, conds in asked.items()}
    how = {e["id"]: {"read_back": bool(e.get("resumed")), "batch": e["batch"]} for e in outcome.entries}
    return made, how, True


def _photo_info(path: Path, name: str, digest: str, side: int) -> ImageInfo:
    """A seed photo of the study's engine run: the centre square of the photo on the canvas."""
    img = load_image(path)
    return ImageInfo(path=str(path), name=name, sha256=digest, size=(int(img.shape[-1]), int(img.shape[-2])),
                     canvas=(side, side), tensor=square_crop(img, side))


def build(
    model: nn.Module,
    photos: str | os.PathLike | Sequence[str | os.PathLike],
    out: str | os.PathLike,
    *,
    features: Sequence[Any] | None = None,
    conditions: Sequence[str] = CONDITIONS,
    trials: int = 6,
    references: int = 3,
    catch: int = 1,
    seed: int = 0,
    title: str | None = None,
    show_feature_names: bool = False,
    keys: tuple[str, str] = ("f", "j"),
    settings: Any = None,
    progress: bool = False,
    page: bool = True,
    prolific_code: str | None = None,
    no_consent_code: str | None = None,
    **kwargs: Any,
) -> Study:
    """Build a study in ``out``: ``trials.json``, ``design.json``, the pictures and ``index.html``.

    Args:
        model: the model whose features are studied (not modified).
        photos: a folder (with its subfolders) or files: the natural photos, centre-cropped square.
        out: the study's folder (made if missing; an earlier build's engine runs in ``out/work``
            are read back).
        features: what :func:`pick_features` takes (default ``["classes:4"]`` for a model with
            classes, else ``["directions:LAYER:4"]`` at the model's last layer with positions).
        conditions: a subset of :data:`CONDITIONS`.
        trials: query pairs per feature, each shown once in every condition.
        references: strong (and as many weak) references per feature and condition.
        catch: catch trials per feature and condition with references.
        seed: the one seed of every choice and of the engine runs.
        title, show_feature_names, keys: what the page shows (its title, the feature's name above
            the references, the left and right response keys).
        settings, **kwargs: the accentuation settings (``steps``, ``crops``, ``canvas`` (one side), ...;
            default: the model's) and model-spec keys; ``runner`` reuses a caller's runner.
        progress: show progress bars.
        page: write ``index.html`` (:func:`accentuate.study.page.write_page`).
        prolific_code, no_consent_code: Prolific's completion and no-consent codes
            (:func:`accentuate.study.page.update_prolific`: a code not given stays as it was set).

    Returns:
        A :class:`Study`.

    Raises:
        UsageError: an unknown condition, a bad count, too few photos for the asked design, a
            Prolific code that is not one.
        ImageError: a missing photo path, or no readable photo.
    """
    from .page import check_prolific, update_prolific, write_page

    started = time.perf_counter()
    conds = _check(conditions, trials, references, catch)
    check_prolific(prolific_code, no_consent_code)
    spec = analysis_spec(model, kwargs)
    runner = ModelRunner.reuse(kwargs.pop("runner", None), model, spec)
    side = square_side(spec, kwargs.get("canvas"), "a study")
    kwargs["canvas"] = (side, side)
    kwargs.setdefault("opacity", False)
    kwargs["runner"] = runner
    settings = analysis_settings(model, spec, settings, kwargs)
    paths, names, views, shown, digests = _read_photos(photo_set(photos), side, spec.input_size)
    need = needed_photos(references, trials)
    if len(paths) < need:
        raise UsageError(f"{len(paths)} photos are too few for {references} references per side and {trials} trials "
                         f"per feature: a feature needs {need} photos; give more photos or lower trials/references")
    if features is None:
        from ..analysis.concepts import default_concept_layer

        features = ["classes:4"] if spec.labels else [f"directions:{default_concept_layer(model, spec)}:4"]
    feats = pick_features(runner, views, list(features), spec.labels)
    directory = output_folder(out)
    pics = _Pictures(directory, names, shown, digests, runner, spec.input_size)
    rngs = {f.name: random.Random(name_seed(seed, f.name)) for f in feats}
    plans = {f.name: _plan(f.name, f.values, references, trials, rngs[f.name]) for f in feats}
    made, runs, lead = _make_references(model, runner, settings.replace(seed=seed), feats, plans, paths, names,
                                        digests, references, side, conds, directory / "work", progress)
    if not lead:  # another process of a torchrun job: rank 0 writes the study
        return Study(directory, {"study_id": "", "trials": []}, runs)
    all_trials: list[dict[str, Any]] = []
    design = []
    for feature in feats:
        plan = plans[feature.name]
        refs, ref_values = _references(feature, plan, conds, made.get(feature.name, {}), pics)
        all_trials += _feature_trials(feature, plan, refs, ref_values, conds, catch, pics, rngs[feature.name])
        design.append({**feature.record(names), "references": {c: {"strong": list(zip(r[0], ref_values[c][0])),
                                                                     "weak": list(zip(r[1], ref_values[c][1]))}
                                                                 for c, r in refs.items()},
                       "seeds": [names[i] for i in plan.seeds]})
    for n, t in enumerate(all_trials, 1):
        t["id"] = f"t{n:03d}"
    doc = {"format": FORMAT, "title": title or f"Which photo has more of the feature? ({spec.name})",
           "model": spec.name, "seed": seed, "keys": {"left": keys[0], "right": keys[1]},
           "conditions": conds, "features": [{"name": f.name, "kind": f.kind} for f in feats],
           "show_feature_names": bool(show_feature_names), "trials": [_ordered(t) for t in all_trials]}
    doc = {"format": FORMAT, "study_id": _study_id(doc, directory), **{k: v for k, v in doc.items() if k != "format"}}
    atomic_write(directory / "trials.json", json.dumps(doc, indent=1).encode())
    atomic_write(directory / "design.json", json.dumps({
        "study_id": doc["study_id"], "model": spec.name, "seed": seed, "settings": settings.to_dict(),
        "references": references, "trials_per_condition": trials, "catch": catch, "features": design,
        "photos": [{"name": nm, "sha256": d} for nm, d in zip(names, digests)],
        "runs": runs, "seconds": round(time.perf_counter() - started, 1)}, indent=1).encode())
    update_prolific(directory, prolific_code, no_consent_code)
    if page:
        write_page(directory)
    return Study(directory, doc, runs)


def _ordered(t: dict[str, Any]) -> dict[str, Any]:
    keys = ("id", "feature", "feature_kind", "condition", "catch", "references", "queries", "query_names",
            "stronger", "values")
    return {k: t[k] for k in keys}


def _study_id(doc: dict[str, Any], directory: Path) -> str:
    """16 hex digits of the SHA-256 of the trials and of every picture they show: the same design
    and pictures give the same id, any change another."""
    h = hashlib.sha256(json.dumps(doc, sort_keys=True).encode())
    files = sorted({p for t in doc["trials"] for p in [*t["queries"], *t["references"]["strong"],
                                                         *t["references"]["weak"]]})
    for rel in files:
        h.update(rel.encode() + hashlib.sha256((directory / rel).read_bytes()).digest())
    return h.hexdigest()[:16]
