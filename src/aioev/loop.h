/* The Loop object's layout, shared by loop.c and io.c only: the rest of
 * the module goes through the functions declared in module.h. */
#ifndef AIOEV_LOOP_H
#define AIOEV_LOOP_H

#include "module.h"
#include <ev.h>
#include <sys/types.h>

typedef struct {
    int kind;
    PyObject *a, *b, *c;
} ready_item;

/* Heap keys are copied in so sifting does not touch the handles: `when`
 * in nanoseconds, biased to sort as unsigned, then the call order. */
typedef struct {
    uint64_t when;
    uint64_t seq;
    TimerHandleObj *handle;
} timer_entry;

/* One per watched fd: a single ev_io whose mask follows which of the
 * reader and writer handles are set. */
typedef struct {
    ev_io io;
    LoopObj *loop;             /* borrowed: the loop owns us */
    HandleObj *reader;
    HandleObj *writer;
    /* Lingering (io.c): a sock_* op's watch left armed for a while after
     * the op, for the socket's next op to take over without re-arming. */
    PyObject *owner;           /* weakref to that socket, or NULL */
    uint64_t idle_since;       /* iteration it began lingering; 0: not */
    int listed;                /* in loop->linger; only the sweep frees */
    int seen;                  /* an event came while lingering */
    int kind;                  /* what op left it lingering (sock.c) */
    uint64_t armed_iter;       /* loop iteration its watcher was started */
} io_entry;

struct LoopObj {
    PyObject_HEAD
    struct ev_loop *evloop;
    ev_async wakeup;           /* call_soon_threadsafe and stop() */
    ev_timer timeout;          /* bounds one poll by the next timer */
    ev_io sigwake;             /* read end of the signal wakeup pipe */
    int sigwake_w;             /* its write end for set_wakeup_fd, or -1 */
    int sigwake_set;           /* the fd this run set as wakeup fd, or -1 */
    int sigwake_tried;         /* this run asked _take_wakeup_fd */
    void *ts_lock;             /* PyThread lock: see aioev_loop_ts_enter */
    unsigned long ts_owner;    /* thread holding it, or 0 */
    PyThreadState *tstate;     /* saved while libev polls */
    pid_t pid;                 /* ev_loop_fork when this changes */

    ready_item *ready;         /* ring buffer */
    size_t ready_cap;          /* a power of two */
    size_t ready_head;
    size_t ready_len;

    timer_entry *timers;       /* binary min-heap on (when, seq) */
    size_t timers_len;
    size_t timers_cap;
    size_t timers_cancelled;
    uint64_t timer_seq;

    io_entry **fds;            /* indexed by fd */
    int fds_cap;
    int fds_count;             /* entries in use */
    int *linger;               /* fds of listed entries (io.c) */
    int linger_len;
    int linger_cap;
    uint64_t iter;             /* run_once count */

    PyObject *current_handle;
    PyObject *task_factory;
    aioev_state *state;        /* cached: subclasses make lookups slow */
    char *read_buf;            /* transports' recv scratch (stream.c) */
    PyObject *recv_spare;      /* a fresh bytes a sock_recv found no
                                  data for, for the next one (sock.c) */
    PyObject *transports_data; /* self._transports.data, once looked up
                                  (sock.c) */
    LoopObj *next_loop;        /* module's list of live loops (gc hook) */
    LoopObj *prev_loop;
    double slow_callback_duration;
    double clock_resolution;
    unsigned long thread_id;   /* of run_forever; 0 when not running */
    int running;
    int stopping;
    int closed;
    int debug;
    int polling_blocks;        /* release the GIL only if we may sleep */
    int wakeup_sent;           /* ev_async_send done for this poll */
};

/* io.c: watch fd for reading or writing (writer=1) with handle h, which
 * replaces (and cancels) a previous one; remove returns 1 if one was set */
int aioev_io_add(LoopObj *loop, int fd, int writer, HandleObj *h);
/* The same without checking fd (two syscalls): for a socket fd that a
 * recv/send/accept/connect on it just found would block. */
int aioev_io_add_socket(LoopObj *loop, int fd, int writer, HandleObj *h);
int aioev_io_remove(LoopObj *loop, int fd, int writer);
/* sock_* ops: the same, where owner is the socket. A watch removed this
 * way stays armed until the end of the next iteration, so the socket's
 * next op (its task resumes one iteration later) takes it over without
 * an epoll_ctl; any other use of the fd re-arms it in full. */
int aioev_io_add_owned(LoopObj *loop, int fd, int writer, HandleObj *h,
                       PyObject *owner);
int aioev_io_remove_owned(LoopObj *loop, int fd, int writer,
                          PyObject *owner, int kind);
/* 1 if owner's read watch on fd, left by an op of the same kind, lingers
 * since before this iteration's poll, which reported nothing for it: a
 * recv (or accept) now would find nothing (unless it came in the last
 * microseconds), so a sock_* op may wait at once instead of paying a
 * failing syscall first. (Only after the same kind of op: that one
 * waited, so this one would not fail at once either.) */
int aioev_io_quiet(LoopObj *loop, int fd, PyObject *owner, int kind);
/* The selectors-style mask (1 read, 2 write) of what fd is watched for. */
int aioev_io_events(LoopObj *loop, int fd);
/* At the start of each iteration: disarm watches lingering since before
 * the previous one. */
void aioev_io_sweep(LoopObj *loop);

/* sock.c */
extern PyMethodDef aioev_sock_methods[];

/* server.c */
extern PyMethodDef aioev_server_methods[];

/* io.c */
int aioev_io_traverse(LoopObj *loop, visitproc visit, void *arg);
void aioev_io_close_all(LoopObj *loop);
extern PyMethodDef aioev_io_methods[];

#endif /* AIOEV_LOOP_H */
