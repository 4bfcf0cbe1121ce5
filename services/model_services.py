"""Which model service serves each task: the one table ``harmony serve`` and ``service_main`` build apps from."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from fastapi import FastAPI

from services.core.contracts.specs import ConfigError, HarmonyConfig, NamedModel, Task
from services.core.tasks.backends import BackendRegistry
from services.stt.app import create_stt_app
from services.tts.app import create_tts_app
from services.vad.app import create_vad_app
from services.vc.app import create_vc_app


@dataclass(frozen=True)
class ModelService:
    """One kind of model service: its name, the tasks it serves, and its app factory."""

    name: str
    tasks: tuple[Task, ...]
    create_app: Callable[[list[NamedModel], int, HarmonyConfig | None], FastAPI]


def _without_config(factory: Callable[[list[NamedModel], int], FastAPI]
                    ) -> Callable[[list[NamedModel], int, HarmonyConfig | None], FastAPI]:
    """A service that keeps no state of its own needs only its models."""
    return lambda models, max_upload_bytes, _config: factory(models, max_upload_bytes)


MODEL_SERVICES: tuple[ModelService, ...] = (
    ModelService("stt", (Task.stt,), _without_config(create_stt_app)),
    ModelService("tts", (Task.tts,), _without_config(create_tts_app)),
    ModelService("vad", (Task.vad,), _without_config(create_vad_app)),
    # speaker embedding and voice conversion share one service, so registration can store what both produce;
    # it keeps the registered voices in the engine's database and object store (the config says where)
    ModelService("vc", (Task.embed, Task.vc), create_vc_app),
)


def service_for(task: Task) -> ModelService:
    for service in MODEL_SERVICES:
        if task in service.tasks:
            return service
    raise ConfigError(f"no service for task '{task.value}' in this build")


def check_backends(config: HarmonyConfig, backends: BackendRegistry | None = None) -> None:
    """Fail at start, naming the field, for a task or backend this installation cannot serve."""
    for index, model in enumerate(config.models):
        try:
            service_for(model.task)
        except ConfigError as exc:
            raise ConfigError(f"models[{index}].task: {exc}") from None
    (backends or BackendRegistry.installed()).check(config)
