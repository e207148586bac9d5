/*
 * echo_server_libev.c -- plain C echo server on libev: the ceiling for
 * benchmarks/echo.py.
 *
 * One thread, one libev loop, one ev_io per connection.  On readable it
 * reads up to 256 KiB and writes it straight back; whatever the socket
 * does not take is kept, the read watcher is stopped and a write watcher
 * drains it (then reading resumes).  That is what every Python echo server
 * in echo_server.py does too, minus the interpreter.
 *
 * Build:  cc -O2 -o echo_server_libev echo_server_libev.c -lev
 * Usage:  echo_server_libev --port P [--host 127.0.0.1] [--unix PATH]
 *
 * --port 0 picks a free port.  Prints one line, READY {json} (libev version,
 * backend, the port), on stdout once listening; runs until killed (SIGTERM or
 * SIGINT stop the loop and exit 0).
 */

#define _GNU_SOURCE
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <ev.h>

#define BUFSZ (256 * 1024)

struct conn {
    ev_io rio;          /* readable */
    ev_io wio;          /* writable, only while output is pending */
    size_t off, len;    /* pending output: buf[off .. len) */
    char buf[BUFSZ];
};

static void conn_close(struct ev_loop *loop, struct conn *c)
{
    ev_io_stop(loop, &c->rio);
    ev_io_stop(loop, &c->wio);
    close(c->rio.fd);
    free(c);
}

/* Write buf[off..len); 1 when all written, 0 when the socket is full,
   -1 on error. */
static int flush_out(struct conn *c)
{
    while (c->off < c->len) {
        ssize_t n = send(c->rio.fd, c->buf + c->off, c->len - c->off,
                         MSG_NOSIGNAL);
        if (n > 0) {
            c->off += (size_t)n;
        } else if (n < 0 && errno == EINTR) {
            continue;
        } else if (n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK)) {
            return 0;
        } else {
            return -1;
        }
    }
    c->off = c->len = 0;
    return 1;
}

static void on_write(struct ev_loop *loop, ev_io *w, int revents)
{
    struct conn *c = (struct conn *)((char *)w - offsetof(struct conn, wio));
    (void)revents;
    int r = flush_out(c);
    if (r < 0) {
        conn_close(loop, c);
    } else if (r > 0) {
        ev_io_stop(loop, &c->wio);
        ev_io_start(loop, &c->rio);
    }
}

static void on_read(struct ev_loop *loop, ev_io *w, int revents)
{
    struct conn *c = (struct conn *)w;
    (void)revents;
    ssize_t n;
    for (;;) {
        n = recv(w->fd, c->buf, BUFSZ, 0);
        if (n >= 0 || errno != EINTR)
            break;
    }
    if (n == 0) {
        conn_close(loop, c);
        return;
    }
    if (n < 0) {
        if (errno != EAGAIN && errno != EWOULDBLOCK)
            conn_close(loop, c);
        return;
    }
    c->off = 0;
    c->len = (size_t)n;
    int r = flush_out(c);
    if (r < 0) {
        conn_close(loop, c);
    } else if (r == 0) {
        ev_io_stop(loop, &c->rio);
        ev_io_start(loop, &c->wio);
    }
}

static void on_accept(struct ev_loop *loop, ev_io *w, int revents)
{
    (void)revents;
    for (;;) {
        int fd = accept4(w->fd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
        if (fd < 0) {
            if (errno == EINTR || errno == ECONNABORTED)
                continue;
            return;     /* EAGAIN, or out of fds: try again next time */
        }
        int one = 1;
        setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
        struct conn *c = malloc(sizeof *c);
        if (!c) {
            close(fd);
            continue;
        }
        c->off = c->len = 0;
        ev_io_init(&c->rio, on_read, fd, EV_READ);
        ev_io_init(&c->wio, on_write, fd, EV_WRITE);
        ev_io_start(loop, &c->rio);
    }
}

static void on_signal(struct ev_loop *loop, ev_signal *w, int revents)
{
    (void)w;
    (void)revents;
    ev_break(loop, EVBREAK_ALL);
}

static int listen_tcp(const char *host, int port)
{
    struct sockaddr_in sa;
    memset(&sa, 0, sizeof sa);
    sa.sin_family = AF_INET;
    sa.sin_port = htons((unsigned short)port);
    if (inet_pton(AF_INET, host, &sa.sin_addr) != 1) {
        fprintf(stderr, "bad host %s\n", host);
        exit(2);
    }
    int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    int one = 1;
    setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0
            || listen(fd, 1024) < 0) {
        fprintf(stderr, "listen %s:%d: %s\n", host, port, strerror(errno));
        exit(1);
    }
    return fd;
}

static int listen_unix(const char *path)
{
    struct sockaddr_un sa;
    memset(&sa, 0, sizeof sa);
    sa.sun_family = AF_UNIX;
    if (strlen(path) >= sizeof sa.sun_path) {
        fprintf(stderr, "unix path too long\n");
        exit(2);
    }
    strcpy(sa.sun_path, path);
    unlink(path);
    int fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
    if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof sa) < 0
            || listen(fd, 1024) < 0) {
        fprintf(stderr, "listen %s: %s\n", path, strerror(errno));
        exit(1);
    }
    return fd;
}

int main(int argc, char **argv)
{
    const char *host = "127.0.0.1", *unix_path = NULL;
    int port = -1;
    for (int i = 1; i + 1 < argc; i += 2) {
        if (!strcmp(argv[i], "--port")) port = atoi(argv[i + 1]);
        else if (!strcmp(argv[i], "--host")) host = argv[i + 1];
        else if (!strcmp(argv[i], "--unix")) unix_path = argv[i + 1];
        else {
            fprintf(stderr, "usage: echo_server_libev --port P "
                            "[--host H] [--unix PATH]\n");
            return 2;
        }
    }
    if (!unix_path && port < 0) {
        fprintf(stderr, "usage: echo_server_libev --port P [--host H] "
                        "[--unix PATH]\n");
        return 2;
    }
    signal(SIGPIPE, SIG_IGN);

    struct ev_loop *loop = ev_default_loop(EVFLAG_AUTO);
    int lfd = unix_path ? listen_unix(unix_path) : listen_tcp(host, port);
    ev_io acc;
    ev_io_init(&acc, on_accept, lfd, EV_READ);
    ev_io_start(loop, &acc);
    ev_signal sterm, sint;
    ev_signal_init(&sterm, on_signal, SIGTERM);
    ev_signal_init(&sint, on_signal, SIGINT);
    ev_signal_start(loop, &sterm);
    ev_signal_start(loop, &sint);

    if (!unix_path) {
        struct sockaddr_in sa;
        socklen_t sl = sizeof sa;
        getsockname(lfd, (struct sockaddr *)&sa, &sl);
        port = ntohs(sa.sin_port);
    }
    printf("READY {\"loop\": \"libev\", \"version\": \"%d.%d\", "
           "\"backend\": %u, \"port\": %d, \"pid\": %d}\n",
           ev_version_major(), ev_version_minor(), ev_backend(loop), port,
           (int)getpid());
    fflush(stdout);
    ev_run(loop, 0);
    close(lfd);
    if (unix_path)
        unlink(unix_path);
    return 0;
}
