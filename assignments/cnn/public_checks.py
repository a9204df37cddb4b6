"""Public checks of the CNN practical (students have this file).

Every check asks the notebook's kernel for data (array summaries, a description of
the model ``build_model()`` returns, predictions on inputs written here) and judges
it in the grader. Hidden checks (the trained model's held-out accuracy) live with
the reference solution.
"""

from grader.checks import check
from grader.errors import CheckFailed
from grader.keras_checks import (RELU_FAMILY, array_summaries, describe, is_flatten,
                                 layer_listing, require_10_outputs,
                                 require_activation_matches_loss, require_adam_and_accuracy,
                                 require_crossentropy_loss, require_input_shape,
                                 require_model_scores_images, require_pixels_scaled,
                                 require_trained_on_training_images)

IMAGE_SHAPE = (28, 28, 1)


# -- Q1 ---------------------------------------------------------------------------------
@check("q1.channel_axis", points=1)
def check_channel_axis(student, expected):
    """`x_train` and `x_test` have a channel axis: shape (N, 28, 28, 1)."""
    summaries = array_summaries(student, ("x_train", "x_test"))
    for name in ("x_train", "x_test"):
        shape = tuple(summaries[name]["shape"])
        if len(shape) != 4 or shape[1:] != IMAGE_SHAPE:
            fix = (f"Add a channel axis of size 1 at the end: `{name} = {name}[..., np.newaxis]`."
                   if shape[1:] == IMAGE_SHAPE[:2] else
                   "Keep every image 28x28 and add one channel axis at the end "
                   f"(`{name}[..., np.newaxis]`).")
            raise CheckFailed(f"`{name}` has shape {shape}; expected (N, 28, 28, 1): Conv2D "
                              f"layers expect a channel axis. {fix}",
                              expected="(N, 28, 28, 1)", found=str(shape))


@check("q1.pixels_scaled", points=2)
def check_pixels_scaled(student, expected):
    """`x_train` and `x_test` hold pixel values scaled to [0, 1]."""
    summaries = array_summaries(student, ("x_train", "x_test"))
    for name in ("x_train", "x_test"):
        low, high = summaries[name]["min"], summaries[name]["max"]
        require_pixels_scaled(name, low, high)


# -- Q2 ---------------------------------------------------------------------------------
@check("q2.input_shape", points=1)
def check_input_shape(student, expected):
    """`build_model()` takes images of shape (28, 28, 1)."""
    require_input_shape(describe(student), IMAGE_SHAPE,
                        batch="a batch of 28x28 images with one grey-scale channel", advice="")


@check("q2.conv_pool_dropout", points=1)
def check_conv_pool_dropout(student, expected):
    """Conv2D layers with ReLU, a pooling layer after them, Dropout, and a Flatten (or global
    pooling) before the Dense head."""
    description = describe(student)
    layers = [layer for layer in description["layers"] if layer["class"] != "InputLayer"]
    classes = [layer["class"] for layer in layers]
    listing = layer_listing(description)
    convolutions = [i for i, name in enumerate(classes) if name.endswith("Conv2D")]
    missing = []
    if not convolutions:
        missing.append("a `layers.Conv2D(filters, kernel_size=3, activation=\"relu\")` layer")
    elif not any("Pooling" in name and not name.startswith("Global")
                 for name in classes[convolutions[0]:]):
        missing.append("a pooling layer after the convolution (`layers.MaxPooling2D()`)")
    if not any("Dropout" in name for name in classes):
        missing.append("a `layers.Dropout(rate)` layer (for example before the dense head)")
    if missing:
        raise CheckFailed(f"The model's layers are {listing}; expected also "
                          + "; ".join(missing) + ". Add the missing layer(s) to `build_model()`.",
                          expected="Conv2D, a pooling layer and Dropout", found=listing)
    linear = [layers[i] for i in convolutions if layers[i].get("activation") not in RELU_FAMILY]
    if linear:
        found = ", ".join(f"{layer['class']}({layer.get('activation')})" for layer in linear)
        raise CheckFailed(
            f"The model's layers are {listing}: the convolution(s) {found} have no relu "
            "activation; Q2 asks for Conv2D layers with `relu` (without it a convolution is "
            "linear and stacking them adds little). Use `layers.Conv2D(filters, kernel_size=3, "
            "activation=\"relu\")`, or follow the convolution with `layers.ReLU()`.",
            expected="Conv2D layers with relu", found=found)
    flatten = [i for i, layer in enumerate(layers)
               if is_flatten(layer) or layer["class"].startswith("Global")]
    dense = [i for i, name in enumerate(classes) if name == "Dense"]
    if not dense:
        raise CheckFailed(f"The model's layers are {listing}: no Dense layer. End the model "
                          "with a dense head, at least `layers.Dense(10, ...)`.",
                          expected="a Dense output layer", found=listing)
    if not flatten or flatten[0] > dense[0]:
        raise CheckFailed(
            f"The model's layers are {listing}: there is no Flatten layer between the "
            "convolutional part and the Dense layers, so the Dense layers act on every pixel "
            "position separately and the model does not output one score per digit. Add "
            "`layers.Flatten()` after the last pooling layer.",
            expected="Flatten before the Dense head", found=listing)


@check("q2.output_shape", points=1)
def check_output_shape(student, expected):
    """The model outputs 10 scores per image: shape (None, 10)."""
    require_10_outputs(describe(student), IMAGE_SHAPE,
                       flatten_hint="Flatten the feature maps before the Dense head. ")


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
    """The global `model` maps a batch of (28, 28, 1) images to 10 finite scores each."""
    require_model_scores_images(student, IMAGE_SHAPE)


@check("q3.trained_on_training_images", points=1)
def check_trained_on_training_images(student, expected):
    """`model` was trained on `x_train`, not on the test images."""
    require_trained_on_training_images(student)
