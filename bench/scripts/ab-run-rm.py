#!/usr/bin/env python3
"""Compare two builds of Berth on `berth run --rm --network NET IMAGE true`, interleaved.

usage: ab-run-rm.py DIR_A DIR_B [N [NET [GAP]]]   (as root; N rounds, default 30; NET default
none; GAP seconds of idle time before each run, default 0)

DIR_A and DIR_B each hold `berth`, `berthd` and `berth-shim` (copy them out of the target
directory after each build). Each build gets its own store under a temporary directory with a
one-file busybox image (`berth import`); the rounds alternate A B / B A so that drift in the
machine's load falls on both. Prints each build's median, p10 and p90 (wall time measured
around the `berth` process, so a few hundred microseconds of Python are included in both) and
B/A. On a shared or noisy machine the ratio is the figure to trust; `berth-bench engine` gives
the absolute figures against the peers. Everything it made is removed at the end.

Environment: AB_TMP is the directory the stores go under (default /tmp). `berth-bench engine`
keeps its stores on a fresh loop-mounted ext4; /tmp on a root file system mounted with
`discard` is slower and noisier, so point AB_TMP at such a loop mount to measure as the bench
does. AB_ENV_A and AB_ENV_B ("NAME=VALUE ...") add variables to one side's `berth` commands and
so to the `berthd` the first of them starts: one build can then be compared with itself under a
setting.

Back-to-back runs (GAP 0) keep the machine warm in ways `berth-bench engine` does not, where the
peers run between berth's rounds: a disk flush or discard left by one run overlaps the next, a
lock's fast path stays armed. A GAP of 0.3 s measures the idle-machine case the bench sees.
"""
import os, sys, subprocess, time, statistics, tempfile, shutil
A, B = sys.argv[1], sys.argv[2]
N = int(sys.argv[3]) if len(sys.argv) > 3 else 30
NET = sys.argv[4] if len(sys.argv) > 4 else "none"
GAP = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
# The `/berth` cgroup parents the daemons' standby shims make in every hierarchy: removed at the
# end (deepest first, only while empty) if none existed before, as the benches do.
berth_cgroups = [f"/sys/fs/cgroup/{h}/berth" for h in os.listdir("/sys/fs/cgroup")
                 if os.path.isdir(f"/sys/fs/cgroup/{h}")]
berth_cgroups_existed = any(os.path.isdir(c) for c in berth_cgroups)
work = tempfile.mkdtemp(prefix="ab.", dir=os.environ.get("AB_TMP", "/tmp"))
envs = {n: dict(os.environ, **dict(kv.split("=", 1) for kv in os.environ.get(f"AB_ENV_{n}", "").split()))
        for n in ("A", "B")}
rootfs = os.path.join(work, "rootfs"); os.makedirs(rootfs + "/bin")
shutil.copy("/bin/busybox", rootfs + "/bin/busybox")
for a in ["sh", "true"]:
    os.symlink("busybox", f"{rootfs}/bin/{a}")
for d in ["etc", "proc", "sys", "dev", "tmp"]:
    os.makedirs(f"{rootfs}/{d}", exist_ok=True)
tar = os.path.join(work, "rootfs.tar")
subprocess.check_call(["tar", "-C", rootfs, "-cf", tar, "."])
roots = {}
for name, d in (("A", A), ("B", B)):
    r = os.path.join(work, name)
    roots[name] = (d, r)
    subprocess.check_call([f"{d}/berth", "--root", r, "import", tar, "abimg:latest"], stdout=subprocess.DEVNULL, env=envs[name])
    for _ in range(3):
        subprocess.check_call([f"{d}/berth", "--root", r, "run", "--rm", "--network", NET, "abimg", "true"], env=envs[name])
res = {"A": [], "B": []}
try:
    for i in range(N):
        for name in ("A", "B") if i % 2 == 0 else ("B", "A"):
            d, r = roots[name]
            if GAP:
                time.sleep(GAP)
            t = time.perf_counter()
            subprocess.check_call([f"{d}/berth", "--root", r, "run", "--rm", "--network", NET, "abimg", "true"], env=envs[name])
            res[name].append((time.perf_counter() - t) * 1000)
finally:
    for name, (d, r) in roots.items():
        try:
            pid = int(open(f"{r}/run/berthd.pid").read().strip())
            os.kill(pid, 15)
            for _ in range(100):
                if not os.path.exists(f"/proc/{pid}"): break
                time.sleep(0.05)
        except Exception as e:
            print("stop berthd:", e)
        subprocess.call([f"{d}/berthd", "--root", r, "--state", f"{r}/run", "--remove-networks"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(0.5)
    subprocess.call(f"grep -o '{work}[^ ]*' /proc/mounts | sort -r | xargs -r -n1 umount -l", shell=True)
    shutil.rmtree(work, ignore_errors=True)
    # The standby shims remove their pooled cgroups as they exit, just after their daemon.
    for _ in range(100 if not berth_cgroups_existed else 0):
        for c in berth_cgroups:
            for d, _, _ in sorted(os.walk(c), key=lambda w: -w[0].count("/")):
                try:
                    os.rmdir(d)
                except OSError:
                    pass
        if not any(os.path.isdir(c) for c in berth_cgroups):
            break
        time.sleep(0.05)
for name in ("A", "B"):
    v = sorted(res[name])
    print(f"{name} {roots[name][0]}: median {statistics.median(v):.2f} ms  p10 {v[len(v)//10]:.2f}  p90 {v[(len(v)*9)//10]:.2f}")
print(f"B/A = {statistics.median(res['B'])/statistics.median(res['A']):.3f}")
