"""soak.py - many interpreters importing the numpy/scipy stack from a pyfs mount, for a
set time, while the served bytes are sampled against the source tree and the daemon's
memory is watched.

Usage: /usr/bin/python3.11 -s -S -P soak.py SOURCE MOUNT DAEMON_PID SECONDS [WORKERS]

WORKERS (default 16) threads each run fresh interpreters (/usr/bin/python3.11 -s -S -P,
PYTHONPATH=MOUNT) back to back until SECONDS have passed; each interpreter imports
numpy, scipy.linalg, scipy.sparse, scipy.special, scipy.fft, h5py and mpi4py, checks
that every module came from MOUNT and computes with numpy and scipy (so their shared
libraries are mapped from the mount). Every 5 s, 40 random files of SOURCE are read
from MOUNT, with their page cache dropped first so the daemon serves them, and
compared with SOURCE. The daemon's RSS is taken once every worker has imported once
(first) and at the end (last).

Prints a summary; exits 1 on any failed import, any wrong byte, or RSS growth beyond
PYFS_SOAK_RSS_SLACK (default: 5 % + 8 MiB).
"""
import hashlib
import os
import random
import subprocess
import sys
import threading
import time

src, mnt, daemon, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
workers = int(sys.argv[5]) if len(sys.argv) > 5 else 16
slack_pct, slack_mib = (float(x) for x in os.environ.get("PYFS_SOAK_RSS_SLACK", "5,8").split(","))

CODE = r"""
import os, sys
mnt = sys.argv[1]
import numpy, scipy, scipy.linalg, scipy.sparse, scipy.special, scipy.fft, h5py, mpi4py
for m in list(sys.modules.values()):
    f = getattr(m, "__file__", None)
    if f and m.__name__.split(".")[0] in ("numpy", "scipy", "h5py", "mpi4py"):
        assert f.startswith(mnt + "/"), (m.__name__, f)
a = numpy.arange(1.0, 17.0).reshape(4, 4) + numpy.eye(4) * 50
assert abs(numpy.linalg.det(a) - scipy.linalg.det(a)) < 1e-6 * abs(numpy.linalg.det(a))
assert scipy.sparse.identity(5).sum() == 5
assert abs(scipy.special.gamma(5.0) - 24.0) < 1e-9
assert abs(scipy.fft.fft(numpy.ones(8))[0] - 8) < 1e-9
"""

lock = threading.Lock()
stats = {"imports": 0, "failed": 0, "checked": 0, "wrong": 0, "rounds": 0}
failures = []
first_done = set()
deadline = time.monotonic() + seconds
env = dict(os.environ, PYTHONPATH=mnt, PYTHONDONTWRITEBYTECODE="1")


def rss_kib():
    with open(f"/proc/{daemon}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise RuntimeError("no VmRSS")


def worker(n):
    while time.monotonic() < deadline:
        try:
            p = subprocess.run([sys.executable, "-s", "-S", "-P", "-c", CODE, mnt], env=env,
                               stdin=subprocess.DEVNULL, capture_output=True, timeout=120)
            ok, err = p.returncode == 0, p.stderr.decode("utf-8", "replace").strip()
        except subprocess.TimeoutExpired:
            ok, err = False, "import hung for 120 s"
        with lock:
            stats["imports"] += 1
            if ok:
                first_done.add(n)
            else:
                stats["failed"] += 1
                failures.append(f"worker {n}: " + (err.splitlines() or ["?"])[-1][:300])


files = []
for root, dirs, names in os.walk(src):
    files += [os.path.relpath(os.path.join(root, n), src) for n in names
              if not os.path.islink(os.path.join(root, n))]
rng = random.Random(1)

threads = [threading.Thread(target=worker, args=(n,), daemon=True) for n in range(workers)]
for t in threads:
    t.start()
rss_first = None
next_check = time.monotonic()
while any(t.is_alive() for t in threads):
    time.sleep(0.2)
    if rss_first is None and len(first_done) == workers:
        rss_first = rss_kib()
    if time.monotonic() >= next_check and time.monotonic() < deadline:
        next_check += 5
        stats["rounds"] += 1
        for rel in rng.sample(files, min(40, len(files))):
            with open(os.path.join(mnt, rel), "rb") as f:
                os.posix_fadvise(f.fileno(), 0, 0, os.POSIX_FADV_DONTNEED)
                served = hashlib.sha1(f.read()).digest()
            with open(os.path.join(src, rel), "rb") as f:
                source = hashlib.sha1(f.read()).digest()
            stats["checked"] += 1
            if served != source:
                stats["wrong"] += 1
                failures.append(f"wrong bytes served for {rel}")
rss_last = rss_kib()
if rss_first is None:
    failures.append("not every worker completed an import")
    rss_first = rss_last
limit = rss_first * (1 + slack_pct / 100) + slack_mib * 1024
print(f"{seconds:.0f} s, {workers} workers: {stats['imports']} imports, {stats['failed']} failed; "
      f"{stats['checked']} files checksummed in {stats['rounds']} rounds, {stats['wrong']} wrong; "
      f"daemon RSS first {rss_first / 1024:.1f} MiB, last {rss_last / 1024:.1f} MiB "
      f"(limit {limit / 1024:.1f} MiB)", file=sys.stderr)
if rss_last > limit:
    failures.append(f"daemon RSS grew from {rss_first} KiB to {rss_last} KiB")
for f in failures[:10]:
    print("FAILED: " + f, file=sys.stderr)
sys.exit(1 if failures else 0)
