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

Variants: the space of allowed solutions
----------------------------------------
The reference is one solution among those the assignment text allows (a global-pooling
head instead of ``Flatten``, ``BatchNormalization`` with its default momentum, other
hidden sizes...). The author lists such choices in ``reference/<name>/variants/``: a
notebook (``<variant>.ipynb``) or small edits applied to the reference
(``<variant>.json``: ``{"description": "...", "edits": [["old", "new"], ...]}``, each
``old`` matching exactly once in one code cell). ``grader calibrate`` grades every variant
with the same seeds, computes its band with the same rule and records it next to the
reference's (``variants`` in the entry); ``low`` is the lowest band among the reference and
the variants that are *usable*:

* a variant that fails a check other than the trained-quality ones is not a solution the
  checks allow: it is reported and not used;
* a variant whose band lies more than ``max_drop`` (``--max-drop``, default 0.03) under the
  reference's cannot reach the band: it is reported as a signal that the assignment text
  must say more (epochs, head, momentum...) and not used, so that one choice the text did
  not rule out does not open the band for every weak model.

Any variant whose runs fall under the reference's band is reported (``short`` in its
record), so the author sees which allowed choices the fixed epochs treat unfairly.

Provenance also records which hidden inputs the metric was measured on (``inputs``:
sha256 of ``expected.npz``, of the ``values`` of expected.json, of every dataset file
in the data cache and of any ``holdout*`` file in the reference folder): a holdout that
changes (a private subset, a new split) shows in the file, and values measured on
another holdout are never silently reused.
"""

from __future__ import annotations

import datetime as _dt
import glob
import hashlib
import json
import math
import multiprocessing
import os
import statistics
import sys
import tempfile
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
DEFAULT_MAX_DROP = 0.03  # see "Variants" above


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
    from .worker import die_with_coordinator

    seeds = list(seeds)
    options = replace(options, kernel_env=(*DETERMINISM_ENV, *options.kernel_env))
    records: dict[int, RunRecord] = {}
    # fork, as grader.runner does: spawn re-imports the caller's __main__, which breaks under
    # pytest-xdist and in scripts without a main guard. The coordinator holds no kernels.
    context = multiprocessing.get_context("fork")
    try:
        with ProcessPoolExecutor(max_workers=max(1, min(workers, len(seeds) or 1)),
                                 mp_context=context, initializer=die_with_coordinator) as pool:
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


# --------------------------------------------------------------------------- variants

@dataclass(frozen=True)
class Variant:
    """An allowed alternative to the reference: a notebook, or edits to the reference."""

    name: str
    description: str
    source: str  # where it comes from, e.g. "variants/global_pooling.json (2 edits)"
    notebook: Any  # an nbformat NotebookNode


def load_variants(reference_directory: Path, reference_notebook: Path) -> list[Variant]:
    """The variants listed in ``reference_directory/variants/`` (sorted by name)."""
    import nbformat

    folder = reference_directory / "variants"
    if not folder.is_dir():
        return []
    variants: list[Variant] = []
    for path in sorted(folder.iterdir()):
        if path.suffix == ".ipynb":
            notebook = nbformat.read(str(path), as_version=4)
            description = str(notebook.metadata.get("variant", {}).get("description", "")) \
                or f"the notebook {path.name}"
            variants.append(Variant(path.stem, description, f"variants/{path.name}", notebook))
        elif path.suffix == ".json":
            spec = json.loads(path.read_text())
            edits = spec.get("edits") if isinstance(spec, dict) else None
            if not isinstance(edits, list) or not edits or not all(
                    isinstance(e, list) and len(e) == 2 and all(isinstance(x, str) for x in e)
                    for e in edits):
                raise ConfigurationError(
                    f"{path}: expected {{\"description\": ..., \"edits\": [[old, new], ...]}} "
                    "with at least one edit")
            notebook = apply_edits(nbformat.read(str(reference_notebook), as_version=4), edits,
                                   where=str(path))
            variants.append(Variant(path.stem, str(spec.get("description") or path.stem),
                                    f"variants/{path.name} ({len(edits)} edit(s) to the "
                                    "reference)", notebook))
    return variants


def apply_edits(notebook, edits: Sequence[Sequence[str]], where: str = "a variant"):
    """``notebook`` with each (old, new) applied; each ``old`` must match exactly once."""
    for old, new in edits:
        hits = [cell for cell in notebook.cells if cell.cell_type == "code" and old in cell.source]
        if len(hits) != 1 or hits[0].source.count(old) != 1:
            raise ConfigurationError(
                f"{where}: the edit {old[:80]!r} does not match exactly once in the reference "
                "notebook (was the reference changed? update the variant)")
        hits[0].source = hits[0].source.replace(old, new)
    return notebook


@dataclass(frozen=True)
class VariantOutcome:
    """What calibrating one variant found (see :func:`combine`)."""

    variant: Variant
    records: tuple[RunRecord, ...]
    values: dict[str, list[float]]  # metric -> one value per run (empty when not clean)

    @property
    def failed_checks(self) -> list[str]:
        return [f"seed {r.seed}: " + (f"{r.status}: {r.message}" if r.status != "ok"
                                      else "; ".join(f[:200] for f in r.failed))
                for r in self.records if not r.clean]


def combine(reference: dict[str, Any], outcomes: Sequence[VariantOutcome], metric: str,
            rule: BandRule, max_drop: float) -> tuple[dict[str, Any], list[str]]:
    """The reference's ``band_entry`` with the variants recorded and ``low`` the lowest usable
    band; also the lines calibrate reports about the variants (signals to the author)."""
    entry = dict(reference)
    reference_low = float(reference["low"])
    records: dict[str, dict[str, Any]] = {}
    signals: list[str] = []
    low, low_from = reference_low, "reference"
    for outcome in outcomes:
        variant = outcome.variant
        record: dict[str, Any] = {"description": variant.description, "source": variant.source}
        failed = outcome.failed_checks
        if failed or metric not in outcome.values:
            record.update(used=False, why="fails checks other than the trained-quality ones: "
                          + " | ".join(failed)[:600] if failed else "reported no " + metric)
            signals.append(f"variant {variant.name} ({variant.description}) is not a solution "
                           f"the checks allow, so it was not used: {record['why']}")
            records[variant.name] = record
            continue
        values = outcome.values[metric]
        stats = band_from_values(values, rule)
        short = [v for v in values if v < reference_low]
        record.update(values=[round(float(v), 6) for v in values],
                      seeds=[r.seed for r in outcome.records], runs=len(values),
                      mean=stats.mean, std=stats.std, low=stats.low, short=len(short))
        if stats.low < reference_low - max_drop:
            record.update(used=False, why=(
                f"its band {stats.low:.4f} lies more than {max_drop:g} under the reference's "
                f"{reference_low:.4f}"))
            signals.append(
                f"variant {variant.name} ({variant.description}) cannot reach the band: mean "
                f"{stats.mean:.4f}, min {stats.minimum:.4f}, its band {stats.low:.4f} vs the "
                f"reference's {reference_low:.4f} (more than --max-drop {max_drop:g} lower). The "
                "assignment text allows this choice but the fixed training does not get it to the "
                "band: say more in the text (epochs, head, momentum...) or drop the variant. "
                "Not used.")
        else:
            record["used"] = True
            if short:
                signals.append(
                    f"variant {variant.name} ({variant.description}): {len(short)} of "
                    f"{len(values)} runs under the reference's band {reference_low:.4f} (min "
                    f"{stats.minimum:.4f}); the band is lowered to {min(low, stats.low):.4f} so "
                    "that this allowed choice passes; consider saying more in the text.")
            if stats.low < low:
                low, low_from = stats.low, f"variant {variant.name}"
        records[variant.name] = record
    if not outcomes:
        return entry, signals
    entry["reference_low"] = reference_low
    entry["low"] = low
    entry["low_from"] = low_from
    entry["variants"] = records
    used = [name for name, r in records.items() if r.get("used")]
    entry["rule"] = (f"{reference['rule']} Variants ({len(records)}; max drop {max_drop:g}): "
                     f"used {', '.join(used) or 'none'}; low = the lowest band among the "
                     f"reference and the used variants = {low:.4f} ({low_from}).")
    return entry, signals


def input_fingerprints(reference_directory: Path, datasets: dict[str, Path]) -> dict[str, str]:
    """sha256 (first 16 hex digits) of what a trained-quality metric is measured on."""
    found: dict[str, str] = {}
    npz = reference_directory / "expected.npz"
    if npz.is_file():
        found["expected.npz"] = _sha(npz.read_bytes())
    expected_json = reference_directory / "expected.json"
    if expected_json.is_file():
        values = json.loads(expected_json.read_text()).get("values", {})
        found["expected.json values"] = _sha(json.dumps(values, sort_keys=True).encode())
    for path in sorted(reference_directory.glob("holdout*")):
        if path.is_file():
            found[path.name] = _sha(path.read_bytes())
    for name, path in sorted(datasets.items()):
        found[f"data:{name}"] = _sha(Path(path).read_bytes())
    return found


def _sha(raw: bytes) -> str:
    return hashlib.sha256(raw).hexdigest()[:16]


# --------------------------------------------------------------------------- the command

def calibrate(args, course_root: Path) -> dict[str, dict[str, dict[str, Any]]]:
    """``grader calibrate NAME [--runs K] [--device cpu|gpu] [--workers N] [--no-variants]
    [--max-drop D]``: run the reference K times, and every variant of
    ``reference/NAME/variants/`` K times with the same seeds; print the runs, the bands and
    the signals about variants; write the bands to expected.json. Returns
    ``{metric: {device: entry}}``."""
    from .assignment import load_assignment
    from .data import prepare
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
    max_drop = getattr(args, "max_drop", None)
    max_drop = DEFAULT_MAX_DROP if max_drop is None else float(max_drop)
    variants = ([] if getattr(args, "no_variants", False) else
                load_variants(assignment.reference_directory, assignment.reference_notebook))
    requested = getattr(args, "sandbox", "auto") or "auto"
    mode, warning = resolve_mode(requested)
    if warning:
        print(warning, file=sys.stderr)
    data_dir = getattr(args, "data_dir", None)
    options = GradeOptions(sandbox=mode if mode == "off" else requested, device=device,
                           data_dir=data_dir, calibrating=True,
                           gpu_devices=gpu_device_nodes() if device == "gpu" else ())
    datasets = prepare(assignment.datasets, data_dir)  # once, before workers race to write it
    seeds = seeds_for(runs)
    print(f"Calibrating {assignment.name} on {device}: {runs} runs of the reference notebook"
          f"{f' and of {len(variants)} variant(s)' if variants else ''}, GRADER_SEED "
          f"{_seed_text(seeds)}, {workers} at a time, sandbox {mode}.")
    started = time.perf_counter()
    records = run_seeds(assignment.name, course_root, seeds, options, workers=workers,
                        progress=lambda r: print(f"  reference, seed {r.seed}: {r.status} in "
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
    outcomes = run_variants(assignment.name, course_root, variants, seeds, options, workers)
    path = assignment.reference_directory / "expected.json"
    data = json.loads(path.read_text()) if path.exists() else {}
    floors = floors_from(data)
    found = versions()
    tensorflow = found.get("tensorflow") or found.get("tensorflow-cpu")
    inputs = input_fingerprints(assignment.reference_directory, datasets)
    entries: dict[str, dict[str, dict[str, Any]]] = {}
    signals: list[str] = []
    for metric, vals in values.items():
        rule = BandRule(floor=floors.get(metric, 0.0))
        entry = band_entry(vals, seeds, rule, device=device, tensorflow=tensorflow)
        entry["inputs"] = inputs
        entry, found_signals = combine(entry, outcomes, metric, rule, max_drop)
        entries[metric] = {device: entry}
        signals += found_signals
    changed = write_bands(path, entries)
    print()
    print(format_runs(records, sorted(values)))
    for outcome in outcomes:
        print(f"\nvariant {outcome.variant.name}: {outcome.variant.description}")
        print(format_runs(outcome.records, sorted(values)))
    print()
    print(format_bands(entries, values))
    if signals:
        print("\nSignals for the author (the assignment text may need to say more):")
        for line in dict.fromkeys(signals):
            print(f"  - {line}")
    print()
    state = "wrote" if changed else "unchanged (the same values as already stored):"
    print(f"Bands {state} {path} ({time.perf_counter() - started:.0f} s). "
          f"Rule: {BandRule().describe()}.")
    return entries


def run_variants(name: str, course_root: Path, variants: Sequence[Variant], seeds: Sequence[int],
                 options, workers: int) -> list[VariantOutcome]:
    """Grade every variant once per seed (calibrating options: bands open)."""
    import nbformat

    outcomes: list[VariantOutcome] = []
    with tempfile.TemporaryDirectory(prefix=f"calibrate-{name}-") as scratch:
        for variant in variants:
            path = Path(scratch) / f"{variant.name}.ipynb"
            nbformat.write(variant.notebook, str(path))
            records = run_seeds(
                name, course_root, seeds, options, notebook=path, workers=workers,
                progress=lambda r, v=variant.name: print(
                    f"  variant {v}, seed {r.seed}: {r.status} in {r.duration_s:.1f} s",
                    flush=True))
            clean = all(r.clean for r in records)
            values: dict[str, list[float]] = {}
            if clean:
                try:
                    values = collect_metrics(records)
                except ConfigurationError:
                    values = {}
            outcomes.append(VariantOutcome(variant, tuple(records), values))
    return outcomes


def format_runs(records: Sequence[RunRecord], metrics: Sequence[str]) -> str:
    header = ["seed", "status", *metrics, "time (s)"]
    rows = [[str(r.seed), r.status,
             *(f"{r.metrics[m]:.4f}" if m in r.metrics else "-" for m in metrics),
             f"{r.duration_s:.1f}"] for r in records]
    return _table(header, rows)


def format_bands(entries: dict, values: dict[str, list[float]]) -> str:
    header = ["metric", "device", "solution", "runs", "mean", "sd", "min", "max", "band low",
              "used"]
    rows = []
    for metric, per_device in entries.items():
        for device, entry in per_device.items():
            rows.append([metric, device, "reference", str(entry["runs"]), f"{entry['mean']:.4f}",
                         f"{entry['std']:.4f}", f"{min(values[metric]):.4f}",
                         f"{max(values[metric]):.4f}",
                         f"{entry.get('reference_low', entry['low']):.4f}", "yes"])
            for name, record in (entry.get("variants") or {}).items():
                if "values" not in record:
                    rows.append([metric, device, f"variant {name}", "-", "-", "-", "-", "-", "-",
                                 "no (fails checks)"])
                    continue
                rows.append([metric, device, f"variant {name}", str(record["runs"]),
                             f"{record['mean']:.4f}", f"{record['std']:.4f}",
                             f"{min(record['values']):.4f}", f"{max(record['values']):.4f}",
                             f"{record['low']:.4f}", "yes" if record["used"] else "no"])
            rows.append([metric, device, "=> band", "", "", "", "", "", f"{entry['low']:.4f}",
                         str(entry.get("low_from", "reference"))])
    return _table(header, rows)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(str(x)) for x in column) for column in zip(header, *rows, strict=True)]

    def line(cells: list[str]) -> str:
        return "  ".join(str(c).ljust(w) for c, w in zip(cells, widths, strict=True)).rstrip()

    return "\n".join([line(header), line(["-" * w for w in widths]), *map(line, rows)])
