"""The gradient lab's outputs: a CSV of every row, a markdown table and plots (Agg backend)."""

from __future__ import annotations

import csv
import math
from collections.abc import Sequence
from pathlib import Path

from .measure import METRICS, SWEPT, is_missing, parse_estimator_spec

__all__ = ["FIELDS", "write_csv", "read_csv", "markdown_table", "write_plots", "family"]

FIELDS = (
    "point",
    "epoch",
    "latent",
    "n",
    "K",
    "spec",
    "estimator",
    "eps",
    "temperature",
    "wrt",
    *METRICS,
    "time_s",
    "expected_loss",
    "repeats",
    "batch",
    "note",
)


def family(spec: str) -> str:
    """``spec`` without its swept options (ε, τ): the line a sweep plot draws it on."""
    name, opts = parse_estimator_spec(spec)
    rest = ",".join(f"{k}={v}" for k, v in opts.items() if k not in SWEPT)
    return f"{name}:{rest}" if rest else name


def write_csv(rows: Sequence[dict], path: Path) -> None:
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
        w.writeheader()
        for r in rows:
            w.writerow({k: "" if is_missing(r.get(k)) else r.get(k) for k in FIELDS})


def read_csv(path: Path) -> list[dict]:
    """Rows of a ``gradients.csv`` with numbers parsed (empty cells become ``None``)."""
    rows = []
    with open(path, newline="") as f:
        for r in csv.DictReader(f):
            row = {}
            for k, v in r.items():
                if v == "" and k != "note":
                    row[k] = None
                elif k in ("n", "K", "batch", "repeats"):
                    row[k] = int(v)
                elif k in (*METRICS, "eps", "temperature", "time_s", "expected_loss"):
                    row[k] = float(v)
                else:
                    row[k] = v
            rows.append(row)
    return rows


def _fmt(v, spec: str = ".3g") -> str:
    return "–" if is_missing(v) else format(v, spec)


def markdown_table(rows: Sequence[dict]) -> str:
    """One table per (latent, trajectory point); metrics relative to the exact gradient's norm."""
    out = []
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r["latent"], r["point"]), []).append(r)
    head = (
        "| estimator | wrt | ‖Eĝ−g‖/‖g‖ | debiased | tr Cov/‖g‖² | cosine | EI/‖g‖ | ms/estimate "
        "| note |"
    )
    for (latent, point), rs in groups.items():
        first = next((r for r in rs if not is_missing(r.get("grad_norm"))), rs[0])
        out.append(
            f"### latent {latent}, {point}\n\n‖g‖ = {_fmt(first.get('grad_norm'))} (potentials), "
            f"E_q[L] = {_fmt(rs[0].get('expected_loss'), '.2f')} nats, batch {rs[0]['batch']}, "
            f"{rs[0]['repeats']} estimates each\n"
        )
        out += [head, "|" + "---|" * 9]
        for r in rs:
            gn = r.get("grad_norm")
            deb = None if is_missing(gn) or not gn else r["bias_debiased"] / gn
            ms = None if is_missing(r.get("time_s")) else 1e3 * r["time_s"]
            note = str(r.get("note") or "").replace("|", "/").replace("\n", " ")
            cells = [
                r["spec"],
                r["wrt"],
                _fmt(r.get("bias_rel")),
                _fmt(deb),
                _fmt(r.get("variance_rel")),
                _fmt(r.get("cosine"), ".3f"),
                _fmt(r.get("ei_rel"), ".3f"),
                _fmt(ms, ".1f"),
                note[:160],
            ]
            out.append("| " + " | ".join(cells) + " |")
        out.append("")
    return "\n".join(out)


def _plt():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _ok(r: dict) -> bool:
    return r["wrt"] == "potentials" and not is_missing(r.get("cosine"))


def _panels(n: int):
    plt = _plt()
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(5 * cols, 4 * rows), squeeze=False)
    for ax in axes.flat[n:]:
        ax.set_visible(False)
    return plt, fig, axes.flat


def plot_bias_variance(rows: Sequence[dict], path: Path, floor: float = 1e-6) -> None:
    """Relative bias (debiased) against relative variance, one panel per (latent, point)."""
    keys = list(dict.fromkeys((r["latent"], r["point"]) for r in rows if _ok(r)))
    if not keys:
        return
    plt, fig, axes = _panels(len(keys))
    all_fams = list(dict.fromkeys(family(r["spec"]) for r in rows if _ok(r)))
    cmap = plt.get_cmap("tab20")
    markers = "osD^v<>ph*"
    legend = {}
    for ax, (latent, point) in zip(axes, keys, strict=False):
        fams: dict[str, list[dict]] = {}
        for r in rows:
            if _ok(r) and (r["latent"], r["point"]) == (latent, point):
                fams.setdefault(family(r["spec"]), []).append(r)
        for fam, rs in fams.items():
            xs = [max(r["variance_rel"], floor) for r in rs]
            ys = [max(r["bias_debiased"] / r["grad_norm"], floor) for r in rs]
            i = all_fams.index(fam)
            (line,) = ax.plot(xs, ys, marker=markers[i % len(markers)], color=cmap(i % 20),
                              label=fam, linestyle="-" if len(rs) > 1 else "none")  # fmt: skip
            legend.setdefault(fam, line)
            for r, xv, yv in zip(rs, xs, ys, strict=True):
                val = next((r[k] for k in SWEPT if not is_missing(r.get(k))), None)
                if len(rs) > 1 and val is not None:
                    ax.annotate(f"{val:g}", (xv, yv), fontsize=7, xytext=(3, 3), **_TEXT)
        ax.set(
            xscale="log",
            yscale="log",
            xlabel="variance  tr Cov(ĝ) / ‖g‖²",
            ylabel="bias  ‖Eĝ − g‖ / ‖g‖ (debiased)",
            title=f"{latent}, {point}",
        )
        ax.grid(alpha=0.3)
    fig.legend(legend.values(), legend.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5))
    fig.suptitle(f"bias vs variance (values below {floor:g} drawn at {floor:g}; labels: ε or τ)")
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


_TEXT = {"textcoords": "offset points"}
_SWEEP_METRICS = (
    ("cosine", "mean cosine to g"),
    ("ei_rel", "expected improvement / ‖g‖ (−1 best)"),
    ("debiased_rel", "bias ‖Eĝ − g‖ / ‖g‖ (debiased)"),
    ("variance_rel", "tr Cov / ‖g‖²"),
)
_LOG_METRICS = ("debiased_rel", "variance_rel")
_STYLES = ("-", "--", ":", "-.")


def _metric(r: dict, key: str) -> float:
    if key == "debiased_rel":
        return r["bias_debiased"] / r["grad_norm"] if r["grad_norm"] else math.nan
    return r[key]


def plot_sweeps(rows: Sequence[dict], path: Path) -> None:
    """Metrics against ε (estimators taking ε) and τ (taking τ): one line per
    (estimator family, latent, point)."""
    keys = [k for k in SWEPT if sum(_ok(r) and not is_missing(r.get(k)) for r in rows) > 1]
    if not keys:
        return
    plt = _plt()
    fig, axes = plt.subplots(
        len(_SWEEP_METRICS), len(keys), figsize=(6 * len(keys), 3.2 * len(_SWEEP_METRICS))
    )
    axes = [[a] for a in axes] if len(keys) == 1 else axes
    for j, key in enumerate(keys):
        lines: dict[str, list[dict]] = {}
        for r in rows:
            if _ok(r) and not is_missing(r.get(key)):
                lines.setdefault(f"{family(r['spec'])} {r['latent']} {r['point']}", []).append(r)
        fams = list(dict.fromkeys(name.split(" ")[0] for name in lines))
        for i, (metric, label) in enumerate(_SWEEP_METRICS):
            ax = axes[i][j]
            for name, rs in lines.items():
                rs = sorted(rs, key=lambda r: r[key])
                style = _STYLES[fams.index(name.split(" ")[0]) % len(_STYLES)]
                ys = [_metric(r, metric) for r in rs]
                ax.plot([r[key] for r in rs], ys, style, marker=".", label=name)
            ax.set(xscale="log", xlabel="ε" if key == "eps" else "τ", ylabel=label)
            if metric in _LOG_METRICS:
                ax.set_yscale("symlog", linthresh=1e-3)
                ax.set_ylim(bottom=0)
            ax.grid(alpha=0.3)
        axes[0][j].legend(fontsize=6)
        axes[0][j].set_title(f"sweep over {'ε' if key == 'eps' else 'τ'}")
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def plot_latent_sweep(rows: Sequence[dict], path: Path) -> None:
    """Metrics against the number of assignments K^n, per estimator spec and latent family
    (1xK or nx2), at each latent's first trajectory point."""
    ok = [r for r in rows if _ok(r)]
    if len({r["latent"] for r in ok}) < 2:
        return
    first = {}
    for r in ok:
        first.setdefault(r["latent"], r["point"])
    plt = _plt()
    fig, axes = plt.subplots(1, len(_SWEEP_METRICS), figsize=(5 * len(_SWEEP_METRICS), 4.5))
    lines: dict[tuple[str, str], list[dict]] = {}
    for r in ok:
        if r["point"] == first[r["latent"]]:
            shape = "1xK" if r["n"] == 1 else ("nx2" if r["K"] == 2 else "nxK")
            lines.setdefault((r["spec"], shape), []).append(r)
    specs = list(dict.fromkeys(spec for spec, _ in lines))
    cmap = plt.get_cmap("tab20")
    for ax, (metric, label) in zip(axes, _SWEEP_METRICS, strict=True):
        for (spec, shape), rs in lines.items():
            rs = sorted(rs, key=lambda r: r["K"] ** r["n"])
            style = _STYLES[0] if shape == "1xK" else _STYLES[1]
            xs = [r["K"] ** r["n"] for r in rs]
            color = cmap(specs.index(spec) % 20)
            ys = [_metric(r, metric) for r in rs]
            ax.plot(xs, ys, style, marker="o", ms=3, color=color, label=spec)
        ax.set(xscale="log", xlabel="assignments K^n", ylabel=label)
        if metric in _LOG_METRICS:
            ax.set_yscale("symlog", linthresh=1e-3)
            ax.set_ylim(bottom=0)
        ax.grid(alpha=0.3)
    handles, labels = axes[0].get_legend_handles_labels()
    seen = dict(zip(labels, handles, strict=True))  # one entry per spec
    fig.legend(seen.values(), seen.keys(), loc="center left", bbox_to_anchor=(1.0, 0.5),
               fontsize=7)  # fmt: skip
    fig.suptitle("latent-size sweep: solid 1xK (one categorical), dashed nx2 (n binary units)")
    fig.tight_layout()
    fig.savefig(path, dpi=100, bbox_inches="tight")
    plt.close(fig)


def write_plots(rows: Sequence[dict], out: Path) -> list[Path]:
    """All plots that the rows support; returns the files written."""
    targets = (
        (plot_bias_variance, out / "bias_variance.png"),
        (plot_sweeps, out / "sweeps.png"),
        (plot_latent_sweep, out / "latent_sweep.png"),
    )
    written = []
    for fn, path in targets:
        path.unlink(missing_ok=True)
        fn(rows, path)
        if path.exists():
            written.append(path)
    return written
