"""What the five practicals' test files share: grading every notebook, and what they assert.

Each ``tests/test_practical_<name>.py`` keeps its own tables (``EXPECTED``: notebook ->
(status, {check id that fails: text its message must contain}), the check ids, the
scores) and builds a :class:`Practical` from them; ``Practical.tests()`` gives it the
tests every practical has. They grade the reference and every fixture notebook once
(a module-scoped fixture, two at a time, the default seed), then assert the exact set of
checks each one loses and the text of the failure messages; a fast test regenerates the
fixtures with their ``make_fixtures.py`` and compares them with the committed ones.
"""

from __future__ import annotations

import importlib.util
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import pytest

from grader import data
from grader.assignment import load_assignment
from grader.results import Status

from conftest import REPO, grader_bugs, sandbox_mode


def load_module(path: Path, name: str):
    """The Python file at ``path``, imported as a module called ``name``."""
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


BORDERLINE_MARGIN = 0.02  # how close to the band's low end a borderline metric must be


class Practical:
    """One practical: its reference, its fixture notebooks and what grading each must give.

    ``expected``: notebook -> (status, {check id that fails: text its message must
    contain}); ``all_checks``: every check id; ``max_score``: the reference's score;
    ``accuracy_check``: the hidden check that measures the trained model;
    ``failed_accuracy``: (a notebook that fails it, a bound its value stays under, or None,
    text its message must contain); ``data_dir``: passed to the grader; ``skip_grading``:
    why the notebooks cannot be graded here, if they cannot; ``borderline``: notebook ->
    {trained-quality check id: why} for a mistake whose model lands within
    :data:`BORDERLINE_MARGIN` of the calibrated band, where the float results of another
    CPU could fall on either side: that check may pass or fail, its metric must be near the band.
    """

    def __init__(self, name: str, expected: dict, all_checks, *, max_score: float,
                 accuracy_check: str, failed_accuracy: tuple[str, float | None, str],
                 data_dir: Path | None = None, skip_grading: str | None = None,
                 borderline: dict[str, dict[str, str]] | None = None):
        self.name = name
        self.expected = expected
        self.all_checks = set(all_checks)
        self.max_score = max_score
        self.accuracy_check = accuracy_check
        self.failed_accuracy = failed_accuracy
        self.data_dir = data_dir
        self.skip_grading = skip_grading
        self.borderline = borderline or {}
        self.fixtures = REPO / "tests" / "fixtures" / "submissions" / name
        self.reference = REPO / "reference" / name / f"{name}.ipynb"

    def notebook_path(self, notebook: str) -> Path:
        return self.reference if notebook == "reference" else self.fixtures / f"{notebook}.ipynb"

    def grade_all(self, tmp_path_factory) -> dict:
        """notebook -> its result, for every notebook in ``expected``, graded two at a time."""
        if self.skip_grading:
            pytest.skip(self.skip_grading)
        from grader.executor import GradeOptions, grade_submission

        assignment = load_assignment(self.name, REPO)
        # once, before two threads would race to write the cache
        data.prepare(assignment.datasets, self.data_dir)
        options = GradeOptions(sandbox=sandbox_mode(), data_dir=self.data_dir,
                               scratch_root=tmp_path_factory.mktemp(f"{self.name}-scratch"))

        def grade(notebook):
            return notebook, grade_submission(self.notebook_path(notebook), assignment, options,
                                              student_id=notebook)

        with ThreadPoolExecutor(max_workers=2) as pool:
            return dict(pool.map(grade, self.expected))

    def tests(self):
        """The module-scoped ``graded`` fixture and the tests every practical has, for its
        test module to bind to these names: (graded, test_fixtures_are_in_sync_with_the_reference,
        test_notebook_loses_exactly_the_expected_checks,
        test_reference_gets_full_marks_and_runs_fast, test_failed_accuracy_reports_the_metric)."""

        @pytest.fixture(scope="module")
        def graded(tmp_path_factory):
            return self.grade_all(tmp_path_factory)

        def test_fixtures_are_in_sync_with_the_reference():
            """The committed fixtures are what make_fixtures.py generates from the reference now."""
            module = load_module(self.fixtures / "make_fixtures.py", f"_make_{self.name}_fixtures")
            generated = module.notebooks()
            assert set(generated) == set(self.expected) - {"reference"}
            for notebook, generated_notebook in generated.items():
                committed = nbformat.read(str(self.fixtures / f"{notebook}.ipynb"), as_version=4)
                assert [c.source for c in committed.cells] == \
                    [c.source for c in generated_notebook.cells], notebook

        @pytest.mark.slow
        @pytest.mark.parametrize("name", list(self.expected))
        def test_notebook_loses_exactly_the_expected_checks(graded, name):
            result = graded[name]
            status, failing = self.expected[name]
            grader_errors = [c.message for c in result.checks if "Grader error" in c.message]
            assert not grader_errors, grader_bugs(grader_errors)
            assert {c.id for c in result.checks} == self.all_checks
            assert result.status == status, result.message
            failed = {c.id: c.message for c in result.checks if not c.passed}
            either_way = self.borderline.get(name, {})
            assert set(failed) - set(either_way) == set(failing), failed
            for check in result.checks:
                if check.id in either_way:
                    metric = check.metric
                    assert abs(metric["value"] - metric["low"]) <= BORDERLINE_MARGIN, metric
            for check_id, text in failing.items():
                assert text in failed[check_id], (check_id, failed[check_id])
            lost = sum(c.points for c in result.checks if not c.passed)
            assert result.score == pytest.approx(result.max_score - lost)

        @pytest.mark.slow
        def test_reference_gets_full_marks_and_runs_fast(graded):
            result = graded["reference"]
            assert result.status == Status.OK, result.message
            assert result.score == result.max_score == self.max_score
            accuracy = next(c.metric for c in result.checks if c.id == self.accuracy_check)
            assert accuracy["value"] >= accuracy["low"]
            assert result.timings["cells"] < 60, result.timings

        @pytest.mark.slow
        def test_failed_accuracy_reports_the_metric(graded):
            notebook, bound, hint = self.failed_accuracy
            check = next(c for c in graded[notebook].checks if c.id == self.accuracy_check)
            assert check.metric["value"] < check.metric["low"]
            if bound is not None:
                assert check.metric["value"] < bound < check.metric["low"]
            assert hint in check.message

        return (graded, test_fixtures_are_in_sync_with_the_reference,
                test_notebook_loses_exactly_the_expected_checks,
                test_reference_gets_full_marks_and_runs_fast,
                test_failed_accuracy_reports_the_metric)
