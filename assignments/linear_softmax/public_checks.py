"""Public checks for linear_softmax: shapes, properties and small known examples.

Students have this file. Run them in your notebook with ``grader.check("q2")``.
"""

import numpy as np

from grader.checks import check
from grader.compare import assert_allclose, assert_equal, assert_shape
from grader.errors import CheckFailed

LN2 = float(np.log(2.0))


@check("q1.data_prepared", points=1)
def check_data_prepared(student, expected):
    """X_train, X_test are flattened float images scaled to [0, 1]; Y_train is one-hot."""
    for name, rows in (("X_train", 4000), ("X_test", 500)):  # x_test: the 500-image dev set
        X = assert_shape(student.get(name), (rows, 784), what=name,
                         fix="Flatten each 28x28 image into one row of 784 values: "
                             "x.reshape(-1, 784).")
        low, high = float(X.min()), float(X.max())
        if low < 0.0 or high > 1.0 or high <= 0.0:
            raise CheckFailed(
                f"`{name}` has values from {low:.4g} to {high:.4g}; expected pixel values scaled "
                "to [0, 1]. Convert to float32 and divide by 255.",
                expected="values in [0, 1]", found=f"[{low:.4g}, {high:.4g}]")
    Y = assert_shape(student.get("Y_train"), (4000, 10), what="Y_train",
                     fix="One-hot encode the labels: np.eye(10, dtype='float32')[y_train].")
    if not (np.all((Y == 0) | (Y == 1)) and np.all(Y.sum(axis=1) == 1)):
        raise CheckFailed("`Y_train` is not one-hot: expected a single 1 in each row and 0 "
                          "elsewhere. Use np.eye(10, dtype='float32')[y_train].")
    labels = student.get("y_train")
    assert_equal(int(np.sum(Y.argmax(axis=1) != np.asarray(labels))), 0,
                 what="number of rows where Y_train.argmax(axis=1) != y_train",
                 fix="Row i of Y_train must have its 1 in column y_train[i].")


@check("q2.softmax_known_values", points=1)
def check_softmax_known_values(student, expected):
    """softmax keeps the shape, rows sum to 1, and softmax([0, ln 2, 0]) = [1/4, 1/2, 1/4]."""
    logits = np.array([[0.0, LN2, 0.0], [1.0, 2.0, 3.0], [5.0, 5.0, 5.0], [-1.0, 0.0, 1.0]],
                      dtype=np.float32)
    probs = student.call("softmax", logits)
    fix = ("Normalise each row (the last axis): divide exp(logits) by its sum over axis=-1 "
           "with keepdims=True, or use tf.nn.softmax(logits).")
    probs = assert_shape(probs, (4, 3), what="softmax(logits) for logits of shape (4, 3)", fix=fix)
    assert_allclose(probs.sum(axis=1), np.ones(4), what="softmax(logits).sum(axis=1)",
                    rtol=0, atol=1e-5, fix=fix)
    assert_allclose(probs[0], [0.25, 0.5, 0.25], what="softmax([[0, ln 2, 0]])",
                    rtol=1e-4, atol=1e-6, fix=fix)
    assert_allclose(probs[2], [1 / 3] * 3, what="softmax([[5, 5, 5]])", rtol=1e-4, atol=1e-6,
                    fix=fix)


@check("q3.forward_uses_bias", points=1)
def check_forward_uses_bias(student, expected):
    """forward(X, W, b) has shape (N, 10) and adds the bias: zero X and W give softmax(b)."""
    X = np.zeros((3, 784), dtype=np.float32)
    W = np.zeros((784, 10), dtype=np.float32)
    b = np.zeros(10, dtype=np.float32)
    b[0] = LN2
    probs = assert_shape(student.call("forward", X, W, b), (3, 10), what="forward(X, W, b)",
                         fix="Return softmax(tf.matmul(X, W) + b), one row per image.")
    row = np.array([2.0] + [1.0] * 9) / 11.0
    assert_allclose(probs, np.tile(row, (3, 1)),
                    what="forward(zeros((3, 784)), zeros((784, 10)), b) with b[0] = ln 2",
                    rtol=1e-4, atol=1e-6, fix="Add the bias b to X·W before the softmax.")


@check("q4.cross_entropy_known_value", points=1)
def check_cross_entropy_known_value(student, expected):
    """cross_entropy([[1, 0], [0, 1]], [[0.5, 0.5], [0.25, 0.75]]) = (ln 2 + ln 4/3) / 2."""
    y_true = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    y_pred = np.array([[0.5, 0.5], [0.25, 0.75]], dtype=np.float32)
    loss = student.call("cross_entropy", y_true, y_pred)
    value = (np.log(2.0) + np.log(4.0 / 3.0)) / 2.0
    assert_allclose(loss, value, what="cross_entropy([[1, 0], [0, 1]], [[0.5, 0.5], [0.25, 0.75]])",
                    rtol=1e-4, atol=1e-6,
                    fix="Return the MEAN over the batch (not the sum) of "
                        "-sum(Y_true * log(Y_pred), axis=1), as a scalar.")


TRAIN_STEP_CODE = """
import numpy as np
import tensorflow as tf
W = tf.Variable(W0)
b = tf.Variable(b0)
loss = ns["train_step"](X, Y, W, b, learning_rate)
result = {"loss": loss, "W": W.numpy(), "b": b.numpy()}
"""


@check("q5.train_step_updates_in_place", points=1)
def check_train_step_updates_in_place(student, expected):
    """From W = 0, b = 0: the loss is ln 10 and b moves by -lr * mean(P - Y) in place."""
    labels = np.array([0, 1, 2, 3])
    Y = np.eye(10, dtype=np.float32)[labels]
    out = student.evaluate(
        TRAIN_STEP_CODE, what="train_step(X, Y, W, b, 0.5) on tf.Variables W = 0, b = 0",
        X=np.zeros((4, 784), dtype=np.float32), Y=Y, W0=np.zeros((784, 10), dtype=np.float32),
        b0=np.zeros(10, dtype=np.float32), learning_rate=0.5)
    assert_allclose(out["loss"], np.log(10.0), what="the loss train_step returns (W = 0, b = 0)",
                    rtol=1e-4, atol=1e-6,
                    fix="Return cross_entropy(Y, forward(X, W, b)), computed before the update.")
    b_new = -0.5 * (0.1 - Y.mean(axis=0))
    assert_allclose(out["b"], b_new, what="b after one train_step (learning_rate 0.5)",
                    rtol=1e-4, atol=1e-6,
                    fix="Update the variable in place: b.assign_sub(learning_rate * db), with db "
                        "the gradient of the mean loss from tape.gradient.")
    assert_allclose(out["W"], np.zeros((784, 10)), what="W after one train_step with X = 0",
                    rtol=0, atol=1e-7, fix="With X = 0 the gradient for W is 0: W must not move.")


@check("q6.parameters_defined", points=1)
def check_parameters_defined(student, expected):
    """W and b are tf.Variables of shapes (784, 10) and (10,), and were trained."""
    names = student.names()
    for name in ("W", "b"):
        if name in names and "Variable" not in names[name]:
            raise CheckFailed(f"`{name}` is a {names[name]}; expected a tf.Variable. "
                              f"Create it with tf.Variable(tf.zeros(...)).")
    W = assert_shape(student.get("W"), (784, 10), what="W",
                     fix="W = tf.Variable(tf.zeros([784, 10])).")
    assert_shape(student.get("b"), (10,), what="b", fix="b = tf.Variable(tf.zeros([10])).")
    if not np.any(W != 0):
        raise CheckFailed("`W` is still all zeros; expected trained weights. Run your training "
                          "loop (it must update W and b through train_step).")
