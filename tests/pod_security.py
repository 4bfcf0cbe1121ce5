"""A pod spec checked against Kubernetes' Pod Security Standards, ``baseline`` and ``restricted`` (the controls of
https://kubernetes.io/docs/concepts/security/pod-security-standards/, as of v1.33), and against what OpenShift's
``restricted-v2`` SCC adds (no fixed user, group or fsGroup outside the namespace's range). Each violation is
named by its control, so a failing test says which rule a pod broke."""

from __future__ import annotations

from typing import Any

# restricted: "Volume Types"
RESTRICTED_VOLUMES = {"configMap", "csi", "downwardAPI", "emptyDir", "ephemeral", "persistentVolumeClaim",
                      "projected", "secret"}
# baseline: "Capabilities"; restricted allows adding only NET_BIND_SERVICE
BASELINE_CAPABILITIES = {"AUDIT_WRITE", "CHOWN", "DAC_OVERRIDE", "FOWNER", "FSETID", "KILL", "MKNOD",
                         "NET_BIND_SERVICE", "SETFCAP", "SETGID", "SETPCAP", "SETUID", "SYS_CHROOT"}
# baseline: "Sysctls"
SAFE_SYSCTLS = {"kernel.shm_rmid_forced", "net.ipv4.ip_local_port_range", "net.ipv4.ip_unprivileged_port_start",
                "net.ipv4.tcp_syncookies", "net.ipv4.ping_group_range", "net.ipv4.ip_local_reserved_ports",
                "net.ipv4.tcp_keepalive_time", "net.ipv4.tcp_fin_timeout", "net.ipv4.tcp_keepalive_intvl",
                "net.ipv4.tcp_keepalive_probes"}
SELINUX_TYPES = {"", "container_t", "container_init_t", "container_kvm_t", "container_engine_t"}
VOLUME_KEYS = {"name"}


def containers(pod: dict[str, Any]) -> list[dict[str, Any]]:
    return [*pod.get("initContainers", []), *pod.get("containers", []), *pod.get("ephemeralContainers", [])]


def _baseline_pod(pod: dict[str, Any], annotations: dict[str, str]) -> list[str]:
    out = [f"host namespaces: {k}" for k in ("hostNetwork", "hostPID", "hostIPC") if pod.get(k)]
    if (pod.get("securityContext", {}).get("windowsOptions") or {}).get("hostProcess"):
        out.append("HostProcess: pod")
    for volume in pod.get("volumes", []):
        if "hostPath" in volume:
            out.append(f"HostPath volumes: {volume['name']}")
    for sysctl in pod.get("securityContext", {}).get("sysctls", []):
        if sysctl["name"] not in SAFE_SYSCTLS:
            out.append(f"sysctls: {sysctl['name']}")
    for key, value in annotations.items():
        if key.startswith("container.apparmor.security.beta.kubernetes.io/") and \
                not (value == "runtime/default" or value.startswith("localhost/")):
            out.append(f"AppArmor: {key}={value}")
    return out


def _baseline_context(where: str, context: dict[str, Any]) -> list[str]:
    out = []
    if context.get("privileged"):
        out.append(f"privileged containers: {where}")
    if (context.get("windowsOptions") or {}).get("hostProcess"):
        out.append(f"HostProcess: {where}")
    apparmor = (context.get("appArmorProfile") or {}).get("type")
    if apparmor not in (None, "RuntimeDefault", "Localhost"):
        out.append(f"AppArmor: {where} {apparmor}")
    selinux = context.get("seLinuxOptions") or {}
    if selinux.get("type", "") not in SELINUX_TYPES or selinux.get("user") or selinux.get("role"):
        out.append(f"SELinux: {where}")
    if context.get("procMount", "Default") != "Default":
        out.append(f"/proc mount type: {where}")
    if (context.get("seccompProfile") or {}).get("type") == "Unconfined":
        out.append(f"seccomp: {where} Unconfined")
    return out


def baseline(pod: dict[str, Any], annotations: dict[str, str] | None = None) -> list[str]:
    """The baseline profile's violations."""
    out = _baseline_pod(pod, annotations or {})
    out += _baseline_context("pod", pod.get("securityContext", {}))
    for c in containers(pod):
        context = c.get("securityContext", {})
        out += _baseline_context(c["name"], context)
        added = set((context.get("capabilities") or {}).get("add", []))
        out += [f"capabilities: {c['name']} adds {cap}" for cap in sorted(added - BASELINE_CAPABILITIES)]
        out += [f"host ports: {c['name']} {p['hostPort']}" for p in c.get("ports", []) if p.get("hostPort")]
    return out


def _restricted_container(c: dict[str, Any], pod_context: dict[str, Any]) -> list[str]:
    context, name = c.get("securityContext", {}), c["name"]
    out = []
    if context.get("allowPrivilegeEscalation") is not False:
        out.append(f"privilege escalation: {name} allowPrivilegeEscalation is not false")
    if not context.get("runAsNonRoot", pod_context.get("runAsNonRoot")):
        out.append(f"running as non-root: {name}")
    if context.get("runAsUser", pod_context.get("runAsUser")) == 0:
        out.append(f"running as non-root user: {name} runAsUser 0")
    seccomp = (context.get("seccompProfile") or pod_context.get("seccompProfile") or {}).get("type")
    if seccomp not in ("RuntimeDefault", "Localhost"):
        out.append(f"seccomp: {name} {seccomp or 'unset'}")
    capabilities = context.get("capabilities") or {}
    if "ALL" not in capabilities.get("drop", []):
        out.append(f"capabilities: {name} does not drop ALL")
    out += [f"capabilities: {name} adds {cap}" for cap in capabilities.get("add", []) if cap != "NET_BIND_SERVICE"]
    return out


def restricted(pod: dict[str, Any], annotations: dict[str, str] | None = None) -> list[str]:
    """The restricted profile's violations (baseline's included)."""
    out = baseline(pod, annotations)
    for volume in pod.get("volumes", []):
        kinds = set(volume) - VOLUME_KEYS
        out += [f"volume types: {volume['name']} is {k}" for k in sorted(kinds - RESTRICTED_VOLUMES)]
    pod_context = pod.get("securityContext", {})
    if pod_context.get("runAsUser") == 0:
        out.append("running as non-root user: pod runAsUser 0")
    for c in containers(pod):
        out += _restricted_container(c, pod_context)
    return out


def openshift_restricted(pod: dict[str, Any], annotations: dict[str, str] | None = None) -> list[str]:
    """OpenShift's restricted-v2 SCC beyond the restricted profile: runAsUser and fsGroup MustRunAsRange/MustRunAs
    the namespace's range, so a pod fixing them (a range unknown to the chart) is refused."""
    out = restricted(pod, annotations)
    contexts = [("pod", pod.get("securityContext", {}))] + [(c["name"], c.get("securityContext", {}))
                                                             for c in containers(pod)]
    for where, context in contexts:
        out += [f"SCC fixed id: {where} {k}" for k in ("runAsUser", "runAsGroup", "fsGroup") if k in context]
    return out


def unbounded_empty_dirs(pod: dict[str, Any]) -> list[str]:
    """emptyDirs without a sizeLimit: a process filling one fills the node's disk (not a PSS rule, a shared
    cluster's)."""
    return [v["name"] for v in pod.get("volumes", []) if "emptyDir" in v and not (v["emptyDir"] or {}).get("sizeLimit")]


def pod_templates(objects: list[dict[str, Any]]) -> list[tuple[str, dict[str, Any], dict[str, str]]]:
    """Every pod spec in a list of objects: (kind/name, spec, pod annotations)."""
    out = []
    for o in objects:
        kind, name = o.get("kind"), o.get("metadata", {}).get("name")
        if kind == "Pod":
            template = o
        elif kind in ("Deployment", "StatefulSet", "DaemonSet", "ReplicaSet", "Job"):
            template = o["spec"]["template"]
        elif kind == "CronJob":
            template = o["spec"]["jobTemplate"]["spec"]["template"]
        else:
            continue
        out.append((f"{kind}/{name}", template["spec"], template.get("metadata", {}).get("annotations") or {}))
    return out
