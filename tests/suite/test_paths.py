"""drsom.paths: a path as a one-line message shows it, and whether a folder takes a new file."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest

from drsom.cfg.checks import ConfigError
from drsom.job.validate import check_results_dir
from drsom.paths import HEAD, LONGEST_SHOWN, shown, try_write


def test_a_long_path_keeps_its_start_and_its_end_and_a_short_one_is_whole():
    path = "/scratch/" + "/".join(f"level{i:02d}" for i in range(40)) + "/run-s0/metrics.csv"
    assert len(path) > 300
    cut = shown(path)
    assert len(cut) == LONGEST_SHOWN
    start, end = cut.split("...")
    assert path.startswith(start) and len(start) == HEAD
    assert path.endswith(end) and end.endswith("/run-s0/metrics.csv")
    exact = "/" + "x" * (LONGEST_SHOWN - 1)
    assert shown(exact) == exact and shown(Path(exact)) == exact  # at the limit: whole
    assert shown(exact + "y") != exact + "y"


def test_a_symbolic_link_loop_in_results_dir_is_one_short_line(tmp_path):
    # Two links that lead to each other, deep in a folder: pathlib reports the loop with the path
    # it had expanded (hundreds of characters here); the line says it in words instead.
    deep = tmp_path.joinpath(*["a-rather-long-folder-name-for-scratch"] * 8)
    deep.mkdir(parents=True)
    (deep / "one").symlink_to(deep / "two" / "x")
    (deep / "two").symlink_to(deep / "one" / "y")
    value = str(deep / "one" / "runs")
    with pytest.raises(ConfigError) as err:
        check_results_dir(value, tmp_path)
    line = str(err.value)
    assert line in (
        f"results_dir={shown(value)} cannot be used as a folder: a loop of symbolic links",
        # Python 3.13 and later: an OSError, the system's words
        f"results_dir={shown(value)} cannot be used as a folder: Too many levels of symbolic links",
    )
    assert len(line) < 2 * LONGEST_SHOWN and "\n" not in line


def test_try_write_makes_and_removes_a_file_and_raises_what_the_folder_says(tmp_path):
    before = sorted(os.listdir(tmp_path))
    try_write(tmp_path)
    assert sorted(os.listdir(tmp_path)) == before
    (tmp_path / "afile").write_text("")
    with pytest.raises(NotADirectoryError):
        try_write(tmp_path / "afile")
    with pytest.raises(FileNotFoundError):
        try_write(tmp_path / "absent")
    assert not [n for n in os.listdir(tmp_path) if re.match(r"\.drsom-write-test-", n)]
