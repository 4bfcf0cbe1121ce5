"""Pure builders of the model pods' security contexts (docs/kubernetes.md, "Hardened clusters").

The pods meet Kubernetes' ``restricted`` Pod Security Standard and OpenShift's ``restricted-v2`` SCC as built:
non-root (the image's numeric USER, 10001, so the kubelet can check it), seccomp ``RuntimeDefault``, no privilege
escalation, every capability dropped, a read-only root filesystem (the process writes only to its emptyDirs:
/tmp, bounded, and the model cache). No user, group or fsGroup is fixed unless the operator is told one
(``HARMONY_MODEL_RUN_AS_USER`` / ``_GROUP`` / ``HARMONY_MODEL_FS_GROUP``): OpenShift assigns them from the
namespace's range and refuses a pod that names one outside it.
"""

from __future__ import annotations

from typing import Any

from .settings import OperatorSettings


def pod_security_context(settings: OperatorSettings) -> dict[str, Any]:
    """The pod's securityContext. ``fsGroupChangePolicy: OnRootMismatch``: a volume whose root already has the
    group is not chowned again at every start (a recursive chown of a large weights volume takes minutes)."""
    context: dict[str, Any] = {"runAsNonRoot": True, "seccompProfile": {"type": "RuntimeDefault"},
                               "fsGroupChangePolicy": "OnRootMismatch"}
    ids = {"runAsUser": settings.run_as_user, "runAsGroup": settings.run_as_group, "fsGroup": settings.fs_group}
    context.update({k: v for k, v in ids.items() if v is not None})
    return context


def container_security_context() -> dict[str, Any]:
    """Every container's securityContext (the model and its ``pull`` init container)."""
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "runAsNonRoot": True,
            "capabilities": {"drop": ["ALL"]}, "seccompProfile": {"type": "RuntimeDefault"}}
