/* The accept loop of plain (non-TLS) stream servers: asyncio's Server
 * object keeps the bookkeeping, this does the per-connection work.
 * asyncio makes a task, a coroutine and a waiter future per accepted
 * connection; here each one is set up at once in the accept callback,
 * in its own copy of the context as it would be in its own task. */
#include "loop.h"

#include <errno.h>
#include <unistd.h>

/* The errors asyncio backs off from: the socket stays readable. */
static int
is_resource_error(PyObject *exc)
{
    PyObject *eno;
    long n;

    if (!PyErr_GivenExceptionMatches(exc, PyExc_OSError)) {
        return 0;
    }
    eno = PyObject_GetAttrString(exc, "errno");
    if (eno == NULL) {
        PyErr_Clear();
        return 0;
    }
    n = PyLong_Check(eno) ? PyLong_AsLong(eno) : -1;
    Py_DECREF(eno);
    PyErr_Clear();
    return n == EMFILE || n == ENFILE || n == ENOBUFS || n == ENOMEM;
}

/* close() the fd an int object holds, keeping any raised exception. */
static void
close_fd(PyObject *fd)
{
    PyObject *exc = PyErr_GetRaisedException();
    int n = PyLong_AsLong(fd);
    if (n >= 0) {
        close(n);
    }
    PyErr_Clear();
    PyErr_SetRaisedException(exc);
}

/* conn.close(), keeping any raised exception. */
static void
close_conn(PyObject *conn)
{
    PyObject *exc = PyErr_GetRaisedException();
    PyObject *r = PyObject_CallMethod(conn, "close", NULL);
    if (r == NULL) {
        PyErr_WriteUnraisable(conn);
    }
    Py_XDECREF(r);
    PyErr_SetRaisedException(exc);
}

/* 1 if type(sock).accept is socket.socket.accept, 0 if overridden. */
static int
is_plain_accept(aioev_state *st, PyObject *sock)
{
    PyObject *mine, *plain;
    int rc;

    mine = PyObject_GetAttr((PyObject *)Py_TYPE(sock), st->str_accept);
    if (mine == NULL) {
        return -1;
    }
    plain = PyObject_GetAttr(st->socket_socket, st->str_accept);
    if (plain == NULL) {
        Py_DECREF(mine);
        return -1;
    }
    rc = mine == plain;
    Py_DECREF(mine);
    Py_DECREF(plain);
    return rc;
}

/* The listening socket's family, type and proto, for its connections. */
static int
get_ftp(PyObject *sock, PyObject *ftp[3])
{
    static const char *const names[3] = {"family", "type", "proto"};
    for (int k = 0; k < 3; k++) {
        ftp[k] = PyObject_GetAttrString(sock, names[k]);
        if (ftp[k] == NULL) {
            return -1;
        }
    }
    return 0;
}

/* Report a failed set-up as asyncio does: in debug mode only (otherwise
 * the connection just goes). 0, or -1 if the handler raised. Takes the
 * raised exception. */
static int
report_setup_error(LoopObj *loop, PyObject *exc, PyObject *protocol)
{
    PyObject *ctx = NULL, *r = NULL;

    if (!aioev_loop_get_debug(loop)) {
        Py_DECREF(exc);
        return 0;
    }
    ctx = Py_BuildValue("{s:s,s:O}", "message",
                        "Error on transport creation for incoming connection",
                        "exception", exc);
    if (ctx == NULL) {
        goto error;
    }
    if (protocol != NULL && protocol != Py_None
        && PyDict_SetItemString(ctx, "protocol", protocol) < 0) {
        goto error;
    }
    r = PyObject_CallMethod((PyObject *)loop, "call_exception_handler", "O",
                            ctx);
error:
    Py_XDECREF(ctx);
    Py_DECREF(exc);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* Make the protocol and the transport of one accepted connection, in a
 * copy of the current context. 0, or -1 to propagate (SystemExit,
 * KeyboardInterrupt, or a failing exception handler). */
static int
setup_connection(LoopObj *loop, PyObject *factory, PyObject *conn,
                 PyObject *addr, PyObject *server)
{
    aioev_state *st = loop->state;
    PyObject *ctx, *protocol = NULL, *extra = NULL, *transport = NULL;
    PyObject *exc;
    int rc = 0;

    ctx = PyContext_CopyCurrent();
    if (ctx == NULL) {
        goto close;
    }
    if (PyContext_Enter(ctx) < 0) {
        Py_DECREF(ctx);
        goto close;
    }
    protocol = PyObject_CallNoArgs(factory);
    if (protocol != NULL) {
        extra = Py_BuildValue("{s:O}", "peername", addr);
    }
    if (extra != NULL) {
        PyObject *targs[] = {(PyObject *)loop, conn, protocol, Py_None,
                             extra, server};
        transport = PyObject_Vectorcall((PyObject *)st->StreamType, targs,
                                        6, NULL);
    }
    if (transport == NULL) {
        close_conn(conn);
        exc = PyErr_GetRaisedException();
        if (PyErr_GivenExceptionMatches(exc, PyExc_SystemExit)
            || PyErr_GivenExceptionMatches(exc, PyExc_KeyboardInterrupt)) {
            PyErr_SetRaisedException(exc);
            rc = -1;
        }
        else {
            rc = report_setup_error(loop, exc, protocol);
        }
    }
    Py_XDECREF(transport);
    Py_XDECREF(extra);
    Py_XDECREF(protocol);
    if (rc < 0) {
        exc = PyErr_GetRaisedException();
        PyContext_Exit(ctx);
        PyErr_SetRaisedException(exc);
    }
    else if (PyContext_Exit(ctx) < 0) {
        rc = -1;
    }
    Py_DECREF(ctx);
    return rc;

close:
    /* No context to run in: give the connection up and propagate. */
    close_conn(conn);
    return -1;
}

/* socket.socket(family, type, proto, fd) in non-blocking mode, as
 * sock.accept() then setblocking(False) would give. Closes fd on error. */
static PyObject *
wrap_accepted(aioev_state *st, PyObject *fam_type_proto[3], PyObject *fd)
{
    PyObject *args[] = {fam_type_proto[0], fam_type_proto[1],
                        fam_type_proto[2], fd};
    PyObject *conn = PyObject_Vectorcall(st->socket_socket, args, 4, NULL);
    PyObject *r;

    if (conn == NULL) {
        close_fd(fd);
        return NULL;
    }
    r = PyObject_CallMethod(conn, "setblocking", "O", Py_False);
    if (r == NULL) {
        close_conn(conn);
        Py_DECREF(conn);
        return NULL;
    }
    Py_DECREF(r);
    return conn;
}

/* loop._accept_connections(protocol_factory, sock, server, backlog):
 * the listening socket's reader callback. Accepts up to backlog
 * connections, each set up at once. */
static PyObject *
loop_accept_connections(LoopObj *self, PyObject *const *args,
                        Py_ssize_t nargs)
{
    aioev_state *st = self->state;
    PyObject *factory, *sock, *server, *res, *conn;
    PyObject *ftp[3] = {NULL, NULL, NULL};
    Py_ssize_t backlog;
    int fast;

    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError,
                        "_accept_connections() takes 4 arguments");
        return NULL;
    }
    factory = args[0];
    sock = args[1];
    server = args[2];
    backlog = PyLong_AsSsize_t(args[3]);
    if (backlog == -1 && PyErr_Occurred()) {
        return NULL;
    }
    /* socket.socket.accept() is Python: when it is not overridden, do its
     * work here from the C _accept(). */
    fast = is_plain_accept(st, sock);
    if (fast < 0) {
        return NULL;
    }
    for (Py_ssize_t i = 0; i < backlog; i++) {
        res = PyObject_CallMethodNoArgs(sock, fast ? st->str__accept
                                                   : st->str_accept);
        if (res == NULL) {
            if (PyErr_ExceptionMatches(PyExc_BlockingIOError)
                || PyErr_ExceptionMatches(PyExc_InterruptedError)
                || PyErr_ExceptionMatches(PyExc_ConnectionAbortedError)) {
                PyErr_Clear();
                break;
            }
            PyObject *exc = PyErr_GetRaisedException();
            if (!is_resource_error(exc)) {
                PyErr_SetRaisedException(exc);  /* the loop reports it */
                goto error;
            }
            /* Out of fds or memory: pause this server for a while. */
            res = PyObject_CallMethod((PyObject *)self, "_accept_backoff",
                                      "OOOOn", exc, factory, sock, server,
                                      backlog);
            Py_DECREF(exc);
            if (res == NULL) {
                goto error;
            }
            Py_DECREF(res);
            break;
        }
        if (!PyTuple_Check(res) || PyTuple_GET_SIZE(res) != 2) {
            Py_DECREF(res);
            PyErr_SetString(PyExc_TypeError,
                            "accept() did not return a pair");
            goto error;
        }
        if (fast) {
            if (ftp[0] == NULL && get_ftp(sock, ftp) < 0) {
                close_fd(PyTuple_GET_ITEM(res, 0));
                Py_DECREF(res);
                goto error;
            }
            conn = wrap_accepted(st, ftp, PyTuple_GET_ITEM(res, 0));
        }
        else {
            conn = Py_NewRef(PyTuple_GET_ITEM(res, 0));
            PyObject *r = PyObject_CallMethod(conn, "setblocking", "O",
                                              Py_False);
            if (r == NULL) {
                close_conn(conn);
                Py_CLEAR(conn);
            }
            Py_XDECREF(r);
        }
        if (conn == NULL) {
            Py_DECREF(res);
            goto error;
        }
        if (self->debug) {
            PyObject *r = PyObject_CallMethod(
                st->logger, "debug", "sOOO",
                "%r got a new connection from %r: %r", server,
                PyTuple_GET_ITEM(res, 1), conn);
            if (r == NULL) {
                close_conn(conn);
                Py_DECREF(conn);
                Py_DECREF(res);
                goto error;
            }
            Py_DECREF(r);
        }
        int rc = setup_connection(self, factory, conn,
                                  PyTuple_GET_ITEM(res, 1), server);
        Py_DECREF(conn);
        Py_DECREF(res);
        if (rc < 0) {
            goto error;
        }
    }
    for (int k = 0; k < 3; k++) {
        Py_XDECREF(ftp[k]);
    }
    Py_RETURN_NONE;

error:
    for (int k = 0; k < 3; k++) {
        Py_XDECREF(ftp[k]);
    }
    return NULL;
}

PyMethodDef aioev_server_methods[] = {
    {"_accept_connections", (PyCFunction)(void (*)(void))loop_accept_connections,
     METH_FASTCALL,
     "_accept_connections(protocol_factory, sock, server, backlog)\n--\n\n"
     "Accept and set up what waits on a listening socket (no TLS)."},
    {NULL, NULL, 0, NULL},
};
