#!/usr/bin/env bash
# Build Berth's release binaries into one directory, TARGET/dist (TARGET is $CARGO_TARGET_DIR,
# else ./target), laid out as they run: `berth` starts the `berthd` beside it, berthd runs the
# `berth-shim` beside it. Prints the directory.
#
#   berth                               for x86_64-unknown-linux-musl, with jemalloc: a CLI is
#                                       a new process per command, and musl's start-up skips
#                                       glibc's CPUID probing (.cargo/config.toml says why)
#   berthd, berth-shim, berth-runtime   for x86_64-unknown-linux-gnu, statically linked
#
# Without Rust's musl target or musl-gcc (scripts/deps.sh installs both when it can), `berth`
# is the glibc build, which works the same and starts a little slower.
set -euo pipefail
cd "$(dirname "$0")/.."

target="${CARGO_TARGET_DIR:-$PWD/target}"
musl=x86_64-unknown-linux-musl
cargo build --release --quiet -p berth-daemon -p berth-shim -p berth-runtime-cli
if [[ -d "$(rustc --print target-libdir --target "$musl" 2>/dev/null)" ]] && command -v musl-gcc >/dev/null; then
  cargo build --release --quiet --target "$musl" -p berth-cli
  cli="$target/$musl/release/berth"
else
  echo "build.sh: no Rust $musl target or no musl-gcc; berth is the glibc build" >&2
  cargo build --release --quiet -p berth-cli
  cli="$target/x86_64-unknown-linux-gnu/release/berth"
fi

dist="$target/dist"
mkdir -p "$dist"
# Hard links to cargo's outputs, replaced (never modified in place) at each build. A fresh copy
# would work too, but idle shims run from one measured 0.68 MiB RSS instead of 0.48 (the copy's
# page cache is likely in larger folios, which a shim faults back in whole).
link() { ln -f "$1" "$2" 2>/dev/null || install -m 0755 "$1" "$2"; }
for b in berthd berth-shim berth-runtime; do
  link "$target/x86_64-unknown-linux-gnu/release/$b" "$dist/$b"
done
link "$cli" "$dist/berth"
echo "$dist"
