"""The paper's Table 1: direct vs Gumbel-softmax vs exact ("unbiased"), one categorical latent.

Trains every (dataset, K, estimator) with the same protocol (MLP 784-300-K / K-300-784, Adam 1e-3,
batch 100, fixed binarisation, 50k/10k/10k), then writes a markdown table of test losses
(one-sample BCE + KL at the best validation epoch) beside the paper's numbers.

    python experiments/table1.py --datasets mnist fashion-mnist --K 10 --epochs 50 \\
        --data-root DATA --device cuda --jobs 6 --out runs/table1
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

# Paper, Table 1 (test loss in nats); rows read as K = 10..50 (see ../shared/REFERENCE.md).
PAPER = {
    "mnist": {
        10: (164.53, 165.26, 167.88),
        20: (152.31, 153.08, 156.41),
        30: (149.17, 147.38, 152.15),
        40: (142.86, 143.95, 147.56),
        50: (155.37, 140.38, 146.12),
    },
    "fashion-mnist": {
        10: (228.46, 222.86, 238.37),
        20: (206.40, 198.39, 211.87),
        30: (205.60, 189.44, 197.01),
        40: (205.68, 184.21, 195.22),
        50: (200.88, 180.31, 191.00),
    },
    "omniglot": {
        10: (155.44, 155.94, 160.13),
        20: (152.05, 152.13, 166.76),
        30: (152.10, 150.14, 157.33),
        40: (151.38, 150.33, 156.09),
        50: (156.84, 149.12, 164.01),
    },
}
PAPER_COLUMN = {"exact": 0, "direct": 1, "gumbel-softmax": 2}


def parse_spec(spec: str) -> tuple[str, dict]:
    """``"direct:eps=0.1"`` -> ``("direct", {"eps": 0.1})``: an estimator and the
    ``TrainConfig`` fields its options set, by structvae's one spec parser
    (:mod:`structvae.training.specs`) with values converted by the estimator's declared options
    (options without a field of their own come as ``estimator_options``)."""
    from structvae.training.build import spec_fields

    fields = spec_fields("categorical", spec)
    fields.pop("model")
    return fields.pop("estimator"), fields


def spec_slug(spec: str) -> str:
    return spec.replace(":", "-").replace("=", "").replace(",", "-")


def run_one(job: dict) -> dict:
    """Train one configuration in this process; returns its results.json contents."""
    import torch

    from structvae.train import TrainConfig, train

    torch.set_num_threads(job.pop("threads", torch.get_num_threads()))
    results_file = Path(job["out"]) / "results.json"
    if results_file.exists() and not job.pop("force", False):
        return json.loads(results_file.read_text())
    job.pop("force", None)
    return train(TrainConfig(**job))


def run_all(jobs: list[dict], n_jobs: int) -> list[dict]:
    """Train every job, ``n_jobs`` at a time in spawned processes (CUDA-safe); results in order."""
    if n_jobs > 1:
        with ProcessPoolExecutor(n_jobs, mp_context=mp.get_context("spawn")) as pool:
            return list(pool.map(run_one, [dict(j) for j in jobs]))
    return [run_one(dict(j)) for j in jobs]


def add_common_args(ap: argparse.ArgumentParser, epochs: int, out: str) -> None:
    """The options every experiment script shares (read back by :func:`common_fields`)."""
    ap.add_argument("--epochs", type=int, default=epochs)
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-samples", type=int, default=100)
    ap.add_argument("--jobs", type=int, default=1, help="configurations trained in parallel")
    ap.add_argument("--out", default=out)
    ap.add_argument("--force", action="store_true", help="retrain runs that have results.json")


def common_fields(args) -> dict:
    """The paper's protocol and the run options shared by every job of an experiment."""
    return dict(
        data_root=args.data_root,
        epochs=args.epochs,
        batch_size=100,
        lr=1e-3,
        seed=args.seed,
        device=args.device,
        eval_samples=args.eval_samples,
        force=args.force,
        threads=max(1, (os.cpu_count() or 1) // args.jobs),
    )


def jobs_for(args) -> list[dict]:
    jobs = []
    for ds in args.datasets:
        for K in args.K:
            for spec in args.estimators:
                est, opts = parse_spec(spec)
                jobs.append(
                    dict(
                        common_fields(args),
                        dataset=ds,
                        latent=f"1x{K}",
                        estimator=est,
                        out=str(Path(args.out) / f"{ds}-K{K}-{spec_slug(spec)}"),
                        **opts,
                    )
                )
    return jobs


def table(rows: list[tuple[str, dict, dict]], estimators: list[str]) -> str:
    """Markdown: one row per (dataset, K); ours and the paper's per estimator spec."""
    by_key: dict[tuple[str, int], dict[str, dict]] = {}
    for spec, job, res in rows:
        K = int(job["latent"].split("x")[1])
        by_key.setdefault((job["dataset"], K), {})[spec] = res
    head = ["dataset", "K"]
    for est in estimators:
        head += [f"{est} (ours)", f"{est} (paper)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for (ds, K), res in sorted(by_key.items()):
        cells = [ds, str(K)]
        for est in estimators:
            ours = res.get(est, {}).get("test_loss")
            paper = PAPER.get(ds, {}).get(K)
            est = parse_spec(est)[0]
            cells.append(f"{ours:.2f}" if ours is not None else "–")
            cells.append(
                f"{paper[PAPER_COLUMN[est]]:.2f}" if paper and est in PAPER_COLUMN else "–"
            )
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_wallclock(jobs: list[dict], specs: list[str], path: Path, x: str = "time_s") -> None:
    """Validation loss against training wall-clock seconds (``x="time_s"``) or epochs
    (``x="epoch"``), one panel per (dataset, latent)."""
    import csv

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = sorted({(j["dataset"], j["latent"]) for j in jobs})
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (ds, latent) in zip(axes[0], panels, strict=True):
        for job, spec in zip(jobs, specs, strict=True):
            if (job["dataset"], job["latent"]) != (ds, latent):
                continue
            rows = list(csv.DictReader(open(Path(job["out"]) / "metrics.csv")))
            ax.plot(
                [float(r[x]) for r in rows],
                [float(r["val_loss"]) for r in rows],
                marker=".",  # runs with one or two epochs still show
                color=plt.get_cmap("tab20")(specs.index(spec) % 20)
                if len(set(specs)) > 10
                else None,
                label=spec,
            )
        ax.set(
            title=f"{ds} {latent}",
            xlabel="training wall-clock (s)" if x == "time_s" else x,
            ylabel="validation loss (nats)",
        )
        ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--datasets", nargs="+", default=["mnist", "fashion-mnist"])
    ap.add_argument("--K", nargs="+", type=int, default=[10, 20, 30, 40, 50])
    ap.add_argument(
        "--estimators",
        nargs="+",
        default=["direct", "gumbel-softmax", "exact"],
        help="estimator specs, with options after a colon: direct:eps=0.1",
    )
    add_common_args(ap, epochs=300, out="runs/table1")
    args = ap.parse_args(argv)

    jobs = jobs_for(args)
    results = run_all(jobs, args.jobs)
    specs = [spec for _ in args.datasets for _ in args.K for spec in args.estimators]
    md = table(list(zip(specs, jobs, results, strict=True)), args.estimators)
    plot_wallclock(jobs, specs, Path(args.out) / "wallclock.png")
    md = (
        f"Test loss (nats; one-sample BCE + KL at the best validation epoch), {args.epochs} epochs, "
        f"seed {args.seed}; paper: 300 epochs.\n\n" + md + "\n"
    )
    Path(args.out).mkdir(parents=True, exist_ok=True)
    (Path(args.out) / "table1.md").write_text(md)
    print(md)
    return md


if __name__ == "__main__":
    main()
