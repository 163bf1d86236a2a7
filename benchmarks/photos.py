"""A pool of real, licensed photographs: the ones Debian's ``gcompris-qt-data`` package carries.

GCompris keeps its images inside Qt resource files (``usr/share/gcompris-qt/rcc/*.rcc``); each
image folder has a README with every file's author (``Copyright:``), ``Source:`` and ``License:``.
This script fetches the package with ``apt-get download`` (no install, no root needed), unpacks it
with ``dpkg-deb -x``, reads the ``.rcc`` files with :func:`read_rcc` (standard library only), and
writes into the cache:

- ``photos/<folder>/<name>.webp``: the photographs of the folders listed in :data:`PHOTO_FOLDERS`
  (folders of drawings, paintings and icons are left out; each listed folder was looked at);
- ``manifest.csv``: one row per photo (path, folder, name, label, ImageNet class where one fits,
  author, source, licence; ``licence_known`` is 0 where the README names no licence for the file);
- ``imagenet/<class name>/<folder>-<name>.webp``: symlinks to the photos with an ImageNet class, a
  labelled tree for ``accentuate explain ROOT --misclassified``.

The cache is ``$ACCENTUATE_PHOTOS`` or ``~/.cache/accentuate/gcompris``; ``--cache`` overrides both.
``benchmarks/photos.csv`` holds the same manifest without the cache path (facts, not photos).

    python benchmarks/photos.py                 # fetch (once), extract, write the manifest and tree
    python benchmarks/photos.py --predict       # also the embedded model's top-5 on each mapped photo
"""

from __future__ import annotations

import argparse
import csv
import fnmatch
import os
import re
import shutil
import struct
import subprocess
import sys
import zlib
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

PACKAGE = "gcompris-qt-data"
RCC_DIR = Path("usr/share/gcompris-qt/rcc")

# Qt's resource tree flags (qtbase src/corelib/io/qresource.cpp, src/tools/rcc/rcc.cpp).
COMPRESSED = 0x01
DIRECTORY = 0x02
COMPRESSED_ZSTD = 0x04

# The resource folders whose images are photographs (each looked at; drawings, paintings, maps and
# icons live elsewhere), as "<rcc file stem>:<folder inside the resource>".
PHOTO_FOLDERS = {
    "tools": "categorization:/gcompris/src/activities/categorization/resource/images/tools",
    "renewable": "categorization:/gcompris/src/activities/categorization/resource/images/renewable",
    "fishes": "categorization:/gcompris/src/activities/categorization/resource/images/fishes",
    "monuments": "categorization:/gcompris/src/activities/categorization/resource/images/monuments",
    "household": "categorization:/gcompris/src/activities/categorization/resource/images/others",
    "monuments_egypt": "explore_monuments:/gcompris/src/activities/explore_monuments/resource/egypt",
    "monuments_france": "explore_monuments:/gcompris/src/activities/explore_monuments/resource/france",
    "monuments_germany": "explore_monuments:/gcompris/src/activities/explore_monuments/resource/germany",
    "monuments_india": "explore_monuments:/gcompris/src/activities/explore_monuments/resource/india",
    "monuments_usa": "explore_monuments:/gcompris/src/activities/explore_monuments/resource/usa",
    "monuments_wonders": "explore_monuments:/gcompris/src/activities/explore_monuments/resource/wonders",
    "world_animals": "explore_world_animals:/gcompris/src/activities/explore_world_animals/resource/animals",
    "farm_animals": "explore_farm_animals:/gcompris/src/activities/explore_farm_animals/resource/animals",
    "world_music": "explore_world_music:/gcompris/src/activities/explore_world_music/resource/music",
}
# Each folder's README; the explore_monuments one sits a level up and covers all its subfolders.
README_OF = {k: (v.split(":", 1)[1].rsplit("/", 1)[0] if k.startswith("monuments_") else v.split(":", 1)[1]) + "/README"
             for k, v in PHOTO_FOLDERS.items()}

# Photos with an ImageNet class that fits, "<folder>/<name>" -> class index (checked by looking at the
# photos and at the embedded model's predictions; docs/photos.md gives the per-class accuracy).
IMAGENET: dict[str, int] = {
    **{f"tools/hammer{k}": 587 for k in range(1, 10)},
    **{f"tools/{n}": 784 for n in ("screwDriver", "screwDriver1", "screwDriver2", "screwDriver3")},
    **{f"renewable/dam{k}": 525 for k in range(1, 6)},
    **{f"renewable/solar{k}": 807 for k in range(1, 9)},
    "fishes/fish9": 393,     # common clownfish: anemone fish
    "fishes/fish25": 1,      # goldfish
    "fishes/fish28": 397,    # spotted puffer
    "monuments/arcDeTriomphe": 873, "monuments/brandenburgGate": 873, "monuments/IndiaGate": 873,
    "monuments_germany/brandenburgGate": 873, "monuments_india/gatewayofIndia": 873,
    "monuments/cathedral": 497, "monuments_france/reimsCathedral": 497,
    "monuments_germany/berlinCathedral": 497, "monuments_germany/wormsCathedral": 497,
    "monuments/zimniPalace": 698, "monuments_india/mysorePalace": 698, "monuments_germany/schwerinPalace": 698,
    "monuments_france/palaisdesPapes": 698, "monuments_france/chateaudeChambord": 698,
    "monuments_germany/neuschwansteinCastle": 483, "monuments_france/citedeCarcassonne": 483,
    "monuments_france/chateaudeChenonceau": 483,
    "monuments_india/greatStupa": 832,
    "monuments_usa/navajo": 500,                 # Betatakin cliff dwellings
    "monuments_france/pontduGard": 888,          # the aqueduct: viaduct
    "household/baseball": 429, "household/bucket": 463, "household/cup": 968, "household/pan": 567,
    "household/pillow": 721, "household/plate": 923, "household/volleyball": 890,
    "household/weighingMachine": 778, "household/erasers": 767,
    "world_animals/bison": 347, "world_animals/dragon": 48, "world_animals/hedgehog": 334,
    "world_animals/jaguar": 290, "world_animals/koala": 105,
    "world_animals/kangaroo": 104,               # an eastern grey kangaroo: wallaby
    "world_animals/panda": 388, "world_animals/polar_bear": 296, "world_animals/scarlet_macaw": 88,
    "world_animals/crocodile": 49,               # a saltwater crocodile; the one crocodile class
    "world_animals/lemur": 383,                  # ring-tailed lemurs
    "farm_animals/chicken": 8, "farm_animals/cow": 345, "farm_animals/dog": 235, "farm_animals/pig": 341,
    "farm_animals/sheep": 348,
}


@dataclass(frozen=True)
class Entry:
    """One file of a Qt resource: its path inside the resource, its flags, and its stored bytes."""

    path: str
    flags: int
    stored: bytes

    def data(self) -> bytes:
        """The file's bytes, decompressed.

        Raises:
            ValueError: the entry is zstd-compressed (no GCompris 3.1 entry is) or its zlib data is bad.
        """
        if self.flags & COMPRESSED_ZSTD:
            raise ValueError(f"{self.path}: zstd-compressed resource entries are not supported")
        if self.flags & COMPRESSED:
            size = struct.unpack(">I", self.stored[:4])[0]
            out = zlib.decompress(self.stored[4:])
            if len(out) != size:
                raise ValueError(f"{self.path}: zlib data gives {len(out)} bytes, its header says {size}")
            return out
        return self.stored


def read_rcc(buf: bytes) -> Iterator[Entry]:
    """The files of a binary Qt resource (``rcc --binary`` output), depth first.

    Layout (all integers big-endian): ``b"qres"``, version, tree offset, data offset, names offset
    (and overall flags from version 3). A tree node is 14 bytes (22 from version 2, with an 8-byte
    modification time): name offset (4), flags (2), then for a directory its child count (4) and
    first child index (4), for a file territory (2), language (2) and data offset (4). A name is
    its length in UTF-16 units (2), a hash (4) and the UTF-16BE text; a file's data is its length (4)
    and the bytes, which for a zlib entry are ``qCompress`` output (the uncompressed size (4), then
    a zlib stream). Node 0 is the root directory.

    Args:
        buf: the resource file's bytes.

    Returns:
        An iterator of :class:`Entry` (paths start with ``/``).

    Raises:
        ValueError: ``buf`` is not a Qt resource (no ``qres`` header) or is truncated.
    """
    if len(buf) < 20 or buf[:4] != b"qres":
        raise ValueError("not a Qt binary resource: it does not start with b'qres'")
    version, tree, data, names = struct.unpack(">IIII", buf[4:20])
    node_size = 22 if version >= 2 else 14

    def name(offset: int) -> str:
        (n,) = struct.unpack_from(">H", buf, names + offset)
        return buf[names + offset + 6:names + offset + 6 + 2 * n].decode("utf-16-be")

    def walk(index: int, prefix: str) -> Iterator[Entry]:
        at = tree + index * node_size
        if at + 14 > len(buf):
            raise ValueError(f"truncated Qt resource: tree node {index} lies past the end")
        name_offset, flags = struct.unpack_from(">IH", buf, at)
        path = prefix + "/" + name(name_offset) if index else ""
        if flags & DIRECTORY:
            count, first = struct.unpack_from(">II", buf, at + 6)
            for child in range(first, first + count):
                yield from walk(child, path)
        else:
            (offset,) = struct.unpack_from(">I", buf, at + 10)
            (size,) = struct.unpack_from(">I", buf, data + offset)
            stored = buf[data + offset + 4:data + offset + 4 + size]
            if len(stored) != size:
                raise ValueError(f"truncated Qt resource: {path} needs {size} bytes")
            yield Entry(path, flags, stored)

    yield from walk(0, "")


def parse_readme(text: str) -> dict[str, dict[str, str]]:
    """Author, source and licence per file name (or glob) from a GCompris README.

    A README is blocks separated by blank lines; each holds ``Copyright:``, ``Source:``, ``License:``
    lines and a ``Files:`` line followed by one file name per line.

    Args:
        text: the README.

    Returns:
        ``{file name or glob: {"author", "source", "licence"}}`` (missing fields are ``""``).
    """
    out: dict[str, dict[str, str]] = {}
    for block in re.split(r"\n\s*\n", text.strip()):
        fields = {"author": "", "source": "", "licence": ""}
        files: list[str] = []
        in_files = False
        for line in block.splitlines():
            line = line.strip()
            key, _, value = line.partition(":")
            if not in_files and key in ("Copyright", "Source", "License"):
                fields[{"Copyright": "author", "Source": "source", "License": "licence"}[key]] = value.strip()
            elif line == "Files:":
                in_files = True
            elif in_files and line:
                files.append(line)
        for f in files:
            out[f] = fields
    return out


# File names that a README misspells (the README's name -> the file's), each checked by hand.
README_TYPOS = {"screDriver.webp": "screwDriver.webp", "germany/audaPalatina.webp": "germany/aulaPalatina.webp"}


def licence_of(relpath: str, readme: dict[str, dict[str, str]]) -> dict[str, str]:
    """The README record of ``relpath`` (exact name, then a known misspelling, then globs); empty fields if none."""
    for wrong, right in README_TYPOS.items():
        if relpath == right and wrong in readme:
            return readme[wrong]
    if relpath in readme:
        return readme[relpath]
    for pattern, fields in readme.items():
        if fnmatch.fnmatch(relpath, pattern):
            return fields
    return {"author": "", "source": "", "licence": ""}


def label_of(name: str) -> str:
    """The label a file name gives: ``screwDriver3`` -> ``screw driver``, ``polar_bear`` -> ``polar bear``."""
    words = re.sub(r"(?<=[a-z])(?=[A-Z])", " ", re.sub(r"\d+$", "", name)).replace("_", " ")
    return words.lower().strip()


def default_cache() -> Path:
    """``$ACCENTUATE_PHOTOS`` or ``~/.cache/accentuate/gcompris``."""
    return Path(os.environ.get("ACCENTUATE_PHOTOS") or Path.home() / ".cache" / "accentuate" / "gcompris")


def apt_available() -> str | None:
    """None when ``apt-get`` and ``dpkg-deb`` are on PATH, else a one-line reason."""
    missing = [t for t in ("apt-get", "dpkg-deb") if shutil.which(t) is None]
    return f"{' and '.join(missing)} not found (a Debian/Ubuntu machine fetches {PACKAGE})" if missing else None


def fetch(cache: Path) -> Path:
    """Download and unpack ``gcompris-qt-data`` into ``cache/pkg`` (once); the unpacked root.

    Raises:
        RuntimeError: apt is unavailable or the download fails (with apt's last message).
    """
    root = cache / "pkg"
    if (root / RCC_DIR).is_dir():
        return root
    reason = apt_available()
    if reason:
        raise RuntimeError(reason)
    cache.mkdir(parents=True, exist_ok=True)
    debs = sorted(cache.glob(f"{PACKAGE}_*.deb"))
    if not debs:
        run = subprocess.run(["apt-get", "download", PACKAGE], cwd=cache, capture_output=True, text=True)
        if run.returncode != 0:  # package lists may be missing on a fresh machine
            subprocess.run(["apt-get", "update"], capture_output=True, text=True)
            run = subprocess.run(["apt-get", "download", PACKAGE], cwd=cache, capture_output=True, text=True)
        debs = sorted(cache.glob(f"{PACKAGE}_*.deb"))
        if run.returncode != 0 or not debs:
            last = (run.stderr.strip().splitlines() or ["no message"])[-1]
            raise RuntimeError(f"apt-get download {PACKAGE} failed: {last}")
    tmp = cache / "pkg.partial"
    shutil.rmtree(tmp, ignore_errors=True)
    subprocess.run(["dpkg-deb", "-x", str(debs[-1]), str(tmp)], check=True)
    tmp.rename(root)
    return root


@dataclass(frozen=True)
class Photo:
    """One photograph of the pool and its facts (a manifest row)."""

    path: str
    folder: str
    name: str
    label: str
    imagenet_index: str
    imagenet_class: str
    author: str
    source: str
    licence: str
    licence_known: int


def extract(pkg: Path, cache: Path, labels: list[str]) -> tuple[list[Photo], list[str]]:
    """Write the photos of :data:`PHOTO_FOLDERS` into ``cache/photos``; their rows, and skipped entries."""
    out_dir = cache / "photos"
    photos: list[Photo] = []
    skipped: list[str] = []
    entries: dict[str, dict[str, Entry]] = {}
    for folder, where in PHOTO_FOLDERS.items():
        stem, inner = where.split(":", 1)
        if stem not in entries:
            entries[stem] = {e.path: e for e in read_rcc((pkg / RCC_DIR / f"{stem}.rcc").read_bytes())}
        files = entries[stem]
        readme = parse_readme(files[README_OF[folder]].data().decode("utf-8"))
        sub = inner.rsplit("/", 1)[1] + "/" if folder.startswith("monuments_") else ""
        for path in sorted(p for p in files if p.startswith(inner + "/") and p.count("/") == inner.count("/") + 1):
            if not path.lower().endswith((".webp", ".jpg", ".jpeg", ".png")):
                continue
            try:
                data = files[path].data()
            except ValueError as e:
                skipped.append(str(e))
                continue
            filename = path.rsplit("/", 1)[1]
            name = filename.rsplit(".", 1)[0]
            target = out_dir / folder / filename
            target.parent.mkdir(parents=True, exist_ok=True)
            if not target.exists() or target.read_bytes() != data:
                target.write_bytes(data)
            facts = licence_of(sub + filename, readme)
            idx = IMAGENET.get(f"{folder}/{name}")
            photos.append(Photo(
                path=f"photos/{folder}/{filename}", folder=folder, name=name, label=label_of(name),
                imagenet_index="" if idx is None else str(idx),
                imagenet_class="" if idx is None else labels[idx],
                author=facts["author"], source=facts["source"], licence=facts["licence"] or "unknown",
                licence_known=int(bool(facts["licence"]))))
    return photos, skipped


def write_tree(photos: list[Photo], cache: Path) -> Path:
    """``cache/imagenet/<class name>/<folder>-<file>`` symlinks to the mapped photos; the tree's root."""
    root = cache / "imagenet"
    shutil.rmtree(root, ignore_errors=True)
    for p in photos:
        if p.imagenet_class:
            link = root / p.imagenet_class / f"{p.folder}-{Path(p.path).name}"
            link.parent.mkdir(parents=True, exist_ok=True)
            link.symlink_to(cache / p.path)
    return root


def write_manifest(photos: list[Photo], path: Path) -> None:
    """The rows as CSV (header from :class:`Photo`'s fields)."""
    fields = list(Photo.__dataclass_fields__)
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=fields, lineterminator="\n")
        w.writeheader()
        for p in photos:
            w.writerow({k: getattr(p, k) for k in fields})


def read_manifest(path: Path) -> list[Photo]:
    """The rows :func:`write_manifest` wrote."""
    with open(path, newline="", encoding="utf-8") as f:
        return [Photo(**{**row, "licence_known": int(row["licence_known"])}) for row in csv.DictReader(f)]


def build(cache: Path) -> tuple[list[Photo], list[str]]:
    """Fetch (once), extract, and write ``cache/manifest.csv`` and the labelled tree; the rows and skips."""
    from accentuate import imagenet_labels  # the class names only; no model is loaded

    labels = [n.split(",")[0] for n in imagenet_labels()]
    photos, skipped = extract(fetch(cache), cache, labels)
    write_manifest(photos, cache / "manifest.csv")
    write_tree(photos, cache)
    return photos, skipped


def summary(photos: list[Photo], skipped: list[str]) -> str:
    """Counts per folder, per licence and per ImageNet class, and the photos without a licence."""
    lines = [f"{len(photos)} photos extracted ({len(skipped)} entries skipped)"]
    lines += [f"  skipped: {s}" for s in skipped]
    lines.append("per folder: " + ", ".join(f"{k} {v}" for k, v in Counter(p.folder for p in photos).items()))
    lines.append("per licence: " + ", ".join(f"{k} {v}" for k, v in Counter(p.licence for p in photos).most_common()))
    unknown = [p.path for p in photos if not p.licence_known]
    if unknown:
        lines.append(f"licence unknown (not in the folder's README): {', '.join(unknown)}")
    mapped = Counter(f"{p.imagenet_index} {p.imagenet_class}" for p in photos if p.imagenet_class)
    lines.append(f"ImageNet-mapped: {sum(mapped.values())} photos in {len(mapped)} classes: "
                 + ", ".join(f"{k} x{v}" for k, v in sorted(mapped.items(), key=lambda kv: int(kv[0].split()[0]))))
    return "\n".join(lines)


def predict(photos: list[Photo], cache: Path) -> str:
    """The embedded model's top-5 on each mapped photo, and top-1/top-5 accuracy per class (Markdown tables)."""
    import accentuate as acc
    from accentuate.analysis.misclassified import classify

    model = acc.load_model("efficientnet_lite0")
    labels = [n.split(",")[0] for n in acc.imagenet_labels()]
    mapped = [p for p in photos if p.imagenet_class]
    # as `accentuate explain ROOT --misclassified` sees them: fitted to the default 512-pixel canvas, then
    # the whole canvas resized to the model's input
    seeds = [acc.prepare_seeds(acc.load_image(cache / p.path), 512)[0] for p in mapped]
    probs = classify(model, model.accentuate_spec, seeds)
    top5 = probs.topk(5, dim=1).indices.tolist()
    rows = ["| photo | class | top-5 (model) | top-1 |", "|---|---|---|---|"]
    per: dict[str, list[int]] = {}
    for p, t in zip(mapped, top5):
        want = int(p.imagenet_index)
        hit = 2 if t[0] == want else int(want in t)
        per.setdefault(p.imagenet_class, []).append(hit)
        rows.append(f"| {p.folder}/{p.name} | {p.imagenet_class} | {', '.join(labels[i] for i in t)} | "
                    f"{'yes' if hit == 2 else 'top-5' if hit else 'no'} |")
    rows += ["", "| class | photos | top-1 | top-5 |", "|---|---:|---:|---:|"]
    for cls, hits in sorted(per.items()):
        rows.append(f"| {cls} | {len(hits)} | {sum(h == 2 for h in hits)} | {sum(h >= 1 for h in hits)} |")
    allhits = [h for hits in per.values() for h in hits]
    rows.append(f"| all | {len(allhits)} | {sum(h == 2 for h in allhits)} | {sum(h >= 1 for h in allhits)} |")
    return "\n".join(rows)


def main(argv: list[str] | None = None) -> int:
    """Command line: build the pool, print the summary (and with ``--predict`` the model's table)."""
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--cache", type=Path, default=None, help="cache folder (default: $ACCENTUATE_PHOTOS or "
                    "~/.cache/accentuate/gcompris)")
    ap.add_argument("--manifest", type=Path, default=Path(__file__).with_name("photos.csv"),
                    help="where to copy the manifest in the repository (default: benchmarks/photos.csv)")
    ap.add_argument("--predict", action="store_true", help="print the embedded model's top-5 on each mapped photo")
    args = ap.parse_args(argv)
    cache = (args.cache or default_cache()).expanduser().resolve()
    try:
        photos, skipped = build(cache)
    except RuntimeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    write_manifest(photos, args.manifest)
    print(f"cache: {cache}\nmanifest: {cache / 'manifest.csv'} (and {args.manifest})\n"
          f"labelled tree: {cache / 'imagenet'}")
    print(summary(photos, skipped))
    if args.predict:
        print(predict(photos, cache))
    return 0


if __name__ == "__main__":
    sys.exit(main())
