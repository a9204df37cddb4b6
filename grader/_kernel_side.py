"""Code that runs *inside* the student's kernel to answer one probe from a check.

This file reaches the sandboxed kernel as source text inside the grader's first
execute request, before any cell of the notebook runs (:func:`grader.probe.install_code`),
and is imported directly by the in-notebook self-check. It depends on nothing but the
standard library and numpy, and never sees an expected value: it only looks up, calls
and encodes what the student's namespace holds.

**How a probe reaches it.** :func:`_install` registers a handler for a shell message
type whose name ends in a random token (``grader_probe_<token>``) in the kernel's
``shell_handlers``. Later probes are sent as that message type, so they never pass
through ``run_cell``: no input or AST transformer, no ``pre_run_cell`` event, no name
looked up in the notebook's namespace (``exec``, ``compile``, ``open``,
``get_ipython``, ``handle``), no history. The handler answers with references it took
at install time: a private copy of ``builtins`` as its globals' ``__builtins__``, the
numpy functions it needs, ``os.open``/``os.write``, and the notebook's namespace dict
itself. It uses no ``json`` module at all (it writes JSON with a few lines of its own),
and writes ``.npy`` files byte by byte (no ``numpy.save``, no ``numpy.lib.format``).

**Request** (a dict, sent inline in the message content; arrays inline as base64
``.npy`` bytes, ``{"__npy_b64__": "..."}``)::

    {"op": "names"}
    {"op": "get", "name": "W"}
    {"op": "call", "name": "softmax", "args": [...], "kwargs": {...}}
    {"op": "evaluate", "code": "result = ...", "inputs": {...}}

plus ``"deterministic": true`` for a ``call``/``evaluate`` of a graded run
(:func:`deterministic`).

**Answer**: files in ``out_dir``, a folder the grader created for this probe alone:
``response.json`` and ``out_<k>.npy``. The response is ``{"ok": true, "value": V}``
with ``V`` made of JSON scalars, lists, dicts and the markers ``{"__ndarray__":
"out_<k>.npy"}``, ``{"__dataframe__": true, ...}``, ``{"__series__": true, ...}``,
``{"__object__": "<type name>"}``; or ``{"ok": false}`` with one of ``missing``/
``defined``, ``not_callable``/``type``, ``interrupted``, ``too_large``, or
``ename``/``evalue``. The grader validates all of it (:mod:`grader.probe`).

**What this does not guarantee** (the residual risk, stated plainly). Student code runs
in this same process, and Python has no private memory: with deliberate work against
this file a notebook can still

* replace or wrap the handler (``get_ipython().kernel.shell_handlers`` holds it under
  its random name), or patch the kernel's session or ``dispatch_shell``;
* find the objects captured here (the handler's closure, ``gc.get_objects()``) and
  change them, or patch numpy's internals that ``read_array`` and ``ndarray.tobytes``
  reach (the grader re-reads every array itself);
* from inside the function a probe calls, set a trace function on the frames it returns
  into; :func:`_untraced` removes it as soon as that call returns, but the encoder still
  calls the student's ``.numpy()``, ``__str__`` and pandas methods;
* patch the modules an ``evaluate`` snippet imports (numpy, keras) or the model methods
  it calls: such a result is only as true as the student's objects;
* run code before the install when its submission folder holds a module that the kernel
  imports at start-up (``python -m ipykernel_launcher`` puts the working directory first
  on ``sys.path``); the install refuses only a numpy that is not the grader's.

Closing the cheap hooks (a name in the namespace, a transformer, a patched ``json``,
``numpy.save``, ``numpy.asarray``, ``builtins``, a trace function set in a cell, a
``handle`` of its own) makes a fake answer deliberate work against this file, not a
one-line patch; it does not make an answer *true*. So the grader treats every answer as
attacker-written: it validates every byte (types, sizes, depth, dtypes; no pickle, no
object arrays, no links), keeps expected values out of the kernel and student text out
of hidden checks' feedback, and scores values that decide a grade from what it can recompute where
no student code ran (clean-room evaluation), not from this answer.
"""

import binascii as _binascii
import builtins as _builtins_module
import io as _io
import os as _os
import sys as _sys
import types as _types

# Taken when this file is first run: in the kernel, before any student code.
_BUILTINS = dict(vars(_builtins_module))
_ModuleType = _types.ModuleType
_os_open, _os_write, _os_close, _path_join = _os.open, _os.write, _os.close, _os.path.join
_a2b_base64 = _binascii.a2b_base64
_settrace, _setprofile = _sys.settrace, _sys.setprofile
_BytesIO = _io.BytesIO
_O_NEW_FILE = (_os.O_WRONLY | _os.O_CREAT | _os.O_EXCL | getattr(_os, "O_NOFOLLOW", 0)
               | getattr(_os, "O_CLOEXEC", 0))

# Names IPython puts in the namespace; hidden from ``names`` only while they are still
# IPython's own objects (filled at install; by name alone in the self-check).
_HIDDEN_NAMES = ("In", "Out", "exit", "quit", "get_ipython", "open")
_PRISTINE = {}
_IN_KERNEL = False  # set by _install: this copy answers a graded kernel's probes

MAX_NODES = 2_000_000  # JSON values in one answer
MAX_ARRAY_BYTES = 256 * 2**20  # all arrays of one answer together
MAX_DEPTH = 20
MAX_EVALUE_CHARS = 1000

_np = None  # numpy's functions, captured once (see _capture_numpy)


class _Numpy:
    def __init__(self, numpy):
        self.ndarray = numpy.ndarray
        self.generic = numpy.generic
        self.asarray = numpy.asarray
        self.array = numpy.array
        self.read_array = numpy.lib.format.read_array
        self.tobytes = numpy.ndarray.tobytes
        self.file = numpy.__file__


def _capture_numpy(expected_file=None):
    """Take numpy's functions, from the real numpy only: ``expected_file`` is the grader's
    ``numpy.__file__`` (a ``numpy.py`` in the submission folder must not stand in)."""
    global _np
    if _np is None:
        if expected_file is not None and "numpy" not in _sys.modules:
            import importlib.util

            spec = importlib.util.find_spec("numpy")
            origin = getattr(spec, "origin", None)
            if origin is None or _os.path.realpath(origin) != expected_file:
                raise ImportError("a file in the submission shadows numpy: %r" % (origin,))
        import numpy

        if expected_file is not None and _os.path.realpath(numpy.__file__) != expected_file:
            raise ImportError("numpy was loaded from %r" % (numpy.__file__,))
        _np = _Numpy(numpy)
    return _np


class _TooLarge(Exception):
    pass


def user_names(ns):
    """Names the student defined, with the type of each (modules left out)."""
    names = {}
    for name, value in list(ns.items()):
        if not isinstance(name, str) or name.startswith("_"):
            continue
        if name in _HIDDEN_NAMES and (not _PRISTINE or _PRISTINE.get(name, ns) is value):
            continue
        if isinstance(value, _ModuleType):
            continue
        names[name] = str(type(value).__qualname__)
    return names


class _Encoder:
    """Turns a value into the JSON-able form of the protocol, writing arrays to ``out_dir``."""

    def __init__(self, out_dir):
        self.out_dir = out_dir
        self.count = 0
        self.nodes = 0
        self.array_bytes = 0

    def encode(self, obj, depth=0):
        np = _capture_numpy()
        self.nodes += 1
        if self.nodes > MAX_NODES:
            raise _TooLarge("more than %d values" % MAX_NODES)
        if depth > MAX_DEPTH:
            return {"__object__": "nested too deeply"}
        if obj is None or obj is True or obj is False:
            return obj
        if isinstance(obj, (int, float, str)):
            return obj
        if not isinstance(obj, (np.ndarray, np.generic)):
            numpy_method = getattr(obj, "numpy", None)
            if callable(numpy_method):
                try:
                    obj = numpy_method()
                except Exception:  # a symbolic tensor, say
                    return {"__object__": _type_name(obj)}
                if obj is None or obj is True or obj is False or isinstance(obj, (int, float, str)):
                    return obj
        if isinstance(obj, (np.ndarray, np.generic)):
            array = np.array(obj, copy=True, order="C", subok=False)
            if array.dtype.hasobject or array.dtype.kind == "V" or array.dtype.itemsize == 0:
                return {"__object__": "numpy array of Python objects"}
            if array.ndim == 0 and array.dtype.kind in "biuf":
                return array.item()
            return {"__ndarray__": self._write_array(array)}
        if isinstance(obj, (list, tuple)):
            return [self.encode(item, depth + 1) for item in obj]
        if isinstance(obj, dict):
            return {str(key): self.encode(value, depth + 1) for key, value in list(obj.items())}
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

    def _write_array(self, array):
        np = _capture_numpy()
        data = np.tobytes(array)
        self.array_bytes += len(data)
        if self.array_bytes > MAX_ARRAY_BYTES:
            raise _TooLarge("arrays of more than %d bytes" % MAX_ARRAY_BYTES)
        shape = "".join("%d, " % d for d in array.shape)
        shape = "(" + (shape[:-2] if len(array.shape) != 1 else shape[:-1]) + ")"
        header = "{'descr': %r, 'fortran_order': False, 'shape': %s, }" % (array.dtype.str, shape)
        padding = 64 - (10 + len(header) + 1) % 64
        header = (header + " " * padding + "\n").encode("latin1")
        prefix = b"\x93NUMPY\x01\x00" + bytes((len(header) & 0xFF, len(header) >> 8))
        name = "out_%d.npy" % self.count
        self.count += 1
        _write_file(_path_join(self.out_dir, name), prefix + header, data)
        return name


def _write_file(path, *chunks):
    fd = _os_open(path, _O_NEW_FILE, 0o600)
    try:
        for chunk in chunks:
            view = memoryview(chunk)
            while len(view):
                written = _os_write(fd, view)
                view = view[written:]
    finally:
        _os_close(fd)


_JSON_ESCAPES = {code: "\\u%04x" % code for code in range(0x20)}
_JSON_ESCAPES.update({ord('"'): '\\"', ord("\\"): "\\\\"})


def _to_json(obj, parts):
    """JSON text of ``obj`` (made by _Encoder: scalars, lists, str-keyed dicts), without the
    json module, which the notebook may have patched."""
    if obj is None:
        parts.append("null")
    elif obj is True:
        parts.append("true")
    elif obj is False:
        parts.append("false")
    elif isinstance(obj, int):
        parts.append(int.__repr__(obj))
    elif isinstance(obj, float):
        text = float.__repr__(obj)
        parts.append({"nan": "NaN", "inf": "Infinity", "-inf": "-Infinity"}.get(text, text))
    elif isinstance(obj, str):
        parts.append('"' + str.translate(str.__str__(obj), _JSON_ESCAPES) + '"')
    elif isinstance(obj, list):
        parts.append("[")
        for index, item in enumerate(obj):
            if index:
                parts.append(",")
            _to_json(item, parts)
        parts.append("]")
    elif isinstance(obj, dict):
        parts.append("{")
        for index, (key, value) in enumerate(dict.items(obj)):
            if index:
                parts.append(",")
            _to_json(str.__str__(key), parts)
            parts.append(":")
            _to_json(value, parts)
        parts.append("}")
    else:  # the encoder makes nothing else
        parts.append("null")


def _frame_values(frame):
    np = _capture_numpy()
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


def _decode(obj):
    """A request's value: arrays arrive inline as base64 ``.npy`` bytes."""
    if isinstance(obj, list):
        return [_decode(item) for item in obj]
    if isinstance(obj, dict):
        if "__npy_b64__" in obj:
            raw = _a2b_base64(obj["__npy_b64__"])
            return _capture_numpy().read_array(_BytesIO(raw), allow_pickle=False)
        return {key: _decode(value) for key, value in obj.items()}
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


def handle(request, out_dir, ns):
    """Answer ``request`` against namespace ``ns``; write the answer into ``out_dir``."""
    encoder = _Encoder(out_dir)
    try:
        response = _answer(request, ns, encoder)
    except _TooLarge as exc:
        response = {"ok": False, "too_large": str(exc)}
    except BaseException as exc:  # the student's code may raise anything, SystemExit too
        if isinstance(exc, KeyboardInterrupt):
            response = {"ok": False, "interrupted": True}
        else:
            try:
                evalue = str(exc)[:MAX_EVALUE_CHARS]
            except BaseException:  # a __str__ that raises
                evalue = ""
            response = {"ok": False, "ename": str(type(exc).__name__)[:100], "evalue": evalue}
    parts = []
    _to_json(response, parts)
    _write_file(_path_join(out_dir, "response.json"), "".join(parts).encode("utf-8",
                                                                            "backslashreplace"))


def deterministic(seed=0):
    """Before a check runs the student's code (one train_step from hidden weights, say):
    the same seeds for every random op (``keras.utils.set_random_seed``) and deterministic
    op implementations (``tf.config.experimental.enable_op_determinism``), so that the
    result repeats exactly, on GPU too. Only for modules the notebook imported itself:
    a notebook that never imported TensorFlow does not get it imported here."""
    keras = _sys.modules.get("keras")
    if keras is not None:
        try:
            keras.utils.set_random_seed(seed)
        except Exception:  # an unusual Keras; the check still runs
            pass
    tf = _sys.modules.get("tensorflow")
    if tf is not None:
        try:
            tf.config.experimental.enable_op_determinism()
        except Exception:
            pass


def _untraced(function, *args, **kwargs):
    """Call student code; whatever trace or profile function it sets is gone before this
    returns (with it, code could rewrite the locals of the frames that encode the answer)."""
    if not _IN_KERNEL:  # the self-check: the student's own debugger keeps its tracing
        return function(*args, **kwargs)
    try:
        return function(*args, **kwargs)
    finally:
        _settrace(None)
        _setprofile(None)


def _answer(request, ns, encoder):
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
        args = _decode(request.get("args", []))
        kwargs = _decode(request.get("kwargs", {}))
        return {"ok": True, "value": encoder.encode(_untraced(target, *args, **kwargs))}
    if op == "evaluate":
        scope = dict(_decode(request.get("inputs", {})))
        scope.update(ns=ns, describe_model=describe_model, user_names=user_names,
                     __builtins__=_BUILTINS)
        _untraced(exec, compile(request["code"], "<check>", "exec"), scope)
        return {"ok": True, "value": encoder.encode(scope.get("result"))}
    raise ValueError("unknown probe op %r" % op)


def _install(token, numpy_file):
    """Run by the grader's first execute request, before any cell of the notebook: take
    numpy, the namespace and the kernel's session, and register the probe handler."""
    global _IN_KERNEL
    _capture_numpy(numpy_file)
    _IN_KERNEL = True
    from IPython import get_ipython

    shell = get_ipython()
    kernel = shell.kernel
    ns = shell.user_ns
    _PRISTINE.update({name: ns[name] for name in _HIDDEN_NAMES if name in ns})
    _PRISTINE.setdefault("open", None)  # marks the map as filled even without IPython's open
    send = kernel.session.send
    settrace, setprofile = _sys.settrace, _sys.setprofile
    gettrace, getprofile = _sys.gettrace, _sys.getprofile

    def on_probe(stream, idents, msg):
        # A trace or profile function the notebook installed could rewrite this frame's
        # locals: none runs while the probe is answered (the notebook's come back after).
        tracer, profiler = gettrace(), getprofile()
        settrace(None)
        setprofile(None)
        status = "ok"
        try:
            content = msg["content"]
            handle(content["request"], content["out_dir"], ns)
        except BaseException:  # noqa: BLE001 - an interrupt while writing, a bad request
            status = "error"
        finally:
            settrace(None)  # and none the student's function set while it ran
            setprofile(None)
        send(stream, "grader_probe_reply", {"status": status}, msg, ident=idents)
        settrace(tracer)
        setprofile(profiler)

    kernel.shell_handlers["grader_probe_" + token] = on_probe
