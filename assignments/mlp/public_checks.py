"""Public checks of the MLP practical (students have this file).

Every check asks the notebook's kernel for data (array summaries, a description of
the model ``build_model()`` returns, predictions on inputs written here) and judges
it in the grader. Hidden checks (the trained model's held-out accuracy) live with
the reference solution.
"""

import numpy as np

from grader.checks import check
from grader.compare import assert_shape
from grader.errors import CheckFailed

IMAGE_SHAPE = (28, 28)
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


# -- helpers ----------------------------------------------------------------------------
def array_summaries(student, names):
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


def describe(student):
    """The description of the model ``build_model()`` returns."""
    description = student.evaluate(DESCRIBE, what="build_model()")
    if description.get("missing"):
        raise CheckFailed("No function `build_model` in your notebook. Define "
                          "`def build_model():` as Q2 asks, and run every cell from the top.")
    if "not_a_model" in description:
        raise CheckFailed(f"`build_model()` returned a {description['not_a_model']}; expected a "
                          "compiled Keras model. Build the model inside `build_model()`, compile "
                          "it and end the function with `return model`.")
    return description


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


# -- Q1 ---------------------------------------------------------------------------------
@check("q1.pixels_scaled", points=2)
def check_pixels_scaled(student, expected):
    """`x_train` and `x_test` are (N, 28, 28) images with pixel values scaled to [0, 1]."""
    summaries = array_summaries(student, ("x_train", "x_test"))
    for name in ("x_train", "x_test"):
        found = summaries[name]
        shape = tuple(found["shape"])
        if len(shape) != 3 or shape[1:] != IMAGE_SHAPE:
            raise CheckFailed(
                f"`{name}` has shape {shape}; expected (N, 28, 28). Only scale the pixels in "
                "Q1: keep every image 28x28 (the model's Flatten layer does the reshaping).",
                expected="(N, 28, 28)", found=str(shape))
        low, high = found["min"], found["max"]
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


# -- Q2 ---------------------------------------------------------------------------------
@check("q2.input_shape", points=1)
def check_input_shape(student, expected):
    """`build_model()` takes images of shape (28, 28)."""
    found = describe(student).get("input_shape")
    if found is None:
        raise CheckFailed(
            "The model `build_model()` returns has no input shape yet; expected inputs of shape "
            "(None, 28, 28). Start the model with `keras.Input(shape=(28, 28))`.",
            expected="(None, 28, 28)", found="no input shape")
    if list(found) != [None, *IMAGE_SHAPE]:
        raise CheckFailed(
            f"The model `build_model()` returns takes inputs of shape {shape_text(found)}; "
            "expected (None, 28, 28): a batch of 28x28 images. Use "
            "`keras.Input(shape=(28, 28))` and let a Flatten layer do the reshaping.",
            expected="(None, 28, 28)", found=shape_text(found))


@check("q2.flatten_and_hidden_dense", points=1)
def check_flatten_and_hidden_dense(student, expected):
    """The model flattens the image, then has at least one hidden Dense layer with ReLU."""
    description = describe(student)
    classes = layer_classes(description)
    listing = "[" + ", ".join(classes) + "]"
    if "Flatten" not in classes:
        raise CheckFailed(
            f"The model's layers are {listing}: there is no Flatten layer. Without it the Dense "
            "layers act on each row of the 28x28 image separately. Add `layers.Flatten()` right "
            "after the input.", expected="a Flatten layer", found=listing)
    if "Dense" in classes and classes.index("Dense") < classes.index("Flatten"):
        raise CheckFailed(
            f"The model's layers are {listing}: a Dense layer comes before the Flatten layer. "
            "Put `layers.Flatten()` first, right after the input.",
            expected="Flatten before the Dense layers", found=listing)
    dense = [layer for layer in description["layers"] if layer["class"] == "Dense"]
    hidden = dense[:-1]
    if not hidden:
        raise CheckFailed(
            f"The model's layers are {listing}: no hidden Dense layer before the output layer. "
            "Add at least one `layers.Dense(units, activation=\"relu\")` between Flatten and "
            "the output layer.", expected="a hidden Dense layer", found=listing)
    if not any(layer.get("activation") == "relu" for layer in hidden):
        found = ", ".join(str(layer.get("activation")) for layer in hidden)
        raise CheckFailed(
            f"The hidden Dense layers use activation(s) {found}; expected `relu`. Without a "
            "non-linear activation the hidden layers add nothing. Use "
            "`layers.Dense(units, activation=\"relu\")`.", expected="relu", found=found)


@check("q2.output_shape", points=1)
def check_output_shape(student, expected):
    """The model outputs 10 scores per image: shape (None, 10)."""
    description = describe(student)
    found = output_shape(description)
    if found is None:
        raise CheckFailed(
            "The model `build_model()` returns has no output shape yet (it was never built). "
            "Start it with `keras.Input(shape=(28, 28))` so Keras knows the input shape.",
            expected="(None, 10)", found="no output shape")
    if list(found) != [None, CLASSES]:
        hint = ("Flatten the image before the Dense layers. " if len(found) > 2 else "")
        raise CheckFailed(
            f"The model's output has shape {shape_text(found)}; expected (None, 10): one score "
            f"per digit 0-9. {hint}End the model with `layers.Dense(10, ...)`.",
            expected="(None, 10)", found=shape_text(found))


@check("q2.crossentropy_loss", points=1)
def check_crossentropy_loss(student, expected):
    """The model is compiled with a categorical cross-entropy loss."""
    description = describe(student)
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


@check("q2.output_activation_matches_loss", points=1)
def check_output_activation_matches_loss(student, expected):
    """Softmax output with from_logits=False, or a linear (logits) output with from_logits=True."""
    description = describe(student)
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
            expected="softmax with from_logits=False, or logits with from_logits=True",
            found="softmax with from_logits=True")
    if activation == "linear":
        raise CheckFailed(
            "The output layer has no activation (it outputs logits) but the loss treats the "
            "outputs as probabilities (from_logits=False). Build the loss with "
            "`keras.losses.SparseCategoricalCrossentropy(from_logits=True)`, or use "
            "`activation=\"softmax\"` on the output layer.",
            expected="softmax with from_logits=False, or logits with from_logits=True",
            found="logits with from_logits=False")
    raise CheckFailed(
        f"The output layer uses activation `{activation}`; expected `softmax` (10 class "
        "probabilities), or no activation (logits) with a loss built with from_logits=True.",
        expected="softmax, or logits with from_logits=True", found=str(activation))


# -- Q3 ---------------------------------------------------------------------------------
@check("q3.model_outputs_10_scores", points=1)
def check_model_outputs_10_scores(student, expected):
    """The global `model` maps a batch of (28, 28) images to 10 finite scores each."""
    if not student.has("model"):
        raise CheckFailed("No variable `model` in your notebook. Q3 asks for "
                          "`model = build_model()` trained with `model.fit`; run every cell "
                          "from the top.")
    images = np.zeros((3, *IMAGE_SHAPE), dtype=np.float32)
    images[1] = 1.0
    images[2, 7:21, 13:15] = 1.0  # a white vertical stroke, roughly a "1"
    what = "model.predict(3 images of shape (28, 28))"
    scores = student.evaluate("result = ns['model'].predict(x, verbose=0)", x=images, what=what)
    scores = assert_shape(scores, (3, CLASSES), what=what,
                          fix="The model must return one score per digit 0-9 for each image.")
    if not np.all(np.isfinite(scores)):
        raise CheckFailed(f"`{what}` contains NaN or infinite scores; expected finite numbers. "
                          "Check that training did not diverge (scale the pixels to [0, 1]).")
