"""One settings value: resolved once, validated once, recorded and hashed."""

from __future__ import annotations

import json

import pytest
import torch
from conftest import FAST

import accentuate as acc
from accentuate.params import PARAMS, PixelParam, register_param
from accentuate.settings import Settings


def test_round_trip_and_stable_hash():
    s = Settings(reg_layer="conv2", lam=((0.1,), (0.3,)), steps=12, canvas=(40, 60), until="top2", seed=3)
    d = s.to_dict()
    assert json.loads(json.dumps(d)) == d  # plain JSON
    assert d["reg_layer"] == "conv2" and d["lam"] == [[0.1], [0.3]] and d["canvas"] == [40, 60]
    back = Settings.from_dict(d)
    assert back == s and back.hash() == s.hash()
    assert Settings.from_dict(json.loads(json.dumps(d))).hash() == s.hash()  # through a file
    assert s.replace(steps=13).hash() != s.hash()
    assert Settings(reg_layer="pixel").regularizer == acc.Regularizer.pixel()
    assert str(Settings(reg_layer="blocks.4").regularizer) == "blocks.4"
    assert Settings(until=1).until == "top1" and Settings(until=0.5).until_rule == acc.Until(prob=0.5)


@pytest.mark.parametrize(("kwargs", "message"), [
    (dict(steps=0), "steps must be a positive integer; got 0"),
    (dict(lam=-1), "lam must be a finite number >= 0"),
    (dict(lam=float("nan")), "lam must be a finite number >= 0"),
    (dict(lr=0), "lr must be a positive number"),
    (dict(crops=0), "crops must be a positive integer"),
    (dict(crop_range=(0.5, 0.2)), "crop_range must satisfy 0 < min <= max <= 1"),
    (dict(noise=(0.1, -1)), "noise must be"),
    (dict(param="wavelet"), "unknown parameterization 'wavelet'; choose one of pixel, fourier, phase"),
    (dict(until="sometimes"), "until must be 'topK'"),
    (dict(canvas=0), "canvas must be a positive int or"),
    (dict(autocast="int8"), "autocast must be None, 'bfloat16' or 'float16'"),
    (dict(record_every=0), "record_every must be a positive integer"),
    (dict(reg_layer=""), "reg_layer is empty"),
])
def test_one_validation_with_one_line_errors(kwargs, message):
    with pytest.raises(ValueError, match=message) as e:
        Settings(**kwargs)
    assert "\n" not in str(e.value)


def test_resolve_fills_every_default_once(tiny, monkeypatch):
    calls = []
    real = type(tiny).forward

    def counting(self, x):
        calls.append(1)
        return real(self, x)

    monkeypatch.setattr(type(tiny), "forward", counting)
    spec = acc.resolve_spec(tiny).__class__(**{**acc.resolve_spec(tiny).__dict__, "reg_layer": None,
                                               "defaults": {"lam": 0.3, "steps": 7, "crops": 3}})
    s = Settings.resolve(tiny, spec)
    assert s.lam == 0.3 and s.steps == 7 and s.lr == 0.05 and s.param == "fourier"  # spec, then reference
    assert s.crops == 3 and s.crop_range == Settings().crop_range
    assert str(s.regularizer) == "conv2"  # by the stated rule
    assert len(calls) == 1  # one forward pass finds the rule's layer and checks that it runs
    assert Settings.resolve(tiny, spec, crops=5).crops == 5
    assert Settings.resolve(tiny, spec, seeded=False).regularizer == acc.Regularizer.none()
    # A base and overrides: the overrides win, the rest of the base stays.
    t = Settings.resolve(tiny, spec, s, steps=9, reg_layer="pixel")
    assert t.steps == 9 and t.lam == 0.3 and str(t.regularizer) == "pixel"
    with pytest.raises(TypeError, match=r"unknown setting 'stpes' \(did you mean steps\?\)"):
        Settings.resolve(tiny, spec, stpes=3)
    with pytest.raises(acc.LayerError, match="not in the model"):
        Settings.resolve(tiny, spec, reg_layer="conv9")
    with pytest.raises(ValueError, match="canvas 16 is smaller than the model input 32 x 32"):
        Settings.resolve(tiny, spec, canvas=16)


def test_accentuate_records_the_settings_and_takes_them(tiny, seed_img):
    res = acc.accentuate(tiny, seed_img, 1, **FAST)
    assert isinstance(res.config, Settings) and res.config.resolved
    assert res.config.steps == FAST["steps"] and res.config.seed == FAST["seed"]
    assert res.run["canvas_used"] == [48, 48] and res.run["model"] == "tiny"
    again = acc.accentuate(tiny, seed_img, 1, res.config)  # the same settings, the same pictures
    assert torch.equal(again.images, res.images) and again.config == res.config
    changed = acc.accentuate(tiny, seed_img, 1, res.config, steps=2)
    assert changed.config.steps == 2 and changed.config.crops == FAST["crops"]
    drawn = acc.accentuate(tiny, seed_img, 1, **{**FAST, "seed": None})
    assert isinstance(drawn.config.seed, int)  # a drawn seed is recorded, so the run can be repeated
    with pytest.raises(TypeError, match=r"unknown setting 'lamda' \(did you mean lam\?\)"):
        acc.accentuate(tiny, seed_img, 1, lamda=0.1)


def test_a_new_parameterization_is_one_registered_class(tiny, seed_img):
    @register_param("pixel-test")
    class Pixel2(PixelParam):
        """Pixels, registered under another name (what a user's own class does)."""

    try:
        assert "pixel-test" in PARAMS
        res = acc.accentuate(tiny, seed_img, 1, param="pixel-test", **FAST)
        assert res.config.param == "pixel-test" and res.after["value"][0, 0] > res.before["value"][0, 0]
        # An instance is optimized as given (its batch-first contract: one row per accentuation).
        seeds = acc.prepare_seeds(seed_img, 48)
        inst = Pixel2((2, 3, 48, 48), seed=seeds.repeat(2, 1, 1, 1))
        two = acc.accentuate(tiny, seeds, [1, 2], param=inst, **FAST)
        assert two.config.param == "pixel-test" and two.images.shape == (1, 2, 3, 48, 48)
        assert torch.allclose(inst().detach().view(1, 2, 3, 48, 48), two.images)
        with pytest.raises(ValueError, match=r"param has shape \(2, 3, 48, 48\); this run needs \(1, 3, 48, 48\)"):
            acc.accentuate(tiny, seeds, 1, param=inst, **FAST)

        class Unregistered(PixelParam):
            pass

        with pytest.raises(TypeError, match="not registered; decorate its class with"):
            acc.accentuate(tiny, seeds, 1, param=Unregistered((1, 3, 48, 48), seed=seeds), **FAST)
    finally:
        PARAMS.pop("pixel-test", None)


def test_objectives_describe_themselves():
    labels = acc.imagenet_labels()
    assert acc.logit(1).resolve(labels).describe() == {
        "kind": "class", "class_index": 1, "class_name": "goldfish", "label": "goldfish (1)",
        "slug_text": "goldfish", "value_name": "logit"}
    n = acc.neuron("blocks.5", 20, 3, 4).describe()
    assert (n["kind"], n["layer"], n["channel"], n["y"], n["x"]) == ("neuron", "blocks.5", 20, 3, 4)
    assert acc.channel("blocks.5", 20).describe()["label"] == "blocks.5:20"
    d = acc.direction("blocks.5", [1.0, 2.0], kind="cosine").describe()
    assert d["kind"] == "direction" and d["measure"] == "cosine" and d["channels"] == 2
    assert (acc.channel("a", 1) - acc.channel("a", 2)).describe()["kind"] == "objective"


def test_cli_builds_the_settings_once_and_records_them(tmp_path, seed_img):
    from PIL import Image

    from accentuate.cli import main

    path = tmp_path / "seed.png"
    Image.fromarray((seed_img.permute(1, 2, 0).numpy() * 255).astype("uint8")).save(path)
    out = tmp_path / "o"
    args = ["run", str(path), "-t", "cherry", "--steps", "3", "--crops", "2", "--canvas", "48", "--out", str(out),
            "--frames", "0", "--model", "cli_models:tiny", "-q"]
    assert main(args) == 0
    doc = json.loads((out / "run.json").read_text())
    recorded = {k: v for k, v in doc["settings"].items() if k != "animation_frames"}
    s = Settings.from_dict(recorded)
    assert s.steps == 3 and s.crops == 2 and s.canvas == 48 and s.seed == 0 and str(s.regularizer) == "conv2"
    assert doc["engine_config"]["steps"] == 3  # what the engine ran with is the same value


def test_preview_preset_on_the_command_line(tmp_path, seed_img):
    from PIL import Image

    from accentuate.cli import main
    from accentuate.settings import PRESETS

    path = tmp_path / "seed.png"
    Image.fromarray((seed_img.permute(1, 2, 0).numpy() * 255).astype("uint8")).save(path)
    common = [str(path), "--steps", "4", "--frames", "0", "--model", "cli_models:tiny", "-q", "--preview"]
    out = tmp_path / "cls"
    assert main(["run", *common, "-t", "cherry", "--out", str(out)]) == 0
    s = json.loads((out / "run.json").read_text())["settings"]
    assert (s["canvas"], s["crops"], s["until"], s["check_every"]) == (256, 8, "top1", 2)
    assert (PRESETS["preview"]["canvas"], PRESETS["preview"]["crops"], PRESETS["preview"]["check_every"]) == (256, 8, 2)
    assert PRESETS["preview"]["until"] == "top1 for classes"  # top1 when every target is a class
    # A channel target cannot be judged by top-1: the preview then runs its steps, no error.
    out = tmp_path / "chan"
    assert main(["run", *common, "-t", "conv2:3", "--canvas", "48", "--out", str(out)]) == 0
    s = json.loads((out / "run.json").read_text())["settings"]
    assert s["until"] is None and s["crops"] == 8 and s["canvas"] == 48  # given options win
    # An explicit --until with a channel target is still the user's mistake.
    assert main(["run", *common, "-t", "conv2:3", "--until", "top1", "--out", str(tmp_path / "bad")]) == 2


def test_check_every_on_the_command_line_sets_where_until_is_checked(tmp_path, seed_img):
    from PIL import Image

    from accentuate.cli import main

    path = tmp_path / "seed.png"
    Image.fromarray((seed_img.permute(1, 2, 0).numpy() * 255).astype("uint8")).save(path)
    common = [str(path), "-t", "cherry", "--steps", "9", "--frames", "0", "--model", "cli_models:tiny", "-q",
              "--until", "0.0001"]
    steps = {}
    for every in (2, 4):
        out = tmp_path / f"every{every}"
        assert main(["run", *common, "--check-every", str(every), "--out", str(out)]) == 0
        doc = json.loads((out / "run.json").read_text())
        assert (doc["settings"]["until"], doc["settings"]["check_every"]) == ("p>=0.0001", every)
        steps[every] = doc["pairs"][0]["steps_used"]
    # A probability every class has from the start: the run stops at the first check.
    assert steps == {2: 2, 4: 4}


def test_reference_defaults_are_the_settings_field_defaults() -> None:
    # One place for the reference recipe's numbers: the fields of Settings read them from spec.
    from dataclasses import fields

    from accentuate.settings import SPEC_DEFAULTS
    from accentuate.spec import REFERENCE_DEFAULTS, ModelSpec

    field_default = {f.name: f.default for f in fields(Settings)}
    assert set(REFERENCE_DEFAULTS) == set(SPEC_DEFAULTS)
    for key, value in REFERENCE_DEFAULTS.items():
        assert field_default[key] == value, key
        assert ModelSpec().setting(key) == value, key
    assert ModelSpec(defaults={"crops": 4}).setting("crops") == 4
    assert (Settings().lam, Settings().steps, Settings().crops, Settings().crop_range) == (1.0, 100, 16, (0.05, 0.99))
