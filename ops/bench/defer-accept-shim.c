/* A measurement aid, not part of pushgate: an LD_PRELOAD shim that sets TCP_DEFER_ACCEPT (1 s) on
 * every socket a process listens on, so the kernel hands over a connection only once its first
 * bytes (the upgrade request) are in. It answers "would deferred accepts save a flood's CPU?"
 * without an `unsafe` setsockopt in the gateway (BENCHMARKS.md, "The parking lot reads once":
 * they did not). Build and use:
 *   gcc -shared -fPIC -O2 -o /tmp/defer-accept.so ops/bench/defer-accept-shim.c -ldl
 *   printf '#!/bin/sh\nLD_PRELOAD=/tmp/defer-accept.so exec target/release/pushgate-gateway "$@"\n' > /tmp/gw-defer
 *   chmod +x /tmp/gw-defer; GW_BIN=/tmp/gw-defer ops/bench/idle-sessions.sh 15000 1
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sys/socket.h>

int listen(int fd, int backlog) {
    static int (*real_listen)(int, int);
    if (!real_listen) real_listen = (int (*)(int, int))dlsym(RTLD_NEXT, "listen");
    int seconds = 1;
    setsockopt(fd, IPPROTO_TCP, TCP_DEFER_ACCEPT, &seconds, sizeof seconds);
    return real_listen(fd, backlog);
}
