{{- define "flipt-operator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "flipt-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "flipt-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "flipt-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "flipt-operator.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "flipt-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/component: operator
{{- end -}}

{{- define "flipt-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "flipt-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "flipt-operator.image" -}}
{{- if .Values.image.digest -}}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}
{{- end -}}

{{- define "flipt-operator.peering" -}}
{{- if or .Values.peering.enabled (gt (int .Values.replicaCount) 1) -}}true{{- end -}}
{{- end -}}

{{- define "flipt-operator.peeringName" -}}
{{- default (include "flipt-operator.fullname" .) .Values.peering.name -}}
{{- end -}}

{{/*
What the operator does in a namespace it watches: exactly the verbs its code uses (see the
chart README, "RBAC"). Shared by the ClusterRole (cluster-wide) and the Roles (namespaced).
*/}}
{{- define "flipt-operator.namespacedRules" -}}
# Our kinds: read and watch. No patch: the handlers are kopf watch events, so neither kopf
# nor the operator writes anything but status (no annotations, no finalizers).
- apiGroups: ["flipt.io"]
  resources: ["fliptcredentials", "fliptstorages", "fliptenvironments"]
  verbs: ["get", "list", "watch"]
# Their status subresource: conditions, observedGeneration, sync and database state.
- apiGroups: ["flipt.io"]
  resources: ["fliptcredentials/status", "fliptstorages/status", "fliptenvironments/status"]
  verbs: ["patch"]
# Secrets: validate credentials and read the key names of the named ones (get), react to rotation (list, watch).
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch"]
# One Event per change of Ready or condition turning bad (ours and kopf's warnings); a repeat bumps its count (patch).
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create", "patch"]
# The children of each Flipt server.
- apiGroups: [""]
  resources: ["services", "serviceaccounts"]
  verbs: ["get", "list", "create", "patch", "delete"]
# The servers' ConfigMaps (children), and import documents (spec.database.import): watched so a
# changed document is imported at once.
- apiGroups: [""]
  resources: ["configmaps"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Database migration and import Jobs (watched for completion; patch: the same create-or-patch
# path as every child, used when a Job's labels or annotations differ).
- apiGroups: ["batch"]
  resources: ["jobs"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
# Finding the server pods whose git-sync sidecar /status is read.
- apiGroups: [""]
  resources: ["pods"]
  verbs: ["list"]
{{- end -}}
