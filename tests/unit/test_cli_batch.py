"""`harmony batch`: its own logic (arguments, polling, writing results) over OpenAI's documented Files and
Batch API shapes, with the HTTP layer answered by an in-memory server (httpx.MockTransport)."""

from __future__ import annotations

import json

import httpx
import pytest
from openai import OpenAI

from services.cli import main
from services.commands import batch as batch_command

NOW = 1_700_000_000


class FakeBatchApi:
    """Just enough of the Files and Batch API: a batch moves one request per poll, then completes."""

    def __init__(self, endpoint: str = "/v1/audio/transcriptions", total: int = 2, final: str = "completed") -> None:
        self.files: dict[str, tuple[str, bytes]] = {}
        self.requests: list[httpx.Request] = []
        self.created: dict | None = None
        self.polls = 0
        self.endpoint, self.total, self.final = endpoint, total, final

    def file_object(self, file_id: str) -> dict:
        name, data = self.files[file_id]
        return {"id": file_id, "object": "file", "bytes": len(data), "created_at": NOW, "filename": name,
                "purpose": "batch", "status": "processed"}

    def batch_object(self) -> dict:
        done = min(self.polls, self.total)
        ended = done == self.total
        counts = {"total": self.total, "completed": done if self.final == "completed" else 0,
                  "failed": 0 if self.final == "completed" else done}
        body = {"id": "batch_abc", "object": "batch", "endpoint": self.endpoint, "input_file_id": "file-in",
                "completion_window": "24h", "status": (self.final if ended else "in_progress"), "created_at": NOW,
                "request_counts": counts, "metadata": (self.created or {}).get("metadata")}
        if ended and self.final == "completed":
            body.update(output_file_id="file-out", error_file_id="file-err", completed_at=NOW + 60)
        return body

    def handle(self, request: httpx.Request) -> httpx.Response:
        self.requests.append(request)
        path, method = request.url.path, request.method
        if (method, path) == ("POST", "/v1/files"):
            assert b'name="purpose"\r\n\r\nbatch' in request.content
            self.files["file-in"] = ("requests.jsonl", request.content)
            return httpx.Response(200, json=self.file_object("file-in"))
        if (method, path) == ("POST", "/v1/batches"):
            self.created = json.loads(request.content)
            return httpx.Response(200, json={**self.batch_object(), "status": "validating"})
        if (method, path) == ("GET", "/v1/batches/batch_abc"):
            self.polls += 1
            return httpx.Response(200, json=self.batch_object())
        if (method, path) == ("POST", "/v1/batches/batch_abc/cancel"):
            return httpx.Response(200, json={**self.batch_object(), "status": "cancelling"})
        if (method, path) == ("GET", "/v1/batches"):
            return httpx.Response(200, json={"object": "list", "data": [self.batch_object()], "has_more": False})
        if method == "GET" and path.startswith("/v1/files/") and path.endswith("/content"):
            return httpx.Response(200, content=self.files[path.split("/")[3]][1])
        if method == "GET" and path.startswith("/v1/files/") and path.split("/")[3] in self.files:
            return httpx.Response(200, json=self.file_object(path.split("/")[3]))
        return httpx.Response(404, json={"error": {"message": f"no {path}", "type": "invalid_request_error",
                                                   "param": None, "code": "not_found"}})


@pytest.fixture
def api(monkeypatch):
    fake = FakeBatchApi()

    def client(args):
        assert args.server == "http://harmony.test" and args.api_key == "sk-test"
        return OpenAI(base_url="http://harmony.test/v1", api_key=args.api_key, max_retries=0,
                      http_client=httpx.Client(transport=httpx.MockTransport(fake.handle)))

    monkeypatch.setattr(batch_command, "make_client", client)
    monkeypatch.setenv("HARMONY_SERVER", "http://harmony.test")
    monkeypatch.setenv("HARMONY_API_KEY", "sk-test")
    return fake


def harmony(*args: str) -> int:
    return main(["batch", *args])


def test_submit_uploads_creates_waits_and_downloads(api, tmp_path, capsys):
    lines = [{"custom_id": f"clip-{i}", "method": "POST", "url": "/v1/audio/transcriptions",
              "body": {"model": "whisper-1", "file": f"file-{i}"}} for i in range(2)]
    requests = tmp_path / "requests.jsonl"
    requests.write_text("".join(json.dumps(line) + "\n" for line in lines))
    output = "".join(json.dumps({"id": f"r{i}", "custom_id": f"clip-{i}", "error": None,
                                 "response": {"status_code": 200, "body": {"text": f"words {i}"}}}) + "\n"
                     for i in range(2))
    api.files["file-out"] = ("output.jsonl", output.encode())
    api.files["file-err"] = ("errors.jsonl", b"")
    out = tmp_path / "results"
    status = harmony("submit", str(requests), "--endpoint", "/v1/audio/transcriptions", "--metadata", "show=ep1",
                     "--wait", "--interval", "0", "--out", str(out))
    assert status == 0
    assert api.created == {"input_file_id": "file-in", "endpoint": "/v1/audio/transcriptions",
                           "completion_window": "24h", "metadata": {"show": "ep1"}}
    assert requests.read_bytes() in api.files["file-in"][1]
    assert api.polls == 3  # in progress 1/2, completed 2/2, and the retrieve before downloading
    assert capsys.readouterr().out.splitlines()[0] == "batch_abc"
    assert (out / "batch_abc_output.jsonl").read_text() == output
    assert (out / "batch_abc_errors.jsonl").read_text() == ""
    assert all(r.headers["authorization"] == "Bearer sk-test" for r in api.requests)


def test_speech_results_download_the_audio_each_line_names(api, tmp_path):
    api.endpoint = "/v1/audio/speech"
    api.polls = api.total  # already completed
    api.files["file-a1"] = ("speech.mp3", b"ID3 first")
    api.files["file-a2"] = ("speech.mp3", b"ID3 second")
    output = "".join(json.dumps({"id": f"r{i}", "custom_id": f"chapter 1/line {i}", "error": None,
                                 "response": {"status_code": 200, "body": {"file_id": f"file-a{i}"}}}) + "\n"
                     for i in (1, 2))
    api.files["file-out"] = ("output.jsonl", output.encode())
    api.files["file-err"] = ("errors.jsonl", b"")
    assert harmony("results", "batch_abc", "--out", str(tmp_path)) == 0
    assert (tmp_path / "chapter_1_line_1.mp3").read_bytes() == b"ID3 first"
    assert (tmp_path / "chapter_1_line_2.mp3").read_bytes() == b"ID3 second"
    assert harmony("results", "batch_abc", "--out", str(tmp_path / "plain"), "--no-audio") == 0
    assert sorted(p.name for p in (tmp_path / "plain").iterdir()) == ["batch_abc_errors.jsonl",
                                                                      "batch_abc_output.jsonl"]


def test_status_prints_the_counts_and_json(api, capsys):
    assert harmony("status", "batch_abc") == 0
    text = capsys.readouterr().out
    assert "batch_abc  in_progress  /v1/audio/transcriptions" in text
    assert "1 completed, 0 failed, 2 in all" in text
    assert harmony("status", "batch_abc", "--json") == 0
    assert json.loads(capsys.readouterr().out)["request_counts"] == {"total": 2, "completed": 2, "failed": 0}


def test_wait_on_a_failed_batch_exits_non_zero(api):
    api.final = "failed"
    assert harmony("wait", "batch_abc", "--interval", "0") == 1
    assert api.polls == 2


def test_wait_gives_up_after_its_timeout(api, capsys):
    api.total = 10 ** 6
    assert harmony("wait", "batch_abc", "--interval", "0", "--timeout", "0") == 1
    assert "still in_progress" in capsys.readouterr().err


def test_results_of_a_running_batch_say_so(api, tmp_path, capsys):
    api.total = 5
    assert harmony("results", "batch_abc", "--out", str(tmp_path)) == 1
    assert "still in_progress" in capsys.readouterr().err and not list(tmp_path.iterdir())


def test_cancel_and_list(api, capsys):
    assert harmony("cancel", "batch_abc") == 0
    assert capsys.readouterr().out.strip() == "batch_abc: cancelling"
    assert harmony("list") == 0
    assert "batch_abc  in_progress" in capsys.readouterr().out


def test_the_server_s_error_is_reported(api, capsys):
    assert harmony("status", "batch_nope") == 1
    assert "HTTP 404: no /v1/batches/batch_nope" in capsys.readouterr().err


def test_bad_arguments_exit_2(api, tmp_path, monkeypatch, capsys):
    assert harmony("submit", str(tmp_path / "missing.jsonl"), "--endpoint", "/v1/audio/speech") == 2
    (tmp_path / "r.jsonl").write_text("{}\n")
    assert harmony("submit", str(tmp_path / "r.jsonl"), "--endpoint", "/v1/audio/speech", "--metadata", "x") == 2
    monkeypatch.delenv("HARMONY_SERVER")
    assert harmony("status", "batch_abc") == 2
    assert "--server" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        harmony("submit", str(tmp_path / "r.jsonl"), "--endpoint", "/v1/embeddings")
    assert exit_info.value.code == 2
    assert not api.requests
