"""The alert rules (deploy/alerts/harmony.rules.yaml) loaded into a real Prometheus scraping a real ``harmony serve``
(tests/prometheus_server.py): every rule evaluates without error, every recording rule returns a number under a
light load, and the metrics the alerts join (queue depth over capacity, model readiness) are really there."""

from __future__ import annotations

import time
from pathlib import Path

import httpx
import pytest
import yaml

from tests.harmony_load import TEXT, transcribe
from tests.prometheus_server import PrometheusServer, harmony_scrape_configs
from tests.speech import synthesize, wav_bytes

RULES = Path(__file__).resolve().parents[2] / "deploy/alerts/harmony.rules.yaml"


def records() -> list[str]:
    groups = yaml.safe_load(RULES.read_text())["groups"]
    return sorted({rule["record"] for group in groups for rule in group["rules"] if "record" in rule})


@pytest.fixture(scope="module")
def ruled(harmony):
    server = PrometheusServer(harmony_scrape_configs(harmony.url), rule_files=[str(RULES)]).start()
    try:
        server.wait_for('up{job="harmony-services"} == 1')
        server.scraped_after(time.time())  # a first sample of every counter before the load
        wav = wav_bytes(*synthesize(TEXT))
        for _ in range(2):  # twice: a route's series first appears with its first request, and a rate needs a rise
            assert transcribe(harmony.url, wav).status_code == 200
            assert httpx.get(harmony.url + "/v1/models", timeout=30).status_code == 200
            server.scraped_after(time.time() + 1)
        yield server
    finally:
        server.stop()


def test_every_rule_evaluates_without_error(ruled):
    def all_evaluated() -> bool:
        groups = httpx.get(ruled.url + "/api/v1/rules", timeout=10).json()["data"]["groups"]
        rules = [rule for group in groups for rule in group["rules"]]
        return len(rules) > 0 and all(rule.get("lastEvaluation", "").startswith("20") for rule in rules)

    ruled.wait(all_evaluated, 30, "every rule evaluated")
    groups = httpx.get(ruled.url + "/api/v1/rules", timeout=10).json()["data"]["groups"]
    broken = {rule["name"]: rule.get("lastError") for group in groups for rule in group["rules"]
              if rule["health"] != "ok"}
    assert not broken, broken


@pytest.mark.parametrize("record", records())
def test_every_recording_rule_returns_a_number_under_load(ruled, record):
    found = ruled.wait_for(f"{record} >= 0", timeout=30)  # NaN (no requests in the window) is filtered out
    if record.startswith("harmony_route:"):
        assert {"/v1/audio/transcriptions", "/v1/models"} <= {s["metric"]["route"] for s in found}, found


def test_the_alerts_joins_find_their_metrics(ruled):
    saturation = ruled.wait_for("sum by (model) (harmony_queue_depth) / sum by (model) (harmony_queue_capacity)")
    assert "whisper-tiny.en" in {s["metric"]["model"] for s in saturation}
    ready = ruled.wait_for("max by (model) (harmony_model_ready)")
    assert {s["metric"]["model"]: s["value"][1] for s in ready}["whisper-tiny.en"] == "1"
