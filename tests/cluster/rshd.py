"""rshd.py - the bed's network leg for launching commands on a host from
inside another host (mpirun on node1 starting orted on node2): a PID
namespace cannot enter a sibling's, so `bed rsh` inside a host asks this
server, which runs in the machine's own namespaces, to enter the target.

  python3 rshd.py serve ADDR PORT BED   listen on ADDR:PORT (the bed's bridge)
  python3 rshd.py call ADDR PORT HOST CMDLINE
                                        run CMDLINE on HOST, relay its output
                                        and exit with its status

Only peers on the bed's /24 are served. Frames: 1 byte kind (1 stdout,
2 stderr, 3 exit status), 4 bytes big-endian length, the data.
"""
import ipaddress, os, selectors, socket, struct, subprocess, sys


def send_frame(sock, kind, data):
    sock.sendall(struct.pack(">BI", kind, len(data)) + data)


def recv_exact(sock, n):
    buf = b""
    while len(buf) < n:
        chunk = sock.recv(n - len(buf))
        if not chunk:
            return None
        buf += chunk
    return buf


def serve_one(conn, bed):
    header = recv_exact(conn, 4)
    if header is None:
        return
    request = recv_exact(conn, struct.unpack(">I", header)[0])
    if request is None:
        return
    host, cmdline = request.decode().split("\0", 1)
    proc = subprocess.Popen([bed, "rsh", host, cmdline], stdin=subprocess.DEVNULL,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    sel = selectors.DefaultSelector()
    sel.register(proc.stdout, selectors.EVENT_READ, 1)
    sel.register(proc.stderr, selectors.EVENT_READ, 2)
    open_streams = 2
    while open_streams:
        for key, _ in sel.select():
            data = os.read(key.fileobj.fileno(), 65536)
            if not data:
                sel.unregister(key.fileobj)
                open_streams -= 1
                continue
            try:
                send_frame(conn, key.data, data)
            except OSError:  # the caller went away: so does the command
                proc.kill()
                proc.wait()
                return
    send_frame(conn, 3, str(proc.wait()).encode())


def serve(addr, port, bed):
    subnet = ipaddress.ip_network(addr + "/24", strict=False)
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind((addr, port))
    srv.listen(64)
    print(f"listening on {addr}:{port}", flush=True)
    while True:
        conn, peer = srv.accept()
        if ipaddress.ip_address(peer[0]) not in subnet:
            conn.close()
            continue
        if os.fork() == 0:
            srv.close()
            try:
                serve_one(conn, bed)
            finally:
                os._exit(0)
        conn.close()
        try:
            while os.waitpid(-1, os.WNOHANG)[0]:
                pass
        except ChildProcessError:
            pass


def call(addr, port, host, cmdline):
    sock = socket.create_connection((addr, port), timeout=30)
    sock.settimeout(None)
    request = (host + "\0" + cmdline).encode()
    sock.sendall(struct.pack(">I", len(request)) + request)
    while True:
        header = recv_exact(sock, 5)
        if header is None:
            print(f"bed rsh: lost the connection to {host}", file=sys.stderr)
            return 255
        kind, length = struct.unpack(">BI", header)
        data = recv_exact(sock, length) or b""
        if kind == 3:
            status = int(data)
            return status if status >= 0 else 128 - status
        out = sys.stdout if kind == 1 else sys.stderr
        out.buffer.write(data)
        out.flush()


if __name__ == "__main__":
    if sys.argv[1] == "serve":
        serve(sys.argv[2], int(sys.argv[3]), sys.argv[4])
    else:
        sys.exit(call(sys.argv[2], int(sys.argv[3]), sys.argv[4], " ".join(sys.argv[5:])))
