"""The paper's analyses, measured: each returns a value with a table, a figure and ``save()``.

- :func:`pathway_similarity`: do accentuations travel through the model like natural
  images of the target class (layer-by-layer correlations of activations, or of the
  per-channel attributions of :func:`channel_attributions`, the paper's circuits)?
  :func:`pathway_study` does it for several classes of natural photos at once, with
  bootstrap intervals.
- :func:`lambda_sweep` and :func:`sensitive_region`: the regularization weight's
  effect, and the range of ``lam`` where it matters.
- :func:`latent_features`: one neuron, channel or direction accentuated in many images.
- :func:`least_change`: the smallest change that still makes the model see the target
  (a per-pair search of the regularization weight).
- :func:`accentuate.concepts` (module :mod:`accentuate.analysis.concepts`; the function is not
  re-exported here, where its name is the module's): the concepts a layer uses across a photo set (NMF / semi-NMF of its
  activations over every patch), each shown on photos and accentuated.
- :func:`cascading_randomization`: the sanity check (randomize the model from the top;
  the explanation must change).

Plots need matplotlib (``pip install accentuate[plot]``); image grids need only Pillow.
"""

from __future__ import annotations

from .attribution import channel_attributions
from .concepts import ConceptAccentuation, Concepts, find_concepts
from .latent import Latent, latent_features
from .leastchange import LeastChange, least_change
from .pathway import Pathway, augmented_views, pathway_similarity
from .pathway_pool import PathwayStudy, pathway_study
from .sanity import Sanity, cascade_order, cascading_randomization, randomize
from .stats import Interval, bootstrap
from .sweep import SensitiveRegion, Sweep, lambda_sweep, sensitive_region

__all__ = [
    "ConceptAccentuation",
    "Concepts",
    "Interval",
    "Latent",
    "LeastChange",
    "Pathway",
    "PathwayStudy",
    "Sanity",
    "SensitiveRegion",
    "Sweep",
    "augmented_views",
    "bootstrap",
    "cascade_order",
    "cascading_randomization",
    "channel_attributions",
    "find_concepts",
    "lambda_sweep",
    "latent_features",
    "least_change",
    "pathway_similarity",
    "pathway_study",
    "randomize",
    "sensitive_region",
]
