"""The Pre-LN vs Post-LN lesson in a real browser: with no button clicked, every step's charts are drawn, and the
post-LN residual chart's axis starts at zero, so its flat line reads flat.

Drives Debian's Chromium through Playwright, as tests/test_browser.py does (and skips, or fails in CI, alike).
"""

from __future__ import annotations

import pytest

from tests.browser_support import expect, opened_page

ARRIVAL_TIMEOUT_MS = 120_000  # the first page load computes the lesson; CI's 2 cores may be busy meanwhile

# Per step: the charts it shows as the page opens, and what each must have drawn (plotly's layer classes).
STEP_CHARTS = {
    1: {"lesson-left-diagram": ".scatterlayer .trace", "lesson-right-diagram": ".scatterlayer .trace"},
    2: {"lesson-residual": ".scatterlayer .trace", "lesson-scales": ".scatterlayer .trace"},
    3: {"lesson-init-gradients": ".scatterlayer .trace", "lesson-init-sweep": ".scatterlayer .trace"},
    4: {"lesson-loss": ".scatterlayer .trace", "lesson-gradient": ".scatterlayer .trace"},
    5: {"lesson-ablation": ".barlayer .trace"},
}


@pytest.fixture(scope="module")
def lesson(app_server):
    """The lesson tab of a freshly opened page; nothing on the page has been clicked but the tab itself."""
    with opened_page(app_server.url, screenshot="lesson.png", wait_for=open_the_lesson) as page:
        yield page.locator(".tabitem:visible").first


def open_the_lesson(page):
    page.get_by_role("tab", name="Pre-LN vs Post-LN").click()


@pytest.mark.parametrize("number", sorted(STEP_CHARTS))
def test_with_no_click_each_steps_charts_are_drawn(lesson, number):
    step = lesson.locator(f"#lesson-step-{number}")
    expect(step.get_by_text("What to look for:")).to_be_visible(timeout=ARRIVAL_TIMEOUT_MS)
    for chart, drawn in STEP_CHARTS[number].items():
        expect(step.locator(f"#{chart} .js-plotly-plot {drawn}").first).to_be_attached(timeout=ARRIVAL_TIMEOUT_MS)
        assert step.locator(f"#{chart} .js-plotly-plot").is_visible(), chart
    assert lesson.locator("#lesson-notices").inner_text().strip() == ""  # no step failed to arrive


def test_step_1_draws_both_placements_layer_diagrams(lesson):
    step = lesson.locator("#lesson-step-1")
    expect(step.locator(".annotation-text", has_text="Self-attention")).to_have_count(2, timeout=ARRIVAL_TIMEOUT_MS)
    expect(step.locator(".gtitle", has_text="preln-mini")).to_have_count(1)
    expect(step.locator(".gtitle", has_text="postln-mini")).to_have_count(1)


def test_the_post_ln_residual_chart_starts_at_zero(lesson):
    chart = lesson.locator("#lesson-residual .js-plotly-plot")
    expect(chart.locator(".scatterlayer .trace")).to_have_count(2, timeout=ARRIVAL_TIMEOUT_MS)
    low, high = chart.evaluate("plot => plot._fullLayout.yaxis.range")
    post = chart.evaluate("plot => plot.data.find(line => line.name.includes('post-ln')).y")
    assert low <= 0 < min(post) <= max(post) <= high
    # From zero, post-LN's few-percent wobble takes a small part of the axis: it reads flat, as the step says.
    assert (max(post) - min(post)) / (high - low) < 0.1
