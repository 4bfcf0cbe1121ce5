"""The alert rules (deploy/alerts/harmony.rules.yaml) loaded into a real Prometheus scraping a real ``harmony serve``
(the session's, shared with the dashboard tests: tests/prometheus_server.py): every rule evaluates without error,
every recording rule returns a number under a light load, and the metrics the alerts join (queue depth over capacity,
model readiness) are really there."""

from __future__ import annotations

import httpx
import pytest
import yaml

from tests.prometheus_server import ALERT_RULES


def records() -> list[str]:
    groups = yaml.safe_load(ALERT_RULES.read_text())["groups"]
    return sorted({rule["record"] for group in groups for rule in group["rules"] if "record" in rule})


def test_every_rule_evaluates_without_error(loaded):
    def all_evaluated() -> bool:
        groups = httpx.get(loaded.url + "/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return len(rules) > 0 and all(rule.get("lastEvaluation", "").startswith("20") for rule in rules)

    loaded.wait(all_evaluated, 30, "every rule evaluated")
    groups = httpx.get(loaded.url + "/api/v1/rules", timeout=10).json()["data"]["groups"]
    broken = {rule["name"]: rule.get("lastError") for group in groups for rule in group["rules"]
              if rule["health"] != "ok"}
    assert not broken, broken


@pytest.mark.parametrize("record", records())
def test_every_recording_rule_returns_a_number_under_load(loaded, record):
    """NaN (no requests in the window) is filtered out; a route's figure appears once its rise is evaluated (the
    transcriptions' during the load, the last /v1/models' after it)."""
    routes = {"/v1/audio/transcriptions", "/v1/models"} if record.startswith("harmony_route:") else set()
    loaded.wait_for(f"{record} >= 0", timeout=30,
                    until=lambda found: bool(found) and routes <= {s["metric"].get("route") for s in found})


def test_the_alerts_joins_find_their_metrics(loaded):
    saturation = loaded.wait_for("sum by (model) (harmony_queue_depth) / sum by (model) (harmony_queue_capacity)")
    assert "whisper-tiny.en" in {s["metric"]["model"] for s in saturation}
    ready = loaded.wait_for("max by (model) (harmony_model_ready)")
    assert {s["metric"]["model"]: s["value"][1] for s in ready}["whisper-tiny.en"] == "1"
