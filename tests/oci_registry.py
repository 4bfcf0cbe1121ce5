"""A real OCI registry on loopback: the CNCF distribution registry 2.8 (Debian's ``docker-registry``).

``oci_registry_running()`` starts ``docker-registry serve`` on a free 127.0.0.1 port with a filesystem storage
root, and a second one that asks for a login (htpasswd, Basic: ``SECURED_USER``/``SECURED_PASSWORD``), and
yields an ``OciRegistry`` for each. Content goes in with the real oras-py client: ``push_artifact`` (``oras
push``: a file per layer, titled) and ``push_image`` (an image: tar layers, a config, a manifest; optionally under
an image index with another platform's manifest first). Every request the registry answers is in its access log:
``mark()`` and ``requests_since(mark)`` count them.

When ``docker-registry`` is missing it is installed with apt (tests/debian.py), as the browser tests' chromium.
``python -m tests.oci_registry`` serves one until ^C.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import json
import os
import shutil
import subprocess
import tarfile
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from tests import debian
from tests.servers import free_port, stop_process

PACKAGE = "docker-registry"
NAMES = ("docker-registry", "registry")
START_TIMEOUT_S = 30
SECURED_USER = "harmony"
SECURED_PASSWORD = "modelcar-secret"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
LAYER_TAR = "application/vnd.oci.image.layer.v1.tar"
LAYER_TGZ = "application/vnd.oci.image.layer.v1.tar+gzip"


class RegistryUnavailable(debian.PackageUnavailable):
    """No docker-registry on PATH and none could be installed."""


def registry_path() -> str:
    """The distribution registry's executable: on PATH, else Debian's docker-registry, installed now."""
    return debian.ensure_package(NAMES, PACKAGE, what="The OCI registry (docker-registry)", error=RegistryUnavailable)


@dataclass(frozen=True)
class Symlink:
    """A symbolic link in an image layer."""

    target: str


@dataclass
class OciRegistry:
    host: str  # 127.0.0.1:PORT, as a reference names it
    log: Path  # the access log (the process's stdout)
    user: str | None = None
    password: str | None = None
    secured: OciRegistry | None = None  # the registry that asks for a login (on the open one)

    @property
    def url(self) -> str:
        return f"http://{self.host}"

    def _client(self):
        import oras.provider

        client = oras.provider.Registry(insecure=True, auth_backend="basic" if self.user else "token")
        if self.user:
            client.auth.set_basic_auth(self.user, self.password)
        return client

    # pushing

    def push_artifact(self, name: str, files: dict[str, bytes | Path], folders: dict[str, Path] | None = None) -> str:
        """Push ``files`` (title -> bytes or a file) and ``folders`` (title -> a folder, as a tar.gz annotated to be
        unpacked, as ``oras push dir/`` does) as an ORAS artifact to ``name`` (``repo:tag``) with oras-py's
        ``push``; the reference."""
        reference = f"{self.host}/{name}"
        with tempfile.TemporaryDirectory(prefix="oci-push-") as tmp:
            paths, annotations = [], {}
            for title, content in files.items():
                path = Path(tmp, "files", title)
                path.parent.mkdir(parents=True, exist_ok=True)
                if isinstance(content, Path):
                    os.link(content, path) if _same_device(content, path.parent) else shutil.copy(content, path)
                else:
                    path.write_bytes(content)
                paths.append(str(path))
            for title, folder in (folders or {}).items():
                path = Path(tmp, "folders", title)
                path.parent.mkdir(parents=True, exist_ok=True)
                with tarfile.open(path, "w:gz", compresslevel=1) as tar:
                    tar.add(folder, arcname=title)
                paths.append(f"{path}:{LAYER_TGZ}")
                annotations[str(path)] = {"io.deis.oras.content.unpack": "true"}
            annotation_file = Path(tmp, "annotations.json")
            annotation_file.write_text(json.dumps(annotations))
            response = self._client().push(target=reference, files=paths, disable_path_validation=True,
                                           annotation_file=str(annotation_file), quiet=True,
                                           do_chunked=True)
            assert response.status_code == 201, response.text
        return reference

    def push_image(self, name: str, layers: list[dict[str, bytes | Path | Symlink | None]], *,
                   gzip_layers: bool = True, other_platform_first: dict[str, bytes] | None = None) -> str:
        """Push a container image to ``name`` (``repo:tag``): each layer a tar (gzipped unless ``gzip_layers`` is
        False) of path -> bytes, a file, a Symlink, or None (a whiteout: the path is deleted), with its config and
        manifest, through oras-py's blob uploads; given ``other_platform_first``, the tag is an image index whose
        first entry is a linux/arm64 image of those files and whose second is this one (linux/amd64). The
        reference."""
        reference = f"{self.host}/{name}"
        client = self._client()
        container = client.get_container(reference)
        with tempfile.TemporaryDirectory(prefix="oci-push-") as tmp:
            manifest = self._image_manifest(client, container, Path(tmp), layers, gzip_layers, "amd64")
            if other_platform_first is None:
                self._put_manifest(client, container, container.tag, OCI_MANIFEST, manifest)
                return reference
            other = self._image_manifest(client, container, Path(tmp), [other_platform_first], gzip_layers, "arm64")
            entries = []
            for arch, document in (("arm64", other), ("amd64", manifest)):
                body = json.dumps(document).encode()
                digest = "sha256:" + hashlib.sha256(body).hexdigest()
                self._put_manifest(client, container, digest, OCI_MANIFEST, document)
                entries.append({"mediaType": OCI_MANIFEST, "digest": digest, "size": len(body),
                                "platform": {"os": "linux", "architecture": arch}})
            index = {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}
            self._put_manifest(client, container, container.tag, OCI_INDEX, index)
        return reference

    def _image_manifest(self, client, container, tmp: Path, layers, gzip_layers: bool, arch: str) -> dict:
        descriptors, diff_ids = [], []
        for number, members in enumerate(layers):
            raw = _layer_tar(members)
            diff_ids.append("sha256:" + hashlib.sha256(raw).hexdigest())
            blob = gzip.compress(raw, compresslevel=1, mtime=0) if gzip_layers else raw
            path = tmp / f"{arch}-layer-{number}"
            path.write_bytes(blob)
            descriptors.append(self._upload(client, container, path, LAYER_TGZ if gzip_layers else LAYER_TAR))
        config = {"architecture": arch, "os": "linux", "config": {},
                  "rootfs": {"type": "layers", "diff_ids": diff_ids}}
        config_path = tmp / f"{arch}-config.json"
        config_path.write_text(json.dumps(config))
        return {"schemaVersion": 2, "mediaType": OCI_MANIFEST,
                "config": self._upload(client, container, config_path, OCI_CONFIG), "layers": descriptors}

    @staticmethod
    def _upload(client, container, path: Path, media_type: str) -> dict:
        digest = "sha256:" + _sha256_file(path)
        descriptor = {"mediaType": media_type, "digest": digest, "size": path.stat().st_size}
        response = client.upload_blob(str(path), container, descriptor, do_chunked=True)
        assert response.status_code in (201, 202), response.text
        return descriptor

    @staticmethod
    def _put_manifest(client, container, tag: str, media_type: str, document: dict) -> None:
        url = f"{client.prefix}://{container.manifest_url(tag)}"
        response = client.do_request(url, "PUT", headers={"Content-Type": media_type},
                                     data=json.dumps(document).encode())
        assert response.status_code == 201, response.text

    # counting requests

    def mark(self) -> int:
        """A point in the access log: every request before this call is logged before it (a marker request is
        made and awaited in the log)."""
        token = uuid.uuid4().hex
        httpx.get(f"{self.url}/v2/?harmony-mark={token}", auth=self._auth())
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            text = self.log.read_text(errors="replace")
            at = text.find(token)
            if at >= 0:
                return text.index("\n", at) + 1
            time.sleep(0.02)
        raise AssertionError(f"the registry never logged the marker request {token}")

    def requests_since(self, mark: int) -> list[str]:
        """The requests logged after ``mark`` (the markers left out): 'METHOD /path STATUS' each."""
        end = self.mark()
        lines = self.log.read_text(errors="replace")[mark:end].splitlines()
        found = []
        for line in lines:
            if "harmony-mark=" in line or '"' not in line:
                continue
            request = line.split('"')[1]
            status = line.split('"')[2].split()[0]
            method, path = request.split()[:2]
            found.append(f"{method} {path} {status}")
        return found

    def _auth(self):
        return (self.user, self.password) if self.user else None


def _same_device(file: Path, folder: Path) -> bool:
    return file.stat().st_dev == folder.stat().st_dev


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def _layer_tar(members: dict[str, bytes | Path | Symlink | None]) -> bytes:
    """A layer's tar, folders first as image builders write them (``./``-relative names, as Docker's)."""
    out = io.BytesIO()
    with tarfile.open(fileobj=out, mode="w", format=tarfile.PAX_FORMAT) as tar:
        folders = sorted({str(Path(name).parent) for name in members} - {"."})
        for folder in sorted({p for f in folders for p in [*map(str, Path(f).parents), f]} - {"."}):
            info = tarfile.TarInfo(f"./{folder}/")
            info.type, info.mode = tarfile.DIRTYPE, 0o755
            tar.addfile(info)
        for name, content in members.items():
            path = Path(name)
            if content is None:
                info = tarfile.TarInfo(f"./{(path.parent / ('.wh.' + path.name)).as_posix()}")
                tar.addfile(info, io.BytesIO(b""))
            elif isinstance(content, Symlink):
                info = tarfile.TarInfo(f"./{name}")
                info.type, info.linkname = tarfile.SYMTYPE, content.target
                tar.addfile(info)
            else:
                data = content.read_bytes() if isinstance(content, Path) else content
                info = tarfile.TarInfo(f"./{name}")
                info.size, info.mode = len(data), 0o644
                tar.addfile(info, io.BytesIO(data))
    return out.getvalue()


def _config(root: Path, port: int, htpasswd: Path | None) -> Path:
    auth = (f"auth:\n  htpasswd:\n    realm: harmony-test\n    path: {htpasswd}\n" if htpasswd else "")
    config = root / "config.yml"
    config.write_text(
        "version: 0.1\n"
        "log:\n  level: warn\n  accesslog:\n    disabled: false\n"
        f"storage:\n  filesystem:\n    rootdirectory: {root / 'data'}\n  delete:\n    enabled: true\n"
        f"http:\n  addr: 127.0.0.1:{port}\n  secret: harmony-tests\n"
        + auth)
    return config


@contextlib.contextmanager
def _serve(executable: str, root: Path, htpasswd: Path | None) -> Iterator[tuple[str, Path]]:
    port = free_port()
    config = _config(root, port, htpasswd)
    log, errors = root / "access.log", root / "registry.log"
    with open(log, "wb") as out, open(errors, "wb") as err:
        process = subprocess.Popen([executable, "serve", str(config)], stdout=out, stderr=err,
                                   stdin=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + START_TIMEOUT_S
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"docker-registry exited ({process.returncode}): {errors.read_text()[-2000:]}")
            try:
                if httpx.get(f"http://127.0.0.1:{port}/v2/", timeout=2).status_code in (200, 401):
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline:
                raise RuntimeError(f"docker-registry did not answer /v2/ in {START_TIMEOUT_S} s: "
                                   f"{errors.read_text()[-2000:]}")
            time.sleep(0.05)
        yield f"127.0.0.1:{port}", log
    finally:
        stop_process(process)


@contextlib.contextmanager
def oci_registry_running(workdir: Path) -> Iterator[OciRegistry]:
    """An open registry (``.secured`` on the result: one that asks for SECURED_USER's login) under ``workdir``."""
    executable = registry_path()
    open_root, secured_root = workdir / "open", workdir / "secured"
    open_root.mkdir(parents=True, exist_ok=True)
    secured_root.mkdir(parents=True, exist_ok=True)
    htpasswd = secured_root / "htpasswd"
    with warnings.catch_warnings():  # glibc's (libxcrypt's) bcrypt: crypt is deprecated in 3.11, still there
        warnings.simplefilter("ignore", DeprecationWarning)
        import crypt

        hashed = crypt.crypt(SECURED_PASSWORD, crypt.mksalt(crypt.METHOD_BLOWFISH, rounds=1 << 4))
    assert hashed and hashed.startswith("$2"), "this libc's crypt() has no bcrypt for the registry's htpasswd"
    htpasswd.write_text(f"{SECURED_USER}:{hashed}\n")
    with _serve(executable, open_root, None) as (host, log), \
            _serve(executable, secured_root, htpasswd) as (secured_host, secured_log):
        yield OciRegistry(host, log, secured=OciRegistry(secured_host, secured_log, SECURED_USER, SECURED_PASSWORD))


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as folder, oci_registry_running(Path(folder)) as running:
        secured = running.secured
        assert secured is not None
        print(f"registry: {running.url}  (secured: {secured.url}, {SECURED_USER}/{SECURED_PASSWORD})")
        with contextlib.suppress(KeyboardInterrupt):
            while True:
                time.sleep(3600)
