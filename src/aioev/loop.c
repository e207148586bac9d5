/* Loop: the ready queue, the timer heap and the outer run loop around
 * libev. Watcher callbacks only queue work; everything user-visible runs
 * from the ready queue, in order, as asyncio's _run_once does. The
 * asyncio parts that are not on a hot path (run_forever's set-up, the
 * exception handler, executors) are in aioev/_loop.py. */
#include "loop.h"

#include <errno.h>
#include <fcntl.h>
#include <time.h>
#include <unistd.h>

#include "pythread.h"

static double
monotonic_now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* ------------------------------------------------------------------------
 * Ready queue: a ring buffer of (kind, a, b, c) with strong references.
 * ------------------------------------------------------------------------ */

static int
ready_grow(LoopObj *self)
{
    size_t cap = self->ready_cap ? self->ready_cap * 2 : 64;
    ready_item *items = PyMem_Malloc(cap * sizeof(ready_item));
    if (items == NULL) {
        PyErr_NoMemory();
        return -1;
    }
    for (size_t i = 0; i < self->ready_len; i++) {
        items[i] = self->ready[(self->ready_head + i) & (self->ready_cap - 1)];
    }
    PyMem_Free(self->ready);
    self->ready = items;
    self->ready_cap = cap;
    self->ready_head = 0;
    return 0;
}

int
aioev_loop_enqueue(LoopObj *self, int kind, PyObject *a, PyObject *b,
                   PyObject *c)
{
    if (self->ready_len == self->ready_cap && ready_grow(self) < 0) {
        return -1;
    }
    ready_item *it =
        &self->ready[(self->ready_head + self->ready_len)
                     & (self->ready_cap - 1)];
    it->kind = kind;
    it->a = Py_NewRef(a);
    it->b = Py_XNewRef(b);
    it->c = Py_XNewRef(c);
    self->ready_len++;
    return 0;
}

/* Drops the loop's reference to a handle it queued untracked: one that
 * someone else still holds is GC-tracked from now on (with the context
 * copy made for it), so cycles through it can be found. While queued it
 * needs no tracking: the loop owns it and its referents are in use. This
 * keeps queued handles and their contexts out of the young generation
 * the collector walks on every allocation burst. */
static inline void
release_handle(PyObject *h)
{
    if (Py_REFCNT(h) > 1 && !PyObject_GC_IsTracked(h)) {
        aioev_handle_track(h);
    }
    Py_DECREF(h);
}

static void
ready_pop(LoopObj *self, ready_item *out)
{
    *out = self->ready[self->ready_head];
    self->ready_head = (self->ready_head + 1) & (self->ready_cap - 1);
    self->ready_len--;
}

static void
ready_clear(LoopObj *self)
{
    ready_item it;
    while (self->ready_len) {
        ready_pop(self, &it);
        if (it.kind == READY_HANDLE) {
            release_handle(it.a);
        }
        else {
            Py_DECREF(it.a);
        }
        Py_XDECREF(it.b);
        Py_XDECREF(it.c);
    }
}

/* ------------------------------------------------------------------------
 * Timer heap: TimerHandles ordered by (when, seq). The heap holds a
 * strong reference to each entry.
 * ------------------------------------------------------------------------ */

/* Integer keys compare without branches: the sift loops below pick a
 * child by arithmetic, which matters as timer order is unpredictable. */
static inline int
timer_less(const timer_entry *x, const timer_entry *y)
{
    return (x->when < y->when) | ((x->when == y->when) & (x->seq < y->seq));
}

/* Loop time in seconds -> heap key. NaN and huge values sort last. */
static inline uint64_t
when_key(double when)
{
    double ns = when * 1e9;
    if (!(ns < 9.2e18)) {
        return UINT64_MAX;
    }
    if (ns < -9.2e18) {
        return 0;
    }
    return (uint64_t)(int64_t)ns ^ (UINT64_C(1) << 63);
}

static void
heap_up(LoopObj *self, size_t i)
{
    timer_entry e = self->timers[i];
    while (i > 0) {
        size_t parent = (i - 1) / 2;
        if (!timer_less(&e, &self->timers[parent])) {
            break;
        }
        self->timers[i] = self->timers[parent];
        i = parent;
    }
    self->timers[i] = e;
}

static void
heap_down(LoopObj *self, size_t i)
{
    timer_entry e = self->timers[i];
    size_t n = self->timers_len;
    for (;;) {
        size_t child = 2 * i + 1;
        if (child >= n) {
            break;
        }
        if (child + 1 < n) {
            child += timer_less(&self->timers[child + 1],
                                &self->timers[child]);
        }
        if (!timer_less(&self->timers[child], &e)) {
            break;
        }
        self->timers[i] = self->timers[child];
        i = child;
    }
    self->timers[i] = e;
}

static int
heap_push(LoopObj *self, TimerHandleObj *t)
{
    if (self->timers_len == self->timers_cap) {
        size_t cap = self->timers_cap ? self->timers_cap * 2 : 64;
        timer_entry *p = PyMem_Realloc(self->timers,
                                       cap * sizeof(timer_entry));
        if (p == NULL) {
            PyErr_NoMemory();
            return -1;
        }
        self->timers = p;
        self->timers_cap = cap;
    }
    timer_entry *e = &self->timers[self->timers_len++];
    e->when = when_key(t->when);
    e->seq = self->timer_seq++;
    e->handle = (TimerHandleObj *)Py_NewRef(t);
    t->scheduled = 1;
    heap_up(self, self->timers_len - 1);
    return 0;
}

/* Removes and returns the earliest timer (a strong reference). The hole
 * at the top goes down to a leaf along the smaller children, then the
 * last entry is sifted up from there (as heapq does): one comparison per
 * level instead of two, since the last entry usually belongs low. */
static TimerHandleObj *
heap_pop(LoopObj *self)
{
    TimerHandleObj *top = self->timers[0].handle;
    size_t n = --self->timers_len;
    if (n) {
        timer_entry *a = self->timers;
        size_t i = 0, child;
        while ((child = 2 * i + 1) < n) {
            if (child + 1 < n) {
                child += timer_less(&a[child + 1], &a[child]);
            }
            a[i] = a[child];
            i = child;
        }
        a[i] = a[n];
        heap_up(self, i);
    }
    top->scheduled = 0;
    return top;
}

/* Drops cancelled timers: all of them when they are the majority (as
 * asyncio does), else just those at the top of the heap. */
static void
timers_purge(LoopObj *self)
{
    if (self->timers_len > 100
        && self->timers_cancelled * 2 > self->timers_len) {
        /* Releasing a handle can run code (a __del__) that schedules
         * timers: finish the heap first, release afterwards. */
        TimerHandleObj **dropped = PyMem_Malloc(
            self->timers_cancelled * sizeof(TimerHandleObj *));
        if (dropped == NULL) {
            return;  /* keep them: the top-only purge below still works */
        }
        size_t j = 0, ndropped = 0;
        for (size_t i = 0; i < self->timers_len; i++) {
            TimerHandleObj *t = self->timers[i].handle;
            if (t->base.cancelled && ndropped < self->timers_cancelled) {
                t->scheduled = 0;
                dropped[ndropped++] = t;
            }
            else {
                self->timers[j++] = self->timers[i];
            }
        }
        self->timers_len = j;
        self->timers_cancelled -= ndropped;
        for (size_t i = j / 2; i-- > 0;) {
            heap_down(self, i);
        }
        for (size_t i = 0; i < ndropped; i++) {
            release_handle((PyObject *)dropped[i]);
        }
        PyMem_Free(dropped);
        return;
    }
    while (self->timers_len && self->timers[0].handle->base.cancelled) {
        TimerHandleObj *t = heap_pop(self);
        self->timers_cancelled--;
        release_handle((PyObject *)t);
    }
}

static void
timers_clear(LoopObj *self)
{
    while (self->timers_len) {
        TimerHandleObj *t = heap_pop(self);
        release_handle((PyObject *)t);
    }
    self->timers_cancelled = 0;
}

void
aioev_loop_timer_cancelled(LoopObj *self, TimerHandleObj *t)
{
    if (t->scheduled) {
        self->timers_cancelled++;
    }
}

/* ------------------------------------------------------------------------
 * libev glue: GIL release around the poll, wake-ups
 * ------------------------------------------------------------------------ */

static void
release_cb(struct ev_loop *evloop)
{
    LoopObj *self = ev_userdata(evloop);
    if (self->polling_blocks) {
        self->tstate = PyEval_SaveThread();
    }
}

static void
acquire_cb(struct ev_loop *evloop)
{
    LoopObj *self = ev_userdata(evloop);
    if (self->polling_blocks) {
        PyEval_RestoreThread(self->tstate);
        self->tstate = NULL;
    }
}

static void
wakeup_cb(struct ev_loop *evloop, ev_async *w, int revents)
{
    /* Only there to end the poll: the work is already queued. */
}

static void
timeout_cb(struct ev_loop *evloop, ev_timer *w, int revents)
{
    /* Ends the poll; due timers are collected after ev_run returns. */
}

/* Empties the pipe; with to >= 0, passes what it held on to that fd. */
static void
sigwake_drain(int fd, int to)
{
    char buf[256];
    ssize_t n;
    while ((n = read(fd, buf, sizeof(buf))) > 0) {
        if (to >= 0 && write(to, buf, (size_t)n) < 0) {
            /* their fd is full or gone: as the signal handler would */
        }
    }
}

static void
sigwake_cb(struct ev_loop *evloop, ev_io *w, int revents)
{
    /* A signal's byte: it ended the poll, and run_once checks signals
     * after it. Drain so the next poll can sleep. */
    sigwake_drain(w->fd, -1);
}

static void
sigwake_close(LoopObj *self)
{
    if (self->sigwake_w < 0) {
        return;
    }
    if (self->evloop != NULL) {
        ev_io_stop(self->evloop, &self->sigwake);
    }
    close(self->sigwake.fd);
    close(self->sigwake_w);
    self->sigwake_w = -1;
}

static int sigwake_open(LoopObj *self);

/* signal.set_wakeup_fd(fd): the old fd, or -2 with an exception set. */
static long
set_wakeup_fd(LoopObj *self, int fd)
{
    PyObject *arg = PyLong_FromLong(fd);
    PyObject *r = arg ? PyObject_CallOneArg(self->state->set_wakeup_fd,
                                            arg) : NULL;
    Py_XDECREF(arg);
    long old = r ? PyLong_AsLong(r) : -2;
    Py_XDECREF(r);
    if (old == -1 && PyErr_Occurred()) {
        old = -2;
    }
    return old;
}

/* Before the first poll of a run that may sleep: while it runs in the main
 * thread, the loop is the signal wakeup fd's reader if nobody else is (as
 * uvloop), so a signal landing between the last check for signals and the
 * poll still ends the poll. Nothing can raise between setting the fd and
 * recording it: loop_run gives back exactly what was set. */
static int
sigwake_take(LoopObj *self)
{
    self->sigwake_tried = 1;
    PyObject *main = PyObject_CallNoArgs(self->state->main_thread);
    if (main == NULL) {
        return -1;
    }
    PyObject *ident = PyObject_GetAttrString(main, "ident");
    Py_DECREF(main);
    if (ident == NULL) {
        return -1;
    }
    unsigned long id = PyLong_AsUnsignedLong(ident);
    Py_DECREF(ident);
    if (id == (unsigned long)-1 && PyErr_Occurred()) {
        PyErr_Clear();  /* ident None: no main thread to speak of */
        return 0;
    }
    if (id != PyThread_get_thread_ident()) {
        return 0;
    }
    if (sigwake_open(self) < 0) {
        return -1;
    }
    sigwake_drain(self->sigwake.fd, -1);
    long old = set_wakeup_fd(self, self->sigwake_w);
    if (old == -2) {
        if (!PyErr_ExceptionMatches(PyExc_ValueError)) {
            return -1;
        }
        PyErr_Clear();  /* not the main interpreter */
        return 0;
    }
    if (old != -1) {
        /* Someone's own, or add_signal_handler's: theirs. Set-and-check
         * is the only way to read it: a signal that came in between wrote
         * to our pipe, and its byte is theirs (add_signal_handler's
         * reader turns bytes into handler calls). */
        long rc = set_wakeup_fd(self, (int)old);
        sigwake_drain(self->sigwake.fd, (int)old);
        return rc == -2 ? -1 : 0;
    }
    self->sigwake_set = self->sigwake_w;
    return 0;
}

/* Ends a run: give the wakeup fd back if this run set it, unless someone
 * set theirs meanwhile. Keeps an exception the run ended with. */
static int
sigwake_give_back(LoopObj *self)
{
    int fd = self->sigwake_set;
    self->sigwake_set = -1;
    self->sigwake_tried = 0;
    if (fd < 0) {
        return 0;
    }
    PyObject *exc = PyErr_GetRaisedException();
    /* Bytes still in our pipe came while the fd was ours. Then check by
     * setting ours again (setting -1 would drop a signal's byte that came
     * meanwhile): if someone set theirs during the run, put it back with
     * what came in between. */
    sigwake_drain(self->sigwake.fd, -1);
    long cur = set_wakeup_fd(self, fd);
    if (cur == fd || cur == -1) {  /* still ours, or unset meanwhile */
        cur = set_wakeup_fd(self, -1);
    }
    else if (cur >= 0) {
        int theirs = (int)cur;
        cur = set_wakeup_fd(self, theirs);
        sigwake_drain(self->sigwake.fd, theirs);
    }
    if (cur == -2) {
        if (exc == NULL) {
            return -1;
        }
        PyErr_WriteUnraisable((PyObject *)self);
    }
    PyErr_SetRaisedException(exc);
    return 0;
}

/* The pipe whose write end is handed to set_wakeup_fd; libev polls the
 * read end. Made on first use. */
static int
sigwake_open(LoopObj *self)
{
    int fds[2];

    if (self->sigwake_w >= 0) {
        return 0;
    }
    if (pipe2(fds, O_NONBLOCK | O_CLOEXEC) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    ev_io_init(&self->sigwake, sigwake_cb, fds[0], EV_READ);
    ev_io_start(self->evloop, &self->sigwake);
    self->sigwake_w = fds[1];
    return 0;
}

static int
loop_open(LoopObj *self)
{
    self->evloop = ev_loop_new(EVBACKEND_EPOLL | EVFLAG_NOENV
                               | EVFLAG_NOSIGMASK);
    if (self->evloop == NULL) {
        self->evloop = ev_loop_new(EVFLAG_AUTO | EVFLAG_NOENV
                                   | EVFLAG_NOSIGMASK);
    }
    if (self->evloop == NULL) {
        PyErr_SetString(PyExc_OSError, "libev: could not create a loop");
        return -1;
    }
    ev_set_userdata(self->evloop, self);
    ev_set_loop_release_cb(self->evloop, release_cb, acquire_cb);
    ev_async_init(&self->wakeup, wakeup_cb);
    ev_async_start(self->evloop, &self->wakeup);
    ev_init(&self->timeout, timeout_cb);
    self->pid = getpid();
    return 0;
}

/* ------------------------------------------------------------------------
 * Checks shared by the methods
 * ------------------------------------------------------------------------ */

int
aioev_is_loop(aioev_state *st, PyObject *obj)
{
    return PyObject_TypeCheck(obj, st->LoopType);
}

int
aioev_handle_trace(LoopObj *self, HandleObj *h)
{
    if (!self->debug) {
        return 0;
    }
    PyObject *frame = (PyObject *)PyEval_GetFrame();  /* borrowed */
    h->source_tb = PyObject_CallOneArg(self->state->extract_stack,
                                       frame ? frame : Py_None);
    return h->source_tb ? 0 : -1;
}

int
aioev_loop_get_debug(LoopObj *self)
{
    return self->debug;
}

int
aioev_loop_is_running(LoopObj *self)
{
    return self->running;
}

int
aioev_loop_is_closed(LoopObj *self)
{
    return self->closed;
}

int
aioev_loop_check_closed(LoopObj *self)
{
    if (self->closed) {
        PyErr_SetString(PyExc_RuntimeError, "Event loop is closed");
        return -1;
    }
    return 0;
}

static int
check_thread(LoopObj *self)
{
    if (self->thread_id == 0) {
        return 0;
    }
    if (PyThread_get_thread_ident() != self->thread_id) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Non-thread-safe operation invoked on an event loop "
                        "other than the current one");
        return -1;
    }
    return 0;
}

int
aioev_loop_check_call_soon(LoopObj *self)
{
    if (aioev_loop_check_closed(self) < 0) {
        return -1;
    }
    return self->debug ? check_thread(self) : 0;
}

void
aioev_report_callback_error(aioev_state *st, PyObject *loop,
                            PyObject *handle, PyObject *callback,
                            PyObject *args)
{
    PyObject *exc = PyErr_GetRaisedException();
    PyObject *res = PyObject_CallFunctionObjArgs(
        st->report_error, loop, exc, handle ? handle : Py_None,
        callback ? callback : Py_None, args ? args : Py_None, NULL);
    if (res == NULL) {
        PyErr_WriteUnraisable(loop);
    }
    Py_XDECREF(res);
    Py_DECREF(exc);
}

/* ------------------------------------------------------------------------
 * Running
 * ------------------------------------------------------------------------ */

static int
is_fatal_error(void)
{
    return PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)
        || PyErr_ExceptionMatches(PyExc_SystemExit);
}

/* Runs one queued item. Returns 0, or -1 with KeyboardInterrupt or
 * SystemExit set; other errors were reported to the exception handler. */
static int
run_item(LoopObj *self, ready_item *it)
{
    aioev_state *st = self->state;
    PyObject *res;
    int rc = 0;

    switch (it->kind) {
    case READY_HANDLE:
        if (!((HandleObj *)it->a)->cancelled) {
            rc = aioev_handle_run((HandleObj *)it->a);
        }
        return rc;
    case READY_TASK_STEP:
    case READY_TASK_WAKEUP: {
        /* A step runs in the task's context, as call_soon(step,
         * context=task_context) would run it. */
        TaskObj *task = (TaskObj *)it->a;
        if (!PyContext_CheckExact(task->task_context)) {
            /* context.run(step), as asyncio's call_soon would do */
            PyObject *cb = aioev_task_callback(
                st, task, it->kind == READY_TASK_WAKEUP ? NULL : it->b,
                it->kind == READY_TASK_WAKEUP);
            if (cb == NULL) {
                return -1;
            }
            res = aioev_context_call(task->task_context, cb, &it->b,
                                     it->kind == READY_TASK_WAKEUP);
            if (res == NULL && !is_fatal_error()) {
                aioev_report_callback_error(st, (PyObject *)self, NULL, cb,
                                            NULL);
            }
            Py_DECREF(cb);
            if (res == NULL) {
                return PyErr_Occurred() ? -1 : 0;
            }
            Py_DECREF(res);
            return 0;
        }
        PyObject *ctx = Py_NewRef(task->task_context);
        if (PyContext_Enter(ctx) < 0) {
            Py_DECREF(ctx);
            rc = -1;
            break;
        }
        if (it->kind == READY_TASK_STEP) {
            rc = aioev_task_step(st, task, it->b);
        }
        else {
            rc = aioev_task_wakeup(st, task, it->b);
        }
        if (PyContext_Exit(ctx) < 0) {
            rc = -1;
        }
        Py_DECREF(ctx);
        break;
    }
    case READY_FUT_CALLBACK:
        res = aioev_context_call(it->c, it->a, &it->b, 1);
        if (res == NULL) {
            if (is_fatal_error()) {
                return -1;
            }
            PyObject *args = PyTuple_Pack(1, it->b);
            if (args == NULL) {
                return -1;
            }
            aioev_report_callback_error(st, (PyObject *)self, NULL, it->a,
                                        args);
            Py_DECREF(args);
            return 0;
        }
        Py_DECREF(res);
        return 0;
    }
    if (rc < 0) {
        if (is_fatal_error()) {
            return -1;
        }
        aioev_report_callback_error(st, (PyObject *)self, NULL, it->a, NULL);
    }
    return 0;
}

/* Debug mode: remember the running handle, warn about slow callbacks. */
static int
run_item_debug(LoopObj *self, ready_item *it)
{
    aioev_state *st = self->state;
    PyObject *shown;  /* what _current_handle and the warning show */
    int rc;

    if (it->kind == READY_FUT_CALLBACK) {
        /* asyncio runs a done callback as a Handle, and what reads
         * _current_handle (the default exception handler) expects one */
        PyObject *args = PyTuple_Pack(1, it->b);
        shown = args == NULL ? NULL
            : (PyObject *)aioev_handle_new(st, st->HandleType,
                                           (PyObject *)self, it->a, args,
                                           it->c);
        Py_XDECREF(args);
        if (shown == NULL) {
            return -1;
        }
        aioev_handle_track(shown);
    }
    else {
        shown = Py_NewRef(it->a);  /* a Handle, or a Task for its steps */
    }
    double t0 = monotonic_now();
    Py_XSETREF(self->current_handle, Py_NewRef(shown));
    rc = run_item(self, it);
    Py_CLEAR(self->current_handle);
    double dt = monotonic_now() - t0;
    if (dt >= self->slow_callback_duration) {
        PyObject *exc = PyErr_GetRaisedException();
        PyObject *r = PyObject_CallMethod(st->logger, "warning", "sOd",
                                          "Executing %s took %.3f seconds",
                                          shown, dt);
        if (r == NULL) {
            PyErr_WriteUnraisable((PyObject *)self);
        }
        Py_XDECREF(r);
        PyErr_SetRaisedException(exc);
    }
    Py_DECREF(shown);
    return rc;
}

/* One iteration: poll, collect due timers, run what was ready at the
 * start of the run phase. Returns 0 or -1 with an exception set. */
static int
run_once(LoopObj *self)
{
    int flags = EVRUN_ONCE;

    /* Before a poll that may sleep: be the signal wakeup fd's reader
     * (once per run, so runs that never sleep pay nothing), and handle a
     * signal that came while C code ran the last callbacks (no bytecode
     * ran after it to notice). One landing after this check writes to
     * the wakeup fd, which ends the poll. */
    if (self->ready_len == 0) {
        if (!self->sigwake_tried && sigwake_take(self) < 0) {
            return -1;
        }
        if (PyErr_CheckSignals() < 0) {
            return -1;
        }
    }
    timers_purge(self);
    self->iter++;
    if (self->linger_len) {
        aioev_io_sweep(self);
    }
    self->polling_blocks = 0;
    if (self->ready_len || self->stopping) {
        flags = EVRUN_NOWAIT;
    }
    else if (self->timers_len) {
        double delay = self->timers[0].handle->when - monotonic_now();
        if (delay <= 0) {
            flags = EVRUN_NOWAIT;
        }
        else {
            if (!(delay <= 86400.0)) {
                delay = 86400.0;  /* also NaN (call_at(nan): never due) */
            }
            ev_timer_set(&self->timeout, delay, 0.0);
            ev_timer_start(self->evloop, &self->timeout);
            self->polling_blocks = 1;
        }
    }
    else {
        self->polling_blocks = 1;
    }
    /* A non-blocking poll can only report fd events: without watched fds
     * there is nothing to learn (call_soon_threadsafe queues directly),
     * so the syscall is skipped. */
    self->wakeup_sent = 0;
    if (flags == EVRUN_ONCE || self->fds_count) {
        ev_run(self->evloop, flags);
    }
    self->polling_blocks = 0;
    if (ev_is_active(&self->timeout)) {
        ev_timer_stop(self->evloop, &self->timeout);
    }
    if (PyErr_CheckSignals() < 0) {
        return -1;
    }

    uint64_t end = self->timers_len
        ? when_key(monotonic_now() + self->clock_resolution) : 0;
    while (self->timers_len && self->timers[0].when < end) {
        TimerHandleObj *t = heap_pop(self);
        if (t->base.cancelled) {
            self->timers_cancelled--;
        }
        else if (aioev_loop_enqueue(self, READY_HANDLE, (PyObject *)t, NULL,
                                    NULL) < 0) {
            release_handle((PyObject *)t);
            return -1;
        }
        release_handle((PyObject *)t);
    }

    /* Items queued by these callbacks wait for the next iteration. */
    size_t ntodo = self->ready_len;
    for (size_t i = 0; i < ntodo && self->ready_len; i++) {
        ready_item it;
        int rc;
        ready_pop(self, &it);
        if (self->debug) {
            rc = run_item_debug(self, &it);
        }
        else {
            rc = run_item(self, &it);
        }
        if (it.kind == READY_HANDLE) {
            release_handle(it.a);
        }
        else {
            Py_DECREF(it.a);
        }
        Py_XDECREF(it.b);
        Py_XDECREF(it.c);
        if (rc < 0) {
            return -1;
        }
    }
    return 0;
}

PyDoc_STRVAR(loop_run_doc,
"_run()\n--\n\nRun iterations until stop(); run_forever's core.");

static PyObject *
loop_run(LoopObj *self, PyObject *Py_UNUSED(ignored))
{
    int rc = 0;

    if (aioev_loop_check_closed(self) < 0) {
        return NULL;
    }
    if (self->running) {
        PyErr_SetString(PyExc_RuntimeError,
                        "This event loop is already running");
        return NULL;
    }
    if (self->pid != getpid()) {
        sigwake_close(self);  /* the parent's pipe: made again on demand */
        ev_loop_fork(self->evloop);
        self->pid = getpid();
    }
    self->running = 1;
    self->thread_id = PyThread_get_thread_ident();
    for (;;) {
        if (run_once(self) < 0) {
            rc = -1;
            break;
        }
        if (self->stopping) {
            break;
        }
    }
    self->stopping = 0;
    self->running = 0;
    self->thread_id = 0;
    if (sigwake_give_back(self) < 0) {
        return NULL;
    }
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------
 * Scheduling callbacks
 * ------------------------------------------------------------------------ */

/* Splits `callback, *args, context=None` of the call_* methods. */
static int
parse_callback_args(const char *fname, PyObject *const *args,
                    Py_ssize_t nargs, PyObject *kwnames, Py_ssize_t skip,
                    PyObject **context)
{
    *context = Py_None;
    if (nargs <= skip) {
        PyErr_Format(PyExc_TypeError,
                     "%s() missing required positional argument", fname);
        return -1;
    }
    if (kwnames != NULL) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++) {
            PyObject *name = PyTuple_GET_ITEM(kwnames, i);
            if (!aioev_str_eq(name, "context")) {
                PyErr_Format(PyExc_TypeError,
                             "%s() got an unexpected keyword argument '%S'",
                             fname, name);
                return -1;
            }
            *context = args[nargs + i];
        }
    }
    return 0;
}

static int
check_callback(LoopObj *self, PyObject *callback, const char *fname)
{
    aioev_state *st = self->state;
    if (self->debug) {
        int is_coro = 0;
        PyObject *checks[2] = {st->iscoroutine, st->iscoroutinefunction};
        for (int i = 0; i < 2 && !is_coro; i++) {
            PyObject *r = PyObject_CallOneArg(checks[i], callback);
            if (r == NULL) {
                return -1;
            }
            is_coro = PyObject_IsTrue(r);
            Py_DECREF(r);
            if (is_coro < 0) {
                return -1;
            }
        }
        if (is_coro) {
            PyErr_Format(PyExc_TypeError,
                         "coroutines cannot be used with %s()", fname);
            return -1;
        }
    }
    if (!PyCallable_Check(callback)) {
        PyErr_Format(PyExc_TypeError,
                     "a callable object was expected by %s(), got %R",
                     fname, callback);
        return -1;
    }
    return 0;
}

/* Makes the handle for callback(*args) in context (None: a copy of the
 * current one). Returns a new reference or NULL. */
static HandleObj *
make_handle(LoopObj *self, PyTypeObject *tp, const char *fname,
            PyObject *callback, PyObject *const *args, Py_ssize_t nargs,
            PyObject *context)
{
    aioev_state *st = self->state;
    PyObject *tuple = NULL, *ctx = NULL;
    HandleObj *h = NULL;

    if (check_callback(self, callback, fname) < 0) {
        return NULL;
    }
    if (nargs == 0) {
        tuple = Py_NewRef(st->empty_tuple);
    }
    else {
        tuple = PyTuple_New(nargs);
        if (tuple == NULL) {
            goto error;
        }
        for (Py_ssize_t i = 0; i < nargs; i++) {
            PyTuple_SET_ITEM(tuple, i, Py_NewRef(args[i]));
        }
    }
    if (context == Py_None) {
        ctx = PyContext_CopyCurrent();
        if (ctx == NULL) {
            goto error;
        }
        /* Our private copy goes untracked with its handle: see
         * release_handle(). */
        PyObject_GC_UnTrack(ctx);
    }
    else {
        ctx = Py_NewRef(context);
    }
    h = aioev_handle_new(st, tp, (PyObject *)self, callback, tuple, ctx);
    if (h == NULL) {
        goto error;
    }
    if (aioev_handle_trace(self, h) < 0) {
        Py_CLEAR(h);
    }
error:
    Py_XDECREF(tuple);
    if (h == NULL) {
        aioev_context_retrack(ctx);  /* contexts die tracked (handle.c) */
    }
    Py_XDECREF(ctx);  /* on success the handle holds it, untracked */
    return h;
}

static PyObject *
call_soon_impl(LoopObj *self, const char *fname, PyObject *const *args,
               size_t nargsf, PyObject *kwnames, int threadsafe)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *context;
    HandleObj *h;

    if (parse_callback_args(fname, args, nargs, kwnames, 0, &context) < 0
        || aioev_loop_check_closed(self) < 0) {
        return NULL;
    }
    if (!threadsafe && self->debug && check_thread(self) < 0) {
        return NULL;
    }
    if (threadsafe && self->ts_lock == NULL) {
        self->ts_lock = PyThread_allocate_lock();
        if (self->ts_lock == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
    }
    h = make_handle(self, self->state->HandleType, fname, args[0], args + 1,
                    nargs - 1, context);
    if (h == NULL) {
        return NULL;
    }
    h->threadsafe = threadsafe;
    if (aioev_loop_enqueue(self, READY_HANDLE, (PyObject *)h, NULL, NULL)
        < 0) {
        Py_DECREF(h);
        return NULL;
    }
    /* Only a loop blocked in its poll needs waking: its flag is read and
     * written under the GIL, and a loop not polling sees the queue first. */
    if (threadsafe && self->polling_blocks && !self->wakeup_sent) {
        self->wakeup_sent = 1;
        ev_async_send(self->evloop, &self->wakeup);
    }
    return (PyObject *)h;
}

static LoopObj *
ts_loop(PyObject *loop)
{
    if (loop == NULL || !aioev_is_loop(AIOEV_STATE(loop), loop)
        || ((LoopObj *)loop)->ts_lock == NULL) {
        return NULL;
    }
    return (LoopObj *)loop;
}

int
aioev_loop_ts_enter(PyObject *loop)
{
    LoopObj *lp = ts_loop(loop);
    unsigned long me = PyThread_get_thread_ident();
    if (lp == NULL || lp->ts_owner == me) {
        return 0;
    }
    /* A waiter holds it only for an instant, without the GIL. */
    if (!PyThread_acquire_lock(lp->ts_lock, NOWAIT_LOCK)) {
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(lp->ts_lock, WAIT_LOCK);
        Py_END_ALLOW_THREADS
    }
    lp->ts_owner = me;
    return 1;
}

void
aioev_loop_ts_exit(PyObject *loop, int took)
{
    if (took) {
        LoopObj *lp = (LoopObj *)loop;
        lp->ts_owner = 0;
        PyThread_release_lock(lp->ts_lock);
    }
}

void
aioev_loop_ts_wait(PyObject *loop)
{
    LoopObj *lp = ts_loop(loop);
    if (lp == NULL || lp->ts_owner == 0
        || lp->ts_owner == PyThread_get_thread_ident()) {
        return;
    }
    PyThread_type_lock lock = lp->ts_lock;
    Py_BEGIN_ALLOW_THREADS
    PyThread_acquire_lock(lock, WAIT_LOCK);
    PyThread_release_lock(lock);
    Py_END_ALLOW_THREADS
}

PyDoc_STRVAR(call_soon_doc,
"call_soon(callback, *args, context=None)\n--\n\n"
"Arrange for callback(*args) to be called in the next iteration.");

static PyObject *
loop_call_soon(LoopObj *self, PyObject *const *args, size_t nargsf,
               PyObject *kwnames)
{
    return call_soon_impl(self, "call_soon", args, nargsf, kwnames, 0);
}

PyDoc_STRVAR(call_soon_threadsafe_doc,
"call_soon_threadsafe(callback, *args, context=None)\n--\n\n"
"Like call_soon(), but safe to call from another thread.");

static PyObject *
loop_call_soon_threadsafe(LoopObj *self, PyObject *const *args,
                          size_t nargsf, PyObject *kwnames)
{
    return call_soon_impl(self, "call_soon_threadsafe", args, nargsf,
                          kwnames, 1);
}

static PyObject *
call_at_impl(LoopObj *self, const char *fname, double when,
             PyObject *const *args, Py_ssize_t nargs, PyObject *context)
{
    TimerHandleObj *t;

    if (self->debug && check_thread(self) < 0) {
        return NULL;
    }
    t = (TimerHandleObj *)make_handle(self, self->state->TimerHandleType,
                                      fname, args[0], args + 1, nargs - 1,
                                      context);
    if (t == NULL) {
        return NULL;
    }
    t->when = when;
    if (heap_push(self, t) < 0) {
        Py_DECREF(t);
        return NULL;
    }
    return (PyObject *)t;
}

/* call_at's when: a number (asyncio keeps whatever it is given, and
 * compares it with floats). */
static int
parse_when(PyObject *obj, double *out)
{
    if (obj == Py_None) {
        PyErr_SetString(PyExc_TypeError, "when cannot be None");
        return -1;
    }
    *out = PyFloat_AsDouble(obj);
    if (*out == -1.0 && PyErr_Occurred()) {
        return -1;
    }
    return 0;
}

/* call_later's self.time() + delay, computed as asyncio does for what is
 * not an int or a float (its TypeError for a str or a Decimal). */
static int
later_when(PyObject *delay, double *out)
{
    double now = monotonic_now();
    if (delay == Py_None) {
        PyErr_SetString(PyExc_TypeError, "delay must not be None");
        return -1;
    }
    if (PyFloat_Check(delay) || PyLong_Check(delay)) {
        double d = PyFloat_AsDouble(delay);
        if (d == -1.0 && PyErr_Occurred()) {
            return -1;
        }
        *out = now + d;
        return 0;
    }
    PyObject *t = PyFloat_FromDouble(now);
    PyObject *when = t ? PyNumber_Add(t, delay) : NULL;
    Py_XDECREF(t);
    if (when == NULL) {
        return -1;
    }
    *out = PyFloat_AsDouble(when);
    Py_DECREF(when);
    return *out == -1.0 && PyErr_Occurred() ? -1 : 0;
}

PyDoc_STRVAR(call_later_doc,
"call_later(delay, callback, *args, context=None)\n--\n\n"
"Arrange for callback(*args) to be called after delay seconds.");

static PyObject *
loop_call_later(LoopObj *self, PyObject *const *args, size_t nargsf,
                PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *context;
    double when;

    if (parse_callback_args("call_later", args, nargs, kwnames, 1,
                            &context) < 0
        || later_when(args[0], &when) < 0
        || aioev_loop_check_closed(self) < 0) {
        return NULL;
    }
    /* asyncio's call_later() is call_at(): its checks name that */
    return call_at_impl(self, "call_at", when, args + 1, nargs - 1,
                        context);
}

PyDoc_STRVAR(call_at_doc,
"call_at(when, callback, *args, context=None)\n--\n\n"
"Arrange for callback(*args) to be called at loop time `when`.");

static PyObject *
loop_call_at(LoopObj *self, PyObject *const *args, size_t nargsf,
             PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *context;
    double when;

    if (parse_callback_args("call_at", args, nargs, kwnames, 1, &context) < 0
        || parse_when(args[0], &when) < 0
        || aioev_loop_check_closed(self) < 0) {
        return NULL;
    }
    return call_at_impl(self, "call_at", when, args + 1, nargs - 1,
                        context);
}

/* ------------------------------------------------------------------------
 * Futures and tasks
 * ------------------------------------------------------------------------ */

PyObject *
aioev_loop_new_future(LoopObj *self)
{
    aioev_state *st = self->state;
    FutureObj *fut = PyObject_GC_New(FutureObj, st->FutureType);
    if (fut == NULL) {
        return NULL;
    }
    memset((char *)fut + sizeof(PyObject), 0,
           sizeof(FutureObj) - sizeof(PyObject));
    PyObject_GC_Track(fut);
    if (aioev_future_init(fut, (PyObject *)self) < 0) {
        Py_DECREF(fut);
        return NULL;
    }
    return (PyObject *)fut;
}

static PyObject *
loop_create_future(LoopObj *self, PyObject *Py_UNUSED(ignored))
{
    return aioev_loop_new_future(self);
}

PyDoc_STRVAR(create_task_doc,
"create_task(coro, *, name=None, context=None)\n--\n\n"
"Schedule a coroutine object; return a Task.");

#if PY_VERSION_HEX >= 0x030E0000
/* 3.14's create_task(coro, **kwargs): the task factory gets
 * (loop, coro, **kwargs) and sets the name itself; without one,
 * Task(coro, loop=loop, **kwargs). */
static PyObject *
create_task_passing_kwargs(LoopObj *self, PyObject *const *args,
                           Py_ssize_t nargs, PyObject *kwnames)
{
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    PyObject *callable, *names = NULL, *r = NULL;
    PyObject **stack = PyMem_Malloc((nkw + 3) * sizeof(PyObject *));

    if (stack == NULL) {
        return PyErr_NoMemory();
    }
    if (aioev_loop_check_closed(self) < 0) {
        goto done;
    }
    if (self->task_factory != NULL && self->task_factory != Py_None) {
        callable = self->task_factory;
        stack[0] = (PyObject *)self;
        stack[1] = args[0];
        for (Py_ssize_t i = 0; i < nkw; i++) {
            stack[2 + i] = args[nargs + i];
        }
        r = PyObject_Vectorcall(callable, stack, 2, kwnames);
        goto done;
    }
    names = PyTuple_New(nkw + 1);
    if (names == NULL) {
        goto done;
    }
    stack[0] = args[0];
    for (Py_ssize_t i = 0; i < nkw; i++) {
        PyObject *k = PyTuple_GET_ITEM(kwnames, i);
        if (aioev_str_eq(k, "loop")) {
            PyErr_SetString(PyExc_TypeError, "create_task() got multiple "
                            "values for keyword argument 'loop'");
            goto done;
        }
        PyTuple_SET_ITEM(names, i, Py_NewRef(k));
        stack[1 + i] = args[nargs + i];
    }
    PyTuple_SET_ITEM(names, nkw, PyUnicode_FromString("loop"));
    if (PyTuple_GET_ITEM(names, nkw) == NULL) {
        goto done;
    }
    stack[1 + nkw] = (PyObject *)self;
    r = PyObject_Vectorcall((PyObject *)self->state->TaskType, stack, 1,
                            names);
done:
    Py_XDECREF(names);
    PyMem_Free(stack);
    return r;
}
#endif

static PyObject *
loop_create_task(LoopObj *self, PyObject *const *args, size_t nargsf,
                 PyObject *kwnames)
{
    static const char *const kwlist[] = {"coro", "name", "context", NULL};
    PyObject *coro = NULL, *name = Py_None, *context = Py_None;
    PyObject *vals[3] = {NULL, Py_None, Py_None};
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);

    if (nargs != 1) {
        PyErr_Format(PyExc_TypeError,
                     "create_task() takes exactly 1 positional argument "
                     "(%zd given)", nargs);
        return NULL;
    }
    vals[0] = args[0];
    if (kwnames != NULL) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++) {
            PyObject *k = PyTuple_GET_ITEM(kwnames, i);
            int found = 0;
            for (int j = 1; kwlist[j]; j++) {
                if (aioev_str_eq(k, kwlist[j])) {
                    vals[j] = args[nargs + i];
                    found = 1;
                }
            }
            if (!found) {
#if PY_VERSION_HEX >= 0x030E0000
                /* 3.14: other keywords (eager_start=...) go on to the
                 * Task or the task factory. */
                return create_task_passing_kwargs(self, args, nargs,
                                                  kwnames);
#else
                PyErr_Format(PyExc_TypeError,
                             "create_task() got an unexpected keyword "
                             "argument '%S'", k);
                return NULL;
#endif
            }
        }
    }
    coro = vals[0];
    name = vals[1];
    context = vals[2];
    if (aioev_loop_check_closed(self) < 0) {
        return NULL;
    }
    if (self->task_factory == NULL || self->task_factory == Py_None) {
        return aioev_task_new(self->state, coro, (PyObject *)self, name,
                              context);
    }
#if PY_VERSION_HEX >= 0x030E0000
    return create_task_passing_kwargs(self, args, nargs, kwnames);
#else
    PyObject *task = NULL;
    if (context == Py_None) {
        PyObject *fargs[2] = {(PyObject *)self, coro};
        task = PyObject_Vectorcall(self->task_factory, fargs, 2, NULL);
    }
    else {
        PyObject *kw = Py_BuildValue("{sO}", "context", context);
        PyObject *pos = PyTuple_Pack(2, (PyObject *)self, coro);
        if (kw != NULL && pos != NULL) {
            task = PyObject_Call(self->task_factory, pos, kw);
        }
        Py_XDECREF(kw);
        Py_XDECREF(pos);
    }
    if (task != NULL && name != Py_None) {
#if PY_VERSION_HEX >= 0x030D0000
        /* 3.13: set_name() is mandatory (3.13.0-3.13.2 also call it with
         * None, renaming the factory's task "None": a bug, gh-130033) */
        PyObject *r = aioev_call_method_1(task, "set_name", name);
#else
        /* asyncio.tasks._set_task_name(): a task without set_name() is
         * warned about, and kept */
        PyObject *tasks = PyImport_ImportModule("asyncio.tasks");
        PyObject *r = tasks ? PyObject_CallMethod(tasks, "_set_task_name",
                                                  "OO", task, name)
                            : NULL;
        Py_XDECREF(tasks);
#endif
        if (r == NULL) {
            Py_CLEAR(task);
        }
        Py_XDECREF(r);
    }
    return task;
#endif
}

static PyObject *
loop_set_task_factory(LoopObj *self, PyObject *factory)
{
    if (factory != Py_None && !PyCallable_Check(factory)) {
        PyErr_SetString(PyExc_TypeError,
                        "task factory must be a callable or None");
        return NULL;
    }
    Py_XSETREF(self->task_factory,
               factory == Py_None ? NULL : Py_NewRef(factory));
    Py_RETURN_NONE;
}

static PyObject *
loop_get_task_factory(LoopObj *self, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(self->task_factory ? self->task_factory : Py_None);
}

/* ------------------------------------------------------------------------
 * Small methods
 * ------------------------------------------------------------------------ */

static PyObject *
loop_time(LoopObj *self, PyObject *Py_UNUSED(ignored))
{
    return PyFloat_FromDouble(monotonic_now());
}

static PyObject *
loop_stop(LoopObj *self, PyObject *Py_UNUSED(ignored))
{
    self->stopping = 1;
    if (self->evloop != NULL && self->running
        && PyThread_get_thread_ident() != self->thread_id) {
        ev_async_send(self->evloop, &self->wakeup);
    }
    Py_RETURN_NONE;
}

static PyObject *
loop_is_running(LoopObj *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(self->running);
}

static PyObject *
loop_is_closed(LoopObj *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(self->closed);
}

static PyObject *
loop_get_debug_meth(LoopObj *self, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(self->debug);
}

static PyObject *
loop_check_closed_meth(LoopObj *self, PyObject *Py_UNUSED(ignored))
{
    if (aioev_loop_check_closed(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
loop_check_thread_meth(LoopObj *self, PyObject *Py_UNUSED(ignored))
{
    if (check_thread(self) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
loop_timer_handle_cancelled(LoopObj *self, PyObject *handle)
{
    /* Cancelled TimerHandles tell us directly (handle.c). */
    Py_RETURN_NONE;
}

/* Frees the libev loop and drops queued work; close()'s C part. */
static PyObject *
loop_close_core(LoopObj *self, PyObject *Py_UNUSED(ignored))
{
    if (self->running) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Cannot close a running event loop");
        return NULL;
    }
    if (self->closed) {
        Py_RETURN_NONE;
    }
    self->closed = 1;
    ready_clear(self);
    timers_clear(self);
    aioev_io_close_all(self);
    Py_CLEAR(self->recv_spare);
    sigwake_close(self);
    if (self->evloop != NULL) {
        ev_async_stop(self->evloop, &self->wakeup);
        ev_loop_destroy(self->evloop);
        self->evloop = NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
loop_get_ready_count(LoopObj *self, void *c)
{
    return PyLong_FromSize_t(self->ready_len);
}

static PyObject *
loop_get_timer_count(LoopObj *self, void *c)
{
    return PyLong_FromSize_t(self->timers_len - self->timers_cancelled);
}

static PyObject *
loop_get_thread_id(LoopObj *self, void *c)
{
    if (self->thread_id == 0) {
        Py_RETURN_NONE;
    }
    return PyLong_FromUnsignedLong(self->thread_id);
}

static PyObject *
loop_get_debug_attr(LoopObj *self, void *c)
{
    return PyBool_FromLong(self->debug);
}

static int
loop_set_debug_attr(LoopObj *self, PyObject *v, void *c)
{
    return aioev_setter_bool(v, &self->debug);
}

static PyObject *
loop_get_stopping(LoopObj *self, void *c)
{
    return PyBool_FromLong(self->stopping);
}

/* asyncio's and uvloop's private flag, which some libraries read. */
static PyObject *
loop_get_closed(LoopObj *self, void *c)
{
    return PyBool_FromLong(self->closed);
}

static PyObject *
loop_get_current_handle(LoopObj *self, void *c)
{
    return Py_NewRef(self->current_handle ? self->current_handle : Py_None);
}

/* ------------------------------------------------------------------------
 * new / traverse / clear / dealloc
 * ------------------------------------------------------------------------ */

static PyObject *
loop_new(PyTypeObject *tp, PyObject *args, PyObject *kwds)
{
    LoopObj *self = (LoopObj *)tp->tp_alloc(tp, 0);
    if (self == NULL) {
        return NULL;
    }
    self->state = aioev_state_from_type(tp);
    self->sigwake_w = -1;
    self->sigwake_set = -1;
    self->slow_callback_duration = 0.1;
    self->clock_resolution = 1e-9;
    {
        struct timespec res;
        if (clock_getres(CLOCK_MONOTONIC, &res) == 0) {
            self->clock_resolution = res.tv_sec + res.tv_nsec * 1e-9;
        }
    }
    if (loop_open(self) < 0) {
        Py_DECREF(self);
        return NULL;
    }
    self->next_loop = self->state->loops;
    if (self->next_loop != NULL) {
        self->next_loop->prev_loop = self;
    }
    self->state->loops = self;
    return (PyObject *)self;
}

/* An untracked handle only the loop holds is part of the loop for the
 * collector: its references are visited as the loop's own, so a dropped
 * loop in a cycle through a pending callback can still be collected.
 * A shared untracked one counts as an outside reference, which only
 * delays collection: gc_hook tracks it before the next full collection,
 * and the loop tracks it once it runs. */
static int
visit_handle(PyObject *h, visitproc visit, void *arg)
{
    if (PyObject_GC_IsTracked(h)) {
        Py_VISIT(h);
        return 0;
    }
    if (Py_REFCNT(h) == 1) {
        HandleObj *hd = (HandleObj *)h;
        Py_VISIT(hd->callback);
        Py_VISIT(hd->args);
        Py_VISIT(hd->context);
        Py_VISIT(hd->loop);
        Py_VISIT(hd->source_tb);
        Py_VISIT(hd->repr_cache);
    }
    return 0;
}

static void
track_if_shared(PyObject *h)
{
    if (Py_REFCNT(h) > 1 && !PyObject_GC_IsTracked(h)) {
        aioev_handle_track(h);
    }
}

/* Runs from gc.callbacks when a full collection starts, with none in
 * progress: the only safe moment to track a handle. Full collections
 * only, so its walk over the queues stays rare. */
static PyObject *
gc_hook(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 2 || !aioev_str_eq(args[0], "start")
        || !PyDict_Check(args[1])) {
        Py_RETURN_NONE;
    }
    PyObject *gen = PyDict_GetItemString(args[1], "generation");  /* borrowed */
    if (gen == NULL || PyLong_AsLong(gen) != 2) {
        PyErr_Clear();
        Py_RETURN_NONE;
    }
    for (LoopObj *l = aioev_get_state(mod)->loops; l; l = l->next_loop) {
        for (size_t i = 0; i < l->ready_len; i++) {
            ready_item *it =
                &l->ready[(l->ready_head + i) & (l->ready_cap - 1)];
            if (it->kind == READY_HANDLE) {
                track_if_shared(it->a);
            }
        }
        for (size_t i = 0; i < l->timers_len; i++) {
            track_if_shared((PyObject *)l->timers[i].handle);
        }
    }
    Py_RETURN_NONE;
}

PyMethodDef aioev_gc_hook_def = {
    "_gc_hook", (PyCFunction)(void (*)(void))gc_hook, METH_FASTCALL,
    "gc.callbacks entry: track queued handles that became shared."};

static int
loop_traverse(LoopObj *self, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(self));
    for (size_t i = 0; i < self->ready_len; i++) {
        ready_item *it =
            &self->ready[(self->ready_head + i) & (self->ready_cap - 1)];
        if (it->kind == READY_HANDLE) {
            int rc = visit_handle(it->a, visit, arg);
            if (rc) {
                return rc;
            }
        }
        else {
            Py_VISIT(it->a);
        }
        Py_VISIT(it->b);
        Py_VISIT(it->c);
    }
    for (size_t i = 0; i < self->timers_len; i++) {
        int rc = visit_handle((PyObject *)self->timers[i].handle, visit,
                              arg);
        if (rc) {
            return rc;
        }
    }
    Py_VISIT(self->current_handle);
    Py_VISIT(self->task_factory);
    Py_VISIT(self->transports_data);
    return aioev_io_traverse(self, visit, arg);
}

static int
loop_clear(LoopObj *self)
{
    ready_clear(self);
    timers_clear(self);
    aioev_io_close_all(self);
    Py_CLEAR(self->current_handle);
    Py_CLEAR(self->task_factory);
    Py_CLEAR(self->transports_data);
    return 0;
}

static void
loop_dealloc(LoopObj *self)
{
    PyTypeObject *tp = Py_TYPE(self);
    PyObject_GC_UnTrack(self);
    if (self->prev_loop != NULL) {
        self->prev_loop->next_loop = self->next_loop;
    }
    else if (self->state != NULL && self->state->loops == self) {
        self->state->loops = self->next_loop;
    }
    if (self->next_loop != NULL) {
        self->next_loop->prev_loop = self->prev_loop;
    }
    if (tp->tp_weaklistoffset) {
        PyObject_ClearWeakRefs((PyObject *)self);
    }
    loop_clear(self);
    sigwake_close(self);
    if (self->evloop != NULL) {
        ev_async_stop(self->evloop, &self->wakeup);
        ev_loop_destroy(self->evloop);
        self->evloop = NULL;
    }
    PyMem_Free(self->ready);
    PyMem_Free(self->read_buf);
    Py_CLEAR(self->recv_spare);
    PyMem_Free(self->timers);
    PyMem_Free(self->fds);
    PyMem_Free(self->linger);
    if (self->ts_lock != NULL) {
        PyThread_free_lock(self->ts_lock);
    }
    tp->tp_free(self);
    Py_DECREF(tp);
}

/* ------------------------------------------------------------------------
 * Method table, slots, spec
 * ------------------------------------------------------------------------ */

#define FASTKW (METH_FASTCALL | METH_KEYWORDS)

static PyMethodDef loop_methods[] = {
    {"call_soon", (PyCFunction)(void (*)(void))loop_call_soon, FASTKW,
     call_soon_doc},
    {"call_soon_threadsafe",
     (PyCFunction)(void (*)(void))loop_call_soon_threadsafe, FASTKW,
     call_soon_threadsafe_doc},
    {"call_later", (PyCFunction)(void (*)(void))loop_call_later, FASTKW,
     call_later_doc},
    {"call_at", (PyCFunction)(void (*)(void))loop_call_at, FASTKW,
     call_at_doc},
    {"create_future", (PyCFunction)loop_create_future, METH_NOARGS,
     "Create a Future object attached to the loop."},
    {"create_task", (PyCFunction)(void (*)(void))loop_create_task, FASTKW,
     create_task_doc},
    {"set_task_factory", (PyCFunction)loop_set_task_factory, METH_O,
     "Set a task factory that will be used by loop.create_task()."},
    {"get_task_factory", (PyCFunction)loop_get_task_factory, METH_NOARGS,
     "Return a task factory, or None if the default one is in use."},
    {"time", (PyCFunction)loop_time, METH_NOARGS,
     "Return the time according to the loop's clock (time.monotonic())."},
    {"stop", (PyCFunction)loop_stop, METH_NOARGS,
     "Stop running the loop after the current iteration."},
    {"is_running", (PyCFunction)loop_is_running, METH_NOARGS, NULL},
    {"is_closed", (PyCFunction)loop_is_closed, METH_NOARGS, NULL},
    {"get_debug", (PyCFunction)loop_get_debug_meth, METH_NOARGS, NULL},
    {"_run", (PyCFunction)loop_run, METH_NOARGS, loop_run_doc},
    {"_close", (PyCFunction)loop_close_core, METH_NOARGS, NULL},
    {"_check_closed", (PyCFunction)loop_check_closed_meth, METH_NOARGS,
     NULL},
    {"_check_thread", (PyCFunction)loop_check_thread_meth, METH_NOARGS,
     NULL},
    {"_timer_handle_cancelled", (PyCFunction)loop_timer_handle_cancelled,
     METH_O, NULL},
    {NULL, NULL}
};

static PyGetSetDef loop_getset[] = {
    {"_debug", (getter)loop_get_debug_attr, (setter)loop_set_debug_attr,
     NULL, NULL},
    {"_thread_id", (getter)loop_get_thread_id, NULL, NULL, NULL},
    {"_stopping", (getter)loop_get_stopping, NULL, NULL, NULL},
    {"_closed", (getter)loop_get_closed, NULL, NULL, NULL},
    {"_current_handle", (getter)loop_get_current_handle, NULL, NULL, NULL},
    {"_ready_count", (getter)loop_get_ready_count, NULL, NULL, NULL},
    {"_timer_count", (getter)loop_get_timer_count, NULL, NULL, NULL},
    {NULL}
};

static PyMemberDef loop_members[] = {
    {"slow_callback_duration", T_DOUBLE,
     offsetof(LoopObj, slow_callback_duration), 0, NULL},
    {"_clock_resolution", T_DOUBLE, offsetof(LoopObj, clock_resolution), 0,
     NULL},
    {NULL}
};

static PyType_Slot loop_slots[] = {
    {Py_tp_doc, "The libev-based core of aioev's event loop."},
    {Py_tp_new, loop_new},
    {Py_tp_dealloc, loop_dealloc},
    {Py_tp_traverse, loop_traverse},
    {Py_tp_clear, loop_clear},
    {Py_tp_methods, loop_methods},
    {Py_tp_getset, loop_getset},
    {Py_tp_members, loop_members},
    {0, NULL},
};

static PyType_Spec loop_spec = {
    .name = "aioev._core.Loop",
    .basicsize = sizeof(LoopObj),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .slots = loop_slots,
};

int
aioev_loop_init_type(PyObject *mod, aioev_state *st)
{
    PyObject *methods = NULL;
    st->LoopType = (PyTypeObject *)PyType_FromModuleAndSpec(mod, &loop_spec,
                                                            NULL);
    if (st->LoopType == NULL) {
        return -1;
    }
    /* add_reader & co. live in io.c, sock_* in sock.c, the accept loop
     * in server.c */
    PyMethodDef *tables[] = {aioev_io_methods, aioev_sock_methods,
                             aioev_server_methods};
    for (size_t t = 0; t < sizeof(tables) / sizeof(tables[0]); t++) {
        for (PyMethodDef *m = tables[t]; m->ml_name; m++) {
            methods = PyDescr_NewMethod(st->LoopType, m);
            if (methods == NULL
                || PyObject_SetAttrString((PyObject *)st->LoopType,
                                          m->ml_name, methods) < 0) {
                Py_XDECREF(methods);
                return -1;
            }
            Py_DECREF(methods);
        }
    }
    return PyModule_AddType(mod, st->LoopType);
}
