"""The linear_softmax practical: the reference and the fixture submissions, graded by the real engine.

Every notebook is graded once (module-scoped fixture, two at a time) with the default
seed; the tests then assert the exact set of checks each one loses and the text of the
failure messages. The fixtures are generated from the reference notebook by
``tests/fixtures/submissions/linear_softmax/make_fixtures.py``; a fast test keeps them in sync.
"""


from grader.assignment import load_assignment
from grader.results import Status

from conftest import REPO
from practicals import Practical

NAME = "linear_softmax"

PUBLIC = ["q1.data_prepared", "q2.softmax_known_values", "q3.forward_uses_bias",
          "q4.cross_entropy_known_value", "q5.train_step_updates_in_place",
          "q5.gradients_from_tape", "q6.parameters_defined", "q6.trained_on_training_images"]
HIDDEN = ["q2.softmax_hidden_logits", "q2.softmax_large_logits", "q3.forward_hidden_inputs",
          "q4.cross_entropy_hidden_inputs", "q5.train_step_one_step", "q6.test_accuracy"]
ALL_CHECKS = set(PUBLIC) | set(HIDDEN)
LOW_ACCURACY = "The held-out accuracy of your trained W, b is"


def not_written(function):
    return f"`{function}` is not written yet: it still raises NotImplementedError"


# notebook -> (status, {check id that fails: text its message must contain})
EXPECTED = {
    "reference": (Status.OK, {}),
    "alt_tf_nn_softmax": (Status.OK, {}),
    "alt_tf_data_assign": (Status.OK, {}),
    # Columns sum to 1 instead of rows: everything downstream of softmax is wrong, and the
    # model still trains to 0.71 (below the band's 0.80). cross_entropy alone is intact.
    "mistake_softmax_wrong_axis": (Status.OK, {
        "q2.softmax_known_values": "`softmax(logits).sum(axis=1)` differs from the expected "
                                   "values",
        # (graded: the public Q3 and Q5 checks run on W, b drawn at grading time)
        "q3.forward_uses_bias": "`forward(zeros((3, 784)), W, b) with W and b drawn at grading "
                                "time` differs",
        "q5.train_step_updates_in_place": "`the loss train_step returns (W, b drawn at grading "
                                          "time)` differs",
        "q2.softmax_hidden_logits": "Hint: softmax must normalise each row (axis=-1)",
        "q2.softmax_large_logits": "`softmax(large hidden logits)` differs",
        "q3.forward_hidden_inputs": "`forward(X, W, b)` differs",
        "q5.train_step_one_step": "`the loss train_step returns` differs",
        "q6.test_accuracy": LOW_ACCURACY,
    }),
    # exp(1000) = inf: only the large-logits check sees it; training logits stay small.
    "mistake_softmax_unstable": (Status.OK, {
        "q2.softmax_large_logits": "contains 34 NaN or infinite value(s); expected finite "
                                   "numbers. Look for a log of 0, a division by 0 or an "
                                   "overflowing exp. Hint: Subtract each row's maximum",
    }),
    # Trained on 0-255 pixels at learning rate 0.5, W is useless on scaled images (0.29).
    "mistake_pixels_not_scaled": (Status.OK, {
        "q1.data_prepared": "`X_train` has values from 0 to 255; expected pixel values scaled "
                            "to [0, 1]. Convert to float32 and divide by 255.",
        "q6.test_accuracy": LOW_ACCURACY,
    }),
    # The sum is N times the mean: the loss, the gradient step and, with steps 100 times
    # too large in training (batches of 100), the accuracy (0.64).
    "mistake_loss_sum_not_mean": (Status.OK, {
        "q4.cross_entropy_known_value": "Return the MEAN over the batch (not the sum)",
        "q5.train_step_updates_in_place": "`the loss train_step returns (W, b drawn at grading "
                                          "time)` differs",
        "q4.cross_entropy_hidden_inputs": "Hint: Average -sum(Y_true * log(Y_pred), axis=1) "
                                          "over the batch (the mean, not the sum).",
        "q5.train_step_one_step": "`the loss train_step returns` differs",
        "q6.test_accuracy": LOW_ACCURACY,
    }),
    # -- issue 15: correct alternatives, full marks ----------------------------------------
    "alt_persistent_tape": (Status.OK, {}),
    "alt_softmax_logsumexp": (Status.OK, {}),
    "alt_to_categorical": (Status.OK, {}),
    "alt_clipped_cross_entropy": (Status.OK, {}),
    "alt_shuffled_indices": (Status.OK, {}),
    # -- issue 15: typical mistakes ------------------------------------------------------------
    # The right numbers, but not from the tape: only the behavioural tape check sees it.
    "mistake_hand_derived_gradients": (Status.OK, {
        "q5.gradients_from_tape": "`train_step` made the same step as with the plain "
                                  "cross-entropy: its gradients do not come from the loss",
    }),
    # The held-out images are the test images it was trained on: only the public check sees it.
    # Trained on the 500 dev images instead of the 4,000 training images: the public check
    # sees it, and the model is also worse on the private holdout (both Q6).
    "mistake_trained_on_test_images": (Status.OK, {
        "q6.trained_on_training_images": "They look trained on the test images",
        "q6.test_accuracy": "The held-out accuracy of your trained W, b is",
    }),
    # Both Q5 value checks see the loss from after the step; the step itself is right.
    "mistake_loss_after_update": (Status.OK, {
        "q5.train_step_updates_in_place": "Return cross_entropy(Y, forward(X, W, b)), "
                                          "computed before the update",
        "q5.train_step_one_step": "`the loss train_step returns` differs",
    }),
    # W follows the tape's gradient (so q5.gradients_from_tape passes); b never moves. The
    # model without a trained bias still reaches the band (0.885).
    "mistake_bias_not_updated": (Status.OK, {
        "q5.train_step_updates_in_place": "`b after one train_step (learning_rate ",  # drawn
        "q5.train_step_one_step": "`b after one train_step` differs",
    }),
    # Images and labels shuffled with different permutations: W, b learn noise (0.14).
    "mistake_labels_shuffled_separately": (Status.OK, {
        "q6.test_accuracy": LOW_ACCURACY,
    }),
    "unanswered": (Status.ERROR, {
        "q1.data_prepared": "No variable or function `X_train` in your notebook",
        "q2.softmax_known_values": not_written("softmax"),
        "q3.forward_uses_bias": not_written("forward"),
        "q4.cross_entropy_known_value": not_written("cross_entropy"),
        "q5.train_step_updates_in_place": not_written("train_step"),
        "q5.gradients_from_tape": not_written("train_step"),
        "q6.parameters_defined": "No variable or function `W` in your notebook",
        "q6.trained_on_training_images": "No variable(s) X_train, X_test, W, b in your notebook",
        "q2.softmax_hidden_logits": not_written("softmax"),
        "q2.softmax_large_logits": not_written("softmax"),
        "q3.forward_hidden_inputs": not_written("forward"),
        "q4.cross_entropy_hidden_inputs": not_written("cross_entropy"),
        "q5.train_step_one_step": not_written("train_step"),
        "q6.test_accuracy": "No variable or function `W` in your notebook",
    }),
}


PRACTICAL = Practical(
    NAME, EXPECTED, ALL_CHECKS, max_score=17, accuracy_check="q6.test_accuracy",
    failed_accuracy=("mistake_pixels_not_scaled", 0.5,
                     "Hint: Train W and b (zeros at the start)"),
)
# The tests every practical has: see tests/practicals.py.
(graded, test_fixtures_are_in_sync_with_the_reference,
 test_notebook_loses_exactly_the_expected_checks, test_reference_gets_full_marks_and_runs_fast,
 test_failed_accuracy_reports_the_metric) = PRACTICAL.tests()


def test_checks_are_the_ones_these_tests_know():
    assignment = load_assignment(NAME, REPO)
    assert [c.id for c in assignment.checks() if not c.hidden] == PUBLIC
    assert [c.id for c in assignment.checks() if c.hidden] == HIDDEN
    assert sum(c.points for c in assignment.checks()) == 17
    assert all(c.hint for c in assignment.checks() if c.hidden)
