"""Clean-room model evaluation (grader.cleanroom): what a model exported from the student's
kernel must be before it is rebuilt, and that the rebuild happens with Keras' own classes.

The validation tests use hand-written configs in Keras 3's serialised layout (fast, no
TensorFlow); the end-to-end ones rebuild real models in a real clean-room kernel."""

from __future__ import annotations

import copy
import json

import numpy as np
import pytest

from grader import data
from grader.cleanroom import (CNN_LAYERS, MAX_CONFIG_DEPTH, MAX_WEIGHT_BYTES, MLP_LAYERS,
                              ModelRefused, same_architecture, validate_export)
from grader.keras_checks import flag_for_review, review_threshold


def _policy():
    return {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"},
            "registered_name": None}


def _dense(name, units, activation, module="keras.layers", class_name="Dense",
           registered=None):
    return {"module": module, "class_name": class_name, "registered_name": registered,
            "config": {"name": name, "trainable": True, "dtype": _policy(), "units": units,
                       "activation": activation, "use_bias": True,
                       "kernel_initializer": {"module": "keras.initializers",
                                              "class_name": "GlorotUniform",
                                              "config": {"seed": None},
                                              "registered_name": None}},
            "build_config": {"input_shape": [None, 784]}}


def _sequential(*layers, name="sequential", loss="sparse_categorical_crossentropy"):
    config = {"module": "keras", "class_name": "Sequential", "registered_name": None,
              "config": {"name": name, "trainable": True, "dtype": _policy(), "layers": [
                  {"module": "keras.layers", "class_name": "InputLayer", "registered_name": None,
                   "config": {"batch_shape": [None, 28, 28], "dtype": "float32",
                              "name": "input_layer"}},
                  {"module": "keras.layers", "class_name": "Flatten", "registered_name": None,
                   "config": {"name": "flatten", "dtype": _policy()}},
                  *layers]},
              "build_config": {"input_shape": [None, 28, 28]}}
    if loss is not None:
        config["compile_config"] = {"optimizer": {"module": "keras.optimizers",
                                                  "class_name": "Adam", "config": {}},
                                    "loss": loss, "metrics": ["accuracy"]}
    return config


def _export(config, weights=None):
    weights = [np.zeros((784, 8), np.float32), np.zeros(8, np.float32)] \
        if weights is None else weights
    return {"type": "keras.src.models.sequential.Sequential", "config": json.dumps(config),
            "weights": weights}


def _valid():
    return _sequential(_dense("dense", 8, "relu"), _dense("dense_1", 10, "softmax"))


def test_a_plain_sequential_is_accepted_with_its_compile_facts():
    model = validate_export(_export(_valid()), allowed=MLP_LAYERS, what="`model`")
    assert model.layer_classes == ("InputLayer", "Flatten", "Dense", "Dense")
    assert model.loss == {"name": "sparse_categorical_crossentropy", "from_logits": False}
    assert model.optimizer == "Adam" and model.compiled
    assert "compile_config" not in model.config  # never deserialised in the clean room


def test_a_loss_object_reports_from_logits():
    loss = {"module": "keras.losses", "class_name": "SparseCategoricalCrossentropy",
            "config": {"name": "sparse_categorical_crossentropy", "from_logits": True}}
    model = validate_export(_export(_sequential(_dense("d", 10, "linear"), loss=loss)),
                            allowed=MLP_LAYERS, what="`model`")
    assert model.loss == {"name": "sparse_categorical_crossentropy", "from_logits": True}


@pytest.mark.parametrize("layer,found", [
    ({"module": "keras.layers", "class_name": "Lambda", "registered_name": None,
      "config": {"name": "lambda", "function": {"class_name": "__lambda__", "config": {
          "code": "4wEAAAAAAAAA", "defaults": None, "closure": None}}}}, "`Lambda`"),
    (_dense("dense", 10, "relu", module="__main__", registered="Custom>Dense"),
     "`Dense` (module `__main__`, registered as `Custom>Dense`)"),
    (_dense("dense", 10, "relu", registered="MyDense"), "registered as `MyDense`"),
    (_dense("conv", 10, "relu", class_name="Conv2D"), "`Conv2D`"),  # not in the MLP's list
    (_dense("dense", 10, {"module": "__main__", "class_name": "function",
                          "config": "cheat", "registered_name": "cheat"}),
     "activation"),
    (_dense("dense", 10**9, "relu"), "units=1000000000"),
])
def test_layers_outside_the_allow_list_are_refused(layer, found):
    config = _sequential(_dense("dense", 8, "relu"), layer)
    with pytest.raises(ModelRefused, match="uses objects the grader does not rebuild") as info:
        validate_export(_export(config), allowed=MLP_LAYERS, what="`model`")
    assert found in info.value.message
    assert "Lambda" in info.value.message  # says what to avoid


def test_tensorflow_activation_functions_are_rebuilt_as_keras_ones():
    tf_softmax = {"module": "builtins", "class_name": "function", "config": "softmax_v2",
                  "registered_name": "function"}
    config = _sequential(_dense("dense", 8, "relu"), _dense("dense_1", 10, tf_softmax))
    model = validate_export(_export(config), allowed=MLP_LAYERS, what="`model`")
    assert model.config["config"]["layers"][-1]["config"]["activation"] == "softmax"
    other = {**tf_softmax, "config": "my_lookup"}
    with pytest.raises(ModelRefused, match="activation"):
        validate_export(_export(_sequential(_dense("d", 10, other))), allowed=MLP_LAYERS,
                        what="`model`")


def test_a_custom_initializer_inside_an_allowed_layer_is_refused():
    config = _valid()
    layer = config["config"]["layers"][2]
    layer["config"]["kernel_initializer"] = {"module": "__main__", "class_name": "Lookup",
                                             "config": {}, "registered_name": "Lookup"}
    with pytest.raises(ModelRefused, match="`Lookup` \\(module `__main__`\\)"):
        validate_export(_export(config), allowed=MLP_LAYERS, what="`model`")


@pytest.mark.parametrize("container", [
    {"module": "__main__", "class_name": "Cheat", "registered_name": "Cheat"},
    {"module": "keras", "class_name": "Sequential", "registered_name": "Custom>Sequential"},
    {"module": "keras.layers", "class_name": "Dense", "registered_name": None},
])
def test_subclassed_or_unknown_containers_are_refused(container):
    config = {**_valid(), **container}
    with pytest.raises(ModelRefused, match="Subclassed models are not accepted"):
        validate_export(_export(config), allowed=MLP_LAYERS, what="`model`")


@pytest.mark.parametrize("found,message", [
    ({"type": "sklearn.svm.SVC", "not_a_model": True}, "is a sklearn.svm.SVC, not a Keras model"),
    ({"type": "x", "config": "{not json", "weights": []}, "is not valid JSON"),
    ({"type": "x", "config": "x" * 2_000_000, "weights": []}, "at most 1,000,000 characters"),
    ({"type": "x", "config": "{}", "weights": [np.array(["a"])]}, "other than numeric arrays"),
    ({"type": "x", "config": "{}", "weights": [np.zeros(MAX_WEIGHT_BYTES // 4 + 1, np.float32)]},
     "more than 64 MB"),
    ({"type": "x", "config": "[" * (MAX_CONFIG_DEPTH + 5) + "]" * (MAX_CONFIG_DEPTH + 5),
      "weights": []}, "nested too deeply"),
    ("a string", "malformed"),
])
def test_malformed_or_oversized_exports_are_refused(found, message):
    with pytest.raises(ModelRefused, match=message):
        validate_export(found, allowed=MLP_LAYERS, what="`model`")


def test_same_architecture_ignores_names_and_weights_not_units():
    a = validate_export(_export(_valid()), allowed=MLP_LAYERS, what="a")
    renamed = _sequential(_dense("dense_7", 8, "relu"), _dense("dense_8", 10, "softmax"),
                          name="sequential_3")
    b = validate_export(_export(renamed, [np.ones((784, 8), np.float32),
                                          np.ones(8, np.float32)]),
                        allowed=MLP_LAYERS, what="b")
    wider = _sequential(_dense("dense", 512, "relu"), _dense("dense_1", 10, "softmax"))
    c = validate_export(_export(wider), allowed=MLP_LAYERS, what="c")
    assert same_architecture(a, b)
    assert not same_architecture(a, c)
    assert a.digest != b.digest  # different weights: a different model in the clean room


def test_a_sequential_without_input_equals_itself_once_trained():
    built = _valid()
    unbuilt = copy.deepcopy(built)
    del unbuilt["build_config"]
    unbuilt["config"]["layers"] = unbuilt["config"]["layers"][1:]  # no InputLayer yet
    for layer in unbuilt["config"]["layers"]:
        layer.pop("build_config", None)
    a = validate_export(_export(built), allowed=MLP_LAYERS, what="a")
    b = validate_export(_export(unbuilt, []), allowed=MLP_LAYERS, what="b")
    assert same_architecture(a, b)


def test_functional_graph_references_are_compared_by_position():
    def functional(prefix):
        names = [f"{prefix}in", f"{prefix}d"]
        return {"module": "keras.src.models.functional", "class_name": "Functional",
                "registered_name": "Functional", "config": {
                    "name": f"{prefix}model", "trainable": True,
                    "layers": [
                        {"module": "keras.layers", "class_name": "InputLayer",
                         "registered_name": None, "name": names[0],
                         "config": {"batch_shape": [None, 9], "name": names[0]},
                         "inbound_nodes": []},
                        {**copy.deepcopy(_dense(names[1], 5, "softmax")), "name": names[1],
                         "inbound_nodes": [{"args": [{"class_name": "__keras_tensor__",
                                                      "config": {"shape": [None, 9],
                                                                 "keras_history":
                                                                     [names[0], 0, 0]}}],
                                            "kwargs": {}}]}],
                    "input_layers": [names[0], 0, 0], "output_layers": [names[1], 0, 0]}}

    a = validate_export(_export(functional("a_"), []), allowed=MLP_LAYERS, what="a")
    b = validate_export(_export(functional("b_"), []), allowed=MLP_LAYERS, what="b")
    assert same_architecture(a, b)


def test_cnn_layers_are_allowed_in_the_cnn_practical_only():
    config = _sequential(_dense("conv", 8, "relu", class_name="Conv2D"))
    validate_export(_export(config), allowed=CNN_LAYERS, what="`model`")
    with pytest.raises(ModelRefused):
        validate_export(_export(config), allowed=MLP_LAYERS, what="`model`")


def test_private_holdout_is_disjoint_from_what_students_get_and_perturbed_per_seed():
    (x_train, _), (x_dev, y_dev) = data.mnist_public()
    images, labels = data.mnist_holdout()
    assert len(x_dev) == len(images) == data.MNIST_DEV
    public = {img.tobytes() for img in np.concatenate([x_train, x_dev])}
    assert not any(img.tobytes() in public for img in images)
    with np.load(data.mnist_npz()) as cached:
        assert np.array_equal(cached["x_test"], x_dev) and np.array_equal(cached["y_test"], y_dev)
    a, b = data.perturb_images(images, 1), data.perturb_images(images, 2)
    assert np.array_equal(a, data.perturb_images(images, 1))
    assert not np.array_equal(a, b)
    # Exact lookups fail: almost every image differs from its original somewhere...
    assert all(not np.array_equal(p, o) for p, o in zip(a, images, strict=True))
    # ...while the pixels move little.
    assert np.abs(a.astype(int) - images.astype(int)).mean() < 8


def test_a_result_far_above_the_reference_is_flagged_not_failed():
    from grader.compare import Band

    band = Band(metric="test_accuracy", low=0.88, reference_values=(0.90, 0.91, 0.905))
    assert review_threshold(band) == pytest.approx(0.94)
    assert "review" not in flag_for_review({"value": 0.93}, band)
    flagged = flag_for_review({"value": 0.995}, band)
    assert flagged["review_above"] == pytest.approx(0.94)
    assert "trained on the graded data" in flagged["review"]


def test_the_dashboard_lists_results_flagged_for_review(tmp_path):
    from grader.reports import write_dashboard
    from grader.results import CheckResult, Status, SubmissionResult

    def result(student, metric):
        check = CheckResult(id="q3.test_accuracy", question="q3", points=2, score=2,
                            passed=True, hidden=True, message="", metric=metric)
        return SubmissionResult(student_id=student, assignment="mlp", status=Status.OK,
                                message="", score=2, max_score=2, checks=(check,))

    band = {"name": "test_accuracy", "low": 0.88, "high": None, "reference": [0.9, 0.91]}
    page = write_dashboard([
        result("honest", {**band, "value": 0.9}),
        result("suspicious", {**band, "value": 0.999, "review": "0.9990 is above 0.9400"}),
    ], tmp_path).read_text()
    assert 'id="reviews"' in page and "0.9990 is above 0.9400" in page
    reviews = page[page.index('id="reviews"'):page.index("</table>", page.index('id="reviews"'))]
    assert "suspicious" in reviews and "honest" not in reviews


def test_the_graded_model_reuses_build_models_rebuild_for_its_weights():
    """One deserialisation per architecture: build_model()'s model (described for the public
    checks) takes the global model's weights instead of a second rebuild."""
    from grader.cleanroom import PREDICT, REBUILD, REWEIGHT, CleanRoom

    class FakeCleanKernel:
        def __init__(self):
            self.calls = []

        def evaluate(self, code, **inputs):
            self.calls.append(code)
            if code == REBUILD:
                return {"description": {"layers": []} if inputs["describe"] else None}
            if code == REWEIGHT:
                return {"description": None}
            if code == PREDICT:
                return np.zeros((2, 10))
            raise AssertionError(code)

    kernel = FakeCleanKernel()
    room = CleanRoom(lambda: kernel)
    built = validate_export(_export(_valid()), allowed=MLP_LAYERS, what="built")
    trained = validate_export(_export(_valid(), [np.ones((784, 8), np.float32),
                                                 np.ones(8, np.float32)]),
                              allowed=MLP_LAYERS, what="model")
    assert room.load(built, MLP_LAYERS, "built")["loss"]["name"] == \
        "sparse_categorical_crossentropy"
    assert room.load(trained, MLP_LAYERS, "model", describe=False, like=built) is None
    assert room.predict(trained, np.zeros((2, 28, 28))).shape == (2, 10)
    assert kernel.calls == [REBUILD, REWEIGHT, PREDICT]
    with pytest.raises(RuntimeError, match="load"):  # its weights now belong to `trained`
        room.predict(built, np.zeros((2, 28, 28)))
    assert room.load(built, MLP_LAYERS, "built")["layers"] == []  # description still cached
    assert kernel.calls == [REBUILD, REWEIGHT, PREDICT]


def _nested_block(*layers):
    """A hidden block built as its own Sequential (a helper that returns one), as Keras 3
    serialises it inside the outer model."""
    return {"module": "keras", "class_name": "Sequential", "registered_name": None,
            "config": {"name": "block", "trainable": True, "dtype": _policy(),
                       "layers": list(layers)}}


def test_a_nested_block_of_allowed_layers_is_accepted_and_its_layers_listed():
    config = _sequential(_nested_block(_dense("hidden", 8, "relu")), _dense("out", 10, "softmax"))
    model = validate_export(_export(config, [np.zeros((784, 8), np.float32),
                                             np.zeros(8, np.float32),
                                             np.zeros((8, 10), np.float32),
                                             np.zeros(10, np.float32)]),
                            allowed=MLP_LAYERS, what="build_model()")
    assert model.layer_classes == ("InputLayer", "Flatten", "Dense", "Dense")


def test_a_nested_block_is_checked_like_the_model():
    lambda_layer = {"module": "keras.layers", "class_name": "Lambda", "registered_name": None,
                    "config": {"name": "lookup"}}
    config = _sequential(_nested_block(lambda_layer), _dense("out", 10, "softmax"))
    with pytest.raises(ModelRefused, match="Lambda"):
        validate_export(_export(config), allowed=MLP_LAYERS, what="build_model()")
    spoofed = _nested_block(_dense("hidden", 8, "relu"))
    spoofed["module"] = "__main__"
    with pytest.raises(ModelRefused, match="__main__"):
        validate_export(_export(_sequential(spoofed)), allowed=MLP_LAYERS, what="build_model()")
