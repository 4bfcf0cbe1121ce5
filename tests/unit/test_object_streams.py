"""Objects in and out in chunks, on a directory and on an S3 bucket (moto's server): a file copied in without being
read whole, any range read back chunk by chunk, a missing object refused before the first chunk, the file or
connection let go when the reader closes; the Range header against a size; an upload's name cleaned."""

from __future__ import annotations

import hashlib
import io
import os

import psutil
import pytest

from services.batches.filenames import MAX_BYTES, clean_filename, content_disposition
from services.core.http.byte_ranges import RangeNotSatisfiable, byte_range
from services.store.objects import CHUNK_BYTES, DirectoryObjectStore, ObjectMissing, open_object_store

SIZE = 2 * CHUNK_BYTES + 12345  # three chunks, the last a short one
DATA = hashlib.shake_256(b"harmony").digest(SIZE)


@pytest.fixture
def store(object_store_settings, tmp_path):
    return open_object_store(object_store_settings, str(tmp_path / "data"))


def test_a_file_goes_in_and_comes_out_in_chunks(store):
    store.put_file("batch-files/file-a", io.BytesIO(DATA))
    with store.open("batch-files/file-a") as chunks:
        parts = list(chunks)
    assert [len(p) for p in parts] == [CHUNK_BYTES, CHUNK_BYTES, 12345]
    assert b"".join(parts) == DATA and store.get("batch-files/file-a") == DATA


@pytest.mark.parametrize("start, length", [(0, 10), (CHUNK_BYTES - 5, 10), (SIZE - 7, None), (12, CHUNK_BYTES * 2),
                                           (0, SIZE), (SIZE - 1, 1)])
def test_any_range_reads_back(store, start, length):
    store.put("o/range", DATA)
    with store.open("o/range", start, length) as chunks:
        parts = list(chunks)
    expected = DATA[start:] if length is None else DATA[start:start + length]
    assert b"".join(parts) == expected and all(len(p) <= CHUNK_BYTES for p in parts)


def test_a_missing_object_is_refused_at_open(store):
    with pytest.raises(ObjectMissing):
        store.open("o/none")


def test_closing_a_reader_lets_go_of_the_file(tmp_path):
    store = DirectoryObjectStore(tmp_path / "objects")
    store.put("o/held", DATA)
    path = str(tmp_path / "objects" / "o" / "held")
    process = psutil.Process(os.getpid())
    chunks = store.open("o/held")
    assert next(chunks) == DATA[:CHUNK_BYTES]
    assert path in {f.path for f in process.open_files()}
    chunks.close()  # a client gone mid-download
    assert path not in {f.path for f in process.open_files()}
    with store.open("o/held") as whole:
        assert b"".join(whole) == DATA
    assert path not in {f.path for f in process.open_files()}  # read to the end: closed too


def test_a_copy_that_fails_leaves_nothing(tmp_path):
    store = DirectoryObjectStore(tmp_path / "objects")

    class Broken(io.BytesIO):
        def read(self, size=-1):
            if self.tell() > 0:
                raise OSError("the upload's spool file went away")
            return super().read(size)

    with pytest.raises(OSError):
        store.put_file("o/broken", Broken(DATA))
    assert store.keys() == {} and list((tmp_path / "objects" / "o").iterdir()) == []


@pytest.mark.parametrize("header, expected", [
    (None, None), ("", None), ("bytes=0-9", (0, 9)), ("bytes=10-", (10, 99)), ("bytes=-5", (95, 99)),
    ("bytes=-500", (0, 99)), ("bytes=90-500", (90, 99)), ("Bytes = 3 - 4", (3, 4)),
    ("bytes=5-2", None), ("bytes=0-1,5-6", None), ("items=0-9", None), ("bytes=x-y", None), ("bytes=-", None),
])
def test_a_range_header_against_a_size(header, expected):
    assert byte_range(header, 100) == expected


@pytest.mark.parametrize("header, size", [("bytes=100-", 100), ("bytes=100-200", 100), ("bytes=-0", 100),
                                          ("bytes=0-", 0), ("bytes=-3", 0)])
def test_a_range_past_the_end_is_a_416(header, size):
    with pytest.raises(RangeNotSatisfiable) as caught:
        byte_range(header, size)
    error = caught.value
    assert error.status_code == 416 and error.code == "range_not_satisfiable"
    assert error.response_headers()["Content-Range"] == f"bytes */{size}"


@pytest.mark.parametrize("sent, kept", [
    ("../../../../tmp/x", "x"), ("/etc/passwd", "passwd"), ("C:\\Users\\me\\a.wav", "a.wav"), ("..", "file"),
    ("", "file"), (None, "file"), ("dir/", "dir"), ("a\nb\r\x00c.jsonl", "abc.jsonl"),
    ("\u202egnp.exe", "gnp.exe"), ("zero\u200bwidth.wav", "zerowidth.wav"),
    ('my "notes": 1?.jsonl', "my _notes__ 1_.jsonl"),
    (" .env. ", "env"), ("r\u00e9sum\u00e9.wav", "r\u00e9sum\u00e9.wav"), ("tab\there.wav", "tabhere.wav"),
    ("no\u00a0break.wav", "no break.wav"),
])
def test_an_uploads_name_is_cleaned(sent, kept):
    assert clean_filename(sent) == kept


def test_a_long_name_keeps_its_extension_and_whole_characters():
    for stem in ("x" * 400, "\u00e9" * 300, "\u6587" * 200):
        name = clean_filename(stem + ".jsonl")
        assert name.endswith(".jsonl") and len(name.encode()) <= MAX_BYTES and name[0] == stem[0]
        name.encode().decode()  # valid UTF-8: no character cut in half


def test_content_disposition_has_an_ascii_name_and_the_real_one():
    assert content_disposition("a.wav") == 'attachment; filename="a.wav"'
    header = content_disposition("r\u00e9sum\u00e9 100%.wav")
    assert header == "attachment; filename=\"r_sum_ 100_.wav\"; filename*=UTF-8''r%C3%A9sum%C3%A9%20100%25.wav"
