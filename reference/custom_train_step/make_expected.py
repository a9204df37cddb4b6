"""The expected values of custom_train_step (trusted; run from the repo root).

    python reference/custom_train_step/make_expected.py

Only the trained-accuracy band is stored (expected.json): the exact-step checks draw their
weights and batches at grading time and compute the reference's answers in the grader
with NumPy (hidden_checks.py; tests/test_fresh_inputs.py checks that reference against the
notebook's Keras solution), so no fixed hidden input exists to leak. An existing "bands"
entry is kept (calibration owns the bands).
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))

from _common import write_expected  # noqa: E402

PROVISIONAL_BANDS = {
    "test_accuracy": {
        "cpu": {
            "low": 0.85,
            "rule": (
                "provisional: the reference notebook graded by grader.executor (sandbox off) with "
                "SEED 42, 1, 2, 3 reached 0.913, 0.912, 0.906, 0.906 on the 1,000 held-out images "
                "(model.predict in the kernel, accuracy computed in the grader); the alternative "
                "fixtures 0.913. Broken runs: no apply_gradients 0.103 (an untrained model); the "
                "training=True-missing fixture still reaches 0.900 (it loses the exact-step "
                "checks instead). low = 0.85 leaves about 0.05 below the reference."
            ),
            "reference_values": [0.913, 0.912, 0.906, 0.906],
        }
    }
}


def main() -> None:
    # No hidden inputs or expected arrays any more: the exact checks draw their inputs at
    # grading time and compute the reference's answers themselves (hidden_checks.py).
    json_path = write_expected(HERE, {}, {}, PROVISIONAL_BANDS, indent=1)
    print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
