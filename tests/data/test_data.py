"""Datasets and epoch loaders: the genuine CIFAR format, errors, determinism, augmentation."""

from __future__ import annotations

import pickle
import socket
import sys
import threading
import types
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import torch

# pytest puts tests/ on sys.path (no __init__.py there), so the fixture module imports directly.
from cifar_fixture import write_fake_cifar10, write_fake_cifar100

import drsom.data.cifar as cifar_module
from drsom.data import DataBundle, DatasetUnavailable, EpochLoader, build_data
from drsom.data.cifar import CIFAR10_MEAN, CIFAR10_STD, cifar10, cifar100
from drsom.data.digits import digits as load_digits

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def cifar500_root(tmp_path_factory) -> Path:
    """A fake CIFAR-10 larger than conftest's (500 train, 100 test): room for real batches."""
    return write_fake_cifar10(tmp_path_factory.mktemp("cifar500"), n_train=500, n_test=100)


@pytest.fixture(scope="module")
def digits() -> DataBundle:
    pytest.importorskip("sklearn")
    return build_data(load_digits(), batch_size=256, augment=False)


def fake_cifar(root, **kw) -> DataBundle:
    return build_data(cifar10(root, verify=False, download=False), **kw)


def batches(loader) -> list[tuple[torch.Tensor, torch.Tensor]]:
    return [(x.cpu(), y.cpu()) for x, y in loader]


def to_uint8(x: torch.Tensor, mean=CIFAR10_MEAN, std=CIFAR10_STD) -> torch.Tensor:
    m = torch.tensor(mean).view(1, 3, 1, 1)
    s = torch.tensor(std).view(1, 3, 1, 1)
    return (x.cpu() * s * 255 + m * 255).round().to(torch.int64)


# --- reading CIFAR ----------------------------------------------------------------------------


def test_fake_cifar10_reads_back_exactly(cifar500_root):
    bundle = fake_cifar(cifar500_root, batch_size=128, test_batch_size=64)
    assert (bundle.num_train, bundle.num_test, bundle.num_classes) == (500, 100, 10)
    assert len(bundle.train) == 4 and len(bundle.test) == 2

    # The test split, in order and unaugmented, must be the file's pixels (CHW planes) exactly.
    with open(cifar500_root / "cifar-10-batches-py" / "test_batch", "rb") as f:
        raw = pickle.load(f, encoding="bytes")
    expected = torch.from_numpy(raw[b"data"].reshape(-1, 3, 32, 32).astype(np.int64))
    got = batches(bundle.test)
    assert [len(y) for _, y in got] == [64, 36]
    x = torch.cat([b[0] for b in got])
    assert x.dtype == torch.float32 and x.shape == (100, 3, 32, 32)
    assert torch.equal(to_uint8(x), expected)
    assert torch.cat([b[1] for b in got]).tolist() == raw[b"labels"]


def test_train_epoch_covers_every_example_once_and_keeps_the_last_partial_batch(cifar500_root):
    bundle = fake_cifar(cifar500_root, batch_size=128, augment=False)
    got = batches(bundle.train)
    assert [len(y) for _, y in got] == [128, 128, 128, 116]
    assert all(y.dtype == torch.int64 for _, y in got)
    raw_images, raw_labels = [], []
    for i in range(1, 6):
        with open(cifar500_root / "cifar-10-batches-py" / f"data_batch_{i}", "rb") as f:
            part = pickle.load(f, encoding="bytes")
        raw_images.append(torch.from_numpy(part[b"data"].astype(np.int64)))
        raw_labels += part[b"labels"]
    # Shuffled, so compare (image, label) pairs as multisets through a collision-unlikely key.
    weights = torch.randint(1, 2**20, (3072,), generator=torch.Generator().manual_seed(0))

    def keys(images, labels):
        return (images @ weights * 10 + labels).sort().values

    seen = keys(to_uint8(torch.cat([x for x, _ in got])).flatten(1), torch.cat([y for _, y in got]))
    assert torch.equal(seen, keys(torch.cat(raw_images), torch.tensor(raw_labels)))


def test_fake_cifar100_reads(tmp_path):
    write_fake_cifar100(tmp_path, n_train=200, n_test=50)
    bundle = build_data(cifar100(tmp_path, verify=False, download=False))
    assert (bundle.num_train, bundle.num_test, bundle.num_classes) == (200, 50, 100)
    x, y = next(iter(bundle.train))
    assert x.shape == (128, 3, 32, 32) and int(y.max()) < 100


def test_verify_true_rejects_a_copy_that_fails_md5(cifar500_root):
    with pytest.raises(DatasetUnavailable) as info:
        cifar10(cifar500_root, download=False)
    msg = str(info.value)
    assert "MD5" in msg and "data.verify=false" in msg
    assert "\n" not in msg


def test_missing_dataset_without_download_says_where_it_looked(tmp_path):
    with pytest.raises(DatasetUnavailable) as info:
        cifar10(tmp_path / "nowhere", download=False)
    msg = str(info.value)
    assert str((tmp_path / "nowhere").resolve()) in msg
    assert "data.root" in msg and "cifar-10-batches-py" in msg
    assert "\n" not in msg


def test_missing_dataset_with_unreachable_host_fails_fast(tmp_path, monkeypatch):
    monkeypatch.setattr(cifar_module, "_host_answers", lambda host, port, timeout: False)
    with pytest.raises(DatasetUnavailable) as info:
        cifar10(tmp_path, download=True)
    assert str(tmp_path.resolve()) in str(info.value) and "data.root" in str(info.value)


def test_download_network_error_becomes_dataset_unavailable(tmp_path, monkeypatch):
    seen_timeouts = []

    def failing_download(self):
        seen_timeouts.append(socket.getdefaulttimeout())
        raise urllib.error.URLError("no route to host")

    monkeypatch.setattr(cifar_module, "_host_answers", lambda host, port, timeout: True)
    monkeypatch.setattr(cifar_module.CIFAR10, "download", failing_download)
    before = socket.getdefaulttimeout()
    with pytest.raises(DatasetUnavailable, match="no route to host") as info:
        cifar10(tmp_path, download=True)
    assert "data.root" in str(info.value)
    assert seen_timeouts == [cifar_module.SOCKET_TIMEOUT]  # the attempt ran under a socket timeout
    assert socket.getdefaulttimeout() == before  # and the process default was restored


def test_host_probe_answers_false_as_soon_as_the_connection_is_refused(monkeypatch):
    # A refusal must end the probe's wait at once, not when the timeout runs out: the wait on
    # the probe's event has to return True (set by the probe), never False (timed out).
    def refuse(address, timeout):
        raise ConnectionRefusedError(111, "Connection refused")

    waits: list[bool] = []

    class RecordingEvent(threading.Event):
        def wait(self, timeout=None):
            waits.append(super().wait(timeout))
            return waits[-1]

    monkeypatch.setattr(cifar_module.socket, "create_connection", refuse)
    # Only the probe's module sees the recording event (Thread.start waits on one of its own).
    probe_threading = types.SimpleNamespace(Event=RecordingEvent, Thread=threading.Thread)
    monkeypatch.setattr(cifar_module, "threading", probe_threading)
    assert cifar_module._host_answers("127.0.0.1", 1, timeout=20.0) is False
    assert waits == [True]


# --- argument errors ----------------------------------------------------------------------------


def test_bad_sizes_are_value_errors(cifar500_root):
    with pytest.raises(ValueError, match="batch_size"):
        fake_cifar(cifar500_root, batch_size=0)
    with pytest.raises(ValueError, match="train_subset"):
        fake_cifar(cifar500_root, train_subset=501)


# --- epochs: determinism and resume ------------------------------------------------------------


def test_epoch_batches_are_a_function_of_seed_and_epoch_only(cifar500_root):
    a = fake_cifar(cifar500_root, batch_size=64, seed=3).train
    b = fake_cifar(cifar500_root, batch_size=64, seed=3).train
    a.set_epoch(5)
    torch.manual_seed(123)  # the global RNG must not matter
    first = batches(a)
    torch.manual_seed(999)
    torch.rand(1000)
    b.set_epoch(5)
    second = batches(b)
    for (x1, y1), (x2, y2) in zip(first, second, strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)

    a.set_epoch(6)
    other_epoch = batches(a)
    assert not torch.equal(first[0][0], other_epoch[0][0])
    c = fake_cifar(cifar500_root, batch_size=64, seed=4).train
    c.set_epoch(5)
    assert not torch.equal(first[0][0], batches(c)[0][0])


def test_resume_sees_what_an_uninterrupted_run_sees(cifar500_root):
    uninterrupted = fake_cifar(cifar500_root, batch_size=100).train
    epochs = [batches(uninterrupted) for _ in range(3)]  # passes advance the epoch: 0, 1, 2
    resumed = fake_cifar(cifar500_root, batch_size=100).train
    resumed.set_epoch(2)
    for (x1, y1), (x2, y2) in zip(epochs[2], batches(resumed), strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)
    assert not torch.equal(epochs[0][0][1], epochs[1][0][1])


@pytest.mark.parametrize(
    "kw", [{"gpu_resident": True}, {"num_workers": 2}, {"channels_last": True}]
)
def test_all_cpu_paths_give_identical_batches(cifar500_root, kw):
    reference = fake_cifar(cifar500_root, batch_size=96, gpu_resident=False)
    variant = fake_cifar(cifar500_root, batch_size=96, **kw)
    for loader in ("train", "test"):
        got = batches(getattr(variant, loader))
        for (x1, y1), (x2, y2) in zip(batches(getattr(reference, loader)), got, strict=True):
            assert torch.equal(x1, x2) and torch.equal(y1, y2)
    if kw.get("channels_last"):
        x, _ = next(iter(variant.train))
        assert x.is_contiguous(memory_format=torch.channels_last)


def test_test_loader_is_in_order_and_unaffected_by_epoch(cifar500_root):
    test = fake_cifar(cifar500_root, test_batch_size=30).test
    first = batches(test)
    test.set_epoch(7)
    for (x1, y1), (x2, y2) in zip(first, batches(test), strict=True):
        assert torch.equal(x1, x2) and torch.equal(y1, y2)


# --- augmentation statistics ------------------------------------------------------------------


def coordinate_loader(device: str, num_workers: int, n: int = 4000, flip: bool = True):
    """Images whose red = 100 + row, green = 100 + column, so each output reveals its crop/flip."""
    rows = torch.arange(32).view(1, 32, 1).expand(n, 32, 32)
    cols = torch.arange(32).view(1, 1, 32).expand(n, 32, 32)
    images = torch.stack([100 + rows, 100 + cols, torch.full_like(rows, 50)], dim=-1)
    ids = torch.arange(n)  # targets double as example ids
    return EpochLoader(
        images.to(torch.uint8).to(device),
        ids.to(device),
        mean=CIFAR10_MEAN,
        std=CIFAR10_STD,
        batch_size=512,
        shuffle=True,
        crop_padding=4,
        flip=flip,
        seed=11,
        device=device,
        num_workers=num_workers,
    )


def recover(loader) -> dict[str, torch.Tensor]:
    xs, ids = zip(*batches(loader), strict=True)
    u8 = to_uint8(torch.cat(xs))
    red, green = u8[:, 0], u8[:, 1]
    flipped = green[:, 16, 17] < green[:, 16, 16]
    return {
        "ids": torch.cat(ids),
        "shift_y": red[:, 16, 16] - 116,
        "shift_x": torch.where(flipped, green[:, 16, 16] - 115, green[:, 16, 16] - 116),
        "flipped": flipped,
        "u8": u8,
    }


@pytest.mark.parametrize(
    ("device", "workers"), [(d, 0) for d in DEVICES] + [("cpu", 2)], ids=lambda v: str(v)
)
def test_crop_and_flip_statistics(device, workers):
    got = recover(coordinate_loader(device, workers))
    n = len(got["ids"])
    assert torch.equal(got["ids"].sort().values, torch.arange(n))  # a permutation
    assert abs(got["flipped"].float().mean().item() - 0.5) < 0.04
    for key in ("shift_y", "shift_x"):
        counts = torch.bincount(got[key] + 4, minlength=9)
        assert len(counts) == 9, f"{key} outside [-4, 4]"
        freq = counts.float() / n
        assert (freq - 1 / 9).abs().max() < 0.03, (key, freq)
    # the two offsets and the flip are drawn independently
    assert abs(torch.corrcoef(torch.stack([got["shift_x"], got["shift_y"]]).float())[0, 1]) < 0.06
    # the padding is black: an image shifted down by 4 starts with 4 zero rows (all channels)
    down = got["shift_y"] == -4
    assert down.any() and (got["u8"][down][:, :, :4, :] == 0).all()
    # a flipped image's green channel decreases along a row, as a mirror image must
    f = got["flipped"]
    assert (got["u8"][f][:, 1, 16, 5:27].diff(dim=-1) == -1).all()
    assert (got["u8"][~f][:, 1, 16, 5:27].diff(dim=-1) == 1).all()


def test_flip_off_never_mirrors():
    got = recover(coordinate_loader("cpu", 0, n=1000, flip=False))
    assert not got["flipped"].any()
    assert len(torch.unique(got["shift_x"])) == 9


def test_plan_is_drawn_on_the_host_so_devices_agree():
    # The GPU-resident path uses the same host-drawn plan, so it replays the CPU batches.
    loader = coordinate_loader("cpu", 0, n=100)
    p1, p2 = loader.plan(3), loader.plan(3)
    assert all(torch.equal(p1[k], p2[k]) and p1[k].device.type == "cpu" for k in p1)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_gpu_resident_matches_cpu_batches(cifar500_root):
    cpu = fake_cifar(cifar500_root, batch_size=64, channels_last=True)
    gpu = fake_cifar(cifar500_root, batch_size=64, device="cuda", channels_last=True)
    for (x1, y1), (x2, y2) in zip(batches(cpu.train), batches(gpu.train), strict=True):
        torch.testing.assert_close(x1, x2)
        assert torch.equal(y1, y2)


# --- subsets ------------------------------------------------------------------------------------


def test_train_subset_is_a_fixed_nested_prefix(cifar500_root):
    small = fake_cifar(cifar500_root, train_subset=50, augment=False, batch_size=500)
    large = fake_cifar(cifar500_root, train_subset=120, augment=False, batch_size=500, seed=9)
    assert small.num_train == 50 and large.num_train == 120 and len(small.train) == 1
    assert small.num_test == 100  # the test set is never subset
    ((xs, _),) = batches(small.train)
    ((xl, _),) = batches(large.train)
    # every image of the 50-subset is in the 120-subset, whatever the run seed
    diff = (xs[:, None] - xl[None]).abs().flatten(2).amax(-1)
    assert (diff.min(dim=1).values == 0).all()


def images_of(loader) -> torch.Tensor:
    """Every image of an unaugmented loader, as the uint8 pixels it was read as, flattened."""
    return torch.cat([to_uint8(x).flatten(1) for x, _ in batches(loader)])


def rows_in(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """For each row of a: is it a row of b (the fake images are random, so rows identify).

    Rows are compared by their bytes: a pairwise difference of 450 x 500 images was 18 s.
    """
    known = {row.numpy().tobytes() for row in b.contiguous()}
    return torch.tensor([row.numpy().tobytes() in known for row in a.contiguous()])


def test_validation_split_is_held_out_and_fixed_whatever_the_subset_and_seed(cifar500_root):
    whole = fake_cifar(cifar500_root, val_size=50, augment=False, batch_size=500)
    other = fake_cifar(cifar500_root, val_size=50, train_subset=100, augment=False, seed=9)
    assert (whole.num_train, whole.num_val, whole.num_test) == (450, 50, 100)
    assert (other.num_train, other.num_val) == (100, 50)
    val, train, everything = images_of(whole.val), images_of(whole.train), None
    everything = images_of(fake_cifar(cifar500_root, augment=False, batch_size=500).train)
    assert not rows_in(val, train).any()  # held out: never trained on
    assert rows_in(val, everything).all() and rows_in(train, everything).all()
    assert torch.equal(images_of(other.val), val)  # the same 50 for a subset and another seed
    assert rows_in(images_of(other.train), train).all()
    # the held-out 50 are the last of the subset permutation: val_size=0 keeps train_subset's
    # first-N prefix as it was, and a subset never reaches into the validation split
    assert not rows_in(images_of(fake_cifar(cifar500_root, train_subset=450).train), val).any()
    assert whole.fingerprint != fake_cifar(cifar500_root, val_size=49).fingerprint


def test_val_size_fraction_and_the_train_eval_slice(digits, cifar500_root):
    pytest.importorskip("sklearn")
    split = build_data(load_digits(), val_size=0.1, augment=True, batch_size=256)
    assert (split.num_train, split.num_val, split.num_test) == (1212, 135, 450)  # 134.7 -> 135
    assert split.val is not None and digits.val is None and digits.num_val == 0
    # train_eval: as many training images as the test set, unaugmented, the same every epoch
    data = fake_cifar(cifar500_root, val_size=50, augment=True)
    slice_ = images_of(data.train_eval)
    assert (
        slice_.shape[0] == 100
        and rows_in(
            slice_, images_of(fake_cifar(cifar500_root, val_size=50, augment=False).train)
        ).all()
    )
    data.train_eval.set_epoch(3)
    assert torch.equal(images_of(data.train_eval), slice_)
    small = fake_cifar(cifar500_root, train_subset=30)
    assert sum(len(y) for _, y in small.train_eval) == 30  # a training split under the test size


@pytest.mark.parametrize(
    ("val_size", "message"),
    [
        (-1, "data.val_size must be an integer count >= 0 or a fraction in \\(0, 1\\), got -1"),
        (1.5, "got 1.5"),
        (True, "got True"),
        ("10%", "got '10%'"),
        (500, "holds out 500 of the 500 training examples, leaving none to train on"),
    ],
)
def test_bad_val_size_is_one_line(cifar500_root, val_size, message):
    with pytest.raises(ValueError, match=message):
        fake_cifar(cifar500_root, val_size=val_size)


def test_train_subset_counts_what_the_validation_split_leaves(cifar500_root):
    with pytest.raises(ValueError, match="train_subset=451 exceeds the 450 .*50 held out"):
        fake_cifar(cifar500_root, val_size=50, train_subset=451)


# --- digits -------------------------------------------------------------------------------------


def test_digits_shapes_split_and_classes(digits):
    assert (digits.num_train, digits.num_test, digits.num_classes) == (1347, 450, 10)
    x, y = next(iter(digits.train))
    assert x.shape == (256, 3, 32, 32) and x.dtype == torch.float32
    assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 0], x[:, 2])
    test_labels = torch.cat([y for _, y in batches(digits.test)])
    train_labels = torch.cat([y for _, y in batches(digits.train)])
    # stratified: each class's share of the test set matches its share of the whole
    total = torch.bincount(torch.cat([train_labels, test_labels]), minlength=10).float()
    expected = total * 450 / 1797
    assert (torch.bincount(test_labels, minlength=10).float() - expected).abs().max() <= 1


def test_digits_training_set_is_normalised(digits):
    x = torch.cat([x for x, _ in batches(digits.train)])
    assert abs(x.mean().item()) < 1e-3
    assert abs(x.std().item() - 1) < 1e-3
    assert x.amax() > 2  # real strokes, not a blank image


def test_digits_augment_crops_but_does_not_flip():
    pytest.importorskip("sklearn")
    train = build_data(load_digits(), batch_size=64).train
    assert train.crop_padding == 4 and train.flip is False


def test_digits_without_sklearn_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "sklearn.datasets", None)
    with pytest.raises(DatasetUnavailable, match=r"drsom\[digits\]"):
        load_digits()


@pytest.mark.parametrize("processes", [2, 3])
def test_the_shards_of_a_global_batch_are_the_one_process_batch_in_order(cifar500_root, processes):
    # 450 training images in batches of 64: a last batch of 2 (shards 1, 1 / 0, 1, 1 images)
    whole = fake_cifar(cifar500_root, batch_size=64, seed=3, val_size=50).train
    shards = [
        fake_cifar(cifar500_root, batch_size=64, seed=3, val_size=50, shard=(r, processes)).train
        for r in range(processes)
    ]
    for loader in (whole, *shards):
        loader.set_epoch(4)
    per_rank = [batches(s) for s in shards]
    assert all(len(b) == len(whole) for b in per_rank)
    for i, (x, y) in enumerate(batches(whole)):
        parts = [b[i] for b in per_rank]
        assert torch.equal(torch.cat([p[0] for p in parts]), x)
        assert torch.equal(torch.cat([p[1] for p in parts]), y)
        sizes = [len(p[1]) for p in parts]
        assert max(sizes) - min(sizes) <= 1 and sum(sizes) == whole.global_size(i) == len(y)
