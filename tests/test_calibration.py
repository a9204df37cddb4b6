"""grader calibrate: the band rule on fixed numbers, how bands are written, and an
end-to-end calibration of a tiny course whose "trained" metric is a seeded number
(no TensorFlow, so it runs in seconds)."""

import json
import math
import statistics
from pathlib import Path
from types import SimpleNamespace

import nbformat
import pytest

from grader.assignment import Expected, load_assignment
from grader.calibration import (BandRule, RunRecord, band_entry, band_from_values, calibrate,
                                collect_metrics, format_runs, run_seeds, seeds_for, write_bands)
from grader.compare import assert_in_band
from grader.errors import CheckFailed, ConfigurationError
from grader.executor import GradeOptions

# --------------------------------------------------------------------------- the rule


def test_band_sits_the_margin_under_the_worst_run_when_the_spread_is_small():
    values = [0.900, 0.905, 0.899, 0.906, 0.905]
    stats = band_from_values(values)
    # sd = 0.0032 -> margin max(0.02, 0.0064) = 0.02; mean - 3 sd = 0.8935 > 0.899 - 0.02.
    assert stats.low == 0.879
    assert stats.mean == 0.903
    assert stats.std == round(statistics.stdev(values), 4)
    assert stats.margin == 0.02
    assert not stats.floored


def test_band_widens_with_the_spread():
    values = [0.5, 0.7, 0.9, 0.6, 0.8]
    sd = statistics.stdev(values)  # 0.1581
    stats = band_from_values(values)
    assert stats.margin == round(2 * sd, 4)
    # min - 2 sd = 0.18377 is lower than mean - 3 sd = 0.2257; rounded down.
    assert stats.low == 0.1837
    assert stats.low <= min(0.7 - 3 * sd, 0.5 - 2 * sd)


def test_band_is_never_under_the_floor():
    stats = band_from_values([0.5, 0.7, 0.9, 0.6, 0.8], BandRule(floor=0.3))
    assert stats.low == 0.3 and stats.floored
    assert band_from_values([0.1, 0.2, 0.15]).low == 0.0  # the default floor


def test_identical_runs_still_leave_the_minimum_margin_and_round_down_cleanly():
    assert band_from_values([0.9] * 5).low == 0.88  # not 0.8799 from 0.87999999...
    assert band_from_values([0.8891, 0.8893]).low == 0.8691


def test_a_band_needs_two_finite_values():
    with pytest.raises(ConfigurationError, match="at least 2"):
        band_from_values([0.9])
    with pytest.raises(ConfigurationError, match="non-finite"):
        band_from_values([0.9, math.nan])


def test_collect_metrics_requires_every_run_to_report_every_metric():
    runs = [RunRecord(seed=1, status="ok", message="", metrics={"acc": 0.9}),
            RunRecord(seed=2, status="ok", message="", metrics={})]
    with pytest.raises(ConfigurationError, match=r"acc \(seed 2\)"):
        collect_metrics(runs)
    assert collect_metrics(runs[:1]) == {"acc": [0.9]}


def test_seeds_are_one_to_k():
    assert seeds_for(5) == [1, 2, 3, 4, 5]
    assert seeds_for(3, start=101) == [101, 102, 103]


# --------------------------------------------------------------------------- writing


def _entry(values=(0.9, 0.91, 0.92, 0.9, 0.91), date="2024-01-01"):
    return band_entry(list(values), seeds_for(len(values)), BandRule(), device="cpu",
                      tensorflow="2.99.0", date=date)


def test_entry_carries_its_provenance():
    entry = _entry()
    assert set(entry) >= {"low", "rule", "reference_values", "seeds", "runs", "tensorflow",
                          "device", "date", "mean", "std"}
    assert entry["seeds"] == [1, 2, 3, 4, 5] and entry["runs"] == 5
    assert entry["low"] == 0.88 and "high" not in entry
    assert "low = min(mean - 3*sd, min - max(0.02, 2*sd))" in entry["rule"]
    assert "GRADER_SEED 1-5" in entry["rule"]


def test_writing_a_band_keeps_everything_else(tmp_path):
    path = tmp_path / "expected.json"
    original = {
        "values": {"mean_of_squares": 28.5},
        "calibration": {"floor": {"test_accuracy": 0.2}},
        "notes": "kept",
        "bands": {"test_accuracy": {"gpu": {"low": 0.7, "rule": "by hand"}},
                  "dev_accuracy": {"cpu": {"low": 0.5, "rule": "by hand"}}},
    }
    path.write_text(json.dumps(original))
    assert write_bands(path, {"test_accuracy": {"cpu": _entry()}})
    data = json.loads(path.read_text())
    assert data["values"] == original["values"]
    assert data["calibration"] == original["calibration"] and data["notes"] == "kept"
    assert data["bands"]["dev_accuracy"] == original["bands"]["dev_accuracy"]
    assert data["bands"]["test_accuracy"]["gpu"] == original["bands"]["test_accuracy"]["gpu"]
    assert data["bands"]["test_accuracy"]["cpu"] == _entry()
    band = Expected.load(tmp_path).band("test_accuracy")
    assert band.low == 0.88 and band.high == math.inf and len(band.reference_values) == 5


def test_rewriting_the_same_values_leaves_the_file_as_it_was(tmp_path):
    path = tmp_path / "expected.json"
    write_bands(path, {"acc": {"cpu": _entry(date="2024-01-01")}})
    before = path.read_bytes()
    assert not write_bands(path, {"acc": {"cpu": _entry(date="2030-12-31")}})
    assert path.read_bytes() == before
    assert write_bands(path, {"acc": {"cpu": _entry(values=(0.5, 0.6, 0.7), date="2030-12-31")}})
    assert json.loads(path.read_text())["bands"]["acc"]["cpu"]["date"] == "2030-12-31"


def test_a_calibrating_expected_opens_every_band():
    expected = Expected({}, {}, {}).calibrating()
    band = expected.band("never_calibrated")
    record = assert_in_band(0.01, band, what="accuracy", fix="")
    assert record["name"] == "never_calibrated" and record["value"] == 0.01
    with pytest.raises(ConfigurationError, match="calibrate"):
        Expected({}, {}, {}).band("never_calibrated")
    with pytest.raises(ConfigurationError, match="hidden expected"):
        Expected.refusing("fake").calibrating().band("x")


def test_bands_are_per_device_class_with_the_cpu_band_as_fallback():
    bands = {"acc": {"cpu": {"low": 0.8}, "gpu": {"low": 0.85}}, "loss": {"cpu": {"low": 0.1}}}
    expected = Expected({}, {}, bands)
    assert expected.band("acc").low == 0.8  # cpu unless told
    assert expected.band("acc", "gpu").low == 0.85
    on_gpu = expected.for_device("gpu:1")  # the executor passes the device it graded on
    assert on_gpu.band("acc").low == 0.85 and on_gpu.band("acc", "cpu").low == 0.8
    assert on_gpu.band("loss").low == 0.1  # no gpu band calibrated: the cpu one
    assert on_gpu.calibrating().device == "gpu"


def test_format_runs_lists_every_seed():
    table = format_runs([RunRecord(1, "ok", "", {"score": 0.9}, (), 1.5),
                         RunRecord(2, "error", "boom", {}, ("q1.x: no",), 0.5)], ["score"])
    assert table.splitlines()[0].split() == ["seed", "status", "score", "time", "(s)"]
    assert "0.9000" in table and "error" in table


# --------------------------------------------------------------------------- end to end

NOTEBOOK_SOURCE = """\
import os

import numpy as np

SEED = int(os.environ.get("GRADER_SEED", "42"))
rng = np.random.default_rng(SEED)
deterministic = os.environ.get("TF_DETERMINISTIC_OPS")
score = 0.9 + 0.01 * (SEED % 3) + float(rng.uniform(0.0, 0.005))
print(score)
"""

PUBLIC_CHECKS = """\
from grader.checks import check
from grader.errors import CheckFailed


@check("q1.score_is_a_number", points=1)
def check_score_is_a_number(student, expected):
    \"\"\"`score` is a number.\"\"\"
    if not isinstance(student.get("score"), float):
        raise CheckFailed("`score` is not a float; expected a float.")
    if student.get("deterministic") != "1":
        raise CheckFailed("TF_DETERMINISTIC_OPS did not reach the kernel.")
"""

HIDDEN_CHECKS = """\
from grader.checks import check
from grader.compare import assert_in_band


@check("q1.score_in_band", points=2, hidden=True, hint="Train longer.")
def check_score_in_band(student, expected):
    \"\"\"`score` is about as good as the reference's.\"\"\"
    return assert_in_band(student.get("score"), expected.band("score"), what="score",
                          fix="Train longer.")
"""


def _fake_course(root: Path) -> Path:
    (root / "assignments" / "fake").mkdir(parents=True)
    (root / "reference" / "fake").mkdir(parents=True)
    (root / "assignments" / "fake" / "assignment.toml").write_text(
        'name = "fake"\ntitle = "Fake trained metric"\nnotebook = "fake.ipynb"\n'
        "[limits]\ncell_timeout_s = 20\nnotebook_timeout_s = 40\nmemory_mb = 1024\n"
        "max_processes = 64\n")
    (root / "assignments" / "fake" / "public_checks.py").write_text(PUBLIC_CHECKS)
    (root / "reference" / "fake" / "hidden_checks.py").write_text(HIDDEN_CHECKS)
    (root / "reference" / "fake" / "expected.json").write_text(
        json.dumps({"values": {"kept": 1}, "bands": {}}))
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(NOTEBOOK_SOURCE)])
    nbformat.write(notebook, str(root / "reference" / "fake" / "fake.ipynb"))
    return root


def _args(**overrides):
    values = dict(name="fake", runs=5, device="cpu", workers=2, data_dir=None, sandbox="auto")
    values.update(overrides)
    return SimpleNamespace(**values)


def test_calibrate_end_to_end_writes_a_reproducible_band_that_fails_a_weaker_model(
        tmp_path, capsys):
    course = _fake_course(tmp_path / "course")
    path = course / "reference" / "fake" / "expected.json"

    entries = calibrate(_args(), course)
    out = capsys.readouterr().out
    expected_values = [0.9 + 0.01 * (seed % 3) for seed in range(1, 6)]
    entry = json.loads(path.read_text())["bands"]["score"]["cpu"]
    assert entry == entries["score"]["cpu"]
    assert entry["seeds"] == [1, 2, 3, 4, 5] and entry["runs"] == 5
    assert entry["device"] == "cpu" and "tensorflow" in entry and entry["date"]
    for value, base in zip(entry["reference_values"], expected_values, strict=True):
        assert base <= value <= base + 0.005  # each kernel got its own GRADER_SEED
    assert entry["low"] <= min(entry["reference_values"]) - 0.02
    assert "calibrated by `grader calibrate`" in entry["rule"]
    assert json.loads(path.read_text())["values"] == {"kept": 1}
    assert "seed" in out and "score" in out and f"{entry['low']:.4f}" in out

    # Same seeds, same values, same band: the file is not even rewritten.
    before = path.read_bytes()
    again = calibrate(_args(), course)
    assert again["score"]["cpu"] == entry
    assert path.read_bytes() == before

    # Graded normally against the written band: the reference passes, a weaker one fails.
    weak_path = tmp_path / "weak.ipynb"
    weak = nbformat.read(str(course / "reference" / "fake" / "fake.ipynb"), as_version=4)
    weak.cells[0].source = weak.cells[0].source.replace("score = 0.9 +", "score = 0.8 +")
    nbformat.write(weak, str(weak_path))
    options = GradeOptions(sandbox="auto")
    fresh = run_seeds("fake", course, [101, 102], options)
    weakened = run_seeds("fake", course, [101, 102], options, notebook=weak_path)
    assert all(run.clean for run in fresh), fresh
    assert all(run.status == "ok" and run.failed for run in weakened), weakened
    assert all(run.failed[0].startswith("q1.score_in_band") for run in weakened)
    band = load_assignment("fake", course).expected.band("score")
    with pytest.raises(CheckFailed, match="expected at least"):
        assert_in_band(weakened[0].metrics["score"], band, what="score", fix="")


def test_the_graded_device_picks_the_band(tmp_path):
    from grader.executor import grade_submission

    course = _fake_course(tmp_path / "course")
    (course / "reference" / "fake" / "expected.json").write_text(json.dumps(
        {"values": {}, "bands": {"score": {"cpu": {"low": 0.5}, "gpu": {"low": 0.99}}}}))
    assignment = load_assignment("fake", course)
    notebook = course / "reference" / "fake" / "fake.ipynb"
    verdicts = {}
    for device in ("cpu", "gpu:0"):  # gpu:0 without device nodes still runs on the CPU here
        result = grade_submission(notebook, assignment, GradeOptions(sandbox="auto", device=device),
                                  "ref")
        verdicts[device] = {c.id: c.passed for c in result.checks}
    assert verdicts["cpu"]["q1.score_in_band"] is True
    assert verdicts["gpu:0"]["q1.score_in_band"] is False  # 0.9x is under the gpu band


def test_calibrate_refuses_a_reference_that_fails_its_own_checks(tmp_path):
    course = _fake_course(tmp_path / "course")
    notebook = course / "reference" / "fake" / "fake.ipynb"
    notebook.write_text(notebook.read_text().replace("print(score)", "score = 'high'"))
    with pytest.raises(ConfigurationError, match=r"(?s)did not pass its own checks.*seed 1: 2 check\(s\) failed"):
        calibrate(_args(runs=2), course)
    assert json.loads((course / "reference" / "fake" / "expected.json").read_text())["bands"] == {}
