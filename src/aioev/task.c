/* Task: runs a coroutine on a loop, as asyncio.Task does. On our loop a
 * step is queued as the task itself (READY_TASK_STEP) and a task waiting
 * on our Future registers itself as the callback (READY_TASK_WAKEUP):
 * no Handle or bound method per step. On another loop, or with another
 * kind of future, the TaskCallback object below is the callable. */
#include "module.h"

/* A callable standing for task.__step(exc) or task.__wakeup(fut). */
typedef struct {
    PyObject_HEAD
    TaskObj *task;
    PyObject *arg;   /* exc (step) or unused (wakeup) */
    int wakeup;
} TaskCallbackObj;

static int task_cancel_impl(aioev_state *st, TaskObj *task, PyObject *msg);

/* ------------------------------------------------------------------------
 * Helpers
 * ------------------------------------------------------------------------ */

static PyObject *
task_callback_new(aioev_state *st, TaskObj *task, PyObject *arg, int wakeup)
{
    TaskCallbackObj *cb = PyObject_GC_New(TaskCallbackObj,
                                          st->TaskCallbackType);
    if (cb == NULL) {
        return NULL;
    }
    cb->task = (TaskObj *)Py_NewRef(task);
    cb->arg = Py_XNewRef(arg);
    cb->wakeup = wakeup;
    PyObject_GC_Track(cb);
    return (PyObject *)cb;
}

PyObject *
aioev_task_callback(aioev_state *st, TaskObj *task, PyObject *exc,
                    int wakeup)
{
    return task_callback_new(st, task, exc, wakeup);
}

/* Schedules task.__step(exc) (exc may be NULL) on the task's loop. */
static int
task_schedule_step(aioev_state *st, TaskObj *task, PyObject *exc)
{
    if (task->task_native_loop) {
        LoopObj *loop = (LoopObj *)task->task_loop;
        if (aioev_loop_check_call_soon(loop) < 0) {
            return -1;
        }
        return aioev_loop_enqueue(loop, READY_TASK_STEP, (PyObject *)task,
                                  exc, NULL);
    }
    PyObject *cb = task_callback_new(st, task, exc, 0);
    if (cb == NULL) {
        return -1;
    }
    PyObject *args[4] = {NULL, task->task_loop, cb, task->task_context};
    int rc = aioev_call_soon_any(st->str_call_soon, st->kw_context, args, 2);
    Py_DECREF(cb);
    if (rc < 0) {
        return -1;
    }
    return 0;
}

/* Schedules a step that throws a RuntimeError built from fmt. */
static int
task_schedule_error(aioev_state *st, TaskObj *task, const char *fmt, ...)
{
    va_list vargs;
    va_start(vargs, fmt);
    PyObject *msg = PyUnicode_FromFormatV(fmt, vargs);
    va_end(vargs);
    if (msg == NULL) {
        return -1;
    }
    PyObject *exc = PyObject_CallOneArg(PyExc_RuntimeError, msg);
    Py_DECREF(msg);
    if (exc == NULL) {
        return -1;
    }
    int rc = task_schedule_step(st, task, exc);
    Py_DECREF(exc);
    return rc;
}

static int
call_hook(PyObject *hook, PyObject *loop, PyObject *task)
{
    PyObject *args[2] = {loop, task};
    PyObject *r = PyObject_Vectorcall(hook, args, 2, NULL);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* fut.cancel(msg) for any future; returns -1/0/1. */
static int
cancel_future(aioev_state *st, PyObject *fut, PyObject *msg)
{
    /* Subclasses may override cancel(): only exact types go direct. */
    if (Py_IS_TYPE(fut, st->TaskType)) {
        return task_cancel_impl(st, (TaskObj *)fut, msg);
    }
    if (Py_IS_TYPE(fut, st->FutureType)) {
        return aioev_future_cancel(st, (FutureObj *)fut, msg);
    }
    PyObject *r = aioev_call_method_1(fut, "cancel", msg);
    if (r == NULL) {
        return -1;
    }
    int b = PyObject_IsTrue(r);
    Py_DECREF(r);
    return b;
}

/* The loop of a foreign future: get_loop(), else its _loop. */
static PyObject *
foreign_future_loop(PyObject *fut)
{
    PyObject *meth;
    if (aioev_getattr_opt(fut, "get_loop", &meth) < 0) {
        return NULL;
    }
    if (meth != NULL) {
        PyObject *r = PyObject_CallNoArgs(meth);
        Py_DECREF(meth);
        return r;
    }
    return PyObject_GetAttrString(fut, "_loop");
}

/* 3.14: record (and forget, on wake-up) which task awaits a future, for
 * asyncio.capture_call_graph; asyncio's own function does the book-keeping
 * in the _asyncio part of our objects (a no-op for other futures). */
static int
awaited_by(PyObject *func, PyObject *fut, TaskObj *task)
{
#if PY_VERSION_HEX >= 0x030E0000
    PyObject *args[2] = {fut, (PyObject *)task};
    PyObject *r = PyObject_Vectorcall(func, args, 2, NULL);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
#endif
    return 0;
}

#if PY_VERSION_HEX >= 0x030E0000
#define AWAITED_BY_ADD(st) ((st)->awaited_by_add)
#define AWAITED_BY_DISCARD(st) ((st)->awaited_by_discard)
#else
#define AWAITED_BY_ADD(st) NULL
#define AWAITED_BY_DISCARD(st) NULL
#endif

/* The coroutine yielded `result`: wait on it, or fail the task as
 * asyncio does for a bad yield. Steals nothing. */
static int
task_handle_yield(aioev_state *st, TaskObj *task, PyObject *result)
{
    /* Exact types only: a subclass may override add_done_callback. */
    if (Py_IS_TYPE(result, st->FutureType)
        || Py_IS_TYPE(result, st->TaskType)) {
        FutureObj *fut = (FutureObj *)result;
        if (fut->fut_loop != task->task_loop) {
            return task_schedule_error(
                st, task, "Task %R got Future %R attached to a different "
                "loop", task, result);
        }
        if (!fut->fut_blocking) {
            return task_schedule_error(
                st, task, "yield was used instead of yield from in task %R "
                "with %R", task, result);
        }
        fut->fut_blocking = 0;
        if (result == (PyObject *)task) {
            return task_schedule_error(st, task,
                                       "Task cannot await on itself: %R",
                                       task);
        }
        if (awaited_by(AWAITED_BY_ADD(st), result, task) < 0) {
            return -1;
        }
        if (fut->fut_native_loop && Py_IS_TYPE(task, st->TaskType)) {
            /* The task itself stands for its wake-up (future.c). */
            if (aioev_future_add_callback(st, fut, (PyObject *)task,
                                          task->task_context) < 0) {
                return -1;
            }
        }
        else {
            PyObject *cb = task_callback_new(st, task, NULL, 1);
            if (cb == NULL) {
                return -1;
            }
            int rc = aioev_future_add_callback(st, fut, cb,
                                               task->task_context);
            Py_DECREF(cb);
            if (rc < 0) {
                return -1;
            }
        }
    }
    else if (result == Py_None) {
        /* Bare yield: let other callbacks run, then continue. */
        return task_schedule_step(st, task, NULL);
    }
    else {
        PyObject *blocking;
        if (aioev_getattr_opt(result, "_asyncio_future_blocking",
                                           &blocking) < 0) {
            return -1;
        }
        if (blocking == NULL || blocking == Py_None) {
            Py_XDECREF(blocking);
            PyObject *r = PyObject_CallOneArg(st->inspect_isgenerator,
                                              result);
            if (r == NULL) {
                return -1;
            }
            int isgen = PyObject_IsTrue(r);
            Py_DECREF(r);
            if (isgen) {
                return task_schedule_error(
                    st, task, "yield was used instead of yield from for "
                    "generator in task %R with %R", task, result);
            }
            return task_schedule_error(st, task, "Task got bad yield: %R",
                                       result);
        }
        int b = PyObject_IsTrue(blocking);
        Py_DECREF(blocking);
        if (b < 0) {
            return -1;
        }
        PyObject *floop = foreign_future_loop(result);
        if (floop == NULL) {
            return -1;
        }
        Py_DECREF(floop);
        if (floop != task->task_loop) {
            return task_schedule_error(
                st, task, "Task %R got Future %R attached to a different "
                "loop", task, result);
        }
        if (!b) {
            return task_schedule_error(
                st, task, "yield was used instead of yield from in task %R "
                "with %R", task, result);
        }
        if (result == (PyObject *)task) {
            return task_schedule_error(st, task,
                                       "Task cannot await on itself: %R",
                                       task);
        }
        if (awaited_by(AWAITED_BY_ADD(st), result, task) < 0
            || PyObject_SetAttrString(result, "_asyncio_future_blocking",
                                      Py_False) < 0) {
            return -1;
        }
        PyObject *cb = task_callback_new(st, task, NULL, 1);
        if (cb == NULL) {
            return -1;
        }
        PyObject *meth = PyObject_GetAttrString(result, "add_done_callback");
        PyObject *kw = Py_BuildValue("{sO}", "context", task->task_context);
        PyObject *pos = PyTuple_Pack(1, cb);
        PyObject *r = NULL;
        if (meth != NULL && kw != NULL && pos != NULL) {
            r = PyObject_Call(meth, pos, kw);
        }
        Py_XDECREF(meth);
        Py_XDECREF(kw);
        Py_XDECREF(pos);
        Py_DECREF(cb);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
    }

    Py_XSETREF(task->task_fut_waiter, Py_NewRef(result));
    if (task->task_must_cancel) {
        int rc = cancel_future(st, result, task->task_cancel_msg
                                               ? task->task_cancel_msg
                                               : Py_None);
        if (rc < 0) {
            return -1;
        }
        if (rc) {
            task->task_must_cancel = 0;
        }
    }
    return 0;
}

/* ------------------------------------------------------------------------
 * Stepping
 * ------------------------------------------------------------------------ */

/* Sends None into the coroutine, or throws exc; then records its return,
 * its exception or what it yielded. Returns -1 with KeyboardInterrupt or
 * SystemExit set (after storing it on the task), or on internal errors. */
static int
task_step_impl(aioev_state *st, TaskObj *task, PyObject *exc)
{
    PyObject *result = NULL, *owned_exc = NULL, *r;
    PySendResult status;
    FutureObj *fut = (FutureObj *)task;

    if (task->task_state != STATE_PENDING) {
        PyErr_Format(st->InvalidStateError,
                     "_step(): already done: %R %R", task,
                     exc ? exc : Py_None);
        return -1;
    }
    if (task->task_must_cancel) {
        owned_exc = aioev_future_make_cancelled_error(st, fut);
        if (owned_exc == NULL) {
            return -1;
        }
        exc = owned_exc;
        task->task_must_cancel = 0;
    }
    Py_CLEAR(task->task_fut_waiter);

    if (exc == NULL) {
        status = PyIter_Send(task->task_coro, Py_None, &result);
    }
    else {
        result = aioev_call_method_1(task->task_coro, "throw", exc);
        if (result != NULL) {
            status = PYGEN_NEXT;
        }
        else if (PyErr_ExceptionMatches(PyExc_StopIteration)) {
            PyObject *e = PyErr_GetRaisedException();
            result = PyObject_GetAttrString(e, "value");
            Py_DECREF(e);
            status = result ? PYGEN_RETURN : PYGEN_ERROR;
        }
        else {
            status = PYGEN_ERROR;
        }
    }
    Py_XDECREF(owned_exc);

    if (status == PYGEN_RETURN) {
        if (task->task_must_cancel) {
            /* Cancelled after the coroutine returned its last value. */
            task->task_must_cancel = 0;
            r = aioev_future_cancel(st, fut, task->task_cancel_msg)
                    < 0 ? NULL : Py_NewRef(Py_None);
        }
        else {
            r = aioev_future_set_result(st, fut, result);
        }
        Py_DECREF(result);
        if (r == NULL) {
            return -1;
        }
        Py_DECREF(r);
        return 0;
    }
    if (status == PYGEN_ERROR) {
        PyObject *e = PyErr_GetRaisedException();
        if (PyErr_GivenExceptionMatches(e, st->CancelledError)) {
            Py_XSETREF(task->task_cancelled_exc, e);
            return aioev_future_cancel(st, fut, NULL) < 0 ? -1 : 0;
        }
        r = aioev_future_set_exception(st, fut, e);
        if (r == NULL) {
            Py_DECREF(e);
            return -1;
        }
        Py_DECREF(r);
        if (PyErr_GivenExceptionMatches(e, PyExc_KeyboardInterrupt)
            || PyErr_GivenExceptionMatches(e, PyExc_SystemExit)) {
            PyErr_SetRaisedException(e);
            return -1;
        }
        Py_DECREF(e);
        return 0;
    }
    int rc = task_handle_yield(st, task, result);
    Py_DECREF(result);
    return rc;
}

int
aioev_task_step(aioev_state *st, TaskObj *task, PyObject *exc)
{
    if (call_hook(st->enter_task, task->task_loop, (PyObject *)task) < 0) {
        return -1;
    }
    Py_INCREF(task);
    int rc = task_step_impl(st, task, exc);
    PyObject *err = rc < 0 ? PyErr_GetRaisedException() : NULL;
    if (call_hook(st->leave_task, task->task_loop, (PyObject *)task) < 0) {
        if (err != NULL) {
            PyErr_WriteUnraisable((PyObject *)task);
        }
        else {
            rc = -1;
            err = PyErr_GetRaisedException();
        }
    }
    Py_DECREF(task);
    if (err != NULL) {
        PyErr_SetRaisedException(err);
    }
    return rc;
}

int
aioev_task_wakeup(aioev_state *st, TaskObj *task, PyObject *fut)
{
    if (awaited_by(AWAITED_BY_DISCARD(st), fut, task) < 0) {
        return -1;
    }
    if (Py_IS_TYPE(fut, st->FutureType) || Py_IS_TYPE(fut, st->TaskType)) {
        FutureObj *f = (FutureObj *)fut;
        if (f->fut_state == STATE_FINISHED && f->fut_exception == NULL) {
            return aioev_task_step(st, task, NULL);
        }
        PyObject *res;
        int rc = aioev_future_get_result(st, f, &res);
        if (rc < 0) {
            PyObject *e = PyErr_GetRaisedException();
            rc = aioev_task_step(st, task, e);
            Py_DECREF(e);
            return rc;
        }
        rc = aioev_task_step(st, task, rc == 0 ? res : NULL);
        Py_DECREF(res);
        return rc;
    }
    PyObject *r = PyObject_CallMethod(fut, "result", NULL);
    if (r == NULL) {
        PyObject *e = PyErr_GetRaisedException();
        int rc = aioev_task_step(st, task, e);
        Py_DECREF(e);
        return rc;
    }
    Py_DECREF(r);
    return aioev_task_step(st, task, NULL);
}

/* ------------------------------------------------------------------------
 * Creation
 * ------------------------------------------------------------------------ */

static int
is_coroutine(aioev_state *st, PyObject *coro)
{
    if (PyCoro_CheckExact(coro)) {
        return 1;
    }
    PyObject *r = PyObject_CallOneArg(st->iscoroutine, coro);
    if (r == NULL) {
        return -1;
    }
    int b = PyObject_IsTrue(r);
    Py_DECREF(r);
    return b;
}

static int
call_one(PyObject *func, PyObject *arg)
{
    PyObject *r = PyObject_CallOneArg(func, arg);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* asyncio.tasks._register_task(task): what WeakSet.add does, in C, when
 * no removals are pending (else the real thing, which commits them). */
static int
register_task(aioev_state *st, TaskObj *task)
{
    if (st->tasks_data != NULL && PyList_GET_SIZE(st->tasks_pending) == 0) {
        PyObject *ref = PyWeakref_NewRef((PyObject *)task, st->tasks_remove);
        if (ref == NULL) {
            return -1;
        }
        int rc = PySet_Add(st->tasks_data, ref);
        Py_DECREF(ref);
        return rc;
    }
    return call_one(st->register_task, (PyObject *)task);
}

#ifdef AIOEV_PY312
static int
loop_is_running(PyObject *loop)
{
    PyObject *r = PyObject_CallMethod(loop, "is_running", NULL);
    if (r == NULL) {
        return -1;
    }
    int b = PyObject_IsTrue(r);
    Py_DECREF(r);
    return b;
}

/* 3.12's eager start: the first step runs now, inside the caller, with
 * the task swapped in as the current one. */
static int
task_eager_start(aioev_state *st, TaskObj *task)
{
    PyObject *args[2] = {task->task_loop, (PyObject *)task};
    PyObject *prev = PyObject_Vectorcall(st->swap_current_task, args, 2,
                                         NULL);
    int rc = -1;
    if (prev == NULL) {
        return -1;
    }
    if (call_one(st->register_eager_task, (PyObject *)task) == 0) {
        if (PyContext_Enter(task->task_context) == 0) {
            rc = task_step_impl(st, task, NULL);
            if (PyContext_Exit(task->task_context) < 0) {
                rc = -1;
            }
        }
        PyObject *err = PyErr_GetRaisedException();
        if (call_one(st->unregister_eager_task, (PyObject *)task) < 0) {
            PyErr_WriteUnraisable((PyObject *)task);
        }
        PyErr_SetRaisedException(err);
    }
    PyObject *err = PyErr_GetRaisedException();
    args[1] = prev;
    PyObject *cur = PyObject_Vectorcall(st->swap_current_task, args, 2,
                                        NULL);
    Py_DECREF(prev);
    if (cur == NULL) {
        PyErr_WriteUnraisable((PyObject *)task);
    }
    Py_XDECREF(cur);
    if (task->task_state != STATE_PENDING) {
        Py_CLEAR(task->task_coro);
    }
    else if (register_task(st, task) < 0) {
        if (err == NULL) {
            return -1;
        }
        PyErr_WriteUnraisable((PyObject *)task);
    }
    PyErr_SetRaisedException(err);
    return rc;
}
#endif

static int
task_setup(aioev_state *st, TaskObj *task, PyObject *coro, PyObject *loop,
           PyObject *name, PyObject *context, int eager)
{
    if (aioev_future_init((FutureObj *)task, loop) < 0) {
        return -1;
    }
    int ok = is_coroutine(st, coro);
    if (ok <= 0) {
        task->task_log_destroy_pending = 0;
        if (ok == 0) {
            PyErr_Format(PyExc_TypeError, "a coroutine was expected, got %R",
                         coro);
        }
        return -1;
    }
    if (context == NULL || context == Py_None) {
        context = PyContext_CopyCurrent();
        if (context == NULL) {
            return -1;
        }
    }
    else {
        Py_INCREF(context);
    }
    Py_XSETREF(task->task_context, context);
    Py_XSETREF(task->task_coro, Py_NewRef(coro));
    Py_CLEAR(task->task_fut_waiter);
    Py_CLEAR(task->task_name);
    if (name != NULL && name != Py_None) {
        task->task_name = PyObject_Str(name);
        if (task->task_name == NULL) {
            return -1;
        }
    }
    else {
        task->task_name_num = ++st->task_name_counter;
    }
    task->task_must_cancel = 0;
    task->task_log_destroy_pending = 1;
    task->task_num_cancels_requested = 0;
#ifdef AIOEV_PY312
    if (eager) {
        int running = task->task_native_loop
                          ? aioev_loop_is_running((LoopObj *)task->task_loop)
                          : loop_is_running(task->task_loop);
        if (running < 0) {
            return -1;
        }
        if (running) {
            return task_eager_start(st, task);
        }
    }
#endif
    if (task_schedule_step(st, task, NULL) < 0) {
        return -1;
    }
    return register_task(st, task);
}

PyObject *
aioev_task_new(aioev_state *st, PyObject *coro, PyObject *loop,
               PyObject *name, PyObject *context)
{
    TaskObj *task = PyObject_GC_New(TaskObj, st->TaskType);
    if (task == NULL) {
        return NULL;
    }
    memset((char *)task + sizeof(PyObject), 0,
           sizeof(TaskObj) - sizeof(PyObject));
    PyObject_GC_Track(task);
    if (task_setup(st, task, coro, loop, name, context, 0) < 0) {
        Py_DECREF(task);
        return NULL;
    }
    return (PyObject *)task;
}

static int
task_init_slot(TaskObj *task, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"coro", "loop", "name", "context",
                             "eager_start", NULL};
    PyObject *coro, *loop = Py_None, *name = Py_None, *context = Py_None;
    int eager = 0;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "O|$OOOp:Task", kwlist,
                                     &coro, &loop, &name, &context,
                                     &eager)) {
        return -1;
    }
#ifndef AIOEV_PY312
    if (eager) {
        PyErr_SetString(PyExc_TypeError,
                        "Task(eager_start=True) needs Python 3.12 or newer");
        return -1;
    }
#endif
    return task_setup(AIOEV_STATE(task), task, coro, loop, name, context,
                      eager);
}

/* ------------------------------------------------------------------------
 * traverse / clear / finalize / dealloc
 * ------------------------------------------------------------------------ */

static int
task_traverse(TaskObj *task, visitproc visit, void *arg)
{
    Py_VISIT(task->task_fut_waiter);
    Py_VISIT(task->task_coro);
    Py_VISIT(task->task_name);
    Py_VISIT(task->task_context);
    int rc = aioev_future_traverse((FutureObj *)task, visit, arg);
    if (rc != 0) {
        return rc;
    }
    return aioev_asyncio_traverse(AIOEV_STATE(task)->TaskType->tp_base,
                                  (PyObject *)task, visit, arg);
}

/* Our part only. */
static void
task_reset(TaskObj *task)
{
    Py_CLEAR(task->task_fut_waiter);
    Py_CLEAR(task->task_coro);
    Py_CLEAR(task->task_name);
    Py_CLEAR(task->task_context);
    aioev_future_clear((FutureObj *)task);
}

static int
task_clear(TaskObj *task)
{
    task_reset(task);
    return AIOEV_STATE(task)->TaskType->tp_base->tp_clear((PyObject *)task);
}

static void
task_finalize(PyObject *self)
{
    TaskObj *task = (TaskObj *)self;
    if (task->task_state == STATE_PENDING && task->task_log_destroy_pending
        && task->task_loop != NULL) {
        aioev_finalizer_report(
            self, task->task_loop,
            PyUnicode_FromString("Task was destroyed but it is pending!"),
            "task", task->task_source_tb, NULL);
    }
    aioev_future_finalize(self);
}

static void
task_dealloc(TaskObj *task)
{
    PyTypeObject *base = AIOEV_STATE(task)->TaskType->tp_base;
    if (PyObject_CallFinalizerFromDealloc((PyObject *)task) < 0) {
        return;  /* resurrected */
    }
    PyObject_GC_UnTrack(task);
    task_reset(task);
    aioev_asyncio_dealloc(base, (PyObject *)task);
}

/* ------------------------------------------------------------------------
 * Methods
 * ------------------------------------------------------------------------ */

static int
task_cancel_impl(aioev_state *st, TaskObj *task, PyObject *msg)
{
    task->task_log_tb = 0;
    if (task->task_state != STATE_PENDING) {
        return 0;
    }
    task->task_num_cancels_requested++;
    if (task->task_fut_waiter != NULL) {
        int rc = cancel_future(st, task->task_fut_waiter, msg);
        if (rc != 0) {
            return rc;
        }
    }
    task->task_must_cancel = 1;
    Py_XSETREF(task->task_cancel_msg, Py_XNewRef(msg));
    return 1;
}

static PyObject *
task_cancel(TaskObj *task, PyObject *const *args, size_t nargsf,
            PyObject *kwnames)
{
    PyObject *msg;
    if (aioev_parse_cancel_args(args, nargsf, kwnames, &msg) < 0) {
        return NULL;
    }
    int rc = task_cancel_impl(AIOEV_STATE(task), task, msg);
    if (rc < 0) {
        return NULL;
    }
    return PyBool_FromLong(rc);
}

static PyObject *
task_cancelling(TaskObj *task, PyObject *Py_UNUSED(ignored))
{
    return PyLong_FromLong(task->task_num_cancels_requested);
}

static PyObject *
task_uncancel(TaskObj *task, PyObject *Py_UNUSED(ignored))
{
    if (task->task_num_cancels_requested > 0) {
        task->task_num_cancels_requested--;
#if PY_VERSION_HEX >= 0x030D0000
        if (task->task_num_cancels_requested == 0) {
            task->task_must_cancel = 0;
        }
#endif
    }
    return PyLong_FromLong(task->task_num_cancels_requested);
}

static PyObject *
task_get_coro(TaskObj *task, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(task->task_coro ? task->task_coro : Py_None);
}

static PyObject *
task_get_context(TaskObj *task, PyObject *Py_UNUSED(ignored))
{
    return Py_NewRef(task->task_context ? task->task_context : Py_None);
}

static PyObject *
task_get_name(TaskObj *task, PyObject *Py_UNUSED(ignored))
{
    if (task->task_name == NULL) {
        task->task_name = PyUnicode_FromFormat(
            "Task-%llu", (unsigned long long)task->task_name_num);
        if (task->task_name == NULL) {
            return NULL;
        }
    }
    return Py_NewRef(task->task_name);
}

static PyObject *
task_set_name(TaskObj *task, PyObject *value)
{
    PyObject *name = PyObject_Str(value);
    if (name == NULL) {
        return NULL;
    }
    Py_XSETREF(task->task_name, name);
    Py_RETURN_NONE;
}

static PyObject *
task_get_stack(TaskObj *task, PyObject *const *args, Py_ssize_t nargs,
               PyObject *kwnames)
{
    PyObject *limit = Py_None;
    if (nargs > 0) {
        PyErr_SetString(PyExc_TypeError,
                        "get_stack() takes keyword arguments only");
        return NULL;
    }
    if (kwnames != NULL) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++) {
            if (!aioev_str_eq(PyTuple_GET_ITEM(kwnames, i), "limit")) {
                PyErr_SetString(PyExc_TypeError,
                                "get_stack() got an unexpected keyword");
                return NULL;
            }
            limit = args[i];
        }
    }
    return PyObject_CallFunctionObjArgs(AIOEV_STATE(task)->task_get_stack,
                                        (PyObject *)task, limit, NULL);
}

static PyObject *
task_print_stack(TaskObj *task, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"limit", "file", NULL};
    PyObject *limit = Py_None, *file = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|$OO:print_stack", kwlist,
                                     &limit, &file)) {
        return NULL;
    }
    return PyObject_CallFunctionObjArgs(AIOEV_STATE(task)->task_print_stack,
                                        (PyObject *)task, limit, file, NULL);
}

static PyObject *
task_set_result(TaskObj *task, PyObject *arg)
{
    PyErr_SetString(PyExc_RuntimeError,
                    "Task does not support set_result() operation");
    return NULL;
}

static PyObject *
task_set_exception(TaskObj *task, PyObject *arg)
{
    PyErr_SetString(PyExc_RuntimeError,
                    "Task does not support set_exception() operation");
    return NULL;
}

static PyObject *
task_repr(TaskObj *task)
{
    return PyObject_CallOneArg(AIOEV_STATE(task)->task_repr,
                               (PyObject *)task);
}

static PyObject *
task_get_log_destroy_pending(TaskObj *task, void *c)
{
    return PyBool_FromLong(task->task_log_destroy_pending);
}

static int
task_set_log_destroy_pending(TaskObj *task, PyObject *val, void *c)
{
    return aioev_setter_bool(val, &task->task_log_destroy_pending);
}

static PyObject *
task_get_must_cancel(TaskObj *task, void *c)
{
    return PyBool_FromLong(task->task_must_cancel);
}

static PyObject *
task_get_coro_attr(TaskObj *task, void *c)
{
    return task_get_coro(task, NULL);
}

static PyObject *
task_get_fut_waiter(TaskObj *task, void *c)
{
    return Py_NewRef(task->task_fut_waiter ? task->task_fut_waiter
                                           : Py_None);
}

static PyObject *
task_get_num_cancels(TaskObj *task, void *c)
{
    return PyLong_FromLong(task->task_num_cancels_requested);
}

/* ------------------------------------------------------------------------
 * Tables, slots, specs
 * ------------------------------------------------------------------------ */

static PyMethodDef task_methods[] = {
    {"cancel", (PyCFunction)(void (*)(void))task_cancel,
     METH_FASTCALL | METH_KEYWORDS, "Request that this task cancel itself."},
    {"cancelling", (PyCFunction)task_cancelling, METH_NOARGS,
     "Return the number of pending cancellation requests."},
    {"uncancel", (PyCFunction)task_uncancel, METH_NOARGS,
     "Decrement the count of pending cancellation requests."},
    {"get_coro", (PyCFunction)task_get_coro, METH_NOARGS, NULL},
    {"get_context", (PyCFunction)task_get_context, METH_NOARGS, NULL},
    {"get_name", (PyCFunction)task_get_name, METH_NOARGS, NULL},
    {"set_name", (PyCFunction)task_set_name, METH_O, NULL},
    {"get_stack", (PyCFunction)(void (*)(void))task_get_stack,
     METH_FASTCALL | METH_KEYWORDS, "Return the list of stack frames."},
    {"print_stack", (PyCFunction)(void (*)(void))task_print_stack,
     METH_VARARGS | METH_KEYWORDS, "Print the stack or traceback."},
    {"set_result", (PyCFunction)task_set_result, METH_O, NULL},
    {"set_exception", (PyCFunction)task_set_exception, METH_O, NULL},
    {NULL, NULL}
};

static PyGetSetDef task_getset[] = {
    {"_log_destroy_pending", (getter)task_get_log_destroy_pending,
     (setter)task_set_log_destroy_pending, NULL, NULL},
    {"_must_cancel", (getter)task_get_must_cancel, NULL, NULL, NULL},
    {"_coro", (getter)task_get_coro_attr, NULL, NULL, NULL},
    {"_fut_waiter", (getter)task_get_fut_waiter, NULL, NULL, NULL},
    {"_num_cancels_requested", (getter)task_get_num_cancels, NULL, NULL,
     NULL},
    {NULL}
};

/* Filled once by aioev_task_init_types; sized for both tables. */
#define TASK_METHODS_MAX 40
#define TASK_GETSET_MAX 32
static PyMethodDef task_methods_all[TASK_METHODS_MAX + 1];
static PyGetSetDef task_getset_all[TASK_GETSET_MAX + 1];

PyDoc_STRVAR(task_doc,
"Task(coro, *, loop=None, name=None, context=None)\n--\n\n"
"A coroutine wrapped in a Future; same API as asyncio.Task.");

static PyType_Slot task_slots[] = {
    {Py_tp_doc, (void *)task_doc},
    {Py_tp_new, PyType_GenericNew},
    {Py_tp_iter, aioev_future_await},
    {Py_am_await, aioev_future_await},
    {Py_tp_init, task_init_slot},
    {Py_tp_dealloc, task_dealloc},
    {Py_tp_traverse, task_traverse},
    {Py_tp_clear, task_clear},
    {Py_tp_finalize, task_finalize},
    {Py_tp_repr, task_repr},
    {Py_tp_methods, task_methods_all},
    {Py_tp_getset, task_getset_all},
    {0, NULL},
};

static PyType_Spec task_spec = {
    .name = "aioev._core.Task",
    .basicsize = sizeof(TaskObj),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC | Py_TPFLAGS_BASETYPE,
    .slots = task_slots,
};

/* TaskCallback: step or wakeup as a plain callable. */

static PyObject *
taskcb_call(TaskCallbackObj *cb, PyObject *args, PyObject *kwds)
{
    aioev_state *st = AIOEV_STATE(cb->task);
    int rc;
    if (cb->wakeup) {
        if (PyTuple_GET_SIZE(args) != 1) {
            PyErr_SetString(PyExc_TypeError, "wakeup takes one future");
            return NULL;
        }
        rc = aioev_task_wakeup(st, cb->task, PyTuple_GET_ITEM(args, 0));
    }
    else {
        rc = aioev_task_step(st, cb->task, cb->arg);
    }
    if (rc < 0) {
        return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
taskcb_repr(TaskCallbackObj *cb)
{
    return PyUnicode_FromFormat("<Task%s of %R>",
                                cb->wakeup ? ".__wakeup" : ".__step",
                                (PyObject *)cb->task);
}

static int
taskcb_traverse(TaskCallbackObj *cb, visitproc visit, void *arg)
{
    Py_VISIT(Py_TYPE(cb));
    Py_VISIT(cb->task);
    Py_VISIT(cb->arg);
    return 0;
}

static int
taskcb_clear(TaskCallbackObj *cb)
{
    Py_CLEAR(cb->task);
    Py_CLEAR(cb->arg);
    return 0;
}

static void
taskcb_dealloc(TaskCallbackObj *cb)
{
    PyTypeObject *tp = Py_TYPE(cb);
    PyObject_GC_UnTrack(cb);
    taskcb_clear(cb);
    PyObject_GC_Del(cb);
    Py_DECREF(tp);
}

static PyObject *
taskcb_get_self(TaskCallbackObj *cb, void *c)
{
    return Py_NewRef((PyObject *)cb->task);
}

static PyObject *
taskcb_get_qualname(TaskCallbackObj *cb, void *c)
{
    /* What _format_callback shows, as for asyncio's C Task. */
    return PyUnicode_FromString(cb->wakeup ? "Task.task_wakeup"
                                           : "Task.task_step");
}

static PyGetSetDef taskcb_getset[] = {
    {"__self__", (getter)taskcb_get_self, NULL, NULL, NULL},
    {"__qualname__", (getter)taskcb_get_qualname, NULL, NULL, NULL},
    {NULL}
};

static PyType_Slot taskcb_slots[] = {
    {Py_tp_call, taskcb_call},
    {Py_tp_repr, taskcb_repr},
    {Py_tp_traverse, taskcb_traverse},
    {Py_tp_clear, taskcb_clear},
    {Py_tp_dealloc, taskcb_dealloc},
    {Py_tp_getset, taskcb_getset},
    {0, NULL},
};

static PyType_Spec taskcb_spec = {
    .name = "aioev._core.TaskCallback",
    .basicsize = sizeof(TaskCallbackObj),
    .flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC
        | Py_TPFLAGS_DISALLOW_INSTANTIATION,
    .slots = taskcb_slots,
};

int
aioev_task_init_types(PyObject *mod, aioev_state *st)
{
    st->TaskCallbackType = (PyTypeObject *)PyType_FromModuleAndSpec(
        mod, &taskcb_spec, NULL);
    if (st->TaskCallbackType == NULL) {
        return -1;
    }
    /* Not a subclass of our Future (asyncio's Task is our base): the
     * Future's methods, attributes and await are listed again, after the
     * Task's own (the first of a name wins). */
    if (task_methods_all[0].ml_name == NULL) {
        int n = 0;
        for (PyMethodDef *d = task_methods; d->ml_name; d++) {
            task_methods_all[n++] = *d;
        }
        for (PyMethodDef *d = aioev_future_methods; d->ml_name; d++) {
            if (n == TASK_METHODS_MAX) {
                PyErr_SetString(PyExc_SystemError, "TASK_METHODS_MAX");
                return -1;
            }
            task_methods_all[n++] = *d;
        }
        n = 0;
        for (PyGetSetDef *d = task_getset; d->name; d++) {
            task_getset_all[n++] = *d;
        }
        for (PyGetSetDef *d = aioev_future_getset; d->name; d++) {
            if (n == TASK_GETSET_MAX) {
                PyErr_SetString(PyExc_SystemError, "TASK_GETSET_MAX");
                return -1;
            }
            task_getset_all[n++] = *d;
        }
    }
    PyObject *base = aioev_asyncio_base("Task");
    if (base == NULL) {
        return -1;
    }
    st->TaskType = (PyTypeObject *)PyType_FromModuleAndSpec(
        mod, &task_spec, base);
    Py_DECREF(base);
    if (st->TaskType == NULL) {
        return -1;
    }
    return PyModule_AddType(mod, st->TaskType);
}
