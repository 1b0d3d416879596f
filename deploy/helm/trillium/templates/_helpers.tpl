{{/* Chart name, truncated to the DNS label limit. */}}
{{- define "trillium.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Release-scoped name: <release>-<chart> unless the release already contains the chart name. */}}
{{- define "trillium.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Name of one component's objects. Call with (dict "root" $ "component" "inference"). */}}
{{- define "trillium.componentName" -}}
{{- printf "%s-%s" (include "trillium.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Selector labels: immutable, so name, instance and component only. */}}
{{- define "trillium.selectorLabels" -}}
app.kubernetes.io/name: {{ include "trillium.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{- define "trillium.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{ include "trillium.selectorLabels" . }}
app.kubernetes.io/version: {{ .version | default .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
app.kubernetes.io/part-of: trillium
{{- with .root.Values.global.labels }}
{{ toYaml . }}
{{- end }}
{{- end -}}

{{/* The same hardened security context for every container. */}}
{{- define "trillium.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 1000
runAsGroup: 1000
fsGroup: 1000
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "trillium.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}

{{/* Native gRPC probes (Kubernetes >= 1.27). Under mTLS they use the plaintext health port. */}}
{{- define "trillium.grpcProbes" -}}
{{- $port := ternary 50052 50051 .root.Values.global.tls.enabled -}}
startupProbe:
  grpc: {port: {{ $port }}, service: {{ .serviceName | quote }}}
  periodSeconds: {{ .values.probes.periodSeconds }}
  failureThreshold: {{ .values.probes.startupFailureThreshold }}
readinessProbe:
  grpc: {port: {{ $port }}, service: {{ .serviceName | quote }}}
  periodSeconds: 5
  failureThreshold: 2
livenessProbe:
  grpc: {port: {{ $port }}, service: ""}
  periodSeconds: {{ .values.probes.periodSeconds }}
  failureThreshold: 3
{{- end -}}

{{/* GPU scheduling, rendered only when gpu.count > 0. */}}
{{- define "trillium.gpuScheduling" -}}
{{- if gt (int .gpu.count) 0 }}
{{- with .gpu.runtimeClassName }}
runtimeClassName: {{ . }}
{{- end }}
{{- with .gpu.tolerations }}
tolerations:
{{ toYaml . }}
{{- end }}
{{- with .gpu.products }}
affinity:
  nodeAffinity:
    requiredDuringSchedulingIgnoredDuringExecution:
      nodeSelectorTerms:
        - matchExpressions:
            - key: nvidia.com/gpu.product
              operator: In
              values:
{{ toYaml . | indent 16 }}
{{- end }}
{{- end }}
{{- end -}}

{{- define "trillium.redisUrl" -}}
{{- if .Values.global.redis.enabled -}}
{{- printf "redis://%s-redis:6379/0" (include "trillium.fullname" .) -}}
{{- else -}}
{{- required "global.redis.external.url is required when global.redis.enabled is false" .Values.global.redis.external.url -}}
{{- end -}}
{{- end -}}

{{- define "trillium.image" -}}
{{- printf "%s/%s:%s" .root.Values.global.imageRegistry .image.repository (.image.tag | toString) -}}
{{- end -}}
