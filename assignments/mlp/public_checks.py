"""Public checks of the MLP practical (students have this file).

Every check asks the notebook's kernel for data (array summaries, a description of
the model ``build_model()`` returns, predictions on inputs written here) and judges
it in the grader. Hidden checks (the trained model's held-out accuracy) live with
the reference solution.
"""

from grader.checks import check
from grader.errors import CheckFailed
from grader.keras_checks import (RELU_FAMILY, array_summaries, behaviour, describe, is_flatten,
                                 layer_listing, nonlinearity, outputs_are_probabilities,
                                 require_10_outputs, require_activation_matches_loss,
                                 require_adam_and_accuracy, require_crossentropy_loss,
                                 require_input_shape, require_model_scores_images,
                                 require_pixels_scaled, require_trained_on_training_images)

IMAGE_SHAPE = (28, 28)


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
        require_pixels_scaled(name, low, high)


# -- Q2 ---------------------------------------------------------------------------------
@check("q2.input_shape", points=1)
def check_input_shape(student, expected):
    """`build_model()` takes images of shape (28, 28)."""
    require_input_shape(describe(student), IMAGE_SHAPE, batch="a batch of 28x28 images",
                        advice=" and let a Flatten layer do the reshaping")


@check("q2.flatten_and_hidden_dense", points=1)
def check_flatten_and_hidden_dense(student, expected):
    """The model flattens the image, then has at least one hidden Dense layer with ReLU."""
    description = describe(student)
    layers = [layer for layer in description["layers"] if layer["class"] != "InputLayer"]
    listing = layer_listing(description)
    flatten = [i for i, layer in enumerate(layers) if is_flatten(layer)]
    dense = [i for i, layer in enumerate(layers) if layer["class"] == "Dense"]
    if not flatten:
        raise CheckFailed(
            f"The model's layers are {listing}: there is no Flatten layer. Without it the Dense "
            "layers act on each row of the 28x28 image separately. Add `layers.Flatten()` right "
            "after the input.", expected="a Flatten layer", found=listing)
    if dense and dense[0] < flatten[0]:
        raise CheckFailed(
            f"The model's layers are {listing}: a Dense layer comes before the Flatten layer. "
            "Put `layers.Flatten()` first, right after the input.",
            expected="Flatten before the Dense layers", found=listing)
    hidden = [layers[i] for i in dense[:-1]]
    if not hidden:
        raise CheckFailed(
            f"The model's layers are {listing}: no hidden Dense layer before the output layer. "
            "Add at least one `layers.Dense(units, activation=\"relu\")` between Flatten and "
            "the output layer.", expected="a hidden Dense layer", found=listing)
    measured = behaviour(description)
    outputs = measured.get("outputs") or {}
    activations = [str(layer.get("activation")) for layer in hidden]
    if len(outputs) == 4 and outputs["a"].ndim == 2:
        # Measured, not read: an affine model has no working hidden non-linearity however
        # its layers are spelt (a Lambda or a custom layer can apply relu too).
        linear = nonlinearity(outputs, outputs_are_probabilities(outputs["a"])) < 1e-3
        if linear:
            raise CheckFailed(
                f"The model's layers are {listing}: the model computes an affine function of "
                "its input (measured: f(a + b) - f(a) - f(b) + f(0) = 0), so the hidden layers "
                "add nothing a single Dense layer could not do. Give the hidden Dense layers "
                "`activation=\"relu\"` (or follow them with `layers.ReLU()`).",
                expected="a hidden Dense layer with relu", found=listing)
        if all(name == "linear" for name in activations):
            return  # non-linear by measurement, through a layer we cannot name
    if not any(name in RELU_FAMILY for name in activations):
        raise CheckFailed(
            f"The hidden Dense layers use activation(s) {', '.join(activations)}; Q2 asks for "
            "`relu`. Use `layers.Dense(units, activation=\"relu\")`.",
            expected="relu", found=", ".join(activations))


@check("q2.output_shape", points=1)
def check_output_shape(student, expected):
    """The model outputs 10 scores per image: shape (None, 10)."""
    require_10_outputs(describe(student), IMAGE_SHAPE,
                       flatten_hint="Flatten the image before the Dense layers. ")


@check("q2.crossentropy_loss", points=1)
def check_crossentropy_loss(student, expected):
    """The model is compiled with a categorical cross-entropy loss."""
    require_crossentropy_loss(describe(student))


@check("q2.output_activation_matches_loss", points=1)
def check_output_activation_matches_loss(student, expected):
    """Softmax output with from_logits=False, or a linear (logits) output with from_logits=True."""
    require_activation_matches_loss(describe(student))


@check("q2.adam_and_accuracy_metric", points=1)
def check_adam_and_accuracy_metric(student, expected):
    """The model is compiled with the Adam optimizer and `metrics=["accuracy"]`."""
    require_adam_and_accuracy(describe(student))


# -- Q3 ---------------------------------------------------------------------------------
@check("q3.model_outputs_10_scores", points=1)
def check_model_outputs_10_scores(student, expected):
    """The global `model` maps a batch of (28, 28) images to 10 finite scores each."""
    require_model_scores_images(student, IMAGE_SHAPE)


@check("q3.trained_on_training_images", points=1)
def check_trained_on_training_images(student, expected):
    """`model` was trained on `x_train`, not on the test images."""
    require_trained_on_training_images(student)
