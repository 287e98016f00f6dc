"""Datasets that ship in packages: nothing is downloaded at run time.

Fashion-MNIST (the local provider's task) comes from Debian's ``dataset-fashion-mnist``
(IDX files under ``/usr/share/datasets/fashion-mnist``; ``BRAID_FASHION_MNIST_DIR`` moves
it). Images are returned as float32 in [0, 1] with shape (N, 1, 28, 28): normalisation is the
first layer of each model, so a served block takes raw pixels like any client would send.
"""

from __future__ import annotations

import gzip
import hashlib
import os
import struct
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

DEFAULT_FASHION_MNIST_DIR = Path("/usr/share/datasets/fashion-mnist")
FASHION_MNIST_FILES = {
    "train_images": "train-images-idx3-ubyte.gz",
    "train_labels": "train-labels-idx1-ubyte.gz",
    "test_images": "t10k-images-idx3-ubyte.gz",
    "test_labels": "t10k-labels-idx1-ubyte.gz",
}


class DatasetMissingError(FileNotFoundError):
    """A dataset braid trains or evaluates on is not installed (Fashion-MNIST here, SST-2 and
    the drift corpus for DIMEE); the message says where it was looked for or what installs it."""


def fashion_mnist_dir() -> Path:
    return Path(os.environ.get("BRAID_FASHION_MNIST_DIR", str(DEFAULT_FASHION_MNIST_DIR)))


def read_idx(path: Path) -> npt.NDArray[np.uint8]:
    """An IDX file (gzip or plain) as a numpy array of its declared shape, uint8."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as fh:
        data = fh.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path}: not an unsigned-byte IDX file")
    dims = struct.unpack(f">{ndim}I", data[4 : 4 + 4 * ndim])
    return np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim).reshape(dims)


@dataclass(frozen=True)
class Split:
    """Images (N, 1, 28, 28) float32 in [0, 1] and labels (N,) int64."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def head(self, n: int) -> Split:
        """The first ``n`` samples (the files are shuffled already, so this is a fair subset)."""
        return Split(self.images[:n], self.labels[:n])


@dataclass(frozen=True)
class Dataset:
    name: str
    train: Split
    test: Split
    digest: str
    validation: Split | None = None
    """Chooses paths and thresholds where a build selects on it (user builds do)."""


def load_fashion_mnist(root: Path | None = None) -> Dataset:
    """Fashion-MNIST from the Debian package; the digest keys every cached artifact."""
    root = root if root is not None else fashion_mnist_dir()
    paths = {key: root / name for key, name in FASHION_MNIST_FILES.items()}
    missing = [str(p) for p in paths.values() if not p.is_file()]
    if missing:
        raise DatasetMissingError(
            f"Fashion-MNIST not found ({', '.join(missing)}): install the Debian package "
            "dataset-fashion-mnist (hack/install-system.sh does) or set BRAID_FASHION_MNIST_DIR"
        )
    digest = hashlib.sha256()
    arrays: dict[str, npt.NDArray[np.uint8]] = {}
    for key, path in sorted(paths.items()):
        arrays[key] = read_idx(path)
        digest.update(arrays[key].tobytes())

    def split(prefix: str) -> Split:
        images = torch.from_numpy(arrays[f"{prefix}_images"].astype(np.float32) / 255.0)
        labels = torch.from_numpy(arrays[f"{prefix}_labels"].astype(np.int64))
        return Split(images.unsqueeze(1).contiguous(), labels)

    return Dataset("fashion-mnist", split("train"), split("test"), digest.hexdigest()[:16])


FASHION_MNIST_VALIDATION = 10000
"""The last 10 000 training images: the validation split a user build selects on."""


def fashion_mnist_splits() -> dict[str, Split]:
    """Fashion-MNIST as a build spec's dataset loader: train, validation, test.

    The validation split is held out of the training images, so choosing paths and
    thresholds on it leaves the test set for reporting only.
    """
    data = load_fashion_mnist()
    cut = len(data.train) - FASHION_MNIST_VALIDATION
    train = Split(data.train.images[:cut], data.train.labels[:cut])
    validation = Split(data.train.images[cut:], data.train.labels[cut:])
    return {"train": train, "validation": validation, "test": data.test}
