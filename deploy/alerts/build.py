"""Harmony's Prometheus rules, generated: `python deploy/alerts/build.py` writes deploy/alerts/harmony.rules.yaml
and its copy for the chart (charts/harmony/files/alerts/harmony.rules.yaml, which templates/prometheusrule.yaml
reads). Never edit the YAML by hand: tests/unit/test_alerts.py checks both files equal this script's output.

SLOs (multiwindow, multi-burn-rate alerts as in Google's SRE workbook, chapter 5):
- availability 99.9 % of the router's requests (an error is a 5xx: server_error, unavailable, timeout);
- latency 99 % of each route's requests within the route's threshold (LATENCY_SLO).
Each alert's runbook is docs/operations.md "Alerts", one section per alert (`runbook_url`).
"""

from __future__ import annotations

import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
OUTPUTS = (ROOT / "deploy/alerts/harmony.rules.yaml", ROOT / "charts/harmony/files/alerts/harmony.rules.yaml")
RUNBOOK = "docs/operations.md#{anchor}"  # the chart prefixes alerts.runbookBaseUrl

AVAILABILITY_SLO = 0.999
LATENCY_SLO = 0.99
ERRORS = 'outcome=~"server_error|unavailable|timeout"'
ROUTER = 'component="router"'
# route template -> the latency its requests should stay within: a bucket bound of harmony_request_seconds, as the
# Python client writes it (le="30.0")
LATENCY_THRESHOLDS = {
    "/v1/audio/transcriptions": "30.0", "/v1/audio/translations": "30.0", "/v1/audio/speech": "10.0",
    "/v1/audio/vad": "10.0", "/v1/audio/embeddings": "10.0", "/v1/audio/conversions": "30.0", "/v1/models": "1.0",
}
WINDOWS = ("5m", "30m", "1h", "2h", "6h", "1d", "3d")
# (long window, short window, burn rate) pairs of the workbook: the fast burn pages, the slow one makes a ticket
FAST = (("1h", "5m", 14.4), ("6h", "30m", 6))
SLOW = (("1d", "2h", 3), ("3d", "6h", 1))
SPEEDS = (("Fast", FAST, "critical", "2m"), ("Slow", SLOW, "warning", "1h"))


def runbook(alert: str) -> str:
    return RUNBOOK.format(anchor=alert.lower())


def alert(name: str, expr: str, for_: str, severity: str, summary: str, description: str) -> dict:
    return {"alert": name, "expr": expr, "for": for_, "labels": {"severity": severity},
            "annotations": {"summary": summary, "description": description, "runbook_url": runbook(name)}}


def availability_records() -> list[dict]:
    return [{"record": f"harmony:slo_errors_per_request:ratio_rate{w}",
             "expr": f"(\n  sum by (namespace) (rate(harmony_http_requests_total{{{ROUTER},{ERRORS}}}[{w}]))\nor\n"
                     f"  0 * sum by (namespace) (rate(harmony_http_requests_total{{{ROUTER}}}[{w}]))\n)\n"
                     f"/\nsum by (namespace) (rate(harmony_http_requests_total{{{ROUTER}}}[{w}]))"}  # 0 without errors
            for w in WINDOWS]


def latency_records() -> list[dict]:
    """Per route: the share of requests slower than the route's threshold (one rule per window and threshold)."""
    by_le: dict[str, list[str]] = {}
    for route, le in LATENCY_THRESHOLDS.items():
        by_le.setdefault(le, []).append(route)
    rules = []
    for w in WINDOWS:
        for le, routes in by_le.items():
            sel = f'{ROUTER},route=~"{"|".join(routes)}"'
            rules.append({"record": f"harmony_route:slo_slow_per_request:ratio_rate{w}", "labels": {"le_slo": le},
                          "expr": f"1 - (\n  sum by (namespace, route) (rate(harmony_request_seconds_bucket"
                                  f'{{{sel},le="{le}"}}[{w}]))\n/\n  sum by (namespace, route) '
                                  f"(rate(harmony_request_seconds_count{{{sel}}}[{w}]))\n)"})
    return rules


def burn_expr(record: str, budget: float, pairs: tuple) -> str:
    terms = [f"(\n  {record}{long} > {rate} * {budget:g}\nand\n  {record}{short} > {rate} * {budget:g}\n)"
             for long, short, rate in pairs]
    return "\nor\n".join(terms)


def slo_alerts() -> list[dict]:
    errors = "harmony:slo_errors_per_request:ratio_rate"
    slow = "harmony_route:slo_slow_per_request:ratio_rate"
    rules = []
    for speed, pairs, severity, for_ in SPEEDS:
        windows = " or ".join(f"{long}/{short} at {rate}x" for long, short, rate in pairs)
        rules.append(alert(
            f"HarmonyErrorBudgetBurn{speed}", burn_expr(errors, 1 - AVAILABILITY_SLO, pairs), for_, severity,
            f"5xx errors burn the 99.9 % availability budget too fast ({windows})",
            "{{ $value | humanizePercentage }} of the router's requests failed with a 5xx over the alert's long "
            "window (the budget: 0.1 %)."))
        rules.append(alert(
            f"HarmonyLatencyBudgetBurn{speed}", burn_expr(slow, 1 - LATENCY_SLO, pairs), for_, severity,
            f"{{{{ $labels.route }}}} is slow: its latency budget burns too fast ({windows})",
            "{{ $value | humanizePercentage }} of {{ $labels.route }}'s requests took longer than "
            "{{ $labels.le_slo }} s over the alert's long window (the SLO: 99 % within it)."))
    return rules


def operational_alerts() -> list[dict]:
    return [
        alert("HarmonyQueueSaturated",
              "sum by (namespace, model) (harmony_queue_depth)\n/\n"
              "sum by (namespace, model) (harmony_queue_capacity)\n> 0.8", "5m", "warning",
              "{{ $labels.model }}'s batch queues are {{ $value | humanizePercentage }} full",
              "Past its capacity a queue refuses new requests with 429: add replicas or batch capacity."),
        alert("HarmonySustained429s",
              f'sum by (namespace) (rate(harmony_http_requests_total{{{ROUTER},outcome="rate_limited"}}[15m]))\n/\n'
              f"sum by (namespace) (rate(harmony_http_requests_total{{{ROUTER}}}[15m]))\n> 0.05", "15m", "warning",
              "{{ $value | humanizePercentage }} of the router's requests are refused with 429",
              "Full queues, keys past their rate limits or quotas, or deadlines the models cannot meet."),
        alert("HarmonyModelNotReady", "max by (namespace, model) (harmony_model_ready) == 0", "15m", "critical",
              "{{ $labels.model }} has not been ready for 15 minutes",
              "Its service answers, but the model is still loading or its load failed (see /readyz)."),
        alert("HarmonyRequestsHeld", "max by (namespace, model) (harmony_router_held_requests) > 0", "5m",
              "critical", "Requests for {{ $labels.model }} wait for a replica that does not come",
              "The router holds requests for a model with no ready replica (scale from zero) for 5 minutes."),
        alert("HarmonyReplicasEjected",
              "max by (namespace, model) (harmony_router_ejected_replicas) > 0\n"
              "or\nsum by (namespace, model) (increase(harmony_router_ejections_total[15m])) > 5", "5m", "warning",
              "Replicas of {{ $labels.model }} are ejected by the router",
              "A replica failed calls and its /readyz does not answer ready, or replicas keep being ejected."),
        alert("HarmonyRetryBudgetExhausted",
              'sum by (namespace, model) (rate(harmony_router_retries_total{outcome="refused_by_budget"}[5m]))'
              " > 0", "10m", "warning", "Retries to {{ $labels.model }} are refused by the retry budget",
              "More than a tenth of the model's calls fail in a way that would be retried on another replica."),
    ]


def store_alerts() -> list[dict]:
    """Keys near their quotas, batches past their window, failing stores: read by the router from the database."""
    return [
        alert("HarmonyQuotaNearlySpent",
              "max by (namespace, key_id, key_name, period) (harmony_key_quota_used_ratio) > 0.9", "15m", "warning",
              "Key {{ $labels.key_name }} ({{ $labels.key_id }}) has used {{ $value | humanizePercentage }} of its "
              "{{ $labels.period }} audio quota",
              "Once spent, its requests are refused with 429 insufficient_quota until the period ends (UTC)."),
        alert("HarmonyBatchOverdue",
              "max by (namespace) (harmony_batches_overdue) > 0\nor\n"
              'sum by (namespace) (increase(harmony_batches_total{status="expired"}[1h])) > 0', "10m", "warning",
              "Batches are past their completion window",
              "Batches stay open past their window (no router finalizes them), or batches ended expired in the "
              "last hour (their requests did not all run in time)."),
        alert("HarmonyStoreErrors",
              "sum by (namespace, store, operation) (increase(harmony_store_errors_total[10m])) > 3", "5m",
              "critical", "The {{ $labels.store }} store fails {{ $labels.operation }} operations",
              "{{ $value | humanize }} {{ $labels.operation }} operations on the {{ $labels.store }} store failed "
              "in 10 minutes: keys, quotas, audit, files and batches depend on it."),
    ]


def rules() -> dict:
    return {"groups": [
        {"name": "harmony-slo-recording", "rules": availability_records() + latency_records()},
        {"name": "harmony-slo-alerts", "rules": slo_alerts()},
        {"name": "harmony-alerts", "rules": operational_alerts() + store_alerts()},
    ]}


class _Literal(yaml.SafeDumper):
    pass


def _text(dumper: yaml.SafeDumper, value: str) -> yaml.ScalarNode:
    style = "|" if "\n" in value else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", value, style=style)


_Literal.add_representer(str, _text)

HEADER = "# Generated by deploy/alerts/build.py: do not edit (tests/unit/test_alerts.py checks it).\n"


def render() -> str:
    return HEADER + yaml.dump(rules(), Dumper=_Literal, sort_keys=False, width=120)


def main(argv: list[str]) -> int:
    text = render()
    for path in OUTPUTS:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    print("\n".join(str(p.relative_to(ROOT)) for p in OUTPUTS))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
