"""A run's identity: which config keys decide its results, and the one key built from them.

A *variant* is the resolved config minus the seed and minus the keys that only say where or how
things are read, run or shown (``NOT_IDENTITY``); the runs of one variant over seeds are its
replicates, and only they are ever averaged. ``RunKey`` is the one place a run id is built
(``<data>-<model>-<label>-<hash>-s<seed>``) and read back; readers prefer the stored config.

What changes numbers but is not in the config (the device type, the CPU thread count, library
versions) is recorded with each run (``drsom.job.record``) and shown where runs differ in it.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from drsom.cfg.schedules import milestone_epochs
from drsom.data.dataset import DATA_DEFAULTS

# Config keys that say where things are, how they are shown, or only how fast they run, not what
# is computed: two configs that differ only here are the same variant. The seed is kept apart
# (it is the id's suffix). The device is recorded with the run instead: ``auto``, ``cpu`` and
# ``CPU`` are one computation on a CPU-only machine.
NOT_IDENTITY = (
    "logger",
    "results_dir",
    "force",
    "seed",
    "study",  # what the analysis reads about an experiment (runs it reuses), never the run
    "data.root",
    "data.cache",
    "data.follow_symlinks",  # where the images are read from, as data.root: the fingerprint says
    "data.download",
    "data.verify",
    "data.num_workers",
    "data.display",
    "model.display",
    "optimizer.display",
    "optimizer.color",
    "optimizer.marker",
    "trainer.device",
    "trainer.test_batch_size",
    "trainer.progress",
    "trainer.checkpoint_every",
    "trainer.stop_after_epochs",
    "trainer.backend",  # how the processes talk (gloo, NCCL); recorded with the run
)

# Keys that follow the run's seed by default (``${seed}`` in the YAML): equal to it, they are part
# of the seed (the id's suffix), so the runs of one config over several seeds share one group.
SEED_FOLLOWERS = ("optimizer.seed",)

# Options added after runs were stored, each at the value that makes the computation those runs
# made: a config holding one at that value hashes as if it were absent, so stored runs keep their
# ids (a DRSOM run from before ``step_measure`` existed measured steps as Euclidean lengths).
ADDED_AT_OLD_VALUE = {
    "optimizer.step_measure": "euclidean",
    "optimizer.radius_rule": "seed",
    "optimizer.follow_schedule": False,
    "optimizer.lr_h": 1.0,
    "optimizer.ratio_test": "always",
}
# Trainer keys added after runs were stored, at the value that makes those runs' computation: a
# stored config without one is completed with it (``complete``), so it still runs, resumes and
# reproduces, and hashes as before (they are in ADDED_AT_OLD_VALUE too).
TRAINER_ADDED = {"bn_debias": False, "processes": 1, "sync_batchnorm": False, "backend": "auto"}
ADDED_AT_OLD_VALUE |= {f"trainer.{key}": value for key, value in TRAINER_ADDED.items()}

# Options that compute nothing while another option holds its old value (or is absent): a DRSOM
# run that tests every step is one computation whatever its test_period.
INERT_WHILE = {
    "optimizer.test_period": ("optimizer.ratio_test", "always"),
    "optimizer.spike": ("optimizer.ratio_test", "always"),
    "trainer.sync_batchnorm": ("trainer.processes", 1),
}
# Keys a config may leave null for the launch to fill in (the runner records the value it ran
# with): a config that leaves one null names the run of the old value, e.g. one process.
AS_LAUNCHED = {"trainer.processes": 1}

HASH_CHARS = 10


# The name each group's config gives itself in run ids; when the config leaves it out, the last
# part of its ``_target_`` in lower case (``torch.optim.NAdam`` -> ``nadam``).
NAME_KEYS = (("data", "name"), ("model", "name"), ("optimizer", "label"))


def complete(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of the resolved config with the names of its data, model and optimizer filled in
    (``NAME_KEYS``), the data keys a config may leave out (``DATA_DEFAULTS``) and the trainer keys
    a config stored before them lacks (``TRAINER_ADDED``): what the run records, hashes and names
    its folder by."""
    out = json.loads(json.dumps(cfg))  # a deep copy of plain data
    if isinstance(out.get("data"), dict):
        out["data"] = {**DATA_DEFAULTS, **out["data"]}
    if isinstance(out.get("trainer"), dict):
        out["trainer"] = {**TRAINER_ADDED, **out["trainer"]}
    for group, key in NAME_KEYS:
        node = out.get(group)
        if isinstance(node, dict) and not node.get(key):
            node[key] = str(node.get("_target_", "")).rsplit(".", 1)[-1].lower()
    return out


def identity(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """The part of the resolved config that decides the results, seed excluded."""
    ident = complete(cfg)
    followers = [k for k in SEED_FOLLOWERS if _lookup(cfg, k) == cfg["seed"]]
    old = [k for k, v in ADDED_AT_OLD_VALUE.items() if _same(_lookup(ident, k), v)]
    old += [k for k in AS_LAUNCHED if _lookup(ident, k) is None]
    inert = [k for k, (o, v) in INERT_WHILE.items() if _lookup(cfg, o) in ({}, v)]
    for dotted in (*NOT_IDENTITY, *followers, *old, *inert):
        *parents, leaf = dotted.split(".")
        _lookup(ident, ".".join(parents)).pop(leaf, None)
    trainer = ident.get("trainer")
    if isinstance(trainer, dict) and trainer.get("lr_schedule") == "step":
        # [0.75] and [150] of a 200-epoch run are one schedule, so one run
        with contextlib.suppress(KeyError, TypeError, ValueError):
            trainer["lr_milestones"] = milestone_epochs(trainer["lr_milestones"], trainer["epochs"])
    return ident


def _same(value: Any, old: Any) -> bool:
    # 1 and 1.0 are one value; True is not 1 (bool is an int in Python)
    if isinstance(old, bool) or isinstance(value, bool):
        return value is old
    return isinstance(value, (int, float, str)) and value == old


def _lookup(tree: Mapping[str, Any], dotted: str) -> Any:
    for key in filter(None, dotted.split(".")):
        tree = tree.get(key, {}) if isinstance(tree, Mapping) else {}
    return tree


def config_hash(cfg: Mapping[str, Any]) -> str:
    text = json.dumps(identity(cfg), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(text.encode()).hexdigest()[:HASH_CHARS]


@dataclass(frozen=True)
class RunKey:
    """Where a run belongs: its data, model, optimizer label, config hash and seed."""

    data: str
    model: str
    label: str
    hash: str
    seed: int

    @classmethod
    def of(cls, cfg: Mapping[str, Any]) -> RunKey:
        c = complete(cfg)
        names = [c[group][key] for group, key in NAME_KEYS]
        return cls(*names, config_hash(c), c["seed"])

    @classmethod
    def parse(cls, rid: str) -> RunKey:
        """The key of ``<data>-<model>-<label>-<hash>-s<seed>`` (data and model names have no
        hyphen, labels may), for a grid point whose run is not in the store."""
        group, seed = rid.rsplit("-s", 1)
        data, model, rest = group.split("-", 2)
        label, digest = rest.rsplit("-", 1)
        return cls(data, model, label, digest, int(seed))

    @property
    def variant(self) -> str:
        """``<data>-<model>-<label>-<hash>``: the runs of one config over all seeds."""
        return f"{self.data}-{self.model}-{self.label}-{self.hash}"

    @property
    def run_id(self) -> str:
        """``<variant>-s<seed>``, e.g. ``cifar10-resnet18-drsom-3f9a0c12de-s0``."""
        return f"{self.variant}-s{self.seed}"


def group_name(cfg: Mapping[str, Any]) -> str:
    """The variant of ``cfg`` (the wandb group of its runs)."""
    return RunKey.of(cfg).variant


def run_id(cfg: Mapping[str, Any]) -> str:
    return RunKey.of(cfg).run_id
