import json, os, socket, ssl, sys, urllib.request
proxy = os.environ["HTTPS_PROXY"].split("//")[1]
phost, pport = proxy.rsplit(":", 1)

def read_all(sock):
    """Everything the peer sends until it closes."""
    data = b""
    while True:
        chunk = sock.recv(65536)
        if not chunk:
            return data
        data += chunk

def tunnel(target):
    """A socket to the proxy that has sent CONNECT; returns (socket, response head)."""
    s = socket.create_connection((phost, int(pport)), timeout=10)
    s.sendall(f"CONNECT {target} HTTP/1.1\r\nHost: {target}\r\n\r\n".encode())
    head = b""
    while b"\r\n\r\n" not in head:
        chunk = s.recv(4096)
        if not chunk: break
        head += chunk
    return s, head

def get_echo(sock, host, extra=""):
    sock.sendall(f"GET /echo HTTP/1.1\r\nHost: {host}\r\n{extra}Connection: close\r\n\r\n".encode())
    return read_all(sock).decode(errors="replace")

def connect(target, sni=None, cafile="/ca/ca.pem"):
    s, head = tunnel(target)
    status = head.split(b"\r\n")[0].decode()
    if " 200 " not in status + " ":
        body = head.split(b"\r\n\r\n", 1)[1] if b"\r\n\r\n" in head else b""
        try:
            s.settimeout(2); body += s.recv(4096)
        except Exception: pass
        return status, body.decode(errors="replace")
    ctx = ssl.create_default_context()
    ctx.load_verify_locations(cafile)
    host = target.rsplit(":", 1)[0]
    try:
        t = ctx.wrap_socket(s, server_hostname=sni or host)
        return status, get_echo(t, host, f"Authorization: Bearer {os.environ.get('TOKEN','')}\r\n")
    except Exception as e:
        return status, f"TLS-ERROR {type(e).__name__}: {e}"

def connect_plain(target):
    """CONNECT, then plain HTTP through the tunnel (no TLS)."""
    s, head = tunnel(target)
    return head.split(b"\r\n")[0].decode(), get_echo(s, target.rsplit(":", 1)[0])

what = sys.argv[1]
if what == "connect":
    status, body = connect(sys.argv[2], sni=(sys.argv[3] if len(sys.argv) > 3 else None))
    print(json.dumps({"status": status, "body": body}))
elif what == "plain-host":
    # An absolute-form request whose Host header names another site.
    s = socket.create_connection((phost, int(pport)), timeout=10)
    s.sendall(f"GET {sys.argv[2]} HTTP/1.1\r\nHost: {sys.argv[3]}\r\nConnection: close\r\n\r\n".encode())
    print(read_all(s).split(b"\r\n\r\n", 1)[1].decode(errors="replace"))
elif what == "connect-plain":
    status, body = connect_plain(sys.argv[2])
    print(json.dumps({"status": status, "body": body}))
elif what == "system":
    # Only the image's system bundle (no SSL_CERT_FILE, no extra CA file).
    print(urllib.request.urlopen(sys.argv[2], timeout=10).read().decode())
elif what == "urllib":
    ctx = ssl.create_default_context()
    ctx.load_verify_locations("/ca/ca.pem")
    req = urllib.request.Request(sys.argv[2], headers={"Authorization": "Bearer " + os.environ.get("TOKEN", "")})
    print(urllib.request.urlopen(req, context=ctx, timeout=10).read().decode())
elif what == "direct":
    try:
        socket.create_connection((sys.argv[2], int(sys.argv[3])), timeout=3)
        print("CONNECTED")
    except Exception as e:
        print(f"FAILED {type(e).__name__}: {e}")
elif what == "dns":
    try:
        print("RESOLVED", socket.getaddrinfo(sys.argv[2], 443))
    except Exception as e:
        print(f"FAILED {type(e).__name__}: {e}")
