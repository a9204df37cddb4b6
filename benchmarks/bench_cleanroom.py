"""What clean-room model evaluation adds per submission, against the grader before it, in one run.

    python benchmarks/bench_cleanroom.py --baseline /path/to/checkout-of-main [--practical mlp] [--copies 4]

Grades COPIES personalised copies of the practical's reference notebook, one at a time, with
prepared kernels (the default) and the same sandbox, once with this tree's grader (export as
data, clean-room kernel, private holdout) and once with the grader in BASELINE (a checkout of
the commit before: the hidden check asks the student's kernel for ``model.predict``). Each
tree grades its own reference notebook, in its own Python process; the first submission of
each (it starts the zygote) is left out of the medians.

Reported per submission (medians): the whole grading time, the notebook's cells, the checks
phase and the kernel shutdown, and for this
tree the clean room's phases from the result's timings (start: forking its kernel and waiting
for it; export: ``to_json``/``get_weights`` in the student's kernel; rebuild; predict; close).
The added cost is the difference of the checks phases (and of the totals). Appends a section
to benchmarks/results/cleanroom.md. Absolute times depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"

WORKER = r"""
import json, sys, time
from pathlib import Path
import nbformat
from grader.assignment import load_assignment
from grader.executor import GradeOptions, grade_submission

tree, practical, copies, scratch, data_dir = sys.argv[1:6]
tree, scratch = Path(tree), Path(scratch)
source = tree / "reference" / practical / f"{practical}.ipynb"
assignment = load_assignment(practical, tree)
options = GradeOptions(sandbox="required", scratch_root=scratch,
                       data_dir=Path(data_dir) if data_dir else None)
rows = []
for index in range(int(copies)):
    notebook = nbformat.read(str(source), as_version=4)
    notebook.cells.insert(0, nbformat.v4.new_markdown_cell(f"student {index}"))
    path = scratch / f"student{index}.ipynb"
    nbformat.write(notebook, str(path))
    started = time.perf_counter()
    result = grade_submission(path, assignment, options, student_id=f"student{index}")
    rows.append({"total": time.perf_counter() - started, "score": result.score,
                 "max": result.max_score, "timings": result.timings,
                 "provider": result.kernel_provider})
print("RESULT " + json.dumps(rows))
"""


def grade_with(tree: Path, practical: str, copies: int, data_dir: str) -> list[dict]:
    with tempfile.TemporaryDirectory(prefix="bench-cleanroom-") as scratch:
        env = {**os.environ, "PYTHONPATH": str(tree),
               "GRADER_CACHE": str(Path(scratch) / "cache")}
        done = subprocess.run([sys.executable, "-c", WORKER, str(tree), practical, str(copies),
                               scratch, data_dir], env=env, capture_output=True, text=True,
                              cwd=tree, check=False)
    line = next((row for row in done.stdout.splitlines() if row.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"grading with {tree} failed:\n{done.stderr[-3000:]}")
    return json.loads(line[len("RESULT "):])


def median(rows: list[dict], key) -> float:
    values = [key(row) for row in rows]
    return statistics.median(values) if values else float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--baseline", type=Path, required=True,
                        help="a checkout of the grader before the clean room")
    parser.add_argument("--practical", default="mlp")
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--data-dir", default=os.environ.get("GRADER_DATA", ""))
    args = parser.parse_args()

    runs = {"baseline": grade_with(args.baseline.resolve(), args.practical, args.copies,
                                   args.data_dir),
            "clean room": grade_with(REPO, args.practical, args.copies, args.data_dir)}
    measured = {name: rows[1:] or rows for name, rows in runs.items()}  # first starts the zygote
    lines = [f"## {args.practical}: {args.copies} submissions each, one at a time "
             f"({datetime.date.today()}, {platform.machine()}, {os.cpu_count()} CPUs, "
             f"load {os.getloadavg()[0]:.1f})", "",
             "| grader | provider | score | total s | cells s | checks s | shutdown s |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, rows in measured.items():
        lines.append(f"| {name} | {rows[0]['provider']} | {rows[0]['score']:g}/{rows[0]['max']:g} | "
                     f"{median(rows, lambda r: r['total']):.2f} | "
                     f"{median(rows, lambda r: r['timings'].get('cells', 0)):.2f} | "
                     f"{median(rows, lambda r: r['timings'].get('checks', 0)):.2f} | "
                     f"{median(rows, lambda r: r['timings'].get('shutdown', 0)):.2f} |")
    phases = sorted({k for row in measured["clean room"] for k in row["timings"]
                     if k.startswith("cleanroom_")})
    lines += ["", "Clean-room phases (median s per submission): " + ", ".join(
        f"{k.removeprefix('cleanroom_')} {median(measured['clean room'], lambda r, k=k: r['timings'].get(k, 0)):.3f}"
        for k in phases)]
    added_checks = median(measured["clean room"], lambda r: r["timings"].get("checks", 0)) - \
        median(measured["baseline"], lambda r: r["timings"].get("checks", 0))
    added_total = median(measured["clean room"], lambda r: r["total"]) - \
        median(measured["baseline"], lambda r: r["total"])
    close = median(measured["clean room"], lambda r: r["timings"].get("cleanroom_close", 0))
    lines += [f"Added per submission (medians): checks phase {added_checks:+.2f} s, plus closing "
              f"the clean room {close:.2f} s: {added_checks + close:+.2f} s. Total "
              f"{added_total:+.2f} s (the total also moves with the notebook's own run time, "
              "which the clean room's kernel, booting meanwhile, competes with on few CPUs).",
              ""]
    text = "\n".join(lines) + "\n"
    print(text)
    RESULTS.mkdir(exist_ok=True)
    out = RESULTS / "cleanroom.md"
    if not out.exists():
        out.write_text("# Clean-room evaluation: added cost per submission\n\n"
                       "Written by `benchmarks/bench_cleanroom.py` (see its docstring).\n\n")
    with out.open("a") as f:
        f.write(text)


if __name__ == "__main__":
    main()
