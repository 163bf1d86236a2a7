"""Bad input through the command line, one case at a time: exit status 2, one line naming
the problem and the fix, nothing written; odd files inside a folder are skipped, not fatal;
image modes that need converting are converted and the conversion is said."""

from __future__ import annotations

import io
import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from test_reliability import photo_array, png_header_only

from accentuate.cli import main

FAST = ["--model", "cli_models:tiny", "--steps", "2", "--crops", "2", "--canvas", "48", "--frames", "2"]


def _jpeg_bytes() -> bytes:
    buf = io.BytesIO()
    Image.fromarray(photo_array(200, 200)).save(buf, format="JPEG")
    return buf.getvalue()


def make_bad(kind: str, folder: Path) -> Path:
    """A bad image file (or folder) of the given kind inside ``folder``."""
    if kind == "folder without images":
        p = folder / "notes"
        p.mkdir()
        (p / "readme.txt").write_text("no pictures here")
    elif kind == "empty file":
        p = folder / "empty.jpg"
        p.write_bytes(b"")
    elif kind == "truncated JPEG":
        p = folder / "cut.jpg"
        data = _jpeg_bytes()
        p.write_bytes(data[: len(data) // 2])
    elif kind == "text named .png":
        p = folder / "text.png"
        p.write_text("this is not a picture\n")
    elif kind == "huge image":
        p = folder / "huge.png"
        png_header_only(p, 20000, 20000)
    elif kind == "tiny image":
        p = folder / "tiny.png"
        Image.new("RGB", (3, 3)).save(p)
    else:
        raise AssertionError(kind)
    return p


BAD = {
    "folder without images": "has no images (looked for .jpg",
    "empty file": "is empty (0 bytes)",
    "truncated JPEG": "(truncated or corrupt?)",
    "text named .png": "is not an image file PIL can read",
    "huge image": "refused as a likely decompression bomb",
    "tiny image": "3 x 3 pixels; seeds need at least 8",
}


@pytest.fixture
def work(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.chdir(tmp_path)
    Image.fromarray(photo_array()).save(tmp_path / "good.png")
    return tmp_path


def _one_error_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("accentuate: error: "), err
    assert "Traceback" not in err
    return lines[0]


@pytest.mark.parametrize("kind", list(BAD))
@pytest.mark.parametrize("command", ["run", "explain"])
def test_bad_image_file_exits_2_with_one_line(work: Path, capsys: pytest.CaptureFixture, kind: str,
                                              command: str) -> None:
    bad = make_bad(kind, work)
    if command == "run":
        args = ["run", str(bad.relative_to(work)), "--target", "apple", "--out", "out", *FAST]
    else:
        args = ["explain", str(bad.relative_to(work)), "--top", "1", "--out", "out", *FAST]
    assert main(args) == 2
    line = _one_error_line(capsys.readouterr().err)
    if command == "explain" and kind == "folder without images":
        assert "is a folder, not an image file" in line  # explain takes one image file
    else:
        assert BAD[kind] in line
        assert bad.name in line  # the message names the file
    assert not (work / "out").exists()  # nothing written, no model run


def test_a_named_bad_file_among_good_ones_stops_before_any_work(work: Path, capsys: pytest.CaptureFixture) -> None:
    bad = make_bad("truncated JPEG", work)
    assert main(["run", "good.png", bad.name, "--target", "apple", "--out", "out", *FAST]) == 2
    assert "cut.jpg" in _one_error_line(capsys.readouterr().err)
    assert not (work / "out").exists()


def test_folder_runs_every_image_and_skips_odd_files(work: Path, capsys: pytest.CaptureFixture) -> None:
    photos = work / "photos"
    photos.mkdir()
    for i in range(2):
        Image.fromarray(np.roll(photo_array(), 7 * i, axis=1)).save(photos / f"p{i}.png")
    for kind in ("empty file", "truncated JPEG", "text named .png", "tiny image"):
        make_bad(kind, photos)
    (photos / "notes.txt").write_text("not an image ending: ignored")
    assert main(["run", "photos", "--target", "apple", "banana", "--out", "out", *FAST]) == 0
    err = capsys.readouterr().err
    warned = [line for line in err.splitlines() if line.startswith("accentuate: warning: skipped")]
    assert len(warned) == 4, err
    doc = json.loads((work / "out" / "run.json").read_text())
    assert [im["name"] for im in doc["images"]] == ["p0.png", "p1.png"]  # sorted, odd ones out
    assert doc["counts"]["complete"] == 4 and doc["status"] == "complete"
    skipped = {Path(s["path"]).name: s["error"] for s in doc["skipped_images"]}
    assert set(skipped) == {"cut.jpg", "empty.jpg", "text.png", "tiny.png"}
    assert "is empty" in skipped["empty.jpg"] and "truncated" in skipped["cut.jpg"]
    # Rerunning the same command keeps every finished pair.
    assert main(["run", "photos", "--target", "apple", "banana", "--out", "out", *FAST, "-q"]) == 0
    assert json.loads((work / "out" / "run.json").read_text())["counts"]["resumed"] == 4


def test_folder_of_only_bad_files_exits_2(work: Path, capsys: pytest.CaptureFixture) -> None:
    photos = work / "photos"
    photos.mkdir()
    make_bad("empty file", photos)
    make_bad("text named .png", photos)
    assert main(["run", "photos", "--target", "apple", "--out", "out", *FAST]) == 2
    err = capsys.readouterr().err
    last = err.strip().splitlines()[-1]
    assert last.startswith("accentuate: error: no image could be read; the first error:") and "empty.jpg" in last
    assert not (work / "out").exists()


@pytest.mark.parametrize(
    "mode, said",
    [("L", None), ("P", None), ("CMYK", "converted a CMYK image to RGB"),
     ("RGBA", "composited a RGBA image with transparency onto white"), ("I;16", "16-bit grayscale")],
)
def test_image_modes_are_converted_and_the_conversion_said(work: Path, capsys: pytest.CaptureFixture,
                                                          mode: str, said: str | None) -> None:
    rgb = Image.fromarray(photo_array())
    path = work / ("x.jpg" if mode == "CMYK" else "x.png")
    if mode == "I;16":
        img = Image.fromarray(np.asarray(rgb.convert("L")).astype(np.uint16) * 257)
    elif mode == "RGBA":
        img = rgb.convert("RGBA")
        img.putalpha(128)
    else:
        img = rgb.convert(mode)
    img.save(path)
    assert main(["run", path.name, "--target", "apple", "--out", "out", *FAST]) == 0
    err = capsys.readouterr().err
    warnings_ = [line for line in err.splitlines() if line.startswith("accentuate: warning:")]
    if said is None:
        assert warnings_ == []  # grayscale and palette convert without comment
    else:
        assert len(warnings_) == 1 and said in warnings_[0], err
    doc = json.loads((work / "out" / "run.json").read_text())
    assert doc["counts"]["complete"] == 1
    out = Image.open(work / "out" / doc["pairs"][0]["files"]["image"])
    assert out.mode == "RGB" and out.size == (48, 36)


@pytest.mark.parametrize(
    "args, message",
    [
        (["--target", "unused:0"], "layer 'unused' never runs in the model's forward pass"),
        (["--target", "apple", "--reg-layer", "unused"], "layer 'unused' never runs in the model's forward pass"),
    ],
)
def test_layer_that_never_runs(work: Path, capsys: pytest.CaptureFixture, args: list[str], message: str) -> None:
    fast = [a if a != "cli_models:tiny" else "cli_models:with_unused" for a in FAST]
    assert main(["run", "good.png", *args, "--out", "out", *fast]) == 2
    assert message in _one_error_line(capsys.readouterr().err)
    assert not (work / "out").exists()
