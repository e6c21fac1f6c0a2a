"""BatchNorm's running statistics debiased (drsom.training.batchnorm), alone and under DRSOM."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from run_helpers import compose_config
from torch import nn

from drsom.job.validate import validate
from drsom.optim import DRSOM, make_closure
from drsom.store.identity import complete, run_id
from drsom.training.batchnorm import debias_batchnorm


def _batches(n: int, seed: int = 0) -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    # far from the start (mean 0, var 1): the bias of an undebiased average is plain to see
    return [3.0 + 2.0 * torch.randn(16, 4, generator=g) for _ in range(n)]


def test_the_first_batches_are_averaged_plainly_and_later_ones_as_torch_does():
    bn, plain = nn.BatchNorm1d(4), nn.BatchNorm1d(4)
    assert debias_batchnorm(bn) == 1
    xs = _batches(14)
    for x in xs[:3]:
        bn(x), plain(x)
    means = torch.stack([x.mean(0) for x in xs[:3]])
    variances = torch.stack([x.var(0) for x in xs[:3]])  # unbiased, as BatchNorm keeps it
    torch.testing.assert_close(bn.running_mean, means.mean(0))
    torch.testing.assert_close(bn.running_var, variances.mean(0))
    # torch's own average still holds 0.9^3 = 73% of its start (mean 0)
    assert (bn.running_mean - means.mean(0)).abs().max() < 1e-5
    assert (plain.running_mean - means.mean(0)).abs().min() > 0.5
    # batch 10 enters with weight 1/10 = the momentum; from then on torch's average, unchanged
    for x in xs[3:13]:
        bn(x)
    before = bn.running_mean.clone()
    bn(xs[13])
    torch.testing.assert_close(bn.running_mean, 0.9 * before + 0.1 * xs[13].mean(0))
    assert int(bn.num_batches_tracked) == 14 and bn.momentum == 0.1


def test_evaluation_mode_and_layers_without_running_statistics_are_left_alone():
    model = nn.Sequential(nn.BatchNorm1d(4), nn.BatchNorm1d(4, track_running_stats=False))
    model.append(nn.BatchNorm1d(4, momentum=None))  # torch's plain mean: already unbiased
    assert debias_batchnorm(model) == 1
    model.eval()
    model(_batches(1)[0])
    assert int(model[0].num_batches_tracked) == 0 and model[0].running_mean.abs().max() == 0


def _bn_model() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(4, 8), nn.BatchNorm1d(8), nn.ReLU(), nn.Linear(8, 3))


def test_under_drsom_only_the_first_forward_of_a_step_counts_and_the_average_is_plain():
    model = _bn_model()
    debias_batchnorm(model)
    seen = []  # the BatchNorm input's mean on each forward that updates the statistics
    bn = model[1]
    bn.register_forward_pre_hook(
        lambda m, a: seen.append(a[0].detach().mean(0)) if m.track_running_stats else None
    )
    opt = DRSOM(model.parameters(), lr=0.05, ratio_test="always")
    g = torch.Generator().manual_seed(1)
    for x in _batches(5):
        y = torch.randint(0, 3, (16,), generator=g)
        opt.step(make_closure(model, F.cross_entropy, x, y))
    # every step evaluated the batch at least twice (the ratio test); one of them counted
    assert int(bn.num_batches_tracked) == 5 and len(seen) == 5
    torch.testing.assert_close(bn.running_mean, torch.stack(seen).mean(0))


def test_the_option_is_off_by_default_and_off_keeps_stored_run_ids():
    plain = compose_config("model=cnn", "data=digits")
    assert plain["trainer"]["bn_debias"] is False
    without = {**plain, "trainer": {k: v for k, v in plain["trainer"].items() if k != "bn_debias"}}
    assert run_id(without) == run_id(plain)
    # a config stored before the option existed still runs, resumes and reproduces: completed
    validate(complete(without))
    assert complete(without)["trainer"]["bn_debias"] is False
    on = compose_config("model=cnn", "data=digits", "trainer.bn_debias=true")
    assert run_id(on) != run_id(plain)
