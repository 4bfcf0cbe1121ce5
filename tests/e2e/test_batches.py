"""OpenAI's Files and Batch API with the official openai SDK against `harmony serve`, checked as a user would:
the words of known speech in a transcription batch's output, the audio files of a speech batch, a bad request
failing alone, a malformed input file failing validation, cancel, and a SIGKILL in the middle of a batch."""

from __future__ import annotations

import base64
import io
import json
import signal
import time
from pathlib import Path

import openai
import pytest
import soundfile
import yaml

from tests.harmony_process import HarmonyProcess
from tests.speech import SENTENCES, synthesize, wav_bytes, wer

TERMINAL = {"completed", "failed", "expired", "cancelled"}


def wait_for(client, batch_id: str, timeout_s: float = 300.0, until=lambda b: b.status in TERMINAL):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        batch = client.batches.retrieve(batch_id)
        if until(batch):
            return batch
        time.sleep(0.1)
    raise AssertionError(f"batch {batch_id} is still {batch.status}: {batch}")


def jsonl(lines: list[dict]) -> bytes:
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def read_lines(client, file_id: str | None) -> dict[str, dict]:
    if file_id is None:
        return {}
    lines = [json.loads(line) for line in client.files.content(file_id).text.splitlines() if line.strip()]
    return {line["custom_id"]: line for line in lines}


def submit(client, endpoint: str, lines: list[dict], **kwargs):
    source = client.files.create(file=("requests.jsonl", jsonl(lines)), purpose="batch")
    return client.batches.create(input_file_id=source.id, endpoint=endpoint, completion_window="24h", **kwargs)


def speech_line(custom_id: str, text: str, fmt: str = "wav", model: str = "tts-1") -> dict:
    return {"custom_id": custom_id, "method": "POST", "url": "/v1/audio/speech",
            "body": {"model": model, "input": text, "voice": "alloy", "response_format": fmt}}


def test_files_create_retrieve_list_content_delete(client):
    made = client.files.create(file=("notes.jsonl", b'{"a": 1}\n'), purpose="batch")
    assert made.id.startswith("file-") and made.bytes == 9
    assert made.purpose == "batch" and made.filename == "notes.jsonl"
    assert made.expires_at is not None and made.expires_at > made.created_at
    assert client.files.retrieve(made.id).id == made.id
    assert made.id in [f.id for f in client.files.list(purpose="batch")]
    assert made.id not in [f.id for f in client.files.list(purpose="user_data")]
    assert client.files.content(made.id).content == b'{"a": 1}\n'
    assert client.files.delete(made.id).deleted
    with pytest.raises(openai.NotFoundError):
        client.files.retrieve(made.id)
    with pytest.raises(openai.BadRequestError):
        client.files.create(file=("x.bin", b"x"), purpose="fine-tune")


def test_an_unsupported_endpoint_is_a_400(client):
    source = client.files.create(file=("r.jsonl", b"{}\n"), purpose="batch")
    with pytest.raises(openai.BadRequestError) as caught:
        client.batches.create(input_file_id=source.id, endpoint="/v1/chat/completions", completion_window="24h")
    assert caught.value.body["param"] == "endpoint"
    with pytest.raises(openai.NotFoundError):
        client.batches.create(input_file_id="file-0000", endpoint="/v1/audio/speech", completion_window="24h")


def test_a_transcription_batch_gives_the_words_and_a_bad_request_fails_alone(client):
    clips = {f"clip-{i}": SENTENCES[i] for i in range(2)}
    ids = {name: client.files.create(file=(f"{name}.wav", wav_bytes(*synthesize(text))), purpose="user_data").id
           for name, text in clips.items()}
    lines = [{"custom_id": name, "method": "POST", "url": "/v1/audio/transcriptions",
              "body": {"model": "whisper-1", "file": ids[name], "language": "en"}} for name in clips]
    lines += [{"custom_id": "missing", "method": "POST", "url": "/v1/audio/transcriptions",
               "body": {"model": "whisper-1", "file": "file-000000000000000000000000"}},
              {"custom_id": "bad-format", "method": "POST", "url": "/v1/audio/transcriptions",
               "body": {"model": "whisper-1", "file": ids["clip-0"], "response_format": "docx"}}]
    batch = wait_for(client, submit(client, "/v1/audio/transcriptions", lines, metadata={"job": "e2e"}).id)
    assert batch.status == "completed" and batch.metadata == {"job": "e2e"}
    assert (batch.request_counts.total, batch.request_counts.completed, batch.request_counts.failed) == (4, 2, 2)
    assert batch.model_extra["audio_seconds_done"] == pytest.approx(batch.model_extra["audio_seconds_total"])
    output, errors = read_lines(client, batch.output_file_id), read_lines(client, batch.error_file_id)
    assert set(output) == set(clips) and set(errors) == {"missing", "bad-format"}
    for name, text in clips.items():
        assert output[name]["response"]["status_code"] == 200 and output[name]["id"].startswith("batch_req_")
        assert wer(text, output[name]["response"]["body"]["text"]) <= 0.1, output[name]
    assert errors["missing"]["response"]["status_code"] == 404
    assert errors["bad-format"]["response"]["body"]["error"]["param"] == "response_format"


def test_a_speech_batch_stores_each_answer_as_an_audio_file(client):
    texts = {"wav-one": SENTENCES[3], "mp3-two": SENTENCES[4]}
    lines = [speech_line("wav-one", texts["wav-one"], "wav"), speech_line("mp3-two", texts["mp3-two"], "mp3")]
    batch = wait_for(client, submit(client, "/v1/audio/speech", lines).id)
    assert batch.status == "completed" and batch.request_counts.completed == 2 and batch.error_file_id is None
    output = read_lines(client, batch.output_file_id)
    for name, fmt in (("wav-one", "WAV"), ("mp3-two", "MP3")):
        body = output[name]["response"]["body"]
        audio = client.files.content(body["file_id"]).content
        assert client.files.retrieve(body["file_id"]).purpose == "batch_output"
        info = soundfile.info(io.BytesIO(audio))
        assert info.format == fmt and 1.5 < info.duration < 10 and body["audio_seconds"] == pytest.approx(
            info.duration, abs=0.1)
    assert batch.model_extra["audio_seconds_done"] > 3


def test_a_malformed_input_file_fails_validation_naming_the_line(client):
    good = speech_line("a", "Hello.")
    source = client.files.create(file=("r.jsonl", jsonl([good]) + b"{not json\n" + jsonl([{**good, "url": "/v1/x"}])),
                                 purpose="batch")
    batch = client.batches.create(input_file_id=source.id, endpoint="/v1/audio/speech", completion_window="24h")
    batch = wait_for(client, batch.id)
    assert batch.status == "failed" and batch.failed_at is not None
    assert [(e.line, e.code) for e in batch.errors.data] == [(2, "invalid_json_line"), (3, "mismatched_url")]


def test_batches_list_and_cancel(client):
    batch = submit(client, "/v1/audio/speech", [speech_line(f"c{i}", SENTENCES[i % 6]) for i in range(30)])
    assert batch.id.startswith("batch_") and batch.object == "batch"
    cancelled = client.batches.cancel(batch.id)
    assert cancelled.status in ("cancelling", "cancelled") and cancelled.cancelling_at is not None
    done = wait_for(client, batch.id)
    assert done.status == "cancelled" and done.cancelled_at is not None and done.request_counts.completed < 30
    assert batch.id in [b.id for b in client.batches.list(limit=100)]
    with pytest.raises(openai.APIStatusError) as caught:
        client.batches.cancel(wait_for(client, submit(client, "/v1/audio/speech", [speech_line("x", "Hi.")]).id).id)
    assert caught.value.status_code == 409


def test_progress_streams_as_server_sent_events(client, harmony):
    import httpx

    batch = submit(client, "/v1/audio/speech", [speech_line(f"e{i}", SENTENCES[i]) for i in range(3)])
    with httpx.stream("GET", f"{harmony.url}/v1/batches/{batch.id}/events", timeout=300) as response:
        events = [json.loads(line[6:]) for line in response.iter_lines() if line.startswith("data: ")]
    done = [e["batch"]["request_counts"]["completed"] for e in events]
    assert events[-1]["type"] == "batch.completed" and done == sorted(done) and done[-1] == 3


@pytest.fixture
def piper_only(tmp_path):
    """A config with Piper alone (quick to start), one request at a time, short leases, and a data directory of its
    own that outlives the process."""
    config = yaml.safe_load((Path(__file__).resolve().parents[2] / "services/defaults/serve.yaml").read_text())
    config["models"] = [m for m in config["models"] if m["name"] == "piper-en-joe"]
    config["routes"] = []
    config.update(data_dir=str(tmp_path / "data"), audit={"sink": "none"},
                  batches={"concurrency": 1, "lease_s": 3, "poll_s": 0.2})
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    return str(path)


def test_a_batch_survives_sigkill_and_resumes(piper_only):
    texts = [" ".join(SENTENCES[i % 6] for i in range(j, j + 2)) for j in range(8)]
    first = HarmonyProcess(config=piper_only).start()
    try:
        client = openai.OpenAI(base_url=first.url + "/v1", api_key="x", max_retries=0, timeout=120)
        batch = submit(client, "/v1/audio/speech", [speech_line(f"k{i}", t, "flac") for i, t in enumerate(texts)])
        before = wait_for(client, batch.id, until=lambda b: b.request_counts.completed >= 1)
        first.proc.send_signal(signal.SIGKILL)
        first.proc.wait()
    finally:
        first.stop()
    assert before.status == "in_progress" and before.request_counts.completed < len(texts)
    second = HarmonyProcess(config=piper_only).start()
    try:
        client = openai.OpenAI(base_url=second.url + "/v1", api_key="x", max_retries=0, timeout=120)
        after = client.batches.retrieve(batch.id)
        assert after.request_counts.completed >= before.request_counts.completed  # counts continue
        done = wait_for(client, batch.id)
        raw = client.files.content(done.output_file_id).text.splitlines()
        ids = [json.loads(line)["custom_id"] for line in raw]
        audio = [client.files.content(json.loads(line)["response"]["body"]["file_id"]).content for line in raw]
    finally:
        assert second.stop() == 0
    assert done.status == "completed" and done.request_counts.completed == len(texts) == done.request_counts.total
    assert sorted(ids) == sorted(f"k{i}" for i in range(len(texts)))  # none lost, none twice
    assert all(soundfile.info(io.BytesIO(a)).duration > 2 for a in audio)


def test_a_diarized_transcription_batch_names_the_speakers(client):
    """``gpt-4o-transcribe-diarize`` in a batch: known speakers as JSON lists (sent on as repeated ``name[]`` form
    fields), chunking_strategy as an object; each output line holds the diarized answer (or the vtt)."""
    from openai.types.audio import TranscriptionDiarized

    from tests import meetings
    from tests.subtitles import check_turns, labels_by_turn, parse_vtt

    audio, turns = meetings.two_speaker_meeting()
    reference = "data:audio/wav;base64," + base64.b64encode(
        wav_bytes(meetings.voice("joe", SENTENCES[4]), meetings.RATE)).decode()
    meeting_id = client.files.create(file=("meeting.wav", audio), purpose="user_data").id
    common = {"model": "gpt-4o-transcribe-diarize", "file": meeting_id, "language": "en"}
    lines = [{"custom_id": "named", "method": "POST", "url": "/v1/audio/transcriptions",
              "body": {**common, "response_format": "diarized_json", "known_speaker_names": ["Joe"],
                       "known_speaker_references": [reference], "chunking_strategy": {"type": "server_vad"}}},
             {"custom_id": "subtitles", "method": "POST", "url": "/v1/audio/transcriptions",
              "body": {**common, "response_format": "vtt", "min_speakers": 2, "max_speakers": 2}}]
    batch = wait_for(client, submit(client, "/v1/audio/transcriptions", lines).id)
    output, errors = read_lines(client, batch.output_file_id), read_lines(client, batch.error_file_id)
    assert batch.status == "completed" and set(output) == {"named", "subtitles"} and not errors, (batch, errors)
    named = TranscriptionDiarized.model_validate(output["named"]["response"]["body"], strict=True)
    assert labels_by_turn(named.segments, turns) == ["Joe", "A", "Joe", "A"], named.segments
    assert len({w for w in named.text.lower().split()} & set(SENTENCES[0].lower().split())) >= 6
    check_turns(parse_vtt(output["subtitles"]["response"]["body"]), turns)
