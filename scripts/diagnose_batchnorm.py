"""Is a run's evaluation-mode accuracy its weights' or its BatchNorm statistics'? Per epoch.

    python scripts/diagnose_batchnorm.py optimizer=drsom model=resnet18 data=digits \\
        trainer.epochs=6 'trainer.lr_milestones=[5]'

Trains the run the overrides compose (as ``run.py`` would, nothing written), and after each epoch
prints the running train accuracy, the evaluation-mode train accuracy (the store's
``train_eval_acc``), the same with every BatchNorm layer's statistics re-estimated at the epoch's
weights (a plain mean over one pass of the evaluation slice of the training images, in training
mode, on a copy of the model), and per layer the ratio of the running variance to the
re-estimated one (median, min, max), with the norm of the convolution weights. A large gap that
re-estimation closes is the statistics, not the weights (docs/studies.md, "BatchNorm and
evaluation mode").
"""

from __future__ import annotations

import copy
import statistics
import sys
import time

import torch
from torch import nn

from drsom import CODE_ROOT
from drsom.cfg.compose import suite_config
from drsom.store.identity import complete
from drsom.training.build import build_trainer, load_data

NORMS = nn.modules.batchnorm._BatchNorm


@torch.no_grad()
def reestimated(model: nn.Module, loader) -> tuple[float, list[float]]:
    """(evaluation-mode accuracy on ``loader`` with statistics re-estimated on it, per layer
    running variance / re-estimated variance)."""
    fresh = copy.deepcopy(model)
    for m in fresh.modules():
        if isinstance(m, NORMS) and m.track_running_stats:
            m.reset_running_stats()
            m.momentum = None  # a plain mean over the pass
    fresh.train()
    for x, _ in loader:
        fresh(x)
    ratios = [
        (a.running_var.mean() / b.running_var.mean()).item()
        for a, b in zip(model.modules(), fresh.modules(), strict=True)
        if isinstance(a, NORMS) and a.track_running_stats
    ]
    fresh.eval()
    correct = seen = 0
    for x, y in loader:
        correct += (fresh(x).argmax(1) == y).sum().item()
        seen += len(y)
    return correct / seen, ratios


def main(overrides: list[str]) -> int:
    c = complete(suite_config(["logger.mode=disabled", *overrides]))
    device = torch.device("cpu")
    data = load_data(c, device, CODE_ROOT)
    if data.train_eval is None:
        print("error: the data has no evaluation slice of the training images", file=sys.stderr)
        return 2
    trainer, _, _ = build_trainer(c, device, data)
    print("| epoch | running train acc | eval-mode train acc | re-estimated | var ratio median "
          "(min-max) | conv weight norm | s |")  # fmt: skip
    print("|---|---|---|---|---|---|---|")
    start = time.perf_counter()
    for row in trainer.run_epochs():
        acc, ratios = reestimated(trainer.model, data.train_eval)
        weights = [p.detach() for p in trainer.model.parameters() if p.dim() == 4]
        conv = sum(p.norm() ** 2 for p in weights) ** 0.5
        spread = (
            f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})"
            if ratios
            else "-"
        )
        print(
            f"| {row['epoch']} | {row['train_acc']:.3f} | {row['train_eval_acc']:.3f} | {acc:.3f} "
            f"| {spread} | {float(conv):.2f} | {time.perf_counter() - start:.0f} |",
            flush=True,
        )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
