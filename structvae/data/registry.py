"""The dataset registry: ``register_dataset(name, factory)`` makes ``load_dataset(name)`` (and the
CLI's ``--dataset name``) build it.

    from structvae.data import DataSplits, register_dataset

    @register_dataset("toy", num_classes=2)
    def toy(request):                       # request: DatasetRequest (root, binarize, seeds...)
        x = torch.rand(300, 784)
        y = (x.mean(1) > 0.5).long()
        return {"train": (x[:200], y[:200]), "val": (x[200:250], y[200:250]),
                "test": (x[250:], y[250:])}

A factory takes one :class:`DatasetRequest` and returns either a finished :class:`DataSplits`
or a mapping ``{"train"|"val"|"test": (x [N, D] float in [0, 1], y [N] long or None)}``, which
:func:`image_splits` turns into one (binarised as ``request.binarize`` asks).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from ..registry import Registry
from .datasets import IMAGE_SHAPE, DataSplits, DynamicBinarized, ImageDataset
from .splits import _derived_seed

__all__ = [
    "BINARIZE_MODES",
    "DATASETS",
    "DatasetInfo",
    "DatasetRequest",
    "available_datasets",
    "get_dataset",
    "image_splits",
    "register_dataset",
    "unregister_dataset",
]

BINARIZE_MODES = ("fixed", "dynamic", "none")
SPLITS = ("train", "val", "test")


@dataclass(frozen=True)
class DatasetRequest:
    """What ``load_dataset`` asks a dataset factory for (already validated)."""

    name: str
    root: Path
    download: bool = False
    binarize: str = "fixed"
    split_seed: int = 0
    val_size: int | None = None
    verify: bool = False
    cache_dir: Path = Path(".")
    options: Mapping[str, Any] = field(default_factory=dict)  # the dataset's own options


@dataclass(frozen=True)
class DatasetInfo:
    """A registered dataset: its factory and what can be known without reading files."""

    name: str
    factory: Callable[[DatasetRequest], DataSplits | Mapping[str, tuple]]
    image_shape: tuple[int, int, int] = IMAGE_SHAPE
    aliases: tuple[str, ...] = ()
    binarize_modes: tuple[str, ...] = BINARIZE_MODES
    options: tuple[str, ...] = ()  # keyword options load_dataset passes in request.options
    num_classes: int | None = None  # for factories that return a mapping
    description: str = ""


_REGISTRY: Registry[DatasetInfo] = Registry(
    "dataset", " (register your own with structvae.data.register_dataset)"
)


def _normalise(name: str) -> str:
    return name.strip().lower().replace("-", "").replace("_", "")


def register_dataset(
    name: str,
    factory: Callable | None = None,
    *,
    image_shape: Sequence[int] = IMAGE_SHAPE,
    aliases: Sequence[str] = (),
    binarize_modes: Sequence[str] = BINARIZE_MODES,
    options: Sequence[str] = (),
    num_classes: int | None = None,
    description: str = "",
    overwrite: bool = False,
):
    """Register ``factory`` as dataset ``name`` (also usable as ``@register_dataset(name)``).

    ``image_shape`` is ``(C, H, W)`` of the images (the models' input size is its product);
    ``aliases`` are other accepted spellings (case, ``-`` and ``_`` are always forgiven);
    ``binarize_modes`` the ``binarize`` values the dataset accepts; ``options`` the names of
    extra keyword arguments of ``load_dataset`` it takes. Returns ``factory``.
    """
    if factory is None:
        return lambda f: register_dataset(
            name,
            f,
            image_shape=image_shape,
            aliases=aliases,
            binarize_modes=binarize_modes,
            options=options,
            num_classes=num_classes,
            description=description,
            overwrite=overwrite,
        )
    if not callable(factory):
        raise ValueError(f"register_dataset({name!r}, ...): factory must be callable")
    shape = tuple(int(s) for s in image_shape)
    if len(shape) != 3 or min(shape) < 1:
        raise ValueError(f"register_dataset({name!r}): image_shape must be (C, H, W), got {shape}")
    bad = [m for m in binarize_modes if m not in BINARIZE_MODES]
    if bad or not binarize_modes:
        raise ValueError(
            f"register_dataset({name!r}): binarize_modes must be among {BINARIZE_MODES}"
        )
    if not description:
        doc = (getattr(factory, "__doc__", None) or "").strip()
        description = doc.splitlines()[0] if doc else ""
    info = DatasetInfo(
        name=name,
        factory=factory,
        image_shape=shape,
        aliases=tuple(aliases),
        binarize_modes=tuple(binarize_modes),
        options=tuple(options),
        num_classes=num_classes,
        description=description,
    )
    _check_aliases(info, overwrite)
    _REGISTRY.add(name, info, overwrite=overwrite, origin=factory)
    return factory


def _check_aliases(info: DatasetInfo, overwrite: bool) -> None:
    """A spelling of ``info`` may not already mean another registered dataset."""
    for spelling in (info.name, *info.aliases):
        other = _lookup(spelling)
        if other is not None and other != info.name and not overwrite:
            raise ValueError(
                f"register_dataset({info.name!r}): {spelling!r} already names dataset {other!r}"
            )


def _lookup(name: str) -> str | None:
    key = _normalise(name)
    for registered in _REGISTRY.in_order():
        info = _REGISTRY.get(registered)
        if key == _normalise(registered) or key in (_normalise(a) for a in info.aliases):
            return registered
    return None


def unregister_dataset(name: str) -> None:
    """Forget the dataset ``name`` (for tests and notebooks)."""
    _REGISTRY.remove(canonical_name(name))


def canonical_name(name: str) -> str:
    """The registered name ``name`` means (``"Fashion_MNIST"`` -> ``"fashion-mnist"``)."""
    if not isinstance(name, str):
        raise ValueError(f"dataset name must be a string, got {name!r}")
    key = _lookup(name)
    if key is None:
        raise ValueError(
            f"unknown dataset {name!r}; choose one of {', '.join(DATASETS)} (or register your "
            "own with structvae.data.register_dataset and --import the file that does)"
        )
    return key


def get_dataset(name: str) -> DatasetInfo:
    """The :class:`DatasetInfo` registered under ``name`` (or one of its spellings)."""
    return _REGISTRY.get(canonical_name(name))


def available_datasets() -> list[str]:
    """Names of the registered datasets, sorted."""
    return _REGISTRY.names()


class _DatasetNames(Sequence):
    """``DATASETS``: the registered names in registration order, always current."""

    def _names(self) -> tuple[str, ...]:
        return tuple(_REGISTRY.in_order())

    def __getitem__(self, index):
        return self._names()[index]

    def __len__(self) -> int:
        return len(_REGISTRY)

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __contains__(self, name: object) -> bool:
        return name in _REGISTRY

    def __eq__(self, other: object) -> bool:
        return tuple(self) == (tuple(other) if isinstance(other, (tuple, list)) else other)

    def __hash__(self) -> int:
        return hash(self._names())

    def __repr__(self) -> str:
        return repr(self._names())


DATASETS: Sequence[str] = _DatasetNames()


def image_splits(
    name: str,
    arrays: Mapping[str, tuple],
    *,
    image_shape: Sequence[int] = IMAGE_SHAPE,
    binarize: str = "none",
    split_seed: int = 0,
    num_classes: int | None = None,
) -> DataSplits:
    """``{"train"|"val"|"test": (x [N, D], y [N] | None[, source_index [N]])}`` -> DataSplits.

    ``binarize="fixed"`` thresholds ``x > 0.5`` once; ``"dynamic"`` wraps each split in
    :class:`DynamicBinarized` (one generator per split, seeded from ``split_seed``); ``"none"``
    keeps ``x``. ``num_classes`` defaults to ``max(y_train) + 1`` when the training split has labels.
    """
    missing = [s for s in SPLITS if s not in arrays]
    if missing:
        raise ValueError(f"dataset {name!r}: the factory returned no {', '.join(missing)} split")
    datasets = {}
    for i, split in enumerate(SPLITS):
        x, y, *rest = arrays[split]
        x = torch.as_tensor(x, dtype=torch.float32)
        if binarize == "fixed":
            x = (x > 0.5).to(torch.float32)
        y = None if y is None else torch.as_tensor(y).long()
        base = ImageDataset(x.contiguous(), y, tuple(image_shape), rest[0] if rest else None)
        if binarize == "dynamic":
            datasets[split] = DynamicBinarized(base, seed=_derived_seed(split_seed, i))
        else:
            datasets[split] = base
    if num_classes is None and len(datasets["train"]) and bool((datasets["train"].y >= 0).any()):
        num_classes = int(datasets["train"].y.max()) + 1
    return DataSplits(
        **datasets,
        name=name,
        image_shape=tuple(image_shape),
        num_classes=num_classes,
        binarize=binarize,
    )
