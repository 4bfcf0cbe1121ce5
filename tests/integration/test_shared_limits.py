"""Two router processes on one PostgreSQL share every key's limits; voices stay with the key that made them."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from services.auth.gate import Gate
from services.auth.audit import NoSink
from services.auth.guard import RequestRecord, _current, check_voice, claim_voice, visible_voices
from services.auth.keys import KeyStore
from services.core.errors import NotFound
from services.store import open_database
from tests.servers import free_port


def _router(database_url: str, tmp_path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "services.router_main", "--port", str(port), "--host", "127.0.0.1",
                             "--models-file", str(tmp_path / "none.yaml"), "--require-auth",
                             "--database-url", database_url, "--audit", "none", "--log-level", "warning"])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "/healthz").status_code == 200:
                return proc, url
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError("router did not start")


def test_two_routers_share_one_rate_limit(postgres, tmp_path):
    url = postgres.new_database()
    db = open_database(url=url)
    _, secret = KeyStore(db).create("shared", rpm=3)
    routers = [_router(url, tmp_path), _router(url, tmp_path)]
    try:
        left = 60 - time.time() % 60
        if left < 20:  # all four requests inside one minute window
            time.sleep(left + 0.5)
        headers = {"Authorization": f"Bearer {secret}"}
        statuses = [httpx.get(routers[i % 2][1] + "/v1/models", headers=headers).status_code for i in range(4)]
        assert statuses == [200, 200, 200, 429]
    finally:
        for proc, _ in routers:
            proc.terminate()
            proc.wait(timeout=30)
        db.dispose()


@pytest.fixture
def gate(database_url):
    db = open_database(url=database_url)
    yield Gate(db, required=True, sink=NoSink())
    db.dispose()


async def _as(gate: Gate, key, coroutine):
    token = _current.set(RequestRecord("req_1", "GET", "/v1/audio/voices", None, gate=gate, key=key))
    try:
        return await coroutine()
    finally:
        _current.reset(token)


async def test_a_voice_belongs_to_the_key_that_registered_it(gate):
    alice, _ = gate.keys.create("alice")
    bob, _ = gate.keys.create("bob")
    root, _ = gate.keys.create("root", admin=True)
    await _as(gate, alice, lambda: claim_voice("voice_a"))
    await _as(gate, alice, lambda: check_voice("voice_a"))
    with pytest.raises(NotFound):
        await _as(gate, bob, lambda: check_voice("voice_a"))
    with pytest.raises(NotFound):
        await _as(gate, bob, lambda: check_voice("voice_unowned"))
    assert await _as(gate, bob, lambda: visible_voices(["voice_a", "voice_b"])) == set()
    assert await _as(gate, alice, lambda: visible_voices(["voice_a", "voice_b"])) == {"voice_a"}
    await _as(gate, root, lambda: check_voice("voice_a"))
