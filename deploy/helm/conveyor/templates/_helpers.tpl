{{/* Names */}}
{{- define "conveyor.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "conveyor.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "conveyor.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{ include "conveyor.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "conveyor.selectorLabels" -}}
app.kubernetes.io/name: {{ include "conveyor.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "conveyor.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "conveyor.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "conveyor.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "conveyor.secretName" -}}
{{- default (printf "%s-secrets" (include "conveyor.fullname" .)) .Values.secrets.existingSecret -}}
{{- end -}}

{{- define "conveyor.apiUrl" -}}
{{- printf "http://%s-api.%s.svc:%d" (include "conveyor.fullname" .) .Release.Namespace (int .Values.api.service.port) -}}
{{- end -}}

{{/* The migration Job runs as a pre-install hook, before release resources exist, so it
reads copies of the ConfigMap and Secret that are hooks themselves (lower weight). With a
bundled PostgreSQL (a release resource) it must run after install instead. */}}
{{- define "conveyor.migrationHook" -}}
{{- if .Values.postgresql.enabled -}}post-install,pre-upgrade{{- else -}}pre-install,pre-upgrade{{- end -}}
{{- end -}}

{{/* CONVEYOR_* settings (ConfigMap data). */}}
{{- define "conveyor.configData" -}}
CONVEYOR_IMPORTS: {{ .Values.config.imports | quote }}
CONVEYOR_LEASE_S: {{ .Values.config.leaseSeconds | quote }}
CONVEYOR_HEARTBEAT_S: {{ .Values.config.heartbeatSeconds | quote }}
CONVEYOR_GRACE_S: {{ .Values.workers.graceSeconds | quote }}
CONVEYOR_MAX_UPLOAD_BYTES: {{ .Values.config.maxUploadBytes | int64 | quote }}
CONVEYOR_HOME: /tmp/conveyor
{{- if .Values.minio.enabled }}
CONVEYOR_STORAGE: {{ printf "s3://%s/files" .Values.minio.bucket | quote }}
CONVEYOR_S3_ENDPOINT_URL: {{ printf "http://%s-minio:9000" (include "conveyor.fullname" .) | quote }}
CONVEYOR_S3_ADDRESSING_STYLE: path
{{- else }}
{{- with .Values.config.storage }}
CONVEYOR_STORAGE: {{ . | quote }}
{{- end }}
{{- with .Values.config.s3.endpointUrl }}
CONVEYOR_S3_ENDPOINT_URL: {{ . | quote }}
{{- end }}
{{- with .Values.config.s3.addressingStyle }}
CONVEYOR_S3_ADDRESSING_STYLE: {{ . | quote }}
{{- end }}
{{- end }}
{{- with .Values.config.s3.region }}
CONVEYOR_S3_REGION: {{ . | quote }}
{{- end }}
{{- if .Values.postgresql.enabled }}
CONVEYOR_STORE: {{ printf "postgresql://%s@%s-postgresql:5432/%s" .Values.postgresql.username (include "conveyor.fullname" .) .Values.postgresql.database | quote }}
{{- else if .Values.redis.enabled }}
CONVEYOR_STORE: {{ printf "redis://%s-redis:6379/0" (include "conveyor.fullname" .) | quote }}
{{- end }}
{{- range $name, $value := .Values.config.extraEnv }}
{{ $name }}: {{ $value | quote }}
{{- end }}
{{- end -}}

{{/* Secret data (string values; the chart creates it unless secrets.existingSecret). */}}
{{- define "conveyor.secretData" -}}
{{- if not (or .Values.postgresql.enabled .Values.redis.enabled) }}
CONVEYOR_STORE: {{ required "secrets.store (the CONVEYOR_STORE URL) is required unless secrets.existingSecret or a bundled store is enabled" .Values.secrets.store | quote }}
{{- end }}
{{- if .Values.postgresql.enabled }}
PGPASSWORD: {{ required "postgresql.password is required with the bundled PostgreSQL" .Values.postgresql.password | quote }}
{{- end }}
{{- if .Values.minio.enabled }}
CONVEYOR_S3_ACCESS_KEY_ID: {{ .Values.minio.rootUser | quote }}
CONVEYOR_S3_SECRET_ACCESS_KEY: {{ required "minio.rootPassword is required with the bundled MinIO" .Values.minio.rootPassword | quote }}
{{- else }}
{{- with .Values.secrets.s3AccessKeyId }}
CONVEYOR_S3_ACCESS_KEY_ID: {{ . | quote }}
{{- end }}
{{- with .Values.secrets.s3SecretAccessKey }}
CONVEYOR_S3_SECRET_ACCESS_KEY: {{ . | quote }}
{{- end }}
{{- end }}
{{- end -}}

{{/* envFrom: the ConfigMap and Secret (hook copies for the migration Job). */}}
{{- define "conveyor.envFrom" -}}
{{- $suffix := ternary "-migrate" "" (eq (default "" .hook) "yes") -}}
- configMapRef:
    name: {{ include "conveyor.fullname" .root }}-config{{ $suffix }}
- secretRef:
    name: {{ if .root.Values.secrets.existingSecret }}{{ .root.Values.secrets.existingSecret }}{{ else }}{{ include "conveyor.fullname" .root }}-secrets{{ $suffix }}{{ end }}
{{- end -}}

{{- define "conveyor.podSecurity" -}}
securityContext:
  {{- toYaml .Values.podSecurityContext | nindent 2 }}
{{- end -}}

{{/* Writable scratch space on a read-only root filesystem. */}}
{{- define "conveyor.tmpVolume" -}}
- name: tmp
  emptyDir:
    sizeLimit: 1Gi
{{- end -}}

{{- define "conveyor.tmpMount" -}}
- name: tmp
  mountPath: /tmp
{{- end -}}
