/* Handle and TimerHandle: a callback with its arguments and contextvars
 * context, as returned by call_soon/call_later/call_at. A TimerHandle also
 * lives in its loop's timer heap (loop.c) until it fires or is cancelled. */
#include "module.h"
#include "pythread.h"

/* ------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------ */

/* Returns a new, not yet GC-tracked Handle (or TimerHandle if tp says
 * so). The args tuple and context are taken as new references. */
HandleObj *
aioev_handle_new(aioev_state *st, PyTypeObject *tp, PyObject *loop,
                 PyObject *callback, PyObject *args, PyObject *context)
{
    HandleObj *h;
    if (tp == st->HandleType && st->handle_free_n > 0) {
        h = st->handle_free[--st->handle_free_n];
        PyObject_Init((PyObject *)h, tp);
    }
    else if (tp == st->TimerHandleType && st->timer_free_n > 0) {
        h = st->timer_free[--st->timer_free_n];
        PyObject_Init((PyObject *)h, tp);
    }
    else {
        h = PyObject_GC_New(HandleObj, tp);
        if (h == NULL) {
            return NULL;
        }
    }
    h->callback = Py_NewRef(callback);
    h->args = Py_NewRef(args);
    h->context = Py_NewRef(context);
    h->loop = Py_NewRef(loop);
    h->source_tb = NULL;
    h->repr_cache = NULL;
    h->weakreflist = NULL;
    h->running_in = 0;
    h->cancelled = 0;
    h->threadsafe = 0;
    if (tp == st->TimerHandleType) {
        TimerHandleObj *t = (TimerHandleObj *)h;
        t->when = 0.0;
        t->scheduled = 0;
    }
    /* Left untracked: a handle queued on our loop is owned by the loop,
     * which tracks it once it leaves the queue still shared (loop.c). */
    return h;
}

/* Called on a callback error: KeyboardInterrupt and SystemExit propagate
 * (return -1), anything else is reported to the loop and swallowed. */
static int
handle_error(aioev_state *st, PyObject *loop, PyObject *handle,
             PyObject *callback, PyObject *args)
{
    if (PyErr_ExceptionMatches(PyExc_KeyboardInterrupt)
        || PyErr_ExceptionMatches(PyExc_SystemExit)) {
        return -1;
    }
    aioev_report_callback_error(st, loop, handle, callback, args);
    return 0;
}

static int handle_run_locked(HandleObj *h);

/* func(*args) run in ctx, as asyncio's Handle does ctx.run(func, *args):
 * a contextvars.Context is entered directly; anything else has its run()
 * called (an object without one raises AttributeError, as in asyncio).
 * New reference, or NULL with an exception set. */
PyObject *
aioev_context_call(PyObject *ctx, PyObject *func, PyObject *const *args,
                   Py_ssize_t nargs)
{
    PyObject *res;
    if (PyContext_CheckExact(ctx)) {
        if (PyContext_Enter(ctx) < 0) {
            return NULL;
        }
        res = PyObject_Vectorcall(func, args, (size_t)nargs, NULL);
        if (PyContext_Exit(ctx) < 0) {
            Py_CLEAR(res);
        }
        return res;
    }
    PyObject *run = PyObject_GetAttrString(ctx, "run");
    if (run == NULL) {
        return NULL;
    }
    res = aioev_call_with_first(run, func, args, (size_t)nargs, NULL);
    Py_DECREF(run);
    return res;
}

/* Contexts the loop copied for its handles go untracked while the loop
 * owns them and must die tracked (context_tp_dealloc untracks
 * unconditionally); a context given by the caller was never untracked,
 * and may not even be a Context (asyncio takes anything with a run()). */
void
aioev_context_retrack(PyObject *ctx)
{
    if (ctx != NULL && PyContext_CheckExact(ctx)
        && !PyObject_GC_IsTracked(ctx)) {
        PyObject_GC_Track(ctx);
    }
}

/* A call_soon_threadsafe handle runs holding its loop's lock, for
 * cancel() from another thread to wait on (loop.c). */
int
aioev_handle_run(HandleObj *h)
{
    if (!h->threadsafe) {
        return handle_run_locked(h);
    }
    int took = aioev_loop_ts_enter(h->loop);
    int rc = 0;
    if (!h->cancelled) {  /* may have been, while we waited */
        h->running_in = PyThread_get_thread_ident();
        rc = handle_run_locked(h);
        h->running_in = 0;
    }
    aioev_loop_ts_exit(h->loop, took);
    return rc;
}

/* cancel()/cancelled() from a thread other than the one running the
 * handle's callback wait for the callback to end, as asyncio's
 * _ThreadSafeHandle (its lock is reentrant: the callback itself does not
 * wait). */
static void
ts_wait(HandleObj *h)
{
    if (h->running_in != 0
        && h->running_in != PyThread_get_thread_ident()) {
        aioev_loop_ts_wait(h->loop);
    }
}

static int
handle_run_locked(HandleObj *h)
{
    PyObject *res;

    /* Owned for the call and its report: cancel(), from the callback
     * itself or from a thread while the callback has released the GIL,
     * drops h->callback and h->args (and with them what they alone
     * kept alive, e.g. the socket of a bound sock.recv). */
    PyObject *cb = Py_NewRef(h->callback), *args = Py_NewRef(h->args);
    int rc = 0;
    res = aioev_context_call(h->context, cb, &PyTuple_GET_ITEM(args, 0),
                             PyTuple_GET_SIZE(args));
    if (res == NULL) {
        rc = handle_error(AIOEV_STATE(h), h->loop, (PyObject *)h, cb, args);
    }
    Py_XDECREF(res);
    Py_DECREF(cb);
    Py_DECREF(args);
    return rc;
}

void
aioev_handle_track(PyObject *obj)
{
    HandleObj *h = (HandleObj *)obj;
    if (!PyObject_GC_IsTracked(obj)) {
        PyObject_GC_Track(obj);
    }
    aioev_context_retrack(h->context);
}

void
aioev_handle_freelist_clear(aioev_state *st)
{
    st->freelist_on = 0;
    while (st->handle_free_n > 0) {
        PyObject_GC_Del(st->handle_free[--st->handle_free_n]);
    }
    while (st->timer_free_n > 0) {
        PyObject_GC_Del(st->timer_free[--st->timer_free_n]);
    }
}

/* ------------------------------------------------------------------------
 * traverse / clear / dealloc
 * ------------------------------------------------------------------------ */

static int
handle_traverse(HandleObj *h, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(h));
    Py_VISIT(h->callback);
    Py_VISIT(h->args);
    Py_VISIT(h->context);
    Py_VISIT(h->loop);
    Py_VISIT(h->source_tb);
    Py_VISIT(h->repr_cache);
    return 0;
}

static int
handle_clear(HandleObj *h)
{
    Py_CLEAR(h->callback);
    Py_CLEAR(h->args);
    aioev_context_retrack(h->context);
    Py_CLEAR(h->context);
    Py_CLEAR(h->loop);
    Py_CLEAR(h->source_tb);
    Py_CLEAR(h->repr_cache);
    return 0;
}

static void
handle_dealloc(HandleObj *h)
{
    PyTypeObject *tp = Py_TYPE(h);
    PyObject_GC_UnTrack(h);
    if (h->weakreflist != NULL) {
        PyObject_ClearWeakRefs((PyObject *)h);
    }
    handle_clear(h);
    aioev_state *st = AIOEV_STATE(h);
    if (st->freelist_on && tp == st->HandleType
        && st->handle_free_n < AIOEV_FREELIST_MAX) {
        st->handle_free[st->handle_free_n++] = h;
    }
    else if (st->freelist_on && tp == st->TimerHandleType
             && st->timer_free_n < AIOEV_FREELIST_MAX) {
        st->timer_free[st->timer_free_n++] = h;
    }
    else {
        tp->tp_free(h);
    }
    Py_DECREF(tp);
}

/* ------------------------------------------------------------------------
 * Methods
 * ------------------------------------------------------------------------ */

static PyObject *
handle_cancel(HandleObj *h, PyObject *Py_UNUSED(ignored))
{
    aioev_state *st = AIOEV_STATE(h);
    ts_wait(h);
    if (!h->cancelled) {
        h->cancelled = 1;
        if (aioev_is_loop(st, h->loop) && aioev_loop_get_debug(
                (LoopObj *)h->loop)) {
            /* Keep a repr that still shows the callback, as asyncio
             * does in debug mode. */
            PyObject *r = PyObject_Repr((PyObject *)h);
            if (r == NULL) {
                return NULL;
            }
            Py_XSETREF(h->repr_cache, r);
        }
        if (Py_IS_TYPE(h, st->TimerHandleType)) {
            TimerHandleObj *t = (TimerHandleObj *)h;
            if (t->scheduled && aioev_is_loop(st, h->loop)) {
                aioev_loop_timer_cancelled((LoopObj *)h->loop, t);
            }
        }
        Py_CLEAR(h->callback);
        Py_SETREF(h->args, Py_NewRef(st->empty_tuple));
    }
    Py_RETURN_NONE;
}

static PyObject *
handle_cancelled(HandleObj *h, PyObject *Py_UNUSED(ignored))
{
    ts_wait(h);
    return PyBool_FromLong(h->cancelled);
}

static PyObject *
handle_get_context(HandleObj *h, PyObject *Py_UNUSED(ignored))
{
    /* Once shared, the handle and its context are tracked as usual. */
    aioev_handle_track((PyObject *)h);
    return Py_NewRef(h->context);
}

static PyObject *
handle_get_context_attr(HandleObj *h, void *c)
{
    return handle_get_context(h, NULL);
}

static PyObject *
handle_run_meth(HandleObj *h, PyObject *Py_UNUSED(ignored))
{
    if (h->cancelled || h->callback == NULL) {
        Py_RETURN_NONE;
    }
    if (aioev_handle_run(h) < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
handle_repr(HandleObj *h)
{
    aioev_state *st = AIOEV_STATE(h);
    if (h->repr_cache != NULL) {
        return Py_NewRef(h->repr_cache);
    }
    return PyObject_CallOneArg(st->handle_repr, (PyObject *)h);
}

static PyObject *
timer_when(TimerHandleObj *t, PyObject *Py_UNUSED(ignored))
{
    return PyFloat_FromDouble(t->when);
}

static PyObject *
timer_richcompare(TimerHandleObj *a, PyObject *b, int op)
{
    aioev_state *st = AIOEV_STATE(a);
    if (!PyObject_TypeCheck(b, st->TimerHandleType)) {
        Py_RETURN_NOTIMPLEMENTED;
    }
    TimerHandleObj *o = (TimerHandleObj *)b;
    if (op == Py_EQ || op == Py_NE) {
        int eq = (PyObject *)a == b;
        if (!eq && a->when == o->when) {
            HandleObj *x = (HandleObj *)a, *y = (HandleObj *)o;
            eq = x->cancelled == y->cancelled;
            if (eq && x->callback && y->callback) {
                eq = PyObject_RichCompareBool(x->callback, y->callback,
                                              Py_EQ);
                if (eq > 0) {
                    eq = PyObject_RichCompareBool(x->args, y->args, Py_EQ);
                }
                if (eq < 0) {
                    return NULL;
                }
            }
        }
        return PyBool_FromLong(op == Py_EQ ? eq : !eq);
    }
    Py_RETURN_RICHCOMPARE(a->when, o->when, op);
}

static Py_hash_t
timer_hash(TimerHandleObj *t)
{
    return _Py_HashDouble((PyObject *)t, t->when);
}

static PyObject *
handle_get_callback(HandleObj *h, void *c)
{
    return Py_NewRef(h->callback ? h->callback : Py_None);
}

static PyObject *
handle_get_args(HandleObj *h, void *c)
{
    if (h->callback == NULL) {
        Py_RETURN_NONE;
    }
    return Py_NewRef(h->args);
}

static PyObject *
handle_get_source_tb(HandleObj *h, void *c)
{
    return Py_NewRef(h->source_tb ? h->source_tb : Py_None);
}

static PyObject *
handle_get_cancelled_attr(HandleObj *h, void *c)
{
    return PyBool_FromLong(h->cancelled);
}

static PyObject *
timer_get_when(TimerHandleObj *t, void *c)
{
    return PyFloat_FromDouble(t->when);
}

static PyObject *
timer_get_scheduled(TimerHandleObj *t, void *c)
{
    return PyBool_FromLong(t->scheduled);
}

/* ------------------------------------------------------------------------
 * Tables, slots, specs
 * ------------------------------------------------------------------------ */

static PyMethodDef handle_methods[] = {
    {"cancel", (PyCFunction)handle_cancel, METH_NOARGS, NULL},
    {"cancelled", (PyCFunction)handle_cancelled, METH_NOARGS, NULL},
    {"get_context", (PyCFunction)handle_get_context, METH_NOARGS, NULL},
    {"_run", (PyCFunction)handle_run_meth, METH_NOARGS, NULL},
    {NULL, NULL}
};

static PyMethodDef timer_methods[] = {
    {"when", (PyCFunction)timer_when, METH_NOARGS, NULL},
    {NULL, NULL}
};

static PyGetSetDef handle_getset[] = {
    {"_callback", (getter)handle_get_callback, NULL, NULL, NULL},
    {"_args", (getter)handle_get_args, NULL, NULL, NULL},
    {"_source_traceback", (getter)handle_get_source_tb, NULL, NULL, NULL},
    {"_cancelled", (getter)handle_get_cancelled_attr, NULL, NULL, NULL},
    {"_context", (getter)handle_get_context_attr, NULL, NULL, NULL},
    {NULL}
};

static PyGetSetDef timer_getset[] = {
    {"_when", (getter)timer_get_when, NULL, NULL, NULL},
    {"_scheduled", (getter)timer_get_scheduled, NULL, NULL, NULL},
    {NULL}
};

static PyMemberDef handle_members[] = {
    {"_loop", T_OBJECT, offsetof(HandleObj, loop), READONLY, NULL},
    {"__weaklistoffset__", T_PYSSIZET, offsetof(HandleObj, weakreflist),
     READONLY, NULL},
    {NULL}
};

PyDoc_STRVAR(handle_doc, "Object returned by callback registration methods.");

static PyType_Slot handle_slots[] = {
    {Py_tp_doc, (void *)handle_doc},
    {Py_tp_dealloc, handle_dealloc},
    {Py_tp_traverse, handle_traverse},
    {Py_tp_clear, handle_clear},
    {Py_tp_repr, handle_repr},
    {Py_tp_methods, handle_methods},
    {Py_tp_getset, handle_getset},
    {Py_tp_members, handle_members},
    {0, NULL},
};

/* Only the loop makes handles: object.__new__ would leave NULL fields. */
static PyType_Spec handle_spec = {
    .name = "aioev._core.Handle",
    .basicsize = sizeof(HandleObj),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE
        | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = handle_slots,
};

static PyType_Slot timer_slots[] = {
    {Py_tp_doc, "Object returned by timed callback registration methods."},
    {Py_tp_dealloc, handle_dealloc},  /* not subtype_dealloc's detour */
    {Py_tp_traverse, handle_traverse},
    {Py_tp_clear, handle_clear},
    {Py_tp_methods, timer_methods},
    {Py_tp_getset, timer_getset},
    {Py_tp_richcompare, timer_richcompare},
    {Py_tp_hash, timer_hash},
    {0, NULL},
};

static PyType_Spec timer_spec = {
    .name = "aioev._core.TimerHandle",
    .basicsize = sizeof(TimerHandleObj),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
        | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = timer_slots,
};

int
aioev_handle_init_types(PyObject *mod, aioev_state *st)
{
    st->HandleType = (PyTypeObject *)PyType_FromModuleAndSpec(
        mod, &handle_spec, NULL);
    if (st->HandleType == NULL) {
        return -1;
    }
    st->TimerHandleType = (PyTypeObject *)PyType_FromModuleAndSpec(
        mod, &timer_spec, (PyObject *)st->HandleType);
    if (st->TimerHandleType == NULL) {
        return -1;
    }
    if (PyModule_AddType(mod, st->HandleType) < 0
        || PyModule_AddType(mod, st->TimerHandleType) < 0) {
        return -1;
    }
    return 0;
}
