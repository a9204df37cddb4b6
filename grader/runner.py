"""``grader run``: grade a folder of submissions, in parallel, resumably.

Each submission is graded by :func:`grader.executor.grade_submission` in a worker
process; the coordinating process writes each result the moment it arrives:

    OUT/results/<student_id>.json   the full SubmissionResult (written atomically)
    OUT/grades.csv                  rewritten atomically after every result
    OUT/gradebook.sqlite            every run and every result, never overwritten
    OUT/executed/<student_id>.ipynb the executed notebook (outputs capped)

Killing the grader loses nothing finished. A re-run skips every submission whose
stored result has the same cache key (the notebook's bytes, the assignment's
version and fingerprint, the grader's version); results and executed notebooks are
also kept in the cache folder by key, so an unchanged notebook is never executed
twice, and a hit there is written into a new OUT like a fresh result
(:class:`ResultStore`). ``--no-cache`` executes everything again.
"""

from __future__ import annotations

import csv
import io
import multiprocessing
import os
import shutil
import sys
from collections import Counter
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Callable

import psutil

from . import __version__, devices, worker
from .assignment import Assignment
from .data import cache_root
from .discovery import Submission, discover
from .errors import InvalidSubmission
from .executor import (GradeOptions, _now, cache_key, read_submission_bytes)
from .gradebook import Gradebook
from .results import Status, SubmissionResult

GRADES_COLUMNS = ["student_id", "assignment", "score", "max_score", "status", "message",
                  "duration_s", "graded_at"]


@dataclass
class BatchSummary:
    total: int = 0
    executed: int = 0
    cached: int = 0
    statuses: Counter = field(default_factory=Counter)
    results: list[SubmissionResult] = field(default_factory=list)
    out_dir: Path = Path(".")

    @property
    def grader_errors(self) -> int:
        return self.statuses.get(Status.GRADER_ERROR, 0)


def default_workers(memory_mb: int, gpus: int = 0) -> int:
    """As many kernels as the cores and the memory hold (each may use ``memory_mb``, and a
    worker's warm spare kernel is small next to that), and, grading on ``gpus`` GPUs, one
    kernel per GPU: TensorFlow kernels sharing a GPU compete for its memory."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    by_memory = int(psutil.virtual_memory().available / 2**20 // max(memory_mb, 1))
    limit = min(cores or 1, by_memory)
    if gpus:
        limit = min(limit, gpus)
    return max(1, limit)


class ResultStore:
    """OUT/results/*.json, grades.csv and the key-addressed cache.

    The cache (``cache_root()/results``) holds, by cache key, ``<key>.json`` (the result)
    and ``<key>.ipynb`` (its executed notebook). A hit there is saved into this OUT like
    a fresh result: its JSON, its executed notebook, its grades.csv row (and, through
    ``on_result``, its feedback page). What a hit copies unchanged is everything the
    grading produced, ``graded_at`` and ``duration_s`` included (when and how long the
    notebook really ran); only what names this run's files is set anew: ``student_id``,
    ``source_path`` (where the notebook was found) and ``executed_notebook`` (its copy
    in this OUT).

    ``use_cache=False`` (``--no-cache``) reads neither OUT/results nor the cache, so
    every submission executes; the fresh results still replace the cached ones."""

    def __init__(self, out_dir: Path, use_cache: bool = True):
        self.out_dir = out_dir
        self.results_dir = out_dir / "results"
        self.results_dir.mkdir(parents=True, exist_ok=True)
        self.executed_dir = out_dir / "executed"
        self.use_cache = use_cache
        self.cache_dir = cache_root() / "results"

    def path(self, student_id: str) -> Path:
        return self.results_dir / f"{student_id}.json"

    def load(self, student_id: str) -> SubmissionResult | None:
        path = self.path(student_id)
        try:
            return SubmissionResult.from_json(path.read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError, TypeError):
            return None

    def cached(self, student_id: str, key: str, source_path: str = "") -> SubmissionResult | None:
        """A finished result for exactly these bytes, this assignment and this grader, from
        OUT/results or else from the cache (then saved into OUT); None: execute it."""
        if not self.use_cache:
            return None
        stored = self.load(student_id)
        if stored is not None and stored.cache_key == key and _final(stored):
            return stored
        try:
            hit = SubmissionResult.from_json(
                (self.cache_dir / f"{key}.json").read_text(encoding="utf-8"))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        if not _final(hit) or hit.cache_key != key:
            return None
        executed = None
        notebook = self.cache_dir / f"{key}.ipynb"
        if notebook.is_file():
            self.executed_dir.mkdir(parents=True, exist_ok=True)
            target = self.executed_dir / f"{student_id}.ipynb"
            partial = target.with_name(f".{target.name}.{os.getpid()}.partial")
            shutil.copyfile(notebook, partial)
            os.replace(partial, target)
            executed = str(target)
        adopted = replace(hit, student_id=student_id, source_path=source_path or hit.source_path,
                          executed_notebook=executed)
        _atomic_write(self.path(student_id), adopted.to_json())
        return adopted

    def save(self, result: SubmissionResult) -> None:
        _atomic_write(self.path(result.student_id), result.to_json())
        if result.cache_key and _final(result):
            self.cache_dir.mkdir(parents=True, exist_ok=True)
            executed = Path(result.executed_notebook) if result.executed_notebook else None
            if executed is not None and not executed.is_absolute():
                executed = self.out_dir / executed
            if executed is not None and executed.is_file():
                partial = self.cache_dir / f".{result.cache_key}.{os.getpid()}.partial"
                shutil.copyfile(executed, partial)
                os.replace(partial, self.cache_dir / f"{result.cache_key}.ipynb")
            # The JSON last: a result in the cache always finds its notebook beside it.
            _atomic_write(self.cache_dir / f"{result.cache_key}.json", result.to_json())

    def all(self) -> list[SubmissionResult]:
        results = []
        for path in sorted(self.results_dir.glob("*.json")):
            loaded = self.load(path.stem)
            if loaded is not None:
                results.append(loaded)
        return results

    def write_grades_csv(self) -> None:
        buffer = io.StringIO()
        writer = csv.writer(buffer)
        writer.writerow(GRADES_COLUMNS)
        for result in self.all():
            writer.writerow([result.student_id, result.assignment, grade_cell(result),
                             f"{result.max_score:g}", result.status.value,
                             result.message, f"{result.duration_s:.1f}", result.graded_at])
        _atomic_write(self.out_dir / "grades.csv", buffer.getvalue())


def grade_cell(result: SubmissionResult) -> str:
    """The score column: empty for a grader error (the student was not graded, and an
    uploaded 0 would read as a grade); a re-run fills it."""
    return "" if result.status is Status.GRADER_ERROR else f"{result.score:g}"


def _final(result: SubmissionResult) -> bool:
    # A grader error is ours, not the student's: never keep it as the answer.
    return result.status is not Status.GRADER_ERROR


def _atomic_write(path: Path, text: str) -> None:
    partial = path.with_name(f".{path.name}.{os.getpid()}.partial")
    partial.write_text(text, encoding="utf-8")
    os.replace(partial, path)


def run_batch(submissions: Path, assignment: Assignment, out_dir: Path, options: GradeOptions,
              workers: int | None = None, *, use_cache: bool = True,
              on_result: Callable[[SubmissionResult, bool], None] | None = None,
              progress: bool = True, scheduler: str | None = None) -> BatchSummary:
    """Grade every submission under ``submissions`` into ``out_dir``.

    ``scheduler`` (``tcp://HOST:PORT``): grade on that Dask cluster (:mod:`grader.cluster`)
    instead of local worker processes; ``workers`` is then the cluster's business."""
    out_dir.mkdir(parents=True, exist_ok=True)
    store = ResultStore(out_dir, use_cache)
    found = discover(submissions, out_dir / ".unpacked")
    options = replace(options, executed_dir=options.executed_dir or out_dir / "executed",
                      scratch_root=options.scratch_root or _scratch(out_dir))
    gradebook = Gradebook(out_dir / "gradebook.sqlite")
    run_id = gradebook.start_run(assignment.name, _now(), __version__,
                                 {"sandbox": options.sandbox, "device": options.device,
                                  "workers": workers, "submissions": str(submissions),
                                  **({"scheduler": scheduler} if scheduler else {})})
    summary = BatchSummary(total=len(found), out_dir=out_dir)
    bar = _progress_bar(len(found), progress)

    def finish(result: SubmissionResult, cached: bool) -> None:
        if not cached:
            store.save(result)
        store.write_grades_csv()
        gradebook.record(run_id, result, cached)
        summary.statuses[result.status] += 1
        summary.results.append(result)
        summary.cached += cached
        summary.executed += not cached
        if on_result:
            on_result(result, cached)
        if bar is not None:
            bar.set_postfix_str(f"{result.student_id}: {result.status.value}", refresh=False)
            bar.update(1)

    pending: list[Submission] = []
    for submission in found:
        hit = None
        if submission.path is not None:
            try:  # never blocks: a FIFO named .ipynb is refused here and reported by its worker
                raw = read_submission_bytes(submission.path)
            except InvalidSubmission:
                raw = None
            if raw is not None:
                hit = store.cached(submission.student_id, cache_key(raw, assignment),
                                   str(submission.path))
        if hit is not None:
            finish(hit, cached=True)
        else:
            pending.append(submission)

    if pending:
        _verify_data(assignment, options)
    gpus = len(devices.discover_gpus()) if options.device.startswith("gpu") else 0
    workers = max(1, min(workers or default_workers(assignment.limits.memory_mb, gpus),
                         len(pending) or 1))
    try:
        if scheduler:
            from .cluster import grade_on_cluster

            grade_on_cluster(pending, assignment, options, finish, scheduler)
        else:
            _grade_pending(pending, assignment, options, workers, finish)
    finally:
        if bar is not None:
            bar.close()
        gradebook.finish_run(run_id, _now())
        gradebook.close()
        _remove_scratch(options.scratch_root)
    return summary


def _verify_data(assignment: Assignment, options: GradeOptions) -> None:
    """The data cache checked against its manifest (and rebuilt where it does not match)
    once per batch, here, before any kernel mounts it."""
    from .data import verify_cache
    from .errors import DataUnavailable

    try:
        removed = verify_cache(assignment.datasets, options.data_dir)
    except DataUnavailable:
        return  # every submission then reports it, with the reason
    if removed:
        print(f"The data cache did not match its manifest; removed and rebuilt: "
              f"{', '.join(sorted(p.name for p in removed))}", file=sys.stderr)


def _grade_pending(pending: list[Submission], assignment: Assignment, options: GradeOptions,
                   workers: int, finish: Callable[[SubmissionResult, bool], None]) -> None:
    """Grade in worker processes. If a worker dies (without bubblewrap a kernel can kill its
    parent), the submissions it held are tried once more; a second death is reported."""
    course_root = str(assignment.directory.parent.parent)
    queue = list(pending)
    attempts: Counter = Counter()
    # fork, not spawn: spawn re-imports the caller's __main__, which breaks under pytest-xdist
    # and in scripts without a main guard. The coordinator holds no locks or kernels here.
    context = multiprocessing.get_context("fork")
    kernel_options = devices.assigner(options)  # cpu, or the next GPU round-robin
    while queue:
        in_flight: dict[Future, Submission] = {}
        with ProcessPoolExecutor(max_workers=workers, mp_context=context,
                                 initializer=worker.die_with_coordinator) as pool:
            try:
                while queue or in_flight:
                    while queue and len(in_flight) < workers:
                        submission = queue[0]
                        # A kernel started ahead is wasted when nothing is left to grade.
                        task_options = replace(kernel_options(),
                                               warm_kernels=options.warm_kernels and len(queue) > 1)
                        future = pool.submit(worker.grade_found, course_root, assignment.name,
                                             task_options, submission)
                        queue.pop(0)  # only once submitted: a broken pool refuses it (below)
                        attempts[submission.student_id] += 1
                        in_flight[future] = submission
                    done, _ = wait(in_flight, return_when=FIRST_COMPLETED)
                    broken = False
                    for future in done:
                        if isinstance(future.exception(), BrokenProcessPool):
                            broken = True  # a worker died: what it held is retried below
                            continue
                        submission = in_flight.pop(future)
                        finish(worker.outcome(future, submission, assignment, options), False)
                    if broken:
                        raise BrokenProcessPool("a grading worker died")
            except BrokenProcessPool:
                for submission in in_flight.values():
                    if attempts[submission.student_id] < 2:
                        queue.append(submission)
                    else:
                        failed: Future = Future()
                        failed.set_exception(RuntimeError("the grading worker died twice"))
                        finish(worker.outcome(failed, submission, assignment, options), False)
                in_flight.clear()


def _scratch(out_dir: Path) -> Path:
    scratch = out_dir / ".scratch"
    scratch.mkdir(parents=True, exist_ok=True)
    return scratch


def _remove_scratch(scratch: Path | None) -> None:
    if scratch is not None and scratch.name == ".scratch":
        shutil.rmtree(scratch, ignore_errors=True)


def _progress_bar(total: int, enabled: bool):
    if not enabled or total == 0:
        return None
    from tqdm import tqdm

    return tqdm(total=total, unit="nb", file=sys.stderr, dynamic_ncols=True,
                bar_format="{l_bar}{bar}| {n_fmt}/{total_fmt} [{elapsed}<{remaining}] {postfix}")
