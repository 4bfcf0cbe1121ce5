"""A Hugging Face repository resolved with the real ``huggingface_hub`` client: its revision to a commit, its
files (chosen by ``files`` globs) with their sizes and digests, and where each is downloaded from.

``$HF_ENDPOINT`` is read at each call (an air-gapped cluster points it at its Hub mirror), ``$HF_TOKEN`` (or
the token ``hf auth login`` stored) authorises private and gated repositories; the token only ever travels in
an ``Authorization`` header (huggingface_hub's own), never in a message.
"""

from __future__ import annotations

import contextlib
import fnmatch
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass

from services.core.contracts.specs import HubSource
from services.core.runtime.weights import WeightsError
from services.weights.remotes import HttpRemote, RemoteDenied, RemoteNotFound

COMMIT = re.compile(r"^[0-9a-f]{40}$")
# Files of a repository that no backend reads: never fetched unless a glob names them.
SKIPPED = (".gitattributes", ".gitignore", "*.md", "LICENSE*", "*.png", "*.jpg", "*.gif", "*.svg")


@dataclass(frozen=True)
class HubFile:
    path: str
    size: int
    sha256: str | None   # an LFS object's SHA-256
    blob_id: str | None  # the git blob id (a file stored in git: its SHA-1 over "blob <size>\0" + bytes)


@dataclass(frozen=True)
class ResolvedRepo:
    repo: str
    commit: str
    files: list[HubFile]


def endpoint() -> str:
    return (os.environ.get("HF_ENDPOINT") or "https://huggingface.co").rstrip("/")


def token() -> str | None:
    from huggingface_hub import get_token

    return get_token()


def label(source: HubSource, commit: str | None = None) -> str:
    return f"hf://{source.repo}@{commit or source.revision}"


def resolve_commit(source: HubSource) -> str:
    """The commit ``source.revision`` names now (asks the Hub)."""
    with _hub_errors(source):
        commit = _api().model_info(source.repo, revision=source.revision).sha
    if not commit:
        raise WeightsError(f"{_where(source)}: the Hub gave no commit for the revision")
    return commit


def resolve(source: HubSource, commit: str | None = None) -> ResolvedRepo:
    """The commit (``commit``, or what ``source.revision`` names now) and the files to fetch, from the tree at
    it: every file with its size, git blob id and (LFS) SHA-256."""
    commit = commit or resolve_commit(source)
    with _hub_errors(source):
        tree = list(_api().list_repo_tree(source.repo, revision=commit, recursive=True))
    files = [_file(entry) for entry in tree if hasattr(entry, "blob_id") and not hasattr(entry, "tree_id")]
    chosen = select(files, source.files)
    if not chosen:
        names = ", ".join(f.path for f in files[:20]) or "none"
        raise RemoteNotFound(f"{_where(source)}: no file matches {source.files or 'the repository'} (files: "
                             f"{names})")
    return ResolvedRepo(source.repo, commit, chosen)


def _api():
    from huggingface_hub import HfApi

    return HfApi(endpoint=endpoint(), token=token())


def _where(source: HubSource) -> str:
    return f"{label(source)} (Hub at {endpoint()})"


@contextlib.contextmanager
def _hub_errors(source: HubSource) -> Iterator[None]:
    """huggingface_hub's errors as WeightsErrors that say what to do."""
    from huggingface_hub.errors import GatedRepoError, HfHubHTTPError, RepositoryNotFoundError, RevisionNotFoundError

    where = _where(source)
    try:
        yield
    except GatedRepoError:
        raise RemoteDenied(f"{where}: the repository is gated: accept its terms on the Hub and set HF_TOKEN") \
            from None
    except RepositoryNotFoundError:
        hint = "" if token() else " (a private repository needs HF_TOKEN)"
        raise RemoteNotFound(f"{where}: repository not found{hint}") from None
    except RevisionNotFoundError:
        raise RemoteNotFound(f"{where}: no revision '{source.revision}' (a branch, tag or commit)") from None
    except HfHubHTTPError as exc:
        raise WeightsError(f"{where}: {_status(exc)}") from None
    except OSError as exc:  # connection refused, DNS: say where we tried
        raise WeightsError(f"{where}: cannot reach the Hub ({type(exc).__name__}: {exc})") from None


def _file(entry) -> HubFile:
    """A ``RepoFile`` of the tree: an LFS object's size and SHA-256 are its ``lfs``'s."""
    lfs = entry.lfs
    if lfs is not None:
        return HubFile(entry.path, int(lfs.size), lfs.sha256, entry.blob_id)
    return HubFile(entry.path, int(entry.size), None, entry.blob_id)


def _status(exc) -> str:
    response = getattr(exc, "response", None)
    return f"{response.status_code} from the Hub" if response is not None else str(exc).splitlines()[0]


def select(files: list[HubFile], patterns: list[str]) -> list[HubFile]:
    """The files ``patterns`` name (fnmatch; ``*`` crosses ``/``); with none, every file a backend may read."""
    if patterns:
        return [f for f in files if any(fnmatch.fnmatchcase(f.path, p) for p in patterns)]
    return [f for f in files if not any(fnmatch.fnmatchcase(f.path.rsplit("/", 1)[-1], p) for p in SKIPPED)]


def remote(repo: str, commit: str, file: HubFile) -> HttpRemote:
    """Where one file of the commit is downloaded from, with the Hub's headers (the token among them)."""
    from huggingface_hub import hf_hub_url
    from huggingface_hub.utils import build_hf_headers

    url = hf_hub_url(repo, file.path, revision=commit, endpoint=endpoint())
    headers = build_hf_headers(token=token(), library_name="harmony-speech")
    return HttpRemote(url, headers, label=f"hf://{repo}@{commit[:12]}/{file.path}",
                      hint="a private or gated repository needs HF_TOKEN", immutable_size=file.size)
