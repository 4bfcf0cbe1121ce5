"""Pure: where the weights of a model's pods stand, from the pods' ``pull`` init containers.

A SpeechModel with an hf or url source runs ``harmony pull`` as the init container ``pull`` of each pod
(:func:`harmony_operator.manifests.pull_container`). Its last progress line is its termination message
(``--termination-log``; with ``FallbackToLogsOnError`` the tail of its log when it wrote none). From the pods the
operator lists, :func:`pull_state` tells whether a pull is under way (the model's ``Downloading`` reason), has
failed (``PullFailed``), or is done, and the :class:`WeightsProgress` to show as ``status.weights``.

While a pull runs, its bytes are only in its log (``--json``: one progress object a line). The operator reads the
last lines of the log of one running pull per status pass (``PullState.tail_pod`` names it) and hands them back in
``logs``: that pull's bytes go into ``status.weights`` and the conditions' message. No I/O here.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import ValidationError

from services.core.contracts.specs import ModelSource
from services.core.contracts.wire import WeightsProgress
from services.weights.labels import describe, human

from . import names

PULL = "pull"  # the init container's name (manifests.PULL)
MESSAGE_MAX = 1000  # of a condition's message taken from a container's output

# Reasons a container waits with that need someone to act (a missing credentials Secret is
# CreateContainerConfigError): a failed pull, not one in progress.
WAITING_FAILURES = frozenset({"CrashLoopBackOff", "CreateContainerConfigError", "CreateContainerError",
                              "ErrImagePull", "ImagePullBackOff", "InvalidImageName", "RunContainerError"})

Phase = Literal["none", "downloading", "ready", "failed"]


@dataclass(frozen=True)
class PullState:
    """The pulls of a model's current pods: ``none`` (no pod has a pull to report), ``downloading`` (one runs or
    waits to run), ``ready`` (every one finished) or ``failed`` (one failed; ``message`` says which and why)."""

    phase: Phase
    source: str = ""  # source_label of the model's source
    message: str = ""
    weights: WeightsProgress | None = None
    # The pod whose running pull the message describes: the one log worth reading for its bytes ("": none).
    tail_pod: str = ""


def source_label(source: ModelSource) -> str:
    """The source as ``harmony pull`` names it in its progress (``WeightsProgress.source``): ``hf://org/name@revision``
    (and the file patterns), a URL without credentials or query, ``oci://reference``."""
    return describe(source)


def _progress(text: str) -> WeightsProgress | None:
    """One JSON object as WeightsProgress; the ``model`` key ``--json`` adds (the model's name) is dropped."""
    data = json.loads(text)
    if not isinstance(data, dict):
        return None
    data.pop("model", None)
    return WeightsProgress.model_validate(data)


def parse_message(text: str | None) -> WeightsProgress | None:
    """The last WeightsProgress in a termination message: the JSON object ``--termination-log`` writes, or the
    last such line of a log tail (``--json`` prints one a line, with the model's name as ``model``). None: no
    progress in it."""
    for line in reversed([line.strip() for line in (text or "").strip().splitlines()] or [""]):
        if not line.startswith("{"):
            continue
        try:
            progress = _progress(line)
        except (ValueError, ValidationError):
            continue
        if progress is not None:
            return progress
    try:  # one object written across several lines
        return _progress(text or "")
    except (ValueError, ValidationError):
        return None


def describe_progress(progress: WeightsProgress) -> str:
    """A running pull's progress in words: ``412.3 MB of 1.5 GB, 1/4 files``."""
    if progress.phase == "resolving" and not progress.bytesDone:
        return "resolving the revision"
    done = human(progress.bytesDone) + (f" of {human(progress.bytesTotal)}" if progress.bytesTotal else "")
    if progress.filesTotal:
        done += f", {progress.filesDone}/{progress.filesTotal} files"
    return done + (" (verifying)" if progress.phase == "verifying" else "")


def _tail(text: str | None) -> str:
    text = (text or "").strip()
    return text if len(text) <= MESSAGE_MAX else "..." + text[-MESSAGE_MAX:]


def _pull_status(pod: dict[str, Any]) -> dict[str, Any] | None:
    statuses = (pod.get("status") or {}).get("initContainerStatuses") or []
    return next((s for s in statuses if s.get("name") == PULL), None)


def _has_pull(pod: dict[str, Any]) -> bool:
    return any(c.get("name") == PULL for c in (pod.get("spec") or {}).get("initContainers") or [])


@dataclass(frozen=True)
class _PodPull:
    pod: str
    outcome: Literal["waiting", "running", "done", "failed"]
    detail: str = ""
    progress: WeightsProgress | None = None
    at: str = ""  # when it finished (RFC 3339 sorts as text)


def _failed(pod: str, terminated: dict[str, Any], label: str, what: str) -> _PodPull:
    progress = parse_message(terminated.get("message"))
    code = terminated.get("exitCode")
    why = (progress.message if progress is not None and progress.message else _tail(terminated.get("message"))) \
        or terminated.get("reason") or f"exit code {code}"
    if progress is None or progress.phase != "failed":
        progress = WeightsProgress(phase="failed", source=progress.source if progress else label,
                                   revision=progress.revision if progress else None, message=why)
    return _PodPull(pod, "failed", f"{what}: {why}", progress, terminated.get("finishedAt") or "")


def _live(log: str | None, label: str) -> WeightsProgress | None:
    """The progress a running pull last printed (None: nothing usable in its log lines). Only a pull still at
    work counts: a final line (ready, failed) is the termination message's to tell."""
    progress = parse_message(log)
    if progress is None or progress.phase not in ("resolving", "downloading", "verifying"):
        return None
    return progress if progress.source else progress.model_copy(update={"source": label})


def pod_pull(pod: dict[str, Any], label: str, log: str | None = None) -> _PodPull | None:
    """Where the ``pull`` init container of one pod stands (None: the pod has none). ``log``: the last lines of
    its log, read while it runs (its bytes)."""
    if not _has_pull(pod):
        return None
    name = (pod.get("metadata") or {}).get("name", "")
    status = _pull_status(pod)
    if status is None:  # not scheduled yet, or the kubelet has not reported
        return _PodPull(name, "waiting", "waiting for the pod to start")
    state, last = status.get("state") or {}, status.get("lastState") or {}
    terminated, waiting = state.get("terminated"), state.get("waiting")
    if terminated is not None:
        if terminated.get("exitCode") == 0:
            progress = parse_message(terminated.get("message")) or WeightsProgress(phase="ready", source=label)
            return _PodPull(name, "done", "", progress, terminated.get("finishedAt") or "")
        return _failed(name, terminated, label, f"pod {name}: harmony pull failed")
    if waiting is not None and waiting.get("reason") in WAITING_FAILURES:
        if last.get("terminated") and last["terminated"].get("exitCode") not in (None, 0):
            restarts = status.get("restartCount", 0)
            return _failed(name, last["terminated"], label,
                           f"pod {name}: harmony pull failed ({waiting['reason']}, {restarts} restarts)")
        why = f"{waiting['reason']}: {_tail(waiting.get('message'))}".rstrip(": ")
        return _PodPull(name, "failed", f"pod {name}: init container {PULL}: {why}",
                        WeightsProgress(phase="failed", source=label, message=why))
    if state.get("running") is not None:
        since, live = state["running"].get("startedAt", "?"), _live(log, label)
        detail = f"pod {name}: " + (f"{describe_progress(live)}, since {since}" if live is not None
                                    else f"fetching since {since}")
        before = last.get("terminated") or {}
        if before.get("exitCode") not in (None, 0):
            failure = parse_message(before.get("message"))
            why = failure.message if failure is not None and failure.message else _tail(before.get("message"))
            detail += f" (try {status.get('restartCount', 0) + 1}; the last one failed: {why or before.get('reason')})"
        return _PodPull(name, "running", detail, live)
    return _PodPull(name, "waiting", f"pod {name}: {(waiting or {}).get('reason') or 'waiting'}")


def current(pods: list[dict[str, Any]], spec_hash: str | None) -> list[dict[str, Any]]:
    """The pods of the model's current model file (spec hash annotation), not being deleted."""
    out = []
    for pod in pods:
        meta = pod.get("metadata") or {}
        if meta.get("deletionTimestamp"):
            continue
        if spec_hash is not None and (meta.get("annotations") or {}).get(names.SPEC_HASH) != spec_hash:
            continue
        out.append(pod)
    return out


def pull_state(pods: list[dict[str, Any]], source: ModelSource, spec_hash: str | None = None,
               logs: Mapping[str, str] | None = None) -> PullState:
    """The pulls of the pods of the current model file (``spec_hash``; None: every pod given).

    A failure anywhere wins (the message names the pod), then a pull under way, then done. ``weights``: the
    failure's progress; else the latest finished pull's (revision pinned, bytes); else, while one runs, what its
    log last said (``logs``: pod name -> the last lines of its running pull's log: bytes done and total, the
    revision once resolved), or a ``downloading`` progress naming the source. ``tail_pod``: the running pull whose
    log would give those bytes (read it, and call again with it)."""
    label = source_label(source)
    logs = logs or {}
    seen = [p for p in (pod_pull(pod, label, logs.get((pod.get("metadata") or {}).get("name", "")))
                        for pod in current(pods, spec_hash)) if p is not None]
    if not seen:
        return PullState("none", label)
    failed = sorted((p for p in seen if p.outcome == "failed"), key=lambda p: p.pod)
    done = sorted((p for p in seen if p.outcome == "done"), key=lambda p: (p.at, p.pod))
    busy = sorted((p for p in seen if p.outcome in ("running", "waiting")), key=lambda p: (p.outcome != "running",
                                                                                          p.pod))
    if failed:
        more = f" (and {len(failed) - 1} more pods)" if len(failed) > 1 else ""
        return PullState("failed", label, failed[0].detail + more, failed[0].progress)
    weights = done[-1].progress if done else None
    if busy:
        message = f"fetching the weights of {label}: {busy[0].detail}"
        live = busy[0].progress
        return PullState("downloading", label, message,
                         weights or live or WeightsProgress(phase="downloading", source=label,
                                                            message=busy[0].detail),
                         busy[0].pod if busy[0].outcome == "running" else "")
    return PullState("ready", label, f"{len(done)} pods fetched {label}", weights)
