"""Check definitions and how they are run.

A check is a plain function named for what it verifies, decorated with
:func:`check`::

    @check("q1.softmax_rows_sum_to_one", points=1)
    def check_softmax_rows_sum_to_one(student, expected):
        probs = student.call("softmax", LOGITS)
        assert_allclose(probs.sum(axis=1), np.ones(4), what="softmax(logits).sum(axis=1)")

``student`` is a :class:`grader.probe.Student`; ``expected`` an
:class:`grader.assignment.Expected` (hidden checks only: public checks must not
read it, and get one that refuses; in a graded run, ``student.grading`` gives them the
submission's grading seed and clean kernel instead, so that what they award is computed
on inputs drawn at grading time or where no student code ran). A check passes by returning and fails by
raising :class:`grader.errors.CheckFailed` with a message that says what was
found, what was expected and what to try. A trained-quality check returns the
metric record of :func:`grader.compare.assert_in_band` so reports can plot it. If the student's code raises while
the check calls it, the check fails with that error named.

Public checks live in ``assignments/<name>/public_checks.py`` (students have them);
hidden checks in ``reference/<name>/hidden_checks.py`` (they never leave the
instructor's machine and never enter the sandbox).
"""

from __future__ import annotations

import builtins
import os
import re
import time
import traceback
from dataclasses import dataclass
from types import ModuleType
from typing import Any, Callable

from .errors import CheckFailed, KernelUnresponsive, StudentCodeError
from .results import CheckResult

CheckFunction = Callable[[Any, Any], None]

ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
MAX_STUDENT_TEXT = 1000  # characters of a student's exception message in a public check
# Exception types a hidden check may name: Python's own and the usual TensorFlow ones. A
# class the student made could carry the hidden inputs in its name.
_KNOWN_EXCEPTIONS = frozenset(
    name for name, value in vars(builtins).items()
    if isinstance(value, type) and issubclass(value, BaseException)) | {
    "InvalidArgumentError", "ResourceExhaustedError", "UnimplementedError",
    "FailedPreconditionError", "OutOfRangeError", "InternalError", "NotFoundError"}


def _exception_type(ename: str) -> str:
    return ename if ename in _KNOWN_EXCEPTIONS else "an exception"


@dataclass(frozen=True)
class Check:
    id: str  # "q1.softmax_rows_sum_to_one": the question, a dot, what it verifies
    points: float
    hidden: bool
    function: CheckFunction
    description: str = ""  # one line: what it verifies (the docstring's first line)
    hint: str = ""  # shown for hidden checks, whose messages stay generic
    # Wall-clock seconds for the whole check (each probe, and the check in all: the
    # executor interrupts, then kills the kernel past it; see grader.executor)
    timeout: float = 60.0

    @property
    def question(self) -> str:
        return self.id.split(".", 1)[0]


def check(id: str, *, points: float, hidden: bool = False, hint: str = "",
          timeout: float = 60.0) -> Callable[[CheckFunction], CheckFunction]:
    """Mark a function as a check. ``id`` is ``"<question>.<what_it_verifies>"``."""
    if "." not in id:
        raise ValueError(f"check id {id!r} must look like 'q1.what_it_verifies'")

    def decorate(function: CheckFunction) -> CheckFunction:
        doc = (function.__doc__ or "").strip().splitlines()
        function.__grader_check__ = Check(  # type: ignore[attr-defined]
            id=id, points=float(points), hidden=hidden, function=function,
            description=doc[0] if doc else "", hint=hint, timeout=timeout,
        )
        return function

    return decorate


def collect_checks(module: ModuleType, *, hidden: bool) -> list[Check]:
    """The checks a module defines, in definition order; ``hidden`` must match each one."""
    found = [value.__grader_check__ for value in vars(module).values()
             if hasattr(value, "__grader_check__")]
    for item in found:
        if item.hidden != hidden:
            where = "hidden_checks.py" if hidden else "public_checks.py"
            raise ValueError(f"check {item.id} has hidden={item.hidden} but lives in {where}")
    return found


class KernelGone(Exception):
    """Raised between checks once the kernel stopped answering: the rest are not run."""


def run_check(item: Check, student: Any, expected: Any) -> CheckResult:
    """Run one check and turn its outcome into a :class:`CheckResult`. Never raises
    for anything the student did; a bug in the check itself is reported as such."""
    start = time.perf_counter()
    previous_timeout = getattr(student, "default_timeout", None)
    if previous_timeout is not None:
        student.default_timeout = item.timeout
    fields: dict[str, Any] = {}
    try:
        returned = item.function(student, expected)
        passed, message = True, ""
        if isinstance(returned, dict):  # a trained-quality check returns its metric record
            fields = {"metric": returned}
    except CheckFailed as failure:
        passed, message = False, failure.message
        if failure.detail and not item.hidden:  # the detail reveals expected values
            message = f"{message} {failure.detail}"
        fields = dict(expected=failure.expected, found=failure.found,
                      tolerance=failure.tolerance, metric=failure.metric)
    except StudentCodeError as error:
        passed = False
        name = error.what.split("(", 1)[0] or "this part"
        if error.ename == "NotImplementedError":
            message = (f"`{name}` is not written yet: it still raises NotImplementedError. "
                       "Replace the `raise NotImplementedError` line under "
                       "`# YOUR CODE HERE` with your solution.")
            return _result(item, passed, message, time.perf_counter() - start, fields)
        if item.hidden:
            # Never the student's own text: an exception message (or anything printed) can
            # carry the hidden inputs, and this page goes back to the student.
            message = (f"Calling `{name}` on the hidden inputs raised {_exception_type(error.ename)}. "
                       "Run it on your own inputs of other shapes and values to see why.")
        else:
            where = f"Calling `{error.what}`" if error.what else "Your code"
            evalue = ANSI.sub("", error.evalue)[:MAX_STUDENT_TEXT]
            message = (f"{where} raised {error.ename}: {evalue}".rstrip(": ")
                       + ". Run that code in your notebook on a small input to see why.")
    except KernelUnresponsive as error:
        passed = False
        reason = "the kernel did not give a usable answer" if item.hidden else str(error)
        message = (f"This check could not finish: {reason}. Make sure the functions this "
                   "question asks for return promptly and do not wait for input.")
    finally:
        if previous_timeout is not None:
            student.default_timeout = previous_timeout
    return _result(item, passed, message, time.perf_counter() - start, fields)


def run_checks(items: list[Check], student: Any, expected: Any,
               alive: Callable[[], bool] = lambda: True) -> list[CheckResult]:
    """Run every check (collect all violations, never stop at the first)."""
    results = []
    for item in items:
        if not alive():
            results.append(_result(item, False, "Not run: the kernel running your notebook "
                                   "had stopped.", 0.0, {}))
            continue
        try:
            results.append(_run_check_retrying_a_fault(item, student, expected))
        except Exception as bug:  # noqa: BLE001 - a broken check must not sink the batch
            _record_grader_bug(item, bug)
            # A hidden check's error text may quote what the student's code returned.
            summary = (type(bug).__name__ if item.hidden else
                       "".join(traceback.format_exception_only(type(bug), bug)).strip())
            results.append(_result(item, False, f"Grader error in this check (not your fault): "
                                   f"{summary}", 0.0, {}))
    return results


def _run_check_retrying_a_fault(item: Check, student: Any, expected: Any) -> CheckResult:
    """:func:`run_check`, run a second time when the check itself failed quickly with an
    error of its own (not the student's, which run_check reports): a fault of the grader's
    machinery must not cost a student the points, and one that happens again is reported.
    The first traceback goes to the bug log either way."""
    start = time.monotonic()
    try:
        return run_check(item, student, expected)
    except Exception as fault:  # noqa: BLE001 - reported, then tried once more
        _record_grader_bug(item, fault, retried=True)
        if time.monotonic() - start > item.timeout * RETRY_WITHIN_FRACTION:
            raise
    return run_check(item, student, expected)


# A check that failed by its own error after this fraction of its time limit is not run
# again: the second run could take the kernel past the check's hard limit.
RETRY_WITHIN_FRACTION = 0.25


def _record_grader_bug(item: Check, bug: BaseException, retried: bool = False) -> None:
    """Append the traceback of a check's own failure to the file named by
    ``$GRADER_BUG_LOG`` (for whoever maintains the checks; never shown to a student, never
    printed: its text may quote what a kernel returned)."""
    path = os.environ.get("GRADER_BUG_LOG")
    if not path:
        return
    text = "".join(traceback.format_exception(type(bug), bug, bug.__traceback__))
    try:
        with open(path, "a", encoding="utf-8", errors="replace") as log:
            log.write(f"== {item.id}{' (run again)' if retried else ''}\n{text}\n")
    except OSError:
        pass


def _result(item: Check, passed: bool, message: str, duration: float,
            fields: dict[str, Any]) -> CheckResult:
    if item.hidden and not passed:
        # Hidden checks keep expected values to themselves: the message and hint only.
        fields = {"metric": fields.get("metric")}
        if item.hint and item.hint not in message:
            message = f"{message} Hint: {item.hint}" if message else item.hint
    return CheckResult(
        id=item.id, question=item.question, points=item.points,
        score=item.points if passed else 0.0, passed=passed, hidden=item.hidden,
        message=message, description=item.description, duration_s=round(duration, 4),
        **{k: v for k, v in fields.items() if v is not None},
    )
