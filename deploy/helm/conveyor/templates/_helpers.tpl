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
reads copies of the ConfigMap and Secret that are hooks themselves (lower weight). A bundled
PostgreSQL is a release resource: at install the API pods migrate it (an init container, which
waits for the database), since post-install hooks would run only after `--wait` gave up. */}}
{{- define "conveyor.migrationHook" -}}
{{- if .Values.postgresql.enabled -}}pre-upgrade{{- else -}}pre-install,pre-upgrade{{- end -}}
{{- end -}}

{{/* The bundled PostgreSQL's password: given, else the one this release already has, else a
new random one; set once per render so every template that includes it agrees. */}}
{{- define "conveyor.pgPassword" -}}
{{- if not .Values.postgresql.password -}}
{{- $found := lookup "v1" "Secret" .Release.Namespace (printf "%s-secrets" (include "conveyor.fullname" .)) -}}
{{- $old := "" -}}
{{- if and $found $found.data -}}{{- $old = index $found.data "PGPASSWORD" | default "" | b64dec -}}{{- end -}}
{{- $_ := set .Values.postgresql "password" (default (randAlphaNum 32) $old) -}}
{{- end -}}
{{- .Values.postgresql.password -}}
{{- end -}}

{{- define "conveyor.adminKeySecret" -}}
{{- default (printf "%s-admin-key" (include "conveyor.fullname" .)) .Values.adminKey.existingSecret -}}
{{- end -}}

{{/* A generated first admin key (cvk_<id>_<secret>, what `conveyor keys install` accepts),
kept across upgrades like the password. */}}
{{- define "conveyor.adminKey" -}}
{{- if not (hasKey .Values.adminKey "generated") -}}
{{- $found := lookup "v1" "Secret" .Release.Namespace (include "conveyor.adminKeySecret" .) -}}
{{- $old := "" -}}
{{- if and $found $found.data -}}{{- $old = index $found.data "CONVEYOR_ADMIN_KEY" | default "" | b64dec -}}{{- end -}}
{{- $new := printf "cvk_%s_%s" (randAlphaNum 12 | lower) (randAlphaNum 48) -}}
{{- $_ := set .Values.adminKey "generated" (default $new $old) -}}
{{- end -}}
{{- .Values.adminKey.generated -}}
{{- end -}}

{{/* Pods that run before the API: migrate a bundled database (waiting for it to accept
connections: the init container is retried), then install the first admin key. Both are
idempotent and safe from several replicas at once. */}}
{{- define "conveyor.apiInitContainers" -}}
{{- if .Values.postgresql.enabled }}
- name: migrate
  image: {{ include "conveyor.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["db", "migrate"]
  envFrom:
    {{- include "conveyor.envFrom" (dict "root" .) | nindent 4 }}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  resources:
    {{- toYaml .Values.migrations.resources | nindent 4 }}
  volumeMounts:
    {{- include "conveyor.tmpMount" . | nindent 4 }}
{{- end }}
{{- if .Values.adminKey.enabled }}
- name: admin-key
  image: {{ include "conveyor.image" . }}
  imagePullPolicy: {{ .Values.image.pullPolicy }}
  args: ["keys", "create", "admin", "--scope", "admin", "--from-env", "CONVEYOR_ADMIN_KEY"]
  envFrom:
    {{- include "conveyor.envFrom" (dict "root" .) | nindent 4 }}
  env:
    - name: CONVEYOR_ADMIN_KEY
      valueFrom:
        secretKeyRef: {name: {{ include "conveyor.adminKeySecret" . }}, key: CONVEYOR_ADMIN_KEY}
  securityContext:
    {{- toYaml .Values.securityContext | nindent 4 }}
  resources:
    {{- toYaml .Values.migrations.resources | nindent 4 }}
  volumeMounts:
    {{- include "conveyor.tmpMount" . | nindent 4 }}
{{- end }}
{{- end -}}

{{/* Soft topology spread (ScheduleAnyway) over each key; .labels selects the pods. */}}
{{- define "conveyor.topologySpread" -}}
{{- if .spread.enabled }}
topologySpreadConstraints:
{{- range .spread.topologyKeys }}
  - maxSkew: {{ $.spread.maxSkew }}
    topologyKey: {{ . }}
    whenUnsatisfiable: ScheduleAnyway
    labelSelector:
      matchLabels:
        {{- $.labels | nindent 8 }}
{{- end }}
{{- end }}
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
CONVEYOR_STORE: {{ required "secrets.store (the CONVEYOR_STORE URL of your database) is required unless postgresql.enabled (the bundled one), redis.enabled or secrets.existingSecret" .Values.secrets.store | quote }}
{{- end }}
{{- if .Values.postgresql.enabled }}
PGPASSWORD: {{ include "conveyor.pgPassword" . | quote }}
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

{{/* Alert rules (a Prometheus rule file's body) over the API's /metrics. Every API replica
reads the whole store, so series are de-duplicated with max by (...), never summed across
replicas (sum without (state) adds states within one replica). The runbook
of each alert is in docs/operations.md. The argument is .Values.monitoring.prometheusRule. */}}
{{- define "conveyor.alertRules" -}}
groups:
  - name: conveyor
    rules:
      - alert: ConveyorOldestWaitingJobTooOld
        expr: max by (queue) (conveyor_queue_oldest_age_seconds) > {{ .oldestWaitingSeconds }}
        for: 5m
        labels:
          severity: warning
        annotations:
          summary: 'Queue {{ "{{" }} $labels.queue {{ "}}" }}: a job has waited {{ "{{" }} $value | humanizeDuration {{ "}}" }}'
          description: The oldest due job in the queue has not started for longer than {{ .oldestWaitingSeconds }} s; workers are too few, stuck, or not serving the queue.
          runbook: docs/operations.md#conveyoroldestwaitingjobtooold
      - alert: ConveyorJobFailureRatioHigh
        expr: |-
          (
            max by (kind) (rate(conveyor_job_transitions_total{state="failed"}[15m]))
            / max by (kind) (sum without (state) (rate(conveyor_job_transitions_total{state=~"succeeded|failed"}[15m])))
          ) > {{ .failureRatio }}
          and on (kind)
          max by (kind) (sum without (state) (increase(conveyor_job_transitions_total{state=~"succeeded|failed"}[15m]))) >= {{ .failureMinJobs }}
        for: 10m
        labels:
          severity: warning
        annotations:
          summary: 'Kind {{ "{{" }} $labels.kind {{ "}}" }}: {{ "{{" }} $value | humanizePercentage {{ "}}" }} of finished jobs failed'
          description: More than {{ .failureRatio }} of the jobs of this kind that finished in the last 15 minutes failed for good (retries exhausted or not retryable).
          runbook: docs/operations.md#conveyorjobfailureratiohigh
      - alert: ConveyorNoWorkerForQueue
        expr: |-
          max by (queue) (conveyor_queue_jobs{state="queued"}) > 0
          and on (queue)
          max by (queue) (conveyor_queue_workers) == 0
        for: {{ .noWorkerFor }}
        labels:
          severity: critical
        annotations:
          summary: 'Queue {{ "{{" }} $labels.queue {{ "}}" }} has waiting jobs and no live worker'
          description: Jobs are queued but no worker serving this queue has sent a heartbeat; nothing will run them.
          runbook: docs/operations.md#conveyornoworkerforqueue
      - alert: ConveyorWebhookBacklog
        expr: |-
          max(conveyor_webhook_pending) > {{ .webhookBacklog }}
          or
          max(conveyor_webhook_oldest_pending_age_seconds) > {{ .webhookOldestSeconds }}
        for: 10m
        labels:
          severity: warning
        annotations:
          summary: 'Webhook backlog: {{ "{{" }} $value {{ "}}" }}'
          description: More than {{ .webhookBacklog }} webhook messages are pending, or the oldest has waited over {{ .webhookOldestSeconds }} s; receivers are down or slow, or no dispatcher runs.
          runbook: docs/operations.md#conveyorwebhookbacklog
      - alert: ConveyorStoreUnavailable
        expr: min(conveyor_store_up) == 0
        for: 2m
        labels:
          severity: critical
        annotations:
          summary: The job store does not answer the API
          description: The API could not read the store while serving /metrics; submits and claims fail until it is back.
          runbook: docs/operations.md#conveyorstoreunavailable
      - alert: ConveyorMetricsMissing
        expr: absent(conveyor_store_up)
        for: 10m
        labels:
          severity: critical
        annotations:
          summary: Prometheus gets no conveyor metrics
          description: No API replica was scraped successfully; the API is down, the store is unreachable (the scrape's API key cannot be checked), or the scrape is misconfigured.
          runbook: docs/operations.md#conveyormetricsmissing
{{- end -}}
