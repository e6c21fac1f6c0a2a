"""Processes of the data-parallel DRSOM tests (tests/optim/test_optim_distributed.py).

``spawn(case, world, tmp)`` starts ``world`` processes on gloo with a ``file://`` rendezvous in
``tmp`` (no port), each running ``run_case`` on its shard of the same global batches, and
fails the calling test if they have not all finished within the timeout (a hang fails, it does
not hang CI). Each process saves what it saw to ``tmp/rank<r>.pt``.
"""

from __future__ import annotations

import datetime
import time
from pathlib import Path

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from torch import nn

from drsom.optim import DRSOM, make_closure
from drsom.optim.distributed import mean_over

GLOBAL_BATCH = 24
STEPS = 8

# every curvature source, and the suite's default (preconditioned directions, adaptive test)
SOURCES = {
    "default": dict(hessian="adam", directions="preconditioned", ratio_test="adaptive",
                    step_measure="rms", radius_rule="good", lr=3e-2, lr_h=0.1),
    "adam": dict(hessian="adam", lr=0.5),
    "adabelief": dict(hessian="adabelief", lr=0.5),
    "fd": dict(hessian="fd", lr=0.5),
    "interp": dict(hessian="interp", lr=0.5, interp_step=1e-2),
    "hvp": dict(hessian="hvp", lr=0.5),
}  # fmt: skip


def model(batchnorm: bool, dtype: torch.dtype) -> nn.Module:
    torch.manual_seed(0)
    layers = [nn.Linear(6, 16)]
    layers += [nn.BatchNorm1d(16)] if batchnorm else []
    layers += [nn.Tanh(), nn.Linear(16, 3)]
    return nn.Sequential(*layers).to(dtype)


def batches(dtype: torch.dtype, adversarial: bool) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The same global batches on every process. ``adversarial``: the second half of each
    batch has its labels shifted, so the halves pull the model different ways."""
    g = torch.Generator().manual_seed(1)
    out = []
    for _ in range(STEPS):
        x = torch.randn(GLOBAL_BATCH, 6, generator=g, dtype=dtype)
        y = (x[:, 0] > 0).long() + (x[:, 1] > 0.5).long()
        if adversarial:
            y[GLOBAL_BATCH // 2 :] = (y[GLOBAL_BATCH // 2 :] + 1) % 3
        out.append((x, y))
    return out


def shard(t: torch.Tensor, rank: int, world: int) -> torch.Tensor:
    """Rank r's contiguous share of a global batch."""
    size = len(t) // world
    return t[rank * size : (rank + 1) * size]


def train(options: dict, rank: int, world: int, reduce, *, batchnorm: bool, dtype, adversarial):
    net = model(batchnorm, dtype)
    opt = DRSOM(net.parameters(), reduce=reduce, **options)
    record = {"loss": [], "accepted": [], "alpha": [], "trials": [], "rho": [], "local": []}
    for x, y in batches(dtype, adversarial):
        xs, ys = shard(x, rank, world), shard(y, rank, world)
        closure = make_closure(net, F.cross_entropy, xs, ys)
        opt.step(closure)
        info = opt.last_step
        for key in ("loss", "accepted", "trials", "rho"):
            record[key].append(float(info[key]))
        record["alpha"].append([float(a) for a in info["alpha"]])
        with torch.no_grad():  # what this shard alone says of the step: its loss went down?
            record["local"].append(float(closure.loss) - float(F.cross_entropy(net(xs), ys)))
    state = opt.state_dict()
    record["params"] = [p.detach().clone() for p in net.parameters()]
    record["state"] = state["state"]
    record["buffers"] = [b.clone() for b in net.buffers()]
    return record


def only_gradients(reduce):
    """The negative control: the gradient averaged, the losses left local (each process
    decides on its own shard's losses)."""
    return lambda t: reduce(t) if t.numel() > 1 else None


def run_case(rank: int, case: dict, world: int, tmp: str) -> None:
    reduce = None
    if world > 1:
        torch.set_num_threads(1)  # one core per process
        dist.init_process_group(
            "gloo", init_method=f"file://{tmp}/rendezvous", rank=rank, world_size=world,
            timeout=datetime.timedelta(seconds=60),
        )  # fmt: skip
        reduce = mean_over()
        if case.get("local_losses"):
            reduce = only_gradients(reduce)
    options = SOURCES[case["source"]]
    out = {}
    for name, batchnorm, dtype in case.get("models", [("bn", True, torch.float32)]):
        out[name] = train(
            options, rank, world, reduce, batchnorm=batchnorm, dtype=dtype,
            adversarial=case.get("adversarial", False),
        )  # fmt: skip
    torch.save(out, Path(tmp) / f"rank{rank}.pt")
    if world > 1:
        dist.barrier()  # no process tears gloo down while another still talks to it
        dist.destroy_process_group()


def spawn(case: dict, world: int, tmp: Path, timeout: float = 180.0) -> list[dict]:
    """Run ``case`` on ``world`` processes; their records, by rank."""
    tmp.mkdir(parents=True, exist_ok=True)
    if world == 1:
        run_case(0, case, 1, str(tmp))
    else:
        ctx = mp.spawn(run_case, args=(case, world, str(tmp)), nprocs=world, join=False)
        join_or_fail(ctx, timeout, f"{world} DRSOM processes")
    return [torch.load(tmp / f"rank{r}.pt", weights_only=False) for r in range(world)]


def join_or_fail(ctx, timeout: float, what: str) -> None:
    """Wait for the spawned processes of ``ctx``; past ``timeout``, kill them and fail: a hang."""
    deadline = time.monotonic() + timeout
    while not ctx.join(timeout=5):
        if time.monotonic() > deadline:
            for p in ctx.processes:
                p.kill()
            pytest.fail(f"{what} did not finish in {timeout:.0f} s: a hang")


def state_tensors(tree) -> list[torch.Tensor]:
    """Every tensor and number of a nested state (dicts by sorted key), in a fixed order."""
    if isinstance(tree, torch.Tensor):
        return [tree]
    if isinstance(tree, dict):
        return [t for k in sorted(tree, key=str) for t in state_tensors(tree[k])]
    if isinstance(tree, list | tuple):
        return [t for v in tree for t in state_tensors(v)]
    return [torch.tensor(float(tree))] if isinstance(tree, int | float | bool) else []
