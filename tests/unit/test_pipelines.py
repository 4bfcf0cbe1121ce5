"""The pipeline runner's one rule: a step runs when something it needs is known and not all it adds is."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from services.core.contracts.specs import Task
from services.router.pipelines import STEP_KINDS, PipelineState

ROOT = Path(__file__).resolve().parents[2]


def runs(state: PipelineState) -> list[str]:
    return [task.value for task in (Task.vad, Task.embed, Task.tts, Task.vc) if not STEP_KINDS[task].skip(state)]


def test_every_task_has_a_step_kind_that_declares_needs_and_adds():
    assert set(STEP_KINDS) == set(Task) - {Task.stt}
    for kind in STEP_KINDS.values():
        assert kind.needs(PipelineState()) and kind.adds(PipelineState())  # read from the state, by attribute


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


def test_a_misspelt_state_field_in_a_step_kind_is_a_type_error(tmp_path):
    """The step kinds read the state by attribute, so mypy (tests/unit/test_typed_seams.py) catches a wrong name."""
    probe = tmp_path / "probe_steps.py"
    probe.write_text("from services.core.contracts.specs import Task\n"
                     "from services.router.pipelines import PipelineState, StepContext, step_kind\n"
                     "from services.router.routing import ServedModel\n\n\n"
                     "@step_kind(Task.vad, needs=lambda s: (s.referenses,), adds=lambda s: (s.speech,))\n"
                     "async def misspelt(ctx: StepContext, state: PipelineState, model: ServedModel) -> None:\n"
                     "    state.speech = []\n")
    done = subprocess.run([sys.executable, "-m", "mypy", "--follow-imports=silent", "--cache-dir",
                           str(tmp_path / "cache"), "--no-error-summary", str(probe)], cwd=ROOT, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 1 and '"PipelineState" has no attribute "referenses"' in done.stdout, done.stdout
    assert done.stdout.count("error:") == 1, done.stdout  # the rest of the probe is right
