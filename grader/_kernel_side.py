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


def describe_model(model):
    """A JSON description of a Keras model: layers, shapes, activations, loss."""
    layers = []
    for layer in getattr(model, "layers", []):
        config = {}
        try:
            config = layer.get_config()
        except Exception:
            pass
        activation = config.get("activation")
        if isinstance(activation, dict):  # a serialised activation; tf.nn.softmax gives a str
            inner = activation.get("config", {})
            activation = inner if isinstance(inner, str) else inner.get("name", str(activation))
        entry = {
            "class": type(layer).__name__,
            "name": layer.name,
            "activation": activation,
            "units": config.get("units"),
            "filters": config.get("filters"),
            "kernel_size": config.get("kernel_size"),
            "rate": config.get("rate"),
            "trainable_params": _count_params(layer),
        }
        try:
            entry["output_shape"] = list(layer.output.shape)
        except Exception:
            entry["output_shape"] = None
        layers.append(entry)
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
    return description


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
