"""An OCI image or artifact (a "modelcar") pulled outside Kubernetes with oras-py, the ORAS Python client.

On Kubernetes the operator mounts the image as an image volume and the model service reads it as a path, so
nothing is pulled there. Elsewhere ``pull`` asks the registry (the OCI distribution API, through oras-py's
``Registry``: its sessions, its answer to a registry's login challenge, its reading of the Docker config) for the
reference's manifest (of an image index, the linux/amd64 manifest, else the first), then streams each blob to disk,
checking its SHA-256 and size against the manifest's descriptor as it arrives. The files are laid out so:

- an ORAS artifact (``oras push``: layers annotated ``org.opencontainers.image.title``): each titled layer is a
  file of that name, or a folder when it is annotated ``io.deis.oras.content.unpack: true`` (a tar, unpacked);
  layers without a title are left out, as ``oras pull`` does;
- a container image (layers ``application/vnd.oci.image.layer.v1.tar``, ``...tar+gzip`` or Docker's
  ``rootfs.diff.tar(.gzip)``): the layers applied in order as a file system (whiteouts delete), then the weights
  are its ``/models`` folder (KServe's modelcar convention), else every file outside the system folders
  ``SYSTEM_DIRS``. Links and devices are not written; one where the weights are taken from is refused.

Credentials are oras-py's: the Docker config (``$DOCKER_CONFIG/config.json``, else ``~/.docker/config.json``:
``auths``, ``credsStore``, ``credHelpers``), or ``HARMONY_OCI_USERNAME`` and ``HARMONY_OCI_PASSWORD``; they never
appear in a message. Plain HTTP is used for ``localhost``, ``127.0.0.1`` and ``::1`` registries, and for every
registry when ``HARMONY_OCI_INSECURE=1``; HTTPS otherwise.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Callable
from http.cookiejar import DefaultCookiePolicy
from pathlib import Path

import oras.container
import oras.provider
import requests

from services.core.runtime.weights import WeightsError
from services.weights import archives

TITLE = "org.opencontainers.image.title"
UNPACK = "io.deis.oras.content.unpack"
INDEX_TYPES = ("application/vnd.oci.image.index.v1+json", "application/vnd.docker.distribution.manifest.list.v2+json")
MANIFEST_TYPES = ("application/vnd.oci.image.manifest.v1+json",
                  "application/vnd.docker.distribution.manifest.v2+json")
IMAGE_LAYER_TYPES = ("application/vnd.oci.image.layer.v1.tar", "application/vnd.oci.image.layer.v1.tar+gzip",
                     "application/vnd.docker.image.rootfs.diff.tar",
                     "application/vnd.docker.image.rootfs.diff.tar.gzip")
# an image without /models: its files outside these folders are the weights
SYSTEM_DIRS = frozenset({"bin", "boot", "dev", "etc", "lib", "lib32", "lib64", "libx32", "proc", "run", "sbin", "sys",
                         "tmp", "usr", "var"})
MODELS = "models"
MANIFEST_LIMIT = 4 << 20
TIMEOUT_S = (30, 300)  # connect, and between two reads
ATTEMPTS = 3  # tries of one blob, resumed with a range when the registry allows
CHUNK = 1 << 20
LOCAL_HOSTS = ("localhost", "127.0.0.1", "::1", "[::1]")

Progress = Callable[[int], None]


class OciUnreachable(WeightsError):
    default_code = "weights_unreachable"


class OciUnauthorized(WeightsError):
    default_code = "weights_unauthorized"


class OciNotFound(WeightsError):
    default_code = "weights_not_found"


def pull(reference: str, target: Path, *, on_total: Callable[[int, int], None] | None = None,
         on_bytes: Progress | None = None) -> tuple[Path, list[str]]:
    """The folder of the weights of the image or artifact ``reference`` pulled into the empty folder ``target``,
    and their relative paths. ``on_total(bytes, blobs)`` is told what will be downloaded, ``on_bytes(n)`` each
    chunk (a negative ``n`` when a blob starts over)."""
    label = f"oci://{reference}"
    ref = _parse(reference, label)
    client = _client(ref, label)
    manifest = _manifest(client, ref, label)
    layers = manifest.get("layers") or []
    titled = [layer for layer in layers if (layer.get("annotations") or {}).get(TITLE)]
    chosen = titled or layers
    if not chosen:
        raise WeightsError(f"{label}: the manifest has no layers, so no files")
    if on_total:
        on_total(sum(int(layer.get("size") or 0) for layer in chosen), len(chosen))
    blobs = target / ".blobs"
    blobs.mkdir(parents=True, exist_ok=True)
    if titled:
        root = _artifact(client, ref, titled, target / "files", blobs, label, on_bytes)
    else:
        root = _image(client, ref, layers, target / "rootfs", blobs, label, on_bytes)
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    if not files:
        raise WeightsError(f"{label} holds no files")
    return root, files


# the registry

def _parse(reference: str, label: str) -> oras.container.Container:
    name = reference.removeprefix("oci://")
    host = name.split("/", 1)[0]
    if "/" not in name or not ("." in host or ":" in host):
        raise WeightsError(f"{label}: the reference names no registry (write registry.example.com/repository:tag; "
                           "Docker Hub is registry-1.docker.io/library/name:tag)")
    try:
        return oras.container.Container(name)
    except ValueError as exc:
        raise WeightsError(f"{label}: not an OCI reference ({exc})") from None


def _insecure(registry: str) -> bool:
    """Plain HTTP for a loopback registry, or for any when HARMONY_OCI_INSECURE=1."""
    if registry.startswith("["):
        host = registry[:registry.find("]") + 1]
    else:
        host = registry.split(":", 1)[0]
    flag = os.environ.get("HARMONY_OCI_INSECURE", "").strip().lower() in ("1", "true", "yes", "on")
    return flag or host in LOCAL_HOSTS


class _Session(requests.Session):
    """A session whose requests time out (oras-py sets none)."""

    def request(self, method, url, **kwargs):  # type: ignore[override]
        kwargs.setdefault("timeout", TIMEOUT_S)
        return super().request(method, url, **kwargs)


_ORAS_REQUEST = oras.provider.Registry.do_request.__wrapped__  # type: ignore[attr-defined]


class _Client(oras.provider.Registry):
    """oras-py's registry client, each request made once: its own retry decorator tries five times, 3 to 83 s
    apart, even when a login is refused; here a refusal is an error at once and a blob is retried by ``pull``."""

    def __init__(self, insecure: bool, auth_backend: str, label: str) -> None:
        super().__init__(insecure=insecure, auth_backend=auth_backend)
        session = _Session()
        session.cookies.set_policy(DefaultCookiePolicy(allowed_domains=[]))
        self.session = self.auth.session = session
        self.label = label

    def do_request(self, url, method="GET", data=None, headers=None, json=None, stream=False):  # type: ignore[override]
        try:
            return _ORAS_REQUEST(self, url, method, data, headers, json, stream)
        except requests.RequestException as exc:
            raise OciUnreachable(f"{self.label}: cannot reach the registry ({type(exc).__name__}: "
                                 f"{_short(exc)})") from None
        except ValueError:  # oras-py: "Cannot respond to request for authentication."
            raise _unauthorized(self.label, "the registry's login challenge could not be answered") from None


def _short(exc: Exception) -> str:
    text = str(exc)
    return text if len(text) <= 200 else text[:200] + "..."


def _unauthorized(label: str, why: str) -> OciUnauthorized:
    registry = label.removeprefix("oci://").split("/", 1)[0]
    return OciUnauthorized(f"{label}: unauthorized: {why}; log in with `docker login {registry}` (the Docker config, "
                           "$DOCKER_CONFIG) or set HARMONY_OCI_USERNAME and HARMONY_OCI_PASSWORD")


def _client(ref: oras.container.Container, label: str) -> _Client:
    insecure = _insecure(ref.registry)
    scheme = "http" if insecure else "https"
    try:  # which login the registry asks for (Basic, or Bearer tokens), and whether it answers at all
        with _Session() as session:
            ping = session.get(f"{scheme}://{ref.registry}/v2/")
    except requests.RequestException as exc:
        raise OciUnreachable(f"{label}: cannot reach the registry {scheme}://{ref.registry} "
                             f"({type(exc).__name__}: {_short(exc)})") from None
    challenge = ping.headers.get("Www-Authenticate", "")
    backend = "basic" if challenge.lower().startswith("basic") else "token"
    client = _Client(insecure, backend, label)
    configs = []
    if os.environ.get("DOCKER_CONFIG"):
        config = Path(os.environ["DOCKER_CONFIG"]) / "config.json"
        if config.is_file():
            configs.append(str(config))
    client.auth.load_configs(ref, configs=configs or None)
    user, password = os.environ.get("HARMONY_OCI_USERNAME"), os.environ.get("HARMONY_OCI_PASSWORD")
    if user and password:
        client.auth.set_basic_auth(user, password)
    if ping.status_code == 401 and backend == "basic" and not getattr(client.auth, "_basic_auth", None):
        raise _unauthorized(label, f"{ref.registry} asks for a login and none is configured for it")
    return client


def _check(response: requests.Response, label: str, what: str) -> None:
    if response.status_code in (200, 206):
        return
    codes, messages = [], []
    try:
        for error in response.json().get("errors") or []:
            codes.append(str(error.get("code", "")))
            messages.append(str(error.get("message", "")))
    except (ValueError, AttributeError):
        pass
    detail = "; ".join(m for m in messages if m) or response.reason
    if response.status_code in (401, 403):
        raise _unauthorized(label, f"the registry answered {response.status_code} for {what} ({detail})")
    if response.status_code == 404:
        if "NAME_UNKNOWN" in codes:
            raise OciNotFound(f"{label}: the registry has no repository of that name ({detail})")
        raise OciNotFound(f"{label}: {what} is not in the registry ({detail})")
    raise WeightsError(f"{label}: the registry answered {response.status_code} for {what} ({detail})")


def _manifest(client: _Client, ref: oras.container.Container, label: str) -> dict:
    """The image manifest of ``ref``: of an index, the linux/amd64 entry's, else the first."""
    wanted = ref.digest or ref.tag
    document = _get_manifest(client, ref, wanted, label, f"the tag or digest '{wanted}' of {ref.api_prefix}")
    if document.get("mediaType") in INDEX_TYPES or ("manifests" in document and "layers" not in document):
        entries = document.get("manifests") or []
        if not entries:
            raise WeightsError(f"{label}: the image index lists no manifests")
        pick = next((e for e in entries if (e.get("platform") or {}).get("os") == "linux"
                     and (e.get("platform") or {}).get("architecture") == "amd64"), entries[0])
        document = _get_manifest(client, ref, pick["digest"], label, f"the index's manifest {pick['digest']}")
    media = document.get("mediaType")
    if media and media not in MANIFEST_TYPES:
        raise WeightsError(f"{label}: a manifest of type {media} is not an image or artifact manifest")
    return document


def _get_manifest(client: _Client, ref: oras.container.Container, wanted: str, label: str, what: str) -> dict:
    accept = ", ".join((*MANIFEST_TYPES, *INDEX_TYPES))
    response = client.do_request(f"{client.prefix}://{ref.manifest_url(wanted)}", "GET", headers={"Accept": accept})
    _check(response, label, what)
    body = response.content
    if len(body) > MANIFEST_LIMIT:
        raise WeightsError(f"{label}: {what} is a manifest of {len(body):,} bytes (over {MANIFEST_LIMIT:,})")
    if wanted.startswith("sha256:"):
        actual = "sha256:" + hashlib.sha256(body).hexdigest()
        if actual != wanted:
            raise WeightsError(f"{label}: the manifest {wanted} arrived with digest {actual}: refused")
    try:
        document = json.loads(body)
    except ValueError:
        raise WeightsError(f"{label}: {what} is not a JSON manifest") from None
    if not isinstance(document, dict):
        raise WeightsError(f"{label}: {what} is not a JSON manifest")
    return document


def _download(client: _Client, ref: oras.container.Container, layer: dict, dest: Path, label: str,
              on_bytes: Progress | None) -> Path:
    """The blob of ``layer`` streamed into ``dest``, its SHA-256 and size checked against the descriptor."""
    digest, size = str(layer.get("digest", "")), layer.get("size")
    algorithm, _, expected = digest.partition(":")
    if algorithm != "sha256" or len(expected) != 64:
        raise WeightsError(f"{label}: layer digest '{digest}' is not a sha256 digest (the only kind pulled here)")
    url = f"{client.prefix}://{ref.get_blob_url(digest)}"
    done, hasher = 0, hashlib.sha256()
    tell = on_bytes or (lambda n: None)
    with open(dest, "wb") as out:
        for attempt in range(1, ATTEMPTS + 1):
            try:
                headers = {"Range": f"bytes={done}-"} if done else {}
                with client.do_request(url, "GET", headers=headers, stream=True) as response:
                    _check(response, label, f"the blob {digest}")
                    if done and response.status_code != 206:  # no range: start over
                        out.seek(0)
                        out.truncate()
                        tell(-done)
                        done, hasher = 0, hashlib.sha256()
                    for chunk in response.iter_content(CHUNK):
                        out.write(chunk)
                        hasher.update(chunk)
                        done += len(chunk)
                        tell(len(chunk))
                        if size is not None and done > int(size):
                            raise WeightsError(f"{label}: the blob {digest} is larger than its {int(size):,} bytes")
                break
            except (OciUnreachable, requests.RequestException) as exc:
                if attempt == ATTEMPTS:
                    raise OciUnreachable(f"{label}: the blob {digest} failed after {ATTEMPTS} tries "
                                         f"({type(exc).__name__}: {_short(exc)})") from None
    if size is not None and done != int(size):
        raise WeightsError(f"{label}: the blob {digest} has {done:,} bytes, but its descriptor says {int(size):,}")
    actual = "sha256:" + hasher.hexdigest()
    if actual != digest:
        raise WeightsError(f"{label}: the blob {digest} arrived with SHA-256 {actual}: refused (a corrupt download "
                           "or a registry that serves the wrong content)")
    return dest


# the layouts

def _artifact(client: _Client, ref: oras.container.Container, layers: list[dict], root: Path, blobs: Path,
              label: str, on_bytes: Progress | None) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    for number, layer in enumerate(layers):
        title = archives.safe_name(layer["annotations"][TITLE], label)
        dest = root / title
        if dest.exists():
            raise WeightsError(f"{label}: two layers are titled '{title}'")
        dest.parent.mkdir(parents=True, exist_ok=True)
        blob = _download(client, ref, layer, blobs / f"{number}.blob", label, on_bytes)
        if str(layer["annotations"].get(UNPACK, "")).lower() == "true":
            unpacked = blobs / f"{number}.d"
            unpacked.mkdir()
            archives.unpack(blob, unpacked, f"{label} ({title})")
            os.replace(unpacked, dest)
            blob.unlink()
        else:
            os.replace(blob, dest)
    return root


def _image(client: _Client, ref: oras.container.Container, layers: list[dict], rootfs: Path, blobs: Path,
           label: str, on_bytes: Progress | None) -> Path:
    for layer in layers:
        media = layer.get("mediaType", "")
        if media not in IMAGE_LAYER_TYPES:
            raise WeightsError(f"{label}: layer {layer.get('digest')} has media type '{media}': neither a file of an "
                               f"artifact (no {TITLE} annotation) nor an image layer ({', '.join(IMAGE_LAYER_TYPES)})")
    rootfs.mkdir(parents=True, exist_ok=True)
    links: list[str] = []
    for number, layer in enumerate(layers):
        blob = _download(client, ref, layer, blobs / f"{number}.layer", label, on_bytes)
        links += archives.apply_layer(blob, rootfs, f"{label} (layer {layer['digest']})", skip=SYSTEM_DIRS)
        blob.unlink()
    models = rootfs / MODELS
    root = models if models.is_dir() else rootfs
    taken = [name for name in links if root == rootfs or name.startswith(MODELS + "/")]
    if taken:
        raise WeightsError(f"{label}: the image's weights hold links or devices, which are not pulled: "
                           f"{', '.join(taken[:10])}")
    shutil.rmtree(blobs, ignore_errors=True)
    return root
