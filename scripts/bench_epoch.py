"""Training throughput: images per second of a training epoch, per optimizer and data path.

    python scripts/bench_epoch.py --device cpu --batch-size 32 --images 1024
    python scripts/bench_epoch.py --device cuda --batch-size 512 --amp --channels-last

The epoch runs the suite's own training loop (``drsom.training.loop.Trainer``) on a CIFAR-shaped
data set of random uint8 images (throughput does not depend on the pixels; this machine and the lent
GPU machines cannot download CIFAR-10), once with the data resident on the device
(crop/flip/shuffle there) and once on the host path. One short untimed epoch warms up kernels
(and torch.compile). The data path alone is timed too, so its share of the step time shows.
Results are printed and written to ``--out`` as Markdown and CSV.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

from drsom.data import DataBundle, EpochLoader
from drsom.data.cifar import CIFAR10_MEAN, CIFAR10_STD
from drsom.tools import checkout_root
from drsom.training.build import build_training, maybe_compile
from drsom.training.loop import Trainer

ROOT = checkout_root(__file__)


def compose(overrides: list[str]) -> dict:
    from drsom.cfg.compose import suite_config
    from drsom.store.identity import complete

    return complete(suite_config(overrides))


def synthetic(n: int, batch: int, device, resident: bool, channels_last: bool) -> DataBundle:
    g = torch.Generator().manual_seed(0)
    images = torch.randint(0, 256, (n, 32, 32, 3), dtype=torch.uint8, generator=g)
    labels = torch.randint(0, 10, (n,), generator=g)
    store = device if resident else torch.device("cpu")
    common = dict(mean=CIFAR10_MEAN, std=CIFAR10_STD, device=device, channels_last=channels_last)
    train = EpochLoader(
        images.to(store),
        labels.to(store),
        batch_size=batch,
        shuffle=True,
        crop_padding=4,
        flip=True,
        **common,
    )
    test = EpochLoader(
        images[:batch].to(store),
        labels[:batch].to(store),
        batch_size=batch,
        **common,
    )
    return DataBundle(train, test, 10, n, batch)


def sync(device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def data_seconds(loader: EpochLoader, device) -> float:
    """One pass of the data path alone (batches produced and moved, nothing trained)."""
    sync(device)
    start = time.perf_counter()
    for _batch in loader:
        pass
    sync(device)
    return time.perf_counter() - start


def bench(optimizer: str, resident: bool, args, device) -> dict:
    overrides = [
        f"model={args.model}",
        f"optimizer={optimizer}",
        f"trainer.batch_size={args.batch_size}",
        f"trainer.channels_last={str(args.channels_last).lower()}",
        f"trainer.amp={str(args.amp).lower()}",
    ]
    c = compose(overrides)
    torch.manual_seed(0)
    warm = synthetic(4 * args.batch_size, args.batch_size, device, resident, args.channels_last)
    data = synthetic(args.images, args.batch_size, device, resident, args.channels_last)
    model, opt, _ = build_training(c, device, data)
    net, compiled, _ = maybe_compile(model, opt, args.compile)
    autocast = None
    if args.amp:
        autocast = lambda: torch.autocast(device.type, torch.bfloat16)  # noqa: E731
    trainer = Trainer(model, opt, None, warm, epochs=2, net=net, autocast=autocast)
    trainer.train_epoch()  # warm-up (kernels, autotuning, compilation)
    trainer.data = data
    before = trainer.seconds["train"]
    row = trainer.train_epoch()
    seconds = trainer.seconds["train"] - before
    loading = data_seconds(data.train, device)
    return dict(
        optimizer=optimizer,
        path="device-resident" if resident else "host",
        compiled=compiled,
        images_per_s=args.images / seconds,
        epoch_s=seconds,
        data_share=loading / seconds,
        # the timed epoch's mean of a "trials" step diagnostic (DRSOM's); one trial otherwise
        trials=row.get("trials_mean", 1.0),
    )


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--batch-size", type=int, default=128)
    ap.add_argument("--images", type=int, default=50_000, help="images in the timed epoch")
    ap.add_argument(
        "--optimizers", nargs="*", default=["adam", "drsom", "drsom_adabelief", "drsom_hvp"]
    )
    paths = ["resident", "host"]
    ap.add_argument("--paths", nargs="*", default=paths, choices=paths)
    ap.add_argument("--amp", action="store_true", help="bf16 autocast")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--compile", action="store_true")
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks"))
    args = ap.parse_args()
    if args.threads:
        torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    rows = []
    for name in args.optimizers:
        for path in args.paths:
            row = bench(name, path == "resident", args, device)
            rows.append(row)
            print(
                f"{name:16s} {row['path']:16s} {row['images_per_s']:9.1f} img/s "
                f"epoch {row['epoch_s']:7.2f} s  data {100 * row['data_share']:.1f}%",
                file=sys.stderr,
                flush=True,
            )
    adam = {r["path"]: r["images_per_s"] for r in rows if r["optimizer"] == "adam"}
    cols = ["optimizer", "data path", "images/s", "epoch s", "x Adam time", "data share", "trials"]
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    csv = ["optimizer,path,images_per_s,epoch_s,x_adam_time,data_share,trials_per_step"]
    for r in rows:
        ratio = adam[r["path"]] / r["images_per_s"] if r["path"] in adam else float("nan")
        cells = [
            r["optimizer"] + (" (compiled)" if r["compiled"] else ""),
            r["path"],
            f"{r['images_per_s']:.1f}",
            f"{r['epoch_s']:.2f}",
            f"{ratio:.2f}",
            f"{100 * r['data_share']:.1f}%",
            f"{r['trials']:.2f}",
        ]
        lines.append("| " + " | ".join(cells) + " |")
        csv.append(",".join(c.rstrip("%") for c in cells))
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "CPU"
    threads = torch.get_num_threads()
    head = (
        f"{args.model}, batch {args.batch_size}, {args.images} CIFAR-shaped images per epoch, "
        f"{name}{'' if device.type == 'cuda' else f' ({threads} threads)'}"
        f"{', bf16 autocast' if args.amp else ''}{', channels_last' if args.channels_last else ''}"
        f"{', torch.compile' if args.compile else ''}; torch {torch.__version__}"
    )
    text = f"# Training epoch throughput\n\n{head}\n\n" + "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = f"{device.type}-{args.model}-b{args.batch_size}"
    tag += ("-bf16" if args.amp else "") + ("-compile" if args.compile else "")
    (out / f"epoch-{tag}.md").write_text(text)
    (out / f"epoch-{tag}.csv").write_text("\n".join(csv) + "\n")


if __name__ == "__main__":
    main()
