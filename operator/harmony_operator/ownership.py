"""Pure checks of who owns an object: the operator patches or deletes only what is its own.

An object is a SpeechModel's when one of its ownerReferences carries the model's uid. One
that the operator labelled for the same model name and that no other kind of object owns (a
child left by an earlier SpeechModel of that name, or orphaned by ``kubectl delete
--cascade=orphan``) is taken back. Anything else under a child's name (the chart's
``harmony-router`` Service, a user's ConfigMap) is foreign: a name conflict, left untouched.
"""

from __future__ import annotations

from typing import Any

from . import names


def _meta(obj: dict[str, Any]) -> dict[str, Any]:
    return obj.get("metadata") or {}


def managed(obj: dict[str, Any]) -> bool:
    """Labelled as made by this operator (``app.kubernetes.io/managed-by: harmony-operator``)."""
    return (_meta(obj).get("labels") or {}).get(names.MANAGED_BY) == names.OPERATOR


def owned_by(obj: dict[str, Any], owner_uid: str | None, model: str) -> bool:
    """Whether the child ``obj`` belongs to the SpeechModel ``model`` whose uid is ``owner_uid``."""
    refs = _meta(obj).get("ownerReferences") or []
    if owner_uid and any(ref.get("uid") == owner_uid for ref in refs):
        return True
    if not managed(obj) or (_meta(obj).get("labels") or {}).get(names.MODEL_LABEL) != model:
        return False
    return all(ref.get("kind") == "SpeechModel" and ref.get("name") == model
               and str(ref.get("apiVersion", "")).startswith(names.GROUP + "/") for ref in refs)


def describe(obj: dict[str, Any]) -> str:
    """``Service speech/harmony-router (managed by Helm)``: the object a conflict is about."""
    meta = _meta(obj)
    labels = meta.get("labels") or {}
    refs = meta.get("ownerReferences") or []
    if refs:
        whose = "owned by " + ", ".join(f"{r.get('kind')} {r.get('name')}" for r in refs)
    elif labels.get(names.MANAGED_BY):
        whose = f"managed by {labels[names.MANAGED_BY]}"
    else:
        whose = "not made by the operator"
    return f"{obj.get('kind', 'object')} {meta.get('namespace', '')}/{meta.get('name', '')} ({whose})"
