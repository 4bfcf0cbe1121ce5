"""The operator's own settings, from environment variables the Helm chart sets."""

from __future__ import annotations

import os
from dataclasses import dataclass

DEFAULT_IMAGE = "ghcr.io/harmony-speech/harmony:0.1.0"
DEFAULT_CUDA_IMAGE = "ghcr.io/harmony-speech/harmony:0.1.0-cuda"


def _optional_int(value: str) -> int | None:
    """An id from the environment: empty (or 'null', as Helm may render it) is None."""
    value = value.strip()
    return None if value in ("", "null", "<nil>") else int(value)


@dataclass(frozen=True)
class OperatorSettings:
    image: str = DEFAULT_IMAGE                 # model services without a GPU
    cuda_image: str = DEFAULT_CUDA_IMAGE       # model services with resources.gpu > 0
    image_pull_policy: str = "IfNotPresent"
    image_pull_secrets: tuple[str, ...] = ()
    cache_size_limit: str = "20Gi"             # emptyDir for joined weights (HARMONY_CACHE_DIR)
    # A ReadWriteMany PersistentVolumeClaim (in each model's namespace) mounted at /var/cache/harmony of every
    # model pod instead of the emptyDir: weights fetched once per cache, not once per pod. Empty: the emptyDir.
    cache_claim: str = ""
    # HF_ENDPOINT of the pods of models with an hf source: a Hub mirror (air-gapped clusters). Empty: the Hub.
    hf_endpoint: str = ""
    service_account: str = ""                  # of the model pods; empty: the namespace default
    # The model pods' user, group and fsGroup (docs/kubernetes.md, "Hardened clusters"): None leaves them to the
    # image's numeric USER (10001) on Kubernetes and to the namespace's range on OpenShift (restricted SCC).
    run_as_user: int | None = None
    run_as_group: int | None = None
    fs_group: int | None = None
    termination_grace_s: int = 90              # in-flight requests drain within this
    log_format: str = ""                       # the model services' logs: json or text; empty: their default (text)
    otlp_endpoint: str = ""                    # traces exported over OTLP/HTTP there; empty: no tracing
    reconcile_interval_s: float = 60.0         # timer that re-applies children and refreshes status
    retry_base_delay_s: float = 5.0            # first retry after an API error, doubled each time
    retry_max_delay_s: float = 300.0
    # Finalizers on SpeechModels/SpeechRoutes: off, so `helm uninstall` (which removes the operator
    # first) never leaves them hanging in Terminating; on, deleting one waits for the operator to
    # delete its children and update the router.
    finalizers: bool = False
    # Whether the cluster mounts image volumes (oci sources, volumes[].image): Kubernetes 1.33+ with the ImageVolume
    # feature. Off: such a SpeechModel is refused (InvalidSpec) instead of making pods that never start.
    image_volumes: bool = True
    # Where the voice service (task vc) keeps registered voices: the engine's database (a Secret's key
    # holding its URL) and an S3-compatible bucket (credentials: a Secret of AWS_* variables).
    database_secret: str = ""                  # Secret name; empty: no database URL is passed on
    database_secret_key: str = "url"
    object_store_url: str = ""                 # s3://bucket/prefix
    object_store_endpoint_url: str = ""
    object_store_region: str = ""
    object_store_secret: str = ""              # Secret with AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY
    # Where KEDA's Prometheus trigger (autoscaling.engine: keda) reads harmony_in_flight_requests.
    prometheus_url: str = "http://prometheus-operated.monitoring.svc:9090"
    scale_check_interval_s: float = 15.0       # how often idle scale-to-zero models are checked
    # How often the status of a model whose pods fetch their weights (Downloading) is refreshed from the running
    # pull's log (status.weights bytes): a running init container makes no pod event. 0: only the periodic pass.
    pull_progress_interval_s: float = 10.0
    # Leader election (leader.py): of several replicas only the holder of the Lease acts. Off: this one acts.
    leader_election: bool = False
    leader_lease_s: float = 15.0
    leader_renew_deadline_s: float = 10.0
    leader_retry_s: float = 2.0
    pod_name: str = ""                         # the candidate's identity (with a random suffix)
    pod_namespace: str = ""                    # where the Lease is; empty: the service account's namespace
    standby_health_port: int = 8080            # a standby's liveness endpoint (kopf serves it once leading); 0: none

    def retry_delay(self, retry: int) -> float:
        return min(self.retry_base_delay_s * 2 ** retry, self.retry_max_delay_s)

    @classmethod
    def from_env(cls, env: dict[str, str] | None = None) -> OperatorSettings:
        env = dict(os.environ if env is None else env)
        defaults = cls()

        def get(name: str, default: str) -> str:
            return env.get(name) or default

        return cls(
            image=get("HARMONY_MODEL_IMAGE", defaults.image),
            cuda_image=get("HARMONY_MODEL_IMAGE_CUDA", defaults.cuda_image),
            image_pull_policy=get("HARMONY_IMAGE_PULL_POLICY", defaults.image_pull_policy),
            image_pull_secrets=tuple(s.strip() for s in get("HARMONY_IMAGE_PULL_SECRETS", "").split(",") if s.strip()),
            cache_size_limit=get("HARMONY_CACHE_SIZE_LIMIT", defaults.cache_size_limit),
            cache_claim=get("HARMONY_CACHE_CLAIM", "").strip(),
            hf_endpoint=get("HARMONY_HF_ENDPOINT", "").strip(),
            service_account=get("HARMONY_MODEL_SERVICE_ACCOUNT", ""),
            run_as_user=_optional_int(get("HARMONY_MODEL_RUN_AS_USER", "")),
            run_as_group=_optional_int(get("HARMONY_MODEL_RUN_AS_GROUP", "")),
            fs_group=_optional_int(get("HARMONY_MODEL_FS_GROUP", "")),
            termination_grace_s=int(get("HARMONY_TERMINATION_GRACE_S", str(defaults.termination_grace_s))),
            log_format=get("HARMONY_MODEL_LOG_FORMAT", "").strip(),
            otlp_endpoint=get("HARMONY_OTLP_ENDPOINT", "").strip(),
            reconcile_interval_s=float(get("HARMONY_RECONCILE_INTERVAL_S", str(defaults.reconcile_interval_s))),
            retry_base_delay_s=float(get("HARMONY_RETRY_BASE_DELAY_S", str(defaults.retry_base_delay_s))),
            retry_max_delay_s=float(get("HARMONY_RETRY_MAX_DELAY_S", str(defaults.retry_max_delay_s))),
            finalizers=get("HARMONY_FINALIZERS", "false").strip().lower() in ("1", "true", "yes", "on"),
            image_volumes=get("HARMONY_IMAGE_VOLUMES", "true").strip().lower() in ("1", "true", "yes", "on"),
            database_secret=get("HARMONY_DATABASE_SECRET", ""),
            database_secret_key=get("HARMONY_DATABASE_SECRET_KEY", defaults.database_secret_key),
            object_store_url=get("HARMONY_OBJECT_STORE_URL", ""),
            object_store_endpoint_url=get("HARMONY_OBJECT_STORE_ENDPOINT_URL", ""),
            object_store_region=get("HARMONY_OBJECT_STORE_REGION", ""),
            object_store_secret=get("HARMONY_OBJECT_STORE_SECRET", ""),
            prometheus_url=get("HARMONY_PROMETHEUS_URL", defaults.prometheus_url),
            scale_check_interval_s=float(get("HARMONY_SCALE_CHECK_INTERVAL_S", str(defaults.scale_check_interval_s))),
            pull_progress_interval_s=float(get("HARMONY_PULL_PROGRESS_INTERVAL_S",
                                               str(defaults.pull_progress_interval_s))),
            leader_election=get("HARMONY_LEADER_ELECTION", "false").strip().lower() in ("1", "true", "yes", "on"),
            leader_lease_s=float(get("HARMONY_LEADER_LEASE_S", str(defaults.leader_lease_s))),
            leader_renew_deadline_s=float(get("HARMONY_LEADER_RENEW_DEADLINE_S",
                                              str(defaults.leader_renew_deadline_s))),
            leader_retry_s=float(get("HARMONY_LEADER_RETRY_S", str(defaults.leader_retry_s))),
            pod_name=get("HARMONY_POD_NAME", ""),
            pod_namespace=get("HARMONY_POD_NAMESPACE", ""),
            standby_health_port=int(get("HARMONY_STANDBY_HEALTH_PORT", str(defaults.standby_health_port))),
        )
