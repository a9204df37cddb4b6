"""Render 200 synthetic results (feedback pages with executed notebooks, dashboard, exports).

    python benchmarks/bench_reports.py [N]

Prints the wall time of :func:`grader.reports.rebuild` over OUT/results/*.json; the target
is well under 5 s for 200 results.
"""

from __future__ import annotations

import random
import sys
import tempfile
import time
from pathlib import Path

import nbformat

from grader import reports
from grader.results import CellRun, CheckResult, Status, SubmissionResult

ERRORS = ["ValueError: Shapes (None, 1) and (None, {n}) are incompatible",
          "NameError: name 'modle{n}' is not defined",
          "InvalidArgumentError: Received a label value of {n} which is outside the valid range"]


def synthetic(i: int, rng: random.Random) -> SubmissionResult:
    checks = []
    for q in range(1, 6):
        for k in range(3):
            passed = rng.random() < 0.7
            value = rng.uniform(0.3, 0.95)
            checks.append(CheckResult(
                id=f"q{q}_check{k}", question=f"q{q}", points=2, score=2 if passed else 0,
                passed=passed, hidden=k == 2,
                message="" if passed else f"`model` output is {value:.3f}; expected 0.9. Fix it.",
                expected="0.9", found=f"{value:.3f}",
                metric={"name": "val_accuracy", "value": value, "low": 0.8, "high": None,
                        "reference": [0.85, 0.86, 0.87, 0.88, 0.9]} if k == 1 else None))
    cells = [CellRun(index=c, duration_s=rng.uniform(0.01, 20)) for c in range(30)]
    status = rng.choices(list(Status), weights=[70, 15, 4, 3, 3, 3, 2])[0]
    if status is Status.ERROR:
        cells[7] = CellRun(index=7, duration_s=1.0,
                           error=rng.choice(ERRORS).format(n=rng.randint(2, 12)),
                           traceback="Cell In[8], line 2\n  model.fit(x, y)\nValueError: ...")
    return SubmissionResult(
        student_id=f"student{i:03d}", assignment="mlp", status=status, message=status.explanation,
        score=sum(c.score for c in checks), max_score=30.0, checks=tuple(checks),
        cells=tuple(cells), duration_s=rng.uniform(20, 300), peak_memory_mb=rng.uniform(300, 3000),
        graded_at="2024-03-04T14:05:00+00:00", executed_notebook=f"executed/student{i:03d}.ipynb")


def notebook() -> nbformat.NotebookNode:
    cells = []
    for c in range(30):
        cell = nbformat.v4.new_code_cell(f"x = {c}\nprint(x)\n" * 5, execution_count=c + 1)
        cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="Epoch 1/5 ...\n" * 40)]
        cells.append(cell)
    return nbformat.v4.new_notebook(cells=cells)


def main(count: int = 200) -> float:
    rng = random.Random(0)
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp)
        (out / "results").mkdir()
        (out / "executed").mkdir()
        nb = notebook()
        for i in range(count):
            result = synthetic(i, rng)
            (out / "results" / f"{result.student_id}.json").write_text(result.to_json())
            nbformat.write(nb, str(out / "executed" / f"{result.student_id}.ipynb"))
        started = time.perf_counter()
        rendered = reports.rebuild(out)
        elapsed = time.perf_counter() - started
        size = sum(p.stat().st_size for p in (out / "feedback").glob("*.html")) / 1e6
    print(f"rebuild: {rendered} results (30-cell notebooks, 15 checks each) in {elapsed:.2f} s "
          f"({elapsed / max(rendered, 1) * 1000:.1f} ms each; feedback pages {size:.1f} MB)")
    return elapsed


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 200)
