{{/* Labels on every object of the chart. */}}
{{- define "floxk-node.labels" -}}
app.kubernetes.io/part-of: floxk
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/instance: {{ .Release.Name }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "floxk-node.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* node.toml from .Values.node: the whole file (node.toml) or the modelled keys. */}}
{{- define "floxk-node.nodeToml" -}}
{{- $n := .Values.node -}}
{{- $p := $n.policy | default dict -}}
{{- $keys := or $n.hubs $n.substituters $n.trustedPublicKeys $p.allowedOwners $p.allowNixMutable -}}
{{- if and $n.toml $keys -}}
{{- fail "node.toml and the node keys (hubs, substituters, trustedPublicKeys, policy) exclude each other: give one" -}}
{{- end -}}
{{- if $n.toml -}}
{{ $n.toml }}
{{- else if $keys -}}
# node.toml written by the floxk-node chart (helm values `node`)
{{- with $n.hubs }}
hubs = {{ toJson . }}
{{- end }}
{{- with $n.substituters }}
substituters = {{ toJson . }}
{{- end }}
{{- with $n.trustedPublicKeys }}
trusted_public_keys = {{ toJson . }}
{{- end }}
{{- if or $p.allowedOwners $p.allowNixMutable }}

[policy]
{{- with $p.allowedOwners }}
allowed_owners = {{ toJson . }}
{{- end }}
{{- if $p.allowNixMutable }}
allow_nix_mutable = true
{{- end }}
{{- end }}
{{ end -}}
{{- end -}}

{{/* The agent's pod spec, shared by the installer and the uninstaller DaemonSets. */}}
{{- define "floxk-node.agentPod" -}}
serviceAccountName: floxk-installer
hostPID: true
terminationGracePeriodSeconds: 5
{{- with .Values.imagePullSecrets }}
imagePullSecrets:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with .Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}

{{- define "floxk-node.agentContainer" -}}
name: agent
image: {{ include "floxk-node.image" . }}
imagePullPolicy: {{ .Values.image.pullPolicy }}
env:
  - name: NODE_NAME
    valueFrom:
      fieldRef:
        fieldPath: spec.nodeName
securityContext:
  privileged: true
{{- with .Values.resources }}
resources:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- end -}}
