"""Hidden checks for custom_train_step: exact steps from hidden weights, and trained quality.

The kernel builds the student's model, loads hidden weights, compiles it with SGD and
runs the student's own train_step / test_step on hidden batches; the results come back
here and are compared with make_expected.py's reference values.
"""

from functools import lru_cache

import numpy as np

from grader.checks import check
from grader.compare import assert_allclose, assert_in_band, assert_shape
from grader.data import mnist_npz
from grader.errors import CheckFailed

WEIGHT_NAMES = ["Dense(64) kernel", "Dense(64) bias", "BatchNormalization gamma",
                "BatchNormalization beta", "BatchNormalization moving_mean",
                "BatchNormalization moving_variance", "Dense(10) kernel", "Dense(10) bias"]

SETUP = """
import numpy as np
import keras
model = ns["build_model"]()
if not model.weights:
    model(np.zeros((1, 28, 28), "float32"), training=False)
shapes = [list(np.shape(w)) for w in model.get_weights()]
ready = shapes == [list(np.shape(w)) for w in weights]
if ready:
    model.set_weights(weights)
    model.compile(optimizer=keras.optimizers.SGD(learning_rate=learning_rate), loss=loss)


def as_logs(logs):
    if not isinstance(logs, dict):
        return {"__type__": type(logs).__name__}
    return {str(k): float(v) for k, v in logs.items()}


result = {"shapes": shapes}
"""

ONE_STEP = SETUP + """
if ready:
    result["logs"] = as_logs(model.train_step((x0, y0)))
    result["weights"] = [np.array(w) for w in model.get_weights()]
"""

RUNNING = SETUP + """
if ready:
    model.train_step((x0, y0))
    result["logs_two"] = as_logs(model.train_step((x1, y1)))
    model.reset_metrics()
    result["logs_reset"] = as_logs(model.train_step((x2, y2)))
"""

TEST_STEP = SETUP + """
if ready:
    result["logs"] = as_logs(model.test_step((x0, y0)))
    result["weights"] = [np.array(w) for w in model.get_weights()]
"""


def _run(student, code, expected, what, batches=(0,)):
    inputs = {"weights": [expected.array(f"init_w{i}") for i in range(8)],
              "learning_rate": expected.value("learning_rate"), "loss": expected.value("loss")}
    for i in batches:
        inputs[f"x{i}"] = expected.array(f"batch{i}_x")
        inputs[f"y{i}"] = expected.array(f"batch{i}_y")
    out = student.evaluate(code, what=what, **inputs)
    wanted = [list(expected.array(f"init_w{i}").shape) for i in range(8)]
    if out["shapes"] != wanted:
        raise CheckFailed(
            f"build_model() gives weights of shapes {[tuple(s) for s in out['shapes']]}; "
            f"expected {[tuple(s) for s in wanted]}. Build exactly the architecture of Q2.")
    return out


def _compare_logs(logs, loss, accuracy, what):
    if "__type__" in logs or not {"loss", "accuracy"} <= set(logs):
        raise CheckFailed(f"{what} returned {logs.get('__type__') or sorted(logs)}; expected a "
                          "dict with the keys 'loss' and 'accuracy'.")
    assert_allclose(logs["loss"], loss, what=f"logs['loss'] of {what}", rtol=1e-4, atol=1e-6)
    assert_allclose(logs["accuracy"], accuracy, what=f"logs['accuracy'] of {what}",
                    rtol=1e-5, atol=1e-6)


@check("q1.train_step_one_step", points=2, hidden=True,
       hint="Inside tf.GradientTape call self(x, training=True) and self.compute_loss(x=x, y=y, "
            "y_pred=y_pred); apply tape.gradient(loss, self.trainable_variables) with "
            "self.optimizer.apply_gradients; update the trackers before returning their results.")
def check_train_step_one_step(student, expected):
    """One train_step from hidden weights on a hidden batch: logs and all 8 weights match."""
    out = _run(student, ONE_STEP, expected, "model.train_step((x, y)) from hidden weights")
    _compare_logs(out["logs"], expected.value("step_loss"), expected.value("step_accuracy"),
                  "train_step")
    for i, (name, found) in enumerate(zip(WEIGHT_NAMES, out["weights"], strict=True)):
        assert_allclose(found, expected.array(f"step_w{i}"), what=f"{name} after one train_step",
                        rtol=1e-4, atol=1e-6)


@check("q1.logs_running_mean", points=1, hidden=True,
       hint="Return each tracker's result() (the running mean since the last reset), not this "
            "batch's loss, and list both trackers in the `metrics` property so that Keras can "
            "reset them.")
def check_logs_running_mean(student, expected):
    """The logs are running means: two steps average two batches; reset_metrics() starts over."""
    out = _run(student, RUNNING, expected,
               "model.train_step((x, y)) twice, reset_metrics(), then once more",
               batches=(0, 1, 2))
    _compare_logs(out["logs_two"], expected.value("running_loss_after_two"),
                  expected.value("running_accuracy_after_two"), "the second train_step")
    _compare_logs(out["logs_reset"], expected.value("loss_after_reset"),
                  expected.value("accuracy_after_reset"), "train_step after reset_metrics()")


@check("q1.test_step_exact", points=1, hidden=True,
       hint="In test_step call self(x, training=False), compute the loss with self.compute_loss "
            "and update the trackers, without gradients.")
def check_test_step_exact(student, expected):
    """test_step from hidden weights gives the reference loss and accuracy and changes no weight."""
    out = _run(student, TEST_STEP, expected, "model.test_step((x, y)) from hidden weights")
    _compare_logs(out["logs"], expected.value("test_loss"),
                  expected.value("test_accuracy_batch"), "test_step")
    for i, (name, found) in enumerate(zip(WEIGHT_NAMES, out["weights"], strict=True)):
        assert_allclose(found, expected.array(f"init_w{i}"), what=f"{name} after test_step",
                        rtol=0, atol=0)


@lru_cache(maxsize=1)
def _held_out() -> tuple[np.ndarray, np.ndarray]:
    # The cached copy of grader.data.mnist_sample() (the same 1,000 test images, loaded fast).
    with np.load(mnist_npz(), allow_pickle=False) as data:
        x_test, y_test = data["x_test"], data["y_test"]
    return x_test.astype(np.float32) / 255.0, y_test.astype(np.int64)


@check("q3.test_accuracy", points=2, hidden=True,
       hint="Train model = build_model() with model.fit(x_train, y_train, epochs=EPOCHS, "
            "batch_size=BATCH_SIZE) and check that the loss goes down.")
def check_test_accuracy(student, expected):
    """The trained `model` classifies the 1,000 held-out images about as well as the reference."""
    names = student.names()
    if "model" not in names:
        raise CheckFailed(f"No variable `model` in your notebook (defined: "
                          f"{', '.join(sorted(names)) or 'nothing yet'}). Train with "
                          "model = build_model(); history = model.fit(...).")
    x, labels = _held_out()
    probs = student.evaluate("result = ns['model'].predict(x, verbose=0)",
                             what="model.predict(x_test)", x=x)
    probs = assert_shape(probs, (len(labels), 10), what="model.predict(x_test)")
    accuracy = float(np.mean(np.argmax(probs, axis=1) == labels))
    return assert_in_band(accuracy, expected.band("test_accuracy"),
                          what="The held-out accuracy of your trained model",
                          fix="Check Q1 and Q2 first, then the training of Q3.")
