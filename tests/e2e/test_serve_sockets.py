"""`harmony serve` exposes the router alone: one TCP listening port; the model services listen on Unix sockets
that only the engine's user can open (0600 in a 0700 directory), never printed, removed at exit."""

from __future__ import annotations

import os
import stat
import tempfile

import httpx
import psutil
import pytest
import yaml

from services.core.http.service_url import socket_path, sync_client
from services.serve import private_socket_dir
from tests.harmony_process import HarmonyProcess, connections
from tests.speech import silence, wav_bytes

VAD = {"name": "silero-vad", "task": "vad", "backend": "silero", "source": {"package": "silero-vad"}}


@pytest.fixture(scope="module")
def harmony(tmp_path_factory):
    path = tmp_path_factory.mktemp("sockets") / "serve.yaml"
    path.write_text(yaml.safe_dump({"models": [VAD]}))
    process = HarmonyProcess(config=str(path)).start()
    yield process
    process.stop()


def vad_request(client: httpx.Client) -> httpx.Response:
    data = wav_bytes(silence(1.0, 16000), 16000)
    return client.post("/v1/audio/vad", files={"file": ("a.wav", data, "audio/wav")}, timeout=60)


def test_the_router_is_the_only_tcp_listener(harmony):
    listening = [c.laddr for c in connections(psutil.Process(harmony.proc.pid), "inet")
                 if c.status == psutil.CONN_LISTEN]
    assert [address.port for address in listening] == [harmony.port]
    with httpx.Client(base_url=harmony.url) as client:
        assert vad_request(client).status_code == 200  # through the router, over the service's Unix socket


def test_services_listen_on_owner_only_unix_sockets_that_the_log_never_names(harmony):
    url = harmony.service_url("vad")
    path = socket_path(url)
    directory = os.path.dirname(path)
    assert stat.S_IMODE(os.stat(directory).st_mode) == 0o700 and os.stat(directory).st_uid == os.getuid()
    assert stat.S_ISSOCK(os.stat(path).st_mode) and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert harmony.unix_sockets() == {path}
    with sync_client(url) as service:
        assert vad_request(service).status_code == 200
    assert directory not in harmony.output() and "vad service" not in harmony.output()


def test_the_socket_directory_is_removed_at_exit(tmp_path):
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump({"models": [VAD]}))
    process = HarmonyProcess(config=str(path)).start()
    directory = os.path.dirname(socket_path(process.service_url("vad")))
    assert os.path.isdir(directory)
    assert process.stop() == 0, process.output()
    assert not os.path.exists(directory)


def test_the_socket_directory_is_private_and_short_enough_for_a_socket_path(monkeypatch, tmp_path):
    monkeypatch.setenv("XDG_RUNTIME_DIR", str(tmp_path / ("x" * 120)))  # not there: the temporary directory
    monkeypatch.setenv("TMPDIR", str(tmp_path / ("long" * 30)))
    os.makedirs(os.environ["TMPDIR"])
    monkeypatch.setattr(tempfile, "tempdir", None)  # read $TMPDIR again
    path = private_socket_dir()
    try:
        assert len(os.path.join(path, "stt.sock")) <= 107
        assert stat.S_IMODE(os.stat(path).st_mode) == 0o700
    finally:
        os.rmdir(path)
