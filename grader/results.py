"""The results model: what grading one submission produces.

Everything the reports, the gradebook, the exports and the self-check read is a
:class:`SubmissionResult`, a frozen dataclass that round-trips through JSON
(``to_json`` / ``from_json``). Keep it small and typed: the reports, calibration
and scale-out code build on it.
"""

from __future__ import annotations

import enum
import hashlib
import json
import re
from dataclasses import asdict, dataclass, field, fields
from typing import Any

RESULT_SCHEMA_VERSION = 1


class Status(str, enum.Enum):
    """How grading one submission ended. Each status has a student-facing meaning."""

    OK = "ok"  # every cell ran, checks scored
    ERROR = "error"  # student code raised; checks that could still run scored
    TIMEOUT = "timeout"  # a cell or the notebook ran past its wall-clock limit
    MEMORY = "memory"  # the kernel's process tree went past the memory or process limit
    CRASHED = "crashed"  # the kernel died (os._exit, segfault, killed its parent)
    INVALID = "invalid"  # not a readable notebook, or no notebook to grade
    GRADER_ERROR = "grader-error"  # the grader itself failed: not the student's fault

    @property
    def explanation(self) -> str:
        return _STATUS_EXPLANATIONS[self]


_STATUS_EXPLANATIONS = {
    Status.OK: "Your notebook ran from top to bottom and was graded.",
    Status.ERROR: "Some cells raised errors; checks that could still run were scored.",
    Status.TIMEOUT: "Your notebook ran past its time limit. Look for endless loops, "
    "too many epochs or waiting calls.",
    Status.MEMORY: "Your notebook used more memory or processes than allowed. "
    "Look for very large arrays or models, or code that starts processes in a loop.",
    Status.CRASHED: "The Python kernel running your notebook died (for example os._exit, "
    "a crash in a library, or killing a process). Run it top to bottom locally with "
    "'Restart & Run All'.",
    Status.INVALID: "The file could not be read as a Jupyter notebook. Re-download it "
    "from Jupyter with File > Download as > Notebook (.ipynb).",
    Status.GRADER_ERROR: "The grader failed on this submission; this is not your fault. "
    "Your instructor has been told.",
}


@dataclass(frozen=True)
class CheckResult:
    """The outcome of one check on one submission."""

    id: str
    question: str
    points: float
    score: float
    passed: bool
    hidden: bool
    message: str  # what we found, what we expected, how to fix it ("" when passed)
    description: str = ""
    expected: str | None = None  # public checks only: short rendering of the expected value
    found: str | None = None  # public checks only
    tolerance: str | None = None
    duration_s: float = 0.0
    # trained-quality checks: {"name", "value", "low", "high", "reference": [...]}
    metric: dict[str, Any] | None = None


@dataclass(frozen=True)
class CellRun:
    """One executed code cell, as the feedback shows it."""

    index: int
    duration_s: float
    error: str | None = None  # "ValueError: ..." when the cell raised
    traceback: str | None = None  # ANSI stripped, trimmed to the student's own frames
    timed_out: bool = False


@dataclass(frozen=True)
class SubmissionResult:
    """Everything known about grading one submission."""

    student_id: str
    assignment: str
    status: Status
    message: str  # one or two sentences for the student about the status
    score: float
    max_score: float
    checks: tuple[CheckResult, ...] = ()
    cells: tuple[CellRun, ...] = ()
    source_path: str = ""
    submission_sha256: str = ""
    cache_key: str = ""
    duration_s: float = 0.0
    timings: dict[str, float] = field(default_factory=dict)  # phase -> seconds
    peak_memory_mb: float = 0.0
    sandbox: str = "off"  # "bubblewrap" or "off"
    device: str = "cpu"
    kernel_provider: str = "fresh"
    warm_kernel: bool = False  # the kernel was started ahead, while the previous one ran
    versions: dict[str, str] = field(default_factory=dict)
    graded_at: str = ""
    executed_notebook: str | None = None  # path, relative to OUT, of the executed copy
    # The seed of the hidden checks' grading-time inputs (grader.fresh_inputs), as a decimal
    # string; "" when no hidden check ran. GradeOptions(grading_seed=int(...)) replays it.
    grading_seed: str = ""
    schema: int = RESULT_SCHEMA_VERSION

    @property
    def questions(self) -> dict[str, tuple[float, float]]:
        """question -> (score, max points), in the order checks were defined."""
        totals: dict[str, tuple[float, float]] = {}
        for check in self.checks:
            score, points = totals.get(check.question, (0.0, 0.0))
            totals[check.question] = (score + check.score, points + check.points)
        return totals

    def to_json(self) -> str:
        data = asdict(self)
        data["status"] = self.status.value
        return json.dumps(data, indent=1, sort_keys=False)

    @classmethod
    def from_json(cls, text: str) -> SubmissionResult:
        data = json.loads(text)
        known = {f.name for f in fields(cls)}
        data = {key: value for key, value in data.items() if key in known}
        data["status"] = Status(data["status"])
        data["checks"] = tuple(CheckResult(**c) for c in data.get("checks", ()))
        data["cells"] = tuple(CellRun(**c) for c in data.get("cells", ()))
        return cls(**data)


def total_score(checks: tuple[CheckResult, ...] | list[CheckResult]) -> tuple[float, float]:
    return (
        round(sum(c.score for c in checks), 6),
        round(sum(c.points for c in checks), 6),
    )


# Student ids as file names (feedback pages, export folders): ordinary ids are kept.
_SAFE_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._@+-]{0,99}")


def feedback_filename(student_id: str) -> str:
    """A file name for ``student_id`` that is safe on every file system and in a URL.

    Ordinary ids (letters, digits, ``._@+-``) are kept as they are; anything else is
    replaced and a short hash keeps different ids apart."""
    if _SAFE_NAME.fullmatch(student_id) and not student_id.endswith("."):
        return student_id
    slug = re.sub(r"[^A-Za-z0-9._-]+", "_", student_id)[:60].strip("._") or "student"
    return f"{slug}-{hashlib.sha256(student_id.encode()).hexdigest()[:10]}"
