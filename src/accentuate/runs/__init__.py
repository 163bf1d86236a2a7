"""A run: the pairs a command accentuates, how they are executed, and the record they leave.

One home for everything a run is, one idea a module:

- :mod:`~accentuate.runs.work`: the :class:`WorkList` (images, targets, pairs with their keys,
  file stems and batches), built once and read by everything below;
- :mod:`~accentuate.runs.manifest`: a work list written as a file (``run --manifest``);
- :mod:`~accentuate.runs.job`: the :class:`Plan` and the one executor, :func:`execute` (batches,
  resume after a kill, Ctrl-C, torchrun), returning an :class:`Outcome`;
- :mod:`~accentuate.runs.distributed`: one run over several processes started by torchrun;
- :mod:`~accentuate.runs.record`: the :class:`RunWriter` of the per-pair files and ``run.json``,
  with the run's one header (:func:`run_header`) and one settings key (:func:`settings_key`);
- :mod:`~accentuate.runs.history`: one pair's optimization history, compact for ``run.json``;
- :mod:`~accentuate.runs.lossless`: ``result.npz``, the lossless copy of a one-batch run;
- :mod:`~accentuate.runs.saved`: :meth:`Result.save <accentuate.result.Result.save>` and
  :meth:`Result.load <accentuate.result.Result.load>` in the same format;
- :mod:`~accentuate.runs.cache`: an analysis's engine runs kept in a work folder and read back.

Example:
    >>> import accentuate as acc                                               # doctest: +SKIP
    >>> from accentuate import runs                                           # doctest: +SKIP
    >>> model = acc.load_model(); spec = model.accentuate_spec                 # doctest: +SKIP
    >>> settings = acc.Settings.resolve(model, spec, steps=20)               # doctest: +SKIP
    >>> images = runs.load_images([acc.photo("chelsea")], settings.canvas)   # doctest: +SKIP
    >>> targets = [runs.TargetInfo("goldfish", acc.parse_target("goldfish", model))]  # doctest: +SKIP
    >>> outcome = runs.execute(runs.plan(model, spec, settings, images, targets, "out/"))  # doctest: +SKIP
    >>> outcome.status, outcome.entries[0]["after"]["rank"]                   # doctest: +SKIP
"""

from __future__ import annotations

from .job import DEFAULT_BATCH, DEFAULT_FRAMES, Job, Outcome, Plan, execute, load_images, plan
from .record import FORMAT, RunWriter, run_header, settings_key
from .work import Batch, ImageInfo, Pair, TargetInfo, WorkList, recorded_work

__all__ = ["DEFAULT_BATCH", "DEFAULT_FRAMES", "FORMAT", "Batch", "ImageInfo", "Job", "Outcome", "Pair", "Plan",
           "RunWriter", "TargetInfo", "WorkList", "execute", "load_images", "plan", "recorded_work", "run_header",
           "settings_key"]
