"""What `harmony transcribe` and `harmony speak` work on and where their results go (no server needed)."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.cli import main
from services.commands.inputs import BadPaths, find_inputs
from services.commands.outputs import output_paths
from services.commands.speak import paragraphs


def touch(path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"x")
    return path


@pytest.fixture
def shows(tmp_path):
    for name in ("a/ep1.mp3", "a/ep1.srt", "a/notes.txt", "a/.hidden.mp3", "a/.cache/ep9.mp3", "a/b/ep2.WAV",
                 "a/b/ep3.mp4", "c/raw.bin"):
        touch(tmp_path / name)
    return tmp_path


def test_folders_are_searched_recursively_for_audio_and_video_only(shows):
    found = find_inputs([str(shows / "a")])
    assert [str(i.relative) for i in found] == ["ep1.mp3", "b/ep2.WAV", "b/ep3.mp4"]


def test_a_named_file_counts_whatever_its_extension_and_each_input_counts_once(shows):
    found = find_inputs([str(shows / "c/raw.bin"), str(shows / "a/ep1.mp3"), str(shows / "a")])
    assert [i.path.name for i in found] == ["raw.bin", "ep1.mp3", "ep2.WAV", "ep3.mp4"]


def test_globs_keep_the_folders_after_their_fixed_part(shows):
    found = find_inputs([str(shows / "a/**/*.*")])
    assert sorted(str(i.relative) for i in found) == ["b/ep2.WAV", "b/ep3.mp4", "ep1.mp3"]


def test_bad_paths_are_all_named(shows):
    with pytest.raises(BadPaths) as error:
        find_inputs([str(shows / "missing.mp3"), str(shows / "c"), str(shows / "*.ogg"), str(shows / "a")])
    assert [p.split(": ", 1)[1] for p in error.value.problems] == [
        "no such file or folder", "no audio or video files in this folder", "matches no audio or video files"]


def test_results_go_beside_the_inputs_or_under_out(shows, tmp_path):
    inputs = find_inputs([str(shows / "a")])
    beside = output_paths(inputs, ".srt", None)
    assert [beside[i] for i in inputs] == [shows / "a/ep1.srt", shows / "a/b/ep2.srt", shows / "a/b/ep3.srt"]
    under = output_paths(inputs, ".srt", tmp_path / "out")
    assert [under[i] for i in inputs] == [tmp_path / "out/ep1.srt", tmp_path / "out/b/ep2.srt",
                                          tmp_path / "out/b/ep3.srt"]


def test_inputs_that_would_share_a_result_keep_their_extension(tmp_path):
    inputs = find_inputs([str(touch(tmp_path / "talk.mp3")), str(touch(tmp_path / "talk.wav")),
                          str(touch(tmp_path / "other.ogg"))])
    assert sorted(p.name for p in output_paths(inputs, ".txt", None).values()) == [
        "other.txt", "talk.mp3.txt", "talk.wav.txt"]


def test_paragraphs_are_separated_by_blank_lines():
    text = "First line\nstill the first.\n\n  \n\nSecond.\r\n\r\nThird\n\n\n"
    assert paragraphs(text) == ["First line still the first.", "Second.", "Third"]


def test_bad_paths_exit_2(tmp_path, capsys):
    assert main(["transcribe", str(tmp_path / "nothing"), "--server", "http://127.0.0.1:9"]) == 2
    assert "nothing: no such file or folder" in capsys.readouterr().err
    assert main(["speak", str(tmp_path / "missing.txt"), "--server", "http://127.0.0.1:9"]) == 2
    (tmp_path / "empty.txt").write_text("\n\n")
    assert main(["speak", str(tmp_path / "empty.txt"), "--server", "http://127.0.0.1:9"]) == 2
    assert "no text to speak" in capsys.readouterr().err


def test_lengths_are_read_from_the_container_and_large_files_sent_as_opus(tmp_path):
    import numpy as np

    from services.commands.media import duration_seconds, upload_of
    from services.core.audio import decode_audio, encode_audio
    from tests.speech import write_wav

    tone = (0.3 * np.sin(2 * np.pi * 440 * np.arange(3 * 22050) / 22050)).astype(np.float32)
    wav = tmp_path / "tone.wav"
    write_wav(wav, tone, 22050)
    (tmp_path / "tone.mp3").write_bytes(encode_audio(tone, 22050, "mp3"))
    assert abs(duration_seconds(wav) - 3.0) < 0.01 and abs(duration_seconds(tmp_path / "tone.mp3") - 3.0) < 0.1
    assert duration_seconds(touch(tmp_path / "junk.mp3")) == 0.0
    assert upload_of(wav, wav.stat().st_size) == ("tone.wav", wav.read_bytes())
    name, data = upload_of(wav, wav.stat().st_size - 1)
    assert name == "tone.ogg" and data[:4] == b"OggS" and len(data) < wav.stat().st_size / 4
    assert abs(len(decode_audio(data, 16000)) / 16000 - 3.0) < 0.1
    with pytest.raises(ValueError, match="too large even as 16 kHz Opus"):
        upload_of(wav, 100)
