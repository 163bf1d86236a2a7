"""Every objective kind records itself and is rebuilt exactly: through ``to_record``/``from_record``
(with JSON in between), through ``Result.save``/``Result.load`` and through ``run.json``'s
``targets``; its identity changes with what it measures and not with its label; two reference
images that share a file name are two targets of a run."""

from __future__ import annotations

import atexit
import dataclasses
import functools
import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

import accentuate as acc
from accentuate.cli import main
from accentuate.clip import Text
from accentuate.hooks import OUTPUT, input_of
from accentuate.layout import Layout
from accentuate.objectives import Like, Objective, Recorded, from_record
from accentuate.runs.work import ImageInfo, TargetInfo, WorkList

PROJ = "layers.1.attention.o_proj"  # the tiny ViT's (tests/test_transformers.py) second attention projection


def _vec(seed: int, n: int = 32) -> torch.Tensor:
    return torch.randn(n, generator=torch.Generator().manual_seed(seed))


def _direction(layer: str = "layernorm", vector: torch.Tensor | None = None, kind: str = "cosine",
               token: int | None = 0, source: str | None = "v.npy") -> Objective:
    d = acc.direction(layer, _vec(1) if vector is None else vector, kind, token)
    d.source = source
    return d


def _like(layer: str = "layernorm", reference: torch.Tensor | None = None, pool: str = "cls", measure: str = "dot",
          name: str = "ref.jpg") -> Objective:
    return Like(layer, _vec(2) if reference is None else reference, pool, measure, name)


@functools.cache
def _sae_checkpoint(seed: int = 0) -> str:
    """A TopK SAE checkpoint on a 32-channel layer (written once per seed, removed at exit)."""
    folder = Path(tempfile.mkdtemp(prefix="accentuate-test-sae-"))
    atexit.register(shutil.rmtree, folder, ignore_errors=True)
    w = torch.nn.functional.normalize(torch.randn(32, 16, generator=torch.Generator().manual_seed(seed)), dim=0)
    acc.save_sae(acc.SparseAutoencoder(w, torch.zeros(16), torch.zeros(32), w.T.clone(), activation="topk", k=4),
                 folder / "sae")
    return str(folder / "sae")


def _sae_latent(layer: str = "layers.1", unit: int = 3, reduce: str = "mean", token: int | None = None,
                seed: int = 0, straight_through: bool = True) -> Objective:
    return acc.latent(layer, acc.load_sae(_sae_checkpoint(seed)), unit, reduce, token=token,
                      straight_through=straight_through)


LABELS = [f"c{i}" for i in range(32)]


def patch_unit5(acts):
    """A function objective (acc.objective): unit 5 of layers.1's patch tokens (importable: records rebuild it)."""
    return acts[next(iter(acts))][:, 2:, 5].mean(dim=1)


def patch_unit6(acts):
    return acts[next(iter(acts))][:, 2:, 6].mean(dim=1)

#: One objective of each registered kind (``record_type`` -> builder), on the layers of the tiny ViT.
CASES: dict[str, Callable[[], Objective]] = {
    "logit": lambda: acc.logit(3).resolve(LABELS),
    "channel": lambda: acc.channel("layers.1", 5),
    "token_channel": lambda: acc.channel("layers.1", 7, token=0),
    "neuron": lambda: acc.neuron("layers.0.mlp.fc1", 9, y=1, x=2),
    "direction": _direction,
    "head": lambda: acc.head(PROJ, 2, 3, heads=4, y=1, x=3),
    "like": _like,
    "text": lambda: Text("a photo of a dog", _vec(3), away=True),
    "sae_latent": _sae_latent,
    "sum": lambda: 2 * acc.logit(1) - 0.5 * acc.channel("layers.0", 1) + _like(),
    "recorded": lambda: Recorded("Custom()", 2),
    "function": lambda: acc.objective(patch_unit5, layers="layers.1"),
}

#: For each kind, objectives that measure something else than its case (one change each).
VARIANTS: dict[str, list[Callable[[], Objective]]] = {
    "logit": [lambda: acc.logit(4)],
    "channel": [lambda: acc.channel("layers.0", 5), lambda: acc.channel("layers.1", 6)],
    "token_channel": [lambda: acc.channel("layers.1", 8, token=0), lambda: acc.channel("layers.0", 7, token=0),
                      lambda: acc.channel("layers.1", 7, token=1)],
    "neuron": [lambda: acc.neuron("layers.0.mlp.fc1", 9, y=2, x=2), lambda: acc.neuron("layers.0.mlp.fc1", 9),
               lambda: acc.neuron("layers.0.mlp.fc1", 8, y=1, x=2)],
    "direction": [lambda: _direction(vector=_vec(9)), lambda: _direction(kind="dot"), lambda: _direction(token=None),
                  lambda: _direction(layer="layers.1")],
    "head": [lambda: acc.head(PROJ, 1, 3, heads=4, y=1, x=3), lambda: acc.head(PROJ, 2, None, heads=4, y=1, x=3),
             lambda: acc.head(PROJ, 2, 3, heads=4, token=0), lambda: acc.head(PROJ, 2, 3, heads=2, y=1, x=3),
             lambda: acc.head("layers.0.attention.o_proj", 2, 3, heads=4, y=1, x=3)],
    "like": [lambda: _like(reference=_vec(9)), lambda: _like(pool="mean"), lambda: _like(measure="cosine"),
             lambda: _like(layer="layers.1")],
    "text": [lambda: Text("a photo of a dog", _vec(9), away=True), lambda: Text("a photo of a dog", _vec(3)),
             lambda: Text("a photo of a cat", _vec(3), away=True)],
    "sae_latent": [lambda: _sae_latent(unit=4), lambda: _sae_latent(reduce="max"), lambda: _sae_latent(token=0),
                   lambda: _sae_latent(layer="layers.0"), lambda: _sae_latent(seed=1),
                   lambda: _sae_latent(straight_through=False)],
    "sum": [lambda: 2 * acc.logit(1) - 0.5 * acc.channel("layers.0", 1) + _like(reference=_vec(9)),
            lambda: 3 * acc.logit(1) - 0.5 * acc.channel("layers.0", 1) + _like()],
    "recorded": [lambda: Recorded("Other()", 2)],
    "function": [lambda: acc.objective(patch_unit6, layers="layers.1"),
                 lambda: acc.objective(patch_unit5, layers="layers.0")],
}


TOKENS = Layout("tokens", 32, (4, 4), prefix=2)  # two leading tokens, so that token 1 exists
LAYOUTS = {OUTPUT: Layout("vector", 32), "layers.0": TOKENS, "layers.1": TOKENS, "layernorm": TOKENS,
           "layers.0.mlp.fc1": Layout("tokens", 64, (4, 4), prefix=2), input_of(PROJ): TOKENS,
           input_of("layers.0.attention.o_proj"): TOKENS}


def _acts(seed: int = 0) -> dict[str, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return {k: torch.randn(lay.shape(3), generator=g) for k, lay in LAYOUTS.items()}


def _same_objective(back: Objective, obj: Objective) -> None:
    """``back`` is ``obj`` rebuilt: same class, repr, identity, record, description and values."""
    assert type(back) is type(obj)
    assert repr(back) == repr(obj) and back.identity() == obj.identity()
    assert back.to_record() == obj.to_record() and back.describe() == obj.describe()
    assert back.layers == obj.layers and back.class_index == obj.class_index
    acts = _acts()
    if isinstance(obj, Recorded):
        with pytest.raises(TypeError, match="build the objective again"):
            back(acts, LAYOUTS)
        return
    obj.validate(LAYOUTS)
    assert torch.equal(back(acts, LAYOUTS), obj(acts, LAYOUTS))


def test_every_registered_kind_has_a_case() -> None:
    assert set(acc.objectives.kinds()) == set(CASES) == set(VARIANTS)
    assert {k: type(CASES[k]()).record_type for k in CASES} == {k: k for k in CASES}


@pytest.mark.parametrize("kind", sorted(CASES))
def test_record_round_trips_through_json(kind: str, recwarn: pytest.WarningsRecorder) -> None:
    obj = CASES[kind]()
    rec = json.loads(json.dumps(obj.to_record()))
    assert rec["type"] == kind
    _same_objective(from_record(rec), obj)
    assert not recwarn.list  # a registered kind comes back without a warning


@pytest.mark.parametrize("kind", sorted(CASES))
def test_identity_changes_with_what_is_measured(kind: str) -> None:
    ids = [f().identity() for f in [CASES[kind], *VARIANTS[kind]]]
    assert len(set(ids)) == len(ids), ids
    assert CASES[kind]().identity() == ids[0]  # and is the same for the same objective built again


def test_identity_ignores_labels() -> None:
    assert _like(name="a.jpg").identity() == _like(name="b.jpg").identity()
    assert _direction(source="a.npy").identity() == _direction(source="b.npy").identity()
    assert (acc.logit(1) + _like(name="a.jpg")).identity() == (acc.logit(1) + _like(name="b.jpg")).identity()


def test_tensors_are_stored_losslessly() -> None:
    v = torch.tensor([1e-30, 1.0 / 3.0, -2.5e7, float(np.nextafter(np.float32(1), np.float32(2)))])
    rec = json.loads(json.dumps(_like(reference=v).to_record()))
    assert rec["reference"]["dtype"] == "float32" and rec["reference"]["shape"] == [4]
    assert torch.equal(from_record(rec).reference, v)
    # a direction recorded before base64 (a list of floats) is read as well
    d = _direction()
    old = {k: v for k, v in d.to_record().items()}
    old["vector"] = d.vector.tolist()
    assert torch.equal(from_record(old).vector, d.vector) and from_record(old).identity() == d.identity()


def test_unknown_kind_is_kept_as_its_repr_with_a_warning() -> None:
    with pytest.warns(UserWarning, match="unknown objective type 'sparkle'.*kept as Sparkle\\(3\\)"):
        back = from_record({"type": "sparkle", "repr": "Sparkle(3)", "level": 3})
    assert isinstance(back, Recorded) and repr(back) == "Sparkle(3)"
    # every record keeps the repr, so a kind that is not imported when it is read still shows as itself
    assert all(CASES[k]().to_record()["repr"] == repr(CASES[k]()) for k in CASES)

    class Custom(acc.Objective):  # not a registered kind: recorded by its repr
        layers = frozenset({"layers.1"})

        def __call__(self, acts, layouts):
            return acts["layers.1"].mean(dim=(1, 2))

        def __repr__(self) -> str:
            return "Custom()"

    class Wider(acc.objectives.Channel):  # a subclass of a kind is not that kind
        pass

    assert Custom().to_record() == {"type": "recorded", "repr": "Custom()", "class_index": None}
    assert Wider("layers.1", 2).to_record()["type"] == "recorded"
    with pytest.raises(ValueError, match="the 'channel' objective record is not valid \\(no 'c'\\)"):
        from_record({"type": "channel", "layer": "layers.1"})


def test_a_kind_registers_itself_and_needs_its_record_methods() -> None:
    class Mean(acc.Objective):
        record_type = "test_mean_of_layer"

        def __init__(self, layer: str) -> None:
            self.layer = layer
            self.layers = frozenset({layer})

        def __call__(self, acts, layouts):
            return acts[self.layer].mean(dim=(1, 2))

        def to_fields(self):
            return {"layer": self.layer}

        @classmethod
        def from_fields(cls, rec):
            return cls(rec["layer"])

        def __repr__(self) -> str:
            return f"Mean({self.layer})"

    try:
        assert acc.objectives.kinds()["test_mean_of_layer"] is Mean
        back = from_record(json.loads(json.dumps(Mean("layers.1").to_record())))
        assert isinstance(back, Mean) and back.layer == "layers.1"
        with pytest.raises(TypeError, match="record_type 'channel' is already taken"):
            type("Other", (acc.Objective,), {"record_type": "channel", "to_fields": lambda s: {},
                                              "from_fields": classmethod(lambda c, r: c())})
        with pytest.raises(TypeError, match="does not define to_fields and from_fields"):
            type("Half", (acc.Objective,), {"record_type": "test_half"})
    finally:
        acc.objectives.base._KINDS.pop("test_mean_of_layer", None)


# -- Result.save / load and run.json -------------------------------------------------------------
@pytest.fixture(scope="module")
def vit_result(tmp_path_factory: pytest.TempPathFactory) -> tuple[acc.Result, Path]:
    """A saved tiny-ViT result with one target of each kind (the Recorded one swapped in after the run,
    since it cannot be optimized)."""
    tiny_vit = pytest.importorskip("test_transformers").tiny_vit
    model = tiny_vit()
    runnable = [CASES[k]() for k in sorted(CASES) if k != "recorded"]
    seed = (0.5 + 0.2 * torch.randn(3, 32, 32, generator=torch.Generator().manual_seed(1))).clamp(0, 1)
    res = acc.accentuate(model, seed, [*runnable, acc.logit(0)], steps=2, crops=2, canvas=32, lr=0.1,
                         param="pixel", reg_layer="none", seed=0)
    res = dataclasses.replace(res, targets=[*res.targets[:-1], CASES["recorded"]()])
    out = tmp_path_factory.mktemp("records") / "saved"
    res.save(out)
    return res, out


def test_result_save_load_keeps_every_kind(vit_result: tuple[acc.Result, Path]) -> None:
    res, out = vit_result
    back = acc.Result.load(out)
    assert len(back.targets) == len(res.targets)
    for b, o in zip(back.targets, res.targets):
        _same_objective(b, o)
    assert {type(o).record_type for o in res.targets} == set(CASES)  # one target of each kind
    # read from the PNGs and run.json alone (as a command-line folder is read): the same targets
    (out / "result.npz").unlink()
    for b, o in zip(acc.Result.load(out).targets, res.targets):
        _same_objective(b, o)


def test_run_json_targets_carry_each_definition(vit_result: tuple[acc.Result, Path]) -> None:
    res, out = vit_result
    doc = json.loads((out / "run.json").read_text())
    for t, o in zip(doc["targets"], res.targets):
        _same_objective(from_record(t["definition"]), o)
    assert [t["definition"]["type"] for t in doc["targets"]] == [type(o).record_type for o in res.targets]
    # the writer's own targets entries (what the command line writes) carry the definition too
    entries = [TargetInfo(repr(o), o).record() for o in res.targets]
    for t, o in zip(json.loads(json.dumps(entries)), res.targets):
        _same_objective(from_record(t["definition"]), o)


# -- reference images that share a file name -----------------------------------------------------
def _save_photo(path: Path, seed: int) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:40, 0:40]
    img = np.stack([128 + 100 * np.sin(x / (3 + seed)), 128 + 90 * np.cos(y / (2 + seed)),
                    rng.integers(0, 255, (40, 40))], -1)
    Image.fromarray(img.clip(0, 255).astype(np.uint8)).save(path)
    return path


def test_like_identity_follows_the_image_not_its_name(tmp_path: Path) -> None:
    model = acc.load_model("cli_models:tiny")
    a, b = _save_photo(tmp_path / "a" / "ref.png", 0), _save_photo(tmp_path / "b" / "ref.png", 1)
    copy = tmp_path / "c" / "other.png"
    copy.parent.mkdir()
    copy.write_bytes(a.read_bytes())
    like_a, like_b, like_copy = (acc.like(str(p), model) for p in (a, b, copy))
    assert repr(like_a) == repr(like_b)  # the same label ...
    assert like_a.identity() != like_b.identity()  # ... but two images
    assert like_a.identity() == like_copy.identity() and repr(like_a) != repr(like_copy)  # renamed: same target
    _save_photo(a, 2)  # the photo replaced under its old name
    assert acc.like(str(a), model).identity() != like_a.identity()
    # two references named alike are two pairs of a run
    info = ImageInfo(path="seed.png", name="seed.png", sha256="abc", size=(40, 40), canvas=(40, 40))
    work = WorkList([info], [TargetInfo(f"like:{a}", like_a), TargetInfo(f"like:{b}", like_b)], "k1", 4)
    assert work.pair(0, 0).key != work.pair(0, 1).key


CLI = ["--model", "cli_models:tiny", "--steps", "3", "--crops", "2", "--canvas", "40", "--frames", "0", "--quiet"]


def test_cli_two_references_with_one_file_name(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    _save_photo(tmp_path / "seed.png", 5)
    _save_photo(tmp_path / "a" / "ref.png", 0)
    _save_photo(tmp_path / "b" / "ref.png", 1)
    argv = ["run", "seed.png", "--like", "a/ref.png", "--like", "b/ref.png", "--out", "out", *CLI]
    assert main(argv) == 0
    doc = json.loads((tmp_path / "out" / "run.json").read_text())
    assert doc["counts"]["complete"] == doc["counts"]["total"] == 2 and len(doc["pairs"]) == 2
    assert len({p["key"] for p in doc["pairs"]}) == 2 and {p["target"] for p in doc["pairs"]} == {0, 1}
    back = acc.Result.load(tmp_path / "out")
    assert all(isinstance(t, Like) for t in back.targets)
    assert not torch.equal(back.targets[0].reference, back.targets[1].reference)
    # a/ref.png replaced by another photo: its pair is made again, b's is kept
    _save_photo(tmp_path / "a" / "ref.png", 2)
    assert main(argv) == 0
    again = json.loads((tmp_path / "out" / "run.json").read_text())
    resumed = {p["target"]: p["resumed"] for p in again["pairs"]}
    assert resumed == {0: False, 1: True}
    assert again["counts"]["complete"] == 2 and again["counts"]["resumed"] == 1


def test_objectives_import_only_low_modules() -> None:
    """The objectives package (function-level imports included) reads only the modules below it:
    never the engine, results, records, the command line or the report (nor CLIP, which builds on it)."""
    import ast

    allowed = {"errors", "hooks", "images", "labels", "layout", "spec", "objectives", "sae"}
    folder = Path(acc.objectives.__file__).parent
    found: dict[str, set[str]] = {}
    for path in sorted(folder.glob("*.py")):
        mods = found.setdefault(path.name, set())
        for node in ast.walk(ast.parse(path.read_text("utf-8"))):
            if isinstance(node, ast.ImportFrom) and node.level == 1:
                mods.add("objectives")  # a sibling module
            elif isinstance(node, ast.ImportFrom) and node.level == 2:  # from ..X import ... / from .. import X
                mods.update([node.module.split(".")[0]] if node.module else [a.name for a in node.names])
            elif isinstance(node, ast.ImportFrom) and node.level > 2:
                mods.add("above the package")
            elif isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [a.name for a in node.names] if isinstance(node, ast.Import) else [node.module or ""]
                mods.update(n.split(".")[1] if "." in n else n for n in names if n.split(".")[0] == "accentuate")
    bad = {name: sorted(mods - allowed) for name, mods in found.items() if mods - allowed}
    assert not bad, bad
    assert found["reference.py"] >= {"hooks", "spec", "images"}  # the walk does see function-level imports
