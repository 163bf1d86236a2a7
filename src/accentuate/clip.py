"""CLIP: accentuate a photo toward (or away from) a text prompt in the joint embedding.

What accentuate optimizes is CLIP's image branch: :class:`CLIPImage` wraps a Hugging Face
``CLIPModel`` so that its forward takes pixel values and returns the image embedding
``(B, projection_dim)`` (the vision tower's pooled class token through the visual
projection). Its layers keep CLIP's own names (``vision_model.encoder.layers.N...``), so
every objective (channels, heads, :func:`accentuate.like`) works on them too. The text
branch is kept beside it, outside the module tree: a prompt is embedded once, without
autograd, by :func:`clip_text`, whose :class:`Text` objective is the
cosine similarity of the image embedding to the prompt's (its negative with ``away=True``).

Loading (``transformers`` is an optional dependency, imported only here, when asked):

- ``load_clip("openai/clip-vit-base-patch32")`` or ``--model clip:openai/clip-vit-base-patch32``
  fetches from the Hugging Face hub (needs the network once; then its cache);
- ``load_clip("/path/to/dir")`` reads a folder written by ``save_pretrained`` (model, and the
  tokenizer and image processor when saved there): the offline path;
- ``CLIPImage(clip_model, tokenizer)`` wraps a model you already have.

The tokenizer is the one saved with the model (``AutoTokenizer``); without one, pass token
ids to :func:`clip_text` (``input_ids=``).

Example:
    >>> import accentuate as acc                                            # doctest: +SKIP
    >>> model = acc.load_model("clip:openai/clip-vit-base-patch32")         # doctest: +SKIP
    >>> res = acc.accentuate(model, "cat.jpg", acc.clip_text("a photo of a dog", model))  # doctest: +SKIP
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from .errors import ModelNameError
from .hooks import OUTPUT, model_state
from .objectives import (
    Acts,
    Layouts,
    Objective,
    constant_like,
    recorded_unit,
    tensor_digest,
    tensor_from_record,
    tensor_record,
)
from .spec import ModelSpec

__all__ = ["CLIP_MEAN", "CLIP_STD", "CLIPImage", "Text", "clip_text", "load_clip"]

#: The normalization CLIP was trained with (OpenAI's), used when no image processor says otherwise.
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


class Text(Objective):
    """Toward (or away from) a text prompt in a joint image-text embedding (CLIP): the cosine
    similarity of the model's output (the image embedding) to the prompt's embedding.

    ``away=True`` makes the value the negative cosine, so that it rises as the image moves
    away from the prompt. Build it with :func:`accentuate.clip.clip_text`, which embeds the
    prompt once.

    Its record keeps the prompt's (unit) embedding (``embedding``, see
    :func:`~accentuate.objectives.base.tensor_record`), so it is rebuilt without the model; its
    identity adds a hash of the embedding to the ``repr``.

    Example:
        >>> t = Text("a dog", torch.tensor([3.0, 4.0]))
        >>> t.embedding.tolist(), t.to_record()["type"]
        ([0.6000000238418579, 0.800000011920929], 'text')
    """

    record_type = "text"

    def __init__(self, prompt: str, embedding: torch.Tensor, away: bool = False) -> None:
        e = torch.as_tensor(embedding, dtype=torch.float32).detach().flatten()
        if not torch.isfinite(e).all() or float(e.norm()) == 0:
            raise ValueError("the text embedding must be finite and non-zero")
        self.prompt, self.away = str(prompt), bool(away)
        self.embedding = e / e.norm()
        self.layers = frozenset({OUTPUT})

    def validate(self, layouts: Layouts) -> None:
        lay = layouts.get(OUTPUT)
        if lay is not None and (lay.kind != "vector" or lay.channels != self.embedding.numel()):
            raise ValueError(
                f"the model's output has layout {lay}, but the text embedding has {self.embedding.numel()} "
                "entries; use the image branch of the same CLIP model (accentuate.clip.load_clip)"
            )

    def __call__(self, acts: Acts, layouts: Layouts) -> torch.Tensor:
        img = acts[OUTPUT]
        cos = torch.nn.functional.cosine_similarity(img, constant_like(self.embedding, img)[None], dim=1, eps=1e-8)
        return -cos if self.away else cos

    def describe(self) -> dict[str, Any]:
        label = f"text {self.prompt!r}" + (" (away)" if self.away else "")
        return {"kind": "text", "prompt": self.prompt, "away": self.away, "label": label,
                "slug_text": ("away-" if self.away else "text-") + self.prompt,
                "value_name": "negative cosine to text" if self.away else "cosine to text"}

    def to_fields(self) -> dict[str, Any]:
        return {"prompt": self.prompt, "away": self.away, "embedding": tensor_record(self.embedding)}

    @classmethod
    def from_fields(cls, rec: Mapping[str, Any]) -> Text:
        e = tensor_from_record(rec["embedding"])
        out = cls(rec["prompt"], e, bool(rec.get("away", False)))
        out.embedding = recorded_unit(e, out.embedding)
        return out

    def identity(self) -> str:
        return f"{self!r}#{tensor_digest(self.embedding)}"

    def __repr__(self) -> str:
        return f"Text({self.prompt!r}{', away' if self.away else ''})"


def _transformers(what: str) -> Any:
    try:
        return importlib.import_module("transformers")
    except Exception as e:  # ImportError, or a broken install
        raise ModelNameError(
            f"{what} needs transformers ({type(e).__name__}: {e}); `pip install \"accentuate[hf]\"` "
            "(or `pip install transformers`)"
        ) from None


class CLIPImage(nn.Module):
    """The image branch of a Hugging Face ``CLIPModel``: pixel values in, image embeddings out.

    Args:
        clip: a ``transformers.CLIPModel``.
        tokenizer: its tokenizer (for :func:`clip_text` with a prompt string), or ``None``.
        mean, std: the image normalization (default: CLIP's).
        name: the model's name in records.

    Shape:
        forward: ``(B, 3, S, S)`` normalized pixels -> ``(B, projection_dim)``.

    The wrapper's spec (``accentuate_spec``) has CLIP's input size, normalization and patch
    size and no labels; its output is the embedding (a ``vector`` layout). Its regularization
    layer is the block output a third of the way through the vision tower
    (``vision_model.encoder.layers.3`` of 12; a stated choice, not a calibrated one).
    """

    def __init__(self, clip: Any, tokenizer: Any = None, mean: Any = CLIP_MEAN, std: Any = CLIP_STD,
                 name: str = "clip") -> None:
        super().__init__()
        for attr in ("vision_model", "visual_projection", "text_model", "text_projection"):
            if not hasattr(clip, attr):
                raise TypeError(f"CLIPImage wraps a transformers CLIPModel; {type(clip).__name__} has no {attr}")
        self.vision_model = clip.vision_model
        self.visual_projection = clip.visual_projection
        # The text branch stays outside the module tree (its layers are not the image's), in a
        # tuple so that nn.Module does not register it.
        self._text: tuple[Any, Any] = (clip.text_model, clip.text_projection)
        self.tokenizer = tokenizer
        vc = clip.config.vision_config
        size = int(vc.image_size)
        # Regularize the residual stream after the block a third of the way through (layers.3 of
        # 12), as the CNN default sits a third of the way through its blocks; not calibrated.
        reg = f"vision_model.encoder.layers.{max(0, int(vc.num_hidden_layers) // 3 - 1)}"
        self.accentuate_spec = ModelSpec(name=name, input_size=(size, size), normalize=(tuple(mean), tuple(std)),
                                         labels=None, patch_size=int(vc.patch_size), reg_layer=reg)
        self.config = clip.config
        self.eval()

    def _apply(self, fn: Any, recurse: bool = True) -> CLIPImage:
        """``.to()``, ``.cuda()``, ``.double()``, ... move the text branch along with the image branch."""
        super()._apply(fn, recurse)
        for m in self._text:
            m._apply(fn, recurse)
        return self

    def forward(self, pixel_values: torch.Tensor) -> torch.Tensor:
        out = self.vision_model(pixel_values=pixel_values)
        return self.visual_projection(out.pooler_output)

    @torch.no_grad()
    def text_embedding(self, prompt: str | None = None, input_ids: torch.Tensor | None = None) -> torch.Tensor:
        """The text embedding ``(projection_dim,)`` of ``prompt`` (with the tokenizer) or of
        ``input_ids`` (``(L,)`` or ``(1, L)`` token ids), without autograd, in eval mode."""
        text_model, projection = self._text
        device = next(text_model.parameters()).device  # moved with the image branch (see _apply)
        if input_ids is None:
            if prompt is None:
                raise ValueError("give a prompt or input_ids")
            if self.tokenizer is None:
                raise ValueError(
                    "this CLIP model has no tokenizer; load it from a folder or hub name that has one, "
                    "pass tokenizer= to CLIPImage, or give input_ids="
                )
            enc = self.tokenizer([prompt], return_tensors="pt", padding=True, truncation=True)
            input_ids, mask = enc["input_ids"], enc.get("attention_mask")
        else:
            input_ids = torch.as_tensor(input_ids, dtype=torch.long)
            if input_ids.dim() == 1:
                input_ids = input_ids[None]
            if input_ids.dim() != 2 or input_ids.shape[0] != 1:
                raise ValueError(f"input_ids must be (L,) or (1, L) token ids; got shape {tuple(input_ids.shape)}")
            mask = None
        with model_state(text_model), model_state(projection):  # eval mode, flags restored after
            out = text_model(input_ids=input_ids.to(device),
                             attention_mask=None if mask is None else mask.to(device))
            return projection(out.pooler_output)[0].float()


def clip_text(prompt: str | None = None, model: nn.Module | None = None, away: bool = False, *,
              input_ids: torch.Tensor | None = None) -> Text:
    """A target: ``model``'s image embedding toward (``away=False``) or away from a text prompt.

    Like every objective builder it takes what it measures first, then the model
    (``parse_target(text, model)``, ``like(image, model)``); ``clip_text(model, prompt)``, the
    order of before, still works, with a ``DeprecationWarning``.

    Args:
        prompt: the text, e.g. ``"a photo of a dog"`` (tokenized with the model's tokenizer).
        model: a :class:`CLIPImage` (``accentuate.load_model("clip:...")``).
        away: accentuate away from the prompt (the value is then the negative cosine).
        input_ids: token ids instead of a prompt string (for a model without a tokenizer).

    Returns:
        A :class:`Text` objective: the cosine similarity of the image
        embedding to the prompt's embedding (computed once, here).
    """
    if isinstance(prompt, nn.Module):  # clip_text(model, prompt)
        import warnings

        warnings.warn("clip_text(model, prompt) is deprecated; write clip_text(prompt, model) (an objective builder "
                      "takes what it measures, then the model)", DeprecationWarning, stacklevel=2)
        prompt, model = model, prompt  # type: ignore[assignment]
    if not isinstance(model, CLIPImage):
        raise TypeError(
            f"clip_text needs a CLIP image model (accentuate.load_model('clip:NAME_OR_DIR') or "
            f"accentuate.clip.CLIPImage(clip_model, tokenizer)); got {type(model).__name__}"
        )
    if prompt is None and input_ids is None:
        raise ValueError("give a prompt (e.g. 'a photo of a dog') or input_ids")
    emb = model.text_embedding(prompt, input_ids)
    text = prompt if prompt is not None else "ids " + " ".join(str(int(i)) for i in torch.as_tensor(input_ids).flatten())
    return Text(text, emb, away=away)


def load_clip(name: str, device: str | torch.device | None = None) -> CLIPImage:
    """Load a Hugging Face CLIP model as a :class:`CLIPImage`, with its tokenizer and image
    normalization when they are saved with it.

    Args:
        name: a hub name (``openai/clip-vit-base-patch32``; needs the network or the hub cache)
            or a folder written by ``CLIPModel.save_pretrained`` (and ``tokenizer.save_pretrained``).

    Raises:
        ModelNameError: transformers is missing, or the model cannot be loaded (with the reason).
    """
    transformers = _transformers(f"clip:{name}")
    local = os.path.isdir(os.path.expanduser(name))
    path = os.path.expanduser(name) if local else name
    try:
        clip = transformers.CLIPModel.from_pretrained(path, local_files_only=local)
    except (OSError, ValueError) as e:
        where = "folder" if local else "hub model"
        raise ModelNameError(f"cannot load CLIP {where} {name!r} ({str(e).splitlines()[0]}); give a folder "
                             "saved with save_pretrained or a hub name such as openai/clip-vit-base-patch32") from None
    tokenizer = None
    try:
        tokenizer = transformers.AutoTokenizer.from_pretrained(path, local_files_only=local)
    except (OSError, ValueError, TypeError):
        tokenizer = None  # then clip_text needs input_ids
    mean, std = CLIP_MEAN, CLIP_STD
    try:
        proc = transformers.AutoImageProcessor.from_pretrained(path, local_files_only=local)
        mean = tuple(getattr(proc, "image_mean", None) or mean)
        std = tuple(getattr(proc, "image_std", None) or std)
    except (OSError, ValueError, TypeError):
        pass  # no processor saved: CLIP's own normalization
    model = CLIPImage(clip, tokenizer, mean, std, name=f"clip:{name}")
    return model.to(device) if device is not None else model
