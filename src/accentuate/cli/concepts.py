"""``accentuate concepts FOLDER --k K``: the concepts a layer uses across a photo set.

The preamble is every accentuating command's (:class:`~accentuate.cli.command.Command`: options,
output folder, model, settings); then, with the library's pieces that :func:`accentuate.concepts`
uses too (:mod:`accentuate.analysis.concepts`),

1. the layer and ``--k`` are checked (:func:`~accentuate.analysis.concepts.concept_layer`) before
   the photos (the folder's subfolders too) are read, centre-cropped to the square canvas and kept
   only as the model's view of it (:func:`~accentuate.analysis.concepts.read_views`);
2. the layer's activations are factorized (:func:`~accentuate.analysis.concepts.find_concepts`), or,
   with ``--method sae``, encoded by a sparse autoencoder (``--sae``, else one trained here on the
   photos and written to ``OUT/sae``, read back when the same command resumes);
3. each concept is accentuated on its top photos and on photos where it is weak: pairs of an
   ordinary run (:func:`accentuate.runs.execute`: batches, progress, resume, Ctrl-C, torchrun,
   ``run.json``'s ``pairs`` and the per-pair files);
4. once every pair is in the record, each accentuation's coefficients are measured on its
   written picture (:meth:`~accentuate.analysis.concepts.Concepts.add_accentuations`; so a resumed
   pair is measured like a new one), the atlas pictures are drawn and ``run.json`` gets its
   ``concepts`` list and ``factorization``; ``report.html`` shows them.
"""

from __future__ import annotations

import argparse
import sys
import time
from textwrap import fill

from ..analysis.concepts import METHODS, TARGETS, Concepts, Made, concept_layer, find_concepts, read_views
from ..images import load_image, photo_set, square_side
from ..runs import ImageInfo, RunWriter, TargetInfo, execute
from ..runs.distributed import Ranks
from ..sae import CONFIG, SparseAutoencoder, load_sae
from .command import Command, add_run_options, finish, say
from .common import UsageError, add_accentuation_options, add_model_options

__all__ = ["register", "run"]

EXAMPLE = """\
examples:
  accentuate concepts photos/ --k 8 --out runs/concepts
  accentuate concepts photos/ --k 6 --layer blocks.12.depthwise --top 1 --weak 1
  accentuate concepts photos/ --k 8 --model dinov2_vits14_focus --out runs/concepts-vit
  accentuate concepts photos/ --k 10 --top 0 --weak 0          (the factorization only)
  accentuate concepts photos/ --method sae --sae runs/sae-b10 --latents 8   (an SAE's latents)
  accentuate concepts photos/ --method sae --sae runs/sae-b10 --latents 12,40,7

Every photo (the folder's subfolders too) is centre-cropped to a square canvas and seen at
the model's input size. Each position of the layer (a conv map's pixel, a patch token) is a
row of the matrix that is factorized: NMF for a non-negative layer (after ReLU/ReLU6), semi-NMF
(signed concept vectors, mean activation removed) otherwise. Writes concepts.png (all concepts
at a glance), concept-I.png (the atlas of concept I: top patches, heat maps on its top photos,
its accentuations with the coefficient before and after), concept-I.npy (its target vector:
accentuate run PHOTO --target LAYER:concept-I.npy), the usual per-pair files, run.json with a
"concepts" list, and report.html with the concept atlas."""

def register(subparsers: argparse._SubParsersAction) -> None:
    """Add the ``concepts`` subcommand."""
    p = subparsers.add_parser(
        "concepts", help="the concepts a layer uses across a photo set, each accentuated on photos",
        description=fill("Factorize a layer's activations over every patch of a photo set into K concepts "
                         "(CRAFT-style), show each on the photos (top patches, heat maps) with its share of the "
                         "explained variance, and accentuate it on its top photos and on photos where it is weak, "
                         "with its coefficient before and after.", 88),
        epilog=EXAMPLE, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("photos", nargs="+", metavar="FOLDER", help="the photos: folders (with their subfolders) or files")
    p.add_argument("--k", type=int, default=8, metavar="K", help="the number of concepts (default 8)")
    p.add_argument("--layer", metavar="LAYER",
                   help="the layer (default: the model's last spatial pathway layer, e.g. head of "
                        "efficientnet_lite0, layernorm of dinov2_vits14_focus)")
    p.add_argument("--method", choices=METHODS, default="auto",
                   help="auto (default): nmf for a non-negative layer, else semi-nmf; sae: the latents of a "
                        "sparse autoencoder (--sae, else one trained here on the photos, written to OUT/sae)")
    p.add_argument("--sae", metavar="DIR", help="with --method sae: the SAE checkpoint (a folder or weights file; "
                   "`accentuate sae train` writes one); its cfg.json's layer is the default --layer")
    p.add_argument("--latents", type=_latents, metavar="N|U,U,...",
                   help="with --method sae: how many latents to show (picked by their share of the code energy, "
                        "i.e. strength x frequency, among those active in at least 3 photos; default --k), or "
                        "which (a comma-separated list of units)")
    p.add_argument("--max-active", type=float, default=0.2, metavar="F",
                   help="with --method sae and --latents N: leave out latents active at more than this share of "
                        "all positions (dense latents; default 0.2)")
    p.add_argument("--concept-target", choices=TARGETS, default="coefficient",
                   help="what an accentuation raises: the concept's coefficient (default; the least-squares "
                        "coefficient's direction) or the dot product with its concept vector (direction)")
    p.add_argument("--top", type=int, default=2, metavar="N",
                   help="accentuate each concept on its N top photos (default 2)")
    p.add_argument("--weak", type=int, default=2, metavar="N",
                   help="... and on N photos where it is weak (default 2)")
    p.add_argument("--show", type=int, default=6, metavar="N", help="top photos per concept in its atlas (default 6)")
    p.add_argument("--iterations", type=int, default=300, metavar="N",
                   help="most steps of the factorization (default 300)")
    add_model_options(p)
    add_accentuation_options(p)
    add_run_options(p, frames=0)
    p.set_defaults(func=run)


def _latents(text: str) -> int | list[int]:
    parts = [t.strip() for t in text.split(",")]
    if not all(t.isdigit() for t in parts):
        raise argparse.ArgumentTypeError(f"expected a count or a comma-separated list of latent units; got {text!r}")
    return int(parts[0]) if len(parts) == 1 and "," not in text else [int(t) for t in parts]


def _check_options(args: argparse.Namespace) -> None:
    if args.k < 1:
        raise UsageError(f"--k must be at least 1 (the number of concepts); got {args.k}")
    for opt in ("top", "weak"):
        if getattr(args, opt) < 0:
            raise UsageError(f"--{opt} must be >= 0; got {getattr(args, opt)}")
    for opt in ("show", "iterations"):
        if getattr(args, opt) < 1:
            raise UsageError(f"--{opt} must be >= 1; got {getattr(args, opt)}")
    if args.until is not None:
        raise UsageError("--until stops at a class; a concept's target is a direction: leave --until out")
    if args.method != "sae" and (args.sae or args.latents is not None):
        raise UsageError("--sae and --latents are for --method sae")
    if not 0 < args.max_active <= 1:
        raise UsageError(f"--max-active must be in (0, 1]; got {args.max_active}")


def _sae(args: argparse.Namespace, cmd: Command) -> tuple[SparseAutoencoder | None, bool]:
    """The SAE of ``--method sae``: ``--sae``'s checkpoint; else the one an earlier start of the same
    command trained into ``OUT/sae`` (a resumed run reads it back, so that its targets stay the
    same); else ``None`` (train one). The flag says whether to train."""
    if args.method != "sae":
        return None, False
    if args.sae:
        return load_sae(args.sae), False
    if (cmd.out / "sae" / CONFIG).is_file():
        return load_sae(cmd.out / "sae"), False
    if Ranks.from_env().distributed:
        raise UsageError("--method sae without --sae trains an SAE first, which torchrun's ranks would each do; "
                         "train it once (`accentuate sae train FOLDER --out DIR`) and pass --sae DIR")
    return None, True


def run(args: argparse.Namespace) -> int:
    """``accentuate concepts``."""
    started = time.perf_counter()
    _check_options(args)
    if args.preview:
        args.until = None
    photos = photo_set(args.photos)  # before the model loads: a wrong path fails fast
    cmd = Command(args, "concepts")
    cmd.kw.pop("until", None)  # --preview's until is for classes
    model, spec = cmd.model, cmd.spec
    side = square_side(spec, cmd.kw.get("canvas"), "concepts", "--canvas")
    cmd.kw["canvas"] = (side, side)
    settings = cmd.settings()
    sae, train = _sae(args, cmd)
    layer, layout = concept_layer(model, spec, cmd.runner, args.layer, args.k, len(photos), method=args.method,
                                  sae=sae)
    t0 = time.perf_counter()
    views, kept, skipped = read_views(photos, side, spec.input_size, progress=not args.quiet)
    cmd.skipped += skipped
    read_s = time.perf_counter() - t0
    say(args.quiet, f"accentuate: {len(kept)} photo(s) at {layer} ({layout}) of {spec.name}: {args.k} concepts; "
        f"output: {cmd.out}")
    con = find_concepts(model, views, args.k, layer, names=[photos[i][2] for i in kept],
                        sources=[photos[i][0] for i in kept], canvas=side, method=args.method,
                        target=args.concept_target, iterations=args.iterations, spec=spec, progress=not args.quiet,
                        runner=cmd.runner, sae=sae, latents=args.latents, max_active=args.max_active,
                        sae_out=cmd.out / "sae" if train else None)
    con.timings = {"read_s": read_s, **con.timings}
    say(args.quiet, f"accentuate: {con.method} of {views.shape[0]} x {layout.grid[0] * layout.grid[1]} patches x "
        f"{layout.channels} channels explains {100 * con.fraction:.1f} % (relative error {con.relative_error:.3f}, "
        f"{con.iterations} steps) in "
        f"{con.timings.get('factorization_s', con.timings.get('training_s', con.timings.get('encoding_s', 0))):.1f} s")
    chosen = con.pairs(args.top, args.weak, seed=args.seed)
    rows = list(dict.fromkeys(j for j, _, _ in chosen))  # the accentuated photos, in order
    row_of = {j: r for r, j in enumerate(rows)}
    seeds = cmd.images([(str(con.sources[j]), False) for j in rows], settings) if rows else []
    targets = [TargetInfo(f"concept {i}", con.objective(i)) for i in range(con.k)]
    kinds = {(row_of[j], i): kind for j, i, kind in chosen}
    plan = cmd.plan(settings, seeds, targets, pairs=[(row_of[j], i) for j, i, _ in chosen], kind="concepts",
                    extra={"factorization": con.summary()})
    con.config.update({"top": args.top, "weak": args.weak, "show": args.show, "seed": args.seed,
                       "accentuation": settings.to_dict()})

    def atlas(writer: RunWriter) -> None:
        """The coefficients of every recorded accentuation, the pictures and the record's sections."""
        _measure(con, cmd, writer, plan.images, rows, kinds)
        t = time.perf_counter()
        drawn = con.write_pictures(plan.out, progress=not args.quiet)
        con.write_vectors(plan.out)
        con.timings["figures_s"] = time.perf_counter() - t
        con.timings["accentuation_s"] = sum(float(b.get("seconds") or 0) for b in writer.batches())
        con.timings["total_s"] = time.perf_counter() - started
        record = con.record(top=args.show)
        for entry in record:
            entry["atlas"] = f"concept-{entry['index']}.png"
            entry["vector"] = f"concept-{entry['index']}.npy"
        writer.add_output("concepts_overview", drawn[0].name)
        writer.add_sections(concepts=record, factorization=con.summary())

    outcome = execute(plan, before_save=atlas)
    if outcome.lead and not args.quiet and outcome.status != 130:
        print(con.to_markdown())
        print(f"concepts: {plan.out / 'concepts.png'} (overview), {plan.out}/concept-I.png (atlas of concept I)")
        t = con.timings
        print(f"time: reading {t.get('read_s', 0):.1f} s, activations {t.get('activations_s', 0):.1f} s, "
              f"factorization {t.get('factorization_s', 0):.1f} s, accentuations {t.get('accentuation_s', 0):.1f} s, "
              f"measuring {t.get('measure_s', 0):.1f} s, pictures {t.get('figures_s', 0):.1f} s; "
              f"total {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return finish(plan, outcome, pairs=False)


def _measure(con: Concepts, cmd: Command, writer: RunWriter, images: list[ImageInfo], rows: list[int],
             kinds: dict[tuple[int, int], str]) -> None:
    """The accentuations of the record, measured on their written pictures (8-bit, as the user has
    them; a resumed pair like a new one): :meth:`Concepts.add_accentuations`."""
    con.accentuations = []
    made = [Made(concept=int(e["target"]), image=rows[e["seed"]], kind=kinds[(e["seed"], int(e["target"]))],
                 seed=images[e["seed"]].tensor, accentuated=load_image(writer.out / e["files"]["image"]),  # type: ignore[arg-type]
                 value_before=(e.get("before") or {}).get("value"), value_after=(e.get("after") or {}).get("value"),
                 pair=str(e.get("id") or ""))
            for e in writer.entries() if "image" in (e.get("files") or {}) and (writer.out / e["files"]["image"]).exists()]
    con.add_accentuations(cmd.model, made, runner=cmd.runner)
