"""Files to download: over HTTP(S) (URLs, the Hugging Face Hub, Google Cloud Storage) and from S3.

Credentials come from the usual places and never appear in a message or a log line: ``HF_TOKEN`` (through
huggingface_hub) for the Hub, boto3's chain (``AWS_ACCESS_KEY_ID``, profiles, IRSA; ``AWS_ENDPOINT_URL`` or
``AWS_ENDPOINT_URL_S3`` for MinIO and other S3-compatible stores) for ``s3://``, ``GOOGLE_OAUTH_ACCESS_TOKEN``
(or google-auth's default credentials when installed) for ``gs://``; ``STORAGE_EMULATOR_HOST`` points ``gs://``
at another endpoint. A ``https://`` URL's user info and query string (a presigned URL's signature) are left
out of every label.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from urllib.parse import quote, urlsplit

import httpx

from services.core.runtime.weights import WeightsError
from services.weights.download import CHUNK, RemoteStat, TransientError
from services.weights.labels import redact

TIMEOUT = httpx.Timeout(30.0, read=60.0)


class RemoteNotFound(WeightsError):
    default_code = "weights_not_found"


class RemoteDenied(WeightsError):
    default_code = "weights_access_denied"


@dataclass
class HttpRemote:
    """A file behind an HTTP(S) URL; ``Range`` for the rest of a stopped download, ``If-Range`` its ETag."""

    url: str
    headers: dict[str, str] = field(default_factory=dict)
    label: str = ""
    hint: str = ""  # what to do about a 401/403, e.g. "set HF_TOKEN"
    # An immutable file whose size is known already (a Hub file at a commit): no HEAD; a partial download of it
    # stays valid, so it resumes without an ETag (the digest checks the whole at the end).
    immutable_size: int | None = None

    def __post_init__(self) -> None:
        self.label = self.label or redact(self.url)

    def _client(self) -> httpx.Client:
        return httpx.Client(follow_redirects=True, timeout=TIMEOUT, headers=self.headers)

    def stat(self) -> RemoteStat:
        if self.immutable_size is not None:
            return RemoteStat(self.immutable_size, None)
        try:
            with self._client() as client:
                response = client.head(self.url)
        except httpx.HTTPError as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}") from None
        self._check(response)
        length = response.headers.get("content-length")
        # the Hub answers a HEAD of a file with the linked (LFS) size and ETag before its redirect
        size = response.headers.get("x-linked-size") or length
        etag = response.headers.get("x-linked-etag") or response.headers.get("etag")
        return RemoteStat(int(size) if size and size.isdigit() else None, etag)

    def read(self, offset: int, etag: str | None) -> tuple[int, Iterator[bytes]]:
        headers = {"Range": f"bytes={offset}-"} if offset else {}
        if offset and etag and not etag.startswith("W/"):
            headers["If-Range"] = etag
        client = self._client()
        try:
            response = client.send(client.build_request("GET", self.url, headers=headers), stream=True)
        except httpx.HTTPError as exc:
            client.close()
            raise TransientError(f"{type(exc).__name__}: {exc}") from None
        if response.status_code == 416 and offset:  # nothing left to send: the earlier attempt had it all
            response.close()
            client.close()
            return offset, iter(())
        try:
            self._check(response)
        except BaseException:
            response.close()
            client.close()
            raise
        start = offset if response.status_code == 206 else 0
        return start, self._chunks(client, response)

    def _chunks(self, client: httpx.Client, response: httpx.Response) -> Iterator[bytes]:
        try:
            yield from response.iter_raw()  # as it arrives: a cut loses none of what came
        except httpx.HTTPError as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}") from None
        finally:
            response.close()
            client.close()

    def _check(self, response: httpx.Response) -> None:
        status = response.status_code
        if status < 400:
            return
        if status in (401, 403):
            raise RemoteDenied(f"{self.label}: {status} {response.reason_phrase}" + (f" ({self.hint})" if self.hint
                                                                                      else ""))
        if status == 404:
            raise RemoteNotFound(f"{self.label}: 404 not found")
        if status in (408, 429) or status >= 500:
            raise TransientError(f"{status} {response.reason_phrase}")
        raise WeightsError(f"{self.label}: {status} {response.reason_phrase}")


@dataclass
class S3Remote:
    """An object of an S3-compatible store, read with boto3 (``Range`` and ``IfMatch`` for a resumed read)."""

    bucket: str
    key: str
    label: str = ""

    def __post_init__(self) -> None:
        self.label = self.label or f"s3://{self.bucket}/{self.key}"
        import boto3

        self._s3 = boto3.client("s3", endpoint_url=os.environ.get("AWS_ENDPOINT_URL_S3")
                                or os.environ.get("AWS_ENDPOINT_URL") or None)

    def stat(self) -> RemoteStat:
        head = self._call(self._s3.head_object, Bucket=self.bucket, Key=self.key)
        return RemoteStat(int(head["ContentLength"]), head.get("ETag"))

    def read(self, offset: int, etag: str | None) -> tuple[int, Iterator[bytes]]:
        kwargs = {"Bucket": self.bucket, "Key": self.key}
        if offset:
            kwargs["Range"] = f"bytes={offset}-"
            if etag:
                kwargs["IfMatch"] = etag
        try:
            answer = self._call(self._s3.get_object, **kwargs)
        except RemoteChanged:
            return self.read(0, None)
        start = offset if answer.get("ContentRange") else 0
        return start, self._chunks(answer["Body"])

    @staticmethod
    def _chunks(body) -> Iterator[bytes]:
        from botocore.exceptions import BotoCoreError

        try:
            yield from body.iter_chunks(CHUNK)
        except (BotoCoreError, OSError) as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}") from None
        finally:
            body.close()

    def _call(self, method, **kwargs):
        from botocore.exceptions import BotoCoreError, ClientError, NoCredentialsError

        try:
            return method(**kwargs)
        except NoCredentialsError:
            raise RemoteDenied(f"{self.label}: no AWS credentials (set AWS_ACCESS_KEY_ID and "
                               "AWS_SECRET_ACCESS_KEY, a profile, or a pod identity)") from None
        except ClientError as exc:
            code = str(exc.response.get("Error", {}).get("Code", ""))
            status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
            if code in ("PreconditionFailed",) or status == 412:
                raise RemoteChanged() from None
            if code in ("404", "NoSuchKey", "NoSuchBucket", "NotFound"):
                raise RemoteNotFound(f"{self.label}: not found ({code})") from None
            if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch") or status == 403:
                raise RemoteDenied(f"{self.label}: access denied ({code}): check the AWS credentials") from None
            if status >= 500 or code in ("SlowDown", "RequestTimeout"):
                raise TransientError(f"{code} ({status})") from None
            raise WeightsError(f"{self.label}: {code} ({status})") from None
        except BotoCoreError as exc:
            raise TransientError(f"{type(exc).__name__}: {exc}") from None


class RemoteChanged(Exception):
    """The object changed since the partial download began (its ETag): start again."""


def gcs_remote(url: str) -> HttpRemote:
    """A ``gs://bucket/object`` through Cloud Storage's download endpoint (``STORAGE_EMULATOR_HOST`` for another
    one), with a bearer token when one is configured."""
    parts = urlsplit(url)
    bucket, name = parts.netloc, parts.path.lstrip("/")
    if not bucket or not name:
        raise WeightsError(f"{url}: a gs:// URL needs a bucket and an object name")
    base = os.environ.get("STORAGE_EMULATOR_HOST", "https://storage.googleapis.com").rstrip("/")
    if "://" not in base:
        base = "http://" + base
    target = f"{base}/download/storage/v1/b/{quote(bucket, safe='')}/o/{quote(name, safe='')}?alt=media"
    headers = {}
    token = os.environ.get("GOOGLE_OAUTH_ACCESS_TOKEN") or _google_default_token()
    if token:
        headers["Authorization"] = f"Bearer {token}"
    return HttpRemote(target, headers, label=f"gs://{bucket}/{name}",
                      hint="set GOOGLE_OAUTH_ACCESS_TOKEN or Application Default Credentials")


def _google_default_token() -> str | None:
    try:
        import google.auth  # type: ignore[import-not-found]
        import google.auth.transport.requests  # type: ignore[import-not-found]
    except ImportError:
        return None
    try:
        credentials, _ = google.auth.default(scopes=["https://www.googleapis.com/auth/devstorage.read_only"])
        credentials.refresh(google.auth.transport.requests.Request())
        return credentials.token
    except Exception:  # noqa: BLE001 - no default credentials: public objects still work
        return None


def url_remote(url: str) -> HttpRemote | S3Remote:
    """The remote of a ``source.url``."""
    scheme = urlsplit(url).scheme
    if scheme in ("http", "https"):
        return HttpRemote(url)
    if scheme == "s3":
        parts = urlsplit(url)
        if not parts.netloc or not parts.path.strip("/"):
            raise WeightsError(f"{url}: an s3:// URL needs a bucket and a key")
        return S3Remote(parts.netloc, parts.path.lstrip("/"))
    if scheme == "gs":
        return gcs_remote(url)
    raise WeightsError(f"{redact(url)}: unsupported URL scheme '{scheme}' (https, s3 or gs)")
