"""Hidden checks for linear_softmax: exact values on grading-time inputs, and trained quality.

The exact checks (Q2-Q5) call the student's functions on inputs drawn at grading time
from the submission's grading seed (:mod:`grader.fresh_inputs`: nobody knows them before
grading) and compare with the answers of the NumPy reference below, computed here in
float64 from the same inputs (tests/test_fresh_inputs.py checks it against the reference
notebook's TensorFlow functions). Only inputs travel to the kernel; nothing is read from
expected.npz.
"""

import hashlib
from functools import lru_cache

import numpy as np

from grader.checks import check
from grader.compare import assert_allclose, assert_shape
from grader.data import mnist_holdout, mnist_sample, perturb_images
from grader.keras_checks import judge_trained_accuracy

LEARNING_RATE = 0.5  # the learning rate of the one-step check (any positive value would do)


# -- the reference, in NumPy (float64) -------------------------------------------------------
def softmax(logits: np.ndarray) -> np.ndarray:
    shifted = logits - logits.max(axis=-1, keepdims=True)
    exps = np.exp(shifted)
    return exps / exps.sum(axis=-1, keepdims=True)


def forward(X: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    return softmax(X @ W + b)


def cross_entropy(Y_true: np.ndarray, Y_pred: np.ndarray) -> float:
    return float(-np.mean(np.sum(Y_true * np.log(Y_pred), axis=1)))


def sgd_step(X, Y, W, b, learning_rate):
    """One step of gradient descent on the mean cross-entropy of softmax regression:
    (loss before the step, W after, b after). dL/dlogits = (P - Y) / N."""
    P = forward(X, W, b)
    delta = (P - Y) / len(X)
    return cross_entropy(Y, P), W - learning_rate * (X.T @ delta), b - learning_rate * delta.sum(0)


def _f64(array: np.ndarray) -> np.ndarray:
    """What the reference computes on: the float32 input the student receives, in float64."""
    return array.astype(np.float32).astype(np.float64)


# -- grading-time inputs -------------------------------------------------------------------
def hidden_logits(seed: int) -> np.ndarray:
    """8 rows of 10 ordinary logits."""
    from grader.fresh_inputs import rng

    return (rng(seed, "linear_softmax.softmax").normal(size=(8, 10)) * 3.0).astype(np.float32)


def large_logits(seed: int) -> np.ndarray:
    """4 rows where exp overflows or underflows in float32 unless each row's max is subtracted:
    all 10 logits near +1000, near +500, near -1000, and a row with exactly 4 logits near
    1000 among 6 small ones; the rows in a random order. (An unshifted float32 softmax gives
    exactly 34 NaN: a fixture's message counts them.)"""
    from grader.fresh_inputs import rng

    r = rng(seed, "linear_softmax.large_logits")
    rows = np.empty((4, 10))
    for i, offset in enumerate((1000.0, 500.0, -1000.0)):
        rows[i] = offset + r.uniform(-5, 5, size=10)
    mixed = r.uniform(-5, 5, size=10)
    mixed[r.choice(10, size=4, replace=False)] = 1000.0 - r.uniform(0, 3, size=4)
    rows[3] = mixed
    return rows[r.permutation(4)].astype(np.float32)


@lru_cache(maxsize=1)
def _train_images() -> tuple[np.ndarray, np.ndarray]:
    (x_train, y_train), _ = mnist_sample()
    return x_train.reshape(-1, 784).astype(np.float32) / 255.0, y_train.astype(np.int64)


def step_inputs(seed: int) -> dict[str, np.ndarray]:
    """A batch of 32 training images with pixel noise, one-hot labels, small random W, b."""
    from grader.fresh_inputs import rng

    r = rng(seed, "linear_softmax.step")
    images, labels = _train_images()
    pick = r.choice(len(images), size=32, replace=False)
    X = np.clip(images[pick] + r.normal(scale=0.05, size=(32, 784)), 0.0, 1.0)
    return {
        "X": X.astype(np.float32),
        "Y": np.eye(10, dtype=np.float32)[labels[pick]],
        "W0": (r.normal(size=(784, 10)) * 0.05).astype(np.float32),
        "b0": (r.normal(size=10) * 0.1).astype(np.float32),
    }


def cross_entropy_inputs(seed: int) -> tuple[np.ndarray, np.ndarray]:
    """16 one-hot labels and softmax probabilities (none tiny: clipping guards do not matter)."""
    from grader.fresh_inputs import rng

    r = rng(seed, "linear_softmax.cross_entropy")
    y_pred = softmax(r.normal(size=(16, 10))).astype(np.float32)
    y_true = np.eye(10, dtype=np.float32)[r.integers(0, 10, size=16)]
    return y_true, y_pred


# -- the checks ----------------------------------------------------------------------------
@check("q2.softmax_hidden_logits", points=1, hidden=True,
       hint="softmax must normalise each row (axis=-1): every row of the result sums to 1.")
def check_softmax_hidden_logits(student, expected):
    """softmax matches the reference on hidden logits of shape (8, 10)."""
    logits = hidden_logits(expected.context.seed)
    probs = student.call("softmax", logits)
    assert_allclose(probs, softmax(_f64(logits)), what="softmax(hidden logits)",
                    rtol=1e-4, atol=1e-6)


@check("q2.softmax_large_logits", points=1, hidden=True,
       hint="Subtract each row's maximum from the logits before tf.exp (or use tf.nn.softmax): "
            "exp(1000) overflows to inf and inf / inf is NaN.")
def check_softmax_large_logits(student, expected):
    """softmax stays finite and exact for logits around +-1000."""
    logits = large_logits(expected.context.seed)
    probs = student.call("softmax", logits)
    assert_allclose(probs, softmax(_f64(logits)), what="softmax(large hidden logits)",
                    rtol=1e-4, atol=1e-6)


@check("q3.forward_hidden_inputs", points=1, hidden=True,
       hint="forward(X, W, b) must return softmax(tf.matmul(X, W) + b).")
def check_forward_hidden_inputs(student, expected):
    """forward(X, W, b) matches the reference on hidden images and parameters."""
    inputs = step_inputs(expected.context.seed)
    probs = student.call("forward", inputs["X"], inputs["W0"], inputs["b0"])
    assert_allclose(probs, forward(_f64(inputs["X"]), _f64(inputs["W0"]), _f64(inputs["b0"])),
                    what="forward(X, W, b)", rtol=1e-4, atol=1e-6)


@check("q4.cross_entropy_hidden_inputs", points=1, hidden=True,
       hint="Average -sum(Y_true * log(Y_pred), axis=1) over the batch (the mean, not the sum).")
def check_cross_entropy_hidden_inputs(student, expected):
    """cross_entropy matches the reference on a hidden batch of 16."""
    y_true, y_pred = cross_entropy_inputs(expected.context.seed)
    loss = student.call("cross_entropy", y_true, y_pred)
    assert_allclose(loss, cross_entropy(_f64(y_true), _f64(y_pred)),
                    what="cross_entropy(Y_true, Y_pred)", rtol=1e-4, atol=1e-6)


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
    inputs = step_inputs(expected.context.seed)
    out = student.evaluate(
        ONE_STEP_CODE, what="train_step(X, Y, W, b, learning_rate) on a hidden batch",
        X=inputs["X"], Y=inputs["Y"], W0=inputs["W0"], b0=inputs["b0"],
        learning_rate=LEARNING_RATE)
    loss, W1, b1 = sgd_step(*(_f64(inputs[k]) for k in ("X", "Y", "W0", "b0")), LEARNING_RATE)
    if not isinstance(out, dict) or set(out) != {"loss", "W", "b"}:
        out = {"loss": None, "W": None, "b": None}  # only the check's own snippet answers
    assert_allclose(out["loss"], loss, what="the loss train_step returns", rtol=1e-4, atol=1e-6)
    assert_allclose(out["W"], W1, what="W after one train_step", rtol=1e-4, atol=1e-6)
    assert_allclose(out["b"], b1, what="b after one train_step", rtol=1e-4, atol=1e-6)


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
    return judge_trained_accuracy(accuracy, expected.band("test_accuracy"),
                                  what="The held-out accuracy of your trained W, b",
                                  fix="Check Q1-Q5 first, then the training loop of Q6.",
                                  perturbation_seed=seed, holdout_size=len(labels))
