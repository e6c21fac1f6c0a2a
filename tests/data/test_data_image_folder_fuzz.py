"""A damage fuzzer for image archives (drsom/data/image_folder.py), with Hypothesis.

A small ImageFolder layout of PNG images, as a .zip, a .tar and a .tar.gz, is damaged in random
ways: cut anywhere, a byte flipped, or an entry renamed (the archive written again with one name
changed). Every read then either refuses in one line (``DatasetUnavailable``, which the runner
prints as its one error line, exit 2) or returns exactly the arrays and labels the archive holds
as written: the original ones after a cut or a flipped byte; after a rename, those of the layout
the new names say (an image moved to another class is that class's now), and a refusal where the
new name is not one to read as written (absolute, ``..``, tidied to another name, a name given
twice, a control character) or leaves the layout incomplete.

The draws are derandomized (the same examples on every run, no database written); the default
suite runs ``EXAMPLES`` of them, ``-m slow`` ``SLOW_EXAMPLES``.
"""

from __future__ import annotations

import gzip
import io
import posixpath
import tarfile
import tempfile
import warnings
import zipfile
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, event, example, given, settings
from hypothesis import strategies as st
from PIL import Image

from drsom.data import DatasetUnavailable
from drsom.data.image_folder import image_folder

pytestmark = pytest.mark.usefixtures("one_thread")

EXAMPLES = 300
SLOW_EXAMPLES = 3000
FORMATS = (".zip", ".tar", ".tar.gz")
CLASSES = ("ant", "bee", "cat")
PER_SPLIT = {"train": 2, "test": 2}  # two a class: losing one image empties none


def _pixels() -> dict[str, np.ndarray]:
    """name -> RGB pixels (4x4, seeded) of each image of the layout."""
    rng = np.random.RandomState(0)
    return {
        f"{split}/{cls}/{j}.png": rng.randint(0, 256, (4, 4, 3)).astype(np.uint8)
        for split, n in PER_SPLIT.items()
        for cls in CLASSES
        for j in range(n)
    }


PIXELS = _pixels()
PNG = {}
for _name, _array in PIXELS.items():
    _buffer = io.BytesIO()
    Image.fromarray(_array).save(_buffer, "PNG")
    PNG[_name] = _buffer.getvalue()


def archive_bytes(names: dict[str, str], suffix: str) -> bytes:
    """The archive holding each image ``name`` under ``names[name]``, its folders first, every
    member's time fixed (the same bytes on every run)."""
    folders = sorted({posixpath.dirname(new) for new in names.values()} - {""})
    out = io.BytesIO()
    if suffix == ".zip":
        with zipfile.ZipFile(out, "w") as z, warnings.catch_warnings():
            warnings.simplefilter("ignore", UserWarning)  # "Duplicate name": a damage drawn
            for folder in folders:
                z.writestr(zipfile.ZipInfo(folder + "/", (1980, 1, 1, 0, 0, 0)), b"")
            for old, new in names.items():
                z.writestr(zipfile.ZipInfo(new, (1980, 1, 1, 0, 0, 0)), PNG[old])
        return out.getvalue()
    with tarfile.open(fileobj=out, mode="w:gz" if suffix == ".tar.gz" else "w") as t:
        for folder in folders:
            info = tarfile.TarInfo(folder)
            info.type = tarfile.DIRTYPE
            t.addfile(info)
        for old, new in names.items():
            info = tarfile.TarInfo(new)
            info.size = len(PNG[old])
            t.addfile(info, io.BytesIO(PNG[old]))
    data = out.getvalue()
    return data[:4] + b"\0" * 4 + data[8:] if suffix == ".tar.gz" else data  # gzip mtime: 0


ORIGINAL = {suffix: archive_bytes({n: n for n in PIXELS}, suffix) for suffix in FORMATS}


def as_written(names: dict[str, str]) -> dict | None:
    """The arrays a reader must return for the images named ``names`` (old -> new), by the
    layout's rules: label = the index of the sorted class folder, images by class then path;
    None where a reader must refuse (the same classes in both splits, none empty)."""
    per_split: dict[str, dict[str, list[str]]] = {split: {} for split in PER_SPLIT}
    for old, new in names.items():
        split, cls, *rest = new.split("/")
        if not rest:
            return None
        if not any(part.startswith(".") for part in (cls, *rest)):
            per_split[split].setdefault(cls, []).append(old)
    classes = sorted(per_split["train"])
    if sorted(per_split["test"]) != classes:
        return None
    arrays = {"classes": tuple(classes)}
    for split, found in per_split.items():
        order = [
            (label, names[old], old) for label, cls in enumerate(classes) for old in found[cls]
        ]
        order.sort()
        arrays[f"{split}_images"] = np.stack([PIXELS[old] for _, _, old in order])
        arrays[f"{split}_labels"] = [label for label, _, _ in order]
    return arrays


WHOLE = as_written({n: n for n in PIXELS})


class Damage:
    """A damaged archive (a plain class: Hypothesis prints a failing one by its ``repr``)."""

    def __init__(self, suffix: str, data: bytes, expected: dict | None, what: str) -> None:
        self.suffix, self.data, self.what = suffix, data, what
        self.expected = expected  # what a read returns if it does not refuse (None: refuse)

    def __repr__(self) -> str:  # what Hypothesis prints for a failing example
        return f"Damage({self.suffix}: {self.what})"


def _renamed(old: str, draw) -> tuple[str, bool]:
    """A new name for the entry ``old``, and whether it is one to read as written."""
    split, cls, leaf = old.split("/")
    others = [n for n in PIXELS if n != old]
    kind = draw(
        st.sampled_from(
            [
                "absolute",
                "dotdot",
                "through-dotdot",
                "double-slash",
                "dot",
                "backslash",
                "control",
                "duplicate",
                "other-class",
                "same-class",
                "hidden",
                "new-class",
            ]
        )
    )
    other = draw(st.sampled_from([c for c in CLASSES if c != cls]))
    bad = {
        "absolute": f"/{old}",
        "dotdot": f"../{old}",
        "through-dotdot": f"{split}/{cls}/../{other}/{leaf}",  # the issue's: cat/../dog/x.png
        "double-slash": f"{split}//{cls}/{leaf}",
        "dot": f"{split}/./{cls}/{leaf}",
        "backslash": f"{split}\\{cls}\\{leaf}",
        "control": f"{split}/{cls}/x\t{leaf}",
        "duplicate": draw(st.sampled_from(others)),
    }
    if kind in bad:
        return bad[kind], False
    return {
        "other-class": f"{split}/{other}/moved-{leaf}",
        "same-class": f"{split}/{cls}/renamed-{leaf}",
        "hidden": f"{split}/{cls}/.{leaf}",
        "new-class": f"{split}/dog/{leaf}",
    }[kind], True


@st.composite
def damaged(draw) -> Damage:
    """An archive of the layout, damaged once."""
    suffix = draw(st.sampled_from(FORMATS))
    data = ORIGINAL[suffix]
    kind = draw(st.sampled_from(["cut", "flip", "rename"]))
    if kind == "cut":
        at = draw(st.integers(0, len(data) - 1))
        return Damage(suffix, data[:at], WHOLE, f"cut at {at} of {len(data)}")
    if kind == "flip":
        at = draw(st.integers(0, len(data) - 1))
        mask = draw(st.integers(1, 255))
        flipped = bytearray(data)
        flipped[at] ^= mask
        return Damage(suffix, bytes(flipped), WHOLE, f"byte {at} ^ {mask}")
    old = draw(st.sampled_from(sorted(PIXELS)))
    new, readable = _renamed(old, draw)
    names = {**{n: n for n in PIXELS}, old: new}
    expected = as_written(names) if readable else None
    return Damage(suffix, archive_bytes(names, suffix), expected, f"{old} renamed {new!r}")


def _found() -> list[Damage]:
    """Damage the fuzzer found read silently, or as a traceback, before the reader refused it:
    run on every draw as explicit examples (built here, so they do not hang on zlib's bytes)."""
    tar = ORIGINAL[".tar"]
    last = tar.rindex(b"test/cat/1.png")  # the last member's header
    body = tar[:last] + bytes(len(tar) - last)  # ... and all after it: zeros
    gz = bytearray(ORIGINAL[".tar.gz"])
    shortened = gzip.compress(body, mtime=0)[:-8] + bytes(gz[-8:])  # the whole stream's CRC
    header = bytearray(tar)
    header[last + 100] ^= 1  # the mode field: a bad checksum
    zip_ = ORIGINAL[".zip"]  # the central directory record of an image (its name at 46)
    central = zip_.index(b"train/ant/0.png", zip_.index(b"PK\x01\x02")) - 46
    encrypted, method = bytearray(zip_), bytearray(zip_)
    encrypted[central + 8] ^= 1  # flagged as encrypted: zipfile's RuntimeError
    method[central + 10] = 99  # an unknown compression method: NotImplementedError
    return [
        Damage(".tar", tar[:last], WHOLE, "cut at the last member's header: read short"),
        Damage(".tar", bytes(header), WHOLE, "the last member's header damaged: read short"),
        Damage(".tar.gz", shortened, WHOLE, "the last member gone, the CRC the whole one's"),
        Damage(".tar.gz", bytes(gz[:3]), WHOLE, "the gzip header cut: tarfile's TypeError"),
        Damage(".zip", bytes(encrypted), WHOLE, "an entry flagged as encrypted"),
        Damage(".zip", bytes(method), WHOLE, "an unknown compression method"),
    ]


def check_one_read(damage: Damage) -> str:
    """Read the damaged archive, check the outcome, and say which it was."""
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp) / f"d{damage.suffix}"
        root.write_bytes(damage.data)
        try:
            data = image_folder(root, cache=False)
        except DatasetUnavailable as exc:
            assert "\n" not in str(exc), damage
            assert str(root) in str(exc), damage  # names the archive
            return "refused in one line"
    assert damage.expected is not None, f"{damage}: read, where it must be refused"
    got = {
        "classes": data.classes,
        "train_images": data.train_images.numpy(),
        "train_labels": data.train_labels.tolist(),
        "test_images": data.test_images.numpy(),
        "test_labels": data.test_labels.tolist(),
    }
    want = damage.expected
    assert got["classes"] == want["classes"], damage
    for key in ("train_images", "test_images"):
        assert got[key].shape == want[key].shape and np.array_equal(got[key], want[key]), damage
    assert (got["train_labels"], got["test_labels"]) == (
        want["train_labels"],
        want["test_labels"],
    ), damage
    return "read whole" if want is WHOLE else "read as renamed"


FUZZ = dict(
    deadline=None,
    derandomize=True,
    database=None,
    suppress_health_check=[HealthCheck.too_slow],
)


def _with_found(test):
    for damage in _found():
        test = example(damage)(test)
    return test


@settings(max_examples=EXAMPLES, **FUZZ)
@given(damaged())
@_with_found
def test_a_damaged_archive_is_refused_in_one_line_or_read_as_written(damage):
    event(check_one_read(damage))


@pytest.mark.parametrize("damage", _found(), ids=lambda d: d.what)
def test_what_the_fuzzer_found_is_refused_in_one_line(damage):
    assert check_one_read(damage) == "refused in one line"


@pytest.mark.slow
@settings(max_examples=SLOW_EXAMPLES, **FUZZ)
@given(damaged())
def test_a_damaged_archive_is_refused_in_one_line_or_read_as_written_many(damage):
    event(check_one_read(damage))


@pytest.mark.parametrize("suffix", FORMATS)
def test_each_original_archive_reads_whole(suffix):
    """The fuzzer's oracle agrees with the reader on the undamaged archives."""
    assert check_one_read(Damage(suffix, ORIGINAL[suffix], WHOLE, "nothing")) == "read whole"
    assert WHOLE["train_labels"] == [0, 0, 1, 1, 2, 2] and WHOLE["classes"] == CLASSES
