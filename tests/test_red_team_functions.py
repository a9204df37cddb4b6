"""Red team: students who read the grader's public source and want the exact checks'
marks without doing the work (issue 14, "Student functions on fresh inputs").

The notebooks in tests/fixtures/red_team/<practical>/ (written by make_red_team_functions.py) memorise
the fixed hidden inputs and answers that the public repository used to hold, detect the
grader from the call stack or the environment, ignore their inputs, or let Keras' own
``train_step`` do the work behind an overridden or patched ``compile``. Each row below
names the checks the attack goes after, which it must lose, and the score it must not
exceed. On the grader of commit 4986e12 every one of them won its checks.

Each notebook is graded by the real engine (sandboxed kernels, the clean kernel of the
custom-step practical included), two at a time, once per practical.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from grader import data
from grader.assignment import load_assignment
from grader.executor import GradeOptions, grade_submission

from conftest import REPO, TESTS, grader_bugs, sandbox_mode

RED_TEAM = TESTS / "fixtures" / "red_team"
STEP_CHECKS = ("q1.train_step_one_step", "q1.logs_running_mean", "q1.test_step_exact")

# practical -> notebook -> (checks the attack goes after and must lose, the most it may score)
ATTACKS = {
    "linear_softmax": {
        # Unstable softmax, summed cross-entropy, a train_step that never steps: each returns
        # the leaked answer for the hidden input it recognises (9 of 15 on 4986e12). Keeps
        # what its honest parts earn: ordinary softmax, forward, the names (and, since the
        # practical has 17 points, the tape and training-data checks: +2 on each bound).
        "memorised_hidden_answers": (("q2.softmax_large_logits",
                                      "q4.cross_entropy_hidden_inputs",
                                      "q5.train_step_one_step"), 7),
        # Softmax over the wrong axis unless the call stack shows the grader (11 of 15).
        "detects_grader": (("q2.softmax_hidden_logits", "q2.softmax_large_logits"), 11),
        # A real gradient step, on the leaked batch instead of its arguments (11 of 15).
        "train_step_ignores_its_inputs": (("q5.train_step_one_step",), 11),
    },
    "ocean_proximity": {
        # Minimal notebooks: a preprocess fitted on the wrong split that returns the leaked
        # answer for the leaked rows, or when the grader calls (2 of 13 each on 4986e12).
        "preprocess_memorised": (("q3.preprocess_uses_train_statistics",), 0),
        "preprocess_detects_grader": (("q3.preprocess_uses_train_statistics",), 0),
    },
    "custom_train_step": {
        # Keras' own train_step behind super(), keras.Model's steps called directly with a
        # patched compile, or captured in the class body: what its honest parts earn is all
        # it can keep (at most 7 of 11; 11 of 11 on 4986e12; the public Q1 checks now run the
        # class in the clean kernel too). detects_grader is refused outright (sys, os, frames).
        "super_steps_compile_override": (STEP_CHECKS, 7),
        "global_keras_patch": (STEP_CHECKS, 7),
        "base_step_captured_in_class_body": (STEP_CHECKS, 7),
        "detects_grader": (STEP_CHECKS, 7),
        # An honest step on the leaked batch: loses the exact steps (8 of 11 on 4986e12).
        "ignores_its_inputs": (STEP_CHECKS, 5),
        # Never trained: predict() is a lookup of the public test labels (11 of 11 on
        # 4986e12). The accuracy is now computed in the grader from the weights.
        "predict_looks_up_test_labels": (("q3.test_accuracy",), 9),
    },
}

CASES = [(practical, name) for practical, found in ATTACKS.items() for name in found]

# Not a way to marks on 4986e12 (which never ran a clean kernel) but an attack on the clean
# kernel itself: an honest class whose body loops forever where Keras' own train_step is the
# grader's stand-in. Grading must finish, and the class loses the checks it kept from running.
HANGS = ("custom_train_step", "hangs_the_clean_kernel")


def test_every_red_team_notebook_is_listed():
    """Here or in test_red_team_models.py (the two share tests/fixtures/red_team/)."""
    from test_red_team_models import CASES as MODEL_CASES

    on_disk = {(p.parent.name, p.stem) for p in RED_TEAM.glob("*/*.ipynb")}
    assert on_disk == set(CASES) | {HANGS} | set(MODEL_CASES)
    assert len(CASES) >= 10


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """(practical, notebook) -> its result, every red-team notebook graded once."""
    results: dict[tuple[str, str], object] = {}
    notebooks = {practical: list(found) for practical, found in ATTACKS.items()}
    notebooks[HANGS[0]].append(HANGS[1])
    for practical, found in notebooks.items():
        assignment = load_assignment(practical, REPO)
        try:
            data.prepare(assignment.datasets, None)
        except Exception as error:  # noqa: BLE001 - housing.csv may be missing here
            results.update({(practical, name): error for name in found})
            continue
        options = GradeOptions(sandbox=sandbox_mode(),
                               scratch_root=tmp_path_factory.mktemp(f"red-{practical}"))

        def grade(name, practical=practical, assignment=assignment, options=options):
            path = Path(RED_TEAM / practical / f"{name}.ipynb")
            return (practical, name), grade_submission(path, assignment, options,
                                                       student_id=f"red-{name}")

        with ThreadPoolExecutor(max_workers=2) as pool:
            results.update(pool.map(grade, found))
    return results


@pytest.mark.slow
@pytest.mark.parametrize("practical, name", CASES)
def test_attack_does_not_earn_the_checks_it_targets(graded, practical, name):
    result = graded[(practical, name)]
    if isinstance(result, Exception):
        pytest.skip(f"{practical} cannot be graded here: {result}")
    attacked, most = ATTACKS[practical][name]
    by_id = {c.id: c for c in result.checks}
    grader_errors = [c.message for c in result.checks if "Grader error" in c.message]
    assert not grader_errors, grader_bugs(grader_errors)
    won = [check for check in attacked if by_id[check].passed]
    assert not won, f"{name} still earns {won}"
    assert result.score <= most, (result.score, [c.id for c in result.checks if c.passed])
    assert result.grading_seed  # the inputs it was graded on can be replayed


@pytest.mark.slow
def test_a_class_that_hangs_the_clean_kernel_loses_its_step_checks_and_grading_goes_on(graded):
    result = graded[HANGS]
    by_id = {c.id: c for c in result.checks}
    assert result.status.value == "ok", result.message
    assert not [c.message for c in result.checks if "Grader error" in c.message]
    # In graded runs the public Q1 and Q2 checks run the class in the clean kernel too
    # (tests/test_red_team_public.py): the first of them meets the hang.
    clean = ("q1.train_step_updates_weights", "q1.test_step_changes_nothing",
             "q2.architecture") + STEP_CHECKS
    assert not any(by_id[check].passed for check in clean)
    first, *rest = (by_id[check].message for check in clean)
    assert "This check could not finish: no answer within 30 s" in first
    assert all("did not finish within 30 s" in message for message in rest), rest
    # what it earns from its own kernel's weights, where it is the reference's code
    assert {c.id for c in result.checks if c.passed} == set(by_id) - set(clean)


@pytest.mark.slow
def test_hidden_inputs_never_reach_the_feedback(graded):
    """The refused or failing attacks are told what failed, never the inputs or answers."""
    for (_practical, name), result in graded.items():
        if isinstance(result, Exception):
            continue
        for check in result.checks:
            if check.hidden and not check.passed:
                assert check.expected is None and check.found is None, (name, check.id)


def test_red_team_notebooks_are_what_make_red_team_writes():
    import nbformat

    from practicals import load_module

    module = load_module(RED_TEAM / "make_red_team_functions.py", "_make_red_team")
    try:
        generated = module.notebooks()
    except SystemExit as error:  # the leaked commit is not in this clone
        pytest.skip(f"make_red_team_functions.py cannot read commit {module.LEAKED_AT}: {error}")
    except Exception as error:  # noqa: BLE001 - git show failed: a shallow clone
        pytest.skip(f"make_red_team_functions.py cannot read commit {module.LEAKED_AT}: {error}")
    for practical, found in generated.items():
        for name, notebook in found.items():
            committed = nbformat.read(str(RED_TEAM / practical / f"{name}.ipynb"), as_version=4)
            assert [c.source for c in committed.cells] == [c.source for c in notebook.cells]
