/* fd readiness: add_reader/add_writer and their removal. One ev_io per fd,
 * its mask following which of the reader and writer handles are set.
 * Debian's libev aborts on a bad fd, so every fd is checked before libev
 * sees it. */
#include "loop.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <sys/epoll.h>
#include <sys/stat.h>
#include <unistd.h>

/* ------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------ */

/* An int or an object with fileno(), as asyncio's selectors accept: the
 * fd, -1 with an exception set, or FD_TOO_BIG (no exception) for a number
 * past an int, which selectors take and no fd can be (so it is never
 * registered: adding it raises what epoll.register raises, removing it
 * finds nothing). */
#define FD_TOO_BIG (-2)

static int
fileobj_to_fd(PyObject *fileobj)
{
    PyObject *num;
    long fd;

    /* selectors' rules and messages, which asyncio's loops give */
    if (PyLong_Check(fileobj)) {
        num = Py_NewRef(fileobj);
    }
    else {
        PyObject *r = PyObject_CallMethod(fileobj, "fileno", NULL);
        num = r ? PyNumber_Long(r) : NULL;
        Py_XDECREF(r);
        if (num == NULL) {
            if (PyErr_ExceptionMatches(PyExc_AttributeError)
                || PyErr_ExceptionMatches(PyExc_TypeError)
                || PyErr_ExceptionMatches(PyExc_ValueError)) {
                PyErr_Clear();
                PyErr_Format(PyExc_ValueError, "Invalid file object: %R",
                             fileobj);
            }
            return -1;
        }
    }
    int overflow;
    fd = PyLong_AsLongAndOverflow(num, &overflow);
    if (overflow) {
        fd = overflow < 0 ? -1 : (long)INT_MAX + 1;
    }
    if (fd < 0) {
        PyErr_Format(PyExc_ValueError, "Invalid file descriptor: %S", num);
        Py_DECREF(num);
        return -1;
    }
    Py_DECREF(num);
    return fd > INT_MAX ? FD_TOO_BIG : (int)fd;
}

/* Refuses what epoll would refuse, before libev can abort on it (or,
 * for EPERM, call the fd ready on every poll). Sockets and pipes it
 * takes, files and directories not; other kinds (devices: a tty yes,
 * /dev/null not) are asked of a scratch epoll set. */
static int
check_pollable(int fd)
{
    struct stat sb;
    if (fcntl(fd, F_GETFD) < 0 || fstat(fd, &sb) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (S_ISSOCK(sb.st_mode) || S_ISFIFO(sb.st_mode)) {
        return 0;
    }
    if (S_ISREG(sb.st_mode) || S_ISDIR(sb.st_mode)) {
        errno = EPERM;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    int ep = epoll_create1(EPOLL_CLOEXEC);
    if (ep < 0) {
        return 0;  /* no answer: let libev find out */
    }
    struct epoll_event ev = {.events = EPOLLIN};
    int rc = epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev);
    int err = errno;
    close(ep);
    if (rc < 0 && err == EPERM) {
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    return 0;
}

static void
io_cb(struct ev_loop *evloop, ev_io *w, int revents)
{
    io_entry *e = (io_entry *)w;
    LoopObj *loop = e->loop;

    e->seen |= e->idle_since != 0;
    /* EV_ERROR: libev dropped the fd; let both sides find out by trying. */
    if (revents & EV_ERROR) {
        revents |= EV_READ | EV_WRITE;
    }
    if ((revents & EV_READ) && e->reader != NULL
        && !e->reader->cancelled) {
        if (aioev_loop_enqueue(loop, READY_HANDLE, (PyObject *)e->reader,
                               NULL, NULL) < 0) {
            PyErr_WriteUnraisable((PyObject *)loop);
        }
    }
    if ((revents & EV_WRITE) && e->writer != NULL
        && !e->writer->cancelled) {
        if (aioev_loop_enqueue(loop, READY_HANDLE, (PyObject *)e->writer,
                               NULL, NULL) < 0) {
            PyErr_WriteUnraisable((PyObject *)loop);
        }
    }
}

static io_entry *
io_get(LoopObj *loop, int fd, int create)
{
    if (fd < loop->fds_cap && loop->fds[fd] != NULL) {
        return loop->fds[fd];
    }
    if (!create) {
        return NULL;
    }
    if (fd >= loop->fds_cap) {
        int cap = loop->fds_cap ? loop->fds_cap : 64;
        while (cap <= fd) {
            cap *= 2;
        }
        io_entry **p = PyMem_Realloc(loop->fds, cap * sizeof(io_entry *));
        if (p == NULL) {
            PyErr_NoMemory();
            return NULL;
        }
        memset(p + loop->fds_cap, 0,
               (cap - loop->fds_cap) * sizeof(io_entry *));
        loop->fds = p;
        loop->fds_cap = cap;
    }
    io_entry *e = PyMem_Calloc(1, sizeof(io_entry));
    if (e == NULL) {
        PyErr_NoMemory();
        return NULL;
    }
    e->loop = loop;
    ev_io_init(&e->io, io_cb, fd, 0);
    loop->fds[fd] = e;
    loop->fds_count++;
    return e;
}

static void
io_free(LoopObj *loop, int fd, io_entry *e)
{
    loop->fds[fd] = NULL;
    loop->fds_count--;
    Py_XDECREF(e->owner);
    PyMem_Free(e);
}

/* Points the watcher at the current reader/writer set; frees the entry
 * when neither is left (a listed one is left to the sweep). ev_io_set
 * re-arms the fd in libev, in case it was closed and its number reused
 * since the last change. */
static void
io_update(LoopObj *loop, int fd, io_entry *e)
{
    int events = (e->reader ? EV_READ : 0) | (e->writer ? EV_WRITE : 0);
    e->idle_since = 0;
    if (ev_is_active(&e->io)) {
        ev_io_stop(loop->evloop, &e->io);
    }
    if (events == 0) {
        if (!e->listed) {
            io_free(loop, fd, e);
        }
        return;
    }
    ev_io_set(&e->io, fd, events);
    ev_io_start(loop->evloop, &e->io);
    e->armed_iter = loop->iter;
}

/* Sets (handle != NULL) or clears one side. Returns 1 if a handle was
 * replaced or removed, 0 if not, -1 on error. */
static int
io_set_side(LoopObj *loop, int fd, int writer, HandleObj *h)
{
    io_entry *e = io_get(loop, fd, h != NULL);
    if (e == NULL) {
        return PyErr_Occurred() ? -1 : 0;
    }
    HandleObj **slot = writer ? &e->writer : &e->reader;
    HandleObj *old = *slot;
    *slot = h ? (HandleObj *)Py_NewRef(h) : NULL;
    io_update(loop, fd, e);
    if (old != NULL) {
        if (old != h) {
            old->cancelled = 1;
        }
        Py_DECREF(old);
        return 1;
    }
    return 0;
}

int
aioev_io_traverse(LoopObj *loop, visitproc visit, void *arg)
{
    for (int fd = 0; fd < loop->fds_cap; fd++) {
        io_entry *e = loop->fds[fd];
        if (e != NULL) {
            Py_VISIT(e->reader);
            Py_VISIT(e->writer);
        }
    }
    return 0;
}

void
aioev_io_close_all(LoopObj *loop)
{
    loop->linger_len = 0;
    for (int fd = 0; fd < loop->fds_cap; fd++) {
        io_entry *e = loop->fds[fd];
        if (e == NULL) {
            continue;
        }
        if (loop->evloop != NULL && ev_is_active(&e->io)) {
            ev_io_stop(loop->evloop, &e->io);
        }
        Py_CLEAR(e->reader);
        Py_CLEAR(e->writer);
        io_free(loop, fd, e);
    }
}

/* ------------------------------------------------------------------------
 * Lingering watches (sock_* ops)
 *
 * A task looping on sock_recv/sock_sendall stops and restarts its fd's
 * watch every time it waits; with libev's epoll backend each restart is
 * an epoll_ctl. The watch of a finished op is left armed, without a
 * handle (events for it are dropped), until the sweep at the start of the
 * iteration after next; the same socket's next op takes it over as it is.
 * The owner check (a weakref: a closed socket's fd number may come back
 * as another socket, which epoll does not know yet) keeps any other use
 * of the fd on the full path, which re-arms it.
 * ------------------------------------------------------------------------ */

static int
owner_is(io_entry *e, PyObject *owner)
{
    if (e->owner == NULL) {
        return 0;
    }
#if PY_VERSION_HEX >= 0x030D0000
    PyObject *o;
    if (PyWeakref_GetRef(e->owner, &o) < 0) {
        PyErr_Clear();
        return 0;
    }
    Py_XDECREF(o);  /* only compared */
    return o == owner;
#else
    return PyWeakref_GetObject(e->owner) == owner;
#endif
}

int
aioev_io_add_owned(LoopObj *loop, int fd, int writer, HandleObj *h,
                   PyObject *owner)
{
    io_entry *e = fd < loop->fds_cap ? loop->fds[fd] : NULL;
    int events = writer ? EV_WRITE : EV_READ;
    if (e != NULL && e->idle_since && ev_is_active(&e->io)
        && (e->io.events & (EV_READ | EV_WRITE)) == events
        && owner_is(e, owner)) {
        h->cancelled = 0;
        *(writer ? &e->writer : &e->reader) = (HandleObj *)Py_NewRef(h);
        e->idle_since = 0;
        return 0;
    }
    return aioev_io_add_socket(loop, fd, writer, h);
}

int
aioev_io_remove_owned(LoopObj *loop, int fd, int writer, PyObject *owner,
                      int kind)
{
    if (loop->closed) {
        return 0;
    }
    io_entry *e = fd < loop->fds_cap ? loop->fds[fd] : NULL;
    HandleObj **slot = e == NULL ? NULL : writer ? &e->writer : &e->reader;
    /* Not lingering: a watch libev has not handed to epoll yet (armed
     * since the last poll; the fd may be closed before the next one,
     * and epoll_ctl on a closed fd makes Debian's libev abort). */
    if (slot == NULL || *slot == NULL || !ev_is_active(&e->io)
        || (writer ? e->reader : e->writer) != NULL
        || e->armed_iter == loop->iter) {
        return aioev_io_remove(loop, fd, writer);
    }
    if (!owner_is(e, owner)) {
        PyObject *wr = PyWeakref_NewRef(owner, NULL);
        if (wr == NULL) {
            PyErr_Clear();  /* no weakrefs: no lingering */
            return aioev_io_remove(loop, fd, writer);
        }
        Py_XSETREF(e->owner, wr);
    }
    if (!e->listed) {
        if (loop->linger_len == loop->linger_cap) {
            int cap = loop->linger_cap ? 2 * loop->linger_cap : 16;
            int *p = PyMem_Realloc(loop->linger, cap * sizeof(int));
            if (p == NULL) {
                return aioev_io_remove(loop, fd, writer);
            }
            loop->linger = p;
            loop->linger_cap = cap;
        }
        loop->linger[loop->linger_len++] = fd;
        e->listed = 1;
    }
    HandleObj *old = *slot;
    *slot = NULL;
    e->idle_since = loop->iter + 1;
    e->seen = 0;
    e->kind = kind;
    old->cancelled = 1;
    Py_DECREF(old);
    return 1;
}

int
aioev_io_quiet(LoopObj *loop, int fd, PyObject *owner, int kind)
{
    io_entry *e = fd < loop->fds_cap ? loop->fds[fd] : NULL;
    return e != NULL && e->idle_since == loop->iter && !e->seen
           && e->kind == kind
           && ev_is_active(&e->io)
           && (e->io.events & (EV_READ | EV_WRITE)) == EV_READ
           && owner_is(e, owner);
}

void
aioev_io_sweep(LoopObj *loop)
{
    int kept = 0;
    for (int i = 0; i < loop->linger_len; i++) {
        int fd = loop->linger[i];
        io_entry *e = loop->fds[fd];  /* listed: freed only below */
        if (e->idle_since >= loop->iter) {
            loop->linger[kept++] = fd;  /* lingering since this one */
            continue;
        }
        if (e->idle_since) {
            e->idle_since = 0;
            ev_io_stop(loop->evloop, &e->io);
        }
        e->listed = 0;
        if (e->reader == NULL && e->writer == NULL) {
            io_free(loop, fd, e);
        }
    }
    loop->linger_len = kept;
}

int
aioev_io_add(LoopObj *loop, int fd, int writer, HandleObj *h)
{
    if (check_pollable(fd) < 0) {
        return -1;
    }
    return aioev_io_add_socket(loop, fd, writer, h);
}

int
aioev_io_add_socket(LoopObj *loop, int fd, int writer, HandleObj *h)
{
    h->cancelled = 0;  /* a kept handle is re-armed after a removal */
    return io_set_side(loop, fd, writer, h) < 0 ? -1 : 0;
}

int
aioev_io_remove(LoopObj *loop, int fd, int writer)
{
    if (loop->closed) {
        return 0;
    }
    return io_set_side(loop, fd, writer, NULL);
}

/* ------------------------------------------------------------------------
 * Methods (attached to Loop by loop.c)
 * ------------------------------------------------------------------------ */

static PyObject *
add_impl(LoopObj *loop, int writer, const char *fname, PyObject *const *args,
         Py_ssize_t nargs)
{
    aioev_state *st = loop->state;
    PyObject *tuple = NULL, *ctx = NULL;
    HandleObj *h = NULL;
    int fd;

    if (nargs < 2) {
        PyErr_Format(PyExc_TypeError,
                     "%s() missing required positional arguments", fname);
        return NULL;
    }
    if (aioev_loop_check_closed(loop) < 0
        || (fd = fileobj_to_fd(args[0])) == -1) {
        return NULL;
    }
    if (fd == FD_TOO_BIG) {
        PyErr_SetString(PyExc_OverflowError,
                        "Python int too large to convert to C int");
        return NULL;
    }
    if (check_pollable(fd) < 0) {
        return NULL;
    }
    if (!PyCallable_Check(args[1])) {
        PyErr_Format(PyExc_TypeError,
                     "a callable object was expected by %s(), got %R",
                     fname, args[1]);
        return NULL;
    }
    tuple = PyTuple_New(nargs - 2);
    if (tuple == NULL) {
        goto error;
    }
    for (Py_ssize_t i = 2; i < nargs; i++) {
        PyTuple_SET_ITEM(tuple, i - 2, Py_NewRef(args[i]));
    }
    ctx = PyContext_CopyCurrent();
    if (ctx == NULL) {
        goto error;
    }
    h = aioev_handle_new(st, st->HandleType, (PyObject *)loop, args[1],
                         tuple, ctx);
    if (h != NULL) {
        PyObject_GC_Track(h);  /* outlives any one queueing */
    }
    if (h == NULL || aioev_handle_trace(loop, h) < 0
        || io_set_side(loop, fd, writer, h) < 0) {
        goto error;
    }
    Py_DECREF(tuple);
    Py_DECREF(ctx);
    Py_DECREF(h);
    Py_RETURN_NONE;

error:
    Py_XDECREF(tuple);
    Py_XDECREF(ctx);
    Py_XDECREF(h);
    return NULL;
}

static PyObject *
remove_impl(LoopObj *loop, int writer, PyObject *fileobj)
{
    int fd, rc;

    if (loop->closed) {
        Py_RETURN_FALSE;
    }
    if ((fd = fileobj_to_fd(fileobj)) == -1) {
        return NULL;
    }
    if (fd == FD_TOO_BIG) {
        Py_RETURN_FALSE;  /* never registered */
    }
    rc = io_set_side(loop, fd, writer, NULL);
    if (rc < 0) {
        return NULL;
    }
    return PyBool_FromLong(rc);
}

int
aioev_io_events(LoopObj *loop, int fd)
{
    io_entry *e = fd >= 0 ? io_get(loop, fd, 0) : NULL;
    return e == NULL ? 0 : (e->reader ? 1 : 0) | (e->writer ? 2 : 0);
}

/* What asyncio's transports ask their loop's selector for their repr. */
static PyObject *
loop_fd_events(LoopObj *loop, PyObject *fileobj)
{
    int fd = fileobj_to_fd(fileobj);
    if (fd == -1) {
        return NULL;
    }
    return PyLong_FromLong(fd == FD_TOO_BIG ? 0 : aioev_io_events(loop, fd));
}

static PyObject *
loop_add_reader(LoopObj *loop, PyObject *const *args, Py_ssize_t nargs)
{
    return add_impl(loop, 0, "add_reader", args, nargs);
}

static PyObject *
loop_add_writer(LoopObj *loop, PyObject *const *args, Py_ssize_t nargs)
{
    return add_impl(loop, 1, "add_writer", args, nargs);
}

static PyObject *
loop_remove_reader(LoopObj *loop, PyObject *fileobj)
{
    return remove_impl(loop, 0, fileobj);
}

static PyObject *
loop_remove_writer(LoopObj *loop, PyObject *fileobj)
{
    return remove_impl(loop, 1, fileobj);
}

PyMethodDef aioev_io_methods[] = {
    {"add_reader", (PyCFunction)(void (*)(void))loop_add_reader,
     METH_FASTCALL, "Start watching fd for read availability."},
    {"add_writer", (PyCFunction)(void (*)(void))loop_add_writer,
     METH_FASTCALL, "Start watching fd for write availability."},
    {"remove_reader", (PyCFunction)loop_remove_reader, METH_O,
     "Stop watching fd for reading; return True if it was watched."},
    {"remove_writer", (PyCFunction)loop_remove_writer, METH_O,
     "Stop watching fd for writing; return True if it was watched."},
    {"_fd_events", (PyCFunction)loop_fd_events, METH_O,
     "Events watched on fd: 1 read, 2 write (selectors' values)."},
    {NULL, NULL}
};
