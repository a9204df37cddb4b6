"""The student's self-check agrees with the batch grader on the public checks."""

import json
import shutil
import subprocess
import sys

import nbformat
from nbclient import NotebookClient

from grader.executor import GradeOptions, grade_submission
from grader.selfcheck import _public_only

from conftest import TOY_COURSE

ASSIGNMENT_DIR = TOY_COURSE / "assignments" / "toy"
REFERENCE = TOY_COURSE / "reference" / "toy" / "toy.ipynb"


def _cli(*args, cwd):
    return subprocess.run([sys.executable, "-m", "grader.cli", *args], cwd=cwd,
                          capture_output=True, text=True, timeout=120)


def test_grader_check_passes_the_reference(tmp_path):
    shutil.copy(REFERENCE, ASSIGNMENT_DIR / "_selfcheck_reference.ipynb")
    try:
        run = _cli("check", "_selfcheck_reference.ipynb", "--html", str(tmp_path / "f.html"),
                   cwd=ASSIGNMENT_DIR)
    finally:
        (ASSIGNMENT_DIR / "_selfcheck_reference.ipynb").unlink()
    assert run.returncode == 0, run.stdout + run.stderr
    assert "PASS  q1.square_small_example  (1/1)" in run.stdout
    assert "hidden" not in run.stdout.split("public checks")[0]
    assert (tmp_path / "f.html").exists()


def test_grader_check_explains_what_to_write_on_the_stub():
    run = _cli("check", "toy.ipynb", cwd=ASSIGNMENT_DIR)
    assert run.returncode == 5
    assert "FAIL  q1.square_small_example" in run.stdout
    assert "`square` is not written yet" in run.stdout
    assert "q1.square_hidden_input" not in run.stdout  # hidden checks never run here


def test_in_notebook_check_matches_the_batch_verdicts(tmp_path, toy):
    notebook = nbformat.read(str(REFERENCE), as_version=4)
    notebook.cells.append(nbformat.v4.new_code_cell(
        "from grader import check\nimport json\nreport = check()\n"
        "print(json.dumps([[r.id, r.passed] for r in report.results]))"))
    NotebookClient(notebook, timeout=60, resources={"metadata": {"path": str(ASSIGNMENT_DIR)}}
                   ).execute()
    in_notebook = json.loads(notebook.cells[-1].outputs[-1]["text"])
    batch = grade_submission(REFERENCE, _public_only(toy), GradeOptions(
        sandbox="off", public_only=True, scratch_root=tmp_path), "s")
    assert in_notebook == [[c.id, c.passed] for c in batch.checks]
    assert len(in_notebook) == 1  # the one public check; hidden ones never load


def test_in_notebook_check_is_silent_while_the_grader_executes(monkeypatch):
    from grader import check

    monkeypatch.setenv("GRADER_EXECUTING", "1")
    assert check("q1") is None
