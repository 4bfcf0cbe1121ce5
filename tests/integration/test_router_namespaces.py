"""One router for models in other namespaces, for every shipped values profile: the chart rendered (release
namespace ``harmony``), ``router_main.serve`` run with the rendered router's arguments against kmock (an API
server), the operator's ConfigMap and an EndpointSlice created in a model namespace of the profile, and a request
through the router reaching a real Silero VAD service (the model pod) there. The ConfigMap is watched through the
API, so the model is routable within seconds of its creation (the mounted file would take the kubelet's minute).
A second model there scales to zero: a request for it is held, the router's wake-up call creates its demand Lease
in the model's namespace (not the router's), and the request goes on once a pod is ready.
The router's API calls, as kmock recorded them, are checked against the rendered RBAC with a small evaluator:
every call allowed, and every verb granted used."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from services import router_main
from services.core.contracts.specs import DatabaseSettings, HarmonyConfig, NamedModel, ServerSettings
from services.router.cluster import api_watch, wake
from services.vad.app import create_vad_app
from tests.helm import helm, run  # noqa: F401 (helm is a fixture)
from tests.servers import ServerThread, free_port, wait_ready
from tests.speech import SENTENCES, synthesize, wav_bytes

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "harmony"
PROFILES = [None, *sorted(p.name for p in (CHART / "ci").glob("*-values.yaml"))]
# Beside the shipped profiles: models in namespaces the operator's watchNamespaces do not name.
EXTRA = {"listed-namespaces": {"router": {"modelNamespaces": ["team-a", "team-b"]}}}
VALUES = {**EXTRA, "selector": {"router": {"modelNamespaceSelector": {"matchLabels": {"harmony.dev/models": "true"}}}}}
RELEASE_NS = "harmony"
VAD = {"name": "silero-vad", "task": "vad", "backend": "silero", "source": {"package": "silero-vad"}}
VAD_SPEC = {k: v for k, v in VAD.items() if k != "name"}  # a model table entry's spec


def render(helm_bin: Path, profile: str | None, tmp_path: Path | None = None) -> list[dict[str, Any]]:
    args = ["template", "h", str(CHART), "--namespace", RELEASE_NS]
    if profile in VALUES and tmp_path is not None:
        (tmp_path / "values.yaml").write_text(yaml.safe_dump(VALUES[profile]))
        args += ["--values", str(tmp_path / "values.yaml")]
    elif profile:
        args += ["--values", str(CHART / "ci" / profile)]
    return [d for d in yaml.safe_load_all(run(helm_bin, *args)) if d]


def router_args(objects: list[dict[str, Any]]) -> dict[str, str]:
    deployment = next(o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"].endswith("-router"))
    spec = deployment["spec"]["template"]["spec"]
    args = dict(a[2:].split("=", 1) if "=" in a else (a[2:], "") for a in spec["containers"][0]["args"])
    return {**args, "serviceAccount": spec["serviceAccountName"]}


# --- a small RBAC evaluator: which (verb, group, resource, namespace, name) the rendered objects grant a subject
def grants(objects: list[dict[str, Any]], account: str, namespace: str) -> list[dict[str, Any]]:
    """Every rule bound to ServiceAccount ``namespace/account``, with ``namespace`` (None: every namespace)."""
    roles = {(o["kind"], o["metadata"].get("namespace"), o["metadata"]["name"]): o for o in objects
             if o["kind"] in ("Role", "ClusterRole")}
    out = []
    for binding in (o for o in objects if o["kind"] in ("RoleBinding", "ClusterRoleBinding")):
        if {"kind": "ServiceAccount", "name": account, "namespace": namespace} not in binding.get("subjects", []):
            continue
        scope = binding["metadata"].get("namespace") if binding["kind"] == "RoleBinding" else None
        ref = binding["roleRef"]
        role = roles.get((ref["kind"], scope if ref["kind"] == "Role" else None, ref["name"]))
        assert role is not None, f"{binding['kind']} {binding['metadata']['name']} binds a missing {ref}"
        out += [{**rule, "namespace": scope} for rule in role.get("rules", [])]
    return out


def allowed(rules: list[dict[str, Any]], verb: str, group: str, resource: str, namespace: str | None,
            name: str | None) -> list[int]:
    """The indexes of the rules that allow the request (a cluster-wide request needs a cluster-wide rule)."""
    return [i for i, r in enumerate(rules)
            if verb in r["verbs"] and group in r["apiGroups"] and resource in r["resources"]
            and (r["namespace"] is None or r["namespace"] == namespace)
            and (not r.get("resourceNames") or name in r["resourceNames"])]


def call_of(request: Any) -> tuple[str, str, str, str | None, str | None]:
    """A recorded API call as RBAC sees it: verb, API group, resource, namespace, name (from the path, or a
    metadata.name field selector)."""
    parts = request.url.path.strip("/").split("/")
    group, rest = ("", parts[2:]) if parts[0] == "api" else (parts[1], parts[3:])
    namespace = rest[1] if rest[0] == "namespaces" and len(rest) > 2 else None
    rest = rest[2:] if namespace else rest
    resource, name = rest[0], (rest[1] if len(rest) > 1 else None)
    method = request.method.name
    if method == "GET":
        verb = "watch" if request.params.get("watch") in ("true", "1") else ("get" if name else "list")
        field = request.params.get("fieldSelector", "")
        name = name or (field.split("=", 1)[1] if field.startswith("metadata.name=") else None)
    else:
        verb = {"POST": "create", "PUT": "update", "PATCH": "patch", "DELETE": "delete"}[method]
    return verb, group, resource, namespace, name


class RouterPod:
    """``router_main.serve`` with the rendered router's flags, on its own event loop in a thread."""

    def __init__(self, config: HarmonyConfig, args: dict[str, str]) -> None:
        self.url = f"http://127.0.0.1:{config.server.port}"
        self.loop = asyncio.new_event_loop()
        namespaces = [n for n in args.get("model-namespaces", "").split(",") if n]
        self.serve = router_main.serve(config, "/nonexistent/models.yaml", 0.5, "warning",
                                       wake_models="wake-models" in args, watch_endpoints="watch-endpoints" in args,
                                       watch_models="watch-models" in args,
                                       model_namespaces=namespaces,
                                       namespace_selector=args.get("model-namespace-selector"))
        self.task: asyncio.Task | None = None
        self.thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.task = self.loop.create_task(self.serve)
        try:
            self.loop.run_until_complete(self.task)
        except asyncio.CancelledError:
            pass

    def stop(self) -> None:
        if self.task is not None:
            self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(30)
        assert not self.thread.is_alive()

    def models(self) -> list[str]:
        """The model ids the router lists now (none while it does not answer)."""
        answer = httpx.get(self.url + "/v1/models", timeout=5)
        return [m["id"] for m in answer.json()["data"]] if answer.status_code == 200 else []

    def vad(self, model: str, audio: bytes) -> httpx.Response:
        return httpx.post(self.url + "/v1/audio/vad", data={"model": model},
                          files={"file": ("speech.wav", audio, "audio/wav")}, timeout=60)


def router_on_kmock(kmock: Any, args: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> RouterPod:
    """A RouterPod (not started) in the release namespace, its service account's files in ``tmp_path``, its API calls
    (watches, demand Leases) all to kmock."""
    kmock.resources.load_bundled()
    (tmp_path / "namespace").write_text(RELEASE_NS)
    (tmp_path / "token").write_text("router-token")
    monkeypatch.setattr(router_main, "SERVICE_ACCOUNT", tmp_path)
    monkeypatch.setattr(api_watch, "SERVICE_ACCOUNT", tmp_path)
    monkeypatch.setattr(api_watch, "in_cluster_client", lambda: httpx.AsyncClient(base_url=str(kmock.url)))
    monkeypatch.setattr(wake.DemandLeases, "in_cluster", classmethod(
        lambda cls, namespace=None: cls(httpx.AsyncClient(base_url=str(kmock.url)), RELEASE_NS, tmp_path / "token")))
    config = HarmonyConfig(server=ServerSettings(host="127.0.0.1", port=free_port()),
                           data_dir=str(tmp_path / "data"),
                           database=DatabaseSettings(url=f"sqlite:///{tmp_path / 'router.db'}"))
    return RouterPod(config, args)


async def until(check, timeout: float, what: str) -> Any:
    deadline = time.monotonic() + timeout
    while not (result := check()):
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.05)
    return result


@pytest.fixture(scope="module")
def pod():
    names = [VAD["name"]] + [f"cold-{i}" for i in range(4)]  # cold-<i>: the i-th namespace's model at zero
    with ServerThread(create_vad_app([NamedModel.model_validate({**VAD, "name": n}) for n in names])) as server:
        wait_ready(server.url)
        yield server


@pytest.fixture(scope="module")
def audio() -> bytes:
    return wav_bytes(*synthesize(SENTENCES[0]))


def configmap(namespace: str, models: list[dict[str, Any]]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "harmony-router-models",
                                                                  "namespace": namespace},
            "data": {"models.yaml": json.dumps({"models": models})}}


def endpoint_slice(namespace: str, address: str, port: int) -> dict[str, Any]:
    return {"apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": "harmony-silero-vad-x1", "namespace": namespace,
                         "labels": {"kubernetes.io/service-name": "harmony-silero-vad"}},
            "endpoints": [{"addresses": [address], "conditions": {"ready": True}}],
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}]}


TEST_AGENT = "the-test"  # the test's own API calls (what kubectl would do), told apart from the router's


def cold_model(index: int, namespace: str, port: int) -> dict[str, Any]:
    """The VAD pod served as model ``cold-<index>`` of ``namespace``, one that scales to zero."""
    return {"name": f"cold-{index}", "spec": {**VAD_SPEC, "autoscaling": {"min_replicas": 0, "hold_timeout_s": 60}},
            "endpoint": f"http://harmony-cold-{index}.{namespace}.svc.cluster.local:{port}"}


def demand_lease_posts(kmock: Any, namespace: str) -> list[Any]:
    return [r for r in list(kmock) if r.method.name == "POST"
            and r.url.path == f"/apis/coordination.k8s.io/v1/namespaces/{namespace}/leases"]


async def wake_in(index: int, namespace: str, router: RouterPod, kmock: Any, api: httpx.AsyncClient, port: int,
                  audio: bytes) -> None:
    """A request for ``namespace``'s cold model (no ready pod) is held; the router creates the model's demand
    Lease in that namespace; a pod becomes ready (its EndpointSlice) and the held request is answered."""
    name = f"cold-{index}"
    held = asyncio.ensure_future(asyncio.to_thread(router.vad, name, audio))
    await until(lambda: demand_lease_posts(kmock, namespace), 10, f"the demand Lease in {namespace}")
    lease = kmock.objects["coordination.k8s.io/v1/leases", namespace, f"harmony-demand-{name}"]
    assert lease["metadata"]["labels"]["harmony.dev/demand"] == "true"
    assert not held.done()  # held while the model is at zero
    slice_ = endpoint_slice(namespace, "127.0.0.1", port)
    slice_["metadata"].update(name=f"harmony-{name}-x1", labels={"kubernetes.io/service-name": f"harmony-{name}"})
    assert (await api.post(f"/apis/discovery.k8s.io/v1/namespaces/{namespace}/endpointslices",
                           json=slice_)).status_code < 300
    response = await asyncio.wait_for(held, 30)
    assert response.status_code == 200, response.text
    assert response.json()["segments"]


@pytest.mark.parametrize("profile", [*PROFILES, *EXTRA], ids=[p or "default" for p in [*PROFILES, *EXTRA]])
async def test_a_router_serves_models_of_other_namespaces(profile, helm, pod, audio, kmock, tmp_path,
                                                          monkeypatch) -> None:
    objects = await asyncio.to_thread(render, helm, profile, tmp_path)
    args = router_args(objects)
    assert "wake-models" in args  # every shipped profile scales from zero
    served = [n for n in args["model-namespaces"].split(",") if n]
    target = served[-1]  # a model namespace of the profile (another than the router's, where the chart says so)
    router = router_on_kmock(kmock, args, tmp_path, monkeypatch)
    router.thread.start()
    try:
        await until(lambda: sum(1 for r in list(kmock) if r.params.get("watch") == "true"
                                and "/configmaps" in r.url.path) >= len(served), 30, "the ConfigMap watches")
        url = httpx.URL(pod.url)
        async with httpx.AsyncClient(base_url=str(kmock.url), headers={"User-Agent": TEST_AGENT}) as api:
            outside = configmap("elsewhere", [{"name": "intruder", "spec": VAD_SPEC,
                                               "endpoint": "http://harmony-intruder.elsewhere.svc:8080"}])
            assert (await api.post("/api/v1/namespaces/elsewhere/configmaps", json=outside)).status_code < 300
            slice_ = endpoint_slice(target, url.host, url.port)
            assert (await api.post(f"/apis/discovery.k8s.io/v1/namespaces/{target}/endpointslices",
                                   json=slice_)).status_code < 300
            created = time.monotonic()
            model = {"name": "silero-vad", "spec": VAD_SPEC,
                     "endpoint": f"http://harmony-silero-vad.{target}.svc.cluster.local:{url.port}"}
            for i, namespace in enumerate(served):  # a model that scales to zero in each namespace served
                table = [model] * (namespace == target) + [cold_model(i, namespace, url.port)]
                assert (await api.post(f"/api/v1/namespaces/{namespace}/configmaps",
                                       json=configmap(namespace, table))).status_code < 300

            await until(lambda: "silero-vad" in router.models(), 5, "the new model in the router's table")
            assert time.monotonic() - created < 3.0  # within seconds, not the kubelet's minute
            response = await asyncio.to_thread(router.vad, "silero-vad", audio)
            assert response.status_code == 200, response.text
            assert response.json()["segments"]
            assert "intruder" not in await asyncio.to_thread(router.models)  # a namespace the router does not serve
            await until(lambda: all(f"cold-{i}" in router.models() for i in range(len(served))), 5, "the cold models")
            for i, namespace in enumerate(served):  # each wakes in its own namespace, not the router's
                await wake_in(i, namespace, router, kmock, api, url.port, audio)
    finally:
        await asyncio.to_thread(router.stop)
    if RELEASE_NS not in served:
        assert not [r for r in list(kmock) if f"/namespaces/{RELEASE_NS}/leases" in r.url.path]
    check_rbac(objects, args["serviceAccount"], list(kmock), str(kmock.url))


def check_rbac(objects: list[dict[str, Any]], account: str, requests: list[Any], base: str) -> None:
    """Every API call the router made is allowed by the rendered RBAC, and every verb granted is used."""
    rules = grants(objects, account, RELEASE_NS)
    used: set[tuple[int, str]] = set()
    calls = [call_of(r) for r in requests if str(r.url).startswith(base) and r.headers.get("User-Agent") != TEST_AGENT]
    for call in calls:
        matching = allowed(rules, *call)
        assert matching, f"the router's {call} is not granted by the rendered RBAC"
        used |= {(i, call[0]) for i in matching}
    unused = [(r["namespace"], r["resources"], verb) for i, r in enumerate(rules) for verb in r["verbs"]
              if (i, verb) not in used]
    assert not unused, f"granted but never used by the router: {unused}"


@pytest.fixture
def namespaces_served(kmock: Any, monkeypatch: pytest.MonkeyPatch) -> Any:
    """kmock 0.8 takes ``/api/v1/namespaces[/NAME]`` for the prefix of a namespaced path and answers 500: parse it
    as the cluster-scoped resource it is, so kmock stores, lists, watches and patches Namespaces."""
    from kmock._internal import parsing

    original = parsing.parse_path

    def parse_path(path: str) -> Any:
        parts = path.strip("/").split("/")
        if parts[:3] == ["api", "v1", "namespaces"] and len(parts) <= 4:
            return parsing.ParsedPath("", "v1", "namespaces", None, parts[3] if len(parts) > 3 else None, None)
        return original(path)

    monkeypatch.setattr(parsing, "parse_path", parse_path)
    return kmock


def namespace(name: str, labels: dict[str, str]) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name, "labels": labels}}


async def test_a_namespace_selector_follows_the_labels(helm, pod, audio, namespaces_served, tmp_path,
                                                       monkeypatch) -> None:
    """router.modelNamespaceSelector: a namespace labelled after the router started is served within seconds (its
    model routable, its model at zero woken there), one whose label goes is dropped; the router's calls (Namespaces,
    ConfigMaps and EndpointSlices cluster-wide, the Lease) are what the rendered ClusterRoles grant, all used."""
    kmock = namespaces_served
    objects = await asyncio.to_thread(render, helm, "selector", tmp_path)
    args = router_args(objects)
    assert args["model-namespace-selector"] == "harmony.dev/models=true" and "model-namespaces" not in args
    url = httpx.URL(pod.url)
    model = {"name": "silero-vad", "spec": VAD_SPEC, "endpoint": f"http://harmony-silero-vad.team-a.svc:{url.port}"}
    marker = {"name": "cold-1", "spec": VAD_SPEC, "endpoint": f"http://harmony-cold-1.team-b.svc:{url.port}"}
    router = router_on_kmock(kmock, args, tmp_path, monkeypatch)
    async with httpx.AsyncClient(base_url=str(kmock.url), headers={"User-Agent": TEST_AGENT}) as api:
        for created in (namespace("team-a", {}), namespace("team-b", {"harmony.dev/models": "true"})):
            assert (await api.post("/api/v1/namespaces", json=created)).status_code < 300
        router.thread.start()
        try:
            await until(lambda: {"/api/v1/namespaces", "/api/v1/configmaps"} <= {
                r.url.path for r in list(kmock) if r.params.get("watch") == "true"}, 30, "the cluster-wide watches")
            for path, body in (("/apis/discovery.k8s.io/v1/namespaces/team-a/endpointslices",
                                endpoint_slice("team-a", url.host, url.port)),
                               ("/api/v1/namespaces/team-a/configmaps",
                                configmap("team-a", [model, cold_model(0, "team-a", url.port)])),
                               ("/api/v1/namespaces/team-b/configmaps", configmap("team-b", [marker]))):
                assert (await api.post(path, json=body)).status_code < 300

            await until(lambda: "cold-1" in router.models(), 5, "the labelled namespace's model")
            assert "silero-vad" not in router.models()  # team-a's table came first, but team-a is not selected
            merge = {"Content-Type": "application/merge-patch+json"}
            labelled = {"metadata": {"labels": {"harmony.dev/models": "true"}}}
            assert (await api.patch("/api/v1/namespaces/team-a", json=labelled, headers=merge)).status_code < 300
            await until(lambda: "silero-vad" in router.models(), 5, "the model of the namespace labelled later")
            response = await asyncio.to_thread(router.vad, "silero-vad", audio)
            assert response.status_code == 200, response.text
            await wake_in(0, "team-a", router, kmock, api, url.port, audio)
            unlabelled = {"metadata": {"labels": {"harmony.dev/models": "false"}}}
            assert (await api.patch("/api/v1/namespaces/team-a", json=unlabelled, headers=merge)).status_code < 300
            await until(lambda: "silero-vad" not in router.models() and "cold-1" in router.models(), 5,
                        "team-a dropped")
        finally:
            await asyncio.to_thread(router.stop)
    check_rbac(objects, args["serviceAccount"], list(kmock), str(kmock.url))
