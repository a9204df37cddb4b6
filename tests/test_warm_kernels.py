"""Warm kernels: each worker starts the next submission's kernel while the current one runs.

A kernel started ahead must grade exactly like one started on demand, serve one
submission only, see nothing of the one before, and never outlive its worker.
"""

import os
import shutil
import tempfile
from dataclasses import replace
from pathlib import Path

import nbformat
import psutil
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from grader import executor
from grader.assignment import Limits
from grader.executor import GradeOptions, grade_submission, release_spare_kernel
from grader.runner import run_batch

from conftest import TOY_COURSE, sandbox_mode

REFERENCE = TOY_COURSE / "reference" / "toy" / "toy.ipynb"
LIMITS = Limits(cell_timeout_s=30, notebook_timeout_s=60, memory_mb=2048, max_processes=64,
                max_file_mb=16, max_output_kb=64)
TOY_CELLS = ["import numpy as np\n\ndef square(x):\n    return np.asarray(x) * np.asarray(x)\n",
             "data = np.arange(10.0)\nmean_of_squares = square(data).mean()"]

WRITER = """
import os
for place in ('.', '/tmp', os.path.expanduser('~')):
    with open(os.path.join(place, 'left_behind.txt'), 'w') as handle:
        handle.write('from the writer')
SHARED_SECRET = 'writer'
"""
READER = """
import os
seen = [p for p in ('left_behind.txt', '/tmp/left_behind.txt',
                    os.path.expanduser('~/left_behind.txt')) if os.path.exists(p)]
print('SEEN', seen, sorted(os.listdir('.')))
assert seen == [], seen
assert 'SHARED_SECRET' not in globals()
"""
HELPER_USER = "from helper import double\nassert double(21) == 42\nprint('helper imported')\n"


def _notebook(path: Path, *sources: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    cells = [new_code_cell(TOY_CELLS[0]), *map(new_code_cell, sources), new_code_cell(TOY_CELLS[1])]
    path.write_text(nbformat.writes(new_notebook(cells=cells)))
    return path


def _submissions(root: Path) -> Path:
    submissions = root / "submissions"
    submissions.mkdir(parents=True)
    shutil.copy(REFERENCE, submissions / "a_reference.ipynb")
    _notebook(submissions / "b_writer.ipynb", WRITER)
    _notebook(submissions / "c_folder" / "work.ipynb", HELPER_USER)
    (submissions / "c_folder" / "helper.py").write_text("def double(x):\n    return 2 * x\n")
    _notebook(submissions / "d_reader.ipynb", READER)
    return submissions


def _leftovers(root: Path) -> list[str]:
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if str(root) in cmdline:
            found.append(cmdline)
    return found


@pytest.fixture
def own_cache(monkeypatch):
    """A cache of our own, so that its io folder can be checked for leftovers (at a short
    path: sockets go under it only when their paths fit a Unix socket's 107 bytes)."""
    cache = Path(tempfile.mkdtemp(prefix="wk-"))
    monkeypatch.setenv("GRADER_CACHE", str(cache))
    yield cache
    shutil.rmtree(cache, ignore_errors=True)


@pytest.mark.slow
def test_warm_kernels_grade_like_cold_ones_and_leave_nothing_behind(toy, tmp_path, own_cache):
    submissions = _submissions(tmp_path)
    graded = {}
    for warm in (False, True):
        out = tmp_path / f"out-{warm}"
        summary = run_batch(submissions, toy, out,
                            GradeOptions(sandbox=sandbox_mode(), limits=LIMITS, warm_kernels=warm,
                                         kernel_provider="fresh"),
                            workers=1, use_cache=False, progress=False)
        graded[warm] = {r.student_id: r for r in summary.results}
        assert _leftovers(tmp_path) == []  # the last spare died with its worker
        assert not (out / ".scratch").exists()
    assert (own_cache / "io").is_dir()
    assert list((own_cache / "io").iterdir()) == []  # every kernel's socket folder removed

    cold, warm = graded[False], graded[True]
    assert [warm[s].warm_kernel for s in sorted(warm)] == [False, True, True, True]
    assert not any(r.warm_kernel for r in cold.values())
    for student in cold:
        assert (warm[student].status, warm[student].score, warm[student].message) == \
            (cold[student].status, cold[student].score, cold[student].message), student
        assert warm[student].score == 5, (student, warm[student].message)
    executed = (tmp_path / "out-True" / "executed")
    assert "helper imported" in (executed / "c_folder.ipynb").read_text()
    assert "SEEN [] ['d_reader.ipynb']" in (executed / "d_reader.ipynb").read_text()


@pytest.fixture
def no_spare_afterwards():
    yield
    release_spare_kernel()


def test_a_spare_serves_only_the_same_setup_and_is_killed_on_release(toy, tmp_path,
                                                                    no_spare_afterwards):
    notebook = _notebook(tmp_path / "nb.ipynb")

    def options(seed: str) -> GradeOptions:
        return GradeOptions(sandbox=sandbox_mode(), limits=LIMITS, warm_kernels=True,
                            scratch_root=tmp_path, kernel_env=(("GRADER_SEED", seed),),
                            kernel_provider="fresh")

    first = grade_submission(notebook, toy, options("1"), "first")
    spare = executor._Spare.kernel
    assert spare is not None and spare.alive() and not first.warm_kernel
    second = grade_submission(notebook, toy, options("1"), "second")
    assert second.warm_kernel and second.score == 5
    assert not spare.scratch.exists()  # used once, then removed like any kernel

    spare = executor._Spare.kernel
    third = grade_submission(notebook, toy, options("2"), "third")  # another GRADER_SEED
    assert not third.warm_kernel and third.score == 5
    assert not spare.alive() and not spare.scratch.exists()  # discarded, unused

    spare = executor._Spare.kernel
    release_spare_kernel()
    assert executor._Spare.kernel is None and not spare.alive()

    # The runner's last tasks (nothing left to grade) use the spare but start none.
    grade_submission(notebook, toy, options("2"), "fourth")
    last = grade_submission(notebook, toy, replace(options("2"), warm_kernels=False), "last")
    assert last.warm_kernel and last.score == 5
    assert executor._Spare.kernel is None
    assert sorted(p.name for p in tmp_path.iterdir()) == ["nb.ipynb"]


def test_a_spare_is_not_inherited_by_a_forked_process(toy, tmp_path, no_spare_afterwards):
    notebook = _notebook(tmp_path / "nb.ipynb")
    grade_submission(notebook, toy, GradeOptions(sandbox=sandbox_mode(), limits=LIMITS,
                                                 warm_kernels=True, scratch_root=tmp_path,
                                                 kernel_provider="fresh"), "a")
    assert executor._Spare.kernel is not None
    read, write = os.pipe()
    child = os.fork()
    if child == 0:  # the child must not think the parent's spare is its own
        os.write(write, b"none" if executor._Spare._mine() is None else b"inherited")
        os._exit(0)
    os.waitpid(child, 0)
    assert os.read(read, 16) == b"none"
    assert executor._Spare.kernel.alive()  # and the parent's is untouched
