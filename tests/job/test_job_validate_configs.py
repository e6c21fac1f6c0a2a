"""The Hydra configs: every option composes, builds what it names, and maps to a stable run id."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from run_helpers import compose_config

from drsom.job.validate import ConfigError, resolve_device, validate
from drsom.optim import optimizer_factory
from drsom.store.identity import complete, config_hash, group_name, run_id

CONFIGS = Path(__file__).resolve().parents[2] / "configs"
GROUPS = ("model", "optimizer", "data", "trainer", "logger")


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONFIGS / group).glob("*.yaml"))


EVERY_OPTION = [(g, o) for g in GROUPS for o in options(g)]


def test_every_group_has_its_options():
    assert set(options("model")) >= {"cnn", "resnet18", "resnet34", "vgg11", "densenet121"}
    assert {"cifar10", "cifar100", "digits"} <= set(options("data"))
    assert set(options("optimizer")) >= {
        *("drsom", "drsom_hvp", "drsom_fd", "drsom_interp", "drsom_adabelief"),
        *("drsom_history", "drsom_random", "drsom_official", "sgd", "adam", "adamw"),
        *("adabelief", "radam", "yogi", "adabound", "msvag", "fromage", "adahessian", "sophiah"),
    }


@pytest.mark.parametrize(
    ("group", "option"), EVERY_OPTION, ids=[f"{g}={o}" for g, o in EVERY_OPTION]
)
def test_every_option_composes_resolves_and_validates(group, option):
    cfg = complete(compose_config(f"{group}={option}", "trainer.device=cpu"))
    validate(cfg)  # also builds the optimizer on a stand-in parameter
    if group == "optimizer":
        assert cfg["optimizer"]["label"] == option  # run ids and wandb tags name the variant


def test_drsom_fields_are_overridable_from_the_command_line():
    cfg = compose_config("optimizer=drsom_seed", "optimizer.hessian=fd", "optimizer.history=4")
    assert (cfg["optimizer"]["hessian"], cfg["optimizer"]["history"]) == ("fd", 4)
    opt = optimizer_factory(cfg["optimizer"])([torch.zeros(3, requires_grad=True)])
    assert opt.hessian == "fd"


def test_default_drsom_is_the_seed_with_the_scale_free_choices():
    seed = compose_config("optimizer=drsom_seed")["optimizer"]
    cfg = compose_config("optimizer=drsom")["optimizer"]
    shown = ("label", "display", "color", "marker")
    diff = {k: v for k, v in cfg.items() if seed.get(k) != v and k not in shown}
    assert diff == dict(
        directions="preconditioned", step_measure="rms", lr=3e-4, radius_rule="good",
        follow_schedule=True, lr_h=1e-3,
    )  # fmt: skip
    # the seed's curvature sources measure the curvature itself: lr_h is refused in one line
    bad = compose_config("optimizer=drsom", "optimizer.hessian=hvp")["optimizer"]
    with pytest.raises(ValueError, match=r"^optimizer \(drsom.optim.DRSOM\): DRSOM: lr_h .*1"):
        optimizer_factory(bad)([torch.zeros(3, requires_grad=True)])


def test_seed_variants_keep_the_ids_of_runs_stored_before_the_scale_free_options():
    for name in ("drsom_seed", "drsom_hvp", "drsom_fd"):
        cfg = complete(compose_config(f"optimizer={name}"))
        before = json.loads(json.dumps(cfg))
        for key in ("step_measure", "radius_rule", "follow_schedule", "lr_h"):
            del before["optimizer"][key]
        assert run_id(cfg) == run_id(before), name
    scale_free = complete(compose_config("optimizer=drsom_seed", "optimizer.step_measure=rms"))
    assert run_id(scale_free) != run_id(complete(compose_config("optimizer=drsom_seed")))
    halved = complete(compose_config("optimizer=drsom_seed", "optimizer.lr_h=0.5"))
    assert run_id(halved) != run_id(complete(compose_config("optimizer=drsom_seed")))


def test_drsom_variants_differ_from_the_seed_in_what_their_name_says():
    base = compose_config("optimizer=drsom_seed")["optimizer"]
    expected = {
        "drsom_hvp": {"hessian": "hvp"},
        "drsom_fd": {"hessian": "fd"},
        "drsom_interp": {"hessian": "interp"},
        "drsom_adabelief": {"hessian": "adabelief"},
        "drsom_random": {"directions": "random"},
        "drsom_history": {"directions": "history"},
    }
    for variant, change in expected.items():
        cfg = compose_config(f"optimizer={variant}")["optimizer"]
        shown = ("label", "display", "color", "marker")
        diff = {k: v for k, v in cfg.items() if base.get(k) != v and k not in shown}
        assert diff == change, variant


def test_official_preset_config_sets_only_what_it_changes_and_takes_overrides():
    cfg = compose_config("optimizer=drsom_official")
    assert None not in cfg["optimizer"].values()  # no key repeated as null
    opt = optimizer_factory(cfg["optimizer"])([torch.zeros(3, requires_grad=True)])
    assert (opt.hessian, opt.subproblem) == ("hvp", "regularized")
    assert opt.param_groups[0]["lr"] == 10.0 and opt.param_groups[0]["eta"] == 0.08
    cfg = compose_config("optimizer=drsom_official", "+optimizer.lr=5")
    opt = optimizer_factory(cfg["optimizer"])([torch.zeros(3, requires_grad=True)])
    assert opt.param_groups[0]["lr"] == 5.0 and opt.param_groups[0]["eta"] == 0.08
    with pytest.raises(ValueError, match="optimizer.lr must be a positive finite number"):
        optimizer_factory({**cfg["optimizer"], "lr": 0})


# The AdaBelief protocol's weight decay per optimizer (docs/usage.md, "Weight decay"): L2 5e-4
# except AdamW (decoupled 1e-2) and Fromage (none), as the paper ran them.
PROTOCOL_DECAY = {"adamw": 1e-2, "fromage": 0.0}


def test_weight_decay_is_each_optimizers_own_setting_and_reaches_it():
    for option in options("optimizer"):
        cfg = compose_config(f"optimizer={option}")
        assert cfg["optimizer"]["weight_decay"] == PROTOCOL_DECAY.get(option, 5e-4), option
        opt = optimizer_factory(cfg["optimizer"])([torch.zeros(3, requires_grad=True)])
        assert opt.param_groups[0]["weight_decay"] == cfg["optimizer"]["weight_decay"], option
        cfg = compose_config(f"optimizer={option}", "optimizer.weight_decay=0.00123")
        opt = optimizer_factory(cfg["optimizer"])([torch.zeros(3, requires_grad=True)])
        assert opt.param_groups[0]["weight_decay"] == 0.00123, option  # AdamW and Fromage too


UNREAD_KEYS = [
    ("+trainer.epoch=3", "trainer.epoch is not a key the run reads; accepted keys: epochs,"),
    ("+label_smoothing=0.1", "label_smoothing is not a key the run reads; accepted keys: model,"),
    ("+trainer.weight_decay=0.1", "trainer.weight_decay is not a key the run reads"),
    ("+logger.projekt=x", "logger.projekt is not a key the run reads"),
    ("+optimizer.momentum=0.9", "optimizer.momentum is not an argument of torch.optim.Adam"),
    ("+model.depth=3", "model.depth is not an argument of drsom.models.SmallCNN"),
    ("+data.root=/x", "data.root is not an argument of drsom.data.digits.digits"),
]


@pytest.mark.parametrize(("override", "message"), UNREAD_KEYS, ids=[u[0] for u in UNREAD_KEYS])
def test_keys_the_run_does_not_read_are_refused_not_hashed(override, message):
    cfg = complete(compose_config("optimizer=adam", "model=cnn", "data=digits", override))
    with pytest.raises(ConfigError) as err:
        validate(cfg)
    assert str(err.value).startswith(message) and "\n" not in str(err.value)


def test_run_id_is_stable_and_ignores_where_and_how_things_are_shown():
    base = compose_config()
    assert run_id(base) == run_id(compose_config())
    rid = run_id(base)
    assert rid.startswith("cifar10-resnet18-drsom_adaptive-") and rid.endswith("-s0")
    same = [
        "logger.mode=disabled",
        "results_dir=/elsewhere",
        "force=true",
        "data.root=/mnt/cifar",
        "data.download=false",
        "data.verify=false",
        "trainer.progress=false",
        "trainer.checkpoint_every=5",
        "trainer.stop_after_epochs=3",
    ]
    for override in same:
        assert run_id(compose_config(override)) == run_id(base), override
    reseeded = compose_config("seed=3")
    assert group_name(reseeded) == group_name(base) and run_id(reseeded).endswith("-s3")
    for override in ("optimizer.lr=0.5", "trainer.epochs=100", "trainer.amp=true"):
        assert config_hash(compose_config(override)) != config_hash(base), override
    # `experiment=<name>` selects experiments/<name>.yaml, which sets the key; the key itself
    # is part of the identity (the same config in two studies is two runs)
    assert config_hash({**base, "experiment": "x"}) != config_hash(base)


BAD_VALUES = [
    ("trainer.epochs=0", "trainer.epochs must be a positive integer, got 0"),
    ("trainer.batch_size=-4", "trainer.batch_size must be a positive integer, got -4"),
    ("trainer.device=tpu", "trainer.device='tpu' is not one of auto, cpu, cuda, cuda:N"),
    ("trainer.lr_schedule=linear", "trainer.lr_schedule='linear' is not one of"),
    ("trainer.eval_every=0", "trainer.eval_every must be a positive integer"),
    ("optimizer.hessian=exact", "optimizer (drsom.optim.DRSOM): DRSOM: hessian='exact' is not"),
    ("optimizer.weight_decay=-1", "optimizer.weight_decay must be a finite number >= 0"),
    ("optimizer=adam optimizer.weight_decay=-1", "optimizer.weight_decay must be a finite number"),
    ("optimizer._target_=torch.optim.NAdamX", "optimizer._target_='torch.optim.NAdamX' cannot be"),
    ("optimizer._target_=torch.nn.Linear", "optimizer._target_='torch.nn.Linear' is not a torch"),
    ("optimizer._partial_=false", "optimizer._partial_ must be true"),
    ("optimizer.label=a/b", "optimizer.label='a/b' is not a file-name part"),
    ("model._target_=torch.optim.Adam", "model._target_='torch.optim.Adam' is not a torch.nn."),
    ("model.name=res-net", "model.name='res-net' is not a file-name part"),
    ("data._target_=nowhere.cifar", "data._target_='nowhere.cifar' cannot be imported: No module"),
    ("data.train_subset=0", "data.train_subset must be a positive integer, got 0"),
]


@pytest.mark.parametrize(("override", "message"), BAD_VALUES, ids=[b[0] for b in BAD_VALUES])
def test_invalid_values_are_rejected_with_one_line(override, message):
    with pytest.raises(ConfigError) as err:
        validate(complete(compose_config(*override.split())))
    text = str(err.value)
    assert text.startswith(message) and "\n" not in text


@pytest.mark.skipif(torch.cuda.is_available(), reason="this machine has CUDA")
def test_cuda_asked_for_without_a_gpu_is_rejected():
    with pytest.raises(ConfigError, match="no CUDA device is available.*trainer.device=cpu"):
        resolve_device("cuda")
    assert resolve_device("auto") == torch.device("cpu")
