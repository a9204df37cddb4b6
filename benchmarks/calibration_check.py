"""Do calibrated bands hold? Calibrate a practical, then test the band on fresh runs.

    python benchmarks/calibration_check.py NAME [--runs 5] [--fresh 20] [--weak-runs 5]
                                                [--workers 2] [--sandbox auto] [--write]

1. Copies ``assignments/NAME`` and ``reference/NAME`` to a scratch course and runs
   ``grader calibrate`` there (K = --runs, GRADER_SEED 1..K), so the real
   ``reference/NAME/expected.json`` is left alone unless ``--write`` is given.
2. Grades the reference notebook --fresh more times, GRADER_SEED 1001, 1002, ...
   (seeds calibration never saw), against the band just written: a trustworthy
   band passes at least 19 of 20.
3. Grades a *weakened* reference (--weak-runs times, the same fresh seeds): the
   reference notebook with the string replacements of ``WEAKENINGS[NAME]`` applied
   to its code cells. A useful band fails it.
4. Writes (or updates) the section of NAME in ``benchmarks/results/calibration.md``.

The weakenings, one per practical, are models a student could plausibly hand in
that learned clearly less than the reference:
"""

from __future__ import annotations

import argparse
import datetime as _dt
import re
import shutil
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import nbformat

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from grader.assignment import load_assignment  # noqa: E402
from grader.calibration import (RunRecord, calibrate, gpu_device_nodes,  # noqa: E402
                                run_seeds, seeds_for, write_bands)
from grader.executor import GradeOptions, versions  # noqa: E402
from grader.sandbox import resolve_mode  # noqa: E402

FRESH_SEED_START = 1001

# name -> (what the weakened model is, [(text in the reference notebook, replacement)]).
WEAKENINGS: dict[str, tuple[str, list[tuple[str, str]]]] = {
    "linear_softmax": ("learning rate 0.5 -> 0.005 (under-trained linear model)",
                       [("LEARNING_RATE = 0.5", "LEARNING_RATE = 0.005")]),
    "mlp": ("4 hidden units instead of 128, 1 epoch instead of 3",
            [('layers.Dense(128, activation="relu")', 'layers.Dense(4, activation="relu")'),
             ("epochs=3", "epochs=1")]),
    "cnn": ("2 and 4 filters instead of 16 and 32, 1 epoch instead of 3",
            [("layers.Conv2D(16,", "layers.Conv2D(2,"), ("layers.Conv2D(32,", "layers.Conv2D(4,"),
             ("epochs=3", "epochs=1")]),
    "ocean_proximity": ("4 hidden units per layer instead of 64, 1 epoch instead of 15",
                        [("keras.layers.Dense(64,", "keras.layers.Dense(4,"),
                         ("epochs=15", "epochs=1")]),
    "custom_train_step": ("1 epoch instead of EPOCHS",
                          [("epochs=EPOCHS", "epochs=1")]),
}
__doc__ += "".join(f"\n    {name}: {what}" for name, (what, _) in WEAKENINGS.items()) + "\n"

RESULTS = REPO / "benchmarks" / "results" / "calibration.md"
HEADER = """# Do calibrated bands hold?

Written by `benchmarks/calibration_check.py` (see its docstring). For each practical:
`grader calibrate` with K seeded runs of the reference notebook (GRADER_SEED 1..K), then
the reference graded again with fresh seeds (1001, 1002, ...) against the band it wrote,
and a weakened reference (the notebook transformation named) with the same fresh seeds.
The band rule (`grader/calibration.py`): low = min(mean - 3 sd, min - max(0.02, 2 sd)),
at least the floor (0 unless expected.json says), rounded down to 4 decimals; high = +inf.
"""


def weaken(notebook: Path, replacements: list[tuple[str, str]], target: Path) -> Path:
    nb = nbformat.read(str(notebook), as_version=4)
    for old, new in replacements:
        hits = [cell for cell in nb.cells if cell.cell_type == "code" and old in cell.source]
        if not hits:
            raise SystemExit(f"weakening: {old!r} is not in {notebook}; update WEAKENINGS")
        for cell in hits:
            cell.source = cell.source.replace(old, new)
    nbformat.write(nb, str(target))
    return target


def scratch_course(name: str, root: Path) -> Path:
    for part in ("assignments", "reference"):
        shutil.copytree(REPO / part / name, root / part / name,
                        ignore=shutil.ignore_patterns("__pycache__"))
    return root


def summarise(records: list[RunRecord], metric: str, low: float) -> dict:
    values = [r.metrics.get(metric) for r in records]
    passed = sum(1 for v in values if v is not None and v >= low)
    numbers = [v for v in values if v is not None]
    return {"n": len(records), "passed": passed, "values": values,
            "min": min(numbers) if numbers else None, "max": max(numbers) if numbers else None,
            "errors": [f"seed {r.seed}: {r.status} {r.message}" for r in records
                       if r.status != "ok" or metric not in r.metrics]}


def section(name: str, entry: dict, metric: str, fresh: dict, weak: dict, what: str,
            seconds: float, mode: str) -> str:
    fmt = lambda v: "-" if v is None else f"{v:.4f}"  # noqa: E731
    verdict_fresh = "OK" if fresh["passed"] >= 0.95 * fresh["n"] else "TOO TIGHT"
    verdict_weak = "OK" if weak["passed"] == 0 else ("PARTLY" if weak["passed"] < weak["n"]
                                                      else "TOO LOOSE")
    lines = [
        f"<!-- {name} -->",
        f"## {name} — `{metric}` on {entry['device']}",
        "",
        f"Run {_dt.date.today().isoformat()}, TensorFlow {entry.get('tensorflow')}, sandbox "
        f"{mode}, {seconds / 60:.1f} min in all.",
        "",
        "| | runs | seeds | mean | sd | min | max | band low | pass |",
        "|---|---|---|---|---|---|---|---|---|",
        f"| calibration | {entry['runs']} | {entry['seeds'][0]}-{entry['seeds'][-1]} | "
        f"{entry['mean']:.4f} | {entry['std']:.4f} | {min(entry['reference_values']):.4f} | "
        f"{max(entry['reference_values']):.4f} | **{entry['low']:.4f}** | - |",
        f"| reference, fresh seeds | {fresh['n']} | {FRESH_SEED_START}-"
        f"{FRESH_SEED_START + fresh['n'] - 1} | {_mean(fresh['values'])} | {_sd(fresh['values'])} "
        f"| {fmt(fresh['min'])} | {fmt(fresh['max'])} | {entry['low']:.4f} | "
        f"{fresh['passed']}/{fresh['n']} ({verdict_fresh}) |",
        f"| weakened: {what} | {weak['n']} | {FRESH_SEED_START}-{FRESH_SEED_START + weak['n'] - 1} "
        f"| {_mean(weak['values'])} | {_sd(weak['values'])} | {fmt(weak['min'])} | "
        f"{fmt(weak['max'])} | {entry['low']:.4f} | {weak['passed']}/{weak['n']} pass "
        f"({verdict_weak}: should be 0) |",
        "",
        f"Reference values (calibration): {', '.join(f'{v:.4f}' for v in entry['reference_values'])}.",
        "",
        f"Fresh reference values: {', '.join(fmt(v) for v in fresh['values'])}.",
        "",
        f"Weakened values: {', '.join(fmt(v) for v in weak['values'])}.",
        "",
    ]
    for label, summary in (("reference", fresh), ("weakened", weak)):
        if summary["errors"]:
            lines += [f"Runs of the {label} without the metric: "
                      + "; ".join(e[:200] for e in summary["errors"]), ""]
    return "\n".join(lines)


def _mean(values) -> str:
    numbers = [v for v in values if v is not None]
    return f"{sum(numbers) / len(numbers):.4f}" if numbers else "-"


def _sd(values) -> str:
    import statistics

    numbers = [v for v in values if v is not None]
    return f"{statistics.stdev(numbers):.4f}" if len(numbers) > 1 else "-"


def update_results(name: str, text: str, path: Path = RESULTS) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    current = path.read_text() if path.exists() else HEADER
    pattern = re.compile(rf"<!-- {re.escape(name)} -->\n.*?(?=\n<!-- |\Z)", re.S)
    if pattern.search(current):
        current = pattern.sub(lambda _: text.rstrip("\n"), current)
    else:
        current = current.rstrip("\n") + "\n\n" + text
    path.write_text(current.rstrip("\n") + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("name", choices=sorted(WEAKENINGS))
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--fresh", type=int, default=20)
    parser.add_argument("--weak-runs", type=int, default=5)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    parser.add_argument("--sandbox", choices=["auto", "required", "off"], default="auto")
    parser.add_argument("--data-dir", type=Path)
    parser.add_argument("--no-variants", action="store_true",
                        help="calibrate the reference only (default: with reference/NAME/variants/)")
    parser.add_argument("--write", action="store_true",
                        help="also write the band into the real reference/NAME/expected.json")
    args = parser.parse_args(argv)
    what, replacements = WEAKENINGS[args.name]
    reference = load_assignment(args.name, REPO).reference_notebook
    with tempfile.TemporaryDirectory() as tmp:  # before the long runs: fail fast on a stale one
        weaken(reference, replacements, Path(tmp) / reference.name)
    started = time.perf_counter()
    mode, _ = resolve_mode(args.sandbox)
    with tempfile.TemporaryDirectory(prefix="calibration-check-") as tmp:
        course = scratch_course(args.name, Path(tmp) / "course")
        entries = calibrate(SimpleNamespace(name=args.name, runs=args.runs, device=args.device,
                                            workers=args.workers, data_dir=args.data_dir,
                                            sandbox=args.sandbox,
                                            no_variants=args.no_variants), course)
        options = GradeOptions(sandbox=mode if mode == "off" else args.sandbox,
                               device=args.device, data_dir=args.data_dir,
                               gpu_devices=gpu_device_nodes() if args.device == "gpu" else ())
        seeds = seeds_for(args.fresh, start=FRESH_SEED_START)
        print(f"\nReference, {len(seeds)} fresh seeds:", flush=True)
        fresh = run_seeds(args.name, course, seeds, options, workers=args.workers,
                          progress=_progress)
        notebook = load_assignment(args.name, course).reference_notebook
        weak_path = weaken(notebook, replacements, Path(tmp) / notebook.name)
        print(f"\nWeakened ({what}), {args.weak_runs} fresh seeds:", flush=True)
        weak = run_seeds(args.name, course, seeds[: args.weak_runs], options, notebook=weak_path,
                         workers=args.workers, progress=_progress)
        if args.write:
            write_bands(REPO / "reference" / args.name / "expected.json", entries)
    seconds = time.perf_counter() - started
    for metric, per_device in entries.items():
        entry = per_device[args.device]
        text = section(args.name, entry, metric, summarise(fresh, metric, entry["low"]),
                       summarise(weak, metric, entry["low"]), what, seconds, mode)
        update_results(args.name, text)
        print("\n" + text)
    print(f"Results: {RESULTS} (grader {versions()['grader']})")
    return 0


def _progress(record: RunRecord) -> None:
    metrics = ", ".join(f"{k} {v:.4f}" for k, v in record.metrics.items())
    failed = f"; failed {', '.join(f.split(':', 1)[0] for f in record.failed)}" if record.failed else ""
    print(f"  seed {record.seed}: {record.status} {metrics}{failed} ({record.duration_s:.1f} s)",
          flush=True)


if __name__ == "__main__":
    sys.exit(main())
