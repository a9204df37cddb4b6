"""Checks that run the student's code do so under TensorFlow's determinism controls
(grader._kernel_side.deterministic): the same seeds before every such probe, and
deterministic op implementations. Not in the self-check, which runs in the student's session."""

import nbformat
import numpy as np
import pytest

from grader.assignment import load_assignment
from grader.executor import GradeOptions, grade_submission
from grader.probe import InProcessTransport, Student

from conftest import sandbox_mode

FIRST_DRAW_AFTER_SEED_0 = float(np.random.RandomState(0).rand())


class SeededTransport(InProcessTransport):
    deterministic = True  # as KernelTransport, in-process


@pytest.fixture
def op_determinism():
    """TensorFlow's switch (its public API can enable it; query and disable are private)."""
    pytest.importorskip("tensorflow")
    pytest.importorskip("keras")
    from tensorflow.python.framework import config

    config.disable_op_determinism()
    yield config
    config.disable_op_determinism()  # leave this test process as it was


def test_probes_running_student_code_are_reseeded_and_deterministic(tmp_path, op_determinism):
    namespace = {"draw": lambda: float(np.random.rand())}
    seeded = Student(SeededTransport(namespace), tmp_path / "seeded")
    np.random.seed(123)
    first = seeded.call("draw")
    np.random.seed(456)
    assert first == seeded.call("draw") == FIRST_DRAW_AFTER_SEED_0
    assert seeded.evaluate("result = ns['draw']()") == FIRST_DRAW_AFTER_SEED_0
    assert op_determinism.is_op_determinism_enabled()


def test_the_self_check_leaves_the_students_random_state_alone(tmp_path, op_determinism):
    namespace = {"draw": lambda: float(np.random.rand())}
    live = Student(InProcessTransport(namespace), tmp_path / "live")
    np.random.seed(123)
    expected = np.random.RandomState(123).rand(2)
    assert [live.call("draw"), live.call("draw")] == list(expected)
    assert not op_determinism.is_op_determinism_enabled()


NOTEBOOK = """\
import numpy as np
import keras  # imports TensorFlow too (the backend)

np.random.seed(7)
def draw():
    return float(np.random.rand())
"""

CHECKS = f"""\
from grader.checks import check
from grader.errors import CheckFailed


@check("q1.draws", points=1)
def check_draws(student, expected):
    \"\"\"draw() twice, and whether op determinism is on while it runs.\"\"\"
    code = ("from tensorflow.python.framework import config\\n"
            "result = [ns['draw'](), config.is_op_determinism_enabled()]")
    first, second = student.evaluate(code), student.evaluate(code)
    if not first == second == [{FIRST_DRAW_AFTER_SEED_0!r}, True]:
        raise CheckFailed(f"not reseeded or not deterministic: {{first}} then {{second}}")
"""


def test_a_graded_kernel_runs_checks_under_the_controls(tmp_path):
    course = tmp_path / "course"
    (course / "assignments" / "seeded").mkdir(parents=True)
    (course / "assignments" / "seeded" / "assignment.toml").write_text(
        'name = "seeded"\ntitle = "Seeded"\nnotebook = "seeded.ipynb"\n')
    (course / "assignments" / "seeded" / "public_checks.py").write_text(CHECKS)
    notebook = tmp_path / "seeded.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(NOTEBOOK)]),
                   str(notebook))
    assignment = load_assignment("seeded", course)
    result = grade_submission(notebook, assignment, GradeOptions(sandbox=sandbox_mode()), "s")
    assert result.status.value == "ok", result.message
    (check,) = result.checks
    assert check.passed, check.message
