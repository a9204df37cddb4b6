"""How a check looks into the student's notebook: :class:`Student`.

A check never touches the student's objects. It asks the kernel for *data*
(``student.get("W")``), or asks the kernel to call a student function on inputs
it sends (``student.call("softmax", logits)``), and compares what comes back in
the trusted grader process. The code that answers inside the kernel is
:mod:`grader._kernel_side`; its docstring describes the request and the answer.

The same :class:`Student` API runs over two transports:

* :class:`KernelTransport`: a sandboxed Jupyter kernel, used by ``grader run`` and
  ``grader check``;
* :class:`InProcessTransport`: the live namespace of the student's own notebook,
  used by the in-notebook ``check("q2")``.

The protocol with a kernel (everything the kernel writes is attacker-written):

1. **Install**, before any cell of the notebook runs: one ``execute_request``
   (:func:`install_code`) carries the source of :mod:`grader._kernel_side` inline and
   registers its handler under a shell message type with a random name,
   ``grader_probe_<32 hex>``. The grader writes no file for it.
2. **Request**: a message of that type on the shell channel, content
   ``{"request": {...}, "out_dir": "<path>"}``. Input arrays travel inline as base64
   ``.npy`` bytes (at most :data:`MAX_REQUEST_ARRAY_BYTES` per request). It never
   passes through ``run_cell``, so no transformer, event or name of the notebook's
   namespace is involved.
3. **Answer folder**: for each probe the grader makes ``probe-<24 hex>`` with
   ``mkdir`` relative to a descriptor of the io folder it opened itself (``O_NOFOLLOW``),
   and opens it as a descriptor before the kernel learns its name. It reads
   ``response.json`` and ``out_<k>.npy`` only relative to that descriptor, with
   ``O_NOFOLLOW | O_NONBLOCK``, regular files only, sizes checked with ``fstat`` before
   reading and again while reading; then removes the folder with ``shutil.rmtree``
   relative to the io folder's descriptor (which never follows a link).
4. **Validation**: the response must be UTF-8 JSON within :data:`MAX_RESPONSE_JSON_BYTES`,
   at most :data:`MAX_DEPTH` deep and :data:`MAX_NODES` values, strings capped; arrays are
   parsed from their ``.npy`` header by the grader (no pickle, no object or void dtypes,
   byte count exactly what the header claims, :data:`MAX_RESPONSE_ARRAY_BYTES` in all).
   Anything else is a :class:`MalformedAnswer`: that check fails cleanly, the others run.

What this does not guarantee: the student's code runs in the kernel's process and can,
with deliberate work against :mod:`grader._kernel_side`, reach the handler and the
objects it captured (see that module's docstring). The grader therefore never treats an
answer as true because of where it came from; a value that decides a score must be
recomputable where no student code ran.
"""

from __future__ import annotations

import base64
import io
import json
import math
import os
import queue
import re
import secrets
import shutil
import stat
import time
from pathlib import Path
from typing import Any, Callable, Protocol

import numpy as np

from . import _kernel_side
from .errors import CheckFailed, KernelUnresponsive, StudentCodeError

MAX_RESPONSE_JSON_BYTES = 5 * 2**20
MAX_RESPONSE_ARRAY_BYTES = 256 * 2**20
MAX_REQUEST_ARRAY_BYTES = 64 * 2**20
MAX_DEPTH = 32
MAX_NODES = 1_000_000
MAX_STRING_CHARS = 1_000_000
MAX_ARRAYS = 10_000
MAX_NAMES = 5_000
ALLOWED_DTYPE_KINDS = "biufcUSmM"
_ARRAY_NAME = re.compile(r"out_[0-9]{1,6}\.npy")
_IDENTIFIER = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,99}")
_ANSI = re.compile(r"\x1b\[[0-9;]*[A-Za-z]")
_O_READ = os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK | os.O_CLOEXEC
_O_DIR = os.O_RDONLY | os.O_DIRECTORY | os.O_NOFOLLOW | os.O_CLOEXEC


class MalformedAnswer(KernelUnresponsive):
    """The kernel's answer broke the protocol (a link, not JSON, too large, too deep,
    an object array): the check fails; it is never the grader's error."""


class Transport(Protocol):
    def roundtrip(self, request: dict, out_dir: str, timeout: float) -> None:
        """Have the student's side answer ``request``, writing its answer into ``out_dir``."""


class Student:
    """The student's notebook state, as seen by a check.

    ``work_dir`` is where the per-probe answer folders are made: the kernel's io folder
    for a kernel (it may be kernel-writable: see the module docstring), any private
    folder in process."""

    # The submission's grading context (:class:`grader.fresh_inputs.GradingContext`: its
    # grading seed, its cells, its clean kernel), set by the executor in graded runs only.
    # A public check draws its inputs from it there (students read the public checks: a
    # fixed input's answer can be looked up), and keeps its known examples without it (the
    # self-check, which awards nothing).
    grading = None

    def __init__(self, transport: Transport, work_dir: Path, default_timeout: float = 60.0):
        self._transport = transport
        self._work_dir = Path(work_dir)
        self._dir_fd: int | None = None
        self.default_timeout = default_timeout

    # -- the API checks use ---------------------------------------------------------
    def names(self) -> dict[str, str]:
        """The names the student defined, with their type names."""
        found = self._request({"op": "names"})
        if not isinstance(found, dict) or len(found) > MAX_NAMES or \
                not all(isinstance(v, str) for v in found.values()):
            raise MalformedAnswer("the kernel's list of names was malformed")
        return {k: v[:200] for k, v in found.items()}

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

    def close(self) -> None:
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    def __del__(self) -> None:
        try:
            self.close()
        except Exception:  # noqa: BLE001, S110 - interpreter shutdown
            pass

    # -- the protocol -----------------------------------------------------------------
    def _request(self, request: dict, *, args=(), kwargs=None, inputs=None,
                 timeout: float | None = None, what: str = "") -> Any:
        budget = [MAX_REQUEST_ARRAY_BYTES]
        if args:
            request["args"] = [_encode_input(a, budget) for a in args]
        if kwargs:
            request["kwargs"] = {k: _encode_input(v, budget) for k, v in kwargs.items()}
        if inputs:
            request["inputs"] = {k: _encode_input(v, budget) for k, v in inputs.items()}
        if request["op"] in ("call", "evaluate") and \
                getattr(self._transport, "deterministic", False):
            request["deterministic"] = True
        parent = self._parent_fd()
        name = f"probe-{secrets.token_hex(12)}"
        try:
            try:  # the kernel may have filled the io folder's disk: its check fails, not ours
                os.mkdir(name, 0o700, dir_fd=parent)
                folder = os.open(name, _O_DIR, dir_fd=parent)
            except OSError as error:
                raise KernelUnresponsive("there was no room for the kernel's answer") from error
            try:
                self._transport.roundtrip(request, str(self._work_dir / name),
                                          timeout or self.default_timeout)
                response = _read_response(folder)
            finally:
                os.close(folder)
            return self._interpret(response, request, what or request.get("name", ""))
        finally:
            try:  # fd-based: never follows a link the kernel put there
                shutil.rmtree(name, dir_fd=parent, ignore_errors=True)
            except RecursionError:  # folders nested past the stack: the io folder goes later
                pass

    def _parent_fd(self) -> int:
        if self._dir_fd is None:
            self._work_dir.mkdir(parents=True, exist_ok=True)
            self._dir_fd = os.open(self._work_dir, _O_DIR)
        return self._dir_fd

    def _interpret(self, response: Any, request: dict, what: str) -> Any:
        if not isinstance(response, dict) or not isinstance(response.get("ok"), bool):
            raise MalformedAnswer("the kernel's answer was malformed")
        if response["ok"]:
            if "value" not in response:
                raise MalformedAnswer("the kernel's answer held no value")
            return response["value"]
        name = str(request.get("name", ""))
        if "missing" in response and name:
            defined = response.get("defined")
            listed = sorted(k for k in defined if _IDENTIFIER.fullmatch(k)) \
                if isinstance(defined, dict) else []
            shown = ", ".join(listed[:40]) + (", ..." if len(listed) > 40 else "")
            raise CheckFailed(  # the names go in detail: a hidden check does not show them
                f"No variable or function `{name}` in your notebook. Define `{name}` exactly "
                "as the notebook asks, and run every cell from the top.",
                detail=f"Defined: {shown or 'nothing yet'}.")
        if "not_callable" in response and name:
            kind = response.get("type")
            kind = kind[:100] if isinstance(kind, str) else "value"
            raise CheckFailed(
                f"`{name}` is a {kind}, not a function. Define it with `def {name}(...):`."
            )
        if response.get("interrupted") is True:
            raise KernelUnresponsive(f"{what} was interrupted after running too long")
        if "too_large" in response:
            raise CheckFailed("The value your code produced is far too large to check.")
        ename = response.get("ename")
        ename = ename if isinstance(ename, str) and _IDENTIFIER.fullmatch(ename) else "Error"
        evalue = response.get("evalue")
        evalue = _ANSI.sub("", evalue)[:1000] if isinstance(evalue, str) else ""
        raise StudentCodeError(ename, evalue, what)


def _call_repr(name: str, args: tuple, kwargs: dict) -> str:
    parts = [_short(a) for a in args] + [f"{k}={_short(v)}" for k, v in kwargs.items()]
    return f"{name}({', '.join(parts)})"


def _short(value: Any) -> str:
    if isinstance(value, np.ndarray):
        return f"<array shape={tuple(value.shape)} dtype={value.dtype}>"
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _encode_input(value: Any, budget: list[int]) -> Any:
    """A check's input as request data: arrays inline as base64 ``.npy`` bytes."""
    if isinstance(value, (np.ndarray, np.generic)) and np.ndim(value) > 0:
        buffer = io.BytesIO()
        np.save(buffer, np.asarray(value), allow_pickle=False)
        budget[0] -= buffer.tell()
        if budget[0] < 0:
            raise ValueError(f"a check's inputs exceed {MAX_REQUEST_ARRAY_BYTES} bytes")
        return {"__npy_b64__": base64.b64encode(buffer.getvalue()).decode("ascii")}
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, (list, tuple)):
        return [_encode_input(v, budget) for v in value]
    if isinstance(value, dict):
        return {str(k): _encode_input(v, budget) for k, v in value.items()}
    return value


# -- reading an answer: everything here is attacker-written ------------------------------
def _read_file(folder: int, name: str, limit: int) -> bytes | None:
    """The bytes of regular file ``name`` in ``folder`` (a descriptor), never following a
    link or blocking on a FIFO; None when there is no such file."""
    try:
        fd = os.open(name, _O_READ, dir_fd=folder)
    except FileNotFoundError:
        return None
    except OSError as error:  # ELOOP: a symbolic link; anything else the kernel arranged
        raise MalformedAnswer(f"the kernel's {name} could not be opened safely") from error
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise MalformedAnswer(f"the kernel's {name} is not a regular file")
        if info.st_size > limit:
            raise CheckFailed("The value your code produced is far too large to check.")
        chunks, total = [], 0
        while True:
            chunk = os.read(fd, min(1 << 20, limit + 1 - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
            if total > limit:  # it grew after fstat
                raise CheckFailed("The value your code produced is far too large to check.")
        return b"".join(chunks)
    finally:
        os.close(fd)


def _read_response(folder: int) -> Any:
    raw = _read_file(folder, "response.json", MAX_RESPONSE_JSON_BYTES)
    if raw is None:
        raise KernelUnresponsive("the kernel gave no answer")
    try:
        response = json.loads(raw.decode("utf-8"))
    except (UnicodeDecodeError, ValueError, RecursionError) as error:
        raise MalformedAnswer("the kernel's answer was not valid JSON") from error
    _check_shape(response)
    if isinstance(response, dict) and response.get("ok") is True:
        budget = [MAX_RESPONSE_ARRAY_BYTES, MAX_ARRAYS]
        response["value"] = _decode_output(response.get("value"), folder, budget)
    return response


def _check_shape(obj: Any) -> None:
    """JSON types only, at most MAX_DEPTH deep, MAX_NODES values, strings capped."""
    stack, nodes = [(obj, 0)], 0
    while stack:
        item, depth = stack.pop()
        nodes += 1
        if nodes > MAX_NODES or depth > MAX_DEPTH:
            raise MalformedAnswer("the kernel's answer was nested too deeply or too large")
        if isinstance(item, str):
            if len(item) > MAX_STRING_CHARS:
                raise MalformedAnswer("the kernel's answer held an overlong string")
        elif isinstance(item, list):
            stack.extend((v, depth + 1) for v in item)
        elif isinstance(item, dict):
            for key, value in item.items():
                if len(key) > MAX_STRING_CHARS:
                    raise MalformedAnswer("the kernel's answer held an overlong key")
                stack.append((value, depth + 1))
        elif item is not None and not isinstance(item, (bool, int, float)):
            raise MalformedAnswer("the kernel's answer held an unexpected value")


def _decode_output(obj: Any, folder: int, budget: list[int]) -> Any:
    if isinstance(obj, list):
        return [_decode_output(v, folder, budget) for v in obj]
    if isinstance(obj, dict):
        if "__ndarray__" in obj:
            return _load_array(obj["__ndarray__"], folder, budget)
        if obj.get("__dataframe__") is True or obj.get("__series__") is True:
            obj = dict(obj)
            obj["values"] = _decode_output(obj.get("values"), folder, budget)
            return obj
        return {k: _decode_output(v, folder, budget) for k, v in obj.items()}
    return obj


def _load_array(name: Any, folder: int, budget: list[int]) -> np.ndarray:
    if not isinstance(name, str) or not _ARRAY_NAME.fullmatch(name):
        raise MalformedAnswer("the kernel announced an array under a name it may not use")
    budget[1] -= 1
    if budget[1] < 0:
        raise MalformedAnswer("the kernel's answer held too many arrays")
    raw = _read_file(folder, name, max(budget[0], 0))
    if raw is None:
        raise KernelUnresponsive("an array the kernel announced is missing")
    budget[0] -= len(raw)
    return parse_npy(raw)


def parse_npy(raw: bytes) -> np.ndarray:
    """An array from ``.npy`` bytes written by an attacker: plain dtypes only, and exactly
    as many bytes as the header claims (a header may not make us allocate)."""
    stream = io.BytesIO(raw)
    try:
        version = np.lib.format.read_magic(stream)
        if version == (1, 0):
            shape, fortran, dtype = np.lib.format.read_array_header_1_0(stream)
        elif version in ((2, 0), (3, 0)):
            shape, fortran, dtype = np.lib.format.read_array_header_2_0(stream)
        else:
            raise ValueError(f"npy version {version}")
    except (ValueError, SyntaxError, TypeError, OverflowError, EOFError) as error:
        raise MalformedAnswer("an array from the kernel had a malformed header") from error
    if dtype.hasobject or dtype.kind not in ALLOWED_DTYPE_KINDS or dtype.itemsize == 0 or \
            dtype.fields is not None or dtype.subdtype is not None or len(shape) > 32:
        raise MalformedAnswer(f"an array from the kernel has dtype {dtype.str!r}, which is "
                              "not plain data")
    count = math.prod(shape)
    offset = stream.tell()
    if count * dtype.itemsize != len(raw) - offset:
        raise MalformedAnswer("an array from the kernel does not hold what its header says")
    array = np.frombuffer(raw, dtype=dtype, count=count, offset=offset)
    return array.reshape(shape, order="F" if fortran else "C").copy()


class InProcessTransport:
    """Answers probes against a live namespace (the in-notebook self-check)."""

    def __init__(self, namespace: dict):
        self.namespace = namespace

    def roundtrip(self, request: dict, out_dir: str, timeout: float) -> None:
        _kernel_side.handle(request, out_dir, self.namespace)


# -- the kernel transport ----------------------------------------------------------------
def install_code(token: str) -> str:
    """The first execute request sent to a kernel, before any cell of the notebook: runs
    :mod:`grader._kernel_side` in a namespace of its own, with a private copy of
    ``builtins``, and registers the handler for ``grader_probe_<token>``. It refuses
    (ImportError) when ``import numpy`` would not load the grader's own numpy (a
    ``numpy.py`` beside the notebook), leaving that import to fail in the student's cell
    as it would anywhere."""
    source = Path(_kernel_side.__file__).read_text() + \
        f"\n_install({token!r}, {os.path.realpath(np.__file__)!r})\n"
    return ("exec(compile(%r, '<grader-probe>', 'exec'), {'__name__': '_grader_probe', "
            "'__builtins__': dict(vars(__import__('builtins')))})" % source)


def new_token() -> str:
    return secrets.token_hex(16)


class KernelTransport:
    """Answers probes through the handler :func:`install_code` registered in a kernel.

    Whatever the kernel prints or displays while a probe runs is drained and dropped:
    it never reaches the student's feedback (student code could print hidden inputs).
    ``token`` is None when the install failed: every probe then fails with ``problem``.
    """

    # Probes that run the student's code do so under TensorFlow's determinism controls
    # (see _kernel_side.deterministic). Not in the self-check's live namespace: reseeding
    # would change the random state of the student's own session.
    deterministic = True

    def __init__(self, kernel_client, interrupt: Callable[[], None], token: str | None,
                 problem: str = ""):
        self.kc = kernel_client  # a jupyter_client BlockingKernelClient
        self.interrupt = interrupt
        self.token = token
        self.problem = problem

    def roundtrip(self, request: dict, out_dir: str, timeout: float) -> None:
        if self.token is None:
            raise KernelUnresponsive(self.problem or "the grader could not reach your kernel")
        message = self.kc.session.msg(f"grader_probe_{self.token}",
                                      {"request": request, "out_dir": out_dir})
        msg_id = message["header"]["msg_id"]
        self.kc.shell_channel.send(message)
        await_shell_reply(self.kc, msg_id, timeout, self._interrupt)
        drain_iopub(self.kc)

    def _interrupt(self) -> None:
        try:
            self.interrupt()
        except Exception:  # noqa: BLE001, S110 - best effort; the caller reports the timeout
            pass



def next_message(kc, channel: str, timeout: float) -> dict:
    """The next message on ``channel`` ("shell" or "iopub") of a BlockingKernelClient, or
    :class:`queue.Empty` after ``timeout`` s. The channel's own synchronous poll:
    ``kc.get_shell_msg`` would run it through jupyter_core's ``run_sync``, which gives each
    checks' thread an asyncio event loop that nobody closes."""
    return getattr(kc, f"{channel}_channel").get_msg(timeout=timeout)


def await_shell_reply(kc, msg_id: str, timeout: float, interrupt: Callable[[], None],
                      dead: Callable[[], bool] = lambda: False) -> dict:
    """The shell reply to ``msg_id``. Past ``timeout`` the kernel is interrupted and
    :class:`KernelUnresponsive` raised (the hard limits kill it if it does not stop); a
    kernel that died (or that ``dead`` says was killed) raises at once."""
    deadline = time.monotonic() + timeout
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            interrupt()
            raise KernelUnresponsive(f"no answer within {timeout:.0f} s")
        try:
            reply = next_message(kc, "shell", min(remaining, 1.0))
        except queue.Empty:
            if not kc.is_alive() or dead():
                raise KernelUnresponsive("the kernel died") from None
            continue
        if reply["parent_header"].get("msg_id") == msg_id:
            return reply


def drain_iopub(kc) -> None:
    """Drop whatever the kernel printed or displayed: it never reaches feedback."""
    while True:
        try:
            next_message(kc, "iopub", 0)
        except queue.Empty:
            return


async def install_responder(kernel_client, timeout: float = 60.0) -> tuple[str | None, str]:
    """Send :func:`install_code` to a kernel no student code has run in yet (an async
    client). Returns (token, "") or (None, why it failed)."""
    token = new_token()
    try:
        reply = await kernel_client.execute(install_code(token), silent=True,
                                            store_history=False, allow_stdin=False,
                                            stop_on_error=False, reply=True, timeout=timeout)
    except Exception as error:  # noqa: BLE001 - a timeout or a dead kernel: the checks say so
        return None, f"the grader could not set up its probe in your kernel ({type(error).__name__})"
    content = reply.get("content", {})
    if content.get("status") != "ok":
        ename = content.get("ename", "Error")
        hint = (" A file beside your notebook shadows a module the grader needs (numpy.py?)."
                if ename == "ImportError" else "")
        return None, f"the grader could not set up its probe in your kernel ({ename}).{hint}"
    return token, ""


async def install_responder_in(kernel_manager, timeout: float = 60.0) -> tuple[str | None, str]:
    """:func:`install_responder` through a client of its own: for a kernel that nbclient
    does not drive (the clean kernels of :mod:`grader.clean_kernel` and the clean room)."""
    client = kernel_manager.client()
    client.start_channels()
    try:
        await client.wait_for_ready(timeout=timeout)
        return await install_responder(client, timeout)
    finally:
        client.stop_channels()


__all__ = ["KernelTransport", "InProcessTransport", "MalformedAnswer", "Student",
           "install_code", "install_responder", "install_responder_in", "parse_npy"]
