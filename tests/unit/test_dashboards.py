"""The Grafana dashboards: the committed JSON is what the builder makes, their queries name only metrics the engine
exports, and the chart ships them as ConfigMaps for Grafana's sidecar (tests/e2e/test_dashboard_queries.py runs the
queries against a real Prometheus)."""

from __future__ import annotations

import json
from pathlib import Path

import kubernetes_validate
import yaml
from prometheus_client import Metric

from services.auth.quota_metrics import quota_usage_gauge
from services.batches.metrics import BatchMetrics
from services.core.runtime.metrics import Metrics
from services.store import open_database
from services.store.errors import StoreErrorsCollector
from tests.dashboards import ROOT, builder, metric_names, panel_queries
from tests.helm import helm, run  # noqa: F401 (helm is a fixture)

CHART = ROOT / "charts/harmony"


def test_the_committed_dashboards_are_what_the_builder_makes():
    """Nobody edits the JSON by hand: run `python deploy/dashboards/build.py` after changing the builder."""
    rendered = builder().rendered()
    for folder in (ROOT / "deploy/grafana", CHART / "files/dashboards"):
        committed = {p.name: p.read_text() for p in folder.glob("*.json")}
        assert committed == rendered, f"{folder} differs from deploy/dashboards/build.py's output"


def exported_names() -> set[str]:
    """Every app's metrics, and the router's read from its stores (as create_router_app registers them)."""
    metrics, db = Metrics("probe"), open_database(url="sqlite://")
    BatchMetrics(metrics.registry, lambda: db)
    metrics.registry.register(StoreErrorsCollector())
    metrics.registry.register(quota_usage_gauge(db))
    families: list[Metric] = list(metrics.registry.collect())
    db.dispose()
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {f.name + s for f in families for s in suffixes[f.type]}


def test_every_panel_queries_metrics_the_engine_exports():
    exported = exported_names()
    for board in builder().dashboards().values():
        for title, exprs in panel_queries(board):
            assert exprs, f"panel {title!r} has no query"
            for expr in exprs:
                assert metric_names(expr) and metric_names(expr) <= exported, (title, metric_names(expr) - exported)


def test_a_query_naming_an_unknown_metric_is_caught():
    assert metric_names("sum(rate(harmony_made_up_total[5m]))") - exported_names() == {"harmony_made_up_total"}


def dashboard_maps(helm: Path, *sets: str) -> list[dict]:
    args = ["template", "harmony", str(CHART), "--namespace", "speech"]
    for item in sets:
        args += ["--set", item]
    objects = [d for d in yaml.safe_load_all(run(helm, *args)) if d]
    return [o for o in objects if o["kind"] == "ConfigMap" and o["metadata"]["name"].endswith("-dashboard")]


def test_the_chart_ships_each_dashboard_for_grafanas_sidecar(helm: Path):
    assert dashboard_maps(helm) == []  # off by default
    maps = dashboard_maps(helm, "dashboards.enabled=true")
    boards = builder().dashboards()
    assert {name for m in maps for name in m["data"]} == set(boards)
    for config_map in maps:
        kubernetes_validate.validate(config_map, "1.33", strict=True)
        assert config_map["metadata"]["labels"]["grafana_dashboard"] == "1"
        ((name, text),) = config_map["data"].items()
        assert json.loads(text) == boards[name]
    relabelled = dashboard_maps(helm, "dashboards.enabled=true", "dashboards.label=team_dashboards",
                                "dashboards.labelValue=speech", "dashboards.annotations.grafana_folder=Harmony")
    assert all(m["metadata"]["labels"]["team_dashboards"] == "speech" and "grafana_dashboard" not in
               m["metadata"]["labels"] and m["metadata"]["annotations"] == {"grafana_folder": "Harmony"}
               for m in relabelled)
