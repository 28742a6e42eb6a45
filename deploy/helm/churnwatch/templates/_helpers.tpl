{{/* Chart name, overridable. */}}
{{- define "churnwatch.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name: release-name[-chart-name], 63 chars at most. */}}
{{- define "churnwatch.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "churnwatch.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Labels that select the pods: never change them on an installed release. */}}
{{- define "churnwatch.selectorLabels" -}}
app.kubernetes.io/name: {{ include "churnwatch.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "churnwatch.labels" -}}
helm.sh/chart: {{ include "churnwatch.chart" . }}
{{ include "churnwatch.selectorLabels" . }}
app.kubernetes.io/version: {{ .Values.image.tag | default .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: churnwatch
{{- end }}

{{- define "churnwatch.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "churnwatch.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "churnwatch.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
churnwatch.toml: the `config` value, then [kafka.client] and [kafka.client_env] from
kafka.client / kafka.secretClient. Keys and values are written as TOML basic strings
(JSON string syntax is a subset of them).
*/}}
{{- define "churnwatch.configToml" -}}
{{ .Values.config | trim }}
{{- with .Values.kafka.client }}

[kafka.client]
{{- range $key, $value := . }}
{{ $key | toJson }} = {{ $value | toString | toJson }}
{{- end }}
{{- end }}
{{- with .Values.kafka.secretClient }}

# Values read from these env vars (secretKeyRef in the pod spec).
[kafka.client_env]
{{- range $key, $ref := . }}
{{ $key | toJson }} = {{ required (printf "kafka.secretClient.%s.env is required" $key) $ref.env | toJson }}
{{- end }}
{{- end }}
{{- end }}
