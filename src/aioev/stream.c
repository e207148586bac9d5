/* StreamTransport: the TCP / Unix stream transport, with asyncio's
 * _SelectorSocketTransport semantics (flow control, half-close,
 * BufferedProtocol, errors through the loop's exception handler).
 * Reads go straight from recv() into data_received() or into the
 * protocol's buffer; writes try send() first and buffer only the rest.
 * Its base is asyncio.Transport, whose one slot (_extra) is our first
 * field. */
#include "loop.h"

#include <errno.h>
#include <sys/ioctl.h>
#include <sys/socket.h>

#define MAX_READ (256 * 1024)
/* A read at least this large makes the next one size its bytes from
 * FIONREAD and receive straight into it: one ioctl costs less than
 * copying this much out of the scratch buffer. */
#define BIG_READ (32 * 1024)
#define LOG_THRESHOLD_FOR_CONNLOST_WRITES 5

typedef struct {
    PyObject_HEAD
    PyObject *extra;           /* asyncio.BaseTransport.__slots__[0] */
    LoopObj *loop;
    PyObject *sock;
    PyObject *protocol;
    PyObject *server;
    PyObject *empty_waiter;
    PyObject *read_cb;         /* bound C methods handed to the loop */
    PyObject *write_cb;
    HandleObj *read_handle;    /* made once, re-armed by every watch */
    HandleObj *write_handle;
    PyObject *weakreflist;
    char *wbuf;                /* pending output: wbuf[wstart:wstart+wlen] */
    size_t wstart;
    size_t wlen;
    size_t wcap;
    Py_ssize_t high_water;
    Py_ssize_t low_water;
    int fd;
    int sock_fd;               /* fd, kept after close for the repr */
    int conn_lost;
    int closing;
    int eof;
    int paused;
    int protocol_paused;
    int protocol_connected;
    int buffered;
    int stream_fast;           /* protocol is asyncio's StreamReaderProtocol */
    int big_reads;             /* the last read was >= BIG_READ */
} StreamObj;

/* ------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------ */

static int
loop_call_soon(StreamObj *t, PyObject *cb, PyObject *arg)
{
    PyObject *r = PyObject_CallMethod((PyObject *)t->loop, "call_soon",
                                      arg ? "OO" : "O", cb, arg);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

static int
watch(StreamObj *t, int writer, int on)
{
    if (!on) {
        return aioev_io_remove(t->loop, t->fd, writer) < 0 ? -1 : 0;
    }
    if (t->read_handle == NULL) {
        return 0;  /* connection_lost ran: nothing to watch */
    }
    return aioev_io_add(t->loop, t->fd, writer,
                        writer ? t->write_handle : t->read_handle);
}

/* The two handles the loop runs for us, in a copy of the context the
 * transport was made in (asyncio's reader is added from there too). */
static int
make_handles(StreamObj *t)
{
    aioev_state *st = t->loop->state;
    PyObject *ctx = PyContext_CopyCurrent();
    if (ctx == NULL) {
        return -1;
    }
    t->read_handle = aioev_handle_new(st, st->HandleType, (PyObject *)t->loop,
                                      t->read_cb, st->empty_tuple, ctx);
    t->write_handle = aioev_handle_new(st, st->HandleType,
                                       (PyObject *)t->loop, t->write_cb,
                                       st->empty_tuple, ctx);
    Py_DECREF(ctx);
    if (t->read_handle == NULL || t->write_handle == NULL) {
        return -1;
    }
    PyObject_GC_Track(t->read_handle);
    PyObject_GC_Track(t->write_handle);
    return 0;
}

static void
report(StreamObj *t, const char *message, PyObject *exc)
{
    PyObject *ctx = Py_BuildValue("{sssOsOsO}", "message", message,
                                  "exception", exc, "transport", (PyObject *)t,
                                  "protocol",
                                  t->protocol ? t->protocol : Py_None);
    PyObject *r = ctx ? PyObject_CallMethod((PyObject *)t->loop,
                                            "call_exception_handler", "O",
                                            ctx) : NULL;
    if (r == NULL) {
        PyErr_WriteUnraisable((PyObject *)t);
    }
    Py_XDECREF(r);
    Py_XDECREF(ctx);
}

static PyObject *call_connection_lost_def_obj(StreamObj *t);

/* asyncio's _force_close: drop the buffer, stop reading and writing and
 * schedule connection_lost(exc). */
static int
force_close(StreamObj *t, PyObject *exc)
{
    if (t->conn_lost) {
        return 0;
    }
    if (t->wlen) {
        t->wlen = 0;
        t->wstart = 0;
        if (watch(t, 1, 0) < 0) {
            return -1;
        }
    }
    if (!t->closing) {
        t->closing = 1;
        if (watch(t, 0, 0) < 0) {
            return -1;
        }
    }
    t->conn_lost++;
    PyObject *cb = call_connection_lost_def_obj(t);
    if (cb == NULL) {
        return -1;
    }
    int rc = loop_call_soon(t, cb, exc ? exc : Py_None);
    Py_DECREF(cb);
    return rc;
}

/* logger.debug("%r <what>", t) in debug mode, as asyncio's transports
 * say what they do. -1 with an exception set if logging raised. */
static int
debug_log(StreamObj *t, const char *what)
{
    if (!aioev_loop_get_debug(t->loop)) {
        return 0;
    }
    PyObject *fmt = PyUnicode_FromFormat("%%r %s", what);
    PyObject *r = fmt ? PyObject_CallMethod(t->loop->state->logger, "debug",
                                            "OO", fmt, (PyObject *)t)
                      : NULL;
    Py_XDECREF(fmt);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* Takes the raised exception: reports it (OSErrors only in debug mode, as
 * asyncio) and force-closes with it. -1 with an exception set if the
 * close could not be scheduled (e.g. the loop is closed): asyncio's
 * _fatal_error raises that to its caller. */
static int
fatal_error_raise(StreamObj *t, const char *message)
{
    PyObject *exc = PyErr_GetRaisedException();
    if (PyErr_GivenExceptionMatches(exc, PyExc_OSError)) {
        if (aioev_loop_get_debug(t->loop)) {
            PyObject *r = PyObject_CallMethod(
                t->loop->state->logger, "debug", "sOs", "%r: %s",
                (PyObject *)t, message);
            Py_XDECREF(r);
            PyErr_Clear();
        }
    }
    else {
        report(t, message, exc);
    }
    int rc = force_close(t, exc);
    Py_DECREF(exc);
    return rc;
}

/* The same from a loop callback, where nobody is there to raise to. */
static void
fatal_error(StreamObj *t, const char *message)
{
    if (fatal_error_raise(t, message) < 0) {
        PyErr_WriteUnraisable((PyObject *)t);
    }
}

static int
call_protocol_flow(StreamObj *t, const char *name, const char *message)
{
    PyObject *r = PyObject_CallMethod(t->protocol, name, NULL);
    if (r != NULL) {
        Py_DECREF(r);
        return 0;
    }
    if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)
        || PyErr_ExceptionMatches(PyExc_SystemExit)) {
        return -1;
    }
    PyObject *exc = PyErr_GetRaisedException();
    report(t, message, exc);
    Py_DECREF(exc);
    return 0;
}

static int
maybe_pause_protocol(StreamObj *t)
{
    if ((Py_ssize_t)t->wlen <= t->high_water || t->protocol_paused) {
        return 0;
    }
    t->protocol_paused = 1;
    return call_protocol_flow(t, "pause_writing",
                              "protocol.pause_writing() failed");
}

static int
maybe_resume_protocol(StreamObj *t)
{
    if (!t->protocol_paused || (Py_ssize_t)t->wlen > t->low_water) {
        return 0;
    }
    t->protocol_paused = 0;
    return call_protocol_flow(t, "resume_writing",
                              "protocol.resume_writing() failed");
}

static int
wbuf_append(StreamObj *t, const char *data, size_t n)
{
    if (t->wstart + t->wlen + n > t->wcap) {
        if (t->wstart) {  /* slide down first */
            memmove(t->wbuf, t->wbuf + t->wstart, t->wlen);
            t->wstart = 0;
        }
        if (t->wlen + n > t->wcap) {
            size_t cap = t->wcap ? t->wcap : 16384;
            while (cap < t->wlen + n) {
                cap *= 2;
            }
            char *p = PyMem_Realloc(t->wbuf, cap);
            if (p == NULL) {
                PyErr_NoMemory();
                return -1;
            }
            t->wbuf = p;
            t->wcap = cap;
        }
    }
    memcpy(t->wbuf + t->wstart + t->wlen, data, n);
    t->wlen += n;
    return 0;
}

/* ------------------------------------------------------------------------
 * Reading
 * ------------------------------------------------------------------------ */

static PyObject *
on_eof(StreamObj *t)
{
    if (debug_log(t, "received EOF") < 0) {
        return NULL;
    }
    PyObject *r = PyObject_CallMethod(t->protocol, "eof_received", NULL);
    if (r == NULL) {
        if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)
            || PyErr_ExceptionMatches(PyExc_SystemExit)) {
            return NULL;
        }
        fatal_error(t, "Fatal error: protocol.eof_received() call failed.");
        Py_RETURN_NONE;
    }
    int keep_open = PyObject_IsTrue(r);
    Py_DECREF(r);
    if (keep_open < 0) {
        return NULL;
    }
    if (keep_open) {
        /* Half-open: no more reading, writing goes on. */
        if (watch(t, 0, 0) < 0) {
            return NULL;
        }
    }
    else {
        return PyObject_CallMethod((PyObject *)t, "close", NULL);
    }
    Py_RETURN_NONE;
}

static int
is_fatal(void)
{
    return PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)
        || PyErr_ExceptionMatches(PyExc_SystemExit);
}

static PyObject *
read_buffered(StreamObj *t)
{
    Py_buffer view;
    aioev_state *st = t->loop->state;
    PyObject *size = PyLong_FromLong(-1);
    PyObject *buf = size ? PyObject_CallMethodOneArg(t->protocol,
                                                     st->str_get_buffer,
                                                     size) : NULL;
    Py_XDECREF(size);
    if (buf == NULL) {
        if (is_fatal()) {
            return NULL;
        }
        fatal_error(t, "Fatal error: protocol.get_buffer() call failed.");
        Py_RETURN_NONE;
    }
    /* asyncio: len(buf) first, then sock.recv_into(buf), each failure
     * with its own message */
    Py_ssize_t len = PyObject_Size(buf);
    if (len <= 0) {
        Py_DECREF(buf);
        if (len == 0) {
            PyErr_SetString(PyExc_RuntimeError,
                            "get_buffer() returned an empty buffer");
        }
        else if (is_fatal()) {
            return NULL;
        }
        fatal_error(t, "Fatal error: protocol.get_buffer() call failed.");
        Py_RETURN_NONE;
    }
    if (PyObject_GetBuffer(buf, &view, PyBUF_WRITABLE) < 0) {
        PyErr_Clear();
        PyErr_Format(PyExc_TypeError, "recv_into() argument 1 must be "
                     "read-write bytes-like object, not %.50s",
                     buf == Py_None ? "None" : Py_TYPE(buf)->tp_name);
        Py_DECREF(buf);
        fatal_error(t, "Fatal read error on socket transport");
        Py_RETURN_NONE;
    }
    Py_DECREF(buf);
    ssize_t n;
    do {
        n = recv(t->fd, view.buf, (size_t)view.len, 0);
    } while (n < 0 && errno == EINTR);
    int err = errno;
    PyBuffer_Release(&view);
    if (n < 0) {
        if (err == EAGAIN || err == EWOULDBLOCK) {
            Py_RETURN_NONE;
        }
        errno = err;
        PyErr_SetFromErrno(PyExc_OSError);
        fatal_error(t, "Fatal read error on socket transport");
        Py_RETURN_NONE;
    }
    if (n == 0) {
        return on_eof(t);
    }
    PyObject *nbytes = PyLong_FromSsize_t((Py_ssize_t)n);
    PyObject *r = nbytes ? PyObject_CallMethodOneArg(t->protocol,
                                                     st->str_buffer_updated,
                                                     nbytes) : NULL;
    Py_XDECREF(nbytes);
    if (r == NULL) {
        if (is_fatal()) {
            return NULL;
        }
        fatal_error(t,
                    "Fatal error: protocol.buffer_updated() call failed.");
        Py_RETURN_NONE;
    }
    Py_DECREF(r);
    Py_RETURN_NONE;
}

/* 1 if the protocol is asyncio's StreamReaderProtocol and the methods
 * feed_stream_reader() stands for are asyncio's own (not patched). */
static int
is_plain_stream_protocol(aioev_state *st, PyObject *protocol)
{
    static const struct {
        int reader;
        const char *name;
    } methods[] = {
        {0, "data_received"}, {1, "feed_data"}, {1, "_wakeup_waiter"},
    };

    if (!Py_IS_TYPE(protocol, (PyTypeObject *)st->StreamReaderProtocol)) {
        return 0;
    }
    for (size_t i = 0; i < sizeof(methods) / sizeof(methods[0]); i++) {
        PyObject *cls = methods[i].reader ? st->StreamReader
                                          : st->StreamReaderProtocol;
        PyObject *now = PyObject_GetAttrString(cls, methods[i].name);
        if (now == NULL) {
            PyErr_Clear();
            return 0;
        }
        Py_DECREF(now);  /* the class keeps it */
        if (now != st->stream_methods[i]) {
            return 0;
        }
    }
    return 1;
}

/* The protocol's reader (its _stream_reader_wr weak reference), a new
 * reference; NULL with no exception if there is none or the dict does not
 * look like asyncio's; NULL with an exception on error. */
static PyObject *
protocol_reader(aioev_state *st, PyObject *pdict)
{
    PyObject *reader;
    PyObject *wr = PyDict_GetItemWithError(pdict, st->str_stream_reader_wr);
    if (wr == NULL || !PyWeakref_CheckRef(wr)) {
        return NULL;
    }
#if PY_VERSION_HEX >= 0x030D0000
    if (PyWeakref_GetRef(wr, &reader) < 0) {
        return NULL;
    }
#else
    reader = Py_XNewRef(PyWeakref_GetObject(wr));
    if (reader == Py_None) {
        Py_CLEAR(reader);
    }
#endif
    return reader;
}

/* Hand the protocol's StreamReader, and its server callback (which gets
 * the StreamWriter), to streamrw.c: C read() / write() and drain(). */
static void
adopt_streams(StreamObj *t)
{
    aioev_state *st = t->loop->state;
    PyObject *reader = NULL;
    PyObject *pdict = PyObject_GenericGetDict(t->protocol, NULL);
    if (pdict == NULL) {
        PyErr_Clear();
        return;
    }
    reader = protocol_reader(st, pdict);
    if (reader != NULL) {
        aioev_streamrw_adopt_reader(st, reader);
    }
    PyErr_Clear();
    Py_XDECREF(reader);
    Py_DECREF(pdict);
    aioev_streamrw_wrap_connected_cb(st, t->protocol);
}

/* asyncio's StreamReaderProtocol.data_received(data) -- that is
 * reader.feed_data(data) -- done here for the exact asyncio classes (with
 * their own methods), the data copied once from our read buffer into the
 * reader's: the same steps (extend the buffer, wake the waiter, pause
 * reading past twice the limit) without four Python frames and a bytes
 * object per read. 1 done, 0 not applicable (call data_received), -1
 * error. */
static int
feed_stream_reader(StreamObj *t, const char *data, Py_ssize_t n)
{
    aioev_state *st = t->loop->state;
    PyObject *pdict = NULL, *rdict = NULL, *reader = NULL, *wr, *buf;
    PyObject *waiter, *transport, *paused, *limit, *r;
    int rc = 0;

    pdict = PyObject_GenericGetDict(t->protocol, NULL);
    if (pdict == NULL) {
        PyErr_Clear();
        return 0;
    }
    wr = PyDict_GetItemWithError(pdict, st->str_stream_reader_wr);
    if (wr == NULL || (wr != Py_None && !PyWeakref_CheckRef(wr))) {
        goto done;  /* rc 0, or -1 below if an error was raised */
    }
    reader = wr == Py_None ? NULL : protocol_reader(st, pdict);
    if (reader == NULL) {
        /* no reader (any more): data_received drops the data */
        rc = PyErr_Occurred() ? -1 : 1;
        goto done;
    }
    if (!Py_IS_TYPE(reader, (PyTypeObject *)st->StreamReader)
        && !Py_IS_TYPE(reader, (PyTypeObject *)st->FastStreamReader)) {
        goto done;
    }
    rdict = PyObject_GenericGetDict(reader, NULL);
    if (rdict == NULL) {
        PyErr_Clear();
        goto done;
    }
    /* After feed_eof, feed_data's assert is asyncio's to raise. */
    if (PyDict_GetItemWithError(rdict, st->str__eof) != Py_False) {
        goto done;
    }
    buf = PyDict_GetItemWithError(rdict, st->str__buffer);
    if (buf == NULL || !PyByteArray_CheckExact(buf)) {
        goto done;
    }
    if (aioev_buffer_extend(st, buf, data, n) < 0) {
        rc = -1;  /* e.g. BufferError, as extend() would raise */
        goto done;
    }
    rc = 1;

    /* _wakeup_waiter() */
    waiter = PyDict_GetItemWithError(rdict, st->str__waiter);
    if (waiter != NULL && waiter != Py_None) {
        Py_INCREF(waiter);
        if (PyDict_SetItem(rdict, st->str__waiter, Py_None) < 0) {
            Py_DECREF(waiter);
            rc = -1;
            goto done;
        }
        if (Py_IS_TYPE(waiter, st->FutureType)) {
            FutureObj *fut = (FutureObj *)waiter;
            r = fut->fut_state == STATE_CANCELLED
                ? Py_NewRef(Py_None)
                : aioev_future_set_result(st, fut, Py_None);
        }
        else {
            r = PyObject_CallMethod(waiter, "cancelled", NULL);
            int c = r ? PyObject_IsTrue(r) : -1;
            Py_XDECREF(r);
            r = c < 0 ? NULL
                : c ? Py_NewRef(Py_None)
                    : PyObject_CallMethod(waiter, "set_result", "O",
                                          Py_None);
        }
        Py_DECREF(waiter);
        if (r == NULL) {
            rc = -1;
            goto done;
        }
        Py_DECREF(r);
    }
    if (PyErr_Occurred()) {
        rc = -1;
        goto done;
    }

    /* Pause reading once the reader holds more than twice its limit
     * (the limit first: most reads stay under it). */
    limit = PyDict_GetItemWithError(rdict, st->str__limit);
    if (limit == NULL) {
        rc = PyErr_Occurred() ? -1 : 1;
        goto done;
    }
    Py_ssize_t lim = PyLong_AsSsize_t(limit);
    if (lim == -1 && PyErr_Occurred()) {
        rc = -1;
        goto done;
    }
    if (PyByteArray_GET_SIZE(buf) <= 2 * lim) {
        goto done;
    }
    transport = PyDict_GetItemWithError(rdict, st->str__transport);
    paused = PyDict_GetItemWithError(rdict, st->str__paused);
    if (transport == NULL || paused == NULL || transport == Py_None
        || PyObject_IsTrue(paused) != 0) {
        rc = PyErr_Occurred() ? -1 : 1;
        goto done;
    }
    Py_INCREF(transport);
    r = PyObject_CallMethod(transport, "pause_reading", NULL);
    Py_DECREF(transport);
    if (r == NULL) {
        if (!PyErr_ExceptionMatches(PyExc_NotImplementedError)) {
            rc = -1;
            goto done;
        }
        PyErr_Clear();
        if (PyDict_SetItem(rdict, st->str__transport, Py_None) < 0) {
            rc = -1;
        }
        goto done;
    }
    Py_DECREF(r);
    if (PyDict_SetItem(rdict, st->str__paused, Py_True) < 0) {
        rc = -1;
    }

done:
    if (rc == 0 && PyErr_Occurred()) {
        rc = -1;
    }
    Py_XDECREF(reader);
    Py_XDECREF(rdict);
    Py_XDECREF(pdict);
    return rc;
}

static PyObject *
read_ready(StreamObj *t, PyObject *Py_UNUSED(ignored))
{
    if (t->conn_lost || t->protocol == NULL || t->fd < 0) {
        Py_RETURN_NONE;
    }
    if (t->buffered) {
        return read_buffered(t);
    }
    /* Into the loop's scratch buffer, then a bytes of the exact size: a
     * 256 KiB bytes per read would be allocated and shrunk every time.
     * After a big read, into a bytes sized by FIONREAD instead. */
    PyObject *data = NULL;
    int avail = 0;
    if (t->big_reads && !t->stream_fast
        && ioctl(t->fd, FIONREAD, &avail) == 0 && avail > 0) {
        data = PyBytes_FromStringAndSize(
            NULL, avail < MAX_READ ? avail : MAX_READ);
        if (data == NULL) {
            return NULL;
        }
    }
    else if (t->loop->read_buf == NULL) {
        t->loop->read_buf = PyMem_Malloc(MAX_READ);
        if (t->loop->read_buf == NULL) {
            return PyErr_NoMemory();
        }
    }
    char *into = data ? PyBytes_AS_STRING(data) : t->loop->read_buf;
    size_t want = data ? (size_t)PyBytes_GET_SIZE(data) : MAX_READ;
    ssize_t n;
    do {
        n = recv(t->fd, into, want, 0);
    } while (n < 0 && errno == EINTR);
    t->big_reads = n >= BIG_READ;
    if (n <= 0 && data != NULL) {
        int err = errno;
        Py_CLEAR(data);
        errno = err;
    }
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            Py_RETURN_NONE;
        }
        PyErr_SetFromErrno(PyExc_OSError);
        fatal_error(t, "Fatal read error on socket transport");
        Py_RETURN_NONE;
    }
    if (n == 0) {
        return on_eof(t);
    }
    PyObject *r = NULL;
    int fed = t->stream_fast ? feed_stream_reader(t, t->loop->read_buf, n)
                             : 0;
    if (fed > 0) {
        r = Py_NewRef(Py_None);
    }
    else if (fed == 0) {
        if (data == NULL) {
            data = PyBytes_FromStringAndSize(t->loop->read_buf, n);
        }
        else if (n < PyBytes_GET_SIZE(data)) {
            _PyBytes_Resize(&data, n);  /* FIONREAD raced: rare */
        }
        if (data == NULL) {
            return NULL;
        }
        r = PyObject_CallMethodOneArg(
            t->protocol, t->loop->state->str_data_received, data);
        Py_DECREF(data);
    }
    if (r == NULL) {
        if (is_fatal()) {
            return NULL;
        }
        fatal_error(t, "Fatal error: protocol.data_received() call failed.");
        Py_RETURN_NONE;
    }
    Py_DECREF(r);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------
 * Writing
 * ------------------------------------------------------------------------ */

static PyObject *
write_ready(StreamObj *t, PyObject *Py_UNUSED(ignored))
{
    if (t->conn_lost || t->wlen == 0 || t->fd < 0) {
        Py_RETURN_NONE;
    }
    ssize_t n;
    do {
        n = send(t->fd, t->wbuf + t->wstart, t->wlen, 0);
    } while (n < 0 && errno == EINTR);
    if (n < 0) {
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            Py_RETURN_NONE;
        }
        PyErr_SetFromErrno(PyExc_OSError);
        PyObject *exc = PyErr_GetRaisedException();
        if (watch(t, 1, 0) < 0) {
            Py_DECREF(exc);
            return NULL;
        }
        t->wlen = 0;
        t->wstart = 0;
        PyErr_SetRaisedException(Py_NewRef(exc));
        fatal_error(t, "Fatal write error on socket transport");
        if (t->empty_waiter != NULL) {
            PyObject *r = aioev_call_method_1(t->empty_waiter,
                                              "set_exception", exc);
            Py_XDECREF(r);
            PyErr_Clear();
        }
        Py_DECREF(exc);
        Py_RETURN_NONE;
    }
    t->wstart += (size_t)n;
    t->wlen -= (size_t)n;
    if (t->wlen == 0) {
        t->wstart = 0;
    }
    if (maybe_resume_protocol(t) < 0) {
        return NULL;
    }
    if (t->wlen == 0) {
        if (watch(t, 1, 0) < 0) {
            return NULL;
        }
        if (t->empty_waiter != NULL) {
            PyObject *r = PyObject_CallMethod(t->empty_waiter, "set_result",
                                              "O", Py_None);
            if (r == NULL) {
                return NULL;
            }
            Py_DECREF(r);
        }
        if (t->closing) {
            PyObject *cb = call_connection_lost_def_obj(t);
            if (cb == NULL) {
                return NULL;
            }
            PyObject *r = PyObject_CallOneArg(cb, Py_None);
            Py_DECREF(cb);
            return r;
        }
        if (t->eof && t->sock != NULL) {
            return PyObject_CallMethod(t->sock, "shutdown", "i", SHUT_WR);
        }
    }
    Py_RETURN_NONE;
}

/* Neither after write_eof() nor during sendfile (what: "write" ...). */
static int
check_can_write(StreamObj *t, const char *what)
{
    if (t->eof) {
        PyErr_Format(PyExc_RuntimeError,
                     "Cannot call %s() after write_eof()", what);
        return -1;
    }
    if (t->empty_waiter != NULL) {
        PyErr_Format(PyExc_RuntimeError,
                     "unable to %s; sendfile is in progress", what);
        return -1;
    }
    return 0;
}

/* write() after the connection was lost: asyncio counts, and warns past
 * a threshold. */
static void
lost_write(StreamObj *t)
{
    if (t->conn_lost >= LOG_THRESHOLD_FOR_CONNLOST_WRITES) {
        PyObject *r = PyObject_CallMethod(t->loop->state->logger, "warning",
                                          "s", "socket.send() raised "
                                          "exception.");
        Py_XDECREF(r);
        PyErr_Clear();
    }
    t->conn_lost++;
}

/* write() of data without a simple buffer (a memoryview that is not
 * C-contiguous; its BufferError is set): asyncio's steps end in
 * socket.send() refusing it (a fatal write error) or, with data already
 * buffered, in bytearray.extend() raising it. */
static PyObject *
write_noncontiguous(StreamObj *t, PyObject *data)
{
    PyObject *exc = PyErr_GetRaisedException();
    Py_ssize_t len = PyObject_Size(data);
    if (len <= 0 || t->conn_lost) {
        Py_DECREF(exc);
        if (len < 0) {
            return NULL;
        }
        if (len > 0) {
            lost_write(t);
        }
        Py_RETURN_NONE;
    }
    PyErr_SetRaisedException(exc);
    if (t->wlen != 0
        || fatal_error_raise(t, "Fatal write error on socket transport")
           < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_write(StreamObj *t, PyObject *data)
{
    Py_buffer view;
    if (!PyBytes_Check(data) && !PyByteArray_Check(data)
        && !PyMemoryView_Check(data)) {
        /* type(data).__name__, as asyncio says it */
        PyObject *name = PyType_GetName(Py_TYPE(data));
        if (name != NULL) {
#if PY_VERSION_HEX >= 0x030E0000
            PyErr_Format(PyExc_TypeError, "data argument must be a bytes, "
                         "bytearray, or memoryview object, not '%U'", name);
#else
            PyErr_Format(PyExc_TypeError, "data argument must be a "
                         "bytes-like object, not '%U'", name);
#endif
            Py_DECREF(name);
        }
        return NULL;
    }
    if (check_can_write(t, "write") < 0) {
        return NULL;
    }
    if (PyObject_GetBuffer(data, &view, PyBUF_SIMPLE) < 0) {
        return PyErr_ExceptionMatches(PyExc_BufferError)
            ? write_noncontiguous(t, data) : NULL;
    }
    if (view.len == 0) {
        PyBuffer_Release(&view);
        Py_RETURN_NONE;
    }
    if (t->conn_lost) {
        PyBuffer_Release(&view);
        lost_write(t);
        Py_RETURN_NONE;
    }
    size_t off = 0;
    if (t->wlen == 0) {
        ssize_t n;
        do {
            n = send(t->fd, view.buf, (size_t)view.len, 0);
        } while (n < 0 && errno == EINTR);
        if (n < 0) {
            if (errno != EAGAIN && errno != EWOULDBLOCK) {
                PyBuffer_Release(&view);
                PyErr_SetFromErrno(PyExc_OSError);
                if (fatal_error_raise(
                        t, "Fatal write error on socket transport") < 0) {
                    return NULL;
                }
                Py_RETURN_NONE;
            }
            n = 0;
        }
        off = (size_t)n;
        if (off == (size_t)view.len) {
            PyBuffer_Release(&view);
            Py_RETURN_NONE;
        }
        /* send() just used the fd: no need to check it */
        if (aioev_io_add_socket(t->loop, t->fd, 1, t->write_handle) < 0) {
            PyBuffer_Release(&view);
            return NULL;
        }
    }
    int rc = wbuf_append(t, (char *)view.buf + off, (size_t)view.len - off);
    PyBuffer_Release(&view);
    if (rc < 0 || maybe_pause_protocol(t) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------
 * Closing
 * ------------------------------------------------------------------------ */

static PyObject *
call_connection_lost(StreamObj *t, PyObject *exc)
{
    PyObject *r = NULL, *err = NULL;
    if (t->protocol_connected && t->protocol != NULL) {
        r = aioev_call_method_1(t->protocol, "connection_lost", exc);
        if (r == NULL) {
            err = PyErr_GetRaisedException();
        }
        Py_XDECREF(r);
    }
    if (t->sock != NULL) {
        r = PyObject_CallMethod(t->sock, "close", NULL);
        if (r == NULL && err == NULL) {
            err = PyErr_GetRaisedException();
        }
        PyErr_Clear();
        Py_XDECREF(r);
        Py_CLEAR(t->sock);
    }
    /* The fd number may now belong to another file: no syscall may use
     * it again (write() after a graceful close lands here). */
    t->fd = -1;
    if (!t->conn_lost) {
        t->conn_lost = 1;
    }
    Py_CLEAR(t->protocol);
    /* The handles and bound methods point back at us: dropping them now
     * lets reference counting free the transport, as asyncio's is. The
     * loop holds its own reference to a handle it is about to run. */
    Py_CLEAR(t->read_handle);
    Py_CLEAR(t->write_handle);
    Py_CLEAR(t->read_cb);
    Py_CLEAR(t->write_cb);
    PyObject *server = t->server;
    t->server = NULL;
    if (server != NULL) {
#if PY_VERSION_HEX >= 0x030D0000
        r = aioev_call_method_1(server, "_detach", (PyObject *)t);
#else
        r = PyObject_CallMethod(server, "_detach", NULL);
#endif
        if (r == NULL && err == NULL) {
            err = PyErr_GetRaisedException();
        }
        PyErr_Clear();
        Py_XDECREF(r);
        Py_DECREF(server);
    }
    if (err != NULL) {
        PyErr_SetRaisedException(err);
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyMethodDef call_connection_lost_def = {
    "_call_connection_lost", (PyCFunction)call_connection_lost, METH_O, NULL};

static PyObject *
call_connection_lost_def_obj(StreamObj *t)
{
    return PyCFunction_New(&call_connection_lost_def, (PyObject *)t);
}

static PyObject *
stream_close(StreamObj *t, PyObject *Py_UNUSED(ignored))
{
    if (t->closing) {
        Py_RETURN_NONE;
    }
    t->closing = 1;
    if (watch(t, 0, 0) < 0) {
        return NULL;
    }
    if (t->wlen == 0) {
        t->conn_lost++;
        if (watch(t, 1, 0) < 0) {
            return NULL;
        }
        PyObject *cb = call_connection_lost_def_obj(t);
        if (cb == NULL || loop_call_soon(t, cb, Py_None) < 0) {
            Py_XDECREF(cb);
            return NULL;
        }
        Py_DECREF(cb);
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_abort(StreamObj *t, PyObject *Py_UNUSED(ignored))
{
    if (force_close(t, NULL) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_force_close(StreamObj *t, PyObject *exc)
{
    if (force_close(t, exc == Py_None ? NULL : exc) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_fatal_error(StreamObj *t, PyObject *const *args, Py_ssize_t nargs)
{
    const char *msg = "Fatal error on transport";
    if (nargs < 1 || nargs > 2 || !PyExceptionInstance_Check(args[0])) {
        PyErr_SetString(PyExc_TypeError, "_fatal_error(exc, message=...)");
        return NULL;
    }
    if (nargs == 2 && (msg = PyUnicode_AsUTF8(args[1])) == NULL) {
        return NULL;
    }
    PyErr_SetObject((PyObject *)Py_TYPE(args[0]), args[0]);
    if (fatal_error_raise(t, msg) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_write_eof(StreamObj *t, PyObject *Py_UNUSED(ignored))
{
    if (t->closing || t->eof) {
        Py_RETURN_NONE;
    }
    t->eof = 1;
    if (t->wlen == 0 && t->sock != NULL) {
        return PyObject_CallMethod(t->sock, "shutdown", "i", SHUT_WR);
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_can_write_eof(StreamObj *t, PyObject *Py_UNUSED(ignored))
{
    Py_RETURN_TRUE;
}

static PyObject *
stream_is_closing(StreamObj *t, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(t->closing);
}

int
aioev_stream_is_closing(PyObject *transport)
{
    return ((StreamObj *)transport)->closing;
}

/* WriteTransport.writelines (join, then write), with 3.12's own checks
 * and wording where asyncio's transport has its own writelines. */
static PyObject *
stream_writelines(StreamObj *t, PyObject *list_of_data)
{
#if PY_VERSION_HEX >= 0x030C0000
    if (check_can_write(t, "writelines") < 0) {
        return NULL;
    }
#endif
    PyObject *empty = PyBytes_FromStringAndSize(NULL, 0);
    PyObject *data = empty ? aioev_call_method_1(empty, "join",
                                                 list_of_data)
                           : NULL;
    Py_XDECREF(empty);
    if (data == NULL) {
        return NULL;
    }
    PyObject *r = stream_write(t, data);
    Py_DECREF(data);
    return r;
}

PyObject *
aioev_stream_write(PyObject *transport, PyObject *data)
{
    return stream_write((StreamObj *)transport, data);
}

/* ------------------------------------------------------------------------
 * Reading control, flow control, protocol
 * ------------------------------------------------------------------------ */

static PyObject *
stream_is_reading(StreamObj *t, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(!t->paused && !t->closing);
}

static PyObject *
stream_pause_reading(StreamObj *t, PyObject *Py_UNUSED(ignored))
{
    if (t->closing || t->paused) {
        Py_RETURN_NONE;
    }
    t->paused = 1;
    if (watch(t, 0, 0) < 0 || debug_log(t, "pauses reading") < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_resume_reading(StreamObj *t, PyObject *Py_UNUSED(ignored))
{
    if (t->closing || !t->paused) {
        Py_RETURN_NONE;
    }
    t->paused = 0;
    if (watch(t, 0, 1) < 0 || debug_log(t, "resumes reading") < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_start_reading(StreamObj *t, PyObject *Py_UNUSED(ignored))
{
    /* Scheduled by __init__ after connection_made, like asyncio's. */
    if (t->closing || t->paused || t->sock == NULL) {
        Py_RETURN_NONE;
    }
    if (watch(t, 0, 1) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static int
set_limits(StreamObj *t, PyObject *high_o, PyObject *low_o)
{
    Py_ssize_t high, low;
    if (high_o == Py_None) {
        if (low_o == Py_None) {
            high = 64 * 1024;
        }
        else {
            low = PyNumber_AsSsize_t(low_o, PyExc_OverflowError);
            if (low == -1 && PyErr_Occurred()) {
                return -1;
            }
            high = 4 * low;
        }
    }
    else {
        high = PyNumber_AsSsize_t(high_o, PyExc_OverflowError);
        if (high == -1 && PyErr_Occurred()) {
            return -1;
        }
    }
    if (low_o == Py_None) {
        low = high >= 0 ? high / 4 : (high - 3) / 4;  /* high // 4 */
    }
    else {
        low = PyNumber_AsSsize_t(low_o, PyExc_OverflowError);
        if (low == -1 && PyErr_Occurred()) {
            return -1;
        }
    }
    if (!(high >= low && low >= 0)) {
        PyErr_Format(PyExc_ValueError,
                     "high (%zd) must be >= low (%zd) must be >= 0", high,
                     low);
        return -1;
    }
    t->high_water = high;
    t->low_water = low;
    return maybe_pause_protocol(t);
}

static PyObject *
stream_set_write_buffer_limits(StreamObj *t, PyObject *args, PyObject *kw)
{
    static char *kwlist[] = {"high", "low", NULL};
    PyObject *high = Py_None, *low = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kw, "|OO", kwlist, &high, &low)) {
        return NULL;
    }
    if (set_limits(t, high, low) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
stream_get_write_buffer_limits(StreamObj *t, PyObject *Py_UNUSED(ignored))
{
    return Py_BuildValue("(nn)", t->low_water, t->high_water);
}

static PyObject *
stream_get_write_buffer_size(StreamObj *t, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromSize_t(t->wlen);
}

static PyObject *
stream_set_protocol(StreamObj *t, PyObject *protocol)
{
    int b = PyObject_IsInstance(protocol, t->loop->state->BufferedProtocol);
    if (b < 0) {
        return NULL;
    }
    t->buffered = b;
    t->stream_fast = is_plain_stream_protocol(t->loop->state, protocol);
    Py_XSETREF(t->protocol, Py_NewRef(protocol));
    if (t->stream_fast) {
        adopt_streams(t);
    }
    t->protocol_connected = 1;
    Py_RETURN_NONE;
}

static PyObject *
stream_get_protocol(StreamObj *t, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(t->protocol ? t->protocol : Py_None);
}

static PyObject *
stream_make_empty_waiter(StreamObj *t, PyObject *Py_UNUSED(ignored))
{
    if (t->empty_waiter != NULL) {
        PyErr_SetString(PyExc_RuntimeError, "Empty waiter is already set");
        return NULL;
    }
    t->empty_waiter = aioev_loop_new_future(t->loop);
    if (t->empty_waiter == NULL) {
        return NULL;
    }
    if (t->wlen == 0) {
        PyObject *r = PyObject_CallMethod(t->empty_waiter, "set_result", "O",
                                          Py_None);
        if (r == NULL) {
            return NULL;
        }
        Py_DECREF(r);
    }
    return Py_NewRef(t->empty_waiter);
}

static PyObject *
stream_reset_empty_waiter(StreamObj *t, PyObject *Py_UNUSED(ignored))
{
    Py_CLEAR(t->empty_waiter);
    Py_RETURN_NONE;
}

/* ------------------------------------------------------------------------
 * Construction, repr, finalization
 * ------------------------------------------------------------------------ */

static int stream_init_rest(StreamObj *t, PyObject *loop, PyObject *sock,
                            PyObject *protocol, PyObject *waiter,
                            PyObject *extra, PyObject *server, PyObject *cm);

static int
stream_init(StreamObj *t, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"loop", "sock", "protocol", "waiter", "extra",
                             "server", NULL};
    PyObject *loop, *sock, *protocol, *waiter = Py_None, *extra = Py_None;
    PyObject *server = Py_None;
    aioev_state *st;

    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OOO|OOO:StreamTransport",
                                     kwlist, &loop, &sock, &protocol,
                                     &waiter, &extra, &server)) {
        return -1;
    }
    st = AIOEV_STATE(t);
    if (!aioev_is_loop(st, loop) || t->loop != NULL) {
        PyErr_SetString(PyExc_TypeError, "an aioev loop is required");
        return -1;
    }
    /* Looked up first: a protocol without one (a factory that returned
     * None) fails before the transport is attached to its server and
     * registered with the loop. */
    PyObject *cm = PyObject_GetAttrString(protocol, "connection_made");
    if (cm == NULL) {
        return -1;
    }
    int rc = stream_init_rest(t, loop, sock, protocol, waiter, extra, server,
                              cm);
    Py_DECREF(cm);
    return rc;
}

static int
stream_init_rest(StreamObj *t, PyObject *loop, PyObject *sock,
                 PyObject *protocol, PyObject *waiter, PyObject *extra,
                 PyObject *server, PyObject *cm)
{
    aioev_state *st = AIOEV_STATE(t);
    PyObject *r;
    t->loop = (LoopObj *)Py_NewRef(loop);
    if (make_handles(t) < 0) {
        return -1;
    }
    t->extra = extra == Py_None ? PyDict_New() : PyDict_Copy(extra);
    if (t->extra == NULL) {
        return -1;
    }
    r = PyObject_CallOneArg(st->TransportSocket, sock);
    if (r == NULL || PyDict_SetItemString(t->extra, "socket", r) < 0) {
        Py_XDECREF(r);
        return -1;
    }
    Py_DECREF(r);
    r = PyObject_CallMethod(sock, "getsockname", NULL);
    if (r == NULL) {
        PyErr_Clear();
        r = Py_NewRef(Py_None);
    }
    if (PyDict_SetItemString(t->extra, "sockname", r) < 0) {
        Py_DECREF(r);
        return -1;
    }
    Py_DECREF(r);
    if (PyDict_GetItemString(t->extra, "peername") == NULL) {
        r = PyObject_CallMethod(sock, "getpeername", NULL);
        if (r == NULL) {
            PyErr_Clear();
            r = Py_NewRef(Py_None);
        }
        if (PyDict_SetItemString(t->extra, "peername", r) < 0) {
            Py_DECREF(r);
            return -1;
        }
        Py_DECREF(r);
    }
    t->sock = Py_NewRef(sock);
    r = PyObject_CallMethod(sock, "fileno", NULL);
    if (r == NULL) {
        return -1;
    }
    t->fd = t->sock_fd = (int)PyLong_AsLong(r);
    Py_DECREF(r);
    if (t->fd == -1 && PyErr_Occurred()) {
        return -1;
    }
    t->high_water = 64 * 1024;
    t->low_water = 16 * 1024;
    r = stream_set_protocol(t, protocol);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    if (server != Py_None) {
        t->server = Py_NewRef(server);
#if PY_VERSION_HEX >= 0x030D0000
        r = aioev_call_method_1(server, "_attach", (PyObject *)t);
#else
        r = PyObject_CallMethod(server, "_attach", NULL);
#endif
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
    }
    PyObject *transports = PyObject_GetAttrString(loop, "_transports");
    if (transports == NULL) {
        return -1;
    }
    PyObject *key = PyLong_FromLong(t->fd);
    int rc = key ? PyObject_SetItem(transports, key, (PyObject *)t) : -1;
    Py_XDECREF(key);
    Py_DECREF(transports);
    if (rc < 0) {
        return -1;
    }
    r = PyObject_CallOneArg(st->set_nodelay, sock);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);

    /* connection_made, then reading, then the waiter: asyncio's order. */
    if (loop_call_soon(t, cm, (PyObject *)t) < 0) {
        return -1;
    }
    PyObject *start = PyObject_GetAttrString((PyObject *)t, "_start_reading");
    if (start == NULL || loop_call_soon(t, start, NULL) < 0) {
        Py_XDECREF(start);
        return -1;
    }
    Py_DECREF(start);
    if (waiter != Py_None) {
        r = PyObject_CallMethod(loop, "call_soon", "OOO",
                                st->set_result_unless_cancelled, waiter,
                                Py_None);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
    }
    return 0;
}

static PyObject *
stream_new(PyTypeObject *tp, PyObject *args, PyObject *kwds)
{
    StreamObj *t = (StreamObj *)tp->tp_alloc(tp, 0);
    if (t == NULL) {
        return NULL;
    }
    t->fd = t->sock_fd = -1;
    t->read_cb = PyObject_GetAttrString((PyObject *)t, "_read_ready");
    t->write_cb = PyObject_GetAttrString((PyObject *)t, "_write_ready");
    if (t->read_cb == NULL || t->write_cb == NULL) {
        Py_DECREF(t);
        return NULL;
    }
    return (PyObject *)t;
}

static PyObject *
stream_repr(StreamObj *t)
{
    /* asyncio's: what the loop watches the fd for, until it is closed */
    const char *state = t->sock == NULL ? " closed"
                        : t->closing ? " closing" : "";
    if (t->sock == NULL || t->loop == NULL || t->loop->closed) {
        return PyUnicode_FromFormat("<StreamTransport%s fd=%d>", state,
                                    t->sock_fd);
    }
    int events = aioev_io_events(t->loop, t->sock_fd);
    return PyUnicode_FromFormat("<StreamTransport%s fd=%d read=%s "
                                "write=<%s, bufsize=%zu>>", state,
                                t->sock_fd, events & 1 ? "polling" : "idle",
                                events & 2 ? "polling" : "idle", t->wlen);
}

/* Unclosed at exit: ResourceWarning and close the socket, as asyncio. */
static void
stream_finalize(PyObject *self)
{
    StreamObj *t = (StreamObj *)self;
    if (t->sock == NULL) {
        return;
    }
    PyObject *exc = PyErr_GetRaisedException();
    if (PyErr_ResourceWarning(self, 1, "unclosed transport %R", self) < 0) {
        PyErr_WriteUnraisable(self);
    }
    PyObject *r = PyObject_CallMethod(t->sock, "close", NULL);
    if (r == NULL) {
        PyErr_WriteUnraisable(self);
    }
    Py_XDECREF(r);
    Py_CLEAR(t->sock);
    PyErr_SetRaisedException(exc);
}

static int
stream_traverse(StreamObj *t, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(t));
    Py_VISIT(t->extra);
    Py_VISIT(t->loop);
    Py_VISIT(t->sock);
    Py_VISIT(t->protocol);
    Py_VISIT(t->server);
    Py_VISIT(t->empty_waiter);
    Py_VISIT(t->read_cb);
    Py_VISIT(t->write_cb);
    Py_VISIT(t->read_handle);
    Py_VISIT(t->write_handle);
    return 0;
}

static int
stream_clear(StreamObj *t)
{
    Py_CLEAR(t->extra);
    Py_CLEAR(t->loop);
    Py_CLEAR(t->sock);
    Py_CLEAR(t->protocol);
    Py_CLEAR(t->server);
    Py_CLEAR(t->empty_waiter);
    Py_CLEAR(t->read_cb);
    Py_CLEAR(t->write_cb);
    Py_CLEAR(t->read_handle);
    Py_CLEAR(t->write_handle);
    return 0;
}

static void
stream_dealloc(StreamObj *t)
{
    PyTypeObject *tp = Py_TYPE(t);
    if (PyObject_CallFinalizerFromDealloc((PyObject *)t) < 0) {
        return;
    }
    PyObject_GC_UnTrack(t);
    if (t->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)t);
    }
    stream_clear(t);
    PyMem_Free(t->wbuf);
    tp->tp_free(t);
    Py_DECREF(tp);
}

static PyObject *
get_sock(StreamObj *t, void *c)
{
    return Py_NewRef(t->sock ? t->sock : Py_None);
}

static PyObject *
get_loop(StreamObj *t, void *c)
{
    return Py_NewRef(t->loop ? (PyObject *)t->loop : Py_None);
}

static PyObject *
get_protocol_attr(StreamObj *t, void *c)
{
    return stream_get_protocol(t, NULL);
}

static PyObject *
get_server(StreamObj *t, void *c)
{
    return Py_NewRef(t->server ? t->server : Py_None);
}

static PyObject *
get_closing(StreamObj *t, void *c)
{
    return PyBool_FromLong(t->closing);
}

static PyObject *
get_paused(StreamObj *t, void *c)
{
    return PyBool_FromLong(t->paused);
}

static PyObject *
get_protocol_paused(StreamObj *t, void *c)
{
    return PyBool_FromLong(t->protocol_paused);
}

static PyObject *
get_empty_waiter(StreamObj *t, void *c)
{
    return Py_NewRef(t->empty_waiter ? t->empty_waiter : Py_None);
}

static PyGetSetDef stream_getset[] = {
    {"_sock", (getter)get_sock, NULL, NULL, NULL},
    {"_loop", (getter)get_loop, NULL, NULL, NULL},
    {"_protocol", (getter)get_protocol_attr, NULL, NULL, NULL},
    {"_server", (getter)get_server, NULL, NULL, NULL},
    {"_closing", (getter)get_closing, NULL, NULL, NULL},
    {"_paused", (getter)get_paused, NULL, NULL, NULL},
    {"_protocol_paused", (getter)get_protocol_paused, NULL, NULL, NULL},
    {"_empty_waiter", (getter)get_empty_waiter, NULL, NULL, NULL},
    {NULL}
};

static PyMemberDef stream_members[] = {
    {"_sock_fd", T_INT, offsetof(StreamObj, fd), READONLY, NULL},
    {"_conn_lost", T_INT, offsetof(StreamObj, conn_lost), READONLY, NULL},
    {"_high_water", T_PYSSIZET, offsetof(StreamObj, high_water), READONLY,
     NULL},
    {"_low_water", T_PYSSIZET, offsetof(StreamObj, low_water), READONLY,
     NULL},
    {"__weaklistoffset__", T_PYSSIZET, offsetof(StreamObj, weakreflist),
     READONLY, NULL},
    {NULL}
};

#define NOARGS(name, fn) {name, (PyCFunction)fn, METH_NOARGS, NULL}

static PyMethodDef stream_methods[] = {
    {"writelines", (PyCFunction)stream_writelines, METH_O,
     "Write a list (or any iterable) of bytes-like objects."},
    {"write", (PyCFunction)stream_write, METH_O,
     "Write data; what cannot be sent now is buffered."},
    NOARGS("write_eof", stream_write_eof),
    NOARGS("can_write_eof", stream_can_write_eof),
    NOARGS("close", stream_close),
    NOARGS("abort", stream_abort),
    NOARGS("is_closing", stream_is_closing),
    NOARGS("is_reading", stream_is_reading),
    NOARGS("pause_reading", stream_pause_reading),
    NOARGS("resume_reading", stream_resume_reading),
    {"set_write_buffer_limits",
     (PyCFunction)(void (*)(void))stream_set_write_buffer_limits,
     METH_VARARGS | METH_KEYWORDS, NULL},
    NOARGS("get_write_buffer_limits", stream_get_write_buffer_limits),
    NOARGS("get_write_buffer_size", stream_get_write_buffer_size),
    {"set_protocol", (PyCFunction)stream_set_protocol, METH_O, NULL},
    NOARGS("get_protocol", stream_get_protocol),
    NOARGS("_read_ready", read_ready),
    NOARGS("_write_ready", write_ready),
    NOARGS("_start_reading", stream_start_reading),
    {"_call_connection_lost", (PyCFunction)call_connection_lost, METH_O,
     NULL},
    {"_force_close", (PyCFunction)stream_force_close, METH_O, NULL},
    {"_fatal_error", (PyCFunction)(void (*)(void))stream_fatal_error,
     METH_FASTCALL, NULL},
    NOARGS("_make_empty_waiter", stream_make_empty_waiter),
    NOARGS("_reset_empty_waiter", stream_reset_empty_waiter),
    {NULL, NULL}
};

static PyType_Slot stream_slots[] = {
    {Py_tp_doc, "Stream (TCP, Unix) transport of aioev, in C."},
    {Py_tp_new, stream_new},
    {Py_tp_init, stream_init},
    {Py_tp_repr, stream_repr},
    {Py_tp_finalize, stream_finalize},
    {Py_tp_traverse, stream_traverse},
    {Py_tp_clear, stream_clear},
    {Py_tp_dealloc, stream_dealloc},
    {Py_tp_methods, stream_methods},
    {Py_tp_getset, stream_getset},
    {Py_tp_members, stream_members},
    {0, NULL},
};

static PyType_Spec stream_spec = {
    .name = "aioev._core.StreamTransport",
    .basicsize = sizeof(StreamObj),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .slots = stream_slots,
};

int
aioev_stream_init_types(PyObject *mod, aioev_state *st)
{
    PyObject *base = PyImport_ImportModule("asyncio.transports");
    PyObject *transport = base ? PyObject_GetAttrString(base, "Transport")
                               : NULL;
    Py_XDECREF(base);
    if (transport == NULL) {
        return -1;
    }
    st->StreamType = (PyTypeObject *)PyType_FromModuleAndSpec(
        mod, &stream_spec, transport);
    Py_DECREF(transport);
    if (st->StreamType == NULL) {
        return -1;
    }
    return PyModule_AddType(mod, st->StreamType);
}
