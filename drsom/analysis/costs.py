"""Oracle costs in gradient equivalents, with weights measured on a machine.

A run counts its oracle calls per epoch (``forward``, ``grad``, ``hvp`` in metrics.csv; the
forward of every gradient is counted in ``forward`` too, so Adam's 330 steps are 330 forwards and
330 gradients). What an optimizer spent, in the time of one gradient on the machine that measured
the weights (``scripts/bench_optimizers.py --oracle-weights``):

    grad_equiv = grad + w_forward (forward - grad) + w_hvp hvp

``forward - grad`` are the forwards that are not part of a gradient (DRSOM's interpolation and
trial points); ``w_forward`` is one such forward's time over a gradient's, ``w_hvp`` what one
Hessian-vector product adds to a gradient. The weights file (``results/cost_weights.json`` beside
the run store) has one entry per model: the weights depend on the network and the batch, not on
the optimizer.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable
from pathlib import Path
from typing import Any, NamedTuple

import pandas as pd

WEIGHTS_FILE = "cost_weights.json"
RAW = ("forward", "grad", "hvp")  # the counts metrics.csv holds
GRAD_EQUIV_LABEL = "gradient equivalents"
RAW_LABEL = "gradients + HVPs (forwards not counted)"


class Weights(NamedTuple):
    """One model's oracle weights and where they were measured."""

    forward: float
    hvp: float
    where: str  # "batch 128, AMD EPYC (AVX512), 2 threads, 2026-12-02"
    machine: str = ""  # "AMD EPYC (AVX512)" or the GPU's name: compared with the runs'

    def cost(self, forward: float, grad: float, hvp: float) -> float:
        """Gradient equivalents of ``forward`` forwards (those of the gradients included),
        ``grad`` gradients and ``hvp`` HVPs."""
        return grad + self.forward * (forward - grad) + self.hvp * hvp


def default_path(results_dir: str | Path) -> Path:
    """The weights file beside the run store: ``results/runs`` -> ``results/cost_weights.json``."""
    return Path(results_dir).resolve().parent / WEIGHTS_FILE


def measure_command(model: str, path: str | Path) -> str:
    return (
        f"python scripts/bench_optimizers.py --model {model} --data <data> --batch-size <batch> "
        f"--oracle-weights {path}"
    )


def load_weights(path: str | Path) -> dict[str, Weights]:
    """Per model, its weights; an absent file is no entries (each model then asks for its own)."""
    path = Path(path)
    if not path.exists():
        return {}
    try:
        raw = json.loads(path.read_text())
        return {model: _weights(entry) for model, entry in raw.items()}
    except (ValueError, TypeError, KeyError, AttributeError) as exc:
        why = f"{type(exc).__name__}: {exc}"
        raise ValueError(f"cost weights {path}: not a weights file ({why})") from None


def _weights(entry: dict[str, Any]) -> Weights:
    forward, hvp = float(entry["forward"]), float(entry["hvp"])
    if not (math.isfinite(forward) and math.isfinite(hvp) and forward >= 0 and hvp >= 0):
        raise ValueError(f"weights forward={forward}, hvp={hvp} are not non-negative numbers")
    m = entry.get("machine") or {}
    where = entry.get("device_name") or " ".join(
        filter(None, [m.get("cpu"), f"({m['cpu_capability']})" if m.get("cpu_capability") else ""])
    )
    parts = [f"batch {entry['batch_size']}" if entry.get("batch_size") else "", where]
    parts += [
        f"{entry['threads']} threads"
        if entry.get("threads") and not entry.get("device_name")
        else ""
    ]
    parts += [str(entry.get("measured_at", ""))[:10]]
    return Weights(forward, hvp, ", ".join(p for p in parts if p), where)


def weights_for(
    weights: dict[str, Weights], models: Iterable[str], path: str | Path
) -> dict[str, Weights]:
    """The weights of ``models``; a model without an entry is one ValueError line naming it and
    the command that measures it."""
    out = {}
    for model in dict.fromkeys(models):
        if model not in weights:
            raise ValueError(
                f"no cost weights for model {model!r} in {path}; measure them with: "
                f"{measure_command(model, path)}"
            )
        out[model] = weights[model]
    return out


def available(
    weights: dict[str, Weights], models: Iterable[str]
) -> tuple[dict[str, Weights], list[str]]:
    """(the weights of those of ``models`` that have them, the models that have none).

    A model whose oracles were never timed (a user's own, a fresh store beside the shipped one)
    is no reason for a table or figure not to exist: its gradient equivalents are left out, said
    by ``missing_line`` and ``missing_note``, and everything else renders."""
    found, missing = {}, []
    for model in dict.fromkeys(models):
        if model in weights:
            found[model] = weights[model]
        else:
            missing.append(model)
    return found, missing


def missing_line(missing: Iterable[str], path: str | Path) -> str:
    """One line for the output: which models' gradient equivalents are left out, and how to
    measure their weights ("" when none)."""
    missing = list(missing)
    if not missing:
        return ""
    names = ", ".join(repr(m) for m in missing)
    return (
        f"no cost weights for model {names} in {path}: gradient equivalents left out; measure "
        f"them with: {measure_command(missing[0], path)}"
    )


def missing_note(missing: Iterable[str], path: str | Path) -> str:
    """The same for a table's notes: why its gradient-equivalent cells are empty."""
    missing = list(missing)
    if not missing:
        return ""
    return (
        f"{GRAD_EQUIV_LABEL} left out for {', '.join(missing)}: no cost weights in "
        f"{Path(path).name}; measure them with: {measure_command(missing[0], path)}"
    )


def add_grad_equiv(frame: pd.DataFrame, weights: dict[str, Weights]) -> pd.DataFrame:
    """``frame`` (rows of ``metrics_frame``, a ``model`` column) with ``grad_equiv``."""
    counts = {c: frame[c].fillna(0).astype(float) if c in frame else 0.0 for c in RAW}
    # a model without weights (``available``) has no gradient equivalents: NaN, never 0
    w_f = frame["model"].map(lambda m: weights[m].forward if m in weights else math.nan)
    w_h = frame["model"].map(lambda m: weights[m].hvp if m in weights else math.nan)
    w_f, w_h = w_f.astype(float), w_h.astype(float)
    grad = counts["grad"]
    return frame.assign(grad_equiv=grad + w_f * (counts["forward"] - grad) + w_h * counts["hvp"])


def weights_note(
    weights: dict[str, Weights], models: Iterable[str], run_machines: Iterable[str] = ()
) -> str:
    """``gradient equivalents = grad + 0.49 x extra forwards + 2.99 x HVPs (cnn, measured:
    batch 128, ...)``; ``run_machines`` (``captions.run_machine`` of the runs) that are not where
    the weights were measured are named: the weights are then another machine's."""
    parts = []
    others = [m for m in dict.fromkeys(run_machines) if m]
    for model in dict.fromkeys(models):
        if model not in weights:  # said by ``missing_note``
            continue
        w = weights[model]
        text = f"grad + {w.forward:.2f} x extra forwards + {w.hvp:.2f} x HVPs ({model}, measured: "
        text += f"{w.where}"
        differ = [m for m in others if w.machine and m != w.machine]
        text += f"; the runs ran on {', '.join(differ)})" if differ else ")"
        parts.append(text)
    return f"{GRAD_EQUIV_LABEL} = " + "; ".join(parts) if parts else ""
