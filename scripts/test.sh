#!/usr/bin/env bash
# The whole test suite: formatting, lints, unit, integration (root, real kernel features) and
# end-to-end tests (real binaries, real peers). Run as root; nothing is skipped.
set -euo pipefail
cd "$(dirname "$0")/.."

./scripts/deps.sh

if [[ $(id -u) -ne 0 ]]; then
  echo "test.sh: the integration and end-to-end tests create containers; run as root" >&2
  exit 1
fi

cargo fmt --all --check
cargo clippy --workspace --all-targets -- -D warnings
RUSTDOCFLAGS="-D warnings" cargo doc --workspace --no-deps --quiet
# The end-to-end tests run sibling binaries (berthd, berth-shim) from the same target directory.
cargo build --workspace --bins
cargo test --workspace
