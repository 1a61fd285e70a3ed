"""The paper's Table 2: semi-supervised accuracy and bound, direct vs Gumbel-softmax.

For every dataset (MNIST, Fashion-MNIST), number of labels (50, 100, 300, 600, 1200) and
estimator, trains ``--model semisupervised --labels N`` (balanced labelled subset of the training
split, one unlabelled + one labelled batch per step; see docs/semisupervised.md) and reports the
test accuracy of the encoder's arg max and the test bound (one-sample BCE + KL on unlabelled test
images) at the best validation-loss epoch. Writes ``table2.md`` and ``table2.csv`` under ``--out``
in the paper's layout (rows: #labels; columns: dataset × {accuracy, bound} × estimator).

    python experiments/semisupervised.py --data-root DATA --epochs 100 --device cuda \\
        --jobs 4 --out runs/semisupervised
"""

from __future__ import annotations

import argparse
import csv
import io
from pathlib import Path

from table1 import add_common_args, common_fields, parse_spec, run_all, spec_slug

LABELS = (50, 100, 300, 600, 1200)


def jobs_for(args) -> list[dict]:
    jobs = []
    for ds in args.datasets:
        for n in args.labels:
            for spec in args.estimators:
                est, opts = parse_spec(spec)
                jobs.append(
                    dict(
                        common_fields(args),
                        dataset=ds,
                        model="semisupervised",
                        latent=args.latent,
                        labels=n,
                        estimator=est,
                        out=str(Path(args.out) / f"{ds}-L{n}-{spec_slug(spec)}"),
                        **opts,
                    )
                )
    return jobs


def table_rows(jobs: list[dict], results: list[dict], specs: list[str], datasets, labels):
    """``(header, rows)``: one row per #labels, then per dataset accuracy and bound per spec."""
    found = {
        (j["dataset"], j["labels"], s): r for j, r, s in zip(jobs, results, specs, strict=True)
    }
    uniq = list(dict.fromkeys(specs))
    header = ["labels"]
    for ds in datasets:
        header += [f"{ds} accuracy {s}" for s in uniq] + [f"{ds} bound {s}" for s in uniq]
    rows = []
    for n in labels:
        row = [n]
        for ds in datasets:
            res = [found.get((ds, n, s)) for s in uniq]
            row += [None if r is None else r.get("test_accuracy") for r in res]
            row += [None if r is None else r.get("test_loss") for r in res]
        rows.append(row)
    return header, rows


def markdown(header, rows) -> str:
    """The paper's Table 2 layout: accuracy in %, bound in nats, ``–`` where not run."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    for row in rows:
        cells = [str(row[0])]
        for name, v in zip(header[1:], row[1:], strict=True):
            if v is None:
                cells.append("–")
            else:
                cells.append(f"{100 * v:.2f}" if " accuracy " in name else f"{v:.2f}")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def to_csv(header, rows) -> str:
    buf = io.StringIO()
    w = csv.writer(buf)
    w.writerow(header)
    w.writerows([["" if v is None else v for v in row] for row in rows])
    return buf.getvalue()


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--datasets", nargs="+", default=["mnist", "fashion-mnist"])
    ap.add_argument("--labels", nargs="+", type=int, default=list(LABELS))
    ap.add_argument(
        "--estimators",
        nargs="+",
        default=["direct", "gumbel-softmax"],
        help="estimator specs with options after a colon: direct:eps=0.1,label_eps=0.01, "
        "gumbel-softmax:alpha=100",
    )
    ap.add_argument("--latent", default="1x10+5", help="1xK+d: K classes, d Gaussian dims")
    add_common_args(ap, epochs=100, out="runs/semisupervised")
    args = ap.parse_args(argv)

    jobs = jobs_for(args)
    specs = [s for _ in args.datasets for _ in args.labels for s in args.estimators]
    results = run_all(jobs, args.jobs)
    header, rows = table_rows(jobs, results, specs, args.datasets, args.labels)
    md = (
        f"Test accuracy (encoder arg max) and test bound (nats; one-sample BCE + KL, labels "
        f"unused) at the best validation-loss epoch; {args.epochs} epochs, seed {args.seed}.\n\n"
        + markdown(header, rows)
        + "\n"
    )
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "table2.md").write_text(md)
    (out / "table2.csv").write_text(to_csv(header, rows))
    print(md)
    return md


if __name__ == "__main__":
    main()
