"""The check API and the comparisons, on small fakes (no kernel)."""

import numpy as np
import pytest

from grader.assignment import Expected
from grader.checks import check, collect_checks, run_check
from grader.compare import Band, assert_allclose, assert_in_band, assert_shape
from grader.errors import CheckFailed, StudentCodeError


class FakeStudent:
    default_timeout = 60.0

    def __init__(self, value=None, error=None):
        self.value, self.error = value, error

    def call(self, name, *args):
        if self.error:
            raise self.error
        return self.value


def _make(hidden):
    @check("q1.softmax_values", points=2, hidden=hidden, hint="Subtract the row maximum.")
    def check_softmax_values(student, expected):
        """softmax on fixed logits."""
        assert_allclose(student.call("softmax"), [0.25, 0.75], what="softmax(logits)")
    return check_softmax_values.__grader_check__


def test_public_failure_shows_the_worst_mismatch_hidden_failure_does_not():
    public = run_check(_make(False), FakeStudent(np.array([0.5, 0.5])), None)
    hidden = run_check(_make(True), FakeStudent(np.array([0.5, 0.5])), None)
    assert "Mismatched elements: 2 / 2" in public.message
    assert "expected 0.75" in public.message and public.expected
    assert "0.75" not in repr(hidden)
    assert hidden.message.endswith("Hint: Subtract the row maximum.")
    assert (hidden.expected, hidden.found) == (None, None)


def test_student_error_and_stub_messages():
    raised = run_check(_make(False), FakeStudent(error=StudentCodeError(
        "ValueError", "bad axis", "softmax(<array>)")), None)
    assert raised.message.startswith("Calling `softmax(<array>)` raised ValueError: bad axis")
    stub = run_check(_make(False), FakeStudent(error=StudentCodeError(
        "NotImplementedError", "", "softmax(<array>)")), None)
    assert stub.message.startswith("`softmax` is not written yet")


def test_shape_mismatch_is_reported_first_and_alone():
    with pytest.raises(CheckFailed) as info:
        assert_shape(np.zeros((4, 1)), (None, 10), what="model(x)", fix="End in Dense(10).")
    assert info.value.message == "`model(x)` has shape (4, 1); expected (None, 10). End in Dense(10)."


def test_band_failure_carries_the_metric_record():
    band = Band("test_accuracy", low=0.8, reference_values=(0.88, 0.89))
    assert assert_in_band(0.85, band, what="Test accuracy", fix="")["value"] == 0.85
    with pytest.raises(CheckFailed) as info:
        assert_in_band(0.3, band, what="Test accuracy", fix="Scale the pixels.")
    assert "Test accuracy is 0.3; expected at least 0.8" in info.value.message
    assert info.value.metric["reference"] == [0.88, 0.89]


def test_public_checks_cannot_read_hidden_values():
    from grader.errors import ConfigurationError

    with pytest.raises(ConfigurationError, match="public check"):
        Expected.refusing("mlp").array("x")


def test_a_check_in_the_wrong_module_is_refused():
    import types

    module = types.ModuleType("m")
    module.c = _make(True).function
    with pytest.raises(ValueError, match="hidden=True but lives in public_checks.py"):
        collect_checks(module, hidden=False)


@pytest.mark.parametrize("hidden", [False, True])
def test_a_check_that_breaks_is_a_grader_error_and_its_traceback_goes_to_the_bug_log(
        tmp_path, monkeypatch, hidden):
    from grader.checks import run_checks

    @check("q1.broken", points=1, hidden=hidden)
    def check_broken(student, expected):
        """A bug in the check itself: its text quotes what the kernel sent."""
        raise SystemError("hidden input 0.123 from the kernel")

    log = tmp_path / "bugs.log"
    monkeypatch.setenv("GRADER_BUG_LOG", str(log))
    (result,) = run_checks([check_broken.__grader_check__], FakeStudent(), None)
    assert not result.passed
    assert result.message.startswith("Grader error in this check (not your fault): SystemError")
    # A hidden check's message never quotes the error's text; the bug log keeps all of it.
    assert ("0.123" in result.message) is (not hidden)
    text = log.read_text()
    assert "== q1.broken" in text and "raise SystemError" in text and "0.123" in text


def test_a_fault_of_the_check_itself_is_run_once_more_and_logged(tmp_path, monkeypatch):
    from grader import checks as checks_module
    from grader.checks import run_checks

    calls = []

    @check("q1.flaky", points=1, hidden=True)
    def check_flaky(student, expected):
        """The grader's machinery fails once (e.g. a transport fault), then works."""
        calls.append(1)
        if len(calls) == 1:
            raise SystemError("a fault of the grader's machinery")
        assert_allclose(student.call("softmax"), [0.25, 0.75], what="softmax(logits)")

    log = tmp_path / "bugs.log"
    monkeypatch.setenv("GRADER_BUG_LOG", str(log))
    (result,) = run_checks([check_flaky.__grader_check__], FakeStudent([0.25, 0.75]), None)
    assert result.passed and len(calls) == 2
    assert "== q1.flaky (run again)" in log.read_text()

    # A check that failed late in its time limit is not run again (the second run could
    # take the kernel past the check's hard limit): it is a grader error at once.
    calls.clear()
    monkeypatch.setattr(checks_module, "RETRY_WITHIN_FRACTION", 0.0)
    (result,) = run_checks([check_flaky.__grader_check__], FakeStudent([0.25, 0.75]), None)
    assert not result.passed and len(calls) == 1
    assert result.message.startswith("Grader error in this check (not your fault): SystemError")

    # A student's error is the student's: reported by run_check, never run again.
    calls.clear()

    @check("q1.counted", points=1)
    def check_counted(student, expected):
        """Counts its runs."""
        calls.append(1)
        student.call("softmax")

    monkeypatch.setattr(checks_module, "RETRY_WITHIN_FRACTION", 0.25)
    failing = FakeStudent(error=StudentCodeError("ValueError", "bad axis", "softmax(logits)"))
    (result,) = run_checks([check_counted.__grader_check__], failing, None)
    assert not result.passed and len(calls) == 1 and "ValueError" in result.message
