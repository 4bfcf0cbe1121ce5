"""Harmony's Grafana dashboards as code (grafana-foundation-sdk): ``python deploy/dashboards/build.py`` writes
``deploy/grafana/*.json`` and the chart's copies under ``charts/harmony/files/dashboards/``. Never edit the JSON:
tests/unit/test_dashboards.py checks it equals what this builds, and tests/e2e/test_dashboard_queries.py runs every
panel's query against a real Prometheus scraping a real ``harmony serve``.

Every query uses metrics the engine exports (services/core/runtime/metrics.py): the router's own (``component=
"router"``) and the model services' (in Kubernetes scraped from the pods, in ``harmony serve`` through the router's
``/metrics/services``, each sample labelled with its ``replica``).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import dashboard, heatmap, prometheus, timeseries
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models.dashboard import DataSourceRef, VariableRefresh
from grafana_foundation_sdk.models.prometheus import PromQueryFormat

ROOT = Path(__file__).resolve().parents[2]
OUTPUTS = (ROOT / "deploy" / "grafana", ROOT / "charts" / "harmony" / "files" / "dashboards")
DATASOURCE = DataSourceRef(type_val="prometheus", uid="${datasource}")
RATE = "[$__rate_interval]"
ROUTER = 'component="router"'
MODEL = 'model=~"$model"'
TTS_MODELS = 'on (model) harmony_requests_total{component="tts"}'  # a model's direction: tts answers audio

# a process of the engine (router or model service), in Kubernetes (pod) as in harmony serve (replica)
ENGINE_PROCESS = "and on (instance, pod, replica) harmony_http_in_flight_requests"
# panels whose series appear only once their event has happened (a model scaled from zero, a replica ejected):
# empty on a healthy harmony serve, so tests/e2e/test_dashboard_queries.py does not expect data from them
# ("Key usage against quota": only keys with a quota have a series, and the tests' serve has no keys)
AFTER_EVENTS = frozenset({"Requests held for a model scaling from zero", "Ejected replicas",
                          "Key usage against quota"})


def query(expr: str, legend: str, ref: str = "A") -> prometheus.Dataquery:
    return prometheus.Dataquery().expr(expr).legend_format(legend).ref_id(ref).datasource(DATASOURCE)


def quantiles(metric: str, by: str, where: str = "") -> list[prometheus.Dataquery]:
    """p50, p95 and p99 of a histogram, one series per ``by``."""
    return [query(f"histogram_quantile({q}, sum by (le, {by}) (rate({metric}_bucket{{{where}}}{RATE})))",
                  f"p{round(q * 100)} {{{{{by}}}}}", ref) for q, ref in ((0.5, "A"), (0.95, "B"), (0.99, "C"))]


def graph(title: str, description: str, unit: str, targets: list[prometheus.Dataquery],
          width: int = 12) -> timeseries.Panel:
    panel = timeseries.Panel().title(title).description(description).unit(unit).span(width).height(8)
    return panel.datasource(DATASOURCE).targets(targets).fill_opacity(10).line_width(1)


def variables(board: dashboard.Dashboard, with_model: bool) -> dashboard.Dashboard:
    board = board.with_variable(dashboard.DatasourceVariable("datasource").label("Data source").type("prometheus"))
    if with_model:
        board = board.with_variable(
            dashboard.QueryVariable("model").label("Model").datasource(DATASOURCE)
            .query("label_values(harmony_queue_depth, model)").refresh(VariableRefresh.ON_TIME_RANGE_CHANGED)
            .multi(True).include_all(True).all_value(".+"))
    return board


def overview_panels() -> list[timeseries.Panel]:
    audio = f"sum(rate(harmony_audio_seconds_total{RATE}) OP {TTS_MODELS})"
    return [
        graph("Requests by route", "Requests per second the router answers, by route template", "reqps",
              [query(f"sum by (route) (rate(harmony_http_requests_total{{{ROUTER}}}{RATE}))", "{{route}}")]),
        graph("Errors by type", "Answers other than success, by outcome (client_error, rate_limited, timeout, "
              "unavailable, server_error, cancelled)", "reqps",
              [query(f'sum by (outcome) (rate(harmony_http_requests_total{{{ROUTER},outcome!="ok"}}{RATE}))',
                     "{{outcome}}")]),
        graph("Latency by route (p50, p95, p99)", "End-to-end request time at the router, body included",
              "s", quantiles("harmony_request_seconds", "route", ROUTER), 24),
        graph("Compute time by model (p50, p95, p99)", "Time a batch of the model took to run", "s",
              quantiles("harmony_inference_seconds", "model")),
        graph("Queue wait by model (p99)", "Time an item waited in the model's queue before its batch ran", "s",
              [query("histogram_quantile(0.99, sum by (le, model) (rate(harmony_queue_wait_seconds_bucket"
                     f"{RATE})))", "{{model}}")]),
        graph("Audio seconds per second, in and out", "Seconds of audio the models took in (stt, vad, embed, vc) "
              "and gave out (tts), per second of wall time", "none",
              [query(audio.replace("OP", "unless"), "in"), query(audio.replace("OP", "and"), "out", "B")]),
        graph("Queue depth by model", "Items waiting in each model's batch queue", "none",
              [query("sum by (model) (harmony_queue_depth)", "{{model}}")]),
        graph("Mean batch size by model", "Items per batch run", "none",
              [query(f"sum by (model) (rate(harmony_batch_size_sum{RATE})) / "
                     f"sum by (model) (rate(harmony_batch_size_count{RATE}))", "{{model}}")]),
        graph("In flight", "Requests admitted and not answered, per model (the autoscaling metric), and HTTP "
              "requests the router serves", "none",
              [query("sum by (model) (harmony_in_flight_requests)", "{{model}}"),
               query(f"sum(harmony_http_in_flight_requests{{{ROUTER}}})", "router (HTTP)", "B")]),
        graph("Refused (429) by component", "Requests answered 429: the router's admission and quotas, the "
              "models' full queues and unreachable deadlines (shed)", "reqps",
              [query(f'sum by (component) (rate(harmony_http_requests_total{{outcome="rate_limited"}}{RATE}))',
                     "{{component}}")]),
        graph("Replicas reporting by model", "Model service replicas whose metrics Prometheus reads", "none",
              [query("count by (model) (harmony_in_flight_requests)", "{{model}}")]),
        graph("Requests held for a model scaling from zero", "Requests the router holds until a replica of a "
              "model at zero is ready (a scale-from-zero event)", "none",
              [query("sum by (model) (harmony_router_held_requests)", "{{model}}")]),
        graph("Ejected replicas", "Replicas the router took out of balancing after a failed call, and "
              "ejections per second", "none",
              [query("sum by (model) (harmony_router_ejected_replicas)", "ejected {{model}}"),
               query(f"sum by (model) (rate(harmony_router_ejections_total{RATE}))", "ejections/s {{model}}",
                     "B")]),
        graph("Models ready", "Replicas of each model that have loaded it and serve (0 while loading or failed)",
              "none", [query("sum by (model) (harmony_model_ready)", "{{model}}")]),
        graph("Queue saturation by model", "Items queued over the queue's capacity (429 at 100 %)",
              "percentunit",
              [query("max by (model) (harmony_queue_depth / harmony_queue_capacity)", "{{model}}")]),
        graph("Realtime sessions", "Open WebSocket sessions on /v1/realtime", "none",
              [query("sum(harmony_realtime_sessions)", "sessions")]),
        graph("Key usage against quota", "Each API key's settled audio seconds over its day and month quotas "
              "(1: spent, its requests refused with 429)", "percentunit",
              [query("max by (key_name, key_id, period) (harmony_key_quota_used_ratio)",
                     "{{key_name}} ({{key_id}}) {{period}}")]),
        graph("Batches", "Batches ended per second by status, and batches open past their completion window",
              "none",
              [query(f"sum by (status) (rate(harmony_batches_total{RATE}))", "ended {{status}}/s"),
               query("max(harmony_batches_overdue)", "overdue", "B")]),
        graph("Store errors", "Failed operations per second of the database and the object store", "none",
              [query(f"sum by (store, operation) (rate(harmony_store_errors_total{RATE}))",
                     "{{store}} {{operation}}")]),
    ]


def model_panels() -> list[timeseries.Panel | heatmap.Panel]:
    batches = (heatmap.Panel().title("Batch size").description("Batches run per second by their size (items)")
               .span(12).height(8).datasource(DATASOURCE)
               .targets([query(f"sum by (le) (rate(harmony_batch_size_bucket{{{MODEL}}}{RATE}))", "{{le}}")
                         .format(PromQueryFormat.HEATMAP)]))
    return [
        batches,
        graph("Requests by model and outcome", "Requests the model services answered", "reqps",
              [query(f"sum by (model, outcome) (rate(harmony_requests_total{{{MODEL}}}{RATE}))",
                     "{{model}} {{outcome}}")]),
        graph("Queue wait (p50, p95, p99)", "Time an item waited before its batch ran", "s",
              quantiles("harmony_queue_wait_seconds", "model", MODEL)),
        graph("Compute time (p50, p95, p99)", "Time a batch took to run", "s",
              quantiles("harmony_inference_seconds", "model", MODEL)),
        graph("Audio seconds per second", "Seconds of audio each model processed per second", "none",
              [query(f"sum by (model) (rate(harmony_audio_seconds_total{{{MODEL}}}{RATE}))", "{{model}}")]),
        graph("Packing ratio (Whisper)", "Share of Whisper's windows decoded packed with other requests' "
              "windows, and those decoded again alone after a split failed", "percentunit",
              [query(f"sum by (model) (rate(harmony_stt_packed_windows_total{{{MODEL}}}{RATE})) / "
                     f"sum by (model) (rate(harmony_batch_size_sum{{{MODEL}}}{RATE}))", "packed {{model}}"),
               query(f"sum by (model) (rate(harmony_stt_pack_fallbacks_total{{{MODEL}}}{RATE})) / "
                     f"sum by (model) (rate(harmony_batch_size_sum{{{MODEL}}}{RATE}))", "fallback {{model}}",
                     "B")]),
        graph("Queue depth and in flight", "Items queued, and requests admitted and not answered", "none",
              [query(f"sum by (model) (harmony_queue_depth{{{MODEL}}})", "queued {{model}}"),
               query(f"sum by (model) (harmony_in_flight_requests{{{MODEL}}})", "in flight {{model}}", "B")]),
        graph("Model load time", "Seconds each replica took to load the model", "s",
              [query(f"max by (model) (harmony_model_load_seconds{{{MODEL}}})", "{{model}}")]),
        graph("Realtime sessions", "Open WebSocket sessions on /v1/realtime (the router)", "none",
              [query("sum(harmony_realtime_sessions)", "sessions")]),
        graph("Realtime turn latency (p50, p95)", "From the end of a realtime turn (the VAD's commit, "
              "silence_duration_ms after the last word) to its completed transcript, by the model that transcribed "
              "it", "s", quantiles("harmony_realtime_turn_seconds", "model", MODEL)[:2]),
        graph("Whisper guard fallbacks", "Windows per second Whisper's guards decoded again (compression_ratio, "
              "log_prob: at the next temperature; fitted_context, packed: alone over 30 s), kept at their best "
              "decode (ladder_exhausted), or judged silent (no_speech)", "none",
              [query(f"sum by (model, reason) (rate(harmony_stt_fallbacks_total{{{MODEL}}}{RATE}))",
                     "{{model}} {{reason}}")]),
        graph("Memory per process", "Resident memory of each engine process (a pod in Kubernetes; in harmony "
              "serve one process holds the router and every service)", "bytes",
              [query(f"max by (job, pod, replica) (process_resident_memory_bytes {ENGINE_PROCESS})",
                     "{{job}} {{pod}}{{replica}}")]),
        graph("CPU per process", "CPU seconds per second of each engine process", "none",
              [query(f"max by (job, pod, replica) (rate(process_cpu_seconds_total{RATE}) {ENGINE_PROCESS})",
                     "{{job}} {{pod}}{{replica}}")]),
    ]


def build(title: str, uid: str, panels: list, with_model: bool) -> dict:
    board = (dashboard.Dashboard(title).uid(uid).tags(["harmony"]).time("now-1h", "now").refresh("30s")
             .timezone("browser").editable())
    board = variables(board, with_model)
    for panel in panels:
        board = board.with_panel(panel)
    return json.loads(JSONEncoder(sort_keys=True).encode(board.build()))


def dashboards() -> dict[str, dict]:
    """File name -> dashboard JSON."""
    return {"harmony-overview.json": build("Harmony: overview", "harmony-overview", overview_panels(), False),
            "harmony-model.json": build("Harmony: model", "harmony-model", model_panels(), True)}


def rendered() -> dict[str, str]:
    return {name: json.dumps(board, indent=2, sort_keys=True) + "\n" for name, board in dashboards().items()}


def main() -> int:
    for out in OUTPUTS:
        out.mkdir(parents=True, exist_ok=True)
        for name, text in rendered().items():
            (out / name).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
