"""The dashboard and feedback pages in headless Chromium, opened from file:// URLs."""

from __future__ import annotations

import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import pytest

from grader import reports

from test_reports import HOSTILE_ID, write_batch

pytestmark = pytest.mark.browser

CHROMIUM = "/usr/bin/chromium"
ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
        "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip(f"no Chromium at {CHROMIUM}: the browser tests need it (never `playwright install`)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="the python package playwright is not installed")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=CHROMIUM, args=ARGS)
        yield browser
        browser.close()


@pytest.fixture(scope="module")
def out(tmp_path_factory):
    out = tmp_path_factory.mktemp("report")
    write_batch(out, history={"alice": {"score": 6, "status": "ok"}, "bob": (1, "error")})
    for result in reports.load_results(out):
        if result.student_id != HOSTILE_ID:
            reports.write_feedback(result, out, None)
    return out


@pytest.fixture
def page(browser):
    page = browser.new_page()
    page.problems = []
    page.on("console", lambda m: m.type in ("error", "warning") and page.problems.append(m.text))
    page.on("pageerror", lambda e: page.problems.append(str(e)))
    page.on("dialog", lambda d: (page.problems.append(f"dialog: {d.message}"), d.dismiss()))
    yield page
    page.close()


def open_page(page, path: Path):
    page.goto(path.as_uri())
    page.wait_for_load_state("load")
    assert page.evaluate("window.__pwned") is None
    return page


def column(page, index: int) -> list[str]:
    return page.eval_on_selector_all(
        "#class-table tbody tr:not([hidden])",
        f"rows => rows.map(r => r.cells[{index}].textContent.trim())")


def test_dashboard_sorts_filters_and_links(page, out):
    open_page(page, out / "index.html")
    assert page.title() == "Grading dashboard · mlp"
    assert len(column(page, 0)) == 10
    page.click("th[data-key=score]")
    scores = [float(s) for s in column(page, 1)]
    assert scores == sorted(scores) and scores[-1] == 6
    page.click("th[data-key=score]")
    assert [float(s) for s in column(page, 1)] == sorted(scores, reverse=True)
    assert page.get_attribute("th[data-key=score]", "aria-sort") == "descending"
    page.click("th[data-key=id]")
    assert column(page, 0)[:2] == [HOSTILE_ID, "alice"]
    page.fill("#filter", "error")  # matches status error and grader-error
    assert sorted(column(page, 0)) == sorted([HOSTILE_ID, "bob", "carol", "heidi"])
    assert page.text_content("#shown") == "4 of 10 shown"
    page.fill("#filter", "CAR")
    assert column(page, 0) == ["carol"]
    page.fill("#filter", "")
    assert len(column(page, 0)) == 10
    hrefs = page.eval_on_selector_all(  # an SVG <a>'s href is an SVGAnimatedString
        "a[href]", "links => links.map(a => new URL(a.getAttribute('href'), document.baseURI).href)")
    assert hrefs
    for href in hrefs:
        url = urlparse(href)
        assert url.scheme == "file", href
        assert Path(unquote(url.path)).is_file(), href
    assert page.problems == []


def test_dashboard_histogram_and_clusters_show_known_counts(page, out):
    open_page(page, out / "index.html")
    bins = page.eval_on_selector_all(
        "#score-histogram g.bin", "gs => gs.map(g => +g.getAttribute('data-count'))")
    assert bins == [5, 1, 0, 1, 0, 1, 1, 0, 0, 1]
    heights = page.eval_on_selector_all(
        "#score-histogram g.bin rect", "rs => rs.map(r => r.getBBox().height)")
    assert heights[0] == max(heights) and heights[2] == 0 and heights[1] > 0
    clusters = page.eval_on_selector_all(
        "#clusters tbody tr",
        "rows => rows.map(r => [r.cells[0].textContent.trim(), r.cells[2].textContent.trim()])")
    assert clusters[0] == ["3", "q2_accuracy: val_accuracy is #; expected at least # (the band "
                                "measured from the reference solution over # seeded runs)."]
    assert ["2", "ValueError: Shapes (None, #) and (None, #) are incompatible"] in clusters
    flagged = page.eval_on_selector_all("#flagged tr[data-status]", "rows => rows.length")
    assert flagged == 5
    assert "1 changed" in page.text_content("#changes-summary")
    assert page.problems == []


def test_dashboard_metric_plot_shows_each_student_against_the_reference(page, out):
    open_page(page, out / "index.html")
    plot = page.locator("#metrics svg.class-strip")
    assert plot.count() == 1 and plot.is_visible()
    box = plot.bounding_box()
    assert box["width"] > 300 and box["height"] > 50
    centres = page.eval_on_selector_all(
        "#metrics svg.class-strip a", """links => links.map(a => {
            const r = a.querySelector('circle').getBoundingClientRect();
            return [a.getAttribute('data-student'), r.left + r.width / 2, r.top + r.height / 2,
                    r.width, a.querySelector('title').textContent];
        })""")
    assert len(centres) == 5  # alice, bob, carol, ivan and the hostile id; the rest never ran q2
    by_value = sorted(centres, key=lambda c: c[1])
    assert [c[0] for c in by_value] == [HOSTILE_ID, "carol", "ivan", "bob", "alice"]
    for _, x, y, width, _ in centres:
        assert box["x"] < x < box["x"] + box["width"] and box["y"] < y < box["y"] + box["height"]
        assert width > 4
    assert by_value[1][4] == "carol: 0.41 (outside the band)"
    assert page.locator("#metrics svg.class-strip path.reference").count() == 5
    low = page.locator("#metrics svg.class-strip line.band-low").evaluate(
        "l => { const r = l.getBoundingClientRect(); return r.left + r.width / 2; }")
    assert by_value[2][1] < low < by_value[3][1]  # ivan (0.55) below the band, bob (0.85) in it
    assert "5 students as dots" in page.text_content("#metrics figcaption")
    page.locator('#metrics svg.class-strip a[data-student="carol"]').click()
    page.wait_for_load_state("load")
    assert Path(unquote(urlparse(page.url).path)).name == "carol.html"
    assert page.problems == []


def test_hostile_student_id_and_outputs_do_not_run(page, out):
    open_page(page, out / "index.html")
    assert page.title() != "pwned"
    assert page.locator("#class-table a", has_text="<script>").count() == 1
    link = page.locator("#class-table a", has_text="<script>")
    link.click()
    page.wait_for_load_state("load")
    assert Path(unquote(urlparse(page.url).path)).name == \
        f"{reports.feedback_filename(HOSTILE_ID)}.html"
    assert page.evaluate("window.__pwned") is None
    assert page.title().startswith("Feedback: <script>")
    assert page.text_content("#student") == HOSTILE_ID
    assert page.locator("#notebook script, #notebook b, #notebook img:not(.out)").count() == 0
    assert "<script>window.__pwned=2" in page.text_content("#notebook")
    assert page.locator("#notebook img.out").evaluate("img => img.naturalWidth") == 1
    assert page.problems == []


def test_feedback_page_renders_checks_and_plot(page, out):
    open_page(page, out / "feedback" / "carol.html")
    assert page.text_content("#total") == "1 / 6"
    assert page.locator(".check.failed").count() == 3  # two checks and one cell error
    assert page.locator("svg.strip circle").count() == 5
    width = page.locator("svg.strip").evaluate("svg => svg.getBoundingClientRect().width")
    assert width > 100
    assert page.problems == []
