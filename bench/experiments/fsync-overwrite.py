#!/usr/bin/env python3
"""What one group commit's fdatasync costs: appending vs overwriting preallocated bytes.

A measured experiment for the audit file format (bench/README.md, "Audit write"), not product
code. Each mode writes GROUP bytes N times, each write followed by fdatasync, like the audit
writer does per group:

- append:    the file grows with every write (the sync must also persist the new size);
- zeros:     the file was filled with NUL bytes and synced first; writes overwrite them in
             place (the audit log's format since issue 17);
- fallocate: the file was preallocated with posix_fallocate (unwritten extents) and synced;
             the first write into each extent converts it, which the sync must persist.

Modes alternate round by round (A B C, C B A, ...) so they share the machine's state.
Usage: fsync-overwrite.py [DIR] [N] [GROUP]   (defaults: /tmp, 1000, 16384)
"""
import os
import sys
import time

DIR = sys.argv[1] if len(sys.argv) > 1 else "/tmp"
N = int(sys.argv[2]) if len(sys.argv) > 2 else 1000
GROUP = int(sys.argv[3]) if len(sys.argv) > 3 else 16384
ROUNDS = 3
PAYLOAD = b"x" * (GROUP - 1) + b"\n"


def prepare(mode, path):
    fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_TRUNC, 0o600)
    if mode == "zeros":
        block = b"\0" * (1 << 20)
        for _ in range(N * GROUP // len(block) + 1):
            os.write(fd, block)
    elif mode == "fallocate":
        os.posix_fallocate(fd, 0, N * GROUP + (1 << 20))
    os.fsync(fd)
    return fd


def run(mode):
    path = os.path.join(DIR, f"fsync-overwrite-{os.getpid()}-{mode}")
    fd = prepare(mode, path)
    lat = []
    try:
        for i in range(N):
            start = time.perf_counter()
            os.pwrite(fd, PAYLOAD, i * GROUP)
            os.fdatasync(fd)
            lat.append(time.perf_counter() - start)
    finally:
        os.close(fd)
        os.unlink(path)
    lat.sort()
    us = lambda q: lat[min(N - 1, int(N * q))] * 1e6
    return sum(lat) / N * 1e6, us(0.5), us(0.9), us(0.99)


def main():
    modes = ["append", "zeros", "fallocate"]
    print(f"{N} writes of {GROUP} bytes + fdatasync each, in {DIR}")
    print(f"{'round':>5} {'mode':10} {'mean us':>8} {'p50':>7} {'p90':>7} {'p99':>7}")
    for r in range(ROUNDS):
        for mode in modes if r % 2 == 0 else reversed(modes):
            mean, p50, p90, p99 = run(mode)
            print(f"{r + 1:>5} {mode:10} {mean:8.0f} {p50:7.0f} {p90:7.0f} {p99:7.0f}")


if __name__ == "__main__":
    main()
