"""Loading an assignment: its settings, its checks and its expected values.

A course directory holds::

    assignments/<name>/assignment.toml   settings (below); shipped to students
    assignments/<name>/<name>.ipynb      the student notebook (generated from the reference)
    assignments/<name>/public_checks.py  public checks; shipped to students
    reference/<name>/<name>.ipynb        the solution, with ### BEGIN/END SOLUTION regions
    reference/<name>/hidden_checks.py    hidden checks; never shipped, never in the sandbox
    reference/<name>/expected.json       hidden expected values and calibrated bands
    reference/<name>/expected.npz        hidden inputs and expected arrays

``assignment.toml``::

    name = "mlp"
    title = "A multilayer perceptron on MNIST"
    version = "1"                      # bump when the checks change meaning
    notebook = "mlp.ipynb"
    datasets = ["mnist"]               # what the sandbox's read-only data cache offers
    prepared_kernels = true            # --kernel-provider prepared may fork kernels (default)
    heavy_modules = ["sklearn"]        # imported once per worker by that provider
    [limits]
    cell_timeout_s = 120
    notebook_timeout_s = 300
    checks_timeout_s = 600             # all checks together (default: the sum of their timeouts)
    memory_mb = 4096
    [questions]
    q1 = "Build the model"
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import os
import sys
import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np

from .checks import Check, collect_checks
from .compare import Band
from .errors import ConfigurationError
from .fresh_inputs import GradingContext, unseeded_context


@dataclass(frozen=True)
class Limits:
    cell_timeout_s: float = 120.0
    notebook_timeout_s: float = 300.0
    memory_mb: int = 4096
    max_processes: int = 256
    max_file_mb: int = 256
    max_output_kb: int = 256  # per notebook, kept in the executed copy and the feedback
    # The checks' budget: wall-clock seconds all checks of one submission take together.
    # None: the sum of the checks' own timeouts (see grader.executor.checks_budget_s).
    checks_timeout_s: float | None = None


@dataclass(frozen=True)
class Assignment:
    name: str
    title: str
    version: str
    directory: Path  # assignments/<name>
    reference_directory: Path | None  # reference/<name>; None on a student's machine
    notebook: str
    datasets: tuple[str, ...] = ()
    limits: Limits = field(default_factory=Limits)
    questions: dict[str, str] = field(default_factory=dict)
    prepared_kernels: bool = True  # may kernels be forked from a zygote (grader.kernels)?
    heavy_modules: tuple[str, ...] = ()  # imported once per worker, besides tensorflow & co

    @property
    def student_notebook(self) -> Path:
        return self.directory / self.notebook

    @property
    def reference_notebook(self) -> Path:
        if self.reference_directory is None:
            raise ConfigurationError(f"no reference solution for {self.name} here")
        return self.reference_directory / self.notebook

    @cached_property
    def public_checks(self) -> list[Check]:
        return collect_checks(_load_module(self.directory / "public_checks.py",
                                           f"_grader_checks.{self.name}.public"), hidden=False)

    @cached_property
    def hidden_checks(self) -> list[Check]:
        if self.reference_directory is None:
            return []
        path = self.reference_directory / "hidden_checks.py"
        if not path.exists():
            return []
        return collect_checks(_load_module(path, f"_grader_checks.{self.name}.hidden"), hidden=True)

    def checks(self, *, public_only: bool = False) -> list[Check]:
        return list(self.public_checks) + ([] if public_only else list(self.hidden_checks))

    @cached_property
    def expected(self) -> Expected:
        if self.reference_directory is None:
            return Expected.refusing(self.name)
        return Expected.load(self.reference_directory)

    @cached_property
    def fingerprint(self) -> str:
        """Changes whenever anything that could change a grade changes."""
        digest = hashlib.sha256()
        paths = [self.directory / "assignment.toml", self.directory / "public_checks.py"]
        if self.reference_directory is not None:
            paths += sorted(p for p in self.reference_directory.iterdir()
                            if p.suffix in (".py", ".json", ".npz"))
        for path in paths:
            if path.exists():
                digest.update(path.name.encode() + b"\0" + path.read_bytes())
        return digest.hexdigest()[:16]


class Expected:
    """Hidden expected values of one assignment: scalars, arrays and calibrated bands."""

    def __init__(self, values: dict[str, Any], arrays: dict[str, np.ndarray],
                 bands: dict[str, Any], refuse: str = "", *, open_bands: bool = False,
                 device: str = "cpu", context: GradingContext | None = None):
        self._values, self._arrays, self._bands, self._refuse = values, arrays, bands, refuse
        self._open_bands = open_bands
        self.device = device
        self._context = context

    @classmethod
    def load(cls, reference_directory: Path) -> Expected:
        values: dict[str, Any] = {}
        bands: dict[str, Any] = {}
        arrays: dict[str, np.ndarray] = {}
        json_path = reference_directory / "expected.json"
        if json_path.exists():
            data = json.loads(json_path.read_text())
            values, bands = data.get("values", {}), data.get("bands", {})
        npz_path = reference_directory / "expected.npz"
        if npz_path.exists():
            with np.load(npz_path, allow_pickle=False) as npz:
                arrays = {key: npz[key] for key in npz.files}
        return cls(values, arrays, bands)

    @classmethod
    def refusing(cls, assignment: str) -> Expected:
        return cls({}, {}, {}, refuse=assignment)

    def calibrating(self) -> Expected:
        """A copy whose :meth:`band` is open (``low = -inf``), for ``grader calibrate``:
        trained-quality checks then pass and report their metric, band or no band."""
        return type(self)(self._values, self._arrays, self._bands, self._refuse, open_bands=True,
                          device=self.device, context=self._context)

    def for_device(self, device: str) -> Expected:
        """A copy whose :meth:`band` defaults to ``device``'s band (the executor passes the
        device a submission is graded on, so checks need not know it)."""
        return type(self)(self._values, self._arrays, self._bands, self._refuse,
                          open_bands=self._open_bands, device=device.split(":")[0],
                          context=self._context)

    def for_submission(self, context: GradingContext) -> Expected:
        """A copy whose :attr:`context` is ``context``: the grading seed and the submitted
        source of the submission being graded (the executor passes it)."""
        return type(self)(self._values, self._arrays, self._bands, self._refuse,
                          open_bands=self._open_bands, device=self.device, context=context)

    @property
    def context(self) -> GradingContext:
        """The submission being graded (:mod:`grader.fresh_inputs`); outside a graded run,
        a context with a random seed, made once per copy."""
        self._guard()
        if self._context is None:
            self._context = unseeded_context()
        return self._context

    def _guard(self) -> None:
        if self._refuse:
            raise ConfigurationError(
                f"a public check of {self._refuse} tried to read hidden expected values")

    def value(self, key: str) -> Any:
        self._guard()
        return self._values[key]

    def array(self, key: str) -> np.ndarray:
        self._guard()
        return self._arrays[key]

    def band(self, metric: str, device: str | None = None) -> Band:
        """The calibrated band for ``metric`` on ``device`` (default: the device being graded,
        see :meth:`for_device`); the cpu band where no band was calibrated for that device."""
        self._guard()
        device = device or self.device
        if self._open_bands:
            return Band(metric=metric, low=float("-inf"), rule="calibrating: open band")
        per_device = self._bands.get(metric)
        if per_device is None:
            raise ConfigurationError(
                f"no calibrated band for {metric!r}: run `grader calibrate` for this assignment")
        entry = per_device.get(device) or per_device.get("cpu") or next(iter(per_device.values()))
        return Band(metric=metric, low=float(entry["low"]),
                    high=float(entry.get("high", float("inf"))),
                    reference_values=tuple(entry.get("reference_values", ())),
                    rule=entry.get("rule", ""))


def _load_module(path: Path, module_name: str):
    if not path.exists():
        raise ConfigurationError(f"missing check module {path}")
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[module_name] = module
    spec.loader.exec_module(module)
    return module


def find_course_root(start: Path | None = None) -> Path:
    """The folder holding ``assignments/``: $GRADER_COURSE, else the current folder or a parent."""
    if os.environ.get("GRADER_COURSE"):
        return Path(os.environ["GRADER_COURSE"]).resolve()
    here = (start or Path.cwd()).resolve()
    for candidate in (here, *here.parents):
        if (candidate / "assignments").is_dir():
            return candidate
    source_checkout = Path(__file__).resolve().parents[1]
    if (source_checkout / "assignments").is_dir():
        return source_checkout
    raise ConfigurationError(
        "no assignments/ folder here or above; run from the course folder or set GRADER_COURSE")


def available(course_root: Path) -> list[str]:
    return sorted(p.parent.name for p in (course_root / "assignments").glob("*/assignment.toml"))


def load_assignment(name: str, course_root: Path | None = None) -> Assignment:
    root = course_root or find_course_root()
    directory = root / "assignments" / name
    settings_path = directory / "assignment.toml"
    if not settings_path.exists():
        raise ConfigurationError(
            f"unknown assignment {name!r}; available: {', '.join(available(root)) or 'none'}")
    settings = tomllib.loads(settings_path.read_text())
    reference = root / "reference" / name
    return Assignment(
        name=settings.get("name", name),
        title=settings.get("title", name),
        version=str(settings.get("version", "1")),
        directory=directory,
        reference_directory=reference if reference.is_dir() else None,
        notebook=settings.get("notebook", f"{name}.ipynb"),
        datasets=tuple(settings.get("datasets", ())),
        limits=Limits(**settings.get("limits", {})),
        questions=dict(settings.get("questions", {})),
        prepared_kernels=bool(settings.get("prepared_kernels", True)),
        heavy_modules=tuple(settings.get("heavy_modules", ())),
    )
