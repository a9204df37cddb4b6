"""Grader overhead against bare nbclient execution, measured in one run.

    python benchmarks/bench_grader.py [--practical mlp] [--copies 4] [--cached 50]

Times, on the same batch of notebooks (COPIES personalised copies of the practical's
reference solution):
  1. bare nbclient: each notebook executed with nbclient, one at a time, then two at a time;
  2. `grader run` with 1 and with 2 workers (sandboxed when bubblewrap works);
  3. a cached re-run of CACHED unchanged submissions, end to end (the CLI, as a user runs it).
Writes a markdown table to benchmarks/results/grader_overhead.md. Ratios are the point:
absolute times depend on the machine and its load.
"""

from __future__ import annotations

import argparse
import datetime
import os
import shutil
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
RESULTS = REPO / "benchmarks" / "results"


def personal_copies(source: Path, target: Path, count: int) -> list[Path]:
    target.mkdir(parents=True, exist_ok=True)
    paths = []
    for index in range(count):
        notebook = nbformat.read(str(source), as_version=4)
        notebook.cells.insert(0, nbformat.v4.new_markdown_cell(f"student {index}"))
        path = target / f"student{index:03d}.ipynb"
        nbformat.write(notebook, str(path))
        paths.append(path)
    return paths


def bare_nbclient(paths: list[Path], parallel: int, data_home: Path, work: Path) -> float:
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

    started = time.perf_counter()
    with ThreadPoolExecutor(parallel) as pool:
        list(pool.map(run, paths))
    return time.perf_counter() - started


def grader_cli(args: list[str], env: dict) -> float:
    started = time.perf_counter()
    subprocess.run([sys.executable, "-m", "grader.cli", *args], check=True, env=env,
                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, cwd=REPO)
    return time.perf_counter() - started


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


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--practical", default="mlp")
    parser.add_argument("--copies", type=int, default=4)
    parser.add_argument("--cached", type=int, default=50)
    parser.add_argument("--data-dir", default=str(REPO.parent / "shared" / "data"))
    args = parser.parse_args()

    from grader import data

    scratch = Path(tempfile.mkdtemp(prefix="bench-grader-"))
    env = {**os.environ, "GRADER_CACHE": str(scratch / "cache"), "GRADER_DATA": args.data_dir}
    os.environ.update(GRADER_CACHE=env["GRADER_CACHE"])
    data.mnist_npz()
    data_home = scratch / "data-home"
    (data_home / "home" / ".keras" / "datasets").mkdir(parents=True)
    shutil.copy(data.mnist_npz(), data_home / "home" / ".keras" / "datasets" / "mnist.npz")
    try:
        (data_home / "housing").mkdir()
        shutil.copy(data.housing_csv(args.data_dir), data_home / "housing" / "housing.csv")
    except Exception:  # noqa: BLE001 - only ocean_proximity needs it
        pass
    source = REPO / "reference" / args.practical / f"{args.practical}.ipynb"
    batch = personal_copies(source, scratch / "batch", args.copies)
    rows = []
    bare1 = bare_nbclient(batch, 1, data_home, scratch / "bare1")
    bare2 = bare_nbclient(batch, 2, data_home, scratch / "bare2")
    run = ["run", str(scratch / "batch"), "-a", args.practical, "--no-reports", "--no-cache"]
    g1 = grader_cli([*run, "-j", "1", "--out", str(scratch / "g1")], env)
    g2 = grader_cli([*run, "-j", "2", "--out", str(scratch / "g2")], env)
    rows += [("bare nbclient, 1 at a time", bare1, 1.0),
             ("bare nbclient, 2 at a time", bare2, 1.0),
             ("grader run -j 1 (sandbox, checks, results)", g1, g1 / bare1),
             ("grader run -j 2", g2, g2 / bare2)]
    # Cached re-run: CACHED unchanged submissions, already graded once.
    toy = REPO / "tests" / "fixtures" / "toy_course"
    cached = personal_copies(toy / "reference" / "toy" / "toy.ipynb", scratch / "cached", args.cached)
    first = ["--course", str(toy), "run", str(cached[0].parent), "-a", "toy",
             "--out", str(scratch / "cached-out")]
    grader_cli(first, env)
    again = grader_cli(first, env)
    rows.append((f"cached re-run of {args.cached} unchanged submissions (CLI, end to end)", again,
                 None))
    stamp = datetime.datetime.now().isoformat(timespec="minutes")
    lines = [f"# Grader overhead ({args.practical}, {args.copies} notebooks; {stamp}; "
             f"{os.cpu_count()} cores)", "",
             "| what | seconds | grader / bare nbclient at the same parallelism |",
             "| --- | ---: | ---: |"]
    for name, seconds, ratio in rows:
        lines.append(f"| {name} | {seconds:.1f} | {'' if ratio is None else f'{ratio:.2f}'} |")
    text = "\n".join(lines) + "\n"
    RESULTS.mkdir(exist_ok=True)
    _write_section(RESULTS / "grader_overhead.md", args.practical, text)
    print(text)
    shutil.rmtree(scratch, ignore_errors=True)


if __name__ == "__main__":
    main()
