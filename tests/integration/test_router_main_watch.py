"""`python -m services.router_main --watch-endpoints`, wired as a router pod runs it: the models from the operator's
ConfigMap file name each model's Service by its cluster DNS name (which does not resolve here), and the EndpointSlice
watch, against a scripted API server, gives the ready pod behind it (a real Silero VAD service on loopback). A request
through the router reaches the pod only if the watch is wired into the router's model table; without the watch the
same router answers 503, so the test can tell the difference."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import httpx
import pytest

from services import router_main
from services.core.contracts.specs import DatabaseSettings, HarmonyConfig, NamedModel, ServerSettings
from services.router.cluster import api_watch
from services.vad.app import create_vad_app
from tests.servers import ServerThread, free_port, wait_ready
from tests.speech import SENTENCES, synthesize, wav_bytes

NS = "speech"
VAD = {"name": "silero-vad", "task": "vad", "backend": "silero", "source": {"package": "silero-vad"}}


class ScriptedApiServer:
    """Lists one EndpointSlice: the pod at ``address:port``, ready; a watch then stays open with nothing to say."""

    def __init__(self, address: str, port: int) -> None:
        self.slice = {
            "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice", "addressType": "IPv4",
            "metadata": {"name": "harmony-silero-vad-x1", "namespace": NS, "resourceVersion": "1",
                         "labels": {"kubernetes.io/service-name": "harmony-silero-vad"}},
            "endpoints": [{"addresses": [address], "conditions": {"ready": True, "serving": True,
                                                                  "terminating": False}}],
            "ports": [{"name": "http", "port": port, "protocol": "TCP"}]}
        self.paths: list[str] = []

    async def __call__(self, request: httpx.Request) -> httpx.Response:
        self.paths.append(request.url.path)
        if request.url.params.get("watch") == "true":
            await asyncio.sleep(3600)
        return httpx.Response(200, json={"kind": "EndpointSliceList", "metadata": {"resourceVersion": "1"},
                                         "items": [self.slice]})


class RouterPod:
    """``router_main.serve`` on its own event loop in a thread, stopped by cancelling it."""

    def __init__(self, config: HarmonyConfig, models_file: str, watch: bool) -> None:
        self.url = f"http://127.0.0.1:{config.server.port}"
        self.loop = asyncio.new_event_loop()
        self.task: asyncio.Task | None = None
        self.thread = threading.Thread(target=self._run, args=(config, models_file, watch), daemon=True)

    def _run(self, config: HarmonyConfig, models_file: str, watch: bool) -> None:
        asyncio.set_event_loop(self.loop)
        self.task = self.loop.create_task(router_main.serve(config, models_file, 0.5, "warning",
                                                            watch_endpoints=watch))
        try:
            self.loop.run_until_complete(self.task)
        except asyncio.CancelledError:
            pass

    def __enter__(self) -> RouterPod:
        self.thread.start()
        for _ in range(300):
            try:
                if httpx.get(self.url + "/healthz", timeout=1).status_code == 200:
                    return self
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        raise AssertionError("the router did not start")

    def __exit__(self, *exc) -> None:
        self.loop.call_soon_threadsafe(self.task.cancel)
        self.thread.join(30)
        assert not self.thread.is_alive()


@pytest.fixture(scope="module")
def pod():
    model = NamedModel.model_validate(VAD)
    with ServerThread(create_vad_app([model])) as server:
        wait_ready(server.url)
        yield server


@pytest.fixture
def router_config(tmp_path, monkeypatch, pod):
    """The service account's namespace file, the scripted API server, the ConfigMap file and the router's config."""
    (tmp_path / "namespace").write_text(NS)
    monkeypatch.setattr(router_main, "SERVICE_ACCOUNT", tmp_path)
    url = httpx.URL(pod.url)
    api = ScriptedApiServer(url.host, url.port)

    (tmp_path / "token").write_text("token")
    monkeypatch.setattr(api_watch, "SERVICE_ACCOUNT", tmp_path)
    monkeypatch.setattr(api_watch, "in_cluster_client", lambda: httpx.AsyncClient(
        base_url="https://kube.test", transport=httpx.MockTransport(api)))
    spec = {k: v for k, v in VAD.items() if k != "name"}
    models = tmp_path / "models.yaml"
    models.write_text(json.dumps({"models": [{
        "name": "silero-vad", "endpoint": f"http://harmony-silero-vad.{NS}.svc.cluster.local:{url.port}",
        "spec": spec}]}))
    config = HarmonyConfig(server=ServerSettings(host="127.0.0.1", port=free_port()), data_dir=str(tmp_path / "data"),
                           database=DatabaseSettings(url=f"sqlite:///{tmp_path / 'router.db'}"))
    return config, str(models), api


@pytest.fixture(scope="module")
def audio() -> bytes:
    return wav_bytes(*synthesize(SENTENCES[0]))


def vad(router: RouterPod, audio: bytes) -> httpx.Response:
    return httpx.post(router.url + "/v1/audio/vad", data={"model": "silero-vad"}, timeout=60,
                      files={"file": ("speech.wav", audio, "audio/wav")})


def test_with_the_watch_the_router_reaches_the_pod_behind_the_service(router_config, audio) -> None:
    config, models, api = router_config
    with RouterPod(config, models, watch=True) as router:
        for _ in range(300):  # the list answered and applied: the watch that follows has begun
            if len(api.paths) >= 2:
                break
            time.sleep(0.05)
        response = vad(router, audio)
    assert response.status_code == 200, response.text
    assert response.json()["segments"], response.json()
    assert f"/apis/discovery.k8s.io/v1/namespaces/{NS}/endpointslices" in api.paths


def test_without_the_watch_the_service_name_alone_does_not_resolve_here(router_config, audio) -> None:
    config, models, api = router_config
    with RouterPod(config, models, watch=False) as router:
        response = vad(router, audio)
    assert response.status_code == 503, response.text
    assert not api.paths
