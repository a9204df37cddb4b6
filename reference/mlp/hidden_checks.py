"""Hidden checks of the MLP practical: the trained model's accuracy on held-out images.

The held-out images (``expected.npz``, written by ``make_expected.py``) are the 1,000
test images of the grader's MNIST sample, stored as raw uint8 pixels. They are scaled
here, in the grader, exactly as the notebook's input convention says ((batch, 28, 28),
pixel / 255.0); the kernel only runs ``model.predict`` on them, and the accuracy is
computed here against labels that never leave the grader.
"""

import numpy as np

from grader.checks import check
from grader.keras_checks import holdout_accuracy


@check("q3.test_accuracy", points=2, hidden=True, timeout=120,
       hint="Train the global `model` as Q3 asks (3 epochs on the scaled training images), "
            "make sure it takes (batch, 28, 28) images scaled to [0, 1] and returns 10 scores, "
            "and look at the test accuracy your notebook prints after training.")
def check_test_accuracy(student, expected):
    """The trained `model` classifies held-out MNIST images about as well as the reference."""
    images = expected.array("holdout_images").astype(np.float32) / 255.0
    return holdout_accuracy(student, expected, images)
