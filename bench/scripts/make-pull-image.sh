#!/usr/bin/env bash
# Build the large image `berth-bench pull` pulls, as an OCI image layout, offline from any
# container registry:
#   layer 1: a Debian bookworm minbase root filesystem from `debootstrap --variant=minbase`,
#            fetched from the Debian mirror apt is configured with;
#   layer 2: a CPython 3.11 library directory (standard library, its test suite, compiled
#            bytecode, site-packages) at /usr/local/lib/python3.11 -- by default the machine's
#            /root/.pyenv/versions/3.11.7/lib/python3.11 -- topped up, while the image is under
#            255 MB compressed or 50,000 files, with host directories at their own paths
#            (/usr/include, /usr/share/i18n, /usr/share/perl, ... in a fixed order). On the
#            project's machine that makes 2 layers, about 260 MB gzip: the shape of the 264 MB
#            2-layer image the anchors' figures were measured with.
# Each layer is a gzip'd tar (GNU tar, pigz -6, sorted names, numeric owners); the layout has a
# config with rootfs.diff_ids, an OCI manifest and index.json with the tag `bench`.
#
# The result is cached: a second run with the same --out prints it and exits at once (use
# --force to rebuild). Needs root (debootstrap), debootstrap, pigz, GNU tar, sha256sum, jq.
#
# usage: bench/scripts/make-pull-image.sh [--out DIR] [--mirror URL] [--python-lib DIR] [--force]
#   --out DIR         cache directory (default /var/cache/berth-bench/pull-image); the layout is
#                     DIR/oci, a summary DIR/summary.json
#   --mirror URL      Debian mirror for debootstrap (default: the bookworm URI in apt's sources)
#   --python-lib DIR  the Python library directory for layer 2
#   --force           rebuild even when DIR/oci exists
set -euo pipefail

out=/var/cache/berth-bench/pull-image
mirror=
pylib=
force=0
while [ $# -gt 0 ]; do
	case "$1" in
	--out) out=$2; shift 2 ;;
	--mirror) mirror=$2; shift 2 ;;
	--python-lib) pylib=$2; shift 2 ;;
	--force) force=1; shift ;;
	-h | --help) sed -n '2,/^set -euo/p' "$0" | sed '$d; s/^# \{0,1\}//'; exit 0 ;;
	*) echo "make-pull-image: unknown argument $1 (see --help)" >&2; exit 2 ;;
	esac
done

say() { echo "make-pull-image: $*" >&2; }
die() { say "error: $*"; exit 1; }

if [ -f "$out/oci/index.json" ] && [ "$force" = 0 ]; then
	say "cached: $out/oci (use --force to rebuild)"
	cat "$out/summary.json"
	exit 0
fi

[ "$(id -u)" = 0 ] || die "must run as root (debootstrap creates a root filesystem); try: sudo $0 $*"
for tool in debootstrap pigz tar sha256sum jq; do
	command -v "$tool" >/dev/null || die "$tool is not installed (Debian package: ${tool/sha256sum/coreutils})"
done

# The mirror apt uses for bookworm: deb822 .sources stanzas, then one-line .list entries.
if [ -z "$mirror" ]; then
	mirror=$(awk '
		/^URIs:/ { uri = $2 }
		/^Suites:/ { for (i = 2; i <= NF; i++) if ($i == "bookworm") { print uri; exit } }
		/^$/ { uri = "" }' /etc/apt/sources.list.d/*.sources 2>/dev/null || true)
fi
if [ -z "$mirror" ]; then
	mirror=$(awk '$1 == "deb" && $3 == "bookworm" { print $2; exit }' \
		/etc/apt/sources.list /etc/apt/sources.list.d/*.list 2>/dev/null || true)
fi
mirror=${mirror:-http://deb.debian.org/debian}

if [ -z "$pylib" ]; then
	for c in /root/.pyenv/versions/3.11.7/lib/python3.11 /usr/lib/python3.11; do
		if [ -d "$c" ]; then pylib=$c; break; fi
	done
fi
[ -n "$pylib" ] && [ -d "$pylib" ] || die "no Python library directory found; pass --python-lib DIR"

work="$out/work"
rm -rf "$work" "$out/oci.tmp"
mkdir -p "$work" "$out/oci.tmp/blobs/sha256"
cleanup() { rm -rf "$work" "$out/oci.tmp"; }
trap cleanup EXIT

keyring=/usr/share/keyrings/debian-archive-keyring.gpg
[ -f "$keyring" ] || keyring=
say "layer 1: debootstrap --variant=minbase bookworm from $mirror"
debootstrap --variant=minbase ${keyring:+--keyring=$keyring} bookworm "$work/rootfs" "$mirror" \
	>"$work/debootstrap.log" 2>&1 || {
	tail -20 "$work/debootstrap.log" >&2
	die "debootstrap failed (log above); check that $mirror is reachable or pass --mirror URL"
}
# What a Debian base image leaves out: the contents of the API filesystems and apt's caches.
rm -rf "$work/rootfs"/dev/* "$work/rootfs"/proc/* "$work/rootfs"/sys/* \
	"$work/rootfs"/var/cache/apt/archives/*.deb "$work/rootfs"/var/lib/apt/lists/*_Packages

say "layer 2: $pylib at /usr/local/lib/python3.11"
mkdir -p "$work/python/usr/local/lib"
cp -a "$pylib" "$work/python/usr/local/lib/python3.11"

count() { find "$1" -mindepth 1 | wc -l; }
tar_dir() { tar -C "$1" --sort=name --numeric-owner --xattrs --xattrs-include='*' -cf - .; }
gz_size() { tar_dir "$1" | pigz -6 -n | wc -c; }

# One layer: tar | pigz into blobs/, digest of the blob and of the tar (the diff_id).
declare -a blob_hex blob_size diff_hex
make_layer() {
	local dir=$1 tmp="$out/oci.tmp/layer.tmp"
	tar_dir "$dir" | pigz -6 -n >"$tmp"
	local hex diff
	hex=$(sha256sum "$tmp" | cut -d' ' -f1)
	diff=$(pigz -dc "$tmp" | sha256sum | cut -d' ' -f1)
	mv "$tmp" "$out/oci.tmp/blobs/sha256/$hex"
	blob_hex+=("$hex")
	blob_size+=("$(stat -c %s "$out/oci.tmp/blobs/sha256/$hex")")
	diff_hex+=("$diff")
}
say "compressing layer 1"
make_layer "$work/rootfs"

# Top up layer 2 towards the anchors' image (264 MB gzip) with host directories, in this order,
# until the estimated compressed total (each directory compressed alone) reaches $fill_to and
# there are 50k+ files.
fill_to=255000000
files=$(($(count "$work/rootfs") + $(count "$work/python")))
total=$((blob_size[0] + $(gz_size "$work/python")))
for d in /usr/include /usr/share/i18n /usr/share/perl /usr/lib/x86_64-linux-gnu/perl \
	/usr/share/doc /usr/share/locale /usr/share/man /usr/share /usr/lib; do
	[ "$files" -lt 50000 ] || [ "$total" -lt "$fill_to" ] || break
	[ -d "$d" ] || continue
	size=$(gz_size "$d")
	say "layer 2: $files files, about $total bytes compressed so far: adding the host's $d (about $size bytes compressed)"
	mkdir -p "$work/python$(dirname "$d")"
	cp -a "$d" "$work/python$(dirname "$d")/"
	total=$((total + size))
	files=$(($(count "$work/rootfs") + $(count "$work/python")))
done
say "compressing layer 2"
make_layer "$work/python"
layers=(rootfs python)
compressed=$((blob_size[0] + blob_size[1]))
[ "$files" -ge 50000 ] && [ "$compressed" -ge 250000000 ] ||
	die "the image has only $files files and $compressed compressed bytes (need 50k+ and 250 MB+)"
uncompressed=$(du -sb --apparent-size "${layers[@]/#/$work/}" | awk '{ s += $1 } END { print s }')

# Config, manifest, index.
put_json() { # put_json FILE-CONTENT -> prints "hex size"
	local tmp="$out/oci.tmp/json.tmp" hex
	printf '%s' "$1" >"$tmp"
	hex=$(sha256sum "$tmp" | cut -d' ' -f1)
	mv "$tmp" "$out/oci.tmp/blobs/sha256/$hex"
	echo "$hex $(stat -c %s "$out/oci.tmp/blobs/sha256/$hex")"
}
diff_ids=$(printf 'sha256:%s\n' "${diff_hex[@]}" | jq -R . | jq -cs .)
history=$(printf '%s\n' "${layers[@]}" | jq -R '{created_by: ("berth-bench make-pull-image.sh: " + .)}' | jq -cs .)
config=$(jq -cn --argjson d "$diff_ids" --argjson h "$history" '{
	architecture: "amd64", os: "linux",
	config: { Env: ["PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"], Cmd: ["/bin/bash"] },
	rootfs: { type: "layers", diff_ids: $d }, history: $h }')
read -r config_hex config_size <<<"$(put_json "$config")"
layer_descs=$(for i in "${!blob_hex[@]}"; do
	jq -cn --arg h "${blob_hex[$i]}" --argjson s "${blob_size[$i]}" \
		'{mediaType: "application/vnd.oci.image.layer.v1.tar+gzip", digest: ("sha256:" + $h), size: $s}'
done | jq -cs .)
manifest=$(jq -cn --arg ch "$config_hex" --argjson cs "$config_size" --argjson l "$layer_descs" '{
	schemaVersion: 2, mediaType: "application/vnd.oci.image.manifest.v1+json",
	config: { mediaType: "application/vnd.oci.image.config.v1+json", digest: ("sha256:" + $ch), size: $cs },
	layers: $l }')
read -r manifest_hex manifest_size <<<"$(put_json "$manifest")"
jq -cn --arg mh "$manifest_hex" --argjson ms "$manifest_size" '{
	schemaVersion: 2, mediaType: "application/vnd.oci.image.index.v1+json",
	manifests: [{ mediaType: "application/vnd.oci.image.manifest.v1+json", digest: ("sha256:" + $mh), size: $ms,
		annotations: { "org.opencontainers.image.ref.name": "bench" } }] }' >"$out/oci.tmp/index.json"
printf '{"imageLayoutVersion":"1.0.0"}' >"$out/oci.tmp/oci-layout"

jq -n --arg mirror "$mirror" --arg pylib "$pylib" --argjson layers "$layer_descs" \
	--argjson files "$files" --argjson c "$compressed" --argjson u "$uncompressed" \
	--arg manifest "sha256:$manifest_hex" --arg date "$(date -u '+%Y-%m-%d %H:%M')" '{
	layout: "oci", tag: "bench", manifest: $manifest, built: $date, mirror: $mirror, python_lib: $pylib,
	layers: ($layers | length), compressed_bytes: $c, uncompressed_bytes: $u, files: $files,
	layer_sizes: [$layers[].size] }' >"$out/oci.tmp/summary.json"

rm -rf "$out/oci"
mv "$out/summary.json" "$out/summary.json.old" 2>/dev/null || true
mv "$out/oci.tmp/summary.json" "$out/summary.json"
rm -f "$out/summary.json.old"
mv "$out/oci.tmp" "$out/oci"
say "built $out/oci (tag bench)"
cat "$out/summary.json"
