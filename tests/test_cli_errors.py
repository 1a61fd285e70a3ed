"""Issue 13: every mistake or mishap is one line ``structvae <command>: error: …`` saying what
to do (``--debug`` shows the traceback), run as a user runs it: a fresh ``python -m structvae``."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from structvae.cli import main

ROOT = Path(__file__).resolve().parents[1]
FAULTFS = Path(__file__).resolve().parent / "faultfs"
TINY = ["--latent", "1x3", "--batch-size", "500", "--eps", "0.5", "--eval-samples", "2"]


def cli(*args, cwd: Path, fault: str | None = None, timeout: int = 300):
    """``python -m structvae ARGS`` in ``cwd`` on one thread; ``fault``: tests/faultfs spec."""
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    env.pop("STRUCTVAE_FAULT", None)
    if fault is not None:
        env["PYTHONPATH"] = f"{ROOT}{os.pathsep}{FAULTFS}"
        env["STRUCTVAE_FAULT"] = fault
    cmd = [sys.executable, "-m", "structvae", *map(str, args)]
    return subprocess.run(cmd, env=env, cwd=cwd, capture_output=True, text=True, timeout=timeout)


def one_line_error(proc, command: str = "train") -> str:
    """The single error line of a failed command (asserting there is no traceback)."""
    assert proc.returncode == 1, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, lines
    assert lines[0].startswith(f"structvae {command}: error: "), lines[0]
    return lines[0]


def test_semisupervised_labels_not_divisible_is_one_line_and_writes_nothing(tmp_path):
    proc = cli("train", "--model", "semisupervised", "--labels", "5", "--quiet", cwd=tmp_path)
    line = one_line_error(proc)
    assert "--labels 5" in line and "try 10" in line
    assert list(tmp_path.iterdir()) == []


def test_debug_shows_the_traceback(tmp_path):
    argv = ["train", "--model", "semisupervised", "--labels", "5", "--quiet", "--debug"]
    proc = cli(*argv, cwd=tmp_path)
    assert proc.returncode == 1 and "Traceback" in proc.stderr and "--labels 5" in proc.stderr
    proc = cli("--debug", *argv[:-1], cwd=tmp_path)  # before the command works as well
    assert proc.returncode == 1 and "Traceback" in proc.stderr


def test_out_at_a_file_is_one_line(tmp_path):
    (tmp_path / "afile").write_text("mine\n")
    line = one_line_error(cli("train", "--quiet", "--out", "afile", cwd=tmp_path))
    assert "afile" in line and "--out" in line
    assert (tmp_path / "afile").read_text() == "mine\n"


def test_read_only_file_system_is_one_line(tmp_path):
    ro = tmp_path / "ro"
    ro.mkdir()
    proc = cli("train", "--quiet", "--out", ro / "run", cwd=tmp_path, fault=f"erofs:{ro}")
    line = one_line_error(proc)
    assert "read-only" in line and "--out" in line and str(ro / "run") in line


def test_threads_is_checked_and_applied(tmp_path, capsys):
    line = one_line_error(cli("train", "--threads", "0", cwd=tmp_path))
    assert "--threads must be a positive integer" in line
    before = torch.get_num_threads()
    try:  # in-process: the command sets torch's thread count before any work
        assert main(["evaluate", str(tmp_path / "none"), "--threads", "1"]) == 1
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert "config.json" in capsys.readouterr().err


def test_damaged_config_json_is_one_line_for_resume(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"dataset": "mnist-sa')
    (run / "last.pt").write_bytes(b"")
    line = one_line_error(cli("train", "--resume", "--out", run, cwd=tmp_path))
    assert "config.json is damaged" in line and "afresh" in line


@pytest.mark.parametrize("case", ["damaged", "not-an-object"])
def test_damaged_config_json_message(tmp_path, case):
    from structvae.cli import _read_run_config

    path = tmp_path / "config.json"
    path.write_text("{" if case == "damaged" else json.dumps([1, 2]))
    with pytest.raises(ValueError, match="config.json"):
        _read_run_config(path)
