"""Where each run of a sweep stands: ``drsom-status --experiment NAME [k=v ...]``.

Lists every run of the grid that ``drsom-run -m experiment=NAME [k=v ...]`` launches (extra
overrides narrow or change it as they would the sweep, e.g. ``seed=0,1``) as finished, running,
interrupted, diverged, failed or missing, with its last completed epoch. "running" is checked
against the run folder's lock: a job that died without a word (SIGKILL, a lost node) shows as
interrupted. Re-launching the same sweep trains exactly the runs not finished or diverged.
Reads the results store only; safe to run while the sweep trains.

The sweep's launch line can be pasted as it is: ``-m`` is accepted and ignored, and the
launcher's overrides (``hydra/launcher=slurm hydra.launcher.partition=gpu``, any ``hydra.*``)
are checked as Hydra would check them but change no run.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from hydra.errors import HydraException
from omegaconf.errors import OmegaConfBaseException

from drsom.store.sweeps import SweepRunState, counts, run_states, sweep_runs, varying_keys


def main(argv: list[str] | None = None, *, base_dir: Path | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--experiment", help="experiments/<NAME>.yaml (default: none)")
    parser.add_argument(
        "-m", "--multirun", action="store_true", help="accepted (and ignored): a sweep's own flag"
    )
    parser.add_argument("overrides", nargs="*", help="Hydra overrides, sweeps included")
    args = parser.parse_args(argv)
    try:
        runs = sweep_runs(args.experiment, args.overrides, base_dir=base_dir or Path.cwd())
    except (HydraException, OmegaConfBaseException, ValueError) as exc:
        print(f"error: {' '.join(str(exc).split())}", file=sys.stderr)
        return 2
    states = run_states(runs)
    keys = varying_keys(runs)
    name = args.experiment or "(no experiment)"
    folders = {str(r.run_dir.path.parent) for r in runs}
    print(f"experiment {name}: {len(runs)} runs in {', '.join(sorted(folders))}")
    width = max((len(r.run_id) for r in runs), default=0)
    for state in states:
        print(_line(state, keys, width))
    tally = counts(states)
    print(", ".join(f"{n} {status}" for status, n in tally.items()))
    return 0


def _line(state: SweepRunState, keys: list[str], width: int) -> str:
    s, run = state.summary, state.run
    epoch = f"{s.get('epoch', 0)}/{s.get('epochs', '?')}" if s else "-"
    grid = " ".join(o for o in run.overrides if o.partition("=")[0] in keys)
    note = ""
    if state.status == "failed" and s.get("error"):
        note = f"  ({s['error'][:80]})"
    elif state.status == "broken":
        note = f"  ({state.problem})"
    elif state.status == "diverged":
        note = f"  (epoch {s.get('diverged_epoch')})"
    elif state.status == "finished" and s.get("final", {}).get("test_acc") is not None:
        note = f"  (test_acc {s['final']['test_acc']:.4f})"
    return f"{state.status:<12} {epoch:>9}  {run.run_id:<{width}}  {grid}{note}"


if __name__ == "__main__":
    sys.exit(main())
