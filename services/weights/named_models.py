"""``harmony serve --model REF``: models named on the command line, fetched, and served without a config file.

Each reference is fetched into the cache first (with the command's progress bar), then its files say what it is
(services/weights/detect.py: task, backend, options); a model that cannot be told apart is refused with a
message that says how to declare it. The first speech-to-text model also answers as ``whisper-1`` and the first
text-to-speech model as ``tts-1``, so OpenAI clients work unchanged.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from pathlib import Path

from services.core.contracts.specs import NamedModel
from services.core.contracts.wire import WeightsProgress
from services.weights.detect import detect
from services.weights.fetch import fetch
from services.weights.references import ModelReference, parse_reference

OPENAI_ALIASES = {"stt": "whisper-1", "tts": "tts-1"}
READ_LIMIT = 4 << 20  # detection reads small files only (configs), never the weights


def models_from_references(references: list[str], listener: Callable[[str, WeightsProgress], None] | None = None,
                           taken: set[str] | None = None) -> list[NamedModel]:
    """One NamedModel per reference (fetched into the cache on the way); ``taken``: public names in use."""
    taken = set(taken or ())
    models = []
    for text in references:
        reference = parse_reference(text)
        path = fetch(reference.source, listener=functools.partial(listener, reference.name) if listener else None)
        model = model_for(reference, path, taken)
        taken.update([model.name, *model.aliases])
        models.append(model)
    return models


def model_for(reference: ModelReference, path: Path, taken: set[str]) -> NamedModel:
    """The SpeechModel of a fetched reference, from what its files are."""
    root = path if path.is_dir() else path.parent
    files = [path.name] if path.is_file() else sorted(
        p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and not p.name.startswith(".harmony"))

    def read(relative: str) -> bytes | None:
        file = root / relative
        try:
            return file.read_bytes() if file.is_file() and file.stat().st_size <= READ_LIMIT else None
        except OSError:
            return None

    from services.weights.labels import describe

    detected = detect(describe(reference.source), files, read, voice=reference.variant)
    name = reference.name
    while name in taken:
        name = f"{name}-2" if not name[-2:-1] == "-" or not name[-1].isdigit() else f"{name[:-1]}{int(name[-1]) + 1}"
    aliases = []
    alias = OPENAI_ALIASES.get(detected.task)
    if alias and alias not in taken and alias != name:
        aliases.append(alias)
    return NamedModel(name=name, source=reference.source, aliases=aliases, **detected.spec_fields())
