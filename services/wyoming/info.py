"""The ``info`` answer to ``describe``: the router's speech-to-text models and voices with their languages (pure)."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from wyoming.info import AsrModel, AsrProgram, Attribution, Info, TtsProgram, TtsVoice

from services.wyoming.router_api import ModelEntry, VoiceEntry

PROGRAM = "harmony"
ATTRIBUTION = Attribution(name="Harmony Speech Engine", url="")


def _version() -> str | None:
    try:
        return version("harmony-speech")
    except PackageNotFoundError:
        return None


VERSION = _version()


def stt_models(models: list[ModelEntry]) -> list[ModelEntry]:
    """The speech-to-text models by their own names (aliases and pipelines are other names for the same)."""
    return [m for m in models if m.task == "stt" and m.alias_of is None and m.pipeline is None]


def spoken_voices(voices: list[VoiceEntry]) -> list[VoiceEntry]:
    """Voices a synthesize can name: the built-in voices of the TTS models (a cloned voice has no language)."""
    return [v for v in voices if v.languages and v.backend != "clone"]


def build_info(models: list[ModelEntry], voices: list[VoiceEntry], stream_transcripts: bool = True) -> Info:
    asr_models = [AsrModel(name=m.id, attribution=ATTRIBUTION, installed=True,
                           description=f"{m.id} ({m.backend or 'stt'})", version=None, languages=list(m.languages))
                  for m in stt_models(models)]
    tts_voices = [TtsVoice(name=v.id, attribution=ATTRIBUTION, installed=True,
                           description=f"{v.name or v.id} ({v.model})", version=None, languages=list(v.languages))
                  for v in spoken_voices(voices)]
    asr = [AsrProgram(name=PROGRAM, attribution=ATTRIBUTION, installed=True,
                      description="Harmony Speech Engine: speech to text", version=VERSION, models=asr_models,
                      supports_transcript_streaming=stream_transcripts)] if asr_models else []
    tts = [TtsProgram(name=PROGRAM, attribution=ATTRIBUTION, installed=True,
                      description="Harmony Speech Engine: text to speech", version=VERSION, voices=tts_voices,
                      supports_synthesize_streaming=True)] if tts_voices else []
    return Info(asr=asr, tts=tts)
