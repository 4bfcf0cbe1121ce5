"""Files API downloads through a real ``harmony serve`` (no models: the Files API needs none), its files in a directory
and in an S3 bucket (moto's server): a 200 MB file goes in and comes out while the server's resident memory grows
by less than 20 MB, one Range is served as a 206 and one past the end is a 416 in OpenAI's shape, and an upload
named like a path is kept and echoed under its base name only."""

from __future__ import annotations

import hashlib
import threading
import time

import httpx
import psutil
import pytest
import yaml

from tests.harmony_process import HarmonyProcess

SIZE = 200 * 1000 * 1000
MAX_GROWTH = 20 * 1024 * 1024
ACCENTED = "r\u00e9sum\u00e9\x01\x1b[31m\u202e.jsonl"  # controls and a bidi override, sent raw (below)
BLOCK = hashlib.shake_256(b"harmony downloads").digest(1 << 20)


@pytest.fixture(scope="module")
def big_file(tmp_path_factory):
    path = tmp_path_factory.mktemp("big") / "big.bin"
    digest = hashlib.sha256()
    with path.open("wb") as out:
        for n in range(0, SIZE, len(BLOCK)):
            block = BLOCK[:SIZE - n]
            out.write(block)
            digest.update(block)
    return path, digest.hexdigest()


@pytest.fixture(params=["directory", "s3"])
def engine(request, tmp_path):
    config = {"models": [], "routes": [], "data_dir": str(tmp_path / "data"), "audit": {"sink": "none"}}
    if request.param == "s3":
        server = request.getfixturevalue("s3_server")  # its credentials are in this process's environment
        config["object_store"] = {"url": f"s3://{server.new_bucket()}/harmony", "endpoint_url": server.endpoint_url,
                                  "region": "us-east-1"}
    path = tmp_path / "serve.yaml"
    path.write_text(yaml.safe_dump(config))
    process = HarmonyProcess(config=str(path)).start()
    yield process
    assert process.stop() == 0, process.output()


class PeakRss:
    """The highest resident memory of a process while the block runs, sampled every 2 ms."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = self.start = self.process.memory_info().rss
        self._done = threading.Event()
        self._thread = threading.Thread(target=self._sample, daemon=True)

    def _sample(self) -> None:
        while not self._done.wait(0.002):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._done.set()
        self._thread.join()
        self.peak = max(self.peak, self.process.memory_info().rss)


def test_a_200_mb_download_streams(engine, big_file):
    path, sha256 = big_file
    with httpx.Client(base_url=engine.url, timeout=300) as client:
        with path.open("rb") as source:
            made = client.post("/v1/files", data={"purpose": "user_data"}, files={"file": ("big.bin", source)})
        assert made.status_code == 200, made.text
        file_id = made.json()["id"]
        assert made.json()["bytes"] == SIZE
        part = client.get(f"/v1/files/{file_id}/content", headers={"Range": "bytes=1048570-1048585"})
        assert part.status_code == 206 and part.content == (BLOCK * 2)[1048570:1048586]
        assert part.headers["content-range"] == f"bytes 1048570-1048585/{SIZE}"
        time.sleep(1.5)  # the engine trims freed memory every second (services/core/runtime/memory.py): a settled start
        digest, received = hashlib.sha256(), 0
        with PeakRss(engine.proc.pid) as rss:
            with client.stream("GET", f"/v1/files/{file_id}/content") as response:
                assert response.status_code == 200 and response.headers["content-length"] == str(SIZE)
                assert response.headers["accept-ranges"] == "bytes"
                for chunk in response.iter_bytes():
                    digest.update(chunk)
                    received += len(chunk)
    assert received == SIZE and digest.hexdigest() == sha256
    growth = rss.peak - rss.start
    assert growth < MAX_GROWTH, f"RSS grew by {growth / 2**20:.1f} MiB (from {rss.start / 2**20:.0f} MiB)"


def raw_upload(client: httpx.Client, filename: str, data: bytes) -> httpx.Response:
    """A multipart upload whose file name goes as it is, in UTF-8 (httpx would percent-encode its controls)."""
    boundary = "harmony-boundary"
    body = (f'--{boundary}\r\nContent-Disposition: form-data; name="purpose"\r\n\r\nuser_data\r\n'
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="{filename}"\r\n'
            "Content-Type: application/octet-stream\r\n\r\n").encode() + data + f"\r\n--{boundary}--\r\n".encode()
    return client.post("/v1/files", content=body, headers={"Content-Type": f"multipart/form-data; boundary={boundary}"})


def test_ranges_and_names(engine):
    data = bytes(range(256)) * 40
    with httpx.Client(base_url=engine.url, timeout=60) as client:
        made = {}
        for name in ("../../../../tmp/x", "/etc/passwd", ACCENTED):
            answer = raw_upload(client, name, data)
            assert answer.status_code == 200, answer.text
            made[name] = answer.json()
        assert [m["filename"] for m in made.values()] == ["x", "passwd", "r\u00e9sum\u00e9[31m.jsonl"]
        listed = {f["id"]: f["filename"] for f in client.get("/v1/files").json()["data"]}
        retrieved = {m["id"]: client.get(f"/v1/files/{m['id']}").json()["filename"] for m in made.values()}
        assert listed == retrieved == {m["id"]: m["filename"] for m in made.values()}
        url = f"/v1/files/{made['/etc/passwd']['id']}/content"
        whole = client.get(url)
        assert whole.status_code == 200 and whole.content == data
        assert whole.headers["content-disposition"] == 'attachment; filename="passwd"'
        named = client.get(f"/v1/files/{made[ACCENTED]['id']}/content")
        assert named.headers["content-disposition"].endswith("filename*=UTF-8''r%C3%A9sum%C3%A9%5B31m.jsonl")
        assert named.headers["content-type"].startswith("application/jsonl")
        for header, expected in (("bytes=0-9", data[:10]), ("bytes=-7", data[-7:]), ("bytes=10200-", data[10200:])):
            part = client.get(url, headers={"Range": header})
            assert part.status_code == 206 and part.content == expected, header
        assert client.get(url, headers={"Range": "bytes=0-1,5-6"}).content == data  # several ranges: all of it
        past = client.get(url, headers={"Range": f"bytes={len(data)}-"})
        assert past.status_code == 416 and past.headers["content-range"] == f"bytes */{len(data)}"
        assert past.json()["error"]["code"] == "range_not_satisfiable"
        assert past.json()["error"]["type"] == "invalid_request_error"
