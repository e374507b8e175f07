#!/usr/bin/env python3
"""contention.py - importers on a pyfs mount next to importers on local disk, at once.

N processes import a module set from MOUNT while N others import it from LOCAL (the
same tree on local disk), all started together; each runs ROUNDS warm imports in
fresh interpreters. Prints the median wall time of one import in each group and
their ratio (pyfs / local): the cost of pyfs's round trips (the isatty() ioctl
Python makes on every file it opens) when the CPUs are shared.

  usage: bench/contention.py MOUNT LOCAL [ROUNDS (3)] [N (8)]
"""
import os
import statistics
import subprocess
import sys
import time
from multiprocessing import Barrier, Process, Queue

PY = ["/usr/bin/python3.11", "-s", "-S", "-P", "-c"]
IMPORTS = "import numpy, scipy.linalg, scipy.sparse, scipy.special, scipy.optimize"


def importer(path, barrier, queue, tag, rounds):
    env = dict(os.environ, PYTHONPATH=path)
    barrier.wait()
    for _ in range(rounds):
        start = time.perf_counter()
        subprocess.run(PY + [IMPORTS], env=env, check=True)
        queue.put((tag, time.perf_counter() - start))


def main():
    mount, local = sys.argv[1], sys.argv[2]
    rounds = int(sys.argv[3]) if len(sys.argv) > 3 else 3
    n = int(sys.argv[4]) if len(sys.argv) > 4 else 8
    for path in (mount, local):  # warm both caches first
        subprocess.run(PY + [IMPORTS], env=dict(os.environ, PYTHONPATH=path), check=True)
    barrier, queue = Barrier(2 * n), Queue()
    procs = [Process(target=importer, args=(path, barrier, queue, tag, rounds))
             for tag, path in (("pyfs", mount), ("local", local)) for _ in range(n)]
    for p in procs:
        p.start()
    times = {"pyfs": [], "local": []}
    for _ in range(2 * n * rounds):
        tag, seconds = queue.get()
        times[tag].append(seconds)
    for p in procs:
        p.join()
    mp, ml = statistics.median(times["pyfs"]), statistics.median(times["local"])
    print(f"{n}+{n} importers: pyfs {mp:.3f} s  local {ml:.3f} s  ratio {mp / ml:.3f}")


if __name__ == "__main__":
    main()
