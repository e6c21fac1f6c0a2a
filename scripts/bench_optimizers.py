"""Time one training step (forward + backward + update) of every optimizer config, side by side.

    python scripts/bench_optimizers.py --model resnet18 --batch-size 32 --threads 2
    python scripts/bench_optimizers.py --device cuda --batch-size 128 --optimizers adam drsom

Each optimizer runs in its own subprocess (so peak RSS is its own on CPU), on one fixed
CIFAR-shaped batch, with ``max_trials=1`` for DRSOM (one trial: the cost structure; rejected
trials add forwards on top, see --trial-epochs). After warm-up steps the median of the timed
steps is reported, with peak memory (CUDA: max allocated; CPU: peak RSS of the subprocess), the
optimizer's state in parameter-sized units, and the oracle counts per step. Ratios are to Adam
measured in the same invocation. The table is printed and written to ``--out`` as Markdown and CSV.

``--trial-epochs N`` also trains every DRSOM config N epochs on the digits data (cnn, batch 64,
its configured max_trials) and reports the mean trials per step that real training needs.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))


def optimizer_config(name: str) -> dict:
    """The optimizer group of the composed run config (interpolations resolved)."""
    from hydra import compose, initialize_config_dir
    from omegaconf import OmegaConf

    with initialize_config_dir(str(ROOT / "configs"), version_base="1.3"):
        cfg = compose("config", overrides=[f"optimizer={name}"])
    from drsom.config import optimizer_kwargs

    opt = OmegaConf.to_container(cfg.optimizer, resolve=True)
    return {"name": opt["name"], **optimizer_kwargs(opt)}


def all_optimizers() -> list[str]:
    return sorted(p.stem for p in (ROOT / "configs" / "optimizer").glob("*.yaml"))


# ---------------------------------------------------------------------------------- worker
def worker(args) -> dict:
    import resource

    import torch
    from torch import nn

    from drsom.models import build_model
    from drsom.optim import build, make_closure, step_protocol

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    torch.manual_seed(0)
    model = build_model(args.model, 10).to(device)
    if args.channels_last:
        model = model.to(memory_format=torch.channels_last)
    x = torch.randn(args.batch_size, 3, 32, 32, device=device)
    y = torch.randint(0, 10, (args.batch_size,), device=device)
    if args.channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    cfg = optimizer_config(args.worker)
    name = cfg.pop("name")
    if name == "drsom":
        cfg["max_trials"] = 1
    opt = build(name, model.parameters(), **cfg)
    protocol = step_protocol(opt)
    autocast = (lambda: torch.autocast(device.type, torch.bfloat16)) if args.amp else None
    n_params = sum(p.numel() for p in model.parameters() if p.requires_grad)

    def step():
        closure = make_closure(model, nn.functional.cross_entropy, x, y, autocast=autocast)
        if protocol == "closure":
            opt.step(closure)
        else:
            opt.zero_grad(set_to_none=True)
            closure().backward(create_graph=protocol == "create_graph")
            opt.step()

    def sync():
        if device.type == "cuda":
            torch.cuda.synchronize()

    for _ in range(args.warmup):
        step()
    sync()
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats()
    counts0 = dict(getattr(opt, "counts", {}))
    times = []
    for _ in range(args.repeats):
        t = time.perf_counter()
        step()
        sync()
        times.append(time.perf_counter() - t)
    counts = getattr(opt, "counts", None)
    if counts:
        per = {k: (counts[k] - counts0[k]) / args.repeats for k in ("forward", "grad", "hvp")}
    else:
        hvp = {"adahessian": 1.0, "sophiah": 0.1}.get(name, 0.0)  # sophiah: every 10th step
        per = {"forward": 1.0, "grad": 1.0, "hvp": hvp}

    def tensors(obj):
        if isinstance(obj, torch.Tensor):
            yield obj
        elif isinstance(obj, dict):
            for v in obj.values():
                yield from tensors(v)

    # parameter-sized state only (RNG states and counters are not optimizer memory)
    state = sum(t.numel() for t in tensors(opt.state_dict()["state"]) if t.is_floating_point())
    if name == "drsom":  # the direction matrix (gradient row included) lives outside state_dict
        state += opt._R.numel() - opt._R[1:].numel()
    if device.type == "cuda":
        peak = torch.cuda.max_memory_allocated() / 2**20
    else:
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return dict(
        optimizer=args.worker,
        median_ms=1e3 * statistics.median(times),
        min_ms=1e3 * min(times),
        peak_mib=peak,
        state_buffers=state / n_params,
        **per,
    )


def trial_statistics(name: str, epochs: int) -> float:
    """Mean trials per step of a short real training run on the digits data."""
    import torch
    from torch import nn

    from drsom.data import build_data
    from drsom.models import build_model
    from drsom.optim import build, make_closure

    cfg = optimizer_config(name)
    cfg.pop("name")
    torch.manual_seed(0)
    data = build_data("digits", batch_size=64, seed=0)
    model = build_model("cnn", 10)
    opt = build("drsom", model.parameters(), **cfg)
    for epoch in range(epochs):
        data.train.set_epoch(epoch)
        for xb, yb in data.train:
            opt.step(make_closure(model, nn.functional.cross_entropy, xb, yb))
    return opt.counts["trials"] / opt.counts["steps"]


# ------------------------------------------------------------------------------ the driver
def machine(args) -> str:
    import torch

    if args.device.startswith("cuda"):
        desc = torch.cuda.get_device_name()
    else:
        cpu = platform.processor() or platform.machine()
        try:
            for line in Path("/proc/cpuinfo").read_text().splitlines():
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        except OSError:
            pass
        desc = f"{cpu}, {args.threads} threads"
    return f"{desc}; torch {torch.__version__}; python {platform.python_version()}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--optimizers", nargs="*", default=None, help="config names (default: all)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--amp", action="store_true", help="bf16 autocast")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--trial-epochs", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks"))
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.worker:
        print(json.dumps(worker(args)))
        return

    names = args.optimizers or all_optimizers()
    if "adam" not in names:
        names = ["adam", *names]
    rows = []
    for name in names:
        cmd = [sys.executable, __file__, "--worker", name]
        for flag in ("model", "batch_size", "threads", "device", "warmup", "repeats"):
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        cmd += ["--amp"] * args.amp + ["--channels-last"] * args.channels_last
        env = {**os.environ, "OMP_NUM_THREADS": str(args.threads)}
        done = subprocess.run(cmd, capture_output=True, text=True, env=env)
        if done.returncode:
            tail = done.stderr.strip().splitlines()[-1:] or ["?"]
            print(f"{name}: failed: {tail[0]}", file=sys.stderr)
            continue
        row = json.loads(done.stdout.strip().splitlines()[-1])
        if args.trial_epochs and optimizer_config(name)["name"] == "drsom":
            row["trials_per_step"] = trial_statistics(name, args.trial_epochs)
        rows.append(row)
        print(f"{name}: {row['median_ms']:.1f} ms", file=sys.stderr, flush=True)

    adam = next(r for r in rows if r["optimizer"] == "adam")
    cols = ["optimizer", "median ms", "x Adam", "peak MiB", "peak x Adam", "state (x params)"]
    cols += ["forward/step", "grad/step", "hvp/step"]
    cols += ["trials/step"] if args.trial_epochs else []
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    csv = [",".join(c.replace(" ", "_").replace("/", "_per_") for c in cols)]
    for r in rows:
        cells = [
            r["optimizer"],
            f"{r['median_ms']:.1f}",
            f"{r['median_ms'] / adam['median_ms']:.2f}",
            f"{r['peak_mib']:.0f}",
            f"{r['peak_mib'] / adam['peak_mib']:.2f}",
            f"{r['state_buffers']:.2f}",
            f"{r['forward']:.2g}",
            f"{r['grad']:.2g}",
            f"{r['hvp']:.2g}",
        ]
        if args.trial_epochs:
            t = r.get("trials_per_step")
            cells.append(f"{t:.2f}" if t is not None else "")
        lines.append("| " + " | ".join(cells) + " |")
        csv.append(",".join(cells))
    where = machine(args)
    head = (
        f"{args.model}, batch {args.batch_size}, {args.device}"
        f"{', bf16' if args.amp else ''}{', channels_last' if args.channels_last else ''}; "
        f"median of {args.repeats} steps after {args.warmup} warm-up; DRSOM max_trials=1"
    )
    text = f"# Optimizer step cost\n\n{head}\n\nMachine: {where}\n\n" + "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = f"{'cuda' if args.device.startswith('cuda') else 'cpu'}-{args.model}-b{args.batch_size}"
    tag += "-bf16" if args.amp else ""
    (out / f"optimizers-{tag}.md").write_text(text)
    (out / f"optimizers-{tag}.csv").write_text("\n".join(csv) + "\n")


if __name__ == "__main__":
    main()
