"""Threads are sized from the container's CPU limit (cgroup v2 and v1), not the node's cores."""

from __future__ import annotations

from pathlib import Path

import pytest

from services.core.runtime import cpus


@pytest.fixture(autouse=True)
def many_cores(monkeypatch):
    """A 64-core node, as far as the process's affinity mask goes."""
    monkeypatch.setattr(cpus, "affinity_cpus", lambda: 64)


def v2(tmp_path: Path, cpu_max: str | None, path: str = "/", parent_max: str | None = None) -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    leaf = root.joinpath(*[p for p in path.split("/") if p])
    leaf.mkdir(parents=True)
    if cpu_max is not None:
        (leaf / "cpu.max").write_text(cpu_max + "\n")
    if parent_max is not None:
        (leaf.parent / "cpu.max").write_text(parent_max + "\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text(f"0::{path}\n")
    return root, proc


def v1(tmp_path: Path, quota: str, period: str = "100000", path: str = "/") -> tuple[Path, Path]:
    root = tmp_path / "cgroup"
    leaf = (root / "cpu,cpuacct").joinpath(*[p for p in path.split("/") if p])
    leaf.mkdir(parents=True)
    (leaf / "cpu.cfs_quota_us").write_text(quota + "\n")
    (leaf / "cpu.cfs_period_us").write_text(period + "\n")
    proc = tmp_path / "proc-cgroup"
    proc.write_text(f"12:memory:{path}\n4:cpu,cpuacct:{path}\n1:name=systemd:{path}\n")
    return root, proc


@pytest.mark.parametrize("cpu_max, expected", [
    ("400000 100000", 4),      # a 4-CPU limit on a 64-core node
    ("150000 100000", 2),      # 1.5 CPUs: rounded up
    ("50000 100000", 1),       # 500m: at least one thread
    ("max 100000", 64),        # no limit: the node's cores
])
def test_cgroup_v2_cpu_max(tmp_path, cpu_max, expected):
    root, proc = v2(tmp_path, cpu_max)
    assert cpus.available_cpus({}, root, proc) == expected


def test_cgroup_v2_limit_on_a_parent_and_the_tightest_wins(tmp_path):
    root, proc = v2(tmp_path, "max 100000", path="/kubepods/pod1/ctr", parent_max="300000 100000")
    assert cpus.available_cpus({}, root, proc) == 3
    root, proc = v2(tmp_path / "b", "200000 100000", path="/kubepods/pod1/ctr", parent_max="800000 100000")
    assert cpus.available_cpus({}, root, proc) == 2


@pytest.mark.parametrize("quota, period, expected", [
    ("400000", "100000", 4),
    ("250000", "100000", 3),
    ("-1", "100000", 64),      # no quota
])
def test_cgroup_v1_cfs_quota(tmp_path, quota, period, expected):
    root, proc = v1(tmp_path, quota, period)
    assert cpus.available_cpus({}, root, proc) == expected


def test_cgroup_v1_host_path_seen_at_the_mount_root(tmp_path):
    """In a container the host's cgroup path does not exist under the mount: the mount's own files count."""
    root, proc = v1(tmp_path, "200000")
    proc.write_text("4:cpu,cpuacct:/kubepods/burstable/pod9/abc\n")
    assert cpus.available_cpus({}, root, proc) == 2


def test_no_cgroup_files_at_all(tmp_path):
    assert cpus.available_cpus({}, tmp_path / "none", tmp_path / "none-proc") == 64


def test_request_sizes_a_pod_without_a_limit(tmp_path):
    root, proc = v2(tmp_path, "max 100000")
    assert cpus.available_cpus({"HARMONY_CPU_REQUEST": "4"}, root, proc) == 4
    root, proc = v2(tmp_path / "b", "200000 100000")  # a limit wins over the request
    assert cpus.available_cpus({"HARMONY_CPU_REQUEST": "4"}, root, proc) == 2


def test_explicit_setting_and_the_affinity_cap(tmp_path, monkeypatch):
    root, proc = v2(tmp_path, "400000 100000")
    assert cpus.available_cpus({"HARMONY_CPUS": "6"}, root, proc) == 6
    assert cpus.available_cpus({"HARMONY_CPUS": "nonsense"}, root, proc) == 4
    monkeypatch.setattr(cpus, "affinity_cpus", lambda: 2)  # pinned to two cores: never more threads
    assert cpus.available_cpus({"HARMONY_CPUS": "6"}, root, proc) == 2
    assert cpus.available_cpus({}, root, proc) == 2


def test_threads_per_instance(monkeypatch):
    monkeypatch.setattr(cpus, "available_cpus", lambda: 4)
    assert cpus.threads_per_instance({}, 2) == 2
    assert cpus.threads_per_instance({}, 8) == 1
    assert cpus.threads_per_instance({"cpu_threads": 3}, 2) == 3
    assert cpus.threads_per_instance({"cpu_threads": 0}, 1) == 4


def test_this_machine():
    """Whatever runs the suite: a sane number, within the affinity mask."""
    n = cpus.available_cpus()
    assert 1 <= n <= 64
