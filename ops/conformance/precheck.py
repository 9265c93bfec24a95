#!/usr/bin/env python3
"""Check that URL is a WebSocket endpoint before running the suite.

Standard library only.  Waits up to WAIT seconds for the TCP port to accept,
then sends one RFC 6455 opening handshake and requires "101".  Without this a
wrong path, or an echo route that is not enabled, shows up as every single case
FAILED with "The WebSocket opening handshake was never completed!".

    precheck.py URL [WAIT_SECONDS]        exit 0 ok, 1 not a WebSocket endpoint
"""
import base64
import os
import socket
import ssl
import sys
import time
from urllib.parse import urlsplit


def main(argv):
    if len(argv) not in (2, 3):
        print(__doc__, file=sys.stderr)
        return 2
    url = argv[1]
    wait = float(argv[2]) if len(argv) == 3 else 10.0
    u = urlsplit(url)
    if u.scheme not in ("ws", "wss") or not u.hostname:
        print(f"precheck: not a ws:// or wss:// URL: {url}", file=sys.stderr)
        return 1
    port = u.port or (443 if u.scheme == "wss" else 80)

    deadline = time.monotonic() + wait
    while True:
        try:
            sock = socket.create_connection((u.hostname, port), timeout=5)
            break
        except OSError as e:
            if time.monotonic() >= deadline:
                print(f"precheck: nothing accepts TCP connections at {u.hostname}:{port}: {e} "
                      f"(waited {wait:g}s)", file=sys.stderr)
                return 1
            time.sleep(0.2)

    try:
        if u.scheme == "wss":  # like wstest's client: no certificate verification
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            sock = ctx.wrap_socket(sock, server_hostname=u.hostname)
        path = (u.path or "/") + (f"?{u.query}" if u.query else "")
        host = u.hostname if u.port is None else f"{u.hostname}:{u.port}"
        key = base64.b64encode(os.urandom(16)).decode()
        request = (f"GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
                   f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\n"
                   f"Sec-WebSocket-Version: 13\r\n\r\n")
        sock.sendall(request.encode())
        head = b""
        while b"\r\n\r\n" not in head and len(head) < 65536:
            chunk = sock.recv(4096)
            if not chunk:
                break
            head += chunk
        status = head.split(b"\r\n", 1)[0].decode("latin-1")
        if status.split(" ")[1:2] != ["101"]:
            print(f"precheck: {url} answered the WebSocket opening handshake with "
                  f"{status or '<connection closed>'!r}, not '101 Switching Protocols' "
                  f"(wrong path, or the echo route not enabled?)", file=sys.stderr)
            return 1
        try:  # close politely: a masked close frame with status 1000, zero mask key
            sock.sendall(bytes([0x88, 0x82, 0, 0, 0, 0, 0x03, 0xE8]))
        except OSError:
            pass
    except OSError as e:
        print(f"precheck: {url}: {e}", file=sys.stderr)
        return 1
    finally:
        sock.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
