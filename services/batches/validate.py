"""A validating batch: its input file checked (``lines.py``), its requests stored, its audio measured."""

from __future__ import annotations

import logging
from typing import Any

from services.batches.dispatch import SPEECH
from services.batches.files import FileStore, Owner
from services.batches.lines import Request, check_lines
from services.batches.probe import audio_seconds
from services.batches.store import BatchStore
from services.batches.wire import BatchError, BatchErrors
from services.core.contracts.errors import HarmonyError

log = logging.getLogger("harmony.batches")


def _durations(requests: list[Request], files: FileStore, owner: Owner) -> dict[str, float | None]:
    """Seconds of each audio file the requests name (for progress in audio seconds and the ETA)."""
    seconds: dict[str, float | None] = {}
    for request in requests:
        file_id = request.body.get("file")
        if isinstance(file_id, str) and file_id not in seconds:
            try:
                seconds[file_id] = audio_seconds(files.content(file_id, owner)[1])
            except HarmonyError:  # an unknown file fails its request when it runs, not the batch
                seconds[file_id] = None
    return seconds


def validate(store: BatchStore, row: Any, runner: str) -> str:
    """Check the batch's input file: its requests stored and the batch in progress, or the batch failed; the
    batch's status after (``in_progress``, or ``failed``)."""
    try:
        data = store.files.content(row.input_file_id, Owner(None))[1]
    except HarmonyError:
        store.fail(row.id, BatchErrors(data=[BatchError(code="file_not_found", param="input_file_id",
                                                         message=f"input file {row.input_file_id} is gone")]))
        return "failed"
    requests, errors = check_lines(data, row.endpoint, store.settings.max_lines)
    if errors is not None:
        log.info("batch %s failed validation: %s", row.id, errors.data[0].message)
        store.fail(row.id, errors)
        return "failed"
    seconds: dict[str, float | None] = {}
    if row.endpoint != SPEECH:
        seconds = _durations(requests, store.files, Owner(row.owner_key_id))
    audio = [seconds.get(file) if isinstance(file := r.body.get("file"), str) else None for r in requests]
    items = [{"line": r.line, "custom_id": r.custom_id, "body": r.body, "audio_seconds": s}
             for r, s in zip(requests, audio)]
    known = [s for s in audio if s is not None]
    store.start(row.id, runner, items, round(sum(known), 3) if known else None)
    return "in_progress"
