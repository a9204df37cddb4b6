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
    if SHARED_DATA.is_dir():
        os.environ.setdefault("GRADER_DATA", str(SHARED_DATA))
    yield cache
    if previous is None:
        os.environ.pop("GRADER_CACHE", None)
    else:
        os.environ["GRADER_CACHE"] = previous


@pytest.fixture
def toy():
    from grader.assignment import load_assignment

    return load_assignment("toy", TOY_COURSE)


def sandbox_mode() -> str:
    """bubblewrap where it works (CI installs it), else off, said loudly by the skip below."""
    return "required" if bubblewrap_problem() is None else "off"


requires_bubblewrap = pytest.mark.skipif(bubblewrap_problem() is not None,
                                         reason=f"needs bubblewrap: {bubblewrap_problem()}")
