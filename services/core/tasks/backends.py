"""The backend registry: every installed backend, found by name through Python entry points.

A backend is a class registered in the entry-point group ``harmony.backends``; the
entry point's name is what a SpeechModel puts in ``backend:``. The built-in backends
register the same way (``[project.entry-points."harmony.backends"]`` in pyproject.toml),
so a third-party package adds one by ``pip install`` alone::

    [project.entry-points."harmony.backends"]
    silero-lite = "harmony_vad_lite:SileroLiteVad"

The class declares its task and what it can run on, and is built from the model's spec::

    class SileroLiteVad:
        task = Task.vad                      # which protocol it implements (services.core.tasks.protocols)
        languages = ()                       # () = any language
        devices = ("cpu",)
        def __init__(self, spec: NamedModel) -> None: ...

Nothing heavy is imported to list backends: a backend module imports its inference
library inside ``load()``.
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from services.core.contracts.specs import ConfigError, HarmonyConfig, NamedModel, Task

ENTRY_POINT_GROUP = "harmony.backends"


@dataclass(frozen=True)
class BackendInfo:
    """One installed backend: its name, the task it serves, and how to build it."""

    name: str
    task: Task
    factory: Callable[[NamedModel], Any]
    languages: tuple[str, ...] = ()     # () = any language (or decided by the model's weights)
    devices: tuple[str, ...] = ("cpu",)
    description: str = ""
    distribution: str = ""              # the pip distribution that registered it

    def create(self, spec: NamedModel) -> Any:
        """The backend of ``spec``, not loaded yet (``load()`` runs in a worker thread)."""
        return self.factory(spec)


class BackendError(ConfigError):
    """An entry point that is not a usable backend, or a model that names a backend wrongly."""


def _info(entry: EntryPoint) -> BackendInfo:
    try:
        cls = entry.load()
    except Exception as exc:  # noqa: BLE001 - a broken plugin must name itself
        raise BackendError(f"backend '{entry.name}' ({entry.value}) cannot be imported: "
                           f"{type(exc).__name__}: {exc}") from exc
    try:
        task = Task(cls.task)
    except (AttributeError, ValueError):
        raise BackendError(f"backend '{entry.name}' ({entry.value}) declares no valid 'task' "
                           f"(one of {', '.join(t.value for t in Task)})") from None
    doc = (cls.__doc__ or "").strip().splitlines()
    declared = inspect.getattr_static(cls, "languages", ())  # a property or an instance attribute: decided at load
    return BackendInfo(name=entry.name, task=task, factory=cls,
                       languages=tuple(declared) if isinstance(declared, (tuple, list)) else (),
                       devices=tuple(getattr(cls, "devices", ("cpu",))),
                       description=doc[0] if doc else "",
                       distribution=entry.dist.name if entry.dist else "")


class BackendRegistry:
    """Backends by name. ``installed()`` reads the entry points once per process."""

    def __init__(self, backends: list[BackendInfo]) -> None:
        self._by_name: dict[str, BackendInfo] = {}
        for info in backends:
            self._by_name.setdefault(info.name, info)

    @classmethod
    @functools.cache
    def installed(cls) -> BackendRegistry:
        return cls([_info(entry) for entry in sorted(entry_points(group=ENTRY_POINT_GROUP), key=lambda e: e.name)])

    def all(self) -> list[BackendInfo]:
        return sorted(self._by_name.values(), key=lambda b: (b.task.value, b.name))

    def names(self, task: Task | None = None) -> list[str]:
        return [b.name for b in self.all() if task is None or b.task == task]

    def get(self, name: str, task: Task, field: str = "backend") -> BackendInfo:
        """The backend ``name`` for ``task``; a BackendError naming ``field`` and the choices otherwise."""
        info = self._by_name.get(name)
        if info is None:
            raise BackendError(f"{field}: unknown {task.value} backend '{name}' (installed {task.value} backends: "
                               f"{', '.join(self.names(task)) or 'none'})")
        if info.task != task:
            raise BackendError(f"{field}: backend '{name}' serves task '{info.task.value}', not '{task.value}' "
                               f"(installed {task.value} backends: {', '.join(self.names(task)) or 'none'})")
        return info

    def check(self, config: HarmonyConfig) -> None:
        """Fail at start, naming the field, for a backend this installation does not have."""
        for index, model in enumerate(config.models):
            self.get(model.backend, model.task, field=f"models[{index}].backend")
