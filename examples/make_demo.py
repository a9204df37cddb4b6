"""Build examples/submissions/<practical>/ from the reference, the fixtures and the stub.

Each practical's demo class: a correct solution, an alternative correct one, two
typical mistakes and an untouched student notebook. `make demo` grades them.
Run `python examples/make_demo.py` after changing a practical.
"""

import shutil
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
FIXTURES = REPO / "tests" / "fixtures" / "submissions"
OUT = REPO / "examples" / "submissions"
STUDENTS = ["ada", "grace", "alan", "barbara", "edsger"]


def main() -> None:
    if OUT.exists():
        shutil.rmtree(OUT)
    for practical in sorted(p.name for p in (REPO / "reference").iterdir() if p.is_dir()):
        fixtures = sorted((FIXTURES / practical).glob("*.ipynb"))
        alternatives = [p for p in fixtures if p.name.startswith("alt_")][:1]
        mistakes = [p for p in fixtures if p.name.startswith("mistake_")][:2]
        sources = [REPO / "reference" / practical / f"{practical}.ipynb", *alternatives,
                   *mistakes, REPO / "assignments" / practical / f"{practical}.ipynb"]
        target = OUT / practical
        target.mkdir(parents=True)
        for student, source in zip(STUDENTS, sources):
            shutil.copy(source, target / f"{student}.ipynb")
            print(f"{practical}/{student}.ipynb  <- {source.relative_to(REPO)}")


if __name__ == "__main__":
    main()
