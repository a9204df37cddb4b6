"""What a grading worker does with one submission that discovery found.

The batch runner's worker processes (:mod:`grader.runner`) and Dask workers
(:mod:`grader.cluster`) both call :func:`grade_found`; :func:`outcome` turns what came
back (or the exception a lost worker left) into a result. Neither calls the other: both
import this module.
"""

from __future__ import annotations

import os
import threading
from concurrent.futures import Future
from pathlib import Path

from .assignment import Assignment, load_assignment
from .discovery import Submission
from .executor import GradeOptions, grade_submission, time_bound_s, unscored_result
from .kernels import ZYGOTE_START_TIMEOUT_S
from .results import Status, SubmissionResult

# The executor frees a worker within time_bound_s whatever a notebook does. A worker still
# busy this long past that bound is stuck in the grader itself: it exits, and the batch goes
# on without it (see grader.runner). Generous: a worker's first kernel may wait for its
# zygote to start, which the bound does not count.
STUCK_WORKER_ALLOWANCE_S = ZYGOTE_START_TIMEOUT_S + 60.0
STUCK_WORKER_EXIT_CODE = 70


def die_with_coordinator() -> None:
    """Worker initializer: if the coordinator is killed (even SIGKILL), take the worker down
    too, and with it the sandbox (bubblewrap runs --die-with-parent)."""
    try:
        import ctypes
        import signal

        libc = ctypes.CDLL(None, use_errno=True)
        libc.prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass


def grade_found(course_root: str, assignment_name: str, options: GradeOptions,
                submission: Submission) -> SubmissionResult:
    """Grade ``submission`` of ``assignment_name`` (loaded from ``course_root``: this runs
    in a worker process); a submission discovery could not resolve is invalid."""
    assignment = load_assignment(assignment_name, Path(course_root))
    if submission.path is None:
        return invalid(submission, assignment, options)
    # The last resort, for a bug of ours: a worker stuck on one submission ends itself
    # (its kernels die with it), and the coordinator retries what it held.
    stuck = threading.Timer(time_bound_s(assignment, options) + STUCK_WORKER_ALLOWANCE_S,
                            os._exit, args=(STUCK_WORKER_EXIT_CODE,))
    stuck.daemon = True
    stuck.start()
    try:
        return grade_submission(submission.path, assignment, options, submission.student_id,
                                with_folder=submission.folder)
    finally:
        stuck.cancel()


def invalid(submission: Submission, assignment: Assignment,
            options: GradeOptions) -> SubmissionResult:
    return unscored_result(assignment, options, submission.student_id, Status.INVALID,
                           submission.problem, str(submission.source or ""))


def outcome(future: Future, submission: Submission, assignment: Assignment,
            options: GradeOptions) -> SubmissionResult:
    """The result a worker returned, or a grader-error result naming what went wrong."""
    try:
        return future.result()
    except Exception as error:  # noqa: BLE001 - one bad submission never hurts the batch
        message = f"The grader failed on this submission ({type(error).__name__}: {error})."
        return unscored_result(assignment, options, submission.student_id, Status.GRADER_ERROR,
                               message, str(submission.path or ""))
