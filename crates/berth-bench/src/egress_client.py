# berth-bench's HTTPS client inside a sandbox: the same code for every contender, timed
# inside the sandbox (no exec overhead). Prints one JSON object, per request, in milliseconds:
# its wall time, this process's CPU time (user + system), and the whole machine's busy CPU
# time (from /proc/stat, which a container shares with its host; null where unreadable).
#   python3 egress_client.py MODE HOST PATH COUNT [IP]
# MODE: direct (TCP to IP, TLS for HOST) or proxy (CONNECT HOST:443 through $HTTPS_PROXY).
import json, os, socket, ssl, sys, time

mode, host, path, count = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
ip = sys.argv[5] if len(sys.argv) > 5 else None
ctx = ssl.create_default_context()
ctx.load_verify_locations("/ca/ca.pem")
buf = bytearray(1 << 20)
tick_ms = 1000 / os.sysconf("SC_CLK_TCK")

def machine_busy_ms():
    try:
        with open("/proc/stat") as f:
            fields = [int(x) for x in f.readline().split()[1:]]
    except OSError:
        return None
    idle = fields[3] + fields[4]  # idle, iowait
    return (sum(fields[:8]) - idle) * tick_ms  # user .. steal; guest time is inside user

def once(path):
    if mode == "proxy":
        phost, pport = os.environ["HTTPS_PROXY"].split("//")[1].rsplit(":", 1)
        s = socket.create_connection((phost, int(pport)))
        s.sendall(f"CONNECT {host}:443 HTTP/1.1\r\nHost: {host}:443\r\n\r\n".encode())
        head = b""
        while b"\r\n\r\n" not in head:
            head += s.recv(1024)
        assert b" 200 " in head.split(b"\r\n")[0], head
    else:
        s = socket.create_connection((ip, 443))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    t = ctx.wrap_socket(s, server_hostname=host)
    token = os.environ.get("BENCH_TOKEN", "")
    t.sendall(f"GET {path} HTTP/1.1\r\nHost: {host}\r\nAuthorization: Bearer {token}\r\nConnection: close\r\n\r\n".encode())
    total = 0
    while True:
        try:
            n = t.recv_into(buf)
        except (ssl.SSLEOFError, ssl.SSLZeroReturnError):
            break
        if n == 0:
            break
        total += n
    t.close()
    return total

once("/echo")  # warm-up: name lookups, first connection
out = {"ms": [], "cpu_ms": [], "machine_ms": []}
for _ in range(count):
    start, cpu, busy = time.perf_counter(), time.process_time(), machine_busy_ms()
    got = once(path)
    out["ms"].append((time.perf_counter() - start) * 1000)
    out["cpu_ms"].append((time.process_time() - cpu) * 1000)
    after = machine_busy_ms()
    out["machine_ms"].append(None if busy is None or after is None else after - busy)
    assert got > 0
print(json.dumps(out))
