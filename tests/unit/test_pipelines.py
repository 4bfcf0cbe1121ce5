"""The pipeline runner's one rule: a step runs when something it needs is known and not all it adds is."""

from __future__ import annotations

from services.core.contracts.specs import Task
from services.router.pipelines import STEP_KINDS, PipelineState


def runs(state: PipelineState) -> list[str]:
    return [task.value for task in (Task.vad, Task.embed, Task.tts, Task.vc) if not STEP_KINDS[task].skip(state)]


def test_every_task_has_a_step_kind_that_declares_needs_and_adds():
    assert set(STEP_KINDS) == set(Task) - {Task.stt}
    for kind in STEP_KINDS.values():
        assert kind.needs and kind.adds
        assert all(hasattr(PipelineState(), name) for name in kind.needs + kind.adds)


def test_a_reference_recording_runs_every_step():
    assert runs(PipelineState(references=[("r.wav", b"x")], text="Hello.")) == ["vad", "embed", "tts"]
    # vc waits for its source: once tts has added it, vc runs
    assert "vc" in runs(PipelineState(references=[("r.wav", b"x")], source=("s.wav", b"y")))


def test_a_registered_voice_skips_vad_and_embed():
    assert runs(PipelineState(voice_id="voice_0123456789abcdef", text="Hello.")) == ["tts"]
    assert runs(PipelineState(voice_id="voice_0123456789abcdef", source=("s.wav", b"y"))) == ["vc"]


def test_known_outputs_are_not_computed_again():
    state = PipelineState(references=[("r.wav", b"x")], speech=[("r.flac", b"z")], embedding=[0.1],
                          source=("s.wav", b"y"))
    assert runs(state) == ["vc"]
    state.output = b"done"
    assert runs(state) == []


def test_embed_uses_the_recordings_themselves_on_a_route_without_vad():
    assert runs(PipelineState(references=[("r.wav", b"x")])) == ["vad", "embed"]
    assert runs(PipelineState(speech=[("r.flac", b"z")])) == ["embed"]
