"""Memory is given back: ONNX arenas shrunk after each run, and malloc's free pages trimmed (issue 10 item 4).

Why (measured, docs/architecture.md "Memory"): ONNX Runtime's arena grows to the largest tensors ever
seen and keeps them, and glibc keeps what CTranslate2, torch, numpy (and the shrunk arenas) free in
its per-thread heaps until ``malloc_trim``.
"""

from __future__ import annotations

import platform

import numpy as np
import psutil
import pytest

from services.core.contracts.specs import NamedModel
from services.core.runtime import memory
from services.core.runtime.onnx_options import SHRINK_KEY, arena_shrinkage, cpu_mem_arena, run_options, session_options
from tests.models import kokoro_ja, piper_joe

GLIBC = platform.system() == "Linux" and platform.libc_ver()[0] == "glibc"


def spec(**options) -> NamedModel:
    return NamedModel(name="m", task="vad", backend="silero", source={"package": "silero-vad"}, options=options)


def test_arena_shrinks_by_default_and_not_when_release_is_off(monkeypatch):
    monkeypatch.delenv(memory.ENV, raising=False)
    assert cpu_mem_arena(spec()) and arena_shrinkage(spec())
    monkeypatch.setenv(memory.ENV, "0")
    assert cpu_mem_arena(spec()) and not arena_shrinkage(spec())


@pytest.mark.parametrize("options, arena, shrink", [
    ({"arena_shrinkage": False}, True, False), ({"arena_shrinkage": "true"}, True, True),
    ({"cpu_mem_arena": "off"}, False, False), ({"cpu_mem_arena": False, "arena_shrinkage": True}, False, False)])
def test_model_options_decide_arena_and_shrinkage(monkeypatch, options, arena, shrink):
    monkeypatch.delenv(memory.ENV, raising=False)
    assert (cpu_mem_arena(spec(**options)), arena_shrinkage(spec(**options))) == (arena, shrink)


def test_session_options_carry_threads_arena_and_pattern(monkeypatch):
    monkeypatch.delenv(memory.ENV, raising=False)
    options = session_options(spec(), 3, inter_op_threads=1)
    assert (options.intra_op_num_threads, options.inter_op_num_threads) == (3, 1)
    assert options.enable_cpu_mem_arena and not options.enable_mem_pattern
    assert session_options(spec(), 1, shrinkable=False).enable_mem_pattern
    monkeypatch.setenv(memory.ENV, "0")
    assert session_options(spec(), 1).enable_mem_pattern


def test_piper_and_kokoro_shrink_their_arena_after_each_run(monkeypatch):
    """The real sessions: arena on, memory pattern off, and run options that shrink the CPU arena."""
    monkeypatch.delenv(memory.ENV, raising=False)
    for session, options in ((piper_joe().voice.session, piper_joe().run_options),
                             (kokoro_ja().session, kokoro_ja().run_options)):
        made = session.get_session_options()
        assert made.enable_cpu_mem_arena and not made.enable_mem_pattern
        assert options.get_run_config_entry(SHRINK_KEY) == "cpu:0"
        assert run_options(spec(cpu_mem_arena=False), session) is None


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
