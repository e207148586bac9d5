/*
 * echo_client.c -- closed-loop load generator for benchmarks/echo.py.
 *
 * N connections to an echo server on loopback (127.0.0.1:PORT) or on a
 * Unix socket.  Each connection sends one message of SIZE bytes and waits
 * until the whole message has come back before it sends the next one (a
 * closed loop: at most one message in flight per connection).  It reads
 * while it writes, so a large message never deadlocks against a server
 * that echoes as it receives.
 *
 * It runs WARMUP seconds, then DURATION measured seconds, then stops by
 * itself and prints one JSON object on stdout:
 *
 *   {"ok": true, "roundtrips": R, "seconds": T, "rt_per_sec": R/T,
 *    "client_cpu_s": C, "server_cpu_s": S, "server_ticks": K, ...}
 *
 * The server's CPU time (utime + stime of the whole process, from
 * /proc/PID/stat, in clock ticks) is read at the exact start and end of
 * the measured window when --pid is given; the client's own CPU time
 * (getrusage) over the same window is reported too, to show that the load
 * generator costs less than the server it drives.
 *
 * Linux only (epoll).  Build:  cc -O2 -o echo_client echo_client.c
 *
 * Usage:
 *   echo_client [--host 127.0.0.1] --port P | --unix PATH
 *               [--conns 32] [--size 1024] [--warmup 1] [--duration 2]
 *               [--pid SERVER_PID] [--stall 5] [--batch 1]
 *
 * --batch 1 runs the client as SCHED_BATCH: when it shares a CPU with the
 * server, its wake-ups then never preempt the server, which answers the
 * whole batch of ready connections before the client runs again (without
 * it, a server is preempted more often the slower it is: the C server
 * 0.005 times per round trip, Python servers 0.05 to 0.15).
 *
 * Errors (connection refused, reset, closed, stalled for --stall seconds
 * with no round trip completed, total run time exceeded) print
 * {"ok": false, "error": "..."} and exit 1.
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#define MAX_CONNS 4096
#define RBUF (256 * 1024)

struct conn {
    int fd;
    size_t sent;        /* bytes of the current message written */
    size_t received;    /* bytes of the current message echoed back */
    int want_out;       /* EPOLLOUT registered */
};

static struct conn conns[MAX_CONNS];
static char *msg;
static char rbuf[RBUF];

static void fail(const char *fmt, ...)
{
    char buf[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(buf, sizeof buf, fmt, ap);
    va_end(ap);
    /* buf holds no quotes or backslashes from our own messages; strerror
       text does not either. */
    printf("{\"ok\": false, \"error\": \"%s\"}\n", buf);
    fflush(stdout);
    exit(1);
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static double own_cpu(void)
{
    struct rusage ru;
    getrusage(RUSAGE_SELF, &ru);
    return ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6
         + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
}

/* utime + stime (clock ticks) of process pid, or -1. */
static long long proc_ticks(int pid)
{
    char path[64], buf[4096];
    if (pid <= 0)
        return -1;
    snprintf(path, sizeof path, "/proc/%d/stat", pid);
    int fd = open(path, O_RDONLY);
    if (fd < 0)
        return -1;
    ssize_t n = read(fd, buf, sizeof buf - 1);
    close(fd);
    if (n <= 0)
        return -1;
    buf[n] = 0;
    char *p = strrchr(buf, ')');        /* comm may contain spaces */
    if (!p)
        return -1;
    p += 2;                             /* field 3, state */
    unsigned long long ut = 0, st = 0;
    /* fields 3..13 skipped, 14 utime, 15 stime */
    for (int field = 3; field < 14; field++) {
        p = strchr(p, ' ');
        if (!p)
            return -1;
        p++;
    }
    if (sscanf(p, "%llu %llu", &ut, &st) != 2)
        return -1;
    return (long long)(ut + st);
}

static void set_events(int ep, struct conn *c, int out)
{
    struct epoll_event ev;
    if (c->want_out == out)
        return;
    ev.events = EPOLLIN | (out ? EPOLLOUT : 0);
    ev.data.ptr = c;
    if (epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev) < 0)
        fail("epoll_ctl: %s", strerror(errno));
    c->want_out = out;
}

/* Write as much of the current message as the socket takes. */
static void pump_out(int ep, struct conn *c, size_t size)
{
    while (c->sent < size) {
        ssize_t n = send(c->fd, msg + c->sent, size - c->sent, MSG_NOSIGNAL);
        if (n > 0) {
            c->sent += (size_t)n;
            continue;
        }
        if (n < 0 && errno == EINTR)
            continue;
        if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            set_events(ep, c, 1);
            return;
        }
        fail("send: %s", n == 0 ? "wrote 0 bytes" : strerror(errno));
    }
    set_events(ep, c, 0);
}

static void usage(void)
{
    fprintf(stderr,
            "usage: echo_client [--host H] --port P | --unix PATH\n"
            "                   [--conns N] [--size BYTES] [--warmup S]\n"
            "                   [--duration S] [--pid SERVER_PID] "
            "[--stall S] [--batch 0|1]\n");
    exit(2);
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *unix_path = NULL;
    int port = 0, nconns = 32, pid = 0;
    size_t size = 1024;
    double warmup = 1.0, duration = 2.0, stall = 5.0;
    int sockbuf = 0, batch = 0;

    for (int i = 1; i < argc; i++) {
        const char *a = argv[i];
        if (i + 1 >= argc)
            usage();
        const char *v = argv[++i];
        if (!strcmp(a, "--host")) host = v;
        else if (!strcmp(a, "--port")) port = atoi(v);
        else if (!strcmp(a, "--unix")) unix_path = v;
        else if (!strcmp(a, "--conns")) nconns = atoi(v);
        else if (!strcmp(a, "--size")) size = (size_t)atol(v);
        else if (!strcmp(a, "--warmup")) warmup = atof(v);
        else if (!strcmp(a, "--duration")) duration = atof(v);
        else if (!strcmp(a, "--pid")) pid = atoi(v);
        else if (!strcmp(a, "--stall")) stall = atof(v);
        else if (!strcmp(a, "--sockbuf")) sockbuf = atoi(v);
        else if (!strcmp(a, "--batch")) batch = atoi(v);
        else usage();
    }
    if ((!unix_path && port <= 0) || nconns < 1 || nconns > MAX_CONNS
            || size < 1 || duration <= 0 || warmup < 0)
        usage();
    if (!unix_path && strcmp(host, "127.0.0.1") && strcmp(host, "localhost"))
        fail("loopback only: --host must be 127.0.0.1");

    if (batch) {
        struct sched_param sp = {.sched_priority = 0};
        if (sched_setscheduler(0, SCHED_BATCH, &sp) < 0)
            fail("sched_setscheduler(SCHED_BATCH): %s", strerror(errno));
    }
    signal(SIGPIPE, SIG_IGN);
    /* A hard bound on the whole run, whatever happens. */
    alarm((unsigned)(warmup + duration + stall + 30));

    msg = malloc(size);
    if (!msg)
        fail("out of memory");
    for (size_t i = 0; i < size; i++)
        msg[i] = (char)('a' + i % 26);

    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0)
        fail("epoll_create1: %s", strerror(errno));

    for (int i = 0; i < nconns; i++) {
        struct conn *c = &conns[i];
        int fd;
        if (unix_path) {
            struct sockaddr_un sa;
            memset(&sa, 0, sizeof sa);
            sa.sun_family = AF_UNIX;
            if (strlen(unix_path) >= sizeof sa.sun_path)
                fail("unix path too long");
            strcpy(sa.sun_path, unix_path);
            fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
                fail("connect %s: %s", unix_path, strerror(errno));
        } else {
            struct sockaddr_in sa;
            memset(&sa, 0, sizeof sa);
            sa.sin_family = AF_INET;
            sa.sin_port = htons((unsigned short)port);
            sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
            fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
            if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof sa) < 0)
                fail("connect 127.0.0.1:%d: %s", port, strerror(errno));
            int one = 1;
            setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        }
        if (sockbuf > 0) {
            setsockopt(fd, SOL_SOCKET, SO_SNDBUF, &sockbuf, sizeof sockbuf);
            setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &sockbuf, sizeof sockbuf);
        }
        fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_NONBLOCK);
        c->fd = fd;
        c->sent = c->received = 0;
        c->want_out = 0;
        struct epoll_event ev = {.events = EPOLLIN, .data.ptr = c};
        if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) < 0)
            fail("epoll_ctl: %s", strerror(errno));
    }

    double t_start = now();
    double t_measure = t_start + warmup, t_end = t_measure + duration;
    double t_progress = t_start;
    int measuring = 0;
    unsigned long long rts = 0, rts_at_start = 0, rts_total_warm = 0;
    double t0 = 0, t1 = 0, cpu0 = 0, cpu1 = 0;
    long long srv0 = -1, srv1 = -1;

    for (int i = 0; i < nconns; i++)
        pump_out(ep, &conns[i], size);

    struct epoll_event events[256];
    for (;;) {
        int n = epoll_wait(ep, events, 256, 50);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            fail("epoll_wait: %s", strerror(errno));
        }
        for (int k = 0; k < n; k++) {
            struct conn *c = events[k].data.ptr;
            uint32_t e = events[k].events;
            if (e & EPOLLIN) {
                for (;;) {
                    ssize_t r = recv(c->fd, rbuf, RBUF, 0);
                    if (r > 0) {
                        c->received += (size_t)r;
                        if (c->received > c->sent)
                            fail("server sent more than it was sent");
                        if (c->received == size) {
                            rts++;
                            c->sent = c->received = 0;
                            pump_out(ep, c, size);
                        }
                        if ((size_t)r < RBUF)
                            break;      /* drained (the common case) */
                        continue;
                    }
                    if (r == 0)
                        fail("server closed a connection");
                    if (errno == EINTR)
                        continue;
                    if (errno == EAGAIN || errno == EWOULDBLOCK)
                        break;
                    fail("recv: %s", strerror(errno));
                }
            }
            if ((e & EPOLLOUT) && c->sent < size)
                pump_out(ep, c, size);
            if ((e & (EPOLLERR | EPOLLHUP)) && !(e & EPOLLIN))
                fail("connection error/hangup");
        }

        double t = now();
        if (rts != rts_total_warm) {
            rts_total_warm = rts;
            t_progress = t;
        } else if (t - t_progress > stall) {
            fail("stalled: no round trip completed for %.1f s "
                 "(%llu so far)", stall, rts);
        }
        if (!measuring && t >= t_measure) {
            measuring = 1;
            srv0 = proc_ticks(pid);
            cpu0 = own_cpu();
            t0 = now();
            rts_at_start = rts;
        } else if (measuring && t >= t_end) {
            t1 = now();
            srv1 = proc_ticks(pid);
            cpu1 = own_cpu();
            break;
        }
    }

    unsigned long long r = rts - rts_at_start;
    double secs = t1 - t0;
    long hz = sysconf(_SC_CLK_TCK);
    printf("{\"ok\": true, \"roundtrips\": %llu, \"warmup_roundtrips\": %llu, "
           "\"seconds\": %.6f, \"rt_per_sec\": %.3f, "
           "\"client_cpu_s\": %.6f, \"conns\": %d, \"size\": %zu",
           r, rts_at_start, secs, secs > 0 ? r / secs : 0.0,
           cpu1 - cpu0, nconns, size);
    if (srv0 >= 0 && srv1 >= 0)
        printf(", \"server_ticks\": %lld, \"clk_tck\": %ld, "
               "\"server_cpu_s\": %.6f", srv1 - srv0, hz,
               (double)(srv1 - srv0) / (double)hz);
    printf("}\n");
    fflush(stdout);
    for (int i = 0; i < nconns; i++)
        close(conns[i].fd);
    return 0;
}
