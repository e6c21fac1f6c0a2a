"""Step-schedule milestones: epochs or fractions of the run, checked, one schedule one run id."""

from __future__ import annotations

import logging

import pytest
import torch
from run_helpers import compose_config

from drsom.analysis.captions import describe
from drsom.analysis.figures import protocol_title
from drsom.analysis.runs import Run
from drsom.cfg.schedules import describe_schedule, milestone_epochs
from drsom.job.validate import ConfigError, validate
from drsom.store.identity import run_id
from drsom.training.build import build_scheduler


def test_fractions_scale_with_the_run_and_epochs_stay_epochs():
    assert milestone_epochs([0.75], 200) == [150]
    assert milestone_epochs([0.75], 30) == [22]  # 22.5 rounds to even, as the protocol's 22 of 30
    assert milestone_epochs([0.5, 0.75], 8) == [4, 6]
    assert milestone_epochs([150], 200) == [150]
    assert milestone_epochs([2, 0.8], 4) == [2, 3]


@pytest.mark.parametrize(
    ("milestones", "epochs", "message"),
    [
        ([150], 3, "epoch 150 is not within the run (1..2 for trainer.epochs=3)"),
        ([3], 3, "epoch 3 is not within the run"),
        ([0], 3, "epoch 0 is not within the run"),
        ([2, 1], 4, "must be increasing"),
        ([0.5, 0.5], 8, "must be increasing (epochs [4, 4])"),
        ([1.5], 4, "1.5 is neither an epoch (integer) nor a fraction in (0, 1)"),
        ([True], 4, "True is neither"),
        (["x"], 4, "'x' is neither"),
        (0.75, 4, "must be a list of epochs or fractions, got 0.75"),
    ],
)
def test_milestones_that_cannot_act_are_refused_in_one_line(milestones, epochs, message):
    with pytest.raises(ValueError) as err:
        milestone_epochs(milestones, epochs)
    assert message in str(err.value) and "\n" not in str(err.value)


def test_config_validation_names_the_key():
    with pytest.raises(ConfigError, match=r"^trainer.lr_milestones: epoch 150 is not within"):
        validate(compose_config("data=digits", "trainer.epochs=3", "trainer.lr_milestones=[150]"))
    validate(compose_config("data=digits", "trainer.epochs=3"))  # the default 0.75: epoch 2


def test_a_fraction_that_falls_on_no_epoch_is_dropped_with_one_warning(caplog):
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=1.0)
    trainer = {"lr_schedule": "step", "lr_milestones": [0.75], "epochs": 1, "lr_gamma": 0.1}
    with caplog.at_level(logging.WARNING, logger="drsom"):
        scheduler = build_scheduler(trainer, opt)
    assert scheduler.milestones == {}
    (record,) = caplog.records
    assert "0.75 of 1 epoch(s) falls on no epoch before the last" in record.getMessage()
    assert describe_schedule(trainer) == "constant lr (no milestone within the run)"


def test_the_scheduler_decays_after_the_resolved_epoch():
    param = torch.zeros(1, requires_grad=True)
    opt = torch.optim.SGD([param], lr=1.0)
    trainer = {"lr_schedule": "step", "lr_milestones": [0.5], "epochs": 4, "lr_gamma": 0.1}
    scheduler = build_scheduler(trainer, opt)
    lrs = []
    for _ in range(4):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        scheduler.step()
    assert lrs == pytest.approx([1.0, 1.0, 0.1, 0.1])


def test_one_schedule_in_two_spellings_is_one_run():
    fraction = compose_config("data=digits", "trainer.epochs=8", "trainer.lr_milestones=[0.75]")
    epochs = compose_config("data=digits", "trainer.epochs=8", "trainer.lr_milestones=[6]")
    other = compose_config("data=digits", "trainer.epochs=8", "trainer.lr_milestones=[5]")
    assert run_id(fraction) == run_id(epochs) != run_id(other)


def test_titles_state_the_schedule_that_ran():
    cfg = compose_config("data=digits", "model=cnn", "trainer.epochs=8")
    run = Run(run_id="r", path=None, config=cfg, summary={"device": "cpu", "status": "finished"})
    title = protocol_title(describe(run), 3)
    assert title.endswith("8 epochs, batch 128, lr ×0.1 after epoch 6")
    cfg["trainer"]["lr_milestones"] = [150]  # a run stored before milestones were checked
    assert describe_schedule(cfg["trainer"]) == "constant lr (no milestone within the run)"
