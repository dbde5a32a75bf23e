#!/usr/bin/env bash
# A stand-in for `berth --root DIR pull [-q] REF`, to check the pull benchmark's harness before
# the real `berth pull` exists: `skopeo copy` of REF into DIR/layout (fetch, verify digests),
# then GNU `tar -xzf` of every layer in parallel into DIR/layers/N. It is neither a store nor an
# unpacker (no whiteouts, no snapshots): only a process that fetches and unpacks the image.
#   berth-bench pull --berth bench/scripts/berth-pull-standin.sh
set -euo pipefail
root= ref=
while [ $# -gt 0 ]; do
	case "$1" in
	--root) root=$2; shift 2 ;;
	pull | -q) shift ;;
	*) ref=$1; shift ;;
	esac
done
[ -n "$root" ] && [ -n "$ref" ] || { echo "usage: $0 --root DIR pull [-q] REF" >&2; exit 2; }
skopeo copy -q --src-tls-verify=false "docker://$ref" "oci:$root/layout:pulled"
manifest=$(jq -r '.manifests[0].digest' "$root/layout/index.json")
i=0
for d in $(jq -r '.layers[].digest' "$root/layout/blobs/sha256/${manifest#sha256:}"); do
	mkdir -p "$root/layers/$i"
	tar -xzf "$root/layout/blobs/sha256/${d#sha256:}" -C "$root/layers/$i" &
	i=$((i + 1))
done
for _ in $(seq "$i"); do wait -n; done
