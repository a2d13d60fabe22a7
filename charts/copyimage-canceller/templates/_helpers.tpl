{{/* Chart name, overridable. */}}
{{- define "copyimage-canceller.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Full name of the release's objects (at most 63 characters). */}}
{{- define "copyimage-canceller.fullname" -}}
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

{{/* Labels every object carries. */}}
{{- define "copyimage-canceller.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "copyimage-canceller.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/component: controller
app.kubernetes.io/part-of: copyimage-canceller
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{/* Labels that select the operator pods. */}}
{{- define "copyimage-canceller.selectorLabels" -}}
app.kubernetes.io/name: {{ include "copyimage-canceller.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{/* The ServiceAccount the operator runs as. */}}
{{- define "copyimage-canceller.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "copyimage-canceller.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name must name an existing ServiceAccount when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag or repository@digest. */}}
{{- define "copyimage-canceller.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* Where the projected RRSA token is mounted (the path ACK's webhook uses). */}}
{{- define "copyimage-canceller.rrsaTokenDir" -}}
/var/run/secrets/ack.alibabacloud.com/rrsa-tokens
{{- end }}

{{/* Namespace of the leader-election Lease. */}}
{{- define "copyimage-canceller.leaseNamespace" -}}
{{- default .Release.Namespace .Values.leaderElection.namespace }}
{{- end }}

{{/*
The operator's rules, the same in the ClusterRole and in each namespaced Role:
read the resources, patch their status, record Events (the kube-rs Recorder
creates and then patches them), and read Secrets only for per-resource
credentials.
*/}}
{{- define "copyimage-canceller.controllerRules" -}}
- apiGroups: ["ecs.alibabacloud.com"]
  resources: ["copyimagecancellations"]
  verbs: ["get", "list", "watch"]
- apiGroups: ["ecs.alibabacloud.com"]
  resources: ["copyimagecancellations/status"]
  verbs: ["patch"]
- apiGroups: ["events.k8s.io"]
  resources: ["events"]
  verbs: ["create", "patch"]
{{- if .Values.credentials.perResourceSecrets }}
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch"]
{{- end }}
{{- end }}

{{/* Refuses value combinations that would run unsafely. */}}
{{- define "copyimage-canceller.validate" -}}
{{- if and (gt (int .Values.replicaCount) 1) (not .Values.leaderElection.enabled) }}
{{- fail "replicaCount > 1 needs leaderElection.enabled=true: without it every replica would send CancelCopyImage" }}
{{- end }}
{{- if and .Values.rrsa.enabled .Values.credentials.operatorSecret.name }}
{{- fail "rrsa.enabled and credentials.operatorSecret.name are two operator identities: choose one (keys from the Secret would win)" }}
{{- end }}
{{- if .Values.rrsa.enabled }}
{{- if not (and .Values.rrsa.roleArn .Values.rrsa.oidcProviderArn) }}
{{- fail "rrsa.enabled needs rrsa.roleArn (acs:ram::<account>:role/<name>) and rrsa.oidcProviderArn (acs:ram::<account>:oidc-provider/<name>)" }}
{{- end }}
{{- if and .Values.rrsa.vpcEndpoint (not .Values.rrsa.stsRegion) }}
{{- fail "rrsa.vpcEndpoint needs rrsa.stsRegion (the VPC endpoint is sts-vpc.<region>.aliyuncs.com)" }}
{{- end }}
{{- end }}
{{- if gt (add (int .Values.controller.shutdownTimeoutSeconds) 5) (int .Values.terminationGracePeriodSeconds) }}
{{- fail (printf "controller.shutdownTimeoutSeconds (%d) must be at least 5 below terminationGracePeriodSeconds (%d): the operator needs the rest to release its Lease and exit before the kubelet kills it; lower the one or raise the other" (int .Values.controller.shutdownTimeoutSeconds) (int .Values.terminationGracePeriodSeconds)) }}
{{- end }}
{{- if and .Values.credentials.requireNamespaceRole (not .Values.credentials.namespaceRoles) }}
{{- fail "credentials.requireNamespaceRole needs credentials.namespaceRoles=true: without RamRoleSelectors no resource without a credentialsSecretRef could ever be signed" }}
{{- end }}
{{- if and .Values.metrics.serviceMonitor.enabled (not (and .Values.admin.enabled .Values.metrics.service.enabled)) }}
{{- fail "metrics.serviceMonitor.enabled needs admin.enabled=true and metrics.service.enabled=true (the ServiceMonitor scrapes the metrics Service)" }}
{{- end }}
{{- end }}
