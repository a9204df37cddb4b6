"""What the ``reference/<name>/make_expected.py`` scripts share (trusted code, never shipped).

Each script computes its practical's hidden inputs and expected values and writes them
beside itself: arrays to ``expected.npz``, scalars and bands to ``expected.json``. Bands
belong to calibration (``grader calibrate``): an existing ``bands`` entry is kept as it is;
a provisional band is written only for a metric that has none yet.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np


def write_expected(folder: Path, arrays: dict, values: dict, provisional_bands: dict, *,
                   indent: int) -> Path:
    """Writes ``folder``/expected.npz (removed when there are no arrays) and expected.json;
    returns the latter's path."""
    if arrays:
        np.savez_compressed(folder / "expected.npz", **arrays)
    else:
        (folder / "expected.npz").unlink(missing_ok=True)
    json_path = folder / "expected.json"
    bands = json.loads(json_path.read_text()).get("bands", {}) if json_path.exists() else {}
    for metric, band in provisional_bands.items():
        bands.setdefault(metric, band)
    json_path.write_text(json.dumps({"values": values, "bands": bands}, indent=indent) + "\n")
    return json_path


def write_mnist_holdout(folder: Path, provisional_bands: dict) -> None:
    """The expected files of an MNIST Keras practical (mlp, cnn). The graded images are the
    private holdout (:func:`grader.data.mnist_holdout`), derived in the grader at grading
    time and perturbed per submission: no image is stored here (``expected.npz`` is
    removed), only their count and label counts, for the record."""
    from grader.data import MNIST_DEV, PERTURB_SIGMA, mnist_holdout

    _, labels = mnist_holdout()
    values = {
        "holdout": "grader.data.mnist_holdout(): the MNIST sample's test images after the "
                   f"{MNIST_DEV} of the public dev set, perturbed per submission "
                   f"(grader.data.perturb_images, sigma {PERTURB_SIGMA:g} grey levels)",
        "holdout_size": int(len(labels)),
        "holdout_label_counts": [int(c) for c in np.bincount(labels, minlength=10)],
    }
    json_path = write_expected(folder, {}, values, provisional_bands, indent=2)
    print(f"wrote {json_path} (no expected.npz: the holdout is derived in the grader)")
