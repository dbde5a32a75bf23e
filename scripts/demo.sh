#!/usr/bin/env bash
# Build Berth and run a real container, offline, on an image made here from busybox-static.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh
cargo build --release --quiet -p berth-runtime-cli
bin="${CARGO_TARGET_DIR:-$PWD/target}/x86_64-unknown-linux-gnu/release/berth-runtime"

work=$(mktemp -d /tmp/berth-demo.XXXXXX)
state="$work/state"
trap '"$bin" --root "$state" delete --force demo >/dev/null 2>&1 || true; rm -rf "$work"' EXIT

# An image, made locally: a root filesystem holding the static busybox and its applets.
mkdir -p "$work/bundle/rootfs"/{bin,dev,proc,sys,tmp,etc,root}
cp /bin/busybox "$work/bundle/rootfs/bin/"
for applet in $(/bin/busybox --list); do
  [[ $applet == busybox ]] || ln -sf busybox "$work/bundle/rootfs/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' > "$work/bundle/rootfs/etc/passwd"
echo 'root:x:0:' > "$work/bundle/rootfs/etc/group"

# A default OCI config (as `runc spec` writes it), running a short script instead of a shell.
(cd "$work/bundle" && "$bin" spec)
sed -i -e 's/"terminal": true/"terminal": false/' \
       -e 's|^      "sh"$|      "sh", "-c", "echo \\"hello from $(hostname), pid $$ in its own namespaces\\"; id; ps; mount \| grep -c . \| sed s/^/mounts:\\\\ /"|' \
       "$work/bundle/config.json"

echo "+ berth-runtime run demo   (bundle: $work/bundle)"
"$bin" --root "$state" run --bundle "$work/bundle" demo
