#!/usr/bin/env python3
"""Measure the kernel memory one idle TCP socket costs on this host.

    sudo python3 ops/sysctl.d/measure-socket-memory.py [CONNECTIONS=15000] [--no-exchange | --unread]

Why: a gateway session is one TCP socket, and the kernel holds memory for it whatever the
gateway does in user space (the tcp_sock, its inode and dentry, the struct file, the epoll item,
plus any socket buffer pages it keeps). ops/CAPACITY.md adds this figure to the user-space bytes
per session from BENCHMARKS.md. Run it on the production kernel: the figure depends on the
kernel version and its config (struct sizes, slab merging, memcg accounting).

How: this process listens on 127.0.0.1, registers every accepted socket with epoll (as the
gateway's runtime does), and a child process opens CONNECTIONS connections to it from
127.0.0.2 (its own source address, so the ports of 127.0.0.1 are not used up). With the default
exchange, each connection then does what a WebSocket upgrade does on the wire: ~250 bytes up
(the HTTP request), ~230 bytes down (101 response + a welcome frame), both read, then the socket
sits idle. With --unread the client leaves the response unread in its receive queue: what one
small queued frame costs in socket buffer pages (the same skb memory a frame waiting in a send
buffer for a slow client's ACK costs). Readings are taken before the connections exist and once they are idle:

  * /proc/slabinfo        objects of every slab cache (bytes = objects x object size), per cache;
  * /proc/meminfo         Slab (all slab memory, in whole slab pages);
  * /proc/net/sockstat    TCP "mem": pages charged to socket buffers (what tcp_mem limits).

Both ends of every connection are on this host, so the deltas are divided by 2 x CONNECTIONS:
the server-side and the client-side socket are the same kernel objects. Needs root for
/proc/slabinfo, and CONNECTIONS + ~50 open files per process (the child holds the other half).
"""

import os
import select
import socket
import sys
import time

REQUEST = (
    b"GET /ws?token=eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ1c2VyLTAwMDAwMSIsImV4cCI6NDEwMjQ0NDgwMH0."
    b"0000000000000000000000000000000000000000000 HTTP/1.1\r\nHost: 127.0.0.1:8080\r\n"
    b"Upgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n\r\n"
)
RESPONSE = (
    b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
    b"Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n"
    + b"\x81\x7e\x00\x6e"
    + b'{"type":"welcome","session":"0190e1c2-0000-7000-8000-000000000000","node":"n1","user":"u1","heartbeat_s":25}'
)


IP_BIND_ADDRESS_NO_PORT = getattr(socket, "IP_BIND_ADDRESS_NO_PORT", 24)


def slabinfo():
    caches = {}
    with open("/proc/slabinfo") as f:
        for line in f.readlines()[2:]:
            parts = line.split()
            name, active, objsize = parts[0], int(parts[1]), int(parts[3])
            caches[name] = (active, objsize)
    return caches


def meminfo_kb(key):
    with open("/proc/meminfo") as f:
        for line in f:
            if line.startswith(key + ":"):
                return int(line.split()[1])
    raise KeyError(key)


def sockstat_tcp():
    with open("/proc/net/sockstat") as f:
        for line in f:
            if line.startswith("TCP:"):
                p = line.split()
                return {p[i]: int(p[i + 1]) for i in range(1, len(p), 2)}
    raise KeyError("TCP")


def reading():
    time.sleep(1.0)  # let deferred frees (RCU, socket buffer reclaim) settle
    return {"slab": slabinfo(), "slab_kb": meminfo_kb("Slab"), "tcp": sockstat_tcp()}


def child(port, n, exchange, unread, ready_w, go_r):
    try:
        socks = []
        for _ in range(n):
            s = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            # Without IP_BIND_ADDRESS_NO_PORT, bind() picks the port before connect() knows the
            # destination, from half of ip_local_port_range only (the other half is kept for
            # connect()): ~14k connections per source address instead of ~28k.
            s.setsockopt(socket.IPPROTO_IP, IP_BIND_ADDRESS_NO_PORT, 1)
            s.bind(("127.0.0.2", 0))
            s.connect(("127.0.0.1", port))
            socks.append(s)
        if exchange:
            for s in socks:
                s.sendall(REQUEST)
            for s in socks if not unread else ():
                got = 0
                while got < len(RESPONSE):
                    got += len(s.recv(4096))
        os.write(ready_w, b"r")
        os.read(go_r, 1)  # hold the sockets until the parent has measured
        os._exit(0)
    except BaseException as e:  # never leave the parent waiting in accept()
        print(f"client process: {e!r} after {len(socks)} connections", file=sys.stderr)
        os._exit(1)


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    n = int(args[0]) if args else 15000
    exchange = "--no-exchange" not in sys.argv
    unread = "--unread" in sys.argv
    page = os.sysconf("SC_PAGE_SIZE")

    listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    listener.bind(("127.0.0.1", 0))
    listener.listen(4096)
    port = listener.getsockname()[1]

    before = reading()
    ready_r, ready_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:
        listener.close()
        child(port, n, exchange, unread, ready_w, go_r)

    ep = select.epoll()
    accepted = []
    listener.settimeout(30)
    while len(accepted) < n:
        try:
            conn, _ = listener.accept()
        except socket.timeout:
            sys.exit(f"only {len(accepted)} of {n} connections arrived; see the client's error above")
        conn.settimeout(None)
        accepted.append(conn)
        ep.register(conn.fileno(), select.EPOLLIN)
    if exchange:
        for conn in accepted:
            got = 0
            while got < len(REQUEST):
                got += len(conn.recv(4096))
            conn.sendall(RESPONSE)
    os.read(ready_r, 1)
    after = reading()
    os.write(go_w, b"g")
    os.waitpid(pid, 0)

    sockets = 2 * n
    rows = []
    total_obj = 0
    for name, (active, size) in after["slab"].items():
        b_active = before["slab"].get(name, (0, size))[0]
        delta = (active - b_active) * size
        if delta > 0:
            total_obj += delta
            rows.append((delta, name, active - b_active, size))
    rows.sort(reverse=True)
    print(f"kernel {os.uname().release}, {n} idle loopback connections = {sockets} sockets, "
          f"{'no data exchanged' if not exchange else 'response left unread' if unread else 'after an upgrade-sized exchange'}")
    print("slab caches that grew (bytes per socket = objects x size / sockets):")
    for delta, name, objs, size in rows[:12]:
        if delta / sockets >= 4:
            print(f"  {name:24s} +{objs:7d} objects x {size:5d} B = {delta / sockets:7.0f} B/socket")
    slab_delta = (after["slab_kb"] - before["slab_kb"]) * 1024
    mem_delta = (after["tcp"]["mem"] - before["tcp"]["mem"]) * page
    print(f"slab objects, all caches:        {total_obj / sockets:7.0f} B/socket")
    print(f"/proc/meminfo Slab (slab pages): {slab_delta / sockets:7.0f} B/socket")
    print(f"/proc/net/sockstat TCP mem:      {mem_delta / sockets:7.0f} B/socket "
          f"({after['tcp']['mem'] - before['tcp']['mem']} pages of {page} B; buffers charged to tcp_mem)")
    print(f"total (slab pages + buffer pages): {(slab_delta + mem_delta) / sockets:5.0f} B/socket")


if __name__ == "__main__":
    main()
