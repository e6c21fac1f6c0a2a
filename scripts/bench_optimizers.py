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

``--oracle-weights PATH`` instead measures what one oracle call costs relative to a gradient, for
the model, data shape and batch size given (see ``oracle_weights``), and merges the weights into
the JSON file PATH (one entry per model): the analysis's gradient equivalents read them.

    python scripts/bench_optimizers.py --model cnn --data digits --batch-size 128 --threads 2 \
        --oracle-weights results/cost_weights.json

``--ratio-test POLICY`` runs every DRSOM config that can take it with that ratio-test policy
(``periodic``, ``adaptive``: drsom/optim/ratio_test.py; the radius-free ones are left out) and then
reports means over the timed steps instead of medians, so that the tested steps among the untested
count at their share (run ``--repeats`` of a few test periods), with the share of steps tested,
and each kind of step on its own (the median of its ratios to the Adam steps timed beside it). On
one fixed batch the share is this benchmark's, not training's (the radius leaves its bound as the
batch is overfitted): a run's cost is ``untested x (1 - share) + tested x share`` at the share its
``tested_mean`` column reports.

    python scripts/bench_optimizers.py --model cnn --data digits --batch-size 128 --threads 2 \
        --repeats 48 --ratio-test adaptive --optimizers drsom drsom_hvp drsom_fd

``--trial-epochs N`` also trains every config with a ``max_trials`` (DRSOM's) N epochs on the
digits data (cnn, batch 64, its configured max_trials) and reports the mean of its ``trials``
step diagnostic: the trials per step that real training needs.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path

from drsom import CONFIG_DIR
from drsom.tools import checkout_root

ROOT = checkout_root(__file__)


def optimizer_config(name: str) -> dict:
    """The optimizer group of the composed run config (interpolations resolved)."""
    from drsom.cfg.compose import suite_config

    return suite_config([f"optimizer={name}"])["optimizer"]


# classes and (C, H, W) of each dataset config's images: the benchmarks time random batches of
# that shape (the cost of a dense network does not depend on the pixel values)
DATA_SHAPES = {"cifar10": (10, (3, 32, 32)), "cifar100": (100, (3, 32, 32))}
DATA_SHAPES["digits"] = (10, (3, 32, 32))  # upsampled to CIFAR's shape (drsom.data.digits)


def model(name: str, data: str = "cifar10"):
    """The suite's model config ``name`` for the images of dataset config ``data``."""
    from drsom.cfg.compose import suite_config
    from drsom.models import build_model

    classes, shape = DATA_SHAPES[data]
    return build_model(suite_config([f"model={name}"])["model"], classes, shape)


def one_trial(cfg: dict) -> dict:
    """``cfg`` with one ratio-test trial per step, for an optimizer that has trials."""
    from drsom.cfg.targets import keywords, locate

    named, _ = keywords(locate("optimizer", cfg))
    return {**cfg, "max_trials": 1} if "max_trials" in named else cfg


def with_policy(cfg: dict, policy: str) -> dict | None:
    """``cfg`` with ratio-test policy ``policy``, or None for a config that cannot take it."""
    if "ratio_test" not in cfg or cfg.get("subproblem") != "trust_region":
        return None
    return {**cfg, "ratio_test": policy}


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
        net = model(args.model, args.data).to(device)
        fmt = torch.channels_last if args.channels_last else torch.contiguous_format
        net = net.to(memory_format=fmt)
        x = torch.randn(args.batch_size, 3, 32, 32, device=device).contiguous(memory_format=fmt)
        y = torch.randint(0, 10, (args.batch_size,), device=device)
        # one trial per step: the cost structure (see the module doc)
        cfg = one_trial(optimizer_config(name))
        if name != "adam" and args.ratio_test:
            cfg = with_policy(cfg, args.ratio_test)
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

    from drsom.optim import ORACLES, state_numel, step_counts, step_diagnostics

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
    tested = []
    for _ in range(args.repeats):
        times.append(timed(run.step))
        adam_times.append(timed(adam.step))
        for key, n in step_counts(opt).items():  # what this step cost (e.g. Hutchinson HVPs)
            total[key] += n
        tested.append(bool(step_diagnostics(opt).get("tested", 1.0)))
    per = {key: n / args.repeats for key, n in total.items()}
    # each kind of step against the Adam steps timed beside it: what a run pays at any share
    steps = list(zip(times, adam_times, tested, strict=True))
    kinds = {
        kind: statistics.median([t / a for t, a, k in steps if k == want])
        for kind, want in (("untested_x", False), ("tested_x", True))
        if want in tested
    }
    # a policy mixes cheap and dear steps: their mean is the cost, a median would be the cheap one
    centre = statistics.mean if args.ratio_test else statistics.median
    return dict(
        optimizer=args.worker,
        median_ms=1e3 * centre(times),
        adam_ms=1e3 * centre(adam_times),
        tested=sum(tested) / args.repeats,
        **kinds,
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


# -------------------------------------------------------------------------- oracle weights
WEIGHTS_NOTE = (
    "weights of one oracle call relative to one gradient (forward + backward, grad = 1): "
    "forward = a training-mode forward with the loss under no_grad (DRSOM's interpolation and "
    "trial points); hvp = what one Hessian-vector product adds to the gradient the step takes "
    "anyway: (gradient with create_graph + one backward of it against a vector - gradient) / "
    "gradient, DRSOM's hessian='hvp' (drsom/optim/curvature.py Probe.hvp_dots); medians of calls "
    "made alternately in one process after warm-up"
)


class Oracles:
    """One model in training mode, one fixed batch and a fixed vector: the three oracle calls.

    Every call starts from a fresh closure (``make_closure``), as the training loop's own forward
    does, so BatchNorm runs on batch statistics in each.
    """

    def __init__(self, args, device):
        import torch
        from torch import nn

        from drsom.optim import make_closure

        torch.manual_seed(0)
        net = model(args.model, args.data).to(device).train()
        classes, shape = DATA_SHAPES[args.data]
        x = torch.randn(args.batch_size, *shape, device=device)
        y = torch.randint(0, classes, (args.batch_size,), device=device)
        self.params = [p for p in net.parameters() if p.requires_grad]
        self.vector = [torch.randn_like(p) for p in self.params]
        self.closure = lambda: make_closure(net, nn.functional.cross_entropy, x, y)
        self.sync = torch.cuda.synchronize if device.type == "cuda" else (lambda: None)

    def forward(self) -> float:
        import torch

        self.sync()
        t = time.perf_counter()
        with torch.no_grad():  # as DRSOM's probe evaluates a point (curvature.Probe.value)
            self.closure()()
        self.sync()
        return time.perf_counter() - t

    def grad(self) -> float:
        import torch

        self.sync()
        t = time.perf_counter()
        torch.autograd.grad(self.closure()(), self.params)
        self.sync()
        return time.perf_counter() - t

    def hvp(self) -> tuple[float, float]:
        """(gradient with create_graph, the second backward against ``vector``): DRSOM's
        ``hessian="hvp"`` step does the first once and the second once per direction."""
        import torch

        self.sync()
        t = time.perf_counter()
        graph = torch.autograd.grad(self.closure()(), self.params, create_graph=True)
        self.sync()
        t1 = time.perf_counter()
        torch.autograd.grad(graph, self.params, grad_outputs=self.vector)
        self.sync()
        return t1 - t, time.perf_counter() - t1


def oracle_weights(args) -> dict:
    """Median seconds of each oracle call and the weights relative to one gradient.

    The calls are made in rotating order, one of each per round, so all three see the same
    machine load; ``hvp`` is ``(t_create_graph + t_second_backward - t_grad) / t_grad``: a
    ``hessian="hvp"`` DRSOM step with k directions costs ``t_create_graph + k t_second_backward``
    and is counted as 1 gradient + k HVPs, so for k > 1 this charges the create_graph overhead
    k times instead of once (both parts are kept in the file for a finer account).
    """
    import torch

    torch.set_num_threads(args.threads)
    device = torch.device(args.device)
    run = Oracles(args, device)
    calls = {"forward": run.forward, "grad": run.grad, "hvp": run.hvp}
    for _ in range(args.warmup):
        for call in calls.values():
            call()
    times: dict[str, list] = {key: [] for key in calls}
    for i in range(args.repeats):
        names = list(calls)
        for key in names[i % 3 :] + names[: i % 3]:
            times[key].append(calls[key]())
    med = statistics.median
    t_grad = med(times["grad"])
    t_cg = med(t for t, _ in times["hvp"])
    t_hv = med(s for _, s in times["hvp"])
    t_pair = med(t + s for t, s in times["hvp"])
    return {
        "forward": med(times["forward"]) / t_grad,
        "grad": 1.0,
        "hvp": (t_pair - t_grad) / t_grad,
        "median_ms": {
            "forward": 1e3 * med(times["forward"]),
            "grad": 1e3 * t_grad,
            "grad_create_graph": 1e3 * t_cg,
            "hvp_backward": 1e3 * t_hv,
        },
    }


def load_line() -> str:
    """The 1-minute load average and the cores, as ``uptime`` says them (what else ran)."""
    return f"load {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores"


def write_oracle_weights(args) -> None:
    """Measure, print a table, and merge ``{model: entry}`` into ``args.oracle_weights``."""
    import torch

    from drsom.job.record import machine as cpu_machine

    before = load_line()
    found = oracle_weights(args)
    after = load_line()
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else None
    entry = {
        "forward": round(found["forward"], 4),
        "grad": 1.0,
        "hvp": round(found["hvp"], 4),
        "data": args.data,
        "batch_size": args.batch_size,
        "machine": cpu_machine(),
        "device": args.device,
        "device_name": name,
        "threads": args.threads,
        "torch": torch.__version__,
        "measured_at": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
        "command": "python scripts/bench_optimizers.py " + " ".join(sys.argv[1:]),
        "load": f"before: {before}; after: {after}",
        "repeats": args.repeats,
        "warmup": args.warmup,
        "median_ms": {k: round(v, 3) for k, v in found["median_ms"].items()},
        "definition": WEIGHTS_NOTE,
    }
    path = Path(args.oracle_weights)
    weights = json.loads(path.read_text()) if path.exists() else {}
    weights[args.model] = entry
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(weights, indent=2, sort_keys=True) + "\n")
    ms = found["median_ms"]
    rows = [
        ("forward (no_grad)", ms["forward"], entry["forward"]),
        ("gradient", ms["grad"], 1.0),
        ("gradient, create_graph", ms["grad_create_graph"], ms["grad_create_graph"] / ms["grad"]),
        ("HVP backward", ms["hvp_backward"], ms["hvp_backward"] / ms["grad"]),
        ("HVP (weight)", ms["grad_create_graph"] + ms["hvp_backward"] - ms["grad"], entry["hvp"]),
    ]
    lines = ["| oracle | median ms | x gradient |", "|---|---|---|"]
    lines += [f"| {what} | {t:.2f} | {w:.3f} |" for what, t, w in rows]
    where = f"{entry['machine']['cpu']}, {args.threads} threads" if name is None else name
    print(
        f"# Oracle weights: {args.model} on {args.data}-shaped batches of {args.batch_size}, "
        f"{args.device}\n\nMachine: {where}; torch {torch.__version__}; {entry['load']}\n"
        f"median of {args.repeats} rounds after {args.warmup} warm-up\n\n" + "\n".join(lines)
    )
    print(f"\nwrote {args.model} into {path}")


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
    ap.add_argument("--data", default="cifar10", choices=tuple(DATA_SHAPES), help="input shape")
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--optimizers", nargs="*", default=None, help="config names (default: all)")
    ap.add_argument("--warmup", type=int, default=3)
    ap.add_argument("--repeats", type=int, default=10)
    ap.add_argument("--amp", action="store_true", help="bf16 autocast")
    ap.add_argument("--channels-last", action="store_true")
    ap.add_argument("--trial-epochs", type=int, default=0)
    ap.add_argument("--ratio-test", choices=("periodic", "adaptive"), help="DRSOM's policy")
    ap.add_argument("--out", default=str(ROOT / "results" / "benchmarks"))
    ap.add_argument(
        "--oracle-weights",
        metavar="PATH",
        help="measure forward / gradient / HVP weights instead and merge them into this JSON",
    )
    ap.add_argument("--worker", help=argparse.SUPPRESS)
    ap.add_argument("--memory", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.oracle_weights:
        write_oracle_weights(args)
        return
    if args.worker:
        print(json.dumps(worker(args)))
        return

    names = args.optimizers or all_optimizers()
    if args.ratio_test:  # the configs that take a policy, beside Adam
        names = [n for n in names if n == "adam" or with_policy(optimizer_config(n), "always")]
    if "adam" not in names:
        names = ["adam", *names]
    rows = []
    for name in names:
        cmd = [sys.executable, __file__, "--worker", name]
        for flag in ("model", "data", "batch_size", "threads", "device", "warmup", "repeats"):
            cmd += [f"--{flag.replace('_', '-')}", str(getattr(args, flag))]
        cmd += ["--amp"] * args.amp + ["--channels-last"] * args.channels_last
        cmd += ["--ratio-test", args.ratio_test] if args.ratio_test else []
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
    cols += ["tested/step", "untested x Adam", "tested x Adam"] if args.ratio_test else []
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
        if args.ratio_test:
            cells.append(f"{r['tested']:.2f}")
            cells += [f"{r[k]:.2f}" if k in r else "" for k in ("untested_x", "tested_x")]
        lines.append("| " + " | ".join(cells) + " |")
        csv.append(",".join(cells))
    where = machine(args)
    centre = "mean" if args.ratio_test else "median"
    head = (
        f"{args.model}, batch {args.batch_size}, {args.device}"
        f"{', bf16' if args.amp else ''}{', channels_last' if args.channels_last else ''}; "
        f"{centre} of {args.repeats} steps after {args.warmup} warm-up, each optimizer timed "
        f"alternately with Adam in one process (x Adam = the ratio of those {centre}s); "
        f"DRSOM max_trials=1"
        + (
            f", ratio_test={args.ratio_test} (forward/step counts what it evaluated)"
            if args.ratio_test
            else ""
        )
    )
    text = f"# Optimizer step cost\n\n{head}\n\nMachine: {where}\n\n" + "\n".join(lines) + "\n"
    print(text)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    tag = f"{'cuda' if args.device.startswith('cuda') else 'cpu'}-{args.model}-b{args.batch_size}"
    tag += "-bf16" if args.amp else ""
    tag += f"-{args.ratio_test}" if args.ratio_test else ""
    (out / f"optimizers-{tag}.md").write_text(text)
    (out / f"optimizers-{tag}.csv").write_text("\n".join(csv) + "\n")


if __name__ == "__main__":
    main()
