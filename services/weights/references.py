"""A model named on the command line (``harmony serve --model``, ``harmony pull``) as a source and a name.

- ``Systran/faster-whisper-small``: a Hugging Face repository (``@revision`` pins a branch, tag or commit)
- ``rhasspy/piper-voices:en_US-lessac-medium``: one voice of a repository of many (its files only)
- ``https://...``, ``s3://...``, ``gs://...``: a file or an archive; ``oci://registry/image:tag``: a modelcar
- an existing local file or folder: its path
"""

from __future__ import annotations

import os
import posixpath
import re
from dataclasses import dataclass
from urllib.parse import urlsplit

from services.core.contracts.specs import HF_REPO_PATTERN, NAME_PATTERN, HubSource, ModelSource
from services.weights.archives import SUFFIXES
from services.weights.detect import piper_voice_files


class ReferenceError(ValueError):
    """A model reference that names nothing usable; the message says what would."""


@dataclass(frozen=True)
class ModelReference:
    source: ModelSource
    name: str           # the served model's name (a Kubernetes-style name)
    variant: str | None  # the voice of a repository of many voices


def parse_reference(text: str) -> ModelReference:
    text = text.strip()
    if not text:
        raise ReferenceError("an empty model reference")
    if re.match(r"^(https?|s3|gs)://", text):
        base = posixpath.basename(urlsplit(text).path)
        for suffix in SUFFIXES + (".onnx", ".bin", ".pt"):
            if base.lower().endswith(suffix):
                base = base[: -len(suffix)]
                break
        return ModelReference(ModelSource(url=text), model_name(base or urlsplit(text).netloc), None)
    if text.startswith("oci://"):
        image = text[len("oci://"):]
        return ModelReference(ModelSource(oci=image), model_name(image.rsplit("/", 1)[-1].split(":")[0]), None)
    if os.path.exists(os.path.expanduser(text)):
        path = os.path.abspath(os.path.expanduser(text))
        return ModelReference(ModelSource(path=path), model_name(os.path.basename(path.rstrip("/"))), None)
    match = re.fullmatch(r"(?P<repo>[^@:\s]+)(?::(?P<variant>[^@\s]+))?(?:@(?P<revision>\S+))?", text)
    if not match or not re.fullmatch(HF_REPO_PATTERN, match["repo"]):
        raise ReferenceError(f"'{text}' is no model reference: give a Hugging Face id (org/name, optionally "
                             ":voice and @revision), an https://, s3://, gs:// or oci:// URL, or an existing path")
    variant = match["variant"]
    files = piper_voice_files(variant) if variant else []
    hf = HubSource(repo=match["repo"], revision=match["revision"] or "main", files=files)
    return ModelReference(ModelSource(hf=hf), model_name(variant or match["repo"].split("/")[1]), variant)


def model_name(text: str) -> str:
    """A served model's name from a repository or file name: lower case, ``[a-z0-9.-]``, at most 63."""
    name = re.sub(r"[^a-z0-9.-]+", "-", text.lower()).strip("-.")[:63].strip("-.")
    if not re.fullmatch(NAME_PATTERN, name or "-"):
        raise ReferenceError(f"cannot make a model name of '{text}'")
    return name
