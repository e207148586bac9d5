/* asyncio's StreamReader.read() and StreamWriter.write()/drain() in C.
 *
 * asyncio.start_server() and open_connection() build asyncio's own
 * StreamReader, StreamReaderProtocol and StreamWriter, and a loop has no
 * say in which classes they are. When our StreamTransport carries exactly
 * those classes with asyncio's own methods, it switches the reader's (and,
 * for servers, the writer's) class to a subclass defined here whose read(),
 * write() and drain() do the same steps in C: no coroutine frames for
 * read/_wait_for_data/drain/_drain_helper per message. Everything else
 * (readline, readexactly, feed_data, close, ...) stays asyncio's, and the
 * objects are still instances of asyncio's classes.
 *
 * read() and drain() return a StreamCoro, coroutine-like as SockCoro is:
 * its work starts at the first send(), as a coroutine body would. Cases
 * the C does not cover (read(-1), a non-int size, drain on a closing
 * transport or a paused protocol) go to asyncio's own coroutine.
 * ------------------------------------------------------------------------ */
#include "module.h"

/* The methods of asyncio's classes that the fast paths stand for; the
 * switch happens only while the classes still have these. */
enum {
    ORIG_READ,
    ORIG_EXCEPTION,
    ORIG_WAIT_FOR_DATA,
    ORIG_MAYBE_RESUME,
    ORIG_WRITE,
    ORIG_DRAIN,
    ORIG_DRAIN_HELPER,
    ORIG_COUNT
};
_Static_assert(ORIG_COUNT == AIOEV_STREAMRW_ORIG, "module.h's count");

enum { KIND_READ, KIND_DRAIN };
enum { CORO_START, CORO_WAITING, CORO_DONE };

typedef struct {
    PyObject_HEAD
    PyObject *obj;             /* the reader (read) or the writer (drain) */
    PyObject *fut;             /* read: our waiter future, while waiting */
    PyObject *inner;           /* an awaitable's iterator we delegate to */
    Py_ssize_t n;              /* read: at most this many bytes */
    int kind;
    int state;
} StreamCoroObj;

/* ------------------------------------------------------------------------
 * Attribute helpers: instance dict first (where asyncio keeps these),
 * the normal lookup if the key is not there.
 * ------------------------------------------------------------------------ */

/* New reference, or NULL with an exception set. */
static PyObject *
get(PyObject *dict, PyObject *obj, PyObject *name)
{
    PyObject *v = PyDict_GetItemWithError(dict, name);  /* borrowed */
    if (v != NULL) {
        return Py_NewRef(v);
    }
    if (PyErr_Occurred()) {
        return NULL;
    }
    return PyObject_GetAttr(obj, name);
}

/* -1 error, else the truth of obj.name. */
static int
get_true(PyObject *dict, PyObject *obj, PyObject *name)
{
    PyObject *v = get(dict, obj, name);
    if (v == NULL) {
        return -1;
    }
    int r = PyObject_IsTrue(v);
    Py_DECREF(v);
    return r;
}

static PyObject *
instance_dict(PyObject *obj)
{
    return PyObject_GenericGetDict(obj, NULL);
}

/* obj.name = v for our subclasses' instances: their classes define none
 * of the attributes set here, so the dict is where they go. */
static int
set(PyObject *dict, PyObject *name, PyObject *v)
{
    return PyDict_SetItem(dict, name, v);
}

/* `raise exc`, for an exception instance or class. Always returns -1. */
static int
raise_object(PyObject *exc)
{
    if (PyExceptionInstance_Check(exc)) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    }
    else if (PyExceptionClass_Check(exc)) {
        PyErr_SetNone(exc);
    }
    else {
        PyErr_SetString(PyExc_TypeError,
                        "exceptions must derive from BaseException");
    }
    return -1;
}

/* ------------------------------------------------------------------------
 * StreamReader.read(n) for n >= 0
 * ------------------------------------------------------------------------ */

/* reader._paused = False; reader._transport.resume_reading() -- the
 * step _maybe_resume_transport() and _wait_for_data() share. */
static int
resume_transport(aioev_state *st, PyObject *rdict, PyObject *reader)
{
    if (set(rdict, st->str__paused, Py_False) < 0) {
        return -1;
    }
    PyObject *transport = get(rdict, reader, st->str__transport);
    if (transport == NULL) {
        return -1;
    }
    PyObject *r = PyObject_CallMethodNoArgs(transport, st->str_resume_reading);
    Py_DECREF(transport);
    Py_XDECREF(r);
    return r ? 0 : -1;
}

/* reader._maybe_resume_transport() */
static int
maybe_resume_transport(aioev_state *st, PyObject *rdict, PyObject *reader,
                       PyObject *buf)
{
    int paused = get_true(rdict, reader, st->str__paused);
    if (paused <= 0) {
        return paused;
    }
    Py_ssize_t len = PyObject_Length(buf);
    PyObject *limit = get(rdict, reader, st->str__limit);
    if (len < 0 || limit == NULL) {
        Py_XDECREF(limit);
        return -1;
    }
    PyObject *len_o = PyLong_FromSsize_t(len);
    int le = len_o ? PyObject_RichCompareBool(len_o, limit, Py_LE) : -1;
    Py_XDECREF(len_o);
    Py_DECREF(limit);
    if (le <= 0) {
        return le;
    }
    return resume_transport(st, rdict, reader);
}

/* ------------------------------------------------------------------------
 * The reader's bytearray between messages
 *
 * A message read whole leaves the buffer empty, and bytearray frees its
 * memory; the next message allocates as much again. For large messages,
 * and many connections at a time, those blocks come and go at the top of
 * the heap, where glibc gives memory back to the kernel and faults it in
 * again. So an emptied buffer's block is kept (a few MiB at most, for
 * the module: see AIOEV_BLOCKS_*) for the next buffer that outgrows its
 * own; and taking the front of a buffer advances its start, as bytearray
 * does for small cuts, instead of copying the rest to a new block. The
 * bytearray states made are ones bytearray makes itself. Buffers with
 * exports are left to bytearray (which refuses to resize them).
 * ------------------------------------------------------------------------ */

#define BLOCK_MIN 4096
#define BLOCK_MAX (256 * 1024)

/* Keeps a block freed from a buffer, or frees it. */
static void
block_put(aioev_state *st, char *p, Py_ssize_t size)
{
    if (p != NULL && size >= BLOCK_MIN && size <= BLOCK_MAX
        && st->blocks_n < AIOEV_BLOCKS_MAX
        && st->blocks_bytes + size <= AIOEV_BLOCKS_BUDGET) {
        st->blocks[st->blocks_n].p = p;
        st->blocks[st->blocks_n].size = size;
        st->blocks_n++;
        st->blocks_bytes += size;
        return;
    }
    PyObject_Free(p);
}

/* A kept block of size to 4 * size bytes (its size in *got), or NULL:
 * a small message takes no large block, which stays for a large one. */
static char *
block_take(aioev_state *st, Py_ssize_t size, Py_ssize_t *got)
{
    for (int i = st->blocks_n - 1; i >= 0; i--) {
        if (st->blocks[i].size >= size && st->blocks[i].size / 4 <= size) {
            char *p = st->blocks[i].p;
            *got = st->blocks[i].size;
            st->blocks_bytes -= *got;
            st->blocks[i] = st->blocks[--st->blocks_n];
            return p;
        }
    }
    return NULL;
}

void
aioev_blocks_clear(aioev_state *st)
{
    while (st->blocks_n > 0) {
        PyObject_Free(st->blocks[--st->blocks_n].p);
    }
    st->blocks_bytes = 0;
}

/* del buf[:k], for 0 < k < len(buf) */
static int
buffer_cut(PyObject *buf, Py_ssize_t k)
{
    PyByteArrayObject *b = (PyByteArrayObject *)buf;
    if (b->ob_exports > 0) {
        return PySequence_DelSlice(buf, 0, k);  /* raises, as del would */
    }
    b->ob_start += k;
    Py_SET_SIZE(b, Py_SIZE(b) - k);
    return 0;
}

/* buf = bytearray() (del buf[:]), its block kept. */
static int
buffer_empty(aioev_state *st, PyObject *buf)
{
    PyByteArrayObject *b = (PyByteArrayObject *)buf;
    if (b->ob_exports > 0) {
        return PyByteArray_Resize(buf, 0);  /* raises, as del would */
    }
    block_put(st, b->ob_bytes, b->ob_alloc);
    b->ob_bytes = b->ob_start = NULL;  /* as bytearray() is */
    b->ob_alloc = 0;
    Py_SET_SIZE(b, 0);
    return 0;
}

int
aioev_buffer_extend(aioev_state *st, PyObject *buf, const char *data,
                    Py_ssize_t n)
{
    PyByteArrayObject *b = (PyByteArrayObject *)buf;
    Py_ssize_t old = Py_SIZE(b), got;
    Py_ssize_t need = old + n + 1;  /* with bytearray's trailing NUL */
    char *p;
    if (b->ob_exports == 0 && (b->ob_start - b->ob_bytes) + need > b->ob_alloc
        && (p = block_take(st, need, &got)) != NULL) {
        if (old > 0) {
            memcpy(p, b->ob_start, (size_t)old);
        }
        block_put(st, b->ob_bytes, b->ob_alloc);
        b->ob_bytes = b->ob_start = p;
        b->ob_alloc = got;
        Py_SET_SIZE(b, old + n);
        p[old + n] = '\0';
    }
    else if (PyByteArray_Resize(buf, old + n) < 0) {
        return -1;
    }
    memcpy(PyByteArray_AS_STRING(buf) + old, data, (size_t)n);
    return 0;
}

/* The end of read(): take up to n bytes from the front of the buffer.
 * New reference, or NULL. */
static PyObject *
read_take(aioev_state *st, PyObject *rdict, PyObject *reader, Py_ssize_t n)
{
    PyObject *buf = get(rdict, reader, st->str__buffer);
    PyObject *data = NULL, *slice = NULL, *part = NULL;
    if (buf == NULL) {
        goto error;
    }
    if (PyByteArray_CheckExact(buf)) {
        Py_ssize_t k = PyByteArray_GET_SIZE(buf);
        k = k < n ? k : n;
        data = PyBytes_FromStringAndSize(PyByteArray_AS_STRING(buf), k);
        /* del buf[:k]; taking it all is a resize to 0 (the same state,
         * without a slice object, and a shrink in place) */
        if (data == NULL
            || (k == PyByteArray_GET_SIZE(buf) ? buffer_empty(st, buf)
                                               : buffer_cut(buf, k)) < 0) {
            goto error;
        }
    }
    else {
        /* bytes(buf[:n]); del buf[:n] -- for whatever _buffer now is */
        PyObject *stop = PyLong_FromSsize_t(n);
        slice = stop ? PySlice_New(NULL, stop, NULL) : NULL;
        Py_XDECREF(stop);
        part = slice ? PyObject_GetItem(buf, slice) : NULL;
        data = part ? PyBytes_FromObject(part) : NULL;
        if (data == NULL || PyObject_DelItem(buf, slice) < 0) {
            goto error;
        }
    }
    if (maybe_resume_transport(st, rdict, reader, buf) < 0) {
        goto error;
    }
    Py_XDECREF(part);
    Py_XDECREF(slice);
    Py_DECREF(buf);
    return data;

error:
    Py_XDECREF(data);
    Py_XDECREF(part);
    Py_XDECREF(slice);
    Py_XDECREF(buf);
    return NULL;
}

static PySendResult coro_delegate(StreamCoroObj *c, PyObject *arg,
                                  PyObject **result);
static PySendResult read_resumed(aioev_state *st, StreamCoroObj *c,
                                 PySendResult r, PyObject **result);

/* The body of read() up to its first suspension: the checks, then either
 * the data at once or _wait_for_data()'s set-up and the first yield. */
static PySendResult
read_start(aioev_state *st, StreamCoroObj *c, PyObject **result)
{
    PyObject *reader = c->obj;
    PyObject *rdict = NULL, *v = NULL, *buf = NULL, *fut = NULL;
    PySendResult r = PYGEN_ERROR;

    *result = NULL;
    rdict = instance_dict(reader);
    v = rdict ? get(rdict, reader, st->str__exception) : NULL;
    if (v == NULL) {
        goto done;
    }
    if (v != Py_None) {
        raise_object(v);
        goto done;
    }
    Py_CLEAR(v);
    if (c->n == 0) {
        *result = PyBytes_FromStringAndSize(NULL, 0);
        r = *result ? PYGEN_RETURN : PYGEN_ERROR;
        goto done;
    }
    buf = get(rdict, reader, st->str__buffer);
    if (buf == NULL) {
        goto done;
    }
    int has_data = PyByteArray_CheckExact(buf)
        ? PyByteArray_GET_SIZE(buf) > 0 : PyObject_IsTrue(buf);
    int eof = has_data ? 0 : get_true(rdict, reader, st->str__eof);
    if (has_data < 0 || eof < 0) {
        goto done;
    }
    if (has_data || eof) {
        *result = read_take(st, rdict, reader, c->n);
        r = *result ? PYGEN_RETURN : PYGEN_ERROR;
        goto done;
    }

    /* _wait_for_data('read') */
    v = get(rdict, reader, st->str__waiter);
    if (v == NULL) {
        goto done;
    }
    if (v != Py_None) {
        PyErr_SetString(PyExc_RuntimeError,
                        "read() called while another coroutine is already "
                        "waiting for incoming data");
        goto done;
    }
    Py_CLEAR(v);
    int paused = get_true(rdict, reader, st->str__paused);
    if (paused < 0) {
        goto done;
    }
    if (paused && resume_transport(st, rdict, reader) < 0) {
        goto done;
    }
    v = get(rdict, reader, st->str__loop);
    fut = v ? PyObject_CallMethodNoArgs(v, st->str_create_future) : NULL;
    if (fut == NULL || set(rdict, st->str__waiter, fut) < 0) {
        goto done;
    }
    c->state = CORO_WAITING;
    if (Py_IS_TYPE(fut, st->FutureType)) {
        c->fut = Py_NewRef(fut);
        r = aioev_future_await_step((FutureObj *)fut, result);
    }
    else {
        /* someone's loop made another kind of future: `await` it */
        unaryfunc am_await = Py_TYPE(fut)->tp_as_async
            ? Py_TYPE(fut)->tp_as_async->am_await : NULL;
        if (am_await == NULL) {
            PyErr_Format(PyExc_TypeError, "object %.100s can't be used in "
                         "'await' expression", Py_TYPE(fut)->tp_name);
        }
        else {
            c->inner = am_await(fut);
        }
        r = c->inner ? coro_delegate(c, Py_None, result)
                     : read_resumed(st, c, PYGEN_ERROR, result);
    }

done:
    Py_XDECREF(fut);
    Py_XDECREF(v);
    Py_XDECREF(buf);
    Py_XDECREF(rdict);
    return r;
}

/* The waiter is done with (resumed, thrown into, closed): `finally:
 * self._waiter = None` in the reader's dict rdict, keeping any exception
 * being raised. */
static int
read_end_wait(aioev_state *st, StreamCoroObj *c, PyObject *rdict)
{
    Py_CLEAR(c->fut);
    PyObject *exc = PyErr_GetRaisedException();
    int rc = set(rdict, st->str__waiter, Py_None);
    if (exc != NULL) {
        if (rc < 0) {
            PyErr_WriteUnraisable(c->obj);
        }
        PyErr_SetRaisedException(exc);
    }
    return rc;
}

/* After the waiter: r is the outcome of awaiting it. */
static PySendResult
read_resumed(aioev_state *st, StreamCoroObj *c, PySendResult r,
             PyObject **result)
{
    c->state = CORO_DONE;
    if (r == PYGEN_RETURN) {
        Py_CLEAR(*result);
    }
    PyObject *exc = PyErr_GetRaisedException();
    PyObject *rdict = instance_dict(c->obj);
    if (rdict == NULL) {
        Py_CLEAR(c->fut);
        if (exc != NULL) {
            PyErr_WriteUnraisable(c->obj);
            PyErr_SetRaisedException(exc);
        }
        return PYGEN_ERROR;
    }
    PyErr_SetRaisedException(exc);
    if (read_end_wait(st, c, rdict) < 0 || r == PYGEN_ERROR) {
        Py_XDECREF(rdict);
        return PYGEN_ERROR;
    }
    *result = read_take(st, rdict, c->obj, c->n);
    Py_DECREF(rdict);
    return *result ? PYGEN_RETURN : PYGEN_ERROR;
}

/* ------------------------------------------------------------------------
 * StreamWriter.drain()
 * ------------------------------------------------------------------------ */

/* The common case in C: no error on the reader, the transport open, the
 * protocol neither paused nor disconnected: done at once. Anything else
 * runs asyncio's drain() (which checks the reader again: no side effect). */
static PySendResult
drain_start(aioev_state *st, StreamCoroObj *c, PyObject **result)
{
    PyObject *writer = c->obj;
    PyObject *wdict = NULL, *reader = NULL, *exc = NULL;
    PyObject *transport = NULL, *protocol = NULL, *pdict = NULL;
    PySendResult r = PYGEN_ERROR;
    int fast = 0;

    *result = NULL;
    wdict = instance_dict(writer);
    reader = wdict ? get(wdict, writer, st->str__reader) : NULL;
    if (reader == NULL) {
        goto done;
    }
    if (reader != Py_None) {
        if (Py_IS_TYPE(reader, (PyTypeObject *)st->FastStreamReader)) {
            /* switched only with asyncio's exception(): its attribute */
            PyObject *rdict = instance_dict(reader);
            exc = rdict ? get(rdict, reader, st->str__exception) : NULL;
            Py_XDECREF(rdict);
        }
        else {
            exc = PyObject_CallMethodNoArgs(reader, st->str_exception);
        }
        if (exc == NULL) {
            goto done;
        }
        if (exc != Py_None) {
            raise_object(exc);
            goto done;
        }
    }
    transport = get(wdict, writer, st->str__transport);
    if (transport == NULL) {
        goto done;
    }
    int closing = Py_IS_TYPE(transport, st->StreamType)
        ? aioev_stream_is_closing(transport) : -2;
    if (closing == -2) {
        PyObject *b = PyObject_CallMethodNoArgs(transport,
                                                st->str_is_closing);
        closing = b ? PyObject_IsTrue(b) : -1;
        Py_XDECREF(b);
    }
    if (closing < 0) {
        goto done;
    }
    protocol = get(wdict, writer, st->str__protocol);
    if (protocol == NULL) {
        goto done;
    }
    if (!closing && Py_IS_TYPE(protocol,
                               (PyTypeObject *)st->StreamReaderProtocol)) {
        pdict = instance_dict(protocol);
        int lost = pdict ? get_true(pdict, protocol,
                                    st->str__connection_lost) : -1;
        int paused = lost == 0 ? get_true(pdict, protocol, st->str__paused)
                               : 0;
        if (lost < 0 || paused < 0) {
            goto done;
        }
        if (lost) {
            PyErr_SetString(PyExc_ConnectionResetError, "Connection lost");
            goto done;
        }
        fast = !paused;
    }
    if (fast) {  /* state stays CORO_DONE */
        *result = Py_NewRef(Py_None);
        r = PYGEN_RETURN;
        goto done;
    }
    c->inner = PyObject_CallOneArg(st->streamrw_orig[ORIG_DRAIN], writer);
    if (c->inner != NULL) {
        r = coro_delegate(c, Py_None, result);
    }

done:
    Py_XDECREF(pdict);
    Py_XDECREF(protocol);
    Py_XDECREF(transport);
    Py_XDECREF(exc);
    Py_XDECREF(reader);
    Py_XDECREF(wdict);
    return r;
}

/* ------------------------------------------------------------------------
 * StreamCoro
 * ------------------------------------------------------------------------ */

static PyObject *
coro_new(aioev_state *st, PyObject *obj, int kind, Py_ssize_t n)
{
    StreamCoroObj *c = PyObject_GC_New(StreamCoroObj, st->StreamCoroType);
    if (c == NULL) {
        return NULL;
    }
    c->obj = Py_NewRef(obj);
    c->fut = NULL;
    c->inner = NULL;
    c->n = n;
    c->kind = kind;
    c->state = CORO_START;
    PyObject_GC_Track(c);
    return (PyObject *)c;
}

/* One step of the awaitable we wait on through `inner`. */
static PySendResult
coro_delegate(StreamCoroObj *c, PyObject *arg, PyObject **result)
{
    PySendResult r = PyIter_Send(c->inner, arg, result);
    if (r == PYGEN_NEXT) {
        return r;
    }
    Py_CLEAR(c->inner);
    if (c->kind == KIND_READ) {
        return read_resumed(AIOEV_STATE(c), c, r, result);
    }
    c->state = CORO_DONE;
    return r;
}

/* Once it has returned or raised, a coroutine holds nothing (its frame
 * is cleared): a done task keeping it keeps no connection alive. */
static void
coro_finished(StreamCoroObj *c)
{
    if (c->inner == NULL && c->state != CORO_WAITING) {
        c->state = CORO_DONE;
        Py_CLEAR(c->obj);
        Py_CLEAR(c->fut);
    }
}

static PySendResult
coro_step(StreamCoroObj *c, PyObject *arg, PyObject **result)
{
    aioev_state *st = AIOEV_STATE(c);
    *result = NULL;
    if (c->inner != NULL) {
        return coro_delegate(c, arg, result);
    }
    switch (c->state) {
    case CORO_START:
        c->state = CORO_DONE;  /* until a step says otherwise */
        return c->kind == KIND_READ ? read_start(st, c, result)
                                    : drain_start(st, c, result);
    case CORO_WAITING: {
        PySendResult r = aioev_future_await_step((FutureObj *)c->fut,
                                                 result);
        return r == PYGEN_NEXT ? r : read_resumed(st, c, r, result);
    }
    default:
        PyErr_SetString(PyExc_RuntimeError,
                        "cannot reuse already awaited coroutine");
        return PYGEN_ERROR;
    }
}

static PySendResult
coro_am_send(StreamCoroObj *c, PyObject *arg, PyObject **result)
{
    PySendResult r = coro_step(c, arg, result);
    if (r != PYGEN_NEXT) {
        coro_finished(c);
    }
    return r;
}

static PyObject *
coro_iternext(StreamCoroObj *c)
{
    PyObject *res;
    PySendResult r = coro_am_send(c, Py_None, &res);
    return aioev_iternext_from_send(r, res);
}

static PyObject *
coro_send(StreamCoroObj *c, PyObject *arg)
{
    PyObject *res;
    PySendResult r = coro_am_send(c, arg, &res);
    return aioev_iternext_from_send(r, res);
}

/* Stop waiting, as the coroutine's `finally` would; the exception being
 * raised (if any) is kept. */
static void
coro_abandon(StreamCoroObj *c)
{
    if (c->state == CORO_WAITING && c->kind == KIND_READ
        && c->obj != NULL) {
        PyObject *exc = PyErr_GetRaisedException();
        PyObject *rdict = instance_dict(c->obj);
        if (rdict == NULL || read_end_wait(AIOEV_STATE(c), c, rdict) < 0) {
            PyErr_WriteUnraisable(c->obj);
        }
        Py_XDECREF(rdict);
        PyErr_SetRaisedException(exc);
    }
    c->state = CORO_DONE;
}

static PyObject *
coro_throw(StreamCoroObj *c, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "throw() takes 1 to 3 arguments");
        return NULL;
    }
    if (c->inner != NULL) {
        PyObject *inner = c->inner;
        PyObject *meth = PyObject_GetAttrString(inner, "throw");
        PyObject *res = meth ? PyObject_Vectorcall(meth, args, nargs, NULL)
                             : NULL;
        Py_XDECREF(meth);
        if (res != NULL) {
            return res;  /* it yielded again */
        }
        PySendResult r = PYGEN_ERROR;
        if (PyErr_ExceptionMatches(PyExc_StopIteration)) {
            /* it returned: StopIteration.value is the result */
            PyObject *stop = PyErr_GetRaisedException();
            res = PyObject_GetAttrString(stop, "value");
            Py_DECREF(stop);
            r = res ? PYGEN_RETURN : PYGEN_ERROR;
        }
        Py_CLEAR(c->inner);
        if (c->kind == KIND_READ) {
            r = read_resumed(AIOEV_STATE(c), c, r, &res);
        }
        c->state = CORO_DONE;
        coro_finished(c);
        return aioev_iternext_from_send(r, res);
    }
    aioev_set_thrown(args, nargs);
    coro_abandon(c);
    coro_finished(c);
    return NULL;
}

static PyObject *
coro_close(StreamCoroObj *c, PyObject *Py_UNUSED(ignored))
{
    if (c->inner != NULL) {
        PyObject *inner = c->inner;
        c->inner = NULL;
        PyObject *r = PyObject_CallMethod(inner, "close", NULL);
        Py_DECREF(inner);
        if (r == NULL) {
            c->state = CORO_DONE;
            coro_finished(c);
            return NULL;
        }
        Py_DECREF(r);
    }
    coro_abandon(c);
    coro_finished(c);
    Py_RETURN_NONE;
}

static PyObject *
coro_await(StreamCoroObj *c)
{
    return Py_NewRef(c);
}

static int
coro_traverse(StreamCoroObj *c, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(c));
    Py_VISIT(c->obj);
    Py_VISIT(c->fut);
    Py_VISIT(c->inner);
    return 0;
}

static int
coro_clear(StreamCoroObj *c)
{
    Py_CLEAR(c->obj);
    Py_CLEAR(c->fut);
    Py_CLEAR(c->inner);
    return 0;
}

static void
coro_dealloc(StreamCoroObj *c)
{
    PyTypeObject *tp = Py_TYPE(c);
    PyObject_GC_UnTrack(c);
    if (c->state == CORO_START && c->obj != NULL) {
        /* as a coroutine that never ran says when it goes */
        aioev_warn_never_awaited("", c->kind == KIND_READ
                                         ? "StreamReader.read"
                                         : "StreamWriter.drain");
    }
    else if (c->state == CORO_WAITING || c->inner != NULL) {
        /* dropped while suspended: what closing a coroutine does */
        PyObject *exc = PyErr_GetRaisedException();
        PyObject *r = coro_close(c, NULL);
        if (r == NULL) {
            PyErr_WriteUnraisable(NULL);  /* not c: it is going */
        }
        Py_XDECREF(r);
        PyErr_SetRaisedException(exc);
    }
    coro_clear(c);
    PyObject_GC_Del(c);
    Py_DECREF(tp);
}

static PyObject *
coro_get_name(StreamCoroObj *c, void *qual)
{
    if (c->kind == KIND_READ) {
        return PyUnicode_FromString(qual ? "StreamReader.read" : "read");
    }
    return PyUnicode_FromString(qual ? "StreamWriter.drain" : "drain");
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
    .name = "aioev._core.StreamCoro",
    .basicsize = sizeof(StreamCoroObj),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
        | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = coro_slots,
};

/* ------------------------------------------------------------------------
 * The methods of the subclasses
 * ------------------------------------------------------------------------ */

/* asyncio's own method (which) with the call's arguments: for calls our
 * C does not take (their errors are asyncio's to word). */
static PyObject *
call_original(aioev_state *st, int which, PyObject *self,
              PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    return aioev_call_with_first(st->streamrw_orig[which], self, args,
                                 nargsf, kwnames);
}

static PyObject *
reader_read(PyObject *self, PyTypeObject *cls, PyObject *const *args,
            size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *n_o = NULL;
    Py_ssize_t nkw = kwnames ? PyTuple_GET_SIZE(kwnames) : 0;
    aioev_state *st = PyType_GetModuleState(cls);
    if (nargs + nkw > 1
        || (nkw == 1 && !aioev_str_eq(PyTuple_GET_ITEM(kwnames, 0), "n"))) {
        return call_original(st, ORIG_READ, self, args, nargsf, kwnames);
    }
    if (nargs + nkw == 1) {
        n_o = args[0];
    }
    Py_ssize_t n = -1;
    if (n_o != NULL && PyLong_CheckExact(n_o)) {
        n = PyLong_AsSsize_t(n_o);
        if (n == -1 && PyErr_Occurred()) {
            PyErr_Clear();  /* huge: asyncio's code says what happens */
            n = -1;
        }
    }
    if (n < 0) {
        /* read(-1), sizes that are not ints: asyncio's coroutine */
        PyObject *call_args[2] = {self, n_o};
        return PyObject_Vectorcall(st->streamrw_orig[ORIG_READ], call_args,
                                   n_o ? 2 : 1, NULL);
    }
    return coro_new(st, self, KIND_READ, n);
}

static PyObject *
writer_write(PyObject *self, PyTypeObject *cls, PyObject *const *args,
             size_t nargsf, PyObject *kwnames)
{
    aioev_state *st = PyType_GetModuleState(cls);
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0) != 1
        || (kwnames != NULL
            && !aioev_str_eq(PyTuple_GET_ITEM(kwnames, 0), "data"))) {
        return call_original(st, ORIG_WRITE, self, args, nargsf, kwnames);
    }
    PyObject *data = args[0];
    PyObject *wdict = instance_dict(self);
    PyObject *transport = wdict ? get(wdict, self, st->str__transport)
                                : NULL;
    Py_XDECREF(wdict);
    if (transport == NULL) {
        return NULL;
    }
    PyObject *r = Py_IS_TYPE(transport, st->StreamType)
        ? aioev_stream_write(transport, data)
        : PyObject_CallMethodOneArg(transport, st->str_write, data);
    Py_DECREF(transport);
    if (r == NULL) {
        return NULL;
    }
    Py_DECREF(r);
    Py_RETURN_NONE;
}

static PyObject *
writer_drain(PyObject *self, PyTypeObject *cls, PyObject *const *args,
             size_t nargsf, PyObject *kwnames)
{
    aioev_state *st = PyType_GetModuleState(cls);
    if (PyVectorcall_NARGS(nargsf) != 0 || kwnames != NULL) {
        return call_original(st, ORIG_DRAIN, self, args, nargsf, kwnames);
    }
    return coro_new(st, self, KIND_DRAIN, 0);
}

#define METHOD(name, func, doc)                                          \
    {name, (PyCFunction)(void (*)(void))func,                           \
     METH_METHOD | METH_FASTCALL | METH_KEYWORDS, PyDoc_STR(doc)}

static PyMethodDef reader_methods[] = {
    METHOD("read", reader_read,
           "Read up to n bytes (asyncio's StreamReader.read, in C)."),
    {NULL, NULL}
};

static PyMethodDef writer_methods[] = {
    METHOD("write", writer_write, "asyncio's StreamWriter.write, in C."),
    METHOD("drain", writer_drain,
           "Flush the write buffer (asyncio's StreamWriter.drain, in C)."),
    {NULL, NULL}
};

/* Subclasses of asyncio's classes adding no fields: instances can switch
 * __class__ to them. Dealloc, GC and __dict__ are inherited. */
static PyType_Slot reader_slots[] = {
    {Py_tp_methods, reader_methods},
    {0, NULL},
};

static PyType_Slot writer_slots[] = {
    {Py_tp_methods, writer_methods},
    {0, NULL},
};

static PyType_Spec reader_spec = {
    .name = "aioev._core.StreamReader",
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = reader_slots,
};

static PyType_Spec writer_spec = {
    .name = "aioev._core.StreamWriter",
    .flags = Py_TPFLAGS_DEFAULT,
    .slots = writer_slots,
};

/* ------------------------------------------------------------------------
 * Switching a connection's reader and writer over
 * ------------------------------------------------------------------------ */

/* 1 if cls.name is still the method captured at import. */
static int
is_original(aioev_state *st, PyObject *cls, const char *name, int which)
{
    PyObject *now = PyObject_GetAttrString(cls, name);
    if (now == NULL) {
        PyErr_Clear();
        return 0;
    }
    Py_DECREF(now);  /* the class keeps it */
    return now == st->streamrw_orig[which];
}

/* Switch obj from asyncio's class base to our subclass sub, if obj is
 * exactly a base and the methods we replace are asyncio's. Never fails:
 * anything unexpected leaves obj as it is. */
static void
adopt(PyObject *obj, PyObject *base, PyObject *sub, int ok)
{
    if (!ok || !Py_IS_TYPE(obj, (PyTypeObject *)base)) {
        return;
    }
    if (PyObject_SetAttrString(obj, "__class__", sub) < 0) {
        PyErr_Clear();
    }
}

void
aioev_streamrw_adopt_reader(aioev_state *st, PyObject *reader)
{
    PyObject *cls = st->StreamReader;
    adopt(reader, cls, st->FastStreamReader,
          st->FastStreamReader != NULL
          && is_original(st, cls, "read", ORIG_READ)
          && is_original(st, cls, "exception", ORIG_EXCEPTION)
          && is_original(st, cls, "_wait_for_data", ORIG_WAIT_FOR_DATA)
          && is_original(st, cls, "_maybe_resume_transport",
                         ORIG_MAYBE_RESUME));
}

void
aioev_streamrw_adopt_writer(aioev_state *st, PyObject *writer)
{
    PyObject *cls = st->StreamWriter;
    adopt(writer, cls, st->FastStreamWriter,
          st->FastStreamWriter != NULL
          && is_original(st, cls, "write", ORIG_WRITE)
          && is_original(st, cls, "drain", ORIG_DRAIN)
          && is_original(st, st->StreamReaderProtocol, "_drain_helper",
                         ORIG_DRAIN_HELPER));
}

/* What start_server's callback becomes on a protocol we serve: the
 * protocol makes the StreamWriter in connection_made() and hands it
 * straight to the callback (3.13 keeps no reference to it), so the switch
 * happens here, before the callback sees it. self: (callback,
 * FastStreamWriter). */
static PyObject *
connected_cb(PyObject *self, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *cb = PyTuple_GET_ITEM(self, 0);
    if (nargs == 2) {
        PyTypeObject *fast = (PyTypeObject *)PyTuple_GET_ITEM(self, 1);
        aioev_streamrw_adopt_writer(PyType_GetModuleState(fast), args[1]);
    }
    return PyObject_Vectorcall(cb, args, (size_t)nargs, NULL);
}

static PyMethodDef connected_cb_def = {
    "client_connected_cb", (PyCFunction)(void (*)(void))connected_cb,
    METH_FASTCALL,
    PyDoc_STR("The server's callback, given a StreamWriter with C write() "
              "and drain().")};

void
aioev_streamrw_wrap_connected_cb(aioev_state *st, PyObject *protocol)
{
    PyObject *pdict = NULL, *cb = NULL, *self = NULL, *wrapped = NULL;
    pdict = PyObject_GenericGetDict(protocol, NULL);
    cb = pdict ? PyDict_GetItemWithError(pdict, st->str__client_connected_cb)
               : NULL;  /* borrowed */
    if (cb == NULL || cb == Py_None || st->FastStreamWriter == NULL
        || (PyCFunction_Check(cb)
            && PyCFunction_GET_FUNCTION(cb)
                   == (PyCFunction)(void (*)(void))connected_cb)) {
        goto done;  /* client side, or wrapped already */
    }
    self = PyTuple_Pack(2, cb, st->FastStreamWriter);
    wrapped = self ? PyCFunction_NewEx(&connected_cb_def, self, NULL) : NULL;
    if (wrapped != NULL) {
        PyDict_SetItem(pdict, st->str__client_connected_cb, wrapped);
    }

done:
    PyErr_Clear();  /* never fails: asyncio's plain path stays */
    Py_XDECREF(wrapped);
    Py_XDECREF(self);
    Py_XDECREF(pdict);
}

/* ------------------------------------------------------------------------
 * Set-up
 * ------------------------------------------------------------------------ */

int
aioev_streamrw_init(PyObject *mod, aioev_state *st)
{
    static const struct {
        int reader;            /* 0 writer, 1 reader, 2 protocol */
        const char *name;
    } origs[ORIG_COUNT] = {
        [ORIG_READ] = {1, "read"},
        [ORIG_EXCEPTION] = {1, "exception"},
        [ORIG_WAIT_FOR_DATA] = {1, "_wait_for_data"},
        [ORIG_MAYBE_RESUME] = {1, "_maybe_resume_transport"},
        [ORIG_WRITE] = {0, "write"},
        [ORIG_DRAIN] = {0, "drain"},
        [ORIG_DRAIN_HELPER] = {2, "_drain_helper"},
    };
    PyObject *classes[3] = {st->StreamWriter, st->StreamReader,
                            st->StreamReaderProtocol};
    for (int i = 0; i < ORIG_COUNT; i++) {
        st->streamrw_orig[i] = PyObject_GetAttrString(
            classes[origs[i].reader], origs[i].name);
        if (st->streamrw_orig[i] == NULL) {
            return -1;
        }
    }
    st->StreamCoroType = (PyTypeObject *)PyType_FromModuleAndSpec(
        mod, &coro_spec, NULL);
    if (st->StreamCoroType == NULL
        || PyModule_AddType(mod, st->StreamCoroType) < 0) {
        return -1;
    }
    st->FastStreamReader = PyType_FromModuleAndSpec(mod, &reader_spec,
                                                    st->StreamReader);
    st->FastStreamWriter = PyType_FromModuleAndSpec(mod, &writer_spec,
                                                    st->StreamWriter);
    if (st->FastStreamReader == NULL || st->FastStreamWriter == NULL
        || PyModule_AddType(mod, (PyTypeObject *)st->FastStreamReader) < 0
        || PyModule_AddType(mod, (PyTypeObject *)st->FastStreamWriter) < 0) {
        return -1;
    }
    return 0;
}
