"""The audio files of a multipart request, as (filename, bytes) pairs for a pipeline."""

from __future__ import annotations

from services.core.contracts.errors import InvalidRequest
from starlette.datastructures import FormData, UploadFile


async def optional_files(form: FormData, keys: tuple[str, ...], max_files: int = 16) -> list[tuple[str, bytes]] | None:
    """Every file uploaded under any of ``keys`` (None when there is none)."""
    uploads = [f for key in keys for f in form.getlist(key) if isinstance(f, UploadFile)]
    if len(uploads) > max_files == 1:
        raise InvalidRequest(f"'{keys[0]}' was sent {len(uploads)} times; send it once", param=keys[0],
                             code="duplicate_parameter")
    if len(uploads) > max_files:
        raise InvalidRequest(f"at most {max_files} files may be uploaded as '{keys[0]}'", param=keys[0])
    return [(u.filename or f"{keys[0]}-{i}", await u.read()) for i, u in enumerate(uploads)] or None


async def uploaded_files(form: FormData, keys: tuple[str, ...], max_files: int = 16) -> list[tuple[str, bytes]]:
    """Like ``optional_files``, but at least one file is required (400 naming the first key)."""
    files = await optional_files(form, keys, max_files)
    if not files:
        if any(isinstance(form.get(key), str) for key in keys):
            raise InvalidRequest(f"'{keys[0]}' must be a file upload", param=keys[0])
        raise InvalidRequest(f"'{keys[0]}' is required: upload the audio as a file field", param=keys[0],
                             code="missing_required_parameter")
    return files
