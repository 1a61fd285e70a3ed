"""Issue 13: a run folder only ever holds a run, has one writer, and says what it holds.

The CLI cases run ``python -m structvae`` as a user does (tests/test_cli_errors.py's ``cli``);
the lock is tested with two real processes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from test_cli_errors import ROOT, TINY, cli, error_line, one_line_error

from structvae.cli import main
from structvae.training.checkpoints import CheckpointError, load_checkpoint
from structvae.training.config import TrainConfig
from structvae.training.lock import RunFolderError, RunLock
from structvae.training.rundir import (
    MARKER,
    _auto_out,
    check_run_folder,
    claim_run_folder,
    folder_state,
    remove_stale_temporaries,
)


def _train_tiny(run: Path, *extra: str) -> None:
    assert main(["train", *TINY, "--epochs", "1", "--quiet", "--out", str(run), *extra]) == 0


# ------------------------------------------------------------- item 1: unrelated files


def test_unrelated_files_are_never_overwritten(tmp_path):
    w = tmp_path / "w"
    w.mkdir()
    (w / "config.json").write_text('{"mine":1}\n')
    (w / "results.json").write_text("keep\n")
    for extra in ([], ["--overwrite"]):  # --overwrite replaces runs, never other files
        line = one_line_error(cli("train", "--epochs", "1", "--out", "w", *extra, cwd=tmp_path))
        assert "holds files that are not a structvae run (config.json, results.json)" in line
    assert (w / "config.json").read_text() == '{"mine":1}\n'
    assert (w / "results.json").read_text() == "keep\n"
    assert sorted(p.name for p in w.iterdir()) == ["config.json", "results.json"]


def test_empty_out_is_refused(tmp_path):
    line = error_line(cli("train", "--epochs", "1", "--out", "", cwd=tmp_path))  # exit 2
    assert "--out '' names no folder" in line
    assert list(tmp_path.iterdir()) == []


def test_an_existing_run_is_one_line_and_overwrite_keeps_other_files(tmp_path):
    run = tmp_path / "run"
    _train_tiny(run)
    assert (run / MARKER).is_file() and folder_state(run) == "run"
    (run / "notes.txt").write_text("my notes\n")
    line = one_line_error(cli("train", *TINY, "--epochs", "1", "--out", run, cwd=tmp_path))
    assert "already holds a run" in line and "--resume" in line and "--overwrite" in line
    _train_tiny(run, "--overwrite")  # replaces the run's own files only
    assert (run / "notes.txt").read_text() == "my notes\n"


def test_folder_states(tmp_path):
    assert folder_state(tmp_path / "new") == "missing"
    (tmp_path / "f").write_text("x")
    assert folder_state(tmp_path / "f") == "file"
    with pytest.raises(RunFolderError, match="is a file, not a folder"):
        check_run_folder(tmp_path / "f")
    (tmp_path / "e").mkdir()
    assert folder_state(tmp_path / "e") == "empty"
    lock = claim_run_folder(tmp_path / "e")
    assert folder_state(tmp_path / "e") == "unstarted"  # marker, no last.pt: may be reused
    check_run_folder(tmp_path / "e")
    lock.release()


def test_default_folder_moving_to_dash_two_is_printed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = ["train", *TINY, "--epochs", "1", "--quiet"]
    assert main(argv) == 0
    assert capsys.readouterr().err == ""
    assert main(argv) == 0
    err = capsys.readouterr().err
    base = Path("runs") / "mnist-sample-categorical-1x3-direct-seed0"
    assert f"{base} already holds a run; this run is written to {base}-2" in err
    assert (tmp_path / f"{base}-2" / "results.json").is_file()


@pytest.mark.parametrize(
    ("model", "latent", "name"),
    [
        ("categorical", "1x10", "mnist-sample-categorical-1x10-direct-seed0"),
        ("attribute", "1x10", "mnist-sample-attribute-direct-seed0"),  # its own default style
        ("attribute", "8", "mnist-sample-attribute-8-direct-seed0"),
    ],
)
def test_default_folder_names_the_latent_the_model_is_built_from(model, latent, name):
    config = TrainConfig(dataset="mnist-sample", model=model, latent=latent)
    assert _auto_out(config) == Path("runs") / name


# ------------------------------------------------------------- item 2: one writer


def test_lock_in_one_process_is_exclusive_and_reclaimable(tmp_path):
    a = RunLock(tmp_path).acquire()
    assert a.held and (tmp_path / ".lock").read_text().startswith(f"pid {os.getpid()} ")
    b = RunLock(tmp_path).acquire()  # the same process claims again: the old claim ends
    assert b.held and not a.held
    b.release()
    code = (  # another process, while this one holds the lock
        "import sys; from structvae.training.lock import RunLock\n"
        "try:\n    RunLock(sys.argv[1]).acquire()\n"
        "except ValueError as e:\n    print(e); sys.exit(3)\n"
    )
    c = RunLock(tmp_path).acquire()
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 3 and f"pid {os.getpid()}" in proc.stdout
    c.release()
    proc = subprocess.run([sys.executable, "-c", code, str(tmp_path)], env=env,
                          capture_output=True, text=True, timeout=120)  # fmt: skip
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_a_second_process_training_into_the_same_folder_fails(tmp_path):
    env = {**os.environ, "PYTHONPATH": str(ROOT), "OMP_NUM_THREADS": "1"}
    cmd = [sys.executable, "-m", "structvae", "train", *TINY, "--quiet", "--out", "c"]
    first = subprocess.Popen([*cmd, "--epochs", "1000"], env=env, cwd=tmp_path,
                             stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        deadline = time.time() + 300
        while not (tmp_path / "c" / "metrics.jsonl").is_file():  # claimed and started
            assert first.poll() is None and time.time() < deadline, first.stderr.read()
            time.sleep(0.2)
        for extra in (["--seed", "1"], ["--seed", "1", "--overwrite"], ["--resume"]):
            second = cli("train", *TINY, "--epochs", "3", "--quiet", "--out", "c", *extra,
                         cwd=tmp_path)  # fmt: skip
            if extra == ["--resume"] and second.returncode == 2:
                continue  # the first process has not finished an epoch yet: nothing to resume
            line = one_line_error(second)
            assert f"another process (pid {first.pid} on " in line and "--out" in line
        assert first.poll() is None  # the first run was not disturbed
    finally:
        first.send_signal(signal.SIGTERM)
        first.wait(timeout=120)
    epochs = [json.loads(line)["epoch"] for line in (tmp_path / "c" / "metrics.jsonl").open()]
    config = json.loads((tmp_path / "c" / "config.json").read_text())
    assert config["seed"] == 0 and config["epochs"] == 1000  # only the first run wrote it
    assert epochs == list(range(1, len(epochs) + 1))  # one run's rows, in order


# ------------------------------------------------------------- also found


def test_stale_temporaries_of_dead_processes_are_removed_on_start(tmp_path):
    run = tmp_path / "run"
    _train_tiny(run)
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    stale = run / f".last.pt.tmp-{dead.pid}"
    stale.write_bytes(b"\0" * 1_000_000)
    live = run / f".best.pt.tmp-{os.getppid()}"  # a process that still runs: kept
    live.write_bytes(b"\0")
    assert remove_stale_temporaries(run) == [stale]
    stale.write_bytes(b"\0" * 1_000_000)
    proc = cli("train", *TINY, "--epochs", "2", "--quiet", "--resume", "--out", run, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert not stale.exists() and live.exists()


def test_resuming_a_finished_run_says_so_and_does_not_evaluate(tmp_path):
    run = tmp_path / "run"
    _train_tiny(run)
    before = {p.name: p.stat().st_mtime_ns for p in run.iterdir()}
    proc = cli("train", "--resume", "--out", run, "--quiet", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"{run} is finished (1 epochs, test loss" in proc.stdout
    assert "--epochs above 1" in proc.stdout and f"resuming {run}" not in proc.stdout
    assert {p.name: p.stat().st_mtime_ns for p in run.iterdir()} == before  # nothing rewritten


def test_resume_does_not_inherit_quiet(tmp_path, capsys):
    run = tmp_path / "run"
    _train_tiny(run)  # --quiet
    assert capsys.readouterr().out == ""
    proc = cli("train", "--resume", "--epochs", "2", "--out", run, cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert f"resuming {run}" in proc.stdout and "epoch 2/2" in proc.stdout
    argv = ["train", "--resume", "--epochs", "3", "--quiet", "--no-quiet", "--out", str(run)]
    assert main(argv) == 0
    assert "epoch 3/3" in capsys.readouterr().out
    assert json.loads((run / "config.json").read_text())["quiet"] is False


class _Evil:
    def __reduce__(self):
        return (os.system, ("echo this must never run",))


def test_unsafe_pickle_is_refused_as_unsafe_not_corrupt(tmp_path):
    run = tmp_path / "run"
    _train_tiny(run)
    ckpt = torch.load(run / "last.pt", weights_only=True)
    torch.save({**ckpt, "model": _Evil()}, run / "last.pt")
    with pytest.raises(CheckpointError, match="refused as unsafe") as exc:
        load_checkpoint(run / "last.pt")
    assert "corrupt" not in str(exc.value) and "posix.system" in str(exc.value)
    line = one_line_error(cli("train", "--resume", "--epochs", "2", "--out", run, cwd=tmp_path))
    assert "refused as unsafe" in line and "must never run" not in line
    (run / "best.pt").write_bytes(b"garbage, not a checkpoint")
    with pytest.raises(CheckpointError, match="corrupt or truncated"):
        load_checkpoint(run / "best.pt")
