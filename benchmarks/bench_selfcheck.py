"""How long the in-notebook self-check takes, on every practical's reference notebook.

    python benchmarks/bench_selfcheck.py [--data-dir ../shared/data]

For each practical: copy its assignment folder (what students get) into a scratch
course, execute the reference solution there in a plain Jupyter kernel (as on a
student's laptop: no sandbox), then time `check("qN")` for every question and `check()`
for all, inside that kernel. Writes benchmarks/results/selfcheck.md.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import tempfile
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]

TIMING_CELL = """
import json, time
from grader import check
_timings = {}
for _q in QUESTIONS:
    _t = time.perf_counter(); _r = check(_q); _timings[_q] = [time.perf_counter() - _t, _r.passed]
_t = time.perf_counter(); _r = check(); _timings["all"] = [time.perf_counter() - _t, _r.passed]
print("SELFCHECK" + json.dumps(_timings))
"""


def student_setup(name: str, scratch: Path, data_dir: Path) -> tuple[Path, dict]:
    """A student's folder: the assignment folder, the data where the notebook reads it."""
    from grader import data

    folder = scratch / "course" / "assignments" / name
    shutil.copytree(REPO / "assignments" / name, folder)
    home = scratch / "home"
    (home / ".keras" / "datasets").mkdir(parents=True, exist_ok=True)
    shutil.copy(data.mnist_npz(), home / ".keras" / "datasets" / "mnist.npz")
    if (data_dir / "housing.csv").exists():
        (folder / "datasets" / "housing").mkdir(parents=True)
        shutil.copy(data_dir / "housing.csv", folder / "datasets" / "housing" / "housing.csv")
    return folder, {**os.environ, "HOME": str(home)}


def selfcheck_timings(name: str, data_dir: Path) -> dict:
    from grader.assignment import load_assignment

    assignment = load_assignment(name, REPO)
    questions = sorted({c.question for c in assignment.public_checks})
    with tempfile.TemporaryDirectory(prefix="bench-selfcheck-") as scratch:
        folder, env = student_setup(name, Path(scratch), data_dir)
        notebook = nbformat.read(str(REPO / "reference" / name / f"{name}.ipynb"), as_version=4)
        notebook.cells.append(nbformat.v4.new_code_cell(
            f"QUESTIONS = {questions!r}\n" + TIMING_CELL))
        started = time.perf_counter()
        NotebookClient(notebook, timeout=600, resources={"metadata": {"path": str(folder)}}
                       ).execute(env=env)
        total = time.perf_counter() - started
    text = "".join(o.get("text", "") for o in notebook.cells[-1].outputs)
    timings = json.loads(text.split("SELFCHECK", 1)[1])
    return {"notebook_s": total, "timings": timings}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    parser.add_argument("practicals", nargs="*")
    args = parser.parse_args()
    names = args.practicals or sorted(p.parent.name for p in (REPO / "assignments").glob(
        "*/assignment.toml"))
    lines = ["# In-notebook self-check time", "",
             "`check(\"qN\")` in the kernel after the reference notebook ran (plain kernel, "
             "no sandbox, as on a laptop). Seconds per call; pass = every public check passed.",
             "", "| practical | question | seconds | pass |", "| --- | --- | ---: | --- |"]
    for name in names:
        result = selfcheck_timings(name, args.data_dir)
        for question, (seconds, passed) in result["timings"].items():
            lines.append(f"| {name} | {question} | {seconds:.2f} | {'yes' if passed else 'NO'} |")
        print(name, result["timings"])
    text = "\n".join(lines) + "\n"
    (REPO / "benchmarks" / "results").mkdir(exist_ok=True)
    (REPO / "benchmarks" / "results" / "selfcheck.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
