"""Every panel of the Grafana dashboards returns data from a real Prometheus scraping a real ``harmony serve`` under
a short load (tests/harmony_load.py): the queries an operator opens are proven to say something. The Prometheus and
the load are the session's, shared with the alert tests (tests/prometheus_server.py, through tests/e2e/conftest.py)."""

from __future__ import annotations

import pytest

from tests.dashboards import builder, concrete, panel_queries


def empty_panels(server, board: dict) -> list[str]:
    """The titles of the panels of which some query returns nothing."""
    return [title for title, exprs in panel_queries(board) if any(not server.query(concrete(e)) for e in exprs)]


@pytest.mark.parametrize("name", ["harmony-overview.json", "harmony-model.json"])
def test_every_panel_returns_data(loaded, name):
    build = builder()
    empty = empty_panels(loaded, build.dashboards()[name])
    assert sorted(empty) == sorted(set(empty) & build.AFTER_EVENTS), f"panels without data in {name}: {empty}"


def test_an_empty_panel_is_reported_by_title(loaded):
    board = {"panels": [{"title": "Made up", "targets": [{"expr": "sum(rate(harmony_made_up_total[5m]))"}]},
                        {"title": "Queue depth", "targets": [{"expr": "sum by (model) (harmony_queue_depth)"}]}]}
    assert empty_panels(loaded, board) == ["Made up"]
