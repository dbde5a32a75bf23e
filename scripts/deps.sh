#!/usr/bin/env bash
# Install what building and testing Berth needs on Debian 12 (idempotent; fast when done).
# Must run as root: it uses apt-get.
set -euo pipefail

packages=(
  busybox-static    # the static /bin/busybox test images are built from (offline)
  libseccomp-dev    # libseccomp.a, linked into berth-runtime to compile seccomp profiles
  pkg-config
  musl-tools        # musl-gcc: the C parts (ring, zstd, jemalloc) of the musl-built berth CLI
  runc crun         # peer runtimes the benchmark and interop tests compare against
  containerd        # drives berth-runtime through its shim in the end-to-end tests
  podman conmon     # drives berth-runtime through conmon in the end-to-end tests
  procps            # ps(1), used by `berth-runtime ps`
  time              # GNU time, for the peak-RSS figures in bench/
  docker-registry   # a real OCI distribution registry (2.8) the image tests run on loopback
  apache2-utils     # htpasswd, for the registry's basic-auth setup in the tests
  openssl           # the token-auth test server's signing key and certificate
  ca-certificates   # the system's root certificates the registry client verifies HTTPS with
  skopeo            # interop partner: copies images into the test registry, reads Berth's pushes and archives
  umoci             # interop partner for OCI layouts
  pigz              # the pull benchmark builds its large image's gzip layers
  debootstrap       # the pull benchmark's Debian minbase layer
  jq                # the pull benchmark's image builder reads JSON with it
  protobuf-compiler # protoc, for the berth.v1 gRPC code generated at build time
  containernetworking-plugins # CNI bridge, host-local, portmap: every container's network
  iptables          # the portmap plugin's DNAT and Berth's masquerade rules (nft backend is fine)
  iproute2          # ip(8): the network tests look at links, addresses and namespaces
)

missing=()
for p in "${packages[@]%% *}"; do
  [[ "$p" == \#* ]] && continue
  dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed" || missing+=("$p")
done

if ((${#missing[@]})); then
  if [[ $(id -u) -ne 0 ]]; then
    echo "deps.sh: missing packages ${missing[*]}; run as root to install them" >&2
    exit 1
  fi
  echo "deps.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
fi

command -v cargo >/dev/null || { echo "deps.sh: cargo not found; install Rust (rustup) first" >&2; exit 1; }

# The `berth` CLI is built for musl (scripts/build.sh). rustup fetches the target's standard
# library once; where it cannot, build.sh builds the glibc CLI instead.
if command -v rustup >/dev/null && ! rustup target list --installed 2>/dev/null | grep -qx x86_64-unknown-linux-musl; then
  timeout 300 rustup target add x86_64-unknown-linux-musl >/dev/null 2>&1 ||
    echo "deps.sh: could not add Rust's x86_64-unknown-linux-musl target; berth will be the glibc build" >&2
fi
