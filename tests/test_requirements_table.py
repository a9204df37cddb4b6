"""The assignment text is the specification: every practical's README.md maps each requirement
its student notebook states to the check(s) that test it, in a markdown table
``| requirement | check |`` whose check cells name check ids in backticks. This test fails
when a check (public or hidden) is missing from the table, when the table names a check that
does not exist, or when a requirement row names no check at all. A row may instead say in
words why it is ``not a check`` (the time limits, which the grader enforces on every run;
printing the loss, which is for the student's eyes): that is stated, never silent."""

import re

import pytest

from grader.assignment import load_assignment

from conftest import REPO

PRACTICALS = ["linear_softmax", "mlp", "cnn", "ocean_proximity", "custom_train_step"]
CHECK_ID = re.compile(r"`(q\d+\.[A-Za-z0-9_]+)`")


def _cells(line: str) -> list[str]:
    return [cell.strip() for cell in line.strip().strip("|").split("|")]


def requirement_table(text: str) -> list[tuple[str, list[str]]]:
    """(requirement, [check ids]) for each row of the ``| requirement | check |`` table."""
    lines = text.splitlines()
    headers = [i for i, line in enumerate(lines) if line.lstrip().startswith("|")
               and [c.lower() for c in _cells(line)] == ["requirement", "check"]]
    if not headers:
        return []
    start = headers[0]
    rows = []
    for line in lines[start + 2:]:  # the header, then the |---|---| line
        if not line.lstrip().startswith("|"):
            break
        cells = _cells(line)
        if len(cells) != 2:
            raise AssertionError(f"a row of the requirement table has {len(cells)} cells: {line}")
        rows.append((cells[0], CHECK_ID.findall(cells[1])))
    return rows


def test_the_table_parser_reads_ids_and_rows():
    text = ("intro\n\n| requirement | check |\n|---|---|\n| `a` is 1 | `q1.a_is_one` |\n"
            "| b and c | `q2.b`, `q2.c` (hidden) |\n| untested | - |\n\nafter\n| x | y |\n")
    assert requirement_table(text) == [("`a` is 1", ["q1.a_is_one"]),
                                       ("b and c", ["q2.b", "q2.c"]), ("untested", [])]
    assert requirement_table("| requirement | what |\n|---|---|\n| a | `q1.a` |\n") == []


def _stated_as_not_a_check(text: str) -> set[str]:
    return {_cells(line)[0] for line in text.splitlines()
            if line.lstrip().startswith("|") and len(_cells(line)) == 2
            and "not a check" in _cells(line)[1]}


@pytest.mark.parametrize("name", PRACTICALS)
def test_every_check_is_in_the_requirement_table_and_nothing_else(name):
    readme = REPO / "assignments" / name / "README.md"
    rows = requirement_table(readme.read_text())
    assert rows, f"{readme} has no `| requirement | check |` table"
    checks = {c.id for c in load_assignment(name, REPO).checks()}  # public and hidden
    named = {check_id for _, ids in rows for check_id in ids}
    assert not checks - named, f"checks missing from the table of {readme}: {checks - named}"
    assert not named - checks, f"the table of {readme} names unknown checks: {named - checks}"
    untested = [requirement for requirement, ids in rows
                if not ids and requirement not in _stated_as_not_a_check(readme.read_text())]
    assert not untested, f"requirements of {name} that no check tests: {untested}"
