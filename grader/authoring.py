"""Instructor tooling: the student notebook is generated from the reference solution.

Solution regions in the reference notebook's code cells are marked like nbgrader's::

    def softmax(logits):
        ### BEGIN SOLUTION
        ...
        ### END SOLUTION

:func:`student_notebook` replaces each region with a stub at the same indentation
(``# YOUR CODE HERE`` and ``raise NotImplementedError(...)``), drops outputs, and
records the assignment in the notebook's metadata so ``grader check`` can find it.
After each question (a ``## Qn`` heading and the cells up to the next heading) that has
public checks it adds a check cell, ``check("qn")``, as otter does: run in Jupyter it
shows the question's public checks as a pass/fail table; while the grader executes the
notebook it does nothing (``GRADER_EXECUTING=1``), so grading is the same with or without
these cells. A test regenerates every student notebook and compares it with the
committed one.
"""

from __future__ import annotations

import re
from pathlib import Path

import nbformat

from .assignment import Assignment
from .errors import ConfigurationError

BEGIN = re.compile(r"^(?P<indent>[ \t]*)### BEGIN SOLUTION\s*$")
END = re.compile(r"^[ \t]*### END SOLUTION\s*$")
STUB_MESSAGE = "Write your solution here, then run the cell again."
QUESTION_HEADING = re.compile(r"^\s*#{1,6}\s*Q(?P<number>\d+)\b", re.IGNORECASE)
SECTION_HEADING = re.compile(r"^\s*#{1,2}\s")  # a new part of the notebook ends a question
CHECK_TAG = "grader-check"


def strip_solutions(source: str, where: str = "") -> tuple[str, int]:
    """``source`` with every solution region replaced by a stub; (text, regions)."""
    lines, out, regions = source.split("\n"), [], 0
    inside = None
    for number, line in enumerate(lines, 1):
        begin = BEGIN.match(line)
        if inside is None and begin:
            inside = begin.group("indent")
            out.append(f"{inside}# YOUR CODE HERE")
            out.append(f'{inside}raise NotImplementedError("{STUB_MESSAGE}")')
            regions += 1
        elif inside is not None and END.match(line):
            inside = None
        elif inside is not None and begin:
            raise ConfigurationError(f"{where} line {number}: nested ### BEGIN SOLUTION")
        elif inside is None and END.match(line):
            raise ConfigurationError(f"{where} line {number}: ### END SOLUTION without BEGIN")
        elif inside is None:
            out.append(line)
    if inside is not None:
        raise ConfigurationError(f"{where}: ### BEGIN SOLUTION without END")
    return "\n".join(out), regions


def student_notebook(assignment: Assignment) -> nbformat.NotebookNode:
    notebook = nbformat.read(str(assignment.reference_notebook), as_version=4)
    total = 0
    for index, cell in enumerate(notebook.cells):
        if cell.cell_type == "code":
            cell.source, regions = strip_solutions(cell.source, f"cell {index + 1}")
            total += regions
            cell.outputs, cell.execution_count = [], None
        cell.metadata.pop("execution", None)
        cell["id"] = f"cell-{index + 1}"  # stable ids keep the generated file diff-free
    if total == 0:
        raise ConfigurationError(f"{assignment.reference_notebook} has no solution regions")
    checked = {check.question for check in assignment.checks(public_only=True)}
    notebook.cells = with_check_cells(notebook.cells, checked)
    notebook.metadata["grader"] = {"assignment": assignment.name, "version": assignment.version}
    return notebook


def with_check_cells(cells: list, questions: set[str]) -> list:
    """``cells`` with a check cell closing each question in ``questions`` (those with public
    checks: ``check()`` refuses a question without any)."""
    out: list = []
    current = None

    def close() -> None:
        already = any(f'check("{current}")' in c.source for c in out if c.cell_type == "code")
        if current in questions and not already:
            out.append(check_cell(current))

    for cell in cells:
        first_line = cell.source.lstrip().split("\n", 1)[0] if cell.cell_type == "markdown" else ""
        heading = QUESTION_HEADING.match(first_line)
        if heading or SECTION_HEADING.match(first_line):
            close()
            current = f"q{int(heading['number'])}" if heading else None
        out.append(cell)
    close()
    return out


def check_cell(question: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(
        f"# Check {question.upper()}: runs its public checks on your code above and shows what "
        "passes.\n# Hidden checks run when your instructor grades (this cell does nothing "
        "then).\nfrom grader import check\n\n"
        f'check("{question}")')
    cell.metadata = {"tags": [CHECK_TAG]}
    cell["id"] = f"check-{question}"
    return cell


def render(notebook: nbformat.NotebookNode) -> str:
    return nbformat.writes(notebook) + "\n"


def write_student_notebook(assignment: Assignment) -> Path:
    path = assignment.student_notebook
    path.write_text(render(student_notebook(assignment)))
    return path
