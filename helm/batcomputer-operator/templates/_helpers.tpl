{{/* Names are DNS labels: at most 63 characters, no trailing dash. */}}
{{- define "batcomputer-operator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "batcomputer-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}

{{- define "batcomputer-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "batcomputer-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "batcomputer-operator.labels" -}}
{{ include "batcomputer-operator.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: operator
app.kubernetes.io/part-of: batcomputer
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end }}

{{- define "batcomputer-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "batcomputer-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "batcomputer-operator.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/*
What the operator does to BatModels and their children, in each namespace it
watches. No Secrets: model pods reference the credentials Secret by name only.
*/}}
{{- define "batcomputer-operator.workloadRules" -}}
# The operator never writes a BatModel's spec or metadata (raw kopf event
# handlers keep no finalizers or annotations), only its status.
- apiGroups: [batcomputer.io]
  resources: [batmodels]
  verbs: [get, list, watch]
- apiGroups: [batcomputer.io]
  resources: [batmodels/status]
  verbs: [patch]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [""]
  resources: [services]
  verbs: [get, list, watch, create, update, patch, delete]
- apiGroups: [networking.k8s.io]
  resources: [ingresses]
  verbs: [get, list, watch, create, update, patch, delete]
# The shadow settings a Shadow rollout gives the serving version's pods.
- apiGroups: [""]
  resources: [configmaps]
  verbs: [get, list, watch, create, update, patch, delete]
# Read-only: the failing container's reason for the Stalled condition; the
# Service's EndpointSlices, which tell when traffic reaches the new version's pods.
- apiGroups: [""]
  resources: [pods]
  verbs: [get, list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [get, list, watch]
- apiGroups: [""]
  resources: [events]
  verbs: [create, patch]
{{- end }}

{{/*
The namespaces the operator serves, as a JSON list: watchNamespaces, else the release
namespace; empty (every namespace) only with watchAllNamespaces.
*/}}
{{- define "batcomputer-operator.watchedNamespaces" -}}
{{- if .Values.watchAllNamespaces }}
{{- if .Values.watchNamespaces }}
{{- fail "watchAllNamespaces serves every namespace: leave watchNamespaces empty" }}
{{- end }}
{{- list | toJson }}
{{- else }}
{{- .Values.watchNamespaces | default (list .Release.Namespace) | toJson }}
{{- end }}
{{- end }}
