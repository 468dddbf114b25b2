"""The console's arithmetic: burn-down, attainment, incidents, the report month and its CSV."""

from __future__ import annotations

import math

import pytest

from monitor.publish.ui import figures


def test_minutes_of_a_maintenance_window_count_neither_good_nor_bad():
    rows = [(0.0, 50.0, 100.0), (60.0, 100.0, 100.0), (120.0, 0.0, 100.0)]
    assert figures.counts(rows, 0.0, 180.0) == (150.0, 300.0)
    assert figures.counts(rows, 0.0, 180.0, excluded=[(2, 3)]) == (150.0, 200.0)
    assert figures.excluded_minutes([(2, 3), (10, 20)], 0.0, 12 * 60.0) == 3


def test_no_events_is_no_attainment_rather_than_a_perfect_one():
    assert figures.attainment(0.0, 0.0) is None
    assert figures.budget_spent(0.0, 0.0, 0.99) is None
    assert figures.budget_spent(99.0, 100.0, 0.99) == pytest.approx(1.0)


def test_the_burn_down_starts_full_and_falls_where_the_bad_minutes_are():
    now = 3600.0
    rows = [(600.0, 100.0, 100.0), (1200.0, 90.0, 100.0), (3000.0, 100.0, 100.0)]
    points = figures.burn_down(rows, 0.9, 3600.0, now, points=60)
    assert points[0] == (0.0, 1.0) and points[-1][0] == now
    values = [r for _, r in points]
    assert values == sorted(values, reverse=True)  # only bad events move it, downwards
    assert values[-1] == pytest.approx(1 - 10 / (0.1 * 300))


def test_an_outage_is_one_incident_spanning_the_minutes_the_page_would_fire():
    rows = [(m * 60.0, 100.0, 100.0) for m in range(120)]
    rows[60:70] = [(m * 60.0, 0.0, 100.0) for m in range(60, 70)]
    spans = figures.incidents(rows, 0.99, 14.4, 3600.0, 0.0, 7200.0)
    assert len(spans) == 1
    start, end = spans[0]
    # the 1h window reaches 14.4x once 9 of its 60 minutes failed (14.4% bad), and stays up past the outage
    assert start == 68 * 60.0 and end > 70 * 60.0


def test_a_month_is_its_utc_bounds_and_anything_else_says_the_form():
    start, end = figures.month("2026-12")
    assert end - start == 31 * 86400 and figures.month("2027-01")[0] == end
    for bad in ("2026-13", "26-11", "2026-1", "", "2026-11-01", "0000-01"):
        with pytest.raises(ValueError, match="period"):
            figures.month(bad)


def test_a_csv_cell_a_spreadsheet_would_run_as_a_formula_is_quoted_as_text():
    row = figures.ReportRow("=HYPERLINK(1,2)", "chat", "latency", 0.99, 99.0, 100.0, 0.99, 1.0, 0, 0, 0, True)
    text = figures.report_csv("2026-11", [row])
    assert "\"'=HYPERLINK(1,2)\"" in text and text.endswith("\r\n")
    assert math.isfinite(float(text.split("\r\n")[1].split(",")[-8]))
