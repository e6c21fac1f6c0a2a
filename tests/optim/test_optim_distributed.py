"""DRSOM across processes (drsom.optim.distributed): gloo on CPU, 2 and 3 processes, file://
rendezvous, a timeout on every launch. Each process trains on its shard of the same global
batches (tests/helpers/distributed_workers.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from distributed_workers import GLOBAL_BATCH, SOURCES, spawn, state_tensors

from drsom.optim import DRSOM
from drsom.optim.distributed import mean_over

F64 = [("plain", False, torch.float64)]
BOTH = [("bn", True, torch.float32), *F64]


def _same_everywhere(records: list[dict], model: str) -> None:
    first = records[0][model]
    for other in records[1:]:
        mine = other[model]
        for key in ("loss", "accepted", "alpha", "trials", "rho"):
            # bitwise: float == float (an untested step's rho is nan on every process)
            assert len(mine[key]) == len(first[key]), key
            for a, b in zip(mine[key], first[key], strict=True):
                assert np.array_equal(a, b, equal_nan=True), (key, a, b)
        for a, b in zip(state_tensors(first["params"]), state_tensors(mine["params"]), strict=True):
            assert torch.equal(a, b)
        state_a, state_b = state_tensors(first["state"]), state_tensors(mine["state"])
        assert len(state_a) == len(state_b) > 3
        for a, b in zip(state_a, state_b, strict=True):
            assert torch.equal(a, b)


@pytest.mark.parametrize("source", list(SOURCES))
def test_every_process_takes_the_same_steps_and_they_are_the_one_process_steps(tmp_path, source):
    records = spawn({"source": source, "models": BOTH}, 2, tmp_path / "two")
    # (a) parameters, every optimizer state tensor and every decision, bitwise on both processes
    _same_everywhere(records, "bn")
    _same_everywhere(records, "plain")
    assert sum(records[0]["bn"]["accepted"]) >= 2  # it trained: steps were taken
    # (b) float64, no BatchNorm: the one-process run on the whole global batches, to round-off
    (single,) = spawn({"source": source, "models": F64}, 1, tmp_path / "one")
    two, one = records[0]["plain"], single["plain"]
    assert two["accepted"] == one["accepted"] and two["trials"] == one["trials"]
    torch.testing.assert_close(torch.tensor(two["loss"]), torch.tensor(one["loss"]),
                               rtol=1e-10, atol=0)  # fmt: skip
    # finite differences divide round-off by their step t ~ sqrt(eps): Q, alpha and x agree to
    # about sqrt(eps) there, to round-off elsewhere
    rtol = 1e-6 if source == "fd" else 1e-10
    for a, b in zip(two["alpha"], one["alpha"], strict=True):
        torch.testing.assert_close(torch.tensor(a), torch.tensor(b), rtol=rtol, atol=1e-12)
    for a, b in zip(two["params"], one["params"], strict=True):
        torch.testing.assert_close(a, b, rtol=rtol, atol=1e-12)


def test_three_processes_agree_with_the_default(tmp_path):
    assert GLOBAL_BATCH % 3 == 0
    records = spawn({"source": "default", "models": BOTH}, 3, tmp_path)
    _same_everywhere(records, "bn")
    _same_everywhere(records, "plain")


def test_shards_that_pull_apart_still_make_one_decision_and_nothing_hangs(tmp_path):
    case = {"source": "adam", "models": F64, "adversarial": True}
    records = spawn(case, 2, tmp_path)
    _same_everywhere(records, "plain")
    # (c) on some accepted step one shard's loss went down and the other's up: a process
    # deciding on its own shard would have disagreed
    a, b = records[0]["plain"], records[1]["plain"]
    split = [i for i, ok in enumerate(a["accepted"]) if ok and a["local"][i] * b["local"][i] < 0]
    assert split, (a["local"], b["local"])


def test_deciding_on_local_losses_makes_the_processes_drift_apart(tmp_path):
    # (d) the negative control: the gradient averaged but each process's own losses deciding;
    # the same shards as above. The equality test above must be able to fail.
    case = {"source": "adam", "models": F64, "adversarial": True, "local_losses": True}
    records = spawn(case, 2, tmp_path)
    a, b = records[0]["plain"], records[1]["plain"]
    assert a["loss"] != b["loss"]
    assert any(not torch.equal(x, y) for x, y in zip(a["params"], b["params"], strict=True))


def test_a_reduce_that_is_not_callable_or_needs_a_process_group_is_one_line():
    params = [torch.nn.Parameter(torch.zeros(3))]
    with pytest.raises(ValueError, match=r"^DRSOM: reduce must be a callable"):
        DRSOM(params, reduce="mean")
    with pytest.raises(ValueError, match=r"^DRSOM: reduce=mean_over\(\) needs torch.distributed"):
        mean_over()
