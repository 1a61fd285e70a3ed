"""The run folder: its default name, what it may hold, who writes it, and the metric files.

A run folder only ever holds a run: :func:`claim_run_folder` writes the marker ``.structvae-run``
and locks the folder (:mod:`structvae.training.lock`); a fresh run refuses a file, a folder of
other files, or (without ``overwrite``) a finished run (:func:`check_run_folder`).
"""

from __future__ import annotations

import csv
import json
import os
import re
import sys
from pathlib import Path

from .config import TrainConfig, model_latent
from .lock import LOCK_FILE, RunFolderError, RunLock

METRIC_FIELDS = (
    "epoch",
    "iteration",
    "train_loss",
    "train_recon",
    "train_kl",
    "val_loss",
    "val_recon",
    "val_kl",
    "time_s",
    "eps",
    "temperature",
    "skipped",
)


def _auto_out(config: TrainConfig) -> Path:
    """``runs/<dataset>-<model>[-<latent>]-<estimator>[-<solver>]-seed<seed>``; the latent part
    is left out where the model takes its own default (the attribute model's style size)."""
    parts = [config.dataset, config.model, model_latent(config), config.estimator, config.solver]
    name = "-".join(str(p) for p in parts if p) + f"-seed{config.seed}"
    return Path("runs") / name.replace(os.sep, "_")


_ARTIFACTS = (
    "config.json",
    "metrics.jsonl",
    "metrics.csv",
    "last.pt",
    "best.pt",
    "results.json",
    "reconstructions.png",
    "samples.png",
    "best_reconstructions.png",
    "best_samples.png",
    "curves.png",
    "attribute_grid.png",
    "best_attribute_grid.png",
    "generation_grid.png",
    "best_generation_grid.png",
    "labelled_indices.json",
)


#: written into every run folder when a run starts there; a folder holding files but neither
#: this nor ``last.pt`` (runs older than the marker) is not a run, and structvae never writes
#: into it
MARKER = ".structvae-run"

_TEMPORARY = re.compile(r"^\..+\.tmp-(\d+)$")  # what _write_json / save_checkpoint write first


def folder_state(out: Path) -> str:
    """What ``out`` holds: ``"missing"``, ``"empty"``, ``"run"`` (a run with ``last.pt``),
    ``"unstarted"`` (a run that never finished an epoch: a marker but no ``last.pt``),
    ``"file"`` (not a folder) or ``"foreign"`` (files that are not a structvae run)."""
    if not out.exists():
        return "missing"
    if not out.is_dir():
        return "file"
    if (out / "last.pt").exists():
        return "run"
    if (out / MARKER).exists():
        return "unstarted"
    return "foreign" if any(p.name != LOCK_FILE for p in out.iterdir()) else "empty"


def check_run_folder(out: Path, *, resume: bool = False, overwrite: bool = False) -> None:
    """Refuse (:class:`RunFolderError`) a folder this run may not write into.

    A fresh run goes into a new or empty folder, a run that never finished an epoch, or (with
    ``overwrite``) a finished run; never into a file or a folder of other files.
    """
    state = folder_state(out)
    if state == "file":
        raise RunFolderError(f"--out {out} is a file, not a folder; choose another --out")
    RunLock.check_free(out)  # another process training there: say that first
    if resume:
        return  # resume reads out/last.pt and says so when it is missing
    if state == "run" and not overwrite:
        raise RunFolderError(
            f"run folder {out} already holds a run (last.pt); pass --resume to continue it, "
            "--overwrite to replace it, or another --out"
        )
    if state == "foreign":
        names = sorted(p.name for p in out.iterdir() if p.name != LOCK_FILE)
        shown = ", ".join(names[:3]) + (", …" if len(names) > 3 else "")
        raise RunFolderError(
            f"--out {out} holds files that are not a structvae run ({shown}); a run is written "
            "only into a new or empty folder (--overwrite replaces runs, never other files): "
            "choose another --out"
        )


def check_out_name(out: str | os.PathLike) -> None:
    """Refuse an empty ``--out`` (it would write into the current folder)."""
    if not str(out).strip():
        raise RunFolderError(
            "--out '' names no folder; give one (e.g. --out runs/x), or leave --out out "
            "for the default runs/<dataset>-<model>-<latent>-<estimator>-seed<seed>"
        )


def _resolve_out(config: TrainConfig) -> Path:
    """The run folder of ``config``, checked (nothing is written). The default folder moves to
    ``…-2``, ``…-3`` … past folders it may not use, and says so on stderr."""
    if config.out is not None:
        check_out_name(config.out)
        out = Path(config.out)
        check_run_folder(out, resume=config.resume, overwrite=config.overwrite)
        return out
    base = _auto_out(config)
    if config.resume:
        return base
    out, i = base, 1
    while folder_state(out) not in ("missing", "empty", "unstarted") or _in_use(out):
        i += 1
        out = base.with_name(f"{base.name}-{i}")
    if out != base and os.environ.get("RANK", "0") == "0":
        why = {"run": "already holds a run", "foreign": "holds other files", "file": "is a file"}
        print(
            f"structvae: {base} {why.get(folder_state(base), 'is in use')}; this run is written "
            f"to {out} (choose with --out; --resume continues {base})",
            file=sys.stderr,
        )
    return out


def _in_use(out: Path) -> bool:
    try:
        RunLock.check_free(out)
    except RunFolderError:
        return True
    return False


def remove_stale_temporaries(out: Path) -> list[Path]:
    """Delete the ``.<name>.tmp-<pid>`` files that processes which no longer run left behind
    (a ``kill -9`` during a checkpoint write); returns what was deleted."""
    removed = []
    for path in out.iterdir():
        m = _TEMPORARY.match(path.name)
        if m is None or not path.is_file():
            continue
        pid = int(m.group(1))
        if pid == os.getpid() or not _alive(pid):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process
        return True
    except OSError:  # pragma: no cover - e.g. pid out of range
        return False
    return True


def claim_run_folder(out: Path, *, resume: bool = False, overwrite: bool = False) -> RunLock:
    """Make ``out`` this process's run folder and return its lock (release it when done).

    Creates the folder, takes the lock (:class:`RunFolderError` while another process trains
    into it), checks the folder again under the lock, removes stale temporaries and, for a fresh
    run, the previous run's artefacts (other files stay), and writes the marker.
    """
    if folder_state(out) == "file":
        check_run_folder(out)  # raises: a file, not a folder
    out.mkdir(parents=True, exist_ok=True)
    lock = RunLock(out).acquire()
    try:
        check_run_folder(out, resume=resume, overwrite=overwrite)  # it may have changed
        remove_stale_temporaries(out)
        if not resume:
            for name in _ARTIFACTS:
                (out / name).unlink(missing_ok=True)
        (out / MARKER).write_text('{"structvae_run": 1}\n')
    except BaseException:
        lock.release()
        raise
    return lock


def finished_run(out: Path, epochs: int) -> dict | None:
    """The results of the run in ``out`` if it has trained ``epochs`` epochs and been
    evaluated (``results.json``), else None."""
    from .checkpoints import load_checkpoint

    results = out / "results.json"
    if not results.is_file() or not (out / "last.pt").is_file():
        return None
    ckpt = load_checkpoint(out / "last.pt")
    if int(ckpt.get("epoch", 0)) < epochs or ckpt.get("position"):
        return None
    try:
        return json.loads(results.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError):
        return None  # re-evaluated by the trainer


def _write_json(path: Path, obj) -> None:
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    tmp.write_text(json.dumps(obj, indent=2, sort_keys=False) + "\n")
    os.replace(tmp, path)


def _metric_fields(history: list[dict]) -> tuple[str, ...]:
    """``METRIC_FIELDS`` plus the extra keys of the rows (e.g. ``val_accuracy``), in order."""
    extra = dict.fromkeys(k for row in history for k in row if k not in METRIC_FIELDS)
    return METRIC_FIELDS + tuple(extra)


def _write_metrics(out: Path, history: list[dict]) -> None:
    fields = _metric_fields(history)
    with open(out / "metrics.jsonl", "w") as f:
        for row in history:
            f.write(json.dumps(row) + "\n")
    with open(out / "metrics.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(fields)
        for row in history:
            w.writerow(["" if row.get(k) is None else row.get(k) for k in fields])


def _append_metrics(out: Path, row: dict) -> None:
    with open(out / "metrics.jsonl", "a") as f:
        f.write(json.dumps(row) + "\n")
    with open(out / "metrics.csv", "a", newline="") as f:
        csv.writer(f).writerow(["" if row.get(k) is None else row.get(k) for k in METRIC_FIELDS])
