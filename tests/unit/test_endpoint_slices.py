"""The router's per-pod data plane without a cluster: EndpointSlice events into ready pod URLs, the merge with the
operator's ConfigMap (PodDirectory), and the watch's list/watch/relist protocol against a scripted API server."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import httpx
import pytest

from services.router.cluster import config_map as cluster
from services.router.cluster.endpoint_slices import EndpointSlice, SliceBook, SliceEvent
from services.router.cluster.pods import PodDirectory, service_of
from services.router.cluster.slice_watch import SliceWatch
from services.router.routing import ModelTable

NS = "speech"
VAD = {"name": "silero-vad", "task": "vad", "backend": "silero", "source": {"package": "silero-vad"}}
COLD = {**VAD, "name": "cold-vad", "autoscaling": {"min_replicas": 0, "max_replicas": 2}}


def slice_(name: str, service: str, pods: dict[str, bool | None], port: int = 8080,
           version: str = "1", extra_ports: list[dict] | None = None, address_type: str = "IPv4") -> dict[str, Any]:
    """An EndpointSlice as the API server sends it; ``pods``: address -> ready condition (None: not given)."""
    endpoints = []
    for address, ready in pods.items():
        conditions = {} if ready is None else {"ready": ready, "serving": True, "terminating": not ready}
        endpoints.append({"addresses": [address], "conditions": conditions, "targetRef": {"kind": "Pod"}})
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": address_type,
            "metadata": {"name": name, "namespace": NS, "resourceVersion": version,
                         "labels": {"kubernetes.io/service-name": service,
                                    "endpointslice.kubernetes.io/managed-by": "endpointslice-controller.k8s.io"}},
            "endpoints": endpoints,
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}, *(extra_ports or [])]}


def event(kind: str, obj: dict[str, Any]) -> SliceEvent:
    return SliceEvent.model_validate({"type": kind, "object": obj})


def test_ready_pods_of_a_service_across_its_slices() -> None:
    book = SliceBook()
    changed = book.reset([EndpointSlice.model_validate(slice_("a-1", "harmony-a", {"10.0.0.1": True})),
                          EndpointSlice.model_validate(slice_("a-2", "harmony-a", {"10.0.0.2": None,
                                                                                   "10.0.0.3": False})),
                          EndpointSlice.model_validate(slice_("b-1", "harmony-b", {"10.0.1.1": True}, port=9000))])
    assert changed == {"harmony-a", "harmony-b"}
    # ready unknown counts as ready (the API's rule); not ready (terminating) does not
    assert book.ready_urls("harmony-a", "http", 80) == ["http://10.0.0.1:8080", "http://10.0.0.2:8080"]
    assert book.ready_urls("harmony-b", "http", 80) == ["http://10.0.1.1:9000"]
    assert book.ready_urls("harmony-c", "http", 80) == []


def test_events_add_change_and_remove_pods() -> None:
    book = SliceBook()
    book.reset([])
    assert book.apply(event("ADDED", slice_("a-1", "harmony-a", {"10.0.0.1": True}))) == {"harmony-a"}
    book.apply(event("MODIFIED", slice_("a-1", "harmony-a", {"10.0.0.1": True, "10.0.0.2": True}, version="2")))
    assert book.ready_urls("harmony-a", "http", 80) == ["http://10.0.0.1:8080", "http://10.0.0.2:8080"]
    # a rollout: the old pod terminates (ready false) before it goes
    book.apply(event("MODIFIED", slice_("a-1", "harmony-a", {"10.0.0.1": False, "10.0.0.2": True}, version="3")))
    assert book.ready_urls("harmony-a", "http", 80) == ["http://10.0.0.2:8080"]
    assert book.apply(event("DELETED", slice_("a-1", "harmony-a", {}))) == {"harmony-a"}
    assert book.ready_urls("harmony-a", "http", 80) == []


def test_ports_ipv6_and_fqdn_slices() -> None:
    six = EndpointSlice.model_validate(slice_("s", "svc", {"fd00::5": True}, address_type="IPv6"))
    assert six.ready_urls("http", 80) == ["http://[fd00::5]:8080"]
    metrics = slice_("s", "svc", {"10.0.0.1": True}, extra_ports=[{"name": "metrics", "port": 9090}])
    assert EndpointSlice.model_validate(metrics).ready_urls("http", 80) == ["http://10.0.0.1:8080"]
    unnamed = slice_("s", "svc", {"10.0.0.1": True})
    unnamed["ports"] = [{"port": 7000}]
    assert EndpointSlice.model_validate(unnamed).ready_urls("http", 80) == ["http://10.0.0.1:7000"]
    unnamed["ports"] = None  # no ports: the endpoint URL's port
    assert EndpointSlice.model_validate(unnamed).ready_urls("http", 8080) == ["http://10.0.0.1:8080"]
    fqdn = slice_("s", "svc", {"db.example.com": True}, address_type="FQDN")
    assert EndpointSlice.model_validate(fqdn).ready_urls("http", 80) == []


def test_service_of_an_endpoint_url() -> None:
    assert service_of("http://harmony-whisper-base.speech.svc.cluster.local:8080", NS) == ("harmony-whisper-base",
                                                                                           8080)
    assert service_of("http://harmony-a.speech.svc:8080", NS) == ("harmony-a", 8080)
    assert service_of("http://harmony-a.speech:8080", NS) == ("harmony-a", 8080)
    assert service_of("http://harmony-a.other.svc.cluster.local:8080", NS)[0] is None  # not our namespace
    assert service_of("http://10.0.0.1:8080", NS)[0] is None
    assert service_of("unix:/tmp/x.sock", NS)[0] is None


def models_file(*entries: dict[str, Any]) -> cluster.ClusterModels:
    return cluster.parse_models(json.dumps({"models": list(entries)}))


def entry(spec: dict[str, Any], ready: int | None = None) -> dict[str, Any]:
    body = {k: v for k, v in spec.items() if k != "name"}
    out = {"name": spec["name"], "endpoint": f"http://harmony-{spec['name']}.{NS}.svc.cluster.local:8080",
           "spec": body}
    if ready is not None:
        out["ready_replicas"] = ready
    return out


def urls(table: ModelTable, name: str) -> list[str]:
    return [r.url for r in table.models[name].replicas]


def test_pod_directory_merges_the_configmap_and_the_watch() -> None:
    table = ModelTable()
    pods = PodDirectory(table, NS)
    cluster.apply(table, models_file(entry(VAD), entry(COLD, ready=0)), pods)
    service = "http://harmony-silero-vad.speech.svc.cluster.local:8080"
    assert urls(table, "silero-vad") == [service]  # before the first list: the Service's URL
    assert urls(table, "cold-vad") == []  # scaled to zero, as the ConfigMap says

    pods.reset([EndpointSlice.model_validate(slice_("v-1", "harmony-silero-vad",
                                                    {"10.0.0.1": True, "10.0.0.2": True}))])
    assert urls(table, "silero-vad") == ["http://10.0.0.1:8080", "http://10.0.0.2:8080"]
    replica = table.models["silero-vad"].replicas[0]
    replica.in_flight = 3

    # a pod of the cold model is ready: its held requests go on at once (the table's ready hook)
    pods.event(event("ADDED", slice_("c-1", "harmony-cold-vad", {"10.0.2.1": True})))
    assert urls(table, "cold-vad") == ["http://10.0.2.1:8080"]

    # a pod leaves; the one that stays keeps its counters
    pods.event(event("MODIFIED", slice_("v-1", "harmony-silero-vad", {"10.0.0.1": True, "10.0.0.2": False})))
    assert urls(table, "silero-vad") == ["http://10.0.0.1:8080"]
    assert table.models["silero-vad"].replicas[0] is replica and replica.in_flight == 3

    # a ConfigMap reload keeps the pods (and the replica objects)
    cluster.apply(table, models_file(entry(VAD), entry(COLD, ready=0)), pods)
    assert urls(table, "silero-vad") == ["http://10.0.0.1:8080"]
    assert table.models["silero-vad"].replicas[0] is replica

    # no ready pod: a model that scales to zero holds its requests, any other falls back to its Service URL
    pods.event(event("DELETED", slice_("v-1", "harmony-silero-vad", {})))
    pods.event(event("DELETED", slice_("c-1", "harmony-cold-vad", {})))
    assert urls(table, "silero-vad") == [service]
    assert urls(table, "cold-vad") == []


def test_a_relist_replaces_what_was_known() -> None:
    table = ModelTable()
    pods = PodDirectory(table, NS)
    cluster.apply(table, models_file(entry(VAD)), pods)
    pods.reset([EndpointSlice.model_validate(slice_("v-1", "harmony-silero-vad", {"10.0.0.1": True}))])
    pods.reset([EndpointSlice.model_validate(slice_("v-9", "harmony-silero-vad", {"10.0.0.9": True}))])
    assert urls(table, "silero-vad") == ["http://10.0.0.9:8080"]
    cluster.apply(table, models_file(), pods)  # the model went away: later events touch nothing
    pods.event(event("ADDED", slice_("v-2", "harmony-silero-vad", {"10.0.0.2": True})))
    assert table.models == {}


class ScriptedApiServer:
    """The API server's list and watch answers for EndpointSlices, scripted per call; records the requests."""

    def __init__(self, answers: list[httpx.Response]) -> None:
        self.answers = answers
        self.requests: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        if not self.answers:
            raise httpx.ConnectError("no more answers")
        return self.answers.pop(0)


def listing(version: str, *slices: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, json={"kind": "EndpointSliceList", "metadata": {"resourceVersion": version},
                                     "items": list(slices)})


def watching(*events: dict[str, Any]) -> httpx.Response:
    return httpx.Response(200, content="".join(json.dumps(e) + "\n" for e in events).encode())


async def run_until(watch: SliceWatch, server: ScriptedApiServer, done) -> None:
    task = asyncio.create_task(watch.run())
    try:
        for _ in range(200):
            if done():
                return
            await asyncio.sleep(0.01)
        raise AssertionError(f"the watch did not get there; requests: {[str(r.url) for r in server.requests]}")
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task


async def test_the_watch_lists_watches_resumes_and_relists(tmp_path) -> None:
    token = tmp_path / "token"
    token.write_text("secret-token\n")
    server = ScriptedApiServer([
        listing("10", slice_("v-1", "harmony-silero-vad", {"10.0.0.1": True})),
        watching({"type": "ADDED", "object": slice_("v-2", "harmony-silero-vad", {"10.0.0.2": True}, version="11")},
                 {"type": "BOOKMARK", "object": {"kind": "EndpointSlice", "metadata": {"resourceVersion": "15"}}}),
        # the server ended that watch; the next one resumes from the bookmark, then the version expires
        watching({"type": "ERROR", "object": {"kind": "Status", "code": 410, "message": "too old"}}),
        listing("20", slice_("v-3", "harmony-silero-vad", {"10.0.0.3": True})),
        httpx.Response(410, json={"kind": "Status", "code": 410}),
        listing("30", slice_("v-3", "harmony-silero-vad", {"10.0.0.3": True, "10.0.0.4": True})),
    ])
    resets: list[list[str]] = []
    events: list[tuple[str, str]] = []
    client = httpx.AsyncClient(base_url="https://kube.test", transport=httpx.MockTransport(server))
    watch = SliceWatch(client, NS, lambda slices: resets.append([s.metadata.name for s in slices]),
                       lambda e: events.append((e.type, e.object.metadata.name)), token_file=token)
    await run_until(watch, server, lambda: len(resets) == 3)
    await client.aclose()

    assert resets == [["v-1"], ["v-3"], ["v-3"]] and events == [("ADDED", "v-2")]
    paths = {r.url.path for r in server.requests}
    assert paths == {"/apis/discovery.k8s.io/v1/namespaces/speech/endpointslices"}
    watches = [r.url.params for r in server.requests if r.url.params.get("watch") == "true"]
    assert [w["resourceVersion"] for w in watches][:3] == ["10", "15", "20"]  # (then "30", after the last list)
    assert all(w["allowWatchBookmarks"] == "true" for w in watches)
    assert all(r.headers["authorization"] == "Bearer secret-token" for r in server.requests)


async def test_the_watch_backs_off_and_restarts_after_failures(monkeypatch) -> None:
    from services.router.cluster import api_watch

    monkeypatch.setattr(api_watch, "FIRST_BACKOFF_S", 0.01)
    server = ScriptedApiServer([
        httpx.Response(403, json={"kind": "Status", "code": 403, "message": "forbidden"}),
        httpx.Response(200, content=b"not json"),
        listing("5", slice_("v-1", "harmony-silero-vad", {"10.0.0.1": True})),
    ])
    resets: list[int] = []
    client = httpx.AsyncClient(base_url="https://kube.test", transport=httpx.MockTransport(server))
    watch = SliceWatch(client, NS, lambda slices: resets.append(len(slices)), lambda e: None)
    await run_until(watch, server, lambda: resets == [1])
    await client.aclose()
