"""Student notebooks are generated from the reference solutions and kept in sync."""

import pytest

from grader.assignment import load_assignment
from grader.authoring import render, strip_solutions, student_notebook
from grader.errors import ConfigurationError

from conftest import REPO, TOY_COURSE

PRACTICALS = sorted(p.parent.name for p in (REPO / "assignments").glob("*/assignment.toml"))


def test_solution_regions_become_stubs_at_their_indentation():
    source = ("def f(x):\n    ### BEGIN SOLUTION\n    return x + 1\n    ### END SOLUTION\n\n"
              "### BEGIN SOLUTION\ny = f(1)\n### END SOLUTION\nprint(y)")
    stubbed, regions = strip_solutions(source)
    assert regions == 2
    assert stubbed == (
        "def f(x):\n    # YOUR CODE HERE\n    raise NotImplementedError(\"Write your solution "
        "here, then run the cell again.\")\n\n# YOUR CODE HERE\nraise NotImplementedError("
        "\"Write your solution here, then run the cell again.\")\nprint(y)")


@pytest.mark.parametrize("source, problem", [
    ("### BEGIN SOLUTION\nx = 1", "without END"),
    ("x = 1\n### END SOLUTION", "without BEGIN"),
    ("### BEGIN SOLUTION\n### BEGIN SOLUTION\n### END SOLUTION", "nested"),
])
def test_broken_markers_are_reported(source, problem):
    with pytest.raises(ConfigurationError, match=problem):
        strip_solutions(source, "cell 3")


@pytest.mark.parametrize("name", PRACTICALS)
def test_committed_student_notebook_matches_its_reference(name):
    assignment = load_assignment(name, REPO)
    expected = render(student_notebook(assignment))
    assert assignment.student_notebook.read_text() == expected, (
        f"{assignment.student_notebook} is out of date: run `grader generate {name}`")


def test_toy_student_notebook_is_in_sync():
    assignment = load_assignment("toy", TOY_COURSE)
    assert assignment.student_notebook.read_text() == render(student_notebook(assignment))
