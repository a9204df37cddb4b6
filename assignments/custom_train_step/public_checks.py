"""Public checks for custom_train_step: the architecture and what one step must do.

Students have this file. Run them in your notebook with ``grader.check("q1")``.

When your instructor grades (``student.grading`` is set, with a clean kernel), nothing
these checks award is computed in your notebook's kernel: Q1 and Q2 run your class and
``build_model`` on their own in a new kernel where nothing else of the notebook ran
(:mod:`grader.clean_class`), on weights and images drawn at grading time, and Q3 takes
only the trained weights of `model` and measures them in the grader. The self-check in
your notebook runs the same checks in your kernel.
"""

import numpy as np

from grader.checks import check
from grader.clean_class import BUILD, clean_build_model_student, clean_class_student
from grader.compare import assert_equal, assert_shape
from grader.errors import CheckFailed

WEIGHT_SHAPES = [[784, 64], [64], [64], [64], [64], [64], [64, 10], [10]]
LAYERS = ["Flatten", "Dense", "BatchNormalization", "Dense"]


def _batch(size=16):
    """A small deterministic batch of images in [0, 1] with labels 0..9."""
    grid = np.linspace(0.0, 1.0, 28 * 28, dtype=np.float32).reshape(28, 28)
    x = np.stack([(grid * (k + 1)) % 1.0 for k in range(size)]).astype(np.float32)
    return x, (np.arange(size) % 10).astype(np.int64)


STEP_CODE = """
import numpy as np
import keras
model = ns["build_model"]()
if not model.weights:
    model(np.zeros((1, 28, 28), "float32"), training=False)
model.compile(optimizer=keras.optimizers.SGD(learning_rate=0.1),
              loss="sparse_categorical_crossentropy")
before = [np.array(w) for w in model.get_weights()]
logs = getattr(model, step)((x, y))
after = [np.array(w) for w in model.get_weights()]
result = {
    "logs": {str(k): float(v) for k, v in dict(logs).items()} if isinstance(logs, dict) else None,
    "logs_type": type(logs).__name__,
    "changed": [bool(np.any(a != b)) for a, b in zip(before, after)],
    "shapes": [list(np.shape(w)) for w in after],
}
"""


def _clean(student):
    """The submission's grading context in a graded run with a clean kernel, else None."""
    grading = getattr(student, "grading", None)
    return grading if grading is not None and grading.clean_kernel is not None else None


def _drawn_weights(r):
    """Weights of the Q2 model drawn at grading time (moving averages included)."""
    init = [r.normal(size=(784, 64)) * 0.05, r.normal(size=64) * 0.05,
            1.0 + r.normal(size=64) * 0.1, r.normal(size=64) * 0.1,
            r.normal(size=64) * 0.2, 0.5 + r.uniform(size=64),
            r.normal(size=(64, 10)) * 0.2, r.normal(size=10) * 0.05]
    return [np.asarray(w, dtype=np.float32) for w in init]


CLEAN_STEP = BUILD + """
if ready:
    result["logs"] = as_logs(getattr(model, step)((x0, y0)))
    result["weights"] = weights_of(model)
"""


def _clean_step(grading, step):
    """Graded: ``step`` of the student's class, run alone in the clean kernel on the model
    of Q2 with weights and a batch drawn at grading time; what changed is computed here."""
    kernel_student, definition = clean_class_student(grading)
    r = grading.rng(f"custom_train_step.public.{step}")
    weights = _drawn_weights(r)
    x = r.uniform(0.0, 1.0, (16, 28, 28)).astype(np.float32)
    y = r.integers(0, 10, size=16).astype(np.int64)
    out = kernel_student.evaluate(
        CLEAN_STEP, what=f"model.{step}((x, y)) on the model of Q2 built around "
                         f"{definition.name}",
        weights=weights, learning_rate=0.1, loss="sparse_categorical_crossentropy",
        class_name=definition.name, defines_call=definition.defines_call, x0=x, y0=y,
        step=step)
    shapes = out.get("shapes") if isinstance(out, dict) else None
    if shapes != WEIGHT_SHAPES:
        raise CheckFailed(
            f"The model of Q2 built around {definition.name} has weights of shapes "
            f"{[tuple(s) for s in shapes] if isinstance(shapes, list) else shapes}; expected "
            f"{[tuple(s) for s in WEIGHT_SHAPES]}. Build exactly the architecture of Q2.")
    logs = out.get("logs")
    if not isinstance(logs, dict) or "__type__" in logs or \
            not all(isinstance(v, float) for v in logs.values()):
        found = logs.get("__type__") if isinstance(logs, dict) else None
        logs_type, logs = str(found or "no dict"), None
    else:
        logs_type = "dict"
    after = out.get("weights")
    if not isinstance(after, list) or len(after) != len(weights):
        raise CheckFailed(f"The model's weights could not be read after {step}; expected 8 "
                          "arrays.")
    after = [assert_shape(a, w.shape, what=f"weight {i} after {step}")
             for i, (a, w) in enumerate(zip(after, weights, strict=True))]
    changed = [bool(np.any(np.asarray(a, dtype=np.float64) != w.astype(np.float64)))
               for a, w in zip(after, weights, strict=True)]
    return {"logs": logs, "logs_type": logs_type, "changed": changed, "shapes": shapes}


def _step(student, step):
    grading = _clean(student)
    if grading is not None:
        out = _clean_step(grading, step)
    else:
        x, y = _batch()
        out = student.evaluate(STEP_CODE, what=f"model.{step}((x, y)) on a fresh build_model()",
                               x=x, y=y, step=step)
    if out["shapes"] != WEIGHT_SHAPES:
        raise CheckFailed(
            f"build_model() gives weights of shapes {[tuple(s) for s in out['shapes']]}; expected "
            f"{[tuple(s) for s in WEIGHT_SHAPES]}. Build exactly the architecture of Q2.")
    logs = out["logs"]
    if logs is None or not {"loss", "accuracy"} <= set(logs):
        found = sorted(logs) if logs is not None else out["logs_type"]
        raise CheckFailed(
            f"{step} returned {found}; expected a dict with the keys 'loss' and 'accuracy'. "
            'Return {"loss": self.loss_tracker.result(), "accuracy": '
            "self.accuracy_tracker.result()}.")
    if not all(np.isfinite(v) for v in logs.values()):
        raise CheckFailed(f"{step} returned non-finite logs {logs}; expected finite numbers.")
    return out


@check("q1.train_step_updates_weights", points=1)
def check_train_step_updates_weights(student, expected):
    """One train_step returns loss and accuracy, moves every trainable weight and BN's moving averages."""
    out = _step(student, "train_step")
    names = ["Dense(64) kernel", "Dense(64) bias", "BatchNormalization gamma",
             "BatchNormalization beta", "Dense(10) kernel", "Dense(10) bias"]
    trainable = [out["changed"][i] for i in (0, 1, 2, 3, 6, 7)]
    frozen = [name for name, moved in zip(names, trainable, strict=True) if not moved]
    if frozen:
        raise CheckFailed(
            f"After one train_step these weights did not change: {', '.join(frozen)}; expected "
            "every trainable weight to move. Take tape.gradient(loss, self.trainable_variables) "
            "and apply it with self.optimizer.apply_gradients(zip(gradients, "
            "self.trainable_variables)).")
    if not (out["changed"][4] and out["changed"][5]):
        raise CheckFailed(
            "After one train_step the BatchNormalization moving mean and variance did not "
            "change; expected them to be updated, which happens only in training mode. Call "
            "the model as self(x, training=True) inside train_step.")


@check("q1.test_step_changes_nothing", points=1)
def check_test_step_changes_nothing(student, expected):
    """test_step returns loss and accuracy and changes no weight (moving averages included)."""
    out = _step(student, "test_step")
    if any(out["changed"]):
        raise CheckFailed(
            f"test_step changed {sum(out['changed'])} of the model's 8 weight arrays; expected "
            "none to change. Run the model with self(x, training=False) and do not apply "
            "gradients in test_step.")


ARCHITECTURE_CODE = """
import numpy as np
import keras
model = ns["build_model"]()
if not model.weights:
    model(np.zeros((1, 28, 28), "float32"), training=False)
result = describe_model(model)
result["train_step_owner"] = type(model).train_step.__qualname__.split(".")[0]
result["test_step_owner"] = type(model).test_step.__qualname__.split(".")[0]
result["call_shape"] = list(np.shape(model(np.zeros((2, 28, 28), "float32"), training=False)))
try:  # nested layers too (a subclassed model's attributes)
    _layers = list(model._flatten_layers(include_self=False))
except Exception:
    _layers = list(getattr(model, "layers", []))
_norms = [layer.get_config() for layer in _layers
          if isinstance(layer, keras.layers.BatchNormalization)]
result["batchnorm"] = [{k: _c.get(k) for k in ("momentum", "epsilon", "center", "scale")}
                       for _c in _norms]
_optimizer = getattr(model, "optimizer", None)
result["optimizer_class"] = type(_optimizer).__name__ if _optimizer is not None else None
try:
    result["learning_rate"] = float(np.asarray(_optimizer.learning_rate))
except Exception:
    result["learning_rate"] = None
"""
LEARNING_RATE = 1e-3

# Graded: build_model() run alone in the clean kernel. Layers are named by their class's
# identity with Keras' own (a subclass or a look-alike named "Dense" is not a Dense), the
# optimizer and loss are read from what Keras' compile stored on the model, and the model
# is run on weights and images drawn at grading time (compared with NumPy here).
CLEAN_ARCHITECTURE = """
import numpy as np
import keras
pinned = ns["_grader_pinned"]
model = ns["build_model"]()
result = {"class": type(model).__name__[:100]}
if isinstance(model, keras.Model):
    cls = type(model)
    result["is_class"] = cls is ns[class_name]
    result["own_steps"] = {s: s in vars(ns[class_name]) for s in ("train_step", "test_step")}
    if not pinned["get_weights"](model):
        model(np.zeros((1, 28, 28), "float32"), training=False)
    result["shapes"] = [list(np.shape(w)) for w in pinned["get_weights"](model)]
    kinds = {keras.layers.Flatten: "Flatten", keras.layers.Dense: "Dense",
             keras.layers.BatchNormalization: "BatchNormalization"}
    activations = {keras.activations.relu: "relu", keras.activations.softmax: "softmax",
                   keras.activations.linear: "linear"}
    layers = []
    for layer in keras.Model._flatten_layers(model, include_self=False):
        if type(layer) is keras.layers.InputLayer:
            continue
        kind = kinds.get(type(layer))
        found = {"class": kind or "an unexpected layer class " + type(layer).__name__[:80]}
        if kind == "Dense":
            found["units"] = int(layer.units)
            found["activation"] = activations.get(layer.activation, "another activation")
        elif kind == "BatchNormalization":
            found["batchnorm"] = {"momentum": float(layer.momentum),
                                  "epsilon": float(layer.epsilon),
                                  "center": bool(layer.center), "scale": bool(layer.scale)}
        layers.append(found)
    result["layers"] = layers
    optimizer = vars(model).get("optimizer")
    result["optimizer_class"] = type(optimizer).__name__[:100] if optimizer is not None else None
    result["optimizer_is_adam"] = type(optimizer) is keras.optimizers.Adam
    try:
        result["learning_rate"] = float(np.asarray(optimizer.learning_rate))
    except Exception:
        result["learning_rate"] = None
    loss = vars(model).get("loss")
    if isinstance(loss, str):
        result["loss"] = {"name": loss, "from_logits": False}
    elif loss is keras.losses.sparse_categorical_crossentropy:
        result["loss"] = {"name": "sparse_categorical_crossentropy", "from_logits": False}
    elif type(loss) is keras.losses.SparseCategoricalCrossentropy:
        result["loss"] = {"name": "sparse_categorical_crossentropy",
                          "from_logits": bool(loss.get_config().get("from_logits"))}
    elif loss is not None:
        result["loss"] = {"name": type(loss).__name__[:100], "from_logits": False}
    else:
        result["loss"] = None
    if result["shapes"] == [list(np.shape(w)) for w in weights]:
        pinned["set_weights"](model, weights)
        result["outputs"] = np.asarray(model(x, training=False), dtype="float64")
"""


def _forward(weights, x):
    """The Q2 model in inference mode (NumPy, float64): the probabilities."""
    W1, b1, gamma, beta, moving_mean, moving_var, W2, b2 = [np.asarray(w, np.float64)
                                                              for w in weights]
    h = np.maximum(x.reshape(len(x), -1).astype(np.float64) @ W1 + b1, 0.0)
    a = gamma * (h - moving_mean) / np.sqrt(moving_var + 1e-3) + beta
    logits = a @ W2 + b2
    probs = np.exp(logits - logits.max(axis=1, keepdims=True))
    return probs / probs.sum(axis=1, keepdims=True)


def _clean_architecture(grading):
    """Graded: the description of build_model()'s model, built in the clean kernel, in the
    shape of the self-check's (plus ``outputs_match``)."""
    kernel_student, definition = clean_build_model_student(grading)
    r = grading.rng("custom_train_step.public.architecture")
    weights = _drawn_weights(r)
    x = r.uniform(0.0, 1.0, (4, 28, 28)).astype(np.float32)
    info = kernel_student.evaluate(CLEAN_ARCHITECTURE, what="build_model()", weights=weights,
                                   x=x, class_name=definition.name)
    if not isinstance(info, dict) or not isinstance(info.get("class"), str):
        raise CheckFailed("build_model() could not be described; expected a CustomModel.")
    if "is_class" not in info:
        raise CheckFailed(f"build_model() returned a {info['class']}; expected a compiled "
                          "CustomModel. Create it with CustomModel(inputs, outputs).")
    if not info["is_class"]:
        raise CheckFailed(f"build_model() returned a {info['class']}; expected a "
                          f"{definition.name}. Create it with {definition.name}(inputs, "
                          "outputs).")
    own = info.get("own_steps") if isinstance(info.get("own_steps"), dict) else {}
    layers = info.get("layers") if isinstance(info.get("layers"), list) else []
    norms = [layer.get("batchnorm") for layer in layers
             if isinstance(layer, dict) and isinstance(layer.get("batchnorm"), dict)]
    outputs = info.get("outputs")
    if info.get("shapes") != WEIGHT_SHAPES or outputs is None:
        matches = None  # the layers' checks below say what differs
    else:
        outputs = assert_shape(outputs, (len(x), 10), what="build_model()'s output for 4 images")
        matches = bool(np.allclose(outputs, _forward(weights, x), rtol=1e-4, atol=1e-5))
    return {
        "class": "CustomModel" if definition.name == "CustomModel" else info["class"],
        "train_step_owner": "CustomModel" if own.get("train_step") else "keras.Model",
        "test_step_owner": "CustomModel" if own.get("test_step") else "keras.Model",
        "layers": [layer for layer in layers if isinstance(layer, dict)],
        "batchnorm": norms,
        "call_shape": [len(x), 10] if matches is not None else [],
        "outputs_match": matches,
        "compiled": info.get("optimizer_class") is not None,
        "loss": info.get("loss") if isinstance(info.get("loss"), dict) else None,
        "optimizer_class": "Adam" if info.get("optimizer_is_adam") is True else
                           (info.get("optimizer_class") if info.get("optimizer_class") != "Adam"
                            else "Adam (a class of its own, not keras.optimizers.Adam)"),
        "learning_rate": info.get("learning_rate")
                         if isinstance(info.get("learning_rate"), float) else None,
    }


@check("q2.architecture", points=2)
def check_architecture(student, expected):
    """build_model() returns a CustomModel: Flatten, Dense(64, relu), BatchNormalization,
    Dense(10, softmax), compiled with Adam(learning_rate=1e-3) and sparse categorical
    cross-entropy."""
    grading = _clean(student)
    if grading is not None:
        info = _clean_architecture(grading)
    else:
        info = student.evaluate(ARCHITECTURE_CODE, what="build_model()")
    if info["class"] != "CustomModel":
        raise CheckFailed(f"build_model() returned a {info['class']}; expected a CustomModel. "
                          "Create it with CustomModel(inputs, outputs).")
    for step in ("train_step", "test_step"):
        if info[f"{step}_owner"] != "CustomModel":
            raise CheckFailed(f"CustomModel does not define its own {step} (it uses "
                              f"{info[f'{step}_owner']}.{step}); expected CustomModel.{step}. "
                              f"Define `def {step}(self, data):` in the class.")
    layers = [layer for layer in info["layers"] if layer["class"] != "InputLayer"]
    assert_equal([layer["class"] for layer in layers], LAYERS, what="the model's layers",
                 fix="Use exactly Flatten, Dense(64, 'relu'), BatchNormalization, "
                     "Dense(10, 'softmax'), in this order.")
    assert_equal([layers[1]["units"], layers[1]["activation"]], [64, "relu"],
                 what="units and activation of the first Dense layer",
                 fix="Use keras.layers.Dense(64, activation='relu').")
    assert_equal([layers[3]["units"], layers[3]["activation"]], [10, "softmax"],
                 what="units and activation of the last Dense layer",
                 fix="A 10-class classifier ends in keras.layers.Dense(10, activation='softmax').")
    defaults = {"momentum": 0.99, "epsilon": 0.001, "center": True, "scale": True}
    changed = {k: v for norm in info.get("batchnorm") or [] for k, v in norm.items()
               if k in defaults and v != defaults[k]}
    if changed:
        raise CheckFailed(
            f"Q2: the BatchNormalization layer has {changed}; expected its defaults "
            f"({defaults}), as the architecture table asks. Use keras.layers.BatchNormalization() "
            "without arguments.", expected=str(defaults), found=str(changed))
    if "outputs_match" in info:  # graded: the model ran on weights and images drawn now
        if info["outputs_match"] is not True:
            raise CheckFailed(
                "Q2: build_model()'s model, with weights and images drawn at grading time, "
                "does not compute Flatten -> Dense(64, relu) -> BatchNormalization -> "
                "Dense(10, softmax) (checked against the grader's own computation). Connect "
                "the layers in this order, each on the previous one's output.")
    else:
        assert_equal(tuple(info["call_shape"]), (2, 10), what="the output shape for 2 images",
                     fix="The model must map (N, 28, 28) images to (N, 10) probabilities.")
    if not info["compiled"]:
        raise CheckFailed("build_model() returned a model that is not compiled; expected a "
                          "compiled one. Call model.compile(optimizer=..., loss=...) before "
                          "returning it.")
    loss = info["loss"] or {}
    if loss.get("name") != "sparse_categorical_crossentropy" or loss.get("from_logits"):
        raise CheckFailed(f"Q2: the model is compiled with loss {loss or None}; expected "
                          "'sparse_categorical_crossentropy' (the labels are integers and the "
                          "model outputs probabilities).")
    optimizer, rate = info.get("optimizer_class"), info.get("learning_rate")
    if optimizer != "Adam" or rate is None or not np.isclose(rate, LEARNING_RATE, rtol=1e-6,
                                                              atol=0):
        found = f"{optimizer} with learning_rate={rate:g}" if "(" in str(optimizer) else \
            f"{optimizer}(learning_rate={rate:g})" if rate is not None else str(optimizer)
        raise CheckFailed(
            f"Q2: build_model() compiles the model with the optimizer {found}; expected "
            "Adam(learning_rate=1e-3), as the question asks. Compile with "
            "optimizer=keras.optimizers.Adam(learning_rate=1e-3) (optimizer='adam' has the same "
            "default learning rate).", expected="Adam(learning_rate=0.001)", found=found)


HISTORY_CODE = """
import numpy as np
_history = ns["history"]
result = {"model": type(ns["model"]).__name__,
          "epochs": len(getattr(_history, "epoch", []) or []),
          "loss": [float(v) for v in getattr(_history, "history", {}).get("loss", [])]}


def _cross_entropy(model):
    probs = np.asarray(model.predict(x, verbose=0), dtype="float64")
    return float(np.mean(-np.log(np.clip(probs[np.arange(len(y)), y], 1e-7, 1.0))))


result["trained_loss"] = _cross_entropy(ns["model"])
try:
    result["fresh_loss"] = _cross_entropy(ns["build_model"]())
except Exception:
    result["fresh_loss"] = None
"""
TRAINED_WEIGHTS = """
import numpy as np
_history = ns["history"]
result = {"model": type(ns["model"]).__name__[:100],
          "epochs": len(getattr(_history, "epoch", []) or []),
          "weights": [np.asarray(w) for w in ns["model"].get_weights()]}
"""


def _trained_from_weights(student, grading):
    """Graded: only the trained weights of `model` come from the kernel, as arrays; the
    grader runs the Q2 model on them itself (NumPy, inference mode) on 512 training images
    drawn at grading time. The class name and the epochs only ever fail the check."""
    from grader.data import mnist_sample

    found = student.evaluate(TRAINED_WEIGHTS, what="model.get_weights() and history")
    if not isinstance(found, dict) or not isinstance(found.get("weights"), list):
        raise CheckFailed("The weights of `model` could not be read; expected the 8 arrays "
                          "of the model of Q2, trained.")
    shapes = [list(np.shape(w)) for w in found["weights"]]
    if shapes != WEIGHT_SHAPES:
        raise CheckFailed(f"model.get_weights() gives weights of shapes {shapes}; expected "
                          f"{[tuple(s) for s in WEIGHT_SHAPES]}: the model of Q2, trained. "
                          "Train model = build_model().")
    weights = [assert_shape(w, tuple(shape), what=f"weight {i} of `model`")
               for i, (w, shape) in enumerate(zip(found["weights"], WEIGHT_SHAPES, strict=True))]
    (images, labels), _ = mnist_sample()
    pick = grading.rng("custom_train_step.public.trained").choice(len(images), 512,
                                                                  replace=False)
    x, y = images[pick].astype(np.float64) / 255.0, labels[pick].astype(np.int64)
    with np.errstate(all="ignore"):
        probs = _forward(weights, x)
    picked = np.clip(np.nan_to_num(probs[np.arange(len(y)), y], nan=0.0), 1e-7, 1.0)
    return {"model": str(found.get("model")), "epochs": found.get("epochs"),
            "trained_loss": float(np.mean(-np.log(picked))),
            "fresh_loss": float(np.log(10)),  # an untrained 10-class classifier
            "baseline": "an untrained 10-class classifier (ln 10)"}


EPOCHS = 5  # the notebook's EPOCHS
TRAINED_RATIO = 0.5  # a trained model's loss is well under half an untrained one's (2.3)


@check("q3.model_trained", points=1)
def check_model_trained(student, expected):
    """`model` is a CustomModel trained with fit() for EPOCHS epochs (kept in `history`): its
    loss on training images is well under that of a new build_model()."""
    names = student.names()
    for name in ("model", "history"):
        if name not in names:
            raise CheckFailed(f"No variable `{name}` in your notebook (defined: "
                              f"{', '.join(sorted(names)) or 'nothing yet'}). Train with "
                              "model = build_model(); history = model.fit(...).")
    grading = _clean(student)
    if grading is not None:
        info = _trained_from_weights(student, grading)
    else:
        x, y = _batch(256)
        if "x_train" in names and "y_train" in names:
            # the images the student trained on, as the student's notebook prepared them
            x = student.evaluate("import numpy as np\nresult = np.asarray(ns['x_train'][:512], "
                                 "dtype='float32')", what="x_train[:512]")
            y = student.evaluate("import numpy as np\nresult = np.asarray(ns['y_train'][:512])",
                                 what="y_train[:512]")
            x, y = np.asarray(x, dtype=np.float32), np.asarray(y).astype(np.int64)
        info = student.evaluate(HISTORY_CODE, what="model and history", x=x, y=y)
    if info["model"] != "CustomModel":
        raise CheckFailed(f"Q3: `model` is a {info['model']}; expected a CustomModel. "
                          "Create it with model = build_model().")
    if info["epochs"] != EPOCHS:
        raise CheckFailed(f"Q3: `history` records {info['epochs']} epoch(s); expected EPOCHS = "
                          f"{EPOCHS}. Keep what model.fit(x_train, y_train, epochs=EPOCHS, "
                          "batch_size=BATCH_SIZE) returns in `history`.",
                          expected=str(EPOCHS), found=str(info["epochs"]))
    # Judged by behaviour, not by the logged loss (a train_step that logs a wrong loss is
    # Q1's mistake, charged there): did training lower the model's loss?
    trained, fresh = info["trained_loss"], info["fresh_loss"]
    if fresh is None:
        fresh = float(np.log(10))  # an untrained 10-class classifier
    if not np.isfinite(trained) or not trained < TRAINED_RATIO * fresh:
        raise CheckFailed(
            f"Q3: `model` does not look trained: its cross-entropy on 512 training images is "
            f"{trained:.4g}, against {fresh:.4g} for "
            f"{info.get('baseline', 'a new build_model()')}; expected well under "
            f"half of it after {EPOCHS} epochs. Check that train_step applies the gradients "
            "(Q1) and train with model.fit(x_train, y_train, epochs=EPOCHS, "
            "batch_size=BATCH_SIZE).", expected=f"< {TRAINED_RATIO * fresh:.4g}",
            found=f"{trained:.4g}")
