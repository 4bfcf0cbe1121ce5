{{/* Names, labels and images shared by the templates. */}}

{{- define "harmony.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "harmony.operatorName" -}}
{{- printf "%s-operator" (include "harmony.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "harmony.routerName" -}}
{{- printf "%s-router" (include "harmony.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "harmony.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: harmony
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
{{- end -}}

{{- define "harmony.operatorSelector" -}}
app.kubernetes.io/name: harmony-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "harmony.routerSelector" -}}
app.kubernetes.io/name: harmony-router
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* The Secret holding the database URL: the one the chart creates from database.url, or database.existingSecret. */}}
{{- define "harmony.databaseSecret" -}}
{{- if .Values.database.url -}}
{{- printf "%s-database" (include "harmony.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- required "database.existingSecret or database.url is required: the router keeps API keys in the database" .Values.database.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* The Secret holding the object store's AWS_* credentials, if any. */}}
{{- define "harmony.objectStoreSecret" -}}
{{- if .Values.voices.objectStore.accessKeyId -}}
{{- printf "%s-object-store" (include "harmony.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- .Values.voices.objectStore.existingSecret -}}
{{- end -}}
{{- end -}}

{{/* The model cache's claim: modelCache.existingClaim, or the one the chart creates (modelCache.enabled), or none. */}}
{{- define "harmony.modelCacheClaim" -}}
{{- if .Values.modelCache.existingClaim -}}
{{- .Values.modelCache.existingClaim -}}
{{- else if .Values.modelCache.enabled -}}
{{- printf "%s-model-cache" (include "harmony.fullname" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "harmony.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) -}}
{{- end -}}

{{- define "harmony.cudaImage" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.cudaTag | default (printf "%s-cuda" .Chart.AppVersion)) -}}
{{- end -}}

{{/* The namespaces the operator serves: watchNamespaces, or the release namespace. */}}
{{- define "harmony.watchNamespaces" -}}
{{- if .Values.operator.watchNamespaces -}}
{{- join "," .Values.operator.watchNamespaces -}}
{{- else -}}
{{- .Release.Namespace -}}
{{- end -}}
{{- end -}}

{{/* The pod and container security settings every Harmony pod uses (uid 10001: docker/Dockerfile). */}}
{{- define "harmony.podSecurityContext" -}}
runAsNonRoot: true
{{- with .Values.podSecurity }}
{{- if not (kindIs "invalid" .runAsUser) }}
runAsUser: {{ .runAsUser }}
{{- end }}
{{- if not (kindIs "invalid" .runAsGroup) }}
runAsGroup: {{ .runAsGroup }}
{{- end }}
{{- if not (kindIs "invalid" .fsGroup) }}
fsGroup: {{ .fsGroup }}
{{- end }}
{{- end }}
fsGroupChangePolicy: OnRootMismatch
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "harmony.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
runAsNonRoot: true
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- /*
Least privilege: the operator watches and patches SpeechModels and SpeechRoutes (and their
status), creates and patches what a SpeechModel owns, deletes only HPAs (autoscaling turned
off), and posts Events. Nothing else: no Secrets, no Pods, no cluster-scoped resources.
*/ -}}
{{- define "harmony.operatorRules" }}
rules:
  - apiGroups: [harmony.dev]
    resources: [speechmodels]
    verbs: [get, list, watch, patch]
  - apiGroups: [harmony.dev]
    resources: [speechroutes]
    verbs: [list, watch, patch]
  - apiGroups: [harmony.dev]
    resources: [speechmodels/status, speechroutes/status]
    verbs: [patch]
  # ownerReferences with blockOwnerDeletion (kopf.adopt): OwnerReferencesPermissionEnforcement (on in OpenShift)
  # wants update on the owner's finalizers.
  - apiGroups: [harmony.dev]
    resources: [speechmodels/finalizers]
    verbs: [update]
  # Scale from zero: the router's demand Leases (harmony.dev/demand), read only.
  - apiGroups: [coordination.k8s.io]
    resources: [leases]
    verbs: [get, list, watch]
  # Leader election of the operator's replicas (docs/kubernetes.md, "Operator high availability"): the Lease
  # harmony-operator in the release namespace, created once, then renewed (operator-leader-rbac.yaml grants the same
  # where the release namespace is not served).
  - apiGroups: [coordination.k8s.io]
    resources: [leases]
    verbs: [create]
  - apiGroups: [coordination.k8s.io]
    resources: [leases]
    resourceNames: [harmony-operator]
    verbs: [patch]
  - apiGroups: [""]
    resources: [configmaps, services]
    verbs: [get, list, watch, create, patch{{ if .Values.operator.finalizers }}, delete{{ end }}]
  - apiGroups: [apps]
    resources: [deployments]
    verbs: [get, list, watch, create, patch{{ if .Values.operator.finalizers }}, delete{{ end }}]
  # spec.service_account: the model pods' own ServiceAccount (cloud credentials), deleted when dropped from the spec
  - apiGroups: [""]
    resources: [serviceaccounts]
    verbs: [get, create, patch, delete]
  # a PodDisruptionBudget only for two replicas or more: deleted when a model goes under
  - apiGroups: [policy]
    resources: [poddisruptionbudgets]
    verbs: [get, list, watch, create, patch, delete]
  - apiGroups: [autoscaling]
    resources: [horizontalpodautoscalers]
    verbs: [get, list, watch, create, patch, delete]
  # autoscaling.engine: keda (a ScaledObject per model, read to check it is ours, deleted when the engine
  # changes; a 404 when KEDA is absent)
  - apiGroups: [keda.sh]
    resources: [scaledobjects]
    verbs: [get, create, patch, delete]
  - apiGroups: [""]
    resources: [events]
    verbs: [create]
  # The model pods (a label-selected watch), read only: their pull init containers make status.weights and the
  # Downloading / PullFailed conditions; the log of a running pull gives its bytes (the last lines, while it runs).
  - apiGroups: [""]
    resources: [pods]
    verbs: [list, watch]
  - apiGroups: [""]
    resources: [pods/log]
    verbs: [get]
{{- end }}
