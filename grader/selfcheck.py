"""The student's self-check: the same public checks the batch grader runs.

* ``grader check NOTEBOOK`` executes the notebook in a fresh kernel (no sandbox by
  default: it is the student's own laptop and code) and runs the public checks;
* ``from grader import check; check("q2")`` inside the notebook runs the public
  checks of one question against the live kernel state, without re-executing
  anything (``check()`` runs them all).

Both use the check definitions of ``assignments/<name>/public_checks.py`` through
the same :class:`~grader.probe.Student` API, so verdicts agree. Hidden checks and
expected values are never loaded here: public checks receive an ``Expected`` that
refuses to be read.
"""

from __future__ import annotations

import html
import os
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path

from .assignment import Assignment, Expected, find_course_root, load_assignment
from .checks import run_checks
from .errors import ConfigurationError
from .probe import InProcessTransport, Student
from .results import CheckResult


@dataclass(frozen=True)
class CheckReport:
    """What check() returns: shows as HTML in Jupyter and as text elsewhere."""

    assignment: str
    results: tuple[CheckResult, ...]

    @property
    def passed(self) -> bool:
        return all(r.passed for r in self.results)

    def __repr__(self) -> str:
        return render_text(self.results, self.assignment)

    def _repr_html_(self) -> str:
        rows = []
        for r in self.results:
            mark = "&#10004;" if r.passed else "&#10008;"
            colour = "#1a7f37" if r.passed else "#cf222e"
            rows.append(
                f"<tr><td style='color:{colour};font-weight:bold'>{mark}</td>"
                f"<td><code>{html.escape(r.id)}</code></td><td>{r.score:g}/{r.points:g}</td>"
                f"<td>{html.escape(r.message or r.description)}</td></tr>")
        score = sum(r.score for r in self.results)
        points = sum(r.points for r in self.results)
        return (f"<div><b>{html.escape(self.assignment)}: public checks {score:g}/{points:g}"
                f"</b><table>{''.join(rows)}</table>"
                "<small>Hidden checks run when your instructor grades.</small></div>")


def render_text(results, assignment: str) -> str:
    lines = [f"{assignment}: public checks"]
    question = None
    for r in results:
        if r.question != question:
            question = r.question
            lines.append(f"  {question}")
        lines.append(f"    {'PASS' if r.passed else 'FAIL'}  {r.id}  ({r.score:g}/{r.points:g})")
        if not r.passed:
            lines.append(f"          {r.message}")
    score = sum(r.score for r in results)
    points = sum(r.points for r in results)
    lines.append(f"  {score:g}/{points:g} points from public checks; hidden checks run when "
                 "your instructor grades.")
    return "\n".join(lines)


def _public_only(assignment: Assignment) -> Assignment:
    """The student-side view: no reference directory, so nothing hidden can load."""
    from dataclasses import replace

    return replace(assignment, reference_directory=None)


def _assignment_for_folder(folder: Path, name: str | None) -> Assignment:
    if name is None:
        for candidate in (folder, *folder.parents):
            if (candidate / "assignment.toml").exists():
                return _public_only(load_assignment(candidate.name, candidate.parent.parent))
        raise ConfigurationError("cannot tell which assignment this is: pass "
                                 "check(assignment='name') or run from the assignment's folder")
    return _public_only(load_assignment(name, find_course_root(folder)))


def check_in_notebook(question: str | None = None, *, assignment: str | None = None):
    """Run public checks against the calling notebook's live namespace."""
    if os.environ.get("GRADER_EXECUTING") == "1":
        return None  # the grader is executing this notebook: its checks run afterwards
    namespace = _caller_namespace()
    target = _assignment_for_folder(Path.cwd(), assignment)
    items = target.checks(public_only=True)
    if question is not None:
        items = [c for c in items if c.question == question or c.id == question]
        if not items:
            known = sorted({c.question for c in target.checks(public_only=True)})
            raise ConfigurationError(f"no public checks for {question!r}; "
                                     f"questions with public checks: {', '.join(known)}")
    with tempfile.TemporaryDirectory(prefix="grader-check-") as work:
        student = Student(InProcessTransport(namespace), Path(work))
        results = run_checks(items, student, Expected.refusing(target.name))
    return CheckReport(target.name, tuple(results))


def _caller_namespace() -> dict:
    try:
        from IPython import get_ipython

        shell = get_ipython()
    except ImportError:
        shell = None
    if shell is not None:
        return shell.user_ns
    return sys._getframe(3).f_globals  # plain Python: the module that called check()


def _verify_data(assignment: Assignment, options) -> None:
    """The data cache checked against its manifest, rebuilt where it does not match."""
    from .data import verify_cache
    from .errors import DataUnavailable

    try:
        removed = verify_cache(assignment.datasets, options.data_dir)
    except DataUnavailable:
        return  # the result says so
    if removed:
        print(f"The data cache did not match its manifest; removed and rebuilt: "
              f"{', '.join(sorted(p.name for p in removed))}", file=sys.stderr)


def check_notebook(args) -> bool:
    """``grader check NOTEBOOK``: execute it, run the public checks, print a summary."""
    from .executor import GradeOptions, grade_submission, read_notebook

    path = Path(args.notebook).resolve()
    name = args.assignment
    if name is None:
        notebook, _ = read_notebook(path.read_bytes())
        name = notebook.metadata.get("grader", {}).get("assignment")
    target = _assignment_for_folder(path.parent, name)
    if "housing" in target.datasets:  # a student's laptop: fetched once, like `grader data`
        from .data import housing_csv_or_download

        housing_csv_or_download(args.data_dir, say=lambda line: print(line, file=sys.stderr))
    print(f"Running {path.name} from the top for {target.name} ...", file=sys.stderr)
    options = GradeOptions(sandbox=args.sandbox, public_only=True, data_dir=args.data_dir)
    _verify_data(target, options)
    result = grade_submission(path, target, options, student_id=path.stem)
    print(f"{result.status.value}: {result.message}")
    for cell in result.cells:
        if cell.error:
            print(f"  cell {cell.index + 1}: {cell.error}")
    print(render_text(result.checks, target.name))
    if getattr(args, "html", None):
        try:
            from .reports import write_feedback
        except ImportError:
            print("HTML feedback is not available in this installation.", file=sys.stderr)
        else:
            out = Path(args.html)
            page = write_feedback(result, out.parent, None)
            if page != out:
                page.replace(out)
            print(f"Feedback page: {out}")
    return all(c.passed for c in result.checks) and result.status.value == "ok"
