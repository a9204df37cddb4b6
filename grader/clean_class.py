"""The custom-step practical's clean kernel: its student's class run alone, for its checks.

Shared by the public checks (graded runs only) and the hidden checks of
``custom_train_step`` (see reference/custom_train_step/hidden_checks.py for the why): the
clean kernel (:mod:`grader.clean_kernel`) runs

1. :data:`PRELUDE`: it keeps Keras' own ``compile``, ``get_weights``, ``set_weights`` and
   ``reset_metrics``, then makes ``train_step`` and ``test_step`` of ``keras.Model`` and of
   every base class that defines them raise (``super().train_step(data)`` does no work);
2. the student's class definition alone (:func:`grader.definitions.class_definition`);
3. where a check needs it, ``build_model`` alone with what it uses
   (:func:`grader.definitions.function_definition`);

then a check's snippet, e.g. :data:`BUILD` (the grader's own model of Q2 around the
class, with weights and inputs drawn at grading time). Nothing here is secret: the inputs
come from the submission's grading seed, the expected answers are computed by the check.
"""

from __future__ import annotations

from .definitions import DefinitionRefused, class_definition, function_definition
from .errors import CheckFailed

DEFINITION_TIMEOUT_S = 30  # an honest class definition runs in milliseconds
WEIGHT_SHAPES = [[784, 64], [64], [64], [64], [64], [64], [64, 10], [10]]

PRELUDE = """
def _grader_prelude():
    import keras

    class BaseStepUnavailable(Exception):
        pass

    def unavailable(self, *args, **kwargs):
        raise BaseStepUnavailable(
            "keras.Model's own train_step and test_step are not available when the grader "
            "runs your class: write them yourself, without super().train_step(...)")

    pinned = {name: getattr(keras.Model, name)
              for name in ("compile", "get_weights", "set_weights", "reset_metrics")}
    for cls in (keras.Model, *keras.Model.__mro__):
        for name in ("train_step", "test_step"):
            if cls is keras.Model or name in vars(cls):
                setattr(cls, name, unavailable)
    return pinned


_grader_pinned = _grader_prelude()
del _grader_prelude
"""

# The grader's model of Q2 around the student's class (``class_name``; ``CustomModel()`` for a
# class with its own ``call``), its weights set to ``weights`` and compiled with Keras' own
# ``compile`` (``learning_rate``, ``loss``): ``ready`` when the weights' shapes fit.
BUILD = """
import numpy as np
import keras
pinned = ns["_grader_pinned"]
cls = ns[class_name]
if defines_call:
    model = cls()
    model(np.zeros((1, 28, 28), "float32"), training=False)
else:
    _inputs = keras.Input(shape=(28, 28))
    _hidden = keras.layers.Flatten()(_inputs)
    _hidden = keras.layers.Dense(64, activation="relu")(_hidden)
    _hidden = keras.layers.BatchNormalization()(_hidden)
    _outputs = keras.layers.Dense(10, activation="softmax")(_hidden)
    model = cls(_inputs, _outputs)
shapes = [list(np.shape(w)) for w in pinned["get_weights"](model)]
ready = shapes == [list(np.shape(w)) for w in weights]
if ready:
    pinned["set_weights"](model, weights)
    pinned["compile"](model, optimizer=keras.optimizers.SGD(learning_rate=learning_rate),
                      loss=loss)


def as_logs(logs):
    if not isinstance(logs, dict):
        return {"__type__": type(logs).__name__}
    return {str(k): float(v) for k, v in logs.items()}


def weights_of(model):
    return [np.array(w) for w in pinned["get_weights"](model)]


result = {"shapes": shapes}
"""


def _run_once(kernel, key: str, source: str, what: str) -> None:
    """Run ``source`` in the clean kernel once per submission (memorised on the kernel
    under ``key``, so that a definition that fails or hangs fails every check at once)."""
    problem = getattr(kernel, key, None)
    if problem is None:
        setattr(kernel, key, f"did not finish within {DEFINITION_TIMEOUT_S} s")
        failed = kernel.run(source, timeout=DEFINITION_TIMEOUT_S)
        problem = f"raised {failed['ename']}" if failed is not None else ""
        setattr(kernel, key, problem)
    if problem:
        raise CheckFailed(
            f"{what}, run on its own (with its imports and the helpers it uses, nothing else "
            f"of the notebook), {problem}. Make its cell work without the cells that load "
            "data, build or train the model.")


def clean_class_student(context):
    """The clean kernel of the submission whose :class:`~grader.fresh_inputs.GradingContext`
    is ``context``, with the prelude and the student's class definition run in it (once per
    submission); returns (its Student, the ClassDefinition)."""
    try:
        definition = class_definition(context.cells)
    except DefinitionRefused as refused:
        raise CheckFailed(str(refused)) from None
    if context.clean_kernel is None:
        raise CheckFailed("This check runs only when your instructor grades: it needs a "
                          "kernel of its own.")
    kernel = context.clean_kernel()
    if getattr(kernel, "custom_train_step_prelude", None) is None:
        failed = kernel.run(PRELUDE)
        if failed is not None:
            raise RuntimeError(f"the grader's prelude failed in the clean kernel: {failed}")
        kernel.custom_train_step_prelude = True
    _run_once(kernel, "custom_train_step_problem", definition.source, f"`{definition.name}`")
    return kernel.student, definition


def clean_build_model_student(context):
    """As :func:`clean_class_student`, with ``build_model`` (and what it uses) defined too;
    returns (its Student, the ClassDefinition)."""
    student, definition = clean_class_student(context)
    try:
        source = function_definition(context.cells, "build_model")
    except DefinitionRefused as refused:
        raise CheckFailed(str(refused)) from None
    _run_once(context.clean_kernel(), "custom_train_step_build_model", source,
              "`build_model`")
    return student, definition
