"""The Helm chart: lints, renders valid objects, carries the CRDs, and agrees with the images and defaults."""

from __future__ import annotations

import base64
import copy
import re
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml

from harmony_operator.settings import DEFAULT_CUDA_IMAGE, DEFAULT_IMAGE, OperatorSettings
from services.core.contracts.crd import crds, openapi_to_jsonschema
from services.core.contracts.specs import SpeechModelSpec
from services.serve import default_config
from tests.helm import helm, run  # noqa: F401 (helm is a fixture)

ROOT = Path(__file__).resolve().parents[2]
CHART = ROOT / "charts" / "harmony"
CUSTOM = {"harmony.dev", "monitoring.coreos.com"}  # kinds kubernetes-validate cannot know

EVERYTHING = {
    "catalog": {"enabled": True},
    "metrics": {"serviceMonitor": {"enabled": True}, "prometheusAdapter": {"rules": True}},
    "router": {"ingress": {"enabled": True, "className": "nginx",
                           "tls": [{"secretName": "harmony-tls", "hosts": ["harmony.example.com"]}]}},
    "operator": {"watchNamespaces": ["speech", "speech-gpu"]},
    "imagePullSecrets": [{"name": "regcred"}, {"name": "mirror"}],
}


def render(helm: Path, tmp_path: Path, values: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    args = ["template", "harmony", str(CHART), "--namespace", "speech", "--include-crds"]
    if values:
        path = tmp_path / "values.yaml"
        path.write_text(yaml.safe_dump(values))
        args += ["--values", str(path)]
    return [d for d in yaml.safe_load_all(run(helm, *args)) if d]


def find(objects: list[dict[str, Any]], kind: str, name: str | None = None) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and (name is None or o["metadata"]["name"] == name)]


@pytest.mark.parametrize("values", [None, EVERYTHING, {"operator": {"clusterWide": True}}],
                         ids=["defaults", "everything", "cluster-wide"])
def test_lint_strict(helm: Path, tmp_path: Path, values: dict[str, Any] | None) -> None:
    args = ["lint", "--strict", str(CHART)]
    if values:
        (tmp_path / "values.yaml").write_text(yaml.safe_dump(values))
        args += ["--values", str(tmp_path / "values.yaml")]
    run(helm, *args)


@pytest.mark.parametrize("values", [None, EVERYTHING, {"operator": {"clusterWide": True}}],
                         ids=["defaults", "everything", "cluster-wide"])
def test_rendered_objects_are_valid(helm: Path, tmp_path: Path, values: dict[str, Any] | None) -> None:
    objects = render(helm, tmp_path, values)
    assert objects
    for obj in objects:
        if obj["apiVersion"].split("/")[0] in CUSTOM:
            continue
        kubernetes_validate.validate(obj, "1.33", strict=True)


def test_chart_crds_equal_crds_dir(helm: Path, tmp_path: Path) -> None:
    rendered = find(render(helm, tmp_path), "CustomResourceDefinition")
    committed = [yaml.safe_load(p.read_text()) for p in sorted((ROOT / "crds").glob("*.yaml"))]
    for crd in rendered:  # what the template adds: kept on uninstall, the chart's labels
        assert crd["metadata"].pop("annotations") == {"helm.sh/resource-policy": "keep"}
        labels = crd["metadata"]["labels"]
        crd["metadata"]["labels"] = {"app.kubernetes.io/part-of": labels["app.kubernetes.io/part-of"]}
    assert sorted(rendered, key=lambda c: c["metadata"]["name"]) == committed
    for path in (ROOT / "crds").glob("*.yaml"):
        assert (CHART / "files" / "crds" / path.name).read_bytes() == path.read_bytes()


def test_catalog_renders_the_embedded_defaults_as_speech_models(helm: Path, tmp_path: Path) -> None:
    assert not find(render(helm, tmp_path), "SpeechModel")  # off unless enabled
    models = find(render(helm, tmp_path, {"catalog": {"enabled": True}}), "SpeechModel")
    schema = openapi_to_jsonschema(crds()["speechmodels.yaml"]["spec"]["versions"][0]["schema"]["openAPIV3Schema"])
    for model in models:
        jsonschema.Draft4Validator(schema).validate(model)
        assert model["metadata"]["namespace"] == "speech"
    defaults = {m.name: m for m in default_config().models}
    assert {m["metadata"]["name"] for m in models} == set(defaults), \
        "charts/harmony/values.yaml catalog.models must list the models of services/defaults/serve.yaml"
    # The same models (weights, names, backend options); sizing and batching are tuned per place.
    cluster_only = {"replicas", "autoscaling", "resources", "batching"}
    for model in models:
        spec = SpeechModelSpec.model_validate(model["spec"])
        expected = defaults[model["metadata"]["name"]]
        assert spec.model_dump(exclude=cluster_only) == expected.model_dump(exclude=cluster_only | {"name"})
    assert defaults["whisper-base"].aliases == ["whisper-1", "gpt-4o-transcribe", "gpt-4o-mini-transcribe"]

    one = find(render(helm, tmp_path, {"catalog": {"enabled": True,
                                                   "models": {"whisper-base": {"enabled": False}}}}), "SpeechModel")
    assert "whisper-base" not in [m["metadata"]["name"] for m in one] and "whisper-tiny.en" in \
        [m["metadata"]["name"] for m in one]


def rules(role: dict[str, Any]) -> dict[tuple[str, str], set[str]]:
    out = {}
    for rule in role["rules"]:
        for group in rule["apiGroups"]:
            for resource in rule["resources"]:
                out[group, resource] = set(rule["verbs"])
    return out


def test_operator_rbac_is_least_privilege(helm: Path, tmp_path: Path) -> None:
    objects = render(helm, tmp_path, EVERYTHING)
    roles = find(objects, "Role", "harmony-operator")
    assert sorted(r["metadata"]["namespace"] for r in roles) == ["speech", "speech-gpu"]
    assert not find(objects, "ClusterRole") and not find(objects, "ClusterRoleBinding")
    granted = rules(roles[0])
    for (group, resource), verbs in granted.items():
        assert "*" not in verbs and "*" not in resource and "*" != group
        assert resource not in ("secrets", "pods/exec", "pods/attach", "customresourcedefinitions", "namespaces")
    assert granted["", "pods"] == {"list", "watch"}  # the model pods' pulls (status.weights), read only
    assert granted["", "pods/log"] == {"get"}  # a running pull's bytes (status.weights), read only
    assert granted["harmony.dev", "speechmodels"] == {"get", "list", "watch", "patch"}
    assert granted["harmony.dev", "speechmodels/status"] == {"patch"}
    # get: the operator reads an object before patching it, and leaves one that is not its own.
    assert granted["apps", "deployments"] == {"get", "list", "watch", "create", "patch"}
    assert granted["autoscaling", "horizontalpodautoscalers"] == {"get", "list", "watch", "create", "patch", "delete"}
    assert granted["", "events"] == {"create"}
    for binding in find(objects, "RoleBinding", "harmony-operator"):
        assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "harmony-operator", "namespace": "speech"}]
        assert binding["roleRef"]["name"] == "harmony-operator"

    # Finalizers (off by default) delete the children themselves: only then may the operator delete them.
    finalizing = rules(find(render(helm, tmp_path, {"operator": {"finalizers": True}}), "Role")[0])
    assert finalizing["apps", "deployments"] == {"get", "list", "watch", "create", "patch", "delete"}
    assert finalizing["", "services"] == finalizing["", "configmaps"] == finalizing["apps", "deployments"]

    wide = render(helm, tmp_path, {"operator": {"clusterWide": True}})
    assert not find(wide, "Role", "harmony-operator") and rules(find(wide, "ClusterRole")[0]) == granted
    operator = find(wide, "Deployment", "harmony-operator")[0]["spec"]["template"]["spec"]["containers"][0]
    assert operator["args"] == ["--all-namespaces"]


def test_operator_runs_kopf_with_the_model_images(helm: Path, tmp_path: Path) -> None:
    objects = render(helm, tmp_path, EVERYTHING)
    pod = find(objects, "Deployment", "harmony-operator")[0]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"][:6] == ["kopf", "run", "--standalone", "--log-format=json", "-m",
                                        "harmony_operator.handlers"]  # JSON logs by default (observability.logFormat)
    assert container["args"] == ["--namespace=speech", "--namespace=speech-gpu"]
    env = {e["name"]: e["value"] for e in container["env"]}
    assert env["HARMONY_MODEL_IMAGE"] == DEFAULT_IMAGE == container["image"]
    assert env["HARMONY_MODEL_IMAGE_CUDA"] == DEFAULT_CUDA_IMAGE
    assert env["HARMONY_IMAGE_PULL_SECRETS"] == "regcred,mirror"
    assert pod["serviceAccountName"] == "harmony-operator"


def test_router_mounts_the_operator_configmap(helm: Path, tmp_path: Path) -> None:
    objects = render(helm, tmp_path, EVERYTHING)
    pod = find(objects, "Deployment", "harmony-router")[0]["spec"]["template"]["spec"]
    container = pod["containers"][0]
    assert container["command"] == ["python", "-m", "services.router_main"]
    assert "--models-file=/etc/harmony/models.yaml" in container["args"]
    volume = next(v for v in pod["volumes"] if v["name"] == "models")
    assert volume["configMap"] == {"name": "harmony-router-models", "optional": True}
    assert pod["automountServiceAccountToken"] is True  # router.wakeModels: see test_router_may_only_wake_models
    ingress = find(objects, "Ingress")[0]
    assert ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["name"] == "harmony-router"
    monitor = find(objects, "ServiceMonitor")[0]
    assert monitor["spec"]["selector"]["matchExpressions"][0]["values"] == ["harmony-router", "harmony-model"]
    assert not find(render(helm, tmp_path), "Ingress") and not find(render(helm, tmp_path), "ServiceMonitor")


def test_pods_match_the_image_user(helm: Path, tmp_path: Path) -> None:
    for dockerfile in ("Dockerfile", "Dockerfile.cuda"):
        text = (ROOT / "docker" / dockerfile).read_text()
        assert re.search(r"^USER 10001:10001$", text, re.M), dockerfile
        assert '"kopf==1.45.2"' in text
    for deployment in find(render(helm, tmp_path), "Deployment"):
        pod = deployment["spec"]["template"]["spec"]
        assert "runAsUser" not in pod["securityContext"]  # the image's 10001, or OpenShift's range
        assert pod["securityContext"]["runAsNonRoot"] is True
        for container in pod["containers"]:
            assert container["securityContext"]["readOnlyRootFilesystem"] is True
            assert container["securityContext"]["capabilities"] == {"drop": ["ALL"]}


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {e["name"]: e for e in container.get("env", [])}


def test_api_keys_on_by_default_with_the_database_url_from_a_secret(helm: Path, tmp_path: Path) -> None:
    objects = render(helm, tmp_path)
    router = find(objects, "Deployment", "harmony-router")[0]["spec"]["template"]["spec"]["containers"][0]
    assert "--require-auth" in router["args"] and "--realtime-sessions-per-key=16" in router["args"]
    assert env_of(router)["HARMONY_DATABASE_URL"]["valueFrom"] == {
        "secretKeyRef": {"name": "harmony-database", "key": "url"}}  # a Secret the user creates
    assert not find(objects, "Secret")
    operator = find(objects, "Deployment", "harmony-operator")[0]["spec"]["template"]["spec"]["containers"][0]
    assert env_of(operator)["HARMONY_DATABASE_SECRET"]["value"] == "harmony-database"

    created = render(helm, tmp_path, {"database": {"url": "postgresql://h:pw@pg:5432/harmony"},
                                      "auth": {"required": False}})
    secret = find(created, "Secret", "harmony-database")[0]
    kubernetes_validate.validate(secret, "1.33", strict=True)
    assert base64.b64decode(secret["data"]["url"]).decode() == "postgresql://h:pw@pg:5432/harmony"
    router = find(created, "Deployment", "harmony-router")[0]["spec"]["template"]["spec"]["containers"][0]
    assert "--require-auth" not in router["args"]
    assert env_of(router)["HARMONY_DATABASE_URL"]["valueFrom"]["secretKeyRef"]["name"] == "harmony-database"

    mine = render(helm, tmp_path, {"database": {"existingSecret": "pg-app", "secretKey": "uri"}})
    router = find(mine, "Deployment", "harmony-router")[0]["spec"]["template"]["spec"]["containers"][0]
    assert env_of(router)["HARMONY_DATABASE_URL"]["valueFrom"] == {"secretKeyRef": {"name": "pg-app", "key": "uri"}}


STORE = {"voices": {"objectStore": {"url": "s3://voices/harmony", "endpointUrl": "http://minio.storage:9000",
                                    "region": "eu-west-1"}}}


@pytest.mark.parametrize("credentials, secret", [({"existingSecret": "s3-creds"}, "s3-creds"),
                                                 ({"accessKeyId": "AK", "secretAccessKey": "SK"},
                                                  "harmony-object-store")], ids=["existing", "created"])
def test_voice_object_store_reaches_the_operator(helm: Path, tmp_path: Path, credentials: dict[str, str],
                                                 secret: str) -> None:
    values = copy.deepcopy(STORE)
    values["voices"]["objectStore"].update(credentials)
    run(helm, "lint", "--strict", str(CHART), "--values", _write(tmp_path, values))
    objects = render(helm, tmp_path, values)
    operator = find(objects, "Deployment", "harmony-operator")[0]["spec"]["template"]["spec"]["containers"][0]
    env = {name: e["value"] for name, e in env_of(operator).items()}
    assert env["HARMONY_OBJECT_STORE_URL"] == "s3://voices/harmony"
    assert env["HARMONY_OBJECT_STORE_ENDPOINT_URL"] == "http://minio.storage:9000"
    assert env["HARMONY_OBJECT_STORE_REGION"] == "eu-west-1" and env["HARMONY_OBJECT_STORE_SECRET"] == secret
    created = find(objects, "Secret")
    if "accessKeyId" in credentials:
        kubernetes_validate.validate(created[0], "1.33", strict=True)
        assert base64.b64decode(created[0]["data"]["AWS_SECRET_ACCESS_KEY"]).decode() == "SK"
    else:
        assert not created
    settings = OperatorSettings.from_env(env)  # what the operator makes of it
    assert (settings.object_store_url, settings.object_store_secret) == ("s3://voices/harmony", secret)


def _write(tmp_path: Path, values: dict[str, Any]) -> str:
    path = tmp_path / "lint-values.yaml"
    path.write_text(yaml.safe_dump(values))
    return str(path)


def test_router_may_only_wake_models(helm: Path, tmp_path: Path) -> None:
    """Scale from zero: the router's one API right is to renew demand Leases in the models' namespaces (never to
    write SpeechModels); without router.wakeModels it has none and no token."""
    objects = render(helm, tmp_path)
    role = find(objects, "Role", "harmony-router-wake")[0]
    assert role["metadata"]["namespace"] == "speech"
    assert rules(role) == {("coordination.k8s.io", "leases"): {"create", "patch"}}
    binding = find(objects, "RoleBinding", "harmony-router-wake")[0]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "harmony-router", "namespace": "speech"}]
    router = find(objects, "Deployment", "harmony-router")[0]["spec"]["template"]["spec"]
    assert "--wake-models" in router["containers"][0]["args"]
    # In every namespace the router serves (its Leases go where the models are); a selector: any namespace.
    listed = render(helm, tmp_path, {"router": {"modelNamespaces": ["team-a", "team-b"]}})
    assert sorted(r["metadata"]["namespace"] for r in find(listed, "Role", "harmony-router-wake")) == \
        ["team-a", "team-b"]
    selected = render(helm, tmp_path, {"router": {"modelNamespaceSelector": {"matchLabels": {"team": "speech"}}}})
    assert not find(selected, "Role", "harmony-router-wake")
    assert rules(find(selected, "ClusterRole", "harmony-router-wake-speech")[0]) == \
        {("coordination.k8s.io", "leases"): {"create", "patch"}}

    off = render(helm, tmp_path, {"router": {"wakeModels": False, "watchEndpoints": False, "watchModels": False}})
    assert not find(off, "Role", "harmony-router-wake") and not find(off, "RoleBinding", "harmony-router-wake")
    router = find(off, "Deployment", "harmony-router")[0]["spec"]["template"]["spec"]
    assert router["automountServiceAccountToken"] is False
    assert "--wake-models" not in router["containers"][0]["args"]


def test_router_may_only_read_endpointslices_for_per_pod_balancing(helm: Path, tmp_path: Path) -> None:
    """Per-pod balancing and the model table: the router's service account may list and watch EndpointSlices
    and the ConfigMap harmony-router-models of the namespaces it serves (nothing else, nowhere else);
    router.watchEndpoints=false drops that rule and the flag."""
    objects = render(helm, tmp_path)
    role = find(objects, "Role", "harmony-router-endpoints")[0]
    assert role["metadata"]["namespace"] == "speech"
    assert rules(role) == {("discovery.k8s.io", "endpointslices"): {"list", "watch"},
                           ("", "configmaps"): {"list", "watch"}}
    assert [r.get("resourceNames") for r in role["rules"] if "configmaps" in r["resources"]] == [
        ["harmony-router-models"]]
    binding = find(objects, "RoleBinding", "harmony-router-endpoints")[0]
    assert binding["subjects"] == [{"kind": "ServiceAccount", "name": "harmony-router", "namespace": "speech"}]
    assert binding["roleRef"]["name"] == "harmony-router-endpoints"
    router = find(objects, "Deployment", "harmony-router")[0]["spec"]["template"]["spec"]
    assert {"--watch-endpoints", "--watch-models", "--model-namespaces=speech"} <= set(router["containers"][0]["args"])

    off = render(helm, tmp_path, {"router": {"watchEndpoints": False}})
    assert rules(find(off, "Role", "harmony-router-endpoints")[0]) == {("", "configmaps"): {"list", "watch"}}
    router = find(off, "Deployment", "harmony-router")[0]["spec"]["template"]["spec"]
    assert "--watch-endpoints" not in router["containers"][0]["args"]
    assert router["automountServiceAccountToken"] is True  # router.wakeModels still needs its token
    none = render(helm, tmp_path, {"router": {"watchEndpoints": False, "watchModels": False}})
    assert not find(none, "Role", "harmony-router-endpoints")
    assert not find(none, "RoleBinding", "harmony-router-endpoints")


def test_operator_may_manage_keda_scaled_objects_and_knows_prometheus(helm: Path, tmp_path: Path) -> None:
    objects = render(helm, tmp_path, {"autoscaling": {"prometheusUrl": "http://prom.mon:9090"}})
    granted = rules(find(objects, "Role", "harmony-operator")[0])
    # get: the operator reads an object before it patches or deletes it (only its own)
    assert granted["keda.sh", "scaledobjects"] == {"get", "create", "patch", "delete"}
    operator = find(objects, "Deployment", "harmony-operator")[0]["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in operator["env"]}
    assert env["HARMONY_PROMETHEUS_URL"] == "http://prom.mon:9090"
    assert float(env["HARMONY_SCALE_CHECK_INTERVAL_S"]) > 0


def test_prometheus_adapter_rules_serve_the_autoscaling_metrics(helm: Path, tmp_path: Path) -> None:
    objects = render(helm, tmp_path, EVERYTHING)
    configmap = find(objects, "ConfigMap", "harmony-prometheus-adapter")[0]
    config = yaml.safe_load(configmap["data"]["config.yaml"])
    names = [rule["name"]["as"] for rule in config["rules"]]
    # the model pods' (SpeechModel HPAs), the router pods' (the router's HPA, router.autoscaling.targetInFlight)
    assert names == ["harmony_in_flight_requests", "harmony_queue_depth", "harmony_http_in_flight_requests"]
    for rule in config["rules"]:
        assert rule["seriesQuery"].startswith(rule["name"]["as"] + "{")
        assert rule["resources"]["overrides"]["pod"] == {"resource": "pod"}
        assert "<<.Series>>" in rule["metricsQuery"]
    assert not find(render(helm, tmp_path), "ConfigMap", "harmony-prometheus-adapter")


def test_pods_log_json_and_trace_where_asked(helm: Path, tmp_path: Path) -> None:
    """observability: JSON logs by default for the router, the operator and (through it) the model pods; an OTLP
    endpoint reaches the router and the operator's model pods only when set."""
    def env(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
        container = find(objects, "Deployment", name)[0]["spec"]["template"]["spec"]["containers"][0]
        return {e["name"]: e.get("value") for e in container["env"]}

    plain = render(helm, tmp_path)
    assert env(plain, "harmony-router")["HARMONY_LOG_FORMAT"] == "json"
    assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in env(plain, "harmony-router")
    assert env(plain, "harmony-operator")["HARMONY_MODEL_LOG_FORMAT"] == "json"
    assert env(plain, "harmony-operator")["HARMONY_OTLP_ENDPOINT"] == ""
    traced = render(helm, tmp_path, {"observability": {"logFormat": "text", "otlpEndpoint": "http://otel:4318"}})
    assert env(traced, "harmony-router")["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://otel:4318"
    assert env(traced, "harmony-router")["HARMONY_LOG_FORMAT"] == "text"
    assert env(traced, "harmony-operator")["HARMONY_OTLP_ENDPOINT"] == "http://otel:4318"
    operator = find(traced, "Deployment", "harmony-operator")[0]["spec"]["template"]["spec"]["containers"][0]
    assert "--log-format=plain" in operator["command"]
