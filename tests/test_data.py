"""Tests for structvae.data: loaders on tiny generated files, splits, binarisation, loaders.

The ``slow`` tests read the real copies in ../shared/data and skip when it is absent.
"""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import stat
from pathlib import Path

import numpy as np
import pytest
import torch
from torch.utils.data import TensorDataset

import structvae.data as data_mod
import structvae.data.binarized as bmnist_mod
from structvae.data import (
    DATASETS,
    DatasetCorruptError,
    DatasetNotFoundError,
    DataSplits,
    DynamicBinarized,
    ImageDataset,
    load_dataset,
    make_loader,
)

SHARED_DATA = Path(__file__).resolve().parents[2] / "shared" / "data"

TV_FOLDER = {"mnist": "MNIST", "fashion-mnist": "FashionMNIST"}
IDX_FILES = (
    "train-images-idx3-ubyte",
    "train-labels-idx1-ubyte",
    "t10k-images-idx3-ubyte",
    "t10k-labels-idx1-ubyte",
)
N_TRAIN, N_TEST = 60, 20


@pytest.fixture(autouse=True)
def _private_cache(tmp_path, monkeypatch):
    """Keep every test's cache (and default root) out of the user's home."""
    monkeypatch.setenv("STRUCTVAE_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setenv("STRUCTVAE_DATA_ROOT", str(tmp_path / "default-root"))


# ----------------------------------------------------------------- file writers


def idx_bytes(arr: np.ndarray) -> bytes:
    """IDX encoding: magic 0x0000 08 <ndim> (uint8 data), big-endian int32 dims, data."""
    arr = np.ascontiguousarray(arr, dtype=np.uint8)
    header = np.array([0x0800 | arr.ndim, *arr.shape], dtype=">i4").tobytes()
    return header + arr.tobytes()


def tiny_idx_arrays(seed: int = 0):
    """Grey-level images whose pixel 0 holds the image's row number in its file."""
    rng = np.random.default_rng(seed)
    train = rng.integers(0, 256, size=(N_TRAIN, 28, 28), dtype=np.uint8)
    test = rng.integers(0, 256, size=(N_TEST, 28, 28), dtype=np.uint8)
    train[:, 0, 0] = np.arange(N_TRAIN)
    test[:, 0, 0] = np.arange(N_TEST)
    return {
        "train-images-idx3-ubyte": train,
        "train-labels-idx1-ubyte": (np.arange(N_TRAIN) % 10).astype(np.uint8),
        "t10k-images-idx3-ubyte": test,
        "t10k-labels-idx1-ubyte": ((np.arange(N_TEST) * 3) % 10).astype(np.uint8),
    }


def write_tiny_idx(root: Path, folder: str, compressed: bool = True, seed: int = 0) -> dict:
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    arrays = tiny_idx_arrays(seed)
    for name, arr in arrays.items():
        if compressed:
            with gzip.open(raw / f"{name}.gz", "wb") as f:
                f.write(idx_bytes(arr))
        else:
            (raw / name).write_bytes(idx_bytes(arr))
    return arrays


def amat_text(bits: np.ndarray) -> bytes:
    return "".join(" ".join(str(int(v)) for v in row) + "\n" for row in bits).encode()


def write_amat(path: Path, bits: np.ndarray, gz: bool = False) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    text = amat_text(bits)
    if gz:
        path = path.with_name(path.name + ".gz")
        path.write_bytes(gzip.compress(text))
    else:
        path.write_bytes(text)
    return path


def tiny_bits(seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    return {
        part: rng.integers(0, 2, size=(n, 784))
        for part, n in (("train", 6), ("valid", 3), ("test", 2))
    }


def write_tiny_bmnist(folder: Path, gz: bool = False) -> dict[str, np.ndarray]:
    bits = tiny_bits()
    for part, b in bits.items():
        write_amat(folder / f"binarized_mnist_{part}.amat", b, gz=gz)
    return bits


def make_read_only(path: Path) -> None:
    path.chmod(stat.S_IRUSR | stat.S_IXUSR | stat.S_IRGRP | stat.S_IXGRP)


def make_writable(path: Path) -> None:
    path.chmod(stat.S_IRWXU)


# ------------------------------------------------------------ mnist / fashion-mnist


@pytest.mark.parametrize("name", ["mnist", "fashion-mnist"])
def test_tiny_idx_loads_through_torchvision(tmp_path, name):
    arrays = write_tiny_idx(tmp_path, TV_FOLDER[name])
    splits = load_dataset(name, root=tmp_path, binarize="none", val_size=10)
    assert isinstance(splits, DataSplits)
    assert splits.name == name and splits.image_shape == (1, 28, 28)
    assert splits.num_classes == 10
    assert splits.sizes == (N_TRAIN - 10, 10, N_TEST)

    x, y = splits.train[0]
    assert x.shape == (784,) and x.dtype == torch.float32 and isinstance(y, int)
    for split, images, labels in (
        (splits.train, "train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        (splits.val, "train-images-idx3-ubyte", "train-labels-idx1-ubyte"),
        (splits.test, "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"),
    ):
        idx = split.source_index.numpy()
        want = arrays[images][idx].reshape(len(idx), 784).astype(np.float32) / 255
        np.testing.assert_allclose(split.x.numpy(), want, rtol=0, atol=1e-7)
        np.testing.assert_array_equal(split.y.numpy(), arrays[labels][idx])
        # pixel 0 encodes the row number: the image really is that row of the file
        np.testing.assert_array_equal(np.rint(split.x[:, 0].numpy() * 255), idx)
    # the archives were extracted next to themselves (the root is writable)
    raw = tmp_path / TV_FOLDER[name] / "raw"
    assert all((raw / n).is_file() for n in IDX_FILES)


def test_mnist_split_is_disjoint_and_reproducible(tmp_path):
    write_tiny_idx(tmp_path, "MNIST")
    a = load_dataset("mnist", root=tmp_path, binarize="none", val_size=15, split_seed=7)
    b = load_dataset("mnist", root=tmp_path, binarize="none", val_size=15, split_seed=7)
    c = load_dataset("mnist", root=tmp_path, binarize="none", val_size=15, split_seed=8)
    tr, va = set(a.train.source_index.tolist()), set(a.val.source_index.tolist())
    assert not tr & va and tr | va == set(range(N_TRAIN)) and len(va) == 15
    assert torch.equal(a.val.source_index, b.val.source_index)
    assert torch.equal(a.train.x, b.train.x)
    assert not torch.equal(a.val.source_index, c.val.source_index)
    assert torch.equal(a.test.x, c.test.x)  # the test set never moves


def test_extracted_files_without_archives(tmp_path):
    arrays = write_tiny_idx(tmp_path, "FashionMNIST", compressed=False)
    splits = load_dataset("fashion-mnist", root=tmp_path, binarize="none", val_size=5)
    assert splits.sizes == (N_TRAIN - 5, 5, N_TEST)
    np.testing.assert_array_equal(splits.test.y.numpy(), arrays["t10k-labels-idx1-ubyte"])


def test_read_only_root_is_extracted_into_cache(tmp_path, caplog):
    root = tmp_path / "ro"
    write_tiny_idx(root, "MNIST")
    raw = root / "MNIST" / "raw"
    cache = tmp_path / "mycache"
    before = sorted(p.name for p in raw.iterdir())
    make_read_only(raw)
    try:
        with caplog.at_level(logging.INFO, logger="structvae.data"):
            splits = load_dataset("mnist", root=root, val_size=10, cache_dir=cache)
        assert splits.sizes == (N_TRAIN - 10, 10, N_TEST)
        assert sorted(p.name for p in raw.iterdir()) == before  # nothing written there
        extracted = sorted(p.name for p in cache.rglob("*-ubyte"))
        assert extracted == sorted(IDX_FILES)
        assert "read-only" in caplog.text and str(cache) in caplog.text
        # a second load reuses the cache
        again = load_dataset("mnist", root=root, val_size=10, cache_dir=cache)
        assert torch.equal(again.train.x, splits.train.x)
    finally:
        make_writable(raw)


def _rewrite_gz(path: Path, arr: np.ndarray, mtime_ns: int | None = None) -> None:
    """Replace the archive ``path`` with one of ``arr``; optionally give it an old time."""
    with gzip.open(path, "wb") as f:
        f.write(idx_bytes(arr))
    if mtime_ns is not None:
        os.utime(path, ns=(mtime_ns, mtime_ns))


def test_replaced_archive_is_extracted_again(tmp_path):
    arrays = write_tiny_idx(tmp_path, "MNIST")
    raw = tmp_path / "MNIST" / "raw"
    labels = raw / "train-labels-idx1-ubyte.gz"
    good = arrays["train-labels-idx1-ubyte"]
    _rewrite_gz(labels, (good + 1) % 10)  # a bad archive...
    bad = load_dataset("mnist", root=tmp_path, binarize="none", val_size=10)
    extracted = raw / "train-labels-idx1-ubyte"
    assert extracted.is_file()  # ...extracted next to itself
    # replaced by the good one, with a time *older* than the bad extraction (as `cp -p` or
    # `mv` of an older download would leave it): the old mtime rule kept the bad copy
    _rewrite_gz(labels, good, mtime_ns=extracted.stat().st_mtime_ns - 10**9)
    fixed = load_dataset("mnist", root=tmp_path, binarize="none", val_size=10)
    rows = fixed.train.source_index
    np.testing.assert_array_equal(fixed.train.y.numpy(), good[rows.numpy()])
    assert torch.equal(bad.train.y, (fixed.train.y + 1) % 10)
    record = json.loads((raw / ".train-labels-idx1-ubyte.source.json").read_text())
    assert record["source"] == str(labels.resolve()) and record["size"] == labels.stat().st_size


def test_touched_archive_is_not_extracted_again(tmp_path):
    write_tiny_idx(tmp_path, "MNIST")
    raw = tmp_path / "MNIST" / "raw"
    load_dataset("mnist", root=tmp_path, val_size=10)
    extracted = raw / "train-images-idx3-ubyte"
    before = extracted.stat().st_mtime_ns, extracted.stat().st_ino
    archive = raw / "train-images-idx3-ubyte.gz"
    os.utime(archive, ns=(before[0] + 10**9, before[0] + 10**9))  # same bytes, a new time
    load_dataset("mnist", root=tmp_path, val_size=10)
    assert (extracted.stat().st_mtime_ns, extracted.stat().st_ino) == before
    record = json.loads((raw / ".train-images-idx3-ubyte.source.json").read_text())
    assert record["mtime_ns"] == archive.stat().st_mtime_ns  # the record learnt the new time


def test_replaced_archive_in_a_read_only_root_refreshes_the_cache(tmp_path):
    root, cache = tmp_path / "ro", tmp_path / "mycache"
    arrays = write_tiny_idx(root, "MNIST")
    raw = root / "MNIST" / "raw"
    make_read_only(raw)
    try:
        first = load_dataset("mnist", root=root, binarize="none", val_size=10, cache_dir=cache)
        make_writable(raw)
        cached = next(cache.rglob("t10k-labels-idx1-ubyte"))
        new = (arrays["t10k-labels-idx1-ubyte"] + 5) % 10
        _rewrite_gz(raw / "t10k-labels-idx1-ubyte.gz", new, cached.stat().st_mtime_ns - 10**9)
        make_read_only(raw)
        second = load_dataset("mnist", root=root, binarize="none", val_size=10, cache_dir=cache)
        np.testing.assert_array_equal(second.test.y.numpy(), new)
        assert torch.equal(second.test.y, (first.test.y + 5) % 10)
        assert not any(p.name.endswith("-ubyte") for p in raw.iterdir())  # root untouched
    finally:
        make_writable(raw)


def test_extraction_without_record_is_checked_against_the_archive_size(tmp_path):
    arrays = write_tiny_idx(tmp_path, "MNIST")
    raw = tmp_path / "MNIST" / "raw"
    for name, arr in arrays.items():  # extracted by hand (no record), older than the archives
        (raw / name).write_bytes(idx_bytes(arr))
        os.utime(raw / name, ns=(10**18, 10**18))
    load_dataset("mnist", root=tmp_path, val_size=10)
    assert not list(raw.glob(".*.source.json"))  # plausible copies: used as they are
    assert (raw / "train-images-idx3-ubyte").stat().st_mtime_ns == 10**18
    truncated = raw / "t10k-images-idx3-ubyte"
    truncated.write_bytes(truncated.read_bytes()[:-784])  # a bad extraction next to a good .gz
    s = load_dataset("mnist", root=tmp_path, binarize="none", val_size=10)
    assert s.sizes == (N_TRAIN - 10, 10, N_TEST)  # extracted again from the archive
    assert (raw / ".t10k-images-idx3-ubyte.source.json").is_file()


@pytest.mark.parametrize("umask", [0o022, 0o002], ids=["umask022", "umask002"])
def test_extracted_files_get_ordinary_permissions(tmp_path, umask):
    write_tiny_idx(tmp_path / "root", "MNIST")
    ro_root = tmp_path / "ro"
    write_tiny_idx(ro_root, "MNIST")
    old = os.umask(umask)
    try:
        make_read_only(ro_root / "MNIST" / "raw")
        load_dataset("mnist", root=tmp_path / "root", val_size=10)
        load_dataset("mnist", root=ro_root, val_size=10, cache_dir=tmp_path / "c")
    finally:
        os.umask(old)
        make_writable(ro_root / "MNIST" / "raw")
    made = [
        *(tmp_path / "root" / "MNIST" / "raw").glob("*-ubyte"),
        *(tmp_path / "c").rglob("*-ubyte"),
        *(tmp_path / "c").rglob(".*.source.json"),
    ]
    assert len(made) == 12
    for path in made:
        assert stat.S_IMODE(path.stat().st_mode) == 0o666 & ~umask, path


def test_missing_file_is_still_a_clear_error(tmp_path):
    write_tiny_idx(tmp_path, "MNIST")
    raw = tmp_path / "MNIST" / "raw"
    load_dataset("mnist", root=tmp_path, val_size=10)  # extracts, with records
    (raw / "t10k-labels-idx1-ubyte.gz").unlink()  # the extraction alone still serves
    assert load_dataset("mnist", root=tmp_path, val_size=10).sizes == (N_TRAIN - 10, 10, N_TEST)
    (raw / "t10k-labels-idx1-ubyte").unlink()
    with pytest.raises(DatasetNotFoundError, match="missing: t10k-labels-idx1-ubyte") as e:
        load_dataset("mnist", root=tmp_path, val_size=10)
    assert str(raw / "t10k-labels-idx1-ubyte.gz") in str(e.value) and "--download" in str(e.value)


def test_verify_rejects_archives_that_are_not_the_originals(tmp_path):
    write_tiny_idx(tmp_path, "MNIST")
    with pytest.raises(DatasetCorruptError, match="MD5"):
        load_dataset("mnist", root=tmp_path, val_size=10, verify=True)


def test_label_count_mismatch_is_reported(tmp_path):
    arrays = write_tiny_idx(tmp_path, "MNIST", compressed=False)
    raw = tmp_path / "MNIST" / "raw"
    (raw / "train-labels-idx1-ubyte").write_bytes(idx_bytes(arrays["train-labels-idx1-ubyte"][:-1]))
    with pytest.raises(DatasetCorruptError, match="labels"):
        load_dataset("mnist", root=tmp_path, val_size=10)


def test_bad_gzip_archive_names_the_file(tmp_path):
    write_tiny_idx(tmp_path, "MNIST")
    bad = tmp_path / "MNIST" / "raw" / "t10k-images-idx3-ubyte.gz"
    bad.write_bytes(b"this is not gzip data at all")
    with pytest.raises(DatasetCorruptError, match="t10k-images-idx3-ubyte.gz"):
        load_dataset("mnist", root=tmp_path, val_size=10)


def test_download_into_cache_when_root_is_read_only(tmp_path, monkeypatch):
    import torchvision.datasets.mnist as tv_mnist

    arrays = tiny_idx_arrays()
    calls = []

    def fake_download(url, download_root, filename=None, md5=None, **kwargs):
        calls.append(url)
        name = filename[: -len(".gz")]
        Path(download_root).mkdir(parents=True, exist_ok=True)
        (Path(download_root) / name).write_bytes(idx_bytes(arrays[name]))

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", fake_download)
    root = tmp_path / "ro"
    root.mkdir()
    make_read_only(root)
    try:
        splits = load_dataset("mnist", root=root, download=True, val_size=10)
        assert splits.sizes == (N_TRAIN - 10, 10, N_TEST)
        assert len(calls) == 4 and not any(root.iterdir())
        # the cached download is found again without download=True
        again = load_dataset("mnist", root=root, val_size=10)
        assert torch.equal(again.test.x, splits.test.x)
    finally:
        make_writable(root)


def test_failed_download_says_what_to_do(tmp_path, monkeypatch):
    import torchvision.datasets.mnist as tv_mnist

    def offline(*args, **kwargs):
        raise RuntimeError("no network")

    monkeypatch.setattr(tv_mnist, "download_and_extract_archive", offline)
    with pytest.raises(DatasetNotFoundError, match="--data-root"):
        load_dataset("fashion-mnist", root=tmp_path, download=True)


# ------------------------------------------------------------------ missing data


@pytest.mark.parametrize(
    "name, expected",
    [
        ("mnist", "MNIST/raw/train-images-idx3-ubyte.gz"),
        ("fashion-mnist", "FashionMNIST/raw/t10k-labels-idx1-ubyte.gz"),
        ("omniglot", "omniglot/chardata.mat"),
        ("binarized-mnist", "BinarizedMNIST/binarized_mnist_valid.amat"),
    ],
)
def test_missing_dataset_message(tmp_path, name, expected):
    root = tmp_path / "nowhere"
    with pytest.raises(DatasetNotFoundError) as info:
        load_dataset(name, root=root)
    assert isinstance(info.value, FileNotFoundError)
    msg = str(info.value)
    assert str(root / expected) in msg
    assert "--download" in msg and "--data-root" in msg


def test_missing_omniglot_says_where_to_get_it(tmp_path):
    with pytest.raises(DatasetNotFoundError, match="iwae"):
        load_dataset("omniglot", root=tmp_path)


def test_default_root_comes_from_the_environment(tmp_path):
    with pytest.raises(DatasetNotFoundError, match=str(tmp_path / "default-root")):
        load_dataset("mnist")


# --------------------------------------------------------------- binarized MNIST


@pytest.mark.parametrize("gz", [False, True])
@pytest.mark.parametrize("in_folder", [True, False])
def test_binarized_mnist_amat(tmp_path, gz, in_folder):
    folder = tmp_path / "BinarizedMNIST" if in_folder else tmp_path
    bits = write_tiny_bmnist(folder, gz=gz)
    splits = load_dataset("binarized-mnist", root=tmp_path, binarize="none")
    assert splits.sizes == (6, 3, 2) and splits.num_classes is None
    for split, part in ((splits.train, "train"), (splits.val, "valid"), (splits.test, "test")):
        np.testing.assert_array_equal(split.x.numpy(), bits[part].astype(np.float32))
        assert (split.y == -1).all()
    x, y = splits.train[1]
    assert x.dtype == torch.float32 and y == -1


def test_amat_other_whitespace_is_accepted(tmp_path):
    bits = write_tiny_bmnist(tmp_path / "BinarizedMNIST")
    path = tmp_path / "BinarizedMNIST" / "binarized_mnist_test.amat"
    text = "".join(" ".join(map(str, row)) + "  \r\n" for row in bits["test"])
    path.write_bytes(text.encode())
    splits = load_dataset("binarized-mnist", root=tmp_path)
    np.testing.assert_array_equal(splits.test.x.numpy(), bits["test"].astype(np.float32))


def test_amat_wrong_number_of_columns_names_file_and_line(tmp_path):
    bits = write_tiny_bmnist(tmp_path / "BinarizedMNIST")
    path = tmp_path / "BinarizedMNIST" / "binarized_mnist_train.amat"
    lines = amat_text(bits["train"]).decode().splitlines()
    lines[2] = lines[2][:-2]  # drop the last value of line 3
    path.write_text("\n".join(lines) + "\n")
    with pytest.raises(DatasetCorruptError, match=r"binarized_mnist_train\.amat: line 3: .*783"):
        load_dataset("binarized-mnist", root=tmp_path)


def test_amat_truncated_last_line(tmp_path):
    bits = write_tiny_bmnist(tmp_path / "BinarizedMNIST")
    path = tmp_path / "BinarizedMNIST" / "binarized_mnist_valid.amat"
    path.write_bytes(amat_text(bits["valid"])[:-500])
    with pytest.raises(DatasetCorruptError, match=r"binarized_mnist_valid\.amat: line 3"):
        load_dataset("binarized-mnist", root=tmp_path)


def test_amat_non_binary_value(tmp_path):
    bits = write_tiny_bmnist(tmp_path / "BinarizedMNIST")
    bits["test"][1, 5] = 2
    write_amat(tmp_path / "BinarizedMNIST" / "binarized_mnist_test.amat", bits["test"])
    with pytest.raises(DatasetCorruptError, match="line 2: value 2"):
        load_dataset("binarized-mnist", root=tmp_path)


def test_amat_corrupt_gzip(tmp_path):
    write_tiny_bmnist(tmp_path / "BinarizedMNIST", gz=True)
    path = tmp_path / "BinarizedMNIST" / "binarized_mnist_train.amat.gz"
    path.write_bytes(path.read_bytes()[:40])  # truncated archive
    with pytest.raises(DatasetCorruptError, match=r"binarized_mnist_train\.amat\.gz.*gzip"):
        load_dataset("binarized-mnist", root=tmp_path)


def test_amat_verify_md5(tmp_path, monkeypatch):
    bits = write_tiny_bmnist(tmp_path / "BinarizedMNIST", gz=True)
    with pytest.raises(DatasetCorruptError, match="db28b1a6ae0fe70cbd3da91acf46e477"):
        load_dataset("binarized-mnist", root=tmp_path, verify=True)
    digests = {p: hashlib.md5(amat_text(b)).hexdigest() for p, b in bits.items()}
    monkeypatch.setattr(bmnist_mod, "_BMNIST_MD5", digests)
    assert load_dataset("binarized-mnist", root=tmp_path, verify=True).sizes == (6, 3, 2)


def test_binarized_mnist_has_a_fixed_split(tmp_path):
    write_tiny_bmnist(tmp_path)
    with pytest.raises(ValueError, match="fixed"):
        load_dataset("binarized-mnist", root=tmp_path, val_size=5)


def test_binarized_mnist_download(tmp_path, monkeypatch):
    bits = tiny_bits()
    fetched = []

    def fake_download(url, folder, filename, md5):
        fetched.append(url)
        assert url.endswith(filename) and md5 is not None
        write_amat(Path(folder) / filename, bits[filename.split("_")[-1].split(".")[0]])

    monkeypatch.setattr(bmnist_mod, "_download_url", fake_download)
    splits = load_dataset("binarized-mnist", root=tmp_path, download=True)
    assert splits.sizes == (6, 3, 2) and len(fetched) == 3
    assert (tmp_path / "BinarizedMNIST" / "binarized_mnist_train.amat").is_file()


# ---------------------------------------------------------------------- omniglot


def glyph_images(n: int, seed: int = 0) -> np.ndarray:
    """Random grey images with an upright 'L' drawn in: a bar down column 3, a foot on row 24."""
    rng = np.random.default_rng(seed)
    imgs = rng.uniform(0.0, 0.4, size=(n, 28, 28))
    imgs[:, 4:25, 3] = 1.0
    imgs[:, 24, 3:15] = 1.0
    return imgs


def write_chardata(path: Path, train: np.ndarray, test: np.ndarray, **extra) -> None:
    scipy_io = pytest.importorskip("scipy.io", reason="scipy is needed to write .mat files")

    def columns(imgs):  # MATLAB img(:) per column: column-major
        return np.stack([img.reshape(-1, order="F") for img in imgs], axis=1)

    path.parent.mkdir(parents=True, exist_ok=True)
    scipy_io.savemat(str(path), {"data": columns(train), "testdata": columns(test), **extra})


def one_hot(labels: np.ndarray, k: int = 50) -> np.ndarray:
    out = np.zeros((k, labels.size))
    out[labels, np.arange(labels.size)] = 1
    return out


def test_omniglot_round_trip_is_upright(tmp_path):
    pytest.importorskip("scipy.io", reason="scipy is needed to read and write .mat files")
    train, test = glyph_images(12), glyph_images(5, seed=1)
    train_alpha, test_alpha = np.arange(12) % 50, (np.arange(5) * 7) % 50
    write_chardata(
        tmp_path / "omniglot" / "chardata.mat",
        train,
        test,
        target=one_hot(train_alpha),
        testtarget=one_hot(test_alpha),
    )
    splits = load_dataset("omniglot", root=tmp_path, binarize="none", val_size=3)
    assert splits.sizes == (9, 3, 5) and splits.num_classes == 50
    for split, imgs, alpha in (
        (splits.train, train, train_alpha),
        (splits.val, train, train_alpha),
        (splits.test, test, test_alpha),
    ):
        idx = split.source_index.numpy()
        want = imgs[idx].reshape(len(idx), 784).astype(np.float32)
        np.testing.assert_allclose(split.x.numpy(), want, atol=1e-6)
        np.testing.assert_array_equal(split.y.numpy(), alpha[idx])
    img = splits.test.images()[0, 0]
    assert (img[4:25, 3] == 1).all() and (img[24, 3:15] == 1).all()  # the 'L' stands upright
    assert (img[3, 4:15] < 1).all()  # and is not transposed


def test_omniglot_without_targets_and_in_root(tmp_path):
    write_chardata(tmp_path / "chardata.mat", glyph_images(6), glyph_images(2))
    splits = load_dataset("omniglot", root=tmp_path, val_size=2)
    assert splits.sizes == (4, 2, 2) and splits.num_classes is None
    assert (splits.train.y == -1).all()
    assert set(splits.train.x.unique().tolist()) <= {0.0, 1.0}  # fixed binarisation


def test_omniglot_default_validation_needs_enough_images(tmp_path):
    write_chardata(tmp_path / "omniglot" / "chardata.mat", glyph_images(6), glyph_images(2))
    with pytest.raises(ValueError, match="1345"):
        load_dataset("omniglot", root=tmp_path)


def test_omniglot_bad_file(tmp_path):
    pytest.importorskip("scipy.io", reason="scipy is needed to read .mat files")
    path = tmp_path / "omniglot" / "chardata.mat"
    path.parent.mkdir(parents=True)
    path.write_bytes(b"not a mat file")
    with pytest.raises(DatasetCorruptError, match="chardata.mat"):
        load_dataset("omniglot", root=tmp_path)
    import scipy.io

    scipy.io.savemat(str(path), {"images": np.zeros((784, 3))})
    with pytest.raises(DatasetCorruptError, match="'data'"):
        load_dataset("omniglot", root=tmp_path)


# ------------------------------------------------------------------ mnist-sample


@pytest.fixture(scope="module")
def sample_grey() -> DataSplits:
    return load_dataset("mnist-sample", binarize="none")


def test_mnist_sample_split(sample_grey):
    s = sample_grey
    assert s.sizes == (4000, 500, 500) and s.num_classes == 10
    for split in (s.train, s.val, s.test):
        assert split.x.dtype == torch.float32 and split.x.shape[1] == 784
        assert split.x.min() >= 0 and split.x.max() <= 1
        assert set(split.y.tolist()) == set(range(10))
    assert s.train.x.max() == 1.0 and len(s.train.x.unique()) > 2  # grey levels
    ids = [set(split.source_index.tolist()) for split in (s.train, s.val, s.test)]
    assert not (ids[0] & ids[1]) and not (ids[0] & ids[2]) and not (ids[1] & ids[2])
    assert ids[0] | ids[1] | ids[2] == set(range(5000))


def test_mnist_sample_test_set_is_fixed_and_val_follows_seed(sample_grey):
    other = load_dataset("mnist-sample", binarize="none", split_seed=1, val_size=1000)
    assert other.sizes == (3500, 1000, 500)
    assert torch.equal(other.test.source_index, sample_grey.test.source_index)
    assert torch.equal(other.test.x, sample_grey.test.x)
    assert not set(other.val.source_index.tolist()) <= set(sample_grey.val.source_index.tolist())


# ----------------------------------------------------------------- binarisation


def test_fixed_binarisation(sample_grey):
    a = load_dataset("mnist-sample", binarize="fixed")
    b = load_dataset("mnist-sample", binarize="fixed")
    assert a.binarize == "fixed" and isinstance(a.train, ImageDataset)
    assert set(a.train.x.unique().tolist()) == {0.0, 1.0}
    assert torch.equal(a.train.x, (sample_grey.train.x > 0.5).float())
    assert torch.equal(a.train.x, b.train.x)
    assert torch.equal(a.train[3][0], a.train[3][0])


def test_dynamic_binarisation(sample_grey):
    d = load_dataset("mnist-sample", binarize="dynamic")
    assert isinstance(d.train, DynamicBinarized) and isinstance(d.test, DynamicBinarized)
    assert torch.equal(d.train.probs, sample_grey.train.x)
    first, y = d.train[:200]
    second, _ = d.train[:200]
    assert set(first.unique().tolist()) == {0.0, 1.0}
    assert not torch.equal(first, second)  # resampled on every read
    assert torch.equal(y, sample_grey.train.y[:200])

    draws = torch.stack([d.train[:200][0] for _ in range(200)])
    p = sample_grey.train.x[:200]
    assert abs(draws.mean().item() - p.mean().item()) < 2e-3
    err = (draws.mean(0) - p).abs()  # 200 draws: sd <= 0.035 per pixel
    assert err.mean() < 0.01 and err.max() < 0.25

    # reproducible from split_seed; distinct streams per split and per seed
    again = load_dataset("mnist-sample", binarize="dynamic")
    assert torch.equal(again.train[:200][0], first)
    other = load_dataset("mnist-sample", binarize="dynamic", split_seed=5)
    assert not torch.equal(other.train[:50][0], d.train[:50][0])


def test_dynamic_binarisation_differs_between_epochs():
    d = load_dataset("mnist-sample", binarize="dynamic")
    loader = make_loader(d.val, batch_size=500, shuffle=False)
    (x1, y1), (x2, y2) = next(iter(loader)), next(iter(loader))
    assert torch.equal(y1, y2) and not torch.equal(x1, x2)


# -------------------------------------------------------------------- loaders


def numbered(n: int) -> ImageDataset:
    return ImageDataset(torch.rand(n, 784), torch.arange(n))


def epoch_labels(loader) -> list[list[int]]:
    return [y.tolist() for _, y in loader]


def test_make_loader_is_reproducible_by_seed():
    ds = numbered(50)
    a, b, c = (make_loader(ds, 8, shuffle=True, seed=s) for s in (3, 3, 4))
    ea = [epoch_labels(a) for _ in range(2)]
    eb = [epoch_labels(b) for _ in range(2)]
    assert ea == eb
    assert ea[0] != ea[1]  # a new order every epoch
    assert epoch_labels(c) != ea[0]
    assert sorted(sum(ea[0], [])) == list(range(50))


def test_make_loader_batches_and_drop_last():
    ds = numbered(10)
    loader = make_loader(ds, 4, shuffle=False)
    batches = list(loader)
    assert len(loader) == 3 and [len(y) for _, y in batches] == [4, 4, 2]
    assert batches[0][0].shape == (4, 784) and batches[0][1].dtype == torch.long
    assert sum(epoch_labels(loader), []) == list(range(10))
    dropped = make_loader(ds, 4, shuffle=True, seed=0, drop_last=True)
    assert len(dropped) == 2 and all(len(y) == 4 for y in epoch_labels(dropped))
    with pytest.raises(ValueError, match="batch_size"):
        make_loader(ds, 0)


def test_make_loader_with_a_plain_dataset():
    ds = TensorDataset(torch.rand(9, 3), torch.arange(9))
    a = [y.tolist() for _, y in make_loader(ds, 4, shuffle=True, seed=1)]
    b = [y.tolist() for _, y in make_loader(ds, 4, shuffle=True, seed=1)]
    assert a == b and sorted(sum(a, [])) == list(range(9))


def test_image_dataset_indexing():
    ds = numbered(5)
    x, y = ds[-1]
    assert x.shape == (784,) and y == 4
    xb, yb = ds[[0, 2]]
    assert xb.shape == (2, 784) and yb.tolist() == [0, 2]
    assert ds.images().shape == (5, 1, 28, 28)
    assert len(list(ds)) == 5
    with pytest.raises(ValueError, match="x must"):
        ImageDataset(torch.rand(3))
    with pytest.raises(ValueError, match="image_shape"):
        ImageDataset(torch.rand(3, 10))


# --------------------------------------------------------------- argument checks


def test_argument_checks(tmp_path):
    assert DATASETS == (
        "mnist-sample",
        "mnist",
        "fashion-mnist",
        "omniglot",
        "binarized-mnist",
        "celeba",
    )
    with pytest.raises(ValueError, match="unknown dataset"):
        load_dataset("cifar10")
    with pytest.raises(ValueError, match="binarize"):
        load_dataset("mnist-sample", binarize="stochastic")
    with pytest.raises(ValueError, match="val_size"):
        load_dataset("mnist-sample", val_size=-1)
    with pytest.raises(ValueError, match="no training images"):
        load_dataset("mnist-sample", val_size=4500)
    write_tiny_idx(tmp_path, "FashionMNIST")
    assert load_dataset("Fashion_MNIST", root=tmp_path, val_size=5).name == "fashion-mnist"


def test_library_does_not_know_the_shared_folder():
    modules = sorted(Path(data_mod.__file__).parent.glob("*.py"))
    assert len(modules) > 5  # the package's modules, one per source
    for path in modules:
        source = path.read_text()
        assert "shared/data" not in source and "/work" not in source, path


# ----------------------------------------------------------- real data (slow)


def shared_or_skip(*parts: str) -> Path:
    path = SHARED_DATA.joinpath(*parts)
    if not path.exists():
        pytest.skip(f"real dataset not found at {path}")
    return SHARED_DATA


@pytest.fixture(scope="module")
def real_cache(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("structvae-cache")


def listing(folder: Path) -> list[tuple[str, int, int]]:
    return sorted((str(p), p.stat().st_size, p.stat().st_mtime_ns) for p in folder.rglob("*"))


@pytest.mark.slow
def test_real_mnist(real_cache):
    root = shared_or_skip("MNIST", "raw")
    before = listing(root / "MNIST")
    s = load_dataset("mnist", root=root, verify=True, cache_dir=real_cache)
    assert s.sizes == (50000, 10000, 10000)
    assert s.test.y[:10].tolist() == [7, 2, 1, 0, 4, 1, 4, 9, 5, 9]
    rows = torch.cat([s.train.source_index, s.val.source_index])
    labels = torch.cat([s.train.y, s.val.y])[rows.argsort()]  # back in file order
    assert labels[:10].tolist() == [5, 0, 4, 1, 9, 2, 1, 3, 1, 4]
    counts = torch.cat([s.train.y, s.val.y]).bincount().tolist()
    assert counts == [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]
    assert s.test.y.bincount().tolist() == [980, 1135, 1032, 1010, 982, 892, 958, 1028, 974, 1009]
    assert set(s.train.x[:100].unique().tolist()) == {0.0, 1.0}
    grey = load_dataset("mnist", root=root, binarize="none", cache_dir=real_cache)
    assert grey.test.x.max() == 1.0 and 0.12 < grey.test.x.mean() < 0.14
    assert listing(root / "MNIST") == before  # the shared copy is untouched


@pytest.mark.slow
def test_real_fashion_mnist(real_cache):
    root = shared_or_skip("FashionMNIST", "raw")
    s = load_dataset("fashion-mnist", root=root, verify=True, cache_dir=real_cache)
    assert s.sizes == (50000, 10000, 10000)
    assert s.test.y[:10].tolist() == [9, 2, 1, 1, 6, 1, 4, 6, 5, 7]
    assert torch.cat([s.train.y, s.val.y]).bincount().tolist() == [6000] * 10
    assert s.test.y.bincount().tolist() == [1000] * 10


@pytest.mark.slow
def test_real_binarized_mnist():
    root = shared_or_skip("BinarizedMNIST")
    s = load_dataset("binarized-mnist", root=root, verify=True, binarize="none")
    assert s.sizes == (50000, 10000, 10000)
    for split in (s.train, s.val, s.test):
        assert set(split.x.unique().tolist()) == {0.0, 1.0}
        assert (split.y == -1).all()
    assert 0.12 < s.train.x.mean() < 0.14


@pytest.mark.slow
def test_real_mnist_loader_epoch(real_cache):
    root = shared_or_skip("MNIST", "raw")
    s = load_dataset("mnist", root=root, binarize="dynamic", cache_dir=real_cache)
    loader = make_loader(s.train, batch_size=100, shuffle=True, seed=0)
    n = 0
    for x, y in loader:
        assert x.shape == (100, 784)
        n += len(y)
    assert n == 50000 and len(loader) == 500
