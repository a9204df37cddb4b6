"""The probe transport as a hostile notebook sees it (grader.probe, grader._kernel_side).

1. Symbolic links planted in the kernel's io folder never make the grader write, create
   or follow anything outside it (a host file, a host folder, the data cache).
2. A notebook that installs its own responder (replaces exec/compile/open/get_ipython in
   its namespace or builtins, patches json/numpy, adds input or AST transformers) gets
   no point its own functions do not earn: on the toy course and on linear_softmax.
3. A student exception raised during a hidden check never brings its text (or a class
   name made of the hidden input) into the results or the feedback page.
4. Answers that break the protocol (too large, too deep, object arrays, links, FIFOs,
   not JSON, lying .npy headers) fail their check cleanly and the next check still runs.

The hostile notebooks are generated here because they embed paths this test owns.
"""

import hashlib
import json
import os
import shutil

import nbformat
import numpy as np
import pytest
from nbformat.v4 import new_code_cell, new_notebook

from grader import data
from grader.assignment import Limits, load_assignment
from grader.checks import check, run_checks
from grader.compare import assert_allclose
from grader.errors import KernelUnresponsive, StudentCodeError
from grader.executor import GradeOptions
from grader.probe import InProcessTransport, Student
from grader.reports import write_feedback
from grader.runner import run_batch

from conftest import REPO, TOY_COURSE, requires_bubblewrap

FAST_LIMITS = Limits(cell_timeout_s=10, notebook_timeout_s=40, memory_mb=1024,
                     max_processes=64, max_file_mb=16, max_output_kb=64)
HOST_CONTENT = "the instructor's file: the grader must never write here\n"

# -- notebooks ------------------------------------------------------------------------------
FIND_IO = '''
import os, re
def _io_folder():
    try:
        from ipykernel.connect import get_connection_file
        return os.path.dirname(get_connection_file())
    except Exception:
        for line in open("/proc/self/mountinfo"):
            if "/io-" in line.split()[4]:
                return line.split()[4]
'''

HONEST = '''
import numpy as np

def square(x):
    return np.asarray(x) * np.asarray(x)

data = np.arange(10.0)
mean_of_squares = square(data).mean()
'''

# A responder for today's (old) protocol: request.json + in_<k>.npy in, response.json +
# out_<k>.npy out. It answers square(x) with x * x and mean_of_squares with 28.5 although
# the notebook's own square raises and its mean_of_squares is 0.
FAKE_RESPONDER = '''
import io as _io, json as _json, os as _os, types as _types, builtins as _builtins
import numpy as _np
_real = dict(open=open, load=_np.load, save=_np.save, dumps=_json.dumps, loads=_json.loads,
             compile=compile, exec=exec, asarray=_np.asarray, dump=_json.dump)

def _fake_handle(probe_dir, ns=None):
    with _real["open"](_os.path.join(probe_dir, "request.json")) as f:
        request = _real["loads"](f.read())
    if request["op"] == "call":
        x = _real["load"](_os.path.join(probe_dir, request["args"][0]["__ndarray__"]))
        _real["save"](_os.path.join(probe_dir, "out_0.npy"), x * x)
        response = {"ok": True, "value": {"__ndarray__": "out_0.npy"}}
    elif request["op"] == "get":
        response = {"ok": True, "value": 28.5}
    else:
        response = {"ok": True, "value": {"square": "function", "mean_of_squares": "float"}}
    with _real["open"](_os.path.join(probe_dir, "response.json"), "w") as f:
        f.write(_real["dumps"](response))

handle = _fake_handle
_REDIRECT = "def handle(d, ns):\\n    ns['_fake_handle'](d)\\n"
'''

NOT_WRITTEN = '''
def square(x):
    raise NotImplementedError

mean_of_squares = 0.0
'''

RETURNS_INPUT = '''
def square(x):
    return np.asarray(x)  # wrong: the hooks below turn it into x * x on the way out

mean_of_squares = 0.0
'''

# An input transformer that rewrites the probe's line into a call of the notebook's own
# responder (a hook of its own, and part of LINEAR_SOFTMAX_RESPONDER).
INPUT_TRANSFORMER_HOOK = '''
def _rewrite(lines):
    text = "".join(lines)
    found = re.findall(r"'([^']*probe-[0-9]+)'", text)
    if "_grader_probe" in text and found:
        return ["_fake_handle(%r)\\n" % found[-1]]
    return lines
get_ipython().input_transformers_cleanup.append(_rewrite)
'''

HOOKS = {
    "hook_namespace_exec": (NOT_WRITTEN, '''
def exec(code, g=None, l=None):
    if isinstance(g, dict) and g.get("__name__") == "_grader_probe":
        g["handle"] = _fake_handle
    else:
        _real["exec"](code, g, l)
'''),
    "hook_namespace_compile": (NOT_WRITTEN, '''
def compile(source, filename, mode, *args, **kwargs):
    if filename == "<grader>":
        source = _REDIRECT
    return _real["compile"](source, filename, mode, *args, **kwargs)
'''),
    "hook_namespace_open": (NOT_WRITTEN, '''
def open(path, *args, **kwargs):
    if str(path).endswith("_grader_probe.py"):
        return _io.StringIO(_REDIRECT)
    return _real["open"](path, *args, **kwargs)
'''),
    "hook_namespace_get_ipython": (NOT_WRITTEN, '''
_shell = get_ipython()
def get_ipython():
    ns = {"square": lambda x: _np.asarray(x) ** 2, "mean_of_squares": 28.5}
    return _types.SimpleNamespace(user_ns=ns, kernel=_shell.kernel)
'''),
    "hook_builtins_exec": (NOT_WRITTEN, '''
def _exec(code, g=None, l=None):
    if isinstance(g, dict) and g.get("__name__") == "_grader_probe":
        g["handle"] = _fake_handle
        return None
    return _real["exec"](code, g, l)
_builtins.exec = _exec
'''),
    "hook_json_dump": (NOT_WRITTEN, '''
def _dump(obj, fp, *args, **kwargs):
    name = str(getattr(fp, "name", ""))
    if isinstance(obj, dict) and "ok" in obj and name.endswith("response.json"):
        return _fake_handle(_os.path.dirname(name))
    return _real["dump"](obj, fp, *args, **kwargs)
_json.dump = _dump
'''),
    "hook_numpy_save": (RETURNS_INPUT, '''
def _save(file, arr, *args, **kwargs):
    name = str(file)
    if _os.path.basename(name).startswith("out_"):
        folder = _os.path.dirname(name)
        with _real["open"](_os.path.join(folder, "request.json")) as f:
            request = _real["loads"](f.read())
        arr = _real["load"](_os.path.join(folder, request["args"][0]["__ndarray__"])) ** 2
    return _real["save"](file, arr, *args, **kwargs)
_np.save = _save
'''),
    "hook_numpy_asarray": ('''
class _Lazy(_np.ndarray):
    pass

def square(x):
    return _real["asarray"](x).view(_Lazy)  # wrong: x itself

mean_of_squares = 0.0
''', '''
def _asarray(a, *args, **kwargs):
    out = _real["asarray"](a, *args, **kwargs)
    return _real["asarray"](out) ** 2 if type(a) is _Lazy else out
_np.asarray = _asarray
'''),
    "hook_input_transformer": (NOT_WRITTEN, INPUT_TRANSFORMER_HOOK),
    "hook_ast_transformer": (NOT_WRITTEN, '''
import ast as _ast
class _Rewrite(_ast.NodeTransformer):
    def visit_Module(self, node):
        text = _ast.unparse(node)
        found = re.findall(r"'([^']*probe-[0-9]+)'", text)
        if "_grader_probe" in text and found:
            return _ast.fix_missing_locations(_ast.parse("_fake_handle(%r)" % found[-1]))
        return node
get_ipython().ast_transformers.append(_Rewrite())
'''),
    "hook_settrace": (NOT_WRITTEN, """
import sys as _sys, base64 as _b64

def _input(request, folder):
    arg = request["args"][0]
    if "__npy_b64__" in arg:
        return _real["load"](_io.BytesIO(_b64.b64decode(arg["__npy_b64__"])))
    return _real["load"](_os.path.join(folder, arg["__ndarray__"]))

def _rewrite_locals(frame, event, arg):
    local = frame.f_locals
    response, request = local.get("response"), local.get("request")
    folder = local.get("probe_dir") or local.get("out_dir")
    if isinstance(response, dict) and response.get("ok") is False and \\
            isinstance(request, dict) and folder:
        if request.get("op") == "call":
            _real["save"](_os.path.join(folder, "out_0.npy"), _input(request, folder) ** 2)
            frame.f_locals["response"] = {"ok": True, "value": {"__ndarray__": "out_0.npy"}}
    if isinstance(response, dict) and isinstance(request, dict) and \\
            request.get("op") == "get" and response.get("value") == 0.0:
        frame.f_locals["response"] = {"ok": True, "value": 28.5}
    return _rewrite_locals

def _tracer(frame, event, arg):
    return _rewrite_locals if frame.f_code.co_name == "handle" else None
_sys.settrace(_tracer)
"""),
}
# Today's grader scores these above what the notebook's own functions earn (0).
NUMPY_HOOKS = {"hook_numpy_save", "hook_numpy_asarray"}  # square's checks only: 3 points


def _notebook(*sources: str) -> str:
    return nbformat.writes(new_notebook(cells=[new_code_cell(s) for s in sources]))


def _planting(links: dict[str, str]) -> str:
    """A cell that plants each name -> target link in the kernel's io folder."""
    return FIND_IO + f'''
_links = {links!r}
_io = _io_folder()
print("io folder:", _io)
for _name, _target in _links.items():
    _path = os.path.join(_io, _name)
    if os.path.lexists(_path):
        os.remove(_path)
    os.symlink(_target, _path)
'''


LEAKING = '''
import numpy as np

def square(x):
    x = np.asarray(x)
    if x.shape == (3,):
        return x * x  # the public example passes
    secret = "HIDDEN-INPUT:" + repr(x.tolist())
    print(secret)
    name = "Leak_" + "_".join(str(int(abs(v) * 1000)) for v in x.ravel()[:4])
    raise type(name, (ValueError,), {})(secret)

mean_of_squares = square(np.arange(10.0)[:3]).mean()
'''


# During the hidden check, square plants a FIFO and a link where the answer goes.
PLANTS_IN_THE_ANSWER_FOLDER = FIND_IO + '''
import numpy as np

def square(x):
    x = np.asarray(x)
    if x.shape != (3,):
        for root, folders, _ in os.walk(_io_folder()):
            for name in folders:
                if name.startswith("probe-"):
                    os.mkfifo(os.path.join(root, name, "response.json"))
                    os.symlink("/etc/passwd", os.path.join(root, name, "out_0.npy"))
    return x * x

data = np.arange(10.0)
mean_of_squares = (data * data).mean()
'''


def _sha(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture(scope="module")
def toy_module():
    return load_assignment("toy", TOY_COURSE)


@pytest.fixture(scope="module", params=["fresh", "prepared"])
def graded(request, tmp_path_factory, toy_module):
    """Every hostile toy notebook graded in one batch, as `grader run` grades."""
    root = tmp_path_factory.mktemp("probe-boundary")
    host = root / "host"
    host.mkdir()
    host_file = host / "instructor.txt"
    host_file.write_text(HOST_CONTENT)
    host_dir = host / "empty_folder"
    host_dir.mkdir()
    cache_file = data.mnist_npz()  # the data cache every later kernel reads
    cache_before = _sha(cache_file)
    cache_listing = sorted(p.name for p in cache_file.parent.iterdir())
    submissions = root / "submissions"
    submissions.mkdir()
    (submissions / "symlinks_to_host.ipynb").write_text(_notebook(HONEST, _planting({
        "_grader_probe.py": str(host_file), "probes": str(host_dir),
        "request.json": str(host_file), "response.json": str(host_file)})))
    (submissions / "symlinks_to_data_cache.ipynb").write_text(_notebook(HONEST, _planting({
        "_grader_probe.py": str(cache_file), "probes": str(cache_file.parent)})))
    for name, (functions, hook) in HOOKS.items():
        (submissions / f"{name}.ipynb").write_text(_notebook(
            "import numpy as np\nimport re\n", FAKE_RESPONDER, functions, hook))
    every_hook = "\n".join(hook for name, (_, hook) in HOOKS.items()
                           if name not in NUMPY_HOOKS)
    (submissions / "hook_everything.ipynb").write_text(_notebook(
        "import numpy as np\nimport re\n", FAKE_RESPONDER, NOT_WRITTEN, every_hook))
    (submissions / "leak_hidden_input.ipynb").write_text(_notebook(LEAKING))
    (submissions / "plants_in_the_answer_folder.ipynb").write_text(
        _notebook(PLANTS_IN_THE_ANSWER_FOLDER))
    shutil.copy(TOY_COURSE / "reference" / "toy" / "toy.ipynb", submissions / "honest.ipynb")
    out = root / "out"
    summary = run_batch(submissions, toy_module, out,
                        GradeOptions(sandbox="required", limits=FAST_LIMITS, warm_kernels=True,
                                     kernel_provider=request.param),
                        workers=2, use_cache=False, progress=False)
    return {"results": {r.student_id: r for r in summary.results}, "out": out, "root": root,
            "host_file": host_file, "host_dir": host_dir, "cache_file": cache_file,
            "cache_before": cache_before, "cache_listing": cache_listing}


@requires_bubblewrap
def test_links_planted_in_the_io_folder_are_never_followed(graded):
    assert graded["host_file"].read_text() == HOST_CONTENT
    assert list(graded["host_dir"].iterdir()) == []
    assert sorted(p.name for p in graded["host_file"].parent.iterdir()) == [
        "empty_folder", "instructor.txt"]
    assert _sha(graded["cache_file"]) == graded["cache_before"]
    assert sorted(p.name for p in graded["cache_file"].parent.iterdir()) == \
        graded["cache_listing"]
    assert sorted(p.name for p in graded["root"].iterdir()) == ["host", "out", "submissions"]
    # The links cost the notebook nothing: it is graded as its code deserves.
    for name in ("symlinks_to_host", "symlinks_to_data_cache"):
        result = graded["results"][name]
        assert "io folder: /" in (graded["out"] / "executed" / f"{name}.ipynb").read_text()
        assert (result.score, result.max_score) == (5, 5), [c.message for c in result.checks]


@requires_bubblewrap
@pytest.mark.parametrize("name", [*HOOKS, "hook_everything"])
def test_a_responder_of_the_notebook_earns_nothing(graded, name):
    result = graded["results"][name]
    assert graded["results"]["honest"].score == 5  # the probe itself works
    assert result.score == 0, [(c.id, c.message) for c in result.checks if c.passed]


@requires_bubblewrap
def test_hidden_inputs_never_reach_results_or_feedback(graded, toy_module):
    result = graded["results"]["leak_hidden_input"]
    verdicts = {c.id: c.passed for c in result.checks}
    assert verdicts == {"q1.square_small_example": True, "q1.square_hidden_input": False,
                        "q2.mean_of_squares_value": False}
    hidden_x = toy_module.expected.array("x")
    stored = (graded["out"] / "results" / "leak_hidden_input.json").read_text()
    page = write_feedback(result, graded["root"] / "feedback", None).read_text()
    for text in (stored, page):
        assert "HIDDEN-INPUT" not in text
        assert "Leak_" not in text
        assert repr(hidden_x.tolist())[1:12] not in text
    failed = next(c for c in result.checks if c.id == "q1.square_hidden_input")
    assert failed.message.startswith("Calling `square` on the hidden inputs raised an "
                                     "exception.")
    shutil.rmtree(graded["root"] / "feedback")


@requires_bubblewrap
def test_a_fifo_or_link_in_the_answer_folder_fails_only_that_check(graded):
    result = graded["results"]["plants_in_the_answer_folder"]
    verdicts = {c.id: c.passed for c in result.checks}
    assert verdicts == {"q1.square_small_example": True, "q1.square_hidden_input": False,
                        "q2.mean_of_squares_value": True}
    failed = next(c for c in result.checks if not c.passed)
    assert failed.message.startswith("This check could not finish: the kernel did not give "
                                     "a usable answer."), failed.message


# -- a real practical -----------------------------------------------------------------------
LINEAR_SOFTMAX_RESPONDER = '''
import io as _io, json as _json, os as _os, re
import numpy as _np
_real = dict(open=open, load=_np.load, save=_np.save, dumps=_json.dumps, loads=_json.loads,
             compile=compile, exec=exec)

def _softmax(z):
    z = _np.asarray(z, dtype="float64")
    e = _np.exp(z - z.max(axis=-1, keepdims=True))
    return (e / e.sum(axis=-1, keepdims=True)).astype("float32")

def _truth(name, args):
    if name == "softmax":
        return _softmax(args[0])
    if name == "forward":
        return _softmax(args[0] @ args[1] + args[2])
    if name == "cross_entropy":
        p = _np.maximum(_np.asarray(args[1], dtype="float64"), 1e-12)
        return float(-_np.mean(_np.sum(args[0] * _np.log(p), axis=1)))

def _fake_handle(probe_dir, ns=None):
    with _real["open"](_os.path.join(probe_dir, "request.json")) as f:
        request = _real["loads"](f.read())
    args = [_real["load"](_os.path.join(probe_dir, a["__ndarray__"]))
            if isinstance(a, dict) else a for a in request.get("args", [])]
    value = _truth(request.get("name"), args) if request["op"] == "call" else None
    if isinstance(value, _np.ndarray):
        _real["save"](_os.path.join(probe_dir, "out_0.npy"), value)
        value = {"__ndarray__": "out_0.npy"}
    with _real["open"](_os.path.join(probe_dir, "response.json"), "w") as f:
        f.write(_real["dumps"]({"ok": True, "value": value}))

handle = _fake_handle

def softmax(logits):
    raise NotImplementedError

def forward(X, W, b):
    raise NotImplementedError

def cross_entropy(Y_true, Y_pred):
    raise NotImplementedError

def exec(code, g=None, l=None):
    if isinstance(g, dict) and g.get("__name__") == "_grader_probe":
        g["handle"] = _fake_handle
    else:
        _real["exec"](code, g, l)
''' + INPUT_TRANSFORMER_HOOK

SOFTMAX_CHECKS = {"q2.softmax_known_values", "q3.forward_uses_bias",
                  "q4.cross_entropy_known_value", "q2.softmax_hidden_logits",
                  "q2.softmax_large_logits", "q3.forward_hidden_inputs",
                  "q4.cross_entropy_hidden_inputs"}


@requires_bubblewrap
def test_a_responder_earns_nothing_on_linear_softmax(tmp_path):
    assignment = load_assignment("linear_softmax", REPO)
    submissions = tmp_path / "submissions"
    submissions.mkdir()
    (submissions / "responder.ipynb").write_text(_notebook(LINEAR_SOFTMAX_RESPONDER))
    summary = run_batch(submissions, assignment, tmp_path / "out",
                        GradeOptions(sandbox="required", kernel_provider="fresh"),
                        workers=1, use_cache=False, progress=False)
    (result,) = summary.results
    passed = {c.id for c in result.checks if c.passed}
    assert SOFTMAX_CHECKS <= {c.id for c in result.checks}
    assert passed == set(), passed
    assert result.score == 0


# -- answers that break the protocol (no kernel: a transport that writes what it likes) ----
class WritesAnswer:
    """Answers every probe by putting files into the answer folder, as a kernel could."""

    def __init__(self, make):
        self.make = make

    def roundtrip(self, *args):
        out_dir = args[1] if len(args) == 3 else args[0]  # this protocol or the old one
        self.make(str(out_dir))


def _npy_bytes(array, allow_pickle=False) -> bytes:
    import io

    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=allow_pickle)
    return buffer.getvalue()


def _write(folder, name, content: bytes | str):
    path = os.path.join(folder, name)
    mode = "wb" if isinstance(content, bytes) else "w"
    with open(path, mode) as f:
        f.write(content)


def _array_answer(folder, raw: bytes):
    _write(folder, "out_0.npy", raw)
    _write(folder, "response.json", json.dumps({"ok": True, "value": {"__ndarray__": "out_0.npy"}}))


def _lying_header(folder):
    header = b"{'descr': '<f8', 'fortran_order': False, 'shape': (100000000000,), }"
    header += b" " * (64 - (10 + len(header) + 1) % 64) + b"\n"
    _array_answer(folder, b"\x93NUMPY\x01\x00" + len(header).to_bytes(2, "little") + header
                  + b"\0" * 64)


def _linked_array(target):
    def make(folder):
        os.symlink(target, os.path.join(folder, "out_0.npy"))
        _write(folder, "response.json",
               json.dumps({"ok": True, "value": {"__ndarray__": "out_0.npy"}}))
    return make


def _linked_response(target):
    def make(folder):
        os.symlink(target, os.path.join(folder, "response.json"))
    return make


MALFORMED = {
    "too_large": lambda d: _write(d, "response.json",
                                  '{"ok": true, "value": "' + "x" * (6 * 2**20) + '"}'),
    "deeply_nested": lambda d: _write(d, "response.json",
                                      '{"ok": true, "value": ' + "[" * 100_000 + "]" * 100_000 + "}"),
    "nested_past_the_cap": lambda d: _write(d, "response.json",
                                            '{"ok": true, "value": ' + "[" * 200 + "]" * 200 + "}"),
    "not_json": lambda d: _write(d, "response.json", "this is not JSON {"),
    "not_utf8": lambda d: _write(d, "response.json", b'{"ok": true, "value": "\xff\xfe"}'),
    "not_a_dict": lambda d: _write(d, "response.json", "[1, 2, 3]"),
    "object_array": lambda d: _array_answer(d, _npy_bytes(np.array([{"a": 1}, None]), True)),
    "lying_npy_header": _lying_header,
    "npz_instead_of_npy": lambda d: _array_answer(d, b"PK\x03\x04" + b"\0" * 100),
    "array_name_outside_the_folder": lambda d: _write(
        d, "response.json", json.dumps({"ok": True, "value": {"__ndarray__": "../../etc/passwd"}})),
    "fifo_response": lambda d: os.mkfifo(os.path.join(d, "response.json")),
    "error_with_odd_fields": lambda d: _write(d, "response.json", json.dumps(
        {"ok": False, "ename": {"not": "a name"}, "evalue": ["x"] * 3})),
}


def _square_checks():
    @check("q1.square_small_example", points=1)
    def first(student, expected):
        """square([1, 2, 3])."""
        assert_allclose(student.call("square", np.array([1.0, 2.0, 3.0])), [1.0, 4.0, 9.0],
                        what="square([1, 2, 3])")

    @check("q1.square_again", points=1)
    def second(student, expected):
        """square([1, 2, 3]) again."""
        assert_allclose(student.call("square", np.array([1.0, 2.0, 3.0])), [1.0, 4.0, 9.0],
                        what="square([1, 2, 3])")

    return [first.__grader_check__, second.__grader_check__]


@pytest.mark.parametrize("name", [*MALFORMED, "linked_array", "linked_response"])
def test_an_answer_that_breaks_the_protocol_fails_cleanly(tmp_path, name):
    secret = tmp_path / "host_answer.npy"
    secret.write_bytes(_npy_bytes(np.array([1.0, 4.0, 9.0])))  # would pass, if followed
    make = {"linked_array": _linked_array(str(secret)),
            "linked_response": _linked_response(str(secret)), **MALFORMED}[name]
    calls = []

    def answer(folder):
        calls.append(folder)
        if len(calls) == 1:
            make(folder)
        else:  # the next check gets a good answer: the batch goes on
            _array_answer(folder, _npy_bytes(np.array([1.0, 4.0, 9.0])))

    student = Student(WritesAnswer(answer), tmp_path / "work")
    first, second = run_checks(_square_checks(), student, None)
    assert not first.passed
    assert "Grader error" not in first.message, first.message
    assert second.passed, second.message
    assert secret.read_bytes() == _npy_bytes(np.array([1.0, 4.0, 9.0]))
    assert not (tmp_path / "work").exists() or list((tmp_path / "work").iterdir()) == []


def test_the_self_check_still_answers_in_process(tmp_path):
    namespace = {"square": lambda x: np.asarray(x) ** 2, "scores": {"a": [1, 2.5, None]}}
    student = Student(InProcessTransport(namespace), tmp_path / "work")
    assert student.call("square", np.array([1.0, 2.0])).tolist() == [1.0, 4.0]
    assert student.get("square") == {"__object__": "builtins.function"}
    assert student.get("scores") == {"a": [1, 2.5, None]}
    assert student.names() == {"square": "function", "scores": "dict"}
    assert list((tmp_path / "work").iterdir()) == []


# -- how a student's error becomes feedback (no kernel) ----------------------------------------
class Raises:
    default_timeout = 60.0

    def __init__(self, error):
        self.error = error

    def call(self, name, *args):
        raise self.error


def _softmax_check(hidden):
    @check("q1.softmax_values", points=1, hidden=hidden, hint="Subtract the row maximum.")
    def check_softmax_values(student, expected):
        """softmax on some logits."""
        student.call("softmax", np.zeros(3))
    return check_softmax_values.__grader_check__


@pytest.mark.parametrize("error", [
    StudentCodeError("ValueError", "HIDDEN-INPUT: [0.125, 7.5]", "softmax(0.125, 7.5)"),
    StudentCodeError("Leak_125_7500", "HIDDEN-INPUT", "softmax(<array shape=(2,)>)"),
    KernelUnresponsive("softmax(0.125, 7.5) was interrupted after running too long"),
    KeyError("HIDDEN-INPUT 0.125"),  # a check that trips over what the student returned
], ids=["evalue", "exception_class_name", "interrupted", "check_bug"])
def test_a_hidden_check_never_shows_student_text(error):
    (result,) = run_checks([_softmax_check(True)], Raises(error), None)
    assert not result.passed
    for leaked in ("HIDDEN", "0.125", "7.5", "Leak_"):
        assert leaked not in result.message, result.message
    assert result.message.endswith("Hint: Subtract the row maximum.")


def test_a_public_check_keeps_the_message_capped_and_without_colour():
    evalue = "\x1b[31mbad axis\x1b[0m " + "x" * 5000
    (result,) = run_checks([_softmax_check(False)],
                           Raises(StudentCodeError("ValueError", evalue, "softmax(x)")), None)
    assert result.message.startswith("Calling `softmax(x)` raised ValueError: bad axis xxx")
    assert "\x1b" not in result.message and len(result.message) < 1200


def test_a_name_the_notebook_redefined_is_listed(tmp_path, monkeypatch):
    # In a kernel, IPython's own `open` and `get_ipython` are left out of names(); one the
    # notebook replaced (to hook the probe, say) is listed like any other definition.
    from grader import _kernel_side

    ipython_open = object()
    monkeypatch.setattr(_kernel_side, "_PRISTINE", {"open": ipython_open, "get_ipython": None})
    namespace = {"open": ipython_open, "get_ipython": lambda: None, "W": 1.0}
    student = Student(InProcessTransport(namespace), tmp_path / "work")
    assert student.names() == {"get_ipython": "function", "W": "float"}


def test_removing_an_answer_folder_never_follows_its_links(tmp_path):
    host = tmp_path / "host_folder"
    host.mkdir()
    (host / "keep.txt").write_text(HOST_CONTENT)

    def answer(folder):
        os.symlink(host, os.path.join(folder, "escape"))
        os.mkdir(os.path.join(folder, "nested"))
        os.symlink(host / "keep.txt", os.path.join(folder, "nested", "keep.txt"))
        _array_answer(folder, _npy_bytes(np.array([1.0, 4.0, 9.0])))

    student = Student(WritesAnswer(answer), tmp_path / "work")
    assert student.call("square", np.array([1.0, 2.0, 3.0])).tolist() == [1.0, 4.0, 9.0]
    assert (host / "keep.txt").read_text() == HOST_CONTENT
    assert list((tmp_path / "work").iterdir()) == []


# -- a file beside the notebook, imported while the kernel starts ---------------------------
# A fresh kernel starts as `python -m ipykernel_launcher`, and `-m` looks in the working
# folder (the submission's files) first: a submitted `ipykernel_launcher.py` then ran
# before the probe was installed, free to hook the kernel unseen. It runs the real
# launcher afterwards, so the kernel starts either way; a marker file says whether it ran.
SHADOW_LAUNCHER = '''
import os, runpy, sys
open("ran_before_the_probe", "w").close()
here = os.path.dirname(os.path.abspath(__file__))
sys.path[:] = [p for p in sys.path if os.path.abspath(p or ".") != here]
del sys.modules["ipykernel_launcher"]
runpy.run_module("ipykernel_launcher", run_name="__main__", alter_sys=True)
'''


@requires_bubblewrap
def test_a_submitted_module_does_not_run_before_the_probe_is_installed(tmp_path, toy):
    from grader.executor import grade_submission

    folder = tmp_path / "with_launcher"
    folder.mkdir()
    nb = new_notebook(cells=[
        new_code_cell("import os\n"
                      "print('RAN BEFORE THE PROBE:', os.path.exists('ran_before_the_probe'))"),
        new_code_cell(HONEST)])
    nbformat.write(nb, str(folder / "toy.ipynb"))
    (folder / "ipykernel_launcher.py").write_text(SHADOW_LAUNCHER)
    result = grade_submission(folder / "toy.ipynb", toy,
                              GradeOptions(sandbox="required", limits=FAST_LIMITS,
                                           kernel_provider="fresh",
                                           executed_dir=tmp_path / "executed"),
                              "with_launcher", with_folder=True)
    executed = (tmp_path / "executed" / "with_launcher.ipynb").read_text()
    assert "RAN BEFORE THE PROBE: False" in executed, result.message
    assert result.score == result.max_score, [c.message for c in result.checks if not c.passed]
