"""Objectives: small values that know the layers they read and compose with ``+ - *``.

An objective maps captured activations to one value per batch row (per crop).
Layers are ``named_modules()`` dotted paths; the model's output is the pseudo
layer :data:`accentuate.hooks.OUTPUT`. Where a layer's channels and positions are
is its :class:`~accentuate.layout.Layout` (conv ``nchw``, channels-last ``nhwc``,
``tokens`` with leading class/register tokens, ``vector``), given with the
activations: an objective never guesses it from the tensor.

The package, one idea a module:

- :mod:`~accentuate.objectives.base`: :class:`Objective`, the algebra (:class:`Sum`), records
  (:func:`from_record`, :class:`Recorded`, the registry of kinds) and identity;
- :mod:`~accentuate.objectives.basic`: :class:`Logit`; :class:`Channel` (mean over positions, the
  patch tokens of a token layer) and :class:`TokenChannel` (a leading token: the class token, a
  register); :class:`Neuron` (one grid position, a patch of a ViT); :class:`Direction`;
- :mod:`~accentuate.objectives.heads`: :class:`Head` (an attention head's output, read from the
  INPUT of the attention output projection, captured as ``NAME@input``);
- :mod:`~accentuate.objectives.reference`: :class:`Like` (a reference image's pooled feature, see
  :func:`like`);
- :mod:`~accentuate.objectives.latent`: :class:`SAELatent` (a sparse autoencoder's latent, see
  :func:`latent`; ``sae:PATH:UNIT@LAYER`` as a target, :func:`parse_sae_target`).
- :mod:`~accentuate.objectives.function`: :func:`objective`, a function of your own as an objective
  (recorded by its module, qualified name and a hash of its code);
- :mod:`~accentuate.objectives.target`: :func:`parse_target`, the target grammar (``goldfish``,
  ``blocks.5:20@3,4``, ``layers.3:head=2``, ``blocks.5:vector.npy``, ``sae:PATH:UNIT@LAYER``, ...) from
  text to an objective.

The text-prompt kind, :class:`accentuate.clip.Text`, lives with CLIP (:func:`accentuate.clip.clip_text`).
An MLP hidden unit is a channel or neuron of the MLP's hidden layer (``...mlp.activation_fn`` in
transformers' ViT, DINOv2 and CLIP).

An objective also describes itself (:meth:`Objective.describe`: kind, label, layer,
channel, position), which is what records and figures show, and records itself
(:meth:`Objective.to_record`, rebuilt by :func:`from_record`). Adding a kind of objective means
adding one class, in one file: it sets ``record_type`` and defines ``to_fields`` and
``from_fields`` (see :mod:`accentuate.objectives.base`).

Example:
    >>> obj = channel("blocks.5", 20) - 0.5 * logit(1)
    >>> obj
    Channel(blocks.5, 20) - 0.5 * Logit(1)
    >>> sorted(obj.layers)
    ['@output', 'blocks.5']
"""

from __future__ import annotations

from .base import (
    Acts,
    Layouts,
    Objective,
    Recorded,
    Sum,
    constant_like,
    from_record,
    kinds,
    recorded_unit,
    tensor_digest,
    tensor_from_record,
    tensor_record,
)
from .basic import Channel, Direction, Logit, Neuron, TokenChannel, channel, direction, logit, neuron
from .function import Function, objective
from .heads import Head, head, head_projection, heads_of
from .latent import SAELatent, latent
from .reference import Like, default_like_layer, like
from .target import TARGET_FORMS, as_objective, parse_sae_target, parse_target, read_vector

__all__ = [
    "Acts",
    "Channel",
    "Direction",
    "Function",
    "Head",
    "Layouts",
    "Like",
    "Logit",
    "Neuron",
    "Objective",
    "Recorded",
    "SAELatent",
    "Sum",
    "TARGET_FORMS",
    "TokenChannel",
    "as_objective",
    "channel",
    "constant_like",
    "default_like_layer",
    "direction",
    "from_record",
    "head",
    "head_projection",
    "heads_of",
    "kinds",
    "latent",
    "like",
    "logit",
    "neuron",
    "objective",
    "parse_sae_target",
    "parse_target",
    "read_vector",
    "recorded_unit",
    "tensor_digest",
    "tensor_from_record",
    "tensor_record",
]
