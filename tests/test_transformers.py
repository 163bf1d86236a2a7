"""Objectives on transformers: token channels, neurons at patches, attention heads, MLP units,
directions, reference images and CLIP text prompts, on tiny config-built models with fixed
random weights (transformers' own ViT and CLIP classes; no download)."""

from __future__ import annotations

import json

import pytest
import torch
from PIL import Image
from torch import nn

import accentuate as acc
from accentuate.cli import main
from accentuate.clip import Text
from accentuate.errors import TargetError
from accentuate.hooks import INPUT, ModelRunner, capture, input_of
from accentuate.objectives import Head, Like, TokenChannel, parse_target
from accentuate.spec import ModelSpec

transformers = pytest.importorskip("transformers", reason="transformers is not installed (pip install transformers)")

#: Fast settings: few steps and crops on a small canvas, no regularizer (the objectives are under test).
QUICK = dict(steps=6, crops=2, canvas=32, lr=0.1, param="pixel", reg_layer="none", seed=0)

HEADS = 4
PATCH = 8
SIZE = 32  # a 4 x 4 patch grid and one class token: 17 tokens of 32 channels


def hook_count(model: nn.Module) -> int:
    return sum(len(m._forward_hooks) + len(m._forward_pre_hooks) + len(m._backward_hooks)
               for m in model.modules())


def tiny_vit(seed: int = 0) -> nn.Module:
    """A 2-layer ViT (transformers' ViTModel), 32 px input, patch 8, 4 heads of 8 units."""
    torch.manual_seed(seed)
    cfg = transformers.ViTConfig(image_size=SIZE, patch_size=PATCH, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=HEADS, intermediate_size=64)
    model = transformers.ViTModel(cfg).eval()
    model.accentuate_spec = ModelSpec(name="tiny-vit", input_size=(SIZE, SIZE), normalize=None,
                                      output="pooler_output", patch_size=PATCH)
    return model


@pytest.fixture(scope="module")
def vit() -> nn.Module:
    return tiny_vit()


@pytest.fixture(scope="module")
def photo() -> torch.Tensor:
    g = torch.Generator().manual_seed(1)
    return (0.5 + 0.2 * torch.randn(3, 32, 32, generator=g)).clamp(0, 1)


def one_line(e: pytest.ExceptionInfo) -> str:
    msg = str(e.value)
    assert "\n" not in msg
    return msg


# -- capture of module inputs -----------------------------------------------------------------
def test_input_capture_reads_what_enters_the_module_and_hooks_come_off(vit):
    proj = "layers.1.attention.o_proj"
    x = torch.rand(2, 3, SIZE, SIZE)
    with torch.no_grad(), capture(vit, [proj], inputs=[proj]) as cap:
        vit(pixel_values=x)
    assert hook_count(vit) == 0
    inp, out = cap[input_of(proj)], cap[proj]
    assert inp.shape == (2, 17, 32)
    layer = vit.get_submodule(proj)
    assert torch.allclose(layer(inp), out, atol=1e-6)  # the input is what the projection maps to its output
    # A name ending in @input is the same capture.
    with torch.no_grad(), capture(vit, [proj + INPUT]) as cap2:
        vit(pixel_values=x)
    assert torch.equal(cap2[proj + INPUT], inp)


def test_input_hooks_come_off_when_the_model_raises(vit):
    def boom(module, args, output):
        raise RuntimeError("kaboom")

    h = vit.layers[1].register_forward_hook(boom)
    try:
        with pytest.raises(RuntimeError, match="kaboom"), capture(vit, [], inputs=["layers.1.attention.o_proj"]) as cap:
            cap.run(vit, torch.rand(1, 3, SIZE, SIZE))
    finally:
        h.remove()
    assert hook_count(vit) == 0


def test_input_of_a_missing_module_names_the_closest(vit):
    with pytest.raises(acc.LayerError, match=r"layer 'layers.1.attention.o_prj' is not in the model.*o_proj"):
        with capture(vit, [], inputs=["layers.1.attention.o_prj"]):
            pass


# -- heads --------------------------------------------------------------------------------------
def test_head_reads_its_own_slice_of_the_context(vit):
    """Head h's slice is units h*8 .. h*8+7 of the projection's input: zeroing head 2's value
    weights zeroes exactly head 2 (checked on transformers' own attention)."""
    model = tiny_vit()
    proj = "layers.0.attention.o_proj"
    x = torch.rand(1, 3, SIZE, SIZE)
    run = ModelRunner(model, model.accentuate_spec)
    objs = [acc.head(proj, h, model=model) for h in range(HEADS)]
    assert all(o.heads == HEADS for o in objs)
    with torch.no_grad():
        v = model.get_submodule("layers.0.attention.v_proj")
        v.weight[16:24] = 0
        v.bias[16:24] = 0
        acts = run(x, [input_of(proj)])
    lays = run.layouts([input_of(proj)])
    values = [float(o(acts, lays)[0]) for o in objs]
    assert values[2] == pytest.approx(0.0, abs=1e-5)
    assert min(values[:2] + values[3:]) > 1e-3
    # By hand: RMS over the head's units, mean over the 16 patch tokens (the class token left out).
    ctx = acts[input_of(proj)][0, 1:].reshape(16, HEADS, 8)
    assert values[1] == pytest.approx(float(ctx[:, 1].pow(2).mean(-1).sqrt().mean()), rel=1e-4)
    unit = acc.head(proj, 3, unit=5, heads=HEADS)
    assert float(unit(acts, lays)[0]) == pytest.approx(float(ctx[:, 3, 5].mean()), rel=1e-4)
    cls = acc.head(proj, 3, unit=5, heads=HEADS, token=0)
    assert float(cls(acts, lays)[0]) == pytest.approx(float(acts[input_of(proj)][0, 0, 3 * 8 + 5]), rel=1e-4)


def test_head_finds_projection_and_number_of_heads(vit):
    assert acc.head_projection(vit, "layers.1") == "layers.1.attention.o_proj"
    assert acc.head_projection(vit, "layers.1.attention") == "layers.1.attention.o_proj"
    assert acc.heads_of(vit, "layers.1.attention.o_proj") == HEADS
    with pytest.raises(ValueError, match="number of heads of 'a.o_proj' is unknown; pass heads=N"):
        acc.head("a.o_proj", 0)
    with pytest.raises(ValueError, match=r"cannot find one attention output projection under 'layers' \(several"):
        acc.head_projection(vit, "layers")


# -- every objective kind rises ------------------------------------------------------------------
def test_every_token_objective_kind_rises(vit, photo):
    ref = torch.rand(3, 40, 40, generator=torch.Generator().manual_seed(5))
    g = torch.Generator().manual_seed(3)
    objs = {
        "channel over patch tokens": acc.channel("layers.1", 3),
        "channel of the class token": acc.channel("layers.1", 3, token=0),
        "neuron at a patch": acc.neuron("layers.1", 3, 1, 2),
        "head output RMS": acc.head("layers.1", 2, model=vit),
        "head unit": acc.head("layers.1.attention.o_proj", 1, unit=3, model=vit),
        "head on the class token": acc.head("layers.1", 0, unit=1, model=vit, token=0),
        "MLP hidden unit (after the activation)": acc.channel("layers.0.mlp.activation_fn", 5),
        "MLP hidden unit (fc1) at a patch": acc.neuron("layers.1.mlp.fc1", 7, 2, 0),
        "direction over patch tokens": acc.direction("layers.1", torch.randn(32, generator=g)),
        "direction on the class token": acc.direction("layers.1", torch.randn(32, generator=g), "cosine", token=0),
        "like a reference (mean of patches)": acc.like(ref, vit, "layers.0", pool="mean"),
    }
    assert isinstance(objs["channel of the class token"], TokenChannel)
    res = acc.accentuate(vit, photo, list(objs.values()), **QUICK)
    before, after = res.before["value"][0], res.after["value"][0]
    risen = {name: (float(b), float(a)) for name, b, a in zip(objs, before, after)}
    assert all(a > b for b, a in risen.values()), risen


def test_model_state_untouched():
    model = tiny_vit()
    model.train()
    model.layers[0].attention.q_proj.weight.requires_grad_(False)
    flags = {n: p.requires_grad for n, p in model.named_parameters()}
    modes = {n: m.training for n, m in model.named_modules()}
    state = {k: v.clone() for k, v in model.state_dict().items()}
    photo = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    objs = [acc.head("layers.1", 1, model=model), acc.channel("layers.1", 0, token=0),
            acc.like(photo.flip(-1), model)]
    acc.accentuate(model, photo, objs, steps=2, crops=2, canvas=32, seed=0, reg_layer="layers.0")
    assert {n: p.requires_grad for n, p in model.named_parameters()} == flags
    assert {n: m.training for n, m in model.named_modules()} == modes
    assert all(torch.equal(v, model.state_dict()[k]) for k, v in state.items())
    assert hook_count(model) == 0


# -- neurons land on their patch ----------------------------------------------------------------------
def patch_mass(model: nn.Module, obj: acc.Objective) -> torch.Tensor:
    """Share of |d objective / d input| in each patch's pixel box, ``(4, 4)``, on the model input."""
    run = ModelRunner(model, model.accentuate_spec)
    x = torch.rand(1, 3, SIZE, SIZE, generator=torch.Generator().manual_seed(2)).requires_grad_(True)
    acts = run(x, sorted(obj.layers))
    (g,) = torch.autograd.grad(obj(acts, run.layouts(sorted(obj.layers))).sum(), x)
    mass = g.abs().sum(dim=(0, 1)).reshape(4, PATCH, 4, PATCH).sum(dim=(1, 3))
    return mass / mass.sum()


@pytest.mark.parametrize("y, x", [(0, 0), (1, 2), (3, 1)])
def test_neuron_gradient_lands_in_its_patch(vit, y, x):
    # Before the first attention (layer 0's pre-attention layer norm) a token sees only its own
    # patch: all of the input gradient is in that patch's 8 x 8 pixel box.
    mass = patch_mass(vit, acc.neuron("layers.0.layernorm_before", 4, y, x))
    assert float(mass[y, x]) > 0.999
    # After attention every token mixes in the others, yet the residual stream keeps its own
    # patch the largest share.
    late = patch_mass(vit, acc.neuron("layers.1", 4, y, x))
    assert int(late.argmax()) == y * 4 + x and float(late[y, x]) > 0.25


# -- one-line errors naming the valid range ----------------------------------------------------------
@pytest.mark.parametrize("obj, pattern", [
    (Head("layers.1.attention.o_proj", 4, heads=HEADS),
     r"head 4 is out of range for 'layers.1.attention.o_proj', which has 4 heads \(0..3\)"),
    (Head("layers.1.attention.o_proj", 0, 8, heads=HEADS),
     r"unit 8 is out of range for a head of 'layers.1.attention.o_proj', whose heads have 8 units \(0..7\)"),
    (Head("layers.1.attention.o_proj", 0, heads=5), r"has 32 channels, which 5 heads do not divide"),
    (acc.channel("layers.1", 0, token=1),
     r"token 1 is out of range for layer 'layers.1', which has 1 leading token\(s\) \(0..0\)"),
    (acc.channel("embeddings.patch_embeddings", 0, token=0),
     r"layer 'embeddings.patch_embeddings' has no leading \(class/register\) tokens"),
    (acc.neuron("layers.1", 0, 4, 0), r"position \(y=4, x=0\) is outside layer 'layers.1', whose grid is 4 x 4 "
     r"\(y 0..3, x 0..3\)"),
    (acc.channel("layers.1", 32), r"channel 32 is out of range for layer 'layers.1', which has 32 channels \(0..31\)"),
    (acc.direction("layers.1", torch.ones(32), token=2), r"token 2 is out of range"),
])
def test_wrong_head_token_position_one_line_error(vit, photo, obj, pattern):
    with pytest.raises(ValueError, match=pattern) as e:
        acc.accentuate(vit, photo, obj, **{**QUICK, "steps": 1})
    one_line(e)
    assert hook_count(vit) == 0


# -- the command line's target forms -------------------------------------------------------------------
@pytest.mark.parametrize("text, kind, fields", [
    ("layers.1:3", "channel", {"layer": "layers.1", "channel": 3}),
    ("layers.1:3@1,2", "neuron", {"layer": "layers.1", "channel": 3, "y": 1, "x": 2}),
    ("layers.1:3@cls", "token_channel", {"layer": "layers.1", "channel": 3, "token": 0}),
    ("layers.1:3@tok0", "token_channel", {"token": 0}),
    ("layers.1:head=2", "head", {"layer": "layers.1.attention.o_proj", "head": 2, "unit": None, "heads": 4}),
    ("layers.1.attention.o_proj:head=2:5", "head", {"head": 2, "unit": 5}),
    ("layers.0:head=1@cls", "head", {"token": 0}),
    ("layers.0:head=1:0@3,3", "head", {"y": 3, "x": 3, "unit": 0}),
    ("layers.0.mlp.activation_fn:63", "channel", {"channel": 63}),
])
def test_cli_target_forms(vit, text, kind, fields):
    d = parse_target(text, vit).describe()
    assert d["kind"] == kind
    assert {k: d[k] for k in fields} == fields


@pytest.mark.parametrize("text, pattern", [
    ("layers.1:head=4", r"target 'layers.1:head=4': head 4 is out of range .*which has 4 heads \(0..3\)"),
    ("layers.1:head=0:9", r"unit 9 is out of range .*8 units \(0..7\)"),
    ("layers.1:3@tok1", r"token 1 is out of range .*1 leading token\(s\) \(0..0\)"),
    ("layers.1:3@4,0", r"position \(y=4, x=0\) is outside .*\(y 0..3, x 0..3\)"),
    ("layers.1:40", r"channel 40 is out of range .*32 channels \(0..31\)"),
    ("layers.1:head=-1", r"the head must be >= 0"),
    ("layers:head=0", r"cannot find one attention output projection under 'layers'"),
    ("layers.1:3@middle", r"cannot read target 'layers.1:3@middle'; use a class name.*LAYER:head=H"),
])
def test_cli_target_errors_name_the_valid_range(vit, text, pattern):
    with pytest.raises(TargetError, match=pattern) as e:
        parse_target(text, vit)
    one_line(e)


# -- reference images -----------------------------------------------------------------------------------
def cosine_to(model: nn.Module, obj: Like, image: torch.Tensor) -> float:
    run = ModelRunner(model, model.accentuate_spec)
    x = acc.images.resize(image[None], model.accentuate_spec.input_size)
    with torch.no_grad():
        acts = run(x, [obj.layer])
    return float(obj(acts, run.layouts([obj.layer], {obj.layer: tuple(acts[obj.layer].shape)}))[0])


def test_like_raises_cosine_to_its_reference_and_not_to_another(vit, photo, tmp_path):
    g = torch.Generator().manual_seed(7)
    ref_a = torch.rand(3, 32, 32, generator=g)
    ref_b = torch.zeros(3, 32, 32)
    ref_b[0] = torch.linspace(0, 1, 32)[None]  # a red ramp
    path = tmp_path / "ramp.png"
    Image.fromarray((ref_b.permute(1, 2, 0).numpy() * 255).astype("uint8")).save(path)
    like_a = acc.like(ref_a, vit, "layers.0", pool="mean", name="noise")
    like_b = acc.like(str(path), vit, "layers.0", pool="mean")
    assert like_b.name == "ramp.png" and like_b.describe()["label"] == "like ramp.png at layers.0 (mean, cosine)"
    # The reference's feature is the layer's patch mean for that image, as the model sees it.
    assert cosine_to(vit, like_a, ref_a) == pytest.approx(1.0, abs=1e-5)
    res = acc.accentuate(vit, photo, [like_a, like_b], **{**QUICK, "steps": 10})
    toward_a, toward_b = res.images[0, 0], res.images[0, 1]
    assert float(res.after["value"][0, 0]) > float(res.before["value"][0, 0])
    assert float(res.after["value"][0, 1]) > float(res.before["value"][0, 1])
    # Each moved toward its own reference more than the other one did.
    assert cosine_to(vit, like_a, toward_a) > cosine_to(vit, like_a, toward_b)
    assert cosine_to(vit, like_b, toward_b) > cosine_to(vit, like_b, toward_a)
    assert (toward_a - toward_b).abs().mean() > 0.01


def test_like_pools_and_defaults(vit):
    img = torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0))
    assert acc.objectives.default_like_layer(vit) == "layernorm"
    d = acc.like(img, vit)
    assert (d.layer, d.pool, d.measure) == ("layernorm", "cls", "cosine")
    assert acc.like(img, vit, "layers.1.mlp.fc1").reference.shape == (64,)
    assert acc.like(img, vit, "embeddings.patch_embeddings").pool == "mean"  # no class token there
    with pytest.raises(ValueError, match="layer 'embeddings.patch_embeddings' has no leading"):
        acc.like(img, vit, "embeddings.patch_embeddings", pool="cls")
    with pytest.raises(ValueError, match="pool must be 'cls' or 'mean'; got 'max'"):
        acc.like(img, vit, "layers.1", pool="max")
    dot = acc.like(img, vit, "layers.1", measure="dot")
    assert dot.describe()["value_name"] == "dot to reference"


# -- CLIP ----------------------------------------------------------------------------------------------------
def tiny_tokenizer():
    """A CLIP tokenizer built offline: byte-level characters (word-final too) and a few merges."""
    chars = [chr(c) for c in range(ord("a"), ord("z") + 1)]
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for c in chars:
        vocab.setdefault(c, len(vocab))
        vocab.setdefault(c + "</w>", len(vocab))
    merges = ["d o", "do g</w>", "c a", "ca t</w>", "p h", "o t", "ph ot", "phot o</w>"]
    for m in merges:
        vocab.setdefault(m.replace(" ", ""), len(vocab))
    return transformers.CLIPTokenizer(vocab=vocab, merges=[tuple(m.split()) for m in merges])


@pytest.fixture(scope="module")
def clip_dir(tmp_path_factory):
    """A tiny CLIP (random weights, fixed seed) with its tokenizer, saved as save_pretrained does."""
    torch.manual_seed(0)
    tok = tiny_tokenizer()
    cfg = transformers.CLIPConfig(
        text_config=dict(vocab_size=len(tok), hidden_size=32, intermediate_size=64, num_hidden_layers=2,
                         num_attention_heads=4, max_position_embeddings=16, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1),
        vision_config=dict(image_size=SIZE, patch_size=PATCH, hidden_size=32, intermediate_size=64,
                           num_hidden_layers=2, num_attention_heads=4),
        projection_dim=16)
    folder = tmp_path_factory.mktemp("clip")
    transformers.CLIPModel(cfg).eval().save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def test_clip_loads_from_a_saved_folder(clip_dir, tmp_path):
    model = acc.load_model(f"clip:{clip_dir}")
    assert isinstance(model, acc.CLIPImage) and model.tokenizer is not None
    spec = model.accentuate_spec
    assert spec.input_size == (SIZE, SIZE) and spec.patch_size == PATCH and spec.labels is None
    assert spec.reg_layer == "vision_model.encoder.layers.0"  # the block a third of the way (2 // 3 - 1 -> 0)
    names = {r.name: r.layout for r in acc.layers(model)}
    assert str(names["vision_model.encoder.layers.1"]) == "tokens 1+4x4 x32"
    assert not any(n.startswith("text_model") for n in dict(model.named_modules()))  # only the image branch
    out = model(torch.rand(2, 3, SIZE, SIZE))
    assert out.shape == (2, 16)
    with pytest.raises(acc.ModelNameError, match="cannot load CLIP folder .*; give a folder saved with save_pretrained"):
        acc.load_model(f"clip:{tmp_path}")  # a folder without a model (a folder is never looked up online)


def test_clip_text_toward_rises_and_away_falls(clip_dir, photo):
    model = acc.load_model(f"clip:{clip_dir}")
    toward = acc.clip_text("a photo of a dog", model)
    away = acc.clip_text("a photo of a dog", model, away=True)
    assert isinstance(toward, Text) and torch.allclose(toward.embedding, away.embedding)
    ids = model.tokenizer(["a photo of a dog"])["input_ids"][0]
    assert torch.allclose(acc.clip_text(model=model, input_ids=torch.tensor(ids)).embedding, toward.embedding, atol=1e-6)
    cat = acc.clip_text("a cat", model)
    assert not torch.allclose(cat.embedding, toward.embedding)
    res = acc.accentuate(model, photo, [toward, away], **{**QUICK, "steps": 8})
    cos = res.before["value"][0, 0]
    assert float(res.before["value"][0, 1]) == pytest.approx(-float(cos), abs=1e-6)
    assert float(res.after["value"][0, 0]) > float(cos)  # the cosine to the prompt rose
    assert -float(res.after["value"][0, 1]) < float(cos)  # and fell, away from it
    assert away.describe()["label"] == "text 'a photo of a dog' (away)"
    # Moving the wrapper moves the text branch too; the text branch is left in its mode.
    text_model = model._text[0]
    text_model.train()
    model.double()
    assert text_model.embeddings.token_embedding.weight.dtype == torch.float64
    again = acc.clip_text("a photo of a dog", model)
    assert text_model.training and all(m.training for m in text_model.modules())
    assert torch.allclose(again.embedding, toward.embedding, atol=1e-5)
    model.float()
    # Heads and reference images work on CLIP's layers too.
    h = acc.head("vision_model.encoder.layers.1", 2, model=model)
    assert (h.layer, h.heads) == ("vision_model.encoder.layers.1.self_attn.out_proj", 4)
    with pytest.raises(TypeError, match="clip_text needs a CLIP image model"):
        acc.clip_text("a dog", tiny_vit())


def test_cli_text_and_like_targets(clip_dir, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    g = torch.Generator().manual_seed(0)
    for name in ("seed.png", "ref.png"):
        arr = (torch.rand(32, 32, 3, generator=g) * 255).to(torch.uint8).numpy()
        Image.fromarray(arr).save(tmp_path / name)
    common = ["--model", f"clip:{clip_dir}", "--steps", "3", "--crops", "2", "--canvas", "32", "--frames", "0",
              "--quiet", "--reg-layer", "none"]
    code = main(["run", "seed.png", "--text", "a photo of a dog", "--away-from", "a cat", "--like", "ref.png",
                 "--like-layer", "@output", "-t", "vision_model.encoder.layers.1:head=1:2", "--out", "out",
                 *common])
    assert code == 0
    doc = json.loads((tmp_path / "out" / "run.json").read_text())
    kinds = [(t["kind"], t["label"]) for t in doc["targets"]]
    assert kinds == [("head", "vision_model.encoder.layers.1.self_attn.out_proj:head=1:2"),
                     ("like", "like ref.png at @output (mean, cosine)"),
                     ("text", "text 'a photo of a dog'"), ("text", "text 'a cat' (away)")]


@pytest.mark.parametrize("argv, pattern", [
    (["--text", "a dog", "--model", "cli_models:tiny"], r"--text and --away-from need a CLIP model"),
    (["--like", "nope.png"], r"--like 'nope.png': image not found"),
    (["--like-layer", "x"], r"--like-layer and --like-pool apply to --like IMAGE targets"),
    ([], r"no target given"),
])
def test_cli_reference_target_errors(tmp_path, monkeypatch, capsys, argv, pattern):
    monkeypatch.chdir(tmp_path)
    Image.new("RGB", (32, 32), (120, 80, 40)).save(tmp_path / "seed.png")
    code = main(["run", "seed.png", *argv, "--quiet"])
    err = capsys.readouterr().err.strip()
    assert code == 2 and len(err.splitlines()) == 1
    import re

    assert re.search(pattern, err), err


def test_docs_transformer_examples_run(clip_dir, tmp_path, monkeypatch):
    """Every `accentuate run` example of docs/cli.md's transformer section runs (on a tiny CLIP
    saved to a folder in place of the hub model), with few steps."""
    import re
    import shlex
    from pathlib import Path

    text = (Path(__file__).parents[1] / "docs" / "cli.md").read_text()
    section = text.split("## Transformers: token layers, heads, reference images, text", 1)[1].split("\n## ", 1)[0]
    block = re.search(r"```bash\n(.*?)```", section, re.S).group(1)
    commands = [line for line in block.splitlines() if line.startswith("accentuate run")]
    assert len(commands) >= 6
    monkeypatch.chdir(tmp_path)
    g = torch.Generator().manual_seed(0)
    for name in ("cat.jpg", "dog.jpg"):
        Image.fromarray((torch.rand(40, 40, 3, generator=g) * 255).to(torch.uint8).numpy()).save(tmp_path / name)
    fast = ["--steps", "2", "--crops", "2", "--canvas", "32", "--frames", "0", "--quiet"]
    for k, cmd in enumerate(commands):
        argv = shlex.split(cmd.replace("clip:openai/clip-vit-base-patch32", f"clip:{clip_dir}"))[1:]
        assert main([*argv, *fast, "--out", f"run{k}"]) == 0, cmd
        doc = json.loads((tmp_path / f"run{k}" / "run.json").read_text())
        assert doc["status"] == "complete" and len(doc["targets"]) >= 1


def test_register_tokens_on_dinov2_with_registers():
    """DINOv2 with 4 registers: 5 leading tokens (class + registers) before the patch grid."""
    torch.manual_seed(0)
    cfg = transformers.Dinov2WithRegistersConfig(image_size=28, patch_size=7, hidden_size=24, num_hidden_layers=2,
                                                 num_attention_heads=3, mlp_ratio=2, num_register_tokens=4)
    model = transformers.Dinov2WithRegistersModel(cfg).eval()
    model.accentuate_spec = ModelSpec(name="tiny-dinov2-reg", input_size=(28, 28), normalize=None,
                                      output="pooler_output", patch_size=7)
    layer = "encoder.layer.1"
    assert str({r.name: r.layout for r in acc.layers(model)}[layer]) == "tokens 5+4x4 x24"
    reg = parse_target(f"{layer}:3@tok4", model)
    assert reg.describe()["token"] == 4
    h = parse_target(f"{layer}:head=2:7@tok1", model)
    assert (h.layer, h.heads, h.token) == ("encoder.layer.1.attention.o_proj", 3, 1)
    run = ModelRunner(model, model.accentuate_spec)
    x = torch.rand(1, 3, 28, 28)
    names = [layer, input_of(h.layer)]
    acts = run(x, names)
    lays = run.layouts(names)
    assert float(reg(acts, lays)[0]) == pytest.approx(float(acts[layer][0, 4, 3]))
    assert float(h(acts, lays)[0]) == pytest.approx(float(acts[input_of(h.layer)][0, 1, 2 * 8 + 7]))
    with pytest.raises(TargetError, match=r"token 5 is out of range .*5 leading token\(s\) \(0..4\)"):
        parse_target(f"{layer}:3@tok5", model)
    with pytest.raises(TargetError, match=r"head 3 is out of range .*3 heads \(0..2\)"):
        parse_target(f"{layer}:head=3", model)
