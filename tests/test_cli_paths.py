"""The CLI works with relative paths, as a user types them."""

import shutil
import subprocess
import sys

from conftest import TOY_COURSE, sandbox_mode


def test_relative_submissions_and_out_paths(tmp_path):
    (tmp_path / "subs").mkdir()
    shutil.copy(TOY_COURSE / "reference" / "toy" / "toy.ipynb", tmp_path / "subs" / "ann.ipynb")
    run = subprocess.run([sys.executable, "-m", "grader.cli", "--course", str(TOY_COURSE), "run",
                          "subs", "-a", "toy", "--out", "out", "--sandbox", sandbox_mode()],
                         cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    assert "ann,toy,5,5,ok" in (tmp_path / "out" / "grades.csv").read_text()
    assert (tmp_path / "out" / "index.html").exists()
    assert "ann" in (tmp_path / "out" / "feedback" / "ann.html").read_text()


def test_a_virtual_environment_under_tmp_stays_visible_in_the_sandbox(tmp_path):
    from grader.sandbox import SandboxSpec

    spec = SandboxSpec(mode="bubblewrap", work_dir=tmp_path / "w", io_dir=tmp_path / "io")
    args = spec.wrap(["python"])
    tmpfs = args.index("/tmp", args.index("--tmpfs"))
    import sys as _sys

    prefix_bind = args.index(_sys.prefix, args.index("--ro-bind", tmpfs))
    assert prefix_bind > tmpfs  # bound after /tmp is replaced, so it is not hidden
