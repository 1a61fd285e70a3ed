"""Artefacts of a run: the loss curves and the image grids (reconstructions, samples …)."""

from __future__ import annotations

import math
from pathlib import Path

import torch

from .rng import _eval_generator, _reset_binarization

_RECON_IMAGES = 16
_SAMPLE_IMAGES = 64


def _plot_curves(out: Path, history: list[dict]) -> None:
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(10, 4))
    FigureCanvasAgg(fig)
    ax1, ax2 = fig.subplots(1, 2)
    ep = [r["epoch"] for r in history]
    ts = [r["time_s"] for r in history]
    shown = []
    for key, label in (("train_loss", "train"), ("val_loss", "validation")):
        ys = [r[key] for r in history]
        shown += ys[max(1, len(ys) // 10) :] if len(ys) >= 5 else ys
        ax1.plot(ep, ys, marker="." if len(ep) < 30 else None, label=label)
        ax2.plot(ts, ys, marker="." if len(ep) < 30 else None, label=label)
    finite = [v for v in shown if v is not None and math.isfinite(v)]
    if len(history) >= 5 and finite:  # the first epoch's loss would flatten the rest: clip it
        lo, hi = min(finite), max(finite)
        pad = 0.05 * (hi - lo) + 1e-6
        for ax in (ax1, ax2):
            ax.set_ylim(lo - pad, hi + pad)
    ax1.set_xlabel("epoch")
    ax2.set_xlabel("training time (s)")
    for ax in (ax1, ax2):
        ax.set_ylabel("loss (nats, BCE + KL)")
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    fig.savefig(out / "curves.png", dpi=100)


def _fixed_images(dataset, n: int, seed: int) -> torch.Tensor:
    """``n`` validation images evenly spaced through the split (datasets may be sorted by class)."""
    _reset_binarization(dataset, seed)
    n = min(n, len(dataset))
    idx = torch.linspace(0, len(dataset) - 1, n).round().long()
    if getattr(dataset, "supports_batch_index", False):
        return dataset[idx][0].float()
    return torch.stack([torch.as_tensor(dataset[int(i)][0]) for i in idx]).float()


def _save_images(model, fixed_x, image_shape, out: Path, prefix: str, seed: int, device) -> None:
    """``<prefix>reconstructions.png`` (``fixed_x`` above its reconstructions),
    ``<prefix>samples.png`` (prior samples) and one ``<prefix><name>.png`` per grid of
    ``model.grids`` (e.g. ``generation_grid``, ``attribute_grid``)."""
    from torchvision.utils import save_image

    was_training = model.training
    model.eval()
    try:
        shape = (-1, *image_shape)
        recon = model.reconstruct(fixed_x)
        grid = torch.cat([fixed_x.float(), recon.float()]).view(shape).cpu()
        save_image(grid, out / f"{prefix}reconstructions.png", nrow=fixed_x.shape[0], pad_value=0.5)
        samples = model.sample(_SAMPLE_IMAGES, generator=_eval_generator(seed, device))
        save_image(
            samples.float().view(shape).cpu(), out / f"{prefix}samples.png", nrow=8, pad_value=0.5
        )
        for name, (images, nrow) in model.grids(fixed_x, _eval_generator(seed, device)).items():
            path = out / f"{prefix}{name}.png"
            save_image(images.float().cpu(), path, nrow=nrow, pad_value=0.5)
    finally:
        model.train(was_training)
