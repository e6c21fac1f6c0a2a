"""What a caption or a table's notes say about the runs beneath it: the protocol facts
(``describe``), which code and machine made them (``provenance``, ``run_machine``) and what a
training-time axis was measured on (``wall_clock_note``), read from their configs and summaries.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from drsom.analysis.runs import Run
from drsom.cfg.schedules import describe_schedule


def provenance(runs: Sequence[Run]) -> str:
    """Which code and machine made ``runs``, for a caption: the commit(s), runs from a dirty
    tree, and whatever changes numbers outside the config where the runs differ in it (CPU
    threads, device type, torch version)."""
    runs = [r for r in runs if r.summary]
    if not runs:
        return ""
    commits: dict[str, int] = {}
    for r in runs:
        c = (r.summary.get("git_commit") or "unknown")[:10]
        commits[c] = commits.get(c, 0) + 1
    if len(commits) == 1:
        parts = [f"code: commit {next(iter(commits))}"]
    else:
        each = ", ".join(f"{c} ({n})" for c, n in sorted(commits.items(), key=lambda kv: -kv[1]))
        parts = [f"code: {len(commits)} commits, {each}"]
    dirty = sum(1 for r in runs if r.summary.get("git_dirty"))
    if dirty:
        parts.append(f"{dirty} of {len(runs)} runs from a dirty tree")
    facts = {
        "CPU threads": lambda s: s.get("threads"),
        "CPU": lambda s: (
            "{cpu} ({cpu_capability})".format_map(s["machine"])
            if isinstance(s.get("machine"), dict)
            else None
        ),
        "device": lambda s: str(s.get("device", "?")).split(":")[0],
        "torch": lambda s: (s.get("versions") or {}).get("torch"),
    }
    for what, read in facts.items():
        seen: dict[str, int] = {}
        for r in runs:
            v = str(read(r.summary))
            seen[v] = seen.get(v, 0) + 1
        if len(seen) > 1:
            parts.append(
                f"runs differ in {what}: " + ", ".join(f"{v} ({n})" for v, n in seen.items())
            )
    return "; ".join(parts)


def describe(run: Run) -> dict[str, Any]:
    """The protocol facts a figure title or table header states, from a run's config/summary."""
    t, d, m = run.config["trainer"], run.config["data"], run.config["model"]
    read = str(run.summary.get("data_fingerprint") or "")  # "<train>+<test>:<hash>"
    return {
        "data": d["name"],
        "model": m["name"],
        "data_display": d.get("display") or d["name"],
        "model_display": m.get("display") or m["name"],
        "train_images": int(read.split("+")[0]) if read.split("+")[0].isdigit() else None,
        "epochs": t["epochs"],
        "batch_size": t["batch_size"],
        "schedule": describe_schedule(t),
        "device": str(run.summary.get("device", "?")).split(":")[0],
        "device_name": run.summary.get("device_name"),
    }


# ------------------------------------------------------------------------------ wall clock
SHARED_MARGIN = 0.5  # load above the run's own threads by more than this: something else ran


def wall_clock_note(runs: Sequence[Run]) -> str:
    """What a training-time axis was measured on: the machine (the CPU and its threads, or the
    GPU's name) and whether the runs had it alone, from the highest 1-minute load average their
    summaries saw at epoch ends (``load_max``, drsom.job.record.note_load): a load above the
    run's own CPU threads (1 for a GPU run) by more than ``SHARED_MARGIN`` is a shared machine.

    ``wall clock: AMD EPYC (AVX2), 2 threads; shared (load up to 3.1 on 2 cores)``; runs without
    the record say "unknown"."""
    runs = [r for r in runs if r.summary]
    if not runs:
        return ""
    machines: dict[str, int] = {}
    shared, alone, unknown = [], 0, 0
    for r in runs:
        s = r.summary
        machines[_machine(s)] = machines.get(_machine(s), 0) + 1
        load = s.get("load_max")
        peak = load.get("load_1min") if isinstance(load, dict) else None
        if not isinstance(peak, int | float):
            unknown += 1
            continue
        cuda = str(s.get("device", "cpu")).startswith("cuda")
        own = 1 if cuda or not isinstance(s.get("threads"), int) else s["threads"]
        if peak > own + SHARED_MARGIN:
            shared.append((float(peak), load.get("cores")))
        else:
            alone += 1
    if len(machines) == 1:
        where = next(iter(machines))
    else:
        where = "; ".join(f"{m} ({n} runs)" for m, n in machines.items())
    if shared:
        peak, cores = max(shared)
        share = f"shared (load up to {peak:.1f} on {cores} cores"
        share += f", {len(shared)} of {len(runs)} runs)" if len(shared) < len(runs) else ")"
    elif unknown:
        share = "unknown whether shared" + (
            f" ({unknown} of {len(runs)} runs without a load record; the others alone)"
            if alone
            else " (no load record)"
        )
    else:
        share = "alone"
    return f"wall clock: {where}; {share}"


def run_machine(summary: dict[str, Any]) -> str:
    """What did the arithmetic: the GPU's name for a CUDA run, else the CPU with the kernels torch
    picked (``AMD EPYC (AVX2)``, as ``costs.Weights.machine`` names it); "" if not recorded."""
    if str(summary.get("device", "cpu")).startswith("cuda"):
        return str(summary.get("device_name") or "")
    m = summary.get("machine")
    if isinstance(m, dict) and "cpu" in m and "cpu_capability" in m:
        return "{cpu} ({cpu_capability})".format_map(m)
    return ""


def _machine(summary: dict[str, Any]) -> str:
    """The GPU's name for a CUDA run, else the CPU (with its kernels) and the run's threads."""
    if str(summary.get("device", "cpu")).startswith("cuda"):
        return str(summary.get("device_name") or "GPU")
    cpu = run_machine(summary) or summary.get("device_name") or "CPU"
    threads = summary.get("threads")
    return f"{cpu}, {threads} threads" if threads else str(cpu)
