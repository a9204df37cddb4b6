"""Grader overhead against bare nbclient execution, measured in one run.

    python benchmarks/bench_grader.py [--practical mlp] [--copies 4] [--cached 50]
    python benchmarks/bench_grader.py --practical mlp --copies 6 --scaling 1,2,3,4

Times, on the same batch of notebooks (COPIES personalised copies of the practical's
reference solution), every run started from the same state (no result cache):

  1. bare nbclient: each notebook executed by nbclient in-process with a plain local
     kernel (no sandbox, no checks), as nbgrader or a script would, 1 and 2 at a time;
  2. ``grader run`` (the CLI, end to end: sandbox, every check, results, gradebook, feedback
     pages and dashboard) 1 and 2 at a time, four ways: fresh kernels (a new Python each)
     or prepared ones (forked from a per-worker zygote that imported TensorFlow once: the
     default), each started on demand (--no-warm-kernels) or ahead, while the worker's
     previous notebook runs (the default);
  3. a cached re-run of CACHED unchanged submissions, end to end.

Also written: where a submission's time goes (the phases each result records, medians),
the memory of one kernel (peak RSS: sampled for bare kernels, the grader's watchdog for its
own) and the peak total PSS of every process a run started (coordinator, workers, zygotes,
kernels, spare kernels), sampled twice a second. With --scaling, the default grader is run at
each worker count instead, to show how the batch time scales on this machine.

Writes one section per practical (or scaling run) to benchmarks/results/grader_overhead.md.
Ratios are the point: absolute times depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
import psutil
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"
sys.path.insert(0, str(REPO))


def personal_copies(source: Path, target: Path, count: int, read=None) -> list[Path]:
    """COUNT copies of a notebook, each a little different (a first cell naming the student),
    so that no cache takes one for another. ``read``: how to load the source notebook."""
    target.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        notebook = read(source) if read else nbformat.read(str(source), as_version=4)
        notebook.cells.insert(0, nbformat.v4.new_markdown_cell(f"student {index}"))
        path = target / f"student{index:03d}.ipynb"
        nbformat.write(notebook, str(path))
        paths.append(path)
    return paths


class TreeMemory(threading.Thread):
    """Samples, twice a second, the processes under ``root``: the peak of their summed PSS
    (shared pages split between sharers, so forked kernels are not counted twice) and each
    kernel's peak RSS."""

    def __init__(self, root: int, include_root: bool):
        super().__init__(daemon=True)
        self.root, self.include_root = root, include_root
        self.peak_pss_mb = 0.0
        self.kernel_rss_mb: dict[int, float] = {}
        self._done = threading.Event()

    def run(self) -> None:
        while not self._done.wait(0.5):
            try:
                top = psutil.Process(self.root)
                procs = top.children(recursive=True) + ([top] if self.include_root else [])
            except psutil.Error:
                continue
            total = 0.0
            for proc in procs:
                try:
                    info = proc.memory_full_info()
                    total += info.pss / 2**20
                    if "ipykernel_launcher" in " ".join(proc.cmdline()):
                        self.kernel_rss_mb[proc.pid] = max(self.kernel_rss_mb.get(proc.pid, 0.0),
                                                           info.rss / 2**20)
                except psutil.Error:
                    pass
            self.peak_pss_mb = max(self.peak_pss_mb, total)

    def stop(self) -> TreeMemory:
        self._done.set()
        self.join()
        return self


def bare_nbclient(paths: list[Path], parallel: int, data_home: Path, work: Path):
    """Plain nbclient, as nbgrader or a script would run it (no sandbox, no checks)."""
    def run(path: Path) -> None:
        cwd = work / path.stem
        (cwd / "datasets").mkdir(parents=True, exist_ok=True)
        housing = data_home / "housing"
        if housing.exists() and not (cwd / "datasets" / "housing").exists():
            (cwd / "datasets" / "housing").symlink_to(housing)
        notebook = nbformat.read(str(path), as_version=4)
        NotebookClient(notebook, timeout=600, allow_errors=True,
                       resources={"metadata": {"path": str(cwd)}}).execute(
            env={**os.environ, "HOME": str(data_home / "home")})

    memory = TreeMemory(os.getpid(), include_root=False)
    memory.start()
    started = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(run, paths))
    return time.perf_counter() - started, memory.stop()


def grader_cli(args: list[str], env: dict):
    memory = None
    started = time.perf_counter()
    process = subprocess.Popen([sys.executable, "-m", "grader.cli", *args], env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, cwd=REPO)
    memory = TreeMemory(process.pid, include_root=True)
    memory.start()
    _, stderr = process.communicate()
    seconds = time.perf_counter() - started
    memory.stop()
    if process.returncode != 0:
        raise SystemExit(f"grader {' '.join(args)} failed:\n{stderr.decode()[-2000:]}")
    return seconds, memory


def load_results(out: Path) -> list[dict]:
    return [json.loads(p.read_text()) for p in sorted((out / "results").glob("*.json"))]


def phases(results: list[dict], out: Path) -> dict[str, float]:
    """Median seconds per phase of one submission. The first code cell of every reference
    notebook is its imports (TensorFlow/Keras): it stands for the import time."""
    from grader.reports import _executed_path, write_feedback
    from grader.results import SubmissionResult

    rows: dict[str, list[float]] = {k: [] for k in
                                    ("kernel start", "imports (first cell)", "other cells",
                                     "checks", "kernel shutdown", "feedback page",
                                     "rest of the harness", "total")}
    for data in results:
        timings, cells = data["timings"], data["cells"]
        first = cells[0]["duration_s"] if cells else 0.0
        rows["kernel start"].append(timings.get("kernel_start", 0.0))
        rows["imports (first cell)"].append(first)
        rows["other cells"].append(timings.get("cells", 0.0) - first)
        rows["checks"].append(timings.get("checks", 0.0))
        rows["kernel shutdown"].append(timings.get("shutdown", 0.0))
        result = SubmissionResult.from_json(json.dumps(data))
        started = time.perf_counter()  # rendered again here, alone, to time it
        write_feedback(result, out / "rerendered", _executed_path(result, out))
        rows["feedback page"].append(time.perf_counter() - started)
        rows["rest of the harness"].append(data["duration_s"] - sum(
            timings.get(k, 0.0) for k in ("kernel_start", "cells", "checks", "shutdown")))
        rows["total"].append(data["duration_s"])
    return {name: statistics.median(values) for name, values in rows.items() if values}


def _write_section(path: Path, key: str, text: str) -> None:
    """Keep one section per practical in the results file, replacing that practical's."""
    sections = {}
    if path.exists():
        for chunk in path.read_text().split("<!-- ")[1:]:
            name, body = chunk.split(" -->", 1)
            sections[name] = body.strip("\n")
    sections[key] = text.strip("\n")
    path.write_text("\n\n".join(f"<!-- {k} -->\n{v}" for k, v in sorted(sections.items()))
                    + "\n")


def _prepare(args) -> tuple[Path, dict, Path]:
    from grader import data

    scratch = Path(tempfile.mkdtemp(prefix="bench-grader-"))
    env = {**os.environ, "GRADER_CACHE": str(scratch / "cache"), "GRADER_DATA": args.data_dir}
    os.environ.update(GRADER_CACHE=env["GRADER_CACHE"])
    data_home = scratch / "data-home"
    (data_home / "home" / ".keras" / "datasets").mkdir(parents=True)
    shutil.copy(data.mnist_npz(), data_home / "home" / ".keras" / "datasets" / "mnist.npz")
    try:
        (data_home / "housing").mkdir()
        shutil.copy(data.housing_csv(args.data_dir), data_home / "housing" / "housing.csv")
    except Exception:  # noqa: BLE001 - only ocean_proximity needs it
        pass
    return scratch, env, data_home


VARIANTS = {"fresh-cold": ["--kernel-provider", "fresh", "--no-warm-kernels"],
            "fresh-warm": ["--kernel-provider", "fresh"],
            "prepared-cold": ["--no-warm-kernels"],
            "prepared-warm": []}


def overhead(args) -> str:
    scratch, env, data_home = _prepare(args)
    source = REPO / "reference" / args.practical / f"{args.practical}.ipynb"
    batch = personal_copies(source, scratch / "batch", args.copies)
    run = ["run", str(scratch / "batch"), "-a", args.practical, "--no-cache"]
    timed, memory, outs = {}, {}, {}
    for parallel in (1, 2):
        timed[("bare", parallel)], memory[("bare", parallel)] = bare_nbclient(
            batch, parallel, data_home, scratch / f"bare{parallel}")
        for variant, flags in VARIANTS.items():
            out = outs[(variant, parallel)] = scratch / f"{variant}{parallel}"
            timed[(variant, parallel)], memory[(variant, parallel)] = grader_cli(
                [*run, *flags, "-j", str(parallel), "--out", str(out)], env)
    toy = REPO / "tests" / "fixtures" / "toy_course"
    cached = personal_copies(toy / "reference" / "toy" / "toy.ipynb", scratch / "cached",
                             args.cached)
    first = ["--course", str(toy), "run", str(cached[0].parent), "-a", "toy",
             "--out", str(scratch / "cached-out")]
    grader_cli(first, env)
    again, _ = grader_cli(first, env)

    scores = {key: sorted({(r["score"], r["max_score"], r["status"]) for r in load_results(out)})
              for key, out in outs.items()}
    stamp = datetime.datetime.now().isoformat(timespec="minutes")
    names = {"bare": "bare nbclient",
             "fresh-cold": "grader run, fresh kernels started on demand "
                           "(--kernel-provider fresh --no-warm-kernels)",
             "fresh-warm": "grader run, fresh kernels started ahead (--kernel-provider fresh)",
             "prepared-cold": "grader run, prepared kernels started on demand "
                              "(--no-warm-kernels)",
             "prepared-warm": "grader run, prepared kernels started ahead (the default)"}
    lines = [f"# {args.practical}: {args.copies} notebooks, {stamp}, {os.cpu_count()} cores", "",
             "| what | -j 1 (s) | ratio | -j 2 (s) | ratio | peak PSS of the run, -j 2 (MB) "
             "| peak RSS of one kernel (MB) |",
             "| --- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for variant in ("bare", *VARIANTS):
        one, two = timed[(variant, 1)], timed[(variant, 2)]
        if variant == "bare":
            rss = statistics.median(memory[("bare", 1)].kernel_rss_mb.values() or [0.0])
        else:
            rss = statistics.median(r["peak_memory_mb"] for r in load_results(outs[(variant, 1)]))
        lines.append(f"| {names[variant]} | {one:.1f} | {one / timed[('bare', 1)]:.2f} | "
                     f"{two:.1f} | {two / timed[('bare', 2)]:.2f} | "
                     f"{memory[(variant, 2)].peak_pss_mb:.0f} | {rss:.0f} |")
    lines += ["", f"Cached re-run of {args.cached} unchanged submissions (CLI, end to end): "
              f"{again:.1f} s.", "",
              "Scores (score, max, status) per grader run: "
              + "; ".join(f"{v}-j{p} {s}" for (v, p), s in sorted(scores.items())), "",
              "Where one submission's time goes (median seconds, grader -j 1):", "",
              "| phase | " + " | ".join(VARIANTS) + " |",
              "| --- |" + " ---: |" * len(VARIANTS)]
    split = {variant: phases(load_results(outs[(variant, 1)]), outs[(variant, 1)])
             for variant in VARIANTS}
    for phase in split["fresh-cold"]:
        lines.append(f"| {phase} | " + " | ".join(f"{split[v][phase]:.2f}" for v in VARIANTS)
                     + " |")
    lines += ["", "Bare nbclient's peak PSS at -j 2 counts its kernels only (nbclient runs inside "
              "the benchmark's own process); the grader's counts every process of the run: "
              "coordinator, workers, zygotes, kernels and spare kernels. A kernel's RSS from the "
              "grader is its watchdog's peak for the kernel's whole sandbox; a forked kernel's "
              "RSS includes the pages it shares with its zygote."]
    shutil.rmtree(scratch, ignore_errors=True)
    return "\n".join(lines) + "\n"


def scaling(args) -> str:
    scratch, env, _ = _prepare(args)
    source = REPO / "reference" / args.practical / f"{args.practical}.ipynb"
    personal_copies(source, scratch / "batch", args.copies)
    counts = [int(n) for n in args.scaling.split(",")]
    stamp = datetime.datetime.now().isoformat(timespec="minutes")
    lines = [f"# Scaling with workers: {args.practical}, {args.copies} notebooks, {stamp}, "
             f"{os.cpu_count()} cores, default settings (prepared kernels started ahead)", "",
             "| workers | seconds | speed-up over 1 | peak PSS of the run (MB) |",
             "| ---: | ---: | ---: | ---: |"]
    first = None
    for workers in counts:
        seconds, memory = grader_cli(["run", str(scratch / "batch"), "-a", args.practical,
                                      "--no-cache", "-j", str(workers),
                                      "--out", str(scratch / f"j{workers}")], env)
        first = first or seconds
        lines.append(f"| {workers} | {seconds:.1f} | {first / seconds:.2f} | "
                     f"{memory.peak_pss_mb:.0f} |")
    from grader.runner import default_workers
    from grader.assignment import load_assignment

    limit = load_assignment(args.practical, REPO).limits.memory_mb
    lines += ["", f"`grader run` would pick {default_workers(limit)} worker(s) here by default "
              f"(cores, and available memory / the assignment's {limit} MB limit)."]
    shutil.rmtree(scratch, ignore_errors=True)
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--practical", default="mlp")
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--cached", type=int, default=50)
    parser.add_argument("--scaling", help="comma-separated worker counts, e.g. 1,2,3,4")
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    args = parser.parse_args()
    if args.scaling:
        text, key = scaling(args), f"scaling-{args.practical}"
    else:
        text, key = overhead(args), args.practical
    RESULTS.mkdir(exist_ok=True)
    _write_section(RESULTS / "grader_overhead.md", key, text)
    print(text)


if __name__ == "__main__":
    main()
