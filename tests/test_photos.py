"""The photo pool of benchmarks/photos.py: the Qt resource reader on a resource built here, the
README parser, and the real GCompris pool (skipped with a reason where it is absent and apt is not)."""

from __future__ import annotations

import importlib.util
import struct
import sys
import zlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def photos():
    spec = importlib.util.spec_from_file_location("photos_pool", ROOT / "benchmarks" / "photos.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules["photos_pool"] = module
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop("photos_pool", None)


def write_rcc(files: dict[str, tuple[bytes, bool]], version: int = 3) -> bytes:
    """A binary Qt resource with ``files`` (path -> (bytes, zlib-compress?)), laid out as Qt's rcc does:
    the tree breadth first with each directory's children contiguous, a names table, a data table."""
    tree: dict = {}
    for path, value in files.items():
        node = tree
        *dirs, leaf = path.strip("/").split("/")
        for d in dirs:
            node = node.setdefault(d, {})
        node[leaf] = value
    names, name_at = bytearray(), {}
    data = bytearray()
    nodes: list[bytes] = []
    extra = b"\0" * 8 if version >= 2 else b""

    def name_offset(name: str) -> int:
        if name not in name_at:
            name_at[name] = len(names)
            names.extend(struct.pack(">HI", len(name), 0) + name.encode("utf-16-be"))
        return name_at[name]

    # breadth first: (name, subtree or file), assigning each directory's first-child index as it is queued
    queue: list[tuple[str, object]] = [("", tree)]
    next_index = 1
    k = 0
    while k < len(queue):
        name, item = queue[k]
        noff = name_offset(name) if k else 0
        if isinstance(item, dict):
            children = sorted(item.items())
            nodes.append(struct.pack(">IHII", noff, 0x02, len(children), next_index) + extra)
            queue += children
            next_index += len(children)
        else:
            raw, compress = item
            stored = struct.pack(">I", len(raw)) + zlib.compress(raw) if compress else raw
            nodes.append(struct.pack(">IHHHI", noff, 0x01 if compress else 0, 0, 1, len(data)) + extra)
            data.extend(struct.pack(">I", len(stored)) + stored)
        k += 1
    header = 24 if version >= 3 else 20
    data_at = header
    names_at = data_at + len(data)
    tree_at = names_at + len(names)
    head = b"qres" + struct.pack(">IIII", version, tree_at, data_at, names_at)
    if version >= 3:
        head += struct.pack(">I", 0)
    return head + bytes(data) + bytes(names) + b"".join(nodes)


@pytest.mark.parametrize("version", [1, 3])
def test_read_rcc_gives_back_exact_bytes(photos, version):
    payload = bytes(range(256)) * 40
    files = {
        "/top.txt": (b"plain top-level file", False),
        "/a/b/deep.bin": (payload, True),
        "/a/b/empty": (b"", False),
        "/a/c/photo.webp": (b"RIFF\x10\x00\x00\x00WEBPVP8 " + payload[:300], True),
        "/a/\u00e9t\u00e9.txt": ("not ascii: \u00e9".encode(), False),
    }
    got = {e.path: e for e in photos.read_rcc(write_rcc(files, version))}
    assert set(got) == set(files)
    for path, (raw, compress) in files.items():
        assert got[path].data() == raw
        assert bool(got[path].flags & photos.COMPRESSED) == compress
    assert len(got["/a/b/deep.bin"].stored) < len(payload)  # it was stored compressed


def test_read_rcc_errors(photos):
    with pytest.raises(ValueError, match="qres"):
        list(photos.read_rcc(b"PK\x03\x04 not a resource at all"))
    with pytest.raises(ValueError, match="truncated"):
        list(photos.read_rcc(write_rcc({"/x": (b"abc", False)})[:-10]))
    zstd = photos.Entry("/z.webp", photos.COMPRESSED_ZSTD, b"\x28\xb5\x2f\xfd")
    with pytest.raises(ValueError, match="zstd"):
        zstd.data()


def test_parse_readme_and_labels(photos):
    text = ("Copyright: Jane Doe\nSource: https://example.org/a.jpg\nLicense: CC0-1.0\nFiles:\nhammer1.webp\n"
            "hammer2.webp\n\nCopyright: Team, 2020\nLicense: CC-BY-SA 4.0\nFiles:\n*.svg\n")
    readme = photos.parse_readme(text)
    assert readme["hammer2.webp"] == {"author": "Jane Doe", "source": "https://example.org/a.jpg",
                                      "licence": "CC0-1.0"}
    assert photos.licence_of("key.svg", readme)["licence"] == "CC-BY-SA 4.0"
    assert photos.licence_of("other.webp", readme)["licence"] == ""
    assert photos.label_of("screwDriver3") == "screw driver"
    assert photos.label_of("polar_bear") == "polar bear"


def test_fetch_without_apt_says_why(photos, tmp_path, monkeypatch):
    monkeypatch.setattr(photos.shutil, "which", lambda name: None)
    reason = photos.apt_available()
    assert reason is not None and "apt-get" in reason and "\n" not in reason
    with pytest.raises(RuntimeError, match="apt-get and dpkg-deb not found"):
        photos.fetch(tmp_path / "empty-cache")
    assert photos.main(["--cache", str(tmp_path / "empty-cache"), "--manifest", str(tmp_path / "m.csv")]) == 1


@pytest.fixture(scope="module")
def pool(photos):
    """The real pool in the default cache: built there (fetched once) unless apt is unavailable."""
    cache = photos.default_cache()
    if not (cache / "pkg" / photos.RCC_DIR).is_dir() and photos.apt_available():
        pytest.skip(f"the GCompris photo pool is absent from {cache} and {photos.apt_available()}")
    try:
        rows, skipped = photos.build(cache)
    except RuntimeError as e:
        pytest.skip(f"the GCompris photo pool could not be fetched: {e}")
    return cache, rows, skipped


def test_real_pool(photos, pool):
    from PIL import Image

    cache, rows, skipped = pool
    assert skipped == []
    assert len(rows) == 222
    per_folder = {f: sum(r.folder == f for r in rows) for f in photos.PHOTO_FOLDERS}
    assert per_folder["tools"] == 39 and per_folder["fishes"] == 28 and per_folder["world_animals"] == 15
    assert all(r.licence_known and r.author for r in rows), [r.path for r in rows if not r.licence_known]
    for r in rows:
        with Image.open(cache / r.path) as im:
            assert im.format == "WEBP" and min(im.size) >= 100, r.path
    assert photos.read_manifest(cache / "manifest.csv") == rows
    mapped = [r for r in rows if r.imagenet_class]
    assert {f"{r.folder}/{r.name}" for r in mapped} == set(photos.IMAGENET)  # every mapping names a photo
    assert {r.imagenet_class for r in rows if r.name.startswith("hammer")} == {"hammer"}


def test_real_tree_reads_as_labelled(photos, pool):
    import accentuate as acc
    from accentuate.analysis.misclassified import labelled_tree

    cache, rows, _ = pool
    tree = labelled_tree(cache / "imagenet", acc.imagenet_labels())
    assert len(tree) == len(photos.IMAGENET)
    assert sorted(t.label for t in tree) == sorted(int(r.imagenet_index) for r in rows if r.imagenet_index)
