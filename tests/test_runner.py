"""`grader run` on the toy assignment: layouts, resume after SIGKILL, cache, gradebook, CLI."""

import csv
import os
import shutil
import signal
import subprocess
import sys
import time
import zipfile

import nbformat
import pytest

from grader.discovery import discover
from grader.executor import GradeOptions
from grader.gradebook import Gradebook
from grader.results import Status, SubmissionResult
from grader.runner import run_batch

from conftest import TOY_COURSE, sandbox_mode

REFERENCE = TOY_COURSE / "reference" / "toy" / "toy.ipynb"
STUB = TOY_COURSE / "assignments" / "toy" / "toy.ipynb"


def test_discovers_plain_folder_canvas_moodle_and_zip_layouts(tmp_path):
    root = tmp_path / "subs"
    root.mkdir()
    shutil.copy(REFERENCE, root / "alice.ipynb")
    (root / "bob").mkdir()
    shutil.copy(REFERENCE, root / "bob" / "whatever name.ipynb")
    shutil.copy(REFERENCE, root / "smithjane_LATE_12345_67890_toy-1.ipynb")
    moodle = root / "Jane Doe_4242_assignsubmission_file_"
    moodle.mkdir()
    shutil.copy(REFERENCE, moodle / "toy.ipynb")
    (root / "two").mkdir()
    shutil.copy(REFERENCE, root / "two" / "a.ipynb")
    shutil.copy(REFERENCE, root / "two" / "b.ipynb")
    (root / "empty_folder").mkdir()
    with zipfile.ZipFile(root / "late_batch.zip", "w") as bundle:
        bundle.write(REFERENCE, "zoe.ipynb")
        bundle.writestr("../escape.ipynb", "{}")
    found = {s.student_id: s for s in discover(root, tmp_path / "unpacked")}
    assert sorted(found) == ["Jane_Doe_4242", "alice", "bob", "empty_folder", "smithjane_12345",
                             "two", "zoe"]
    assert found["bob"].path.name == "whatever name.ipynb" and found["bob"].folder
    assert "2 notebooks" in found["two"].problem and found["two"].path is None
    assert "No .ipynb notebook" in found["empty_folder"].problem
    assert not (tmp_path / "escape.ipynb").exists()


def _personal_copy(source, target, name):
    """Every student's notebook differs a little, as real ones do (the cache keys on bytes)."""
    notebook = nbformat.read(str(source), as_version=4)
    notebook.cells.insert(0, nbformat.v4.new_markdown_cell(f"Submitted by {name}"))
    nbformat.write(notebook, str(target))


def _batch(tmp_path, count):
    subs = tmp_path / "subs"
    subs.mkdir(exist_ok=True)
    for index in range(count):
        source = REFERENCE if index % 2 == 0 else STUB
        _personal_copy(source, subs / f"s{index:02d}.ipynb", f"s{index:02d}")
    return subs


def test_rerun_uses_stored_results_and_the_gradebook_keeps_history(tmp_path, toy):
    subs = _batch(tmp_path, 3)
    out = tmp_path / "out"
    options = GradeOptions(sandbox=sandbox_mode())
    first = run_batch(subs, toy, out, options, workers=2, progress=False)
    assert (first.executed, first.cached) == (3, 0)
    second = run_batch(subs, toy, out, options, workers=2, progress=False)
    assert (second.executed, second.cached) == (0, 3)
    _personal_copy(REFERENCE, subs / "s01.ipynb", "s01, fixed")  # the student fixed it
    third = run_batch(subs, toy, out, options, workers=2, progress=False)
    assert (third.executed, third.cached) == (1, 2)
    book = Gradebook(out / "gradebook.sqlite")
    assert [(run, score) for run, score, _ in book.history("toy", "s01")] == \
        [(1, 0.0), (2, 0.0), (3, 5.0)]
    assert book.previous_results("toy", 3)["s01"]["score"] == 0.0
    rows = list(csv.DictReader((out / "grades.csv").open()))
    assert [(r["student_id"], r["score"], r["status"]) for r in rows] == [
        ("s00", "5", "ok"), ("s01", "5", "ok"), ("s02", "5", "ok")]
    stored = SubmissionResult.from_json((out / "results" / "s00.json").read_text())
    assert stored.sandbox in ("bubblewrap", "off") and stored.versions["grader"]
    assert {c.id for c in stored.checks} == {"q1.square_small_example", "q1.square_hidden_input",
                                             "q2.mean_of_squares_value"}


def _grader(*args, **kwargs):
    return subprocess.Popen([sys.executable, "-m", "grader.cli", "--course", str(TOY_COURSE),
                             *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            **kwargs)


def test_sigkill_half_way_then_rerun_gives_the_same_grades(tmp_path):
    subs = _batch(tmp_path, 6)
    env = {**os.environ, "GRADER_CACHE": str(tmp_path / "cache")}
    common = ["run", str(subs), "-a", "toy", "-j", "1", "--sandbox", sandbox_mode(),
              "--no-reports"]
    full = _grader(*common, "--out", str(tmp_path / "full"), env=env)
    assert full.wait(timeout=300) == 0, full.stderr.read()
    killed = _grader(*common, "--out", str(tmp_path / "killed"),
                     env={**env, "GRADER_CACHE": str(tmp_path / "cache2")})
    results = tmp_path / "killed" / "results"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and len(list(results.glob("*.json"))) < 2:
        time.sleep(0.1)
    killed.send_signal(signal.SIGKILL)
    killed.wait()
    finished = {p.name: p.stat().st_mtime_ns for p in results.glob("*.json")}
    assert 2 <= len(finished) < 6
    resumed = _grader(*common, "--out", str(tmp_path / "killed"),
                      env={**env, "GRADER_CACHE": str(tmp_path / "cache2")})
    stdout, stderr = resumed.communicate(timeout=300)
    assert resumed.returncode == 0, stderr
    assert f"{6 - len(finished)} executed, {len(finished)} unchanged" in stdout
    for name, mtime in finished.items():  # finished submissions were not executed again
        assert (results / name).stat().st_mtime_ns == mtime

    def grades(path):
        return [(r["student_id"], r["score"], r["status"]) for r in
                csv.DictReader((path / "grades.csv").open())]

    assert grades(tmp_path / "killed") == grades(tmp_path / "full")


def test_cli_exit_codes_and_messages(tmp_path):
    unknown = _grader("run", str(tmp_path), "-a", "nope")
    _, stderr = unknown.communicate(timeout=60)
    assert unknown.returncode == 4
    assert "ConfigurationError: unknown assignment 'nope'; available: toy" in stderr
    missing = _grader("report", str(tmp_path / "nothing"))
    _, stderr = missing.communicate(timeout=60)
    assert missing.returncode == 4 and "run `grader run` first" in stderr


@pytest.mark.parametrize("status", list(Status))
def test_every_status_explains_itself(status):
    assert len(status.explanation) > 30
