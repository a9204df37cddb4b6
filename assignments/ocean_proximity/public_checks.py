"""Public checks of the ocean_proximity practical (students have this file).

They check properties and small known facts only: the label mapping, the class counts
of the labels and of the split, the split sizes, that no value is missing after
preprocessing, that X_train is standardised, and the model's output layer, hidden
non-linearity, loss and metric. Whether ``preprocess`` uses training-set statistics on
unseen districts and how well the trained model classifies the test districts are checked
by hidden checks.

One mistake, one charge: the Q3 checks judge X_train, X_dev and X_test against the
student's OWN train/dev/test frames of Q2 (their row counts), so a Q2 mistake costs Q2's
points only; Q2 identifies the rows of each split by the 8 columns without missing values,
so filling in missing values early (a Q3 matter) is not charged to Q2. The requirement ->
check table is in README.md.
"""

from __future__ import annotations

import numpy as np

from grader.checks import check
from grader.compare import as_array, assert_shape, short_repr
from grader.errors import CheckFailed

LABEL_MAPPING = {"<1H OCEAN": 0, "INLAND": 1, "ISLAND": 2, "NEAR BAY": 3, "NEAR OCEAN": 4}
COLUMNS = ["longitude", "latitude", "housing_median_age", "total_rooms", "total_bedrooms",
           "population", "households", "median_income", "median_house_value"]

# Known facts about housing.csv (20,640 districts) and the split asked for
# (train_test_split(test_size=0.2, random_state=42), twice): class counts per split.
LABEL_COUNTS = {
    "labels": [9136, 6551, 5, 2290, 2658],
    "y_train": [5848, 4217, 2, 1491, 1651],
    "y_dev": [1493, 1010, 2, 363, 435],
    "y_test": [1795, 1324, 1, 436, 572],
}
SPLIT_ROWS = {"train": 13209, "dev": 3303, "test": 4128}
# Column means (NaN skipped) of train_features, dev_features and test_features, in the
# order of COLUMNS: they identify the rows of each split.
SPLIT_MEANS = {
    "train": [-119.5833, 35.64685, 28.56726, 2636.231, 537.2501, 1426.916, 499.1043, 3.868934,
              206691.7],
    "dev": [-119.5782, 35.62836, 28.77233, 2665.093, 543.4826, 1424.599, 503.5165, 3.928026,
            209206.1],
    "test": [-119.5194, 35.58671, 28.76429, 2610.796, 535.2331, 1421.572, 497.7507, 3.830338,
             205500.3],
}
SPLIT_MEANS_RTOL = 1e-5
BEDROOMS = COLUMNS.index("total_bedrooms")

MEAN_ATOL = 1e-3  # |column mean of X_train| must be at most this
STD_ATOL = 1e-3  # |column std of X_train - 1| must be at most this (ddof 0 or 1 both pass)

# Inputs for the model checks: 8 standardised districts (any values will do).
MODEL_PROBE = np.random.default_rng(0).normal(size=(8, 9)).astype("float32")


def _require(student, *names: str) -> None:
    defined = student.names()
    missing = [name for name in names if name not in defined]
    if missing:
        raise CheckFailed(
            f"No {', '.join(f'`{m}`' for m in missing)} in your notebook; expected "
            f"{', '.join(f'`{n}`' for n in names)} to be defined. Define them exactly as the "
            "question asks and run every cell from the top.")


def _integer_labels(found, what: str, n: int) -> np.ndarray:
    array = assert_shape(found, (n,), what=what,
                         fix="It must be a 1-D array with one integer class id per row.")
    if not np.all(np.isfinite(array)) or np.any(array != np.round(array)):
        raise CheckFailed(f"`{what}` holds values that are not whole numbers "
                          f"({short_repr(array)}); expected integer class ids 0-4. "
                          "Map the texts with `label_mapping` (e.g. `.map(label_mapping)`).")
    return array.astype(np.int64)


def _check_counts(array: np.ndarray, name: str, fix: str) -> None:
    expected = LABEL_COUNTS[name]
    if array.min() < 0 or array.max() > 4:
        raise CheckFailed(
            f"`{name}` holds class ids from {array.min()} to {array.max()}; expected ids 0 to 4 "
            "only. Map `ocean_proximity` with `label_mapping`.")
    found = np.bincount(array, minlength=5).tolist()
    if found != expected:
        raise CheckFailed(
            f"`{name}` has {found} rows of classes 0-4; expected {expected}. {fix}",
            expected=str(expected), found=str(found))


# -- Q1 ----------------------------------------------------------------------------------
@check("q1.label_mapping", points=1)
def check_label_mapping(student, expected):
    """`label_mapping` maps the 5 ocean_proximity texts to 0-4 in alphabetical order."""
    _require(student, "label_mapping")
    found = student.get("label_mapping")
    if not isinstance(found, dict):
        raise CheckFailed(f"`label_mapping` is {short_repr(found)}; expected a dict "
                          f"{LABEL_MAPPING}.")
    if found != LABEL_MAPPING:
        wrong = [f"{key!r}: {found.get(key, 'missing')} (expected {value})"
                 for key, value in LABEL_MAPPING.items() if found.get(key) != value]
        extra = [repr(key) for key in found if key not in LABEL_MAPPING]
        detail = "; ".join(wrong + ([f"unexpected keys {', '.join(extra)}"] if extra else []))
        raise CheckFailed(
            f"`label_mapping` differs from the one asked for: {detail}. Expected exactly "
            f"{LABEL_MAPPING} (the classes in alphabetical order, not in the order of "
            "value_counts()).",
            expected=str(LABEL_MAPPING), found=short_repr(found))


@check("q1.labels_encoded", points=1)
def check_labels_encoded(student, expected):
    """`labels` holds the class id of every district, with the counts of housing.csv."""
    _require(student, "labels")
    labels = _integer_labels(student.get("labels"), "labels", 20640)
    _check_counts(labels, "labels",
                  "Build it as housing['ocean_proximity'].map(label_mapping), in file order, "
                  "with the mapping of Q1 (ISLAND, the rarest class, is 2).")


# -- Q2 ----------------------------------------------------------------------------------
@check("q2.split_sizes", points=1)
def check_split_sizes(student, expected):
    """The training, development and test sets have 13,209 / 3,303 / 4,128 rows."""
    names = ["train_features", "dev_features", "test_features", "y_train", "y_dev", "y_test"]
    _require(student, *names)
    fix = ("Split with train_test_split(..., test_size=0.2, random_state=42) into a full "
           "training set and the test set, then the full training set again the same way into "
           "the training and development sets.")
    for split, rows in SPLIT_ROWS.items():
        frame = as_array(student.get(f"{split}_features"), f"{split}_features")
        assert_shape(frame, (rows, 9), what=f"{split}_features",
                     fix=f"It must keep the 9 numeric columns. {fix}")
        _integer_labels(student.get(f"y_{split}"), f"y_{split}", rows)


@check("q2.split_random_state", points=1)
def check_split_random_state(student, expected):
    """Each split holds the rows of train_test_split(test_size=0.2, random_state=42), twice."""
    _require(student, "train_features", "dev_features", "test_features",
             "y_train", "y_dev", "y_test")
    fix = ("Use train_test_split(..., test_size=0.2, random_state=42) both times (first on "
           "features and labels, then on the full training set), not stratified, without "
           "shuffling or sorting the data yourself first.")
    for split, rows in SPLIT_ROWS.items():
        name = f"{split}_features"
        frame = assert_shape(student.get(name), (rows, 9), what=name, fix=fix)
        with np.errstate(all="ignore"):
            means = np.nanmean(frame, axis=0)
        expected_means = np.asarray(SPLIT_MEANS[split])
        # total_bedrooms (the column with missing values) is left out: the other 8 columns
        # identify the rows, and how missing values are filled in is Q3's business.
        off = np.abs(means - expected_means) / np.abs(expected_means)
        off[BEDROOMS] = 0.0
        if not np.all(off <= SPLIT_MEANS_RTOL):
            j = int(np.argmax(off))
            raise CheckFailed(
                f"`{name}` holds other districts than expected: the mean of its column "
                f"{COLUMNS[j]} is {means[j]:.7g}; expected {expected_means[j]:.7g} "
                f"(rtol={SPLIT_MEANS_RTOL:g}). {fix}",
                expected=f"{expected_means[j]:.7g}", found=f"{means[j]:.7g}",
                tolerance=f"rtol={SPLIT_MEANS_RTOL:g}")
        # The class counts, whatever the label mapping: y_<split> must go with these rows.
        labels = _integer_labels(student.get(f"y_{split}"), f"y_{split}", rows)
        found = sorted(np.unique(labels, return_counts=True)[1].tolist(), reverse=True)
        wanted = sorted(LABEL_COUNTS[f"y_{split}"], reverse=True)
        if found != wanted:
            raise CheckFailed(
                f"`y_{split}` does not go with `{name}`: its classes have {found} rows (largest "
                f"first); expected {wanted}. Split features and labels in the same "
                "train_test_split call so that they stay aligned.",
                expected=str(wanted), found=str(found))


# -- Q3 ----------------------------------------------------------------------------------
def _own_rows(student) -> dict[str, int]:
    """split -> the number of rows of the student's own `<split>_features` (Q2's answer),
    or the expected count when that frame is missing or not a 2-D table: Q3 is judged on
    the student's own split, so a Q2 mistake is not charged again here."""
    names = student.names()
    rows = dict(SPLIT_ROWS)
    for split in SPLIT_ROWS:
        if f"{split}_features" in names:
            try:
                array = as_array(student.get(f"{split}_features"), f"{split}_features")
            except CheckFailed:
                continue
            if array.ndim == 2:
                rows[split] = int(array.shape[0])
    return rows


@check("q3.no_missing_values", points=1)
def check_no_missing_values(student, expected):
    """X_train, X_dev and X_test have one row per district of their split, 9 columns, no NaN."""
    _require(student, "X_train", "X_dev", "X_test")
    for split, rows in _own_rows(student).items():
        name = f"X_{split}"
        array = assert_shape(student.get(name), (rows, 9), what=name,
                             fix=f"Q3: it must be preprocess({split}_features): one row per "
                                 f"district of {split}_features ({rows}), one column per "
                                 "numeric column; preprocess must not drop rows.")
        bad = ~np.isfinite(array)
        if bad.any():
            columns = [COLUMNS[j] for j in np.flatnonzero(bad.any(axis=0))]
            raise CheckFailed(
                f"Q3: `{name}` contains {int(bad.sum())} NaN or infinite value(s) (in column(s) "
                f"{', '.join(columns)}); expected none. Fill in missing values with the median "
                "of each column of the TRAINING set (e.g. SimpleImputer(strategy='median') "
                "fitted on train_features) inside preprocess, before scaling.",
                expected="no NaN", found=f"{int(bad.sum())} NaN")


@check("q3.train_standardized", points=1)
def check_train_standardized(student, expected):
    """Every column of X_train has mean 0 and standard deviation 1 (fitted on X_train)."""
    _require(student, "X_train")
    array = assert_shape(student.get("X_train"), (None, 9), what="X_train",
                         fix="Q3: it must be preprocess(train_features), one column per "
                             "numeric column.")
    with np.errstate(all="ignore"):
        means = np.nanmean(array, axis=0)
        stds = np.nanstd(array, axis=0)
    problems = []
    for j, column in enumerate(COLUMNS):
        if not abs(means[j]) <= MEAN_ATOL:
            problems.append(f"{column} has mean {means[j]:.4g}")
        if not abs(stds[j] - 1) <= STD_ATOL:
            problems.append(f"{column} has standard deviation {stds[j]:.4g}")
    if problems:
        shown = "; ".join(problems[:4]) + (f"; and {len(problems) - 4} more" if len(problems) > 4 else "")
        raise CheckFailed(
            f"Q3: X_train is not standardised with its own statistics: {shown}. Expected every "
            f"column of X_train to have mean 0 (±{MEAN_ATOL:g}) and standard deviation 1 "
            f"(±{STD_ATOL:g}). Fit the scaler (the means and standard deviations) on the "
            "TRAINING set only — not on the test set, the development set or all the data — "
            "and use it to transform every split.",
            expected="mean 0, std 1 per column", found="; ".join(problems[:4]),
            tolerance=f"atol={MEAN_ATOL:g} (mean), atol={STD_ATOL:g} (std)")


# -- Q4 ----------------------------------------------------------------------------------
# Pairs of inputs for the non-linearity probe: a model without a hidden non-linear layer
# maps the midpoint of two inputs to the midpoint of their (centred) logits.
_RNG = np.random.default_rng(1)
PAIR_A = (2.0 * _RNG.normal(size=(32, 9))).astype("float32")
PAIR_B = (2.0 * _RNG.normal(size=(32, 9))).astype("float32")
PROBE_LABELS = np.arange(len(MODEL_PROBE)) % 5
AFFINE_RTOL = 1e-3  # float32 round-off is ~1e-6 of the logits; a ReLU layer bends them by ~0.1

_MODEL_SNIPPET = """
import numpy as _np
_model = ns["build_model"]()
_all = _np.asarray(_model.predict(_np.concatenate([x, a, b, (a + b) / 2]), verbose=0))
_n, _m = len(x), len(a)
result = {"description": describe_model(_model), "outputs": _all[:_n],
          "pairs": [_all[_n:_n + _m], _all[_n + _m:_n + 2 * _m], _all[_n + 2 * _m:]]}
try:
    _logs = _model.evaluate(x, y, verbose=0, return_dict=True)
    result["evaluate_keys"] = sorted(str(_k) for _k in _logs)
except Exception as _error:
    result["evaluate_error"] = (type(_error).__name__ + ": " + str(_error))[:300]
"""


def _built_model(student) -> dict:
    _require(student, "build_model")
    if getattr(student, "cleanroom", None) is not None:
        answer = _built_model_in_clean_room(student)
    else:  # the self-check on a student's laptop: the live model
        answer = student.evaluate(_MODEL_SNIPPET, x=MODEL_PROBE, a=PAIR_A, b=PAIR_B,
                                  y=PROBE_LABELS, what="build_model()")
    if not isinstance(answer, dict) or not isinstance(answer.get("description"), dict):
        raise CheckFailed("build_model() could not be inspected; expected it to return a "
                          "compiled Keras model.")
    answer["outputs"] = as_array(answer["outputs"], "build_model()(x)")
    return answer


def _built_model_in_clean_room(student) -> dict:
    """What _MODEL_SNIPPET measures, measured where no student code ran: build_model()'s model
    is exported as data, rebuilt from Keras layers in the clean room (compiled there with its
    own loss and metrics, if they are Keras'), described and run on the same inputs."""
    from grader.keras_checks import MODEL_NAMES, TABULAR_LAYERS, export_model

    model = export_model(student, "build_model", TABULAR_LAYERS)
    description = student.cleanroom.load(model, TABULAR_LAYERS, MODEL_NAMES["build_model"])
    batches = [MODEL_PROBE, PAIR_A, PAIR_B, (PAIR_A + PAIR_B) / 2]
    outputs = np.asarray(student.cleanroom.predict(model, np.concatenate(batches)))
    n, m = len(MODEL_PROBE), len(PAIR_A)
    answer = {"description": description, "outputs": outputs[:n],
              "pairs": [outputs[n:n + m], outputs[n + m:n + 2 * m], outputs[n + 2 * m:]]}
    measured = description.get("behaviour") or {}
    if "loss_error" in measured or "metrics_error" in measured:
        answer["evaluate_error"] = measured.get("loss_error") or measured["metrics_error"]
    else:
        answer["evaluate_keys"] = ["loss", *sorted(measured.get("metrics") or {})]
    return answer


def _are_probabilities(rows: np.ndarray) -> bool:
    rows = rows.reshape(len(rows), -1)
    return bool(np.all(np.isfinite(rows)) and np.all(rows >= 0)
                and np.allclose(rows.sum(axis=1), 1.0, atol=1e-4))


def _layers_text(description: dict) -> str:
    layers = [layer for layer in description.get("layers") or []
              if isinstance(layer, dict) and layer.get("class") != "InputLayer"]
    return "[" + ", ".join(
        f"{layer.get('class')}({layer.get('units')}, {layer.get('activation')})"
        if layer.get("units") is not None else str(layer.get("class")) for layer in layers) + "]"


@check("q4.five_outputs", points=1)
def check_five_outputs(student, expected):
    """build_model() takes 9 features and outputs one value per class: shape (None, 5)."""
    answer = _built_model(student)
    description, outputs = answer["description"], answer["outputs"]
    if description.get("input_shape") not in (None, [None, 9]):
        raise CheckFailed(
            f"Q4: build_model() returns a model whose input shape is "
            f"{tuple(description['input_shape'])}; expected (None, 9). Start the model with "
            "keras.Input(shape=(9,)).")
    found = (None,) + tuple(outputs.shape[1:])
    if found != (None, 5):
        raise CheckFailed(
            f"Q4: build_model() returns a model whose output shape is {found}; expected (None, 5): "
            "one unit per class of label_mapping. Make the last layer Dense(5, ...).",
            expected="(None, 5)", found=str(found))


@check("q4.hidden_nonlinear_layer", points=1)
def check_hidden_nonlinear_layer(student, expected):
    """build_model() has a hidden layer with a non-linear activation (measured: its logits
    are not an affine function of the inputs)."""
    answer = _built_model(student)
    pairs = [as_array(p, "build_model()(x)") for p in answer["pairs"]]
    if any(p.ndim != 2 or p.shape != pairs[0].shape or not np.all(np.isfinite(p)) for p in pairs):
        raise CheckFailed("Q4: build_model()'s outputs for 32 random inputs are not finite "
                          "(n, classes) arrays; expected one score per class for each input.")
    if all(_are_probabilities(p) for p in pairs):
        # softmax outputs: their logs are the logits up to a per-row constant
        pairs = [np.log(np.clip(p.astype(np.float64), 1e-30, None)) for p in pairs]
    z_a, z_b, z_mid = (p - p.mean(axis=1, keepdims=True) for p in pairs)
    bend = float(np.max(np.abs(z_mid - (z_a + z_b) / 2)))
    scale = max(1.0, float(np.max(np.abs(np.concatenate([z_a, z_b, z_mid])))))
    if bend <= AFFINE_RTOL * scale:
        raise CheckFailed(
            f"Q4: build_model() returns a linear model: its logits are an affine function of "
            f"the 9 inputs (for 32 pairs of inputs the logits of their midpoint are the midpoint "
            f"of their logits, within {bend:.1e}), so it has no hidden layer with a non-linear "
            f"activation. Its layers: {_layers_text(answer['description'])}. Expected one or "
            "more hidden Dense layers with a non-linear activation before the output layer, "
            "e.g. keras.layers.Dense(64, activation='relu'). (This is Q4's mistake: training "
            "longer in Q5 does not fix it.)",
            expected="a hidden non-linear layer", found="an affine model")


@check("q4.softmax_or_logits_loss", points=1)
def check_softmax_or_logits_loss(student, expected):
    """The model is compiled: sparse categorical cross-entropy matching its outputs (softmax,
    or logits with from_logits=True), an optimizer, and metrics=["accuracy"]."""
    answer = _built_model(student)
    description, outputs = answer["description"], answer["outputs"]
    if not description.get("compiled") or description.get("loss") is None:
        raise CheckFailed(
            "Q4: build_model() returns a model that is not compiled (no optimizer or loss); "
            "expected a compiled model. Call model.compile(optimizer=..., "
            "loss='sparse_categorical_crossentropy', metrics=['accuracy']) inside build_model "
            "and return the model.")
    loss = description["loss"]
    name = str(loss.get("name") or "")
    if "sparse_categorical_crossentropy" not in name:
        raise CheckFailed(
            f"Q4: build_model() compiles the model with loss {name!r}; expected sparse categorical "
            "cross-entropy (the labels are integer class ids 0-4). Use "
            "loss='sparse_categorical_crossentropy'.", expected="sparse_categorical_crossentropy",
            found=name)
    rows = outputs.reshape(len(outputs), -1)
    probabilities = _are_probabilities(rows)
    from_logits = bool(loss.get("from_logits"))
    if probabilities and from_logits:
        raise CheckFailed(
            "Q4: The model's outputs are already probabilities (a softmax) but the loss has "
            "from_logits=True, so softmax is applied twice; expected one or the other. Either "
            "keep activation='softmax' and use loss='sparse_categorical_crossentropy', or "
            "remove the softmax and keep from_logits=True.")
    if not probabilities and not from_logits:
        raise CheckFailed(
            "Q4: The model's outputs are not probabilities (rows of build_model()(x) do not sum "
            f"to 1 or are negative, e.g. {short_repr(rows[0])}) but the loss expects probabilities "
            "(from_logits=False); expected a softmax output or from_logits=True. Give the last "
            "Dense(5) layer activation='softmax', or compile with "
            "keras.losses.SparseCategoricalCrossentropy(from_logits=True).")
    if "evaluate_error" in answer:
        raise CheckFailed(
            f"Q4: model.evaluate(x, y) on the compiled model of build_model() raised "
            f"{short_repr(answer['evaluate_error'])}; expected it to return the loss and the "
            "accuracy. Compile with metrics=['accuracy'].")
    keys = [str(k) for k in answer.get("evaluate_keys") or []]
    if not any("acc" in key for key in keys):
        raise CheckFailed(
            f"Q4: build_model() compiles the model without an accuracy metric: model.evaluate "
            f"returns only {keys}; expected the loss and the accuracy (Q5's evaluation cell "
            "unpacks both). Add metrics=['accuracy'] to model.compile(...).",
            expected="metrics=['accuracy']", found=str(keys))
