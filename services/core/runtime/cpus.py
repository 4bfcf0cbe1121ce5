"""How many CPUs this process may use: the container's CPU limit, not the node's cores.

``os.cpu_count()`` is the node's core count: on a 64-core node a pod limited to 4 CPUs would size
its thread pools for 64 and thrash. The answer, smallest first:

1. ``$HARMONY_CPUS`` (set by hand: it wins over everything but the affinity mask);
2. the cgroup CPU quota: cgroup v2 ``cpu.max`` (``QUOTA PERIOD``, or ``max``), cgroup v1
   ``cpu.cfs_quota_us`` / ``cpu.cfs_period_us`` (-1 is no limit), rounded up, read along the
   process's cgroup path up to the root (a limit may sit on a parent);
3. with no quota, ``$HARMONY_CPU_REQUEST``: the pod's CPU request, which the operator passes through
   the downward API (``resourceFieldRef: requests.cpu``, rounded up) when the model sets
   ``resources.cpu``: a pod with only a request is guaranteed that much, not the node;
4. the CPUs of the process's affinity mask (``os.sched_getaffinity``), else ``os.cpu_count()``.

Every result is capped by the affinity mask and is at least 1.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from pathlib import Path

CGROUP_ROOT = Path("/sys/fs/cgroup")
PROC_CGROUP = Path("/proc/self/cgroup")


def _read(path: Path) -> str | None:
    try:
        return path.read_text().strip()
    except OSError:
        return None


def _positive_int(text: str | None) -> int | None:
    try:
        value = math.ceil(float(text)) if text else 0
    except ValueError:
        return None
    return value if value > 0 else None


def affinity_cpus() -> int:
    """CPUs the scheduler lets this process run on."""
    try:
        return len(os.sched_getaffinity(0)) or 1
    except (AttributeError, OSError):
        return os.cpu_count() or 1


def _cgroup_paths(proc_cgroup: Path) -> dict[str, str]:
    """controller -> path, from ``/proc/self/cgroup`` (``''`` is the v2 unified hierarchy)."""
    paths: dict[str, str] = {}
    for line in (_read(proc_cgroup) or "").splitlines():
        parts = line.split(":", 2)
        if len(parts) == 3:
            for controller in parts[1].split(",") if parts[1] else [""]:
                paths[controller] = parts[2]
    return paths


def _ancestors(mount: Path, relative: str) -> list[Path]:
    """``mount/relative`` and each of its parents up to ``mount`` (in a container's cgroup namespace the
    path is often ``/``, or the host's path, which the container sees mounted at ``mount`` itself)."""
    parts = [p for p in relative.split("/") if p]
    return [mount.joinpath(*parts[:n]) for n in range(len(parts), -1, -1)]


def _v2_quota(directory: Path) -> float | None:
    text = _read(directory / "cpu.max")
    if not text:
        return None
    fields = text.split()
    if fields[0] == "max" or len(fields) != 2:
        return None
    quota, period = float(fields[0]), float(fields[1])
    return quota / period if quota > 0 and period > 0 else None


def _v1_quota(directory: Path) -> float | None:
    quota, period = _read(directory / "cpu.cfs_quota_us"), _read(directory / "cpu.cfs_period_us")
    try:
        q, p = float(quota or -1), float(period or 0)
    except ValueError:
        return None
    return q / p if q > 0 and p > 0 else None


def cgroup_cpu_limit(root: Path = CGROUP_ROOT, proc_cgroup: Path = PROC_CGROUP) -> float | None:
    """The tightest CPU quota on this process's cgroup path, in CPUs; None without one."""
    paths = _cgroup_paths(proc_cgroup)
    candidates: list[tuple[Path, object]] = []
    if "" in paths or (root / "cpu.max").exists():
        candidates += [(d, _v2_quota) for d in _ancestors(root, paths.get("", "/"))]
    v1 = paths.get("cpu", paths.get("cpuacct", "/"))
    for mount in (root / "cpu,cpuacct", root / "cpu", root / "cpuacct,cpu"):
        candidates += [(d, _v1_quota) for d in _ancestors(mount, v1)]
    limits = [q for q in (reader(d) for d, reader in candidates) if q]  # type: ignore[operator]
    return min(limits) if limits else None


def available_cpus(env: Mapping[str, str] | None = None, root: Path = CGROUP_ROOT,
                   proc_cgroup: Path = PROC_CGROUP) -> int:
    """The CPUs this process should size its thread pools for (see the module's docstring)."""
    env = os.environ if env is None else env
    cap = affinity_cpus()
    explicit = _positive_int(env.get("HARMONY_CPUS"))
    if explicit:
        return min(cap, explicit)
    limit = cgroup_cpu_limit(root, proc_cgroup)
    if limit:
        return max(1, min(cap, math.ceil(limit)))
    request = _positive_int(env.get("HARMONY_CPU_REQUEST"))
    return min(cap, request) if request else cap


def threads_per_instance(options: dict, instances: int) -> int:
    """A model's ``cpu_threads`` option, else an equal share of the available CPUs per concurrently running
    batch (``batching.instances``), at least 1."""
    explicit = int(options.get("cpu_threads", 0) or 0)
    return explicit or max(1, available_cpus() // max(1, instances))
