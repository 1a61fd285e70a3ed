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


def error_line(proc, command: str = "train") -> str:
    """The error line of a command refused at argument checking (exit 2, after the usage)."""
    assert proc.returncode == 2, (proc.returncode, proc.stderr[-2000:])
    assert "Traceback" not in proc.stderr, proc.stderr[-2000:]
    lines = [line for line in proc.stderr.splitlines() if "error:" in line]
    assert len(lines) == 1 and lines[0].startswith(f"structvae {command}: error: "), lines
    return lines[0]


def test_unavailable_device_is_one_line(tmp_path):
    line = error_line(cli("train", "--device", "mps", "--quiet", cwd=tmp_path))
    assert "--device mps is not available on this machine" in line and "--device cpu" in line
    assert list(tmp_path.iterdir()) == []


def test_damaged_config_json_is_one_line(tmp_path):
    run = tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"dataset": "mnist-sa')
    (run / "last.pt").write_bytes(b"")
    line = one_line_error(cli("train", "--resume", "--out", run, cwd=tmp_path))
    assert "config.json is not a structvae run configuration" in line
    line = one_line_error(cli("evaluate", run, cwd=tmp_path), "evaluate")
    assert "config.json is not a structvae run configuration" in line


def test_full_disk_is_one_line_naming_the_checkpoint(tmp_path):
    """Checkpoint temporaries are opened on /dev/full: the kernel's own ENOSPC mid-write."""
    run = tmp_path / "run"
    proc = cli("train", *TINY, "--epochs", "1", "--quiet", "--out", run, cwd=tmp_path,
               fault=f"enospc:{run}")  # fmt: skip
    line = one_line_error(proc)
    assert "no space left on the device holding" in line and "--resume" in line
    assert str(run / "best.pt") in line or str(run / "last.pt") in line
    assert "enforce fail" not in line and "unexpected pos" not in line
    assert not [p.name for p in run.iterdir() if ".tmp-" in p.name]  # no temporary left


def test_eval_samples_zero_skips_the_iwae_in_train_and_evaluate(tmp_path, capsys):
    run = tmp_path / "run"
    proc = cli("train", *TINY[:-2], "--eval-samples", "0", "--epochs", "1", "--out", run,
               cwd=tmp_path)  # fmt: skip
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "IWAE NLL (0 samples) skipped" in proc.stdout
    res = json.loads((run / "results.json").read_text())
    assert res["iwae_samples"] == 0 and res["test_iwae_nll"] is None
    assert main(["evaluate", str(run), "--samples", "0"]) == 0  # the same meaning: skip
    ev = json.loads(capsys.readouterr().out)
    assert "iwae_nll" not in ev and ev["loss"] == pytest.approx(res["test_loss"], rel=1e-6)
    with pytest.raises(SystemExit):
        main(["train", "--eval-samples", "-1"])
    assert "--eval-samples must be 0 (skip the IWAE evaluation) or more" in capsys.readouterr().err


def test_describe_finds_the_os_error_in_the_chain_and_flags_the_unexpected():
    import errno

    from structvae.failures import describe

    try:
        try:
            raise OSError(errno.ENOSPC, "No space left on device")
        except OSError:
            raise RuntimeError(
                "[enforce fail at inline_container.cc:672] . unexpected pos"
            ) from None
    except RuntimeError as e:
        chained = e  # `from None` hides the cause from the traceback, not from __context__
    assert describe(chained).startswith("no space left on the device")
    ro = OSError(errno.EROFS, "Read-only file system", "/mnt/x")
    assert describe(ro) == (
        "the file system is read-only at /mnt/x (Read-only file system); choose a writable --out"
    )
    assert describe(ValueError("--lr must be positive")) == "--lr must be positive"
    odd = describe(AttributeError("'NoneType' object has no attribute 'x'"))
    assert odd.startswith("AttributeError: ") and "--debug" in odd
