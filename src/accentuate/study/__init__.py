"""The human extrapolation study kit: build a two-alternative forced-choice study of a model's
features (:func:`build`), run it in a browser (``index.html``; ``accentuate study serve``), answer it
with a model (:func:`observe`) and analyze the responses (:func:`analyze`). See docs/study.md."""

from .design import CONDITIONS, Feature, Study, build, feature_values, pick_features
from .observer import observe
from .scoring import StudyAnalysis, analyze

__all__ = ["CONDITIONS", "Feature", "Study", "StudyAnalysis", "analyze", "build", "feature_values", "observe",
           "pick_features"]
