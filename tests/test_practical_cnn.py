"""The cnn practical: the reference and the fixture submissions, graded by the real engine.

Every notebook is graded once (module-scoped fixture, two at a time) with the default
seed; the tests then assert the exact set of checks each one loses and the text of the
failure messages. The fixtures are generated from the reference notebook by
``tests/fixtures/submissions/cnn/make_fixtures.py``; a fast test keeps them in sync.
"""

import pytest

from grader.assignment import load_assignment
from grader.results import Status

from conftest import REPO
from practicals import Practical

NAME = "cnn"

ALL_CHECKS = {
    "q1.channel_axis", "q1.pixels_scaled", "q2.input_shape", "q2.conv_pool_dropout",
    "q2.output_shape", "q2.crossentropy_loss", "q2.output_activation_matches_loss",
    "q2.adam_and_accuracy_metric", "q3.model_outputs_10_scores",
    "q3.trained_on_training_images", "q3.test_accuracy",
}
NOT_WRITTEN = "`build_model` is not written yet: it still raises NotImplementedError"
INCOMPATIBLE = ("Calling `build_model()` raised ValueError: Input 0 with name 'None' of layer "
                "'conv2d")

# notebook -> (status, {check id that fails: text its message must contain})
EXPECTED = {
    "reference": (Status.OK, {}),
    "alt_functional_api": (Status.OK, {}),
    "alt_from_logits": (Status.OK, {}),
    # Trained on raw 0-255 pixels, the CNN does badly on the scaled held-out images
    # (0.28-0.68 over seeds, band low 0.85).
    "mistake_pixels_not_scaled": (Status.OK, {
        "q1.pixels_scaled": "`x_train` has values from 0 to 255; expected pixel values "
                            "scaled to [0, 1]. Divide the raw pixels by 255.0",
        "q3.test_accuracy": "The accuracy of `model` on held-out images is",
    }),
    # Keras adds the missing channel axis itself in fit, so the model trains fine.
    "mistake_no_channel_axis": (Status.OK, {
        "q1.channel_axis": "`x_train` has shape (4000, 28, 28); expected (N, 28, 28, 1): "
                           "Conv2D layers expect a channel axis. Add a channel axis",
    }),
    # build_model() raises, so the model cell fails and `model` is never defined.
    "mistake_input_without_channel": (Status.ERROR, {
        "q2.input_shape": INCOMPATIBLE,
        "q2.conv_pool_dropout": INCOMPATIBLE,
        "q2.output_shape": INCOMPATIBLE,
        "q2.crossentropy_loss": INCOMPATIBLE,
        "q2.output_activation_matches_loss": INCOMPATIBLE,
        "q2.adam_and_accuracy_metric": INCOMPATIBLE,
        "q3.model_outputs_10_scores": "No variable `model` in your notebook",
        "q3.trained_on_training_images": "No variable(s) model in your notebook",
        "q3.test_accuracy": "No variable `model` in your notebook",
    }),
    # fit raises (output rank 4 against integer labels), so `model` stays untrained. The
    # (3, 5, 5, 10) scores `model` gives are Q2's mistake: q3.model_outputs_10_scores does
    # not charge it again.
    "mistake_missing_flatten": (Status.ERROR, {
        "q2.conv_pool_dropout": "there is no Flatten layer between the convolutional part "
                                "and the Dense layers",
        "q2.output_shape": "The model's output has shape (None, 5, 5, 10); expected (None, 10)",
        "q3.test_accuracy": "has shape (500, 5, 5, 10); expected (500, 10)",  # private holdout: 500
    }),
    # Keras notices the softmax and trains on its logits anyway (with a warning): only the
    # architecture check catches it.
    "mistake_softmax_with_from_logits": (Status.OK, {
        "q2.output_activation_matches_loss": "applies softmax and the loss is built with "
                                             "from_logits=True, so softmax is applied twice",
    }),
    # -- issue 15: correct alternatives, full marks ----------------------------------------
    "alt_conv_block_helper": (Status.OK, {}),
    "alt_activation_layers": (Status.OK, {}),
    "alt_two_convolutions_one_pool": (Status.OK, {}),
    "alt_functional_relu_layers_logits": (Status.OK, {}),
    "alt_expand_dims_validation_on_test": (Status.OK, {}),
    # -- issue 15: typical mistakes, each charged once, in its question ----------------------
    # Max pooling and the dense head keep the model non-linear: it still trains well.
    "mistake_conv_without_activation": (Status.OK, {
        "q2.conv_pool_dropout": "the convolution(s) Conv2D(linear), Conv2D(linear) have no "
                                "relu activation",
    }),
    # fit raises on integer labels, so `model` stays untrained (the held-out accuracy, a
    # measurement of the trained model, fails too).
    "mistake_categorical_crossentropy": (Status.ERROR, {
        "q2.crossentropy_loss": "computing it on a batch with integer labels 0-9 (as "
                                "`y_train` holds) raised ValueError",
        "q3.test_accuracy": "The accuracy of `model` on held-out images is",
    }),
    # The notebook's own evaluate cell raises (it unpacks loss and accuracy).
    "mistake_no_accuracy_metric": (Status.ERROR, {
        "q2.adam_and_accuracy_metric": "its metrics (none) measure no accuracy of integer "
                                       "labels: Q2 asks for `metrics=[\"accuracy\"]`",
    }),
    "mistake_no_dropout": (Status.OK, {
        "q2.conv_pool_dropout": "expected also a `layers.Dropout(rate)` layer",
    }),
    # The held-out images are the test images it was fitted on: only the public check sees it.
    # Fitted on the 500 dev images: after 3 epochs on so few images this CNN does not know
    # them clearly better than the training images, so the public check cannot tell; the
    # private holdout does (the model is much worse there).
    "mistake_fit_on_test_images": (Status.OK, {
        "q3.test_accuracy": "The accuracy of `model` on held-out images is",
    }),
    "unanswered": (Status.ERROR, {
        "q1.channel_axis": "`x_train` has shape (4000, 28, 28); expected (N, 28, 28, 1)",
        "q1.pixels_scaled": "`x_train` has values from 0 to 255",
        "q2.input_shape": NOT_WRITTEN,
        "q2.conv_pool_dropout": NOT_WRITTEN,
        "q2.output_shape": NOT_WRITTEN,
        "q2.crossentropy_loss": NOT_WRITTEN,
        "q2.output_activation_matches_loss": NOT_WRITTEN,
        "q2.adam_and_accuracy_metric": NOT_WRITTEN,
        "q3.model_outputs_10_scores": "No variable `model` in your notebook",
        "q3.trained_on_training_images": "No variable(s) model in your notebook",
        "q3.test_accuracy": "No variable `model` in your notebook",
    }),
}

PRACTICAL = Practical(
    NAME, EXPECTED, ALL_CHECKS, max_score=13, accuracy_check="q3.test_accuracy",
    failed_accuracy=("mistake_pixels_not_scaled", 0.75,
                     "Hint: Train the global `model` as Q3 asks"),
)
# The tests every practical has: see tests/practicals.py.
(graded, test_fixtures_are_in_sync_with_the_reference,
 test_notebook_loses_exactly_the_expected_checks, test_reference_gets_full_marks_and_runs_fast,
 test_failed_accuracy_reports_the_metric) = PRACTICAL.tests()


def test_checks_are_the_ones_these_tests_know():
    assignment = load_assignment(NAME, REPO)
    assert {c.id for c in assignment.checks()} == ALL_CHECKS
    assert sum(c.points for c in assignment.checks()) == 13
    assert [c.id for c in assignment.checks() if c.hidden] == ["q3.test_accuracy"]


def q2_failures(build_model, tmp_path):
    """check id -> message of each Q2 check ``build_model`` fails, checked in-process."""
    from grader.checks import run_checks
    from grader.probe import InProcessTransport, Student

    checks = [c for c in load_assignment(NAME, REPO).checks(public_only=True)
              if c.question == "q2"]
    student = Student(InProcessTransport({"build_model": build_model}), tmp_path)
    return {r.id: r.message for r in run_checks(checks, student, None) if not r.passed}


def _model(make_layers, loss="sparse_categorical_crossentropy"):
    import keras

    def build_model():
        model = keras.Sequential([keras.Input(shape=(28, 28, 1)), *make_layers()])
        model.compile(optimizer="adam", loss=loss, metrics=["accuracy"])
        return model
    return build_model


def _variants():
    pytest.importorskip("tensorflow")
    import keras
    from keras import layers as L

    def block(filters):
        return keras.Sequential([L.Conv2D(filters, 3, padding="same"), L.BatchNormalization(),
                                 L.ReLU(), L.MaxPooling2D()])

    return {
        # correct: full marks on Q2
        "global average pooling head": (_model(lambda: [
            L.Conv2D(16, 3, activation="relu"), L.MaxPooling2D(),
            L.Conv2D(32, 3, activation="relu"), L.GlobalAveragePooling2D(), L.Dropout(0.2),
            L.Dense(10, activation="softmax")]), {}),
        "nested blocks": (_model(lambda: [block(8), block(16), L.Flatten(), L.Dropout(0.2),
                                          L.Dense(10, activation="softmax")]), {}),
        "conv then ReLU through BatchNormalization": (_model(lambda: [
            L.Conv2D(8, 3), L.BatchNormalization(), L.Activation("relu"), L.MaxPooling2D(),
            L.Flatten(), L.Dropout(0.2), L.Dense(10), L.Softmax()]), {}),
        "strides and padding same, SpatialDropout2D": (_model(lambda: [
            L.Conv2D(8, 5, strides=2, padding="same", activation="relu"),
            L.AveragePooling2D(2), L.SpatialDropout2D(0.1), L.Flatten(),
            L.Dense(10, activation="softmax")]), {}),
        # mistakes: one Q2 check each
        "convolution without activation in a block": (_model(lambda: [
            keras.Sequential([L.Conv2D(8, 3), L.MaxPooling2D()]), L.Flatten(), L.Dropout(0.2),
            L.Dense(10, activation="softmax")]),
            {"q2.conv_pool_dropout": "Conv2D(linear) have no relu activation"}),
        "no pooling": (_model(lambda: [
            L.Conv2D(8, 3, activation="relu"), L.Flatten(), L.Dropout(0.2),
            L.Dense(10, activation="softmax")]),
            {"q2.conv_pool_dropout": "a pooling layer after the convolution"}),
        "categorical_crossentropy": (_model(lambda: [
            L.Conv2D(8, 3, activation="relu"), L.MaxPooling2D(), L.Flatten(), L.Dropout(0.2),
            L.Dense(10, activation="softmax")], loss="categorical_crossentropy"),
            {"q2.crossentropy_loss": "raised ValueError"}),
    }


@pytest.mark.parametrize("variant", [
    "global average pooling head", "nested blocks", "conv then ReLU through BatchNormalization",
    "strides and padding same, SpatialDropout2D", "convolution without activation in a block",
    "no pooling", "categorical_crossentropy"])
def test_q2_judges_what_the_model_computes(variant, tmp_path):
    """What Q2's text allows passes however it is spelt; each mistake costs one Q2 check
    (checked in-process, no kernel)."""
    build_model, expected = _variants()[variant]
    failed = q2_failures(build_model, tmp_path)
    assert set(failed) == set(expected), failed
    for check_id, text in expected.items():
        assert text in failed[check_id], failed[check_id]
