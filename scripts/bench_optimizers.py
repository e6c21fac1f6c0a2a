"""Time one training step (forward + backward + update) of every optimizer config, side by side.

    python scripts/bench_optimizers.py --model resnet18 --batch-size 32 --threads 2
    python scripts/bench_optimizers.py --device cuda --batch-size 128 --optimizers adam drsom

Each optimizer is timed in its own subprocess, on one fixed CIFAR-shaped batch, step by step
alternately with an Adam reference (same model, same batch), so both see the same machine load;
configs with a ``max_trials`` (DRSOM) run with ``max_trials=1`` (one trial: the cost structure;
rejected trials add forwards on top, see --trial-epochs). After warm-up steps the medians are
reported with their ratio, peak memory from a second subprocess holding that optimizer alone
(CUDA: max allocated; CPU: peak RSS), the optimizer's state in parameter-sized units, and the
oracle counts per step (``step_counts``). The table is printed and written to ``--out`` as
Markdown and CSV.

``--trial-epochs N`` also trains every config with a ``max_trials`` (DRSOM's) N epochs on the
digits data (cnn, batch 64, its configured max_trials) and reports the mean of its ``trials``
step diagnostic: the trials per step that real training needs.
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
from drsom import CONFIG_DIR  # noqa: E402


def optimizer_config(name: str) -> dict:
    """The optimizer group of the composed run config (interpolations resolved)."""
    from drsom.compose import suite_config

    return suite_config([f"optimizer={name}"])["optimizer"]


def model(name: str):
    """The suite's model config ``name`` for 10 classes of 32x32x3 images."""
    from drsom.compose import suite_config
    from drsom.models import build_model

    return build_model(suite_config([f"model={name}"])["model"], 10, (3, 32, 32))


def one_trial(cfg: dict) -> dict:
    """``cfg`` with one ratio-test trial per step, for an optimizer that has trials."""
    from drsom.targets import keywords, locate

    named, _ = keywords(locate("optimizer", cfg))
    return {**cfg, "max_trials": 1} if "max_trials" in named else cfg


def all_optimizers() -> list[str]:
    return sorted(p.stem for p in (CONFIG_DIR / "optimizer").glob("*.yaml"))


# ---------------------------------------------------------------------------------- worker
class Stepper:
    """A model, its optimizer and one fixed batch: ``step()`` is one training step."""

    def __init__(self, name: str, args, device):
        import torch
        from torch import nn

        from drsom.optim import make_closure, optimizer_factory, take_step

        torch.manual_seed(0)
        net = model(args.model).to(device)
        fmt = torch.channels_last if args.channels_last else torch.contiguous_format
        net = net.to(memory_format=fmt)
        x = torch.randn(args.batch_size, 3, 32, 32, device=device).contiguous(memory_format=fmt)
        y = torch.randint(0, 10, (args.batch_size,), device=device)
        # one trial per step: the cost structure (see the module doc)
        cfg = one_trial(optimizer_config(name))
        self.opt = opt = optimizer_factory(cfg)(net.parameters())
        self.params = sum(p.numel() for p in net.parameters() if p.requires_grad)
        autocast = (lambda: torch.autocast(device.type, torch.bfloat16)) if args.amp else None

        def step():
            closure = make_closure(net, nn.functional.cross_entropy, x, y, autocast=autocast)
            take_step(opt, closure)  # by the optimizer's protocol (backward, create_graph, closure)

        self.step = step


def worker(args) -> dict:
    """Time ``args.worker`` and Adam alternately, step by step, in one process.

    Alternating makes the ratio robust to whatever else the machine is doing: both see the same
    load. Peak memory comes from a separate ``--memory`` process holding one optimizer only.
    """
    import resource

    import torch

    from drsom.optim import ORACLES, state_numel, step_counts

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    if args.memory:
        run = Stepper(args.worker, args, device)
        for _ in range(args.warmup + 2):
            run.step()
        if device.type == "cuda":
            return {"peak_mib": torch.cuda.max_memory_allocated() / 2**20}
        return {"peak_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024}

    run, adam = Stepper(args.worker, args, device), Stepper("adam", args, device)

    def timed(fn) -> float:
        if device.type == "cuda":
            torch.cuda.synchronize()
        t = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize()
        return time.perf_counter() - t

    for _ in range(args.warmup):
        run.step()
        adam.step()
    opt = run.opt
    times, adam_times = [], []
    total = dict.fromkeys(ORACLES, 0)
    for _ in range(args.repeats):
        times.append(timed(run.step))
        adam_times.append(timed(adam.step))
        for key, n in step_counts(opt).items():  # what this step cost (e.g. Hutchinson HVPs)
            total[key] += n
    per = {key: n / args.repeats for key, n in total.items()}
    return dict(
        optimizer=args.worker,
        median_ms=1e3 * statistics.median(times),
        adam_ms=1e3 * statistics.median(adam_times),
        # floating-point state besides the parameters (RNG states and counters are not memory)
        state_buffers=state_numel(opt) / run.params,
        **per,
    )


def trial_statistics(name: str, epochs: int) -> float:
    """Mean trials per step of a short real training run on the digits data."""
    import torch
    from torch import nn

    from drsom.data import build_data
    from drsom.data.digits import digits
    from drsom.optim import make_closure, optimizer_factory, step_diagnostics, take_step

    torch.manual_seed(0)
    data = build_data(digits(), batch_size=64, seed=0)
    net = model("cnn")
    opt = optimizer_factory(optimizer_config(name))(net.parameters())
    trials = steps = 0
    for epoch in range(epochs):
        data.train.set_epoch(epoch)
        for xb, yb in data.train:
            take_step(opt, make_closure(net, nn.functional.cross_entropy, xb, yb))
            trials += step_diagnostics(opt)["trials"]
            steps += 1
    return trials / steps


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
    ap.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
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
        results = []
        for extra in ([], ["--memory"]):
            done = subprocess.run(cmd + extra, capture_output=True, text=True, env=env)
            if done.returncode:
                tail = done.stderr.strip().splitlines()[-1:] or ["?"]
                print(f"{name}: failed: {tail[0]}", file=sys.stderr)
                break
            results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        if len(results) < 2:
            continue
        row = {**results[0], **results[1]}
        cfg = optimizer_config(name)
        if args.trial_epochs and one_trial(cfg) != cfg:
            row["trials_per_step"] = trial_statistics(name, args.trial_epochs)
        rows.append(row)
        ratio = row["median_ms"] / row["adam_ms"]
        print(f"{name}: {row['median_ms']:.1f} ms, {ratio:.2f}x Adam", file=sys.stderr, flush=True)

    adam_peak = next(r["peak_mib"] for r in rows if r["optimizer"] == "adam")
    cols = ["optimizer", "median ms", "Adam ms", "x Adam", "peak MiB", "peak x Adam"]
    cols += ["state (x params)", "forward/step", "grad/step", "hvp/step"]
    cols += ["trials/step"] if args.trial_epochs else []
    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    csv = [",".join(c.replace(" ", "_").replace("/", "_per_") for c in cols)]
    for r in rows:
        cells = [
            r["optimizer"],
            f"{r['median_ms']:.1f}",
            f"{r['adam_ms']:.1f}",
            f"{r['median_ms'] / r['adam_ms']:.2f}",
            f"{r['peak_mib']:.0f}",
            f"{r['peak_mib'] / adam_peak:.2f}",
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
        f"median of {args.repeats} steps after {args.warmup} warm-up, each optimizer timed "
        f"alternately with Adam in one process (x Adam = the ratio of those medians); "
        f"DRSOM max_trials=1"
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
