"""The offline data cache: idiomatic student code finds the datasets in the sandbox."""

import shutil

import numpy as np
import pytest

from grader import data
from grader.assignment import load_assignment
from grader.errors import DataUnavailable
from grader.executor import GradeOptions, grade_submission

from conftest import SHARED_DATA, TESTS, TOY_COURSE, sandbox_mode


def test_mnist_sample_split_is_fixed_and_balanced():
    (x_train, y_train), (x_test, y_test) = data.mnist_sample()
    assert x_train.shape == (4000, 28, 28) and x_test.shape == (1000, 28, 28)
    assert x_train.dtype == np.uint8 and x_train.max() == 255
    assert np.bincount(np.concatenate([y_train, y_test])).tolist() == [500] * 10
    # Students get the first MNIST_DEV test images as x_test (the dev set); the rest is the
    # private holdout, which is not in the cached file the sandbox mounts.
    with np.load(data.mnist_npz()) as cached:
        assert np.array_equal(cached["y_test"], y_test[:data.MNIST_DEV])
        assert cached["x_test"].shape == (data.MNIST_DEV, 28, 28)


def test_housing_checksum_is_verified(tmp_path, monkeypatch):
    monkeypatch.setenv("GRADER_CACHE", str(tmp_path / "cache"))
    monkeypatch.delenv("GRADER_DATA", raising=False)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "housing.csv").write_text("longitude,latitude\n1,2\n")
    with pytest.raises(DataUnavailable, match="not the handson-ml2 housing.csv"):
        data.housing_csv(tmp_path / "bad")
    with pytest.raises(DataUnavailable, match="Download it from https://"):
        data.housing_csv(tmp_path / "nowhere")


@pytest.fixture
def data_course(tmp_path):
    course = tmp_path / "course"
    shutil.copytree(TOY_COURSE, course)
    toml = course / "assignments" / "toy" / "assignment.toml"
    toml.write_text(toml.read_text().replace('notebook = "toy.ipynb"',
                                             'notebook = "toy.ipynb"\ndatasets = ["mnist", "housing"]')
                    .replace("cell_timeout_s = 10", "cell_timeout_s = 120")
                    .replace("notebook_timeout_s = 30", "notebook_timeout_s = 300")
                    .replace("memory_mb = 1024", "memory_mb = 4096"))
    return load_assignment("toy", course)


@pytest.mark.slow
@pytest.mark.skipif(not (SHARED_DATA / "housing.csv").exists(), reason="needs ../shared/data")
def test_idiomatic_loading_works_offline_in_the_sandbox(data_course, tmp_path):
    notebook = TESTS / "fixtures" / "idiomatic" / "keras_load_data.ipynb"
    reading = tmp_path / "read_csv.ipynb"
    text = notebook.read_text().replace(
        "print(x_train.shape, x_test.shape)",
        "print(x_train.shape, x_test.shape)\\nimport pandas as pd\\n"
        "housing = pd.read_csv('datasets/housing/housing.csv')\\nprint(housing.shape)")
    reading.write_text(text)
    result = grade_submission(reading, data_course, GradeOptions(
        sandbox=sandbox_mode(), data_dir=SHARED_DATA, executed_dir=tmp_path / "executed"),
        "idiomatic")
    executed = (tmp_path / "executed" / "idiomatic.ipynb").read_text()
    assert result.status.value == "ok", (result.message, executed[-2000:])
    assert "(4000, 28, 28) (500, 28, 28)" in executed  # x_test: the public dev set
    assert "(20640, 10)" in executed
    assert result.score == result.max_score


@pytest.mark.skipif(not (SHARED_DATA / "housing.csv").exists(), reason="needs ../shared/data")
def test_grader_data_rebuilds_a_tampered_cache(tmp_path, monkeypatch, capsys):
    """`grader data` trusts nothing because it exists: a changed file is built again and
    recorded, so the next run finds a cache that matches its manifest."""
    from grader import cli, data

    monkeypatch.setenv("GRADER_CACHE", str(tmp_path / "cache"))
    npz = data.mnist_npz()
    npz.write_bytes(b"not the MNIST sample")
    assert cli.main(["data", "--data-dir", str(SHARED_DATA)]) == 0
    assert "removed and built again: mnist.npz" in capsys.readouterr().out
    assert data.untrusted_files() == []
    assert data.read_manifest()["mnist-public/mnist.npz"] == data.sha256_of(npz)
