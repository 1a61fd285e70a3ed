"""The run folder: its default name, what it may hold, and the metric files."""

from __future__ import annotations

import csv
import json
import os
from pathlib import Path

from .config import TrainConfig

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
    parts = [config.dataset, config.model, config.latent, config.estimator]
    if config.solver:
        parts.append(config.solver)
    name = "-".join(str(p) for p in parts) + f"-seed{config.seed}"
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


def _resolve_out(config: TrainConfig) -> Path:
    if config.out is None:
        base = _auto_out(config)
        if config.resume or not (base / "last.pt").exists():
            return base
        i = 2
        while (base.with_name(f"{base.name}-{i}") / "last.pt").exists():
            i += 1
        return base.with_name(f"{base.name}-{i}")
    out = Path(config.out)
    if not config.resume and (out / "last.pt").exists() and not config.overwrite:
        raise ValueError(
            f"run folder {out} already holds a run (last.pt); pass --resume to continue it, "
            "--overwrite to replace it, or another --out"
        )
    return out


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
