"""Memory is given back: ONNX sessions without their CPU arena, and malloc's free pages trimmed (issue 10 item 4).

Why (measured, docs/architecture.md "Memory"): ONNX Runtime's arena grows to the largest tensors ever
seen and keeps them (Kokoro 270 MB -> 2.5 GB in ten sentences), and glibc keeps what CTranslate2, torch
and numpy free in its per-thread heaps until ``malloc_trim``.
"""

from __future__ import annotations

import platform

import numpy as np
import psutil
import pytest
from services.core import memory
from services.core.onnx_options import cpu_mem_arena, session_options
from services.core.specs import NamedModel

from tests.models import kokoro_ja, piper_joe

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def spec(**options) -> NamedModel:
    return NamedModel(name="m", task="vad", backend="silero", source={"package": "silero-vad"}, options=options)


def test_the_arena_is_off_by_default_and_on_when_release_is_off(monkeypatch):
    monkeypatch.delenv(memory.ENV, raising=False)
    assert cpu_mem_arena(spec()) is False
    monkeypatch.setenv(memory.ENV, "0")
    assert cpu_mem_arena(spec()) is True


@pytest.mark.parametrize("value, expected", [(True, True), ("true", True), (False, False), ("off", False)])
def test_the_model_option_decides_the_arena(monkeypatch, value, expected):
    monkeypatch.setenv(memory.ENV, "0")
    assert cpu_mem_arena(spec(cpu_mem_arena=value)) is expected
    monkeypatch.setenv(memory.ENV, "1")
    assert cpu_mem_arena(spec(cpu_mem_arena=value)) is expected


def test_session_options_carry_threads_and_arena(monkeypatch):
    monkeypatch.delenv(memory.ENV, raising=False)
    options = session_options(spec(), 3, inter_op_threads=1)
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (3, 1)
    assert options.enable_cpu_mem_arena is False


def test_the_real_onnx_sessions_run_without_the_arena(monkeypatch):
    monkeypatch.delenv(memory.ENV, raising=False)
    from services.vad.backends.silero import SileroVadBackend

    silero = SileroVadBackend(spec())
    silero.load()
    for session in (silero.session, piper_joe().voice.session, kokoro_ja().session):
        assert session.get_session_options().enable_cpu_mem_arena is False


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")
def test_trim_gives_freed_heap_memory_back():
    """200 MB of heap blocks (below the mmap threshold) freed under a survivor stay resident until trimmed."""
    process = psutil.Process()
    blocks = [np.ones(100_000 // 8) for _ in range(2000)]
    survivor = np.ones(100_000 // 8)  # at the top of the heap: glibc cannot shrink the heap past it by itself
    del blocks
    before = process.memory_info().rss
    memory.trim()
    after = process.memory_info().rss
    assert before - after > 100 * 2**20, (before, after)
    assert survivor.sum() > 0


@pytest.mark.skipif(not GLIBC, reason="malloc_trim is glibc's")
def test_the_trimmer_runs_until_stopped_and_not_when_release_is_off(monkeypatch):
    monkeypatch.delenv(memory.ENV, raising=False)
    trimmer = memory.MemoryTrimmer(interval_s=0.01).start()
    assert trimmer.running
    trimmer.stop()
    assert not trimmer.running
    monkeypatch.setenv(memory.ENV, "0")
    assert not memory.MemoryTrimmer(interval_s=0.01).start().running
