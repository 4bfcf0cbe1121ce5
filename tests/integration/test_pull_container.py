"""The operator's contract with `harmony pull`, run for real: the init container's own command and environment
(from manifests.pull_container) fill a cache from a Hub mirror and leave a termination message the operator
turns into status.weights; then the model container, offline as the operator starts it, serves from that cache."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx

from harmony_operator import manifests
from harmony_operator.pulls import pull_state
from harmony_operator.settings import OperatorSettings
from services.core.contracts.specs import SpeechModelSpec
from services.service_main import build_app, load_model
from tests.hub_mirror import TINY
from tests.servers import ServerThread, dead_url
from tests.speech import synthesize, wav_bytes, wer

ROOT = Path(__file__).resolve().parents[2]


def test_the_pull_init_container_fills_the_cache_and_the_offline_model_serves(hub_mirror, tmp_path, monkeypatch):
    spec = SpeechModelSpec.model_validate({"task": "stt", "backend": "faster-whisper",
                                           "source": {"hf": {"repo": TINY}, "credentials_secret": "hf-token"}})
    settings = OperatorSettings(hf_endpoint=hub_mirror.endpoint)
    container = manifests.pull_container(spec, settings)
    assert container["envFrom"] == [{"secretRef": {"name": "hf-token"}}]
    model_file = tmp_path / "model.yaml"
    model_file.write_text(manifests.model_file("whisper-hub", spec))
    cache, log = tmp_path / "cache", tmp_path / "termination-log"
    # the container's paths, mapped onto this machine's
    places = {manifests.MODEL_FILE: str(model_file), manifests.TERMINATION_LOG: str(log),
              manifests.CACHE_DIR: str(cache)}
    args = [places.get(arg, arg) for arg in container["args"]]
    env = {e["name"]: places.get(e["value"], e["value"]) for e in container["env"] if "value" in e}
    assert env["HF_ENDPOINT"] == hub_mirror.endpoint and env["HARMONY_CACHE_DIR"] == str(cache)
    env["HOME"] = str(tmp_path)
    assert container["command"] == ["harmony", "pull"]
    done = subprocess.run([sys.executable, "-m", "services.cli", "pull", *args], cwd=ROOT,
                          env={**os.environ, **env}, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    # the kubelet keeps the termination message in the pod's status; the operator reads it from there
    template = manifests.pod_spec("whisper-hub", spec, settings)
    pod = {"metadata": {"name": "whisper-hub-abc"}, "spec": template, "status": {"initContainerStatuses": [{
        "name": "pull", "state": {"terminated": {"exitCode": 0, "reason": "Completed", "message": log.read_text(),
                                                  "finishedAt": "2026-12-07T04:00:00Z"}}}]}}
    state = pull_state([pod], spec.source)
    assert state.phase == "ready" and state.weights.revision == hub_mirror.commits[TINY][-1]
    assert state.weights.bytesDone == state.weights.bytesTotal > 75_000_000

    # the model container: offline, its Hub unreachable, the same cache
    assert [c["name"] for c in template["initContainers"]] == ["pull"]
    (main,) = template["containers"]
    assert {"name": "HARMONY_OFFLINE", "value": "1"} in main["env"] and "envFrom" not in main
    monkeypatch.setenv("HARMONY_OFFLINE", "1")
    monkeypatch.setenv("HARMONY_CACHE_DIR", str(cache))
    with dead_url() as nowhere:
        monkeypatch.setenv("HF_ENDPOINT", nowhere)
        with ServerThread(build_app(load_model(model_file))) as service:
            assert httpx.get(service.url + "/readyz", timeout=10).status_code == 200
            text = "The weights were ready before the service started."
            audio, rate = synthesize(text)
            answer = httpx.post(service.url + "/v1/audio/transcriptions",
                                data={"model": "whisper-hub", "temperature": "0"},
                                files={"file": ("a.wav", wav_bytes(audio, rate))}, timeout=120)
            assert answer.status_code == 200 and wer(text, answer.json()["text"]) <= 0.2, answer.text
