"""Hidden checks of the ocean_proximity practical (never shipped, never in the sandbox).

* ``q3.preprocess_uses_train_statistics``: the student's ``preprocess`` applied to 14
  synthetic districts (3 with a missing ``total_bedrooms``), drawn at grading time from the
  submission's grading seed (:mod:`grader.fresh_inputs`), must give the values of median
  imputation + standard scaling fitted on the training split. One mistake, one charge: the
  reference preprocessing is fitted here, in the grader, on the student's OWN
  ``train_features`` (a Q2 mistake such as a stratified split is charged by Q2 alone), and
  on the canonical training split of housing.csv; either passes. Nothing is stored: a
  student who reads this file still cannot know the districts. The message says when the
  values match statistics fitted on the student's test split, on all the data, on
  train + dev or on the dev split instead.
* ``q5.test_accuracy``: the grader reads the test districts and their labels from
  housing.csv itself and perturbs them lightly with a seed per submission (stored in the
  result: coordinates by about 1 km, every other value by about 1 %), so that no district
  can be looked up. It preprocesses them itself, with the reference preprocessing fitted on
  the training split the notebook prescribes (``expected.npz``: training medians, means and
  standard deviations): the student's ``preprocess`` is graded by q3, and runs no part of
  this measurement. The student's kernel only exports the global `model` (and the model
  ``build_model()`` returns, which it must match) as data; the model is rebuilt from an
  allow-list of Keras layers in a clean room where no student code ran
  (:mod:`grader.cleanroom`), which returns raw scores; the accuracy is computed here,
  against the calibrated band, and a result far above the reference runs is flagged for
  review. It uses the 3,921 test districts with no missing value: imputation is graded by
  q3 alone. The test districts' labels are in the CSV the notebook reads: a model trained
  on them is caught only by the review flag (see the README, "What is checked where").
"""

from __future__ import annotations

from functools import lru_cache

import numpy as np
import pandas as pd

from grader import data
from grader.checks import check
from grader.compare import as_array
from grader.errors import CheckFailed
from grader.keras_checks import TABULAR_LAYERS, graded_model, judge_trained_accuracy, seed_for

COLUMNS = ["longitude", "latitude", "housing_median_age", "total_rooms", "total_bedrooms",
           "population", "households", "median_income", "median_house_value"]
LABEL_MAPPING = {"<1H OCEAN": 0, "INLAND": 1, "ISLAND": 2, "NEAR BAY": 3, "NEAR OCEAN": 4}
BEDROOMS = COLUMNS.index("total_bedrooms")

# ddof=1 (pandas' default) instead of StandardScaler's ddof=0 changes a value by
# |z| * 3.8e-5 here; statistics fitted on anything but the training split change some
# values by 0.03 or more.
RTOL, ATOL = 1e-3, 1e-3

WRONG_FITS = {
    "test": "statistics fitted on the TEST split",
    "all": "statistics fitted on ALL the data (train + dev + test)",
    "train_full": "statistics fitted on the training and development sets together",
    "dev": "statistics fitted on the DEVELOPMENT split",
}

_PREPROCESS = """
import numpy as _np
import pandas as _pd
_frame = _pd.DataFrame(_np.array(rows, dtype=float), columns=list(columns))
result = _np.asarray(ns["preprocess"](_frame), dtype=float)
"""

COORDINATES = ("longitude", "latitude")
COORDINATE_NOISE = 0.01  # degrees, about 1 km
RELATIVE_NOISE = 0.01  # every other column: a 1 % multiplicative jitter


def _require(student, *names: str) -> None:
    defined = student.names()
    missing = [name for name in names if name not in defined]
    if missing:
        raise CheckFailed(
            f"No {', '.join(f'`{m}`' for m in missing)} in your notebook; expected "
            f"{', '.join(f'`{n}`' for n in names)} to be defined. Define them exactly as the "
            "notebook asks and run every cell from the top.")


def _fitted_transform(fitted: np.ndarray, rows: np.ndarray) -> np.ndarray:
    """``rows`` after median imputation + standard scaling (ddof 0) fitted on ``fitted``,
    as make_expected.py's reference preprocessing does."""
    with np.errstate(all="ignore"):
        medians = np.nanmedian(fitted, axis=0)
        filled = np.where(np.isnan(fitted), medians, fitted)
        means, stds = filled.mean(axis=0), filled.std(axis=0)
        return (np.where(np.isnan(rows), medians, rows) - means) / stds


def _own_frames(student) -> dict[str, np.ndarray] | None:
    """The student's own train/dev/test feature frames as (n, 9) arrays, or None when any is
    missing or unusable (then the canonical split of housing.csv is used). They are data the
    kernel sent: only statistics are computed from them, here, in the grader."""
    names = student.names()
    frames = {}
    for split in ("train", "dev", "test"):
        if f"{split}_features" not in names:
            return None
        try:
            array = as_array(student.get(f"{split}_features"), f"{split}_features")
        except CheckFailed:
            return None
        if (array.ndim != 2 or array.shape[1] != len(COLUMNS) or len(array) < 2
                or np.isinf(array).any() or np.isnan(np.delete(array, BEDROOMS, axis=1)).any()):
            return None
        frames[split] = array
    return frames


def _targets(student, rows: np.ndarray) -> tuple[list[np.ndarray], dict]:
    """What preprocess(rows) may return (fitted on the student's own training split, or on
    the canonical one) and, per wrong fit, what it returns when fitted elsewhere."""
    canonical = preprocess_reference(rows)
    frames = _own_frames(student)
    if frames is None:
        return [canonical], {split: preprocess_reference(rows, split) for split in WRONG_FITS}
    fits = {"test": frames["test"], "dev": frames["dev"],
            "train_full": np.vstack([frames["train"], frames["dev"]]),
            "all": np.vstack([frames["train"], frames["dev"], frames["test"]])}
    return ([_fitted_transform(frames["train"], rows), canonical],
            {split: _fitted_transform(fits[split], rows) for split in WRONG_FITS})


def _close(found: np.ndarray, expected: np.ndarray) -> np.ndarray:
    with np.errstate(invalid="ignore"):
        return np.abs(found - expected) <= ATOL + RTOL * np.abs(expected)


N_HIDDEN = 14
N_MISSING_BEDROOMS = 3


@lru_cache(maxsize=1)
def _fitted() -> dict:
    """split -> (medians, means, stds) fitted on that split of housing.csv, split exactly as
    the notebook asks (two train_test_split calls, random_state=42): median imputation,
    then standard scaling with the population standard deviation (StandardScaler's)."""
    from sklearn.model_selection import train_test_split

    features = pd.read_csv(data.housing_csv())[COLUMNS]
    rows = np.arange(len(features))
    train_full, test = train_test_split(rows, test_size=0.2, random_state=42)
    train, dev = train_test_split(train_full, test_size=0.2, random_state=42)
    fitted = {}
    for split, index in {"train": train, "test": test, "all": rows, "train_full": train_full,
                         "dev": dev}.items():
        frame = features.iloc[index]
        medians = frame.median()
        filled = frame.fillna(medians)
        fitted[split] = (medians, filled.mean(), filled.std(ddof=0), frame.quantile([0.02, 0.98]))
    return fitted


def preprocess_reference(rows: np.ndarray, split: str = "train") -> np.ndarray:
    """``rows`` imputed and scaled with the statistics of ``split``."""
    medians, means, stds, _ = _fitted()[split]
    frame = pd.DataFrame(rows, columns=COLUMNS)
    return ((frame.fillna(medians) - means) / stds).to_numpy(dtype=np.float64)


def hidden_rows(seed: int) -> np.ndarray:
    """14 synthetic districts (never real rows) within the 2%-98% range of the training set,
    rounded like the CSV's values, 3 of them with a missing total_bedrooms."""
    from grader.fresh_inputs import rng

    r = rng(seed, "ocean_proximity.preprocess")
    low, high = _fitted()["train"][3].to_numpy()
    rows = r.uniform(low, high, size=(N_HIDDEN, len(COLUMNS)))
    rows[:, :2] = rows[:, :2].round(2)  # longitude, latitude
    rows[:, 2:7] = rows[:, 2:7].round(0)  # ages and counts
    rows[:, 7] = rows[:, 7].round(4)  # median_income
    rows[:, 8] = (rows[:, 8] / 100).round(0) * 100  # median_house_value
    rows[r.choice(N_HIDDEN, size=N_MISSING_BEDROOMS, replace=False), BEDROOMS] = np.nan
    return rows


@check("q3.preprocess_uses_train_statistics", points=2, hidden=True,
       hint="preprocess(frame) must fill missing values with the TRAINING medians and "
            "standardise with the TRAINING means and standard deviations, for any new rows.")
def check_preprocess_uses_train_statistics(student, expected):
    """preprocess() imputes and scales unseen districts with training-set statistics."""
    _require(student, "preprocess")
    rows = hidden_rows(expected.context.seed)
    targets, wrong_fits = _targets(student, rows)
    target = targets[0]
    found = as_array(student.evaluate(_PREPROCESS, rows=rows, columns=COLUMNS,
                                      what="preprocess(frame)"), "preprocess(frame)")
    n = len(rows)
    if found.shape != target.shape:
        raise CheckFailed(
            f"Q3: preprocess(frame) returned shape {tuple(found.shape)} for a DataFrame of {n} "
            f"districts with the 9 numeric columns; expected {target.shape}. Return one row "
            "per district and one column per numeric column, in the order of NUMERIC_COLUMNS.")
    missing_rows = np.isnan(rows[:, BEDROOMS])
    bad = ~np.isfinite(found)
    if bad.any():
        where = (", all for the districts whose total_bedrooms is missing,"
                 if not bad[~missing_rows].any() else "")
        raise CheckFailed(
            f"Q3: preprocess(frame) returned {int(bad.sum())} NaN or infinite value(s){where} for "
            f"{n} new districts; expected finite numbers. Fill in missing values with the "
            "training-set medians inside preprocess, before scaling.")
    if any(_close(found, t).all() for t in targets):
        return None
    close = _close(found, target)
    # Only total_bedrooms has missing values, so the other 8 columns show where the scaler's
    # statistics came from, whatever the imputer did.
    others = [j for j in range(len(COLUMNS)) if j != BEDROOMS]
    for split, description in WRONG_FITS.items():
        variant = wrong_fits[split]
        if _close(found[:, others], variant[:, others]).all():
            raise CheckFailed(
                f"Q3: preprocess(frame) scales new districts with {description}; "
                "expected statistics fitted on the TRAINING split only. Fit the imputer and the "
                "scaler (or compute the medians, means and standard deviations) on "
                "train_features alone, then use them to transform every split: fitting on "
                "data you evaluate on leaks it into training.")
    imputed = np.zeros_like(close)
    imputed[missing_rows, BEDROOMS] = True  # the values imputation produces
    if not close[~imputed].all():
        raise CheckFailed(
            f"Q3: preprocess(frame) differs from imputation and scaling fitted on your "
            f"training split (train_features) for {int((~close).sum())} of {close.size} values of {n} new districts "
            f"(rtol={RTOL:g}, atol={ATOL:g}). Standardise each column with the training-set "
            "mean and standard deviation, keep the columns in the order of NUMERIC_COLUMNS, "
            "and do not fit anything on the rows passed to preprocess.")
    raise CheckFailed(
        f"Q3: preprocess(frame) standardises correctly, but the value it fills in for a missing "
        f"total_bedrooms is wrong ({int((~close[missing_rows, BEDROOMS]).sum())} of {int(missing_rows.sum())} "
        "districts with a missing value); expected the training-set MEDIAN of total_bedrooms, "
        "then scaled like any other value. Use SimpleImputer(strategy='median') fitted on "
        "train_features, or fillna(train_features.median()).")


@lru_cache(maxsize=1)
def _test_districts(test_index: tuple[int, ...]) -> tuple[np.ndarray, np.ndarray]:
    """The test districts without missing values (features, labels), read from housing.csv."""
    housing = pd.read_csv(data.housing_csv())
    test = housing.iloc[list(test_index)]
    test = test[test[COLUMNS].notna().all(axis=1)]
    labels = test["ocean_proximity"].map(LABEL_MAPPING).to_numpy(dtype=np.int64)
    return test[COLUMNS].to_numpy(dtype=np.float64), labels


def perturb_districts(rows: np.ndarray, seed: int) -> np.ndarray:
    """``rows`` (the 9 numeric columns) lightly jittered with ``seed``: the graded copy."""
    rng = np.random.default_rng(seed)
    out = rows.astype(np.float64).copy()
    for j, column in enumerate(COLUMNS):
        if column in COORDINATES:
            out[:, j] += rng.normal(0.0, COORDINATE_NOISE, len(out))
        else:
            out[:, j] *= np.exp(rng.normal(0.0, RELATIVE_NOISE, len(out)))
    return out


def reference_preprocess(rows: np.ndarray, expected) -> np.ndarray:
    """Median imputation and standard scaling fitted on the training split (the grader's own)."""
    medians = expected.array("train_medians")
    filled = np.where(np.isnan(rows), medians, rows)
    return ((filled - expected.array("train_means")) / expected.array("train_stds")).astype(
        np.float32)


@check("q5.test_accuracy", points=3, hidden=True, timeout=120.0,
       hint="Train model = build_model() on X_train, y_train for enough epochs that the "
            "development accuracy reaches about 0.9, build it from Keras layers only, and keep "
            "the preprocessing of Q3 (the grader standardises the districts itself, with "
            "training-set statistics, in the order of NUMERIC_COLUMNS).")
def check_test_accuracy(student, expected):
    """The trained `model` classifies (perturbed) test districts accurately, measured on the
    grader's own preprocessing in a clean room."""
    model = graded_model(student, TABULAR_LAYERS)
    rows, labels = _test_districts(tuple(int(i) for i in expected.array("test_index")))
    seed = seed_for(model)
    inputs = reference_preprocess(perturb_districts(rows, seed), expected)
    predictions = student.cleanroom.predict(model, inputs)
    n = len(labels)
    if predictions.ndim != 2 or predictions.shape[0] != n or predictions.shape[1] < 2:
        raise CheckFailed(
            f"model.predict(X) returned shape {tuple(predictions.shape)} for {n} test "
            f"districts; expected ({n}, 5): one score per class. Train the model of "
            "build_model(), which takes the 9 standardised columns of Q3.")
    bad_rows = ~np.isfinite(predictions).all(axis=1)
    if bad_rows.any():
        raise CheckFailed(
            f"model.predict(X) returned NaN or infinite scores for {int(bad_rows.sum())} of "
            f"{n} test districts, so the model cannot classify them; expected finite scores "
            "for every district. Check that training did not diverge (a loss of nan).")
    accuracy = float(np.mean(predictions.argmax(axis=1) == labels))
    return judge_trained_accuracy(
        accuracy, expected.band("test_accuracy"),
        what=f"The accuracy of your model on the {n} complete test districts",
        fix="If a check of Q1-Q4 fails, fix that first: a wrong label mapping (Q1) or a model "
            "without a hidden non-linear layer (Q4) does not reach the band however long it "
            "trains. Otherwise train longer or with a larger learning rate and check that "
            "X_train and y_train line up.",
        perturbation_seed=seed, holdout_size=n)
