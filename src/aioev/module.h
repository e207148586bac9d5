/* Shared declarations of aioev._core: module state and the small internal
 * interfaces each concept exposes to the others. */
#ifndef AIOEV_MODULE_H
#define AIOEV_MODULE_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <stdint.h>

#if PY_VERSION_HEX >= 0x030C0000
#define AIOEV_PY312 1
#endif
#if PY_VERSION_HEX >= 0x030B0000
#define AIOEV_PY311 1
#endif

/* 3.10 and 3.11 lack the single-object exception API; the fallbacks keep
 * one spelling in the sources. */
#if PY_VERSION_HEX < 0x030C0000
static inline PyObject *
PyErr_GetRaisedException(void)
{
    PyObject *type, *value, *tb;
    PyErr_Fetch(&type, &value, &tb);
    if (type == NULL) {
        return NULL;
    }
    PyErr_NormalizeException(&type, &value, &tb);
    if (tb != NULL) {
        PyException_SetTraceback(value, tb);
    }
    Py_XDECREF(type);
    Py_XDECREF(tb);
    return value;
}

static inline void
PyErr_SetRaisedException(PyObject *exc)
{
    if (exc == NULL) {
        PyErr_Clear();
        return;
    }
    PyErr_Restore(Py_NewRef((PyObject *)Py_TYPE(exc)), exc,
                  PyException_GetTraceback(exc));
}
#endif

/* getattr(obj, name, None) without the AttributeError: 1 found, 0 not,
 * -1 error (PyObject_GetOptionalAttrString is 3.13+). */
static inline int
aioev_getattr_opt(PyObject *obj, const char *name, PyObject **out)
{
    *out = PyObject_GetAttrString(obj, name);
    if (*out != NULL) {
        return 1;
    }
    if (PyErr_ExceptionMatches(PyExc_AttributeError)) {
        PyErr_Clear();
        return 0;
    }
    return -1;
}

/* obj.name(arg): unlike PyObject_CallMethod(obj, name, "O", arg), a tuple
 * arg stays one argument. */
static inline PyObject *
aioev_call_method_1(PyObject *obj, const char *name, PyObject *arg)
{
    PyObject *meth = PyObject_GetAttrString(obj, name);
    if (meth == NULL) {
        return NULL;
    }
    PyObject *r = PyObject_CallOneArg(meth, arg);
    Py_DECREF(meth);
    return r;
}

/* callable(first, *args, **kw), given a vectorcall's own arguments
 * (module.c). */
PyObject *aioev_call_with_first(PyObject *callable, PyObject *first,
                                PyObject *const *args, size_t nargsf,
                                PyObject *kwnames);

/* loop.call_soon(cb, *args, context=ctx) on any loop: args[0] must be
 * free for PY_VECTORCALL_ARGUMENTS_OFFSET, args[1] the loop, then cb and
 * its arguments; ctx comes last. */
static inline int
aioev_call_soon_any(PyObject *call_soon_name, PyObject *kw_context,
                    PyObject **args, Py_ssize_t npos)
{
    PyObject *r = PyObject_VectorcallMethod(
        call_soon_name, args + 1, npos | PY_VECTORCALL_ARGUMENTS_OFFSET,
        kw_context);
    if (r == NULL) {
        return -1;
    }
    Py_DECREF(r);
    return 0;
}

/* A setter's value as a C flag: -1 on deletion or a failing bool(). */
static inline int
aioev_setter_bool(PyObject *val, int *out)
{
    if (val == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete attribute");
        return -1;
    }
    int b = PyObject_IsTrue(val);
    if (b < 0) {
        return -1;
    }
    *out = b;
    return 0;
}

static inline int
aioev_str_eq(PyObject *str, const char *ascii)
{
    return PyUnicode_Check(str)
        && PyUnicode_CompareWithASCIIString(str, ascii) == 0;
}

/* ------------------------------------------------------------------------
 * Module state
 * ------------------------------------------------------------------------ */

#define AIOEV_FREELIST_MAX 256
/* Free StreamReader buffer blocks kept (streamrw.c): how many, how many
 * bytes in all. */
#define AIOEV_BLOCKS_MAX 64
#define AIOEV_BLOCKS_BUDGET (4 * 1024 * 1024)

/* How many of asyncio's stream methods streamrw.c stands for. */
#define AIOEV_STREAMRW_ORIG 7

typedef struct {
    PyTypeObject *LoopType;
    PyTypeObject *HandleType;
    PyTypeObject *TimerHandleType;
    PyTypeObject *FutureType;
    PyTypeObject *FutureIterType;
    PyTypeObject *TaskType;
    PyTypeObject *TaskCallbackType;
    PyTypeObject *SockOpType;
    PyTypeObject *SockCoroType;
    PyTypeObject *StreamType;

    /* asyncio objects looked up once at import */
    PyObject *CancelledError;
    PyObject *InvalidStateError;
    PyObject *get_event_loop;      /* asyncio.events.get_event_loop */
    PyObject *iscoroutine;         /* asyncio.coroutines.iscoroutine */
    PyObject *iscoroutinefunction;
    PyObject *register_task;       /* asyncio.tasks._register_task */
    /* The WeakSet behind it (_all_tasks, 3.12+ _scheduled_tasks), opened
     * up: its data set, _remove callback and _pending_removals list. NULL
     * if it is not the WeakSet we know; then register_task is called. */
    PyObject *tasks_data;
    PyObject *tasks_remove;
    PyObject *tasks_pending;
    PyObject *enter_task;          /* asyncio.tasks._enter_task */
    PyObject *leave_task;          /* asyncio.tasks._leave_task */
    PyObject *swap_current_task;   /* 3.12+ eager tasks, else NULL */
    PyObject *register_eager_task;
    PyObject *unregister_eager_task;
    PyObject *extract_stack;       /* asyncio.format_helpers.extract_stack */
    PyObject *task_get_stack;      /* asyncio.base_tasks._task_get_stack */
    PyObject *task_print_stack;    /* asyncio.base_tasks._task_print_stack */
    PyObject *logger;              /* asyncio.log.logger */
    PyObject *inspect_isgenerator;
#if PY_VERSION_HEX >= 0x030E0000
    PyObject *awaited_by_add;      /* asyncio.futures.future_add_to_... */
    PyObject *awaited_by_discard;  /* ...future_discard_from_awaited_by */
#endif

    /* aioev._helpers: slow paths written in Python */
    PyObject *future_repr;
    PyObject *task_repr;
    PyObject *handle_repr;
    PyObject *report_error;

    PyObject *empty_tuple;
    PyObject *empty_context;       /* for internal callbacks */
    PyObject *kw_context;          /* ("context",), as kwnames */
    PyObject *str_call_soon;       /* interned method names */
    PyObject *str_data_received;
    PyObject *str_get_buffer;
    PyObject *str_buffer_updated;
    PyObject *SSLSocket;           /* ssl.SSLSocket, or NULL without ssl */
    PyObject *TransportSocket;     /* asyncio.trsock.TransportSocket */
    PyObject *BufferedProtocol;
    PyObject *set_result_unless_cancelled;
    PyObject *set_nodelay;         /* asyncio.base_events._set_nodelay */
    PyObject *socket_socket;       /* socket.socket */
    PyObject *set_wakeup_fd;       /* signal.set_wakeup_fd */
    PyObject *main_thread;         /* threading.main_thread */
    PyObject *str__accept;
    PyObject *str_accept;
    PyObject *str_gettimeout;
    /* asyncio's stream classes, for the transport's fast path into a
     * StreamReader (stream.c), and the attribute names it reads */
    PyObject *StreamReaderProtocol;
    PyObject *StreamReader;
    /* their data_received, feed_data, _wakeup_waiter as imported */
    PyObject *stream_methods[3];
    PyObject *str_stream_reader_wr;
    PyObject *str__eof;
    PyObject *str__buffer;
    PyObject *str__waiter;
    PyObject *str__transport;
    PyObject *str__paused;
    PyObject *str__limit;
    /* StreamReader.read / StreamWriter.write, drain in C (streamrw.c) */
    PyObject *StreamWriter;
    PyObject *FastStreamReader;
    PyObject *FastStreamWriter;
    PyTypeObject *StreamCoroType;
    /* asyncio's methods they stand for */
    PyObject *streamrw_orig[AIOEV_STREAMRW_ORIG];
    PyObject *str__exception;
    PyObject *str__loop;
    PyObject *str__reader;
    PyObject *str__protocol;
    PyObject *str__connection_lost;
    PyObject *str__client_connected_cb;
    PyObject *str_create_future;
    PyObject *str_resume_reading;
    PyObject *str_exception;
    PyObject *str_is_closing;
    PyObject *str_write;
    PyObject *str_fileno;
    PyObject *str_recvfrom;
    PyObject *str_recvfrom_into;
    PyObject *str_sendto;
    PyObject *str_setblocking;
    uint64_t task_name_counter;

    /* Freed Handle/TimerHandle memory kept for reuse (handle.c): saves
     * the allocation and the GC's allocation count per call_soon. */
    struct HandleObj *handle_free[AIOEV_FREELIST_MAX];
    struct HandleObj *timer_free[AIOEV_FREELIST_MAX];
    /* StreamReader buffers' memory blocks kept between messages
     * (streamrw.c): PyObject_Malloc'd, at most AIOEV_BLOCKS_MAX of them
     * and AIOEV_BLOCKS_BUDGET bytes in all. */
    struct { char *p; Py_ssize_t size; } blocks[AIOEV_BLOCKS_MAX];
    int blocks_n;
    Py_ssize_t blocks_bytes;
    int handle_free_n;
    int timer_free_n;
    int freelist_on;           /* cleared once the module is torn down */
    struct LoopObj *loops;     /* live loops, for the collector hook */
    /* set_exception(StopIteration) wraps it in a RuntimeError from 3.12.2
     * on (gh-112182), raises TypeError before: follows the running Python */
    int wrap_stopiteration;
} aioev_state;

extern PyModuleDef aioev_module_def;

static inline aioev_state *
aioev_get_state(PyObject *mod)
{
    return (aioev_state *)PyModule_GetState(mod);
}

#if PY_VERSION_HEX < 0x030B0000
/* 3.10 does not export PyType_GetModuleByDef: walk the MRO ourselves. */
static inline PyObject *
aioev_type_module(PyTypeObject *tp, PyModuleDef *def)
{
    PyObject *mro = tp->tp_mro;
    for (Py_ssize_t i = 0; mro && i < PyTuple_GET_SIZE(mro); i++) {
        PyTypeObject *t = (PyTypeObject *)PyTuple_GET_ITEM(mro, i);
        if (!(t->tp_flags & Py_TPFLAGS_HEAPTYPE)) {
            continue;
        }
        PyObject *mod = ((PyHeapTypeObject *)t)->ht_module;
        if (mod != NULL && PyModule_GetDef(mod) == def) {
            return mod;
        }
    }
    return NULL;
}
#define PyType_GetModuleByDef aioev_type_module

static inline PyObject *
PyType_GetName(PyTypeObject *tp)
{
    const char *s = strrchr(tp->tp_name, '.');
    return PyUnicode_FromString(s ? s + 1 : tp->tp_name);
}
#endif

/* Module state from a (sub)instance of one of our heap types. Our own
 * types carry the module directly; only subclasses need the MRO walk. */
static inline aioev_state *
aioev_state_from_type(PyTypeObject *tp)
{
    PyObject *mod = ((PyHeapTypeObject *)tp)->ht_module;
    if (mod == NULL || PyModule_GetDef(mod) != &aioev_module_def) {
        mod = PyType_GetModuleByDef(tp, &aioev_module_def);
    }
    assert(mod != NULL);
    return aioev_get_state(mod);
}

#define AIOEV_STATE(obj) aioev_state_from_type(Py_TYPE(obj))

/* ------------------------------------------------------------------------
 * Handle (handle.c)
 * ------------------------------------------------------------------------ */

typedef struct HandleObj {
    PyObject_HEAD
    PyObject *callback;
    PyObject *args;            /* tuple */
    PyObject *context;
    PyObject *loop;
    PyObject *source_tb;
    PyObject *repr_cache;
    PyObject *weakreflist;
    unsigned long running_in;  /* thread running a threadsafe handle */
    int cancelled;
    int threadsafe;            /* made by call_soon_threadsafe */
} HandleObj;

typedef struct {
    HandleObj base;
    double when;
    int scheduled;             /* in the loop's timer heap */
} TimerHandleObj;

int aioev_handle_init_types(PyObject *mod, aioev_state *st);
void aioev_handle_freelist_clear(aioev_state *st);
/* GC-tracks an untracked handle and its context (loop.c queues both
 * untracked while it owns them). */
void aioev_handle_track(PyObject *h);
HandleObj *aioev_handle_new(aioev_state *st, PyTypeObject *tp,
                            PyObject *loop, PyObject *callback,
                            PyObject *args, PyObject *context);
/* Runs the callback in its context. Returns 0, or -1 with
 * KeyboardInterrupt/SystemExit set; other errors go to the loop's
 * exception handler. */
int aioev_handle_run(HandleObj *h);

/* ------------------------------------------------------------------------
 * Loop (loop.c)
 * ------------------------------------------------------------------------ */

enum {
    READY_HANDLE,       /* a: Handle */
    READY_TASK_STEP,    /* a: Task, b: exception or NULL */
    READY_TASK_WAKEUP,  /* a: Task, b: the future it waited on */
    READY_FUT_CALLBACK, /* a: callback, b: future, c: context */
};

typedef struct LoopObj LoopObj;

/* gc.callbacks hook: before a collection, handles the loops queued
 * untracked but that are now shared get tracked (loop.c). */
extern PyMethodDef aioev_gc_hook_def;

int aioev_loop_init_type(PyObject *mod, aioev_state *st);
int aioev_is_loop(aioev_state *st, PyObject *obj);
/* A lock the loop's thread holds while it runs a call_soon_threadsafe
 * handle, so that cancel() from another thread waits for the callback to
 * end, as asyncio's does (3.12.8+). Reentrant for the holding thread.
 * enter returns 1 if it took the lock (pass it to exit); wait returns once
 * no other thread holds it. No-ops for a loop that is not ours. */
int aioev_loop_ts_enter(PyObject *loop);
void aioev_loop_ts_exit(PyObject *loop, int took);
void aioev_loop_ts_wait(PyObject *loop);
/* Queue work; steals no references (takes new ones). -1 if closed. */
int aioev_loop_enqueue(LoopObj *loop, int kind, PyObject *a, PyObject *b,
                       PyObject *c);
int aioev_loop_check_closed(LoopObj *loop);
/* What call_soon checks before queueing: the loop is open and, in debug
 * mode, this is the loop's thread. */
int aioev_loop_check_call_soon(LoopObj *loop);
int aioev_loop_get_debug(LoopObj *loop);
/* In debug mode, h's _source_traceback: where the caller's frame is. */
int aioev_handle_trace(LoopObj *loop, HandleObj *h);
int aioev_loop_is_running(LoopObj *loop);
int aioev_loop_is_closed(LoopObj *loop);
/* loop.create_future() for our own loop, without the method lookup. */
PyObject *aioev_loop_new_future(LoopObj *loop);
void aioev_loop_timer_cancelled(LoopObj *loop, TimerHandleObj *t);
/* func(*args) in context ctx, as ctx.run(func, *args) (handle.c). */
PyObject *aioev_context_call(PyObject *ctx, PyObject *func,
                             PyObject *const *args, Py_ssize_t nargs);
/* Track again a context copy the loop left untracked (handle.c). */
void aioev_context_retrack(PyObject *ctx);
/* Report an error of a callback to loop.call_exception_handler. */
void aioev_report_callback_error(aioev_state *st, PyObject *loop,
                                 PyObject *handle, PyObject *callback,
                                 PyObject *args);

/* ------------------------------------------------------------------------
 * Future and Task (future.c, task.c)
 * ------------------------------------------------------------------------ */

typedef enum {
    STATE_PENDING,
    STATE_CANCELLED,
    STATE_FINISHED
} fut_state;

/* Our Future and Task are subclasses of asyncio's own C ones (_asyncio's
 * Future and Task), so that isinstance(x, asyncio.Future) holds as
 * libraries expect. Their part of the object comes first; it is never
 * used (never initialised: every method and slot is ours) and stays
 * zero. Its size is private to CPython: the space kept here is checked
 * against it at import (future.c). */
#if PY_VERSION_HEX >= 0x030E0000
#define AIOEV_ASYNCIO_PART 192   /* 3.14: Task 168 */
#elif PY_VERSION_HEX >= 0x030D0000
#define AIOEV_ASYNCIO_PART 144   /* 3.13: Task 144 */
#elif PY_VERSION_HEX >= 0x030B0000
#define AIOEV_ASYNCIO_PART 176   /* 3.11, 3.12: Task 176 */
#else
#define AIOEV_ASYNCIO_PART 192   /* 3.10: Task 192 */
#endif

#define FutureObj_HEAD(prefix)                                      \
    PyObject_HEAD                                                   \
    char prefix##_asyncio[AIOEV_ASYNCIO_PART - sizeof(PyObject)];   \
    PyObject *prefix##_loop;                                        \
    PyObject *prefix##_callback0;                                   \
    PyObject *prefix##_context0;                                    \
    PyObject *prefix##_callbacks;                                   \
    PyObject *prefix##_exception;                                   \
    PyObject *prefix##_exception_tb;                                \
    PyObject *prefix##_result;                                      \
    PyObject *prefix##_source_tb;                                   \
    PyObject *prefix##_cancel_msg;                                  \
    PyObject *prefix##_cancelled_exc;                               \
    fut_state prefix##_state;                                       \
    int prefix##_log_tb;                                            \
    int prefix##_blocking;                                          \
    int prefix##_native_loop;

typedef struct {
    FutureObj_HEAD(fut)
} FutureObj;

typedef struct {
    FutureObj_HEAD(task)
    PyObject *task_fut_waiter;
    PyObject *task_coro;
    PyObject *task_name;       /* NULL until asked: "Task-<n>" */
    PyObject *task_context;
    uint64_t task_name_num;
    int task_must_cancel;
    int task_log_destroy_pending;
    int task_num_cancels_requested;
} TaskObj;

int aioev_future_init_types(PyObject *mod, aioev_state *st);
int aioev_task_init_types(PyObject *mod, aioev_state *st);
int aioev_sock_init_types(PyObject *mod, aioev_state *st);
int aioev_stream_init_types(PyObject *mod, aioev_state *st);
int aioev_streamrw_init(PyObject *mod, aioev_state *st);

/* The StreamTransport (stream.c), for streamrw.c: its is_closing() and
 * write() without a method call. */
int aioev_stream_is_closing(PyObject *transport);
PyObject *aioev_stream_write(PyObject *transport, PyObject *data);
/* Switch a connection's asyncio StreamReader / StreamWriter to our
 * subclasses with read() / write() and drain() in C, when it is exactly
 * asyncio's class with asyncio's methods (streamrw.c). Never fail. */
void aioev_streamrw_adopt_reader(aioev_state *st, PyObject *reader);
/* buf (an exact bytearray) += data[:n], as extend() would, in a kept
 * block when its own is too small. */
int aioev_buffer_extend(aioev_state *st, PyObject *buf, const char *data,
                        Py_ssize_t n);
/* Frees the kept blocks (module teardown). */
void aioev_blocks_clear(aioev_state *st);
void aioev_streamrw_adopt_writer(aioev_state *st, PyObject *writer);
/* A server's StreamReaderProtocol: its client_connected_cb is wrapped so
 * that the StreamWriter it is given is switched first. Never fails. */
void aioev_streamrw_wrap_connected_cb(aioev_state *st, PyObject *protocol);

/* Internal Future API used by Task (future.c). */
int aioev_future_init(FutureObj *fut, PyObject *loop);
int aioev_future_add_callback(aioev_state *st, FutureObj *fut,
                              PyObject *cb, PyObject *ctx);
int aioev_future_cancel(aioev_state *st, FutureObj *fut, PyObject *msg);
PyObject *aioev_future_set_result(aioev_state *st, FutureObj *fut,
                                  PyObject *res);
PyObject *aioev_future_set_exception(aioev_state *st, FutureObj *fut,
                                     PyObject *exc);
PyObject *aioev_future_make_cancelled_error(aioev_state *st,
                                            FutureObj *fut);
/* -1 error, 0 no result (exception set in *exc), 1 result in *res */
int aioev_future_get_result(aioev_state *st, FutureObj *fut,
                            PyObject **res);
/* Our fields only; the slots add the asyncio part's (below). */
int aioev_future_traverse(FutureObj *fut, visitproc visit, void *arg);
/* _asyncio.<name>, our types' base, checked to fit AIOEV_ASYNCIO_PART. */
PyObject *aioev_asyncio_base(const char *name);
/* The asyncio part's traverse; its dealloc, once ours is cleared. */
int aioev_asyncio_traverse(PyTypeObject *base, PyObject *self,
                           visitproc visit, void *arg);
void aioev_asyncio_dealloc(PyTypeObject *base, PyObject *self);
/* Future.__await__ / __iter__ (the Task's too). */
PyObject *aioev_future_await(FutureObj *fut);
/* One step of `await fut`: yields fut the first time (PYGEN_NEXT), then
 * returns its result or raises (PYGEN_RETURN / PYGEN_ERROR). */
PySendResult aioev_future_await_step(FutureObj *fut, PyObject **result);
/* tp_iternext from an am_send outcome: StopIteration carries the value. */
PyObject *aioev_iternext_from_send(PySendResult r, PyObject *res);
/* coro.throw(typ[, val[, tb]])'s exception, raised (1 <= nargs <= 3). */
void aioev_set_thrown(PyObject *const *args, Py_ssize_t nargs);
/* For a coroutine-like object going away unawaited: the RuntimeWarning
 * "coroutine '<prefix><name>' was never awaited", as a coroutine's
 * finalizer gives; keeps any raised exception. */
void aioev_warn_never_awaited(const char *prefix, const char *name);
/* cancel(msg=None)'s arguments, for Future.cancel and Task.cancel. */
int aioev_parse_cancel_args(PyObject *const *args, size_t nargsf,
                            PyObject *kwnames, PyObject **msg);
int aioev_future_clear(FutureObj *fut);
void aioev_future_finalize(PyObject *fut);
/* A finalizer's report to loop.call_exception_handler: {"message":
 * message (stolen; NULL if making it failed), key: self, and
 * "exception" / "source_traceback" when given}. Keeps any raised
 * exception; failures go to sys.unraisablehook. */
void aioev_finalizer_report(PyObject *self, PyObject *loop,
                            PyObject *message, const char *key,
                            PyObject *source_tb, PyObject *exception);
extern PyMethodDef aioev_future_methods[];
extern PyGetSetDef aioev_future_getset[];

/* Task stepping, called by the loop's ready queue (task.c). Both return 0
 * or -1 with an exception the loop should report or propagate. */
int aioev_task_step(aioev_state *st, TaskObj *task, PyObject *exc);
int aioev_task_wakeup(aioev_state *st, TaskObj *task, PyObject *fut);
/* A callable doing the task's step (with exc) or, if wakeup, its wake-up
 * (called with the future; also what stands for it in displays). */
PyObject *aioev_task_callback(aioev_state *st, TaskObj *task, PyObject *exc,
                              int wakeup);
/* Create a Task as loop.create_task does without a factory. */
PyObject *aioev_task_new(aioev_state *st, PyObject *coro, PyObject *loop,
                         PyObject *name, PyObject *context);

#endif /* AIOEV_MODULE_H */
