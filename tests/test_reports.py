"""The reports and exports, on a small hand-built batch with known statuses, scores and errors."""

from __future__ import annotations

import csv
import json
import re
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import nbformat
import pytest

from grader import exports, reports
from grader.results import CellRun, CheckResult, Status, SubmissionResult

HOSTILE_ID = '<script>window.__pwned=1;document.title="pwned"</script>'
HOSTILE_HTML = "<script>window.__pwned=2;document.title='pwned'</script><b>bold</b>"
# a 1x1 PNG
PNG = ("iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg==")
ACCURACY_BAND = {"name": "val_accuracy", "low": 0.8, "high": None,
                 "reference": [0.86, 0.87, 0.88, 0.875, 0.865]}


def shape(passed: bool, units: int = 1) -> CheckResult:
    return CheckResult(
        id="q1_output_shape", question="q1", points=2, score=2 if passed else 0, passed=passed,
        hidden=False, description="The model ends in a 10-unit layer.",
        message="" if passed else (f"`model` output shape is (None, {units}); expected (None, 10). "
                                   "A 10-class classifier ends in `Dense(10)`."),
        expected="(None, 10)", found="(None, 10)" if passed else f"(None, {units})")


def hidden(passed: bool, message: str = "") -> CheckResult:
    return CheckResult(id="q1_hidden_weights", question="q1", points=1, score=1 if passed else 0,
                       passed=passed, hidden=True, message=message,
                       expected="SECRET-EXPECTED", found="SECRET-FOUND")


def accuracy(value: float) -> CheckResult:
    passed = value >= 0.8
    return CheckResult(
        id="q2_accuracy", question="q2", points=3, score=3 if passed else 0, passed=passed,
        hidden=False, metric={**ACCURACY_BAND, "value": value}, tolerance="band",
        message="" if passed else (f"val_accuracy is {value:.4g}; expected at least 0.8 (the band "
                                   "measured from the reference solution over 5 seeded runs). "
                                   "Train for more epochs."),
        expected="at least 0.8", found=f"{value:.4g}")


def not_run(reason: str) -> tuple[CheckResult, ...]:
    message = f"Not run: {reason}"
    return (
        CheckResult(id="q1_output_shape", question="q1", points=2, score=0, passed=False,
                    hidden=False, message=message),
        CheckResult(id="q1_hidden_weights", question="q1", points=1, score=0, passed=False,
                    hidden=True, message=message),
        CheckResult(id="q2_accuracy", question="q2", points=3, score=0, passed=False,
                    hidden=False, message=message),
    )


def result(student: str, status: Status, checks=(), cells=(), message: str = "", **extra):
    score = sum(c.score for c in checks)
    return SubmissionResult(
        student_id=student, assignment="mlp", status=status, message=message or status.explanation,
        score=score, max_score=6.0, checks=tuple(checks), cells=tuple(cells),
        duration_s=extra.pop("duration_s", 12.5), peak_memory_mb=extra.pop("peak_memory_mb", 850.0),
        graded_at="2024-03-04T14:05:00+00:00", **extra)


def make_batch() -> list[SubmissionResult]:
    """Ten submissions; the expected numbers are spelled out in the tests below."""
    return [
        result("alice", Status.OK, [shape(True), hidden(True), accuracy(0.87)],
               [CellRun(0, 0.1), CellRun(2, 41.0), CellRun(3, 0.5)], duration_s=45.0),
        result("bob", Status.ERROR, [shape(False, 1), hidden(True), accuracy(0.85)],
               [CellRun(0, 0.1), CellRun(3, 2.0, error="ValueError: Shapes (None, 1) and "
                                       "(None, 10) are incompatible",
                                       traceback="Cell In[4], line 3\nValueError: Shapes ...")]),
        result("carol", Status.ERROR, [shape(False, 3), hidden(True), accuracy(0.41)],
               [CellRun(4, 2.0, error="ValueError: Shapes (None, 1) and (None, 3) are incompatible")]),
        result("dave", Status.TIMEOUT, not_run("the notebook timed out"),
               [CellRun(6, 300.0, timed_out=True, error="the cell ran past its time limit")],
               duration_s=301.0),
        result("erin", Status.MEMORY, not_run("memory"), peak_memory_mb=4100.0),
        result("frank", Status.CRASHED, not_run("the kernel died"),
               [CellRun(2, 1.0, error="The kernel died while this cell ran")]),
        result("grace", Status.INVALID, (), duration_s=0.0, peak_memory_mb=0.0),
        result("heidi", Status.GRADER_ERROR, not_run("grader failed"),
               message="RuntimeError: boom"),
        result(HOSTILE_ID, Status.ERROR,
               [shape(True), hidden(False, "Hidden test failed: <img src=x onerror=alert(1)>"),
                accuracy(0.2)],
               [CellRun(1, 0.3, error="NameError: name '<img src=x onerror=alert(1)>' is not defined",
                        traceback="<script>window.__pwned=3</script>\nNameError")],
               source_path="<script>alert('file')</script>.ipynb"),
        result("ivan", Status.OK, [shape(True), hidden(True), accuracy(0.55)]),
    ]


def hostile_notebook(path: Path) -> Path:
    """An executed notebook whose outputs try to run script in the feedback page."""
    cell = nbformat.v4.new_code_cell("print('<script>document.title=1</script>')", execution_count=1)
    cell.outputs = [
        nbformat.v4.new_output("stream", name="stdout", text="<script>window.__pwned=4</script>\n"),
        nbformat.v4.new_output("display_data", data={"text/html": HOSTILE_HTML}),
        nbformat.v4.new_output("display_data", data={"application/javascript": "window.__pwned=5"}),
        nbformat.v4.new_output("execute_result", data={"text/plain": "x" * 30_000}, execution_count=1),
        nbformat.v4.new_output("display_data", data={"image/png": PNG, "text/plain": "<Figure>"}),
        nbformat.v4.new_output("error", ename="NameError", evalue="boom",
                               traceback=["\x1b[0;31mNameError\x1b[0m: name 'x' is not defined"]),
    ]
    notebook = nbformat.v4.new_notebook(cells=[nbformat.v4.new_markdown_cell("# <b>Q1</b>"), cell])
    nbformat.write(notebook, str(path))
    return path


def write_batch(out: Path, history: dict | None = None) -> list[SubmissionResult]:
    """Render the batch into ``out`` as the runner would leave it, then rebuild."""
    batch = make_batch()
    (out / "results").mkdir(parents=True)
    (out / "executed").mkdir()
    for r in batch:
        name = reports.feedback_filename(r.student_id)
        (out / "results" / f"{name}.json").write_text(r.to_json())
    notebook = hostile_notebook(out / "executed" / "hostile.ipynb")
    hostile = next(r for r in batch if r.student_id == HOSTILE_ID)
    reports.write_feedback(hostile, out, notebook)
    reports.write_dashboard(batch, out, history)
    return batch


@pytest.fixture
def out(tmp_path):
    write_batch(tmp_path, history={"alice": {"score": 6, "status": "ok"},
                                   "bob": {"score": 1, "status": "error"},
                                   "zed": {"score": 3, "status": "ok"}})
    return tmp_path


def page_text(path: Path) -> str:
    return path.read_text(encoding="utf-8")


# ------------------------------------------------------------------ analytics


def test_score_histogram_bins_known_batch():
    bins = reports.score_histogram(make_batch())
    assert [b["count"] for b in bins] == [5, 1, 0, 1, 0, 1, 1, 0, 0, 1]
    assert bins[0]["label"] == "0–10%" and bins[-1]["label"] == "90–100%"


def test_score_histogram_puts_full_marks_in_last_bin_and_skips_zero_max():
    full = result("a", Status.OK, [shape(True), hidden(True), accuracy(0.9)])
    empty = SubmissionResult("b", "mlp", Status.INVALID, "", 0.0, 0.0)
    bins = reports.score_histogram([full, empty], bins=4)
    assert [b["count"] for b in bins] == [0, 0, 0, 1]


def test_failure_clusters_group_by_normalised_signature():
    clusters = {(c.kind, c.signature): c for c in reports.cluster_failures(make_batch())}
    shapes = clusters[("cell error", "ValueError: Shapes (None, #) and (None, #) are incompatible")]
    assert shapes.count == 2 and shapes.students == ("bob", "carol")
    assert shapes.example_student == "bob"
    assert shapes.example_message == "ValueError: Shapes (None, 1) and (None, 10) are incompatible"
    assert shapes.where == "cell 4"
    output = clusters[("check", "q1_output_shape: `…` output shape is (None, #); expected (None, #).")]
    assert output.count == 2 and output.where == "q1 · q1_output_shape"
    band = clusters[("check", "q2_accuracy: val_accuracy is #; expected at least # (the band "
                              "measured from the reference solution over # seeded runs).")]
    assert band.count == 3
    assert clusters[("cell error", "NameError: name '…' is not defined")].count == 1
    assert clusters[("cell error", "the cell ran past its time limit")].students == ("dave",)
    # checks that never ran are left to the flagged list
    assert not any("Not run" in c.signature for c in clusters.values())
    ordered = reports.cluster_failures(make_batch())
    assert ordered[0].count == 3
    assert [c.count for c in ordered] == sorted((c.count for c in ordered), reverse=True)


def test_a_student_counts_once_per_signature():
    twice = result("x", Status.ERROR, cells=[CellRun(1, 1.0, error="KeyError: 'a'"),
                                            CellRun(2, 1.0, error="KeyError: 'b'")])
    [cluster] = reports.cluster_failures([twice])
    assert cluster.count == 1 and cluster.signature == "KeyError: '…'"


def test_normalise_keeps_identifiers_with_digits():
    assert reports.normalise("layer dense_1 got 3.5e-3 at 0x7f3a, conv2d 12") == \
        "layer dense_1 got # at 0x…, conv2d #"


# ------------------------------------------------------------------ dashboard


def test_dashboard_shows_counts_links_and_flags(out):
    text = page_text(out / "index.html")
    assert re.findall(r'data-label="([^"]+)" data-count="(\d+)"', text)[:10] == [
        (f"{i * 10}–{(i + 1) * 10}%", str(n)) for i, n in enumerate([5, 1, 0, 1, 0, 1, 1, 0, 0, 1])]
    assert re.findall(r'<tr data-count="(\d+)" data-kind="([^"]+)"', text)[:3] == [
        ("3", "check"), ("2", "cell error"), ("2", "check")]
    flagged = re.findall(r'<tr data-status="([^"]+)">', text)
    assert sorted(flagged) == ["crashed", "grader-error", "invalid", "memory", "timeout"]
    assert re.findall(r'<tr data-check="([^"]+)" data-passed="(\d+)" data-total="(\d+)"', text) == [
        ("q1_output_shape", "3", "9"), ("q1_hidden_weights", "4", "9"), ("q2_accuracy", "2", "9")]
    assert 'href="feedback/alice.html"' in text
    assert "1 changed · 1 unchanged · 8 new · 1 no longer present" in text


SVG = "{http://www.w3.org/2000/svg}"


def class_strip(text: str) -> ET.Element:
    """The dashboard's one metric strip plot, parsed."""
    [svg] = re.findall(r'<svg class="strip class-strip".*?</svg>', text, re.S)
    return ET.fromstring(svg)


def test_dashboard_metric_plot_places_every_student_against_the_reference(tmp_path):
    values = {"s-low": 0.2, "s-mid": 0.5, "s-edge": 0.8, "s-top": 0.9, "s-nan": float("nan")}
    batch = [result(sid, Status.OK, [shape(True), accuracy(v)]) for sid, v in values.items()]
    batch.append(result("s-timeout", Status.TIMEOUT, not_run("the notebook timed out")))
    text = page_text(reports.write_dashboard(batch, tmp_path))
    svg = class_strip(text)
    assert svg.get("data-check") == "q2_accuracy"

    links = svg.findall(f"{SVG}a")
    dots = {a.get("data-student"): (a, a.find(f"{SVG}circle")) for a in links}
    assert sorted(dots) == ["s-edge", "s-low", "s-mid", "s-top"]  # no NaN, no check not run
    for sid, (a, circle) in dots.items():
        assert a.get("href") == f"feedback/{sid}.html"
        assert float(circle.get("data-value")) == values[sid]
    assert dots["s-mid"][0].find(f"{SVG}title").text == "s-mid: 0.5 (outside the band)"
    assert dots["s-edge"][0].find(f"{SVG}title").text == "s-edge: 0.8"  # the band includes its low
    assert [dots[s][1].get("fill") for s in ("s-low", "s-mid", "s-edge", "s-top")] == \
        ["#cf222e", "#cf222e", "#1a7f37", "#1a7f37"]

    # one linear scale for students, reference runs and the band line, padded evenly
    marks = [(values[sid], float(c.get("cx"))) for sid, (_, c) in dots.items()]
    diamonds = svg.findall(f"{SVG}path[@class='reference']")
    assert [float(d.get("data-value")) for d in diamonds] == ACCURACY_BAND["reference"]
    marks += [(float(d.get("data-value")), float(re.match(r"M([\d.]+),", d.get("d")).group(1)))
              for d in diamonds]
    (v0, x0), (v1, x1) = min(marks), max(marks)
    assert (v0, v1) == (0.2, 0.9) and x0 > 12 and x1 < 548
    assert abs((x0 - 12) - (548 - x1)) <= 0.1
    for v, x in marks:
        assert x == pytest.approx(x0 + (v - v0) / (v1 - v0) * (x1 - x0), abs=0.1)
    [low] = svg.findall(f"{SVG}line[@class='band-low']")
    assert low.get("x1") == low.get("x2") == dots["s-edge"][1].get("cx")
    assert low.find(f"{SVG}title").text == "band low: 0.8"
    assert svg.findall(f"{SVG}line[@class='band-high']") == []

    caption = re.sub(r"\s+", " ", re.sub(r"<[^>]+>", "",
                     re.search(r'<figcaption[^>]*id="metric-caption-1">(.*?)</figcaption>',
                               text, re.S).group(1))).strip()
    assert caption == ("val_accuracy (check q2_accuracy, q2): 4 students as dots (green inside the "
                       "band, red outside; each links to its feedback page), 5 reference runs as "
                       "grey diamonds, band low 0.8 as the dashed line. 1 value not a number, "
                       "not shown.")


def test_dashboard_metric_plot_uses_the_band_most_students_had(tmp_path):
    recalibrated = {**ACCURACY_BAND, "low": 0.7, "reference": [0.75, 0.76], "value": 0.72}
    old = CheckResult(id="q2_accuracy", question="q2", points=3, score=3, passed=True,
                      hidden=False, message="", metric=recalibrated)
    batch = [result("a", Status.OK, [accuracy(0.85)]), result("b", Status.OK, [accuracy(0.75)]),
             result("c", Status.OK, [old])]
    text = page_text(reports.write_dashboard(batch, tmp_path))
    svg = class_strip(text)
    assert len(svg.findall(f"{SVG}path[@class='reference']")) == 5
    assert svg.find(f"{SVG}line[@class='band-low']/{SVG}title").text == "band low: 0.8"
    assert len(svg.findall(f"{SVG}a")) == 3
    assert "1 student graded against a different band" in text


def test_dashboard_without_trained_quality_metrics_has_no_metric_section(tmp_path):
    batch = [result("a", Status.OK, [shape(True), hidden(True)]),
             result("b", Status.TIMEOUT, not_run("the notebook timed out"))]
    text = page_text(reports.write_dashboard(batch, tmp_path))
    assert 'id="metrics"' not in text and '<svg class="strip' not in text
    assert "Trained-quality metrics" not in text
    assert reports.metric_plots(batch) == []


def test_dashboard_escapes_hostile_student_id(out):
    text = page_text(out / "index.html")
    assert "<script>window.__pwned" not in text
    assert "&lt;script&gt;window.__pwned=1;document.title=&#34;pwned&#34;&lt;/script&gt;" in text
    data = re.search(r'<script type="application/json" id="rows-data">(.*?)</script>', text, re.S)
    assert "<" not in data.group(1) and "\\u003cscript\\u003e" in data.group(1)
    assert {row["id"] for row in json.loads(data.group(1))} >= {HOSTILE_ID, "alice"}
    # the only executable script is ours, and the CSP allows it by hash alone
    assert len(re.findall(r"<script>", text)) == 1
    assert re.search(r"script-src 'sha256-[A-Za-z0-9+/=]+'", text)


def test_script_json_escapes_markup_characters():
    text = str(reports.script_json({"a": "</script><!--&", "n": float("nan")}))
    assert text == '{"a":"\\u003c/script\\u003e\\u003c!--\\u0026","n":null}'
    assert json.loads(text) == {"a": "</script><!--&", "n": None}


def test_feedback_filename_is_safe_and_stable():
    assert reports.feedback_filename("alice.smith-2") == "alice.smith-2"
    name = reports.feedback_filename(HOSTILE_ID)
    assert re.fullmatch(r"[A-Za-z0-9._-]+", name) and name == reports.feedback_filename(HOSTILE_ID)
    assert reports.feedback_filename("../etc/passwd") != reports.feedback_filename("..etc/passwd")
    assert "/" not in reports.feedback_filename("../etc/passwd")


# ------------------------------------------------------------------ feedback


def test_feedback_page_scores_checks_and_hidden_details(out):
    reports.write_feedback(make_batch()[1], out, None)
    text = page_text(out / "feedback" / "bob.html")
    assert 'id="total">4 / 6<' in text
    assert '>q1</a></td><td class="num">1</td><td class="num">3</td>' in text
    assert '>q2</a></td><td class="num">3</td><td class="num">3</td>' in text
    assert "expected (None, 10)" in text and "(None, 1)" in text
    assert "SECRET-EXPECTED" not in text and "SECRET-FOUND" not in text
    assert "Cell 4" in text and "Cell In[4], line 3" in text
    assert "The executed notebook is not available" in text
    assert Status.ERROR.explanation in text


def test_feedback_strip_plot_for_trained_quality_check(out):
    reports.write_feedback(make_batch()[2], out, None)
    text = page_text(out / "feedback" / "carol.html")
    assert text.count('<svg class="strip"') == 1
    assert text.count("<title>reference run:") == 5
    assert "your value: 0.41" in text and 'stroke="#cf222e"' in text


def test_feedback_renders_hostile_notebook_as_text(out):
    page = out / "feedback" / f"{reports.feedback_filename(HOSTILE_ID)}.html"
    text = page_text(page)
    assert "<script>" not in text and "<img src=x" not in text and "<b>bold</b>" not in text
    assert "&lt;script&gt;window.__pwned=2" in text  # the HTML output, as text
    assert "HTML output shown as text" in text and "JavaScript output shown as text" in text
    assert "Output truncated: showing the first 20 KB of 30 KB" in text
    assert "x" * 20_000 in text and "x" * 20_001 not in text
    assert f'src="data:image/png;base64,{PNG}"' in text
    assert "\x1b" not in text and "NameError: name &#39;x&#39; is not defined" in text
    assert "default-src 'none'" in text and "script-src 'none'" in text
    assert "&lt;script&gt;alert(&#39;file&#39;)&lt;/script&gt;.ipynb" in text


def test_feedback_survives_unreadable_notebook(tmp_path):
    broken = tmp_path / "broken.ipynb"
    broken.write_text("{not json")
    path = reports.write_feedback(make_batch()[0], tmp_path, broken)
    assert "could not be read" in page_text(path)


def test_output_budget_omits_outputs_past_the_page_limit(monkeypatch, tmp_path):
    monkeypatch.setattr(reports, "NOTEBOOK_CAP", 100)
    cell = nbformat.v4.new_code_cell("x")
    cell.outputs = [nbformat.v4.new_output("stream", name="stdout", text="a" * 80)] * 2
    path = tmp_path / "n.ipynb"
    nbformat.write(nbformat.v4.new_notebook(cells=[cell]), str(path))
    outputs = reports.render_notebook(path)["cells"][0]["outputs"]
    assert outputs[0]["text"] == "a" * 80 and "Output omitted" in outputs[1]["note"]


# ------------------------------------------------------------------ rebuild and exports


def test_rebuild_rewrites_pages_and_exports_from_results(out):
    for page in (out / "feedback").glob("*.html"):
        page.unlink()
    (out / "results" / "corrupt.json").write_text("{")
    assert reports.rebuild(out) == 10
    pages = sorted(p.name for p in (out / "feedback").glob("*.html"))
    assert len(pages) == 10 and "alice.html" in pages
    assert (out / "exports" / "canvas.csv").is_file()
    assert (out / "exports" / "gradescope" / "alice" / "results.json").is_file()


def test_feedback_writer_renders_pages_as_results_arrive_and_rebuild_skips_them(tmp_path):
    batch = make_batch()
    (tmp_path / "results").mkdir()
    for r in batch:
        (tmp_path / "results" / f"{reports.feedback_filename(r.student_id)}.json").write_text(
            r.to_json())
    with reports.FeedbackWriter(tmp_path) as feedback:
        for r in batch[:4]:
            feedback.submit(r, False)
    assert feedback.written == {r.student_id for r in batch[:4]}
    page = tmp_path / "feedback" / f"{reports.feedback_filename(batch[0].student_id)}.html"
    assert batch[0].student_id in page_text(page)
    page.write_text("written during the run")  # a marker: rebuild must leave this page alone
    assert reports.rebuild(tmp_path, feedback_written=feedback.written) == len(batch)
    assert page.read_text() == "written during the run"
    assert len(list((tmp_path / "feedback").glob("*.html"))) == len(batch)
    assert (tmp_path / "index.html").is_file()


def test_rebuild_reads_regrade_history_from_the_gradebook(tmp_path):
    from grader.gradebook import Gradebook

    batch = write_batch(tmp_path)
    book = Gradebook(tmp_path / "gradebook.sqlite")
    first = book.start_run("mlp", "2024-03-01T00:00:00", "0.1.0", {})
    book.record(first, result("bob", Status.ERROR, [shape(False)]), cached=False)
    second = book.start_run("mlp", "2024-03-04T00:00:00", "0.1.0", {})
    for r in batch:
        book.record(second, r, cached=False)
    book.close()
    reports.rebuild(tmp_path)
    text = page_text(tmp_path / "index.html")
    assert "1 changed · 0 unchanged · 9 new · 0 no longer present" in text


def read_csv(path: Path) -> list[list[str]]:
    with path.open(newline="", encoding="utf-8") as handle:
        return list(csv.reader(handle))


def test_canvas_export_columns_and_values(tmp_path):
    exports.write_exports(make_batch(), tmp_path, "MLP practical")
    rows = read_csv(tmp_path / "exports" / "canvas.csv")
    assert rows[0] == ["Student", "ID", "SIS User ID", "SIS Login ID", "Section", "MLP practical"]
    assert rows[1] == ["Points Possible", "", "", "", "", "6"]
    by_login = {row[3]: row for row in rows[2:]}
    assert by_login["alice"] == ["alice", "", "", "alice", "", "6"]
    assert by_login["carol"][5] == "1"
    assert by_login["heidi"][5] == ""  # grader error: leave the grade alone
    assert len(rows) == 12
    exports.write_exports(make_batch()[:1], tmp_path, "MLP", canvas_assignment_id=4711)
    assert read_csv(tmp_path / "exports" / "canvas.csv")[0][-1] == "MLP (4711)"


def test_canvas_and_moodle_identities():
    assert exports.canvas_identity("123456") == ("123456", "")
    assert exports.canvas_identity("smithjane_LATE_123456_7890_mlp.ipynb") == ("123456", "")
    assert exports.canvas_identity("jdoe42") == ("", "jdoe42")
    assert exports.moodle_identifier("Participant 77") == "Participant 77"
    assert exports.moodle_identifier("Jane Smith_4242_assignsubmission_file_") == "Participant 4242"
    assert exports.moodle_identifier("4242") == "Participant 4242"
    assert exports.moodle_identifier("jdoe42") == "jdoe42"


def test_moodle_export_columns_and_values(tmp_path):
    exports.write_exports(make_batch(), tmp_path, "mlp")
    rows = read_csv(tmp_path / "exports" / "moodle.csv")
    assert rows[0] == ["Identifier", "Full name", "Email address", "Status", "Grade",
                       "Maximum Grade", "Grade can be changed", "Last modified (grade)",
                       "Feedback comments"]
    bob = next(row for row in rows if row[0] == "bob")
    assert bob[1:8] == ["bob", "", "Graded by tf-grader: error", "4", "6", "Yes",
                        "Monday, 4 March 2024, 2:05 PM"]
    assert bob[8].startswith("4 / 6. ") and "q1_output_shape" in bob[8]
    hostile = next(row for row in rows if row[0] == HOSTILE_ID)
    assert "<" not in hostile[8]
    assert next(row for row in rows if row[0] == "heidi")[4] == ""


def test_gradescope_results_format(tmp_path):
    exports.write_exports(make_batch(), tmp_path, "mlp")
    data = json.loads((tmp_path / "exports" / "gradescope" / "bob" / "results.json").read_text())
    assert data["score"] == 4
    assert [t["name"] for t in data["tests"]] == ["q1: q1_output_shape", "q1: q1_hidden_weights",
                                                  "q2: q2_accuracy"]
    shape_test, hidden_test, _ = data["tests"]
    assert shape_test["visibility"] == "visible" and shape_test["max_score"] == 2
    assert shape_test["score"] == 0 and "expected: (None, 10)" in shape_test["output"]
    assert hidden_test["visibility"] == "after_published"
    assert "SECRET" not in hidden_test["output"]
    assert set(data["tests"][0]) == {"name", "number", "score", "max_score", "status", "output",
                                     "visibility"}
    hostile_dir = reports.feedback_filename(HOSTILE_ID)
    assert (tmp_path / "exports" / "gradescope" / hostile_dir / "results.json").is_file()


def test_rendering_many_results_is_quick(tmp_path):
    """Not a timing assertion: a smoke test that 50 pages render (see benchmarks/)."""
    batch = make_batch() * 5
    started = time.perf_counter()
    for r in batch:
        reports.write_feedback(r, tmp_path, None)
    reports.write_dashboard(batch, tmp_path)
    assert time.perf_counter() - started >= 0
