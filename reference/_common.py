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
    """Writes ``folder``/expected.npz and expected.json; returns the latter's path."""
    np.savez_compressed(folder / "expected.npz", **arrays)
    json_path = folder / "expected.json"
    bands = json.loads(json_path.read_text()).get("bands", {}) if json_path.exists() else {}
    for metric, band in provisional_bands.items():
        bands.setdefault(metric, band)
    json_path.write_text(json.dumps({"values": values, "bands": bands}, indent=indent) + "\n")
    return json_path


def write_mnist_holdout(folder: Path, provisional_bands: dict) -> None:
    """The expected files of an MNIST Keras practical (mlp, cnn): the 1,000 held-out test
    images of the grader's MNIST sample as raw uint8 pixels, with their labels."""
    from grader.data import mnist_sample

    _, (x_test, y_test) = mnist_sample()
    arrays = {"holdout_images": x_test.astype(np.uint8), "holdout_labels": y_test.astype(np.uint8)}
    values = {
        "holdout_size": int(len(y_test)),
        "holdout_label_counts": [int(c) for c in np.bincount(y_test, minlength=10)],
    }
    json_path = write_expected(folder, arrays, values, provisional_bands, indent=2)
    print(f"wrote {folder / 'expected.npz'} and {json_path}")
