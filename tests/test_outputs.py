"""Figures, animations and the run record (accentuate.outputs) and explain()."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from conftest import FAST, TINY_SPEC
from PIL import Image

import accentuate as acc
from accentuate.analysis.explain import choose_classes, explain
from accentuate.outputs import animation, figures
from accentuate.runs.record import RunWriter, file_sha256, seed_distances, settings_hash
from accentuate.runs.work import ImageInfo, TargetInfo, WorkList, describe_target, slug


def _luma(rgb: np.ndarray) -> np.ndarray:
    return rgb @ np.array([0.2126, 0.7152, 0.0722])


# -- figures -------------------------------------------------------------------------------

def test_heatmap_runs_dark_to_light() -> None:
    ramp = torch.linspace(0, 1, 64).view(1, 64).expand(8, 64)
    img = np.asarray(figures.heatmap(ramp)).astype(float)
    assert img.shape == (8, 64, 3)
    lum = _luma(img[0])
    assert lum[0] < 10 and lum[-1] > 230
    assert np.all(np.diff(lum) >= -1e-9)  # monotonic: brighter means more opacity


def test_composite_blends_image_over_background() -> None:
    image = torch.rand(3, 10, 12)
    alpha = torch.zeros(10, 12)
    alpha[:, 6:] = 1
    out = np.asarray(figures.composite(image, alpha, background=(255, 255, 255)))
    assert np.all(out[:, :6] == 255)
    expect = (image.permute(1, 2, 0).numpy()[:, 6:] * 255).round()
    assert np.abs(out[:, 6:].astype(float) - expect).max() <= 1


def test_pair_figure_shows_the_four_views(seed_img: torch.Tensor) -> None:
    image = seed_img.flip(-1)
    alpha = torch.zeros(48, 48)
    alpha[10:20, 30:40] = 1
    fig = figures.pair_figure(seed_img, image, alpha, "title", ["line one", "line two"], panel_side=96)
    w, h = fig.size
    assert w == 4 * 96 + 5 * 12 and h > 96 + 2 * 20
    arr = np.asarray(fig).astype(float)
    seed = np.asarray(figures.to_pil(seed_img).resize((96, 96), Image.Resampling.LANCZOS)).astype(float)
    heat = np.asarray(figures.heatmap(alpha).resize((96, 96), Image.Resampling.LANCZOS)).astype(float)

    def found(x: int, want: np.ndarray) -> bool:
        return any(np.abs(arr[y:y + 96, x:x + 96] - want).mean() < 2 for y in range(0, h - 96))

    assert found(12, seed), "the seed is not in the first panel"
    assert found(12 + 3 * (96 + 12), heat), "the heat map is not in the fourth panel"
    assert not found(12 + 96 + 12, seed), "the accentuation panel shows the seed"


def _where(arr: np.ndarray, want: np.ndarray, x: int) -> int | None:
    """The row at which ``want`` (a panel) sits in ``arr`` at column ``x``, if it does."""
    side = want.shape[0]
    for y in range(0, arr.shape[0] - side):
        if np.abs(arr[y:y + side, x:x + side] - want).mean() < 2:
            return y
    return None


def test_pair_figure_without_seed_draws_a_placeholder(seed_img: torch.Tensor) -> None:
    fig = figures.pair_figure(None, seed_img, torch.ones(48, 48), "noise start", [], panel_side=96)
    assert fig.size[0] == 4 * 96 + 5 * 12
    arr = np.asarray(fig).astype(float)
    image = np.asarray(figures.to_pil(seed_img).resize((96, 96), Image.Resampling.LANCZOS)).astype(float)
    top = _where(arr, image, 12 + 96 + 12)
    assert top is not None, "the accentuation is not in the second panel"
    first = arr[top:top + 96, 12:12 + 96]
    assert _where(first, image, 0) is None, "the first panel shows an image, not the placeholder"
    frame = np.concatenate([first[0], first[-1], first[:, 0], first[:, -1]])
    assert np.all(np.abs(frame - 200).max(axis=1) <= 1), "the placeholder has no frame"
    inside = first[4:-4, 4:-4]
    paper = np.all(np.abs(inside - inside[2, 2]) <= 1, axis=-1)
    assert 0.8 < paper.mean() < 1, "the placeholder is not an empty frame with its label"
    assert _luma(inside[~paper]).min() < 160, "the placeholder's label is not written"


def _box(arr: np.ndarray, rgb: tuple[int, int, int]) -> tuple[int, int, int, int] | None:
    """``(left, top, right, bottom)`` of the pixels of colour ``rgb`` in ``arr`` (``None``: none)."""
    ys, xs = np.nonzero(np.all(arr == rgb, axis=-1))
    return (int(xs.min()), int(ys.min()), int(xs.max()) + 1, int(ys.max()) + 1) if len(xs) else None


def test_contact_sheet_puts_each_picture_in_its_row_and_column(seed_img: torch.Tensor) -> None:
    def solid(rgb: tuple[int, int, int]) -> Image.Image:
        return Image.new("RGB", (48, 48), rgb)

    red, blue, green = (250, 0, 0), (0, 0, 250), (0, 250, 0)
    one = figures.contact_sheet([("a", solid(green))], ["t0"], {(0, 0): (solid(red), "rank 2 -> 1")}, cell=64)
    two = figures.contact_sheet([("a", solid(green)), ("b", None)], ["t0", "t1", "t2"],
                                {(0, 0): (solid(red), "x"), (1, 2): (solid(blue), "y")}, cell=64, title="t")
    assert two.size[0] == one.size[0] + 2 * (64 + 12)
    arr = np.asarray(two).astype(int)
    g, r, b = _box(arr, green), _box(arr, red), _box(arr, blue)
    assert g is not None and r is not None and b is not None
    assert (g[2] - g[0], g[3] - g[1]) == (64, 64) == (r[2] - r[0], r[3] - r[1]) == (b[2] - b[0], b[3] - b[1])
    assert r[0] - g[0] == 64 + 12 and r[1] == g[1], "the first target's picture is not beside its seed"
    assert b[0] - g[0] == 3 * (64 + 12) and b[1] > g[3], "the cell (1, 2) is not in row 2, column 3"
    # the cells without a picture are empty frames: no pixel of a picture between red and blue
    assert _box(arr[:, r[2]:b[0]], red) is None and _box(arr[:, r[2]:b[0]], blue) is None


def test_panel_has_one_cell_per_item(seed_img: torch.Tensor) -> None:
    pil = figures.to_pil(seed_img)
    fig = figures.panel((pil, "seed"), [(pil, "a", "p 0.1 -> 0.9"), (pil, "b", "c")], title="t", cell=64)
    assert fig.size[0] >= 3 * (64 + 12) + 12


# -- animation -----------------------------------------------------------------------------

def test_gif_round_trip_keeps_frames_and_timing() -> None:
    rng = np.random.default_rng(0)
    base = rng.integers(0, 255, (30, 40, 3)).astype(np.uint8)
    frames = [Image.fromarray(np.roll(base, k * 3, axis=1)) for k in range(5)]
    data = animation.gif_bytes(frames, frame_ms=100, hold_ms=700)
    gif = Image.open(io.BytesIO(data))
    assert gif.n_frames == 5
    durations, errors = [], []
    for k in range(5):
        gif.seek(k)
        durations.append(gif.info["duration"])
        errors.append(np.abs(np.asarray(gif.convert("RGB")).astype(float) - np.asarray(frames[k])).mean())
    assert durations == [700, 100, 100, 100, 700]
    assert max(errors) < 25  # a 256-colour palette of random colours, dithered


def test_frames_follow_snapshot_steps() -> None:
    snaps = {s: torch.full((1, 2, 3, 20, 30), s * 20, dtype=torch.uint8) for s in (0, 5, 10)}
    out = animation.frames(snaps, 0, 1, total=10, max_side=60)
    assert len(out) == 3 and out[0].size == (60, 40 + 22)
    assert np.asarray(out[2])[5, 5].tolist() == [200, 200, 200]


def test_snapshot_interval_gives_about_n_frames() -> None:
    assert animation.snapshot_interval(100, 25) == 4
    assert animation.snapshot_interval(4, 25) == 1
    assert len(range(0, 101, animation.snapshot_interval(100, 25))) == 26


def test_mp4_reports_why_it_is_unavailable(monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda n, *a: None if n == "imageio_ffmpeg" else real(n, *a))
    reason = animation.mp4_available()
    assert reason is not None and "imageio_ffmpeg" in reason and "accentuate[video]" in reason
    with pytest.raises(RuntimeError, match="cannot write MP4"):
        animation.mp4_bytes([Image.new("RGB", (4, 4))])


# -- the run record ------------------------------------------------------------------------

def test_describe_target_kinds() -> None:
    d = describe_target(acc.logit(1).resolve(acc.imagenet_labels()), "goldfish")
    assert (d["kind"], d["class_index"], d["class_name"], d["label"], d["slug"]) == \
        ("class", 1, "goldfish", "goldfish (1)", "goldfish")
    assert describe_target(acc.channel("blocks.5", 20))["label"] == "blocks.5:20"
    n = describe_target(acc.neuron("blocks.5", 20, 3, 4))
    assert (n["kind"], n["y"], n["x"], n["slug"]) == ("neuron", 3, 4, "blocks.5-c20-y3x4")
    assert describe_target(acc.channel("a", 1) - acc.channel("a", 2))["kind"] == "objective"
    assert slug("tiger cat / lynx?") == "tiger-cat-lynx"


def test_settings_hash_is_canonical() -> None:
    assert settings_hash({"a": 1, "b": [1, 2]}) == settings_hash({"b": [1, 2], "a": 1})
    assert settings_hash({"a": 1}) != settings_hash({"a": 2})


def test_seed_distances(tiny: torch.nn.Module, seed_img: torch.Tensor) -> None:
    from accentuate.images import resize

    res = acc.accentuate(tiny, seed_img, [acc.logit(0), acc.logit(1)], reg_layer="conv2", **FAST)
    d = seed_distances(res)
    images = res.images[0]
    assert float(d["pixel_rmse"][0, 1]) == pytest.approx(
        float((images[1] - res.seeds[0]).pow(2).mean().sqrt()), rel=1e-5)
    # The engine measured the layer distance on the whole images; by hand: per-position L2
    # over channels of the images' conv2 activations against the seed's, averaged.
    with torch.no_grad(), acc.capture(tiny, ["conv2"]) as cap:
        tiny(resize(torch.cat([res.seeds, images]), (32, 32)))
        a = cap["conv2"]
    for j in range(2):
        manual = (a[1 + j] - a[0]).pow(2).sum(0).sqrt().mean()
        assert float(d["reg_layer"][0, j]) == pytest.approx(float(manual), rel=1e-3)
        assert float(manual) > 0
    # A result equal to its seed is at distance 0 in every measure.
    same = acc.accentuate(tiny, seed_img, 0, reg_layer="conv2", **{**FAST, "steps": 1, "lr": 1e-12})
    d0 = seed_distances(same)
    assert float(d0["reg_layer"][0, 0]) == pytest.approx(0, abs=1e-4)
    assert float(d0["ssim"][0, 0]) == pytest.approx(1, abs=1e-4)
    none = acc.accentuate(tiny, seed_img, 0, reg_layer="none", **FAST)
    assert torch.isnan(seed_distances(none)["reg_layer"]).all()


def _writer(tmp_path: Path, tiny: torch.nn.Module, seed_img: torch.Tensor, key: str = "k1",
            targets: int = 2) -> RunWriter:
    info = ImageInfo(path="seed.png", name="seed.png", sha256="abc", size=(48, 48), canvas=(48, 48),
                     tensor=seed_img)
    infos = [TargetInfo("apple", acc.logit(0).resolve(TINY_SPEC.labels)),
             TargetInfo("conv2:1", acc.channel("conv2", 1))][:targets]
    return RunWriter(tmp_path, {"command": "test"}, WorkList([info], infos, key, batch_size=4))


def _verified(w: RunWriter, i: int, j: int) -> bool:
    return w.verified(w.work.pair(i, j))


def test_writer_records_files_with_hashes_and_verifies_them(tmp_path: Path, tiny: torch.nn.Module,
                                                            seed_img: torch.Tensor) -> None:
    res = acc.accentuate(tiny, seed_img, [acc.logit(0), acc.channel("conv2", 1)], snapshots=4, **FAST)
    w = _writer(tmp_path, tiny, seed_img)
    entries = w.write_batch(res, w.work.batches[0], seconds=1.0)
    w.contact_sheet("title")
    w.save("complete")
    doc = json.loads((tmp_path / "run.json").read_text())
    assert doc["status"] == "complete" and len(doc["pairs"]) == 2
    assert [e["status"] for e in entries] == ["complete", "complete"]
    apple = doc["pairs"][0]
    assert apple["after"]["rank"] == int(1 + (res.after["logits"][0, 0] > res.after["logits"][0, 0, 0]).sum())
    assert apple["steps_used"] == FAST["steps"] and apple["files"]["gif"] == "seed__apple.gif"
    for p in doc["pairs"]:
        for kind, name in p["files"].items():
            assert file_sha256(tmp_path / name) == p["sha256"][kind]
    assert not list(tmp_path.glob(".*tmp*"))  # atomic writes leave no temporary files
    # A new writer with the same settings verifies both pairs; a corrupted file fails.
    again = _writer(tmp_path, tiny, seed_img)
    assert _verified(again, 0, 0) and _verified(again, 0, 1)
    (tmp_path / apple["files"]["figure"]).write_bytes(b"x")
    assert not _verified(_writer(tmp_path, tiny, seed_img), 0, 0)
    assert not _verified(_writer(tmp_path, tiny, seed_img, key="other"), 0, 1)


def test_writer_marks_partial_and_failed_pairs(tmp_path: Path, tiny: torch.nn.Module,
                                               seed_img: torch.Tensor) -> None:
    res = acc.accentuate(tiny, seed_img, [acc.logit(0), acc.channel("conv2", 1)], **FAST)
    res.failed[(0, 1)] = "non-finite loss"
    res.interrupted = True
    w = _writer(tmp_path, tiny, seed_img)
    entries = w.write_batch(res, w.work.batches[0], seconds=1.0)
    assert [e["status"] for e in entries] == ["partial", "failed"]
    assert entries[1]["failed"] == "non-finite loss"
    w.save("interrupted")
    again = _writer(tmp_path, tiny, seed_img)
    assert not _verified(again, 0, 0) and not _verified(again, 0, 1)


def test_unreadable_run_json_is_ignored_with_a_warning(tmp_path: Path, tiny: torch.nn.Module,
                                                      seed_img: torch.Tensor) -> None:
    (tmp_path / "run.json").write_text("{ half-written")
    with pytest.warns(UserWarning, match="ignoring unreadable"):
        w = _writer(tmp_path, tiny, seed_img)
    assert not _verified(w, 0, 0)


# -- explain -------------------------------------------------------------------------------

def test_choose_classes_orders_top_label_bottom() -> None:
    probs = torch.tensor([0.05, 0.5, 0.3, 0.1, 0.05 - 1e-3])
    assert choose_classes(probs, top=2) == ([1, 2], ["top-1", "top-2"])
    classes, reasons = choose_classes(probs, top=1, bottom=1, label="date", labels=TINY_SPEC.labels + ("e",))
    assert classes == [1, 3, 4] and reasons == ["top-1", "label, rank 3", "bottom-1"]
    assert choose_classes(probs, top=2, label=2)[1] == ["top-1", "top-2, label"]
    with pytest.raises(ValueError, match="nothing to explain"):
        choose_classes(probs, top=0)
    with pytest.raises(acc.ClassNameError, match="unknown class name"):
        choose_classes(probs, top=1, label="durian", labels=TINY_SPEC.labels + ("e",))


def test_explain_batches_the_top_classes_with_collective_alpha(tiny: torch.nn.Module,
                                                                 seed_img: torch.Tensor) -> None:
    ex = explain(tiny, seed_img, top=2, bottom=1, **FAST)
    with torch.no_grad():
        from accentuate.images import resize

        probs = tiny(resize(seed_img[None], (32, 32))).softmax(-1)[0]
    order = probs.argsort(descending=True).tolist()
    assert ex.classes == order[:2] + [order[-1]]
    assert ex.result.images.shape == (1, 3, 3, 48, 48)
    assert torch.allclose(ex.probs, probs, atol=1e-5)
    assert ex.alpha.shape == (1, 3, 48, 48) and float(ex.alpha.max()) == pytest.approx(1.0)
    assert torch.allclose(ex.alpha, ex.result.alpha(collective=True))
    # Collective: the panel's maximum is 1, not each mask's (relevance compares across the panel).
    maxima = sorted(float(a.max()) for a in ex.alpha[0])
    assert maxima[-1] == pytest.approx(1.0) and maxima[0] < 0.999
    assert torch.equal(ex.result.before["rank"][0], torch.tensor([1, 2, 4]))


def test_mp4_when_a_writer_is_installed(tmp_path: Path) -> None:
    if animation.mp4_available() is not None:
        pytest.skip(animation.mp4_available())
    import imageio.v2 as imageio

    frames = [Image.new("RGB", (41, 30), (20 * k, 100, 200 - 20 * k)) for k in range(4)]
    data = animation.mp4_bytes(frames, fps=8, hold_s=0.25)
    assert data[4:8] == b"ftyp"
    path = tmp_path / "t.mp4"
    path.write_bytes(data)
    got = [np.asarray(f) for f in imageio.get_reader(str(path))]
    assert len(got) == 2 + 2 + 2  # held first (2), the middle two, held last (2)
    assert got[0].shape == (30, 42, 3)  # padded to even sides for H.264
    assert np.abs(got[-1][5, 5].astype(int) - [60, 100, 140]).max() < 12


def test_animation_ends_on_the_result_when_stopped_early(tmp_path: Path, tiny: torch.nn.Module,
                                                         seed_img: torch.Tensor) -> None:
    with torch.no_grad():
        from accentuate.images import resize

        top = int(tiny(resize(seed_img[None], (32, 32))).argmax())
    res = acc.accentuate(tiny, seed_img, [top], until="top1", snapshots=3, **FAST)
    assert res.steps_done == 5 and sorted(res.snapshots) == [0, 3]  # stopped at the first check
    w = _writer(tmp_path, tiny, seed_img, targets=1)
    (entry,) = w.write_batch(res, w.work.batches[0], seconds=1.0)
    gif = Image.open(tmp_path / entry["files"]["gif"])
    assert gif.n_frames == 3
    gif.seek(2)
    last = np.asarray(gif.convert("RGB"))[:320].astype(float)  # the image above the caption strip
    result = np.asarray(figures.fit(figures.to_pil(res.images[0, 0]), (320, 320))).astype(float)
    assert np.abs(last - result).mean() < 8


def test_explain_keeps_a_wide_seed_at_a_small_canvas(tiny: torch.nn.Module, seed_img: torch.Tensor) -> None:
    wide = torch.cat([seed_img, seed_img.flip(-1)], dim=-1)  # 48 x 96
    ex = explain(tiny, wide, top=1, **dict(FAST, canvas=48))  # short side 24 < the 32 px input
    assert ex.result.images.shape[-2:] == (24, 48)
