"""The prepared kernel provider: kernels forked from a per-worker zygote (grader.kernels).

Each forked kernel must be as fresh and as isolated as a new one: nothing a notebook does
to the modules the zygote preloaded, or to the files it can write, reaches the next one.
"""

import nbformat
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from grader import kernels
from grader.assignment import Limits
from grader.executor import GradeOptions, grade_submission
from grader.results import Status

from grader.kernels import python_under_scratch

from conftest import TOY_COURSE, requires_bubblewrap

pytestmark = [requires_bubblewrap, pytest.mark.skipif(
    python_under_scratch(), reason="Python lives under the temporary folder (a venv in /tmp): "
    "prepared kernels fall back to fresh ones there, see test_fallback_for_python_under_tmp")]

LIMITS = Limits(cell_timeout_s=30, notebook_timeout_s=60, memory_mb=2048, max_processes=64,
                max_file_mb=16, max_output_kb=64)
TOY_CELLS = ["import numpy as np\n\ndef square(x):\n    return np.asarray(x) * np.asarray(x)\n",
             "data = np.arange(10.0)\nmean_of_squares = square(data).mean()"]

TAMPER = """
import numpy, tensorflow as tf
numpy.allclose = lambda *a, **k: True
tf.__grader_leak__ = 1
import os, sys
open('/tmp/left_behind', 'w').write('x')
open(os.path.expanduser('~/left_behind'), 'w').write('x')
try:
    open('/dev/shm/left_behind', 'w').write('x')
except OSError:
    pass
for place in ('/', '/dev', '/usr'):
    try:
        open(os.path.join(place, 'left_behind'), 'w').write('x')
        print('WR' + 'OTE', place)
    except OSError:
        pass
print('tampered')
"""

PRISTINE = """
import os, numpy, tensorflow as tf
assert not hasattr(tf, '__grader_leak__'), 'tf global leaked from another submission'
assert numpy.allclose.__module__ == 'numpy', numpy.allclose
assert not numpy.allclose([1.0], [2.0]), 'numpy.allclose was monkeypatched elsewhere'
leftovers = [p for p in ('/tmp/left_behind', os.path.expanduser('~/left_behind'),
                         '/dev/shm/left_behind', '/left_behind', '/dev/left_behind')
             if os.path.exists(p)]
assert leftovers == [], leftovers
status = open('/proc/self/status').read()
caps = [line for line in status.splitlines() if line.startswith(('CapEff', 'CapBnd'))]
assert all(line.split()[1].strip('0') == '' for line in caps), caps
assert 'NoNewPrivs:\\t1' in status
assert os.getpid() != 1 and os.getppid() == 1  # its own PID namespace, under its own init
pids = sorted(int(p) for p in os.listdir('/proc') if p.isdigit())
assert pids == [1, os.getpid()], pids
print('pristine')
"""


def _write(path, *sources):
    nb = new_notebook(cells=[new_code_cell(TOY_CELLS[0]), *map(new_code_cell, sources),
                             new_code_cell(TOY_CELLS[1])])
    path.write_text(nbformat.writes(nb))
    return path


def _options(tmp_path, **changes):
    return GradeOptions(sandbox="required", limits=LIMITS, scratch_root=tmp_path,
                        executed_dir=tmp_path / "executed", kernel_provider="prepared",
                        **changes)


@pytest.mark.slow
def test_a_second_notebook_sees_nothing_of_the_first(toy, tmp_path):
    first = grade_submission(_write(tmp_path / "tamper.ipynb", TAMPER), toy,
                             _options(tmp_path), "tamper")
    second = grade_submission(_write(tmp_path / "pristine.ipynb", PRISTINE), toy,
                              _options(tmp_path), "pristine")
    assert first.kernel_provider == second.kernel_provider == "prepared"
    executed_first = (tmp_path / "executed" / "tamper.ipynb").read_text()
    assert "tampered" in executed_first and "WROTE" not in executed_first
    assert first.status is Status.OK and first.score == 5  # its own answers still count
    assert second.status is Status.OK, (second.message, [c.error for c in second.cells])
    assert second.score == second.max_score == 5
    assert "pristine" in (tmp_path / "executed" / "pristine.ipynb").read_text()


@pytest.mark.slow
def test_the_zygote_is_reused_and_each_kernel_is_new(toy, tmp_path):
    # Each kernel is the first child of the init of a PID namespace of its own: numbering
    # starts anew for every submission. (Namespace inode numbers are recycled by the
    # kernel, so comparing them across submissions proves nothing.)
    source = "import os\nprint('PIDS', os.getpid(), os.getppid(), len(os.listdir('/proc')))"
    for name in ("one", "two"):
        result = grade_submission(_write(tmp_path / f"{name}.ipynb", source), toy,
                                  _options(tmp_path), name)
        assert (result.status, result.kernel_provider) == (Status.OK, "prepared")
    zygote = kernels._Current.zygote
    assert zygote is not None and zygote.alive() and "tensorflow" in zygote.preloaded
    for name in ("one", "two"):
        executed = (tmp_path / "executed" / f"{name}.ipynb").read_text()
        line = next(line for line in executed.splitlines() if "PIDS" in line)
        pid, parent = line.split("PIDS", 1)[1].split()[:2]
        assert (pid, parent) == ("2", "1"), line


@pytest.mark.slow
def test_warm_forked_kernels_stay_isolated_and_respect_shadowing(toy, tmp_path):
    """Warm kernels forked ahead of their submission: a tampering notebook does not reach
    the next (warm) one, and a submission with its own numpy.py gets a fresh kernel."""
    from grader.executor import release_spare_kernel

    options = _options(tmp_path, warm_kernels=True)
    shadow = tmp_path / "shadow"
    shadow.mkdir()
    _write(shadow / "work.ipynb")
    (shadow / "numpy.py").write_text("raise ImportError('this numpy.py shadows the real numpy')\n")
    try:
        tamper = grade_submission(_write(tmp_path / "tamper.ipynb", TAMPER), toy, options, "t")
        pristine = grade_submission(_write(tmp_path / "pristine.ipynb", PRISTINE), toy, options,
                                    "p")
        shadowed = grade_submission(shadow / "work.ipynb", toy, options, "s", with_folder=True)
    finally:
        release_spare_kernel()
    assert (tamper.warm_kernel, tamper.kernel_provider) == (False, "prepared")
    assert (pristine.warm_kernel, pristine.kernel_provider) == (True, "prepared")
    assert pristine.status is Status.OK and pristine.score == 5, pristine.message
    assert (shadowed.warm_kernel, shadowed.kernel_provider) == (False, "fresh")
    assert shadowed.status is Status.ERROR and "shadows the real numpy" in shadowed.message


def test_fresh_kernels_where_forking_is_not_safe(toy):
    assert kernels.provider_for("prepared", "bubblewrap", "gpu", (), toy) == "fresh"
    assert kernels.provider_for("prepared", "off", "cpu", (), toy) == "fresh"
    assert kernels.provider_for("prepared", "bubblewrap", "cpu", ("/dev/nvidia0",), toy) == "fresh"
    assert kernels.provider_for("prepared", "bubblewrap", "cpu", (), toy) == "prepared"
    assert kernels.provider_for("fresh", "bubblewrap", "cpu", (), toy) == "fresh"
    from dataclasses import replace

    assert kernels.provider_for("prepared", "bubblewrap", "cpu", (),
                                replace(toy, prepared_kernels=False)) == "fresh"


def test_the_environment_chooses_the_default(monkeypatch):
    monkeypatch.setenv("GRADER_KERNEL_PROVIDER", "fresh")
    assert GradeOptions().kernel_provider == "fresh"
    monkeypatch.delenv("GRADER_KERNEL_PROVIDER")
    assert GradeOptions().kernel_provider == "prepared"


def test_assignment_settings_are_read(tmp_path):
    import shutil

    from grader.assignment import load_assignment

    course = tmp_path / "course"
    shutil.copytree(TOY_COURSE, course)
    toml = course / "assignments" / "toy" / "assignment.toml"
    toml.write_text('prepared_kernels = false\nheavy_modules = ["json"]\n' + toml.read_text())
    loaded = load_assignment("toy", course)
    assert (loaded.prepared_kernels, loaded.heavy_modules) == (False, ("json",))


def test_fallback_for_python_under_tmp(monkeypatch):
    import grader.kernels as kernels

    monkeypatch.setattr(kernels, "python_under_scratch", lambda: True)
    assert kernels.provider_for("prepared", "bubblewrap", "cpu", (), object()) == "fresh"
