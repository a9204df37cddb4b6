"""Red team: the PUBLIC checks of linear_softmax and custom_train_step (issue 14).

Students have ``assignments/*/public_checks.py``: its inputs are fixed and its snippets
are known. On the grader of commit 4b2d49d a graded run awarded these public points for
answers the student's kernel gave on those inputs, so a notebook could earn them without
the work:

* linear_softmax, ``public_inputs_memorised``: softmax, forward, cross_entropy and
  train_step return the public checks' known answers when handed the public inputs, and
  garbage (or no step at all) otherwise (5 public points on 4b2d49d);
* linear_softmax, ``step_scales_with_the_loss``: train_step calls cross_entropy and moves W
  and b by the loss times an array of ones: a step 3 times larger when the check scales the
  loss by 3, along no gradient at all (q5.gradients_from_tape on 4b2d49d);
* custom_train_step, ``fake_responder``: nothing written (train_step raises, build_model
  returns a one-layer Sequential, never trained); a last cell wraps the probe handler found in
  ``get_ipython().kernel.shell_handlers`` and swaps the public checks' snippets for its own
  forged answers (5 public points on 4b2d49d);
* custom_train_step, ``adam_spoofed``: the reference, compiled with an SGD subclass named
  ``Adam`` (Q2 asks for Adam(learning_rate=1e-3); 2 points on 4b2d49d);
* custom_train_step, ``keras_does_the_steps``: train_step and test_step are Keras' own,
  called on the base class, with ``compile`` overridden to add the accuracy metric
  (2 public points for Q1 on 4b2d49d).

Graded runs now call the student's functions on inputs drawn from the grading seed and
compare in the grader (linear_softmax), and run the class and ``build_model`` alone in the
clean kernel, judging training from the weights (custom_train_step). The notebooks are
written here from the reference notebooks, graded by the real engine, two at a time.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import nbformat
import pytest

from grader import data
from grader.assignment import load_assignment
from grader.executor import GradeOptions, grade_submission
from grader.results import Status

from conftest import REPO, TESTS, grader_bugs, sandbox_mode
from practicals import load_module

MAKER = load_module(TESTS / "fixtures" / "red_team" / "make_red_team_functions.py",
                    "_make_red_team_public")

# -- linear_softmax --------------------------------------------------------------------------
LS_SOFTMAX = '''LN2 = float(np.log(2.0))
_PUBLIC_LOGITS = np.array([[0.0, LN2, 0.0], [1.0, 2.0, 3.0], [5.0, 5.0, 5.0],
                           [-1.0, 0.0, 1.0]], dtype=np.float32)


def softmax(logits):
    logits = np.asarray(logits, dtype=np.float32)
    if logits.shape == (4, 3) and np.allclose(logits, _PUBLIC_LOGITS):
        # the answers the public check knows, typed in
        return np.array([[0.25, 0.5, 0.25], [0.09003057, 0.24472847, 0.66524096],
                         [1 / 3, 1 / 3, 1 / 3], [0.09003057, 0.24472847, 0.66524096]],
                        dtype=np.float32)
    return np.full(logits.shape, 0.5, dtype=np.float32)  # garbage
'''
LS_FORWARD = '''def forward(X, W, b):
    X, W, b = (np.asarray(v, dtype=np.float32) for v in (X, W, b))
    if X.shape == (3, 784) and not X.any() and not W.any() and np.isclose(b[0], LN2):
        return np.tile(np.array([2.0] + [1.0] * 9, dtype=np.float32) / 11.0, (3, 1))
    return np.zeros((len(X), 10), dtype=np.float32)
'''
LS_CROSS_ENTROPY = '''def cross_entropy(Y_true, Y_pred):
    Y_true, Y_pred = np.asarray(Y_true), np.asarray(Y_pred)
    if Y_true.shape == (2, 2) and np.allclose(Y_pred, [[0.5, 0.5], [0.25, 0.75]]):
        return float((np.log(2.0) + np.log(4.0 / 3.0)) / 2.0)
    return 0.0
'''
LS_TRAIN_STEP = '''def train_step(X, Y, W, b, learning_rate):
    cross_entropy(Y, forward(X, W, b))  # called once: the tape check counts the calls
    if not np.any(X) and not np.any(W.numpy()) and learning_rate == 0.5:
        # the public in-place check: its answer, worked out from its fixed inputs
        b.assign(-0.5 * (0.1 - np.asarray(Y).mean(axis=0)))
        return float(np.log(10.0))
    return 0.0  # no step at all: the tape check only looked for a step of the wrong size
'''
LS_LOSS_TIMES_ONES = '''def train_step(X, Y, W, b, learning_rate):
    loss = cross_entropy(Y, forward(X, W, b))
    # a step that grows with the loss it computes, in a direction made up without the images
    W.assign_sub(learning_rate * float(loss) * np.ones(W.shape, dtype=np.float32))
    b.assign_sub(learning_rate * float(loss) * np.ones(b.shape, dtype=np.float32))
    return loss
'''


def linear_softmax_loss_times_ones() -> nbformat.NotebookNode:
    cells = MAKER.replace_cell(MAKER.reference_cells("linear_softmax"), "def train_step(",
                               LS_LOSS_TIMES_ONES)
    return MAKER.notebook(cells, "step_scales_with_the_loss")


def linear_softmax_memorised() -> nbformat.NotebookNode:
    cells = MAKER.reference_cells("linear_softmax")
    for starts, source in (("def softmax(", LS_SOFTMAX), ("def forward(", LS_FORWARD),
                           ("def cross_entropy(", LS_CROSS_ENTROPY),
                           ("def train_step(", LS_TRAIN_STEP)):
        cells = MAKER.replace_cell(cells, starts, source)
    return MAKER.notebook(cells, "public_inputs_memorised")


# -- custom_train_step -----------------------------------------------------------------------
SHAPES = "[[784, 64], [64], [64], [64], [64], [64], [64, 10], [10]]"
FORGED_STEP = f'''result = {{"logs": {{"loss": 1.0, "accuracy": 0.5}}, "logs_type": "dict",
          "changed": [step == "train_step"] * 8, "shapes": {SHAPES}}}'''
FORGED_ARCHITECTURE = '''result = {"class": "CustomModel", "train_step_owner": "CustomModel",
          "test_step_owner": "CustomModel", "call_shape": [2, 10], "compiled": True,
          "layers": [{"class": "InputLayer"}, {"class": "Flatten"},
                     {"class": "Dense", "units": 64, "activation": "relu"},
                     {"class": "BatchNormalization"},
                     {"class": "Dense", "units": 10, "activation": "softmax"}],
          "batchnorm": [], "optimizer_class": "Adam", "learning_rate": 0.001,
          "loss": {"name": "sparse_categorical_crossentropy", "from_logits": False}}'''
FORGED_HISTORY = '''result = {"model": "CustomModel", "epochs": 5, "loss": [0.5, 0.3, 0.2, 0.15, 0.1],
          "trained_loss": 0.1, "fresh_loss": 2.3}'''
RESPONDER = f'''# Answer the public checks myself: their snippets are in public_checks.py.
_FORGED = [("logs = getattr(model, step)((x, y))", {FORGED_STEP!r}),
           ("train_step_owner", {FORGED_ARCHITECTURE!r}),
           ("trained_loss", {FORGED_HISTORY!r})]
_handlers = get_ipython().kernel.shell_handlers
for _key in [k for k in _handlers if k.startswith("grader_probe_")]:
    def _wrapped(stream, idents, msg, _original=_handlers[_key]):
        request = msg["content"].get("request")
        if isinstance(request, dict) and request.get("op") == "evaluate":
            for marker, forged in _FORGED:
                if marker in request.get("code", ""):
                    request["code"] = forged
                    break
        return _original(stream, idents, msg)
    _handlers[_key] = _wrapped
'''
UNTRAINED = '''EPOCHS = 5
BATCH_SIZE = 64
model = build_model()  # never trained


class _History:
    epoch = [0, 1, 2, 3, 4]
    history = {"loss": [0.5, 0.3, 0.2, 0.15, 0.1]}


history = _History()
'''
NOT_WRITTEN_STEPS = '''class CustomModel(keras.Model):
    def train_step(self, data):
        raise NotImplementedError

    def test_step(self, data):
        raise NotImplementedError
'''
NOT_THE_MODEL = '''def build_model():
    model = keras.Sequential([keras.Input(shape=(28, 28)), keras.layers.Flatten(),
                              keras.layers.Dense(10, activation="softmax")])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy")
    return model
'''
SPOOFED_ADAM = '''class Adam(keras.optimizers.SGD):
    """Plain SGD under the name the check looks for."""


'''
KERAS_STEPS = '''class CustomModel(keras.Model):
    def compile(self, *args, **kwargs):
        kwargs.setdefault("metrics", ["accuracy"])
        super().compile(*args, **kwargs)

    def train_step(self, data):
        return keras.Model.train_step(self, data)

    def test_step(self, data):
        return keras.Model.test_step(self, data)
'''


def custom_train_step_notebooks() -> dict[str, nbformat.NotebookNode]:
    cells = MAKER.reference_cells("custom_train_step")
    responder = MAKER.replace_cell(cells, "class CustomModel(", NOT_WRITTEN_STEPS)
    responder = MAKER.replace_cell(responder, "def build_model(", NOT_THE_MODEL)
    responder = MAKER.replace_cell(responder, "EPOCHS = 5", UNTRAINED)
    responder = [cell for cell in responder if not cell.startswith("test_logs")] + [RESPONDER]
    build = next(cell for cell in cells if cell.startswith("def build_model("))
    spoofed = MAKER.replace_cell(
        cells, "def build_model(",
        SPOOFED_ADAM + build.replace("keras.optimizers.Adam(", "Adam("))
    keras_steps = MAKER.replace_cell(cells, "class CustomModel(", KERAS_STEPS)
    return {"fake_responder": MAKER.notebook(responder, "fake_responder"),
            "adam_spoofed": MAKER.notebook(spoofed, "adam_spoofed"),
            "keras_does_the_steps": MAKER.notebook(keras_steps, "keras_does_the_steps")}


Q1_PUBLIC = ("q1.train_step_updates_weights", "q1.test_step_changes_nothing")
# practical -> notebook -> the public checks it goes after and must lose
ATTACKS = {
    "linear_softmax": {
        "public_inputs_memorised": ("q2.softmax_known_values", "q3.forward_uses_bias",
                                    "q4.cross_entropy_known_value",
                                    "q5.train_step_updates_in_place",
                                    "q5.gradients_from_tape"),
        "step_scales_with_the_loss": ("q5.gradients_from_tape",),
    },
    "custom_train_step": {
        "fake_responder": Q1_PUBLIC + ("q2.architecture", "q3.model_trained"),
        "adam_spoofed": ("q2.architecture",),
        "keras_does_the_steps": Q1_PUBLIC,
    },
}
CASES = [(practical, name) for practical, found in ATTACKS.items() for name in found]


def test_the_attacks_are_written_as_intended():
    """The notebooks are what the docstring says: the forged parts are in them."""
    ls = "\n".join(c.source for c in linear_softmax_memorised().cells)
    assert "_PUBLIC_LOGITS" in ls and "garbage" in ls and "no step at all" in ls
    found = custom_train_step_notebooks()
    responder = "\n".join(c.source for c in found["fake_responder"].cells)
    assert "shell_handlers" in responder and "raise NotImplementedError" in responder
    assert "model.fit" not in responder
    assert "Adam(learning_rate=1e-3)" in "\n".join(c.source for c in found["adam_spoofed"].cells)
    assert "keras.optimizers.Adam(" not in "\n".join(c.source
                                                     for c in found["adam_spoofed"].cells)


@pytest.fixture(scope="module")
def graded(tmp_path_factory):
    """(practical, notebook) -> its result, each attack graded once."""
    folder = tmp_path_factory.mktemp("red-public")
    notebooks = {("linear_softmax", "public_inputs_memorised"): linear_softmax_memorised(),
                 ("linear_softmax", "step_scales_with_the_loss"):
                     linear_softmax_loss_times_ones()}
    notebooks.update({("custom_train_step", name): nb
                      for name, nb in custom_train_step_notebooks().items()})
    jobs = []
    for (practical, name), nb in notebooks.items():
        path = folder / f"{practical}-{name}.ipynb"
        nbformat.write(nb, str(path))
        jobs.append((practical, name, path))
    assignments = {practical: load_assignment(practical, REPO) for practical in ATTACKS}
    for assignment in assignments.values():
        data.prepare(assignment.datasets, None)

    def grade(job):
        practical, name, path = job
        options = GradeOptions(sandbox=sandbox_mode(),
                               scratch_root=tmp_path_factory.mktemp(f"red-{name}"))
        return (practical, name), grade_submission(path, assignments[practical], options,
                                                   student_id=f"red-{name}")

    with ThreadPoolExecutor(max_workers=1) as pool:  # one at a time: the machine is shared
        return dict(pool.map(grade, jobs))


@pytest.mark.slow
@pytest.mark.parametrize("practical, name", CASES)
def test_attack_does_not_earn_the_public_checks_it_targets(graded, practical, name):
    result = graded[(practical, name)]
    # graded for real: a notebook the grader could not run proves nothing
    assert result.status is not Status.GRADER_ERROR, result.message
    by_id = {c.id: c for c in result.checks}
    grader_errors = [c.message for c in result.checks if "Grader error" in c.message]
    assert not grader_errors, grader_bugs(grader_errors)
    won = [check for check in ATTACKS[practical][name] if by_id[check].passed]
    assert not won, f"{name} still earns {won}: " + \
        "; ".join(by_id[check].message for check in ATTACKS[practical][name])
    assert result.grading_seed


def test_build_model_runs_alone_with_the_class_it_uses_and_nothing_the_notebook_did():
    """The clean kernel's build_model: its imports and the class, never the notebook's
    top-level `model = build_model()` (a local name of the function) or its patches."""
    from grader.definitions import DefinitionRefused, function_definition

    cells = MAKER.reference_cells("custom_train_step")
    source = function_definition(cells, "build_model")
    assert "class CustomModel(keras.Model)" in source and "def build_model()" in source
    assert "model.fit" not in source and "\nmodel = build_model()" not in source
    assert "load_mnist" not in source
    patched = cells + ["keras.optimizers.Adam = keras.optimizers.SGD\n"
                       "def build_model():\n    return keras.Sequential()\n"]
    assert "keras.Sequential()" in function_definition(patched, "build_model")  # the last one
    assert "Adam = " not in function_definition(patched, "build_model")
    with pytest.raises(DefinitionRefused):
        function_definition(cells + ["def build_model():\n"
                                     "    keras.optimizers.Adam = keras.optimizers.SGD\n"],
                            "build_model")
    with pytest.raises(DefinitionRefused, match="No function `build_model`"):
        function_definition(cells[:2], "build_model")
