"""Where an exact-HVP DRSOM step spends its time, against Adam and the autograd floor.

    python scripts/profile_hvp_step.py                      # 7 alternating rounds, the table
    python scripts/profile_hvp_step.py --rounds 3 --profile # and torch.profiler tables

One process, one model per contestant (the suite's ResNet-18 by default, built alike from one
seed), one fixed random CIFAR-shaped batch. After warm-up, every round takes one step of each
contestant in turn, so all see the same machine load:

* ``adam``, ``drsom_hvp`` and ``drsom_official``: the suite's optimizer configs, with
  ``max_trials=1`` (the cost structure; a rejected trial adds one forward each);
* ``floor``: what an exact-HVP step with two directions cannot avoid, in plain autograd: forward,
  gradient with ``create_graph=True``, two double-backward HVPs and one no-grad forward (the
  trial point).

Medians are in ms and as ``x Adam`` (ratio of the medians over the same rounds). ``--profile``
also runs torch.profiler over a few steps of ``drsom_hvp`` and of the floor and prints the top
ops by self CPU time and, for DRSOM, the time under each of its ``drsom::`` record_function
labels (drsom/optim/drsom.py). The table is written to ``--out`` as Markdown.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

from drsom.tools import checkout_root

ROOT = checkout_root(__file__)
sys.path.insert(0, str(ROOT / "scripts"))
import bench_optimizers as bench  # noqa: E402

OPTIMIZERS = ("adam", "drsom_hvp", "drsom_official")


def contestants(args) -> dict:
    """name -> (step function, optimizer or None): the optimizers and the floor."""
    import torch
    from torch import nn

    from drsom.optim import make_closure, optimizer_factory, take_step

    def batch():
        torch.manual_seed(0)
        net = bench.model(args.model)
        x = torch.randn(args.batch_size, 3, 32, 32)
        y = torch.randint(0, 10, (args.batch_size,))
        return net, x, y

    out = {}
    for name in OPTIMIZERS:
        net, x, y = batch()
        opt = optimizer_factory(bench.one_trial(bench.optimizer_config(name)))(net.parameters())
        out[name] = (
            lambda net=net, x=x, y=y, opt=opt: take_step(
                opt, make_closure(net, nn.functional.cross_entropy, x, y)
            ),
            opt,
        )

    net, x, y = batch()
    params = [p for p in net.parameters() if p.requires_grad]
    vectors = [[torch.randn_like(p) for p in params] for _ in range(2)]

    def floor():
        closure = make_closure(net, nn.functional.cross_entropy, x, y)
        grads = torch.autograd.grad(closure(), params, create_graph=True)
        torch.autograd.grad(grads, params, grad_outputs=vectors[0], retain_graph=True)
        torch.autograd.grad(grads, params, grad_outputs=vectors[1])
        with torch.no_grad():
            closure()

    out["floor"] = (floor, None)
    return out


def measure(runs: dict, rounds: int, warmup: int) -> dict:
    """Median seconds per step of each contestant, and the oracle counts of the DRSOM steps."""
    from drsom.optim import step_counts

    for _ in range(warmup):
        for step, _ in runs.values():
            step()
    times = {name: [] for name in runs}
    hvps = {name: [] for name in runs}
    for _ in range(rounds):
        for name, (step, opt) in runs.items():
            t = time.perf_counter()
            step()
            times[name].append(time.perf_counter() - t)
            hvps[name].append(step_counts(opt)["hvp"] if opt is not None else 2)
    return {
        name: (statistics.median(ts), statistics.mean(hvps[name])) for name, ts in times.items()
    }


def profile(runs: dict, steps: int, top: int) -> str:
    """torch.profiler tables over ``steps`` steps of drsom_hvp and of the floor."""
    from torch.profiler import ProfilerActivity
    from torch.profiler import profile as torch_profile

    text = []
    for name in ("drsom_hvp", "floor"):
        step = runs[name][0]
        with torch_profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(steps):
                step()
        events = prof.key_averages()
        total = sum(e.self_cpu_time_total for e in events) / 1e3 / steps
        text.append(f"## {name}: top ops by self CPU time ({total:.0f} ms per step, profiled)\n")
        text.append("| op | calls/step | self ms/step | share |\n|---|---|---|---|")
        for e in sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]:
            ms = e.self_cpu_time_total / 1e3 / steps
            text.append(f"| {e.key} | {e.count / steps:g} | {ms:.1f} | {ms / total:.1%} |")
        phases = [e for e in events if e.key.startswith("drsom::")]
        if phases:
            text.append(f"\n## {name}: phases (CPU time under each label, children included)\n")
            text.append("| phase | calls/step | ms/step | share |\n|---|---|---|---|")
            for e in sorted(phases, key=lambda e: -e.cpu_time_total):
                ms = e.cpu_time_total / 1e3 / steps
                text.append(f"| {e.key} | {e.count / steps:g} | {ms:.1f} | {ms / total:.1%} |")
        text.append("")
    return "\n".join(text)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--model", default="resnet18")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--rounds", type=int, default=7)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--profile", action="store_true", help="also print torch.profiler tables")
    ap.add_argument("--profile-steps", type=int, default=2)
    ap.add_argument("--top", type=int, default=20, help="ops listed per profile")
    ap.add_argument(
        "--out", default=str(ROOT / "results" / "benchmarks" / "hvp-step-cpu-resnet18-b32.md")
    )
    args = ap.parse_args()

    import torch

    torch.set_num_threads(args.threads)
    runs = contestants(args)
    before = bench.load_line()
    found = measure(runs, args.rounds, args.warmup)
    after = bench.load_line()
    adam = found["adam"][0]
    lines = ["| step | median ms | x Adam | HVPs/step |", "|---|---|---|---|"]
    for name, (t, hvp) in found.items():
        lines.append(f"| {name} | {1e3 * t:.1f} | {t / adam:.2f} | {hvp:.2g} |")
    args.device = "cpu"
    head = (
        f"{args.model}, batch {args.batch_size}, cpu; median of {args.rounds} rounds after "
        f"{args.warmup} warm-up, one step of each per round in one process (x Adam = ratio of "
        f"the medians); DRSOM max_trials=1; floor = forward + gradient with create_graph + two "
        f"double-backward HVPs + one no-grad forward"
    )
    text = (
        f"# Exact-HVP DRSOM step cost\n\n{head}\n\nMachine: {bench.machine(args)}\n\n"
        f"Load: before {before}; after {after}\n\n" + "\n".join(lines) + "\n"
    )
    if args.profile:  # the tables the Markdown file's reader needs to see where the time goes
        text += "\n" + profile(runs, args.profile_steps, args.top)
        text += f"\nload after profiling: {bench.load_line()}\n"
    print(text)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(text)


if __name__ == "__main__":
    main()
