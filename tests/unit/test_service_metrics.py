"""The router's /metrics/services: the services' expositions merged into one Prometheus can parse."""

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest
from prometheus_client.parser import text_string_to_metric_families

from services.router.service_metrics import Merged, replica_label


def exposition(model: str, component: str) -> str:
    registry = CollectorRegistry()
    Counter("harmony_requests_total", "Requests", ["component", "model", "outcome"],
            registry=registry).labels(component, model, "ok").inc(3)
    Gauge("harmony_queue_depth", "Queue", ["model"], registry=registry).labels(model).set(2)
    return generate_latest(registry).decode()


def test_two_services_merge_into_one_family_each_sample_labelled_with_its_replica():
    merged = Merged()
    merged.add(exposition("whisper", "stt"), "stt")
    merged.add(exposition("piper", "tts"), "10.0.0.7:8000")
    registry = CollectorRegistry(auto_describe=False)
    registry.register(merged)
    text = generate_latest(registry).decode()
    assert text.count("# TYPE harmony_requests_total counter") == 1  # one family, not one per service
    samples = {(s.name, s.labels.get("model"), s.labels["replica"]): s.value
               for family in text_string_to_metric_families(text) for s in family.samples
               if not s.name.endswith("_created")}
    assert samples == {("harmony_requests_total", "whisper", "stt"): 3.0,
                       ("harmony_requests_total", "piper", "10.0.0.7:8000"): 3.0,
                       ("harmony_queue_depth", "whisper", "stt"): 2.0,
                       ("harmony_queue_depth", "piper", "10.0.0.7:8000"): 2.0}


def test_replica_labels():
    assert replica_label("unix:/tmp/harmony-x/stt.sock") == "stt"
    assert replica_label("http://10.0.0.7:8000") == "10.0.0.7:8000"
