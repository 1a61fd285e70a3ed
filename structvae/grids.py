"""Image tables with column titles (the attribute-switching grid of the paper's Fig. 5)."""

from __future__ import annotations

import os

import torch

__all__ = ["save_image_table", "save_attribute_grid"]


def save_image_table(
    images: torch.Tensor, titles: list[str], path: str | os.PathLike, dpi: int = 100
) -> None:
    """Save ``images`` ``[R, C, ch, H, W]`` (values in [0, 1], ``ch`` 1 or 3) as an ``R × C`` table
    of pictures with one title per column (``len(titles) == C``) to ``path`` (PNG)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    if images.dim() != 5 or images.shape[2] not in (1, 3):
        raise ValueError(f"images must be [R, C, 1|3, H, W], got {list(images.shape)}")
    R, C = images.shape[:2]
    if len(titles) != C:
        raise ValueError(f"need one title per column: {C} columns, {len(titles)} titles")
    pics = images.detach().float().clamp(0, 1).permute(0, 1, 3, 4, 2).cpu().numpy()
    fig = Figure(figsize=(1.1 * C, 1.1 * R + 0.6))
    FigureCanvasAgg(fig)
    axes = fig.subplots(R, C, squeeze=False)
    for r in range(R):
        for c in range(C):
            ax = axes[r, c]
            pic = pics[r, c]
            ax.imshow(pic[..., 0] if pic.shape[-1] == 1 else pic, cmap="gray", vmin=0, vmax=1)
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(titles[c], fontsize=7)
    fig.tight_layout(pad=0.3)
    fig.savefig(path, dpi=dpi)


def save_attribute_grid(model, x: torch.Tensor, path: str | os.PathLike) -> None:
    """``model.attribute_grid(x)`` (rows: the images ``x``; columns: reconstruction, each
    attribute off / on) saved with :func:`save_image_table`."""
    images, titles = model.attribute_grid(x)
    save_image_table(images, titles, path)
