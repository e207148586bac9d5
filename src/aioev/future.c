/* Future: asyncio.Future's API in C, and its await iterator. Done
 * callbacks go straight into our loop's ready queue; on any other loop
 * they go through loop.call_soon(cb, fut, context=ctx) as asyncio's do.
 * A Task of ours registered as a callback stands for "wake this task":
 * no bound method or Handle is made for it (task.c). */
#include "module.h"

typedef struct {
    PyObject_HEAD
    FutureObj *future;
} FutureIterObj;

static PyObject *future_new_iter(aioev_state *st, FutureObj *fut);
static void future_reset(FutureObj *fut);

/* ------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------ */

static PyObject *
state_name(fut_state s)
{
    switch (s) {
    case STATE_PENDING:
        return PyUnicode_FromString("PENDING");
    case STATE_CANCELLED:
        return PyUnicode_FromString("CANCELLED");
    default:
        return PyUnicode_FromString("FINISHED");
    }
}

static int
future_ensure_alive(FutureObj *fut)
{
    if (fut->fut_loop == NULL) {
        PyErr_SetString(PyExc_RuntimeError,
                        "Future object is not initialized.");
        return -1;
    }
    return 0;
}

/* Schedules cb(fut) in ctx on the future's loop. */
static int
future_call_soon(aioev_state *st, FutureObj *fut, PyObject *cb,
                 PyObject *ctx)
{
    if (fut->fut_native_loop) {
        LoopObj *loop = (LoopObj *)fut->fut_loop;
        if (aioev_loop_check_call_soon(loop) < 0) {
            return -1;
        }
        if (Py_IS_TYPE(cb, st->TaskType)) {
            return aioev_loop_enqueue(loop, READY_TASK_WAKEUP, cb,
                                      (PyObject *)fut, NULL);
        }
        if (!aioev_loop_get_debug(loop)) {
            return aioev_loop_enqueue(loop, READY_FUT_CALLBACK, cb,
                                      (PyObject *)fut, ctx);
        }
        /* Debug mode: a Handle, as asyncio's call_soon makes, that says
         * where the future was completed (its _source_traceback). */
    }
    PyObject *args[5] = {NULL, fut->fut_loop, cb, (PyObject *)fut, ctx};
    return aioev_call_soon_any(st->str_call_soon, st->kw_context, args, 3);
}

/* Hands every done callback to the loop, in registration order. */
static int
future_schedule_callbacks(aioev_state *st, FutureObj *fut)
{
    if (fut->fut_callback0 != NULL) {
        PyObject *cb = fut->fut_callback0, *ctx = fut->fut_context0;
        fut->fut_callback0 = NULL;
        fut->fut_context0 = NULL;
        int rc = future_call_soon(st, fut, cb, ctx);
        Py_DECREF(cb);
        Py_DECREF(ctx);
        if (rc < 0) {
            return -1;
        }
    }
    if (fut->fut_callbacks != NULL) {
        /* Detach first: a callback may not touch the list we walk. */
        PyObject *list = fut->fut_callbacks;
        fut->fut_callbacks = NULL;
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(list); i++) {
            PyObject *pair = PyList_GET_ITEM(list, i);
            if (future_call_soon(st, fut, PyTuple_GET_ITEM(pair, 0),
                                 PyTuple_GET_ITEM(pair, 1)) < 0) {
                Py_DECREF(list);
                return -1;
            }
        }
        Py_DECREF(list);
    }
    return 0;
}

static int
get_loop_debug(PyObject *loop, aioev_state *st)
{
    if (aioev_is_loop(st, loop)) {
        return aioev_loop_get_debug((LoopObj *)loop);
    }
    PyObject *r = PyObject_CallMethod(loop, "get_debug", NULL);
    if (r == NULL) {
        return -1;
    }
    int b = PyObject_IsTrue(r);
    Py_DECREF(r);
    return b;
}

/* Sets up a (possibly reused) future on loop (None: the current loop). */
int
aioev_future_init(FutureObj *fut, PyObject *loop)
{
    aioev_state *st = AIOEV_STATE(fut);

    future_reset(fut);
    if (loop == NULL || loop == Py_None) {
        loop = PyObject_CallNoArgs(st->get_event_loop);
        if (loop == NULL) {
            return -1;
        }
    }
    else {
        Py_INCREF(loop);
    }
    fut->fut_loop = loop;
    fut->fut_native_loop = aioev_is_loop(st, loop);
    fut->fut_state = STATE_PENDING;
    fut->fut_log_tb = 0;
    fut->fut_blocking = 0;
    int debug = get_loop_debug(loop, st);
    if (debug < 0) {
        return -1;
    }
    if (debug) {
        PyObject *frame = (PyObject *)PyEval_GetFrame();  /* borrowed */
        fut->fut_source_tb = PyObject_CallOneArg(st->extract_stack,
                                                 frame ? frame : Py_None);
        if (fut->fut_source_tb == NULL) {
            return -1;
        }
    }
    return 0;
}

int
aioev_future_add_callback(aioev_state *st, FutureObj *fut, PyObject *cb,
                          PyObject *ctx)
{
    if (fut->fut_state != STATE_PENDING) {
        return future_call_soon(st, fut, cb, ctx);
    }
    if (fut->fut_callback0 == NULL && fut->fut_callbacks == NULL) {
        fut->fut_callback0 = Py_NewRef(cb);
        fut->fut_context0 = Py_NewRef(ctx);
        return 0;
    }
    PyObject *pair = PyTuple_Pack(2, cb, ctx);
    if (pair == NULL) {
        return -1;
    }
    if (fut->fut_callbacks == NULL) {
        fut->fut_callbacks = PyList_New(0);
        if (fut->fut_callbacks == NULL) {
            Py_DECREF(pair);
            return -1;
        }
    }
    int rc = PyList_Append(fut->fut_callbacks, pair);
    Py_DECREF(pair);
    return rc;
}

PyObject *
aioev_future_set_result(aioev_state *st, FutureObj *fut, PyObject *res)
{
    if (future_ensure_alive(fut) < 0) {
        return NULL;
    }
    if (fut->fut_state != STATE_PENDING) {
        PyErr_SetString(st->InvalidStateError, "invalid state");
        return NULL;
    }
    Py_XSETREF(fut->fut_result, Py_NewRef(res));
    fut->fut_state = STATE_FINISHED;
    if (future_schedule_callbacks(st, fut) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

PyObject *
aioev_future_set_exception(aioev_state *st, FutureObj *fut, PyObject *exc)
{
    PyObject *exc_val = NULL;

    if (future_ensure_alive(fut) < 0) {
        return NULL;
    }
    if (fut->fut_state != STATE_PENDING) {
        PyErr_SetString(st->InvalidStateError, "invalid state");
        return NULL;
    }
    if (PyExceptionClass_Check(exc)) {
        exc_val = PyObject_CallNoArgs(exc);
        if (exc_val == NULL) {
            return NULL;
        }
        if (fut->fut_state != STATE_PENDING) {
            Py_DECREF(exc_val);
            PyErr_SetString(st->InvalidStateError, "invalid state");
            return NULL;
        }
    }
    else {
        exc_val = Py_NewRef(exc);
    }
    if (!PyExceptionInstance_Check(exc_val)) {
        Py_DECREF(exc_val);
        PyErr_SetString(PyExc_TypeError, "invalid exception object");
        return NULL;
    }
    if (st->wrap_stopiteration
        && PyErr_GivenExceptionMatches(exc_val, PyExc_StopIteration)) {
        PyObject *msg = PyUnicode_FromString(
            "StopIteration interacts badly with generators and cannot be "
            "raised into a Future");
        PyObject *new_exc = msg ? PyObject_CallOneArg(PyExc_RuntimeError,
                                                      msg) : NULL;
        Py_XDECREF(msg);
        if (new_exc == NULL) {
            Py_DECREF(exc_val);
            return NULL;
        }
        PyException_SetCause(new_exc, Py_NewRef(exc_val));
        PyException_SetContext(new_exc, exc_val);
        exc_val = new_exc;
    }
    else if (!st->wrap_stopiteration
             && Py_IS_TYPE(exc_val, (PyTypeObject *)PyExc_StopIteration)) {
        Py_DECREF(exc_val);
        PyErr_SetString(PyExc_TypeError,
                        "StopIteration interacts badly with generators "
                        "and cannot be raised into a Future");
        return NULL;
    }
    Py_XSETREF(fut->fut_exception, exc_val);
    Py_XSETREF(fut->fut_exception_tb, PyException_GetTraceback(exc_val));
    fut->fut_state = STATE_FINISHED;
    if (future_schedule_callbacks(st, fut) < 0) {
        return NULL;
    }
    fut->fut_log_tb = 1;
    Py_RETURN_NONE;
}

PyObject *
aioev_future_make_cancelled_error(aioev_state *st, FutureObj *fut)
{
    PyObject *exc;
#ifdef AIOEV_PY311
    if (fut->fut_cancelled_exc != NULL) {
        exc = fut->fut_cancelled_exc;
        fut->fut_cancelled_exc = NULL;
        return exc;
    }
#endif
    if (fut->fut_cancel_msg == NULL || fut->fut_cancel_msg == Py_None) {
        exc = PyObject_CallNoArgs(st->CancelledError);
    }
    else {
        exc = PyObject_CallOneArg(st->CancelledError, fut->fut_cancel_msg);
    }
    if (exc == NULL) {
        return NULL;
    }
    if (fut->fut_cancelled_exc != NULL) {
        PyException_SetContext(exc, fut->fut_cancelled_exc);
        fut->fut_cancelled_exc = NULL;
    }
    return exc;
}

int
aioev_future_cancel(aioev_state *st, FutureObj *fut, PyObject *msg)
{
    fut->fut_log_tb = 0;
    if (fut->fut_state != STATE_PENDING) {
        return 0;
    }
    fut->fut_state = STATE_CANCELLED;
    Py_XSETREF(fut->fut_cancel_msg, Py_XNewRef(msg));
    if (future_schedule_callbacks(st, fut) < 0) {
        return -1;
    }
    return 1;
}

int
aioev_future_get_result(aioev_state *st, FutureObj *fut, PyObject **res)
{
    *res = NULL;
    if (fut->fut_state == STATE_CANCELLED) {
        PyObject *exc = aioev_future_make_cancelled_error(st, fut);
        if (exc == NULL) {
            return -1;
        }
        PyErr_SetObject(st->CancelledError, exc);
        Py_DECREF(exc);
        return -1;
    }
    if (fut->fut_state != STATE_FINISHED) {
        PyErr_SetString(st->InvalidStateError, "Result is not set.");
        return -1;
    }
    fut->fut_log_tb = 0;
    if (fut->fut_exception != NULL) {
        PyObject *exc = fut->fut_exception;
        if (fut->fut_exception_tb != NULL) {
            PyException_SetTraceback(exc, fut->fut_exception_tb);
        }
        *res = Py_NewRef(exc);
        return 0;
    }
    *res = Py_NewRef(fut->fut_result);
    return 1;
}

/* ------------------------------------------------------------------------
 * traverse / clear / finalize / dealloc
 * ------------------------------------------------------------------------ */

int
aioev_future_traverse(FutureObj *fut, visitproc visit, void *arg)
{
    Py_VISIT(fut->fut_loop);
    Py_VISIT(fut->fut_callback0);
    Py_VISIT(fut->fut_context0);
    Py_VISIT(fut->fut_callbacks);
    Py_VISIT(fut->fut_result);
    Py_VISIT(fut->fut_exception);
    Py_VISIT(fut->fut_exception_tb);
    Py_VISIT(fut->fut_source_tb);
    Py_VISIT(fut->fut_cancel_msg);
    Py_VISIT(fut->fut_cancelled_exc);
    return 0;
}

/* The asyncio part's traverse (its dict, and on 3.12+ the type), after
 * ours; base is _asyncio's Future or Task. */
int
aioev_asyncio_traverse(PyTypeObject *base, PyObject *self, visitproc visit,
                       void *arg)
{
#ifndef AIOEV_PY312
    Py_VISIT(Py_TYPE(self));  /* 3.10, 3.11: a static base does not */
#endif
    return base->tp_traverse(self, visit, arg);
}

/* Our part is cleared; now the asyncio part (its dict, weakrefs) and the
 * memory, by the base's dealloc. */
void
aioev_asyncio_dealloc(PyTypeObject *base, PyObject *self)
{
#ifndef AIOEV_PY312
    PyTypeObject *tp = Py_TYPE(self);
    base->tp_dealloc(self);
    Py_DECREF(tp);  /* 3.10, 3.11: a static base's dealloc does not */
#else
    base->tp_dealloc(self);
#endif
}

/* Drops the future's state but not its instance dict: a subclass may set
 * attributes before calling Future.__init__. */
static void
future_reset(FutureObj *fut)
{
    Py_CLEAR(fut->fut_loop);
    Py_CLEAR(fut->fut_callback0);
    Py_CLEAR(fut->fut_context0);
    Py_CLEAR(fut->fut_callbacks);
    Py_CLEAR(fut->fut_result);
    Py_CLEAR(fut->fut_exception);
    Py_CLEAR(fut->fut_exception_tb);
    Py_CLEAR(fut->fut_source_tb);
    Py_CLEAR(fut->fut_cancel_msg);
    Py_CLEAR(fut->fut_cancelled_exc);
}

int
aioev_future_clear(FutureObj *fut)
{
    future_reset(fut);
    return 0;
}

static int
future_traverse(FutureObj *fut, visitproc visit, void *arg)
{
    int rc = aioev_future_traverse(fut, visit, arg);
    if (rc != 0) {
        return rc;
    }
    return aioev_asyncio_traverse(AIOEV_STATE(fut)->FutureType->tp_base,
                                  (PyObject *)fut, visit, arg);
}

static int
future_clear(FutureObj *fut)
{
    future_reset(fut);
    return AIOEV_STATE(fut)->FutureType->tp_base->tp_clear((PyObject *)fut);
}

void
aioev_finalizer_report(PyObject *self, PyObject *loop, PyObject *message,
                       const char *key, PyObject *source_tb,
                       PyObject *exception)
{
    PyObject *exc = PyErr_GetRaisedException();
    PyObject *context = PyDict_New(), *res = NULL;
    if (message != NULL && context != NULL
        && PyDict_SetItemString(context, "message", message) == 0
        && (exception == NULL
            || PyDict_SetItemString(context, "exception", exception) == 0)
        && PyDict_SetItemString(context, key, self) == 0
        && (source_tb == NULL
            || PyDict_SetItemString(context, "source_traceback",
                                    source_tb) == 0)) {
        res = aioev_call_method_1(loop, "call_exception_handler", context);
    }
    if (res == NULL) {
        PyErr_WriteUnraisable(self);
    }
    Py_XDECREF(res);
    Py_XDECREF(context);
    Py_XDECREF(message);
    PyErr_SetRaisedException(exc);
}

/* Logs "exception was never retrieved" through the loop's handler. */
void
aioev_future_finalize(PyObject *self)
{
    FutureObj *fut = (FutureObj *)self;
    if (!fut->fut_log_tb || fut->fut_loop == NULL) {
        return;
    }
    fut->fut_log_tb = 0;
    PyObject *exc = PyErr_GetRaisedException();
    PyObject *type_name = PyType_GetName(Py_TYPE(fut));
    PyObject *message = type_name == NULL ? NULL : PyUnicode_FromFormat(
        "%U exception was never retrieved", type_name);
    Py_XDECREF(type_name);
    PyErr_SetRaisedException(exc);
    aioev_finalizer_report(self, fut->fut_loop, message, "future",
                           fut->fut_source_tb, fut->fut_exception);
}

static void
future_dealloc(FutureObj *fut)
{
    PyTypeObject *base = AIOEV_STATE(fut)->FutureType->tp_base;
    if (PyObject_CallFinalizerFromDealloc((PyObject *)fut) < 0) {
        return;  /* resurrected */
    }
    PyObject_GC_UnTrack(fut);
    future_reset(fut);
    aioev_asyncio_dealloc(base, (PyObject *)fut);
}

/* ------------------------------------------------------------------------
 * Methods
 * ------------------------------------------------------------------------ */

static int
future_init_slot(FutureObj *fut, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"loop", NULL};
    PyObject *loop = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$O:Future", kwlist,
                                     &loop)) {
        return -1;
    }
    return aioev_future_init(fut, loop);
}

static PyObject *
future_result(FutureObj *fut, PyObject *Py_UNUSED(ignored))
{
    aioev_state *st = AIOEV_STATE(fut);
    PyObject *res;
    /* No alive check: an uninitialised future is PENDING, and asyncio
     * answers InvalidStateError for it. */
    int rc = aioev_future_get_result(st, fut, &res);
    if (rc < 0) {
        return NULL;
    }
    if (rc == 0) {
        PyErr_SetObject((PyObject *)Py_TYPE(res), res);
        Py_DECREF(res);
        return NULL;
    }
    return res;
}

static PyObject *
future_exception(FutureObj *fut, PyObject *Py_UNUSED(ignored))
{
    aioev_state *st = AIOEV_STATE(fut);
    if (fut->fut_state == STATE_CANCELLED) {
        PyObject *exc = aioev_future_make_cancelled_error(st, fut);
        if (exc != NULL) {
            PyErr_SetObject(st->CancelledError, exc);
            Py_DECREF(exc);
        }
        return NULL;
    }
    if (fut->fut_state != STATE_FINISHED) {
        PyErr_SetString(st->InvalidStateError, "Exception is not set.");
        return NULL;
    }
    fut->fut_log_tb = 0;
    if (fut->fut_exception != NULL) {
        return Py_NewRef(fut->fut_exception);
    }
    Py_RETURN_NONE;
}

static PyObject *
future_set_result(FutureObj *fut, PyObject *res)
{
    return aioev_future_set_result(AIOEV_STATE(fut), fut, res);
}

static PyObject *
future_set_exception(FutureObj *fut, PyObject *exc)
{
    return aioev_future_set_exception(AIOEV_STATE(fut), fut, exc);
}

static PyObject *
future_add_done_callback(FutureObj *fut, PyObject *const *args,
                         size_t nargsf, PyObject *kwnames)
{
    aioev_state *st = AIOEV_STATE(fut);
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    PyObject *ctx = Py_None;
    int rc;

    if (nargs != 1) {
        PyErr_Format(PyExc_TypeError,
                     "add_done_callback() takes exactly one positional "
                     "argument (%zd given)", nargs);
        return NULL;
    }
    if (kwnames != NULL) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++) {
            PyObject *k = PyTuple_GET_ITEM(kwnames, i);
            if (!aioev_str_eq(k, "context")) {
                PyErr_Format(PyExc_TypeError,
                             "add_done_callback() got an unexpected keyword "
                             "argument '%S'", k);
                return NULL;
            }
            ctx = args[nargs + i];
        }
    }
    if (future_ensure_alive(fut) < 0) {
        return NULL;
    }
    if (ctx == Py_None) {
        ctx = PyContext_CopyCurrent();
        if (ctx == NULL) {
            return NULL;
        }
    }
    else {
        Py_INCREF(ctx);
    }
    rc = aioev_future_add_callback(st, fut, args[0], ctx);
    Py_DECREF(ctx);
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
future_remove_done_callback(FutureObj *fut, PyObject *fn)
{
    Py_ssize_t removed = 0;
    PyObject *newlist = NULL, *old = NULL;

    if (future_ensure_alive(fut) < 0) {
        return NULL;
    }
    if (fut->fut_callback0 != NULL) {
        /* __eq__ may remove or replace callback0: compare our own ref. */
        PyObject *cb0 = Py_NewRef(fut->fut_callback0);
        int eq = PyObject_RichCompareBool(cb0, fn, Py_EQ);
        if (eq < 0) {
            Py_DECREF(cb0);
            return NULL;
        }
        if (eq && fut->fut_callback0 == cb0) {
            Py_CLEAR(fut->fut_callback0);
            Py_CLEAR(fut->fut_context0);
            removed++;
        }
        Py_DECREF(cb0);
    }
    if (fut->fut_callbacks == NULL) {
        return PyLong_FromSsize_t(removed);
    }
    /* Compare on a copy: __eq__ may run code that changes the list. */
    old = PyList_GetSlice(fut->fut_callbacks, 0, PY_SSIZE_T_MAX);
    newlist = PyList_New(0);
    if (old == NULL || newlist == NULL) {
        goto error;
    }
    for (Py_ssize_t i = 0; i < PyList_GET_SIZE(old); i++) {
        PyObject *pair = PyList_GET_ITEM(old, i);
        int eq = PyObject_RichCompareBool(PyTuple_GET_ITEM(pair, 0), fn,
                                          Py_EQ);
        if (eq < 0) {
            goto error;
        }
        if (eq) {
            removed++;
        }
        else if (PyList_Append(newlist, pair) < 0) {
            goto error;
        }
    }
    if (PyList_GET_SIZE(newlist) == 0) {
        Py_CLEAR(fut->fut_callbacks);
        Py_DECREF(newlist);
    }
    else {
        Py_XSETREF(fut->fut_callbacks, newlist);
    }
    Py_DECREF(old);
    return PyLong_FromSsize_t(removed);

error:
    Py_XDECREF(old);
    Py_XDECREF(newlist);
    return NULL;
}

int
aioev_parse_cancel_args(PyObject *const *args, size_t nargsf,
                        PyObject *kwnames, PyObject **msg)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    *msg = Py_None;
    if (nargs > 1) {
        PyErr_SetString(PyExc_TypeError,
                        "cancel() takes at most 1 argument");
        return -1;
    }
    if (nargs == 1) {
        *msg = args[0];
    }
    if (kwnames != NULL) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++) {
            PyObject *k = PyTuple_GET_ITEM(kwnames, i);
            if (!aioev_str_eq(k, "msg") || nargs == 1) {
                PyErr_Format(PyExc_TypeError,
                             "cancel() got an unexpected keyword argument "
                             "'%S'", k);
                return -1;
            }
            *msg = args[nargs + i];
        }
    }
    return 0;
}

static PyObject *
future_cancel(FutureObj *fut, PyObject *const *args, size_t nargsf,
              PyObject *kwnames)
{
    PyObject *msg;
    if (aioev_parse_cancel_args(args, nargsf, kwnames, &msg) < 0
        || future_ensure_alive(fut) < 0) {
        return NULL;
    }
    int rc = aioev_future_cancel(AIOEV_STATE(fut), fut, msg);
    if (rc < 0) {
        return NULL;
    }
    return PyBool_FromLong(rc);
}

static PyObject *
future_cancelled(FutureObj *fut, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(fut->fut_state == STATE_CANCELLED);
}

static PyObject *
future_done(FutureObj *fut, PyObject *Py_UNUSED(ignored))
{
    return PyBool_FromLong(fut->fut_loop != NULL
                           && fut->fut_state != STATE_PENDING);
}

static PyObject *
future_get_loop(FutureObj *fut, PyObject *Py_UNUSED(ignored))
{
    if (future_ensure_alive(fut) < 0) {
        return NULL;
    }
    return Py_NewRef(fut->fut_loop);
}

static PyObject *
future_make_cancelled_error_meth(FutureObj *fut,
                                 PyObject *Py_UNUSED(ignored))
{
    return aioev_future_make_cancelled_error(AIOEV_STATE(fut), fut);
}

PyObject *
aioev_future_await(FutureObj *fut)
{
    if (future_ensure_alive(fut) < 0) {
        return NULL;
    }
    return future_new_iter(AIOEV_STATE(fut), fut);
}

static PyObject *
future_repr(FutureObj *fut)
{
    aioev_state *st = AIOEV_STATE(fut);
    return PyObject_CallOneArg(st->future_repr, (PyObject *)fut);
}

/* ------------------------------------------------------------------------
 * Attributes asyncio's own code reads and writes
 * ------------------------------------------------------------------------ */

static PyObject *
fut_get_blocking(FutureObj *fut, void *c)
{
    if (future_ensure_alive(fut) < 0) {
        return NULL;
    }
    return PyBool_FromLong(fut->fut_blocking);
}

static int
fut_set_blocking(FutureObj *fut, PyObject *val, void *c)
{
    if (future_ensure_alive(fut) < 0) {
        return -1;
    }
    return aioev_setter_bool(val, &fut->fut_blocking);
}

static PyObject *
fut_get_log_traceback(FutureObj *fut, void *c)
{
    if (future_ensure_alive(fut) < 0) {
        return NULL;
    }
    return PyBool_FromLong(fut->fut_log_tb);
}

static int
fut_set_log_traceback(FutureObj *fut, PyObject *val, void *c)
{
    int b;
    if (aioev_setter_bool(val, &b) < 0) {
        return -1;
    }
    if (b) {
        PyErr_SetString(PyExc_ValueError,
                        "_log_traceback can only be set to False");
        return -1;
    }
    fut->fut_log_tb = 0;
    return 0;
}

static PyObject *
fut_get_loop_attr(FutureObj *fut, void *c)
{
    return Py_NewRef(fut->fut_loop ? fut->fut_loop : Py_None);
}

/* Appends (cb, ctx) to list; a Task standing for its own wake-up is
 * shown as a callable, as asyncio would show its bound method. */
static int
append_callback(aioev_state *st, PyObject *list, PyObject *cb, PyObject *ctx)
{
    PyObject *shown = Py_IS_TYPE(cb, st->TaskType)
        ? aioev_task_callback(st, (TaskObj *)cb, NULL, 1) : Py_NewRef(cb);
    if (shown == NULL) {
        return -1;
    }
    PyObject *pair = PyTuple_Pack(2, shown, ctx);
    Py_DECREF(shown);
    if (pair == NULL) {
        return -1;
    }
    int rc = PyList_Append(list, pair);
    Py_DECREF(pair);
    return rc;
}

static PyObject *
fut_get_callbacks(FutureObj *fut, void *c)
{
    aioev_state *st = AIOEV_STATE(fut);
    if (future_ensure_alive(fut) < 0) {
        return NULL;
    }
    PyObject *list = PyList_New(0);
    if (list == NULL) {
        return NULL;
    }
    if (fut->fut_callback0 != NULL
        && append_callback(st, list, fut->fut_callback0,
                           fut->fut_context0) < 0) {
        Py_DECREF(list);
        return NULL;
    }
    if (fut->fut_callbacks != NULL) {
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(fut->fut_callbacks);
             i++) {
            PyObject *pair = PyList_GET_ITEM(fut->fut_callbacks, i);
            if (append_callback(st, list, PyTuple_GET_ITEM(pair, 0),
                                PyTuple_GET_ITEM(pair, 1)) < 0) {
                Py_DECREF(list);
                return NULL;
            }
        }
    }
    if (PyList_GET_SIZE(list) == 0) {
        Py_DECREF(list);
        Py_RETURN_NONE;
    }
    return list;
}

static PyObject *
fut_get_result_attr(FutureObj *fut, void *c)
{
    return Py_NewRef(fut->fut_result ? fut->fut_result : Py_None);
}

static PyObject *
fut_get_exception_attr(FutureObj *fut, void *c)
{
    return Py_NewRef(fut->fut_exception ? fut->fut_exception : Py_None);
}

static PyObject *
fut_get_source_tb(FutureObj *fut, void *c)
{
    return Py_NewRef(fut->fut_source_tb ? fut->fut_source_tb : Py_None);
}

static PyObject *
fut_get_cancel_message(FutureObj *fut, void *c)
{
    return Py_NewRef(fut->fut_cancel_msg ? fut->fut_cancel_msg : Py_None);
}

static int
fut_set_cancel_message(FutureObj *fut, PyObject *val, void *c)
{
    if (val == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete attribute");
        return -1;
    }
    Py_XSETREF(fut->fut_cancel_msg, Py_NewRef(val));
    return 0;
}

static PyObject *
fut_get_state(FutureObj *fut, void *c)
{
    if (future_ensure_alive(fut) < 0) {
        return NULL;
    }
    return state_name(fut->fut_state);
}

/* ------------------------------------------------------------------------
 * Tables, slots, spec (the Task type reuses the tables)
 * ------------------------------------------------------------------------ */

#define FASTKW (METH_FASTCALL | METH_KEYWORDS)

PyMethodDef aioev_future_methods[] = {
    {"result", (PyCFunction)future_result, METH_NOARGS,
     "Return the result this future represents."},
    {"exception", (PyCFunction)future_exception, METH_NOARGS,
     "Return the exception that was set on this future."},
    {"set_result", (PyCFunction)future_set_result, METH_O,
     "Mark the future done and set its result."},
    {"set_exception", (PyCFunction)future_set_exception, METH_O,
     "Mark the future done and set an exception."},
    {"add_done_callback",
     (PyCFunction)(void (*)(void))future_add_done_callback, FASTKW,
     "Add a callback to be run when the future becomes done."},
    {"remove_done_callback", (PyCFunction)future_remove_done_callback,
     METH_O, "Remove all instances of a callback; return the count."},
    {"cancel", (PyCFunction)(void (*)(void))future_cancel, FASTKW,
     "Cancel the future and schedule callbacks."},
    {"cancelled", (PyCFunction)future_cancelled, METH_NOARGS,
     "Return True if the future was cancelled."},
    {"done", (PyCFunction)future_done, METH_NOARGS,
     "Return True if the future is done."},
    {"get_loop", (PyCFunction)future_get_loop, METH_NOARGS,
     "Return the event loop the Future is bound to."},
    {"_make_cancelled_error", (PyCFunction)future_make_cancelled_error_meth,
     METH_NOARGS, "Create the CancelledError to raise if cancelled."},
    {"__class_getitem__", Py_GenericAlias, METH_O | METH_CLASS,
     "See PEP 585"},
    {NULL, NULL}
};

PyGetSetDef aioev_future_getset[] = {
    {"_state", (getter)fut_get_state, NULL, NULL, NULL},
    {"_asyncio_future_blocking", (getter)fut_get_blocking,
     (setter)fut_set_blocking, NULL, NULL},
    {"_log_traceback", (getter)fut_get_log_traceback,
     (setter)fut_set_log_traceback, NULL, NULL},
    {"_loop", (getter)fut_get_loop_attr, NULL, NULL, NULL},
    {"_callbacks", (getter)fut_get_callbacks, NULL, NULL, NULL},
    {"_result", (getter)fut_get_result_attr, NULL, NULL, NULL},
    {"_exception", (getter)fut_get_exception_attr, NULL, NULL, NULL},
    {"_source_traceback", (getter)fut_get_source_tb, NULL, NULL, NULL},
    {"_cancel_message", (getter)fut_get_cancel_message,
     (setter)fut_set_cancel_message, NULL, NULL},
    {"__dict__", PyObject_GenericGetDict, PyObject_GenericSetDict, NULL,
     NULL},
    {NULL}
};

PyDoc_STRVAR(future_doc,
"Future(*, loop=None)\n--\n\n"
"A Future represents an eventual result of an asynchronous operation.\n"
"Same API as asyncio.Future; implemented in C by aioev.");

static PyType_Slot future_slots[] = {
    {Py_tp_doc, (void *)future_doc},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_init, future_init_slot},
    {Py_tp_dealloc, future_dealloc},
    {Py_tp_traverse, future_traverse},
    {Py_tp_clear, future_clear},
    {Py_tp_finalize, aioev_future_finalize},
    {Py_tp_repr, future_repr},
    {Py_tp_iter, aioev_future_await},
    {Py_am_await, aioev_future_await},
    {Py_tp_methods, aioev_future_methods},
    {Py_tp_getset, aioev_future_getset},
    {0, NULL},
};

static PyType_Spec future_spec = {
    .name = "aioev._core.Future",
    .basicsize = sizeof(FutureObj),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .slots = future_slots,
};

/* ------------------------------------------------------------------------
 * FutureIter: what `await fut` iterates
 * ------------------------------------------------------------------------ */

static PyObject *
future_new_iter(aioev_state *st, FutureObj *fut)
{
    FutureIterObj *it = PyObject_GC_New(FutureIterObj, st->FutureIterType);
    if (it == NULL) {
        return NULL;
    }
    it->future = (FutureObj *)Py_NewRef(fut);
    PyObject_GC_Track(it);
    return (PyObject *)it;
}

PySendResult
aioev_future_await_step(FutureObj *fut, PyObject **result)
{
    *result = NULL;
    if (fut->fut_state == STATE_PENDING) {
        if (!fut->fut_blocking) {
            fut->fut_blocking = 1;
            *result = Py_NewRef(fut);
            return PYGEN_NEXT;
        }
        PyErr_SetString(PyExc_RuntimeError,
                        "await wasn't used with future");
        return PYGEN_ERROR;
    }
    *result = future_result(fut, NULL);
    return *result ? PYGEN_RETURN : PYGEN_ERROR;
}

PyObject *
aioev_iternext_from_send(PySendResult r, PyObject *res)
{
    if (r == PYGEN_ERROR || r == PYGEN_NEXT) {
        return res;
    }
    if (res == Py_None) {
        /* set, not implied: send() methods return this too */
        Py_DECREF(res);
        PyErr_SetNone(PyExc_StopIteration);
        return NULL;
    }
    /* Wrap the value so tuples and exceptions survive StopIteration. */
    PyObject *stop = PyObject_CallOneArg(PyExc_StopIteration, res);
    Py_DECREF(res);
    if (stop != NULL) {
        PyErr_SetObject(PyExc_StopIteration, stop);
        Py_DECREF(stop);
    }
    return NULL;
}

void
aioev_set_thrown(PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *exc = args[0];
    if (PyExceptionClass_Check(exc)) {
        PyObject *val = nargs > 1 && args[1] != Py_None ? args[1] : NULL;
        PyErr_SetObject(exc, val);
    }
    else if (PyExceptionInstance_Check(exc)) {
        PyErr_SetObject((PyObject *)Py_TYPE(exc), exc);
    }
    else {
        PyErr_SetString(PyExc_TypeError,
                        "exceptions must be classes or instances deriving "
                        "from BaseException");
    }
}

void
aioev_warn_never_awaited(const char *prefix, const char *name)
{
    PyObject *exc = PyErr_GetRaisedException();
    if (PyErr_WarnFormat(PyExc_RuntimeWarning, 1,
                         "coroutine '%s%s' was never awaited", prefix, name)
        < 0) {
        PyErr_WriteUnraisable(NULL);
    }
    PyErr_SetRaisedException(exc);
}

static PySendResult
futureiter_am_send(FutureIterObj *it, PyObject *arg, PyObject **result)
{
    FutureObj *fut = it->future;
    if (fut == NULL) {
        *result = Py_NewRef(Py_None);
        return PYGEN_RETURN;
    }
    PySendResult r = aioev_future_await_step(fut, result);
    if (r != PYGEN_NEXT) {
        it->future = NULL;
        Py_DECREF(fut);
    }
    return r;
}

static PyObject *
futureiter_iternext(FutureIterObj *it)
{
    PyObject *res;
    PySendResult r = futureiter_am_send(it, Py_None, &res);
    return aioev_iternext_from_send(r, res);
}

static PyObject *
futureiter_send(FutureIterObj *it, PyObject *arg)
{
    /* The value sent is ignored, as asyncio's C future does. */
    return futureiter_iternext(it);
}

static PyObject *
futureiter_throw(FutureIterObj *it, PyObject *const *args, Py_ssize_t nargs)
{
    PyObject *type, *val = NULL, *tb = NULL;

    if (nargs < 1 || nargs > 3) {
        PyErr_SetString(PyExc_TypeError, "throw() takes 1 to 3 arguments");
        return NULL;
    }
    type = args[0];
#ifdef AIOEV_PY312
    if (nargs > 1 && PyErr_WarnEx(PyExc_DeprecationWarning,
                                  "the (type, exc, tb) signature of throw() "
                                  "is deprecated, use the single-arg "
                                  "signature instead.", 1) < 0) {
        return NULL;
    }
#endif
    if (nargs >= 2) {
        val = args[1];
    }
    if (nargs == 3) {
        tb = args[2];
    }
    if (val == Py_None) {
        val = NULL;
    }
    if (tb == Py_None) {
        tb = NULL;
    }
    else if (tb != NULL && !PyTraceBack_Check(tb)) {
        PyErr_SetString(PyExc_TypeError,
                        "throw() third argument must be a traceback");
        return NULL;
    }
    Py_INCREF(type);
    Py_XINCREF(val);
    Py_XINCREF(tb);
    if (PyExceptionClass_Check(type)) {
        PyErr_NormalizeException(&type, &val, &tb);
    }
    else if (PyExceptionInstance_Check(type)) {
        if (val != NULL) {
            PyErr_SetString(PyExc_TypeError,
                            "instance exception may not have a separate "
                            "value");
            goto fail;
        }
        val = type;
        type = Py_NewRef(PyExceptionInstance_Class(type));
        if (tb == NULL) {
            tb = PyException_GetTraceback(val);
        }
    }
    else {
        PyErr_SetString(PyExc_TypeError,
                        "exceptions must be classes deriving BaseException "
                        "or instances of such a class");
        goto fail;
    }
    Py_CLEAR(it->future);
    PyErr_Restore(type, val, tb);
    return NULL;

fail:
    Py_DECREF(type);
    Py_XDECREF(val);
    Py_XDECREF(tb);
    return NULL;
}

static PyObject *
futureiter_close(FutureIterObj *it, PyObject *Py_UNUSED(ignored))
{
    Py_CLEAR(it->future);
    Py_RETURN_NONE;
}

static int
futureiter_traverse(FutureIterObj *it, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(it));
    Py_VISIT(it->future);
    return 0;
}

static void
futureiter_dealloc(FutureIterObj *it)
{
    PyTypeObject *tp = Py_TYPE(it);
    PyObject_GC_UnTrack(it);
    Py_CLEAR(it->future);
    PyObject_GC_Del(it);
    Py_DECREF(tp);
}

static PyMethodDef futureiter_methods[] = {
    {"send", (PyCFunction)futureiter_send, METH_O, NULL},
    {"throw", (PyCFunction)(void (*)(void))futureiter_throw, METH_FASTCALL,
     NULL},
    {"close", (PyCFunction)futureiter_close, METH_NOARGS, NULL},
    {NULL, NULL}
};

static PyType_Slot futureiter_slots[] = {
    {Py_tp_dealloc, futureiter_dealloc},
    {Py_tp_traverse, futureiter_traverse},
    {Py_tp_iter, PyObject_SelfIter},
    {Py_tp_iternext, futureiter_iternext},
    {Py_am_send, futureiter_am_send},
    {Py_tp_methods, futureiter_methods},
    {0, NULL},
};

static PyType_Spec futureiter_spec = {
    .name = "aioev._core.FutureIter",
    .basicsize = sizeof(FutureIterObj),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
        | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = futureiter_slots,
};

PyObject *
aioev_asyncio_base(const char *name)
{
    PyObject *mod = PyImport_ImportModule("_asyncio");
    PyObject *base = mod ? PyObject_GetAttrString(mod, name) : NULL;
    Py_XDECREF(mod);
    if (base == NULL) {
        return NULL;
    }
    if (!PyType_Check(base)
        || ((PyTypeObject *)base)->tp_basicsize > AIOEV_ASYNCIO_PART) {
        PyErr_Format(PyExc_ImportError, "aioev was built for a smaller "
                     "_asyncio.%s than this Python's: rebuild aioev for it",
                     name);
        Py_DECREF(base);
        return NULL;
    }
    return base;
}

int
aioev_future_init_types(PyObject *mod, aioev_state *st)
{
    st->FutureIterType = (PyTypeObject *)PyType_FromModuleAndSpec(
        mod, &futureiter_spec, NULL);
    if (st->FutureIterType == NULL) {
        return -1;
    }
    PyObject *base = aioev_asyncio_base("Future");
    if (base == NULL) {
        return -1;
    }
    st->FutureType = (PyTypeObject *)PyType_FromModuleAndSpec(
        mod, &future_spec, base);
    Py_DECREF(base);
    if (st->FutureType == NULL) {
        return -1;
    }
    return PyModule_AddType(mod, st->FutureType);
}
