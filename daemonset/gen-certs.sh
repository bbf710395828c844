#!/usr/bin/env bash
# Creates the two TLS Secrets smik-agent mounts, for the plain install
# (`kubectl apply -k daemonset/`); the Helm chart makes its own.
#
#   smik-api-tls   serving certificate of the aggregated TrafficMetrics API,
#                  for Service smik-api (SANs smik-api.<ns>.svc and shorter)
#   smik-peer-tls  the certificate every agent shows, as server and as client,
#                  in the mTLS metrics fan-out between nodes. Agents dial each
#                  other by node IP, so it holds no IP: the agent checks the
#                  fixed name smik-peer.<ns> instead.
#
# Each has its own CA (ca.crt in the Secret), so the API serving key, which
# the aggregator sees, cannot also join the peer mesh. The CA keys are thrown
# away unless --out keeps them: to renew, run again with --force and restart
# the agents (kubectl -n smik-system rollout restart ds/smik-agent).
#
# Needs openssl; kubectl unless --dry-run.
set -euo pipefail

usage() {
  cat <<EOF
usage: $0 [-n NAMESPACE] [--days N] [--force] [--out DIR] [--dry-run]
  -n, --namespace NS  where the agent runs (default smik-system)
  --days N            validity of CAs and certificates (default 3650)
  --force             replace Secrets that already exist
  --out DIR           keep the CA and certificate files in DIR
  --dry-run           print the Secrets as YAML instead of creating them
EOF
}

namespace=smik-system
days=3650
force=0
dry_run=0
out=""
while [ $# -gt 0 ]; do
  case "$1" in
    -n | --namespace) namespace="$2"; shift 2 ;;
    --days) days="$2"; shift 2 ;;
    --force) force=1; shift ;;
    --out) out="$2"; shift 2 ;;
    --dry-run) dry_run=1; shift ;;
    -h | --help) usage; exit 0 ;;
    *) usage >&2; exit 2 ;;
  esac
done

command -v openssl >/dev/null || { echo "openssl not found" >&2; exit 1; }
[ "$dry_run" = 1 ] || command -v kubectl >/dev/null || { echo "kubectl not found" >&2; exit 1; }

if [ -n "$out" ]; then
  mkdir -p "$out"
  dir="$out"
else
  dir="$(mktemp -d)"
  trap 'rm -rf "$dir"' EXIT
fi
umask 077

# ca NAME CN: NAME/ca.{key,crt}
ca() {
  mkdir -p "$dir/$1"
  openssl req -x509 -new -nodes -newkey rsa:2048 -sha256 -days "$days" \
    -keyout "$dir/$1/ca.key" -out "$dir/$1/ca.crt" -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" \
    -addext "keyUsage=critical,keyCertSign,cRLSign" 2>/dev/null
}

# leaf NAME CN EKU SAN: NAME/tls.{key,crt}, signed by NAME/ca
leaf() {
  local d="$dir/$1"
  openssl req -new -nodes -newkey rsa:2048 -sha256 -keyout "$d/tls.key" -out "$d/tls.csr" \
    -subj "/CN=$2" 2>/dev/null
  cat >"$d/ext.cnf" <<EOF
basicConstraints=critical,CA:FALSE
keyUsage=critical,digitalSignature,keyEncipherment
extendedKeyUsage=$3
subjectAltName=$4
EOF
  openssl x509 -req -sha256 -days "$days" -in "$d/tls.csr" -CA "$d/ca.crt" -CAkey "$d/ca.key" \
    -CAcreateserial -out "$d/tls.crt" -extfile "$d/ext.cnf" 2>/dev/null
  rm -f "$d/tls.csr" "$d/ext.cnf" "$d/ca.srl"
}

# secret NAME DIR: a kubernetes.io/tls Secret with the CA beside the pair
secret() {
  cat <<EOF
apiVersion: v1
kind: Secret
metadata:
  name: $1
  namespace: $namespace
  labels:
    app.kubernetes.io/part-of: smik
type: kubernetes.io/tls
data:
  tls.crt: $(base64 -w0 <"$2/tls.crt")
  tls.key: $(base64 -w0 <"$2/tls.key")
  ca.crt: $(base64 -w0 <"$2/ca.crt")
EOF
}

svc="smik-api.$namespace.svc"
ca api smik-api-ca
leaf api "$svc" serverAuth \
  "DNS:smik-api,DNS:smik-api.$namespace,DNS:$svc,DNS:$svc.cluster.local"
ca peer smik-peer-ca
leaf peer smik-peer serverAuth,clientAuth "DNS:smik-peer.$namespace"

if [ "$dry_run" = 1 ]; then
  secret smik-api-tls "$dir/api"
  echo "---"
  secret smik-peer-tls "$dir/peer"
  exit 0
fi

if ! kubectl get namespace "$namespace" >/dev/null 2>&1; then
  if [ "$namespace" = smik-system ]; then
    kubectl apply -f "$(dirname "$0")/namespace.yaml"
  else
    kubectl create namespace "$namespace"
  fi
fi

# create/replace, not apply: apply would copy the private key into the
# last-applied-configuration annotation.
for which in api peer; do
  name="smik-$which-tls"
  src="$dir/$which"
  if kubectl -n "$namespace" get secret "$name" >/dev/null 2>&1; then
    if [ "$force" = 1 ]; then
      secret "$name" "$src" | kubectl replace -f -
    else
      echo "secret/$name exists: kept (--force replaces it)"
    fi
  else
    secret "$name" "$src" | kubectl create -f -
  fi
done
echo "Agents already running read new certificates after:" \
  "kubectl -n $namespace rollout restart ds/smik-agent"
