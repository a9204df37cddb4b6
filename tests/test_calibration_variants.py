"""grader calibrate with variants: allowed alternatives to the reference are calibrated with
the same seeds, recorded next to it, and the lower usable band is used; a variant that
cannot reach the band, or that fails the other checks, is reported and not used. The
end-to-end test runs a tiny course whose "trained" metric is a seeded number (no
TensorFlow), as tests/test_calibration.py does."""

import json
from types import SimpleNamespace

import nbformat
import pytest

from grader.calibration import (BandRule, RunRecord, Variant, VariantOutcome, band_entry,
                                calibrate, combine, load_variants, seeds_for)
from grader.errors import ConfigurationError

from conftest import REPO
from test_calibration import _fake_course


def _outcome(name, values, failed=()):
    records = tuple(RunRecord(seed=i + 1, status="ok", message="",
                              metrics={"acc": v}, failed=failed) for i, v in enumerate(values))
    return VariantOutcome(Variant(name, f"{name} choice", f"variants/{name}.json", None),
                          records, {} if failed else {"acc": list(values)})


def _reference(values=(0.94, 0.942, 0.938)):
    return band_entry(list(values), seeds_for(len(values)), BandRule(), device="cpu",
                      tensorflow="2.99", date="2024-01-01")


def test_the_lower_band_of_a_usable_variant_is_used_and_both_are_recorded():
    reference = _reference()  # low 0.918
    entry, signals = combine(reference, [_outcome("gap", [0.93, 0.925, 0.931])], "acc",
                             BandRule(), max_drop=0.03)
    assert entry["reference_low"] == reference["low"] == 0.918
    assert entry["low"] == entry["variants"]["gap"]["low"] < 0.918
    assert entry["low_from"] == "variant gap"
    assert entry["variants"]["gap"]["used"] and entry["variants"]["gap"]["values"][0] == 0.93
    assert entry["reference_values"] == reference["reference_values"]
    assert signals == []  # every run of the variant reached the reference's band
    assert "used gap" in entry["rule"]


def test_a_variant_with_runs_under_the_reference_band_is_signalled_and_used():
    entry, signals = combine(_reference(), [_outcome("gap", [0.915, 0.93, 0.92])], "acc",
                             BandRule(), max_drop=0.03)
    assert entry["variants"]["gap"]["short"] == 1 and entry["variants"]["gap"]["used"]
    assert entry["low"] < 0.915
    assert len(signals) == 1 and "1 of 3 runs under the reference's band 0.9180" in signals[0]


def test_a_variant_that_cannot_reach_the_band_is_reported_and_not_used():
    entry, signals = combine(_reference(), [_outcome("bn", [0.70, 0.85, 0.60]),
                                            _outcome("ok", [0.939, 0.94, 0.941])], "acc",
                             BandRule(), max_drop=0.03)
    assert entry["variants"]["bn"]["used"] is False
    assert entry["low"] == 0.918 and entry["low_from"] == "reference"
    assert any("variant bn (bn choice) cannot reach the band" in s and "say more in the text" in s
               for s in signals)


def test_a_variant_failing_other_checks_is_not_a_solution_and_not_used():
    entry, signals = combine(_reference(), [_outcome("wrong", [0.5, 0.5], failed=("q2.x: no",))],
                             "acc", BandRule(), max_drop=0.03)
    assert entry["low"] == 0.918 and entry["variants"]["wrong"]["used"] is False
    assert "q2.x: no" in entry["variants"]["wrong"]["why"]
    assert "not a solution the checks allow" in signals[0]


def test_without_variants_the_entry_is_the_reference_entry():
    reference = _reference()
    entry, signals = combine(reference, [], "acc", BandRule(), 0.03)
    assert entry == reference and signals == []


def test_variant_edits_must_match_exactly_once(tmp_path):
    reference = tmp_path / "ref.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell("a = 1\nb = 1\n")]),
                   str(reference))
    (tmp_path / "variants").mkdir()
    (tmp_path / "variants" / "two.json").write_text(json.dumps(
        {"description": "b is two", "edits": [["b = 1", "b = 2"]]}))
    (variant,) = load_variants(tmp_path, reference)
    assert variant.name == "two" and variant.notebook.cells[0].source == "a = 1\nb = 2\n"
    (tmp_path / "variants" / "bad.json").write_text(json.dumps({"edits": [[" = 1", "x"]]}))
    with pytest.raises(ConfigurationError, match="does not match exactly once"):
        load_variants(tmp_path, reference)


def test_every_committed_variant_applies_to_its_reference():
    """The variants in reference/*/variants/ still match the reference notebooks."""
    found = {}
    for folder in sorted((REPO / "reference").glob("*/variants")):
        name = folder.parent.name
        found[name] = load_variants(folder.parent, folder.parent / f"{name}.ipynb")
        assert found[name] and all(v.description for v in found[name]), name
    assert {"global_pooling_head", "batchnorm_default_momentum"} <= {v.name for v in found["cnn"]}
    assert set(found) == {"cnn", "mlp", "linear_softmax", "ocean_proximity", "custom_train_step"}


def test_calibrate_end_to_end_records_variants_and_their_inputs(tmp_path, capsys):
    course = _fake_course(tmp_path / "course")
    variants = course / "reference" / "fake" / "variants"
    variants.mkdir()
    # An allowed choice a little worse than the reference, and one far worse.
    (variants / "slightly_worse.json").write_text(json.dumps(
        {"description": "slightly worse", "edits": [["score = 0.9 +", "score = 0.89 +"]]}))
    (variants / "much_worse.json").write_text(json.dumps(
        {"description": "much worse", "edits": [["score = 0.9 +", "score = 0.5 +"]]}))
    args = SimpleNamespace(name="fake", runs=3, device="cpu", workers=2, data_dir=None,
                           sandbox="auto", no_variants=False, max_drop=None)
    entries = calibrate(args, course)
    out = capsys.readouterr().out
    entry = json.loads((course / "reference" / "fake" / "expected.json").read_text())["bands"][
        "score"]["cpu"]
    assert entry == entries["score"]["cpu"]
    assert entry["variants"]["slightly_worse"]["used"] is True
    assert entry["variants"]["much_worse"]["used"] is False
    assert entry["low"] == entry["variants"]["slightly_worse"]["low"] < entry["reference_low"]
    assert entry["variants"]["slightly_worse"]["seeds"] == entry["seeds"] == [1, 2, 3]
    assert "expected.json values" in entry["inputs"]
    assert "variant much_worse (much worse) cannot reach the band" in out
    assert "variant slightly_worse" in out and "=> band" in out
