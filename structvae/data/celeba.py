"""CelebA (aligned and cropped faces, 40 binary attributes) as 3×64×64 colour images.

    splits = load_dataset("celeba", root="~/data", binarize="none",
                          attributes="Eyeglasses,Smiling,Male", label_fraction=0.1)
    x, y = splits.train[[0, 1, 2]]   # x: float32 [3, 12288] in [0, 1], y: int64 [3, 3] in {-1, 0, 1}

The files are the original release's, under ``root`` or ``root/celeba`` (torchvision's layout,
which ``download=True`` produces):

- ``img_align_celeba/`` — the 202,599 aligned JPEGs (178×218);
- ``list_attr_celeba.txt`` — line 1 the image count, line 2 the 40 attribute names, then one
  line per image: the file name and 40 values ±1;
- ``list_eval_partition.txt`` — one line per image: the file name and 0 (train), 1 (val) or
  2 (test): the official 162,770 / 19,867 / 19,962 split.

Images are decoded lazily when a batch is read (the dataset is far too large to hold in memory):
centre-cropped to ``crop``×``crop`` (148, the usual choice for the aligned faces), resized to
64×64 and scaled to [0, 1], flattened channel-major like the other datasets
(``images().view(-1, 3, 64, 64)``). Labels ``y`` are the chosen attributes as 0/1; with
``label_fraction < 1`` a seeded random subset of the *training* images keeps its labels and the
rest get ``-1`` (the library's "unlabelled" mark); validation and test keep all labels.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import Dataset

from .errors import DatasetCorruptError, DatasetNotFoundError
from .labels import check_label_fraction, keep_labels, mask_labels

__all__ = [
    "CELEBA_ATTRIBUTES",
    "DEFAULT_ATTRIBUTES",
    "CELEBA_IMAGE_SHAPE",
    "CelebAImages",
    "parse_attributes",
    "check_label_fraction",
    "find_celeba_folder",
    "read_attribute_file",
    "read_partition_file",
    "load_celeba",
    "make_miniature_celeba",
]

logger = logging.getLogger(__name__)

CELEBA_ATTRIBUTES = (
    "5_o_Clock_Shadow Arched_Eyebrows Attractive Bags_Under_Eyes Bald Bangs Big_Lips Big_Nose "
    "Black_Hair Blond_Hair Blurry Brown_Hair Bushy_Eyebrows Chubby Double_Chin Eyeglasses Goatee "
    "Gray_Hair Heavy_Makeup High_Cheekbones Male Mouth_Slightly_Open Mustache Narrow_Eyes "
    "No_Beard Oval_Face Pale_Skin Pointy_Nose Receding_Hairline Rosy_Cheeks Sideburns Smiling "
    "Straight_Hair Wavy_Hair Wearing_Earrings Wearing_Hat Wearing_Lipstick Wearing_Necklace "
    "Wearing_Necktie Young"
).split()
"""The 40 attribute names of ``list_attr_celeba.txt``, in file order."""

DEFAULT_ATTRIBUTES = ("Eyeglasses", "Smiling", "Male")
CELEBA_IMAGE_SHAPE = (3, 64, 64)
DEFAULT_CROP = 148
_SIZE = (CELEBA_IMAGE_SHAPE[2], CELEBA_IMAGE_SHAPE[1])  # PIL: (width, height)

_IMAGES = "img_align_celeba"
_ATTR = "list_attr_celeba.txt"
_PARTITION = "list_eval_partition.txt"
_COUNTS = {"all": 202599, "train": 162770, "val": 19867, "test": 19962}
_SPLITS = ("train", "val", "test")


def _errors():
    return DatasetNotFoundError, DatasetCorruptError


def parse_attributes(attributes: str | Sequence[str] | None) -> tuple[str, ...]:
    """``"Eyeglasses,Smiling,Male"`` (or a sequence, or ``None``: the default three) -> names.

    ``"all"`` selects the 40. Raises ``ValueError`` for unknown or repeated names, listing the
    valid ones (case is forgiven: ``"smiling"`` is ``Smiling``).
    """
    if attributes is None:
        return DEFAULT_ATTRIBUTES
    if isinstance(attributes, str):
        if attributes.strip().lower() == "all":
            return tuple(CELEBA_ATTRIBUTES)
        names = [a.strip() for a in attributes.split(",")]
    else:
        names = [str(a).strip() for a in attributes]
    names = [a for a in names if a]
    if not names:
        raise ValueError("--attributes is empty; give comma-separated CelebA attribute names")
    lookup = {a.lower(): a for a in CELEBA_ATTRIBUTES}
    unknown = [a for a in names if a.lower() not in lookup]
    if unknown:
        raise ValueError(
            f"unknown CelebA attribute(s) {', '.join(map(repr, unknown))}; the 40 attributes are: "
            f"{', '.join(CELEBA_ATTRIBUTES)} (or 'all')"
        )
    out = tuple(lookup[a.lower()] for a in names)
    if len(set(out)) != len(out):
        raise ValueError(f"--attributes names an attribute twice: {','.join(out)}")
    return out


# ----------------------------------------------------------------------------- files


def find_celeba_folder(root: Path) -> Path | None:
    """``root`` or ``root/celeba``, whichever holds the attribute file (``None``: neither)."""
    for folder in (root, root / "celeba"):
        if (folder / _ATTR).is_file():
            return folder
    return None


def read_attribute_file(path: Path) -> tuple[list[str], list[str], np.ndarray]:
    """``list_attr_celeba.txt`` -> (attribute names, file names, int8 values ``[N, 40]`` ±1)."""
    _, corrupt = _errors()
    lines = path.read_text().splitlines()
    if len(lines) < 2:
        raise corrupt(f"{path}: expected a count line and a line of attribute names")
    try:
        count = int(lines[0].split()[0])
    except (ValueError, IndexError):
        raise corrupt(f"{path}: line 1 should be the number of images, got {lines[0]!r}") from None
    names = lines[1].split()
    body = [line for line in lines[2:] if line.strip()]
    if len(body) != count:
        raise corrupt(f"{path}: line 1 announces {count} images but {len(body)} lines follow")
    tokens = np.array(" ".join(body).split(), dtype=object)
    width = len(names) + 1
    if tokens.size != count * width:
        bad = next(i for i, line in enumerate(body) if len(line.split()) != width)
        raise corrupt(
            f"{path}: line {bad + 3} has {len(body[bad].split())} fields, expected {width} "
            "(a file name and one value per attribute)"
        )
    table = tokens.reshape(count, width)
    try:
        values = table[:, 1:].astype(np.int8)
    except ValueError as e:
        raise corrupt(f"{path}: non-integer attribute value ({e})") from None
    if not np.isin(values, (-1, 1)).all():
        raise corrupt(f"{path}: attribute values must be -1 or 1")
    return names, [str(f) for f in table[:, 0]], values


def read_partition_file(path: Path) -> dict[str, int]:
    """``list_eval_partition.txt`` -> {file name: 0 train | 1 val | 2 test}."""
    _, corrupt = _errors()
    out: dict[str, int] = {}
    for i, line in enumerate(path.read_text().splitlines()):
        parts = line.split()
        if not parts:
            continue
        if len(parts) != 2 or parts[1] not in ("0", "1", "2"):
            raise corrupt(f"{path}: line {i + 1} should be 'filename 0|1|2', got {line!r}")
        out[parts[0]] = int(parts[1])
    return out


# --------------------------------------------------------------------------- dataset


class CelebAImages(Dataset):
    """One split of CelebA, decoded lazily: items ``(x [3·64·64], y [A])``.

    ``ds[indices]`` (a list, slice or index tensor) decodes a whole batch:
    ``(x float32 [B, 12288] in [0, 1], y int64 [B, A])``; ``y`` is 0/1, or -1 for an
    unlabelled training image. ``source_index`` is each image's line in the attribute file.
    """

    supports_batch_index = True
    image_shape = CELEBA_IMAGE_SHAPE

    def __init__(
        self,
        folder: Path,
        files: Sequence[str],
        y: torch.Tensor,
        attributes: Sequence[str],
        source_index: torch.Tensor,
        crop: int = DEFAULT_CROP,
    ) -> None:
        if y.shape != (len(files), len(attributes)):
            raise ValueError(f"y must have shape [{len(files)}, {len(attributes)}]")
        self.folder = Path(folder)
        self.files = list(files)
        self.y = y.long()
        self.attributes = tuple(attributes)
        self.source_index = source_index.long()
        self.crop = int(crop)

    def __len__(self) -> int:
        return len(self.files)

    def _decode(self, name: str) -> np.ndarray:
        from PIL import Image, UnidentifiedImageError

        _, corrupt = _errors()
        path = self.folder / name
        try:
            with Image.open(path) as im:
                im = im.convert("RGB")
                w, h = im.size
                c = min(self.crop, w, h)
                left, top = (w - c) // 2, (h - c) // 2
                im = im.crop((left, top, left + c, top + c))
                im = im.resize(_SIZE, Image.BILINEAR)  # antialiased when shrinking
                return np.asarray(im, dtype=np.uint8)
        except FileNotFoundError:
            raise corrupt(f"{path} is listed in {_ATTR} but missing") from None
        except (UnidentifiedImageError, OSError) as e:
            raise corrupt(f"{path}: not a readable image ({e})") from None

    def __getitem__(self, index):
        if isinstance(index, (int, np.integer)) or (
            isinstance(index, torch.Tensor) and index.dim() == 0
        ):
            x, y = self[[int(index)]]
            return x[0], y[0]
        if isinstance(index, slice):
            idx = torch.arange(len(self))[index]
        else:
            idx = torch.as_tensor(index, dtype=torch.long).flatten()
        pixels = np.stack([self._decode(self.files[int(i)]) for i in idx])  # [B, 64, 64, 3]
        x = torch.from_numpy(pixels).permute(0, 3, 1, 2).reshape(len(idx), -1).float().div_(255.0)
        return x, self.y[idx]

    def images(self, indices=None) -> torch.Tensor:
        """The images at ``indices`` (default all — decodes every file) as ``[B, 3, 64, 64]``."""
        x, _ = self[slice(None) if indices is None else indices]
        return x.view(-1, *CELEBA_IMAGE_SHAPE)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(n={len(self)}, attributes={','.join(self.attributes)})"


# ------------------------------------------------------------------------- loading


def _download(root: Path) -> None:
    """torchvision's CelebA download (Google Drive through ``gdown``; needs internet and often
    hits the Drive quota)."""
    from torchvision.datasets import CelebA

    CelebA(str(root), split="all", target_type="attr", download=True)


def _missing_message(root: Path) -> str:
    return (
        f"CelebA not found under {root} (nor {root / 'celeba'}): expected\n"
        f"  {root / _IMAGES}/000001.jpg ... (the 202,599 aligned JPEGs, from img_align_celeba.zip)\n"
        f"  {root / _ATTR}\n"
        f"  {root / _PARTITION}\n"
        "from the official release (https://mmlab.ie.cuhk.edu.hk/projects/CelebA.html, "
        "'Align&Cropped Images' and 'Anno'/'Eval'). Put them there, point --data-root at the "
        "folder that holds them, or pass --download on a machine with internet access."
    )


def load_celeba(
    root: Path,
    download: bool = False,
    attributes: str | Sequence[str] | None = None,
    label_fraction: float = 1.0,
    split_seed: int = 0,
    verify: bool = False,
    crop: int = DEFAULT_CROP,
) -> dict[str, CelebAImages]:
    """The three official splits as :class:`CelebAImages` (see the module docstring).

    ``label_fraction`` of the training images, chosen by a ``split_seed`` permutation
    (``round(fraction · N_train)`` of them), keep their labels. ``verify`` checks the image
    counts of the original release.
    """
    not_found, corrupt = _errors()
    names = parse_attributes(attributes)
    fraction = check_label_fraction(label_fraction)
    root = Path(root).expanduser()
    folder = find_celeba_folder(root)
    if folder is None and download:
        try:
            _download(root)
        except Exception as e:
            raise not_found(
                f"downloading CelebA into {root / 'celeba'} failed: {e}\n{_missing_message(root)}"
            ) from e
        folder = find_celeba_folder(root)
    if folder is None:
        raise not_found(_missing_message(root))
    missing = [p for p in (folder / _PARTITION, folder / _IMAGES) if not p.exists()]
    if missing:
        zip_note = ""
        if (folder / f"{_IMAGES}.zip").is_file():
            zip_note = f" ({folder / (_IMAGES + '.zip')} is there: extract it in place)"
        raise not_found(
            f"CelebA in {folder} is incomplete: missing {', '.join(map(str, missing))}{zip_note}.\n"
            + _missing_message(root)
        )

    header, files, values = read_attribute_file(folder / _ATTR)
    if header != CELEBA_ATTRIBUTES:
        raise corrupt(
            f"{folder / _ATTR}: line 2 should list the 40 CelebA attributes in the release's "
            f"order, got {len(header)} names starting {header[:3]}"
        )
    partition = read_partition_file(folder / _PARTITION)
    absent = [f for f in files if f not in partition]
    if absent:
        raise corrupt(
            f"{folder / _PARTITION} has no partition for {len(absent)} image(s) of {_ATTR}, "
            f"e.g. {absent[0]}"
        )
    if verify and len(files) != _COUNTS["all"]:
        raise corrupt(f"{folder / _ATTR}: {len(files)} images, expected {_COUNTS['all']}")

    columns = [CELEBA_ATTRIBUTES.index(a) for a in names]
    labels = torch.from_numpy((values[:, columns] > 0).astype(np.int64))  # [N, A]
    part = torch.tensor([partition[f] for f in files])
    out = {}
    for code, split in enumerate(_SPLITS):
        index = torch.nonzero(part == code).flatten()
        if verify and index.numel() != _COUNTS[split]:
            raise corrupt(
                f"{folder / _PARTITION}: {index.numel()} {split} images, expected {_COUNTS[split]}"
            )
        if index.numel() == 0:
            raise corrupt(f"{folder / _PARTITION}: no {split} images (partition {code})")
        y = labels[index].clone()
        if split == "train" and fraction < 1.0:  # the library's one labelling policy
            y = mask_labels(y, keep_labels(y, fraction=fraction, seed=split_seed))
        out[split] = CelebAImages(
            folder / _IMAGES, [files[i] for i in index.tolist()], y, names, index, crop
        )
    logger.info(
        "CelebA from %s: %d / %d / %d images, attributes %s, %.0f%% of training labels kept",
        folder,
        *(len(out[s]) for s in _SPLITS),
        ",".join(names),
        100 * fraction,
    )
    return out


def make_miniature_celeba(
    folder: str | Path,
    num_images: int = 36,
    partition: Sequence[int] | None = None,
    seed: int = 0,
    marks: bool = False,
) -> np.ndarray:
    """Write a miniature CelebA in the release's formats into ``folder`` (for tests and demos).

    ``num_images`` 178×218 JPEGs of smooth random colour blobs in ``img_align_celeba/``, the
    attribute file (count line, the 40 names, ``filename ±1 …`` rows with random values) and the
    partition file (``partition``: a 0/1/2 per image; default ``0 0 0 0 1 2`` repeated). With
    ``marks=True`` three attributes are visible, so that a model can learn them: ``Eyeglasses``
    a dark band at eye height, ``Smiling`` a light band at mouth height, ``Male`` a blue top
    third. Returns the ±1 attribute table, int ``[num_images, 40]``.
    """
    from PIL import Image

    folder = Path(folder)
    n = int(num_images)
    part = (
        list(partition) if partition is not None else [(0, 0, 0, 0, 1, 2)[i % 6] for i in range(n)]
    )
    if len(part) != n or not set(part) <= {0, 1, 2}:
        raise ValueError(f"partition must hold {n} values in 0, 1, 2")
    rng = np.random.default_rng(seed)
    (folder / _IMAGES).mkdir(parents=True, exist_ok=True)
    values = rng.choice([-1, 1], size=(n, len(CELEBA_ATTRIBUTES)))
    names = [f"{i + 1:06d}.jpg" for i in range(n)]
    col = {a: CELEBA_ATTRIBUTES.index(a) for a in ("Eyeglasses", "Smiling", "Male")}
    for name, row in zip(names, values, strict=True):
        small = rng.integers(0, 256, size=(11, 9, 3), dtype=np.uint8)
        big = np.asarray(Image.fromarray(small).resize((178, 218), Image.BICUBIC)).copy()
        if marks:  # rows in the 148x148 centre crop (rows 35..183): eyes ~95, mouth ~150
            big //= 2
            if row[col["Eyeglasses"]] > 0:
                big[85:105, 30:148] = 10
            if row[col["Smiling"]] > 0:
                big[140:158, 55:123] = 245
            if row[col["Male"]] > 0:
                big[35:75, :, 2] = 255
        Image.fromarray(big).save(folder / _IMAGES / name, quality=90)
    rows = [
        f"{f} " + " ".join(f"{v:2d}" for v in row) for f, row in zip(names, values, strict=True)
    ]
    (folder / _ATTR).write_text(
        "\n".join([str(n), " ".join(CELEBA_ATTRIBUTES) + " ", *rows]) + "\n"
    )
    lines = [f"{f} {p}" for f, p in zip(names, part, strict=True)]
    (folder / _PARTITION).write_text("\n".join(lines) + "\n")
    return values
