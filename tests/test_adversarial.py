"""Hostile and broken submissions, graded in one batch beside good ones.

Each fixture notebook is named for its attack (tests/fixtures/adversarial). The batch
also holds the reference solution twice; they must score exactly as when graded alone.
"""

import os
import shutil
import socket
import threading

import psutil
import pytest

from grader.executor import GradeOptions, grade_submission
from grader.assignment import Limits
from grader.results import Status
from grader.runner import run_batch

from conftest import TESTS, TOY_COURSE, requires_bubblewrap

ADVERSARIAL = TESTS / "fixtures" / "adversarial"
FAST_LIMITS = Limits(cell_timeout_s=8, notebook_timeout_s=30, memory_mb=1024, max_processes=64,
                     max_file_mb=16, max_output_kb=64)
REFERENCE = TOY_COURSE / "reference" / "toy" / "toy.ipynb"

pytestmark = [requires_bubblewrap]


class Listener:
    """A TCP listener on 127.0.0.1 that records every connection it accepts."""

    def __init__(self):
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen()
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.connections = 0
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self):
        while not self.stop.is_set():
            try:
                conn, _ = self.sock.accept()
                self.connections += 1
                conn.close()
            except OSError:
                continue

    def close(self):
        self.stop.set()
        self.thread.join()
        self.sock.close()


def _notebook_with(source: str) -> str:
    import nbformat
    from nbformat.v4 import new_code_cell, new_notebook

    nb = new_notebook(cells=[new_code_cell(
        "import numpy as np\n\ndef square(x):\n    return np.asarray(x) * np.asarray(x)\n"),
        new_code_cell(source),
        new_code_cell("data = np.arange(10.0)\nmean_of_squares = square(data).mean()")])
    return nbformat.writes(nb)


@pytest.fixture(scope="module", params=["fresh", "prepared"])
def batch(request, tmp_path_factory, toy_module):
    """The attacks graded in one batch, as `grader run` grades (warm kernels), with each
    kernel provider (prepared falls back to fresh where bubblewrap is missing)."""
    root = tmp_path_factory.mktemp("adversarial")
    submissions = root / "submissions"
    submissions.mkdir()
    for notebook in ADVERSARIAL.glob("*.ipynb"):
        shutil.copy(notebook, submissions / notebook.name)
    for notebook in (ADVERSARIAL / "malformed").glob("*.ipynb"):
        shutil.copy(notebook, submissions / f"malformed_{notebook.name}")
    shutil.copy(REFERENCE, submissions / "good_alice.ipynb")
    shutil.copy(REFERENCE, submissions / "good_bob.ipynb")
    listener = Listener()
    (submissions / "network_loopback.ipynb").write_text(_notebook_with(
        "import socket\ntry:\n"
        f"    socket.create_connection(('127.0.0.1', {listener.port}), timeout=3).close()\n"
        "    reached = True\nexcept OSError as error:\n    reached = repr(error)\nprint(reached)"))
    secret = TOY_COURSE / "reference" / "toy" / "expected.json"
    (submissions / "read_reference.ipynb").write_text(_notebook_with(
        f"try:\n    leaked = open({str(secret)!r}).read()\nexcept OSError as error:\n"
        "    leaked = 'blocked: ' + type(error).__name__\nprint(leaked)"))
    (submissions / "symlink_submission.ipynb").symlink_to("/etc/passwd")
    shadow = submissions / "module_shadowing"
    shadow.mkdir()
    shutil.copy(REFERENCE, shadow / "toy.ipynb")
    (shadow / "numpy.py").write_text("raise ImportError('this numpy.py shadows the real numpy')\n")
    private_tmp = root / "tmp"
    private_tmp.mkdir()
    previous_tmp = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(private_tmp)  # the workers' tmp: must stay empty
    out = root / "out"
    try:
        summary = run_batch(submissions, toy_module, out,
                            GradeOptions(sandbox="required", limits=FAST_LIMITS,
                                         warm_kernels=True, kernel_provider=request.param),
                            workers=2,
                            use_cache=False, progress=False)
    finally:
        listener.close()
        if previous_tmp is None:
            os.environ.pop("TMPDIR")
        else:
            os.environ["TMPDIR"] = previous_tmp
    results = {r.student_id: r for r in summary.results}
    return {"results": results, "listener": listener, "out": out, "root": root,
            "summary": summary}


@pytest.fixture(scope="module")
def toy_module():
    from grader.assignment import load_assignment

    return load_assignment("toy", TOY_COURSE)


def test_every_submission_has_a_row(batch):
    rows = (batch["out"] / "grades.csv").read_text().splitlines()
    assert len(rows) == 1 + len(batch["results"]) == 1 + batch["summary"].total


def test_good_submissions_score_as_when_graded_alone(batch, toy_module, tmp_path):
    alone = grade_submission(REFERENCE, toy_module, GradeOptions(sandbox="required",
                             limits=FAST_LIMITS, scratch_root=tmp_path), "alone")
    assert alone.status is Status.OK and alone.score == alone.max_score == 5
    for name in ("good_alice", "good_bob"):
        result = batch["results"][name]
        assert (result.status, result.score) == (alone.status, alone.score)
        assert [c.passed for c in result.checks] == [c.passed for c in alone.checks]


def test_the_batch_ran_on_warm_kernels(batch):
    # The batch above is graded as `grader run` grades: each worker starts its next kernel
    # while the current notebook runs, so these attacks also ran next to a waiting kernel.
    with_kernel = [r for r in batch["results"].values() if "kernel_start" in r.timings]
    cold = {r.student_id for r in with_kernel if not r.warm_kernel}
    assert len(with_kernel) == 19
    # Each worker's first is cold; and a forked kernel cannot serve a submission that
    # shadows a preloaded module, so that one gets a fresh kernel of its own.
    assert len(cold - {"module_shadowing"}) <= 2 and len(cold) >= 2, cold
    shadowing = batch["results"]["module_shadowing"]
    assert shadowing.kernel_provider == "fresh"


@pytest.mark.parametrize("name, status, message", [
    ("infinite_loop", Status.TIMEOUT, "ran past its time limit"),
    ("sleep_before_answer", Status.TIMEOUT, "ran past its time limit"),
    ("memory_bomb", Status.MEMORY, "more than 1024 MB of memory"),
    ("process_flood", Status.MEMORY, "more than 64 processes"),
    ("os_exit", Status.CRASHED, "The kernel died"),
    ("input_call", Status.ERROR, "input() cannot be answered while grading"),
    ("symlink_submission", Status.INVALID, "symbolic link"),
    ("malformed_invalid_json", Status.INVALID, "not valid notebook JSON"),
    ("malformed_empty", Status.INVALID, "The file is empty"),
    ("malformed_missing_cells", Status.INVALID, "no list of cells"),
    ("malformed_non_utf8", Status.INVALID, "not UTF-8"),
])
def test_attack_gets_its_status_and_a_clear_message(batch, name, status, message):
    result = batch["results"][name]
    assert result.status is status, result.message
    assert message in result.message


def test_old_nbformat_is_converted_and_graded(batch):
    result = batch["results"]["malformed_nbformat3"]
    assert result.status is Status.OK
    assert result.score == 5
    assert "Converted from notebook format 3" in result.message


def test_timed_out_cell_does_not_pass_later_checks(batch):
    result = batch["results"]["sleep_before_answer"]
    verdicts = {c.id: c.passed for c in result.checks}
    assert verdicts == {"q1.square_small_example": True, "q1.square_hidden_input": True,
                        "q2.mean_of_squares_value": False}


def test_killing_its_parent_hits_only_the_sandbox_init(batch):
    # Inside the PID namespace the kernel's parent is bubblewrap's init, which a signal
    # from inside cannot kill: the notebook goes on, and the grader never notices.
    result = batch["results"]["kill_parent"]
    assert (result.status, result.score) == (Status.OK, 5)


def test_crashed_kernel_scores_nothing_and_says_which_cell(batch):
    result = batch["results"]["os_exit"]
    assert result.score == 0
    assert "while cell 2 ran" in result.message


def test_monkeypatching_numpy_in_the_kernel_does_not_fool_the_comparison(batch):
    result = batch["results"]["monkeypatch_allclose"]
    assert result.score == 0
    failed = [c for c in result.checks if not c.passed]
    assert {c.id for c in failed} == {"q1.square_small_example", "q1.square_hidden_input",
                                      "q2.mean_of_squares_value"}
    assert "Mismatched elements" in failed[0].message


def test_printed_fake_scores_are_ignored(batch):
    assert batch["results"]["fake_scores"].score == 0


def test_tensorflow_log_lines_on_stderr_cost_nothing(batch):
    result = batch["results"]["stderr_noise"]
    assert (result.status, result.score) == (Status.OK, 5)


def test_output_printed_while_checks_run_never_reaches_feedback(batch):
    result = batch["results"]["print_during_checks"]
    assert result.score == 5
    printed = "HIDDEN INPUT WAS [["  # the planted print, called by a check on the hidden 2-D input
    assert printed not in result.to_json()
    executed = (batch["out"] / "executed" / "print_during_checks.ipynb").read_text()
    assert printed not in executed


def test_huge_output_is_capped(batch):
    result = batch["results"]["huge_stdout"]
    assert result.status is Status.OK and result.score == 5
    executed = batch["out"] / "executed" / "huge_stdout.ipynb"
    assert executed.stat().st_size < 200 * 1024
    assert "output truncated by the grader" in executed.read_text()


def test_loopback_connection_never_arrives(batch):
    assert batch["listener"].connections == 0
    executed = (batch["out"] / "executed" / "network_loopback.ipynb").read_text()
    assert "ConnectionRefusedError" in executed or "OSError" in executed
    assert batch["results"]["network_loopback"].score == 5


def test_reference_directory_is_invisible_in_the_sandbox(batch):
    executed = (batch["out"] / "executed" / "read_reference.ipynb").read_text()
    assert "blocked: FileNotFoundError" in executed
    assert "mean_of_squares" not in executed.split("blocked")[0].split("leaked")[-1]


def test_module_shadowing_hurts_only_its_author(batch):
    result = batch["results"]["module_shadowing"]
    assert result.status is Status.ERROR
    assert "this numpy.py shadows the real numpy" in result.message
    assert result.score == 0


def test_no_process_survives_the_batch(batch):
    leftovers = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if cmdline in ("sleep 313", "sleep 314") or str(batch["root"]) in cmdline:
            leftovers.append(cmdline)
    assert leftovers == []


def test_nothing_is_written_outside_out_and_the_cache(batch):
    assert list((batch["root"] / "tmp").iterdir()) == []
    assert not (batch["out"] / ".scratch").exists()
    assert sorted(p.name for p in batch["root"].iterdir()) == ["out", "submissions", "tmp"]
