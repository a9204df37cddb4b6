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
from .errors import CheckFailed

CLASSES = 10

# Summaries of the image arrays, computed in the kernel: never the whole array.
SUMMARIZE = """
import numpy as np
def _summary(name):
    if name not in ns:
        return None
    a = np.asarray(ns[name])
    numeric = a.dtype.kind in "biuf" and a.size > 0
    return {"shape": list(a.shape), "dtype": str(a.dtype),
            "min": float(np.min(a)) if numeric else None,
            "max": float(np.max(a)) if numeric else None}
result = {name: _summary(name) for name in names}
"""

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
    """name -> shape, dtype, min and max of each image array, which must exist and be numeric."""
    summaries = student.evaluate(SUMMARIZE, names=list(names), what="the image arrays")
    for name in names:
        found = summaries.get(name)
        if found is None:
            raise CheckFailed(f"No variable `{name}` in your notebook. Define `{name}` as the "
                              "notebook asks, and run every cell from the top.")
        if found["min"] is None:
            raise CheckFailed(f"`{name}` holds {found['dtype']} values of shape "
                              f"{tuple(found['shape'])}; expected numbers (the pixel values). "
                              "Run the data-loading cell again, then your Q1 cell.")
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
def layer_classes(description):
    return [layer["class"] for layer in description["layers"] if layer["class"] != "InputLayer"]


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
        if layer["class"] == "Softmax":
            return "softmax"
        activation = layer.get("activation")
        if activation is None:
            continue  # Dropout, Flatten, ... do not change the output's meaning
        name = str(activation)
        return "softmax" if name.startswith("softmax") else name
    return None


def loss_of(description):
    loss = description.get("loss") or {}
    return str(loss.get("name") or ""), bool(loss.get("from_logits"))


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


def require_crossentropy_loss(description):
    """The model is compiled with a categorical cross-entropy loss."""
    if not description.get("compiled") or description.get("loss") is None:
        raise CheckFailed(
            "The model `build_model()` returns is not compiled with a loss; expected "
            "`model.compile(optimizer=\"adam\", loss=\"sparse_categorical_crossentropy\", "
            "metrics=[\"accuracy\"])` before `return model`.",
            expected="a compiled model", found="no loss")
    name, _ = loss_of(description)
    if "categorical_crossentropy" not in name.lower():
        raise CheckFailed(
            f"The model is compiled with loss `{name}`; expected a categorical cross-entropy "
            "for 10 classes with integer labels: `\"sparse_categorical_crossentropy\"` or "
            "`keras.losses.SparseCategoricalCrossentropy()`.",
            expected="sparse_categorical_crossentropy", found=name)


def require_activation_matches_loss(description):
    """Softmax output with from_logits=False, or a linear (logits) output with from_logits=True."""
    activation = output_activation(description)
    _, from_logits = loss_of(description)
    if activation == "softmax" and not from_logits:
        return
    if activation == "linear" and from_logits:
        return
    if activation == "softmax":
        raise CheckFailed(
            "The output layer applies softmax and the loss is built with from_logits=True, so "
            "softmax is applied twice and the model learns slowly. Either drop the output "
            "activation (logits) or build the loss with from_logits=False.",
            expected=BOTH_CONVENTIONS, found="softmax with from_logits=True")
    if activation == "linear":
        raise CheckFailed(
            "The output layer has no activation (it outputs logits) but the loss treats the "
            "outputs as probabilities (from_logits=False). Build the loss with "
            "`keras.losses.SparseCategoricalCrossentropy(from_logits=True)`, or use "
            "`activation=\"softmax\"` on the output layer.",
            expected=BOTH_CONVENTIONS, found="logits with from_logits=False")
    raise CheckFailed(
        f"The output layer uses activation `{activation}`; expected `softmax` (10 class "
        "probabilities), or no activation (logits) with a loss built with from_logits=True.",
        expected="softmax, or logits with from_logits=True", found=str(activation))


def require_model_scores_images(student, image_shape):
    """The global `model` maps a batch of ``image_shape`` images to 10 finite scores each."""
    if not student.has("model"):
        raise CheckFailed("No variable `model` in your notebook. Q3 asks for "
                          "`model = build_model()` trained with `model.fit`; run every cell "
                          "from the top.")
    images = np.zeros((3, *image_shape), dtype=np.float32)
    images[1] = 1.0
    images[2, 7:21, 13:15] = 1.0  # a white vertical stroke, roughly a "1"
    what = f"model.predict(3 images of shape {image_shape})"
    scores = student.evaluate("result = ns['model'].predict(x, verbose=0)", x=images, what=what)
    scores = assert_shape(scores, (3, CLASSES), what=what,
                          fix="The model must return one score per digit 0-9 for each image.")
    if not np.all(np.isfinite(scores)):
        raise CheckFailed(f"`{what}` contains NaN or infinite scores; expected finite numbers. "
                          "Check that training did not diverge (scale the pixels to [0, 1]).")


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
    band = expected.band("test_accuracy")
    try:
        metric = assert_in_band(
            accuracy, band, what="The accuracy of `model` on held-out images",
            fix="Scale the pixels to [0, 1], train for the epochs Q3 asks, and check the output "
                "activation and the loss (from_logits) go together.")
    except CheckFailed as failure:
        if failure.metric is not None:
            failure.metric = {**failure.metric, "perturbation_seed": seed,
                              "holdout_size": len(labels)}
        raise
    return flag_for_review({**metric, "perturbation_seed": seed, "holdout_size": len(labels)},
                           band)
