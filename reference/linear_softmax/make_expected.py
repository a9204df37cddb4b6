"""Hidden inputs and expected outputs for linear_softmax (trusted; run from the repo root).

    python reference/linear_softmax/make_expected.py

Everything is computed here in float64 NumPy from fixed seeds, independently of the
notebook, and written to expected.npz (arrays) and expected.json (scalars and bands).
An existing "bands" entry is kept: calibration owns the bands.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np

from grader.data import mnist_sample

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _common import write_expected  # noqa: E402

SEED = 20240611
LEARNING_RATE = 0.5

PROVISIONAL_BANDS = {
    "test_accuracy": {
        "cpu": {
            "low": 0.8,
            "rule": (
                "provisional: the reference notebook graded by grader.executor (sandbox off) with "
                "SEED 42, 1, 2, 3 reached 0.889, 0.889, 0.884, 0.885 on the 1,000 held-out images "
                "(W, b fetched from the kernel, accuracy computed in the grader); the alternative "
                "fixtures 0.878-0.889. Broken runs: untrained zeros 0.104, softmax over axis 0 "
                "0.712, loss summed instead of averaged 0.641, pixels not scaled 0.286. "
                "low = 0.80 sits between the two groups."
            ),
            "reference_values": [0.889, 0.889, 0.884, 0.885],
        }
    }
}


def softmax(z: np.ndarray) -> np.ndarray:
    shifted = z - z.max(axis=-1, keepdims=True)
    e = np.exp(shifted)
    return e / e.sum(axis=-1, keepdims=True)


def cross_entropy(y_true: np.ndarray, y_pred: np.ndarray) -> float:
    return float(-np.mean(np.sum(y_true * np.log(y_pred), axis=1)))


def main() -> None:
    rng = np.random.default_rng(SEED)
    (x_train, y_train), _ = mnist_sample()
    arrays: dict[str, np.ndarray] = {}
    values: dict[str, float] = {}

    # Q2: softmax on ordinary logits, and on large ones (exp overflows without the max shift).
    logits = (rng.normal(size=(8, 10)) * 3.0).astype(np.float32)
    arrays["softmax_logits"] = logits
    arrays["softmax_probs"] = softmax(logits.astype(np.float64))
    large = (rng.normal(size=(4, 10)) * 5.0).astype(np.float64)
    large[0] += 1000.0
    large[1] += 500.0
    large[2] -= 1000.0
    large[3] = np.array([1000, 999, 998, 0, -5, 1000, 3, 2, 1, 0], dtype=np.float64)
    arrays["softmax_large_logits"] = large.astype(np.float32)
    arrays["softmax_large_probs"] = softmax(large.astype(np.float32).astype(np.float64))

    # Q3, Q5: a batch of real (scaled) training images and small random parameters.
    batch = rng.choice(len(x_train), size=32, replace=False)
    X = (x_train[batch].reshape(-1, 784).astype(np.float32) / 255.0)
    Y = np.eye(10, dtype=np.float32)[y_train[batch]]
    W0 = (rng.normal(size=(784, 10)) * 0.05).astype(np.float32)
    b0 = (rng.normal(size=10) * 0.1).astype(np.float32)
    arrays.update(step_X=X, step_Y=Y, step_W0=W0, step_b0=b0)
    P = softmax(X.astype(np.float64) @ W0.astype(np.float64) + b0.astype(np.float64))
    arrays["forward_probs"] = P

    # Q4: cross-entropy of given probabilities (none tiny, so clipping guards do not matter).
    ce_pred = softmax(rng.normal(size=(16, 10)))
    ce_true = np.eye(10)[rng.integers(0, 10, size=16)]
    arrays["ce_Y_true"] = ce_true.astype(np.float32)
    arrays["ce_Y_pred"] = ce_pred.astype(np.float32)
    values["ce_loss"] = cross_entropy(ce_true, ce_pred.astype(np.float32).astype(np.float64))

    # Q5: one SGD step; dL/dlogits = (P - Y) / N for the mean cross-entropy of a softmax.
    values["step_learning_rate"] = LEARNING_RATE
    values["step_loss"] = cross_entropy(Y.astype(np.float64), P)
    delta = (P - Y) / len(X)
    arrays["step_W1"] = W0 - LEARNING_RATE * (X.astype(np.float64).T @ delta)
    arrays["step_b1"] = b0 - LEARNING_RATE * delta.sum(axis=0)

    write_expected(HERE, arrays, values, PROVISIONAL_BANDS, indent=1)
    print(f"wrote {len(arrays)} arrays and {len(values)} values to {HERE}")


if __name__ == "__main__":
    main()
