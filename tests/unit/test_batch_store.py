"""The Batch API's pure parts and its store: input lines checked, output lines shaped, requests claimed under
leases (SQLite and a real PostgreSQL), counted once, finalized into files; files scoped to their API key."""

from __future__ import annotations

import json
import threading

import pytest

from services.batches.dispatch import backoff_s, transcription_form
from services.batches.files import FileStore, Owner
from services.batches.finalize import Finalizer, due, output_line
from services.batches.items import ItemQueue
from services.batches.lines import check_lines
from services.batches.store import BatchStore, Conflict
from services.batches.wire import BatchCreate, OutputLine
from services.core.contracts.errors import InvalidRequest, NotFound
from services.core.contracts.specs import BatchSettings
from services.store import open_database
from services.store.objects import DirectoryObjectStore

SPEECH = "/v1/audio/speech"


def line(custom_id: str, url: str = SPEECH, **extra) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": url,
                       "body": {"model": "tts-1", "input": "Hi.", "voice": "alloy"}, **extra})


def test_good_lines_become_requests_with_their_line_numbers():
    data = (line("a") + "\n\n" + line("b") + "\n").encode()
    requests, errors = check_lines(data, SPEECH, max_lines=10)
    assert errors is None and [(r.line, r.custom_id) for r in requests] == [(1, "a"), (3, "b")]


@pytest.mark.parametrize("bad, code, param", [
    ("{oops", "invalid_json_line", None),
    ("[1, 2]", "invalid_request", None),
    (json.dumps({"custom_id": "x", "method": "POST", "url": SPEECH}), "missing_required_parameter", "body"),
    (json.dumps({"custom_id": "x", "method": "GET", "url": SPEECH, "body": {}}), "invalid_method", "method"),
    (line("x", url="/v1/audio/transcriptions"), "mismatched_url", "url"),
    (line("a"), "duplicate_custom_id", "custom_id"),
])
def test_a_malformed_line_fails_the_batch_naming_it(bad, code, param):
    requests, errors = check_lines((line("a") + "\n" + bad + "\n").encode(), SPEECH, max_lines=10)
    assert requests == [] and errors is not None
    assert [(e.line, e.code, e.param) for e in errors.data] == [(2, code, param)]
    assert errors.model_dump()["object"] == "list"


def test_too_many_lines_and_empty_files_fail():
    _, errors = check_lines("\n".join(line(str(i)) for i in range(4)).encode(), SPEECH, max_lines=3)
    assert errors.data[0].code == "too_many_requests" and errors.data[0].line == 4
    assert check_lines(b"\n \n", SPEECH, 3)[1].data[0].code == "empty_file"
    assert check_lines(b"\xff\xfe", SPEECH, 3)[1].data[0].code == "invalid_file"


def test_an_unsupported_endpoint_or_window_is_refused_at_create():
    with pytest.raises(ValueError, match="not supported"):
        BatchCreate(input_file_id="file-1", endpoint="/v1/chat/completions")
    with pytest.raises(ValueError, match="completion_window"):
        BatchCreate(input_file_id="file-1", endpoint=SPEECH, completion_window="1h")


def test_output_lines_have_openais_shape():
    done = output_line("a", response={"status_code": 200, "request_id": "req_1", "body": {"text": "hi"}})
    assert set(done) == {"id", "custom_id", "response", "error"} and done["id"].startswith("batch_req_")
    assert done["error"] is None and OutputLine.model_validate(done).response.body == {"text": "hi"}


def test_a_transcription_body_becomes_form_fields():
    file_id, fields = transcription_form({"file": "file-abc", "model": "whisper-1", "temperature": 0.2,
                                          "timestamp_granularities": ["word", "segment"], "prompt": None})
    assert file_id == "file-abc"
    assert fields == {"model": "whisper-1", "temperature": "0.2", "timestamp_granularities[]": ["word", "segment"]}
    _, fields = transcription_form({"file": "file-1", "known_speaker_names[]": ["Ann", "Bo"],
                                    "known_speaker_references": ["voice_1", "voice_2"],
                                    "chunking_strategy": {"type": "server_vad"}})
    assert fields == {"known_speaker_names[]": ["Ann", "Bo"], "known_speaker_references[]": ["voice_1", "voice_2"],
                      "chunking_strategy": '{"type": "server_vad"}'}
    for body in ({"model": "m"}, {"file": "x.wav"}, {"file": "file-1", "stream": True}, {"file": "file-1", "o": [{}]},
                 {"file": "file-1", "o": [True]}):
        with pytest.raises(InvalidRequest):
            transcription_form(body)


def test_backoff_follows_retry_after_else_doubles():
    assert 5 <= backoff_s(1, "5") <= 6.25
    assert 1 <= backoff_s(1, None) <= 1.25 and 8 <= backoff_s(4, None) <= 10 and backoff_s(20, None) <= 75


@pytest.fixture
def stores(database_url, tmp_path):
    db = open_database(url=database_url)
    files = FileStore(db, DirectoryObjectStore(tmp_path / "objects"))
    settings = BatchSettings(lease_s=30)
    yield BatchStore(db, files, settings), ItemQueue(db, settings), Finalizer(db, files, 3600)
    db.dispose()


def _started_batch(store: BatchStore, lines: int) -> str:
    source = store.files.create((("\n".join(line(f"c{i}") for i in range(lines))) + "\n").encode(), "in.jsonl",
                                "batch", None, None)
    batch = store.create(BatchCreate(input_file_id=source.id, endpoint=SPEECH), Owner(None), None)
    row = store.claim_batch("validator", store.row(batch.id, Owner(None)).id == batch.id)
    requests, _ = check_lines(store.files.content(source.id, Owner(None))[1], SPEECH, 100)
    store.start(row.id, "validator", [{"line": r.line, "custom_id": r.custom_id, "body": r.body} for r in requests],
                None)
    return batch.id


def test_two_routers_never_take_the_same_request(stores):
    store, queue, _ = stores
    batch_id = _started_batch(store, 12)
    taken: dict[str, list] = {}

    def take(runner: str) -> None:
        taken[runner] = [(i.batch_id, i.line) for _ in range(6) for i in queue.claim(runner, 2)]

    threads = [threading.Thread(target=take, args=(f"router-{n}",)) for n in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    everything = [key for keys in taken.values() for key in keys]
    assert sorted(everything) == [(batch_id, n) for n in range(1, 13)]  # each line once, none twice
    assert queue.claim("late", 5) == []  # all leased


def test_a_finished_request_counts_once_and_an_expired_lease_moves_on(stores):
    store, queue, finalizer = stores
    batch_id = _started_batch(store, 2)
    first, second = queue.claim("a", 2)
    result = output_line(first.custom_id, response={"status_code": 200, "request_id": "r", "body": {}})
    assert queue.finish("a", first, result, failed=False, audio_seconds=1.5)
    assert not queue.finish("a", first, result, failed=False, audio_seconds=1.5)  # reported once
    queue.clock = lambda: 1e12  # a's lease on the second ran out: b takes it, a's late answer is dropped
    (again,) = queue.claim("b", 5)
    assert again.line == second.line and again.attempts == 2
    assert not queue.finish("a", second, result, failed=True, audio_seconds=None)
    assert queue.finish("b", again, output_line(again.custom_id, response={"status_code": 400, "request_id": "r",
                                                                           "body": {}}), failed=True,
                        audio_seconds=None)
    batch = store.get(batch_id, Owner(None))
    assert (batch.request_counts.completed, batch.request_counts.failed, batch.audio_seconds_done) == (1, 1, 1.5)
    row = store.claim_batch("f", due(store.clock()))
    assert row.id == batch_id and finalizer.finalize(row, "f") == "completed"
    batch = store.get(batch_id, Owner(None))
    output = store.files.content(batch.output_file_id, Owner(None))[1].decode().splitlines()
    assert batch.status == "completed" and [json.loads(x)["custom_id"] for x in output] == ["c0"]


def test_a_retried_request_waits_and_a_released_one_is_free_at_once(stores):
    store, queue, _ = stores
    _started_batch(store, 2)
    first, second = queue.claim("a", 2)
    queue.retry("a", first, delay_s=3600)
    queue.release("a")
    assert [i.line for i in queue.claim("b", 5)] == [second.line]


def test_files_and_batches_belong_to_their_key(stores):
    store, _, _ = stores
    files = store.files
    mine = files.create(b"x", "a.wav", "user_data", "key_a", 3600)
    files.create(b"y", "b.wav", "user_data", "key_b", 3600)
    assert [f.id for f in files.list(Owner("key_a"), None, 10, None, "desc").data] == [mine.id]
    assert len(files.list(Owner("key_admin", admin=True), None, 10, None, "desc").data) == 2
    with pytest.raises(NotFound):
        files.get(mine.id, Owner("key_b"))
    files.clock = lambda: 1e12
    with pytest.raises(NotFound):
        files.get(mine.id, Owner("key_a"))  # expired
    assert files.reclaim() == 2 and files.list(Owner(None), None, 10, None, "asc").data == []


def test_cancelling_twice_or_after_the_end_is_a_409(stores):
    """OpenAI's answer: only a validating or in-progress batch can be cancelled; cancelling, cancelled and finished
    ones are 409 naming their status, and marked not to be retried."""
    store, _, finalizer = stores
    batch_id = _started_batch(store, 2)
    assert store.cancel(batch_id, Owner(None)).status == "cancelling"
    for expected in ("cancelling", "cancelled"):
        with pytest.raises(Conflict) as caught:
            store.cancel(batch_id, Owner(None))
        assert caught.value.status_code == 409 and f"status '{expected}'" in caught.value.message
        assert caught.value.response_headers()["x-should-retry"] == "false"
        if expected == "cancelling":
            assert finalizer.finalize(store.claim_batch("f", due(store.clock())), "f") == "cancelled"
    assert store.get(batch_id, Owner(None)).status == "cancelled"
    with pytest.raises(NotFound):
        store.cancel(batch_id, Owner("someone_else"))  # not theirs: 404 before any status


def test_a_files_name_is_kept_clean_and_its_bytes_stream(stores, tmp_path):
    files = stores[0].files
    spooled = tmp_path / "upload"
    spooled.write_bytes(b"x" * 3_000_000)
    with spooled.open("rb") as source:
        made = files.create_from(source, "../../../../tmp/x", "user_data", None, None)
    assert made.filename == "x" and made.bytes == 3_000_000
    assert files.create(b"{}\n", "/etc/passwd", "batch", None, None).filename == "passwd"
    assert sorted(f.filename for f in files.list(Owner(None), None, 10, None, "asc").data) == ["passwd", "x"]
    record, chunks = files.stream(made.id, Owner(None), 2_999_990, 10)
    with chunks:
        assert record.id == made.id and b"".join(chunks) == b"x" * 10
    files.objects.delete(f"batch-files/{made.id}")
    with pytest.raises(NotFound):
        files.stream(made.id, Owner(None))  # a row whose bytes are gone
