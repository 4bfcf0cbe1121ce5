"""ONNX Runtime session and run options shared by the ONNX backends (Piper, Kokoro, Silero VAD).

ONNX Runtime's CPU memory arena keeps every block it ever allocated: with inputs of varying
length it grows to the largest tensors seen and never shrinks (Kokoro 270 MB -> 900 MB in
fourteen sentences, Piper 270 MB -> 1.3 GB in 24). Without the arena every tensor comes from
malloc on every run (Kokoro took 1.3-1.5x as long, Piper 1.35x), so the arena stays and is
shrunk at the end of each run instead (``memory.enable_memory_arena_shrinkage``), with memory
pattern planning off (its block, sized for the largest input, pinned the arena): a run
allocates from the arena as before, and what the run no longer holds goes back to malloc,
which ``services/core/runtime/memory.py`` trims.

Model options: ``cpu_mem_arena`` (default true) and ``arena_shrinkage`` (default: on unless
``HARMONY_RELEASE_MEMORY=0``). Shrinking applies to sessions on the CPU provider alone, and
not to Silero VAD (one run per 32-ms frame, tensors of a few KB: its memory stays flat).

Execution providers (``providers``): onnxruntime's CUDA provider when the model's device is ``cuda``
or ``auto`` and the installed onnxruntime has it (``onnxruntime-gpu``, in the CUDA image), else the
CPU provider; ``device: cuda`` without it is an error, not a silent fall back. The choice is logged
with the providers the session really got (``log_providers``). Options ``cuda_device`` (default 0)
and ``cudnn_conv_algo_search`` (default HEURISTIC: EXHAUSTIVE benchmarks every new input shape, and
speech of varying length makes every shape new).
"""

from __future__ import annotations

import logging
from typing import Any

from services.core.contracts.specs import NamedModel
from services.core.runtime import memory
from services.core.runtime.weights import WeightsError

CUDA = "CUDAExecutionProvider"
CPU = "CPUExecutionProvider"
log = logging.getLogger("harmony.onnx")

SHRINK_KEY = "memory.enable_memory_arena_shrinkage"


def option_flag(spec: NamedModel, name: str, default: bool) -> bool:
    """A yes/no option of the model (``true``, ``1``, ``yes``, ``on``, or a YAML boolean); ``default`` if unset."""
    value = spec.options.get(name)
    if value is None:
        return default
    if isinstance(value, str):
        return value.strip().lower() in ("1", "true", "yes", "on")
    return bool(value)


def cpu_mem_arena(spec: NamedModel) -> bool:
    return option_flag(spec, "cpu_mem_arena", True)


def arena_shrinkage(spec: NamedModel) -> bool:
    return cpu_mem_arena(spec) and option_flag(spec, "arena_shrinkage", memory.enabled())


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


_preloaded: list[bool] = []


def preload_cuda() -> None:
    """Load the CUDA and cuDNN libraries of onnxruntime-gpu's ``[cuda,cudnn]`` extras (or torch's) once, so
    the CUDA provider finds them whatever CUDA the image itself carries (onnxruntime >= 1.21)."""
    if _preloaded:
        return
    _preloaded.append(True)
    try:
        import onnxruntime

        preload = getattr(onnxruntime, "preload_dlls", None)
        if preload is not None:
            preload()
    except Exception:  # noqa: BLE001 - the session then reports what is missing, and log_providers says it
        log.warning("onnxruntime could not preload the CUDA libraries", exc_info=True)


def providers(spec: NamedModel, available: list[str] | None = None) -> list[Any]:
    """The session's providers for ``spec``: CUDA (with its options) then CPU, or CPU alone."""
    if available is None:
        import onnxruntime

        available = list(onnxruntime.get_available_providers())
    if spec.device == "cpu" or CUDA not in available:
        if spec.device == "cuda":
            raise WeightsError(f"model {spec.name}: device 'cuda' asked for, but onnxruntime has no {CUDA} here "
                               "(the CUDA image installs onnxruntime-gpu)")
        return [CPU]
    preload_cuda()
    options = {"device_id": int(spec.options.get("cuda_device", 0)),
               "cudnn_conv_algo_search": str(spec.options.get("cudnn_conv_algo_search", "HEURISTIC"))}
    return [(CUDA, options), CPU]


def log_providers(spec: NamedModel, session) -> str:
    """Log (and return) the provider the session runs on; ``device: cuda`` that ended on the CPU is an error."""
    got = session.get_providers()
    first = got[0] if got else CPU
    if spec.device == "cuda" and first != CUDA:
        raise WeightsError(f"model {spec.name}: device 'cuda' asked for, but the session runs on {first} "
                           "(no GPU visible, or CUDA libraries missing)")
    log.info("model %s runs on %s (device %s)", spec.name, first, spec.device)
    return first
