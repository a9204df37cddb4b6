"""The grader's exception tree.

    GraderError                      the grader's own, user-facing errors (CLI prints "Type: message")
    ├── ConfigurationError           bad assignment definition, options or environment
    │   └── SandboxUnavailable       --sandbox required but bubblewrap cannot run here
    ├── DataUnavailable              a dataset the assignment needs is missing or corrupt
    └── InvalidSubmission            the file is not a notebook we can grade (student's fault)

    CheckFailed                      a check's verdict: the student's answer is wrong
    StudentCodeError                 the student's code raised while a check called it
    KernelUnresponsive               the kernel did not answer a check in time

Harness faults (``GraderError`` other than ``InvalidSubmission``) are kept apart from
student faults so that a bug of ours never costs a student points silently.
"""

from __future__ import annotations


class GraderError(Exception):
    """Base class for errors the grader reports to its user without a traceback."""


class ConfigurationError(GraderError):
    pass


class SandboxUnavailable(ConfigurationError):
    pass


class DataUnavailable(GraderError):
    pass


class InvalidSubmission(GraderError):
    """The submission cannot be read as a notebook; the message is for the student."""


class CheckFailed(Exception):
    """Raised by a check when the student's answer is wrong.

    ``message`` follows the house rule: what we found, what we expected, how to fix it.
    ``detail`` holds the part that reveals expected values (the worst mismatches);
    it and ``expected`` / ``found`` are shown for public checks only.
    """

    def __init__(
        self,
        message: str,
        *,
        detail: str = "",
        expected: str | None = None,
        found: str | None = None,
        tolerance: str | None = None,
        metric: dict | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.detail = detail
        self.expected = expected
        self.found = found
        self.tolerance = tolerance
        self.metric = metric


class StudentCodeError(Exception):
    """The student's code raised while a check was calling it inside the kernel."""

    def __init__(self, ename: str, evalue: str, what: str = "") -> None:
        super().__init__(f"{ename}: {evalue}")
        self.ename = ename
        self.evalue = evalue
        self.what = what


class KernelUnresponsive(Exception):
    """The kernel did not answer a check within its time limit, or has died."""
