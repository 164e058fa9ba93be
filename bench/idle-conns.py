#!/usr/bin/env python3
"""Memory per idle TLS keep-alive connection of a proxy (bench/conns.sh, mode `rss`).

Opens COUNT TLS connections to 127.0.0.1:PORT one after another, sends one request on each
(the passthrough POST of bench/run.sh) and reads its whole answer, keeps them all open and
idle, then reads VmRSS of the proxy's processes (all PIDs summed: nginx's master and worker)
from /proc/PID/status. Prints one JSON line: RSS before and after, and per connection.

"before" is taken after one warm-up connection (request answered, connection closed), so
the upstream connection, the certificate and the first-request allocations are already in
it, as in the issue's figures (16 MB -> 54 MB for 1,000 connections).
"""

import argparse
import json
import socket
import ssl
import sys
import time

BODY = (
    b'{"data":{"type":"bench_event","order_id":"9b2f7c1e-3d4a-4b5c-8d6e-7f8a9b0c1d2e",'
    b'"customer":{"name":"Ada Lovelace","email":"ada@example.com"},"items":[{"sku":"BOOK-001",'
    b'"quantity":1,"amount":4999},{"sku":"PEN-042","quantity":2,"amount":350}],"currency":"USD"}}'
)


def request(path, key):
    head = (
        f"POST {path} HTTP/1.1\r\nHost: localhost\r\nContent-Type: application/json\r\n"
        f"Authorization: Bearer {key}\r\nContent-Length: {len(BODY)}\r\n\r\n"
    )
    return head.encode() + BODY


def rss_kib(pids):
    total = 0
    for pid in pids:
        with open(f"/proc/{pid}/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    total += int(line.split()[1])
    return total


def read_answer(sock):
    """Reads one HTTP/1.1 answer with a Content-Length; returns its status code."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the answer head")
        data += chunk
    head, rest = data.split(b"\r\n\r\n", 1)
    length = 0
    for line in head.split(b"\r\n")[1:]:
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value.strip())
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError("closed before the answer body")
        rest += chunk
    return int(head.split(b" ", 2)[1])


def connect(ctx, port, req, timeout):
    raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
    tls = ctx.wrap_socket(raw, server_hostname="localhost")
    tls.sendall(req)
    status = read_answer(tls)
    if status >= 400:
        raise RuntimeError(f"answer {status}")
    return tls


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--count", type=int, required=True)
    ap.add_argument("--pids", required=True, help="comma-separated PIDs whose VmRSS is summed")
    ap.add_argument("--path", default="/v2/bench/order-42")
    ap.add_argument("--key", default="bench-storefront-key-0001")
    ap.add_argument("--settle", type=float, default=5.0, help="seconds idle before reading RSS")
    ap.add_argument("--label", default="")
    args = ap.parse_args()
    pids = [int(p) for p in args.pids.split(",") if p]

    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.set_alpn_protocols(["http/1.1"])
    req = request(args.path, args.key)

    connect(ctx, args.port, req, 10).close()
    time.sleep(args.settle)
    before = rss_kib(pids)
    conns = []
    started = time.monotonic()
    for _ in range(args.count):
        conns.append(connect(ctx, args.port, req, 30))
    opened_s = time.monotonic() - started
    time.sleep(args.settle)
    after = rss_kib(pids)
    # Every connection must still be open (a proxy that closed idle ones would look lean).
    alive = 0
    for c in conns:
        c.setblocking(False)
        try:
            alive += c.recv(1) != b""
        except ssl.SSLWantReadError:
            alive += 1
        except OSError:
            pass
    print(
        json.dumps(
            {
                "label": args.label,
                "connections": args.count,
                "alive": alive,
                "rss_before_kib": before,
                "rss_after_kib": after,
                "kib_per_conn": round((after - before) / args.count, 2),
                "open_seconds": round(opened_s, 1),
            }
        )
    )
    for c in conns:
        c.close()
    return 0 if alive == args.count else 1


if __name__ == "__main__":
    sys.exit(main())
