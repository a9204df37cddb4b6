"""What students receive carries no hidden checks, expected values or reference code.

The bundle is each assignments/<practical>/ folder plus the installable package
(built as a wheel here, exactly what `pip install` would put on a laptop).
"""

import re
import subprocess
import sys
import zipfile
from pathlib import Path

import nbformat
import pytest

from conftest import REPO

PRACTICALS = sorted(p.parent.name for p in (REPO / "assignments").glob("*/assignment.toml"))
FORBIDDEN_NAMES = {"hidden_checks.py", "expected.json", "expected.npz", "make_expected.py"}


@pytest.fixture(scope="module")
def wheel_files(tmp_path_factory):
    target = tmp_path_factory.mktemp("wheel")
    subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation",
                    "-q", "-w", str(target), str(REPO)], check=True, timeout=300)
    (wheel,) = target.glob("*.whl")
    with zipfile.ZipFile(wheel) as bundle:
        return {name: bundle.read(name) for name in bundle.namelist()}


def test_the_wheel_holds_only_the_grader_package(wheel_files):
    tops = {name.split("/")[0] for name in wheel_files}
    assert all(top == "grader" or top.endswith(".dist-info") for top in tops), tops
    assert not any(Path(name).name in FORBIDDEN_NAMES for name in wheel_files)
    for name, content in wheel_files.items():
        if name.startswith("grader/") and not name.endswith("authoring.py"):
            assert b"### BEGIN SOLUTION" not in content, name


def _solution_lines(notebook_path: Path) -> set[str]:
    """Distinctive solution lines: long enough to be telling, absent from the scaffolding."""
    notebook = nbformat.read(str(notebook_path), as_version=4)
    solution, scaffolding, inside = set(), set(), False
    for cell in notebook.cells:
        for line in cell.source.splitlines():
            if "### BEGIN SOLUTION" in line:
                inside = True
            elif "### END SOLUTION" in line:
                inside = False
            else:
                (solution if inside else scaffolding).add(line.strip())
    # Keyword-argument continuation lines (`loss="sparse_categorical_crossentropy")`) are
    # too generic to tell anything away.
    return {line for line in solution - scaffolding
            if len(line) > 30 and not re.match(r"^\w+=", line)}


@pytest.mark.parametrize("name", PRACTICALS)
def test_assignment_folder_reveals_no_solution_or_hidden_values(name):
    folder = REPO / "assignments" / name
    files = [p for p in folder.rglob("*") if p.is_file()]
    assert not [p for p in files if p.name in FORBIDDEN_NAMES]
    reference = REPO / "reference" / name / f"{name}.ipynb"
    solution = _solution_lines(reference)
    assert solution, f"{reference} has no solution regions"
    for path in files:
        text = path.read_text(errors="ignore")
        assert "### BEGIN SOLUTION" not in text, path
        leaked = sorted(solution & _code_lines(path))
        assert not leaked, f"{path} contains solution lines: {leaked[:3]}"


def _code_lines(path: Path) -> set[str]:
    """Lines of code a student can copy: code cells of notebooks, lines of .py files.
    (Markdown may quote an idiom on purpose, e.g. `self(x, training=True)` as a hint.)"""
    if path.suffix == ".ipynb":
        notebook = nbformat.read(str(path), as_version=4)
        return {line.strip() for cell in notebook.cells if cell.cell_type == "code"
                for line in cell.source.splitlines()}
    if path.suffix == ".py":
        return {line.strip() for line in path.read_text().splitlines()}
    return set()
