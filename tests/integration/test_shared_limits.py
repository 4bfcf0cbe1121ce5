"""Two router processes on one PostgreSQL share every key's limits; voices stay with the key that made them."""

from __future__ import annotations

import subprocess
import sys
import time

import httpx
import pytest

from services.auth.audit import NoSink
from services.auth.gate import Gate
from services.auth.guard import REQUEST_RECORD, RequestRecord, check_voice, claim_voice, visible_voices
from services.auth.keys import KeyStore
from services.core.contracts.errors import NotFound
from services.store import open_database
from tests.servers import free_port


def _router(database_url: str, tmp_path) -> tuple[subprocess.Popen, str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "services.router_main", "--port", str(port), "--host", "127.0.0.1",
                             "--models-file", str(tmp_path / "none.yaml"), "--require-auth",
                             "--database-url", database_url, "--audit", "none", "--log-level", "warning"])
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 180
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
    keys = KeyStore(db)
    routers = [_router(url, tmp_path), _router(url, tmp_path)]
    try:
        for attempt in range(3):  # a run that straddles a minute boundary spans two windows: run it again
            _, secret = keys.create(f"shared-{attempt}", rpm=3)
            headers = {"Authorization": f"Bearer {secret}"}
            window = int(time.time() // 60)
            statuses = [httpx.get(routers[i % 2][1] + "/v1/models", headers=headers, timeout=60).status_code
                        for i in range(4)]
            if int(time.time() // 60) == window:
                break
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
    with REQUEST_RECORD.bound(RequestRecord("req_1", "GET", "/v1/audio/voices", None, gate=gate, key=key)):
        return await coroutine()


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
