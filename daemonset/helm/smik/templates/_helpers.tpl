{{/* Labels every object carries. */}}
{{- define "smik.labels" -}}
app.kubernetes.io/part-of: smik
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end }}

{{/* The agent pods' selector: the agent finds its peers by this label. */}}
{{- define "smik.agentSelector" -}}
app.kubernetes.io/name: smik-agent
{{- end }}

{{- define "smik.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end }}

{{- define "smik.apiSecret" -}}
{{ .Values.tls.api.existingSecret | default "smik-api-tls" }}
{{- end }}

{{- define "smik.peerSecret" -}}
{{ .Values.tls.peer.existingSecret | default "smik-peer-tls" }}
{{- end }}
