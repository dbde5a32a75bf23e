#!/usr/bin/env bash
# Build Berth and run a real container end to end, offline, on an image made here from
# Debian's busybox-static: `berth import` a root filesystem, then `berth run` it (the first
# `berth` command starts a private berthd for this demo's root; the demo stops it at the end).
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh
bin=$(./scripts/build.sh)

work=$(mktemp -d /tmp/berth-demo.XXXXXX)
root="$work/root"
berth() { "$bin/berth" --root "$root" "$@"; }
cleanup() {
  berth rm -f demo >/dev/null 2>&1 || true
  if [[ -s "$root/run/berthd.pid" ]]; then
    pid=$(cat "$root/run/berthd.pid")
    kill "$pid" 2>/dev/null || true
    while kill -0 "$pid" 2>/dev/null; do sleep 0.05; done
  fi
  # The root's default bridge network lives on the host (bridge, masquerade rule): remove it
  # with the root.
  [[ -d "$root/networks" ]] && "$bin/berthd" --root "$root" --remove-networks || true
  rm -rf "$work"
}
trap cleanup EXIT

# An image, made locally: a root filesystem holding the static busybox and its applets.
mkdir -p "$work/rootfs"/{bin,dev,proc,sys,tmp,etc,root}
cp /bin/busybox "$work/rootfs/bin/"
for applet in $(/bin/busybox --list); do
  [[ $applet == busybox ]] || ln -sf busybox "$work/rootfs/bin/$applet"
done
echo 'root:x:0:0:root:/root:/bin/sh' > "$work/rootfs/etc/passwd"
echo 'root:x:0:' > "$work/rootfs/etc/group"
tar -C "$work/rootfs" -cf "$work/rootfs.tar" .

echo "+ berth import rootfs.tar demo/busybox:latest"
berth import "$work/rootfs.tar" demo/busybox:latest >/dev/null
berth images

echo "+ berth run --rm --name demo demo/busybox sh -c ..."
berth run --rm --name demo demo/busybox \
  sh -c 'echo "hello from $(hostname), pid $$ in its own namespaces"; id; ps; echo "caps: $(grep CapEff /proc/self/status)"'
