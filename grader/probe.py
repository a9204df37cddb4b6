"""How a check looks into the student's notebook: :class:`Student`.

A check never touches the student's objects. It asks the kernel for *data*
(``student.get("W")``), or asks the kernel to call a student function on inputs
it sends (``student.call("softmax", logits)``), and compares what comes back in
the trusted grader process. Requests and answers travel through a probe
directory as JSON and ``.npy`` files (loaded with ``allow_pickle=False``); the
code that answers them inside the kernel is :mod:`grader._kernel_side`.

The same :class:`Student` API runs over two transports:

* :class:`KernelTransport`: a sandboxed Jupyter kernel, used by ``grader run`` and
  ``grader check``;
* :class:`InProcessTransport`: the live namespace of the student's own notebook,
  used by the in-notebook ``check("q2")``.
"""

from __future__ import annotations

import itertools
import json
import os
import queue
import shutil
import time
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from . import _kernel_side
from .errors import CheckFailed, KernelUnresponsive, StudentCodeError

MAX_RESPONSE_JSON_BYTES = 5 * 2**20
MAX_RESPONSE_ARRAY_BYTES = 256 * 2**20


class Transport(Protocol):
    def roundtrip(self, probe_dir: Path, timeout: float) -> None:
        """Have the student's side answer the request in ``probe_dir``."""


class Student:
    """The student's notebook state, as seen by a check."""

    def __init__(self, transport: Transport, work_dir: Path, default_timeout: float = 60.0):
        self._transport = transport
        self._work_dir = Path(work_dir)
        self._counter = itertools.count()
        self.default_timeout = default_timeout

    # -- the API checks use ---------------------------------------------------------
    def names(self) -> dict[str, str]:
        """The names the student defined, with their type names."""
        return self._request({"op": "names"})

    def has(self, name: str) -> bool:
        return name in self.names()

    def get(self, name: str, *, timeout: float | None = None) -> Any:
        """The value of a global variable of the notebook, as data."""
        return self._request({"op": "get", "name": name}, timeout=timeout)

    def call(self, name: str, *args: Any, timeout: float | None = None, **kwargs: Any) -> Any:
        """Call the student's function ``name`` with the given inputs; return its result as data."""
        return self._request({"op": "call", "name": name}, args=args, kwargs=kwargs,
                             timeout=timeout, what=_call_repr(name, args, kwargs))

    def evaluate(self, code: str, *, what: str = "", timeout: float | None = None,
                 **inputs: Any) -> Any:
        """Run a snippet of the check's own code in the kernel and return its ``result``.

        The snippet sees ``ns`` (the student's namespace), ``describe_model`` and the
        given ``inputs`` as variables. It must never contain an expected value.
        """
        return self._request({"op": "evaluate", "code": code}, inputs=inputs,
                             timeout=timeout, what=what)

    # -- the protocol -----------------------------------------------------------------
    def _request(self, request: dict, *, args=(), kwargs=None, inputs=None,
                 timeout: float | None = None, what: str = "") -> Any:
        probe_dir = self._work_dir / f"probe-{next(self._counter)}"
        probe_dir.mkdir(parents=True)
        try:
            arrays = itertools.count()
            if args:
                request["args"] = [_encode_input(a, probe_dir, arrays) for a in args]
            if kwargs:
                request["kwargs"] = {k: _encode_input(v, probe_dir, arrays) for k, v in kwargs.items()}
            if inputs:
                request["inputs"] = {k: _encode_input(v, probe_dir, arrays) for k, v in inputs.items()}
            if request["op"] in ("call", "evaluate") and \
                    getattr(self._transport, "deterministic", False):
                request["deterministic"] = True
            (probe_dir / "request.json").write_text(json.dumps(request))
            self._transport.roundtrip(probe_dir, timeout or self.default_timeout)
            response = _read_response(probe_dir)
            return self._interpret(response, what or request.get("name", ""))
        finally:
            shutil.rmtree(probe_dir, ignore_errors=True)

    def _interpret(self, response: dict, what: str) -> Any:
        if response.get("ok"):
            return response["value"]
        if "missing" in response:
            defined = ", ".join(sorted(response.get("defined", {}))) or "nothing yet"
            raise CheckFailed(
                f"No variable or function `{response['missing']}` in your notebook "
                f"(defined: {defined}). Define `{response['missing']}` exactly as the "
                "notebook asks, and run every cell from the top."
            )
        if "not_callable" in response:
            raise CheckFailed(
                f"`{response['not_callable']}` is a {response.get('type')}, not a function. "
                f"Define it with `def {response['not_callable']}(...):`."
            )
        if response.get("interrupted"):
            raise KernelUnresponsive(f"{what} was interrupted after running too long")
        raise StudentCodeError(response.get("ename", "Error"), response.get("evalue", ""), what)


def _call_repr(name: str, args: tuple, kwargs: dict) -> str:
    parts = [_short(a) for a in args] + [f"{k}={_short(v)}" for k, v in kwargs.items()]
    return f"{name}({', '.join(parts)})"


def _short(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"<array shape={tuple(value.shape)} dtype={value.dtype}>"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _encode_input(value: Any, probe_dir: Path, counter) -> Any:
    if isinstance(value, (np.ndarray, np.generic)) and np.ndim(value) > 0:
        name = f"in_{next(counter)}.npy"
        np.save(probe_dir / name, np.asarray(value), allow_pickle=False)
        return {"__ndarray__": name}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_encode_input(v, probe_dir, counter) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode_input(v, probe_dir, counter) for k, v in value.items()}
    return value


def _read_response(probe_dir: Path) -> dict:
    path = probe_dir / "response.json"
    if not path.is_file() or path.is_symlink():
        raise KernelUnresponsive("the kernel gave no answer")
    if path.stat().st_size > MAX_RESPONSE_JSON_BYTES:
        raise CheckFailed("The value your code produced is far too large to check.")
    response = json.loads(path.read_text())
    budget = [MAX_RESPONSE_ARRAY_BYTES]
    if response.get("ok"):
        response["value"] = _decode_output(response.get("value"), probe_dir, budget)
    return response


def _decode_output(obj: Any, probe_dir: Path, budget: list[int]) -> Any:
    if isinstance(obj, list):
        return [_decode_output(v, probe_dir, budget) for v in obj]
    if isinstance(obj, dict):
        if "__ndarray__" in obj:
            path = probe_dir / os.path.basename(str(obj["__ndarray__"]))
            if path.is_symlink() or not path.is_file():
                raise KernelUnresponsive("an array the kernel announced is missing")
            budget[0] -= path.stat().st_size
            if budget[0] < 0:
                raise CheckFailed("The arrays your code produced are far too large to check.")
            return np.load(path, allow_pickle=False)
        if obj.get("__dataframe__") or obj.get("__series__"):
            obj = dict(obj)
            obj["values"] = _decode_output(obj["values"], probe_dir, budget)
            return obj
        return {k: _decode_output(v, probe_dir, budget) for k, v in obj.items()}
    return obj


class InProcessTransport:
    """Answers probes against a live namespace (the in-notebook self-check)."""

    def __init__(self, namespace: dict):
        self.namespace = namespace

    def roundtrip(self, probe_dir: Path, timeout: float) -> None:
        _kernel_side.handle(str(probe_dir), self.namespace)


class KernelTransport:
    """Answers probes by sending a few lines of code to a running Jupyter kernel.

    Whatever the kernel prints or displays while a probe runs is drained and dropped:
    it never reaches the student's feedback (student code could print hidden inputs).
    """

    # Probes that run the student's code do so under TensorFlow's determinism controls
    # (see _kernel_side.deterministic). Not in the self-check's live namespace: reseeding
    # would change the random state of the student's own session.
    deterministic = True

    def __init__(self, kernel_client, interrupt: Callable[[], None], helper_path: Path):
        self.kc = kernel_client  # a jupyter_client BlockingKernelClient
        self.interrupt = interrupt
        self.helper_path = helper_path
        helper_path.write_text(Path(_kernel_side.__file__).read_text())

    def roundtrip(self, probe_dir: Path, timeout: float) -> None:
        code = (
            "(lambda g: (exec(compile(open(%r).read(), '<grader>', 'exec'), g), "
            "g['handle'](%r, get_ipython().user_ns)))({'__name__': '_grader_probe'})"
            % (str(self.helper_path), str(probe_dir))
        )
        msg_id = self.kc.execute(code, silent=True, store_history=False, allow_stdin=False)
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._interrupt()
                raise KernelUnresponsive(f"no answer within {timeout:.0f} s")
            try:
                reply = self.kc.get_shell_msg(timeout=min(remaining, 1.0))
            except queue.Empty:
                if not self.kc.is_alive():
                    raise KernelUnresponsive("the kernel died") from None
                continue
            if reply["parent_header"].get("msg_id") == msg_id:
                break
        self._drain_iopub()

    def _interrupt(self) -> None:
        try:
            self.interrupt()
        except Exception:  # noqa: BLE001 - best effort; the caller reports the timeout
            pass

    def _drain_iopub(self) -> None:
        while True:
            try:
                self.kc.get_iopub_msg(timeout=0)
            except queue.Empty:
                return
