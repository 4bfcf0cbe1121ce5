"""The dashboards' builder (deploy/dashboards/build.py) loaded for the tests, and each panel's queries."""

from __future__ import annotations

import importlib.util
import re
from pathlib import Path
from types import ModuleType

ROOT = Path(__file__).resolve().parents[1]


def builder() -> ModuleType:
    spec = importlib.util.spec_from_file_location("harmony_dashboards_build", ROOT / "deploy/dashboards/build.py")
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def panel_queries(board: dict) -> list[tuple[str, list[str]]]:
    """(title, its targets' expressions) of every panel of a dashboard's JSON."""
    return [(panel["title"], [t["expr"] for t in panel.get("targets", [])]) for panel in board["panels"]]


def concrete(expr: str, rate_interval: str = "2m") -> str:
    """A panel's query as Grafana would send it: its variables substituted (every model)."""
    return expr.replace("$__rate_interval", rate_interval).replace('=~"$model"', '=~".+"')


def metric_names(expr: str) -> set[str]:
    return set(re.findall(r"\b(?:harmony|process)_[a-z_]+\b", expr))
