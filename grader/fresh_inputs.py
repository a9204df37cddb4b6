"""Inputs chosen at grading time, so that no student can know them in advance.

An exact check (softmax, one gradient step, ``preprocess``, ``train_step``) calls the
student's code on inputs drawn here and compares the result with the reference's answer,
computed in the grader from the same inputs. The inputs depend on a *grading seed*:

* with ``GRADER_SECRET`` set (the instructor's secret, never shipped), the seed is an
  HMAC of the submission's bytes: the same submission gets the same inputs at every
  regrade, and a student who learns the seed of one submission cannot derive another's;
* without it, each grading process draws a random secret: the inputs change at every run.

The seed is stored in the submission's result (``SubmissionResult.grading_seed``), never
shown before grading; ``GradeOptions.grading_seed`` replays a run with that seed.
Each check draws its own stream, :func:`rng` (seed, purpose), so adding a check does not
change the inputs of the others.

Hidden checks read the seed, and the submission's source where they need it, from
``expected.context`` (:class:`GradingContext`): :meth:`grader.assignment.Expected.for_submission`.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

SECRET_ENV = "GRADER_SECRET"
_PROCESS_SECRET = secrets.token_bytes(32)  # used when no GRADER_SECRET is set


def grading_seed(submission_sha256: str, secret: str | bytes | None = None) -> int:
    """The seed of one submission's grading-time inputs (a 63-bit integer)."""
    if secret is None:
        secret = os.environ.get(SECRET_ENV) or _PROCESS_SECRET
    if isinstance(secret, str):
        secret = secret.encode()
    digest = hmac.new(secret, submission_sha256.encode(), hashlib.sha256).digest()
    return int.from_bytes(digest[:8], "big") >> 1


def rng(seed: int, purpose: str) -> np.random.Generator:
    """The random stream of one check (``purpose``, e.g. its id) for one grading seed."""
    tag = int.from_bytes(hashlib.sha256(purpose.encode()).digest()[:8], "big")
    return np.random.default_rng([int(seed), tag])


@dataclass(frozen=True)
class GradingContext:
    """What a hidden check may know about the submission it grades, besides its kernel.

    ``seed``: the grading seed (above). ``cells``: the source of the submitted notebook's
    code cells, as submitted (read by the grader from the file, never from the kernel).
    ``clean_kernel``: starts (once per submission) a new sandboxed kernel in which no
    student code ran, see :mod:`grader.clean_kernel`; ``None`` where there is none (the
    in-notebook self-check, unit tests)."""

    seed: int
    cells: tuple[str, ...] = ()
    clean_kernel: Callable[[], Any] | None = None

    def rng(self, purpose: str) -> np.random.Generator:
        return rng(self.seed, purpose)


def unseeded_context() -> GradingContext:
    """A context for checks run outside a graded submission (tests, tools): a random seed."""
    return GradingContext(seed=secrets.randbits(63))
