"""The cnn practical: the reference and the fixture submissions, graded by the real engine.

Every notebook is graded once (module-scoped fixture, two at a time) with the default
seed; the tests then assert the exact set of checks each one loses and the text of the
failure messages. The fixtures are generated from the reference notebook by
``tests/fixtures/submissions/cnn/make_fixtures.py``; a fast test keeps them in sync.
"""


from grader.assignment import load_assignment
from grader.results import Status

from conftest import REPO
from practicals import Practical

NAME = "cnn"

ALL_CHECKS = {
    "q1.channel_axis", "q1.pixels_scaled", "q2.input_shape", "q2.conv_pool_dropout",
    "q2.output_shape", "q2.crossentropy_loss", "q2.output_activation_matches_loss",
    "q3.model_outputs_10_scores", "q3.test_accuracy",
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
        "q3.model_outputs_10_scores": "No variable `model` in your notebook",
        "q3.test_accuracy": "No variable `model` in your notebook",
    }),
    # fit raises (output rank 4 against integer labels), so `model` stays untrained.
    "mistake_missing_flatten": (Status.ERROR, {
        "q2.conv_pool_dropout": "there is no Flatten layer between the convolutional part "
                                "and the Dense layers",
        "q2.output_shape": "The model's output has shape (None, 5, 5, 10); expected (None, 10)",
        "q3.model_outputs_10_scores": "has shape (3, 5, 5, 10); expected (3, 10)",
        "q3.test_accuracy": "has shape (500, 5, 5, 10); expected (500, 10)",  # private holdout: 500
    }),
    # Keras notices the softmax and trains on its logits anyway (with a warning): only the
    # architecture check catches it.
    "mistake_softmax_with_from_logits": (Status.OK, {
        "q2.output_activation_matches_loss": "applies softmax and the loss is built with "
                                             "from_logits=True, so softmax is applied twice",
    }),
    "unanswered": (Status.ERROR, {
        "q1.channel_axis": "`x_train` has shape (4000, 28, 28); expected (N, 28, 28, 1)",
        "q1.pixels_scaled": "`x_train` has values from 0 to 255",
        "q2.input_shape": NOT_WRITTEN,
        "q2.conv_pool_dropout": NOT_WRITTEN,
        "q2.output_shape": NOT_WRITTEN,
        "q2.crossentropy_loss": NOT_WRITTEN,
        "q2.output_activation_matches_loss": NOT_WRITTEN,
        "q3.model_outputs_10_scores": "No variable `model` in your notebook",
        "q3.test_accuracy": "No variable `model` in your notebook",
    }),
}

PRACTICAL = Practical(
    NAME, EXPECTED, ALL_CHECKS, max_score=11, accuracy_check="q3.test_accuracy",
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
    assert sum(c.points for c in assignment.checks()) == 11
    assert [c.id for c in assignment.checks() if c.hidden] == ["q3.test_accuracy"]
