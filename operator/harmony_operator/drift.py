"""Pure: has someone changed what the operator applied? (An edited child is repaired at its next event.)"""

from __future__ import annotations

import copy
from typing import Any


def drifted(desired: Any, actual: Any) -> bool:
    """True when ``actual`` no longer holds every value of ``desired``.

    ``desired`` is what the operator last sent; the API server adds defaults (a Service's
    clusterIP, a container's terminationMessagePath), so only the keys of ``desired`` count,
    in dicts and in the items of lists alike. A list of another length has drifted. A false
    positive costs one patch that changes nothing (and so causes no further event).
    """
    if isinstance(desired, dict):
        if not isinstance(actual, dict):
            return True
        return any(drifted(value, actual.get(key)) for key, value in desired.items() if value is not None)
    if isinstance(desired, list):
        if not isinstance(actual, list) or len(actual) != len(desired):
            return True
        return any(drifted(d, a) for d, a in zip(desired, actual))
    if isinstance(desired, (int, float)) and not isinstance(desired, bool) and isinstance(actual, str):
        return str(desired) != actual
    return desired != actual


# Maps the operator owns whole: a key added by hand is drift, and the repair removes it (a merge
# patch alone would keep it: a Service selector with one more label selects no pod).
EXACT: dict[str, tuple[tuple[str, ...], ...]] = {
    "Service": (("spec", "selector"),),
    "Deployment": (("spec", "template", "spec", "nodeSelector"),),
}


def _at(obj: Any, path: tuple[str, ...]) -> Any:
    for key in path:
        obj = obj.get(key) if isinstance(obj, dict) else None
    return obj


def extra_keys(desired: dict[str, Any], actual: dict[str, Any] | None) -> dict[tuple[str, ...], set[str]]:
    """Keys in the exact maps of ``actual`` that ``desired`` does not have."""
    out = {}
    for path in EXACT.get(desired.get("kind", ""), ()):
        there, wanted = _at(actual or {}, path), _at(desired, path) or {}
        if isinstance(there, dict) and set(there) - set(wanted):
            out[path] = set(there) - set(wanted)
    return out


def child_drifted(desired: dict[str, Any], actual: dict[str, Any]) -> bool:
    return drifted(desired, actual) or bool(extra_keys(desired, actual))


def with_removals(previous: dict[str, Any] | None, desired: dict[str, Any],
                  actual: dict[str, Any] | None) -> dict[str, Any] | None:
    """``previous`` (what the last apply wanted) plus the hand-added keys of the exact maps, so that
    :func:`harmony_operator.kube.merge_patch` turns them into removals."""
    extra = extra_keys(desired, actual)
    if not extra:
        return previous
    out = copy.deepcopy(previous or {})
    for path, keys in extra.items():
        node = out
        for key in path[:-1]:
            node = node.setdefault(key, {})
        node[path[-1]] = {**(node.get(path[-1]) or {}), **{k: "" for k in keys}}
    return out
