"""Whisper through faster-whisper (CTranslate2), batched across requests.

``run_batch`` takes windows (<= 30 s) from any number of concurrent requests and
runs them through one batched encoder pass, one batched language detection and
one batched ``generate`` call: the windows of different requests decode
together, each with its own prompt (language, task, initial prompt).

Whisper's guards against hallucinated text (services/stt/guards.py), as sequential
faster-whisper has them, batched: after the batch is decoded at temperature 0,
only the windows that failed a guard are decoded again, as a smaller batch at the
next temperature (sampling, best of ``best_of``), up to 1.0; when all fail, the
best decode is kept. A silent window (no-speech probability over its threshold and
average log-probability under ``log_prob_threshold``) gives no text. A request's
``temperature`` > 0 starts its window's ladder there.

Window packing (``batching.pack_short_windows``, services/stt/packing.py): the short windows of
a batch that share task, language, prompt and temperature and have speech are laid side by side
in one 30-second window, decoded once (at their temperature, with word timestamps) and split back
to their requests; a member that cannot be split back cleanly, or a packed window that fails a
guard, is decoded again alone with the full ladder.

Fitted context (a window's ``fit_context``, asked for by realtime turns): a window of at most
``FIT_MAX_S`` is encoded over its own length plus ``FIT_MARGIN_S`` of silence (rounded up to the
second) instead of a padded 30 s, as whisper.cpp's ``audio_ctx`` does: the encoder's cost falls
with its input (a 4-s turn of Whisper base: 0.2 s instead of 0.7 s on two cores), and generation is
capped at ``FIT_TOKENS_PER_S`` tokens a second. Whisper was trained on 30-s windows: with a margin
under a second it can loop on its last sentence, so a fitted window is decoded once, and when it
fails a guard (or looks silent) it is decoded again over the whole 30 s with its full ladder.

Token log-probabilities (a window's ``logprobs``, from ``include=logprobs``): the decoder's own scores of the
tokens it chose. CTranslate2's ``generate`` returns each step's logits over the vocabulary (``return_logits_vocab``,
after its logit processors: suppressed tokens, timestamp rules), asked for only in a batch that holds such a window;
each text token's log-probability is its logit's log-softmax at its step. A segment carries its text tokens' (not
its timestamp tokens'), with their text and UTF-8 bytes; a packed member keeps its own segments' tokens.

Languages (a window's ``languages``, with no ``language``): detection picks the most likely of those only
(Whisper's language probabilities restricted to the list and renormalized).

Abandoned windows (``wanted``, from the batcher: services/core/tasks/wanted.py): before every step (the encode, each
decode of the ladder, the second pass over packed or fitted windows that failed, the word alignment) the batch
leaves out the windows whose callers went away, and answers them ``Abandoned``. A step already running finishes.

``options`` of the SpeechModel (faster-whisper's defaults; ``none`` turns one off):

- ``beam_size`` (1): beam search width at temperature 0.
- ``compression_ratio_threshold`` (2.4): text whose gzip compression ratio is higher is
  too repetitive: fall back.
- ``log_prob_threshold`` (-1.0): an average log-probability per token below this: fall back.
- ``no_speech_threshold`` (0.6): a window with a higher no-speech probability and an
  average log-probability below ``log_prob_threshold`` is silent (no text).
- ``temperature_increment_on_fallback`` (0.2): the ladder's step; ``none`` (or 0) decodes
  once, at the request's temperature.
- ``best_of`` (5): sampled hypotheses per window at temperature > 0; the best is kept.
- ``fallback_batch_size`` (2 on a CPU, the whole batch on CUDA): windows per sampled decode of the ladder.
  A sampled decode holds ``best_of`` hypotheses per window, each with its own copy of the window's
  cross-attention keys and values (about 37 MB a hypothesis for Whisper base): four windows at best of 5
  held 0.74 GB per batch and ran 9 s uninterrupted on a core; in pieces of two, each window costs the same
  CPU time, half the memory, and an abandoned window is dropped within a piece.
- ``seed`` (unset): seeds CTranslate2's sampling. CTranslate2 has one random generator per
  worker thread, seeded from the process-wide seed when first used and never again, so a
  given input gives a given output only for a fresh model given the same requests in the
  same order and batches; sampled windows of concurrent requests depend on their batch.
- ``cpu_threads`` (cores / ``batching.instances``).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import Counter
from collections.abc import Sequence
from math import ceil
from typing import TYPE_CHECKING

import numpy as np

from services.core.contracts.errors import InvalidRequest
from services.core.contracts.specs import NamedModel, Task
from services.core.contracts.wire import Segment, TokenLogprob, Word
from services.core.runtime.cpus import threads_per_instance
from services.core.tasks.jobs import ChunkJob, ChunkResult
from services.core.tasks.wanted import Abandoned, Wanted, all_wanted
from services.stt import packing
from services.stt.guards import Decode, Guards, compression_ratio
from services.stt.types import SAMPLE_RATE
from services.stt.weights import resolve_whisper_dir

if TYPE_CHECKING:
    from faster_whisper import WhisperModel

log = logging.getLogger("harmony.stt.whisper")

FULL_FRAMES = 3000      # a 30-s window of 10-ms mel frames
FIT_MAX_S = 20.0        # longer windows are encoded whole even when a fitted context is asked for
FIT_MARGIN_S = 2.0      # silence after the audio in a fitted context (0.5 s made Whisper base loop)
FIT_TOKENS_PER_S = 20   # generation cap of a fitted window, per second of audio (speech is 3-8 tokens/s)
FIT_STEP_S = 4.0        # packs are encoded over contexts in steps of this (packs of a like length share an encode)
PACK_FIT_FRAMES = 2000  # a pack is fitted only when that saves a third of the window (fitted, Whisper hears a
                        # member's first words a little less well: fitted only where it pays)

CPU_FALLBACK_BATCH = 2  # windows per sampled decode on a CPU (option fallback_batch_size)

PREPEND_PUNCTUATIONS = "\"'“¿([{-"
APPEND_PUNCTUATIONS = "\"'.。,，!！?？:：”)]}、"


class _Live:
    """Which windows of a batch are still wanted: the batch's own (the batcher's ``wanted``, by their index) and
    the packed windows made of them (wanted while any member is)."""

    def __init__(self, jobs: Sequence[ChunkJob], wanted: Wanted) -> None:
        self._indexes: dict[int, list[int]] = {}  # a job given twice is wanted while either is
        for i, job in enumerate(jobs):
            self._indexes.setdefault(id(job), []).append(i)
        self._packs: dict[int, list[ChunkJob]] = {}
        self._wanted = wanted

    def pack(self, job: ChunkJob, members: list[ChunkJob]) -> ChunkJob:
        """``job``, a packed window of ``members``, registered: wanted while any of them is."""
        self._packs[id(job)] = members
        return job

    def __call__(self, job: ChunkJob) -> bool:
        if id(job) in self._packs:
            return any(self(member) for member in self._packs[id(job)])
        indexes = self._indexes.get(id(job))
        return True if indexes is None else any(self._wanted(i) for i in indexes)


EVERY = _Live((), all_wanted)  # outside a batch: every window is wanted


def _pick_device(device: str) -> str:
    if device != "auto":
        return device
    try:
        import ctranslate2

        return "cuda" if ctranslate2.get_cuda_device_count() > 0 else "cpu"
    except Exception:  # noqa: BLE001
        return "cpu"


def _match_mel_bins(model, path) -> None:
    """The feature extractor makes as many mel bins as the model takes: faster-whisper reads them from the
    directory's preprocessor_config.json (large-v3 and its turbo and distil variants: 128); a repository
    without that file (or with a wrong one) would feed 80 bins to a 128-bin encoder."""
    from faster_whisper.feature_extractor import FeatureExtractor

    wanted = int(model.model.n_mels)
    if model.feature_extractor.mel_filters.shape[0] == wanted:
        return
    log.warning("%s: preprocessor_config.json gives %d mel bins but the model takes %d; using %d", path,
                model.feature_extractor.mel_filters.shape[0], wanted, wanted)
    model.feat_kwargs = {**model.feat_kwargs, "feature_size": wanted}
    model.feature_extractor = FeatureExtractor(**model.feat_kwargs)


class FasterWhisperBackend:
    """A Whisper model in CTranslate2 with batched decoding of windows from many requests."""

    task = Task.stt
    devices = ("cpu", "cuda")

    def __init__(self, spec: NamedModel) -> None:
        self.spec = spec
        self.name = spec.name
        self.model: WhisperModel | None = None  # set by load()
        self.multilingual = False
        self.beam_size = int(spec.options.get("beam_size", 1))
        self.guards = Guards.from_options(spec.options)
        self.fallback_batch_size = int(spec.options.get("fallback_batch_size", 0))  # 0: chosen at load, by device
        self.device = "cpu"
        self._lock = threading.Lock()
        self.load_seconds = 0.0

    # lifecycle
    def load(self) -> None:
        from faster_whisper import WhisperModel

        started = time.monotonic()
        path = resolve_whisper_dir(self.spec.source)
        device = _pick_device(self.spec.device)
        if "seed" in self.spec.options:  # CTranslate2's sampling (temperature fallback): one seed per process
            import ctranslate2

            ctranslate2.set_random_seed(int(self.spec.options["seed"]))
        compute_type = self.spec.compute_type
        if compute_type == "default":
            compute_type = "int8" if device == "cpu" else "float16"
        instances = self.spec.batching.instances
        # each concurrently running batch gets its own CTranslate2 worker and an equal share of the cores
        threads = threads_per_instance(self.spec.options, instances)
        model = WhisperModel(str(path), device=device, compute_type=compute_type, cpu_threads=threads,
                             num_workers=instances, local_files_only=True)
        self.multilingual = model.model.is_multilingual
        _match_mel_bins(model, path)
        self.model = model
        self.device = device
        if self.fallback_batch_size <= 0:  # on a GPU a larger batch is nearly free: the whole one
            self.fallback_batch_size = CPU_FALLBACK_BATCH if device == "cpu" else self.spec.batching.max_batch_size
        self.load_seconds = time.monotonic() - started
        log.info("loaded %s from %s on %s (%s) in %.1fs", self.name, path, device, compute_type, self.load_seconds)

    @property
    def whisper(self) -> WhisperModel:
        """The loaded model (``load`` first)."""
        if self.model is None:
            raise RuntimeError(f"{self.name} is not loaded")
        return self.model

    @property
    def languages(self) -> list[str]:
        if self.spec.languages:
            return list(self.spec.languages)
        if self.model is None:
            return []
        return list(self.whisper.supported_languages) if self.multilingual else ["en"]

    def check_request(self, task: str, language: str | None) -> None:
        """Refuse what the model cannot do before any audio is queued."""
        if task == "translate" and not self.multilingual:
            raise InvalidRequest(f"model '{self.name}' is English-only and cannot translate", param="model",
                                 code="unsupported_task")
        if language is not None and language not in self.languages:
            raise InvalidRequest(f"model '{self.name}' does not support language '{language}'", param="language",
                                 code="unsupported_language")

    # inference
    def run_batch(self, jobs: Sequence[ChunkJob], wanted: Wanted = all_wanted) -> list[ChunkResult | Abandoned]:
        """Windows of any requests, decoded together. ``wanted`` (the batcher's) says which are still awaited: the
        others are left out before each step and answered ``Abandoned``."""
        live = _Live(jobs, wanted)
        results: list[ChunkResult | Abandoned] = [Abandoned() for _ in jobs]
        kept = [i for i, job in enumerate(jobs) if live(job)]
        if kept:
            for i, result in zip(kept, self._run_wanted([jobs[i] for i in kept], live)):
                results[i] = result
        return results

    def _run_wanted(self, jobs: Sequence[ChunkJob], live: _Live) -> list[ChunkResult | Abandoned]:
        """The windows that asked for a fitted context encoded over their own length; of the rest, the short
        windows packed (``batching.pack_short_windows``), the others as they are."""
        fitted = [i for i, job in enumerate(jobs) if job.fit_context and len(job.audio) <= FIT_MAX_S * SAMPLE_RATE]
        if not fitted:
            return self._run_full(jobs, live)
        results: list[ChunkResult | Abandoned | None] = [None] * len(jobs)
        rest = [i for i in range(len(jobs)) if i not in set(fitted)]
        if rest:
            for i, result in zip(rest, self._run_full([jobs[i] for i in rest], live)):
                results[i] = result
        for i, result in zip(fitted, self._decode_fitted([jobs[i] for i in fitted], live)):
            results[i] = result
        return results  # type: ignore[return-value]

    def _decode_fitted(self, jobs: Sequence[ChunkJob], live: _Live) -> list[ChunkResult | Abandoned]:
        """One decode over a context fitted to the longest window; a window that fails a guard there is decoded
        again over the whole 30 s, with its ladder."""
        decoded = self._decode_once_fitted(jobs, [len(job.audio) / SAMPLE_RATE for job in jobs], live)
        again = [i for i, result in enumerate(decoded) if result is None]
        if again:
            log.debug("%s: %d fitted windows decoded again over 30 s", self.name, len(again))
            for i, result in zip(again, self._decode_windows([jobs[i] for i in again], live)):
                if isinstance(result, ChunkResult):
                    result.fallbacks.insert(0, "fitted_context")
                decoded[i] = result
        return decoded  # type: ignore[return-value]

    def _decode_once_fitted(self, jobs: Sequence[ChunkJob], seconds: Sequence[float], live: _Live,
                            most_frames: int = FULL_FRAMES) -> list[ChunkResult | Abandoned | None]:
        """Each window decoded once over a fitted context (``seconds``: how much of it is audio), those of a like
        length together (contexts in steps of ``FIT_STEP_S``; one that would be longer than ``most_frames`` is the
        whole 30 s); None for a window that failed a guard."""
        groups: dict[int, list[int]] = {}
        for i, length in enumerate(seconds):
            frames = int(ceil((length + FIT_MARGIN_S) / FIT_STEP_S) * FIT_STEP_S * 100)
            frames = frames if frames <= most_frames else FULL_FRAMES
            groups.setdefault(frames, []).append(i)
        decoded: list[ChunkResult | Abandoned | None] = [None] * len(jobs)
        for frames, indexes in sorted(groups.items()):
            longest = max(seconds[i] for i in indexes)
            results = self._decode_windows([jobs[i] for i in indexes], live, single_try=True, frames=frames,
                                           max_length=min(self.whisper.max_length,
                                                          30 + int(FIT_TOKENS_PER_S * longest)))
            for i, result in zip(indexes, results):
                decoded[i] = result
        return decoded

    def _run_full(self, jobs: Sequence[ChunkJob], live: _Live) -> list[ChunkResult | Abandoned]:
        """Whole 30-s windows: the short ones packed (``batching.pack_short_windows``), the rest as they are; then
        the members of a pack that could not be split back cleanly decoded again alone."""
        packs: list[packing.Pack] = []
        if self.spec.batching.pack_short_windows and len(jobs) > 1:
            try:
                packs = self._plan_packs(jobs)
            except Exception:  # noqa: BLE001 - packing is an optimisation: never the reason a batch fails
                log.exception("%s: planning packed windows failed; decoding the batch unpacked", self.name)
        if not packs:
            return self._decode_windows(jobs, live)  # type: ignore[return-value]  # no single try: never None
        in_pack = {m.index for pack in packs for m in pack.members}
        singles = [i for i in range(len(jobs)) if i not in in_pack]
        results: list[ChunkResult | Abandoned | None] = [None] * len(jobs)
        if singles:
            for i, result in zip(singles, self._decode_windows([jobs[i] for i in singles], live)):
                results[i] = result
        # a short pack is encoded over its own length (a pack of two costs less than a full one), decoded once
        pack_jobs = [live.pack(self._pack_job(pack, jobs), [jobs[m.index] for m in pack.members]) for pack in packs]
        packed = self._decode_once_fitted(pack_jobs, [pack.samples / SAMPLE_RATE for pack in packs], live,
                                          PACK_FIT_FRAMES)
        again: list[int] = []
        for pack, result in zip(packs, packed):
            if isinstance(result, Abandoned):
                for member in pack.members:
                    results[member.index] = result
                continue
            if result is None:  # the packed window failed a guard: its members go alone, with their full ladder
                again += [m.index for m in pack.members]
                continue
            self._split_pack(pack, result, jobs, results, again)
        if again:
            again.sort()
            log.debug("%s: %d packed windows decoded again alone", self.name, len(again))
            for i, result in zip(again, self._decode_windows([jobs[i] for i in again], live)):
                if isinstance(result, ChunkResult):
                    result.pack_failed = True
                    result.fallbacks.insert(0, "packed")
                results[i] = result
        return results  # type: ignore[return-value]

    def _split_pack(self, pack: packing.Pack, result: ChunkResult, jobs: Sequence[ChunkJob],
                    results: list[ChunkResult | Abandoned | None], again: list[int]) -> None:
        """A packed window's segments back to its members' own times; the members that cannot be told apart go
        to ``again``."""
        shares = packing.split(pack, result.segments)
        for position, member in enumerate(pack.members):
            if position in shares.failed:
                again.append(member.index)
                continue
            job = jobs[member.index]
            seek = int(job.offset * self.whisper.frames_per_second)
            timestamps = self._tokenizer(job.task, result.language).timestamp_begin
            own = [packing.to_own_time(member, s, job.offset, seek, job.word_timestamps)
                   for s in shares.segments[position]]
            results[member.index] = ChunkResult(  # timestamp tokens are of the packed window: dropped
                language=result.language, language_probability=result.language_probability, packed=True,
                segments=[s.model_copy(update={"tokens": [t for t in s.tokens if t < timestamps],
                                               "logprobs": s.logprobs if job.logprobs else None}) for s in own])

    def _plan_packs(self, jobs: Sequence[ChunkJob]) -> list[packing.Pack]:
        """Packs of the windows that are short, of a known language, and have speech (Silero VAD): alone, a
        window without speech meets Whisper's no-speech check, which a packed window cannot apply to it."""
        candidates = []
        for i, job in enumerate(jobs):
            language = job.language if self.multilingual else "en"
            if language is None:  # detection reads the whole window: it must see this request's audio only
                continue
            start, end = packing.speech_edges(job.audio)
            if end - start <= packing.MAX_MEMBER_S * SAMPLE_RATE:
                candidates.append(packing.Candidate(i, (job.task, language, job.prompt, job.temperature), start, end))
        keys = Counter(c.key for c in candidates)
        candidates = [c for c in candidates
                      if keys[c.key] > 1 and packing.has_speech(jobs[c.index].audio[c.start:c.end])]
        return packing.plan(candidates)

    @staticmethod
    def _pack_job(pack: packing.Pack, jobs: Sequence[ChunkJob]) -> ChunkJob:
        first = jobs[pack.members[0].index]
        return ChunkJob(audio=packing.packed_audio(pack, [job.audio for job in jobs]), offset=0.0, task=first.task,
                        language=first.language, prompt=first.prompt, temperature=first.temperature,
                        word_timestamps=True,  # the words prove which member each segment belongs to
                        logprobs=any(jobs[m.index].logprobs for m in pack.members))

    def _decode_windows(self, jobs: Sequence[ChunkJob], live: _Live = EVERY, single_try: bool = False,
                        frames: int = FULL_FRAMES, max_length: int | None = None
                        ) -> list[ChunkResult | Abandoned | None]:
        """One batched encode (over the first ``frames`` mel frames of each window) and language detection,
        then batched decoding with Whisper's guards; windows nobody waits for any more are left out before each
        step (``Abandoned``).

        ``single_try`` windows (packed or fitted ones) are decoded once, at their temperature: when one fails a
        guard (or looks silent) its result is None, and the caller decodes it (or its members) again."""
        kept = [i for i, job in enumerate(jobs) if live(job)]
        if len(kept) < len(jobs):
            results: list[ChunkResult | Abandoned | None] = [Abandoned() for _ in jobs]
            if kept:
                decoded = self._decode_windows([jobs[i] for i in kept], live, single_try, frames, max_length)
                for i, result in zip(kept, decoded):
                    results[i] = result
            return results
        features = self._features(jobs, frames)
        encoder_output = self.whisper.encode(features)
        languages = self._languages(jobs, encoder_output)
        tokenizers = [self._tokenizer(job.task, lang) for job, (lang, _) in zip(jobs, languages)]
        decodes = self._decode_with_fallback(jobs, tokenizers, features, encoder_output, live, single_try,
                                             max_length)
        gone = {i for i, (job, decode) in enumerate(zip(jobs, decodes)) if decode is None or not live(job)}
        failed = {i for i, decode in enumerate(decodes) if single_try and decode is not None and i not in gone
                  and (self.guards.needs_fallback(decode) or self.guards.is_silent(decode.no_speech_prob,
                                                                                   decode.avg_logprob))}
        per_job_segments, segment_sizes = [], []
        for i, (job, tokenizer, decode) in enumerate(zip(jobs, tokenizers, decodes)):
            segments, segment_size = ([], 0) if decode is None or i in failed | gone else \
                self._segments(job, tokenizer, decode)
            per_job_segments.append(segments)
            segment_sizes.append(segment_size)
        self._add_words(jobs, tokenizers, features, encoder_output, per_job_segments, segment_sizes)
        return [Abandoned() if i in gone else None if i in failed or decode is None else
                ChunkResult(language=lang, language_probability=prob,
                            segments=[_segment(s, decode.temperature) for s in segments],
                            fallbacks=list(decode.fallbacks))
                for i, ((lang, prob), decode, segments) in enumerate(zip(languages, decodes, per_job_segments))]

    def _features(self, jobs: Sequence[ChunkJob], frames: int = FULL_FRAMES) -> np.ndarray:
        from faster_whisper.audio import pad_or_trim

        fe = self.whisper.feature_extractor
        features = np.stack([pad_or_trim(fe(job.audio)) for job in jobs]).astype(np.float32)
        return features if frames >= features.shape[-1] else np.ascontiguousarray(features[..., :frames])

    def _tokenizer(self, task: str, language: str):
        from faster_whisper.tokenizer import Tokenizer

        return Tokenizer(self.whisper.hf_tokenizer, self.multilingual, task=task, language=language)

    def _languages(self, jobs: Sequence[ChunkJob], encoder_output) -> list[tuple[str, float]]:
        """(language, probability) per window: the one asked for, or the one Whisper detects."""
        if not (self.multilingual and any(job.language is None for job in jobs)):
            return [(job.language or "en", 1.0) for job in jobs]
        detected = self.whisper.model.detect_language(encoder_output)
        return [(job.language, 1.0) if job.language else _likeliest(probs, job.languages)
                for job, probs in zip(jobs, detected)]

    def _decode_with_fallback(self, jobs: Sequence[ChunkJob], tokenizers: list, features: np.ndarray,
                              encoder_output, live: _Live = EVERY, single_try: bool = False,
                              max_length: int | None = None) -> list[Decode | None]:
        """Every window at the first temperature of its ladder, in one batch; then only the windows that
        failed a guard, again as one (smaller) batch per next temperature, until each passes or its ladder
        ends (``single_try`` windows have no ladder). A sampled decode goes in pieces of ``fallback_batch_size``
        windows; before each decode, the windows nobody waits for are left out. Returns the decode each window
        keeps (None for one left out before its first)."""
        ladders = [(job.temperature,) if single_try else self.guards.temperatures(job.temperature) for job in jobs]
        tried: list[list[Decode]] = [[] for _ in jobs]
        pending, step = list(range(len(jobs))), 0
        while pending:
            by_temperature: dict[float, list[int]] = {}
            for i in pending:
                by_temperature.setdefault(ladders[i][step], []).append(i)
            for temperature, indexes in by_temperature.items():
                piece = max(1, self.fallback_batch_size) if temperature > 0 else len(indexes)
                for start in range(0, len(indexes), piece):
                    wanted = [i for i in indexes[start:start + piece] if live(jobs[i])]
                    if len(wanted) < len(indexes[start:start + piece]):
                        log.debug("%s: %d windows nobody waits for left out at temperature %s", self.name,
                                  len(indexes[start:start + piece]) - len(wanted), temperature)
                    if not wanted:
                        continue
                    subset = self._encoded_subset(features, encoder_output, wanted, len(jobs))
                    outputs = self._generate([jobs[i] for i in wanted], [tokenizers[i] for i in wanted], subset,
                                             temperature, max_length)
                    for i, output in zip(wanted, outputs):
                        tried[i].append(_decode(tokenizers[i], output, temperature))
            step += 1
            pending = [i for i in pending if tried[i] and step < len(ladders[i])
                       and self.guards.needs_fallback(tried[i][-1]) and live(jobs[i])]
            if pending:
                log.debug("%s: %d of %d windows fall back to temperature %s", self.name, len(pending), len(jobs),
                          sorted({ladders[i][step] for i in pending}))
        return [self.guards.choose(decodes) if decodes else None for decodes in tried]

    def _encoded_subset(self, features: np.ndarray, encoder_output, indexes: list[int], total: int):
        """The encoder output of some of the windows: sliced on the CPU, encoded again elsewhere."""
        if len(indexes) == total:
            return encoder_output
        if self.device == "cpu":
            import ctranslate2

            return ctranslate2.StorageView.from_array(np.ascontiguousarray(np.asarray(encoder_output)[indexes]))
        return self.whisper.encode(features[indexes])

    def _generate(self, jobs: Sequence[ChunkJob], tokenizers: list, encoder_output, temperature: float,
                  max_length: int | None = None) -> list:
        from faster_whisper.transcribe import get_suppressed_tokens

        model = self.whisper
        prompts = []
        for job, tokenizer in zip(jobs, tokenizers):
            previous = tokenizer.encode(" " + job.prompt.strip()) if job.prompt else []
            prompts.append(model.get_prompt(tokenizer, previous_tokens=previous, without_timestamps=False))
        if temperature > 0:  # sampling, best of N (as faster-whisper)
            search = dict(beam_size=1, num_hypotheses=self.guards.best_of, sampling_topk=0,
                          sampling_temperature=temperature)
        else:
            search = dict(beam_size=self.beam_size)
        return model.model.generate(
            encoder_output, prompts, max_length=max_length or model.max_length, suppress_blank=True,
            suppress_tokens=get_suppressed_tokens(tokenizers[0], [-1]), return_scores=True,
            return_no_speech_prob=True, return_logits_vocab=any(job.logprobs for job in jobs), **search)

    def _segments(self, job: ChunkJob, tokenizer, decode: Decode) -> tuple[list[dict], int]:
        """The decoded segments of one window (none when Whisper judges it silent), and its size in frames."""
        model = self.whisper
        output = decode.output
        tokens = output.sequences_ids[0]
        duration = len(job.audio) / SAMPLE_RATE
        segment_size = int(ceil(duration) * model.frames_per_second)
        seek = int(job.offset * model.frames_per_second)
        if self.guards.is_silent(decode.no_speech_prob, decode.avg_logprob):
            return [], segment_size
        pieces = model._split_segments_by_timestamps(
            tokenizer=tokenizer, tokens=tokens, time_offset=job.offset, segment_size=segment_size,
            segment_duration=duration, seek=seek)[0]
        pieces += self._unfinished_tail(tokenizer, tokens, pieces, job.offset, duration, seek)
        scores = _token_logprobs(output, len(tokens)) if job.logprobs else None
        segments, consumed = [], 0
        for piece in pieces:  # consecutive slices of ``tokens``
            text = tokenizer.decode(piece["tokens"])
            first, consumed = consumed, consumed + len(piece["tokens"])
            if not text.strip():
                continue
            segment = dict(seek=seek, start=piece["start"], end=min(piece["end"], job.offset + duration),
                           tokens=piece["tokens"], text=text, avg_logprob=decode.avg_logprob,
                           no_speech_prob=decode.no_speech_prob, compression_ratio=decode.compression_ratio)
            if scores is not None:
                segment["logprobs"] = _logprob_items(tokenizer, piece["tokens"], scores[first:consumed])
            segments.append(segment)
        return segments, segment_size

    def _unfinished_tail(self, tokenizer, tokens: list[int], pieces: list[dict], offset: float, duration: float,
                         seek: int) -> list[dict]:
        """Text after the last closed timestamp pair.

        Sequential Whisper seeks back and decodes it again with the next window;
        windows here are decoded independently, so it is kept as a segment that
        runs to the end of the window instead of being lost.
        """
        consumed = sum(len(p["tokens"]) for p in pieces)
        tail = tokens[consumed:]
        if not any(t < tokenizer.eot for t in tail):
            return []
        stamps = [t for t in tail if t >= tokenizer.timestamp_begin]
        start = offset + (stamps[0] - tokenizer.timestamp_begin) * self.whisper.time_precision if stamps else \
            (pieces[-1]["end"] if pieces else offset)
        return [dict(seek=seek, start=start, end=offset + duration, tokens=tail)]

    def _add_words(self, jobs, tokenizers, features, encoder_output, per_job_segments, segment_sizes) -> None:
        """Word timestamps by cross-attention alignment, batched per (language, task)."""
        wanted = [i for i, job in enumerate(jobs) if job.word_timestamps and per_job_segments[i]]
        if not wanted:
            return
        groups: dict[tuple, list[int]] = {}
        for i in wanted:
            groups.setdefault(tuple(tokenizers[i].sot_sequence), []).append(i)
        for indexes in groups.values():
            output = self._encoded_subset(features, encoder_output, indexes, len(jobs))
            self.whisper.add_word_timestamps(
                [per_job_segments[i] for i in indexes], tokenizers[indexes[0]], output,
                [segment_sizes[i] for i in indexes], PREPEND_PUNCTUATIONS, APPEND_PUNCTUATIONS, 0.0)


def _decode(tokenizer, output, temperature: float) -> Decode:
    """A window's decode with what the guards judge: average log-probability and compression ratio of its text."""
    tokens = output.sequences_ids[0]
    avg_logprob = output.scores[0] * (len(tokens) ** 1.0) / (len(tokens) + 1)  # length_penalty 1, as generated
    text = tokenizer.decode(tokens).strip()
    return Decode(output, avg_logprob, temperature, compression_ratio(text), output.no_speech_prob)


def _segment(s: dict, temperature: float) -> Segment:
    return Segment(seek=s["seek"], start=round(s["start"], 3), end=round(s["end"], 3), text=s["text"],
                   tokens=s["tokens"], temperature=temperature, avg_logprob=s["avg_logprob"],
                   compression_ratio=s["compression_ratio"], no_speech_prob=s["no_speech_prob"],
                   words=[Word(**w) for w in s["words"]] if "words" in s else None,
                   logprobs=[TokenLogprob(**t) for t in s["logprobs"]] if "logprobs" in s else None)


def _likeliest(probs: Sequence[tuple[str, float]], among: Sequence[str] | None) -> tuple[str, float]:
    """The most likely language of Whisper's (``<|xx|>``, probability) list, of ``among`` only when given (its
    probability renormalized over them)."""
    if not among:
        return probs[0][0][2:-2], float(probs[0][1])
    kept = [(token[2:-2], float(p)) for token, p in probs if token[2:-2] in among]
    if not kept:
        return among[0], 0.0
    total = sum(p for _, p in kept)
    code, p = max(kept, key=lambda item: item[1])
    return code, (p / total if total > 0 else 0.0)


def _token_logprobs(output, count: int) -> list[float]:
    """The log-probability of each of the chosen hypothesis' first ``count`` tokens: the log-softmax, at each
    step, of the logits CTranslate2 returned (``return_logits_vocab``), taken at the token chosen."""
    steps = output.logits[0]
    tokens = output.sequences_ids[0]
    values = []
    for step, token in zip(steps[:count], tokens[:count]):
        logits = np.asarray(step, dtype=np.float64).reshape(-1)
        top = float(np.max(logits))
        values.append(min(0.0, float(logits[token]) - top - float(np.log(np.exp(logits - top).sum()))))
    return values


_BYTE_OF: dict[str, int] = {}


def _byte_of() -> dict[str, int]:
    """GPT-2's byte-level BPE alphabet (Whisper's tokenizer), character -> byte."""
    if not _BYTE_OF:
        printable = [*range(ord("!"), ord("~") + 1), *range(ord("¡"), ord("¬") + 1), *range(ord("®"), ord("ÿ") + 1)]
        extra = 0
        for b in range(256):
            if b in printable:
                _BYTE_OF[chr(b)] = b
            else:
                _BYTE_OF[chr(256 + extra)] = b
                extra += 1
    return _BYTE_OF


def _logprob_items(tokenizer, tokens: Sequence[int], scores: Sequence[float]) -> list[dict]:
    """OpenAI's ``logprobs`` items of a segment's text tokens (timestamp and special tokens left out)."""
    items = []
    byte_of = _byte_of()
    for token, score in zip(tokens, scores):
        if token >= tokenizer.eot:
            continue
        piece = tokenizer.tokenizer.id_to_token(token) or ""
        raw = bytes(byte_of.get(ch, 63) for ch in piece)
        items.append({"token": raw.decode("utf-8", errors="replace"), "logprob": round(score, 6), "bytes": list(raw)})
    return items
