"""The first hour of a real user (issue 16), on the real CLI in a subprocess:
results always written into a new OUT, ``--no-cache`` re-executes, a quiet terminal,
empty scores for grader errors, data that fetches itself, Unicode student names, check
cells in the student notebooks."""

from __future__ import annotations

import contextlib
import csv
import functools
import http.server
import json
import os
import re
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from conftest import REPO, SHARED_DATA, TOY_COURSE, sandbox_mode

TOY_REFERENCE = TOY_COURSE / "reference" / "toy" / "toy.ipynb"


def grader(*args: str, cwd: Path, cache: Path, env: dict | None = None,
           timeout: int = 300) -> subprocess.CompletedProcess:
    """``python -m grader.cli ARGS`` as a user runs it, with this worktree first on the path."""
    environment = {**os.environ, "PYTHONPATH": str(REPO), "GRADER_CACHE": str(cache),
                   **(env or {})}
    return subprocess.run([sys.executable, "-m", "grader.cli", *args], cwd=cwd, env=environment,
                          capture_output=True, text=True, timeout=timeout)


def toy_submissions(folder: Path, names: dict[str, str]) -> Path:
    """``name -> code appended to the reference`` (distinct bytes, distinct cache keys)."""
    folder.mkdir(parents=True, exist_ok=True)
    reference = json.loads(TOY_REFERENCE.read_text())
    for name, extra in names.items():
        notebook = json.loads(json.dumps(reference))
        notebook["cells"].append({"cell_type": "code", "metadata": {}, "outputs": [],
                                  "execution_count": None, "source": extra})
        (folder / name).write_text(json.dumps(notebook))
    return folder


def grades(out: Path) -> list[dict[str, str]]:
    with open(out / "grades.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def run_toy(subs: Path, out: Path, cache: Path, *extra: str) -> subprocess.CompletedProcess:
    done = grader("--course", str(TOY_COURSE), "run", str(subs), "-a", "toy", "--out", str(out),
                  "--sandbox", sandbox_mode(), "--workers", "1", *extra, cwd=out.parent,
                  cache=cache)
    assert done.returncode == 0, done.stderr
    return done


# ---------------------------------------------------------------- 1. cache hits into a new OUT

PER_RUN_FIELDS = ("executed_notebook",)  # the path of this OUT's copy


def test_a_second_out_folder_sharing_the_cache_gets_every_row_result_and_page(tmp_path):
    subs = toy_submissions(tmp_path / "subs", {"ann.ipynb": "x = 1", "bob.ipynb": "x = 2"})
    cache = tmp_path / "cache"
    first = run_toy(subs, tmp_path / "a", cache)
    second = run_toy(subs, tmp_path / "b", cache)
    assert "2 executed, 0 unchanged" in first.stdout
    assert "0 executed, 2 unchanged" in second.stdout  # nothing ran again...
    a, b = tmp_path / "a", tmp_path / "b"
    assert [row["student_id"] for row in grades(b)] == ["ann", "bob"]  # ...yet every row is here
    assert grades(a) == grades(b)
    for student in ("ann", "bob"):
        first_result = json.loads((a / "results" / f"{student}.json").read_text())
        second_result = json.loads((b / "results" / f"{student}.json").read_text())
        assert second_result["executed_notebook"] == str(b / "executed" / f"{student}.ipynb")
        for name in PER_RUN_FIELDS:
            first_result.pop(name), second_result.pop(name)
        assert first_result == second_result
        assert (b / "executed" / f"{student}.ipynb").read_bytes() == \
            (a / "executed" / f"{student}.ipynb").read_bytes()
        assert (a / "feedback" / f"{student}.html").read_text() == \
            (b / "feedback" / f"{student}.html").read_text()
    # the executed notebook is kept in the cache by key, beside its result
    key = json.loads((a / "results" / "ann.json").read_text())["cache_key"]
    assert (cache / "results" / f"{key}.ipynb").is_file()
    # and the copied page shows the executed notebook (its output 28.5 is there)
    assert "28.5" in (b / "feedback" / "ann.html").read_text()


# ---------------------------------------------------------------- 2. --no-cache re-executes

def test_an_edited_grader_does_not_reuse_its_predecessors_results(tmp_path, monkeypatch):
    """The cache key holds a digest of the grader's source: a grader edited (or upgraded
    without a new version number) grades again instead of serving what the old code gave."""
    from grader import executor
    from grader.assignment import load_assignment

    package = tmp_path / "grader"
    shutil.copytree(REPO / "grader", package, ignore=shutil.ignore_patterns("__pycache__"))
    before = executor.code_digest(package)
    assert executor.code_digest(package) == before
    with open(package / "checks.py", "a") as checks:
        checks.write("# one edited line\n")
    assert executor.code_digest(package) != before

    toy = load_assignment("toy", TOY_COURSE)
    raw = TOY_REFERENCE.read_bytes()
    key = executor.cache_key(raw, toy)
    monkeypatch.setattr(executor, "code_digest", lambda: "another grader")
    assert executor.cache_key(raw, toy) != key


def test_no_cache_executes_again_even_what_out_already_holds(tmp_path):
    subs = toy_submissions(tmp_path / "subs", {"ann.ipynb": "x = 1"})
    cache = tmp_path / "cache"
    out = tmp_path / "out"
    run_toy(subs, out, cache)
    before = json.loads((out / "results" / "ann.json").read_text())
    again = run_toy(subs, out, cache)
    assert "0 executed, 1 unchanged" in again.stdout
    forced = run_toy(subs, out, cache, "--no-cache")
    assert "1 executed, 0 unchanged" in forced.stdout
    after = json.loads((out / "results" / "ann.json").read_text())
    assert after["timings"] != before["timings"]  # a new execution, not the stored one
    assert after["score"] == before["score"] == 5


# ---------------------------------------------------------------- 4. grader errors: empty score

def test_a_grader_error_row_has_an_empty_score_and_the_summary_asks_for_a_re_run(tmp_path):
    # The grader cannot provide housing.csv (no copy, no download): its fault, not Ann's.
    course = housing_toy_course(tmp_path)
    subs = toy_submissions(tmp_path / "subs", {"ann.ipynb": "x = 1"})
    env = {"GRADER_DATA": str(tmp_path / "no-data"), "GRADER_HOUSING_URL": closed_port_url()}
    done = grader("--course", str(course), "run", str(subs), "-a", "toy", "--out", "out",
                  "--sandbox", sandbox_mode(), cwd=tmp_path, cache=tmp_path / "cache", env=env)
    assert done.returncode == 1, done.stderr  # ExitCode.SUBMISSIONS_NOT_GRADED
    row, = grades(tmp_path / "out")
    assert (row["student_id"], row["status"], row["score"], row["max_score"]) == \
        ("ann", "grader-error", "", "5")
    assert "1 row(s) need a re-run" in done.stdout
    assert "mean score" not in done.stdout  # no grade was given, so no mean of 0s


# ---------------------------------------------------------------- 3. a quiet terminal

# What TensorFlow's C++ logging writes straight to file descriptor 2, bypassing Python.
FAKE_CPP_LOG = ("import os\n"
                "os.write(2, b'WARNING: All log messages before absl::InitializeLog() is called "
                "are written to STDERR\\n')\n"
                "os.write(2, b'I0000 00:00:1.2 2 cpu_feature_guard.cc:227] This TensorFlow "
                "binary is optimized\\n')\n"
                "os.write(1, b'E0000 00:00:1.2 2 node_def_util.cc:682] NodeDef mentions\\n')\n")
PROGRESS = re.compile(r"\s*\d+%\|.*\| \d+/\d+ \[.*")


def assert_only_progress(stderr: str) -> None:
    """Every line of the grader's stderr is the progress bar (redrawn after carriage returns)."""
    for line in re.split(r"[\r\n]+", stderr):
        assert not line.strip() or PROGRESS.fullmatch(line), f"not the progress bar: {line!r}"
    for noise in ("I0000", "E0000", "WARNING: All log messages", "cpu_feature_guard"):
        assert noise not in stderr


@pytest.mark.parametrize("provider", ["fresh", "prepared"])
def test_kernel_output_on_file_descriptors_never_reaches_the_terminal(tmp_path, provider):
    subs = toy_submissions(tmp_path / "subs", {"ann.ipynb": FAKE_CPP_LOG,
                                               "bob.ipynb": FAKE_CPP_LOG + "x = 2"})
    done = run_toy(subs, tmp_path / "out", tmp_path / "cache", "--kernel-provider", provider)
    assert "2 executed" in done.stdout
    assert_only_progress(done.stderr)
    assert "100%" in done.stderr  # the bar itself is there


def test_a_tensorflow_batch_prints_only_the_progress_bar_and_the_summary(tmp_path):
    """A real TensorFlow practical, real kernels (the default provider: forked from a zygote
    where bubblewrap works), one student: TensorFlow's C++ start-up lines go to log files."""
    (tmp_path / "subs").mkdir()
    shutil.copy(REPO / "examples" / "submissions" / "linear_softmax" / "ada.ipynb",
                tmp_path / "subs" / "ada.ipynb")
    done = grader("run", "subs", "-a", "linear_softmax", "--out", "out", "--workers", "1",
                  "--sandbox", sandbox_mode(), "--no-reports", cwd=tmp_path,
                  cache=tmp_path / "cache", env={"GRADER_COURSE": str(REPO)})
    assert done.returncode == 0, done.stderr
    assert "Graded 1 submission(s): 1 executed" in done.stdout
    assert_only_progress(done.stderr)


# ---------------------------------------------------------------- 5. data that fetches itself

class _QuietHandler(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *args) -> None:  # keep the test output to the test's own lines
        pass


@contextlib.contextmanager
def serving(folder: Path):
    """``folder`` over HTTP on 127.0.0.1 (a real server, an ephemeral port); yields its URL."""
    handler = functools.partial(_QuietHandler, directory=str(folder))
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}"
    finally:
        server.shutdown()
        server.server_close()
        thread.join()


def closed_port_url() -> str:
    """An address where nothing listens: what an offline machine sees."""
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    return f"http://127.0.0.1:{port}/housing.csv"


needs_housing = pytest.mark.skipif(not (SHARED_DATA / "housing.csv").is_file(),
                                   reason=f"needs the real housing.csv in {SHARED_DATA}")


@needs_housing
def test_grader_data_downloads_verifies_and_refuses_a_wrong_file(tmp_path):
    from grader.data import HOUSING_SHA256, sha256_of

    good, bad = tmp_path / "good", tmp_path / "bad"
    good.mkdir(), bad.mkdir()
    shutil.copy(SHARED_DATA / "housing.csv", good / "housing.csv")
    (bad / "housing.csv").write_text("longitude,latitude\n-122.23,37.88\n")
    cache = tmp_path / "cache"
    housing = cache / "data" / "housing"
    no_copy = {"GRADER_DATA": ""}  # no local copy anywhere: only the download can help

    with serving(bad) as url:
        wrong = grader("data", cwd=tmp_path, cache=cache,
                       env={**no_copy, "GRADER_HOUSING_URL": f"{url}/housing.csv"})
    assert wrong.returncode == 4
    assert "not the handson-ml2 housing.csv, so it was not kept" in wrong.stderr
    assert list(housing.iterdir()) == []  # nothing kept, not even a partial file

    offline = grader("data", cwd=tmp_path, cache=cache,
                     env={**no_copy, "GRADER_HOUSING_URL": closed_port_url()})
    assert offline.returncode == 4
    assert "could not be downloaded" in offline.stderr
    assert "If this machine is offline" in offline.stderr and "--data-dir" in offline.stderr
    assert list(housing.iterdir()) == []

    with serving(good) as url:
        # A wrong local copy is the user's to fix: refused, and not masked by a download.
        local = grader("data", "--data-dir", str(bad), cwd=tmp_path, cache=cache,
                       env={**no_copy, "GRADER_HOUSING_URL": f"{url}/housing.csv"})
        assert local.returncode == 4 and "not the handson-ml2 housing.csv" in local.stderr
        assert "downloading" not in local.stdout and list(housing.iterdir()) == []
        fetched = grader("data", cwd=tmp_path, cache=cache,
                         env={**no_copy, "GRADER_HOUSING_URL": f"{url}/housing.csv"})
    assert fetched.returncode == 0, fetched.stderr
    assert "downloading it from http://127.0.0.1:" in fetched.stdout
    assert sha256_of(housing / "housing.csv") == HOUSING_SHA256
    assert [p.name for p in housing.iterdir()] == ["housing.csv"]

    # From now on the cache answers: no network needed.
    again = grader("data", cwd=tmp_path, cache=cache,
                   env={**no_copy, "GRADER_HOUSING_URL": closed_port_url()})
    assert again.returncode == 0 and "downloading" not in again.stdout


def housing_toy_course(tmp_path: Path) -> Path:
    """The toy course, its assignment needing housing.csv (fast: no TensorFlow)."""
    course = tmp_path / "course"
    shutil.copytree(TOY_COURSE, course)
    toml = course / "assignments" / "toy" / "assignment.toml"
    toml.write_text(toml.read_text().replace('notebook = "toy.ipynb"',
                                             'notebook = "toy.ipynb"\ndatasets = ["housing"]'))
    return course


@needs_housing
def test_grader_check_on_a_laptop_downloads_the_csv_first(tmp_path):
    course = housing_toy_course(tmp_path)
    shutil.copy(TOY_REFERENCE, tmp_path / "mine.ipynb")
    served = tmp_path / "served"
    served.mkdir()
    shutil.copy(SHARED_DATA / "housing.csv", served / "housing.csv")
    with serving(served) as url:
        done = grader("check", "mine.ipynb", "--assignment", "toy", cwd=tmp_path,
                      cache=tmp_path / "cache",
                      env={"GRADER_DATA": "", "GRADER_COURSE": str(course),
                           "GRADER_HOUSING_URL": f"{url}/housing.csv"})
    assert done.returncode == 0, done.stdout + done.stderr
    assert "downloading it from" in done.stderr
    assert (tmp_path / "cache" / "data" / "housing" / "housing.csv").is_file()


# ---------------------------------------------------------------- 6. make demo offline

def test_make_demo_offline_grades_the_other_practicals_and_says_how_to_get_the_csv(tmp_path):
    """A fresh clone without ../shared/data, offline: the demo's grading step (``make demo``
    less its pip install) with an empty data folder, an empty cache and an unreachable
    download. One TensorFlow practical stands for the four that need no CSV."""
    from grader.data import HOUSING_URL

    if shutil.which("make") is None:
        pytest.skip("needs make")
    (tmp_path / "empty").mkdir()
    env = {**os.environ, "PYTHONPATH": str(REPO), "GRADER_CACHE": str(tmp_path / "cache"),
           "GRADER_DATA": "", "GRADER_HOUSING_URL": closed_port_url()}
    done = subprocess.run(
        ["make", "--no-print-directory", "grade-demo", f"GRADER={sys.executable} -m grader.cli",
         "PRACTICALS=linear_softmax ocean_proximity", f"DATA_DIR={tmp_path / 'empty'}",
         f"REPORTS={tmp_path / 'reports'}"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=900)
    assert done.returncode == 0, done.stdout + done.stderr
    ocean = [line for line in done.stdout.splitlines() if line.startswith("== ocean_proximity")]
    assert ocean == [f"== ocean_proximity: skipped: housing.csv is not on this machine and could "
                     f"not be downloaded. Run 'grader data' where there is a network (it downloads"
                     f" and verifies the file), or download {HOUSING_URL} into a folder and run "
                     "'make demo DATA_DIR=that-folder'."]
    assert "If this machine is offline" in done.stderr  # grader data's own explanation
    rows = grades(tmp_path / "reports" / "linear_softmax")
    assert len(rows) == 5 and {row["status"] for row in rows} <= {"ok", "error"}
    assert not (tmp_path / "reports" / "ocean_proximity").exists()


# ---------------------------------------------------------------- 7. names from real classes

def test_a_class_with_unicode_accented_and_colliding_names_grades_every_student(tmp_path):
    import sqlite3

    files = {"with space é.ipynb": "x = 1", "李雷.ipynb": "x = 2", "王芳.ipynb": "x = 3",
             "a b.ipynb": "x = 4", "a_b.ipynb": "x = 5"}
    subs = toy_submissions(tmp_path / "subs", files)
    out = tmp_path / "out"
    done = run_toy(subs, out, tmp_path / "cache")
    assert "5 executed" in done.stdout
    rows = {row["student_id"]: row for row in grades(out)}
    assert len(rows) == 5 and {row["status"] for row in rows.values()} == {"ok"}
    assert {"with_space_é", "李雷", "王芳"} <= set(rows)
    apart = sorted(sid for sid in rows if sid.startswith("a_b-"))
    assert len(apart) == 2  # kept apart, neither refused as "more than one submission"
    for student in rows:
        result = json.loads((out / "results" / f"{student}.json").read_text(encoding="utf-8"))
        assert result["student_id"] == student and result["score"] == 5
        assert Path(result["source_path"]).name in files  # the original file name
        assert (out / "executed" / f"{student}.ipynb").is_file()
    sources = {Path(json.loads((out / "results" / f"{sid}.json").read_text())["source_path"]).name
               for sid in apart}
    assert sources == {"a b.ipynb", "a_b.ipynb"}
    pages = list((out / "feedback").glob("*.html"))
    assert len(pages) == 5
    shown = [page.read_text(encoding="utf-8") for page in pages]
    for student in rows:
        assert sum(f'<span class="mono" id="student">{student}</span>' in page
                   for page in shown) == 1
    assert "李雷" in (out / "index.html").read_text(encoding="utf-8")
    moodle = (out / "exports" / "moodle.csv").read_text(encoding="utf-8")
    assert all(student in moodle for student in rows)
    with sqlite3.connect(out / "gradebook.sqlite") as db:
        stored = {sid for (sid,) in db.execute("SELECT student_id FROM results")}
    assert stored == set(rows)


# ---------------------------------------------------------------- 8. check cells

def test_grader_generate_adds_a_check_cell_after_each_question_with_public_checks(tmp_path):
    course = tmp_path / "course"
    shutil.copytree(TOY_COURSE, course)
    student = course / "assignments" / "toy" / "toy.ipynb"
    student.unlink()
    done = grader("generate", cwd=course, cache=tmp_path / "cache")
    assert done.returncode == 0, done.stderr
    cells = json.loads(student.read_text())["cells"]
    sources = ["".join(c["source"]) for c in cells]
    check_at = [i for i, s in enumerate(sources) if 'check("q1")' in s]
    assert len(check_at) == 1
    assert sources[check_at[0] - 1].startswith("import numpy as np\n\ndef square")  # after Q1
    assert sources[check_at[0] + 1].startswith("## Q2")
    assert not any('check("q2")' in s for s in sources)  # q2 has no public checks
    assert cells[check_at[0]]["outputs"] == [] and cells[check_at[0]]["id"] == "check-q1"
    assert student.read_text() == (TOY_COURSE / "assignments" / "toy" / "toy.ipynb").read_text()


def _completed_student_notebook(path: Path) -> None:
    """What a student hands in: the generated notebook with its solutions written."""
    import nbformat

    from grader.authoring import with_check_cells

    notebook = nbformat.read(str(TOY_REFERENCE), as_version=4)
    notebook.cells = with_check_cells(notebook.cells, {"q1"})
    nbformat.write(notebook, str(path))


def test_a_check_cell_shows_a_table_in_jupyter_and_does_nothing_while_grading(tmp_path,
                                                                           monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    course = tmp_path / "course"
    shutil.copytree(TOY_COURSE, course)
    folder = course / "assignments" / "toy"
    _completed_student_notebook(folder / "done.ipynb")
    monkeypatch.setenv("PYTHONPATH", str(REPO))  # the kernel imports this grader
    monkeypatch.delenv("GRADER_EXECUTING", raising=False)
    for name in ("done.ipynb", "toy.ipynb"):  # solved, and the untouched stub
        notebook = nbformat.read(str(folder / name), as_version=4)
        NotebookClient(notebook, timeout=120, allow_errors=True,
                       resources={"metadata": {"path": str(folder)}}).execute()
        cell = next(c for c in notebook.cells if 'check("q1")' in c.source)
        shown, = [o for o in cell.outputs if o.output_type == "execute_result"]
        table = shown.data["text/html"]
        assert "<table>" in table and "q1.square_small_example" in table
        if name == "done.ipynb":
            assert "&#10004;" in table and "1/1" in table  # passed
        else:
            assert "&#10008;" in table and "0/1" in table  # failed, with what to fix
            assert "square" in shown.data["text/plain"]

    # Graded, the same notebook scores what the reference scores; the check cell is silent.
    subs = tmp_path / "subs"
    subs.mkdir()
    shutil.copy(folder / "done.ipynb", subs / "ann.ipynb")
    shutil.copy(TOY_REFERENCE, subs / "ref.ipynb")
    run_toy(subs, tmp_path / "out", tmp_path / "cache")
    rows = {row["student_id"]: row for row in grades(tmp_path / "out")}
    assert (rows["ann"]["score"], rows["ann"]["status"]) == (rows["ref"]["score"], "ok") == \
        ("5", "ok")
    executed = json.loads((tmp_path / "out" / "executed" / "ann.ipynb").read_text())
    check, = [c for c in executed["cells"] if 'check("q1")' in "".join(c["source"])]
    assert check["outputs"] == []
