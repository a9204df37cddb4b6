"""Student ids from real class lists: Unicode letters kept, names never merged (issue 16)."""

import shutil
import unicodedata

import pytest
from conftest import TOY_COURSE

from grader.discovery import MAX_ID_BYTES, discover, safe_id

REFERENCE = TOY_COURSE / "reference" / "toy" / "toy.ipynb"


@pytest.mark.parametrize(("name", "expected"), [
    ("with space é", "with_space_é"),
    ("李雷", "李雷"),
    ("Jane Doe_4242", "Jane_Doe_4242"),  # ASCII ids are what they always were
    ("a__b", "a__b"),
    ("नमस्ते", "नमस्ते"),  # vowel signs are marks of their letters, kept
    ("e\u0301cole", "\u00e9cole"),  # macOS' decomposed é is the composed one
    ("../../etc/passwd", "etc_passwd"),
    ("\u202eevil\u200b", "evil"),  # bidi and zero-width format characters go
    ("a\x00b\nc", "a_b_c"),
    ("...", "unnamed"),
    ("<script>", "script"),
])
def test_safe_id_keeps_letters_of_every_script_and_nothing_else(name, expected):
    assert safe_id(name) == expected


def test_a_long_name_in_any_script_stays_a_valid_file_name(tmp_path):
    for name in ("李" * 200, "x" * 300, "é" * 200):
        student = safe_id(name)
        assert len(student.encode()) <= MAX_ID_BYTES
        (tmp_path / f"{student}.json").write_text("{}")  # a real file system accepts it


def test_a_class_with_unicode_accented_and_colliding_names(tmp_path):
    root = tmp_path / "subs"
    root.mkdir()
    for name in ("with space é.ipynb", "李雷.ipynb", "王芳.ipynb", "a b.ipynb", "a_b.ipynb",
                 "müllerjürgen_12345_67890_toy.ipynb"):
        shutil.copy(REFERENCE, root / name)
    found = {s.student_id: s for s in discover(root, tmp_path / "unpacked")}
    assert "with_space_é" in found and "李雷" in found and "王芳" in found
    assert found["müllerjürgen_12345"].path.name == "müllerjürgen_12345_67890_toy.ipynb"
    # "a b" and "a_b" are two students: both graded, apart, each recognisable
    apart = sorted(sid for sid in found if sid.startswith("a_b"))
    assert len(apart) == 2 and all(len(sid) == len("a_b-") + 6 for sid in apart)
    assert {found[sid].path.name for sid in apart} == {"a b.ipynb", "a_b.ipynb"}
    assert all(s.path is not None and not s.problem for s in found.values())
    # stable: the same names give the same ids on every run, whatever else is there
    (root / "a b.ipynb").unlink()
    again = {s.student_id for s in discover(root, tmp_path / "unpacked")}
    assert "a_b" in again  # alone again, the plain id
    shutil.copy(REFERENCE, root / "a b.ipynb")
    assert {s.student_id for s in discover(root, tmp_path / "unpacked")} == set(found)


def test_one_name_found_twice_is_one_student_submitting_twice(tmp_path):
    root = tmp_path / "subs"
    (root / "ann").mkdir(parents=True)
    shutil.copy(REFERENCE, root / "ann.ipynb")
    shutil.copy(REFERENCE, root / "ann" / "mine.ipynb")
    composed = unicodedata.normalize("NFC", "José")
    decomposed = unicodedata.normalize("NFD", "José")
    shutil.copy(REFERENCE, root / f"{composed}.ipynb")
    shutil.copy(REFERENCE, root / f"{decomposed}.ipynb")
    found = {s.student_id: s for s in discover(root, tmp_path / "unpacked")}
    assert sorted(found) == ["José", "ann"]
    for student in found.values():
        assert student.path is None and "More than one submission" in student.problem
