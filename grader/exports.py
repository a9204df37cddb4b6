"""Grade exports for learning-management systems, written by :func:`write_exports`.

All files are UTF-8 CSV/JSON under ``OUT/exports/``; ``grades.csv`` is the runner's, not ours.
Scores are written with at most two decimals. A submission whose status is
``grader-error`` gets an *empty* grade in the CSVs (an empty cell leaves the LMS grade
unchanged), so a fault of ours never records a zero; it is regraded instead.
Display-only text cells (names, comments) that begin with ``= + - @`` get a leading
``'`` so spreadsheet programs do not run them as formulas; identifiers are never altered.

``canvas.csv`` — Canvas Gradebook import (Grades > Import)
    Header: ``Student, ID, SIS User ID, SIS Login ID, Section, <assignment>`` followed by
    a second row ``Points Possible,,,,,<max points>``, the layout of Canvas' own gradebook
    export. Canvas finds each student by ``ID`` (its numeric user id), else ``SIS User
    ID``, else ``SIS Login ID``; ``Student`` (the display name) and ``Section`` are not
    used for matching. Canvas reads a number in parentheses after an assignment column's
    name as the *Canvas assignment id*: pass ``canvas_assignment_id`` to update that
    existing assignment (column ``<assignment> (<id>)``); without it the column is the
    bare name and Canvas offers to create a new assignment worth ``Points Possible``.
    (We do not write ``<assignment> (<points>)``: Canvas would take the points as an id.)
    How student ids fill the identity columns:

    * all digits (``123456``) -> ``ID``;
    * a Canvas bulk-download name ``name[_LATE]_<userid>_<submissionid>[_file]`` ->
      ``ID`` = ``<userid>``;
    * anything else (a login such as ``jdoe42``) -> ``SIS Login ID``.

    ``Student`` is the student id; ``SIS User ID`` and ``Section`` are left empty.

``moodle.csv`` — Moodle assignment "offline grading worksheet" (Grading action >
Upload grading worksheet; enable the *Offline grading worksheet* feedback type)
    Columns: ``Identifier, Full name, Email address, Status, Grade, Maximum Grade,
    Grade can be changed, Last modified (grade), Feedback comments``. Moodle matches rows
    on ``Identifier`` alone, which must be ``Participant <n>`` as in its downloaded
    worksheet; we write ``Participant <n>`` when the student id is all digits, is
    ``Participant <n>``, or is a Moodle download folder name (``Full Name_<n>_assignsubmission_...``),
    and the student id as it is otherwise (those rows will not match: rename
    submissions after the participant id, or merge into Moodle's worksheet). Moodle
    ignores ``Full name``, ``Email address`` (left empty), ``Status`` and ``Maximum Grade``
    on upload; ``Grade can be changed`` is ``Yes``; ``Last modified (grade)`` is the
    grading time in Moodle's format (``Monday, 1 January 2024, 10:15 AM``, UTC) or ``-``.
    Moodle refuses to overwrite a grade changed in Moodle after that time unless
    *Allow updating records that have been modified more recently in Moodle* is ticked.
    ``Feedback comments`` is HTML in Moodle, so the short summary we write is HTML-escaped.

``gradescope/<student>/results.json`` — the Gradescope autograder results format
    ``{"score", "output", "execution_time", "stdout_visibility", "tests": [{"name",
    "number", "score", "max_score", "status", "output", "visibility"}]}``; one test per
    check, named ``<question>: <check id>``. Public checks are ``"visible"``; hidden
    checks are ``"after_published"`` and their output is the message only (no
    expected/found values).
"""

from __future__ import annotations

import csv
import datetime as _dt
import html
import json
import re
from pathlib import Path

from .results import CheckResult, Status, SubmissionResult, feedback_filename

__all__ = [
    "CANVAS_COLUMNS",
    "MOODLE_COLUMNS",
    "canvas_identity",
    "gradescope_results",
    "moodle_identifier",
    "write_exports",
]

CANVAS_COLUMNS = ("Student", "ID", "SIS User ID", "SIS Login ID", "Section")
MOODLE_COLUMNS = ("Identifier", "Full name", "Email address", "Status", "Grade", "Maximum Grade",
                  "Grade can be changed", "Last modified (grade)", "Feedback comments")
_CANVAS_DOWNLOAD = re.compile(r"[a-z]+(?:_LATE)?_(\d+)_(\d+)(?:_.+)?")
_MOODLE_DOWNLOAD = re.compile(r".+?_(\d+)_assign(?:submission|feedback)_.*")
_PARTICIPANT = re.compile(r"Participant\s*(\d+)", re.IGNORECASE)


def _number(value: float) -> str:
    return f"{value:.2f}".rstrip("0").rstrip(".") or "0"


def _grade(result: SubmissionResult) -> str:
    return "" if result.status is Status.GRADER_ERROR else _number(result.score)


def _cell(text: str) -> str:
    """A display-only cell that spreadsheet programs will not evaluate as a formula."""
    return "'" + text if text[:1] in ("=", "+", "-", "@") else text


def canvas_identity(student_id: str) -> tuple[str, str]:
    """(ID, SIS Login ID) for a student id, as the module docstring describes."""
    if student_id.isdigit():
        return student_id, ""
    match = _CANVAS_DOWNLOAD.fullmatch(student_id)
    if match:
        return match.group(1), ""
    return "", student_id


def moodle_identifier(student_id: str) -> str:
    for pattern in (_PARTICIPANT, _MOODLE_DOWNLOAD):
        match = pattern.fullmatch(student_id)
        if match:
            return f"Participant {match.group(1)}"
    return f"Participant {student_id}" if student_id.isdigit() else student_id


def _moodle_time(graded_at: str) -> str:
    try:
        moment = _dt.datetime.fromisoformat(graded_at)
    except (TypeError, ValueError):
        return "-"
    if moment.tzinfo is not None:
        moment = moment.astimezone(_dt.timezone.utc)
    hour = moment.hour % 12 or 12
    return (f"{moment:%A}, {moment.day} {moment:%B %Y}, {hour}:{moment:%M} "
            f"{'AM' if moment.hour < 12 else 'PM'}")


def _summary(result: SubmissionResult) -> str:
    failed = [c.id for c in result.checks if not c.passed]
    parts = [f"{_number(result.score)} / {_number(result.max_score)}.", result.message]
    if failed:
        parts.append("Checks not passed: " + ", ".join(failed[:20])
                     + (f" and {len(failed) - 20} more" if len(failed) > 20 else "") + ".")
    return " ".join(part for part in parts if part)


def _write_csv(path: Path, rows: list[list[str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="", encoding="utf-8") as handle:
        csv.writer(handle).writerows(rows)


def _max_points(results: list[SubmissionResult]) -> float:
    return max((r.max_score for r in results), default=0.0)


def _check_output(check: CheckResult) -> str:
    lines = [check.message] if check.message else []
    if not check.hidden:
        for label, value in (("expected", check.expected), ("found", check.found),
                             ("tolerance", check.tolerance)):
            if value is not None and value != "":
                lines.append(f"{label}: {value}")
    return "\n".join(lines) or ("Passed." if check.passed else "Failed.")


def gradescope_results(result: SubmissionResult) -> dict:
    """One submission in the Gradescope autograder ``results.json`` format."""
    return {
        "score": 0.0 if result.status is Status.GRADER_ERROR else round(result.score, 4),
        "output": f"Status: {result.status.value}. {result.message}",
        "execution_time": int(round(result.duration_s)),
        "stdout_visibility": "hidden",
        "tests": [{
            "name": f"{check.question}: {check.id}",
            "number": str(number),
            "score": round(check.score, 4),
            "max_score": round(check.points, 4),
            "status": "passed" if check.passed else "failed",
            "output": _check_output(check),
            "visibility": "after_published" if check.hidden else "visible",
        } for number, check in enumerate(result.checks, start=1)],
    }


def write_exports(results: list[SubmissionResult], out_dir: Path, assignment_name: str,
                  canvas_assignment_id: int | None = None) -> Path:
    """Write the Canvas, Moodle and Gradescope exports; return ``OUT/exports``."""
    exports = Path(out_dir) / "exports"
    results = sorted(results, key=lambda r: r.student_id)
    points = _max_points(results)
    column = assignment_name if canvas_assignment_id is None \
        else f"{assignment_name} ({canvas_assignment_id})"
    canvas = [[*CANVAS_COLUMNS, column], ["Points Possible", "", "", "", "", _number(points)]]
    for result in results:
        canvas_id, login = canvas_identity(result.student_id)
        canvas.append([_cell(result.student_id), canvas_id, "", login, "", _grade(result)])
    _write_csv(exports / "canvas.csv", canvas)

    moodle = [list(MOODLE_COLUMNS)]
    for result in results:
        moodle.append([
            moodle_identifier(result.student_id), _cell(result.student_id), "",
            f"Graded by tf-grader: {result.status.value}", _grade(result),
            _number(result.max_score), "Yes", _moodle_time(result.graded_at),
            _cell(html.escape(_summary(result))),
        ])
    _write_csv(exports / "moodle.csv", moodle)

    for result in results:
        target = exports / "gradescope" / feedback_filename(result.student_id) / "results.json"
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(gradescope_results(result), indent=1), encoding="utf-8")
    return exports
