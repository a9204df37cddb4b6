"""HTML reports: a feedback page per submission and the class dashboard.

    write_feedback(result, OUT, executed)  -> OUT/feedback/<student>.html
    write_dashboard(results, OUT, history) -> OUT/index.html
    rebuild(OUT)                           -> re-renders both and the exports from OUT/results/*.json
    FeedbackWriter(OUT)                    -> feedback pages rendered in the background as
                                              results arrive (``grader run``)

The pages are self-contained (inline CSS, JS and SVG; no network) and open from file://.
Everything that comes from a student (ids, file names, outputs, error messages) is escaped
by Jinja's autoescape; notebook outputs are shown as text, never as HTML or JavaScript,
and each is capped at :data:`OUTPUT_CAP` characters. A Content-Security-Policy allows only
the page's own script (by hash), so even a slip in escaping cannot run injected code.
Data the dashboard's script needs travels in a ``<script type="application/json">`` block
made by :func:`script_json`, which escapes ``<``, ``>`` and ``&``.

Trained-quality metrics (the records of :func:`grader.compare.assert_in_band`) are drawn
as SVG strip plots by one layout function, :func:`_strip_plot`: on a feedback page the
student's value against the reference runs and band; on the dashboard every student's
value as a dot (:func:`metric_plots`), linked to their feedback page.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import logging
import math
import re
import sqlite3
import statistics
import warnings
from collections import Counter
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Mapping
from urllib.parse import quote

import jinja2
import nbformat
from markupsafe import Markup

from .exports import write_exports
from .results import CheckResult, Status, SubmissionResult, feedback_filename

__all__ = [
    "FLAGGED",
    "OUTPUT_CAP",
    "Cluster",
    "FeedbackWriter",
    "cluster_failures",
    "feedback_filename",
    "metric_plots",
    "rebuild",
    "score_histogram",
    "script_json",
    "write_dashboard",
    "write_feedback",
]

log = logging.getLogger(__name__)

OUTPUT_CAP = 20_000  # characters of one notebook output shown in a feedback page
SOURCE_CAP = 20_000  # characters of one cell's source
IMAGE_CAP = 2_000_000  # base64 characters of one image
NOTEBOOK_CAP = 3_000_000  # characters of outputs and images in one rendered notebook
FLAGGED = (Status.TIMEOUT, Status.MEMORY, Status.CRASHED, Status.INVALID, Status.GRADER_ERROR)
_TEMPLATES = Path(__file__).parent / "templates"
ANSI = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b[@-Z\\-_]")
_BASE64 = re.compile(r"[A-Za-z0-9+/=\s]+")


# ---------------------------------------------------------------- small helpers

def script_json(data: Any) -> Markup:
    """JSON safe to put inside ``<script type="application/json">``: ``<``, ``>``, ``&``
    and the JS line separators are written as ``\\u`` escapes, so no ``</script>`` can end
    the block early. Non-finite floats become ``null``."""
    text = json.dumps(_finite(data), ensure_ascii=False, separators=(",", ":"))
    for char, escape in (("<", "\\u003c"), (">", "\\u003e"), ("&", "\\u0026"),
                         ("\u2028", "\\u2028"), ("\u2029", "\\u2029")):
        text = text.replace(char, escape)
    return Markup(text)  # noqa: S704 - escaped above for a script data block


def _finite(data: Any) -> Any:
    if isinstance(data, float):
        return data if math.isfinite(data) else None
    if isinstance(data, dict):
        return {str(key): _finite(value) for key, value in data.items()}
    if isinstance(data, (list, tuple)):
        return [_finite(value) for value in data]
    return data


def _number(value: Any) -> float | None:
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def fmt_points(value: Any) -> str:
    number = _number(value)
    if number is None:
        return "–"
    return f"{number:.2f}".rstrip("0").rstrip(".") or "0"


def fmt_seconds(value: Any) -> str:
    number = _number(value)
    if number is None:
        return "–"
    if number < 10:
        return f"{number:.2f} s"
    if number < 120:
        return f"{number:.1f} s"
    minutes, seconds = divmod(int(round(number)), 60)
    return f"{minutes} min {seconds:02d} s"


def fmt_mb(value: Any) -> str:
    number = _number(value)
    if number is None or number <= 0:
        return "–"
    return f"{number / 1024:.2f} GB" if number >= 1024 else f"{number:.0f} MB"


def _percent(score: float, maximum: float) -> float | None:
    if not maximum or _number(score) is None or _number(maximum) is None:
        return None
    return max(0.0, min(100.0, 100.0 * score / maximum))


def _cap(text: str, limit: int = OUTPUT_CAP) -> tuple[str, str | None]:
    """(text, note): at most ``limit`` characters, and a note saying what was left out."""
    if len(text) <= limit:
        return text, None
    return text[:limit], (f"Output truncated: showing the first {limit // 1000} KB of "
                          f"{len(text) / 1000:.0f} KB. Run the notebook locally to see all of it.")


# ---------------------------------------------------------------- jinja

@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    env = jinja2.Environment(loader=jinja2.FileSystemLoader(str(_TEMPLATES)), autoescape=True,
                             trim_blocks=True, lstrip_blocks=True,
                             undefined=jinja2.StrictUndefined)
    env.filters.update(points=fmt_points, seconds=fmt_seconds, mb=fmt_mb,
                       href=lambda sid: "feedback/" + quote(feedback_filename(sid) + ".html"))
    env.globals.update(Status=Status)
    return env


@lru_cache(maxsize=1)
def _style() -> Markup:
    return Markup((_TEMPLATES / "_style.css").read_text(encoding="utf-8"))  # noqa: S704 - ours


@lru_cache(maxsize=1)
def _dashboard_script() -> tuple[Markup, str]:
    text = (_TEMPLATES / "_dashboard.js").read_text(encoding="utf-8")
    digest = base64.b64encode(hashlib.sha256(text.encode("utf-8")).digest()).decode()
    return Markup(text), f"'sha256-{digest}'"  # noqa: S704 - ours


def _csp(script_source: str = "'none'") -> Markup:
    """A Content-Security-Policy: no network, data: images, inline style, our script only."""
    return Markup(f"default-src 'none'; img-src data:; style-src 'unsafe-inline'; "
                  f"script-src {script_source}; base-uri 'none'; form-action 'none'")  # noqa: S704


def _write(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
    return path


# ---------------------------------------------------------------- the executed notebook

def _strip_ansi(text: str) -> str:
    return ANSI.sub("", text)


def _text(value: Any) -> str:
    if isinstance(value, list):
        return "".join(str(part) for part in value)
    return "" if value is None else str(value)


class _Budget:
    """Characters of outputs left for one notebook; keeps a huge notebook's page bounded."""

    def __init__(self, total: int) -> None:
        self.left = total

    def take(self, size: int) -> bool:
        if size > self.left:
            self.left = 0
            return False
        self.left -= size
        return True


def _render_output(output: Mapping[str, Any], budget: _Budget) -> dict[str, Any]:
    kind = output.get("output_type", "")
    if kind == "stream":
        text, note = _cap(_strip_ansi(_text(output.get("text"))))
        css = "stderr" if output.get("name") == "stderr" else "out"
        return _fit({"kind": "text", "css": css, "text": text, "note": note}, budget)
    if kind == "error":
        lines = output.get("traceback") or [f"{output.get('ename', 'Error')}: {output.get('evalue', '')}"]
        text, note = _cap(_strip_ansi("\n".join(str(line) for line in lines)))
        return _fit({"kind": "text", "css": "err", "text": text, "note": note}, budget)
    if kind in ("display_data", "execute_result"):
        data = output.get("data") or {}
        for mime in ("image/png", "image/jpeg", "image/gif"):
            if mime in data:
                payload = _text(data[mime])
                if len(payload) > IMAGE_CAP:
                    return {"kind": "text", "css": "out", "text": "",
                            "note": f"Image omitted: {len(payload) / 1e6:.1f} MB is over the "
                                    f"{IMAGE_CAP / 1e6:.0f} MB limit for one image."}
                if not _BASE64.fullmatch(payload) or not _valid_base64(payload):
                    return {"kind": "text", "css": "out", "text": "",
                            "note": f"Image omitted: its {mime} data is not valid base64."}
                if not budget.take(len(payload)):
                    return _omitted()
                clean = re.sub(r"\s+", "", payload)
                return {"kind": "image", "src": f"data:{mime};base64,{clean}", "mime": mime}
        for mime, note in (("text/plain", None),
                           ("text/markdown", "Markdown output shown as text."),
                           ("text/html", "HTML output shown as text, not rendered."),
                           ("image/svg+xml", "SVG output shown as text, not rendered."),
                           ("text/latex", "LaTeX output shown as text."),
                           ("application/javascript", "JavaScript output shown as text; it was not run."),
                           ("application/json", "JSON output shown as text.")):
            if mime in data:
                value = data[mime]
                raw = value if isinstance(value, (str, list)) else json.dumps(value, indent=1)
                text, cap_note = _cap(_strip_ansi(_text(raw)))
                joined = " ".join(part for part in (note, cap_note) if part) or None
                return _fit({"kind": "text", "css": "out", "text": text, "note": joined}, budget)
        kinds = ", ".join(sorted(str(key) for key in data)) or "no data"
        return {"kind": "text", "css": "out", "text": "", "note": f"Output of type {kinds} not shown."}
    return {"kind": "text", "css": "out", "text": "", "note": f"Output of type {kind!r} not shown."}


def _valid_base64(payload: str) -> bool:
    try:
        base64.b64decode(re.sub(r"\s+", "", payload)[:4096 - 4096 % 4] or "", validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


def _fit(item: dict[str, Any], budget: _Budget) -> dict[str, Any]:
    return item if budget.take(len(item["text"])) else _omitted()


def _omitted() -> dict[str, Any]:
    return {"kind": "text", "css": "out", "text": "",
            "note": "Output omitted: this notebook's outputs are over the size a feedback page shows."}


def render_notebook(path: Path) -> dict[str, Any]:
    """The executed notebook as plain data for the template: never raises."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            # nbformat's reader without schema validation: we only display what is there,
            # defensively, and validating 200 notebooks would double the rendering time
            notebook = nbformat.reader.reads(Path(path).read_text(encoding="utf-8"))
            if notebook.get("nbformat") != 4:
                notebook = nbformat.convert(notebook, 4)
    except Exception as error:  # noqa: BLE001 - say so in the page instead of failing
        return {"cells": [], "error": f"The executed notebook could not be read "
                                      f"({type(error).__name__}: {str(error)[:300]})."}
    budget = _Budget(NOTEBOOK_CAP)
    cells = []
    for index, cell in enumerate(notebook.get("cells", [])):
        source, note = _cap(_text(cell.get("source")), SOURCE_CAP)
        kind = cell.get("cell_type", "code")
        outputs = [_render_output(output, budget) for output in cell.get("outputs", [])] \
            if kind == "code" else []
        cells.append({"index": index, "kind": kind, "source": source, "note": note,
                      "count": cell.get("execution_count"), "outputs": outputs,
                      "has_error": any(o.get("output_type") == "error"
                                       for o in cell.get("outputs", []))})
    return {"cells": cells, "error": None}


# ---------------------------------------------------------------- strip plots (both pages)

def _band(metric: Mapping[str, Any]) -> tuple[tuple[float, ...], float | None, float | None]:
    """(reference values, low, high) of a metric record; non-finite numbers dropped."""
    reference = tuple(v for v in (_number(x) for x in metric.get("reference") or ()) if v is not None)
    low, high = _number(metric.get("low")), _number(metric.get("high"))
    band = metric.get("band")
    if isinstance(band, Mapping):  # tolerate {"band": {"low", "high"}}
        low = low if low is not None else _number(band.get("low"))
        high = high if high is not None else _number(band.get("high"))
    return reference, low, high


def _inside(value: float | None, low: float | None, high: float | None) -> bool:
    return value is not None and (low is None or value >= low) and (high is None or value <= high)


def _strip_plot(metric: Mapping[str, Any] | None, students: list[tuple[str, Any]] | None = None,
                width: int = 420) -> dict | None:
    """Coordinates for a strip plot of a trained-quality metric against its reference runs.

    ``metric`` is a check's metric record (:func:`grader.compare.assert_in_band`:
    ``name``, ``value``, ``low``, ``high``, ``reference``). Without ``students`` the plot
    places the record's own value, as the feedback page shows it. With ``students``,
    ``(student_id, value)`` pairs, it places every student's value as a dot in a row
    under the reference runs, as the dashboard shows it; the record's ``value`` is then
    ignored. Values that are not finite numbers are not placed."""
    if not isinstance(metric, Mapping):
        return None
    reference, low, high = _band(metric)
    class_view = students is not None
    value = None if class_view else _number(metric.get("value"))
    placed = sorted(((sid, v) for sid, v in ((s, _number(x)) for s, x in students or ())
                     if v is not None), key=lambda pair: pair[1])
    known = list(reference) + [v for v in (value, low, high) if v is not None] + [v for _, v in placed]
    if not known:
        return None
    lo, hi = min(known), max(known)
    span = (hi - lo) or max(abs(hi), 1.0) * 0.1
    lo, hi = lo - 0.08 * span, hi + 0.08 * span
    left, right = 12, width - 12

    def x(v: float) -> float:
        return round(left + (v - lo) / (hi - lo) * (right - left), 1)

    # rows, top to bottom: (class view only: reference runs above the students), axis, ticks
    top, reference_y, axis = (6, 17, 66) if class_view else (8, 26, 44)
    band_x0 = x(low) if low is not None else left
    band_x1 = x(high) if high is not None else right
    return {
        "width": width, "height": axis + 20, "top": top, "axis": axis,
        "name": str(metric.get("name", "metric")), "n": len(reference),
        "points": [{"x": x(v), "y": reference_y + ((i % 3 - 1) * 3 if class_view else (i % 5 - 2) * 3),
                    "v": v} for i, v in enumerate(reference)],
        "students": [{"x": x(v), "y": 44 + (rank % 5 - 2) * 4, "v": v, "id": sid,
                      "inside": _inside(v, low, high)} for rank, (sid, v) in enumerate(placed)],
        "band": (band_x0, round(max(band_x1 - band_x0, 1.0), 1)),
        "low": low, "high": high, "low_x": None if low is None else x(low),
        "high_x": None if high is None else x(high),
        "value": value, "value_x": x(value) if value is not None else None,
        "inside": _inside(value, low, high), "ticks": [(x(v), f"{v:.3g}") for v in _ticks(lo, hi)],
    }


def _ticks(lo: float, hi: float, count: int = 5) -> list[float]:
    step = _nice((hi - lo) / count)
    start = math.ceil(lo / step) * step
    return [round(start + i * step, 10) for i in range(count + 2) if start + i * step <= hi]


def _nice(raw: float) -> float:
    if raw <= 0 or not math.isfinite(raw):
        return 1.0
    power = 10 ** math.floor(math.log10(raw))
    for factor in (1, 2, 2.5, 5, 10):
        if raw <= factor * power:
            return factor * power
    return 10 * power


def metric_plots(results: list[SubmissionResult], width: int = 560) -> list[dict[str, Any]]:
    """One class strip plot per trained-quality check, in the order the checks first appear.

    Every student whose check recorded a metric is a dot (checks that were not run have no
    metric and are left out). The reference runs and band are the ones most students were
    graded against; ``other_band`` counts students graded against a different one (an
    earlier calibration, say) and ``not_number`` those whose value was NaN or infinite."""
    groups: dict[str, dict[str, Any]] = {}
    for result in results:
        for check in result.checks:
            if not isinstance(check.metric, Mapping):
                continue
            group = groups.setdefault(check.id, {"check": check, "values": [], "bands": Counter()})
            group["values"].append((result.student_id, check.metric.get("value")))
            group["bands"][(str(check.metric.get("name", "metric")), *_band(check.metric))] += 1
    plots = []
    for check_id, group in groups.items():
        (name, reference, low, high), count = group["bands"].most_common(1)[0]
        plot = _strip_plot({"name": name, "reference": reference, "low": low, "high": high},
                           group["values"], width)
        if plot is None:
            continue
        plot.update(check=check_id, question=group["check"].question, hidden=group["check"].hidden,
                    other_band=len(group["values"]) - count,
                    not_number=len(group["values"]) - len(plot["students"]))
        plots.append(plot)
    return plots


# ---------------------------------------------------------------- feedback page

def _check_view(check: CheckResult) -> dict[str, Any]:
    return {"c": check, "plot": None if check.hidden else _strip_plot(check.metric)}


def write_feedback(result: SubmissionResult, out_dir: Path, executed_notebook: Path | None) -> Path:
    """Write ``OUT/feedback/<student>.html`` for one submission; return its path."""
    out_dir = Path(out_dir)
    questions = []
    for question, (score, points) in result.questions.items():
        checks = [_check_view(c) for c in result.checks if c.question == question]
        questions.append({"name": question, "score": score, "points": points,
                          "percent": _percent(score, points), "checks": checks})
    errors = [cell for cell in result.cells if cell.error or cell.timed_out]
    slowest = sorted(result.cells, key=lambda cell: cell.duration_s, reverse=True)[:5]
    notebook = None
    if executed_notebook is not None:
        notebook = render_notebook(Path(executed_notebook))
    page = _env().get_template("feedback.html").render(
        r=result, questions=questions, errors=errors, slowest=slowest, notebook=notebook,
        percent=_percent(result.score, result.max_score), style=_style(), csp=_csp(),
        explanation=result.status.explanation,
    )
    return _write(out_dir / "feedback" / f"{feedback_filename(result.student_id)}.html", page)


# ---------------------------------------------------------------- dashboard analytics

@dataclass(frozen=True)
class Cluster:
    """Failures that share a signature, across students."""

    kind: str  # "cell error" or "check"
    signature: str  # normalised: numbers as #, quoted names as '…'
    where: str  # "q3 · q3_output_shape" or "cell 7"
    students: tuple[str, ...]
    example_student: str
    example_message: str  # the example student's own text, not normalised

    @property
    def count(self) -> int:
        return len(self.students)


_QUOTED = re.compile(r"""'[^'\n]{0,200}'|"[^"\n]{0,200}"|`[^`\n]{0,200}`""")
_HEX = re.compile(r"\b0x[0-9a-fA-F]+\b")
_NUMBER = re.compile(r"(?<![A-Za-z_\d.])[-+]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][-+]?\d+)?(?![A-Za-z_\d])")


def normalise(text: str, limit: int = 240) -> str:
    """A failure message with the parts that vary between students folded away."""
    text = _HEX.sub("0x…", text)
    text = _QUOTED.sub(lambda m: m.group(0)[0] + "…" + m.group(0)[0], text)
    text = _NUMBER.sub("#", text)
    text = re.sub(r"\s+", " ", text).strip()
    return text[:limit]


def first_sentence(message: str) -> str:
    return re.split(r"(?<=[.!?])\s+", message.strip(), maxsplit=1)[0]


def _is_not_run(check: CheckResult) -> bool:
    return check.message.startswith("Not run")


def cluster_failures(results: list[SubmissionResult]) -> list[Cluster]:
    """Group failed checks and cell errors by signature, largest groups first.

    A cell error's signature is its exception type and message, normalised; a check's is
    its id and the first sentence of its message, normalised. Checks that were not run
    (the notebook timed out, crashed...) are left out: the flagged list covers those.
    Each student counts once per signature."""
    groups: dict[tuple[str, str], dict[str, Any]] = {}

    def add(kind: str, signature: str, where: str, student: str, message: str) -> None:
        group = groups.setdefault((kind, signature), {"students": {}, "where": Counter()})
        group["where"][where] += 1
        group["students"].setdefault(student, message)

    for result in results:
        for cell in result.cells:
            if cell.error or cell.timed_out:
                error = cell.error or "the cell ran past its time limit"
                add("cell error", normalise(error.splitlines()[0] if error else error),
                    f"cell {cell.index + 1}", result.student_id, error)
        for check in result.checks:
            if not check.passed and not _is_not_run(check):
                add("check", f"{check.id}: {normalise(first_sentence(check.message))}",
                    f"{check.question} · {check.id}", result.student_id, check.message)
    clusters = []
    for (kind, signature), group in groups.items():
        students = tuple(group["students"])
        example = students[0]
        where, _ = group["where"].most_common(1)[0]
        clusters.append(Cluster(kind=kind, signature=signature, where=where, students=students,
                                example_student=example,
                                example_message=group["students"][example][:500]))
    clusters.sort(key=lambda c: (-c.count, c.kind, c.signature))
    return clusters


def score_histogram(results: list[SubmissionResult], bins: int = 10) -> list[dict[str, Any]]:
    """Counts of scores as a percentage of the maximum, in ``bins`` equal bins; the last
    bin includes 100 %. Submissions with no points possible are left out."""
    counts = [0] * bins
    for result in results:
        percent = _percent(result.score, result.max_score)
        if percent is not None:
            counts[min(int(percent * bins // 100), bins - 1)] += 1
    width = 100 / bins
    return [{"label": f"{i * width:g}–{(i + 1) * width:g}%", "low": i * width,
             "high": (i + 1) * width, "count": count} for i, count in enumerate(counts)]


def value_histogram(values: list[float], unit: str, bins: int = 10) -> list[dict[str, Any]]:
    """Counts of non-negative ``values`` in bins of a round width starting at 0."""
    values = [v for v in (_number(x) for x in values) if v is not None and v >= 0]
    if not values:
        return []
    width = _nice(max(values) / bins) if max(values) > 0 else 1.0
    count = max(1, min(bins + 1, int(max(values) // width) + 1))
    counts = [0] * count
    for value in values:
        counts[min(int(value // width), count - 1)] += 1
    return [{"label": f"{i * width:g}–{(i + 1) * width:g} {unit}", "low": i * width,
             "high": (i + 1) * width, "count": c} for i, c in enumerate(counts)]


def _chart(bins: list[dict[str, Any]], width: int = 480, height: int = 180) -> dict[str, Any]:
    """Bar positions for an SVG histogram."""
    top = max((b["count"] for b in bins), default=0) or 1
    left, bottom, plot_h = 34, height - 34, height - 52
    step = (width - left - 8) / max(len(bins), 1)
    bars = []
    for i, b in enumerate(bins):
        h = round(plot_h * b["count"] / top, 1)
        bars.append({**b, "x": round(left + i * step + 1, 1), "w": round(step - 2, 1),
                     "y": round(bottom - h, 1), "h": h, "cx": round(left + (i + 0.5) * step, 1)})
    grid = [{"y": round(bottom - plot_h * v / top, 1), "v": v} for v in sorted({0, top // 2, top})]
    return {"width": width, "height": height, "bars": bars, "bottom": bottom, "left": left,
            "grid": grid, "rotate": len(bins) > 6}


def _pass_rates(results: list[SubmissionResult]) -> list[dict[str, Any]]:
    rows: dict[str, dict[str, Any]] = {}
    for result in results:
        for check in result.checks:
            row = rows.setdefault(check.id, {"id": check.id, "question": check.question,
                                             "points": check.points, "hidden": check.hidden,
                                             "passed": 0, "total": 0, "not_run": 0})
            row["total"] += 1
            row["passed"] += bool(check.passed)
            row["not_run"] += (not check.passed) and _is_not_run(check)
    for row in rows.values():
        row["rate"] = 100.0 * row["passed"] / row["total"] if row["total"] else 0.0
    return list(rows.values())


def _previous(entry: Any) -> tuple[float | None, str | None]:
    if isinstance(entry, Mapping):
        status = entry.get("status")
        return _number(entry.get("score")), None if status is None else str(status)
    if isinstance(entry, (tuple, list)) and len(entry) == 2:
        return _number(entry[0]), None if entry[1] is None else str(entry[1])
    return _number(entry), None


def _changes(results: list[SubmissionResult], history: Mapping[str, Any]) -> dict[str, Any]:
    """What changed on regrade. ``history`` maps student id to the previous grade: a mapping
    with ``score`` and ``status``, a ``(score, status)`` pair, or a bare score."""
    changed, unchanged, new = [], 0, []
    for result in results:
        if result.student_id not in history:
            new.append(result.student_id)
            continue
        score, status = _previous(history[result.student_id])
        score_changed = score is None or abs(score - result.score) > 1e-9
        status_changed = status is not None and status != result.status.value
        if score_changed or status_changed:
            changed.append({"id": result.student_id, "old_score": score, "new_score": result.score,
                            "delta": None if score is None else result.score - score,
                            "old_status": status, "new_status": result.status.value})
        else:
            unchanged += 1
    present = {r.student_id for r in results}
    missing = sorted(sid for sid in history if sid not in present)
    changed.sort(key=lambda row: (-(abs(row["delta"]) if row["delta"] is not None else 1e18), row["id"]))
    return {"changed": changed, "unchanged": unchanged, "new": sorted(new), "missing": missing}


def _summary(values: list[float]) -> dict[str, float | None]:
    values = sorted(v for v in (_number(x) for x in values) if v is not None)
    if not values:
        return {"median": None, "p90": None, "max": None}
    return {"median": statistics.median(values),
            "p90": values[min(len(values) - 1, int(math.ceil(0.9 * len(values))) - 1)],
            "max": values[-1]}


def write_dashboard(results: list[SubmissionResult], out_dir: Path,
                    history: dict | None = None) -> Path:
    """Write the class dashboard ``OUT/index.html``; return its path."""
    out_dir = Path(out_dir)
    results = sorted(results, key=lambda r: r.student_id)
    rows = [{"id": r.student_id, "score": r.score, "max": r.max_score,
             "percent": _percent(r.score, r.max_score), "status": r.status.value,
             "duration": r.duration_s, "memory": r.peak_memory_mb} for r in results]
    statuses = Counter(r.status.value for r in results)
    durations = [r.duration_s for r in results]
    memories = [r.peak_memory_mb for r in results if r.peak_memory_mb > 0]
    percents = [p for p in (_percent(r.score, r.max_score) for r in results) if p is not None]
    assignments = Counter(r.assignment for r in results)
    script, script_hash = _dashboard_script()
    page = _env().get_template("dashboard.html").render(
        results=results, rows=rows, data=script_json(rows), script=script,
        csp=_csp(script_hash), style=_style(),
        assignment=", ".join(name for name, _ in assignments.most_common()) or "no submissions",
        statuses=[(s.value, statuses.get(s.value, 0)) for s in Status],
        mean=statistics.fmean(percents) if percents else None,
        median=statistics.median(percents) if percents else None,
        scores=_chart(score_histogram(results)),
        runtime=_chart(value_histogram(durations, "s")), runtime_summary=_summary(durations),
        memory=_chart(value_histogram(memories, "MB")), memory_summary=_summary(memories),
        pass_rates=_pass_rates(results), metrics=metric_plots(results),
        clusters=cluster_failures(results)[:50],
        flagged=[r for r in results if r.status in FLAGGED],
        reviews=[(r.student_id, c.id, str(c.metric["review"])) for r in results for c in r.checks
                 if isinstance(c.metric, Mapping) and c.metric.get("review")],
        changes=None if history is None else _changes(results, history),
    )
    return _write(out_dir / "index.html", page)


# ---------------------------------------------------------------- rebuild

def _executed_path(result: SubmissionResult, out_dir: Path) -> Path | None:
    candidates = []
    if result.executed_notebook:
        stored = Path(result.executed_notebook)
        candidates += [stored] if stored.is_absolute() else [out_dir / stored, stored]
    if feedback_filename(result.student_id) == result.student_id:  # no path tricks
        candidates.append(out_dir / "executed" / f"{result.student_id}.ipynb")
    return next((path for path in candidates if path.is_file()), None)


def load_results(out_dir: Path) -> list[SubmissionResult]:
    """Every readable ``OUT/results/*.json``; unreadable ones are logged and skipped."""
    results = []
    for path in sorted((Path(out_dir) / "results").glob("*.json")):
        try:
            results.append(SubmissionResult.from_json(path.read_text(encoding="utf-8")))
        except (OSError, ValueError, TypeError, KeyError) as error:
            log.warning("skipping %s: %s: %s", path, type(error).__name__, error)
    return results


def rebuild(out_dir: Path, history: dict | None = None, *,
            feedback_written: frozenset[str] = frozenset()) -> int:
    """Re-render every feedback page, the dashboard and the exports from
    ``OUT/results/*.json`` without executing anything; return how many results were read.

    ``feedback_written``: students whose page is already up to date (written by a
    :class:`FeedbackWriter` during the run); only the others' pages are rendered."""
    out_dir = Path(out_dir)
    results = load_results(out_dir)
    names = Counter(r.assignment for r in results)
    assignment = names.most_common(1)[0][0] if names else "assignment"
    if history is None:
        history = _gradebook_history(out_dir / "gradebook.sqlite", assignment)
    for result in results:
        if result.student_id not in feedback_written:
            write_feedback(result, out_dir, _executed_path(result, out_dir))
    write_dashboard(results, out_dir, history)
    write_exports(results, out_dir, assignment)
    return len(results)


class FeedbackWriter:
    """Renders each feedback page on a background thread as its result arrives, so that
    ``grader run`` never waits for HTML between submissions; only the dashboard and the
    exports, which need every result, are written at the end.

        with FeedbackWriter(out) as feedback:
            run_batch(..., on_result=feedback.submit)
        rebuild(out, feedback_written=feedback.written)

    A page that fails to render is logged and left to :func:`rebuild`."""

    def __init__(self, out_dir: Path):
        from concurrent.futures import ThreadPoolExecutor

        self.out_dir = Path(out_dir)
        self._pool = ThreadPoolExecutor(1, thread_name_prefix="feedback")
        self._written: set[str] = set()

    def submit(self, result: SubmissionResult, cached: bool = False) -> None:
        self._pool.submit(self._write, result)

    def _write(self, result: SubmissionResult) -> None:
        try:
            write_feedback(result, self.out_dir, _executed_path(result, self.out_dir))
        except Exception:  # noqa: BLE001 - rebuild() renders it again at the end
            log.exception("feedback page for %s failed", result.student_id)
            return
        self._written.add(result.student_id)

    @property
    def written(self) -> frozenset[str]:
        return frozenset(self._written)

    def close(self) -> None:
        self._pool.shutdown(wait=True)

    def __enter__(self) -> FeedbackWriter:
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _gradebook_history(path: Path, assignment: str) -> dict | None:
    """The grades before the latest run of ``assignment`` in OUT's gradebook, if it has
    an earlier run; ``None`` (no regrade section) otherwise."""
    if not path.is_file():
        return None
    from .gradebook import Gradebook

    try:
        book = Gradebook(path)
        try:
            (latest,) = book.db.execute("SELECT MAX(run_id) FROM runs WHERE assignment = ?",
                                        (assignment,)).fetchone()
            previous = book.previous_results(assignment, latest) if latest is not None else {}
        finally:
            book.close()
    except sqlite3.Error as error:
        log.warning("gradebook %s unreadable: %s", path, error)
        return None
    return previous or None
