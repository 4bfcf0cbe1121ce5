"""Which files a command works on: files, folders (recursive) and globs, filtered to audio and video."""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from pathlib import Path

# Extensions of audio and video that FFmpeg (PyAV) decodes; a file named on the command line is taken whatever
# its extension, a folder or a glob contributes only these.
MEDIA_EXTENSIONS = frozenset({
    # audio
    ".wav", ".wave", ".mp3", ".mpga", ".mp2", ".m4a", ".m4b", ".aac", ".flac", ".ogg", ".oga", ".opus", ".spx",
    ".wma", ".aif", ".aiff", ".aifc", ".amr", ".awb", ".ac3", ".eac3", ".caf", ".mka", ".au", ".snd", ".ape",
    ".wv", ".tta", ".dts", ".gsm", ".voc", ".w64", ".rf64",
    # video
    ".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi", ".wmv", ".flv", ".mpeg", ".mpg", ".mpe", ".ts", ".mts",
    ".m2ts", ".3gp", ".3g2", ".ogv", ".vob", ".asf", ".f4v", ".dv", ".mxf",
})


class BadPaths(Exception):
    """Paths on the command line that name nothing usable; ``problems`` has one message per path."""

    def __init__(self, problems: list[str]) -> None:
        super().__init__("\n".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Input:
    path: Path
    base: Path  # the folder its relative path (kept under --out) starts from

    @property
    def relative(self) -> Path:
        return self.path.relative_to(self.base)


def is_media(path: Path) -> bool:
    return path.suffix.lower() in MEDIA_EXTENSIONS and not path.name.startswith(".")


def _folder(folder: Path) -> list[Input]:
    found = []
    for root, dirs, files in os.walk(folder):
        dirs[:] = sorted(d for d in dirs if not d.startswith("."))
        found += [Input(Path(root) / name, folder) for name in sorted(files) if is_media(Path(name))]
    return found


def _glob_base(pattern: str) -> Path:
    """The folder before the first part of ``pattern`` with a wildcard (``talks/**/*.mp3`` -> ``talks``)."""
    parts = Path(pattern).parts
    fixed = [p for p in parts[: next(i for i, p in enumerate(parts) if glob.has_magic(p))]]
    return Path(*fixed) if fixed else Path(".")


def _expand(argument: str) -> list[Input] | str:
    """The inputs one argument names, or a message saying why it names none."""
    path = Path(argument)
    if path.is_file():
        return [Input(path, path.parent)]
    if path.is_dir():
        return _folder(path) or f"{argument}: no audio or video files in this folder"
    if glob.has_magic(argument):
        base, found = _glob_base(argument), []
        for match in sorted(glob.glob(argument, recursive=True)):
            match_path = Path(match)
            if match_path.is_dir():
                found += [Input(i.path, base) for i in _folder(match_path)]
            elif is_media(match_path):
                found.append(Input(match_path, base))
        return found or f"{argument}: matches no audio or video files"
    if path.exists():
        return f"{argument}: not a file or a folder"
    return f"{argument}: no such file or folder"


def find_inputs(arguments: list[str]) -> list[Input]:
    """Every input the arguments name, each once, in order; BadPaths if any argument names none."""
    inputs: dict[Path, Input] = {}
    problems = []
    for argument in arguments:
        found = _expand(argument)
        if isinstance(found, str):
            problems.append(found)
            continue
        for item in found:
            inputs.setdefault(item.path.resolve(), item)
    if problems:
        raise BadPaths(problems)
    return list(inputs.values())
