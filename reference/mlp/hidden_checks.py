"""Hidden checks of the MLP practical: the trained model's accuracy on private images.

The graded images are the private MNIST holdout (:func:`grader.data.mnist_holdout`: the
500 test images after the public dev set, which the students get as ``x_test``). They are
computed in the grader, never enter the sandbox, and are perturbed lightly with a seed
per submission (stored in the result). The student's kernel only exports the global
`model` (and the model ``build_model()`` returns) as data; the model is rebuilt from an
allow-list of Keras layers in a clean room where no student code ran, scaled images go
there ((batch, 28, 28), pixel / 255.0, the notebook's input convention), raw scores come
back, and the accuracy is computed here (:func:`grader.keras_checks.holdout_accuracy`).
"""

import numpy as np

from grader.checks import check
from grader.keras_checks import MLP_LAYERS, holdout_accuracy

IMAGE_SHAPE = (28, 28)


def prepare(images: np.ndarray) -> np.ndarray:
    """Raw uint8 images -> the model's input: (batch, 28, 28) floats in [0, 1]."""
    return images.astype(np.float32) / 255.0


@check("q3.test_accuracy", points=2, hidden=True, timeout=120,
       hint="Train the global `model` as Q3 asks (`model = build_model()`, 3 epochs on the "
            "scaled training images), build it from Keras layers only (no custom or Lambda "
            "layers), "
            "make sure it takes (batch, 28, 28) images scaled to [0, 1] and returns 10 scores, "
            "and look at the accuracy your notebook prints on the dev set (x_test).")
def check_test_accuracy(student, expected):
    """The trained `model` classifies private held-out MNIST images about as well as the
    reference."""
    return holdout_accuracy(student, expected, prepare, allowed=MLP_LAYERS,
                            image_shape=IMAGE_SHAPE)
