"""The coordinator's overhead on a Dask cluster against local worker processes, in one run.

    python benchmarks/bench_cluster.py [--copies 16] [--workers 2]

Grades the same batch (COPIES personalised copies of the toy assignment's reference and
stub notebooks, half each) twice with ``run_batch``: locally with WORKERS worker
processes, then on a ``distributed.LocalCluster`` of WORKERS single-threaded workers
(started before the clock runs; its start-up is reported apart). For each:

* wall: the batch, end to end (cache off);
* grading: the sum of each result's ``duration_s`` (time inside ``grade_submission``);
* not grading, per submission: ``(wall * WORKERS - grading) / COPIES``: dispatch,
  transfers, writing results, idle slots at the end;
* coordinator CPU per submission: CPU time of the ``grader run`` process itself.

Writes a markdown table to benchmarks/results/cluster.md. On a small machine the
kernels and the coordinator share the cores: read the ratios, not the absolute times.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import nbformat

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
TOY = REPO / "tests" / "fixtures" / "toy_course"


def batch(target: Path, count: int) -> Path:
    target.mkdir(parents=True)
    for index in range(count):
        folder = "reference" if index % 2 == 0 else "assignments"
        notebook = nbformat.read(str(TOY / folder / "toy" / "toy.ipynb"), as_version=4)
        notebook.cells.insert(0, nbformat.v4.new_markdown_cell(f"student {index}"))
        nbformat.write(notebook, str(target / f"s{index:03d}.ipynb"))
    return target


def timed(subs: Path, out: Path, workers: int, scheduler: str | None) -> dict:
    from grader.assignment import load_assignment
    from grader.executor import GradeOptions
    from grader.runner import run_batch

    toy = load_assignment("toy", TOY)
    wall0, cpu0 = time.perf_counter(), time.process_time()
    summary = run_batch(subs, toy, out, GradeOptions(sandbox="auto"), workers, use_cache=False,
                        progress=False, scheduler=scheduler)
    wall, cpu = time.perf_counter() - wall0, time.process_time() - cpu0
    grading = sum(r.duration_s for r in summary.results)
    n = len(summary.results)
    return {"wall": wall, "grading": grading, "n": n, "idle": (wall * workers - grading) / n,
            "cpu": cpu / n, "statuses": dict(summary.statuses),
            "sandbox": summary.results[0].sandbox if summary.results else "?"}


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--copies", type=int, default=16)
    parser.add_argument("--workers", type=int, default=2)
    args = parser.parse_args()

    from distributed import LocalCluster

    scratch = Path(tempfile.mkdtemp(prefix="bench-cluster-"))
    os.environ["GRADER_CACHE"] = str(scratch / "cache")  # the workers inherit it
    subs = batch(scratch / "subs", args.copies)
    local = timed(subs, scratch / "local", args.workers, None)
    started = time.perf_counter()
    with LocalCluster(n_workers=args.workers, threads_per_worker=1, processes=True,
                      dashboard_address=None, silence_logs=40) as cluster:
        startup = time.perf_counter() - started
        remote = timed(subs, scratch / "cluster", args.workers, cluster.scheduler_address)
    if local["statuses"] != remote["statuses"]:
        sys.exit(f"the two runs disagree: {local['statuses']} != {remote['statuses']}")
    stamp = datetime.datetime.now().isoformat(timespec="minutes")
    load = os.getloadavg()[0]
    lines = [f"# Grading on a Dask cluster vs locally (toy assignment, {args.copies} notebooks, "
             f"{args.workers} workers; {stamp}; {os.cpu_count()} cores; sandbox: "
             f"{local['sandbox']})", "",
             "| run | wall s | grading s (sum) | not grading, s per submission | "
             "coordinator CPU, s per submission |", "| --- | ---: | ---: | ---: | ---: |"]
    for name, row in ((f"local, {args.workers} worker processes", local),
                      (f"LocalCluster, {args.workers} workers x 1 thread", remote)):
        lines.append(f"| {name} | {row['wall']:.1f} | {row['grading']:.1f} | "
                     f"{row['idle']:.2f} | {row['cpu']:.3f} |")
    extra = (remote["wall"] - local["wall"]) / args.copies
    lines += ["", f"Cluster start-up (not in the table): {startup:.1f} s. The cluster's extra "
              f"wall time per submission: {extra:+.2f} s. Statuses, both runs: "
              f"{ {s.value: c for s, c in local['statuses'].items()} }. Load average at the "
              f"end: {load:.1f} on {os.cpu_count()} cores (other jobs shared this machine, "
              "so the wall times are noisy).", ""]
    text = "\n".join(lines)
    RESULTS.mkdir(exist_ok=True)
    (RESULTS / "cluster.md").write_text(text)
    print(text)
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
