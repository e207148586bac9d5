/* loop.sock_*: the syscall is tried at once; only on EAGAIN does the
 * operation wait, as a SockOp watching its fd and settling one of our
 * Futures. Each method returns a SockCoro around that future, awaitable
 * and usable as a coroutine like asyncio's. Cancelling the future stops
 * the watch: the SockOp is also the future's done callback. */
#include "loop.h"

#include <errno.h>
#include <sys/socket.h>

enum {
    OP_RECV,
    OP_RECV_INTO,
    OP_RECVFROM,
    OP_RECVFROM_INTO,
    OP_SENDALL,
    OP_SENDTO,
    OP_ACCEPT,
    OP_CONNECT,
};

typedef struct {
    PyObject_HEAD
    LoopObj *loop;
    FutureObj *fut;
    PyObject *sock;
    HandleObj *handle;     /* our fd watch; NULL when not watching */
    PyObject *arg;         /* address, or the object behind buf */
    Py_buffer buf;
    Py_ssize_t n;          /* recv size, bytes sent, connect phase */
    int has_buf;
    int fd;
    int kind;
} SockOpObj;

static int
op_is_writer(int kind)
{
    return kind == OP_SENDALL || kind == OP_SENDTO || kind == OP_CONNECT;
}

static int
would_block(void)
{
    return errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR;
}

/* After a failed socket method call: 0 if it only would have blocked
 * (exception cleared), -1 for a real error. */
static int
method_would_block(void)
{
    if (PyErr_ExceptionMatches(PyExc_BlockingIOError)
        || PyErr_ExceptionMatches(PyExc_InterruptedError)) {
        PyErr_Clear();
        return 0;
    }
    return -1;
}

/* The buffer of socket.recv_into's "w*" argument (fname's argument 1),
 * or its TypeError. */
static int
get_writable(PyObject *obj, Py_buffer *view, const char *fname)
{
    if (PyObject_GetBuffer(obj, view, PyBUF_WRITABLE) == 0) {
        return 0;
    }
    PyErr_Clear();
    PyErr_Format(PyExc_TypeError, "%s() argument 1 must be read-write "
                 "bytes-like object, not %.50s", fname,
                 obj == Py_None ? "None" : Py_TYPE(obj)->tp_name);
    return -1;
}

/* ------------------------------------------------------------------------
 * The operations: 1 done (*res set), 0 would block, -1 error
 * ------------------------------------------------------------------------ */

/* The largest recv size whose empty bytes the loop keeps (one). */
#define RECV_SPARE_MAX (256 * 1024)

static int
try_recv(SockOpObj *op, PyObject **res)
{
    LoopObj *loop = op->loop;
    PyObject *bytes = loop->recv_spare;
    ssize_t r;
    if (bytes != NULL && PyBytes_GET_SIZE(bytes) == op->n) {
        loop->recv_spare = NULL;  /* ours alone: never shown to anyone */
    }
    else {
        bytes = PyBytes_FromStringAndSize(NULL, op->n);
    }
    if (bytes == NULL || op->n == 0) {
        *res = bytes;  /* socket.recv(0) is b"" at once, data or not */
        return bytes ? 1 : -1;
    }
    do {
        r = recv(op->fd, PyBytes_AS_STRING(bytes), (size_t)op->n, 0);
    } while (r < 0 && errno == EINTR);
    if (r < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            /* Kept for the next recv of this size: a large block freed
             * and taken again at once is what makes malloc give the
             * heap's top back to the system and fault it in again. */
            if (op->n <= RECV_SPARE_MAX
                && (loop->recv_spare == NULL
                    || PyBytes_GET_SIZE(loop->recv_spare) != op->n)) {
                Py_XSETREF(loop->recv_spare, bytes);
            }
            else {
                Py_DECREF(bytes);
            }
            return 0;
        }
        Py_DECREF(bytes);
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (r != op->n && _PyBytes_Resize(&bytes, r) < 0) {
        return -1;
    }
    *res = bytes;
    return 1;
}

/* The buffer is taken per attempt, as socket.recv_into does, so the
 * caller may still resize it while we wait. */
static int
try_recv_into(SockOpObj *op, PyObject **res)
{
    Py_buffer view;
    ssize_t r;
    if (get_writable(op->arg, &view, "recv_into") < 0) {
        return -1;
    }
    if (view.len == 0) {
        /* socket.recv_into(empty) is 0 at once, data or not (the kernel
         * would say EAGAIN, and no readiness would ever change that) */
        PyBuffer_Release(&view);
        *res = PyLong_FromLong(0);
        return *res ? 1 : -1;
    }
    do {
        r = recv(op->fd, view.buf, (size_t)view.len, 0);
    } while (r < 0 && errno == EINTR);
    PyBuffer_Release(&view);
    if (r < 0) {
        if (would_block()) {
            return 0;
        }
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    *res = PyLong_FromSsize_t(r);
    return *res ? 1 : -1;
}

static int
try_sendall(SockOpObj *op, PyObject **res)
{
    if (op->buf.len == 0) {
        /* asyncio sends even nothing once: the socket's errors show
         * (not connected, shut down ...) */
        if (send(op->fd, "", 0, 0) < 0 && !would_block()) {
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
    }
    while (op->n < op->buf.len) {
        ssize_t r = send(op->fd, (char *)op->buf.buf + op->n,
                         (size_t)(op->buf.len - op->n), 0);
        if (r < 0) {
            if (errno == EINTR) {
                continue;
            }
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                return 0;
            }
            PyErr_SetFromErrno(PyExc_OSError);
            return -1;
        }
        op->n += r;
    }
    *res = Py_NewRef(Py_None);
    return 1;
}

/* Operations that need address handling go through the socket object. */
static int
try_method(SockOpObj *op, PyObject **res)
{
    aioev_state *st = op->loop->state;
    const size_t self = PY_VECTORCALL_ARGUMENTS_OFFSET | 1;
    PyObject *args[3] = {op->sock, NULL, NULL}, *n = NULL, *r;
    if (op->kind == OP_RECVFROM || op->kind == OP_RECVFROM_INTO) {
        n = PyLong_FromSsize_t(op->n);
        if (n == NULL) {
            return -1;
        }
    }
    switch (op->kind) {
    case OP_RECVFROM:
        args[1] = n;
        r = PyObject_VectorcallMethod(st->str_recvfrom, args, self + 1,
                                      NULL);
        break;
    case OP_RECVFROM_INTO:
        args[1] = op->arg;
        args[2] = n;
        r = PyObject_VectorcallMethod(st->str_recvfrom_into, args, self + 2,
                                      NULL);
        break;
    case OP_SENDTO:
        args[1] = op->buf.obj;
        args[2] = op->arg;
        r = PyObject_VectorcallMethod(st->str_sendto, args, self + 2, NULL);
        break;
    default:  /* OP_ACCEPT */
        r = PyObject_VectorcallMethod(st->str_accept, args, self, NULL);
        if (r != NULL) {
            PyObject *s = PyObject_CallMethodOneArg(
                PyTuple_GET_ITEM(r, 0), st->str_setblocking, Py_False);
            if (s == NULL) {
                Py_CLEAR(r);
            }
            Py_XDECREF(s);
        }
        break;
    }
    Py_XDECREF(n);
    if (r == NULL) {
        return method_would_block();
    }
    *res = r;
    return 1;
}

static int
try_connect(SockOpObj *op, PyObject **res)
{
    if (op->n == 0) {
        PyObject *r = aioev_call_method_1(op->sock, "connect", op->arg);
        if (r == NULL) {
            if (method_would_block() < 0) {
                return -1;
            }
            op->n = 1;  /* in progress: SO_ERROR tells once writable */
            return 0;
        }
        *res = r;
        return 1;
    }
    int err = 0;
    socklen_t len = sizeof(err);
    if (getsockopt(op->fd, SOL_SOCKET, SO_ERROR, &err, &len) < 0) {
        PyErr_SetFromErrno(PyExc_OSError);
        return -1;
    }
    if (err == EINPROGRESS || err == EAGAIN || err == EINTR) {
        return 0;
    }
    if (err != 0) {
        PyObject *exc = PyObject_CallFunction(
            PyExc_OSError, "iN", err,
            PyUnicode_FromFormat("Connect call failed %R", op->arg));
        if (exc != NULL) {
            PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
            Py_DECREF(exc);
        }
        return -1;
    }
    *res = Py_NewRef(Py_None);
    return 1;
}

static int
try_op(SockOpObj *op, PyObject **res)
{
    switch (op->kind) {
    case OP_RECV:
        return try_recv(op, res);
    case OP_RECV_INTO:
        return try_recv_into(op, res);
    case OP_SENDALL:
        return try_sendall(op, res);
    case OP_CONNECT:
        return try_connect(op, res);
    default:
        return try_method(op, res);
    }
}

/* ------------------------------------------------------------------------
 * Watching and finishing
 * ------------------------------------------------------------------------ */

static void
op_unwatch(SockOpObj *op)
{
    HandleObj *h = op->handle;
    if (h == NULL) {
        return;
    }
    op->handle = NULL;
    /* A cancelled handle was replaced by someone else's watch. */
    if (!h->cancelled
        && (op->sock != NULL
            ? aioev_io_remove_owned(op->loop, op->fd, op_is_writer(op->kind),
                                    op->sock, op->kind + 1)
            : aioev_io_remove(op->loop, op->fd,
                              op_is_writer(op->kind))) < 0) {
        PyErr_WriteUnraisable((PyObject *)op);
    }
    Py_DECREF(h);
}

static void
op_release_buffer(SockOpObj *op)
{
    if (op->has_buf) {
        op->has_buf = 0;
        PyBuffer_Release(&op->buf);
    }
}

/* Settles the future with *res (rc 1) or the raised exception (rc -1). */
static void
op_finish(SockOpObj *op, int rc, PyObject *res)
{
    aioev_state *st = op->loop->state;
    PyObject *r;
    op_unwatch(op);
    op_release_buffer(op);
    if (op->fut->fut_state != STATE_PENDING) {
        /* Cancelled meanwhile: drop what we got. */
        Py_XDECREF(res);
        PyErr_Clear();
        return;
    }
    if (rc > 0) {
        r = aioev_future_set_result(st, op->fut, res);
        Py_DECREF(res);
    }
    else {
        PyObject *exc = PyErr_GetRaisedException();
        r = aioev_future_set_exception(st, op->fut, exc);
        Py_DECREF(exc);
    }
    if (r == NULL) {
        PyErr_WriteUnraisable((PyObject *)op);
    }
    Py_XDECREF(r);
}

/* The fd watch's callback: the fd is ready (or libev gave it up). */
static PyObject *
op_call(SockOpObj *op, PyObject *args, PyObject *kwds)
{
    PyObject *res = NULL;
    if (op->fut->fut_state != STATE_PENDING) {
        /* Cancelled, and its SockCoro not told yet. */
        op_unwatch(op);
        op_release_buffer(op);
        Py_RETURN_NONE;
    }
    int rc = try_op(op, &res);
    if (rc != 0) {
        op_finish(op, rc, res);
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------
 * SockCoro: what the sock_* methods return. asyncio's are coroutines, and
 * callers pass them to create_task() or wait_for(), so this one has the
 * coroutine protocol (it is registered as a collections.abc.Coroutine).
 * It owns its future: thrown into, closed or dropped while the operation
 * is pending, it cancels it, which stops the fd watch.
 * ------------------------------------------------------------------------ */

typedef struct {
    PyObject_HEAD
    FutureObj *fut;        /* NULL once finished, or if done at once: */
    PyObject *result;      /* the result of an operation done at once */
    SockOpObj *op;         /* the waiting operation, while fut is set */
    const char *name;      /* "sock_recv" ..., for reprs */
    int started;           /* sent to, thrown into or closed */
} SockCoroObj;

static const char *const op_names[] = {
    "sock_recv", "sock_recv_into", "sock_recvfrom", "sock_recvfrom_into",
    "sock_sendall", "sock_sendto", "sock_accept", "sock_connect"};

/* Steals fut; op (may be NULL) is the operation settling it. */
static PyObject *
coro_new(aioev_state *st, FutureObj *fut, SockOpObj *op, int kind)
{
    SockCoroObj *c = PyObject_GC_New(SockCoroObj, st->SockCoroType);
    if (c == NULL) {
        Py_DECREF(fut);
        return NULL;
    }
    c->fut = fut;
    c->op = (SockOpObj *)Py_XNewRef(op);
    c->result = NULL;
    c->name = op_names[kind];
    c->started = 0;
    PyObject_GC_Track(c);
    return (PyObject *)c;
}

/* For an operation that completed when called: no future needed. Steals
 * result (NULL: an error is set, passed on). */
static PyObject *
coro_new_result(aioev_state *st, PyObject *result, int kind)
{
    if (result == NULL) {
        return NULL;
    }
    SockCoroObj *c = PyObject_GC_New(SockCoroObj, st->SockCoroType);
    if (c == NULL) {
        Py_DECREF(result);
        return NULL;
    }
    c->fut = NULL;
    c->op = NULL;
    c->result = result;
    c->name = op_names[kind];
    c->started = 0;
    PyObject_GC_Track(c);
    return (PyObject *)c;
}

/* The operation is over for us: stop its watch if still on. */
static void
coro_drop_op(SockCoroObj *c)
{
    SockOpObj *op = c->op;
    if (op != NULL) {
        c->op = NULL;
        op_unwatch(op);
        op_release_buffer(op);
        Py_DECREF(op);
    }
}

static void
coro_cancel(SockCoroObj *c)
{
    FutureObj *fut = c->fut;
    Py_CLEAR(c->result);
    coro_drop_op(c);
    if (fut == NULL) {
        return;
    }
    c->fut = NULL;
    /* A closed loop already dropped the fd watch and runs nothing more. */
    if (fut->fut_state == STATE_PENDING
        && !aioev_loop_is_closed((LoopObj *)fut->fut_loop)) {
        PyObject *exc = PyErr_GetRaisedException();
        if (aioev_future_cancel(AIOEV_STATE(fut), fut, Py_None) < 0) {
            /* not `c`: this may run from its dealloc */
            PyErr_WriteUnraisable(NULL);
        }
        PyErr_SetRaisedException(exc);
    }
    else {
        fut->fut_log_tb = 0;
    }
    Py_DECREF(fut);
}

static PySendResult
coro_am_send(SockCoroObj *c, PyObject *arg, PyObject **result)
{
    FutureObj *fut = c->fut;
    c->started = 1;
    if (fut == NULL) {
        *result = c->result;
        c->result = NULL;
        if (*result != NULL) {
            return PYGEN_RETURN;
        }
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot reuse already awaited coroutine");
        return PYGEN_ERROR;
    }
    PySendResult r = aioev_future_await_step(fut, result);
    if (r != PYGEN_NEXT) {
        c->fut = NULL;
        Py_DECREF(fut);
        coro_drop_op(c);  /* cancelled: nothing to read any more */
    }
    return r;
}

static PyObject *
coro_iternext(SockCoroObj *c)
{
    PyObject *res;
    PySendResult r = coro_am_send(c, Py_None, &res);
    return aioev_iternext_from_send(r, res);
}

static PyObject *
coro_send(SockCoroObj *c, PyObject *arg)
{
    return coro_iternext(c);
}

static PyObject *
coro_throw(SockCoroObj *c, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "throw() takes 1 to 3 arguments");
        return NULL;
    }
    c->started = 1;
    coro_cancel(c);
    aioev_set_thrown(args, nargs);
    return NULL;
}

static PyObject *
coro_close(SockCoroObj *c, PyObject *Py_UNUSED(ignored))
{
    c->started = 1;
    coro_cancel(c);
    Py_RETURN_NONE;
}

static PyObject *
coro_await(SockCoroObj *c)
{
    return Py_NewRef(c);
}

static int
coro_traverse(SockCoroObj *c, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(c));
    Py_VISIT(c->fut);
    Py_VISIT(c->result);
    Py_VISIT(c->op);
    return 0;
}

static int
coro_clear(SockCoroObj *c)
{
    Py_CLEAR(c->fut);
    Py_CLEAR(c->result);
    Py_CLEAR(c->op);
    return 0;
}

static void
coro_dealloc(SockCoroObj *c)
{
    PyTypeObject *tp = Py_TYPE(c);
    PyObject_GC_UnTrack(c);
    if (!c->started) {
        /* what asyncio's sock_* coroutines say when they go unawaited
         * (here the operation may have been done already: all the more
         * reason to say it) */
        aioev_warn_never_awaited("Loop.", c->name);
    }
    coro_cancel(c);
    PyObject_GC_Del(c);
    Py_DECREF(tp);
}

static PyObject *
coro_get_name(SockCoroObj *c, void *closure)
{
    return PyUnicode_FromFormat("%s%s", closure ? "Loop." : "", c->name);
}

static PyGetSetDef coro_getset[] = {
    {"__name__", (getter)coro_get_name, NULL, NULL, NULL},
    {"__qualname__", (getter)coro_get_name, NULL, NULL, (void *)1},
    {NULL}
};

static PyMethodDef coro_methods[] = {
    {"send", (PyCFunction)coro_send, METH_O, NULL},
    {"throw", (PyCFunction)(void (*)(void))coro_throw, METH_FASTCALL, NULL},
    {"close", (PyCFunction)coro_close, METH_NOARGS, NULL},
    {NULL, NULL}
};

static PyType_Slot coro_slots[] = {
    {Py_am_await, coro_await},
    {Py_am_send, coro_am_send},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, coro_iternext},
    {Py_tp_methods, coro_methods},
    {Py_tp_getset, coro_getset},
    {Py_tp_traverse, coro_traverse},
    {Py_tp_clear, coro_clear},
    {Py_tp_dealloc, coro_dealloc},
    {0, NULL},
};

static PyType_Spec coro_spec = {
    .name = "aioev._core.SockCoro",
    .basicsize = sizeof(SockCoroObj),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
        | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = coro_slots,
};

/* ------------------------------------------------------------------------
 * Starting an operation
 * ------------------------------------------------------------------------ */

static int
check_socket(LoopObj *loop, PyObject *sock)
{
    aioev_state *st = loop->state;
    if (aioev_loop_check_closed(loop) < 0) {
        return -1;
    }
    /* socket.socket itself is no SSLSocket: skip isinstance()'s lookups */
    if (st->SSLSocket != NULL
        && !Py_IS_TYPE(sock, (PyTypeObject *)st->socket_socket)) {
        int r = PyObject_IsInstance(sock, st->SSLSocket);
        if (r < 0) {
            return -1;
        }
        if (r) {
            PyErr_SetString(PyExc_TypeError,
                            "Socket cannot be of type SSLSocket");
            return -1;
        }
    }
    PyObject *t = PyObject_CallMethodNoArgs(sock, st->str_gettimeout);
    if (t == NULL) {
        return -1;
    }
    int blocking = t == Py_None ? 1
                   : PyFloat_CheckExact(t) ? PyFloat_AS_DOUBLE(t) != 0.0
                   : PyObject_RichCompareBool(t, Py_False, Py_NE);
    Py_DECREF(t);
    if (blocking < 0) {
        return -1;
    }
    if (blocking) {
        PyErr_SetString(PyExc_ValueError, "the socket must be non-blocking");
        return -1;
    }
    return 0;
}

/* sock.fileno() into *fd: -1 for a closed socket. 0, or -1 with an
 * exception set. */
static int
socket_fd(aioev_state *st, PyObject *sock, int *fd)
{
    PyObject *r = PyObject_CallMethodNoArgs(sock, st->str_fileno);
    if (r == NULL) {
        return -1;
    }
    long v = PyLong_AsLong(r);
    Py_DECREF(r);
    if (v == -1 && PyErr_Occurred()) {
        return -1;
    }
    if (v < -1 || v > INT_MAX) {
        PyErr_Format(PyExc_ValueError, "Invalid file descriptor: %ld", v);
        return -1;
    }
    *fd = (int)v;
    return 0;
}

/* Ops that go through the socket's own method on their first try. */
static int
op_is_method(int kind)
{
    return kind == OP_RECVFROM || kind == OP_RECVFROM_INTO
           || kind == OP_SENDTO || kind == OP_ACCEPT || kind == OP_CONNECT;
}

/* Settles fut with the raised exception and returns its coroutine: bad
 * arguments surface at await, as from asyncio's coroutines. */
static PyObject *
fail_at_await(LoopObj *loop, int kind)
{
    aioev_state *st = loop->state;
    PyObject *exc = PyErr_GetRaisedException();
    FutureObj *fut = (FutureObj *)aioev_loop_new_future(loop);
    if (fut == NULL) {
        Py_DECREF(exc);
        return NULL;
    }
    PyObject *r = aioev_future_set_exception(st, fut, exc);
    Py_DECREF(exc);
    if (r == NULL) {
        Py_DECREF(fut);
        return NULL;
    }
    Py_DECREF(r);
    return coro_new(st, fut, NULL, kind);
}

/* asyncio will not wait on an fd a live transport owns (RuntimeError,
 * from loop._ensure_fd_no_transport). Only the loop's registry of
 * transports (a WeakValueDictionary: its data dict, by fd, looked up
 * once) is looked at unless one is there for fd. */
static int
check_no_transport(LoopObj *loop, int fd)
{
    PyObject *data = loop->transports_data, *key, *r;
    int found;
    if (data == NULL) {
        PyObject *transports = PyObject_GetAttrString((PyObject *)loop,
                                                      "_transports");
        data = transports ? PyObject_GetAttrString(transports, "data")
                          : NULL;
        Py_XDECREF(transports);
        if (data == NULL || !PyDict_Check(data)) {
            PyErr_Clear();  /* a bare _core.Loop: no transports */
            Py_XDECREF(data);
            return 0;
        }
        loop->transports_data = data;
    }
    key = PyDict_GET_SIZE(data) ? PyLong_FromLong(fd) : NULL;
    found = key != NULL && PyDict_Contains(data, key) != 0;
    Py_XDECREF(key);
    if (PyErr_Occurred()) {
        return -1;
    }
    if (!found) {
        return 0;
    }
    r = PyObject_CallMethod((PyObject *)loop, "_ensure_fd_no_transport",
                            "i", fd);
    Py_XDECREF(r);
    return r == NULL ? -1 : 0;
}

/* Tries the operation at once, and only if it would block makes a
 * SockOp watching the fd and a future it settles. Returns the SockCoro
 * to await. bufobj, if given, is held as a buffer (writable or not); arg
 * and n are the kind's parameters. */
static PyObject *
op_start(LoopObj *loop, int kind, PyObject *sock, PyObject *arg,
         PyObject *bufobj, int writable, Py_ssize_t n)
{
    aioev_state *st = loop->state;
    SockOpObj first, *op = NULL;
    PyObject *res = NULL, *coro;
    Py_ssize_t want = kind == OP_RECV ? n : 0;  /* bytes a recv asks for */
    int fd, rc;

    if ((kind == OP_RECV || kind == OP_RECVFROM) && n < 0) {
        PyErr_Format(PyExc_ValueError, "negative buffersize in %s",
                     kind == OP_RECV ? "recv" : "recvfrom");
        return fail_at_await(loop, kind);
    }
    /* The first attempt runs on this stack copy: an operation done at
     * once (the common case) allocates no SockOp. */
    first.loop = loop;
    first.sock = sock;
    first.arg = arg;
    first.has_buf = 0;
    first.n = n;
    first.fd = -1;
    first.kind = kind;
    /* The arguments first: the socket's methods check them before the
     * socket itself. */
    if (bufobj != NULL) {
        if ((writable ? get_writable(bufobj, &first.buf, "recv_into")
                      : PyObject_GetBuffer(bufobj, &first.buf,
                                           PyBUF_SIMPLE)) < 0) {
            return fail_at_await(loop, kind);
        }
        first.has_buf = 1;
        if (kind == OP_RECV_INTO) {
            want = first.buf.len;
            op_release_buffer(&first);  /* checked; retaken per attempt */
        }
    }
    if (check_socket(loop, sock) < 0 || socket_fd(st, sock, &fd) < 0) {
        op_release_buffer(&first);
        return fail_at_await(loop, kind);
    }
    if ((kind == OP_RECV && n == 0) || (kind == OP_RECV_INTO && want == 0)) {
        /* socket.recv(0) is b"" at once, recv_into(empty) 0: data or
         * not, open or not */
        return coro_new_result(st, kind == OP_RECV
                                   ? PyBytes_FromStringAndSize(NULL, 0)
                                   : PyLong_FromLong(0), kind);
    }
    if (fd == -1) {
        /* Closed: a method raises its own error (it checks its
         * arguments first), anything else EBADF. */
        if (op_is_method(kind) && try_op(&first, &res) != 0) {
            Py_XDECREF(res);  /* no success on fd -1: only errors */
            if (PyErr_Occurred()) {
                op_release_buffer(&first);
                return fail_at_await(loop, kind);
            }
        }
        op_release_buffer(&first);
        errno = EBADF;
        PyErr_SetFromErrno(PyExc_OSError);
        return fail_at_await(loop, kind);
    }
    first.fd = fd;
    /* A task looping on sock_recv usually calls it again right after
     * answering the peer, before the peer could answer back; one looping
     * on sock_accept, right after the connection it waited for. (Asked
     * for nothing, a recv returns at once: that one is tried. A recvfrom
     * or accept that would fail goes through the socket's method, which
     * raises: skipping it saves the most.) */
    if ((((kind == OP_RECV || kind == OP_RECV_INTO) && want > 0)
         || kind == OP_RECVFROM || kind == OP_RECVFROM_INTO
         || kind == OP_ACCEPT)
        && aioev_io_quiet(loop, fd, sock, kind + 1)) {
        rc = 0;
    }
    else {
        rc = try_op(&first, &res);
    }
    if (rc != 0) {
        op_release_buffer(&first);
        if (rc < 0) {
            return fail_at_await(loop, kind);
        }
        return coro_new_result(st, res, kind);
    }
    if (check_no_transport(loop, fd) < 0) {
        op_release_buffer(&first);
        return fail_at_await(loop, kind);
    }

    op = PyObject_GC_New(SockOpObj, st->SockOpType);
    if (op == NULL) {
        op_release_buffer(&first);
        return NULL;
    }
    op->loop = (LoopObj *)Py_NewRef(loop);
    op->sock = Py_NewRef(sock);
    op->arg = Py_XNewRef(arg);
    op->buf = first.buf;  /* the held buffer moves to op */
    op->has_buf = first.has_buf;
    op->n = first.n;      /* e.g. what sendall sent so far */
    op->fd = fd;
    op->kind = kind;
    op->handle = NULL;
    op->fut = (FutureObj *)aioev_loop_new_future(loop);
    PyObject_GC_Track(op);
    if (op->fut == NULL) {
        goto error;
    }
    op->handle = aioev_handle_new(st, st->HandleType, (PyObject *)loop,
                                  (PyObject *)op, st->empty_tuple,
                                  st->empty_context);
    if (op->handle == NULL) {
        goto error;
    }
    PyObject_GC_Track(op->handle);
    /* try_op just used the fd: no need to check it */
    if (aioev_io_add_owned(loop, fd, op_is_writer(kind), op->handle,
                           sock) < 0) {
        goto error;
    }
    coro = coro_new(st, (FutureObj *)Py_NewRef(op->fut), op, kind);
    if (coro == NULL) {
        goto error;
    }
    Py_DECREF(op);
    return coro;

error:
    {
        PyObject *exc = PyErr_GetRaisedException();
        op_unwatch(op);
        op_release_buffer(op);
        PyErr_SetRaisedException(exc);
        Py_DECREF(op);
    }
    return NULL;
}

/* ------------------------------------------------------------------------
 * Loop methods
 * ------------------------------------------------------------------------ */

/* Binds a call's arguments to asyncio's parameter names, as a Python
 * function would: out[i] is the i-th parameter's argument (borrowed), or
 * NULL for an optional one not given (the first `required` are not). */
static int
bind_args(const char *fname, const char *const *names, Py_ssize_t nnames,
          Py_ssize_t required, PyObject *const *args, Py_ssize_t nargs,
          PyObject *kwnames, PyObject **out)
{
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    if (nargs > nnames) {
        /* a Python method's wording, self counted */
        PyErr_Format(PyExc_TypeError, "Loop.%s() takes %zd positional "
                     "arguments but %zd were given", fname, nnames + 1,
                     nargs + 1);
        return -1;
    }
    for (Py_ssize_t i = 0; i < nnames; i++) {
        out[i] = i < nargs ? args[i] : NULL;
    }
    for (Py_ssize_t k = 0; k < nkw; k++) {
        PyObject *key = PyTuple_GET_ITEM(kwnames, k);
        Py_ssize_t i = 0;
        while (i < nnames
               && PyUnicode_CompareWithASCIIString(key, names[i]) != 0) {
            i++;
        }
        if (i == nnames) {
            PyErr_Format(PyExc_TypeError, "Loop.%s() got an unexpected "
                         "keyword argument '%U'", fname, key);
            return -1;
        }
        if (out[i] != NULL) {
            PyErr_Format(PyExc_TypeError, "Loop.%s() got multiple values "
                         "for argument '%s'", fname, names[i]);
            return -1;
        }
        out[i] = args[nargs + k];
    }
    Py_ssize_t missing = 0, last = 0;
    for (Py_ssize_t i = 0; i < required; i++) {
        if (out[i] == NULL) {
            missing++;
            last = i;
        }
    }
    if (missing == 0) {
        return 0;
    }
    /* "missing 2 required positional arguments: 'a' and 'b'", as Python
     * says it */
    PyObject *list = PyUnicode_FromString("");
    Py_ssize_t seen = 0;
    for (Py_ssize_t i = 0; list != NULL && i < required; i++) {
        if (out[i] != NULL) {
            continue;
        }
        const char *sep = seen == 0 ? ""
                          : i == last ? (missing > 2 ? ", and " : " and ")
                                      : ", ";
        PyObject *more = PyUnicode_FromFormat("%U%s'%s'", list, sep,
                                              names[i]);
        Py_SETREF(list, more);
        seen++;
    }
    if (list != NULL) {
        PyErr_Format(PyExc_TypeError, "Loop.%s() missing %zd required "
                     "positional argument%s: %U", fname, missing,
                     missing > 1 ? "s" : "", list);
        Py_DECREF(list);
    }
    return -1;
}

/* Declares a[] and binds the method's arguments to it, returning NULL
 * from the method on a bad call. */
#define BIND(fname, required, ...)                                         \
    static const char *const names[] = {__VA_ARGS__};                     \
    PyObject *a[sizeof(names) / sizeof(names[0])];                        \
    if (bind_args(fname, names, sizeof(names) / sizeof(names[0]),         \
                  required, args, PyVectorcall_NARGS(nargsf), kwnames, a) \
        < 0) {                                                            \
        return NULL;                                                      \
    }

/* A size argument as the socket's methods convert it ("n"). */
static int
as_size(PyObject *obj, Py_ssize_t *out)
{
    PyObject *i = PyNumber_Index(obj);
    if (i == NULL) {
        return -1;
    }
    *out = PyLong_AsSsize_t(i);
    Py_DECREF(i);
    return *out == -1 && PyErr_Occurred() ? -1 : 0;
}

static PyObject *
loop_sock_recv(LoopObj *loop, PyObject *const *args, size_t nargsf,
               PyObject *kwnames)
{
    Py_ssize_t n;
    BIND("sock_recv", 2, "sock", "n");
    if (as_size(a[1], &n) < 0) {
        return fail_at_await(loop, OP_RECV);
    }
    return op_start(loop, OP_RECV, a[0], NULL, NULL, 0, n);
}

static PyObject *
loop_sock_recv_into(LoopObj *loop, PyObject *const *args, size_t nargsf,
                    PyObject *kwnames)
{
    BIND("sock_recv_into", 2, "sock", "buf");
    return op_start(loop, OP_RECV_INTO, a[0], a[1], a[1], 1, 0);
}

static PyObject *
loop_sock_recvfrom(LoopObj *loop, PyObject *const *args, size_t nargsf,
                   PyObject *kwnames)
{
    Py_ssize_t n;
    BIND("sock_recvfrom", 2, "sock", "bufsize");
    if (as_size(a[1], &n) < 0) {
        return fail_at_await(loop, OP_RECVFROM);
    }
    return op_start(loop, OP_RECVFROM, a[0], NULL, NULL, 0, n);
}

static PyObject *
loop_sock_recvfrom_into(LoopObj *loop, PyObject *const *args,
                        size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t n = 0;
    Py_buffer view;
    BIND("sock_recvfrom_into", 2, "sock", "buf", "nbytes");
    /* asyncio: "if not nbytes: nbytes = len(buf)", then the socket's
     * checks, made here so that no error waits for the socket (its
     * method is what tries it). */
    int given = a[2] == NULL ? 0 : PyObject_IsTrue(a[2]);
    if (given < 0 || (!given && (n = PyObject_Length(a[1])) < 0)
        || get_writable(a[1], &view, "recvfrom_into") < 0) {
        return fail_at_await(loop, OP_RECVFROM_INTO);
    }
    if (given && as_size(a[2], &n) < 0) {
        PyBuffer_Release(&view);
        return fail_at_await(loop, OP_RECVFROM_INTO);
    }
    Py_ssize_t len = view.len;
    PyBuffer_Release(&view);
    if (n < 0 || n > len) {
        PyErr_SetString(PyExc_ValueError,
                        n < 0 ? "negative buffersize in recvfrom_into"
                              : "nbytes is greater than the length of the "
                                "buffer");
        return fail_at_await(loop, OP_RECVFROM_INTO);
    }
    return op_start(loop, OP_RECVFROM_INTO, a[0], a[1], NULL, 0, n);
}

static PyObject *
loop_sock_sendall(LoopObj *loop, PyObject *const *args, size_t nargsf,
                  PyObject *kwnames)
{
    BIND("sock_sendall", 2, "sock", "data");
    return op_start(loop, OP_SENDALL, a[0], NULL, a[1], 0, 0);
}

static PyObject *
loop_sock_sendto(LoopObj *loop, PyObject *const *args, size_t nargsf,
                 PyObject *kwnames)
{
    BIND("sock_sendto", 3, "sock", "data", "address");
    return op_start(loop, OP_SENDTO, a[0], a[2], a[1], 0, 0);
}

static PyObject *
loop_sock_accept(LoopObj *loop, PyObject *const *args, size_t nargsf,
                 PyObject *kwnames)
{
    BIND("sock_accept", 1, "sock");
    return op_start(loop, OP_ACCEPT, a[0], NULL, NULL, 0, 0);
}

static PyObject *
loop_sock_connect_resolved(LoopObj *loop, PyObject *const *args,
                           size_t nargsf, PyObject *kwnames)
{
    BIND("_sock_connect", 2, "sock", "address");
    return op_start(loop, OP_CONNECT, a[0], a[1], NULL, 0, 0);
}

#undef BIND

#define SOCK_METHOD(name, func, doc)                                      \
    {name, (PyCFunction)(void (*)(void))func, METH_FASTCALL | METH_KEYWORDS, \
     doc}

PyMethodDef aioev_sock_methods[] = {
    SOCK_METHOD("sock_recv", loop_sock_recv,
                "Receive up to n bytes from sock (awaitable)."),
    SOCK_METHOD("sock_recv_into", loop_sock_recv_into,
                "Receive data from sock into buf (awaitable)."),
    SOCK_METHOD("sock_recvfrom", loop_sock_recvfrom,
                "Receive a datagram of up to bufsize (awaitable)."),
    SOCK_METHOD("sock_recvfrom_into", loop_sock_recvfrom_into,
                "Receive a datagram into buf (awaitable)."),
    SOCK_METHOD("sock_sendall", loop_sock_sendall,
                "Send all of data to sock (awaitable)."),
    SOCK_METHOD("sock_sendto", loop_sock_sendto,
                "Send a datagram to address (awaitable)."),
    SOCK_METHOD("sock_accept", loop_sock_accept,
                "Accept a connection: (conn, address) (awaitable)."),
    SOCK_METHOD("_sock_connect", loop_sock_connect_resolved,
                "Connect sock to a resolved address (awaitable)."),
    {NULL, NULL}
};

#undef SOCK_METHOD

/* ------------------------------------------------------------------------
 * SockOp type
 * ------------------------------------------------------------------------ */

static int
op_traverse(SockOpObj *op, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(op));
    Py_VISIT(op->loop);
    Py_VISIT(op->fut);
    Py_VISIT(op->sock);
    Py_VISIT(op->handle);
    Py_VISIT(op->arg);
    if (op->has_buf) {
        Py_VISIT(op->buf.obj);
    }
    return 0;
}

static int
op_clear(SockOpObj *op)
{
    op_release_buffer(op);
    Py_CLEAR(op->handle);
    Py_CLEAR(op->loop);
    Py_CLEAR(op->fut);
    Py_CLEAR(op->sock);
    Py_CLEAR(op->arg);
    return 0;
}

static void
op_dealloc(SockOpObj *op)
{
    PyTypeObject *tp = Py_TYPE(op);
    PyObject_GC_UnTrack(op);
    op_clear(op);
    PyObject_GC_Del(op);
    Py_DECREF(tp);
}

static PyObject *
op_repr(SockOpObj *op)
{
    return PyUnicode_FromFormat("<%s fd=%d>", op_names[op->kind], op->fd);
}

static PyType_Slot op_slots[] = {
    {Py_tp_call, op_call},
    {Py_tp_repr, op_repr},
    {Py_tp_traverse, op_traverse},
    {Py_tp_clear, op_clear},
    {Py_tp_dealloc, op_dealloc},
    {0, NULL},
};

static PyType_Spec op_spec = {
    .name = "aioev._core.SockOp",
    .basicsize = sizeof(SockOpObj),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
        | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = op_slots,
};

int
aioev_sock_init_types(PyObject *mod, aioev_state *st)
{
    st->SockOpType = (PyTypeObject *)PyType_FromModuleAndSpec(mod, &op_spec,
                                                              NULL);
    if (st->SockOpType == NULL) {
        return -1;
    }
    st->SockCoroType = (PyTypeObject *)PyType_FromModuleAndSpec(
        mod, &coro_spec, NULL);
    if (st->SockCoroType == NULL) {
        return -1;
    }
    return PyModule_AddType(mod, st->SockCoroType);
}
