"""Cutting a submitted notebook down to one class definition, to run it on its own.

Some checks run a student's class where nothing else of the notebook ran (see
:mod:`grader.clean_kernel`): the custom-step practical runs the student's
``keras.Model`` subclass in a new kernel, with the base class's own ``train_step`` and
``test_step`` unavailable, so that neither the notebook's other cells nor Keras can do
the work for it. This module decides, from the submitted source alone (read by the
grader from the file, never from a kernel), what that kernel runs.

The rule (:func:`class_definition`):

1. Each code cell is turned into Python as IPython would (magics and ``!`` lines become
   calls, then dropped: see 3) and parsed; a cell that does not parse is skipped.
2. The class is the last top-level ``class NAME(...)`` whose bases include ``Model``
   (``keras.Model``, ``tf.keras.Model``, ``keras.models.Model``, ``Model``), named
   ``name`` when one is.
3. Kept besides the class, in notebook order: the top-level ``import`` / ``from ... import``
   statements of modules in :data:`ALLOWED_MODULES` before the class, and the top-level
   functions, classes and assignments whose names the class uses (and, in turn, what those
   use): the last definition of each name before the class, else its first one after it. Nothing else runs: no data loading, no
   ``build_model``, no training, no cell that patches anything.
4. The kept source is refused (:class:`DefinitionRefused`) if it uses a name of
   :data:`FORBIDDEN_NAMES` or an attribute of :data:`FORBIDDEN_ATTRIBUTES` (ways out of the class: ``importlib.reload`` of Keras'
   trainer, ``sys.modules``, ``gc``, frames, ``exec``/``eval``, ``getattr``-style
   patching), assigns to an attribute of anything but ``self`` (patching ``keras.Model``
   from the class body or a method), or decorates the class. An honest ``train_step``
   needs none of these.
"""

from __future__ import annotations

import ast
from dataclasses import dataclass

ALLOWED_MODULES = frozenset({"numpy", "tensorflow", "keras", "math", "functools", "typing",
                             "__future__"})

FORBIDDEN_NAMES = frozenset({
    "importlib", "reload", "__import__", "exec", "eval", "compile", "globals", "locals", "vars",
    "setattr", "delattr", "getattr", "gc", "sys", "builtins", "__builtins__", "inspect",
    "ctypes", "os", "subprocess", "open", "get_ipython", "breakpoint", "__main__",
    "TensorFlowTrainer", "Trainer", "_grader_pinned",
})
FORBIDDEN_ATTRIBUTES = frozenset({
    "__subclasses__", "__globals__", "__code__", "__closure__", "__dict__", "__mro__",
    "__bases__", "__base__", "__setattr__", "__delattr__", "__getattribute__", "__builtins__",
    "__import__", "f_back", "f_globals", "f_locals", "gi_frame", "tb_frame", "src", "reload",
    "importlib", "modules", "TensorFlowTrainer", "Trainer", "train_function", "test_function",
    "make_train_function", "make_test_function",
})


class DefinitionRefused(Exception):
    """The submitted class cannot be run on its own; the message says why, for the student."""


@dataclass(frozen=True)
class ClassDefinition:
    name: str  # the class's name
    source: str  # what the clean kernel runs: imports, helpers, then the class
    defines_call: bool  # the class has its own call(): build it as CustomModel()


def _python_of(cell: str) -> str:
    try:
        from IPython.core.inputtransformer2 import TransformerManager
    except ImportError:  # pragma: no cover - IPython comes with ipykernel
        return cell
    try:
        return TransformerManager().transform_cell(cell)
    except Exception:  # noqa: BLE001 - a cell IPython cannot read is skipped like a bad one
        return ""


def _is_model_base(base: ast.expr) -> bool:
    if isinstance(base, ast.Name):
        return base.id == "Model"
    return isinstance(base, ast.Attribute) and base.attr == "Model"


def _defined_names(node: ast.stmt) -> set[str]:
    if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
        return {node.name}
    targets: list[ast.expr] = []
    if isinstance(node, ast.Assign):
        targets = list(node.targets)
    elif isinstance(node, (ast.AnnAssign, ast.AugAssign)):
        targets = [node.target]
    names: set[str] = set()
    while targets:  # plain names and tuples of them; `a.b = ...` or `a[i] = ...` define nothing
        target = targets.pop()
        if isinstance(target, ast.Name):
            names.add(target.id)
        elif isinstance(target, (ast.Tuple, ast.List)):
            targets.extend(target.elts)
        elif isinstance(target, ast.Starred):
            targets.append(target.value)
    return names


def _used_names(node: ast.AST) -> set[str]:
    return {n.id for n in ast.walk(node) if isinstance(n, ast.Name)}


def _allowed_module(dotted: str) -> bool:
    # keras.src (Keras' private implementation, its trainers included) is not public API.
    parts = dotted.split(".")
    return parts[0] in ALLOWED_MODULES and "src" not in parts and "trainers" not in parts


def _allowed_import(node: ast.stmt) -> bool:
    if isinstance(node, ast.Import):
        return all(_allowed_module(alias.name) for alias in node.names)
    if isinstance(node, ast.ImportFrom):
        return node.level == 0 and _allowed_module(node.module or "") and \
            all(alias.name not in FORBIDDEN_NAMES for alias in node.names)
    return False


def class_definition(cells: tuple[str, ...] | list[str], name: str = "CustomModel",
                     ) -> ClassDefinition:
    """What a clean kernel runs to define the student's ``keras.Model`` subclass (the rule
    is in this module's docstring). Raises :class:`DefinitionRefused`."""
    statements = _statements(cells)
    candidates = [i for i, node in enumerate(statements) if isinstance(node, ast.ClassDef)
                  and any(_is_model_base(base) for base in node.bases)]
    if not candidates:
        raise DefinitionRefused(
            f"No class deriving from keras.Model was found at the top level of a code cell; "
            f"expected `class {name}(keras.Model):`. Define the class in a cell of its own, "
            "not inside a function or an if block.")
    named = [i for i in candidates if statements[i].name == name]
    position = (named or candidates)[-1]
    target = statements[position]
    if target.decorator_list:
        raise DefinitionRefused(f"`{target.name}` is decorated; expected a plain class "
                                "definition. Remove the decorator.")
    module = _with_helpers(statements, position)
    _refuse_escapes(module, target.name)
    defines_call = any(isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef))
                       and node.name == "call" for node in target.body)
    return ClassDefinition(name=target.name, source=ast.unparse(module),
                           defines_call=defines_call)


def function_definition(cells: tuple[str, ...] | list[str], name: str) -> str:
    """What a clean kernel runs to define the student's top-level function ``name`` (e.g.
    ``build_model``), by the rule of :func:`class_definition`: the last top-level
    ``def name(...)``, the allowed imports before it and the helpers it uses (the model
    class among them), refused likewise. Raises :class:`DefinitionRefused`."""
    statements = _statements(cells)
    found = [i for i, node in enumerate(statements)
             if isinstance(node, ast.FunctionDef) and node.name == name]
    if not found:
        raise DefinitionRefused(
            f"No function `{name}` was found at the top level of a code cell; expected "
            f"`def {name}():`. Define it in a cell of its own, not inside an if block.")
    target = statements[found[-1]]
    if target.decorator_list:
        raise DefinitionRefused(f"`{name}` is decorated; expected a plain function. Remove "
                                "the decorator.")
    # Its free names only: a local `model = ...` must not pull in the notebook's top-level
    # `model = build_model()` (which would build, or train, at definition time).
    local = {n.id for n in ast.walk(target) if isinstance(n, ast.Name)
             and isinstance(n.ctx, (ast.Store, ast.Del))}
    local |= {a.arg for a in ast.walk(target.args) if isinstance(a, ast.arg)}
    module = _with_helpers(statements, found[-1], _used_names(target) - local)
    _refuse_escapes(module, name)
    return ast.unparse(module)


def _statements(cells) -> list[ast.stmt]:
    statements: list[ast.stmt] = []
    for cell in cells:
        try:
            tree = ast.parse(_python_of(cell))
        except SyntaxError:
            continue
        statements.extend(tree.body)
    return statements


def _with_helpers(statements: list[ast.stmt], position: int,
                  used: set[str] | None = None) -> ast.Module:
    """The definition at ``position`` with the allowed imports before it and the top-level
    definitions it uses (``used``, else every name it mentions), transitively."""
    target = statements[position]
    # Helpers the definition uses, transitively: for each name, its last top-level definition
    # before the class, else its first after it (a method may use a name defined later,
    # as long as it exists when the method runs).
    order = list(range(position - 1, -1, -1)) + list(range(position + 1, len(statements)))
    wanted, kept, pending = set(), set(), _used_names(target) if used is None else used
    while pending:
        needed = pending - wanted
        wanted |= needed
        pending = set()
        for index in order:
            node = statements[index]
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                continue
            hits = _defined_names(node) & needed
            if hits:
                kept.add(index)
                needed = needed - hits
                pending |= _used_names(node)
    imports = [node for node in statements[:position] if _allowed_import(node)]
    body = imports + [statements[i] for i in sorted(kept) if i < position] + [target] + \
        [statements[i] for i in sorted(kept) if i > position]
    module = ast.Module(body=body, type_ignores=[])
    return module


def _refuse_escapes(module: ast.Module, name: str) -> None:
    found: list[str] = []
    for node in ast.walk(module):
        if isinstance(node, ast.Name) and node.id in FORBIDDEN_NAMES:
            found.append(node.id)
        elif isinstance(node, ast.Attribute) and node.attr in FORBIDDEN_ATTRIBUTES:
            found.append(f".{node.attr}")
        elif isinstance(node, (ast.Import, ast.ImportFrom)) and not _allowed_import(node):
            found.append("import " + ", ".join(a.name for a in node.names))
        elif isinstance(node, (ast.Assign, ast.AugAssign, ast.AnnAssign, ast.Delete)):
            targets = node.targets if isinstance(node, (ast.Assign, ast.Delete)) \
                else [node.target]
            for target in targets:
                for sub in ast.walk(target):
                    if isinstance(sub, ast.Attribute) and _root(sub) != "self":
                        found.append(f"assignment to {ast.unparse(sub)}")
        elif isinstance(node, (ast.Global, ast.Nonlocal)):
            found.append(type(node).__name__.lower())
    if found:
        shown = ", ".join(sorted(set(found))[:5])
        raise DefinitionRefused(
            f"`{name}` (or a helper it uses) contains {shown}, which the grader does not run: "
            "it runs your class on its own with only numpy, tensorflow and keras. Write "
            "train_step and test_step with TensorFlow and Keras calls on `self`, and do not "
            "change other classes or modules.")


def _root(node: ast.expr) -> str:
    while isinstance(node, (ast.Attribute, ast.Subscript)):
        node = node.value
    return node.id if isinstance(node, ast.Name) else ""
