"""drsom-reproduce (drsom/tools/reproduce.py): a stored run rerun from its config, compared
column by column."""

from __future__ import annotations

import csv
from pathlib import Path
from tempfile import TemporaryDirectory

from run_helpers import only_run, run_inprocess, summary_of

from drsom.store.folder import RunDir
from drsom.tools import reproduce

REPO = Path(__file__).resolve().parents[2]

DIGITS = [
    "data=digits",
    "model=cnn",
    "optimizer=drsom",
    "trainer.epochs=3",
    "trainer.batch_size=256",
    "trainer.device=cpu",
    "trainer.progress=false",
    "trainer.log_every_steps=2",
    "logger.mode=disabled",
]


def test_a_fresh_run_reproduces_identically_and_a_changed_cell_is_found(tmp_path, capsys):
    results = tmp_path / "runs"
    assert run_inprocess([*DIGITS, f"results_dir={results}"]) == "finished"
    folder = only_run(results)
    # epochs outside 1..the stored ones: one line, nothing rerun
    for bad in ("99", "0", "-1"):
        assert reproduce.main([str(folder.path), "--epochs", bad]) == 2
        captured = capsys.readouterr()
        assert captured.err == (
            f"error: --epochs {bad}: run {folder.name} has 3 stored epoch(s) to compare "
            "(accepted: 1 to 3)\n"
        )
        assert "reran" not in captured.out
    assert reproduce.main([str(folder.path), "--epochs", "2"]) == 0
    out = capsys.readouterr().out
    assert f"reran epochs 1-2 of the 3 stored of {folder.name} into " in out
    assert "(the same code)\n" in out  # made and rerun by this checkout as it is
    assert out.endswith("\nreproduced: identical\n")
    assert "metrics.csv test_acc: identical" in out and "steps.csv rho: identical" in out
    assert "train_seconds" not in out  # wall clock is not compared

    with open(folder.metrics, newline="") as f:
        rows = list(csv.DictReader(f))
    rows[1]["train_loss"] = repr(float(rows[1]["train_loss"]) + 1e-12)
    with open(folder.metrics, "w", newline="") as f:
        writer = csv.DictWriter(f, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    # edited in the store: its summary's seal says so, and nothing is rerun
    assert reproduce.main([str(folder.path), "--epochs", "2"]) == 2
    captured = capsys.readouterr()
    assert captured.err == (
        f"error: {folder.path}: metrics.csv was changed after its run ended (its digest in "
        "summary.json does not match)\n"
    )
    assert "reran" not in captured.out
    # as if the run had written that row (sealed again): the comparison finds the cell
    folder.write_summary(folder.read_summary())
    assert reproduce.main([str(folder.path), "--epochs", "2"]) == 1
    out = capsys.readouterr().out
    assert "metrics.csv train_loss: first differs at row 2 (epoch 2)" in out
    assert "metrics.csv test_acc: identical" in out and "NOT reproduced" in out


def test_an_edited_config_is_one_line_before_anything_is_rerun(tmp_path, capsys):
    from analysis_store import metric_rows, write_run
    from run_helpers import compose_config

    cfg = compose_config(*DIGITS, f"results_dir={tmp_path}")
    folder = write_run(tmp_path, cfg, metric_rows("drsom", 0, [0.5, 0.6, 0.7]), "finished")
    for key, value in (("trainer", {**cfg["trainer"], "epochs": 2}), ("optimizer", "x")):
        folder.write_config({**cfg, key: value if key == "trainer" else _target(cfg)})
        assert reproduce.main([str(folder.path)]) == 2
        captured = capsys.readouterr()
        assert captured.err.startswith(
            f"error: {folder.path}: config.yaml no longer matches run id {folder.name}: edited?"
        )
        assert captured.err.count("\n") == 1 and "reran" not in captured.out


def _target(cfg: dict) -> dict:
    """The optimizer section with its ``_target_`` edited (a class that does not exist)."""
    return {**cfg["optimizer"], "_target_": "torch.optim.NoSuchOptimizer"}


def test_a_folder_without_a_run_is_exit_2(tmp_path, capsys):
    assert reproduce.main([str(tmp_path)]) == 2
    assert "holds no run" in capsys.readouterr().err


def test_a_rerun_on_other_data_names_the_data_fingerprint_as_the_reason(tmp_path, capsys):
    import numpy as np
    from PIL import Image

    rng = np.random.RandomState(0)  # 3 classes, 4 training and 2 test images each, 8x8 RGB
    for split, n in (("train", 4), ("test", 2)):
        for cls in ("a", "b", "c"):
            (tmp_path / "images" / split / cls).mkdir(parents=True)
            for j in range(n):
                pixels = rng.randint(0, 256, (8, 8, 3)).astype(np.uint8)
                Image.fromarray(pixels).save(tmp_path / "images" / split / cls / f"{j}.png")
    results = tmp_path / "runs"
    line = [
        "data=image_folder",
        f"data.root={tmp_path / 'images'}",
        "data.cache=false",
        "data.val_size=2",
        "model=cnn",
        "optimizer=adam",
        "trainer=quick",
        "trainer.epochs=1",
        "trainer.device=cpu",
        "trainer.progress=false",
        "logger.mode=disabled",
        f"results_dir={results}",
    ]
    assert run_inprocess(line) == "finished"
    folder = only_run(results)
    assert reproduce.main([str(folder.path)]) == 0  # the same images: identical, nothing said
    out = capsys.readouterr().out
    assert "reproduced: identical" in out and "data_fingerprint" not in out

    image = tmp_path / "images" / "train" / "b" / "0.png"  # one pixel of one image changed
    pixels = np.asarray(Image.open(image)).copy()
    pixels[0, 0, 0] ^= 0xFF
    Image.fromarray(pixels).save(image)
    before = summary_of(folder)["data_fingerprint"]
    with TemporaryDirectory() as kept:
        assert reproduce.main([str(folder.path), "--keep", kept]) == 1
        after = summary_of(RunDir(Path(kept) / folder.name))["data_fingerprint"]
    out = capsys.readouterr().out.splitlines()
    assert before != after and before.split(":")[0] == after.split(":")[0]  # same counts
    reason = (
        f"data_fingerprint: {before} stored vs {after} rerun: the rerun read other data (images "
        "or labels) than the stored run, so its numbers are not expected to be the same"
    )
    assert out.count(reason) == 1, out  # said before the columns it explains
    assert out.index(reason) < min(k for k, text in enumerate(out) if text.startswith("metrics"))
    assert out[-1] == "NOT reproduced: see the differences above"
