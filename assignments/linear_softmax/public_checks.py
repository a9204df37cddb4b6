"""Public checks for linear_softmax: shapes, properties and small known examples.

Students have this file. Run them in your notebook with ``grader.check("q2")``.

When your instructor grades (``student.grading`` is set), the exact checks of Q2-Q5 call
your functions on inputs drawn at grading time instead of the known examples below, and
compare with the answer computed by the grader (NumPy): only working code passes them.
"""

import numpy as np

from grader.checks import check
from grader.compare import assert_allclose, assert_equal, assert_shape
from grader.errors import CheckFailed
from grader.keras_checks import looks_trained_on_test, memorised

LN2 = float(np.log(2.0))


def _grading_rng(student, purpose):
    """The check's random stream in a graded run (from the submission's grading seed), or
    ``None`` in the self-check, which keeps the known examples."""
    grading = getattr(student, "grading", None)
    return grading.rng(f"linear_softmax.public.{purpose}") if grading is not None else None


def _softmax(logits):
    logits = np.asarray(logits, dtype=np.float64)
    exps = np.exp(logits - logits.max(axis=-1, keepdims=True))
    return exps / exps.sum(axis=-1, keepdims=True)


def _dtype(value):
    """The dtype of an array the kernel sent (a tensor arrives as its numpy array)."""
    return value.dtype if isinstance(value, np.ndarray) and value.dtype.kind in "biuf" else None


@check("q1.data_prepared", points=1)
def check_data_prepared(student, expected):
    """X_train, X_test are flattened float32 images scaled to [0, 1]; Y_train is float32 one-hot."""
    for name, rows in (("X_train", 4000), ("X_test", 500)):  # x_test: the 500-image dev set
        raw = student.get(name)
        X = assert_shape(raw, (rows, 784), what=name,
                         fix="Flatten each 28x28 image into one row of 784 values: "
                             "x.reshape(-1, 784).")
        dtype = _dtype(raw)
        if dtype is not None and dtype != np.float32:
            raise CheckFailed(
                f"`{name}` holds {dtype} values; Q1 asks for float32 (the dtype of the "
                "tf.Variables W and b: tf.matmul does not mix float64 and float32). Use "
                ".astype(\"float32\") before dividing by 255.",
                expected="float32", found=str(dtype))
        low, high = float(X.min()), float(X.max())
        if low < 0.0 or high > 1.0 or high <= 0.0:
            raise CheckFailed(
                f"`{name}` has values from {low:.4g} to {high:.4g}; expected pixel values scaled "
                "to [0, 1]. Convert to float32 and divide by 255.",
                expected="values in [0, 1]", found=f"[{low:.4g}, {high:.4g}]")
    raw = student.get("Y_train")
    Y = assert_shape(raw, (4000, 10), what="Y_train",
                     fix="One-hot encode the labels: np.eye(10, dtype='float32')[y_train].")
    if _dtype(raw) is not None and _dtype(raw) != np.float32:
        raise CheckFailed(f"`Y_train` holds {_dtype(raw)} values; Q1 asks for a float32 one-hot "
                          "array: np.eye(10, dtype='float32')[y_train].",
                          expected="float32", found=str(_dtype(raw)))
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
    fix = ("Normalise each row (the last axis): divide exp(logits) by its sum over axis=-1 "
           "with keepdims=True, or use tf.nn.softmax(logits).")
    r = _grading_rng(student, "softmax")
    if r is not None:
        # Graded: a row of equal logits and rows drawn now (no answer can be looked up).
        logits = (r.normal(size=(4, 3)) * 3.0).astype(np.float32)
        logits[2] = np.float32(r.uniform(-5.0, 5.0))
        probs = student.call("softmax", logits)
        probs = assert_shape(probs, (4, 3), what="softmax(logits) for logits of shape (4, 3)",
                             fix=fix)
        assert_allclose(probs.sum(axis=1), np.ones(4), what="softmax(logits).sum(axis=1)",
                        rtol=0, atol=1e-5, fix=fix)
        assert_allclose(probs, _softmax(logits), what="softmax(logits) for logits of shape "
                        "(4, 3) drawn at grading time", rtol=1e-4, atol=1e-6, fix=fix)
        return
    logits = np.array([[0.0, LN2, 0.0], [1.0, 2.0, 3.0], [5.0, 5.0, 5.0], [-1.0, 0.0, 1.0]],
                      dtype=np.float32)
    probs = student.call("softmax", logits)
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
    what = "forward(zeros((3, 784)), zeros((784, 10)), b) with b[0] = ln 2"
    r = _grading_rng(student, "forward")
    if r is not None:
        # Graded: zero images (X·W = 0 whatever W) with W and b drawn now: softmax(b).
        W = (r.normal(size=(784, 10)) * 0.1).astype(np.float32)
        b = r.normal(size=10).astype(np.float32)
        what = "forward(zeros((3, 784)), W, b) with W and b drawn at grading time"
    probs = assert_shape(student.call("forward", X, W, b), (3, 10), what="forward(X, W, b)",
                         fix="Return softmax(tf.matmul(X, W) + b), one row per image.")
    assert_allclose(probs, np.tile(_softmax(b), (3, 1)), what=what,
                    rtol=1e-4, atol=1e-6, fix="Add the bias b to X·W before the softmax.")


@check("q4.cross_entropy_known_value", points=1)
def check_cross_entropy_known_value(student, expected):
    """cross_entropy([[1, 0], [0, 1]], [[0.5, 0.5], [0.25, 0.75]]) = (ln 2 + ln 4/3) / 2."""
    y_true = np.array([[1.0, 0.0], [0.0, 1.0]], dtype=np.float32)
    y_pred = np.array([[0.5, 0.5], [0.25, 0.75]], dtype=np.float32)
    what = "cross_entropy([[1, 0], [0, 1]], [[0.5, 0.5], [0.25, 0.75]])"
    r = _grading_rng(student, "cross_entropy")
    if r is not None:
        # Graded: 4 one-hot rows and probabilities drawn now.
        y_true = np.eye(3, dtype=np.float32)[r.integers(0, 3, size=4)]
        y_pred = _softmax(r.normal(size=(4, 3))).astype(np.float32)
        what = "cross_entropy(Y_true, Y_pred) for 4 rows of 3 classes drawn at grading time"
    loss = student.call("cross_entropy", y_true, y_pred)
    truth, probs = y_true.astype(np.float64), y_pred.astype(np.float64)
    value = float(-np.mean(np.sum(truth * np.log(probs), axis=1)))
    assert_allclose(loss, value, what=what, rtol=1e-4, atol=1e-6,
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


def _result_dict(out, keys):
    """The snippet's answer, or one that fails every comparison if the kernel sent another."""
    if isinstance(out, dict) and set(keys) <= set(out):
        return out
    return dict.fromkeys(keys)


@check("q5.train_step_updates_in_place", points=1)
def check_train_step_updates_in_place(student, expected):
    """From W = 0, b = 0: the loss is ln 10 and b moves by -lr * mean(P - Y) in place."""
    labels = np.array([0, 1, 2, 3])
    W0, b0, learning_rate = np.zeros((784, 10), np.float32), np.zeros(10, np.float32), 0.5
    where = "W = 0, b = 0"
    r = _grading_rng(student, "train_step")
    if r is not None:
        # Graded: still zero images (the gradient for W is 0), with labels, W, b and the
        # learning rate drawn now.
        labels = r.integers(0, 10, size=4)
        W0 = (r.normal(size=(784, 10)) * 0.1).astype(np.float32)
        b0 = r.normal(size=10).astype(np.float32)
        learning_rate = float(np.round(r.uniform(0.2, 1.0), 3))
        where = "W, b drawn at grading time"
    Y = np.eye(10, dtype=np.float32)[labels]
    out = _result_dict(student.evaluate(
        TRAIN_STEP_CODE, what=f"train_step(X, Y, W, b, {learning_rate:g}) on tf.Variables "
                              f"({where})",
        X=np.zeros((4, 784), dtype=np.float32), Y=Y, W0=W0, b0=b0,
        learning_rate=learning_rate), ("loss", "W", "b"))
    # X = 0: every row's probabilities are softmax(b0); the gradient for b is mean(P - Y).
    P = np.tile(_softmax(b0), (4, 1))
    loss = float(-np.mean(np.log(np.sum(P * Y, axis=1))))
    assert_allclose(out["loss"], loss, what=f"the loss train_step returns ({where})",
                    rtol=1e-4, atol=1e-6,
                    fix="Return cross_entropy(Y, forward(X, W, b)), computed before the update.")
    b_new = b0.astype(np.float64) - learning_rate * (P - Y).mean(axis=0)
    assert_allclose(out["b"], b_new, what=f"b after one train_step (learning_rate "
                                          f"{learning_rate:g})",
                    rtol=1e-4, atol=1e-6,
                    fix="Update the variable in place: b.assign_sub(learning_rate * db), with db "
                        "the gradient of the mean loss from tape.gradient.")
    assert_allclose(out["W"], W0, what="W after one train_step with X = 0",
                    rtol=0, atol=1e-7, fix="With X = 0 the gradient for W is 0: W must not move.")


TAPE_SCALE = 3.0

# One step of train_step from W0, b0 per factor in `factors`, each with cross_entropy scaled
# by that factor (swapped in the namespace train_step looks its names up in: the notebook's,
# unless it was defined elsewhere and only imported; restored after each step). The
# self-check makes one step scaled by `scale`; a graded run makes two, plain then scaled: a
# step that follows the loss computed is `scale` times larger the second time, whatever the
# step is (the grader compares the two, computed from arrays, here). The last step is W, b.
TAPE_CODE = """
import tensorflow as tf
calls = []
original = ns["cross_entropy"]
def scaled_by(factor):
    def scaled_cross_entropy(Y_true, Y_pred):
        calls.append(1)
        return factor * original(Y_true, Y_pred)
    return scaled_cross_entropy
spaces = [ns, getattr(ns["train_step"], "__globals__", ns)]
saved = [space.get("cross_entropy") for space in spaces]
steps = []
for factor in factors:
    for space in spaces:
        space["cross_entropy"] = scaled_by(float(factor))
    try:
        W = tf.Variable(W0)
        b = tf.Variable(b0)
        ns["train_step"](X, Y, W, b, learning_rate)
    finally:
        for space, value in reversed(list(zip(spaces, saved))):
            space["cross_entropy"] = value
    steps.append((W.numpy(), b.numpy()))
result = {"calls": len(calls), "W": steps[-1][0], "b": steps[-1][1]}
if len(steps) == 2:
    result.update(W_plain=steps[0][0], b_plain=steps[0][1])
"""


def _tape_ratios(out, start, learning_rate):
    """Graded: for W and b, the ratio of the scaled step to the plain one, where the scaled
    step is a multiple of a plain step that moved (computed here from the arrays)."""
    ratios = {}
    for name, initial in start.items():
        try:
            plain = (np.asarray(out[f"{name}_plain"], dtype=np.float64) - initial) / learning_rate
            scaled = (np.asarray(out[name], dtype=np.float64) - initial) / learning_rate
        except (TypeError, ValueError):
            continue
        if plain.shape != initial.shape or scaled.shape != initial.shape or \
                not (np.all(np.isfinite(plain)) and np.all(np.isfinite(scaled))):
            continue
        norm = float(np.sum(plain * plain))
        if norm < 1e-20:
            continue  # this parameter did not move
        ratio = float(np.sum(scaled * plain) / norm)
        if np.allclose(scaled, ratio * plain, rtol=1e-3, atol=1e-6):
            ratios[name] = ratio
    return ratios


@check("q5.gradients_from_tape", points=1)
def check_gradients_from_tape(student, expected):
    """train_step follows the gradient of the loss it computes (tf.GradientTape), not a
    formula derived by hand: with `cross_entropy` replaced by 3 * cross_entropy for one
    call, the step must be 3 times larger."""
    rng = np.random.default_rng(5)
    labels = np.array([0, 1, 2, 3, 4, 5])
    scale = TAPE_SCALE
    r = _grading_rng(student, "tape")
    if r is not None:  # graded: the images, labels and scale are drawn now
        rng, labels = r, r.integers(0, 10, size=6)
        scale = float(np.round(r.uniform(2.0, 4.0), 2))
    X = rng.uniform(0.0, 1.0, (6, 784)).astype(np.float32)
    Y = np.eye(10, dtype=np.float32)[labels]
    learning_rate = 0.1
    if r is not None:
        _graded_tape(student, X, Y, learning_rate, scale)
        return
    out = _result_dict(student.evaluate(
        TAPE_CODE, what=f"train_step(X, Y, W, b, 0.1) with cross_entropy scaled by {scale:g}",
        X=X, Y=Y, W0=np.zeros((784, 10), dtype=np.float32), b0=np.zeros(10, dtype=np.float32),
        learning_rate=learning_rate, factors=[scale]), ("calls", "W", "b"))
    if not out["calls"]:
        raise CheckFailed(
            "`train_step` never called your `cross_entropy`; Q5 asks to compute the loss "
            "`cross_entropy(Y, forward(X, W, b))` inside a `tf.GradientTape` and to take its "
            "gradients with `tape.gradient`.",
            expected="train_step calls cross_entropy", found="no call")
    # From W = 0, b = 0 every class has probability 1/10: the gradient of the mean
    # cross-entropy is X^T (P - Y) / N for W and mean(P - Y) for b. Each parameter that
    # moved along that gradient says by how much: `scale` times (the step follows the loss
    # computed) or once (a formula that ignores it). Any other step is a mistake the
    # value checks of Q5 charge, not this one.
    error = np.full_like(Y, 0.1, dtype=np.float64) - Y
    gradients = {"W": X.astype(np.float64).T @ error / len(X), "b": error.mean(axis=0)}
    ratios = {}
    for name, gradient in gradients.items():
        try:
            step = -np.asarray(out[name], dtype=np.float64) / learning_rate
        except (TypeError, ValueError):
            continue
        if step.shape != gradient.shape or not np.all(np.isfinite(step)):
            continue
        ratio = float(np.sum(step * gradient) / np.sum(gradient * gradient))
        if np.allclose(step, ratio * gradient, rtol=1e-3, atol=1e-6):
            ratios[name] = abs(ratio)
    if any(np.isclose(ratio, scale, rtol=1e-3) for ratio in ratios.values()):
        return
    if any(np.isclose(ratio, 1.0, rtol=1e-3) for ratio in ratios.values()):
        raise _hand_derived(scale)


def _hand_derived(scale: float) -> CheckFailed:
    """The failure of a step that does not grow with the loss: gradients not from the tape."""
    return CheckFailed(
        f"With `cross_entropy` replaced by {scale:g} * cross_entropy, `train_step` made the "
        "same step as with the plain cross-entropy: its gradients do not come from the loss "
        "it computes (a formula written by hand?). Q5 asks for the gradients of the loss "
        "from `tf.GradientTape`: `dW, db = tape.gradient(loss, [W, b])`.",
        expected=f"a step {scale:g} times larger", found="the same step")


def _from_the_logits(X, W_after):
    """Whether W's step (from W = 0) is X^T M for some M: the gradient of any loss of the
    logits X·W + b is, whatever the softmax or loss got wrong. A step made up without the
    images (say, the loss times a fixed array) is not."""
    step = np.asarray(W_after, dtype=np.float64)
    basis = X.astype(np.float64).T
    M = np.linalg.lstsq(basis, step, rcond=None)[0]
    size = float(np.linalg.norm(step))
    return size > 0 and float(np.linalg.norm(basis @ M - step)) <= 1e-3 * size


def _graded_tape(student, X, Y, learning_rate, scale):
    W0, b0 = np.zeros((784, 10), dtype=np.float32), np.zeros(10, dtype=np.float32)
    out = _result_dict(student.evaluate(
        TAPE_CODE, what=f"train_step(X, Y, W, b, {learning_rate:g}) with cross_entropy, "
                        f"then with cross_entropy scaled by {scale:g}",
        X=X, Y=Y, W0=W0, b0=b0, learning_rate=learning_rate, factors=[1.0, scale]),
        ("calls", "W_plain", "b_plain", "W", "b"))
    if not out["calls"]:
        raise CheckFailed(
            "`train_step` never called your `cross_entropy`; Q5 asks to compute the loss "
            "`cross_entropy(Y, forward(X, W, b))` inside a `tf.GradientTape` and to take its "
            "gradients with `tape.gradient`.",
            expected="train_step calls cross_entropy", found="no call")
    ratios = _tape_ratios(out, {"W": W0.astype(np.float64), "b": b0.astype(np.float64)},
                          learning_rate)
    if "W" in ratios and np.isclose(ratios["W"], scale, rtol=1e-3) and \
            _from_the_logits(X, out["W_plain"]):
        return
    if any(np.isclose(ratio, 1.0, rtol=1e-3) for ratio in ratios.values()):
        raise _hand_derived(scale)
    if "W" in ratios and np.isclose(ratios["W"], scale, rtol=1e-3):
        raise CheckFailed(
            "`train_step` moved W by a step that is not made from the images X: it is not the "
            "gradient of a loss of the logits X·W + b (every such gradient is X^T times "
            "something). Q5 asks for `dW, db = tape.gradient(loss, [W, b])` with the loss "
            "computed from forward(X, W, b) inside the tape.",
            expected="a step X^T M", found="a step outside the span of X's rows")
    found = "no step" if not ratios else "a step " + ", ".join(
        f"{name}: {ratio:.3g} times" for name, ratio in sorted(ratios.items()))
    raise CheckFailed(
        f"With `cross_entropy` replaced by {scale:g} * cross_entropy, the step of `train_step` "
        f"was not {scale:g} times its step with the plain cross-entropy ({found}): its "
        "update does not follow the gradient of the loss it computes. Q5 asks for "
        "`dW, db = tape.gradient(loss, [W, b])`, then `W.assign_sub(learning_rate * dW)` and "
        "`b.assign_sub(learning_rate * db)`.",
        expected=f"a step {scale:g} times larger", found=found)


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


TRAINED_ON = """
import numpy as np
result = {name: np.asarray(ns[name])[:1000] for name in ("X_train", "y_train", "X_test", "y_test")}
"""
@check("q6.trained_on_training_images", points=1)
def check_trained_on_training_images(student, expected):
    """W and b were trained on X_train, not on the test images."""
    # (X_train holding test images changes its shape: q1.data_prepared charges that.)
    names = student.names()
    missing = [name for name in ("X_train", "X_test", "y_train", "y_test", "W", "b")
               if name not in names]
    if missing:
        raise CheckFailed(f"No variable(s) {', '.join(missing)} in your notebook; Q6 trains W "
                          "and b on X_train (Q1) and the notebook evaluates them on X_test.")
    found = student.evaluate(TRAINED_ON, what="X_train, y_train, X_test and y_test")
    W = np.asarray(student.get("W"), dtype=np.float64)
    b = np.asarray(student.get("b"), dtype=np.float64)
    if W.shape != (784, 10) or b.shape != (10,):
        return  # q6.parameters_defined reports the shapes
    scores = {}
    for images, labels in (("X_train", "y_train"), ("X_test", "y_test")):
        X = np.asarray(found[images], dtype=np.float64).reshape(-1, 784)
        scores[images] = memorised(X @ W + b, found[labels])
    train, test = scores["X_train"], scores["X_test"]
    if train is None or test is None:
        return  # q1.data_prepared reports the data
    if looks_trained_on_test(train, test):
        raise CheckFailed(
            f"Your W, b know `X_test` better than `X_train`: accuracy {test[0]:.3f} against "
            f"{train[0]:.3f}, cross-entropy {test[1]:.3f} against {train[1]:.3f}. They look "
            "trained on the test images. Q6: call train_step on mini-batches of X_train and "
            "Y_train only.",
            expected="X_test classified no better than X_train",
            found=f"accuracy test {test[0]:.3f}, train {train[0]:.3f}")
