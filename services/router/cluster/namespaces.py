"""Which namespaces' models one router serves: a list, or a namespace label selector (pure, but for the watch).

A router serves the SpeechModels of any namespace the operator serves, not only its own: ``--model-namespaces
a,b`` (the chart's ``router.modelNamespaces``, else the operator's ``watchNamespaces``) names them, and
``--model-namespace-selector team=speech`` (``router.modelNamespaceSelector``) takes every namespace whose labels
match, as they come and go (a watch of Namespaces). Selectors use the API's syntax: ``k``, ``!k``, ``k=v``,
``k==v``, ``k!=v``, ``k in (a,b)``, ``k notin (a,b)``, joined by commas; they are sent to the API server and
checked here too.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from services.router.cluster.api_watch import ApiWatch

NAMESPACES = "/api/v1/namespaces"
_TERM = re.compile(r"^\s*(?:(?P<not>!)\s*(?P<absent>[\w./-]+)|(?P<key>[\w./-]+)\s*(?:(?P<op>==|!=|=)\s*"
                   r"(?P<value>[\w.-]*)|\s+(?P<setop>in|notin)\s*\((?P<values>[^)]*)\))?)\s*$")


class SelectorError(ValueError):
    pass


def _terms(selector: str) -> list[str]:
    """Split at the commas outside parentheses."""
    terms, depth, current = [], 0, ""
    for char in selector:
        depth += (char == "(") - (char == ")")
        if char == "," and depth == 0:
            terms.append(current)
            current = ""
        else:
            current += char
    return [term for term in [*terms, current] if term.strip()]


def selector_matcher(selector: str) -> Callable[[Mapping[str, str]], bool]:
    """A test of a label set against ``selector``; SelectorError for one the API would refuse."""
    checks: list[Callable[[Mapping[str, str]], bool]] = []
    for term in _terms(selector):
        match = _TERM.match(term)
        if match is None:
            raise SelectorError(f"not a label selector term: {term.strip()!r}")
        checks.append(_check(match))
    return lambda labels: all(check(labels) for check in checks)


def _check(match: re.Match[str]) -> Callable[[Mapping[str, str]], bool]:
    if match["not"]:
        absent = match["absent"]
        return lambda labels: absent not in labels
    key, op, value = match["key"], match["op"], match["value"] or ""
    if op in ("=", "=="):
        return lambda labels: labels.get(key) == value
    if op == "!=":
        return lambda labels: labels.get(key) != value
    if match["setop"]:
        values = {v.strip() for v in match["values"].split(",") if v.strip()}
        if match["setop"] == "in":
            return lambda labels: labels.get(key) in values
        return lambda labels: labels.get(key) not in values
    return lambda labels: key in labels


@dataclass
class NamespaceScope:
    """The namespaces served: ``names`` (fixed), or those whose labels match ``selector`` (from the watch)."""

    names: frozenset[str] = frozenset()
    selector: str | None = None
    labels: dict[str, dict[str, str]] = field(default_factory=dict)  # namespace -> labels, from the watch
    on_change: Callable[[], None] = lambda: None

    def __post_init__(self) -> None:
        self._matches = selector_matcher(self.selector) if self.selector is not None else None

    @property
    def cluster_wide(self) -> bool:
        """True: the router reads every namespace (ClusterRole) and keeps those the selector takes."""
        return self._matches is not None

    def __contains__(self, namespace: object) -> bool:
        if self._matches is None:
            return namespace in self.names
        labels = self.labels.get(str(namespace))
        return labels is not None and self._matches(labels)

    # the Namespace watch's side
    def reset(self, items: list[dict[str, Any]]) -> None:
        self.labels = {meta["name"]: dict(meta.get("labels") or {})
                       for meta in (item.get("metadata") or {} for item in items) if meta.get("name")}
        self.on_change()

    def change(self, kind: str, obj: dict[str, Any]) -> None:
        meta = obj.get("metadata") or {}
        name = meta.get("name")
        if not name:
            return
        if kind == "DELETED":
            self.labels.pop(name, None)
        else:
            self.labels[name] = dict(meta.get("labels") or {})
        self.on_change()

    def watch(self, client: httpx.AsyncClient, token_file: Path | None = None) -> ApiWatch:
        """The Namespace watch that keeps ``labels`` (RBAC: ``get, list, watch`` on namespaces)."""
        watch = ApiWatch(client, NAMESPACES, self.reset, self.change, {"labelSelector": self.selector or ""},
                         token_file)
        watch.what = "Namespace"
        return watch
