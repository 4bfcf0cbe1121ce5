"""The registered-voice store: a directory that survives restarts.

Layout: ``<root>/<voice id>/voice.json`` (the record) and ``reference.flac`` (the
cleaned reference speech). A voice is written to a temporary directory and renamed
into place, so a crash never leaves half a voice behind.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import shutil
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

from services.core.errors import NotFound
from services.core.wire import RegisteredVoice

VOICE_ID = re.compile(r"^voice_[0-9a-f]{16}$")


class VoiceRecord(RegisteredVoice):
    """A stored voice: what the API shows, and the converter's speaker statistics."""

    stats: dict[str, Any]

    def public(self) -> RegisteredVoice:
        """What the API shows: everything but the (large) statistics."""
        return RegisteredVoice.model_validate(self.model_dump(exclude={"stats"}))


class VoiceStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()

    @staticmethod
    def new_id() -> str:
        return "voice_" + secrets.token_hex(8)

    def _dir(self, voice_id: str) -> Path:
        if not VOICE_ID.match(voice_id):
            raise NotFound(f"no voice '{voice_id}'", param="voice", code="voice_not_found")
        return self.root / voice_id

    def add(self, record: VoiceRecord, reference_flac: bytes) -> VoiceRecord:
        final = self._dir(record.id)
        staging = Path(tempfile.mkdtemp(prefix=".incoming-", dir=self.root))
        try:
            (staging / "reference.flac").write_bytes(reference_flac)
            (staging / "voice.json").write_text(record.model_dump_json())
            with self._lock:
                os.replace(staging, final)
        finally:
            shutil.rmtree(staging, ignore_errors=True)
        return record

    def get(self, voice_id: str) -> VoiceRecord:
        path = self._dir(voice_id) / "voice.json"
        try:
            return VoiceRecord.model_validate_json(path.read_text())
        except FileNotFoundError:
            raise NotFound(f"no voice '{voice_id}'", param="voice", code="voice_not_found") from None

    def reference(self, voice_id: str) -> bytes:
        try:
            return (self._dir(voice_id) / "reference.flac").read_bytes()
        except FileNotFoundError:
            raise NotFound(f"no voice '{voice_id}'", param="voice", code="voice_not_found") from None

    def delete(self, voice_id: str) -> None:
        directory = self._dir(voice_id)
        if not directory.exists():
            raise NotFound(f"no voice '{voice_id}'", param="voice", code="voice_not_found")
        trash = self.root / f".deleted-{voice_id}-{time.time_ns()}"
        with self._lock:
            os.replace(directory, trash)
        shutil.rmtree(trash, ignore_errors=True)

    def list(self) -> list[VoiceRecord]:
        records = []
        for path in sorted(self.root.glob("voice_*/voice.json")):
            try:
                records.append(VoiceRecord.model_validate_json(path.read_text()))
            except (OSError, ValueError):
                continue
        return sorted(records, key=lambda r: r.created_at)


def dump_json(data: Any) -> str:
    return json.dumps(data, separators=(",", ":"))
