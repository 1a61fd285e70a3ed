"""Every estimator trains the same binary-latent VAE for the same wall-clock budget.

One Bernoulli layer of N units is the categorical model with latent ``Nx2`` (784-300-2N encoder,
2N-300-784 decoder; q(z|x) factorises, so ``Nx2`` is N independent Bernoulli units with a
redundant second logit). Each estimator trains on binarized MNIST (Larochelle & Murray) with Adam
1e-3, batch 100, until ``--budget`` training seconds are spent (``TrainConfig.max_time_s``; the
cut-short epoch is validated), then the best-validation checkpoint is evaluated on the test set.
Writes a markdown table (test loss = one-sample BCE + KL, IWAE NLL) and validation loss against
training wall-clock (one panel per latent).

    python experiments/compare_estimators.py --data-root DATA --latents 200x2 \\
        --estimators direct gumbel-softmax --budget 120 --out results/compare_estimators

An estimator that refuses the latent shape (e.g. ``exact`` above 1,024 assignments, a binary-only
estimator on K > 2) is listed with the reason instead of stopping the sweep.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from table1 import common_fields, parse_spec, plot_wallclock, run_one, spec_slug  # noqa: E402

from structvae.estimators import available_estimators  # noqa: E402


def expand(estimators: list[str]) -> list[str]:
    """``all`` -> every registered estimator; checks the names before any training."""
    out = []
    for spec in estimators:
        names = available_estimators() if spec == "all" else [spec]
        for s in names:
            try:  # unknown names and options: the spec parser's one-line message
                name, opts = parse_spec(s)
            except ValueError as e:
                raise SystemExit(str(e)) from None
            if set(opts) - {"eps", "temperature"}:
                raise SystemExit(f"{s!r}: only eps= and temperature= options can be given here")
            if s not in out:
                out.append(s)
    return out


def jobs_for(args) -> list[tuple[str, dict]]:
    jobs = []
    for latent in args.latents:
        for spec in args.estimators:
            name, opts = parse_spec(spec)
            job = dict(
                common_fields(args),
                dataset=args.dataset,
                latent=latent,
                estimator=name,
                max_time_s=args.budget,
                out=str(Path(args.runs) / f"{latent}-{spec_slug(spec)}"),
                quiet=args.quiet,
                **opts,
            )
            job["threads"] = args.threads
            jobs.append((spec, job))
    return jobs


def _budget(job: dict) -> float:
    """The budget the run was trained with (its config.json; cached runs keep theirs)."""
    cfg = Path(job["out"]) / "config.json"
    return json.loads(cfg.read_text()).get("max_time_s") if cfg.is_file() else job["max_time_s"]


def table(done: list[tuple[str, dict, dict | None, str]], dataset: str) -> str:
    head = "| latent | estimator | budget (s) | test loss | IWAE NLL | epochs | steps | steps/s | note |"
    lines = [head, "|" + "---|" * 9]
    for spec, job, res, note in done:
        if res is None:
            lines.append(f"| {job['latent']} | {spec} | – | – | – | – | – | – | {note[:200]} |")
            continue
        rate = res["iterations"] / res["time_s"] if res["time_s"] else float("nan")
        lines.append(
            f"| {job['latent']} | {spec} | {_budget(job):g} | {res['test_loss']:.2f} "
            f"| {res['test_iwae_nll']:.2f} | {res['epochs']} | {res['iterations']} | {rate:.1f} "
            f"| {note} |"
        )
    return (
        f"{dataset}, equal training wall-clock per estimator and latent; test loss = one-sample BCE + KL "
        f"(nats) of the best-validation checkpoint, IWAE NLL with {done[0][1]['eval_samples']} "
        "samples.\n\n" + "\n".join(lines) + "\n"
    )


def main(argv=None) -> str:
    ap = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    ap.add_argument("--latents", nargs="+", default=["200x2"], help="Nx2 latent specs")
    ap.add_argument(
        "--estimators",
        nargs="+",
        default=["all"],
        help="estimator specs (direct:eps=0.1 ...); 'all' = every registered estimator",
    )
    ap.add_argument("--budget", type=float, default=120.0, help="training seconds per estimator")
    ap.add_argument("--dataset", default="binarized-mnist")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--epochs", type=int, default=10_000, help="upper bound; the budget stops")
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--eval-samples", type=int, default=100, help="IWAE samples at the test")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per run")
    ap.add_argument("--runs", default="runs/compare_estimators", help="run folders")
    ap.add_argument("--out", default="results/compare_estimators", help="table and plot")
    ap.add_argument("--force", action="store_true", help="retrain runs that have results.json")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args(argv)
    args.jobs = 1
    args.estimators = expand(args.estimators)

    done = []
    for spec, job in jobs_for(args):
        print(f"== {job['latent']} {spec}: {args.budget:g} s", file=sys.stderr)
        try:
            res = run_one(dict(job))
            note = ""
        except ValueError as e:  # the estimator refuses this model: say so, go on
            res, note = None, f"skipped: {e}".replace("|", "/")
        done.append((spec, job, res, note))
    ran = [(s, j) for s, j, r, _ in done if r is not None]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    if ran:
        plot_wallclock([j for _, j in ran], [s for s, _ in ran], out / "wallclock.png")
    md = table(done, args.dataset)
    (out / "compare_estimators.md").write_text(md)
    rows = [dict(spec=s, **{k: j[k] for k in ("latent", "out")}, result=r, note=n)
            for s, j, r, n in done]  # fmt: skip
    (out / "results.json").write_text(json.dumps(rows, indent=2) + "\n")
    print(md)
    return md


if __name__ == "__main__":
    main()
