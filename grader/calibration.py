"""``grader calibrate``: bands for trained-quality checks, measured from the reference.

A trained model's accuracy varies with the seed, so a hidden check compares it
with a *band* (``expected.band("test_accuracy")``) rather than a value. This
module measures that band: it grades the reference notebook K times, seed 1, 2,
..., K (``--runs K``; at least 5 recommended), each in a fresh kernel that reads
its seed from ``GRADER_SEED`` (reference notebooks start with
``SEED = int(os.environ.get("GRADER_SEED", "42"))`` and
``keras.utils.set_random_seed(SEED)``). During these runs every band is open
(:meth:`grader.assignment.Expected.calibrating`), so each trained-quality check
passes and reports its metric whatever its current band says, or whether there
is one at all. Every other check must pass too: a reference that fails its own
checks is not calibrated, and the command says which check failed for which seed.

The band rule (metrics where higher is better, as accuracies are)::

    mean, sd = mean and sample standard deviation (ddof=1) of the K values
    margin   = max(0.02, 2 * sd)
    low      = min(mean - 3 * sd, min(values) - margin)
    low      = max(low, floor)      floor: 0.0, or "calibration": {"floor": {metric: x}}
                                    in expected.json (e.g. chance + 0.1)
    low      rounded *down* to 4 decimals
    high     = +inf (no upper bound; the key is left out of the file)

So the band sits at least 0.02 (and at least 2 sd) under the worst seeded run
of the reference, and at least 3 sd under its mean: a fresh reference run falls
below it only if it is worse than every calibration run by more than the
margin, which for accuracies measured on 1,000 held-out items over K >= 5 runs
happens well under once in 20 (``benchmarks/calibration_check.py`` measures it,
together with a weakened model that must fail: ``benchmarks/results/calibration.md``).

The result goes into ``reference/<name>/expected.json`` under
``"bands"[metric][device]`` with its provenance (``rule``, ``reference_values``,
``seeds``, ``runs``, ``mean``, ``std``, ``tensorflow``, ``device``, ``date``);
everything else in the file is kept as it was.

Determinism: the kernels also get ``TF_DETERMINISTIC_OPS=1``,
``TF_CUDNN_DETERMINISTIC=1`` and ``PYTHONHASHSEED=0``. With
``keras.utils.set_random_seed`` that makes a CPU run repeat exactly; a notebook
may also call ``tf.config.experimental.enable_op_determinism()``, which GPU
kernels need to repeat bit for bit. Values are rounded (``low``, ``mean`` and
``std`` to 4 decimals, reference values to 6), so the same seeds give the same
file: when a new calibration measures exactly what the file already holds, the
entry, date included, is left untouched, and so is the assignment's fingerprint
(and with it every cached grade).
"""

from __future__ import annotations

import datetime as _dt
import glob
import json
import math
import multiprocessing
import os
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor, as_completed
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any, Iterable, Sequence

from .errors import ConfigurationError

DETERMINISM_ENV: tuple[tuple[str, str], ...] = (
    ("TF_DETERMINISTIC_OPS", "1"),
    ("TF_CUDNN_DETERMINISTIC", "1"),
    ("PYTHONHASHSEED", "0"),
)
RECOMMENDED_RUNS = 5
DEFAULT_WORKERS = 2


# --------------------------------------------------------------------------- the rule

@dataclass(frozen=True)
class BandRule:
    """How a band is derived from K seeded reference values (higher is better)."""

    sigmas: float = 3.0  # low <= mean - sigmas * sd
    min_margin: float = 0.02  # low <= min - max(min_margin, margin_sigmas * sd)
    margin_sigmas: float = 2.0
    floor: float = 0.0  # low never goes under this (e.g. chance + 0.1)

    def describe(self) -> str:
        return (f"low = min(mean - {self.sigmas:g}*sd, min - max({self.min_margin:g}, "
                f"{self.margin_sigmas:g}*sd)), at least {self.floor:g}, rounded down to "
                "4 decimals; high = +inf")


@dataclass(frozen=True)
class BandStats:
    low: float
    mean: float
    std: float
    minimum: float
    maximum: float
    margin: float
    floored: bool  # the floor, not the spread, set low


def _round_down(value: float, places: int = 4) -> float:
    scale = 10 ** places
    # The 1e-9 keeps 0.88 (stored as 0.87999...) at 0.88 instead of 0.8799.
    return round(math.floor(value * scale + 1e-9) / scale, places)


def band_from_values(values: Sequence[float], rule: BandRule = BandRule()) -> BandStats:
    """The band of :class:`BandRule` for these reference values (at least 2 of them)."""
    numbers = [float(v) for v in values]
    if len(numbers) < 2:
        raise ConfigurationError(
            f"a band needs at least 2 reference runs (got {len(numbers)}); use --runs 5 or more")
    if not all(math.isfinite(v) for v in numbers):
        raise ConfigurationError(f"the reference produced a non-finite metric: {numbers}")
    mean, std = statistics.fmean(numbers), statistics.stdev(numbers)
    margin = max(rule.min_margin, rule.margin_sigmas * std)
    low = min(mean - rule.sigmas * std, min(numbers) - margin)
    floored = low < rule.floor
    return BandStats(low=_round_down(max(low, rule.floor)), mean=round(mean, 4),
                     std=round(std, 4), minimum=min(numbers), maximum=max(numbers),
                     margin=round(margin, 4), floored=floored)


# --------------------------------------------------------------------------- the runs

@dataclass(frozen=True)
class RunRecord:
    """One graded run of a (reference or altered) notebook with one seed."""

    seed: int
    status: str
    message: str
    metrics: dict[str, float] = field(default_factory=dict)
    failed: tuple[str, ...] = ()  # "check id: message" of each failed check
    duration_s: float = 0.0

    @property
    def clean(self) -> bool:
        return self.status == "ok" and not self.failed


def seeds_for(runs: int, start: int = 1) -> list[int]:
    """The documented seeds: ``start, start + 1, ..., start + runs - 1`` (1..K by default)."""
    return list(range(start, start + runs))


def gpu_device_nodes() -> tuple[str, ...]:
    return tuple(sorted(glob.glob("/dev/nvidia*")))


def _grade_seed(course_root: str, name: str, notebook: str | None, options, seed: int) -> RunRecord:
    """Worker: grade ``notebook`` (default: the reference) with GRADER_SEED=seed."""
    from .assignment import load_assignment
    from .executor import grade_submission

    assignment = load_assignment(name, Path(course_root))
    options = replace(options, kernel_env=(*options.kernel_env, ("GRADER_SEED", str(seed))))
    path = Path(notebook) if notebook else assignment.reference_notebook
    result = grade_submission(path, assignment, options, student_id=f"seed-{seed}")
    metrics: dict[str, float] = {}
    for check in result.checks:
        if check.metric and check.metric.get("name") is not None:
            try:
                metrics[str(check.metric["name"])] = float(check.metric["value"])
            except (TypeError, ValueError):
                pass
    failed = tuple(f"{c.id}: {c.message}" for c in result.checks if not c.passed)
    return RunRecord(seed=seed, status=result.status.value, message=result.message,
                     metrics=metrics, failed=failed, duration_s=result.duration_s)


def run_seeds(name: str, course_root: Path, seeds: Iterable[int], options, *,
              notebook: Path | None = None, workers: int = DEFAULT_WORKERS,
              progress=None) -> list[RunRecord]:
    """Grade the reference (or ``notebook``) once per seed, ``workers`` kernels at a time
    (worker processes); the records come back in seed order."""
    from .runner import _die_with_coordinator

    seeds = list(seeds)
    options = replace(options, kernel_env=(*DETERMINISM_ENV, *options.kernel_env))
    records: dict[int, RunRecord] = {}
    # fork, as grader.runner does: spawn re-imports the caller's __main__, which breaks under
    # pytest-xdist and in scripts without a main guard. The coordinator holds no kernels.
    context = multiprocessing.get_context("fork")
    try:
        with ProcessPoolExecutor(max_workers=max(1, min(workers, len(seeds) or 1)),
                                 mp_context=context, initializer=_die_with_coordinator) as pool:
            futures = {pool.submit(_grade_seed, str(course_root), name,
                                   str(notebook) if notebook else None, options, seed): seed
                       for seed in seeds}
            for future in as_completed(futures):
                record = future.result()
                records[record.seed] = record
                if progress:
                    progress(record)
    except BrokenProcessPool:
        raise ConfigurationError(
            f"a grading worker died while running {name} (seeds {seeds}); run with "
            "--workers 1 to see which seed, or look at the notebook's memory use") from None
    return [records[seed] for seed in seeds]


# --------------------------------------------------------------------------- the bands

def collect_metrics(runs: Sequence[RunRecord]) -> dict[str, list[float]]:
    """metric -> one value per run, in run order; every run must have reported every metric."""
    names = sorted({name for run in runs for name in run.metrics})
    missing = [(run.seed, name) for run in runs for name in names if name not in run.metrics]
    if missing:
        listed = ", ".join(f"{name} (seed {seed})" for seed, name in missing[:5])
        raise ConfigurationError(f"some runs did not report every metric: {listed}")
    return {name: [run.metrics[name] for run in runs] for name in names}


def band_entry(values: Sequence[float], seeds: Sequence[int], rule: BandRule, *, device: str,
               tensorflow: str | None, date: str | None = None) -> dict[str, Any]:
    """The ``bands[metric][device]`` entry written to expected.json."""
    stats = band_from_values(values, rule)
    seed_text = _seed_text(seeds)
    why = (f"the floor {rule.floor:g} (the spread allowed less)" if stats.floored else
           f"{stats.minimum:.4g} - {stats.low:.4g} = {stats.minimum - stats.low:.3g} under the "
           f"worst run")
    rule_text = (f"calibrated by `grader calibrate`: {rule.describe()}. {len(values)} runs of "
                 f"the reference notebook on {device}, GRADER_SEED {seed_text}: mean "
                 f"{stats.mean:.4f}, sd {stats.std:.4f}, min {stats.minimum:.4g}, max "
                 f"{stats.maximum:.4g}; low = {stats.low:.4f} ({why}).")
    return {
        "low": stats.low,
        "rule": rule_text,
        "reference_values": [round(float(v), 6) for v in values],
        "seeds": list(seeds),
        "runs": len(values),
        "mean": stats.mean,
        "std": stats.std,
        "tensorflow": tensorflow,
        "device": device,
        "date": date or _dt.date.today().isoformat(),
    }


def _seed_text(seeds: Sequence[int]) -> str:
    seeds = list(seeds)
    if len(seeds) > 2 and seeds == list(range(seeds[0], seeds[0] + len(seeds))):
        return f"{seeds[0]}-{seeds[-1]}"
    return ", ".join(str(s) for s in seeds)


def floors_from(data: dict) -> dict[str, float]:
    """Optional per-metric floors: ``"calibration": {"floor": {"test_accuracy": 0.2}}``."""
    floors = (data.get("calibration") or {}).get("floor") or {}
    return {str(k): float(v) for k, v in floors.items()}


def write_bands(path: Path, entries: dict[str, dict[str, dict[str, Any]]]) -> bool:
    """Merge ``{metric: {device: entry}}`` into expected.json, keeping every other key
    (values, other metrics, other devices). An entry equal to the stored one except for
    its date is left as stored. Returns True when the file changed."""
    data = json.loads(path.read_text()) if path.exists() else {}
    bands = data.setdefault("bands", {})
    changed = False
    for metric, per_device in entries.items():
        stored = bands.setdefault(metric, {})
        for device, entry in per_device.items():
            old = stored.get(device)
            if isinstance(old, dict) and _without_date(old) == _without_date(entry):
                continue
            stored[device] = entry
            changed = True
    if changed or not path.exists():
        text = json.dumps(data, indent=1, ensure_ascii=False) + "\n"
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return changed


def _without_date(entry: dict) -> dict:
    return {k: v for k, v in entry.items() if k != "date"}


# --------------------------------------------------------------------------- the command

def calibrate(args, course_root: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """``grader calibrate NAME [--runs K] [--device cpu|gpu] [--workers N]``: run the
    reference K times, print the runs and the bands, write the bands to expected.json.
    Returns ``{metric: {device: entry}}``."""
    from .assignment import load_assignment
    from .executor import GradeOptions, versions
    from .sandbox import resolve_mode

    assignment = load_assignment(args.name, course_root)
    if assignment.reference_directory is None:
        raise ConfigurationError(f"no reference/{args.name}/ folder: nothing to calibrate")
    runs = int(getattr(args, "runs", RECOMMENDED_RUNS) or RECOMMENDED_RUNS)
    if runs < 2:
        raise ConfigurationError(f"--runs {runs}: a band needs at least 2 runs (5 recommended)")
    if runs < RECOMMENDED_RUNS:
        print(f"Note: {runs} runs give a rough band; {RECOMMENDED_RUNS} or more are recommended.",
              file=sys.stderr)
    device = getattr(args, "device", "cpu") or "cpu"
    workers = getattr(args, "workers", None) or DEFAULT_WORKERS
    requested = getattr(args, "sandbox", "auto") or "auto"
    mode, warning = resolve_mode(requested)
    if warning:
        print(warning, file=sys.stderr)
    options = GradeOptions(sandbox=mode if mode == "off" else requested, device=device,
                           data_dir=getattr(args, "data_dir", None), calibrating=True,
                           gpu_devices=gpu_device_nodes() if device == "gpu" else ())
    seeds = seeds_for(runs)
    print(f"Calibrating {assignment.name} on {device}: {runs} runs of the reference notebook, "
          f"GRADER_SEED {_seed_text(seeds)}, {workers} at a time, sandbox {mode}.")
    started = time.perf_counter()
    records = run_seeds(assignment.name, course_root, seeds, options, workers=workers,
                        progress=lambda r: print(f"  seed {r.seed}: {r.status} in "
                                                 f"{r.duration_s:.1f} s", flush=True))
    bad = [r for r in records if not r.clean]
    if bad:
        lines = "\n".join(
            (f"  seed {r.seed}: {len(r.failed)} check(s) failed" if r.status == "ok"
             else f"  seed {r.seed}: {r.status}: {r.message}")
            + "".join(f"\n    {f[:300]}" for f in r.failed) for r in bad)
        raise ConfigurationError(
            f"the reference notebook of {assignment.name} did not pass its own checks in "
            f"{len(bad)} of {len(records)} runs, so no band was written:\n{lines}")
    values = collect_metrics(records)
    if not values:
        raise ConfigurationError(
            f"no check of {assignment.name} reported a metric: calibration is for checks that "
            "return assert_in_band(value, expected.band(NAME), ...)")
    path = assignment.reference_directory / "expected.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    floors = floors_from(data)
    found = versions()
    tensorflow = found.get("tensorflow") or found.get("tensorflow-cpu")
    entries = {metric: {device: band_entry(vals, seeds, BandRule(floor=floors.get(metric, 0.0)),
                                           device=device, tensorflow=tensorflow)}
               for metric, vals in values.items()}
    changed = write_bands(path, entries)
    print()
    print(format_runs(records, sorted(values)))
    print()
    print(format_bands(entries, values))
    print()
    state = "wrote" if changed else "unchanged (the same values as already stored):"
    print(f"Bands {state} {path} ({time.perf_counter() - started:.0f} s). "
          f"Rule: {BandRule().describe()}.")
    return entries


def format_runs(records: Sequence[RunRecord], metrics: Sequence[str]) -> str:
    header = ["seed", "status", *metrics, "time (s)"]
    rows = [[str(r.seed), r.status,
             *(f"{r.metrics[m]:.4f}" if m in r.metrics else "-" for m in metrics),
             f"{r.duration_s:.1f}"] for r in records]
    return _table(header, rows)


def format_bands(entries: dict, values: dict[str, list[float]]) -> str:
    header = ["metric", "device", "runs", "mean", "sd", "min", "max", "low", "high"]
    rows = []
    for metric, per_device in entries.items():
        for device, entry in per_device.items():
            rows.append([metric, device, str(entry["runs"]), f"{entry['mean']:.4f}",
                         f"{entry['std']:.4f}", f"{min(values[metric]):.4f}",
                         f"{max(values[metric]):.4f}", f"{entry['low']:.4f}", "inf"])
    return _table(header, rows)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])
