"""Python behaves like the command line: target strings, the preview preset, one seed, progress,
the model's place in objective builders, functions as objectives, transforms, pairs."""

from __future__ import annotations

import io
import json
import warnings

import pytest
import torch
from conftest import TINY_SPEC, TinyNet

import accentuate as acc
from accentuate.augment import sample_crops
from accentuate.errors import TargetError
from accentuate.settings import PRESETS, Settings, Until
from accentuate.transforms import apply_transforms, parse_transforms, sample_transforms

QUICK = dict(steps=3, crops=2, canvas=48)


@pytest.fixture
def img() -> torch.Tensor:
    return torch.rand(3, 48, 48, generator=torch.Generator().manual_seed(1))


# -- target strings ---------------------------------------------------------------------------
def test_target_strings_read_as_on_the_command_line(tiny, img):
    res = acc.accentuate(tiny, img, ["conv2:3@4,4", "conv2:3", "banana", "2"], **QUICK)
    assert [repr(t) for t in res.targets] == ["Neuron(conv2, 3, y=4, x=4)", "Channel(conv2, 3)",
                                              "Logit(1 'banana')", "Logit(2 'cherry')"]
    built = acc.accentuate(tiny, img, [acc.neuron("conv2", 3, 4, 4), acc.channel("conv2", 3), "banana", 2],
                           **QUICK)
    assert torch.equal(res.images, built.images)
    with pytest.raises(TargetError, match="channel 99 is out of range for layer 'conv2'"):
        acc.accentuate(tiny, img, "conv2:99", **QUICK)
    with pytest.raises(acc.LayerError, match="closest"):
        acc.accentuate(tiny, img, "conv9:1", **QUICK)


def test_analyses_and_explain_take_target_strings(tiny, img):
    from accentuate.analysis import latent_features
    from accentuate.analysis.explain import explain

    lat = latent_features(tiny, [img, img.flip(-1)], "conv2:3", **QUICK)
    assert lat.target == "Channel(conv2, 3)"
    ex = explain(tiny, img, top=1, label="3", **QUICK)  # the label read as a target: class index 3
    assert 3 in ex.classes
    with pytest.raises(TargetError, match="label 'conv2:3' is not a class"):
        explain(tiny, img, top=1, label="conv2:3", **QUICK)


# -- the preview preset ---------------------------------------------------------------------------
def test_preview_preset_on_a_channel_target_runs_as_on_the_command_line(tiny, img):
    preview = {**PRESETS["preview"], "canvas": 48}
    res = acc.accentuate(tiny, img, "conv2:3", steps=3, **preview)
    assert res.config.until is None and res.config.crops == 8  # dropped, as --preview drops it
    res = acc.accentuate(tiny, img, "cherry", steps=3, **preview)
    assert res.config.until == "top1" and res.config.check_every == 2
    with pytest.raises(ValueError, match="until 'top1' needs class targets"):  # an explicit until is checked
        acc.accentuate(tiny, img, "conv2:3", until="top1", **QUICK)
    s = Settings(until="top1 for classes")
    assert s.until_rule == Until(rank=1, classes_only=True)
    assert s.for_targets([acc.logit(1), acc.channel("conv2", 3)]).until is None
    assert s.for_targets([]).until == "top1 for classes"  # targets not known yet


def test_until_top0_is_refused_before_any_work(tmp_path, capsys):
    from accentuate.cli import main

    with pytest.raises(ValueError, match="K >= 1"):
        Until.parse("top0")
    with pytest.raises(ValueError, match="K >= 1"):
        Settings(until="top0")
    path = tmp_path / "seed.png"
    from PIL import Image

    Image.new("RGB", (48, 48), (120, 80, 40)).save(path)
    out = tmp_path / "out"
    code = main(["run", str(path), "-t", "cherry", "--until", "top0", "--model", "cli_models:tiny", "--out", str(out)])
    err = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(err) == 1 and "--until: until must be 'topK' with K >= 1" in err[0]
    assert not out.exists()


# -- one seed --------------------------------------------------------------------------------------
def test_one_seed_default_zero_as_the_command_line(tiny, img):
    a = acc.accentuate(tiny, img, "banana", **QUICK)
    b = acc.accentuate(tiny, img, "banana", **QUICK)
    assert a.config.seed == 0 and a.run["generator_seed"] == 0 and torch.equal(a.images, b.images)
    assert Settings().seed == 0
    drawn = acc.accentuate(tiny, img, "banana", seed=None, **QUICK)
    assert isinstance(drawn.config.seed, int)
    again = acc.accentuate(tiny, img, "banana", seed=drawn.config.seed, **QUICK)
    assert torch.equal(drawn.images, again.images)  # the drawn seed is recorded and replays
    g = torch.Generator().manual_seed(7)
    mine = acc.accentuate(tiny, img, "banana", seed=g, **QUICK)
    assert mine.config.seed is None and mine.run["generator_seed"] is None
    with pytest.warns(DeprecationWarning, match=r"accentuate\(generator=...\) is deprecated; it is seed="):
        old = acc.accentuate(tiny, img, "banana", generator=0, **QUICK)
    assert torch.equal(old.images, a.images)
    with pytest.raises(TypeError, match="both seed= and generator="):
        acc.accentuate(tiny, img, "banana", generator=0, seed=1, **QUICK)


def test_every_analysis_takes_seed_default_zero():
    import inspect

    from accentuate import analysis

    for fn in (analysis.lambda_sweep, analysis.cascading_randomization, analysis.latent_features,
               analysis.pathway_similarity, analysis.pathway_study, acc.concepts):
        params = inspect.signature(fn).parameters
        assert params["seed"].default == 0 and "generator" not in params, fn.__name__
        assert params["progress"].default is None, fn.__name__


def test_an_analysis_reads_the_old_generator_name_with_a_warning(tiny, img):
    from accentuate.analysis import latent_features

    new = latent_features(tiny, [img], "conv2:3", seed=4, **QUICK)
    with pytest.warns(DeprecationWarning, match=r"latent_features\(generator=...\) is deprecated"):
        old = latent_features(tiny, [img], "conv2:3", generator=4, **QUICK)
    assert torch.equal(new.images, old.images)


# -- progress ---------------------------------------------------------------------------------------
class _Terminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def test_progress_bar_where_it_can_be_seen(tiny, img, monkeypatch, capsys):
    from accentuate.display import progress_visible

    assert not progress_visible()  # under pytest: no bar
    acc.accentuate(tiny, img, "banana", **QUICK)
    assert "accentuate" not in capsys.readouterr().err
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    monkeypatch.setattr("sys.stderr", io.StringIO())
    assert not progress_visible()  # a pipe or a log file: no bar
    term = _Terminal()
    monkeypatch.setattr("sys.stderr", term)
    assert progress_visible()
    acc.accentuate(tiny, img, "banana", **QUICK)
    assert "accentuate:" in term.getvalue() and "/3 [" in term.getvalue()  # the default draws a bar
    quiet = _Terminal()
    monkeypatch.setattr("sys.stderr", quiet)
    acc.accentuate(tiny, img, "banana", progress=False, **QUICK)
    assert quiet.getvalue() == ""


# -- the model's place ------------------------------------------------------------------------------
def test_objective_builders_take_what_they_measure_then_the_model(tiny, img):
    new = acc.like(img, tiny, "conv2")
    with pytest.warns(DeprecationWarning, match=r"like\(layer, image, model\) is deprecated"):
        old = acc.like("conv2", img, tiny)
    assert old.identity() == new.identity() and old.layer == "conv2"
    with pytest.warns(DeprecationWarning):
        assert acc.like(None, img, tiny).identity() == acc.like(img, tiny).identity()
    assert acc.like(img, model=tiny, layer="conv2").identity() == new.identity()
    # Settings.resolve takes the model's own spec.
    assert Settings.resolve(tiny, steps=5) == Settings.resolve(tiny, TINY_SPEC, steps=5)


# -- a function as an objective -----------------------------------------------------------------------
@acc.objective(layers=["conv2"])
def conv2_channel3(acts):
    return acts["conv2"][:, 3].mean(dim=(1, 2))


def test_a_function_is_an_objective_that_rises(tiny, img):
    res = acc.accentuate(tiny, img, conv2_channel3, steps=6, crops=2, canvas=48, lam=0.0)
    assert float(res.after["value"][0, 0]) > float(res.before["value"][0, 0])
    same = acc.accentuate(tiny, img, acc.channel("conv2", 3), steps=6, crops=2, canvas=48, lam=0.0)
    assert torch.allclose(res.images, same.images, atol=1e-5)  # the channel mean, written by hand
    both = conv2_channel3 - 0.5 * acc.logit(1)
    assert repr(both) == "Function(conv2_channel3, conv2) - 0.5 * Logit(1)" and both.layers == {"conv2", "@output"}
    with_layouts = acc.objective(lambda acts, layouts: layouts["conv2"].pool(acts["conv2"])[:, 3], layers="conv2")
    assert torch.allclose(acc.accentuate(tiny, img, with_layouts, **QUICK).images,
                          acc.accentuate(tiny, img, "conv2:3", **QUICK).images, atol=1e-5)
    bad = acc.objective(lambda acts: acts["conv2"].mean(), layers=["conv2"], name="scalar")
    with pytest.raises(ValueError, match=r"objective 'scalar' returned \(\); it must return one value per batch row"):
        acc.accentuate(tiny, img, bad, **QUICK)


def test_a_function_objective_is_recorded_and_reloaded_when_importable(tiny, img, tmp_path):
    res = acc.accentuate(tiny, img, conv2_channel3, **QUICK)
    rec = conv2_channel3.to_record()
    assert (rec["type"], rec["module"], rec["qualname"]) == ("function", __name__, "conv2_channel3")
    assert len(rec["code_sha256"]) == 16 and conv2_channel3.importable
    res.save(tmp_path / "ok")
    back = acc.Result.load(tmp_path / "ok")
    assert back.targets[0].identity() == conv2_channel3.identity()
    assert torch.equal(back.targets[0]({"conv2": torch.ones(2, 16, 3, 3)}, {}), torch.ones(2))

    def local(acts):  # defined in a function: a record cannot import it
        return acts["conv2"][:, 0].mean(dim=(1, 2))

    obj = acc.objective(local, layers="conv2")
    assert not obj.importable
    res = acc.accentuate(tiny, img, obj, **QUICK)
    with pytest.warns(UserWarning, match="cannot bring it back"):
        res.save(tmp_path / "local")
    with pytest.warns(UserWarning, match="cannot be imported"):
        again = acc.Result.load(tmp_path / "local")
    assert isinstance(again.targets[0], acc.objectives.Recorded) and "local" in repr(again.targets[0])
    doc = json.loads((tmp_path / "local" / "run.json").read_text())
    assert doc["targets"][0]["definition"]["qualname"].endswith("<locals>.local")


# -- transforms --------------------------------------------------------------------------------------
TRANSFORMS = ("jitter:3", "rotate:15", "scale:0.9,1.2")


def test_transforms_are_recorded_and_replayed(tiny, img):
    a = acc.accentuate(tiny, img, ["banana", "conv2:3"], transforms=TRANSFORMS, **QUICK)
    b = acc.accentuate(tiny, img, ["banana", "conv2:3"], transforms=TRANSFORMS, **QUICK)
    plain = acc.accentuate(tiny, img, ["banana", "conv2:3"], **QUICK)
    assert a.config.transforms == TRANSFORMS and a.config.to_dict()["transforms"] == list(TRANSFORMS)
    assert Settings.from_dict(json.loads(json.dumps(a.config.to_dict()))) == a.config
    assert "transforms" not in plain.config.to_dict()  # the records of runs without them are as before
    assert torch.equal(a.images, b.images) and not torch.allclose(a.images, plain.images)
    with pytest.raises(ValueError, match="unknown transform 'shear:3'"):
        acc.accentuate(tiny, img, "banana", transforms=["shear:3"], **QUICK)
    # Replay: the same generator state draws the same crops, then the same transforms.
    s = Settings.resolve(tiny, transforms=TRANSFORMS, **QUICK)
    run = acc.Accentuator(tiny, TINY_SPEC, img[None], [acc.logit(1)], s)
    state = run.generator.get_state()
    run.step()
    g = torch.Generator().manual_seed(0)
    g.set_state(state)
    crops = sample_crops(run.canvas, run.input_size, 2, s.crop_range, *s.noise, generator=g)
    warp = sample_transforms(s.transforms, 2, run.input_size, generator=g)
    assert torch.equal(crops.boxes, run.last_crops.boxes)
    assert torch.equal(warp.matrices, run.last_transforms.matrices)
    assert sorted(warp.values) == ["angle", "scale", "shift"]


def test_without_transforms_the_generator_draws_what_it_always_drew(tiny, img):
    s = Settings.resolve(tiny, **QUICK)
    run = acc.Accentuator(tiny, TINY_SPEC, img[None], [acc.logit(1)], s)
    state = run.generator.get_state()
    run.step()
    g = torch.Generator().manual_seed(0)
    g.set_state(state)
    sample_crops(run.canvas, run.input_size, 2, s.crop_range, *s.noise, generator=g)
    assert torch.equal(g.get_state(), run.generator.get_state()) and run.last_transforms is None


def test_transforms_map_the_gradient_back_to_the_canvas(tiny, img):
    # One objective-only step (step 0): the opacity is |d objective / d canvas| through the crops
    # and the warp, as autograd gives it through grid_sample (apply_crops) and apply_transforms.
    s = Settings.resolve(tiny, transforms=TRANSFORMS, param="pixel", channels_last=False, **QUICK)
    run = acc.Accentuator(tiny, TINY_SPEC, img[None], [acc.logit(1)], s)
    run.step()
    canvas = img[None].clone().requires_grad_(True)
    crops = acc.apply_crops(canvas, run.last_crops, add_noise=False)
    x = apply_transforms(crops, run.last_transforms, run.last_crops.noise)
    value = tiny(x)[:, 1].mean()
    ref = torch.autograd.grad(value, canvas)[0].abs().mean(dim=1)[0]
    assert torch.allclose(run.opacity[0], ref, atol=1e-5 * float(ref.max()), rtol=1e-3)


def test_the_seeds_get_the_same_transforms(tiny, img):
    # With a learning rate that leaves the image at its seed, the regularizer's distance is that of
    # the runs without transforms (the step's own change): it compares the image's warped crops with
    # the seed's crops warped the same way.
    kw = dict(param="pixel", reg_layer="pixel", lr=1e-7, steps=3, crops=2, canvas=48)
    warped_run = acc.accentuate(tiny, img, "banana", transforms=TRANSFORMS, **kw)
    plain_run = acc.accentuate(tiny, img, "banana", **kw)
    near = float(warped_run.history.distance[1:].max())
    assert near < 1.01 * float(plain_run.history.distance[1:].max())
    # The seed's crops not warped alike would be far: the distance of its warped to its plain crops.
    s = Settings.resolve(tiny, transforms=TRANSFORMS, **QUICK)
    run = acc.Accentuator(tiny, TINY_SPEC, img[None], [acc.logit(1)], s)
    run.step()
    unwarped = acc.apply_crops(img[None], run.last_crops)
    warped = apply_transforms(acc.apply_crops(img[None], run.last_crops, add_noise=False), run.last_transforms,
                              run.last_crops.noise)
    assert float(acc.Regularizer.pixel().distance(warped, unwarped, 1, 1)) > 1000 * near


def test_transform_texts_and_an_exact_small_case():
    assert parse_transforms("Rotate:10") == ("rotate:10",)
    with pytest.raises(ValueError, match="given twice"):
        parse_transforms(["jitter:1", "jitter:2"])
    with pytest.raises(ValueError, match="scale:LO,HI with 0 < LO <= HI"):
        parse_transforms(["scale:1.2,0.9"])
    # A 180-degree rotation of a 4 x 4 image is the image flipped both ways, exactly.
    x = torch.arange(16, dtype=torch.float32).view(1, 1, 4, 4)
    p = sample_transforms(["rotate:180"], 1, (4, 4), generator=torch.Generator().manual_seed(0))
    p = type(p)(matrices=torch.tensor([[[-1.0, 0.0, 0.0], [0.0, -1.0, 0.0]]]), values=p.values, size=p.size)
    assert torch.allclose(apply_transforms(x, p), x.flip(-1).flip(-2), atol=1e-6)
    # A shift of one pixel to the right: column j shows column j - 1 (reflected at the border).
    q = sample_transforms(["jitter:1"], 1, (4, 4))
    q = type(q)(matrices=sample_transforms([], 1, (4, 4)).matrices.clone(), values={}, size=(4, 4))
    q.matrices[0, 0, 2] = -2 / 4  # one pixel in normalized units (2 / width), sampling to the left
    assert torch.allclose(apply_transforms(x, q)[0, 0, :, 1:], x[0, 0, :, :3], atol=1e-6)


# -- pairs ------------------------------------------------------------------------------------------
def test_pairs_zip_one_target_per_seed(tiny, img):
    other = img.flip(-1)
    pairs = acc.accentuate(tiny, [img, other], ["apple", "conv2:3"], pairs="zip", **QUICK)
    assert len(pairs) == 2 and all(r.images.shape == (1, 1, 3, 48, 48) for r in pairs)
    assert [repr(r.targets[0]) for r in pairs] == ["Logit(0 'apple')", "Channel(conv2, 3)"]
    alone = acc.accentuate(tiny, other, "conv2:3", **QUICK)
    assert torch.equal(pairs[1].images, alone.images) and torch.equal(pairs[1].masks, alone.masks)
    assert pairs[1].after["value"].shape == (1, 1) and len(pairs[1].history.objective[0, 0]) == 1
    listed = acc.accentuate(tiny, [img, other], ["apple", "conv2:3"], pairs=[(1, 1), (0, 1)], **QUICK)
    assert torch.equal(listed[0].images, alone.images)
    assert torch.equal(listed[1].images, acc.accentuate(tiny, img, "conv2:3", **QUICK).images)
    with pytest.raises(ValueError, match="pairs='zip' pairs seed i with target i; got 2 seed"):
        acc.accentuate(tiny, [img, other], ["apple"], pairs="zip", **QUICK)
    with pytest.raises(ValueError, match=r"pair \(2, 0\) is out of range"):
        acc.accentuate(tiny, [img, other], ["apple"], pairs=[(2, 0)], **QUICK)


def test_result_subset(tiny, img):
    res = acc.accentuate(tiny, [img, img.flip(-1)], ["apple", "banana", "conv2:3"], **QUICK)
    sub = res.subset([1], [2, 0])
    assert sub.images.shape == (1, 2, 3, 48, 48) and torch.equal(sub.images[0, 0], res.images[1, 2])
    assert [repr(t) for t in sub.targets] == ["Channel(conv2, 3)", "Logit(0 'apple')"]
    assert torch.equal(sub.history.objective[:, 0, 1], res.history.objective[:, 1, 0])
    with pytest.raises(IndexError, match="target index 3 is out of range"):
        res.subset([0], [3])


def test_no_deprecated_call_inside_the_library(tiny, img):
    # The library itself uses the new names: nothing it calls warns.
    with warnings.catch_warnings():
        warnings.simplefilter("error", DeprecationWarning)
        acc.least_change(tiny, img, "banana", rounds=1, **QUICK)
    assert TinyNet  # the fixture's class, imported for the spec's model


def test_transforms_on_the_command_line(tmp_path, capsys):
    from PIL import Image

    from accentuate.cli import main

    path = tmp_path / "seed.png"
    Image.new("RGB", (48, 48), (120, 80, 40)).save(path)
    common = [str(path), "-t", "cherry", "--model", "cli_models:tiny", "--steps", "2", "--crops", "2", "--canvas",
              "48", "--frames", "0", "-q"]
    out = tmp_path / "out"
    assert main(["run", *common, "--transforms", "rotate:10", "jitter:2", "--out", str(out)]) == 0
    assert json.loads((out / "run.json").read_text())["settings"]["transforms"] == ["rotate:10", "jitter:2"]
    assert main(["run", *common, "--transforms", "twist:3", "--out", str(tmp_path / "bad")]) == 2
    assert "--transforms: unknown transform 'twist:3'" in capsys.readouterr().err
