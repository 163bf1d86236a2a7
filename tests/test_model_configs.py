"""A model passed without a spec: what it declares is read before stated defaults are assumed.

Hugging Face models declare ``config.image_size``, ``config.id2label`` and
``config.num_channels``; timm models a ``pretrained_cfg`` dict (``input_size``, ``mean``,
``std``). A forward pass that fails on an assumed input size says to pass ``input_size=``.
"""

from __future__ import annotations

import warnings

import pytest
import torch
from torch import nn

import accentuate as acc
from accentuate.cli import main
from accentuate.errors import ModelError, SpecError
from accentuate.spec import declared, forward_error, resolve_spec, spec_of


class Fixed(nn.Module):
    """A classifier that only takes ``size`` x ``size`` input (a flatten then a linear layer)."""

    def __init__(self, size: int = 32, classes: int = 5) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)
        self.fc = nn.Linear(4 * size * size, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.relu(self.conv(x)).flatten(1))


def fixed32() -> nn.Module:
    """Factory for the command line: a 32 px model that declares nothing."""
    torch.manual_seed(0)
    return Fixed(32).eval()


def timm_like() -> nn.Module:
    """A plain module carrying a ``pretrained_cfg`` dict, as timm models do."""
    torch.manual_seed(0)
    m = Fixed(40, classes=3).eval()
    m.pretrained_cfg = {"input_size": (3, 40, 40), "mean": (0.5, 0.4, 0.3), "std": (0.2, 0.2, 0.2),
                        "label_names": ["red", "green", "blue"], "num_classes": 3}
    return m


def tiny_vit(id2label: dict[int, str] | None = None, num_channels: int = 3) -> nn.Module:
    transformers = pytest.importorskip("transformers")
    torch.manual_seed(0)
    extra = {"id2label": id2label, "label2id": {v: k for k, v in id2label.items()}} if id2label else {}
    cfg = transformers.ViTConfig(image_size=32, patch_size=8, hidden_size=32, num_hidden_layers=2,
                                 num_attention_heads=2, intermediate_size=64, num_labels=3,
                                 num_channels=num_channels, **extra)
    return transformers.ViTForImageClassification(cfg).eval()


# -- Hugging Face ---------------------------------------------------------------------------
def test_layers_of_a_hugging_face_vit_use_its_config_size() -> None:
    vit = tiny_vit({0: "cat", 1: "dog", 2: "bird"})
    rows = {r.name: r for r in acc.layers(vit)}  # tried 224 before, and failed inside the forward
    shapes = {k: r.shape for k, r in rows.items()}
    assert rows["vit.embeddings"].layout == acc.Layout("tokens", 32, (4, 4), 1)
    assert shapes["vit.embeddings.patch_embeddings.projection"] == (1, 32, 4, 4)  # 32 / 8 patches
    assert shapes["vit.embeddings"] == (1, 17, 32)  # 16 patches + the class token
    with pytest.raises(ModelError, match=r"Input image size \(224\*224\) doesn't match"):
        acc.layers(vit, input_size=224)  # a size given by the caller gets no hint
    assert "input_size=" not in str(pytest.raises(ModelError, acc.layers, vit, input_size=224).value)


def test_hugging_face_config_fills_the_spec_without_warnings() -> None:
    vit = tiny_vit({0: "cat", 1: "dog", 2: "bird"})
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        spec = resolve_spec(vit, normalize=None)
    assert not [str(w.message) for w in rec]
    assert spec.input_size == (32, 32) and spec.labels == ("cat", "dog", "bird")
    assert spec.assumed == () and spec.name == "ViTForImageClassification"
    res = acc.accentuate(vit, torch.rand(3, 32, 32, generator=torch.Generator().manual_seed(0)), "dog",
                         normalize=None, steps=2, crops=2, canvas=32, seed=0)
    assert res.targets[0].class_index == 1 and res.run["input_size"] == [32, 32]
    assert res.after["logits"].shape[-1] == 3


def test_placeholder_labels_are_not_taken_for_class_names() -> None:
    vit = tiny_vit()  # id2label is {0: 'LABEL_0', 1: 'LABEL_1', 2: 'LABEL_2'}
    assert vit.config.id2label[0] == "LABEL_0"
    assert "labels" not in declared(vit) and spec_of(vit).labels is None
    with pytest.raises(acc.ClassNameError, match="has no (labels|class names)"):
        acc.accentuate(vit, torch.rand(3, 32, 32), "LABEL_1", normalize=None, steps=1, crops=1)


def test_declared_channels_other_than_three_need_a_callable_normalize() -> None:
    vit = tiny_vit(num_channels=1)
    with pytest.raises(SpecError, match=r"declares 1 input channels .* pass normalize= a callable"):
        resolve_spec(vit)
    gray = resolve_spec(vit, normalize=lambda x: x.mean(1, keepdim=True))
    assert gray.input_size == (32, 32)


# -- timm -----------------------------------------------------------------------------------
def test_timm_pretrained_cfg_gives_size_normalization_and_labels() -> None:
    m = timm_like()
    with warnings.catch_warnings(record=True) as rec:
        warnings.simplefilter("always")
        spec = resolve_spec(m)
    assert not rec
    assert spec.input_size == (40, 40) and spec.assumed == ()
    assert spec.normalize == ((0.5, 0.4, 0.3), (0.2, 0.2, 0.2)) and spec.labels == ("red", "green", "blue")
    x = torch.full((1, 3, 4, 4), 0.5)
    assert torch.allclose(spec.preprocess(x)[0, :, 0, 0], torch.tensor([0.0, 0.5, 1.0]))
    assert {r.name: r.shape for r in acc.layers(m)}["conv"] == (1, 4, 40, 40)
    res = acc.accentuate(m, torch.rand(3, 40, 40), "green", steps=2, crops=2, canvas=40, generator=0)
    assert res.targets[0].class_index == 1


def test_given_values_win_over_declared_ones() -> None:
    spec = resolve_spec(timm_like(), input_size=48, normalize=None, labels=["a", "b", "c"])
    assert spec.input_size == (48, 48) and spec.normalize is None and spec.labels == ("a", "b", "c")


# -- assumed size: the error says to pass input_size= ------------------------------------------
def test_forward_failing_on_an_assumed_size_says_to_pass_input_size() -> None:
    model = fixed32()
    assert spec_of(model).assumed == ("input_size", "normalize")
    with pytest.raises(ModelError) as e:
        acc.layers(model)
    msg = str(e.value)
    assert "\n" not in msg and msg.startswith("the model raised RuntimeError in its forward pass: ")
    assert "the input size 224 x 224 was assumed" in msg and "pass input_size=" in msg
    assert isinstance(e.value.__cause__, RuntimeError)  # the model's own error is chained
    with pytest.warns(UserWarning, match="assuming 224 x 224"), pytest.raises(ModelError, match="pass input_size="):
        acc.accentuate(model, torch.rand(3, 32, 32), 1, normalize=None, steps=1, crops=1)
    res = acc.accentuate(model, torch.rand(3, 32, 32), 1, input_size=32, normalize=None, steps=1, crops=1,
                         reg_layer="conv")  # given: works
    assert res.images.shape == (1, 1, 3, 512, 512)
    with pytest.warns(UserWarning, match="no normalize given"):
        assert resolve_spec(model, input_size=32).assumed == ("normalize",)


def test_forward_error_is_one_line_and_hints_only_for_an_assumed_size() -> None:
    err = RuntimeError("mat1 and mat2 shapes cannot be multiplied\nsecond line")
    assumed = spec_of(fixed32())
    given = resolve_spec(fixed32(), input_size=32, normalize=None)
    assert str(forward_error(err, given)) == (
        "the model raised RuntimeError in its forward pass: mat1 and mat2 shapes cannot be multiplied")
    assert str(forward_error(err, assumed)).endswith(
        "(the input size 224 x 224 was assumed, the model declares none; pass input_size= with the size "
        "the model takes, or set model.accentuate_spec)")


def test_cli_layers_of_an_undeclared_model_exit_1_with_the_hint(capsys: pytest.CaptureFixture) -> None:
    assert main(["layers", "--model", "test_model_configs:fixed32"]) == 1
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "pass input_size=" in err[0] and err[0].startswith("accentuate: error: ")


def test_cli_layers_read_a_declared_size(capsys: pytest.CaptureFixture) -> None:
    assert main(["layers", "--model", "test_model_configs:timm_like"]) == 0
    out = capsys.readouterr().out
    assert "input 1 x 3 x 40 x 40" in out and "conv  1 x 4 x 40 x 40" in out


def test_explain_on_an_assumed_size_says_to_pass_input_size() -> None:
    from accentuate.analysis.explain import explain

    with pytest.warns(UserWarning, match="assuming 224 x 224"), pytest.raises(ModelError, match="pass input_size="):
        explain(fixed32(), torch.rand(3, 32, 32), top=1, normalize=None, steps=1, crops=1)


def test_cli_uses_declared_class_names(capsys: pytest.CaptureFixture) -> None:
    assert main(["classes", "gree", "--model", "test_model_configs:timm_like"]) == 0
    assert capsys.readouterr().out.split() == ["1", "green"]
    from accentuate.objectives import parse_target

    assert repr(parse_target("green", timm_like())) == "Logit(1 'green')"


def test_id2label_with_gaps_is_read_by_one_rule_for_both_readers() -> None:
    # spec.declared and hf: models read id2label with spec.declared_labels: gaps drop the names with a warning.
    from accentuate.models.huggingface import hf_spec
    from accentuate.spec import declared_labels

    class Config:
        id2label = {0: "cat", 2: "dog"}
        image_size = 32

    with pytest.warns(UserWarning, match=r"id2label has indices \[0, 2\].*expected 0 \.\. 1.*by index"):
        assert declared_labels(Config.id2label) is None
    with pytest.warns(UserWarning, match="id2label has indices"):
        spec = hf_spec("x", Config(), {"do_normalize": False, "do_rescale": False, "size": 32})
    assert spec.labels is None
    assert declared_labels({"0": "cat", "1": "dog"}) == ("cat", "dog")
    assert declared_labels({0: "LABEL_0", 1: "LABEL_1"}) is None
