"""The custom_train_step practical: the reference and the fixture submissions, graded by the real engine.

Every notebook is graded once (module-scoped fixture, two at a time) with the default
seed; the tests then assert the exact set of checks each one loses and the text of the
failure messages. The fixtures are generated from the reference notebook by
``tests/fixtures/submissions/custom_train_step/make_fixtures.py``; a fast test keeps them in sync.
"""


from grader.assignment import load_assignment
from grader.results import Status

from conftest import REPO
from practicals import Practical

NAME = "custom_train_step"

PUBLIC = ["q1.train_step_updates_weights", "q1.test_step_changes_nothing", "q2.architecture",
          "q3.model_trained"]
HIDDEN = ["q1.train_step_one_step", "q1.logs_running_mean", "q1.test_step_exact",
          "q3.test_accuracy"]
ALL_CHECKS = set(PUBLIC) | set(HIDDEN)


def not_written(function):
    return f"`{function}` is not written yet: it still raises NotImplementedError"


# notebook -> (status, {check id that fails: text its message must contain})
EXPECTED = {
    "reference": (Status.OK, {}),
    # A loss function instead of compute_loss, and optimizer.apply instead of apply_gradients.
    "alt_loss_function_apply": (Status.OK, {}),
    # Layers created in __init__ with call(): same weights in the same order.
    "alt_subclassed_layers": (Status.OK, {}),
    # Keras 3 tracks metrics assigned as attributes (self.loss_tracker = ...) by itself: the
    # default `metrics` property already lists them and reset_metrics() resets them, so
    # leaving the property out changes nothing a check can see.
    "alt_no_metrics_property": (Status.OK, {}),
    # BatchNormalization runs in inference mode while training: different loss and
    # gradients, moving averages never updated. It still trains to 0.90, inside the band.
    "mistake_training_flag_missing": (Status.OK, {
        "q1.train_step_updates_weights": "the BatchNormalization moving mean and variance did "
                                         "not change; expected them to be updated, which "
                                         "happens only in training mode",
        "q1.train_step_one_step": "`logs['loss'] of train_step` differs",
        "q1.logs_running_mean": "`logs['loss'] of the second train_step` differs",
    }),
    "mistake_no_apply_gradients": (Status.OK, {
        "q1.train_step_updates_weights": "After one train_step these weights did not change: "
                                         "Dense(64) kernel, Dense(64) bias",
        "q3.model_trained": "Q3: `model` does not look trained",
        "q1.train_step_one_step": "`Dense(64) kernel after one train_step` differs",
        "q1.logs_running_mean": "`logs['loss'] of the second train_step` differs",
        "q3.test_accuracy": "The held-out accuracy of your trained model is",
    }),
    # Returning this batch's loss: identical after one step, wrong as a running mean.
    "mistake_logs_batch_loss": (Status.OK, {
        "q1.logs_running_mean": "Hint: Return each tracker's result() (the running mean since "
                                "the last reset), not this batch's loss",
    }),
    "mistake_test_step_training_true": (Status.OK, {
        "q1.test_step_changes_nothing": "test_step changed 2 of the model's 8 weight arrays; "
                                        "expected none to change",
        "q1.test_step_exact": "`logs['loss'] of test_step` differs",
    }),
    # -- issue 15: new alternatives (full marks) --------------------------------------------
    "alt_trainable_weights_indexing": (Status.OK, {}),
    "alt_loss_object_adam_string": (Status.OK, {}),  # optimizer="adam": Adam with lr 1e-3
    "alt_logs_from_metrics": (Status.OK, {}),
    "alt_unpack_layer_loop": (Status.OK, {}),
    "alt_forward_helper": (Status.OK, {}),
    # -- issue 15: new typical mistakes ------------------------------------------------------
    # "sgd" where the text names Adam(1e-3): Q2 says so. Plain SGD also trains to 0.86 in 5
    # epochs, under the band: the accuracy check's message points at Q1 and Q2 first.
    "mistake_sgd_optimizer": (Status.OK, {
        "q2.architecture": "Q2: build_model() compiles the model with the optimizer "
                           "SGD(learning_rate=0.01); expected Adam(learning_rate=1e-3)",
        "q3.test_accuracy": "Check Q1 and Q2 first",
    }),
    "mistake_accuracy_not_updated": (Status.OK, {
        "q1.train_step_one_step": "`logs['accuracy'] of train_step` differs",
        "q1.logs_running_mean": "`logs['accuracy'] of the second train_step` differs",
    }),
    # The loss is never tracked, so fit() logs 0: Q1's mistake, charged by Q1 only (Q3 judges
    # training by the trained model's loss, not by the logged one).
    "mistake_loss_not_tracked": (Status.OK, {
        "q1.train_step_one_step": "`logs['loss'] of train_step` differs",
        "q1.logs_running_mean": "`logs['loss'] of the second train_step` differs",
    }),
    "mistake_test_step_applies_gradients": (Status.OK, {
        "q1.test_step_changes_nothing": "test_step changed 6 of the model's 8 weight arrays",
        "q1.test_step_exact": "`Dense(64) kernel after test_step` differs",
    }),
    # The accuracy tracker is not in `metrics`, so reset_metrics() does not reset it.
    "mistake_metrics_property_incomplete": (Status.OK, {
        "q1.logs_running_mean": "`logs['accuracy'] of train_step after reset_metrics()` differs",
    }),
    # BatchNormalization(momentum=0.9): Q2 names it. The hidden exact step (which runs on the
    # student's build_model()) also sees the moving averages move differently.
    "mistake_batchnorm_momentum": (Status.OK, {
        # One mistake, one charge: the step checks build Q2's architecture themselves.
        "q2.architecture": "Q2: the BatchNormalization layer has {'momentum': 0.9}",
    }),
    "unanswered": (Status.ERROR, {
        "q1.train_step_updates_weights": "is not written yet: it still raises "
                                         "NotImplementedError",
        "q1.test_step_changes_nothing": "is not written yet: it still raises "
                                        "NotImplementedError",
        "q2.architecture": not_written("build_model"),
        "q3.model_trained": "No variable `model` in your notebook",
        "q1.train_step_one_step": "is not written yet: it still raises NotImplementedError",
        "q1.logs_running_mean": "is not written yet: it still raises NotImplementedError",
        "q1.test_step_exact": "is not written yet: it still raises NotImplementedError",
        "q3.test_accuracy": "No variable `model` in your notebook",
    }),
}


PRACTICAL = Practical(
    NAME, EXPECTED, ALL_CHECKS, max_score=11, accuracy_check="q3.test_accuracy",
    failed_accuracy=("mistake_no_apply_gradients", 0.5,
                     "Hint: Train model = build_model()"),
)
# The tests every practical has: see tests/practicals.py.
(graded, test_fixtures_are_in_sync_with_the_reference,
 test_notebook_loses_exactly_the_expected_checks, test_reference_gets_full_marks_and_runs_fast,
 test_failed_accuracy_reports_the_metric) = PRACTICAL.tests()


def test_checks_are_the_ones_these_tests_know():
    assignment = load_assignment(NAME, REPO)
    assert [c.id for c in assignment.checks() if not c.hidden] == PUBLIC
    assert [c.id for c in assignment.checks() if c.hidden] == HIDDEN
    assert sum(c.points for c in assignment.checks()) == 11
    assert all(c.hint for c in assignment.checks() if c.hidden)
