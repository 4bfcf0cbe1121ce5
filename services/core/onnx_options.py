"""ONNX Runtime session options shared by the ONNX backends (Piper, Kokoro, Silero VAD).

ONNX Runtime's CPU memory arena keeps every block it ever allocated: with inputs of varying
length it grows to the largest tensors seen and never shrinks (Piper 300 MB -> 1.25 GB on
sentences of up to 500 characters, Kokoro 270 MB -> 1.3 GB). So the arena is off by default;
tensors then come from malloc, which ``services/core/memory.py`` makes give memory back.

Model option ``cpu_mem_arena: true`` turns the arena back on for a model (its default follows
``HARMONY_RELEASE_MEMORY``: off unless that is ``0``).
"""

from __future__ import annotations

from services.core import memory
from services.core.specs import NamedModel


def cpu_mem_arena(spec: NamedModel) -> bool:
    value = spec.options.get("cpu_mem_arena")
    if value is None:
        return not memory.enabled()
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def session_options(spec: NamedModel, intra_op_threads: int, inter_op_threads: int = 0):
    """``onnxruntime.SessionOptions`` for ``spec``: its thread counts, and the arena as chosen above."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = intra_op_threads
    if inter_op_threads:
        options.inter_op_num_threads = inter_op_threads
    options.enable_cpu_mem_arena = cpu_mem_arena(spec)
    return options
