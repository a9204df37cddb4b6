"""Time limits that hold whatever a notebook does (issue 13, "a worker held far past every
limit"): a loop inside C code, ignored interrupts and sabotaged I/O, in a cell or in a
function the checks call, graded with both kernel providers; submission files that are
not regular files; and a mixed batch that finishes on time with every good notebook graded.

The limits are made small (cell 5 s, notebook 10 s, checks 10 s). The bounds asserted are
the ones the grader guarantees (``grader.executor.time_bound_s``), not speed measurements.
"""

import os
import shutil
import socket
import subprocess
import sys
import threading
import time
import zipfile

import psutil
import pytest

from grader.assignment import Limits
from grader.discovery import discover
from grader.executor import (GradeOptions, checks_budget_s, grade_submission,
                             read_submission_bytes, time_bound_s)
from grader.errors import InvalidSubmission
from grader.results import Status
from grader.runner import run_batch
from grader.sandbox import Deadline

from conftest import TESTS, TOY_COURSE, requires_bubblewrap

HOSTILE = TESTS / "fixtures" / "adversarial" / "limits"
REFERENCE = TOY_COURSE / "reference" / "toy" / "toy.ipynb"
LIMITS = Limits(cell_timeout_s=5, notebook_timeout_s=10, checks_timeout_s=10, memory_mb=1024,
                max_processes=64, max_file_mb=16, max_output_kb=64)
STUCK_IN_A_CELL = ["c_level_loop", "ignores_sigint", "sabotaged_io"]
STUCK_IN_A_CHECK = "sabotaged_io_at_check_time"


def _stubborn_process() -> subprocess.Popen:
    """A process that ignores SIGINT and SIGTERM: only a kill ends it."""
    code = ("import signal, time\n"
            "for s in (signal.SIGINT, signal.SIGTERM):\n"
            "    signal.signal(s, signal.SIG_IGN)\n"
            "while True:\n"
            "    time.sleep(1)\n")
    return subprocess.Popen([sys.executable, "-c", code], start_new_session=True)


def test_deadline_kills_a_process_that_ignores_signals():
    proc = _stubborn_process()
    deadline = Deadline(proc.pid)
    deadline.arm("cell", 0.5)
    try:
        assert proc.wait(timeout=60) == -9  # a guard against hanging, not a timing assertion
    finally:
        proc.kill()
    assert deadline.stop() == "cell"
    assert deadline.killed.is_set()


def test_deadline_fires_the_earliest_armed_limit_and_never_a_cleared_one():
    proc = _stubborn_process()
    deadline = Deadline(proc.pid)
    deadline.arm("late", 600)
    deadline.arm("cleared", 0.1)
    deadline.clear("cleared")
    deadline.arm("early", 0.4)
    try:
        proc.wait(timeout=60)
    finally:
        proc.kill()
    assert deadline.stop() == "early"


def test_stopped_deadline_kills_nothing():
    proc = _stubborn_process()
    try:
        deadline = Deadline(proc.pid)
        deadline.arm("cell", 600)
        assert deadline.stop() is None
        assert not deadline.is_alive()
        assert proc.poll() is None
    finally:
        proc.kill()
        proc.wait()


def test_checks_budget_is_the_limits_key_or_the_sum_of_the_checks_timeouts(toy):
    assert checks_budget_s(toy, GradeOptions()) == 3 * 60.0  # three checks, 60 s each
    assert checks_budget_s(toy, GradeOptions(public_only=True)) == 60.0
    assert checks_budget_s(toy, GradeOptions(limits=LIMITS)) == 10.0
    assert time_bound_s(toy, GradeOptions(limits=LIMITS)) == 10 + 10 + 30


def _special_files(folder):
    """A FIFO, a socket and a folder named .ipynb, and a student folder whose only
    notebook is a FIFO. Returns the socket, to be closed by the caller."""
    os.mkfifo(folder / "something.ipynb")
    server = socket.socket(socket.AF_UNIX)
    server.bind(str(folder / "a_socket.ipynb"))
    (folder / "a_folder.ipynb").mkdir()
    (folder / "carol").mkdir()
    os.mkfifo(folder / "carol" / "homework.ipynb")
    return server


SPECIAL = {"something": "a named pipe", "a_socket": "a socket", "carol": "a named pipe",
           "a_folder.ipynb": "No .ipynb notebook was found"}


def _in_a_thread(function, *args):
    """Run ``function``; fail (instead of hanging the suite) if it blocks."""
    box = {}

    def run():
        try:
            box["value"] = function(*args)
        except BaseException as error:  # noqa: BLE001 - raised again in the test's thread
            box["error"] = error

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(timeout=120)
    assert not worker.is_alive(), f"{function.__name__} blocked"
    if "error" in box:
        raise box["error"]
    return box["value"]


def test_special_files_named_ipynb_are_invalid_and_never_block(tmp_path, toy):
    submissions = tmp_path / "subs"
    submissions.mkdir()
    server = _special_files(submissions)
    try:
        found = {s.student_id: s for s in discover(submissions, tmp_path / "unpacked")}
        assert sorted(found) == sorted(SPECIAL)
        for student, submission in found.items():
            if submission.path is None:  # the folder named .ipynb holds no notebook
                assert SPECIAL[student] in submission.problem
                continue
            with pytest.raises(InvalidSubmission, match=SPECIAL[student]):
                _in_a_thread(read_submission_bytes, submission.path)
            result = _in_a_thread(grade_submission, submission.path, toy,
                                  GradeOptions(sandbox="off", limits=LIMITS), student)
            assert result.status is Status.INVALID
            assert f"is {SPECIAL[student]}, not a notebook file" in result.message
            assert all(c.message.startswith("Not run:") for c in result.checks)
    finally:
        server.close()


def test_a_zip_cannot_plant_a_fifo(tmp_path):
    # A zip entry may carry a FIFO's mode bits; it is unpacked as a regular file.
    archive = tmp_path / "batch.zip"
    with zipfile.ZipFile(archive, "w") as bundle:
        entry = zipfile.ZipInfo("dave.ipynb")
        entry.external_attr = 0o010644 << 16  # S_IFIFO | 0644
        bundle.writestr(entry, "{}")
    (found,) = discover(archive, tmp_path / "unpacked")
    assert found.path.is_file() and not found.path.is_symlink()
    assert read_submission_bytes(found.path) == b"{}"


def _grader_processes(cache) -> list[str]:
    """Processes started for this test session's kernels (their io folders live in its cache).
    This test process's own zygote and spare kernel (left by earlier tests that graded in
    process, under xdist in the same worker) are stopped first: they live on by design."""
    from grader.executor import _Spare
    from grader.kernels import stop_zygote

    _Spare.release()
    stop_zygote()
    left = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(cache) in cmdline and proc.pid != os.getpid():
            left.append(cmdline)
    return left


@pytest.fixture(scope="module", params=["fresh", "prepared"])
def graded(request, tmp_path_factory):
    """The uncooperative notebooks, a good one and the special files, graded in one batch
    as `grader run` grades them (two workers, warm kernels), with each kernel provider."""
    from grader.assignment import load_assignment

    toy = load_assignment("toy", TOY_COURSE)
    root = tmp_path_factory.mktemp("hard-limits")
    submissions = root / "submissions"
    submissions.mkdir()
    for notebook in HOSTILE.glob("*.ipynb"):
        shutil.copy(notebook, submissions / notebook.name)
    # Graded first (their names sort first), one on each worker: they wait for the workers'
    # zygotes to start, which the bound does not count (see time_bound_s).
    shutil.copy(REFERENCE, submissions / "0_good.ipynb")
    shutil.copy(REFERENCE, submissions / "0_good_too.ipynb")
    server = _special_files(submissions)
    options = GradeOptions(sandbox="required", limits=LIMITS, warm_kernels=True,
                           kernel_provider=request.param)
    try:
        summary = run_batch(submissions, toy, root / "out", options, workers=2,
                            use_cache=False, progress=False)
    finally:
        server.close()
    return {"results": {r.student_id: r for r in summary.results},
            "bound": time_bound_s(toy, options), "provider": request.param,
            "leftovers": _grader_processes(os.environ["GRADER_CACHE"])}


@requires_bubblewrap
@pytest.mark.parametrize("name", STUCK_IN_A_CELL)
def test_a_cell_that_will_not_stop_is_killed_within_the_bound(graded, name):
    result = graded["results"][name]
    assert result.duration_s <= graded["bound"], result.timings
    assert result.status is Status.TIMEOUT
    assert result.message.startswith("Cell 2 ran past its time limit of 5 s and did not stop "
                                     "when interrupted, so the grader stopped it")
    assert result.cells[-1].timed_out and result.cells[-1].index == 1
    assert result.score == 0
    assert all(c.message.startswith("Not run: Cell 2 ran past") for c in result.checks)


@requires_bubblewrap
def test_a_check_that_will_not_stop_is_killed_and_the_rest_fail_fast(graded):
    result = graded["results"][STUCK_IN_A_CHECK]
    assert result.duration_s <= graded["bound"], result.timings
    assert result.status is Status.TIMEOUT
    assert "A check (q1.square_small_example) ran past its time limit of 10 s" in result.message
    assert "did not stop when interrupted" in result.message
    first, *rest = result.checks
    assert not first.passed and "This check could not finish" in first.message
    assert rest and all(c.message.startswith("Not run: the kernel") for c in rest)


@requires_bubblewrap
def test_a_notebook_that_blinds_its_descriptors_frees_its_worker_within_the_bound(graded):
    # zmq inside the kernel may notice and abort (crashed) or not (then it is killed).
    result = graded["results"]["blinds_descriptors"]
    assert result.duration_s <= graded["bound"], result.timings
    assert result.status in (Status.CRASHED, Status.TIMEOUT), result.message
    assert "while cell 2 ran" in result.message or result.message.startswith("Cell 2 ran past")
    assert result.score == 0


@requires_bubblewrap
def test_a_slow_check_that_stops_when_interrupted_keeps_its_kernel(graded):
    result = graded["results"]["slow_function_at_check_time"]
    assert result.duration_s <= graded["bound"], result.timings
    assert result.status is Status.TIMEOUT
    assert result.message.startswith("The checks ran out of their time limit of 10 s before 2 "
                                     "of them ran")
    first, *rest = result.checks
    assert "This check could not finish: no answer within 10 s" in first.message
    assert all(c.message.startswith("Not run: the checks' time limit of 10 s ran out")
               for c in rest)


@requires_bubblewrap
def test_good_notebooks_beside_them_get_full_marks(graded):
    for name in ("0_good", "0_good_too"):
        result = graded["results"][name]
        assert (result.status, result.score, result.max_score) == (Status.OK, 5, 5)


@requires_bubblewrap
@pytest.mark.parametrize("name", sorted(SPECIAL))
def test_special_files_in_a_batch_are_invalid(graded, name):
    result = graded["results"][name]
    assert result.status is Status.INVALID
    assert SPECIAL[name] in result.message


@requires_bubblewrap
def test_no_kernel_survives_its_kill(graded):
    assert graded["leftovers"] == []


@requires_bubblewrap
def test_mixed_batch_of_40_finishes_within_its_limits(tmp_path, toy):
    """Two of each uncooperative notebook among 32 good ones, at two workers: the batch
    ends within (sum of the submissions' limits) / 2 + 60 s, every good notebook with
    full marks and every uncooperative one with a timeout the student can read."""
    submissions = tmp_path / "subs"
    submissions.mkdir()
    hostile = [*STUCK_IN_A_CELL, STUCK_IN_A_CHECK]
    for copy in (1, 2):
        for name in hostile:
            shutil.copy(HOSTILE / f"{name}.ipynb", submissions / f"{name}_{copy}.ipynb")
    for student in range(40 - 2 * len(hostile)):
        shutil.copy(REFERENCE, submissions / f"good_{student:02d}.ipynb")
    options = GradeOptions(sandbox="required", limits=LIMITS, warm_kernels=True,
                           kernel_provider="prepared")
    limit = 40 * (LIMITS.notebook_timeout_s + checks_budget_s(toy, options)) / 2 + 60
    started = time.monotonic()
    summary = run_batch(submissions, toy, tmp_path / "out", options, workers=2,
                        use_cache=False, progress=False)
    elapsed = time.monotonic() - started
    results = {r.student_id: r for r in summary.results}
    assert len(results) == 40
    good = [r for name, r in results.items() if name.startswith("good_")]
    assert [(r.status, r.score) for r in good] == [(Status.OK, 5)] * len(good)
    for name, result in results.items():
        if not name.startswith("good_"):
            assert result.status is Status.TIMEOUT, (name, result.message)
            assert "did not stop when interrupted, so the grader stopped" in result.message
    assert elapsed <= limit, f"{elapsed:.0f} s for a batch whose limits allow {limit:.0f} s"


@requires_bubblewrap
@pytest.mark.parametrize("name", ["ignores_sigint", STUCK_IN_A_CHECK])
def test_the_deadline_thread_kills_when_the_interrupt_path_waits_too_long(tmp_path, toy,
                                                                          monkeypatch, name):
    """The interrupt path made useless (its grace far past every limit): the Deadline
    thread alone still kills the kernel at the notebook's or the check's hard limit."""
    from grader import executor

    monkeypatch.setattr(executor, "INTERRUPT_GRACE_S", 1000.0)
    options = GradeOptions(sandbox="required", limits=LIMITS, kernel_provider="fresh",
                           scratch_root=tmp_path)
    result = grade_submission(HOSTILE / f"{name}.ipynb", toy, options, name)
    assert result.duration_s <= time_bound_s(toy, options), result.timings
    assert result.status is Status.TIMEOUT
    assert "did not stop when interrupted, so the grader stopped" in result.message


def test_a_worker_stuck_in_the_grader_ends_and_the_batch_goes_on(tmp_path, toy, monkeypatch):
    """The last resort, for a bug of the grader's own (a wait that killing the kernel does
    not end): the stuck worker exits, its submission is retried once, then reported, and
    every other submission is still graded."""
    from grader import worker

    real = worker.grade_submission

    def stuck_on_one(path, assignment, options, student_id, **kwargs):
        if student_id == "a_stuck":
            threading.Event().wait()  # for ever
        return real(path, assignment, options, student_id, **kwargs)

    # The workers are forked from this process, so they see the patched module.
    monkeypatch.setattr(worker, "grade_submission", stuck_on_one)
    monkeypatch.setattr(worker, "time_bound_s", lambda *args: 0.0)
    monkeypatch.setattr(worker, "STUCK_WORKER_ALLOWANCE_S", 0.5)
    submissions = tmp_path / "subs"
    submissions.mkdir()
    for name in ("a_stuck", "b_empty", "c_empty"):
        (submissions / f"{name}.ipynb").write_text("")
    summary = run_batch(submissions, toy, tmp_path / "out",
                        GradeOptions(sandbox="off", limits=LIMITS), workers=1,
                        use_cache=False, progress=False)
    results = {r.student_id: r for r in summary.results}
    assert sorted(results) == ["a_stuck", "b_empty", "c_empty"]
    assert results["a_stuck"].status is Status.GRADER_ERROR
    assert "the grading worker died twice" in results["a_stuck"].message
    for name in ("b_empty", "c_empty"):
        assert results[name].status is Status.INVALID
        assert "The file is empty" in results[name].message
