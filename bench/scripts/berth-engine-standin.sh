#!/usr/bin/env bash
# A stand-in for the engine verbs `berth-bench engine` uses, to check its harness before the
# real berth/berthd/berth-shim exist: every verb is podman with its store in ROOT/podman. It
# fakes berthd (a copy of sleep named berthd, pid in ROOT/run/berthd.pid) and names each
# container's conmon as its "shim" (ROOT/run/shims/<id>/shim.pid). Its figures say nothing
# about Berth.
#   berth-bench engine --berth bench/scripts/berth-engine-standin.sh --containers 20
set -euo pipefail
root=
args=()
while [ $# -gt 0 ]; do
	case "$1" in
	--root) root=$2; shift 2 ;;
	*) args+=("$1"); shift ;;
	esac
done
[ -n "$root" ] || { echo "usage: $0 --root DIR VERB ARGS..." >&2; exit 2; }
[ "${args[0]:-}" = --version ] && { echo "berth-engine-standin (podman)"; exit 0; }
run=$root/run
mkdir -p "$run/shims"
if ! { [ -f "$run/berthd.pid" ] && kill -0 "$(cat "$run/berthd.pid")" 2>/dev/null; }; then
	cp /bin/sleep "$run/berthd"
	setsid "$run/berthd" infinity </dev/null >/dev/null 2>&1 &
	echo $! >"$run/berthd.pid"
fi
p=(podman --root "$root/podman/root" --runroot "$root/podman/runroot" --tmpdir "$root/podman/tmp"
	--storage-driver overlay --cgroup-manager cgroupfs --events-backend file --runtime runc)
# podman asks for nofile and nproc above this machine's hard limits by default (and lowers its
# own nproc to 32768 before it starts conmon).
nproc=$(ulimit -Hu)
[ "$nproc" = unlimited ] || [ "$nproc" -gt 32768 ] && nproc=32768
ulimit=(--ulimit "nofile=$(ulimit -Hn):$(ulimit -Hn)" --ulimit "nproc=$nproc:$nproc")
verb=${args[0]}
rest=("${args[@]:1}")
case "$verb" in
load) exec "${p[@]}" load -q "${rest[@]}" ;;
ps) exec "${p[@]}" ps "${rest[@]}" ;;
rm)
	"${p[@]}" rm -t 0 "${rest[@]}"
	for id in "${rest[@]}"; do [ "${id#-}" = "$id" ] && rm -rf "$run/shims/$id"*; done
	;;
run)
	if [ "${rest[0]}" = -d ]; then
		id=$("${p[@]}" run --network none "${ulimit[@]}" "${rest[@]}")
		mkdir -p "$run/shims/$id"
		"${p[@]}" inspect -f '{{.State.ConmonPid}}' "$id" >"$run/shims/$id/shim.pid"
		echo "$id"
	else
		exec "${p[@]}" run --network none "${ulimit[@]}" "${rest[@]}"
	fi
	;;
*) echo "$0: verb $verb is not stood in for" >&2; exit 2 ;;
esac
