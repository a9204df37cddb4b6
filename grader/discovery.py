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

Student ids keep the letters of every script (``李雷``, ``José``), NFC-normalised so that a
name saved by macOS (decomposed) and by Windows (composed) is one id; everything else
(spaces, punctuation, path separators, control and format characters) becomes ``_``, and
the id is short enough in UTF-8 bytes to be a file name (``results/<id>.json``,
``executed/<id>.ipynb``). When different names give one id (``a b.ipynb`` and
``a_b.ipynb``), each keeps its own id with a short suffix hashed from its original name;
the same name found twice (``ann.ipynb`` and a folder ``ann/``) is one student submitting
twice, reported, never guessed. The original name is kept in each result's
``source_path``.
"""

from __future__ import annotations

import hashlib
import re
import shutil
import unicodedata
import zipfile
from dataclasses import dataclass, replace
from pathlib import Path

from .errors import ConfigurationError

# Canvas writes the name without spaces, in the student's own letters (müllerjürgen).
CANVAS = re.compile(r"^(?P<name>(?:[^\W_]|-)+?)(?:_LATE)?_(?P<user>\d+)_(?P<sub>\d+)_(?P<file>.+)$")
MOODLE = re.compile(r"^(?P<name>.+?)_(?P<id>\d+)_assignsubmission_(?:file|onlinetext)_?$")
MAX_ID_BYTES = 150  # UTF-8 bytes: results/<id>.json and OUT/executed/<id>.ipynb stay < 255
MAX_ZIP_BYTES = 2 * 2**30
MARKER = ".grader-submission-folder"


@dataclass(frozen=True)
class Submission:
    student_id: str  # safe for file names
    path: Path | None  # the notebook; None when there is no single notebook
    problem: str = ""  # why it cannot be graded (for the student), when path is None
    folder: bool = False  # submitted as a folder: the files beside the notebook come along
    source: Path | None = None  # the file or folder found in the submissions folder
    name: str = ""  # the student's name as submitted (NFC), before it became an id


def safe_id(text: str) -> str:
    """``text`` as an id that is a safe file name: letters and digits of every script,
    ``.``, ``_`` and ``-``; each run of anything else becomes one ``_``. ASCII ids are what
    they always were (results and the gradebook's history stay under the same id)."""
    cleaned = "".join(char if _allowed(char) else "\0" for char in _nfc(text))
    cleaned = re.sub("\0+", "_", cleaned).strip("._") or "unnamed"
    cleaned = cleaned[:100]
    while len(cleaned.encode("utf-8")) > MAX_ID_BYTES:
        cleaned = cleaned[:-1]
    return cleaned


def _nfc(text: str) -> str:
    return unicodedata.normalize("NFC", text)


def _allowed(char: str) -> bool:
    if char in "._-":
        return True
    # letters (L*), marks that belong to them (M*: accents, vowel signs), digits (N*)
    return unicodedata.category(char)[0] in "LMN"


def _suffixed(student_id: str, name: str) -> str:
    """``student_id`` kept apart from others by a short hash of the original ``name``."""
    suffix = hashlib.sha256(name.encode("utf-8", "surrogateescape")).hexdigest()[:6]
    while len(f"{student_id}-{suffix}".encode("utf-8")) > MAX_ID_BYTES:
        student_id = student_id[:-1]
    return f"{student_id}-{suffix}"


def discover(root: Path, unpack_dir: Path) -> list[Submission]:
    """All submissions under ``root``, one per student, sorted by student id."""
    root = Path(root)
    if root.is_file() and root.suffix == ".zip":
        root = _unzip(root, unpack_dir / safe_id(root.stem))
    if not root.is_dir():
        raise ConfigurationError(f"{root} is not a folder of submissions (or a .zip of one)")
    found: list[Submission] = []
    for entry in sorted(root.iterdir()):
        if entry.name.startswith(".") or entry.name == "__MACOSX":
            continue
        if entry.is_file() and entry.suffix == ".zip":
            found += discover(_unzip(entry, unpack_dir / safe_id(entry.stem)), unpack_dir)
        elif entry.suffix == ".ipynb" and (entry.is_symlink() or not entry.is_dir()):
            # A FIFO, socket or device named .ipynb too: grading reports it as invalid
            # (it is opened non-blocking and refused), never silently left out.
            match = CANVAS.match(entry.stem)
            student = f"{match['name']}_{match['user']}" if match else entry.stem
            found.append(Submission(safe_id(student), entry, source=entry, name=_nfc(student)))
        elif entry.is_dir():
            match = MOODLE.match(entry.name)
            student = f"{match['name']}_{match['id']}" if match else entry.name
            found.append(replace(_from_folder(entry, safe_id(student)), source=entry,
                                 name=_nfc(student)))
    return _one_per_student(found)


def _one_per_student(found: list[Submission]) -> list[Submission]:
    """Different names that became one id are kept apart (each id gets a suffix from its
    name); one name found more than once is reported, never guessed."""
    by_id: dict[str, list[Submission]] = {}
    for submission in found:
        by_id.setdefault(submission.student_id, []).append(submission)
    result: dict[str, Submission] = {}
    for student_id, group in by_id.items():
        by_name: dict[str, list[Submission]] = {}
        for submission in group:
            by_name.setdefault(submission.name, []).append(submission)
        if len(by_name) == 1:
            result[student_id] = _single(student_id, group)
            continue
        for name, same in by_name.items():
            apart = _suffixed(student_id, name)
            result[apart] = _single(apart, [replace(s, student_id=apart) for s in same])
    return [result[key] for key in sorted(result)]


def _single(student_id: str, group: list[Submission]) -> Submission:
    if len(group) == 1:
        return group[0]
    paths = ", ".join(str((s.source or s.path).name) for s in group if s.source or s.path)
    return Submission(
        student_id, None,
        f"More than one submission was found for you ({paths}); the grader will not guess "
        "which one to grade. Ask your instructor to keep only one.", source=group[0].source,
        name=group[0].name)


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
