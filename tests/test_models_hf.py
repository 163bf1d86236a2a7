"""Hugging Face image classifiers from a ``save_pretrained`` directory (``hf:/path``), offline.

A small ``ViTForImageClassification`` with fixed random weights and four named
classes, saved with a ``ViTImageProcessor`` whose mean/std are not ImageNet's: the
real offline loading path, without a download.
"""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

import accentuate as acc
from accentuate.errors import ModelError, ModelNameError
from accentuate.images import resize

transformers = pytest.importorskip("transformers")
from accentuate.models.huggingface import hf_spec, is_local  # noqa: E402

LABELS = ("apple", "boat", "cat", "dog")
MEAN, STD = (0.5, 0.4, 0.3), (0.2, 0.25, 0.3)


def _vit_config(**kw) -> transformers.ViTConfig:
    base = dict(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2, num_attention_heads=2,
                intermediate_size=64, num_labels=4, id2label=dict(enumerate(LABELS)),
                label2id={v: i for i, v in enumerate(LABELS)},
                initializer_range=0.2)  # wider than the default 0.02, so the random classes differ clearly
    base.update(kw)
    return transformers.ViTConfig(**base)


@pytest.fixture(scope="module")
def saved(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A folder with a tiny ViT classifier and its image processor, as save_pretrained writes them."""
    path = tmp_path_factory.mktemp("vit_classifier")
    torch.manual_seed(0)
    model = transformers.ViTForImageClassification(_vit_config())
    model.save_pretrained(path)
    transformers.ViTImageProcessor(size={"height": 32, "width": 32}, image_mean=list(MEAN),
                                   image_std=list(STD)).save_pretrained(path)
    return path


@pytest.fixture
def vit(saved: Path) -> torch.nn.Module:
    return acc.load_model(f"hf:{saved}")


def test_spec_comes_from_the_saved_processor_and_config(vit, saved):
    spec = vit.accentuate_spec
    assert spec.name == f"hf:{saved}"
    assert spec.input_size == (32, 32)
    assert spec.normalize is not None and not callable(spec.normalize)
    assert spec.normalize[0] == pytest.approx(MEAN) and spec.normalize[1] == pytest.approx(STD)
    assert spec.labels == LABELS and spec.output == "logits" and spec.patch_size == 8
    assert not vit.training and next(vit.parameters()).dtype == torch.float32


def _block(i: int) -> str:
    """The name of ViT block ``i`` (``vit.layers.i`` in transformers 5, ``vit.encoder.layer.i`` in 4)."""
    names = dict(transformers.ViTForImageClassification(_vit_config()).named_modules())
    return next(n for n in (f"vit.layers.{i}", f"vit.encoder.layer.{i}") if n in names)


def test_layers_at_the_configs_image_size(vit):
    rows = {r.name: r for r in acc.layers(vit)}
    for i in range(2):
        assert str(rows[_block(i)].layout) == "tokens 1+4x4 x32"
        assert str(rows[_block(i) + ".mlp.fc1"].layout if _block(i) + ".mlp.fc1" in rows
                   else rows[_block(i) + ".intermediate"].layout) == "tokens 1+4x4 x64"
    assert str(rows["vit.embeddings.patch_embeddings.projection"].layout) == "nchw 32x4x4"
    assert str(rows["classifier"].layout) == "vector 4"


def test_a_class_logit_rises_to_top1_and_the_model_is_untouched(vit):
    g = torch.Generator().manual_seed(0)
    y, x = torch.meshgrid(torch.linspace(0, 1, 48), torch.linspace(0, 1, 48), indexing="ij")
    seed = torch.stack([0.5 + 0.3 * torch.sin(7 * x), 0.5 + 0.3 * torch.cos(5 * y), 0.3 + 0.4 * x * y])
    seed = (seed + 0.05 * torch.rand(seed.shape, generator=g)).clamp(0, 1)
    spec = vit.accentuate_spec
    with torch.no_grad():
        start = spec.forward(vit, resize(seed[None], spec.input_size))[0]
    target = int(start.argmin())  # the class the seed is least like
    before = {k: v.clone() for k, v in vit.state_dict().items()}
    res = acc.accentuate(vit, seed, LABELS[target], steps=15, crops=4, canvas=48, lr=0.05, seed=0)
    assert int(res.before["rank"][0, 0]) == 4
    assert res.after["value"][0, 0] > res.before["value"][0, 0]
    assert int(res.after["rank"][0, 0]) == 1, res.after["logits"][0, 0]
    assert not vit.training and all(p.requires_grad for p in vit.parameters())
    assert all(torch.equal(before[k], v) for k, v in vit.state_dict().items())


def test_cli_layers_reads_a_directory(saved, capsys):
    from accentuate.cli import main

    block = _block(1)
    assert main(["layers", "--model", f"hf:{saved}", "--grep", block, "--depth", str(block.count(".") + 1)]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[0].endswith("(input 1 x 3 x 32 x 32)")
    assert lines[1].split()[0] == block and lines[1].endswith("tokens 1+4x4 x32")


def test_bad_directories_are_one_line_errors(tmp_path):
    with pytest.raises(ModelNameError, match="no such directory; give a folder written by save_pretrained"):
        acc.load_model(f"hf:{tmp_path / 'missing'}")
    with pytest.raises(ModelNameError, match="has no config.json"):
        acc.load_model(f"hf:{tmp_path}")
    base = tmp_path / "base"
    torch.manual_seed(0)
    transformers.ViTModel(_vit_config(), add_pooling_layer=False).save_pretrained(base)
    with pytest.raises(ModelError, match=r"no trained weights for classifier\..*not an image classifier") as e:
        acc.load_model(f"hf:{base}")
    assert "\n" not in str(e.value)


def test_generic_labels_rescaling_and_crop_size():
    # transformers fills id2label with LABEL_i when none is given: those are not class names.
    plain = transformers.ViTConfig(num_labels=3)
    spec = hf_spec("x", plain, SimpleNamespace(size={"height": 40, "width": 48}))
    assert spec.labels is None and spec.input_size == (40, 48)
    # A processor that feeds 0..255 pixels (no rescale): mean/std move to the [0, 1] scale.
    raw = SimpleNamespace(size={"shortest_edge": 256}, crop_size={"height": 224, "width": 224}, do_center_crop=True,
                          do_rescale=False, image_mean=[127.5] * 3, image_std=[127.5] * 3)
    spec = hf_spec("x", plain, raw)
    assert spec.input_size == (224, 224)
    assert spec.normalize[0] == pytest.approx((0.5,) * 3) and spec.normalize[1] == pytest.approx((0.5,) * 3)
    short = SimpleNamespace(size={"shortest_edge": 96}, do_normalize=False)
    spec = hf_spec("x", plain, short)
    assert spec.input_size == (96, 96) and spec.normalize is None
    with pytest.warns(UserWarning, match="has no image processor"):
        spec = hf_spec("x", transformers.ViTConfig(image_size=64), None)
    assert spec.input_size == (64, 64) and spec.normalize == (acc.spec.IMAGENET_MEAN, acc.spec.IMAGENET_STD)


def test_local_names_are_told_from_hub_ids(tmp_path):
    assert is_local(str(tmp_path)) and is_local("./models/vit") and is_local("~/vit")
    assert not is_local("google/vit-base-patch16-224")
