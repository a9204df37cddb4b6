"""Hidden checks for linear_softmax: exact values on hidden inputs, and trained quality.

Expected values come from make_expected.py (expected.npz / expected.json) and stay in
this process: only inputs travel to the kernel.
"""

import hashlib

import numpy as np

from grader.checks import check
from grader.compare import assert_allclose, assert_in_band, assert_shape
from grader.data import mnist_holdout, perturb_images
from grader.errors import CheckFailed
from grader.keras_checks import flag_for_review


@check("q2.softmax_hidden_logits", points=1, hidden=True,
       hint="softmax must normalise each row (axis=-1): every row of the result sums to 1.")
def check_softmax_hidden_logits(student, expected):
    """softmax matches the reference on hidden logits of shape (8, 10)."""
    probs = student.call("softmax", expected.array("softmax_logits"))
    assert_allclose(probs, expected.array("softmax_probs"), what="softmax(hidden logits)",
                    rtol=1e-4, atol=1e-6)


@check("q2.softmax_large_logits", points=1, hidden=True,
       hint="Subtract each row's maximum from the logits before tf.exp (or use tf.nn.softmax): "
            "exp(1000) overflows to inf and inf / inf is NaN.")
def check_softmax_large_logits(student, expected):
    """softmax stays finite and exact for logits around +-1000."""
    probs = student.call("softmax", expected.array("softmax_large_logits"))
    assert_allclose(probs, expected.array("softmax_large_probs"),
                    what="softmax(large hidden logits)", rtol=1e-4, atol=1e-6)


@check("q3.forward_hidden_inputs", points=1, hidden=True,
       hint="forward(X, W, b) must return softmax(tf.matmul(X, W) + b).")
def check_forward_hidden_inputs(student, expected):
    """forward(X, W, b) matches the reference on hidden images and parameters."""
    probs = student.call("forward", expected.array("step_X"), expected.array("step_W0"),
                         expected.array("step_b0"))
    assert_allclose(probs, expected.array("forward_probs"), what="forward(X, W, b)",
                    rtol=1e-4, atol=1e-6)


@check("q4.cross_entropy_hidden_inputs", points=1, hidden=True,
       hint="Average -sum(Y_true * log(Y_pred), axis=1) over the batch (the mean, not the sum).")
def check_cross_entropy_hidden_inputs(student, expected):
    """cross_entropy matches the reference on a hidden batch of 16."""
    loss = student.call("cross_entropy", expected.array("ce_Y_true"), expected.array("ce_Y_pred"))
    assert_allclose(loss, expected.value("ce_loss"), what="cross_entropy(Y_true, Y_pred)",
                    rtol=1e-4, atol=1e-6)


ONE_STEP_CODE = """
import tensorflow as tf
W = tf.Variable(W0)
b = tf.Variable(b0)
loss = ns["train_step"](X, Y, W, b, learning_rate)
result = {"loss": loss, "W": W.numpy(), "b": b.numpy()}
"""


@check("q5.train_step_one_step", points=2, hidden=True,
       hint="Compute the mean cross-entropy inside tf.GradientTape, take tape.gradient with "
            "respect to [W, b], update both with assign_sub(learning_rate * gradient) and "
            "return the loss from before the update.")
def check_train_step_one_step(student, expected):
    """One train_step from hidden W, b on a hidden batch gives the reference loss, W and b."""
    out = student.evaluate(
        ONE_STEP_CODE, what="train_step(X, Y, W, b, learning_rate) on a hidden batch",
        X=expected.array("step_X"), Y=expected.array("step_Y"), W0=expected.array("step_W0"),
        b0=expected.array("step_b0"), learning_rate=expected.value("step_learning_rate"))
    assert_allclose(out["loss"], expected.value("step_loss"), what="the loss train_step returns",
                    rtol=1e-4, atol=1e-6)
    assert_allclose(out["W"], expected.array("step_W1"), what="W after one train_step",
                    rtol=1e-4, atol=1e-6)
    assert_allclose(out["b"], expected.array("step_b1"), what="b after one train_step",
                    rtol=1e-4, atol=1e-6)


def _held_out(seed: int) -> tuple[np.ndarray, np.ndarray]:
    # The private MNIST holdout (never in the sandbox), perturbed with the submission's seed.
    images, labels = mnist_holdout()
    x = perturb_images(images, seed)
    return x.reshape(-1, 784).astype(np.float64) / 255.0, labels.astype(np.int64)


@check("q6.test_accuracy", points=3, hidden=True,
       hint="Train W and b (zeros at the start) for the given epochs with your train_step on "
            "X_train scaled to [0, 1], and check that the printed loss goes down.")
def check_test_accuracy(student, expected):
    """The trained W, b classify the private held-out images about as well as the reference."""
    W = assert_shape(student.get("W"), (784, 10), what="W")
    b = assert_shape(student.get("b"), (10,), what="b")
    # W, b arrive as data and are applied here, where no student code runs.
    seed = int(hashlib.sha256(np.ascontiguousarray(W, dtype=np.float64).tobytes()
                              + np.ascontiguousarray(b, dtype=np.float64).tobytes()
                              ).hexdigest()[:8], 16)
    X, labels = _held_out(seed)
    accuracy = float(np.mean(np.argmax(X @ W + b, axis=1) == labels))
    band = expected.band("test_accuracy")
    record = {"perturbation_seed": seed, "holdout_size": len(labels)}
    try:
        metric = assert_in_band(accuracy, band, what="The held-out accuracy of your trained W, b",
                                fix="Check Q1-Q5 first, then the training loop of Q6.")
    except CheckFailed as failure:
        if failure.metric is not None:
            failure.metric = {**failure.metric, **record}
        raise
    return flag_for_review({**metric, **record}, band)
