"""Hidden checks for custom_train_step: exact steps on grading-time inputs, and trained quality.

The exact checks (Q1) run the student's class where nothing else of the notebook ran and
where Keras cannot do the work for it: a clean kernel (:mod:`grader.clean_kernel`) runs

1. the grader's prelude: it keeps Keras' own ``compile``, ``get_weights``, ``set_weights``
   and ``reset_metrics``, then makes ``train_step`` and ``test_step`` of ``keras.Model``
   and of every base class that defines them raise (``super().train_step(data)`` does
   no work);
2. the student's class definition alone, cut from the submitted file by
   :func:`grader.definitions.class_definition` (its imports and the helpers it uses; not
   ``build_model``, no data, no training);
3. per check: the grader builds the model of Q2 around the class (the functional
   ``CustomModel(inputs, outputs)``; ``CustomModel()`` for a class with its own ``call``),
   sets weights drawn at grading time, compiles it with Keras' own ``compile`` (SGD, the
   sparse cross-entropy), whatever the class or the notebook did to ``compile``, and runs
   the student's ``train_step`` / ``test_step`` on batches drawn at grading time.

What comes back (logs, weights) is compared here with the NumPy reference below, computed
from the same inputs (tests/test_fresh_inputs.py checks it against the reference
notebook's Keras model). The inputs depend on the submission's grading seed
(:mod:`grader.fresh_inputs`): nothing stored in the repository answers these checks.

The trained-quality check (Q3) takes only the trained weights from the student's kernel,
as arrays, and runs the model of Q2 on them here (the same NumPy forward pass). The
held-out images are still the public test split: a private holdout is not done here.
"""

import hashlib
from functools import lru_cache

import numpy as np

from grader.checks import check
from grader.compare import assert_allclose, assert_shape
from grader.data import mnist_holdout, mnist_sample, perturb_images
from grader.clean_class import BUILD, PRELUDE, clean_class_student  # noqa: F401
from grader.errors import CheckFailed
from grader.keras_checks import judge_trained_accuracy

WEIGHT_NAMES = ["Dense(64) kernel", "Dense(64) bias", "BatchNormalization gamma",
                "BatchNormalization beta", "BatchNormalization moving_mean",
                "BatchNormalization moving_variance", "Dense(10) kernel", "Dense(10) bias"]
WEIGHT_SHAPES = [[784, 64], [64], [64], [64], [64], [64], [64, 10], [10]]
LEARNING_RATE = 0.1
LOSS = "sparse_categorical_crossentropy"
BATCH = 32
BN_EPSILON, BN_MOMENTUM = 1e-3, 0.99  # Keras' BatchNormalization defaults
PROB_EPSILON = 1e-7  # Keras clips probabilities to [eps, 1 - eps] before the log


# -- the reference, in NumPy (float64) -------------------------------------------------------
def _forward(weights, x, training):
    W1, b1, gamma, beta, moving_mean, moving_var, W2, b2 = weights
    X = x.reshape(len(x), -1)
    z = X @ W1 + b1
    h = np.maximum(z, 0.0)
    if training:
        mean, var = h.mean(axis=0), h.var(axis=0)
    else:
        mean, var = moving_mean, moving_var
    inv = 1.0 / np.sqrt(var + BN_EPSILON)
    normed = (h - mean) * inv
    a = gamma * normed + beta
    logits = a @ W2 + b2
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    return dict(X=X, z=z, h=h, mean=mean, var=var, inv=inv, normed=normed, a=a, probs=probs)


def _loss_and_accuracy(probs, y):
    picked = np.clip(probs[np.arange(len(y)), y], PROB_EPSILON, 1 - PROB_EPSILON)
    return float(-np.mean(np.log(picked))), float(np.mean(np.argmax(probs, axis=1) == y))


def reference_train_step(weights, x, y, learning_rate=LEARNING_RATE):
    """One SGD step of the Q2 model on the mean sparse cross-entropy, written out by hand
    (BatchNormalization in training mode updates its moving averages):
    (batch loss, batch accuracy, the 8 weights after the step)."""
    W1, b1, gamma, beta, moving_mean, moving_var, W2, b2 = weights
    f = _forward(weights, x, training=True)
    loss, accuracy = _loss_and_accuracy(f["probs"], y)
    n = len(y)
    dlogits = f["probs"].copy()
    dlogits[np.arange(n), y] -= 1.0
    dlogits /= n
    dW2, db2 = f["a"].T @ dlogits, dlogits.sum(axis=0)
    da = dlogits @ W2.T
    dgamma, dbeta = (da * f["normed"]).sum(axis=0), da.sum(axis=0)
    dnormed = da * gamma
    dh = f["inv"] / n * (n * dnormed - dnormed.sum(axis=0)
                         - f["normed"] * (dnormed * f["normed"]).sum(axis=0))
    dz = dh * (f["z"] > 0)
    dW1, db1 = f["X"].T @ dz, dz.sum(axis=0)
    after = [W1 - learning_rate * dW1, b1 - learning_rate * db1,
             gamma - learning_rate * dgamma, beta - learning_rate * dbeta,
             BN_MOMENTUM * moving_mean + (1 - BN_MOMENTUM) * f["mean"],
             BN_MOMENTUM * moving_var + (1 - BN_MOMENTUM) * f["var"],
             W2 - learning_rate * dW2, b2 - learning_rate * db2]
    return loss, accuracy, after


def reference_test_step(weights, x, y):
    """(batch loss, batch accuracy) in inference mode (BatchNormalization's moving averages)."""
    return _loss_and_accuracy(_forward(weights, x, training=False)["probs"], y)


# -- grading-time inputs -------------------------------------------------------------------
@lru_cache(maxsize=1)
def _train_images() -> tuple[np.ndarray, np.ndarray]:
    (x_train, y_train), _ = mnist_sample()
    return x_train.astype(np.float32) / 255.0, y_train.astype(np.int64)


def step_inputs(seed: int, purpose: str) -> dict:
    """Initial weights of the Q2 model (the moving averages too) and 3 batches of 32
    training images with pixel noise, drawn from the grading seed: the first draw that
    :func:`discriminates` (another stream of the same seed otherwise)."""
    for attempt in range(MAX_DRAWS):
        inputs = _draw(seed, purpose if attempt == 0 else f"{purpose}.redraw{attempt}")
        if discriminates(inputs):
            return inputs
    raise RuntimeError(f"no discriminating inputs in {MAX_DRAWS} draws for seed {seed}")


MAX_DRAWS = 50
# Float32 (the student's kernel) and float64 (the reference here) may rank two classes
# differently when their log-probabilities are this close: such a draw is not used.
MIN_LOG_PROB_MARGIN = 1e-3


def _draw(seed: int, purpose: str) -> dict:
    from grader.fresh_inputs import rng

    r = rng(seed, f"custom_train_step.{purpose}")
    init = [r.normal(size=(784, 64)) * 0.05, r.normal(size=64) * 0.05,      # Dense(64)
            1.0 + r.normal(size=64) * 0.1, r.normal(size=64) * 0.1,         # gamma, beta
            r.normal(size=64) * 0.2, 0.5 + r.uniform(size=64),              # moving mean, var
            r.normal(size=(64, 10)) * 0.2, r.normal(size=10) * 0.05]        # Dense(10)
    images, labels = _train_images()
    pick = r.choice(len(images), size=3 * BATCH, replace=False)
    xs = np.clip(images[pick] + r.normal(scale=0.05, size=(3 * BATCH, 28, 28)), 0.0, 1.0)
    xs = xs.astype(np.float32)
    return {"weights": [np.asarray(w, dtype=np.float32) for w in init],
            "x": [xs[i * BATCH:(i + 1) * BATCH] for i in range(3)],
            "y": [labels[pick][i * BATCH:(i + 1) * BATCH] for i in range(3)]}


def _log_prob_margin(probs: np.ndarray) -> float:
    top2 = np.sort(np.log(np.maximum(probs, 1e-300)), axis=1)[:, -2:]
    return float(np.min(top2[:, 1] - top2[:, 0]))


def discriminates(inputs: dict) -> bool:
    """Whether these inputs tell the usual mistakes from the reference.

    Accuracy is a count out of 32: on some draws a tracker that is never updated (0), a
    batch value returned for the running mean, or a tracker that reset_metrics() misses would
    give the reference's number by chance, and a near tie could rank classes differently in
    float32. A draw is used only when the reference's accuracies of the three chained
    train_steps (a0, a1, a2) and of test_step are strictly between 0 and 1, a0 != a1 (the
    mean of two steps differs from the second's), 2 * a2 != a0 + a1 (the value after
    reset_metrics() differs from the mean of all three), and no prediction is a near tie."""
    weights = _f64(inputs["weights"])
    probs = _forward(weights, _f64([inputs["x"][0]])[0], training=False)["probs"]
    if _log_prob_margin(probs) < MIN_LOG_PROB_MARGIN:
        return False
    test_accuracy = _loss_and_accuracy(probs, inputs["y"][0])[1]
    accuracies = []
    for x, y in zip(_f64(inputs["x"]), inputs["y"], strict=True):
        if _log_prob_margin(_forward(weights, x, training=True)["probs"]) < MIN_LOG_PROB_MARGIN:
            return False
        _, accuracy, weights = reference_train_step(weights, x, y)
        accuracies.append(accuracy)
    a0, a1, a2 = accuracies
    return (all(0.0 < a < 1.0 for a in (*accuracies, test_accuracy))
            and a0 != a1 and 2 * a2 != a0 + a1)


def _f64(arrays):
    return [np.asarray(a, dtype=np.float64) for a in arrays]


# -- the clean kernel ---------------------------------------------------------------------
ONE_STEP = BUILD + """
if ready:
    result["logs"] = as_logs(model.train_step((x0, y0)))
    result["weights"] = weights_of(model)
"""

RUNNING = BUILD + """
if ready:
    model.train_step((x0, y0))
    result["logs_two"] = as_logs(model.train_step((x1, y1)))
    pinned["reset_metrics"](model)
    result["logs_reset"] = as_logs(model.train_step((x2, y2)))
"""

TEST_STEP = BUILD + """
if ready:
    result["logs"] = as_logs(model.test_step((x0, y0)))
    result["weights"] = weights_of(model)
"""


def _clean_student(expected):
    """The clean kernel, with the prelude and the student's class definition run in it
    (once per submission): :func:`grader.clean_class.clean_class_student`."""
    return clean_class_student(expected.context)


def _run(expected, code, purpose, what, batches=(0,)):
    student, definition = _clean_student(expected)
    inputs = step_inputs(expected.context.seed, purpose)
    sent = {"weights": inputs["weights"], "learning_rate": LEARNING_RATE, "loss": LOSS,
            "class_name": definition.name, "defines_call": definition.defines_call}
    for i in batches:
        sent[f"x{i}"], sent[f"y{i}"] = inputs["x"][i], inputs["y"][i]
    out = student.evaluate(code, what=what, **sent)
    if not isinstance(out, dict) or out.get("shapes") != WEIGHT_SHAPES:
        found = out.get("shapes") if isinstance(out, dict) else None
        raise CheckFailed(
            f"The model of Q2 built around {definition.name} has weights of shapes "
            f"{[tuple(s) for s in found] if isinstance(found, list) else found}; expected "
            f"{[tuple(s) for s in WEIGHT_SHAPES]}. Build exactly the architecture of Q2.")
    return out, inputs


def _compare_logs(logs, loss, accuracy, what):
    if not isinstance(logs, dict) or "__type__" in logs or not {"loss", "accuracy"} <= set(logs):
        found = logs.get("__type__") or sorted(logs) if isinstance(logs, dict) else None
        raise CheckFailed(f"{what} returned {found}; expected a dict with the keys 'loss' and "
                          "'accuracy'.")
    assert_allclose(logs["loss"], loss, what=f"logs['loss'] of {what}", rtol=1e-4, atol=1e-6)
    assert_allclose(logs["accuracy"], accuracy, what=f"logs['accuracy'] of {what}",
                    rtol=1e-5, atol=1e-6)


def _compare_weights(found, wanted, what, **tolerance):
    if not isinstance(found, list) or len(found) != len(wanted):
        raise CheckFailed(f"The model's weights could not be read {what}; expected 8 arrays.")
    for name, array, target in zip(WEIGHT_NAMES, found, wanted, strict=True):
        assert_allclose(array, target, what=f"{name} {what}", **tolerance)


@check("q1.train_step_one_step", points=2, hidden=True, timeout=120.0,
       hint="Inside tf.GradientTape call self(x, training=True) and self.compute_loss(x=x, y=y, "
            "y_pred=y_pred); apply tape.gradient(loss, self.trainable_variables) with "
            "self.optimizer.apply_gradients; update the trackers before returning their results.")
def check_train_step_one_step(student, expected):
    """One train_step from hidden weights on a hidden batch: logs and all 8 weights match."""
    out, inputs = _run(expected, ONE_STEP, "one_step",
                       "model.train_step((x, y)) from hidden weights")
    loss, accuracy, after = reference_train_step(_f64(inputs["weights"]),
                                                 *_f64([inputs["x"][0]]), inputs["y"][0])
    _compare_logs(out.get("logs"), loss, accuracy, "train_step")
    _compare_weights(out.get("weights"), after, "after one train_step", rtol=1e-4, atol=1e-6)


@check("q1.logs_running_mean", points=1, hidden=True, timeout=120.0,
       hint="Return each tracker's result() (the running mean since the last reset), not this "
            "batch's loss, and list both trackers in the `metrics` property so that Keras can "
            "reset them.")
def check_logs_running_mean(student, expected):
    """The logs are running means: two steps average two batches; reset_metrics() starts over."""
    out, inputs = _run(expected, RUNNING, "running",
                       "model.train_step((x, y)) twice, reset_metrics(), then once more",
                       batches=(0, 1, 2))
    weights = _f64(inputs["weights"])
    x, y = _f64(inputs["x"]), inputs["y"]
    loss0, acc0, weights = reference_train_step(weights, x[0], y[0])
    loss1, acc1, weights = reference_train_step(weights, x[1], y[1])
    loss2, acc2, _ = reference_train_step(weights, x[2], y[2])
    _compare_logs(out.get("logs_two"), (loss0 + loss1) / 2, (acc0 + acc1) / 2,
                  "the second train_step")
    _compare_logs(out.get("logs_reset"), loss2, acc2, "train_step after reset_metrics()")


@check("q1.test_step_exact", points=1, hidden=True, timeout=120.0,
       hint="In test_step call self(x, training=False), compute the loss with self.compute_loss "
            "and update the trackers, without gradients.")
def check_test_step_exact(student, expected):
    """test_step from hidden weights gives the reference loss and accuracy and changes no weight."""
    out, inputs = _run(expected, TEST_STEP, "test_step",
                       "model.test_step((x, y)) from hidden weights")
    loss, accuracy = reference_test_step(_f64(inputs["weights"]), *_f64([inputs["x"][0]]),
                                         inputs["y"][0])
    _compare_logs(out.get("logs"), loss, accuracy, "test_step")
    _compare_weights(out.get("weights"), inputs["weights"], "after test_step", rtol=0, atol=0)


def _held_out(seed: int) -> tuple[np.ndarray, np.ndarray]:
    # The private MNIST holdout (never in the sandbox), perturbed with the submission's seed.
    images, labels = mnist_holdout()
    return perturb_images(images, seed).astype(np.float32) / 255.0, labels.astype(np.int64)


WEIGHTS = """
import numpy as np
result = [np.asarray(w) for w in ns["model"].get_weights()]
"""


@check("q3.test_accuracy", points=2, hidden=True,
       hint="Train model = build_model() with model.fit(x_train, y_train, epochs=EPOCHS, "
            "batch_size=BATCH_SIZE) and check that the loss goes down.")
def check_test_accuracy(student, expected):
    """The trained `model` classifies the private held-out images about as well as the reference.

    Only the trained weights come from the kernel, as arrays; the grader runs the model of
    Q2 on them itself (NumPy, inference mode), so no student ``predict`` or ``call`` decides
    the accuracy."""
    names = student.names()
    if "model" not in names:
        raise CheckFailed(f"No variable `model` in your notebook (defined: "
                          f"{', '.join(sorted(names)) or 'nothing yet'}). Train with "
                          "model = build_model(); history = model.fit(...).")
    found = student.evaluate(WEIGHTS, what="model.get_weights()")
    shapes = [list(np.shape(w)) for w in found] if isinstance(found, list) else None
    if shapes != WEIGHT_SHAPES:
        raise CheckFailed(f"model.get_weights() gives weights of shapes {shapes}; expected "
                          f"{[tuple(s) for s in WEIGHT_SHAPES]}: the model of Q2, trained. "
                          "Train model = build_model().")
    weights = [assert_shape(w, shape, what=f"{name} of `model`")
               for w, shape, name in zip(found, WEIGHT_SHAPES, WEIGHT_NAMES, strict=True)]
    seed = int(hashlib.sha256(b"".join(np.ascontiguousarray(w, dtype=np.float64).tobytes()
                                       for w in weights)).hexdigest()[:8], 16)
    x, labels = _held_out(seed)
    with np.errstate(all="ignore"):
        probs = _forward(weights, x.astype(np.float64), training=False)["probs"]
    accuracy = float(np.mean(np.argmax(np.nan_to_num(probs, nan=-1.0), axis=1) == labels))
    return judge_trained_accuracy(accuracy, expected.band("test_accuracy"),
                                  what="The held-out accuracy of your trained model",
                                  fix="Check Q1 and Q2 first, then the training of Q3.",
                                  perturbation_seed=seed, holdout_size=len(labels))
