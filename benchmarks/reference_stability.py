"""Each reference notebook, graded as a submission, three runs in a row: full marks every time?

    python benchmarks/reference_stability.py [--runs 3] [--data-dir ../shared/data]

Grades every practical's reference solution RUNS times (no cache, bubblewrap sandbox where
available, 2 workers) and writes benchmarks/results/reference_stability.md with the scores,
statuses and cell times.
"""

from __future__ import annotations

import argparse
import datetime
import shutil
import tempfile
from pathlib import Path

from grader.assignment import available, load_assignment
from grader.executor import GradeOptions
from grader.runner import run_batch

REPO = Path(__file__).resolve().parents[1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--data-dir", type=Path, default=REPO.parent / "shared" / "data")
    args = parser.parse_args()
    lines = [f"# Reference notebooks graded as submissions, {args.runs} runs each "
             f"({datetime.date.today()})", "",
             "| practical | run | score | status | notebook cells, s |", "| --- | ---: | --- | --- | ---: |"]
    all_full = True
    with tempfile.TemporaryDirectory(prefix="ref-stability-") as scratch:
        for name in available(REPO):
            assignment = load_assignment(name, REPO)
            subs = Path(scratch) / name / "subs"
            subs.mkdir(parents=True)
            for run in range(1, args.runs + 1):
                shutil.copy(assignment.reference_notebook, subs / f"run{run}.ipynb")
            summary = run_batch(subs, assignment, Path(scratch) / name / "out",
                                GradeOptions(sandbox="auto", data_dir=args.data_dir), workers=2,
                                use_cache=False, progress=False)
            for result in sorted(summary.results, key=lambda r: r.student_id):
                full = result.score == result.max_score and result.status.value == "ok"
                all_full &= full
                lines.append(f"| {name} | {result.student_id[3:]} | {result.score:g}/"
                             f"{result.max_score:g} | {result.status.value} | "
                             f"{result.timings.get('cells', 0):.1f} |")
    lines += ["", f"Full marks on every run: **{'yes' if all_full else 'NO'}**."]
    text = "\n".join(lines) + "\n"
    (REPO / "benchmarks" / "results").mkdir(exist_ok=True)
    (REPO / "benchmarks" / "results" / "reference_stability.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
