"""Data-parallel scaling: one process against two, per optimizer, and what DRSOM's reductions cost.

    OMP_NUM_THREADS=1 python scripts/bench_data_parallel.py   # this CPU: gloo, a thread each
    python scripts/bench_data_parallel.py --device cuda --processes 2   # a GPU machine: NCCL

Each optimizer trains the suite's training loop (``drsom.training.loop.Trainer``, the runner's own
path: sharded global batches, DRSOM with ``reduce=mean_over()`` on the bare module, first-order
optimizers in ``DistributedDataParallel``) on CIFAR-shaped random images (speed does not depend
on the pixels), global batch ``--batch-size``, three ways, one after the other in one launch:

* ``1 x B``: one process on the global batch;
* ``1 x B/P``: one process on one shard (what each process computes, with no one to talk to);
* ``P x B/P``: P processes (gloo on CPUs, NCCL on GPUs; ``file://`` rendezvous).

``P x B/P`` minus ``1 x B/P`` is what data parallelism adds per step (all-reduces and waiting for
the slower process); DRSOM's own all-reduces are counted and timed (they block, so their time is
their cost). One untimed epoch warms up first. Written to ``--out`` as Markdown and CSV.
"""

from __future__ import annotations

import argparse
import datetime
import os
import sys
import tempfile
import time
from pathlib import Path

import torch
import torch.distributed as dist
import torch.multiprocessing as mp

from drsom.data import DataBundle, EpochLoader
from drsom.data.cifar import CIFAR10_MEAN, CIFAR10_STD
from drsom.models import build_model
from drsom.optim import optimizer_factory
from drsom.optim.distributed import mean_over
from drsom.tools import checkout_root
from drsom.training.build import data_parallel
from drsom.training.loop import Trainer
from drsom.training.world import World

ROOT = checkout_root(__file__)
OPTIMIZERS = ("adam", "sgd", "drsom_adaptive", "drsom")


class Timed:
    """A ``reduce`` that counts its calls and the seconds spent in them."""

    def __init__(self, reduce) -> None:
        self.reduce, self.calls, self.seconds = reduce, 0, 0.0

    def __call__(self, tensor: torch.Tensor) -> None:
        start = time.perf_counter()
        self.reduce(tensor)
        if tensor.is_cuda:
            torch.cuda.synchronize(tensor.device)
        self.seconds += time.perf_counter() - start
        self.calls += 1


def synthetic(images: int, batch: int, device, shard: tuple[int, int]) -> DataBundle:
    g = torch.Generator().manual_seed(0)
    x = torch.randint(0, 256, (images, 32, 32, 3), dtype=torch.uint8, generator=g)
    y = torch.randint(0, 10, (images,), generator=g)
    common = dict(mean=CIFAR10_MEAN, std=CIFAR10_STD, device=device, shard=shard)
    train = EpochLoader(x, y, batch_size=batch, shuffle=True, crop_padding=4, flip=True, **common)
    test = EpochLoader(x[:batch], y[:batch], batch_size=batch, **common)
    return DataBundle(train, test, 10, images, batch)


def measure(rank: int, args, optimizer: str, processes: int, batch: int, out: str) -> None:
    from drsom.cfg.compose import suite_config

    torch.set_num_threads(args.threads)
    device = torch.device(args.device if args.device == "cpu" else f"cuda:{rank}")
    world = World()
    if processes > 1:
        backend = "nccl" if device.type == "cuda" else "gloo"
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group(
            backend,
            init_method=f"file://{out}.rendezvous",
            rank=rank,
            world_size=processes,
            timeout=datetime.timedelta(seconds=120),
        )
        world = World(rank=rank, size=processes, backend=backend)
    c = suite_config([f"optimizer={optimizer}", f"model={args.model}"])
    torch.manual_seed(0)
    model = build_model(c["model"], 10, (3, 32, 32)).to(device)
    factory = optimizer_factory(c["optimizer"])
    timed = Timed(mean_over()) if processes > 1 and factory.reduces else None
    opt = factory(model.parameters(), **({"reduce": timed} if timed else {}))
    data = synthetic(args.images, batch, device, (rank, processes))
    trainer = Trainer(model, opt, None, data, epochs=2, world=world)
    data_parallel(trainer)
    trainer.train_epoch()  # warm-up
    before, counts = trainer.seconds["train"], dict(trainer.counts)
    calls, spent = (timed.calls, timed.seconds) if timed else (0, 0.0)
    trainer.epoch = 1
    trainer.train_epoch()
    steps = len(data.train)
    row = {
        "ms_per_step": 1e3 * (trainer.seconds["train"] - before) / steps,
        "forwards_per_step": (trainer.counts["forward"] - counts["forward"]) / steps,
        "reduces_per_step": ((timed.calls - calls) / steps) if timed else 0.0,
        "reduce_ms_per_step": (1e3 * (timed.seconds - spent) / steps) if timed else 0.0,
    }
    if rank == 0:
        torch.save(row, out)
    if processes > 1:
        dist.barrier()
        dist.destroy_process_group()


def run(args, optimizer: str, processes: int, batch: int) -> dict:
    with tempfile.TemporaryDirectory() as tmp:
        out = str(Path(tmp) / "row.pt")
        if processes == 1:
            measure(0, args, optimizer, 1, batch, out)
        else:
            mp.spawn(measure, args=(args, optimizer, processes, batch, out), nprocs=processes)
        return torch.load(out)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--images", type=int, default=2560, help="images per timed epoch")
    parser.add_argument("--model", default="cnn")
    parser.add_argument("--threads", type=int, default=1, help="torch threads per process")
    parser.add_argument("--optimizers", default=",".join(OPTIMIZERS))
    parser.add_argument("--out", type=Path, default=ROOT / "results" / "benchmarks")
    args = parser.parse_args(argv)
    p, b = args.processes, args.batch_size
    if b % p:
        sys.exit(f"error: --batch-size {b} does not split over {p} processes")
    rows = []
    for name in args.optimizers.split(","):
        whole, alone, split = (
            run(args, name, n, size) for n, size in ((1, b), (1, b // p), (p, b))
        )
        rows.append(
            {
                "optimizer": name,
                f"1x{b} ms/step": whole["ms_per_step"],
                f"1x{b // p} ms/step": alone["ms_per_step"],
                f"{p}x{b // p} ms/step": split["ms_per_step"],
                "speed-up": whole["ms_per_step"] / split["ms_per_step"],
                "added ms/step": split["ms_per_step"] - alone["ms_per_step"],
                "forwards/step": split["forwards_per_step"],
                "own all-reduces/step": split["reduces_per_step"],
                "in own all-reduces ms/step": split["reduce_ms_per_step"],
            }
        )
        print(rows[-1], flush=True)
    adam = next((r for r in rows if r["optimizer"] == "adam"), None)
    for r in rows:
        r["added / Adam's added"] = r["added ms/step"] / adam["added ms/step"] if adam else None
    write(rows, args)


def write(rows: list[dict], args) -> None:
    import csv

    tag = f"data-parallel-{args.device}-{args.model}-b{args.batch_size}-p{args.processes}"
    args.out.mkdir(parents=True, exist_ok=True)
    with open(args.out / f"{tag}.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    keys = list(rows[0])
    lines = [
        f"# Data-parallel scaling: {args.model}, global batch {args.batch_size}, "
        f"{args.processes} processes, {args.device}, {args.threads} thread(s) each",
        "",
        f"`{' '.join(['python scripts/bench_data_parallel.py', *sys.argv[1:]])}`; "
        f"torch {torch.__version__}, {os.cpu_count()} CPUs; {args.images} images per timed epoch "
        "after an untimed one. `added` = the processes' step minus one process on one shard "
        "alone; `own all-reduces`: DRSOM's reductions (DDP's gradient all-reduce is inside "
        "`added` for the first-order optimizers).",
        "",
        "| " + " | ".join(keys) + " |",
        "| " + " | ".join("---" for _ in keys) + " |",
    ]
    for r in rows:
        cells = [v if isinstance(v, str) else "" if v is None else f"{v:.3g}" for v in r.values()]
        lines.append("| " + " | ".join(cells) + " |")
    (args.out / f"{tag}.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
