"""benchlib.bed - the multi-host test bed (tests/cluster/bed) as the cluster benchmark
uses it: bring it up and down, run commands on its hosts, launch across the first N
hosts with mpirun, remount /shared (cold client caches), read the storage server's
own counters (GlusterFS volume profile) and measure its links with iperf3.

The benchmark runs on a bed of its own (PYFS_BED_ID, default 1), so a developer's
bed (ID 0 by default) is left alone; only the bed's own subnet is ever addressed.
"""

import concurrent.futures
import os
import re
import time

from benchlib.common import run_captured

# Operations that change the file system: none may come from a read-only pull.
WRITE_FOPS = {"WRITE", "CREATE", "UNLINK", "MKNOD", "MKDIR", "RMDIR", "RENAME", "LINK",
              "SYMLINK", "SETATTR", "FSETATTR", "SETXATTR", "FSETXATTR", "REMOVEXATTR",
              "FREMOVEXATTR", "TRUNCATE", "FTRUNCATE", "FALLOCATE", "DISCARD", "ZEROFILL"}
# Operations that move file data; every other one is a metadata operation.
DATA_FOPS = {"READ", "WRITE"}
# Client-side notifications: counted by the profile, cost the server nothing.
FREE_FOPS = {"FORGET", "RELEASE", "RELEASEDIR"}


class BedError(RuntimeError):
    pass


def cpu_times():
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        v = [int(x) for x in f.readline().split()[1:]]
    idle = v[3] + v[4]  # idle + iowait
    return sum(v) - idle, sum(v)


def cpu_busy(before, after):
    """Fraction of the machine's CPU time that was busy between two cpu_times()."""
    total = after[1] - before[1]
    return (after[0] - before[0]) / total if total > 0 else None


class Bed:
    def __init__(self, b, bed_id):
        self.b = b
        self.id = str(bed_id)
        self.exe = os.path.join(b.src, "tests", "cluster", "bed")
        self.state = os.environ.get("PYFS_BED_STATE") or "/var/tmp/pyfs-bed%s" % self.id
        self.subnet = "10.213.%s" % self.id
        self.hosts = []
        self.mpi_env = {}
        self.up_seconds = None

    def env(self, extra=None):
        env = self.b.env(self.mpi_env)
        env["PYFS_BED_ID"] = self.id
        env["PYFS_BED_STATE"] = self.state
        env.pop("PYFS_BED_SUBNET", None)
        if extra:
            env.update(extra)
        return env

    def cmd(self, *args, check=True, timeout=300, quiet=False):
        p = self.b.run([self.exe] + list(args), check=False, env=self.env(), timeout=timeout,
                       quiet=quiet)
        if check and p.returncode != 0:
            raise BedError("bed %s failed (exit %d): %s" % (
                args[0], p.returncode, (p.stderr or p.stdout).strip()[-600:]))
        return p

    def up(self, n, rate, storage_rate):
        t0 = time.monotonic()
        self.cmd("up", str(n), "--rate", str(rate), "--storage-rate", str(storage_rate),
                 timeout=300)
        self.up_seconds = time.monotonic() - t0
        self.hosts = ["node%d" % i for i in range(1, n + 1)]
        for line in self.cmd("env", quiet=True).stdout.splitlines():
            m = re.match(r'export (.*)', line)
            if not m:
                continue
            for kv in re.findall(r'(\w+)=("[^"]*"|\S+)', m.group(1)):
                self.mpi_env[kv[0]] = kv[1].strip('"')
        # The bed's host file gives addresses (no name lookups on the machine).
        with open(self.mpi_env["PYFS_HOSTFILE"]) as f:
            self.host_lines = [line for line in f.read().splitlines() if line.strip()]

    def down(self):
        self.cmd("down", check=False, timeout=120, quiet=True)
        self.hosts = []

    def exec(self, host, argv, check=True, timeout=300):
        p = run_captured([self.exe, "exec", host] + list(argv), env=self.env(), timeout=timeout)
        if check and p.returncode != 0:
            raise BedError("on %s: %s failed (exit %d): %s" % (
                host, " ".join(argv), p.returncode, (p.stderr or p.stdout).strip()[-400:]))
        return p

    def on_hosts(self, hosts, argv, check=True):
        """argv on each of hosts at once; the results in host order."""
        with concurrent.futures.ThreadPoolExecutor(max_workers=len(hosts) or 1) as ex:
            return list(ex.map(lambda h: self.exec(h, argv, check=check), hosts))

    def hostfile(self, n):
        path = os.path.join(self.b.cluster_work, "hostfile.%d" % n)
        with open(path, "w") as f:
            f.write("".join(line + "\n" for line in self.host_lines[:n]))
        return path

    def mpirun(self, n, argv, env=None, export=(), timeout=900):
        """mpirun of argv on the first n hosts, one rank each; (seconds, CompletedProcess)."""
        full = ["mpirun", "--hostfile", self.hostfile(n), "--map-by", "ppr:1:node",
                "--bind-to", "none"]
        for name in export:
            full += ["-x", name]
        full += list(argv)
        e = self.env(env)
        self.b.log("$ " + " ".join(full), console=False)
        c0 = cpu_times()
        t0 = time.perf_counter()
        p = run_captured(full, env=e, timeout=timeout)
        dt = time.perf_counter() - t0
        p.cpu_busy = cpu_busy(c0, cpu_times())
        self.b.log((p.stdout + p.stderr).rstrip()[-3000:], console=False)
        return dt, p

    def remount(self):
        self.cmd("remount", quiet=True)

    def gluster(self, *args):
        return self.exec("storage", ["gluster", "--mode=script"] + list(args))

    def profile_start(self):
        self.cmd("profile", "start", quiet=True)

    def profile_info(self):
        """The server's counters since profile_start: {"bytes_read", "bytes_written", "ops"}."""
        text = self.cmd("profile", "info", quiet=True).stdout
        # `info cumulative` prints the cumulative section once per brick.
        ops, read, written = {}, 0, 0
        for line in text.splitlines():
            f = line.split()
            if len(f) >= 2 and re.fullmatch(r"[A-Z]+", f[-1]) and f[-2].isdigit():
                ops[f[-1]] = ops.get(f[-1], 0) + int(f[-2])
            m = re.match(r"\s*Data Read: (\d+) bytes", line)
            if m:
                read += int(m.group(1))
            m = re.match(r"\s*Data Written: (\d+) bytes", line)
            if m:
                written += int(m.group(1))
        return {"bytes_read": read, "bytes_written": written, "ops": ops}

    def fuse_mounts(self, host, path):
        p = self.exec(host, ["awk", "-v", "d=" + path, "$2 == d { print $3 }", "/proc/self/mounts"],
                      check=False)
        return p.stdout.split()

    def unmount_all(self, path, hosts=None):
        """Unmount path (a FUSE mount) on every host that has it; True if none is left."""
        hosts = self.hosts if hosts is None else hosts
        script = ('grep -q " %s fuse" /proc/self/mounts || exit 0; '
                  'fusermount3 -u %s 2>/dev/null || { sleep 0.3; fusermount3 -u %s; } || '
                  'fusermount3 -uz %s' % (path, path, path, path))
        self.on_hosts(hosts, ["sh", "-c", script], check=False)
        return not any(self.fuse_mounts(h, path) for h in hosts)

    def iperf(self, server, client, seconds=4):
        """Mbit/s from client to server (iperf3, one stream)."""
        addr = self.address(server)
        self.exec(server, ["iperf3", "-s", "-1", "-D", "-B", addr])
        time.sleep(0.5)
        p = self.exec(client, ["iperf3", "-c", addr, "-t", str(seconds), "-f", "m"],
                      timeout=seconds + 30)
        m = re.findall(r"([\d.]+) Mbits/sec.*receiver", p.stdout)
        return float(m[-1]) if m else None

    def address(self, host):
        return "%s.200" % self.subnet if host == "storage" else "%s.%d" % (
            self.subnet, int(host[4:]))
