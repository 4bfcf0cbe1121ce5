"""ONNX Runtime session and run options shared by the ONNX backends (Piper, Kokoro, Silero VAD).

ONNX Runtime's CPU memory arena keeps every block it ever allocated: with inputs of varying
length it grows to the largest tensors seen and never shrinks (Kokoro 270 MB -> 900 MB in
fourteen sentences, Piper 270 MB -> 1.3 GB in 24). Without the arena every tensor comes from
malloc on every run (Kokoro took 1.3-1.5x as long, Piper 1.35x), so the arena stays and is
shrunk at the end of each run instead (``memory.enable_memory_arena_shrinkage``), with memory
pattern planning off (its block, sized for the largest input, pinned the arena): a run
allocates from the arena as before, and what the run no longer holds goes back to malloc,
which ``services/core/memory.py`` trims.

Model options: ``cpu_mem_arena`` (default true) and ``arena_shrinkage`` (default: on unless
``HARMONY_RELEASE_MEMORY=0``). Shrinking applies to sessions on the CPU provider alone, and
not to Silero VAD (one run per 32-ms frame, tensors of a few KB: its memory stays flat).
"""

from __future__ import annotations

from services.core import memory
from services.core.specs import NamedModel

SHRINK_KEY = "memory.enable_memory_arena_shrinkage"


def _flag(spec: NamedModel, name: str, default: bool) -> bool:
    value = spec.options.get(name)
    if value is None:
        return default
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def cpu_mem_arena(spec: NamedModel) -> bool:
    return _flag(spec, "cpu_mem_arena", True)


def arena_shrinkage(spec: NamedModel) -> bool:
    return cpu_mem_arena(spec) and _flag(spec, "arena_shrinkage", memory.enabled())


def session_options(spec: NamedModel, intra_op_threads: int, inter_op_threads: int = 0, shrinkable: bool = True):
    """``onnxruntime.SessionOptions`` for ``spec``: its thread counts and its arena.

    A session whose arena is shrunk (``shrinkable`` and ``arena_shrinkage``) plans no memory
    pattern: the pattern's block for the largest shape seen kept Piper's arena at 900 MB.
    """
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    if inter_op_threads:
        options.inter_op_num_threads = inter_op_threads
    options.enable_cpu_mem_arena = cpu_mem_arena(spec)
    if shrinkable and arena_shrinkage(spec):
        options.enable_mem_pattern = False
    return options


def run_options(spec: NamedModel, session):
    """``onnxruntime.RunOptions`` that shrink the CPU arena after each run, or None (no shrinking)."""
    import onnxruntime

    if not arena_shrinkage(spec) or session.get_providers() != ["CPUExecutionProvider"] \
            or not session.get_session_options().enable_cpu_mem_arena:
        return None
    options = onnxruntime.RunOptions()
    options.add_run_config_entry(SHRINK_KEY, "cpu:0")
    return options
