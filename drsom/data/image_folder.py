"""Images in torchvision's ImageFolder layout, from a folder or straight from a tar or zip archive.

The layout (one folder per class, a ``train/`` and a ``test/`` split)::

    train/<class>/<image>      e.g. train/cat/0001.jpg (deeper folders inside a class are read too)
    test/<class>/<image>

at the top of ``root``, or under its one top-level folder (``cifar10/train/...``: how most archives
are made). ``root`` is that folder, or a ``.tar``, ``.tar.gz`` (any compression tarfile reads) or
``.zip`` of it, read as a stream without unpacking: torchvision's ``ImageFolder`` reads folders
only, which is why the archive reader is this module's own. Hidden entries (a name starting with
``.``) and ``__MACOSX/`` are skipped; other entries beside ``train/`` and ``test/`` are ignored.

Names are read as written, never tidied: an archive entry whose name is absolute, holds ``..``
or would normalise to another name (``cat/../dog/x.png``, ``a//b``, ``a/./b``, a backslash; a
leading ``./``, as ``tar -C dir -cf x.tar .`` writes, is the one form accepted), a name given
twice, or one with a control character is refused in one line naming it: tidying would train
an image under another class than its path says. In a folder, a symlink that leads outside it
is refused unless ``follow_symlinks`` (then its target is read), and one that loops back to a
folder above it always is. An image whose header claims more pixels than Pillow's limit
(``PIL.Image.MAX_IMAGE_PIXELS``: a decompression bomb) is refused naming it and the limit. An
archive cut or damaged is refused, never read short: tarfile would end at a damaged member
header or a cut without a word, so a tar must end with its end-of-archive marker, and its
compressed stream is read to the end, where gzip, bz2 and xz check their CRC.

Classes are the sorted folder names (label i is ``classes[i]``, as in torchvision); both splits
must have the same ones, each with at least one image. Every other file must be an image Pillow
decodes: it is converted to RGB (an alpha channel is dropped), or kept with one channel where all
images are grayscale. Images of different sizes need ``image_size``: the shorter side is resized
to it (bilinear, antialiased), then the centre ``image_size`` x ``image_size`` is cropped, as
torchvision's ``Resize(s)`` + ``CenterCrop(s)`` do. Images are ordered by class, then by path.

The decoded uint8 arrays are cached (``drsom.data.image_cache``), so only the first run decodes.
"""

from __future__ import annotations

import bz2
import contextlib
import gzip
import io
import logging
import lzma
import os
import posixpath
import re
import tarfile
import time
import warnings
import zipfile
import zlib
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from . import image_cache
from .dataset import ImageDataset
from .errors import DatasetUnavailable

log = logging.getLogger("drsom")

SPLITS = ("train", "test")
DEFAULT_CACHE = "~/.cache/drsom"
LAYOUT = "train/<class>/<image> and test/<class>/<image>"
SKIPPED_FOLDERS = ("__MACOSX",)  # macOS zip resource forks
CHUNK = 1 << 20


@dataclass
class Layout:
    """What the reader found under ``root``: the sorted class names and, per split, (path, label,
    content) of each image, ordered by label, then path."""

    root: Path
    classes: tuple[str, ...]
    files: dict[str, list[tuple[str, int, bytes]]] = field(default_factory=dict)


def image_folder(
    root: str | os.PathLike | None = None,
    cache: str | os.PathLike | bool | None = DEFAULT_CACHE,
    image_size: int | None = None,
    mean: Sequence[float] | None = None,
    std: Sequence[float] | None = None,
    classes: Sequence[str] | None = None,
    flip: bool = True,
    follow_symlinks: bool = False,
) -> ImageDataset:
    """The train and test splits of the ImageFolder layout at ``root`` (a folder or an archive).

    - ``cache``: the folder of the decoded-array cache (``~`` expanded); None or False: none.
    - ``image_size``: resize the shorter side to it and centre-crop a square (None: the images
      must all have one size).
    - ``mean``, ``std``: per channel, of pixels in [0, 1]; None: those of the training split.
    - ``classes``: what the sorted class folders must be (refused otherwise); None: any.
    - ``flip``: whether a horizontal flip keeps an image's label.
    - ``follow_symlinks``: read what a symlink in a folder points to outside it (False: refused).

    Raises DatasetUnavailable (one line naming the path and what is expected) for data that
    cannot be read, ValueError for a bad argument.
    """
    size = _check_image_size(image_size)
    cache_dir = _cache_folder(cache)
    if root is None:
        raise DatasetUnavailable(
            f"data.root is not set: give data.root=<a folder, or a .tar/.tar.gz/.zip archive, "
            f"holding {LAYOUT}>"
        )
    path = Path(root).expanduser().resolve()
    if not path.exists():
        raise DatasetUnavailable(
            f"no dataset at {path} (looked for a folder or a .tar/.tar.gz/.zip archive holding "
            f"{LAYOUT}); set data.root=/path/to/{path.name}"
        )
    if not isinstance(follow_symlinks, bool):
        raise ValueError(f"follow_symlinks must be true or false, got {follow_symlinks!r}")
    arrays = _cached_or_decoded(path, size, cache_dir, follow_symlinks)
    found = tuple(str(c) for c in arrays["classes"])
    if classes is not None and tuple(classes) != found:
        raise DatasetUnavailable(
            f"{path} has the classes {list(found)}, not the {list(classes)} that data.classes "
            "expects; point data.root at the dataset the config is for"
        )
    return ImageDataset(
        train_images=torch.from_numpy(arrays["train_images"]),
        train_labels=torch.from_numpy(arrays["train_labels"]),
        test_images=torch.from_numpy(arrays["test_images"]),
        test_labels=torch.from_numpy(arrays["test_labels"]),
        num_classes=len(found),
        mean=tuple(mean) if mean is not None else tuple(arrays["mean"].tolist()),
        std=tuple(std) if std is not None else tuple(arrays["std"].tolist()),
        flip=bool(flip),
        classes=found,
    )


def _check_image_size(image_size: int | None) -> int | None:
    if image_size is None:
        return None
    if isinstance(image_size, bool) or not isinstance(image_size, int) or image_size < 1:
        raise ValueError(f"image_size must be a positive integer or null, got {image_size!r}")
    return image_size


def _cache_folder(cache: str | os.PathLike | bool | None) -> Path | None:
    if cache is None or cache is False:
        return None
    if cache is True:
        cache = DEFAULT_CACHE
    if not isinstance(cache, str | os.PathLike):
        raise ValueError(f"cache must be a folder, or null/false for none, got {cache!r}")
    return Path(cache).expanduser().resolve()


def _cached_or_decoded(path: Path, size: int | None, cache_dir: Path | None, follow: bool) -> dict:
    target = None
    if cache_dir is not None:
        if path.is_dir():
            source = image_cache.folder_digest(_entries(path, follow))
        else:
            source = image_cache.file_digest(path)
        target = image_cache.cache_file(cache_dir, image_cache.cache_key(source, size))
        arrays = image_cache.load(target)
        if arrays is not None:
            log.info(f"images of {path}: read from the cache {target}")
            return arrays
    start = time.perf_counter()
    arrays = decode_layout(read_layout(path, follow), size)
    n = len(arrays["train_labels"]) + len(arrays["test_labels"])
    log.info(f"images of {path}: {n} decoded in {time.perf_counter() - start:.1f} s")
    if target is not None and image_cache.save(target, arrays):
        log.info(f"images of {path}: cached in {target}")
    return arrays


# --- reading the layout ---------------------------------------------------------------------


def _skipped(name: str) -> bool:
    return any(part.startswith(".") or part in SKIPPED_FOLDERS for part in name.split("/"))


def _entries(path: Path, follow: bool = False) -> Iterator[tuple[str, bytes | None]]:
    """(relative posix path, content; None for a folder) of every entry of the folder or archive
    at ``path``, hidden ones skipped; a folder's in sorted order, an archive's as stored."""
    if path.is_dir():
        yield from _folder_entries(path, follow)
    elif zipfile.is_zipfile(path):
        yield from _zip_entries(path)
    else:
        yield from _tar_entries(path)


def _shown(name: str) -> str:
    """A name as a one-line message can show it."""
    return name if name.isprintable() else ascii(name)


def _folder_entries(path: Path, follow: bool) -> Iterator[tuple[str, bytes | None]]:
    for top, dirs, files in os.walk(path, followlinks=True):
        dirs[:] = sorted(d for d in dirs if not _skipped(d))
        rel = Path(top).relative_to(path).as_posix()
        prefix = "" if rel == "." else f"{rel}/"
        for d in dirs:
            _check_link(path, Path(top) / d, f"{prefix}{d}", follow)
            yield f"{prefix}{d}", None
        for name in sorted(files):
            if not _skipped(name):
                yield (
                    f"{prefix}{name}",
                    _read_file(path, Path(top) / name, f"{prefix}{name}", follow),
                )


def _check_link(root: Path, where: Path, name: str, follow: bool) -> None:
    """Refuse (DatasetUnavailable) the entry ``name`` of the folder ``root``, at ``where``, when
    it is a symlink to nothing, a folder that loops back above itself, or (unless ``follow``) a
    symlink leading outside ``root``; a name with a control character too."""
    if not name.isprintable():
        raise DatasetUnavailable(
            f"{_shown(name)} in {root}: a name with a control character; rename it"
        )
    real = where.resolve()
    if not real.exists():
        raise DatasetUnavailable(
            f"{name} in {root} is a symlink to {os.readlink(where)}, which does not exist; "
            "remove it or point it at the image"
        )
    if where.is_dir() and where.parent.resolve().is_relative_to(real):
        raise DatasetUnavailable(
            f"{name} in {root} is a symlink to {real}, a folder above it: a loop; remove it"
        )
    if not follow and not real.is_relative_to(root):
        raise DatasetUnavailable(
            f"{name} in {root} is a symlink to {real}, outside the folder; copy the images in, "
            "or set data.follow_symlinks=true to read it"
        )


def _read_file(root: Path, where: Path, name: str, follow: bool) -> bytes:
    _check_link(root, where, name, follow)
    try:
        return where.read_bytes()
    except OSError as exc:
        raise DatasetUnavailable(
            f"cannot read {name} in {root} ({exc.strerror or exc}); make it readable or remove it"
        ) from None


def _checked_name(raw: str, path: Path) -> str:
    """The archive entry name ``raw`` as the layout path it is ("" for the archive's own root
    entry); DatasetUnavailable where it is not one as written (module doc)."""
    name = raw[2:] if raw.startswith("./") else raw  # tar -C dir -cf x.tar . writes ./<name>
    name = name[:-1] if name.endswith("/") else name  # a folder entry
    if name in ("", "."):
        return ""
    slashed = name.replace("\\", "/")
    normal = posixpath.normpath(slashed)
    if not raw.isprintable():
        why = "a name with a control character"
    elif slashed.startswith("/") or re.match(r"[A-Za-z]:", name):
        why = "an absolute path"
    elif ".." in slashed.split("/"):
        why = "a path with '..'"
    elif normal != name:
        why = f"a path that normalises to {normal}"
    else:
        return name
    raise DatasetUnavailable(
        f"entry {_shown(raw)} in {path} is {why}; an archive must name each image by its plain "
        f"relative path ({LAYOUT}), as it is to be read"
    )


# What tarfile, zipfile and the decompressors raise on a damaged archive besides their own
# errors (found by the fuzzer, tests/data/test_data_image_folder_fuzz.py): TypeError for a header
# cut short, NotImplementedError for an unknown compression method, RuntimeError for an entry
# flagged as encrypted, ValueError for fields that do not parse.
DAMAGED = (
    tarfile.TarError,
    zipfile.BadZipFile,
    lzma.LZMAError,
    OSError,
    EOFError,
    zlib.error,
    TypeError,
    ValueError,
    NotImplementedError,
    RuntimeError,
)
# A tar's compression, by its first bytes. Read by these modules rather than tarfile's own
# stream reader: they check the stream's CRC at its end, which tarfile's never does.
DECOMPRESSORS = ((b"\x1f\x8b", gzip.open), (b"BZh", bz2.open), (b"\xfd7zXZ\x00", lzma.open))


def _damaged(path: Path, exc: BaseException) -> DatasetUnavailable:
    return DatasetUnavailable(f"cannot read the archive {path} ({_said(exc)}): damaged?")


def _said(exc: BaseException) -> str:
    return " ".join(str(exc).split()) or type(exc).__name__


class _StrictTarInfo(tarfile.TarInfo):
    """tarfile takes a damaged header after the first for the end of the archive, without a
    word, and the members after it are never read: here it is an error (tarfile raises a
    SubsequentHeaderError as a ReadError)."""

    @classmethod
    def frombuf(cls, buf: bytes, encoding: str, errors: str) -> tarfile.TarInfo:
        try:
            return super().frombuf(buf, encoding, errors)
        except tarfile.InvalidHeaderError as exc:
            raise tarfile.SubsequentHeaderError(f"a damaged member header ({exc})") from None


@contextlib.contextmanager
def _open_tar(path: Path) -> Iterator[tarfile.TarFile]:
    """The tar at ``path`` (compressed or not) as a stream: members in order, nothing unpacked."""
    try:
        with open(path, "rb") as f:
            magic = f.read(6)
        opener = next((o for m, o in DECOMPRESSORS if magic.startswith(m)), None)
        stream = (opener or open)(path, "rb")
    except DAMAGED as exc:
        raise _damaged(path, exc) from None
    with stream:
        try:
            # closed by the with below, once it reads
            archive = tarfile.open(fileobj=stream, mode="r|", tarinfo=_StrictTarInfo)  # noqa: SIM115
        except DAMAGED as exc:
            if opener is not None:  # a compressed file: what it holds is damaged
                raise _damaged(path, exc) from None
            raise DatasetUnavailable(
                f"{path} is neither a folder nor a .tar, .tar.gz or .zip archive ({_said(exc)}); "
                f"set data.root to a folder or archive holding {LAYOUT}"
            ) from None
        with archive:
            yield archive


def _tar_entries(path: Path) -> Iterator[tuple[str, bytes | None]]:
    try:
        with _open_tar(path) as archive:
            for member in archive:
                name = _checked_name(member.name, path)
                if not name or _skipped(name):
                    continue
                if member.isdir():
                    yield name, None
                elif member.isfile():
                    yield name, archive.extractfile(member).read()
                else:
                    raise DatasetUnavailable(
                        f"{name} in {path} is a link or special file; the archive must hold "
                        "plain files"
                    )
            _check_tar_end(archive, path)
    except DatasetUnavailable:
        raise
    except DAMAGED as exc:
        raise _damaged(path, exc) from None


def _check_tar_end(archive: tarfile.TarFile, path: Path) -> None:
    """tarfile ends the members at a zero block, or at the end of the data, without a word; a
    tar ends with two zero blocks, so what follows the members here must be the second of them
    (and zeros to the end, read to the end, where a compressed stream's CRC is checked), or the
    archive was cut or damaged and would be read short."""
    zeros = 0
    while block := archive.fileobj.read(CHUNK):
        if block.count(0) != len(block):
            break
        zeros += len(block)
    else:
        if zeros >= tarfile.BLOCKSIZE:
            return
    raise DatasetUnavailable(
        f"cannot read the archive {path} (its members end before its end-of-archive marker: "
        "cut, or a member's header damaged): damaged?"
    )


def _zip_entries(path: Path) -> Iterator[tuple[str, bytes | None]]:
    try:
        with zipfile.ZipFile(path) as archive:
            for info in archive.infolist():
                name = _checked_name(info.filename, path)
                if not name or _skipped(name):
                    continue
                yield name, None if info.is_dir() else archive.read(info)
    except DatasetUnavailable:
        raise
    except DAMAGED as exc:
        raise _damaged(path, exc) from None


def read_layout(path: Path, follow_symlinks: bool = False) -> Layout:
    """The classes and the encoded images of each split; DatasetUnavailable (one line) where the
    layout is not the one expected."""
    files: dict[str, bytes] = {}
    folders: set[str] = set()
    for name, data in _entries(path, follow_symlinks):
        if data is None:
            folders.add(name)
        elif name in files:  # a later copy would replace the first without a word
            raise DatasetUnavailable(
                f"{name} is in {path} twice; an archive must hold each image once"
            )
        else:
            files[name] = data
            parts = name.split("/")
            folders.update("/".join(parts[:i]) for i in range(1, len(parts)))
    base = _split_parent(path, files, folders)
    per_split: dict[str, dict[str, list[tuple[str, bytes]]]] = {}
    for split in SPLITS:
        top = f"{base}{split}"
        if top not in folders:
            raise DatasetUnavailable(
                f"{path} has no {top}/ folder (expected {LAYOUT}, at the top or under one "
                "top-level folder)"
            )
        found: dict[str, list[tuple[str, bytes]]] = {
            f[len(top) + 1 :]: [] for f in folders if posixpath.dirname(f) == top
        }
        for name, data in files.items():
            if not name.startswith(f"{top}/"):
                continue
            rel = name[len(top) + 1 :]
            if "/" not in rel:
                raise DatasetUnavailable(
                    f"{name} in {path} lies directly in {split}/; expected only class folders "
                    f"there ({split}/<class>/<image>)"
                )
            found[rel.split("/", 1)[0]].append((name, data))
        if not found:
            raise DatasetUnavailable(
                f"{top}/ in {path} holds no class folders (expected {split}/<class>/<image>)"
            )
        for cls, images in sorted(found.items()):
            if not images:
                raise DatasetUnavailable(
                    f"{top}/{cls}/ in {path} holds no images (each class needs at least one "
                    "image in train/ and in test/)"
                )
        per_split[split] = found
    train, test = set(per_split["train"]), set(per_split["test"])
    if train != test:
        only = [
            f"only in {s}/: {', '.join(sorted(names))}"
            for s, names in (("train", train - test), ("test", test - train))
            if names
        ]
        raise DatasetUnavailable(
            f"train/ and test/ in {path} have different class folders ({'; '.join(only)}); "
            "both splits need the same classes"
        )
    classes = tuple(sorted(train))
    layout = Layout(path, classes)
    for split, found in per_split.items():
        layout.files[split] = [
            (name, label, data)
            for label, cls in enumerate(classes)
            for name, data in sorted(found[cls])
        ]
    return layout


def _split_parent(path: Path, files: dict[str, bytes], folders: set[str]) -> str:
    """``""`` when train/ or test/ is at the top, ``"<folder>/"`` when they are under the one
    top-level folder; DatasetUnavailable otherwise."""
    tops = {name.split("/", 1)[0] for name in (*files, *folders)}
    if tops & set(SPLITS):
        return ""
    if len(tops) == 1 and (only := tops.pop()) in folders:
        return f"{only}/"
    shown = ", ".join(sorted(tops)[:5]) or "nothing"
    raise DatasetUnavailable(
        f"{path} has no train/ and test/ folders (found {shown} at the top; expected {LAYOUT}, at "
        "the top or under one top-level folder)"
    )


# --- decoding ---------------------------------------------------------------------------------


def decode_image(data: bytes) -> Image.Image:
    """The image ``data`` holds, loaded; raises what Pillow raises for anything else, and
    DecompressionBombWarning (an error here) above ``Image.MAX_IMAGE_PIXELS``: Pillow only warns
    between that limit and twice it, and such an image costs gigabytes to decode."""
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        image = Image.open(io.BytesIO(data))
        image.load()
    return image


def _pixels(image: Image.Image, size: int | None) -> np.ndarray:
    gray = image.mode in ("1", "L", "LA", "I", "I;16", "F")
    image = image.convert("L" if gray else "RGB")
    if size is not None:
        from torchvision.transforms import functional as tvf

        image = tvf.center_crop(tvf.resize(image, [size]), [size, size])
    pixels = np.asarray(image, dtype=np.uint8)
    return pixels[:, :, None] if gray else pixels


def decode_layout(layout: Layout, size: int | None) -> dict[str, np.ndarray]:
    """uint8 (N, H, W, C) images and int64 labels per split, the class names, and the training
    split's per-channel mean and std: the arrays the cache holds."""
    first: tuple[str, tuple[int, int]] | None = None
    decoded: dict[str, list[np.ndarray]] = {}
    for split in SPLITS:
        decoded[split] = []
        for name, _, data in layout.files[split]:
            try:
                image = decode_image(data)
            except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
                claimed = re.search(r"\((\d+) pixels\)", str(exc))
                size_said = f"{claimed.group(1)} pixels" if claimed else "more pixels"
                raise DatasetUnavailable(
                    f"{name} in {layout.root}: its header claims {size_said}, above Pillow's "
                    f"limit of {Image.MAX_IMAGE_PIXELS} (PIL.Image.MAX_IMAGE_PIXELS, against "
                    "decompression bombs); remove the file, or shrink the image"
                ) from None
            except UnidentifiedImageError:
                raise DatasetUnavailable(
                    f"{name} in {layout.root} is not an image Pillow can read; every file in a "
                    "class folder must be one (hidden files are skipped)"
                ) from None
            except (OSError, ValueError, SyntaxError) as exc:
                raise DatasetUnavailable(
                    f"{name} in {layout.root} cannot be decoded ({' '.join(str(exc).split())}); "
                    "every file in a class folder must be an image"
                ) from None
            if size is None:
                if first is None:
                    first = (name, image.size)
                elif image.size != first[1]:
                    (w0, h0), (w, h) = first[1], image.size
                    raise DatasetUnavailable(
                        f"images of different sizes in {layout.root} ({first[0]} is {w0}x{h0}, "
                        f"{name} is {w}x{h}, width x height); set data.image_size=N to resize "
                        "each shorter side to N and centre-crop N x N"
                    )
            decoded[split].append(_pixels(image, size))
    channels = max(p.shape[2] for split in SPLITS for p in decoded[split])
    arrays: dict[str, np.ndarray] = {}
    for split in SPLITS:
        # a grayscale image among colour ones becomes three equal channels
        images = decoded[split]
        images = [np.repeat(p, channels, axis=2) if p.shape[2] < channels else p for p in images]
        arrays[f"{split}_images"] = np.stack(images)
        arrays[f"{split}_labels"] = np.array([lab for _, lab, _ in layout.files[split]], np.int64)
    arrays["classes"] = np.array(layout.classes, dtype=str)
    arrays["mean"], arrays["std"] = channel_stats(arrays["train_images"])
    return arrays


def channel_stats(images: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-channel mean and (unbiased) standard deviation of uint8 ``images`` (N, H, W, C) as
    pixels in [0, 1], exact: from each channel's histogram, summed in Python integers (no float
    copy of the images, no rounding in the sums)."""
    n = images.size // images.shape[-1]
    values = np.arange(256, dtype=np.int64)
    means, stds = [], []
    for c in range(images.shape[-1]):
        counts = np.bincount(images[..., c].ravel(), minlength=256).astype(np.int64)
        total, squares = int(counts @ values), int(counts @ (values * values))
        means.append(total / (255 * n))
        variance = (n * squares - total * total) / (n * max(n - 1, 1))
        stds.append(variance**0.5 / 255)
    return np.array(means), np.array(stds)
