"""Grading-time inputs (grader.fresh_inputs) and the NumPy references the hidden checks
compare them with: the seed, the inputs it gives, and each reference against the
reference notebook's own TensorFlow code."""

from __future__ import annotations

import json

import numpy as np
import pytest

from grader import fresh_inputs
from grader.assignment import load_assignment

from conftest import REPO
from practicals import load_module


def hidden(name: str):
    return load_module(REPO / "reference" / name / "hidden_checks.py", f"_fresh_{name}_hidden")


def reference_namespace(name: str) -> dict:
    """The reference notebook's code cells run in this process (trusted code)."""
    notebook = json.loads((REPO / "reference" / name / f"{name}.ipynb").read_text())
    namespace: dict = {}
    for cell in notebook["cells"]:
        source = "".join(cell["source"])
        runs = "def " in source or source.lstrip().startswith("import")
        if cell["cell_type"] == "code" and runs and "load_mnist()" not in source:
            exec(compile(source, f"<{name}>", "exec"), namespace)  # noqa: S102 - our reference
    return namespace


def test_seed_depends_on_the_submission_and_the_secret():
    a = fresh_inputs.grading_seed("aa" * 32, secret="s1")
    assert a == fresh_inputs.grading_seed("aa" * 32, secret="s1")  # a regrade replays it
    assert a != fresh_inputs.grading_seed("ab" * 32, secret="s1")
    assert a != fresh_inputs.grading_seed("aa" * 32, secret="s2")
    assert 0 <= a < 2**63


def test_without_a_secret_each_process_draws_its_own(monkeypatch):
    monkeypatch.delenv(fresh_inputs.SECRET_ENV, raising=False)
    seed = fresh_inputs.grading_seed("aa" * 32)
    assert seed == fresh_inputs.grading_seed("aa" * 32, secret=fresh_inputs._PROCESS_SECRET)
    monkeypatch.setenv(fresh_inputs.SECRET_ENV, "course secret")
    assert fresh_inputs.grading_seed("aa" * 32) == \
        fresh_inputs.grading_seed("aa" * 32, secret="course secret")


def test_expected_hands_checks_the_context_of_the_submission():
    expected = load_assignment("linear_softmax", REPO).expected
    context = fresh_inputs.GradingContext(seed=7, cells=("x = 1",))
    graded = expected.for_submission(context).for_device("cpu").calibrating()
    assert graded.context is context  # kept through the executor's other copies
    assert expected.context.seed != fresh_inputs.unseeded_context().seed  # random outside a run


def test_no_fixed_hidden_inputs_are_stored():
    for name in ("linear_softmax", "ocean_proximity", "custom_train_step"):
        path = REPO / "reference" / name / "expected.npz"
        if path.exists():
            with np.load(path) as stored:
                # ocean_proximity keeps the test rows' index and the training split's
                # statistics (the grader's own preprocessing of q5): no input of a check.
                assert set(stored.files) <= {"test_index", "train_medians", "train_means",
                                             "train_stds"}, (name, stored.files)


def test_linear_softmax_inputs_change_with_the_seed_and_keep_their_traps():
    checks = hidden("linear_softmax")
    assert not np.array_equal(checks.hidden_logits(1), checks.hidden_logits(2))
    np.testing.assert_array_equal(checks.step_inputs(3)["W0"], checks.step_inputs(3)["W0"])
    for seed in range(20):
        large = checks.large_logits(seed).astype(np.float32)
        with np.errstate(over="ignore", invalid="ignore"):
            naive = np.exp(large) / np.exp(large).sum(axis=1, keepdims=True)
        # the unshifted softmax of a float32 tensor breaks in exactly 34 places
        assert int(np.sum(~np.isfinite(naive))) == 34
        assert np.abs(large).max() > 990


def test_ocean_proximity_rows_change_with_the_seed():
    from grader.data import housing_csv

    try:
        housing_csv()
    except Exception as error:  # noqa: BLE001
        pytest.skip(f"housing.csv is not available: {error}")
    checks = hidden("ocean_proximity")
    a, b = checks.hidden_rows(1), checks.hidden_rows(2)
    assert a.shape == (14, 9) and np.isnan(a).sum() == 3 == np.isnan(b).sum()
    assert not np.allclose(np.nan_to_num(a), np.nan_to_num(b))
    assert np.isfinite(checks.preprocess_reference(a)).all()
    for split in ("test", "all", "train_full", "dev"):  # the diagnosis can tell them apart
        assert np.abs(checks.preprocess_reference(a, split) -
                      checks.preprocess_reference(a)).max() > 0.01


@pytest.mark.slow
def test_linear_softmax_numpy_reference_matches_the_tensorflow_solution():
    import tensorflow as tf

    checks = hidden("linear_softmax")
    solution = reference_namespace("linear_softmax")
    for seed in (1, 2):
        for logits in (checks.hidden_logits(seed), checks.large_logits(seed)):
            np.testing.assert_allclose(solution["softmax"](logits).numpy(),
                                       checks.softmax(logits.astype(np.float64)),
                                       rtol=1e-5, atol=1e-7)
        inputs = checks.step_inputs(seed)
        f64 = {k: v.astype(np.float64) for k, v in inputs.items()}
        np.testing.assert_allclose(solution["forward"](inputs["X"], inputs["W0"], inputs["b0"]),
                                   checks.forward(f64["X"], f64["W0"], f64["b0"]), rtol=1e-4,
                                   atol=1e-7)
        y_true, y_pred = checks.cross_entropy_inputs(seed)
        np.testing.assert_allclose(float(solution["cross_entropy"](y_true, y_pred)),
                                   checks.cross_entropy(y_true.astype(float), y_pred.astype(float)),
                                   rtol=1e-5)
        W, b = tf.Variable(inputs["W0"]), tf.Variable(inputs["b0"])
        loss = solution["train_step"](inputs["X"], inputs["Y"], W, b, checks.LEARNING_RATE)
        ref_loss, W1, b1 = checks.sgd_step(f64["X"], f64["Y"], f64["W0"], f64["b0"],
                                           checks.LEARNING_RATE)
        np.testing.assert_allclose(float(loss), ref_loss, rtol=1e-5)
        np.testing.assert_allclose(W.numpy(), W1, rtol=1e-4, atol=1e-6)
        np.testing.assert_allclose(b.numpy(), b1, rtol=1e-4, atol=1e-6)


@pytest.mark.slow
def test_custom_step_numpy_reference_matches_the_keras_solution():
    import keras

    checks = hidden("custom_train_step")
    solution = reference_namespace("custom_train_step")

    def fresh(weights):
        model = solution["build_model"]()
        model.set_weights(weights)
        model.compile(optimizer=keras.optimizers.SGD(learning_rate=checks.LEARNING_RATE),
                      loss=checks.LOSS)
        return model

    for seed in (1, 2):
        inputs = checks.step_inputs(seed, "one_step")
        weights = [w.astype(np.float64) for w in inputs["weights"]]
        x = [b.astype(np.float64) for b in inputs["x"]]
        model = fresh(inputs["weights"])
        logs = model.train_step((inputs["x"][0], inputs["y"][0]))
        loss, accuracy, after = checks.reference_train_step(weights, x[0], inputs["y"][0])
        np.testing.assert_allclose(float(logs["loss"]), loss, rtol=1e-5)
        np.testing.assert_allclose(float(logs["accuracy"]), accuracy, rtol=1e-6)
        for mine, theirs in zip(after, model.get_weights(), strict=True):
            np.testing.assert_allclose(theirs, mine, rtol=1e-4, atol=1e-6)
        # the running mean of two steps
        logs = model.train_step((inputs["x"][1], inputs["y"][1]))
        loss1, accuracy1, _ = checks.reference_train_step(after, x[1], inputs["y"][1])
        np.testing.assert_allclose(float(logs["loss"]), (loss + loss1) / 2, rtol=1e-5)
        np.testing.assert_allclose(float(logs["accuracy"]), (accuracy + accuracy1) / 2,
                                   rtol=1e-6)
        # test_step in inference mode
        model = fresh(inputs["weights"])
        logs = model.test_step((inputs["x"][0], inputs["y"][0]))
        loss, accuracy = checks.reference_test_step(weights, x[0], inputs["y"][0])
        np.testing.assert_allclose(float(logs["loss"]), loss, rtol=1e-5)
        np.testing.assert_allclose(float(logs["accuracy"]), accuracy, rtol=1e-6)


@pytest.mark.parametrize("purpose", ["one_step", "running", "test_step"])
def test_custom_step_inputs_tell_accuracy_mistakes_from_the_reference(purpose):
    """Accuracy on a batch of 32 is a count: on about one draw in four of plain random
    inputs a typical tracker mistake gives the reference's number by chance (CI once passed a
    never-updated accuracy tracker: the reference's accuracy was 0 on that seed). Every seed's
    inputs must tell these mistakes apart, at the checks' own tolerance."""
    checks = hidden("custom_train_step")

    def same(a, b):  # _compare_logs's tolerance for the accuracy
        return bool(np.isclose(a, b, rtol=1e-5, atol=1e-6))

    for seed in range(200):
        inputs = checks.step_inputs(seed, purpose)
        weights = [w.astype(np.float64) for w in inputs["weights"]]
        x = [b.astype(np.float64) for b in inputs["x"]]
        _, test_accuracy = checks.reference_test_step(weights, x[0], inputs["y"][0])
        accuracies = []
        for batch, labels in zip(x, inputs["y"], strict=True):
            _, accuracy, weights = checks.reference_train_step(weights, batch, labels)
            accuracies.append(accuracy)
        a0, a1, a2 = accuracies
        running, after_reset, not_reset = (a0 + a1) / 2, a2, (a0 + a1 + a2) / 3
        never_updated = 0.0
        assert not same(never_updated, a0), (seed, "one step")
        assert not same(never_updated, running), (seed, "two steps")
        assert not same(never_updated, test_accuracy), (seed, "test_step")
        assert not same(a1, running), (seed, "the batch value for the running mean")
        assert not same(not_reset, after_reset), (seed, "a tracker reset_metrics() misses")
        assert not same(1.0, a0) and not same(1.0, test_accuracy), seed


def test_custom_step_inputs_keep_the_first_draw_that_discriminates():
    checks = hidden("custom_train_step")
    kept = redrawn = 0
    for seed in range(40):
        first = checks._draw(seed, "running")
        inputs = checks.step_inputs(seed, "running")
        same = all(np.array_equal(a, b) for a, b in zip(first["x"], inputs["x"], strict=True))
        assert same == checks.discriminates(first), seed
        kept, redrawn = kept + same, redrawn + (not same)
        again = checks.step_inputs(seed, "running")  # the same seed, the same inputs
        assert all(np.array_equal(a, b) for a, b in zip(again["x"], inputs["x"], strict=True))
    assert kept and redrawn


def test_class_definition_keeps_the_class_its_imports_and_helpers_only():
    from grader.definitions import class_definition

    cells = ["import os\nimport numpy as np\nimport keras\nimport tensorflow as tf\n"
             "x_train = np.load('data.npz')\n",
             "%matplotlib inline\nSCALE = 2.0\n\ndef helper(v):\n    return v * SCALE\n",
             "class CustomModel(keras.Model):\n    def train_step(self, data):\n"
             "        return helper(data) + LATER\n",
             "def build_model():\n    return CustomModel()\nmodel = build_model()\n"
             "LATER = 1.0\nLATER = 2.0\n"]
    definition = class_definition(cells)
    assert definition.name == "CustomModel" and not definition.defines_call
    source = definition.source
    for kept in ("import numpy", "import keras", "SCALE = 2.0", "def helper",
                 "class CustomModel", "LATER = 1.0"):
        assert kept in source
    assert source.index("class CustomModel") < source.index("LATER = 1.0")
    for dropped in ("import os", "x_train", "build_model", "matplotlib", "LATER = 2.0"):
        assert dropped not in source


@pytest.mark.parametrize("body, shown", [
    ("    def train_step(self, data):\n        return super().train_step(data)\n"
     "keras.Model.compile = lambda *a, **k: None\n", None),  # a patch outside the class: dropped
    ("    keras.Model.compile = lambda *a, **k: None\n", "assignment to keras.Model.compile"),
    ("    def train_step(self, data):\n        import importlib\n", "import importlib"),
    ("    def train_step(self, data):\n        return keras.src.backend.tensorflow.trainer"
     ".TensorFlowTrainer.train_step(self, data)\n", ".src"),
    ("    def train_step(self, data):\n        return getattr(keras, 'Model')\n", "getattr"),
    ("    def train_step(self, data):\n        import sys\n        return sys.modules\n",
     "import sys"),
])
def test_class_definition_refuses_ways_out_of_the_class(body, shown):
    from grader.definitions import DefinitionRefused, class_definition

    cells = ["import keras\n", "class CustomModel(keras.Model):\n" + body]
    if shown is None:
        assert "compile" not in class_definition(cells).source
        return
    with pytest.raises(DefinitionRefused, match="which the grader does not run") as refused:
        class_definition(cells)
    assert shown in str(refused.value)
