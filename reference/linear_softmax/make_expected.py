"""The expected values of linear_softmax (trusted; run from the repo root).

    python reference/linear_softmax/make_expected.py

Only the trained-accuracy band is stored (expected.json): the exact checks draw their
inputs at grading time and compute the reference's answers in the grader (see
hidden_checks.py), so no fixed hidden input exists to leak. An existing "bands" entry is
kept: calibration owns the bands.
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


def main() -> None:
    # No hidden inputs or expected arrays any more: the exact checks draw their inputs at
    # grading time and compute the reference's answers themselves (hidden_checks.py).
    json_path = write_expected(HERE, {}, {}, PROVISIONAL_BANDS, indent=1)
    print(f"wrote {json_path}")


if __name__ == "__main__":
    main()
