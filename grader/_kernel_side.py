"""Code that runs *inside* the student's kernel to answer one probe from a check.

This file is sent to the sandboxed kernel as source text (and imported directly by
the in-notebook self-check). It must depend on nothing but the standard library and
numpy, and it must never see an expected value: it only looks up, calls and encodes
what the student's namespace holds. Values leave the kernel as data only:
``response.json`` plus ``.npy`` files that the trusted side loads with
``allow_pickle=False``.

A probe is a directory holding ``request.json`` (and input arrays ``in_<k>.npy``).
The request is one of::

    {"op": "names"}
    {"op": "get", "name": "W"}
    {"op": "call", "name": "softmax", "args": [...], "kwargs": {...}}
    {"op": "evaluate", "code": "result = ...", "inputs": {...}}

Arguments use the same encoding as results: JSON scalars, lists and dicts, and
``{"__ndarray__": "in_0.npy"}`` for arrays. A ``call`` or ``evaluate`` from a graded run
also carries ``"deterministic": true``: see :func:`deterministic`.
"""

import json
import os
import sys
import traceback

_HIDDEN_NAMES = {"In", "Out", "exit", "quit", "get_ipython", "open"}
MAX_TRACEBACK_CHARS = 4000


def user_names(ns):
    """Names the student defined, with the type of each (modules left out)."""
    names = {}
    for name, value in list(ns.items()):
        if name.startswith("_") or name in _HIDDEN_NAMES:
            continue
        kind = type(value)
        if kind.__name__ == "module":
            continue
        names[name] = kind.__qualname__
    return names


class _Encoder:
    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.count = 0

    def encode(self, obj, depth=0):
        import numpy as np

        if depth > 20:
            return {"__object__": "nested too deeply"}
        numpy_method = getattr(obj, "numpy", None)
        if callable(numpy_method) and not isinstance(obj, np.ndarray):
            try:
                obj = numpy_method()
            except Exception:  # a symbolic tensor, say
                return {"__object__": _type_name(obj)}
        if isinstance(obj, (bool, int, float, str)) or obj is None:
            return obj
        if isinstance(obj, (np.ndarray, np.generic)):
            array = np.asarray(obj)
            if array.dtype == object:
                return {"__object__": "numpy array of Python objects"}
            if array.ndim == 0:
                return array.item()
            name = "out_%d.npy" % self.count
            self.count += 1
            np.save(os.path.join(self.out_dir, name), array, allow_pickle=False)
            return {"__ndarray__": name}
        if isinstance(obj, (list, tuple)):
            return [self.encode(item, depth + 1) for item in obj]
        if isinstance(obj, dict):
            return {str(key): self.encode(value, depth + 1) for key, value in obj.items()}
        type_name = _type_name(obj)
        if type_name in ("pandas.DataFrame", "pandas.core.frame.DataFrame"):
            return {
                "__dataframe__": True,
                "columns": [str(c) for c in obj.columns],
                "values": self.encode(_frame_values(obj), depth + 1),
            }
        if type_name in ("pandas.Series", "pandas.core.series.Series"):
            return {
                "__series__": True,
                "name": str(obj.name),
                "values": self.encode(_frame_values(obj), depth + 1),
            }
        return {"__object__": type_name}


def _frame_values(frame):
    import numpy as np

    values = frame.to_numpy()
    if values.dtype == object:
        try:
            values = values.astype(float)
        except (TypeError, ValueError):
            values = values.astype(str)
    return np.asarray(values)


def _type_name(obj):
    kind = type(obj)
    return "%s.%s" % (kind.__module__, kind.__qualname__)


def _decode(obj, in_dir):
    import numpy as np

    if isinstance(obj, list):
        return [_decode(item, in_dir) for item in obj]
    if isinstance(obj, dict):
        if "__ndarray__" in obj:
            return np.load(os.path.join(in_dir, os.path.basename(obj["__ndarray__"])),
                           allow_pickle=False)
        return {key: _decode(value, in_dir) for key, value in obj.items()}
    return obj


# Layers that only apply an activation: folded into the layer before them, so that
# Dense(128) + Activation("relu") reads as the Dense(128, activation="relu") it computes.
_ACTIVATION_LAYERS = {"Activation", "ReLU", "Softmax", "LeakyReLU", "ELU", "PReLU"}
_PROBE_BATCH = 8  # inputs the model is run on to measure what it computes
_MAX_SCORES = 1000  # per example: larger outputs are reported by shape only


def describe_model(model):
    """A JSON description of a Keras model: layers, shapes, activations, loss, and what it
    computes on a fixed batch.

    ``layers`` lists the model's layers depth first, nested models and blocks flattened
    (a ``Sequential`` inside a ``Sequential``, a helper's block), with activation-only
    layers (``Activation``, ``ReLU``, ``Softmax``, ...) folded into the last layer before
    them that has a linear activation: the description says what the model computes,
    not how it was spelt. ``behaviour`` holds what running the model measured (see
    :func:`_behaviour`). A pure function of the model: standard library, numpy and keras.
    """
    layers = _fold_activations([_describe_layer(layer) for layer in _flat_layers(model)])
    description = {"class": type(model).__name__, "layers": layers}
    try:  # model.output raises on a Sequential that was never called; outputs[0] does not
        description["output_shape"] = list(model.outputs[0].shape)
    except Exception:
        description["output_shape"] = layers[-1]["output_shape"] if layers else None
    try:
        description["input_shape"] = list(model.inputs[0].shape)
    except Exception:
        description["input_shape"] = None
    loss = getattr(model, "loss", None)
    description["compiled"] = getattr(model, "optimizer", None) is not None
    description["optimizer"] = type(model.optimizer).__name__ if description["compiled"] else None
    if loss is None:
        description["loss"] = None
    elif isinstance(loss, str):
        description["loss"] = {"name": loss, "from_logits": False}
    else:
        from_logits = False
        try:
            from_logits = bool(loss.get_config().get("from_logits", False))
        except Exception:
            pass
        description["loss"] = {"name": getattr(loss, "name", None) or getattr(loss, "__name__", type(loss).__name__), "from_logits": from_logits}
    try:
        description["params"] = int(model.count_params())
    except Exception:
        description["params"] = None
    description["behaviour"] = _behaviour(model, description["input_shape"])
    return description


def _flat_layers(model, depth=0):
    """The layers of ``model``, nested models and blocks replaced by their own layers."""
    found = []
    for layer in getattr(model, "layers", None) or []:
        inner = getattr(layer, "layers", None)
        if depth < 20 and isinstance(inner, (list, tuple)) and inner:
            found.extend(_flat_layers(layer, depth + 1))
        elif type(layer).__name__ != "InputLayer" or depth == 0:
            found.append(layer)
    return found


def _activation_name(value):
    """'relu', 'softmax', 'linear', ... for an activation given as a function, a name or a
    serialised config (tf.nn.softmax is called softmax_v2)."""
    if value is None:
        return None
    if isinstance(value, dict):
        inner = value.get("config", value)
        value = inner if isinstance(inner, str) else inner.get("name", str(value))
    name = value if isinstance(value, str) else getattr(value, "__name__", type(value).__name__)
    name = str(name).rsplit(".", 1)[-1].lower()
    return name[:-3] if name.endswith("_v2") else name


def _describe_layer(layer):
    config = {}
    try:
        config = layer.get_config()
    except Exception:
        pass
    kind = type(layer).__name__
    activation = getattr(layer, "activation", None)
    activation = _activation_name(activation if activation is not None else config.get("activation"))
    if kind in ("ReLU", "LeakyReLU"):
        slope = config.get("negative_slope", 0.0 if kind == "ReLU" else 0.3)
        activation = "relu" if not slope else "leaky_relu"
    elif kind in ("Softmax", "ELU", "PReLU"):
        activation = kind.lower()
    entry = {
        "class": kind,
        "name": layer.name,
        "activation": activation,
        "units": config.get("units"),
        "filters": config.get("filters"),
        "kernel_size": config.get("kernel_size"),
        "strides": config.get("strides"),
        "padding": config.get("padding"),
        "rate": config.get("rate"),
        "target_shape": config.get("target_shape"),
        "trainable_params": _count_params(layer),
    }
    try:
        entry["output_shape"] = list(layer.output.shape)
    except Exception:
        entry["output_shape"] = None
    return entry


def _fold_activations(entries):
    """Activation-only layers merged into the nearest earlier layer that has a linear
    activation (Dense, Conv2D), across layers without one (BatchNormalization, Dropout,
    pooling, Flatten: relu commutes with them or follows them as in the common
    Conv -> BatchNormalization -> ReLU)."""
    folded = []
    for entry in entries:
        if entry["class"] in _ACTIVATION_LAYERS:
            for earlier in reversed(folded):
                if earlier["activation"] is None:
                    continue  # no activation of its own: look further back
                if earlier["activation"] == "linear":
                    earlier["activation"] = entry["activation"]
                    earlier["folded"] = earlier.get("folded", []) + [entry["class"]]
                    if entry["output_shape"] is not None and earlier is folded[-1]:
                        earlier["output_shape"] = entry["output_shape"]
                    entry = None
                break
            if entry is None:
                continue
        folded.append(entry)
    return folded


def _behaviour(model, input_shape):
    """What the model computes on fixed inputs (no student value is trusted for this: the
    grader recomputes every judgement from these numbers).

    ``outputs``: the model's outputs (inference mode) on a batch ``a`` of standard-normal
    inputs, and on ``b``, ``a + b`` and zeros, so that the grader can tell probabilities
    from logits and an affine model (no working non-linearity) from a non-linear one;
    ``labels``: integer labels, the arg-max of outputs(a) on every other example; ``loss``: the compiled loss on (labels, outputs(a)),
    regularisation left out, or ``loss_error`` when it raises (categorical_crossentropy
    given integer labels, say); ``metrics``: the compiled metrics on the same batch."""
    import numpy as np

    result = {}
    if not input_shape or any(size is None for size in input_shape[1:]):
        return {"error": "the model has no complete input shape"}
    rng = np.random.default_rng(0)
    shape = (_PROBE_BATCH, *[int(size) for size in input_shape[1:]])
    a = rng.standard_normal(shape).astype("float32")
    b = rng.standard_normal(shape).astype("float32")
    try:
        runs = {}
        for key, x in (("a", a), ("b", b), ("a_plus_b", a + b), ("zeros", np.zeros_like(a))):
            runs[key] = np.asarray(model(x, training=False), dtype="float64")
    except Exception as exc:
        return {"error": "calling the model raised %s: %s" % (type(exc).__name__, str(exc)[:300])}
    output = runs["a"]
    if output.size > _PROBE_BATCH * _MAX_SCORES:  # not a classifier's scores: shape only
        return {"output_shape": list(output.shape)}
    result["outputs"] = {key: value.tolist() for key, value in runs.items()}
    if output.ndim != 2:
        return result
    # Labels the model gets right on every other example (accuracy 0.5): an accuracy
    # metric that misreads integer labels then gives another number.
    labels = np.argmax(output, axis=1).astype("int64")
    labels[1::2] = (labels[1::2] + 1) % output.shape[1]
    result["labels"] = labels.tolist()
    if getattr(model, "optimizer", None) is None:
        return result
    try:
        import keras

        y_pred = keras.ops.convert_to_tensor(output.astype("float32"))
    except Exception as exc:
        result["loss_error"] = "%s: %s" % (type(exc).__name__, str(exc)[:300])
        return result
    try:
        total = float(np.asarray(model.compute_loss(x=a, y=labels, y_pred=y_pred,
                                                    training=False)))
        extra = sum(float(np.asarray(loss)) for loss in getattr(model, "losses", []))
        result["loss"] = total - extra
    except Exception as exc:
        result["loss_error"] = "%s: %s" % (type(exc).__name__, str(exc)[:300])
    try:
        values = model.compute_metrics(a, labels, y_pred, sample_weight=None)
        result["metrics"] = {str(k): float(np.asarray(v)) for k, v in values.items()
                             if k != "loss" and np.asarray(v).ndim == 0}
        model.reset_metrics()
    except Exception as exc:
        result["metrics_error"] = "%s: %s" % (type(exc).__name__, str(exc)[:300])
    return result


def _count_params(layer):
    try:
        return int(layer.count_params())
    except Exception:  # a layer that was never built
        return None


def handle(probe_dir, ns):
    """Answer the request in ``probe_dir`` against namespace ``ns``; write the response."""
    with open(os.path.join(probe_dir, "request.json")) as f:
        request = json.load(f)
    encoder = _Encoder(probe_dir)
    try:
        response = _answer(request, ns, probe_dir, encoder)
    except BaseException as exc:  # the student's code may raise anything, SystemExit too
        if isinstance(exc, KeyboardInterrupt):
            response = {"ok": False, "interrupted": True}
        else:
            response = {
                "ok": False,
                "ename": type(exc).__name__,
                "evalue": str(exc)[:1000],
                "traceback": "".join(traceback.format_exception(exc))[-MAX_TRACEBACK_CHARS:],
            }
    with open(os.path.join(probe_dir, "response.json"), "w") as f:
        json.dump(response, f)


def deterministic(seed=0):
    """Before a check runs the student's code (one train_step from hidden weights, say):
    the same seeds for every random op (``keras.utils.set_random_seed``) and deterministic
    op implementations (``tf.config.experimental.enable_op_determinism``), so that the
    result repeats exactly, on GPU too. Only for modules the notebook imported itself:
    a notebook that never imported TensorFlow does not get it imported here."""
    keras = sys.modules.get("keras")
    if keras is not None:
        try:
            keras.utils.set_random_seed(seed)
        except Exception:  # an unusual Keras; the check still runs
            pass
    tf = sys.modules.get("tensorflow")
    if tf is not None:
        try:
            tf.config.experimental.enable_op_determinism()
        except Exception:
            pass


def _answer(request, ns, probe_dir, encoder):
    op = request["op"]
    if request.get("deterministic"):
        deterministic()
    if op == "names":
        return {"ok": True, "value": user_names(ns)}
    if op in ("get", "call"):
        name = request["name"]
        if name not in ns:
            return {"ok": False, "missing": name, "defined": user_names(ns)}
        target = ns[name]
        if op == "get":
            return {"ok": True, "value": encoder.encode(target)}
        if not callable(target):
            return {"ok": False, "not_callable": name, "type": _type_name(target)}
        args = _decode(request.get("args", []), probe_dir)
        kwargs = _decode(request.get("kwargs", {}), probe_dir)
        return {"ok": True, "value": encoder.encode(target(*args, **kwargs))}
    if op == "evaluate":
        scope = dict(_decode(request.get("inputs", {}), probe_dir))
        scope.update(ns=ns, describe_model=describe_model, user_names=user_names)
        exec(compile(request["code"], "<check>", "exec"), scope)
        return {"ok": True, "value": encoder.encode(scope.get("result"))}
    raise ValueError("unknown probe op %r" % op)
