"""Clean-room model evaluation: a student's Keras model, rebuilt from data where no student
code has run, and measured there.

Why. Anything computed in the student's kernel is attacker-written: ``model.predict`` can
be a lookup table, ``np.asarray`` or the Keras classes can be patched, a layer named
``Conv2D`` can be an identity. So a score that depends on a trained model never trusts the
kernel's answer about it. Instead:

1. **Export as data** (:data:`EXPORT`, run in the student's kernel through
   ``student.evaluate``): the model's ``to_json()`` text and its ``get_weights()`` arrays.
   Nothing else crosses: no pickle, no bytecode, no object.
2. **Validate in the grader** (:func:`validate_export`): sizes capped (config text, nesting
   depth, number and bytes of weights, units/filters), then every serialised object in the
   config is checked against an allow-list: the model container (``Sequential`` or
   ``Functional``), layers by registered name *and* module ``keras.layers`` (per practical:
   :data:`MLP_LAYERS`, :data:`CNN_LAYERS`, :data:`TABULAR_LAYERS`), and the supporting
   objects (initializers, regularizers, constraints, dtype policies). Custom objects,
   ``Lambda``, unknown modules and registered custom names are refused. The compile
   configuration is read as data (loss name, ``from_logits``, optimizer class) and
   stripped: the clean room never deserialises a loss or an optimizer.
3. **Rebuild and evaluate in a clean room** (:class:`CleanRoom`): a fresh sandboxed kernel
   of its own (forked from the worker's zygote like a submission's kernel, so it costs no
   TensorFlow import) with an empty working folder, into which only the grader's code, the
   validated config, the weights and grading inputs are sent. It rebuilds the model with
   ``keras.saving.deserialize_keras_object(config, safe_mode=True)``, checks that every
   layer it got is one of Keras' own classes, sets the weights (their number and shapes
   must match), describes the architecture with the same ``describe_model`` the student
   kernel's probe uses, and returns raw scores. The grader computes the metric. One clean
   room per submission, killed with it.

:func:`same_architecture` compares two exported configs modulo weights and names: the
graded global ``model`` must be what ``build_model()`` builds.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any, Callable

import numpy as np

from .errors import CheckFailed

MAX_CONFIG_CHARS = 1_000_000  # a small CNN's config is ~10 kB
MAX_CONFIG_DEPTH = 40
MAX_CONFIG_NODES = 50_000
MAX_WEIGHT_ARRAYS = 256
MAX_WEIGHT_BYTES = 64 * 2**20  # the practicals' models hold well under 1 MB of weights
MAX_UNITS = 65_536  # units / filters of one layer: bounds what building the model allocates
MAX_NAME_CHARS = 200
PREDICT_BATCH = 1000

# Model containers: (module, class_name) as Keras 3 serialises them.
CONTAINERS = {("keras", "Sequential"), ("keras.src.models.sequential", "Sequential"),
              ("keras.src.models.functional", "Functional"), ("keras", "Functional")}

# Layers every Keras practical may use, and those each adds (by registered class name; the
# module must be ``keras.layers``).
COMMON_LAYERS = frozenset({
    "InputLayer", "Dense", "Dropout", "BatchNormalization", "LayerNormalization",
    "Activation", "ReLU", "LeakyReLU", "ELU", "PReLU", "Softmax", "Flatten", "Reshape",
    "Rescaling", "GaussianNoise", "GaussianDropout", "AlphaDropout", "Identity",
})
MLP_LAYERS = COMMON_LAYERS
CNN_LAYERS = COMMON_LAYERS | frozenset({
    "Conv2D", "SeparableConv2D", "DepthwiseConv2D", "MaxPooling2D", "AveragePooling2D",
    "GlobalAveragePooling2D", "GlobalMaxPooling2D", "SpatialDropout2D", "ZeroPadding2D",
    "RandomRotation", "RandomTranslation", "RandomZoom", "RandomFlip",
})
TABULAR_LAYERS = COMMON_LAYERS | frozenset({"Normalization"})
ALL_LAYERS = CNN_LAYERS | TABULAR_LAYERS

# Objects a layer's config may hold, by module.
SUPPORT = {
    "keras": frozenset({"DTypePolicy", "FloatDTypePolicy"}),
    "keras.initializers": frozenset({
        "GlorotUniform", "GlorotNormal", "HeUniform", "HeNormal", "LecunUniform",
        "LecunNormal", "Zeros", "Ones", "Constant", "RandomUniform", "RandomNormal",
        "TruncatedNormal", "Orthogonal", "VarianceScaling", "Identity"}),
    "keras.regularizers": frozenset({"L1", "L2", "L1L2", "OrthogonalRegularizer"}),
    "keras.constraints": frozenset({"MaxNorm", "MinMaxNorm", "NonNeg", "UnitNorm"}),
}
# Plain-string activations the rebuilt model may name (resolved by Keras in the clean room,
# where no custom activation was ever registered).
ACTIVATIONS = frozenset({
    "linear", "relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "silu", "swish",
    "sigmoid", "hard_sigmoid", "tanh", "softmax", "log_softmax", "softplus", "softsign",
    "exponential", "mish", "hard_silu", "hard_swish"})

# TensorFlow's own activation functions (``activation=tf.nn.softmax``) by the name Keras
# serialises them under, and the Keras activation that computes the same.
TF_ACTIVATIONS = {"softmax_v2": "softmax", "softmax": "softmax", "relu": "relu",
                  "sigmoid": "sigmoid", "tanh": "tanh", "log_softmax_v2": "log_softmax",
                  "elu": "elu", "selu": "selu", "gelu": "gelu", "silu": "silu",
                  "swish": "silu", "leaky_relu": "leaky_relu", "relu6": "relu6",
                  "softplus": "softplus", "softsign": "softsign"}

# In the student's kernel: the model named ``which`` ("model": the global; "build_model": a
# model build_model() returns) as data. Student code runs here (build_model, to_json,
# get_weights): whatever comes back is validated in the grader and rebuilt in the clean room.
EXPORT = """
def _export(target):
    import numpy as _np
    kind = type(target)
    found = {"type": "%s.%s" % (getattr(kind, "__module__", "?"), getattr(kind, "__qualname__", "?"))}
    to_json = getattr(target, "to_json", None)
    get_weights = getattr(target, "get_weights", None)
    if not callable(to_json) or not callable(get_weights):
        found["not_a_model"] = True
        return found
    found["config"] = to_json()
    found["weights"] = [_np.asarray(w) for w in get_weights()]
    return found

if which == "build_model":
    result = {"missing": True} if "build_model" not in ns else _export(ns["build_model"]())
else:
    result = {"missing": True} if which not in ns else _export(ns[which])
"""

# In the clean room (grader code only): rebuild, check, set the weights, describe.
REBUILD = """
import json as _json
import numpy as _np
import keras as _keras

_model = _keras.saving.deserialize_keras_object(_json.loads(config), safe_mode=True)
if not isinstance(_model, _keras.Model):
    raise TypeError("the config does not describe a Keras model")
_foreign = sorted({"%s.%s" % (type(l).__module__, type(l).__name__)
                   for l in _model._flatten_layers(include_self=False)
                   if not type(l).__module__.startswith("keras.src.")
                   or type(l).__name__ not in set(allowed) | {"Sequential", "Functional"}})
_shapes = [list(v.shape) for v in _model.weights]
if _foreign:
    result = {"foreign": _foreign}
elif [list(w.shape) for w in weights] != _shapes:
    result = {"mismatch": {"expected": _shapes, "found": [list(w.shape) for w in weights]}}
else:
    _model.set_weights([_np.asarray(w) for w in weights])
    if compile_spec is not None and compile_spec["loss"] is not None:
        # Compiled with the student's loss and metrics (Keras' own, checked in the grader) so
        # that describe_model can measure them; the optimizer is read from the config as data.
        _loss = compile_spec["loss"]
        if isinstance(_loss, dict):
            _loss = _keras.losses.deserialize(_loss)
        _metrics = [_keras.metrics.deserialize(m) if isinstance(m, dict) else m
                    for m in compile_spec["metrics"]]
        _model.compile(optimizer="sgd", loss=_loss, metrics=_metrics or None)
    import sys as _sys, types as _types  # kept between probes whatever the probe's namespace
    _store = _sys.modules.setdefault("_grader_cleanroom", _types.ModuleType("_grader_cleanroom"))
    _store.__dict__.setdefault("models", {})[key] = _model
    result = {"description": describe_model(_model) if describe else None}
"""

# In the clean room: new weights for a model rebuilt earlier from the same architecture
# (the global `model` into the model of build_model(): one deserialisation, not two).
REWEIGHT = """
import sys as _sys
import numpy as _np

_models = _sys.modules["_grader_cleanroom"].models
_model = _models[base]
_shapes = [list(v.shape) for v in _model.weights]
if [list(w.shape) for w in weights] != _shapes:
    result = {"mismatch": {"expected": _shapes, "found": [list(w.shape) for w in weights]}}
else:
    _model.set_weights([_np.asarray(w) for w in weights])
    _models[key] = _models.pop(base)
    result = {"description": None}
"""

PREDICT = """
import numpy as _np
import sys as _sys
_model = _sys.modules["_grader_cleanroom"].models[key]
_x = _np.asarray(x, dtype="float32")
result = _np.concatenate([_np.asarray(_model(_x[i:i + batch], training=False))
                          for i in range(0, len(_x), batch)]) if len(_x) else _np.zeros((0,))
"""


class ModelRefused(CheckFailed):
    """The exported model cannot be rebuilt in the clean room (not allowed, too large,
    malformed); the message says what was found and what the practical allows."""


@dataclass(frozen=True)
class ExportedModel:
    """A model as validated data: its config (compile part removed), weights, and what its
    compile configuration says, read as data."""

    config: dict
    weights: tuple[np.ndarray, ...]
    compiled: bool = False
    loss: dict | None = None  # {"name": str, "from_logits": bool}
    optimizer: str | None = None
    # The loss and metrics to compile the rebuilt model with, so that the clean room can
    # measure them (see _compile_spec): Keras' own objects only, as validated data.
    compile_spec: dict | None = None
    digest: str = ""  # sha256 of config and weights: names the model in the clean room
    layer_classes: tuple[str, ...] = field(default=())

    @property
    def config_text(self) -> str:
        return json.dumps(self.config)


# -- validation (grader side) ----------------------------------------------------------------
def validate_export(found: Any, *, allowed: frozenset[str], what: str) -> ExportedModel:
    """Turn the kernel's answer to :data:`EXPORT` into an :class:`ExportedModel`, or raise
    :class:`ModelRefused` saying why. ``what`` names the model for messages."""
    if not isinstance(found, dict):
        raise ModelRefused(f"{what} could not be read as a Keras model (the kernel's answer "
                           "was malformed).")
    kind = _text(found.get("type"))
    if found.get("not_a_model") or "config" not in found:
        raise ModelRefused(
            f"{what} is a {kind}, not a Keras model: expected a `keras.Sequential` or a "
            "functional `keras.Model` built from `keras.layers`. Build the model with Keras "
            "layers inside `build_model()` and train that model.")
    text = found.get("config")
    if not isinstance(text, str) or len(text) > MAX_CONFIG_CHARS:
        raise ModelRefused(f"{what}'s configuration is not a JSON text of at most "
                           f"{MAX_CONFIG_CHARS:,} characters; expected `model.to_json()` of a "
                           "small Keras model.")
    try:
        config = json.loads(text)
    except (ValueError, RecursionError):
        raise ModelRefused(f"{what}'s configuration is not valid JSON; expected "
                           "`model.to_json()` of a Keras model.") from None
    weights = _validate_weights(found.get("weights"), what)
    _check_size(config, what)
    if not isinstance(config, dict):
        raise ModelRefused(f"{what}'s configuration is not a serialised Keras model.")
    compile_config = config.pop("compile_config", None)
    container = (config.get("module"), config.get("class_name"))
    if container not in CONTAINERS or config.get("registered_name") not in (None, "Functional",
                                                                              "Sequential"):
        raise ModelRefused(
            f"{what} is a `{_text(config.get('class_name'))}` from module "
            f"`{_text(config.get('module'))}`; expected a `keras.Sequential` or a functional "
            "`keras.Model(inputs, outputs)`. Subclassed models are not accepted here: build the "
            "model from `keras.layers` without overriding `call` or `predict`.")
    inner = config.get("config")
    if not isinstance(inner, dict) or not isinstance(inner.get("layers"), list):
        raise ModelRefused(f"{what}'s configuration lists no layers.")
    problems: list[str] = []
    classes: list[str] = []
    for layer in inner["layers"]:
        _check_layer(layer, allowed, problems, classes)
    _check_support({k: v for k, v in inner.items() if k != "layers"}, problems, "the model",
                   tensors_ok=True)
    if problems:
        shown = "; ".join(dict.fromkeys(problems))
        raise ModelRefused(
            f"{what} uses objects the grader does not rebuild: {_cap(shown, 600)}. Expected "
            f"only these Keras layers: {', '.join(sorted(allowed))} (no `Lambda`, no custom "
            "layer or activation classes). Build the model from these `keras.layers`.")
    loss, optimizer, compiled = _compile_facts(compile_config)
    compile_spec = _compile_spec(compile_config) if compiled else None
    digest = hashlib.sha256(text.encode())
    for w in weights:
        digest.update(str((w.dtype.str, w.shape)).encode())
        digest.update(np.ascontiguousarray(w).tobytes())
    return ExportedModel(config=config, weights=weights, compiled=compiled, loss=loss,
                         compile_spec=compile_spec,
                         optimizer=optimizer, digest=digest.hexdigest(),
                         layer_classes=tuple(classes))


def _validate_weights(weights: Any, what: str) -> tuple[np.ndarray, ...]:
    if not isinstance(weights, list) or len(weights) > MAX_WEIGHT_ARRAYS:
        raise ModelRefused(f"{what}'s weights are not a list of at most {MAX_WEIGHT_ARRAYS} "
                           "arrays; expected `model.get_weights()` of a small Keras model.")
    total = 0
    checked = []
    for w in weights:
        if not isinstance(w, np.ndarray) or w.dtype.kind not in "biuf":
            raise ModelRefused(f"{what}'s weights hold something other than numeric arrays.")
        total += w.nbytes
        if total > MAX_WEIGHT_BYTES:
            raise ModelRefused(f"{what}'s weights take more than {MAX_WEIGHT_BYTES // 2**20} MB; "
                               "the practical's model is far smaller. Keep the layers small.")
        checked.append(w)
    return tuple(checked)


def _check_size(config: Any, what: str) -> None:
    stack, nodes = [(config, 0)], 0
    while stack:
        node, depth = stack.pop()
        nodes += 1
        if depth > MAX_CONFIG_DEPTH or nodes > MAX_CONFIG_NODES:
            raise ModelRefused(f"{what}'s configuration is nested too deeply or is too large "
                               "for a practical's model.")
        if isinstance(node, dict):
            stack.extend((v, depth + 1) for v in node.values())
        elif isinstance(node, list):
            stack.extend((v, depth + 1) for v in node)


def _check_layer(layer: Any, allowed: frozenset[str], problems: list[str],
                 classes: list[str]) -> None:
    if not isinstance(layer, dict):
        problems.append("a layer entry that is not an object")
        return
    module, name = layer.get("module"), layer.get("class_name")
    if (module, name) in CONTAINERS and layer.get("registered_name") in (None, "Functional",
                                                                           "Sequential"):
        # A block built as its own Sequential or functional model (a helper returning one):
        # a container like the model itself; every layer inside is checked the same way.
        inner = layer.get("config")
        if not isinstance(inner, dict) or not isinstance(inner.get("layers"), list):
            problems.append(f"a nested `{_text(name)}` without layers")
            return
        for sub in inner["layers"]:
            _check_layer(sub, allowed, problems, classes)
        _check_support({k: v for k, v in inner.items() if k != "layers"}, problems,
                       f"a nested `{_text(name)}`", tensors_ok=True)
        _check_support(layer.get("inbound_nodes"), problems, f"a nested `{_text(name)}`",
                       tensors_ok=True)
        return
    classes.append(_text(name))
    if module != "keras.layers" or name not in allowed or \
            layer.get("registered_name") not in (None, name):
        registered = layer.get("registered_name")
        label = f"`{_text(name)}` (module `{_text(module)}`"
        label += f", registered as `{_text(registered)}`)" if registered not in (None, name) \
            else ")"
        problems.append(f"layer {label}")
        return
    config = layer.get("config")
    if not isinstance(config, dict):
        problems.append(f"layer `{name}` without a configuration")
        return
    for key in ("units", "filters"):
        value = config.get(key)
        if value is not None and (not isinstance(value, int) or not 0 < value <= MAX_UNITS):
            problems.append(f"`{name}` with {key}={_text(value)}")
    activation = config.get("activation")
    if isinstance(activation, dict) and activation.get("module") == "builtins" and \
            activation.get("class_name") == "function" and \
            activation.get("config") in TF_ACTIVATIONS:
        # `activation=tf.nn.softmax` serialises as a plain function: rebuilt as Keras' own.
        activation = config["activation"] = TF_ACTIVATIONS[activation["config"]]
    if activation is not None and (not isinstance(activation, str)
                                   or activation not in ACTIVATIONS):
        problems.append(f"activation {_cap(json.dumps(activation), 80)} in `{name}`")
    _check_support(config, problems, f"`{name}`")
    _check_support(layer.get("inbound_nodes"), problems, f"`{name}`", tensors_ok=True)


def _check_support(node: Any, problems: list[str], where: str, tensors_ok: bool = False) -> None:
    """Every serialised object inside a layer's config must be a known Keras support object."""
    stack = [node]
    while stack:
        item = stack.pop()
        if isinstance(item, list):
            stack.extend(item)
            continue
        if not isinstance(item, dict):
            continue
        if "class_name" in item or "module" in item:
            module, name = item.get("module"), item.get("class_name")
            if tensors_ok and name == "__keras_tensor__" and module is None:
                pass
            elif module not in SUPPORT or name not in SUPPORT[module] or \
                    item.get("registered_name") not in (None, name):
                problems.append(f"`{_text(name)}` (module `{_text(module)}`) in {where}")
                continue
        stack.extend(item.values())


# The losses and metrics the clean room compiles a rebuilt model with: Keras' own, by name or
# by a config whose values are plain numbers, booleans and short strings. Anything else (a
# Python function, a custom class) is left out: the checks then say the loss could not be
# measured, and why.
LOSS_NAMES = frozenset({
    "sparse_categorical_crossentropy", "categorical_crossentropy", "binary_crossentropy",
    "mean_squared_error", "mse", "mean_absolute_error", "mae", "kl_divergence", "kld",
    "categorical_hinge", "hinge", "squared_hinge", "poisson", "huber",
    "categorical_focal_crossentropy", "binary_focal_crossentropy"})
LOSS_CLASSES = frozenset({
    "SparseCategoricalCrossentropy", "CategoricalCrossentropy", "BinaryCrossentropy",
    "MeanSquaredError", "MeanAbsoluteError", "KLDivergence", "CategoricalHinge", "Hinge",
    "SquaredHinge", "Poisson", "Huber", "CategoricalFocalCrossentropy",
    "BinaryFocalCrossentropy"})
METRIC_NAMES = frozenset({
    "accuracy", "acc", "sparse_categorical_accuracy", "categorical_accuracy", "binary_accuracy",
    "sparse_top_k_categorical_accuracy", "top_k_categorical_accuracy",
    "sparse_categorical_crossentropy", "categorical_crossentropy"})
METRIC_CLASSES = frozenset({
    "Accuracy", "SparseCategoricalAccuracy", "CategoricalAccuracy", "BinaryAccuracy",
    "SparseTopKCategoricalAccuracy", "TopKCategoricalAccuracy",
    "SparseCategoricalCrossentropy", "CategoricalCrossentropy"})
MAX_METRICS = 8


def _compile_spec(compile_config: Any) -> dict:
    """The loss and metrics of ``compile_config`` that the clean room may compile with:
    ``{"loss": name | config | None, "metrics": [name | config, ...]}``."""
    def keras_object(item: Any, module: str, classes: frozenset, names: frozenset) -> Any:
        if isinstance(item, str):
            return item if item in names else None
        if not isinstance(item, dict) or item.get("module") != module \
                or item.get("class_name") not in classes \
                or item.get("registered_name") not in (None, item.get("class_name")):
            return None
        config = item.get("config")
        if not isinstance(config, dict) or not all(
                value is None or isinstance(value, (bool, int, float))
                or (isinstance(value, str) and len(value) <= MAX_NAME_CHARS)
                for value in config.values()):
            return None
        return {"module": module, "class_name": item["class_name"], "config": dict(config),
                "registered_name": None}

    loss = keras_object(compile_config.get("loss"), "keras.losses", LOSS_CLASSES, LOSS_NAMES)
    metrics = compile_config.get("metrics")
    kept = []
    for item in metrics if isinstance(metrics, list) else []:
        safe = keras_object(item, "keras.metrics", METRIC_CLASSES, METRIC_NAMES)
        if safe is not None and len(kept) < MAX_METRICS:
            kept.append(safe)
    return {"loss": loss, "metrics": kept}


def _compile_facts(compile_config: Any) -> tuple[dict | None, str | None, bool]:
    """(loss, optimizer class, compiled) read from the compile configuration as data."""
    if not isinstance(compile_config, dict) or not compile_config:
        return None, None, False
    optimizer = compile_config.get("optimizer")
    if isinstance(optimizer, dict):
        optimizer = optimizer.get("class_name")
    optimizer = _text(optimizer) if optimizer is not None else None
    loss = compile_config.get("loss")
    if loss is None:
        return None, optimizer, optimizer is not None
    if isinstance(loss, str):
        return {"name": _text(loss), "from_logits": False}, optimizer, optimizer is not None
    if isinstance(loss, dict):
        inner = loss.get("config")
        name = inner.get("name") if isinstance(inner, dict) else inner
        if loss.get("module") == "keras.losses" and isinstance(inner, dict):
            from_logits = bool(inner.get("from_logits", False))
        else:
            from_logits = False
        return ({"name": _text(name or loss.get("class_name")), "from_logits": from_logits},
                optimizer, optimizer is not None)
    return {"name": "unknown", "from_logits": False}, optimizer, optimizer is not None


def _text(value: Any) -> str:
    return _cap(str(value), MAX_NAME_CHARS)


def _cap(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[:limit - 3] + "..."


# -- architecture identity ------------------------------------------------------------------
# Not architecture: names, and what building (training) a model adds to its config.
IGNORED_KEYS = frozenset({"name", "build_config", "build_input_shape"})
def architecture(model: ExportedModel) -> Any:
    """The config without names (layer and model names, and the references to them in a
    functional graph, replaced by positions): two models built by the same code compare
    equal whatever Keras named them."""
    inner = model.config.get("config", {})
    names = {}
    for index, layer in enumerate(inner.get("layers", [])):
        for key in (layer.get("name"), (layer.get("config") or {}).get("name")):
            if isinstance(key, str):
                names.setdefault(key, f"#{index}")

    def canonical(node: Any) -> Any:
        if isinstance(node, dict):
            return {k: canonical(v) for k, v in node.items() if k not in IGNORED_KEYS}
        if isinstance(node, list):
            # A Sequential started without keras.Input gains its InputLayer when it is first
            # built (trained): the same code, built or not, must compare equal.
            return [canonical(v) for v in node
                    if not (isinstance(v, dict) and v.get("class_name") == "InputLayer"
                            and model.config.get("class_name") == "Sequential")]
        if isinstance(node, str) and node in names:
            return names[node]
        return node

    return canonical(model.config)


def same_architecture(a: ExportedModel, b: ExportedModel) -> bool:
    return architecture(a) == architecture(b)


# -- the clean room ---------------------------------------------------------------------------
class CleanRoom:
    """A sandboxed kernel in which no student code runs, started on first use.

    ``start`` returns a :class:`grader.probe.Student` over that kernel (the executor provides
    it: see :func:`grader.executor._clean_room_for`); ``close`` kills it. Models are sent as
    validated data and kept there by digest; the grader gets back descriptions and raw scores.
    """

    def __init__(self, start: Callable[[], Any], close: Callable[[], None] = lambda: None,
                 ahead: Callable[[], None] | None = None):
        self._start, self._close, self._ahead = start, close, ahead
        self._student = None
        self._failed: BaseException | None = None
        self._described: dict[str, dict] = {}  # digest -> description of the rebuilt model
        self._resident: set[str] = set()  # digests of the models the clean room holds now
        self.memo: dict[str, Any] = {}  # per-submission cache for the checks' helpers
        self.started = False
        # seconds spent, for the result's timings: start (the kernel), export (in the student's
        # kernel: see grader.keras_checks.export_model), rebuild, predict
        self.timings: dict[str, float] = {}

    @property
    def student(self):
        if self._failed is not None:  # started once and failed: not again for every check
            raise RuntimeError(f"the clean room could not start: {self._failed}")
        if self._student is None:
            self.started = True
            started = time.perf_counter()  # what is left of the start: all of it if not ahead
            try:
                self._student = self._start()
            except Exception as error:
                self._failed = error
                raise
            finally:
                self.add_time("start", time.perf_counter() - started)
        return self._student

    def start_ahead(self) -> None:
        """Begin starting the kernel now (the executor calls this before the notebook runs),
        so that the first check finds it booted."""
        if self._ahead is not None and not self.started:
            self.started = True
            self._ahead()

    def add_time(self, phase: str, seconds: float) -> None:
        self.timings[phase] = self.timings.get(phase, 0.0) + seconds

    def load(self, model: ExportedModel, allowed: frozenset[str], what: str, *,
             describe: bool = True, like: ExportedModel | None = None) -> dict | None:
        """Rebuild ``model`` in the clean room; return ``describe_model`` of the result, with
        the compile facts read from the config (None when ``describe`` is false).

        ``like``: a model of the same architecture (the caller checked it with
        :func:`same_architecture`) rebuilt earlier; if it is still there, ``model``'s weights
        are set into it instead of deserialising the config again (it then stands for
        ``model``; its description stays cached)."""
        if describe and model.digest in self._described:
            return self._described[model.digest]
        if not describe and model.digest in self._resident:
            return None
        student = self.student
        started = time.perf_counter()
        if like is not None and like.digest in self._resident and not describe:
            answer = student.evaluate(REWEIGHT, base=like.digest, key=model.digest,
                                      weights=list(model.weights), what=f"rebuilding {what}",
                                      timeout=120)
            if "mismatch" not in answer:
                self._resident.discard(like.digest)
        else:
            answer = student.evaluate(REBUILD, config=model.config_text,
                                      compile_spec=model.compile_spec if describe else None,
                                      weights=list(model.weights), key=model.digest,
                                      allowed=sorted(allowed), describe=describe,
                                      what=f"rebuilding {what}", timeout=120)
        self.add_time("rebuild", time.perf_counter() - started)
        if "foreign" in answer:
            raise ModelRefused(f"{what} rebuilt into layers that are not Keras' own: "
                               f"{', '.join(answer['foreign'])}. Use only `keras.layers`.")
        if "mismatch" in answer:
            expected, found = answer["mismatch"]["expected"], answer["mismatch"]["found"]
            raise ModelRefused(
                f"{what}'s weights do not fit its layers: {len(found)} arrays of shapes "
                f"{_cap(str(found), 200)}; its configuration needs {len(expected)} of shapes "
                f"{_cap(str(expected), 200)}. Export the model you trained, unchanged.")
        self._resident.add(model.digest)
        if answer.get("description") is None:
            return None
        description = dict(answer["description"])
        description.update(compiled=model.compiled, loss=model.loss, optimizer=model.optimizer)
        if model.compiled and (model.compile_spec or {}).get("loss") is None \
                and isinstance(description.get("behaviour"), dict):
            description["behaviour"] = {
                **description["behaviour"],
                "loss_error": "a loss that is not one of Keras' own losses (a Python function "
                              "or a custom class), which the grader cannot rebuild"}
        self._described[model.digest] = description
        return description

    def predict(self, model: ExportedModel, inputs: np.ndarray) -> np.ndarray:
        """Raw scores of the rebuilt ``model`` (loaded first) on ``inputs``."""
        if model.digest not in self._resident:
            raise RuntimeError("load() the model into the clean room before predict()")
        student = self.student
        started = time.perf_counter()
        scores = student.evaluate(PREDICT, key=model.digest, x=inputs, batch=PREDICT_BATCH,
                                  what="the rebuilt model's scores", timeout=120)
        self.add_time("predict", time.perf_counter() - started)
        return np.asarray(scores)

    def close(self) -> None:
        self._close()


def run_in_loop(coroutine, loop: asyncio.AbstractEventLoop, timeout: float):
    """Run ``coroutine`` on ``loop`` (the executor's, running in another thread) and wait."""
    return asyncio.run_coroutine_threadsafe(coroutine, loop).result(timeout=timeout)
