"""Hidden checks of the CNN practical: the trained model's accuracy on held-out images.

The held-out images (``expected.npz``, written by ``make_expected.py``) are the 1,000
test images of the grader's MNIST sample, stored as raw uint8 pixels. They are scaled
here, in the grader, exactly as the notebook's input convention says ((batch, 28, 28, 1),
pixel / 255.0); the kernel only runs ``model.predict`` on them, and the accuracy is
computed here against labels that never leave the grader.
"""

import numpy as np

from grader.checks import check
from grader.compare import assert_in_band, assert_shape
from grader.errors import CheckFailed


@check("q3.test_accuracy", points=2, hidden=True, timeout=120,
       hint="Train the global `model` as Q3 asks (3 epochs on the scaled training images), "
            "make sure it takes (batch, 28, 28, 1) images scaled to [0, 1] and returns 10 scores, "
            "and look at the test accuracy your notebook prints after training.")
def check_test_accuracy(student, expected):
    """The trained `model` classifies held-out MNIST images about as well as the reference."""
    if not student.has("model"):
        raise CheckFailed("No variable `model` in your notebook, so its accuracy could not be "
                          "measured. Q3 asks for `model = build_model()` trained with `model.fit`.")
    images = expected.array("holdout_images").astype(np.float32)[..., np.newaxis] / 255.0
    labels = expected.array("holdout_labels").astype(np.int64)
    what = f"model.predict(held-out images of shape {tuple(images.shape)})"
    scores = student.evaluate("result = ns['model'].predict(x, verbose=0)", x=images, what=what)
    scores = assert_shape(scores, (len(labels), 10), what=what,
                          fix="The model must return 10 scores (one per digit) for each image.")
    accuracy = float(np.mean(np.argmax(scores, axis=1) == labels))
    return assert_in_band(
        accuracy, expected.band("test_accuracy"), what="The accuracy of `model` on held-out images",
        fix="Scale the pixels to [0, 1], train for the epochs Q3 asks, and check the output "
            "activation and the loss (from_logits) go together.")
