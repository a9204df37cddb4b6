"""`grader run` (prepared kernels, 2 workers) against `nbgrader autograde`, in one run.

    python benchmarks/bench_nbgrader.py [--copies 8]

Both grade the same COPIES personalised copies of reference/mlp/mlp.ipynb. nbgrader is
installed only in a venv this script makes under benchmarks/_work/ (``--system-site-packages``,
so both use the same TensorFlow), with a minimal course: the notebook released as an
assignment, each copy submitted by one student. nbgrader runs unsandboxed, one notebook at
a time (its only mode); the grader runs each in a bubblewrap sandbox with its checks.
Writes benchmarks/results/nbgrader.md.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "benchmarks"))
from bench_grader import personal_copies  # noqa: E402

WORK = REPO / "benchmarks" / "_work" / "nbgrader"
RESULTS = REPO / "benchmarks" / "results"


def without_markers(source: Path) -> nbformat.NotebookNode:
    """The solution without our ### BEGIN/END SOLUTION lines, which nbgrader would take
    for its own solution regions and refuse outside its solution cells."""
    notebook = nbformat.read(str(source), as_version=4)
    for cell in notebook.cells:
        cell.source = "\n".join(line for line in cell.source.split("\n")
                                 if line.strip() not in ("### BEGIN SOLUTION", "### END SOLUTION"))
    return notebook


def nbgrader_venv() -> Path:
    venv = WORK / "venv"
    python = venv / "bin" / "python"
    if not python.exists():
        subprocess.run([sys.executable, "-m", "venv", "--system-site-packages", str(venv)],
                       check=True)
    if subprocess.run([str(python), "-c", "import nbgrader"], capture_output=True).returncode:
        subprocess.run([str(python), "-m", "pip", "install", "--quiet", "nbgrader"], check=True)
    return python


def nbgrader_course(copies: list[Path], home: Path) -> Path:
    course = WORK / "course"
    shutil.rmtree(course, ignore_errors=True)
    (course / "source" / "mlp").mkdir(parents=True)
    nbformat.write(without_markers(REPO / "reference" / "mlp" / "mlp.ipynb"),
                   str(course / "source" / "mlp" / "mlp.ipynb"))
    students = [p.stem for p in copies]
    for path in copies:
        target = course / "submitted" / path.stem / "mlp"
        target.mkdir(parents=True)
        shutil.copy(path, target / "mlp.ipynb")
    (course / "nbgrader_config.py").write_text(
        "c = get_config()\n"
        f"c.CourseDirectory.root = {str(course)!r}\n"
        "c.CourseDirectory.course_id = 'bench'\n"
        "c.CourseDirectory.db_assignments = [dict(name='mlp')]\n"
        f"c.CourseDirectory.db_students = {[dict(id=s) for s in students]!r}\n"
        "c.ExecutePreprocessor.timeout = 600\n"
        "c.Execute.timeout = 600\n")
    return course


def _run_or_explain(argv: list[str], **kwargs) -> None:
    """Run a step quietly; on failure show its output's end, then stop."""
    done = subprocess.run(argv, capture_output=True, text=True, **kwargs)
    if done.returncode:
        sys.exit(f"{' '.join(argv[2:])} failed ({done.returncode}):\n{done.stderr[-3000:]}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=8)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()
    if args.copies < 8:
        parser.error("the comparison is made on at least 8 notebooks")

    from grader import data

    WORK.mkdir(parents=True, exist_ok=True)
    copies = personal_copies(REPO / "reference" / "mlp" / "mlp.ipynb",
                             WORK / "submissions", args.copies, read=without_markers)
    home = WORK / "home"
    (home / ".keras" / "datasets").mkdir(parents=True, exist_ok=True)
    shutil.copy(data.mnist_npz(), home / ".keras" / "datasets" / "mnist.npz")

    python = nbgrader_venv()
    course = nbgrader_course(copies, home)
    env = {**os.environ, "HOME": str(home), "CUDA_VISIBLE_DEVICES": "-1",
           # nbgrader runs `alembic` from PATH: the venv's bin must come first
           "PATH": f"{python.parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    _run_or_explain([str(python), "-m", "nbgrader", "generate_assignment", "mlp", "--force"],
                    cwd=course, env=env)
    started = time.perf_counter()
    _run_or_explain([str(python), "-m", "nbgrader", "autograde", "mlp", "--force"],
                    cwd=course, env=env)
    nbgrader_s = time.perf_counter() - started
    autograded = len(list((course / "autograded").glob("*/mlp/mlp.ipynb")))

    out = WORK / "grader-out"
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "grader.cli", "run", str(WORK / "submissions"),
                    "--assignment", "mlp", "--out", str(out), "--workers", str(args.workers),
                    "--kernel-provider", "prepared", "--no-cache", "--no-reports"],
                   check=True, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    grader_s = time.perf_counter() - started
    grades = (out / "grades.csv").read_text().splitlines()[1:]

    RESULTS.mkdir(parents=True, exist_ok=True)
    (RESULTS / "nbgrader.md").write_text(
        f"# `grader run` (prepared kernels) against `nbgrader autograde`\n\n"
        f"Measured {datetime.date.today()} on {os.cpu_count()} CPUs, in one run of "
        f"`python benchmarks/bench_nbgrader.py --copies {args.copies}`: "
        f"{args.copies} personalised copies of reference/mlp/mlp.ipynb.\n\n"
        "| grader | how | notebooks graded | wall time (s) |\n| --- | --- | --- | --- |\n"
        f"| nbgrader autograde | unsandboxed, one at a time, no checks of ours | "
        f"{autograded} | {nbgrader_s:.1f} |\n"
        f"| grader run --kernel-provider prepared -j {args.workers} | bubblewrap sandbox, "
        f"checks, reports skipped | {len(grades)} | {grader_s:.1f} |\n\n"
        f"Ratio nbgrader / grader: **{nbgrader_s / grader_s:.2f}**\n")
    print((RESULTS / "nbgrader.md").read_text())


if __name__ == "__main__":
    main()
