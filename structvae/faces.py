"""A procedural synthetic CelebA: drawn faces with visible attributes, in the release's formats.

    make_synthetic_celeba("demo/", num_images=2000, seed=0)
    splits = load_dataset("celeba", root="demo/", binarize="none", label_fraction=0.1)

writes ``img_align_celeba/000001.jpg …`` (178×218 JPEGs, the aligned release's size),
``list_attr_celeba.txt`` (count line, the 40 names, ``file ±1 …`` rows) and
``list_eval_partition.txt`` (0 train / 1 val / 2 test, 80 / 10 / 10 %), so the CelebA loader
(:mod:`structvae.celeba`) reads it unchanged. Every face has a random *style*: background
colour, skin tone, face size and position, hair colour. Attributes drawn as visible features:

- ``Eyeglasses`` (p = 0.5): tinted lenses with thick dark rims round both eyes and a bridge;
- ``Smiling`` (p = 0.5): a wide open mouth showing teeth, else a narrow closed line;
- ``Male`` (p = 0.5): short hair (a cap); not male: long hair falling to the shoulders;
- ``No_Beard``, anti-correlated with ``Male``: a beard in the hair colour on half of the men,
  never on the others (so ``No_Beard = -1`` implies ``Male = 1``);
- ``Wearing_Lipstick``, correlated with not ``Male``: red lips (p = 0.7 without ``Male``,
  0.05 with);
- ``Black_Hair`` / ``Brown_Hair`` / ``Blond_Hair`` / ``Gray_Hair``: the hair colour drawn.

Every other attribute is -1 (absent; nothing is drawn for it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np

from .celeba import CELEBA_ATTRIBUTES

__all__ = ["make_synthetic_celeba", "draw_face", "FACE_SIZE", "HAIR_COLOURS"]

FACE_SIZE = (178, 218)  # PIL (width, height), the aligned release's
HAIR_COLOURS = {
    "Black_Hair": (25, 20, 20),
    "Brown_Hair": (105, 65, 35),
    "Blond_Hair": (225, 195, 120),
    "Gray_Hair": (160, 160, 165),
}
_SKIN = ((255, 224, 196), (234, 192, 160), (198, 145, 105), (141, 94, 62), (90, 60, 40))


def _draw_attributes(rng: np.random.Generator) -> dict[str, bool]:
    male = bool(rng.random() < 0.5)
    return {
        "Eyeglasses": bool(rng.random() < 0.5),
        "Smiling": bool(rng.random() < 0.5),
        "Male": male,
        "No_Beard": not (male and rng.random() < 0.5),
        "Wearing_Lipstick": bool(rng.random() < (0.05 if male else 0.7)),
    }


def _mix(a, b, t: float) -> tuple[int, int, int]:
    return tuple(int(round((1 - t) * u + t * v)) for u, v in zip(a, b, strict=True))


def draw_face(attrs: dict[str, bool], hair: str, rng: np.random.Generator):
    """One 178×218 RGB ``PIL.Image`` of a face with ``attrs`` and ``hair`` (a key of
    :data:`HAIR_COLOURS`); the style (colours, size, position) comes from ``rng``."""
    from PIL import Image, ImageDraw, ImageFilter

    W, H = FACE_SIZE
    bg = tuple(int(v) for v in rng.integers(40, 230, 3))
    img = Image.new("RGB", FACE_SIZE, bg)
    d = ImageDraw.Draw(img)
    skin = _mix(_SKIN[rng.integers(len(_SKIN))], tuple(rng.integers(150, 256, 3)), 0.15)
    hair_rgb = _mix(HAIR_COLOURS[hair], tuple(rng.integers(0, 256, 3)), 0.1)
    fw, fh = rng.uniform(38, 46), rng.uniform(48, 56)  # half width / height
    cx, cy = W / 2 + rng.uniform(-6, 6), H / 2 + rng.uniform(-4, 6)
    top = cy - fh
    if not attrs["Male"]:  # long hair behind the face, down to the shoulders
        d.rounded_rectangle(
            (cx - fw - 14, top - 14, cx + fw + 14, cy + fh + 40), radius=34, fill=hair_rgb
        )
    d.ellipse((cx - fw, top, cx + fw, cy + fh), fill=skin)
    # hair cap on top (both); short: a tight cap only
    d.chord((cx - fw - 3, top - 10, cx + fw + 3, top + fh * 0.8), 180, 360, fill=hair_rgb)
    if not attrs["No_Beard"]:
        d.chord((cx - fw, cy - fh * 0.2, cx + fw, cy + fh), 0, 180, fill=hair_rgb)
    ey, ex = cy - fh * 0.12, fw * 0.45
    lenses = [(cx + sx * ex - 15, ey - 11, cx + sx * ex + 15, ey + 11) for sx in (-1, 1)]
    if attrs["Eyeglasses"]:  # tinted lenses under the eyes, rims drawn over them
        tint = _mix(skin, (20, 30, 60), 0.55)
        for box in lenses:
            d.rounded_rectangle(box, radius=6, fill=tint)
    for sx in (-1, 1):
        d.ellipse((cx + sx * ex - 6, ey - 4, cx + sx * ex + 6, ey + 4), fill=(245, 245, 245))
        d.ellipse((cx + sx * ex - 3, ey - 3, cx + sx * ex + 3, ey + 3), fill=(30, 30, 40))
    if attrs["Eyeglasses"]:
        for box in lenses:
            d.rounded_rectangle(box, radius=6, outline=(10, 10, 10), width=5)
        d.line((cx - ex + 15, ey - 2, cx + ex - 15, ey - 2), fill=(10, 10, 10), width=5)
    my, mw = cy + fh * 0.45, fw * 0.6
    lips = (200, 20, 40) if attrs["Wearing_Lipstick"] else _mix(skin, (120, 40, 40), 0.6)
    if attrs["Smiling"]:  # a wide open smile showing teeth
        d.chord((cx - mw, my - 18, cx + mw, my + 18), 0, 180, fill=lips)
        d.chord((cx - mw + 6, my - 12, cx + mw - 6, my + 11), 0, 180, fill=(250, 250, 250))
    else:  # closed, straight and narrow
        d.rectangle((cx - mw * 0.5, my - 2, cx + mw * 0.5, my + 2), fill=lips)
    return img.filter(ImageFilter.GaussianBlur(0.8))


def make_synthetic_celeba(
    folder: str | Path,
    num_images: int = 2000,
    seed: int = 0,
    partition: Sequence[int] | None = None,
) -> np.ndarray:
    """Write ``num_images`` synthetic faces in CelebA's formats into ``folder`` (module docstring).

    ``partition``: a 0/1/2 per image (default: the first 80 % train, then 10 % val, 10 % test).
    Returns the ±1 attribute table, int ``[num_images, 40]``."""
    n = int(num_images)
    if n < 3:
        raise ValueError(f"--images must be at least 3 (one per split), got {num_images}")
    if partition is None:
        part = [0 if i < 0.8 * n else (1 if i < 0.9 * n else 2) for i in range(n)]
    else:
        part = [int(p) for p in partition]
        if len(part) != n or not set(part) <= {0, 1, 2}:
            raise ValueError(f"partition must hold {n} values in 0, 1, 2")
    folder = Path(folder)
    (folder / "img_align_celeba").mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    values = -np.ones((n, len(CELEBA_ATTRIBUTES)), dtype=np.int64)
    col = {a: i for i, a in enumerate(CELEBA_ATTRIBUTES)}
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    hairs = list(HAIR_COLOURS)
    for i, name in enumerate(names):
        attrs = _draw_attributes(rng)
        hair = hairs[rng.integers(len(hairs))]
        for a, on in {**attrs, hair: True}.items():
            values[i, col[a]] = 1 if on else -1
        draw_face(attrs, hair, rng).save(folder / "img_align_celeba" / name, quality=90)
    rows = [
        f"{f} " + " ".join(f"{v:2d}" for v in row) for f, row in zip(names, values, strict=True)
    ]
    (folder / "list_attr_celeba.txt").write_text(
        "\n".join([str(n), " ".join(CELEBA_ATTRIBUTES) + " ", *rows]) + "\n"
    )
    lines = [f"{f} {p}" for f, p in zip(names, part, strict=True)]
    (folder / "list_eval_partition.txt").write_text("\n".join(lines) + "\n")
    return values
