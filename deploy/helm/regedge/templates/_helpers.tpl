{{/* Names and labels. */}}
{{- define "regedge.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "regedge.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "regedge.labels" -}}
{{ include "regedge.selectorLabels" . }}
app.kubernetes.io/version: {{ include "regedge.tag" . | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{/* The agent image's tag: never "latest" (values.schema.json refuses it too). */}}
{{- define "regedge.tag" -}}
{{- $tag := .Values.image.tag | default .Chart.AppVersion -}}
{{- if eq $tag "latest" -}}
{{- fail "image.tag: \"latest\" is not a version; give a release tag (and image.digest)" -}}
{{- end -}}
{{- $tag -}}
{{- end -}}

{{/* repository:tag, then @digest when one is given. */}}
{{- define "regedge.imageRef" -}}
{{- $img := index . 0 -}}
{{- $tag := index . 1 -}}
{{- if and $img.digest (not (regexMatch "^sha256:[a-f0-9]{64}$" $img.digest)) -}}
{{- fail (printf "%s.digest: %q is not sha256:<64 hex digits>" (index . 2) $img.digest) -}}
{{- end -}}
{{- $img.repository }}:{{ $tag }}{{ if $img.digest }}@{{ $img.digest }}{{ end -}}
{{- end -}}

{{- define "regedge.image" -}}
{{- include "regedge.imageRef" (list .Values.image (include "regedge.tag" .) "image") -}}
{{- end -}}

{{- define "regedge.initImage" -}}
{{- include "regedge.imageRef" (list .Values.initImage .Values.initImage.tag "initImage") -}}
{{- end -}}

{{/* Whether an init container finds the interface (none configured, BPF not off). */}}
{{- define "regedge.detectInterface" -}}
{{- if and .Values.agent.detectInterface (empty .Values.agent.interfaces) (ne .Values.agent.bpf "off") -}}true{{- end -}}
{{- end -}}

{{/* Where the agent reads its config: the ConfigMap, or the init container's copy with the interface filled in. */}}
{{- define "regedge.configPath" -}}
{{- if include "regedge.detectInterface" . -}}/run/regedge/regedge.json{{- else -}}/etc/regedge/config/regedge.json{{- end -}}
{{- end -}}

{{- define "regedge.fleetService" -}}
{{- printf "%s-fleet" (include "regedge.fullname" .) -}}
{{- end -}}

{{/*
The agent's config file: .Values.config with the sections the chart owns
laid over it. Key order is JSON's (sorted), so the detect-interface init
container finds exactly one `"interfaces": []` when it has to fill it in.
*/}}
{{- define "regedge.config" -}}
{{- $c := deepCopy .Values.config -}}
{{- range $k := list "agent" "admin" "fleet" -}}
{{- if hasKey $c $k -}}
{{- fail (printf "config.%s is set by the chart from the %s values; remove it from config" $k $k) -}}
{{- end -}}
{{- end -}}
{{- $a := .Values.agent -}}
{{- $_ := set $c "agent" (dict "bpf" $a.bpf "interfaces" ($a.interfaces | default list) "xdpMode" $a.xdpMode "bpffs" $a.bpffs "stateFile" (printf "%s/state" $a.stateDir) "stateSource" $a.stateSource "skLookup" $a.skLookup) -}}
{{- $_ := set $c "admin" (dict "listen" (printf "127.0.0.1:%d" (int .Values.admin.port)) "pprof" .Values.admin.pprof) -}}
{{- if .Values.fleet.enabled -}}
{{- $peer := printf "dns:%s.%s.svc.%s:%d" (include "regedge.fleetService" .) .Release.Namespace .Values.fleet.clusterDomain (int .Values.fleet.port) -}}
{{- $_ := set $c "fleet" (dict "listen" (printf "0.0.0.0:%d" (int .Values.fleet.port)) "peers" (list $peer)) -}}
{{- end -}}
{{- $tokens := deepCopy ($c.tokens | default dict) -}}
{{- if .Values.secrets.tokenKeys.existingSecret -}}
{{- if empty .Values.secrets.tokenKeys.items -}}
{{- fail "secrets.tokenKeys.items: name the keys of the Secret that hold public keys (e.g. [edge.pub])" -}}
{{- end -}}
{{- $keys := list -}}
{{- range .Values.secrets.tokenKeys.items -}}
{{- $keys = append $keys (printf "/etc/regedge/keys/%s" .) -}}
{{- end -}}
{{- $_ := set $tokens "publicKeys" $keys -}}
{{- end -}}
{{- $_ := set $c "tokens" $tokens -}}
{{- if .Values.secrets.busKeys.existingSecret -}}
{{- if empty .Values.secrets.busKeys.items -}}
{{- fail "secrets.busKeys.items: name the keys of the Secret that hold bus public keys" -}}
{{- end -}}
{{- $bus := deepCopy ($c.bus | default dict) -}}
{{- $keys := list -}}
{{- range .Values.secrets.busKeys.items -}}
{{- $keys = append $keys (printf "/etc/regedge/bus-keys/%s" .) -}}
{{- end -}}
{{- $_ := set $bus "publicKeys" $keys -}}
{{- $_ := set $c "bus" $bus -}}
{{- end -}}
{{- if .Values.secrets.tls.existingSecret -}}
{{- $proxy := deepCopy ($c.proxy | default dict) -}}
{{- $_ := set $proxy "tls" (dict "cert" "/etc/regedge/tls/tls.crt" "key" "/etc/regedge/tls/tls.key") -}}
{{- $_ := set $c "proxy" $proxy -}}
{{- end -}}
{{- toPrettyJson $c -}}
{{- end -}}

{{/* The admin port's probe target: 127.0.0.1 on the node, or the pod (node) address. */}}
{{- define "regedge.probe" -}}
{{- $root := index . 0 -}}
httpGet:
  path: {{ index . 1 }}
  port: {{ $root.Values.admin.port }}
  {{- if eq $root.Values.admin.bind "loopback" }}
  # hostNetwork: the kubelet's 127.0.0.1 is the node's, where the agent listens.
  host: 127.0.0.1
  {{- end }}
{{- end -}}

{{/* Ports from the config file, with the agent's defaults. */}}
{{- define "regedge.proxyPort" -}}{{ dig "proxy" "listenPort" 4873 .Values.config | int }}{{- end -}}
{{- define "regedge.wsPort" -}}{{ dig "websocket" "port" 3000 .Values.config | int }}{{- end -}}
{{- define "regedge.busPort" -}}{{ dig "bus" "port" 4874 .Values.config | int }}{{- end -}}
