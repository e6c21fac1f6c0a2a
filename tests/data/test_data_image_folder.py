"""data=image_folder and data=cifar10_jpeg: the ImageFolder layout from a folder or an archive.

Small layouts the tests write themselves (a few seeded PNG, BMP and JPEG images per class under
tmp_path): every source gives the same arrays, the cache is hit and missed when it should be,
sizes, statistics and fingerprints, and every bad input as one line. The tests on the real
archive (CIFAR-10 as JPEG files, ../shared/data/README.md) read its path from DRSOM_CIFAR10_JPEG
and skip, saying so, where it is unset or missing; they decode it once per session into a cache
under tmp.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import logging
import os
import shutil
import struct
import tarfile
import warnings
import zipfile
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from run_helpers import cli, compose_config, only_run, run_inprocess, summary_of

import drsom.data.image_folder as image_folder_module
from drsom.data import DatasetUnavailable, build_data, load_dataset
from drsom.data.image_folder import channel_stats, image_folder

pytestmark = pytest.mark.usefixtures("one_thread", "no_scheduler_job")

REPO = Path(__file__).resolve().parents[2]
# Code-point order: "Moth" < "ant" < "zebra" (a case-insensitive sort would put "ant" first).
CLASSES = ("Moth", "ant", "zebra")
FORMATS = ("png", "bmp", "jpg")  # the j-th image of a class is FORMATS[j % 3]


def write_layout(
    folder: Path, *, n_train: int = 3, n_test: int = 2, size=(8, 6), seed: int = 0
) -> dict[str, np.ndarray]:
    """train/<class>/<j>.<fmt> and test/<class>/<j>.<fmt> of random (seeded) RGB images of
    ``size`` (width, height); returns the pixels as decoded (PNG and BMP are the pixels written)."""
    rng = np.random.RandomState(seed)
    pixels: dict[str, np.ndarray] = {}
    for split, n in (("train", n_train), ("test", n_test)):
        for cls in CLASSES:
            (folder / split / cls).mkdir(parents=True, exist_ok=True)
            for j in range(n):
                array = rng.randint(0, 256, (size[1], size[0], 3)).astype(np.uint8)
                path = folder / split / cls / f"{j:02d}.{FORMATS[j % 3]}"
                Image.fromarray(array).save(path)
                pixels[f"{split}/{cls}/{path.name}"] = np.asarray(Image.open(path).convert("RGB"))
    return pixels


def pack(folder: Path, dest: Path, top: str | None = None) -> Path:
    """``folder``'s tree as the archive ``dest`` (.tar, .tar.gz or .zip, by its name), folder
    entries included, members in a shuffled (seeded) order, under ``top`` if given; every
    member's mtime is 0, so an archive's size and bytes depend on its content only."""
    paths = sorted(folder.rglob("*"))
    order = np.random.RandomState(1).permutation(len(paths))
    members = [
        (paths[i], "/".join(filter(None, (top, paths[i].relative_to(folder).as_posix()))))
        for i in order
    ]
    if dest.name.endswith(".zip"):
        with zipfile.ZipFile(dest, "w") as archive:
            for path, name in members:
                if path.is_dir():
                    archive.writestr(zipfile.ZipInfo(name + "/", (1980, 1, 1, 0, 0, 0)), b"")
                else:
                    archive.writestr(
                        zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), path.read_bytes()
                    )
    else:
        mode = "w:gz" if dest.name.endswith(".tar.gz") else "w"
        with tarfile.open(dest, mode) as archive:
            for path, name in members:
                info = archive.gettarinfo(str(path), arcname=name)
                info.mtime = 0
                content = io.BytesIO(path.read_bytes()) if path.is_file() else None
                archive.addfile(info, content)
    return dest


def expected(pixels: dict[str, np.ndarray], split: str) -> tuple[np.ndarray, np.ndarray]:
    """The images and labels of ``split`` in the reader's order: by class (sorted), then path."""
    names = sorted(
        (n for n in pixels if n.startswith(f"{split}/")),
        key=lambda n: (CLASSES.index(n.split("/")[1]), n),
    )
    labels = [CLASSES.index(n.split("/")[1]) for n in names]
    return np.stack([pixels[n] for n in names]), np.array(labels)


def one_line(info: pytest.ExceptionInfo) -> str:
    text = str(info.value)
    assert "\n" not in text, text
    return text


@pytest.fixture
def layout(tmp_path) -> tuple[Path, dict[str, np.ndarray]]:
    folder = tmp_path / "images"
    return folder, write_layout(folder)


# --- reading --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("archive", "top"),
    [(None, None), ("d.tar", None), ("d.tar.gz", "mydata"), ("d.zip", None), ("d.zip", "mydata")],
    ids=["folder", "tar", "tar.gz-under-a-top-folder", "zip", "zip-under-a-top-folder"],
)
def test_every_source_gives_the_images_written_in_class_then_path_order(
    layout, tmp_path, archive, top
):
    folder, pixels = layout
    root = pack(folder, tmp_path / archive, top) if archive else folder
    data = image_folder(root, cache=False)
    assert data.classes == CLASSES  # sorted by code point, whatever the members' order
    for split in ("train", "test"):
        images, labels = expected(pixels, split)
        got = getattr(data, f"{split}_images").numpy()
        assert got.shape == images.shape == ((9, 6, 8, 3) if split == "train" else (6, 6, 8, 3))
        assert np.array_equal(got, images)
        assert getattr(data, f"{split}_labels").tolist() == labels.tolist()
    assert data.flip is True and data.num_classes == 3


def test_hidden_files_and_entries_beside_the_splits_are_skipped(layout):
    folder, pixels = layout
    (folder / "train" / "ant" / ".DS_Store").write_bytes(b"\x00junk")
    (folder / "train" / ".cache").mkdir()
    (folder / "README.txt").write_text("not an image, and not in a split")
    data = image_folder(folder, cache=False)
    assert np.array_equal(data.train_images.numpy(), expected(pixels, "train")[0])


def test_grayscale_images_keep_one_channel(tmp_path):
    for split in ("train", "test"):
        for value, cls in ((10, "a"), (200, "b")):
            (tmp_path / split / cls).mkdir(parents=True)
            Image.new("L", (5, 4), value).save(tmp_path / split / cls / "x.png")
    data = image_folder(tmp_path, cache=False)
    assert tuple(data.train_images.shape) == (2, 4, 5, 1)
    assert data.train_images[:, 0, 0, 0].tolist() == [10, 200]


# --- the cache ------------------------------------------------------------------------------


def counting_decoder(monkeypatch) -> list[int]:
    calls: list[int] = []
    real = image_folder_module.decode_image

    def decode(data):
        calls.append(1)
        return real(data)

    monkeypatch.setattr(image_folder_module, "decode_image", decode)
    return calls


def refuse_to_decode(monkeypatch) -> None:
    def decode(data):
        raise AssertionError("decoded although the cache holds these images")

    monkeypatch.setattr(image_folder_module, "decode_image", decode)


@pytest.mark.parametrize("archive", [None, "d.tar.gz"], ids=["folder", "tar.gz"])
def test_a_second_load_reads_the_cache_and_decodes_nothing(layout, tmp_path, archive, monkeypatch):
    folder, _ = layout
    root = pack(folder, tmp_path / archive) if archive else folder
    cache = tmp_path / "cache"
    calls = counting_decoder(monkeypatch)
    first = image_folder(root, cache=cache)
    assert len(calls) == 15 and len(list(cache.glob("image_folder-*.npz"))) == 1
    refuse_to_decode(monkeypatch)
    second = image_folder(root, cache=cache)
    for key in ("train_images", "train_labels", "test_images", "test_labels"):
        assert torch.equal(getattr(first, key), getattr(second, key))
    assert (second.classes, second.mean, second.std) == (first.classes, first.mean, first.std)
    assert [p.name for p in cache.iterdir()] == [p.name for p in cache.glob("*.npz")]  # no tmp


def rewrite_one_pixel(path: Path) -> None:
    """Change one pixel of a BMP file: same size (BMP is uncompressed), same mtime."""
    stat = path.stat()
    array = np.asarray(Image.open(path)).copy()
    array[0, 0, 0] ^= 0xFF
    Image.fromarray(array).save(path)
    assert path.stat().st_size == stat.st_size
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns))


@pytest.mark.parametrize("archive", [None, "d.tar", "d.zip"], ids=["folder", "tar", "zip"])
def test_one_changed_image_is_a_cache_miss_even_at_the_same_size_and_mtime(
    layout, tmp_path, archive, monkeypatch
):
    folder, _ = layout
    cache = tmp_path / "cache"
    changed = folder / "train" / "ant" / "01.bmp"  # the 5th training image (after 3 of Moth)
    root = pack(folder, tmp_path / archive) if archive else folder
    before = image_folder(root, cache=cache).train_images[4, 0, 0, 0].item()
    old = root.stat()
    rewrite_one_pixel(changed)
    if archive:
        pack(folder, root)
        os.utime(root, ns=(old.st_atime_ns, old.st_mtime_ns))
        assert (root.stat().st_size, root.stat().st_mtime_ns) == (old.st_size, old.st_mtime_ns)
    calls = counting_decoder(monkeypatch)
    after = image_folder(root, cache=cache)
    assert len(calls) == 15  # decoded again, not read from the stale entry
    assert after.train_images[4, 0, 0, 0].item() == before ^ 0xFF
    assert len(list(cache.glob("*.npz"))) == 2


def test_image_size_is_part_of_the_key(layout, tmp_path, monkeypatch):
    folder, _ = layout
    cache = tmp_path / "cache"
    assert image_folder(folder, cache=cache).input_shape == (3, 6, 8)
    calls = counting_decoder(monkeypatch)
    assert image_folder(folder, cache=cache, image_size=4).input_shape == (3, 4, 4)
    assert len(calls) == 15


def test_a_damaged_cache_file_is_decoded_again_with_one_warning(layout, tmp_path, caplog):
    folder, pixels = layout
    cache = tmp_path / "cache"
    image_folder(folder, cache=cache)
    (entry,) = cache.glob("*.npz")
    entry.write_bytes(entry.read_bytes()[:1000])
    with caplog.at_level(logging.WARNING, logger="drsom"):
        data = image_folder(folder, cache=cache)
    assert np.array_equal(data.train_images.numpy(), expected(pixels, "train")[0])
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1 and str(entry) in warned[0], warned
    assert entry.stat().st_size > 1000  # written again, whole


def test_a_rewritten_cache_entry_is_said_decoded_again_and_written_again(
    layout, tmp_path, monkeypatch, caplog
):
    folder, pixels = layout
    cache = tmp_path / "cache"
    image_folder(folder, cache=cache)
    (entry,) = cache.glob("*.npz")
    with np.load(entry) as stored:  # a valid .npz: one pixel and five labels changed
        arrays = {key: stored[key].copy() for key in stored.files}
    arrays["train_images"][4, 0, 0, 0] ^= 0xFF
    arrays["train_labels"][:5] = (arrays["train_labels"][:5] + 1) % 3
    with open(entry, "wb") as f:
        np.savez(f, **arrays)
    calls = counting_decoder(monkeypatch)
    with caplog.at_level(logging.WARNING, logger="drsom"):
        data = image_folder(folder, cache=cache)
    assert len(calls) == 15  # decoded again, the rewritten entry not used
    images, labels = expected(pixels, "train")
    assert np.array_equal(data.train_images.numpy(), images)
    assert data.train_labels.tolist() == labels.tolist()
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert warned == [
        f"image cache {entry} is not what was written (its arrays no longer match the digest "
        "stored with them); decoding the images again"
    ]
    refuse_to_decode(monkeypatch)  # written again: the next load reads it
    assert torch.equal(image_folder(folder, cache=cache).train_labels, data.train_labels)


def test_a_cache_folder_that_cannot_be_written_loads_without_it_and_warns_once(
    layout, tmp_path, caplog
):
    folder, pixels = layout
    blocker = tmp_path / "a-file"
    blocker.write_text("a file where the cache folder's parent should be")
    with caplog.at_level(logging.WARNING, logger="drsom"):
        data = image_folder(folder, cache=blocker / "cache")
    assert np.array_equal(data.train_images.numpy(), expected(pixels, "train")[0])
    warned = [r.getMessage() for r in caplog.records if r.levelno >= logging.WARNING]
    assert len(warned) == 1, warned
    assert warned[0].startswith(f"cannot write the image cache in {blocker / 'cache'}")
    assert "data.cache=" in warned[0] and "\n" not in warned[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file", "images"]


def test_cache_false_writes_nothing(layout, tmp_path, monkeypatch):
    folder, _ = layout
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    image_folder(folder, cache=False)
    image_folder(folder, cache=None)
    assert not (tmp_path / "home").exists()


def test_the_default_cache_is_under_home_and_a_relative_one_under_the_base_dir(
    layout, tmp_path, monkeypatch
):
    folder, _ = layout
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    node = compose_config("data=image_folder", f"data.root={folder}")["data"]
    assert node["cache"] == "~/.cache/drsom"
    load_dataset(node, base_dir=tmp_path / "base")
    assert len(list((tmp_path / "home" / ".cache" / "drsom").glob("image_folder-*.npz"))) == 1
    load_dataset({**node, "cache": "rel/cache"}, base_dir=tmp_path / "base")
    assert len(list((tmp_path / "base" / "rel" / "cache").glob("image_folder-*.npz"))) == 1


# --- sizes, statistics, fingerprint ---------------------------------------------------------


def write_images(folder: Path, images: dict[str, np.ndarray]) -> None:
    for name, array in images.items():
        (folder / name).parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(array).save(folder / name)


def columns(width: int, height: int) -> np.ndarray:
    """An RGB image whose pixel (y, x) is (10 x, 10 y, 7)."""
    y, x = np.mgrid[:height, :width]
    return np.stack([10 * x, 10 * y, np.full_like(x, 7)], axis=-1).astype(np.uint8)


def test_mixed_sizes_are_refused_in_one_line_naming_two_files(tmp_path):
    write_images(
        tmp_path,
        {
            "train/a/0.png": columns(8, 6),
            "train/b/0.png": columns(10, 6),
            "test/a/0.png": columns(8, 6),
            "test/b/0.png": columns(8, 6),
        },
    )
    with pytest.raises(DatasetUnavailable) as info:
        image_folder(tmp_path, cache=False)
    assert one_line(info) == (
        f"images of different sizes in {tmp_path} (train/a/0.png is 8x6, train/b/0.png is 10x6, "
        "width x height); set data.image_size=N to resize each shorter side to N and centre-crop "
        "N x N"
    )


def test_image_size_resizes_the_shorter_side_then_crops_the_centre(tmp_path):
    write_images(
        tmp_path,
        {
            "train/a/wide.png": columns(12, 6),  # no resize (shorter side 6): crop x in 3..8
            "train/a/tall.png": columns(6, 12),  # crop y in 3..8
            "train/b/big.png": np.full((10, 20, 3), 99, np.uint8),  # resized to 12x6, cropped
            "test/a/0.png": columns(6, 6),
            "test/b/0.png": columns(6, 6),
        },
    )
    data = image_folder(tmp_path, cache=False, image_size=6)
    assert tuple(data.train_images.shape) == (3, 6, 6, 3)
    tall, wide, big = data.train_images.numpy()  # by path within class a: tall < wide
    assert wide[0, :, 0].tolist() == [30, 40, 50, 60, 70, 80]  # a left crop reads 0..50
    assert tall[:, 0, 1].tolist() == [30, 40, 50, 60, 70, 80]
    assert (big == 99).all()
    assert np.array_equal(data.test_images[0].numpy(), columns(6, 6))


def test_bad_image_size_is_a_value_error():
    with pytest.raises(ValueError, match=r"^image_size must be a positive integer or null, got 0"):
        image_folder("/nowhere", image_size=0)


def test_mean_and_std_are_the_training_splits_unless_given(layout):
    folder, pixels = layout
    # the test images, all white, would move both statistics if they were counted
    for path in (folder / "test").rglob("*.*"):
        Image.fromarray(np.full((6, 8, 3), 255, np.uint8)).save(path, quality=100)
    train = expected(pixels, "train")[0].astype(np.float64) / 255
    data = image_folder(folder, cache=False)
    assert data.mean == pytest.approx(train.mean(axis=(0, 1, 2)), rel=1e-12, abs=0)
    assert data.std == pytest.approx(train.std(axis=(0, 1, 2), ddof=1), rel=1e-12, abs=0)
    assert 0.4 < data.mean[0] < 0.6  # uniform noise, not the white test images
    given = image_folder(folder, cache=False, mean=(0.1, 0.2, 0.3), std=[0.5, 0.5, 0.5])
    assert (given.mean, given.std) == ((0.1, 0.2, 0.3), (0.5, 0.5, 0.5))


def test_channel_stats_are_exact():
    images = np.zeros((2, 1, 2, 1), np.uint8)
    images[0, 0, 0, 0] = 255  # pixels 1, 0, 0, 0: mean 1/4, unbiased variance (1 - 4/16)/3
    mean, std = channel_stats(images)
    assert mean.tolist() == [0.25] and std.tolist() == [pytest.approx(0.5, rel=1e-15)]


def test_the_fingerprint_follows_the_content_not_where_it_was_read_from(layout, tmp_path):
    folder, _ = layout

    def printed(root):
        return build_data(image_folder(root, cache=False).check("t"), val_size=2).fingerprint

    base = printed(folder)
    assert base.startswith("7+6:")
    assert printed(pack(folder, tmp_path / "d.zip", "top")) == base
    rewrite_one_pixel(folder / "test" / "zebra" / "01.bmp")
    assert printed(folder) != base


# --- bad inputs: one line, naming the path and what is expected ------------------------------


def bad_layout(tmp_path: Path, case: str) -> tuple[Path, str]:
    """A broken layout under tmp_path and the line its reading must give."""
    root = tmp_path / "images"
    write_layout(root, n_train=1, n_test=1)
    expect = "(expected train/<class>/<image> and test/<class>/<image>, at the top or under one"
    if case == "missing-root":
        root = tmp_path / "nothing.tar.gz"
        return root, f"no dataset at {root} (looked for a folder or a .tar/.tar.gz/.zip archive"
    if case == "not-an-archive":
        root = tmp_path / "data.tar.gz"
        root.write_text("just text\n" * 100)
        return root, f"{root} is neither a folder nor a .tar, .tar.gz or .zip archive ("
    if case == "damaged-archive":
        whole = pack(root, tmp_path / "whole.tar.gz").read_bytes()
        root = tmp_path / "cut.tar.gz"
        root.write_bytes(whole[: len(whole) // 2])
        return root, f"cannot read the archive {root} ("
    if case == "no-test-split":
        shutil.rmtree(root / "test")
        return root, f"{root} has no test/ folder {expect}"
    if case == "no-splits":
        shutil.rmtree(root / "test")
        (root / "train").rename(root / "training")
        (root / "other").mkdir()
        return root, f"{root} has no train/ and test/ folders (found other, training at the top;"
    if case == "no-class-folders":
        shutil.rmtree(root / "train")
        (root / "train").mkdir()
        return root, f"train/ in {root} holds no class folders (expected train/<class>/<image>)"
    if case == "different-classes":
        (root / "test" / "zebra").rename(root / "test" / "zebras")
        return root, (
            f"train/ and test/ in {root} have different class folders (only in train/: zebra; "
            "only in test/: zebras); both splits need the same classes"
        )
    if case == "not-an-image":
        (root / "train" / "ant" / "notes.txt").write_text("hello")
        return root, f"train/ant/notes.txt in {root} is not an image Pillow can read;"
    if case == "broken-image":
        data = (root / "train" / "ant" / "00.png").read_bytes()
        (root / "train" / "ant" / "00.png").write_bytes(data[:60])
        return root, f"train/ant/00.png in {root} cannot be decoded ("
    if case == "empty-class":
        shutil.rmtree(root / "test" / "ant")
        (root / "test" / "ant").mkdir()
        return root, f"test/ant/ in {root} holds no images (each class needs at least one image"
    if case == "file-in-split":
        (root / "train" / "labels.csv").write_text("a,b\n")
        return root, f"train/labels.csv in {root} lies directly in train/; expected only class"
    raise AssertionError(case)


BAD = [
    "missing-root",
    "not-an-archive",
    "damaged-archive",
    "no-test-split",
    "no-splits",
    "no-class-folders",
    "different-classes",
    "not-an-image",
    "broken-image",
    "empty-class",
    "file-in-split",
]


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_one_line_naming_the_path(tmp_path, case):
    root, line = bad_layout(tmp_path, case)
    cache = tmp_path / "cache"
    with pytest.raises(DatasetUnavailable) as info:
        image_folder(root, cache=cache)
    assert one_line(info).startswith(line), str(info.value)
    assert not list(cache.glob("*.npz"))


def test_an_empty_class_is_refused_in_an_archive_too(tmp_path):
    root, _ = bad_layout(tmp_path, "empty-class")
    archive = pack(root, tmp_path / "d.zip")
    with pytest.raises(DatasetUnavailable, match=r"^test/ant/ in .*d\.zip holds no images"):
        image_folder(archive, cache=False)


def test_classes_other_than_the_config_expects_are_refused(layout):
    folder, _ = layout
    with pytest.raises(DatasetUnavailable) as info:
        image_folder(folder, cache=False, classes=["Moth", "ant", "bee"])
    assert one_line(info) == (
        f"{folder} has the classes ['Moth', 'ant', 'zebra'], not the ['Moth', 'ant', 'bee'] that "
        "data.classes expects; point data.root at the dataset the config is for"
    )
    assert image_folder(folder, cache=False, classes=list(CLASSES)).classes == CLASSES


def test_no_root_says_to_set_it():
    with pytest.raises(DatasetUnavailable, match=r"^data.root is not set: give data.root=<a"):
        image_folder(None, cache=False)


# --- names as written, symlinks, decompression bombs -----------------------------------------


def add_entry(archive: Path, name: str, data: bytes) -> None:
    """One more member, ``name`` exactly as given, at the end of the archive (rewritten)."""
    if archive.name.endswith(".zip"):
        with zipfile.ZipFile(archive, "a") as z, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # zipfile's "Duplicate name": wanted
            z.writestr(zipfile.ZipInfo(name, (1980, 1, 1, 0, 0, 0)), data)
        return
    mode = "gz" if archive.name.endswith(".tar.gz") else ""
    with tarfile.open(archive, f"r:{mode}") as old:
        members = [(m, old.extractfile(m).read() if m.isfile() else None) for m in old]
    with tarfile.open(archive, f"w:{mode}") as new:
        info = tarfile.TarInfo(name)
        info.size = len(data)
        for member, content in [*members, (info, data)]:
            new.addfile(member, io.BytesIO(content) if content is not None else None)


ENTRY = (
    "entry {raw} in {root} is {why}; an archive must name each image by its plain relative "
    "path (train/<class>/<image> and test/<class>/<image>), as it is to be read"
)


@pytest.mark.parametrize("archive", ["d.zip", "d.tar", "d.tar.gz"])
@pytest.mark.parametrize(
    ("raw", "why"),
    [
        ("pets/train/ant/../zebra/x.png", "a path with '..'"),  # the issue's: trained as zebra
        ("../x.png", "a path with '..'"),
        ("/pets/train/ant/x.png", "an absolute path"),
        ("C:/pets/train/ant/x.png", "an absolute path"),
        ("pets//train/ant/x.png", "a path that normalises to pets/train/ant/x.png"),
        ("pets/train/./ant/x.png", "a path that normalises to pets/train/ant/x.png"),
        ("pets\\train\\ant\\x.png", "a path that normalises to pets/train/ant/x.png"),
        ("pets/train/ant/x\n.png", "a name with a control character"),
    ],
)
def test_an_entry_not_named_as_it_is_read_is_refused_naming_it(layout, tmp_path, archive, raw, why):
    folder, _ = layout
    root = pack(folder, tmp_path / archive, "pets")
    add_entry(root, raw, (folder / "train" / "ant" / "00.png").read_bytes())
    with pytest.raises(DatasetUnavailable) as info:
        image_folder(root, cache=tmp_path / "cache")
    shown = raw if raw.isprintable() else ascii(raw)
    assert one_line(info) == ENTRY.format(raw=shown, root=root, why=why)
    assert not (tmp_path / "cache").exists()


@pytest.mark.parametrize("archive", ["d.zip", "d.tar"])
def test_an_entry_stored_twice_is_refused_and_a_leading_dot_slash_is_read(
    layout, tmp_path, archive
):
    folder, pixels = layout
    root = pack(folder, tmp_path / archive, ".")  # ./train/...: what tar -C dir -cf x.tar . writes
    data = image_folder(root, cache=False)
    assert np.array_equal(data.train_images.numpy(), expected(pixels, "train")[0])
    add_entry(root, "./train/ant/00.png", (folder / "train" / "zebra" / "00.png").read_bytes())
    with pytest.raises(DatasetUnavailable) as info:
        image_folder(root, cache=False)
    assert one_line(info) == (
        f"train/ant/00.png is in {root} twice; an archive must hold each image once"
    )


def test_a_symlink_leading_outside_the_folder_is_refused_unless_followed(layout, tmp_path):
    folder, pixels = layout
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    shutil.copy(folder / "train" / "ant" / "00.png", outside / "x.png")
    (folder / "train" / "ant" / "link.png").symlink_to(outside / "x.png")
    with pytest.raises(DatasetUnavailable) as info:
        image_folder(folder, cache=tmp_path / "cache")
    assert one_line(info) == (
        f"train/ant/link.png in {folder} is a symlink to {outside / 'x.png'}, outside the "
        "folder; copy the images in, or set data.follow_symlinks=true to read it"
    )
    assert not (tmp_path / "cache").exists()
    followed = image_folder(folder, cache=False, follow_symlinks=True)
    assert len(followed.train_labels) == 10 and followed.train_labels.tolist().count(1) == 4
    (folder / "train" / "ant" / "link.png").unlink()

    (folder / "train" / "ant" / "more").symlink_to(outside)  # a folder, the same
    with pytest.raises(DatasetUnavailable, match=r"^train/ant/more in .* is a symlink to .*, "):
        image_folder(folder, cache=False)
    assert len(image_folder(folder, cache=False, follow_symlinks=True).train_labels) == 10
    (folder / "train" / "ant" / "more").unlink()

    # inside the folder, a link is read as what it points to
    (folder / "train" / "ant" / "copy.png").symlink_to(folder / "test" / "zebra" / "00.png")
    inside = image_folder(folder, cache=False)
    assert np.array_equal(inside.train_images[6].numpy(), pixels["test/zebra/00.png"])  # ant's 4th


@pytest.mark.parametrize(
    ("case", "line"),
    [
        (
            "loop",
            "train/ant/loop in {folder} is a symlink to {folder}/train, a folder above it: a "
            "loop; remove it",
        ),
        (
            "dangling",
            "train/ant/gone.png in {folder} is a symlink to {tmp}/nothing.png, which does "
            "not exist; remove it or point it at the image",
        ),
    ],
)
def test_a_symlink_loop_or_to_nothing_is_refused_even_when_followed(layout, tmp_path, case, line):
    folder, _ = layout
    if case == "loop":
        (folder / "train" / "ant" / "loop").symlink_to(folder / "train")
    else:
        (folder / "train" / "ant" / "gone.png").symlink_to(tmp_path / "nothing.png")
    for follow in (False, True):
        with pytest.raises(DatasetUnavailable) as info:
            image_folder(folder, cache=False, follow_symlinks=follow)
        assert one_line(info) == line.format(folder=folder, tmp=tmp_path)


def test_follow_symlinks_is_a_documented_key_outside_the_run_identity(layout):
    from drsom.store.identity import complete, run_id

    folder, _ = layout
    text = (REPO / "drsom" / "configs" / "data" / "image_folder.yaml").read_text()
    assert "follow_symlinks: false " in text
    assert "data.follow_symlinks=true" in (REPO / "docs" / "usage.md").read_text()
    base = ["data=image_folder", f"data.root={folder}", "model=cnn", "optimizer=adam"]
    plain, followed = (
        compose_config(*base),
        compose_config(*base, "data.follow_symlinks=true"),
    )
    assert plain["data"]["follow_symlinks"] is False
    assert run_id(complete(plain)) == run_id(complete(followed))  # where images are read from
    with pytest.raises(ValueError, match="follow_symlinks must be true or false, got 'yes'"):
        image_folder(folder, cache=False, follow_symlinks="yes")


def png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims ``width`` x ``height`` pixels, with no pixel data."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        crc = struct.pack(">I", zlib.crc32(kind + data))
        return struct.pack(">I", len(data)) + kind + data + crc

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IEND", b"")


@pytest.mark.parametrize("side", [100_000, 10_000], ids=["past-pillows-error", "in-its-warning"])
@pytest.mark.parametrize("archive", [None, "d.zip"], ids=["folder", "zip"])
def test_a_decompression_bomb_is_refused_naming_the_file_and_the_limit(
    layout, tmp_path, side, archive
):
    folder, _ = layout
    (folder / "train" / "ant" / "bomb.png").write_bytes(png_header(side, side))
    root = pack(folder, tmp_path / archive) if archive else folder
    with pytest.raises(DatasetUnavailable) as info:
        image_folder(root, cache=False)
    assert one_line(info) == (
        f"train/ant/bomb.png in {root}: its header claims {side * side} pixels, above Pillow's "
        f"limit of {Image.MAX_IMAGE_PIXELS} (PIL.Image.MAX_IMAGE_PIXELS, against decompression "
        "bombs); remove the file, or shrink the image"
    )


def image_folder_args(
    root: Path, tmp_path: Path, *overrides: str, data: str = "image_folder"
) -> list[str]:
    return [
        f"data={data}",
        f"data.root={root}",
        f"data.cache={tmp_path / 'cache'}",
        "data.val_size=2",
        "model=cnn",
        "optimizer=adam",
        "trainer=quick",
        "trainer.epochs=1",
        "trainer.device=cpu",
        "logger.mode=disabled",
        f"results_dir={tmp_path / 'r'}",
        *overrides,
    ]


@pytest.mark.parametrize("case", ["not-an-image", "different-classes"])
def test_bad_input_through_run_py_is_one_error_line_and_no_run_folder(tmp_path, case):
    root, line = bad_layout(tmp_path, case)
    out = cli(*image_folder_args(root, tmp_path), cwd=tmp_path)
    assert out.returncode == 2
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {line}"), lines
    assert not (tmp_path / "r").exists() and not (tmp_path / "cache").exists()


def test_cifar10_jpeg_without_its_archive_says_where_it_looked(tmp_path):
    missing = tmp_path / "shared" / "cifar10-jpeg.tar.gz"
    out = cli(*image_folder_args(missing, tmp_path, data="cifar10_jpeg"), cwd=tmp_path)
    lines = out.stderr.strip().splitlines()
    assert out.returncode == 2 and len(lines) == 1, lines
    assert lines[0] == (
        f"error: no dataset at {missing} (looked for a folder or a .tar/.tar.gz/.zip archive "
        "holding train/<class>/<image> and test/<class>/<image>); set "
        "data.root=/path/to/cifar10-jpeg.tar.gz"
    )
    assert not (tmp_path / "r").exists()


def test_cifar10_jpeg_config_reads_the_shared_archive_beside_the_checkout():
    data = compose_config("data=cifar10_jpeg")["data"]
    assert data["root"] == "../shared/data/cifar10-jpeg.tar.gz"  # from the base directory
    assert data["display"] == "CIFAR-10 (JPEG q75 copy)" and data["name"] == "cifar10_jpeg"
    assert data["classes"] == [
        *("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship"),
        "truck",
    ]


def test_a_run_on_an_image_folder_trains_and_records_its_fingerprint(tmp_path):
    root = tmp_path / "images"
    write_layout(root, n_train=4, n_test=2, size=(16, 16))
    archive = pack(root, tmp_path / "d.tar.gz", "top")
    assert run_inprocess(image_folder_args(archive, tmp_path)) == "finished"
    run = only_run(tmp_path / "r")
    assert run.name.startswith("image_folder-cnn-adam-")
    data = build_data(image_folder(root, cache=False).check("t"), val_size=2)
    assert data.fingerprint.startswith("10+6:")  # 12 training images, 2 held out
    assert summary_of(run)["data_fingerprint"] == data.fingerprint


# --- the real archive: CIFAR-10 as JPEG files -------------------------------------------------

CIFAR10_CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse")
CIFAR10_CLASSES += ("ship", "truck")
# Krizhevsky's CIFAR-10 training split, per channel (the usual published values)
CIFAR10_PIXEL_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_PIXEL_STD = (0.2470, 0.2435, 0.2616)


@pytest.fixture(scope="session")
def real_archive() -> Path:
    where = os.environ.get("DRSOM_CIFAR10_JPEG")
    if not where:
        pytest.skip("DRSOM_CIFAR10_JPEG is not set (the path of cifar10-jpeg.tar.gz)")
    if not Path(where).is_file():
        pytest.skip(f"DRSOM_CIFAR10_JPEG={where} is not a file")
    return Path(where)


@pytest.fixture(scope="session")
def real_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("cifar10-jpeg-cache")


@pytest.fixture(scope="session")
def real_node(real_archive, real_cache) -> dict:
    return compose_config(
        "data=cifar10_jpeg", f"data.root={real_archive}", f"data.cache={real_cache}"
    )["data"]


@pytest.fixture(scope="session")
def real(real_node):
    """Decoded once per session (about 10 s on one core), into the session's cache."""
    return load_dataset(real_node)


def test_real_archive_counts_and_labels_per_class_and_split(real):
    assert real.classes == CIFAR10_CLASSES and real.num_classes == 10
    assert tuple(real.train_images.shape) == (50000, 32, 32, 3)
    assert tuple(real.test_images.shape) == (10000, 32, 32, 3)
    assert torch.bincount(real.train_labels).tolist() == [5000] * 10
    assert torch.bincount(real.test_labels).tolist() == [1000] * 10
    assert torch.equal(real.train_labels, torch.arange(10).repeat_interleave(5000))  # by class
    assert (real.mean, real.std) == ((0.4914, 0.4822, 0.4465), (0.2023, 0.1994, 0.2010))


def test_real_archive_pixels_match_cifar10s_published_statistics(real):
    mean, std = channel_stats(real.train_images.numpy())
    assert mean == pytest.approx(CIFAR10_PIXEL_MEAN, abs=0.01)
    assert std == pytest.approx(CIFAR10_PIXEL_STD, abs=0.01)
    test_mean, _ = channel_stats(real.test_images.numpy())
    assert test_mean == pytest.approx(CIFAR10_PIXEL_MEAN, abs=0.01)


def test_real_archive_second_load_is_a_cache_hit_and_a_changed_copy_a_miss(
    real, real_node, real_cache, tmp_path, monkeypatch
):
    refuse_to_decode(monkeypatch)
    again = load_dataset(real_node)  # would raise if it decoded
    assert torch.equal(again.train_images, real.train_images)
    assert torch.equal(again.test_labels, real.test_labels)
    assert len(list(real_cache.glob("*.npz"))) == 1
    # The same members, one more (empty) gzip member at the end: a different file, so a miss.
    copy = tmp_path / "cifar10-jpeg.tar.gz"
    shutil.copyfile(real_node["root"], copy)
    with open(copy, "ab") as f:
        f.write(gzip.compress(b""))
    with pytest.raises(AssertionError, match="decoded although"):
        image_folder(copy, cache=real_cache)


def test_real_archive_fingerprint_is_the_content_s(real):
    data = build_data(real, val_size=5000)
    assert (data.num_train, data.num_val, data.num_test) == (45000, 5000, 10000)
    # what Pillow 13's libjpeg-turbo makes of the archive; a different decode is a different run
    assert data.fingerprint == "45000+10000:aebfd01b53f0"
    assert data.classes == CIFAR10_CLASSES


def test_real_archive_a_short_cnn_run_learns_far_above_chance(real_node, real, tmp_path):
    # About 10 s on one thread: a narrower CNN without dropout, 4,000 training images, 2 epochs,
    # evaluated once at the end (on the 10,000 test images, 1,000 validation, 4,000 training).
    # It reached 0.417 test accuracy here; chance is 0.1.
    args = [
        "data=cifar10_jpeg",
        f"data.root={real_node['root']}",
        f"data.cache={real_node['cache']}",
        "data.train_subset=4000",
        "data.val_size=1000",
        "model=cnn",
        "model.widths=[16,32,64]",
        "model.hidden=64",
        "model.dropout=0",
        "optimizer=adam",
        "trainer=quick",
        "trainer.epochs=2",
        "trainer.eval_every=2",
        "trainer.device=cpu",
        "logger.mode=disabled",
        f"results_dir={tmp_path}",
    ]
    assert run_inprocess(args) == "finished"
    summary = summary_of(only_run(tmp_path))
    assert summary["final"]["test_acc"] > 0.3, summary["final"]
    assert summary["data_fingerprint"].startswith("4000+10000:")


def test_real_archive_bytes_are_what_the_readme_says(real_archive):
    digest = hashlib.sha256(real_archive.read_bytes()).hexdigest()
    assert digest == "8902c3345e1b3e1d2f8bfc40e86c716f2276cb8863a23b816fa2a62d059570f0"
