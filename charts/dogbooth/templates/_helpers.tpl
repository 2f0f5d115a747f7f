{{/* Resource names: short, because KubeRay derives <name>-<hash>-head-<id> pod names from them. */}}
{{- define "dogbooth.fullname" -}}
{{- default .Release.Name .Values.nameOverride | trunc 30 | trimSuffix "-" -}}
{{- end -}}

{{- define "dogbooth.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "dogbooth.labels" -}}
{{ include "dogbooth.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "dogbooth.image" -}}
{{- if or (not .Values.image.tag) (eq (toString .Values.image.tag) "latest") -}}
{{- fail "image.tag must be a pinned tag (not empty, not latest)" -}}
{{- end -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}

{{/* The Serve HTTP port, read from the generated Serve config: one source for Ingress and NetworkPolicy. */}}
{{- define "dogbooth.servePort" -}}
{{- $cfg := required "serveConfig is required: render with `python -m dogbooth render`" .Values.serveConfig -}}
{{- $http := required "serveConfig.http_options is required" $cfg.http_options -}}
{{- required "serveConfig.http_options.port is required" $http.port | int -}}
{{- end -}}

{{- define "dogbooth.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurity.runAsUser }}
runAsGroup: {{ .Values.podSecurity.runAsGroup }}
fsGroup: {{ .Values.podSecurity.fsGroup }}
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{- define "dogbooth.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: {{ .Values.podSecurity.runAsUser }}
allowPrivilegeEscalation: false
capabilities:
  drop: [ALL]
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Env shared by head and workers. `node` is head, worker or training (what the pod is for). */}}
{{- define "dogbooth.env" -}}
- name: DOGBOOTH_RAY_NODE
  value: {{ .node }}
- name: DOGBOOTH_CACHE
  value: {{ printf "%s/dogbooth" .root.Values.modelCache.mountPath | quote }}
- name: HF_HOME
  value: {{ printf "%s/huggingface" .root.Values.modelCache.mountPath | quote }}
{{- end -}}
