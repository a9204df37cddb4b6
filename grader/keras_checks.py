"""Helpers the Keras image practicals' public checks share (mlp and cnn: MNIST, 10 classes).

Students receive ``assignments/<name>/`` and the installed ``grader`` package, so what the
checks of several practicals have in common lives here. Each helper asks the notebook's
kernel for data (array summaries, a description of the model ``build_model()`` returns,
predictions on inputs written by the grader) and judges it in the grader, raising
:class:`~grader.errors.CheckFailed` with a message that tells the student what to fix.
"""

from __future__ import annotations

import time

import numpy as np

from . import data
from .cleanroom import (ALL_LAYERS, CNN_LAYERS, EXPORT, MLP_LAYERS, TABULAR_LAYERS,  # noqa: F401
                        ExportedModel, ModelRefused, same_architecture, validate_export)
from .compare import assert_in_band, assert_shape
from .errors import CheckFailed, StudentCodeError

CLASSES = 10

# Summaries of the image arrays, computed in the kernel: never the whole array.
DESCRIBE = """
if "build_model" not in ns:
    result = {"missing": True}
else:
    model = ns["build_model"]()
    if hasattr(model, "layers") and hasattr(model, "predict"):
        result = describe_model(model)
    else:
        result = {"not_a_model": type(model).__name__}
"""

BOTH_CONVENTIONS = "softmax with from_logits=False, or logits with from_logits=True"


# -- asking the kernel ------------------------------------------------------------------
def array_summaries(student, names):
    """name -> shape, dtype, min and max of each image array, which must exist and be numeric.
    The kernel only sends the arrays, as data; every number is computed here."""
    defined = student.names()
    summaries = {}
    for name in names:
        if name not in defined:
            raise CheckFailed(f"No variable `{name}` in your notebook. Define `{name}` as the "
                              "notebook asks, and run every cell from the top.")
        value = student.get(name)
        try:
            array = np.asarray(value)
        except (TypeError, ValueError):
            array = np.asarray(None)
        if array.dtype.kind not in "biuf" or array.size == 0:
            kind = array.dtype if array.dtype.kind != "O" else type(value).__name__
            raise CheckFailed(f"`{name}` holds {kind} values of shape {tuple(array.shape)}; "
                              "expected numbers (the pixel values). Run the data-loading cell "
                              "again, then your Q1 cell.")
        summaries[name] = {"shape": list(array.shape), "dtype": str(array.dtype),
                           "min": float(array.min()), "max": float(array.max())}
    return summaries


def describe(student, allowed: frozenset[str] = ALL_LAYERS):
    """The description of the model ``build_model()`` returns.

    In a graded run (the student has a clean room: :mod:`grader.cleanroom`) the model is
    exported as data, validated against ``allowed`` and described where it was rebuilt, so
    a layer class that merely calls itself ``Conv2D`` is never seen as one. The self-check
    on a student's laptop has no clean room and asks the kernel to describe it."""
    if getattr(student, "cleanroom", None) is not None:
        return cleanroom_description(student, "build_model", allowed)
    description = student.evaluate(DESCRIBE, what="build_model()")
    if description.get("missing"):
        raise CheckFailed("No function `build_model` in your notebook. Define "
                          "`def build_model():` as Q2 asks, and run every cell from the top.")
    if "not_a_model" in description:
        raise CheckFailed(f"`build_model()` returned a {description['not_a_model']}; expected a "
                          "compiled Keras model. Build the model inside `build_model()`, compile "
                          "it and end the function with `return model`.")
    return description


# -- reading a model description --------------------------------------------------------
# What Q2's "relu activation" covers: ReLU and its leaky/capped variants, however spelt
# (activation="relu", tf.nn.relu, layers.ReLU(), Activation("relu"), LeakyReLU()).
RELU_FAMILY = {"relu", "relu6", "leaky_relu", "prelu"}
EPSILON = 1e-7  # Keras' backend.epsilon(): how its cross-entropy clips probabilities


def layer_classes(description):
    return [layer["class"] for layer in description["layers"] if layer["class"] != "InputLayer"]


def is_flatten(layer):
    """Flatten, or a Reshape to one axis per example: both turn an image into a vector."""
    if layer["class"] == "Flatten":
        return True
    target = layer.get("target_shape")
    return layer["class"] == "Reshape" and isinstance(target, (list, tuple)) and len(target) == 1


def layer_listing(description):
    """'[Flatten, Dense(relu), Dense(softmax)]': the flattened layers as a student reads them."""
    names = []
    for layer in description["layers"]:
        if layer["class"] == "InputLayer":
            continue
        activation = layer.get("activation")
        names.append(layer["class"] + (f"({activation})" if activation else ""))
    return "[" + ", ".join(names) + "]"


def output_shape(description):
    if description.get("output_shape") is not None:
        return description["output_shape"]
    layers = [layer for layer in description["layers"] if layer["class"] != "InputLayer"]
    return layers[-1].get("output_shape") if layers else None


def shape_text(shape):
    return "(" + ", ".join("None" if s is None else str(s) for s in shape) + ")"


def output_activation(description):
    """The activation applied by the model's last layers: 'softmax', 'linear' or another name."""
    for layer in reversed(description["layers"]):
        activation = layer.get("activation")
        if activation is None:
            continue  # Dropout, Flatten, ... do not change the output's meaning
        name = str(activation)
        return "softmax" if name.startswith("softmax") else name
    return None


def loss_of(description):
    loss = description.get("loss") or {}
    return str(loss.get("name") or ""), bool(loss.get("from_logits"))


def behaviour(description):
    """What running ``build_model()``'s model measured, as float64 arrays: outputs on the
    inputs a, b, a + b and zeros, integer labels, the compiled loss and metrics."""
    found = description.get("behaviour")
    found = found if isinstance(found, dict) else {}
    if "error" in found:
        raise CheckFailed(f"The model `build_model()` returns could not be run on a batch of "
                          f"inputs ({found['error']}). Q2: check that `build_model()` builds "
                          "the model from `keras.Input(shape=...)` and that calling "
                          "`build_model()(x)` works on a batch of images.")
    # The kernel wrote all of this: keep only well-formed numbers, in the shapes asked for.
    measured = {key: str(found[key]) for key in ("loss_error", "metrics_error") if key in found}
    try:
        outputs = {key: np.asarray(value, dtype=np.float64)
                   for key, value in dict(found.get("outputs") or {}).items()
                   if key in ("a", "b", "a_plus_b", "zeros")}
    except (TypeError, ValueError) as error:
        raise CheckFailed("The model's outputs on a batch of inputs are not numbers "
                          f"({error}). Q2: the model must return one score per class.") from None
    shapes = {value.shape for value in outputs.values()}
    measured["outputs"] = outputs if len(outputs) == 4 and len(shapes) == 1 else {}
    output = measured["outputs"].get("a")
    try:
        labels = np.asarray(found.get("labels"), dtype=np.int64)
    except (TypeError, ValueError):
        labels = None
    if (output is not None and output.ndim == 2 and labels is not None
            and labels.shape == (len(output),) and len(labels)
            and labels.min() >= 0 and labels.max() < output.shape[1]):
        measured["labels"] = labels
    loss = found.get("loss")
    if isinstance(loss, (int, float)) and not isinstance(loss, bool):
        measured["loss"] = float(loss)
    metrics = found.get("metrics")
    measured["metrics"] = {str(key): float(value) for key, value in metrics.items()
                           if isinstance(value, (int, float)) and not isinstance(value, bool)
                           } if isinstance(metrics, dict) else {}
    return measured


def outputs_are_probabilities(output):
    """Rows of non-negative numbers that sum to 1: what a softmax output gives."""
    return (output.ndim == 2 and bool(np.all(np.isfinite(output)))
            and float(np.min(output)) >= -1e-6
            and bool(np.allclose(output.sum(axis=1), 1.0, rtol=0, atol=1e-3)))


def nonlinearity(outputs, probabilities):
    """How far the model is from affine: |f(a+b) - f(a) - f(b) + f(0)| over the size of
    f(a) - f(0), on the log-probabilities of a softmax output (which softmax turns into
    an affine function of the logits, up to a per-row constant that is removed)."""
    runs = {}
    for key in ("a", "b", "a_plus_b", "zeros"):
        value = outputs[key].reshape(len(outputs[key]), -1)
        if probabilities:
            value = np.log(np.clip(value, 1e-30, None))
        runs[key] = value - value.mean(axis=1, keepdims=True)
    residual = runs["a_plus_b"] - runs["a"] - runs["b"] + runs["zeros"]
    scale = max(float(np.max(np.abs(runs["a"] - runs["zeros"]))),
                float(np.max(np.abs(runs["b"] - runs["zeros"]))))
    return float(np.max(np.abs(residual))) / (scale + 1e-12)


def sparse_crossentropies(output, labels):
    """The mean sparse categorical cross-entropy of integer ``labels`` against ``output``,
    computed here the way Keras does: (treating output as probabilities, as logits)."""
    rows = np.arange(len(labels))
    clipped = np.clip(output, EPSILON, 1 - EPSILON)
    as_probabilities = np.log(clipped.sum(axis=1)) - np.log(clipped[rows, labels])
    top = output.max(axis=1, keepdims=True)
    log_sum = np.log(np.exp(output - top).sum(axis=1)) + top[:, 0]
    as_logits = log_sum - output[rows, labels]
    return float(np.mean(as_probabilities)), float(np.mean(as_logits))


def loss_convention(description):
    """'probabilities' or 'logits': which sparse cross-entropy the compiled loss computed on
    the measured batch; None when it computed neither (or could not be measured)."""
    if not description.get("compiled") or description.get("loss") is None:
        return None
    measured = behaviour(description)
    output, value = measured.get("outputs", {}).get("a"), measured.get("loss")
    if output is None or output.ndim != 2 or value is None or "labels" not in measured:
        return None
    as_probabilities, as_logits = sparse_crossentropies(output, measured["labels"])
    if np.isclose(value, as_probabilities, rtol=1e-3, atol=1e-4):
        return "probabilities"
    if np.isclose(value, as_logits, rtol=1e-3, atol=1e-4):
        return "logits"
    return None


# -- what the checks require ------------------------------------------------------------
def require_pixels_scaled(name, low, high):
    """The image array ``name``, holding values from ``low`` to ``high``, is scaled to [0, 1]."""
    if high > 1.0 or low < 0.0:
        raise CheckFailed(
            f"`{name}` has values from {low:g} to {high:g}; expected pixel values scaled to "
            f"[0, 1]. Divide the raw pixels by 255.0: `{name} = {name}.astype(\"float32\") / "
            "255.0`, and run the cell only once.",
            expected="values in [0, 1]", found=f"values in [{low:g}, {high:g}]")
    if high < 0.5:
        raise CheckFailed(
            f"`{name}` has values from {low:g} to {high:g}; expected pixel values scaled to "
            "[0, 1] with white pixels near 1.0. Were the pixels divided by 255 twice (the "
            "cell run twice)? Reload the data and divide by 255.0 once.",
            expected="largest value close to 1.0", found=f"largest value {high:g}")


def require_input_shape(description, image_shape, *, batch: str, advice: str):
    """The model takes inputs of shape (None, *image_shape); ``batch`` says what that is."""
    found = description.get("input_shape")
    wanted = shape_text((None, *image_shape))
    use = f"`keras.Input(shape={image_shape})`"
    if found is None:
        raise CheckFailed(
            "The model `build_model()` returns has no input shape yet; expected inputs of shape "
            f"{wanted}. Start the model with {use}.",
            expected=wanted, found="no input shape")
    if list(found) != [None, *image_shape]:
        raise CheckFailed(
            f"The model `build_model()` returns takes inputs of shape {shape_text(found)}; "
            f"expected {wanted}: {batch}. Use {use}{advice}.",
            expected=wanted, found=shape_text(found))


def require_10_outputs(description, image_shape, *, flatten_hint: str):
    """The model outputs 10 scores per image; ``flatten_hint`` when its output has more axes."""
    found = output_shape(description)
    if found is None:
        raise CheckFailed(
            "The model `build_model()` returns has no output shape yet (it was never built). "
            f"Start it with `keras.Input(shape={image_shape})` so Keras knows the input shape.",
            expected="(None, 10)", found="no output shape")
    if list(found) != [None, CLASSES]:
        hint = (flatten_hint if len(found) > 2 else "")
        raise CheckFailed(
            f"The model's output has shape {shape_text(found)}; expected (None, 10): one score "
            f"per digit 0-9. {hint}End the model with `layers.Dense(10, ...)`.",
            expected="(None, 10)", found=shape_text(found))


SPARSE_CE_FIX = ("Q2 asks for a categorical cross-entropy for integer labels: "
                 "`loss=\"sparse_categorical_crossentropy\"` or "
                 "`keras.losses.SparseCategoricalCrossentropy(...)`.")


def require_crossentropy_loss(description):
    """The compiled loss computes the sparse categorical cross-entropy of integer labels
    (measured: the loss on a batch of the model's own outputs, compared with the value
    computed here; a softmax/logits mismatch is the business of
    :func:`require_activation_matches_loss`, not of this check)."""
    if not description.get("compiled") or description.get("loss") is None:
        raise CheckFailed(
            "The model `build_model()` returns is not compiled with a loss; expected "
            "`model.compile(optimizer=\"adam\", loss=\"sparse_categorical_crossentropy\", "
            "metrics=[\"accuracy\"])` before `return model`.",
            expected="a compiled model", found="no loss")
    name, _ = loss_of(description)
    measured = behaviour(description)
    if "loss_error" in measured:
        raise CheckFailed(
            f"The model is compiled with loss `{name}`, and computing it on a batch with "
            f"integer labels 0-9 (as `y_train` holds) raised {measured['loss_error']}: "
            f"`model.fit(x_train, y_train)` would fail the same way. {SPARSE_CE_FIX}"
            + (" (`categorical_crossentropy` expects one-hot labels.)"
               if "categorical" in name.lower() and "sparse" not in name.lower() else ""),
            expected="sparse_categorical_crossentropy", found=name)
    output = measured.get("outputs", {}).get("a")
    if output is None or output.ndim != 2 or "labels" not in measured:
        return  # no class scores to measure on: the output-shape check says why
    if "loss" not in measured:
        raise CheckFailed(
            f"The model is compiled with loss `{name}`, but its value on a batch with integer "
            f"labels could not be measured (no number came back). {SPARSE_CE_FIX}",
            expected="sparse_categorical_crossentropy", found=name)
    if loss_convention(description) is None:
        as_probabilities, as_logits = sparse_crossentropies(output, measured["labels"])
        raise CheckFailed(
            f"The model is compiled with loss `{name}`, which gives {measured['loss']:.4g} on a "
            f"batch with integer labels, where the sparse categorical cross-entropy of the "
            f"same outputs is {as_probabilities:.4g} (outputs as probabilities) or "
            f"{as_logits:.4g} (outputs as logits). {SPARSE_CE_FIX}",
            expected="sparse_categorical_crossentropy", found=name)


def require_activation_matches_loss(description):
    """Softmax output with a loss on probabilities (from_logits=False), or logits with
    from_logits=True. Measured: whether the outputs are probabilities (rows of
    non-negative numbers summing to 1), and which cross-entropy the loss computed. A
    model with no usable loss passes: :func:`require_crossentropy_loss` charges that."""
    measured = behaviour(description)
    output = measured.get("outputs", {}).get("a")
    convention = loss_convention(description)
    if output is None or output.ndim != 2 or convention is None:
        return
    probabilities = outputs_are_probabilities(output)
    activation = output_activation(description)
    if probabilities and convention == "probabilities":
        return
    if not probabilities and convention == "logits":
        return
    if probabilities:
        raise CheckFailed(
            "The output layer applies softmax and the loss is built with from_logits=True, so "
            "softmax is applied twice (measured: each row of the outputs sums to 1) and the "
            "model learns slowly. Either drop the output activation (logits) or "
            "build the loss with from_logits=False.",
            expected=BOTH_CONVENTIONS, found="softmax with from_logits=True")
    if activation in (None, "linear"):
        raise CheckFailed(
            "The output layer has no activation (it outputs logits) but the loss treats the "
            "outputs as probabilities (from_logits=False). Build the loss with "
            "`keras.losses.SparseCategoricalCrossentropy(from_logits=True)`, or use "
            "`activation=\"softmax\"` on the output layer.",
            expected=BOTH_CONVENTIONS, found="logits with from_logits=False")
    raise CheckFailed(
        f"The output layer uses activation `{activation}`, whose outputs are not "
        "probabilities (the rows do not sum to 1); expected `softmax` (10 class "
        "probabilities), or no activation (logits) with a loss built with from_logits=True.",
        expected="softmax, or logits with from_logits=True", found=str(activation))


def require_adam_and_accuracy(description):
    """Compiled with Adam and an accuracy metric that measures accuracy on integer labels
    (measured: the compiled metrics on a batch, against the arg-max accuracy computed
    here). Collects both problems before reporting."""
    if not description.get("compiled"):
        raise CheckFailed(
            "The model `build_model()` returns is not compiled; expected "
            "`model.compile(optimizer=\"adam\", loss=\"sparse_categorical_crossentropy\", "
            "metrics=[\"accuracy\"])` before `return model`.",
            expected="a compiled model", found="not compiled")
    problems = []
    optimizer = description.get("optimizer")
    if optimizer != "Adam":
        problems.append(f"the optimizer is {optimizer}; Q2 asks for Adam "
                        "(`optimizer=\"adam\"` or `keras.optimizers.Adam(...)`)")
    measured = behaviour(description)
    output = measured.get("outputs", {}).get("a")
    if "metrics_error" in measured:
        problems.append(f"computing the compiled metrics on integer labels raised "
                        f"{measured['metrics_error']}; Q2 asks for `metrics=[\"accuracy\"]`")
    elif output is not None and output.ndim == 2 and "labels" in measured:
        accuracy = float(np.mean(np.argmax(output, axis=1) == measured["labels"]))
        metrics = measured.get("metrics") or {}
        if not any(np.isclose(value, accuracy, atol=1e-6) for key, value in metrics.items()
                   if "acc" in key.lower()):
            found = ", ".join(sorted(metrics)) or "none"
            problems.append(
                f"its metrics ({found}) measure no accuracy of integer labels: Q2 asks for "
                "`metrics=[\"accuracy\"]` in `model.compile` (the notebook's "
                "`test_loss, test_accuracy = model.evaluate(...)` needs it)")
    if problems:
        raise CheckFailed("The model `build_model()` returns is compiled, but "
                          + "; and ".join(problems) + ".",
                          expected="optimizer Adam, metrics=[\"accuracy\"]",
                          found=f"optimizer {optimizer}")


def require_model_scores_images(student, image_shape):
    """The global `model` maps a batch of ``image_shape`` images to 10 finite scores each.
    A model whose scores have the shape ``build_model()``'s model has passes: that mistake
    is Q2's (``q2.output_shape``), not charged again here."""
    if not student.has("model"):
        raise CheckFailed("No variable `model` in your notebook. Q3 asks for "
                          "`model = build_model()` trained with `model.fit`; run every cell "
                          "from the top.")
    images = np.zeros((3, *image_shape), dtype=np.float32)
    images[1] = 1.0
    images[2, 7:21, 13:15] = 1.0  # a white vertical stroke, roughly a "1"
    what = f"model.predict(3 images of shape {image_shape})"
    if getattr(student, "cleanroom", None) is not None:
        # Graded: `model` is exported as data and run where it was rebuilt, so no `predict`
        # of the student's decides this point (a non-Keras `model` is refused there).
        model = export_model(student, "model", ALL_LAYERS)
        student.cleanroom.load(model, ALL_LAYERS, MODEL_NAMES["model"], describe=False)
        scores = student.cleanroom.predict(model, images)
    else:  # the self-check on a student's laptop: the live model
        scores = student.evaluate("result = ns['model'].predict(x, verbose=0)", x=images,
                                  what=what)
    scores = np.asarray(scores)
    if scores.shape != (3, CLASSES):
        built = None
        try:
            built = output_shape(describe(student))
        except (CheckFailed, StudentCodeError):
            pass  # build_model() itself is broken: Q2's checks say so; judge the scores here
        if built is not None and list(scores.shape[1:]) == list(built[1:]):
            return  # the output layer of Q2's build_model(): q2.output_shape charges it
    scores = assert_shape(scores, (3, CLASSES), what=what,
                          fix="The model must return one score per digit 0-9 for each image.")
    if not np.all(np.isfinite(scores)):
        raise CheckFailed(f"`{what}` contains NaN or infinite scores; expected finite numbers. "
                          "Check that training did not diverge (scale the pixels to [0, 1]).")


TRAINED_ON = """
import hashlib
import numpy as np
def _rows(a):
    a = np.ascontiguousarray(np.asarray(a, dtype=np.float32))
    return {hashlib.sha1(row.tobytes()).hexdigest() for row in a.reshape(len(a), -1)}
x_train, x_test = ns["x_train"], ns["x_test"]
model = ns["model"]
def _scores(x):
    # In the model's input shape: a missing channel axis is Q1's mistake, charged there.
    x = np.asarray(x)[:n]
    try:
        shape = tuple(int(size) for size in model.inputs[0].shape[1:])
        if x.size == len(x) * int(np.prod(shape)):
            x = x.reshape((len(x),) + shape)
    except Exception:
        pass
    try:
        return model.predict(x, verbose=0)
    except Exception:
        return None  # the model cannot score these arrays: other checks say why
result = {
    "shared_images": len(_rows(x_train) & _rows(x_test)),
    "train_scores": _scores(x_train),
    "test_scores": _scores(x_test),
    "y_train": np.asarray(ns["y_train"])[:n], "y_test": np.asarray(ns["y_test"])[:n],
}
"""
# A model fitted on x_train classifies x_test (never seen) worse than x_train: on the
# reference data, accuracy 0.01-0.05 lower and cross-entropy 1.3-1.7 times higher (mlp and
# cnn, two seeds). Fitted on x_test it is the other way round: accuracy 0.02-0.08 higher
# and cross-entropy 0.65-0.85 times x_train's. Both must point that way to fail.
MEMORISED_ACCURACY_GAIN = 0.01
MEMORISED_LOSS_RATIO = 0.9


def memorised(scores, labels):
    """(accuracy, mean cross-entropy) of ``scores`` (probabilities or logits) on ``labels``,
    or None when they do not fit together."""
    try:
        scores = np.asarray(scores, dtype=np.float64)
        labels = np.asarray(labels, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        return None
    if scores.ndim != 2 or len(scores) != len(labels) or not len(labels) \
            or not np.all(np.isfinite(scores)) or not np.all(np.isfinite(labels)) \
            or labels.min() < 0 \
            or labels.max() >= scores.shape[1]:
        return None
    labels = labels.astype(np.int64)
    if not outputs_are_probabilities(scores):
        scores = np.exp(scores - scores.max(axis=1, keepdims=True))
        scores /= scores.sum(axis=1, keepdims=True)
    rows = np.arange(len(labels))
    accuracy = float(np.mean(np.argmax(scores, axis=1) == labels))
    return accuracy, float(np.mean(-np.log(np.clip(scores[rows, labels], 1e-7, 1.0))))


def looks_trained_on_test(train, test):
    """From (accuracy, cross-entropy) on training and test data: does the model know the
    test images better than the training images? Untrained models (test accuracy under
    0.5: another question's mistake) are not judged."""
    return (test[0] >= 0.5 and test[0] >= train[0] + MEMORISED_ACCURACY_GAIN
            and test[1] < MEMORISED_LOSS_RATIO * train[1])


def require_trained_on_training_images(student):
    """`model` was fitted on `x_train`, not on the test images: x_train holds no image of
    x_test, and `model` does not classify x_test clearly better than x_train."""
    names = student.names()
    missing = [name for name in ("model", "x_train", "x_test", "y_train", "y_test")
               if name not in names]
    if missing:
        raise CheckFailed(f"No variable(s) {', '.join(missing)} in your notebook; Q3 trains "
                          "`model` on `x_train` and evaluates it on `x_test`.")
    found = student.evaluate(TRAINED_ON, n=1000, what="model.predict(x_train[:1000] and x_test)")
    shared = int(found["shared_images"])
    if shared:
        raise CheckFailed(
            f"`x_train` contains {shared} of the images in `x_test`: the test images must "
            "stay out of training, or the test accuracy says nothing about new images. Q3: "
            "fit the model on `x_train` only (Q1 must not add test images to it).",
            expected="no test image in x_train", found=f"{shared} shared images")
    train = memorised(found["train_scores"], found["y_train"])
    test = memorised(found["test_scores"], found["y_test"])
    if train is None or test is None:
        return  # scores that do not fit the labels: the output checks report them
    if looks_trained_on_test(train, test):
        raise CheckFailed(
            f"`model` knows `x_test` better than `x_train`: accuracy {test[0]:.3f} against "
            f"{train[0]:.3f}, cross-entropy {test[1]:.3f} against {train[1]:.3f}. It looks "
            "trained on the test images. Q3: call `model.fit(x_train, y_train, ...)`; keep "
            "x_test for `model.evaluate` (it may be passed as validation_data).",
            expected="x_test classified no better than x_train",
            found=f"accuracy test {test[0]:.3f}, train {train[0]:.3f}")


# -- models as data, measured in the clean room (grader.cleanroom) ----------------------------
MODEL_NAMES = {"model": "The global `model`", "build_model": "The model `build_model()` returns"}
# A result above the band's reference runs by this much (or more than 3 sd) is flagged for an
# instructor to look at (memorised holdout, a model trained on data it should not have).
REVIEW_MARGIN = 0.03


def export_model(student, which: str, allowed: frozenset[str]) -> ExportedModel:
    """The model ``which`` ("model" or "build_model") exported from the student's kernel as
    data and validated here (see :func:`grader.cleanroom.validate_export`)."""
    memo = getattr(getattr(student, "cleanroom", None), "memo", {})
    key = ("export", which, allowed)
    if key in memo:
        return memo[key]
    what = MODEL_NAMES[which]
    found = memo.get(("exported", which))  # once per submission, validated per allow-list
    if found is None:
        started = time.perf_counter()
        try:
            found = student.evaluate(EXPORT, which=which,
                                     what="build_model()" if which == "build_model" else which)
        finally:
            if hasattr(student, "cleanroom"):
                student.cleanroom.add_time("export", time.perf_counter() - started)
        memo[("exported", which)] = found
    if isinstance(found, dict) and found.get("missing"):
        if which == "build_model":
            raise CheckFailed("No function `build_model` in your notebook. Define "
                              "`def build_model():` as the notebook asks, and run every cell "
                              "from the top.")
        raise CheckFailed(f"No variable `{which}` in your notebook. Create it with "
                          f"`{which} = build_model()`, train it with `{which}.fit`, and run "
                          "every cell from the top.")
    model = validate_export(found, allowed=allowed, what=what)
    memo[key] = model
    return model


def cleanroom_description(student, which: str, allowed: frozenset[str]) -> dict:
    """``describe_model`` of the model ``which``, computed where it was rebuilt."""
    model = export_model(student, which, allowed)
    return student.cleanroom.load(model, allowed, MODEL_NAMES[which])


def graded_model(student, allowed: frozenset[str]) -> ExportedModel:
    """The global `model`, rebuilt in the clean room, after checking that it is what
    ``build_model()`` builds (same architecture, whatever the weights and names)."""
    if getattr(student, "cleanroom", None) is None:
        raise RuntimeError("trained-quality checks need the clean room of a graded run")
    model = export_model(student, "model", allowed)
    built = export_model(student, "build_model", allowed)
    if not same_architecture(model, built):
        raise CheckFailed(
            f"The global `model` (layers {list(model.layer_classes)}) is not the model "
            f"`build_model()` returns (layers {list(built.layer_classes)}): their "
            "architectures differ. Create the model you train with `model = build_model()` "
            "and do not replace it afterwards.")
    student.cleanroom.load(model, allowed, MODEL_NAMES["model"], describe=False, like=built)
    return model


def review_threshold(band) -> float | None:
    """Above this, a result passes but is flagged for review: past the best reference run by
    :data:`REVIEW_MARGIN` (or 3 standard deviations). None without reference runs."""
    runs = [float(v) for v in band.reference_values]
    if not runs:
        return None
    spread = 3 * float(np.std(runs)) if len(runs) > 1 else 0.0
    return min(1.0, max(runs) + max(REVIEW_MARGIN, spread))


def flag_for_review(metric: dict, band) -> dict:
    """Add ``review`` (a sentence for the instructor) to a passing metric record that is
    suspiciously high; a flagged result still scores (it is not proof of cheating)."""
    threshold = review_threshold(band)
    if threshold is not None and metric["value"] > threshold:
        metric = {**metric, "review_above": round(threshold, 4),
                  "review": (f"{metric['value']:.4f} is above {threshold:.4f}, better than any "
                             "reference run by a wide margin: check that the model was not "
                             "trained on the graded data.")}
    return metric


def judge_trained_accuracy(accuracy: float, band, *, what: str, fix: str, **record) -> dict:
    """:func:`~grader.compare.assert_in_band` for a trained-quality check, with ``record``
    (the perturbation seed, the holdout's size) in the metric whether it passes or fails,
    and the review flag on a result far above the reference runs."""
    try:
        metric = assert_in_band(accuracy, band, what=what, fix=fix)
    except CheckFailed as failure:
        if failure.metric is not None:
            failure.metric = {**failure.metric, **record}
        raise
    return flag_for_review({**metric, **record}, band)


def seed_for(model: ExportedModel) -> int:
    """The perturbation seed of a submission: from its exported model (stored in the result,
    so the graded images can be rebuilt; the same notebook run gives the same images)."""
    return int(model.digest[:8], 16)


def holdout_accuracy(student, expected, prepare, *, allowed: frozenset[str],
                     image_shape: tuple[int, ...]):
    """The trained global `model`'s accuracy on the private MNIST holdout, measured in the
    clean room, judged against ``expected``'s test_accuracy band.

    The holdout (:func:`grader.data.mnist_holdout`) never entered the sandbox; it is perturbed
    with a per-submission seed, scaled with ``prepare`` (the notebook's input convention),
    and sent with the rebuilt model to the clean room, which returns raw scores. The student's
    kernel only exports the model as data."""
    model = graded_model(student, allowed)
    images, labels = data.mnist_holdout()
    seed = seed_for(model)
    inputs = prepare(data.perturb_images(images, seed))
    # Run in the clean room, on the model rebuilt from `model`'s config and weights.
    what = f"model.predict(held-out images of shape {tuple(inputs.shape)})"
    scores = assert_shape(student.cleanroom.predict(model, inputs), (len(labels), CLASSES),
                          what=what,
                          fix="The model must return 10 scores (one per digit) for each image.")
    accuracy = float(np.mean(np.argmax(scores, axis=1) == labels.astype(np.int64)))
    return judge_trained_accuracy(
        accuracy, expected.band("test_accuracy"),
        what="The accuracy of `model` on held-out images",
        fix="Scale the pixels to [0, 1], train for the epochs Q3 asks, and check the output "
            "activation and the loss (from_logits) go together.",
        perturbation_seed=seed, holdout_size=len(labels))
