"""``harmony pull`` (weights into the model cache, for image builds, init containers and air-gapped hosts) and
``harmony models`` (what the cache holds).

``harmony pull Systran/faster-whisper-small rhasspy/piper-voices:en_US-lessac-medium s3://bucket/model.tgz``
fetches each into the cache with a progress bar; ``--model-file`` (one SpeechModel, as the operator's init
container runs it) or ``--config`` (every model of a ``harmony serve`` config) take the models of a file.
``--json`` prints one WeightsProgress object per line instead; ``--termination-log`` writes the last one (the
resolved revision, the bytes) to a file, Kubernetes' ``/dev/termination-log``, where the operator reads it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING

from services.core.contracts.specs import ConfigError, ModelSource, NamedModel, load_config
from services.core.contracts.wire import WeightsProgress
from services.core.runtime.weights import WeightsError

if TYPE_CHECKING:
    from rich.progress import TaskID


def add_parser(commands) -> None:
    pull = commands.add_parser("pull", help="fetch model weights into the model cache (Hugging Face ids, URLs, "
                                            "a model file or a config)")
    pull.add_argument("models", nargs="*", metavar="MODEL",
                      help="org/name[:voice][@revision], https://, s3://, gs:// or oci:// URL, or a local path")
    pull.add_argument("--model-file", help="a YAML file holding one SpeechModel with its name (as the operator "
                                           "writes it)")
    pull.add_argument("--config", help="a harmony serve config: every model of it")
    pull.add_argument("--json", action="store_true", help="one WeightsProgress JSON object per line, no bar")
    pull.add_argument("--termination-log", metavar="PATH", help="write the last progress (JSON) to PATH, e.g. "
                                                                "/dev/termination-log")
    pull.add_argument("--offline", action="store_true", help="never touch the network: check that the cache "
                                                             "holds everything (same as HARMONY_OFFLINE=1)")
    pull.add_argument("--cache-dir", help="the model cache (default: $HARMONY_CACHE_DIR, else ~/.cache/harmony)")
    pull.set_defaults(handler=run_pull)

    models = commands.add_parser("models", help="list the models in the model cache with their sizes")
    models.add_argument("--cache-dir", help="the model cache (default: $HARMONY_CACHE_DIR, else ~/.cache/harmony)")
    models.add_argument("--json", action="store_true", help="JSON instead of a table")
    models.set_defaults(handler=run_models)


def _sources(args: argparse.Namespace) -> list[tuple[str, ModelSource]]:
    from services.weights.references import parse_reference

    sources = []
    for text in args.models:
        reference = parse_reference(text)
        sources.append((reference.name, reference.source))
    if args.model_file:
        import yaml

        try:
            model = NamedModel.model_validate(yaml.safe_load(Path(args.model_file).read_text()))
        except (OSError, ValueError) as exc:
            raise ConfigError(f"{args.model_file}: {exc}") from None
        sources.append((model.name, model.source))
    if args.config:
        sources += [(m.name, m.source) for m in load_config(args.config).models]
    return sources


def run_pull(args: argparse.Namespace) -> int:
    from services.weights.cache import ModelCache
    from services.weights.references import ReferenceError

    if args.cache_dir:
        os.environ["HARMONY_CACHE_DIR"] = args.cache_dir
    try:
        sources = _sources(args)
    except (ConfigError, ReferenceError) as exc:
        print(f"harmony: {exc}", file=sys.stderr)
        return 2
    if not sources:
        print("harmony: name a model, a --model-file or a --config", file=sys.stderr)
        return 2
    cache = ModelCache.default()
    report = JsonLines() if args.json else Bar()
    failed = 0
    with report:
        for name, source in sources:
            failed += not pull_one(name, source, cache, args.offline or None, report)
    if args.termination_log and report.last:
        write_termination(Path(args.termination_log), list(report.last.values())[-1])
    return 1 if failed else 0


TERMINATION_LIMIT = 4096  # bytes of a termination message Kubernetes keeps


def write_termination(path: Path, state: WeightsProgress) -> None:
    """The last progress as the container's termination message: JSON that fits Kubernetes' limit (a long
    message is shortened, never the JSON cut)."""
    text = state.model_dump_json()
    while len(text.encode()) > TERMINATION_LIMIT and state.message:
        excess = len(text.encode()) - TERMINATION_LIMIT
        state = state.model_copy(update={"message": state.message[:max(0, len(state.message) - excess - 3)] + "..."
                                         if len(state.message) > excess + 3 else ""})
        text = state.model_dump_json()
    path.write_text(text)


def main_pull(reference: str, cache_dir: Path) -> Path:
    """What ``harmony pull REFERENCE --cache-dir DIR`` does, with no progress output (bench/pull.py)."""
    from services.weights.cache import ModelCache
    from services.weights.fetch import fetch
    from services.weights.references import parse_reference

    return fetch(parse_reference(reference).source, cache=ModelCache(cache_dir))


def pull_one(name: str, source: ModelSource, cache, offline: bool | None, report) -> bool:
    from services.weights.fetch import fetch
    from services.weights.labels import describe

    if not source.remote:
        where = source.path or f"the package {source.package}"
        report.done(name, WeightsProgress(phase="ready", source=describe(source), path=where,
                                          message="nothing to fetch"))
        return True
    try:
        path = fetch(source, cache=cache, offline=offline, listener=lambda state: report.progress(name, state))
    except WeightsError as exc:
        report.failed(name, exc)
        return False
    report.done(name, report.last.get(name) or WeightsProgress(phase="ready", path=str(path)))
    return True


class Report:
    """What both reporters keep: each model's last progress (the termination message is the last one's)."""

    def __init__(self) -> None:
        self.last: dict[str, WeightsProgress] = {}

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        pass

    def _failed(self, name: str, exc: Exception) -> WeightsProgress:
        state = (self.last.get(name) or WeightsProgress()).model_copy(update={"phase": "failed", "message": str(exc)})
        self.last[name] = state
        return state


class Bar(Report):
    """A rich progress bar per model, bytes done of the whole."""

    def __init__(self) -> None:
        super().__init__()
        from rich.console import Console
        from rich.progress import (
            BarColumn,
            DownloadColumn,
            Progress,
            TextColumn,
            TimeRemainingColumn,
            TransferSpeedColumn,
        )

        self.console = Console(stderr=True)
        self.bar = Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                            TimeRemainingColumn(), console=self.console, transient=False)
        self.tasks: dict[str, TaskID] = {}

    def __enter__(self) -> Bar:
        self.bar.__enter__()
        return self

    def __exit__(self, *exc) -> None:
        self.bar.__exit__(*exc)

    def progress(self, name: str, state: WeightsProgress) -> None:
        self.last[name] = state
        if name not in self.tasks:
            self.tasks[name] = self.bar.add_task(name, total=None)
        self.bar.update(self.tasks[name], completed=state.bytesDone, total=state.bytesTotal,
                        description=f"{name} {state.phase}")

    def done(self, name: str, state: WeightsProgress) -> None:
        self.last[name] = state
        revision = f" @ {state.revision[:12]}" if state.revision else ""
        self.bar.console.print(f"[green]ok[/] {name}: {state.source}{revision} -> {state.path}")

    def failed(self, name: str, exc: Exception) -> None:
        self.bar.console.print(f"[red]failed[/] {name}: {exc}")
        self._failed(name, exc)


class JsonLines(Report):
    """One WeightsProgress JSON object per line on stdout, at most one every 0.5 s while bytes flow."""

    def __init__(self) -> None:
        super().__init__()
        self._printed = 0.0

    def _print(self, name: str, state: WeightsProgress) -> None:
        print(json.dumps({"model": name, **state.model_dump()}), flush=True)

    def progress(self, name: str, state: WeightsProgress) -> None:
        changed = self.last.get(name) is None or self.last[name].phase != state.phase
        self.last[name] = state
        now = time.monotonic()
        if changed or now - self._printed >= 0.5:
            self._printed = now
            self._print(name, state)

    def done(self, name: str, state: WeightsProgress) -> None:
        self.last[name] = state
        self._print(name, state)

    def failed(self, name: str, exc: Exception) -> None:
        self._print(name, self._failed(name, exc))


def run_models(args: argparse.Namespace) -> int:
    from services.weights.cache import ModelCache
    from services.weights.labels import human

    if args.cache_dir:
        os.environ["HARMONY_CACHE_DIR"] = args.cache_dir
    cache = ModelCache.default()
    models = cache.models()
    if args.json:
        print(json.dumps({"cache": str(cache.root), "bytes_on_disk": cache.blob_bytes(), "models": [
            {"path": str(path), **manifest.model_dump(), "size": manifest.size} for path, manifest in models]},
            indent=1))
        return 0
    from rich.console import Console
    from rich.table import Table

    table = Table(title=f"model cache {cache.root}")
    for column in ("SOURCE", "REVISION", "FILES", "SIZE", "PATH"):
        table.add_column(column, justify="right" if column in ("FILES", "SIZE") else "left")
    for path, manifest in models:
        table.add_row(manifest.source, (manifest.revision or "")[:12], str(len(manifest.files)),
                      human(manifest.size), str(path))
    console = Console()
    console.print(table)
    listed = sum(m.size for _, m in models)
    console.print(f"{len(models)} models, {human(listed)} listed, {human(cache.blob_bytes())} on disk "
                  "(files shared by models are stored once)")
    return 0

