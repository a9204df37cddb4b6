import os
from pathlib import Path

import pytest

from grader.sandbox import bubblewrap_problem

TESTS = Path(__file__).resolve().parent
REPO = TESTS.parent
TOY_COURSE = TESTS / "fixtures" / "toy_course"
SHARED_DATA = REPO.parent / "shared" / "data"


@pytest.fixture(autouse=True, scope="session")
def _isolated_cache(tmp_path_factory):
    """Each test session gets its own grader cache (results and data), never the user's."""
    cache = tmp_path_factory.mktemp("grader-cache")
    previous = os.environ.get("GRADER_CACHE")
    os.environ["GRADER_CACHE"] = str(cache)
    # A check that fails by its own error is reported as "Grader error" with only the
    # exception's type; its traceback goes here, and the assertions show it (grader_bugs).
    os.environ.setdefault("GRADER_BUG_LOG", str(cache / "grader-bugs.log"))
    if SHARED_DATA.is_dir():
        os.environ.setdefault("GRADER_DATA", str(SHARED_DATA))
    yield cache
    if previous is None:
        os.environ.pop("GRADER_CACHE", None)
    else:
        os.environ["GRADER_CACHE"] = previous


def grader_bugs(messages: list[str]) -> str:
    """The assertion message for checks that ended in "Grader error": their messages and
    the tracebacks the checks left in ``$GRADER_BUG_LOG`` (see grader.checks)."""
    path = os.environ.get("GRADER_BUG_LOG")
    log = Path(path).read_text(errors="replace")[-20000:] if path and Path(path).exists() else ""
    return "\n".join(messages) + "\n--- tracebacks ---\n" + (log or "(none logged)")


@pytest.fixture
def toy():
    from grader.assignment import load_assignment

    return load_assignment("toy", TOY_COURSE)


def sandbox_mode() -> str:
    """bubblewrap where it works (CI installs it), else off, said loudly by the skip below."""
    return "required" if bubblewrap_problem() is None else "off"


requires_bubblewrap = pytest.mark.skipif(bubblewrap_problem() is not None,
                                         reason=f"needs bubblewrap: {bubblewrap_problem()}")
