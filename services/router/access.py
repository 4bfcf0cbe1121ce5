"""Authorization where a reader of a route sees it: a route resolves the model (or route) a request names, then asks
here whether the request's API key may use it (403 ``model_not_allowed`` when not; nothing to check without a key).
Resolving (``routing.ModelTable``) only resolves."""

from __future__ import annotations

from services.auth.guard import check_model
from services.core.contracts.specs import NamedRoute, Task
from services.router.routing import ModelTable, ServedModel


def allow_model(table: ModelTable, requested: str | None, served: ServedModel) -> None:
    """The key may use the public name it sent (a model, an alias, a dated snapshot) and the model that serves it;
    a request that named none (the default model) needs the served model allowed."""
    if requested:
        check_model(table.lookup, requested, served.name)
    else:
        check_model(table.lookup, served.name)


def allow_route(table: ModelTable, route: NamedRoute, task: Task, requested: str | None) -> None:
    """A pipeline request (``PipelineRunner.route(task, ..., model=requested)``): the key may use the declared route
    it runs, and the model it named for the route's ``task`` step; a one-step route of no declared route is its
    model's, checked as ``allow_model``."""
    declared = route.name in table.routes
    if declared:
        check_model(table.lookup, route.name)
    if (requested and requested != route.name) or not declared:
        served = next((s.model for s in route.steps if s.task == task), None) or route.name
        check_model(table.lookup, requested or served, served)
