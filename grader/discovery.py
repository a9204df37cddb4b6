"""Finding one notebook per student in a submissions folder (or zip).

Understood layouts:

* ``SUBMISSIONS/<student_id>.ipynb``
* ``SUBMISSIONS/<student_id>/<any>.ipynb`` (exactly one notebook; other small files
  beside it are copied into the scratch folder too)
* Canvas bulk downloads: ``<name>_<userid>_<submissionid>_<file>.ipynb``, with
  ``_LATE`` after the name for late ones; the student id is ``<name>_<userid>``
* Moodle downloads: folders ``<Full Name>_<id>_assignsubmission_file_`` (also
  ``_onlinetext_``) holding the notebook; the student id is ``<Full_Name>_<id>``
* any of the above inside a ``.zip`` (extracted safely into ``OUT/.unpacked``)

A folder with two or more notebooks is reported as ambiguous, never guessed.
"""

from __future__ import annotations

import re
import shutil
import zipfile
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigurationError

CANVAS = re.compile(r"^(?P<name>[A-Za-z0-9-]+?)(?:_LATE)?_(?P<user>\d+)_(?P<sub>\d+)_(?P<file>.+)$")
MOODLE = re.compile(r"^(?P<name>.+?)_(?P<id>\d+)_assignsubmission_(?:file|onlinetext)_?$")
SAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_ZIP_BYTES = 2 * 2**30
MARKER = ".grader-submission-folder"


@dataclass(frozen=True)
class Submission:
    student_id: str  # safe for file names
    path: Path | None  # the notebook; None when there is no single notebook
    problem: str = ""  # why it cannot be graded (for the student), when path is None
    folder: bool = False  # submitted as a folder: the files beside the notebook come along


def safe_id(text: str) -> str:
    cleaned = SAFE.sub("_", text).strip("._") or "unnamed"
    return cleaned[:100]


def discover(root: Path, unpack_dir: Path) -> list[Submission]:
    """All submissions under ``root``, one per student, sorted by student id."""
    root = Path(root)
    if root.is_file() and root.suffix == ".zip":
        root = _unzip(root, unpack_dir / safe_id(root.stem))
    if not root.is_dir():
        raise ConfigurationError(f"{root} is not a folder of submissions (or a .zip of one)")
    found: dict[str, Submission] = {}
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or entry.name == "__MACOSX":
            continue
        if entry.is_file() and entry.suffix == ".zip":
            for sub in discover(_unzip(entry, unpack_dir / safe_id(entry.stem)), unpack_dir):
                _add(found, sub)
        elif entry.suffix == ".ipynb" and (entry.is_symlink() or not entry.is_dir()):
            # A FIFO, socket or device named .ipynb too: grading reports it as invalid
            # (it is opened non-blocking and refused), never silently left out.
            match = CANVAS.match(entry.stem)
            student = f"{match['name']}_{match['user']}" if match else entry.stem
            _add(found, Submission(safe_id(student), entry))
        elif entry.is_dir():
            match = MOODLE.match(entry.name)
            student = f"{match['name']}_{match['id']}" if match else entry.name
            _add(found, _from_folder(entry, safe_id(student)))
    return [found[key] for key in sorted(found)]


def _from_folder(folder: Path, student: str) -> Submission:
    notebooks = sorted(p for p in folder.rglob("*.ipynb")
                       if ".ipynb_checkpoints" not in p.parts and "__MACOSX" not in p.parts)
    if not notebooks:
        return Submission(student, None, "No .ipynb notebook was found in your submission. "
                          "Submit the notebook file itself (File > Download as > Notebook).")
    if len(notebooks) > 1:
        names = ", ".join(str(p.relative_to(folder)) for p in notebooks[:5])
        return Submission(student, None, f"Your submission holds {len(notebooks)} notebooks "
                          f"({names}); the grader will not guess which one to grade. "
                          "Submit exactly one .ipynb file.")
    return Submission(student, notebooks[0], folder=True)


def _add(found: dict[str, Submission], submission: Submission) -> None:
    existing = found.get(submission.student_id)
    if existing is None:
        found[submission.student_id] = submission
        return
    paths = ", ".join(str(s.path.name) for s in (existing, submission) if s.path)
    found[submission.student_id] = Submission(
        submission.student_id, None,
        f"More than one submission was found for you ({paths}); the grader will not guess "
        "which one to grade. Ask your instructor to keep only one.")


def _unzip(archive: Path, target: Path) -> Path:
    """Extract a zip safely: no absolute paths, no '..', no links, bounded size."""
    if target.exists():
        shutil.rmtree(target)
    target.mkdir(parents=True)
    try:
        with zipfile.ZipFile(archive) as bundle:
            total = 0
            for info in bundle.infolist():
                name = Path(info.filename)
                if name.is_absolute() or ".." in name.parts or info.is_dir():
                    continue
                if (info.external_attr >> 16) & 0o170000 == 0o120000:  # a symlink
                    continue
                total += info.file_size
                if total > MAX_ZIP_BYTES:
                    raise ConfigurationError(f"{archive} unpacks to more than 2 GB")
                destination = target / name
                destination.parent.mkdir(parents=True, exist_ok=True)
                with bundle.open(info) as source, open(destination, "wb") as sink:
                    shutil.copyfileobj(source, sink)
    except zipfile.BadZipFile as error:
        raise ConfigurationError(f"{archive} is not a readable zip: {error}") from None
    return target
