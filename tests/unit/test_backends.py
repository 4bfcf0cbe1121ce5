"""The backend registry (entry points) and the task protocols a loaded backend must implement."""

from __future__ import annotations

from importlib.metadata import EntryPoint

import pytest

from services.core.contracts.specs import Task
from services.core.tasks.backends import ENTRY_POINT_GROUP, BackendError, BackendRegistry, _info
from services.core.tasks.protocols import PROTOCOLS, BackendContractError, Capabilities, VadBackend, verify
from services.vad.backends.silero import SileroVadBackend


def entry(name: str, value: str) -> EntryPoint:
    return EntryPoint(name=name, value=value, group=ENTRY_POINT_GROUP)


def test_an_entry_point_becomes_a_backend_of_its_declared_task():
    info = _info(entry("my-silero", "services.vad.backends.silero:SileroVadBackend"))
    assert (info.name, info.task, info.factory, info.devices) == (
        "my-silero", Task.vad, SileroVadBackend, ("cpu", "cuda"))
    assert info.description.startswith("Per-frame speech probabilities")
    registry = BackendRegistry([info])
    assert registry.get("my-silero", Task.vad) is info
    assert registry.names(Task.vad) == ["my-silero"] and registry.names(Task.stt) == []


def test_a_broken_plugin_names_itself():
    with pytest.raises(BackendError, match=r"backend 'ghost' \(no_such_module:Thing\) cannot be imported"):
        _info(entry("ghost", "no_such_module:Thing"))
    with pytest.raises(BackendError, match=r"backend 'taskless' .* declares no valid 'task'"):
        _info(entry("taskless", "services.core.tasks.backends:BackendRegistry"))


def test_unknown_or_mistasked_backend_names_the_field_and_the_choices():
    registry = BackendRegistry.installed()
    with pytest.raises(BackendError, match=r"^models\[2\]\.backend: unknown vad backend 'silero-x' "
                                           r"\(installed vad backends: .*silero"):
        registry.get("silero-x", Task.vad, field="models[2].backend")
    with pytest.raises(BackendError, match=r"backend 'silero' serves task 'vad', not 'tts'"):
        registry.get("silero", Task.tts)


def test_every_task_has_a_protocol():
    assert set(PROTOCOLS) == set(Task)


def test_a_backend_missing_members_of_its_protocol_fails_naming_them():
    class HalfVad:
        task = Task.vad
        sample_rate = 16000

        def __init__(self, spec) -> None:
            self.spec = spec

        def load(self) -> None: ...

    with pytest.raises(BackendContractError, match="HalfVad does not implement VadBackend: missing "
                                                   "frame_samples, run_batch"):
        verify(HalfVad(None), Task.vad)
    with pytest.raises(BackendContractError, match="missing frame_samples, run_batch, spec"):
        verify(type("NoSpec", (HalfVad,), {"__init__": lambda self, spec: None})(None), Task.vad)
    silero = SileroVadBackend.__new__(SileroVadBackend)
    silero.spec = None  # the spec the service hands it (a fetched source's has source.path in the cache)
    assert isinstance(silero, VadBackend)


class PlainVad:
    """A VAD backend with no optional capability."""

    task = Task.vad
    sample_rate = 16000
    frame_samples = 512

    def __init__(self, spec) -> None:
        self.spec = spec

    def load(self) -> None: ...

    def run_batch(self, items):
        return [[] for _ in items]


def test_optional_capabilities_are_found_once_and_typed():
    assert Capabilities.of(PlainVad(None), Task.vad) == Capabilities()
    streaming = type("StreamingVad", (PlainVad,), {"streams": True, "stream_state_size": 320})(None)
    assert Capabilities.of(streaming, Task.vad).streaming is streaming
    silent = type("NotStreaming", (PlainVad,), {"streams": False, "stream_state_size": 320})(None)
    assert Capabilities.of(silent, Task.vad).streaming is None  # the flag decides, not the attribute alone
    encoder = type("Encoder", (PlainVad,), {"task": Task.embed, "embedding_size": 256})(None)
    assert Capabilities.of(encoder, Task.embed) == Capabilities(embedding_size=256)


def test_a_declared_capability_that_is_incomplete_fails_the_load_naming_it():
    half = type("HalfStreaming", (PlainVad,), {"streams": True})(None)
    with pytest.raises(BackendContractError, match="HalfStreaming does not implement StreamingVadBackend: missing "
                                                   "stream_state_size"):
        Capabilities.of(half, Task.vad)
    for value in (0, -4, 2.5, True, None):
        bad = type("BadSize", (PlainVad,), {"streams": True, "stream_state_size": value})(None)
        with pytest.raises(BackendContractError, match=r"BadSize.stream_state_size must be a positive integer"):
            Capabilities.of(bad, Task.vad)
    encoder = type("BadEncoder", (PlainVad,), {"task": Task.embed, "embedding_size": "256"})(None)
    with pytest.raises(BackendContractError, match=r"BadEncoder.embedding_size must be a positive integer, not '256'"):
        Capabilities.of(encoder, Task.embed)
    with pytest.raises(BackendContractError, match="does not implement SpeakerEncoder"):  # the task's protocol first
        Capabilities.of(type("NoRate", (), {})(), Task.embed)


def test_the_built_in_backends_declare_their_capabilities():
    silero = SileroVadBackend.__new__(SileroVadBackend)
    silero.spec = None
    assert Capabilities.of(silero, Task.vad).streaming is silero
    from services.vc.backends.resemblyzer import ResemblyzerEncoder

    encoder = ResemblyzerEncoder.__new__(ResemblyzerEncoder)
    encoder.spec = None
    assert Capabilities.of(encoder, Task.embed).embedding_size == 256
