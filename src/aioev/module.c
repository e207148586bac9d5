/* aioev._core: module state, type registration and PEP 489 init. */
#include "module.h"

/* Looks up module.attr, e.g. ("asyncio.tasks", "_enter_task"). */
static PyObject *
import_attr(const char *module, const char *attr)
{
    PyObject *mod = PyImport_ImportModule(module);
    if (mod == NULL) {
        return NULL;
    }
    PyObject *obj = PyObject_GetAttrString(mod, attr);
    Py_DECREF(mod);
    return obj;
}

PyObject *
aioev_call_with_first(PyObject *callable, PyObject *first,
                      PyObject *const *args, size_t nargsf,
                      PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    Py_ssize_t n = nargs + (kwnames ? PyTuple_GET_SIZE(kwnames) : 0);
    PyObject *small[8], **all = small;
    if (n + 1 > (Py_ssize_t)(sizeof(small) / sizeof(small[0]))) {
        all = PyMem_New(PyObject *, n + 1);
        if (all == NULL) {
            return PyErr_NoMemory();
        }
    }
    all[0] = first;
    for (Py_ssize_t i = 0; i < n; i++) {
        all[i + 1] = args[i];
    }
    PyObject *r = PyObject_Vectorcall(callable, all, (size_t)nargs + 1,
                                      kwnames);
    if (all != small) {
        PyMem_Free(all);
    }
    return r;
}

/* ------------------------------------------------------------------------
 * traverse / clear / free / exec
 * ------------------------------------------------------------------------ */

static int
module_traverse(PyObject *mod, visitproc visit, void *arg)
{
    aioev_state *st = aioev_get_state(mod);
    Py_VISIT(st->LoopType);
    Py_VISIT(st->HandleType);
    Py_VISIT(st->TimerHandleType);
    Py_VISIT(st->FutureType);
    Py_VISIT(st->FutureIterType);
    Py_VISIT(st->TaskType);
    Py_VISIT(st->TaskCallbackType);
    Py_VISIT(st->SockOpType);
    Py_VISIT(st->SockCoroType);
    Py_VISIT(st->StreamType);
    Py_VISIT(st->TransportSocket);
    Py_VISIT(st->BufferedProtocol);
    Py_VISIT(st->set_result_unless_cancelled);
    Py_VISIT(st->set_nodelay);
    Py_VISIT(st->socket_socket);
    Py_VISIT(st->set_wakeup_fd);
    Py_VISIT(st->main_thread);
    Py_VISIT(st->StreamReaderProtocol);
    Py_VISIT(st->StreamReader);
    for (int i = 0; i < 3; i++) {
        Py_VISIT(st->stream_methods[i]);
    }
    Py_VISIT(st->StreamWriter);
    Py_VISIT(st->FastStreamReader);
    Py_VISIT(st->FastStreamWriter);
    Py_VISIT(st->StreamCoroType);
    for (int i = 0; i < AIOEV_STREAMRW_ORIG; i++) {
        Py_VISIT(st->streamrw_orig[i]);
    }
    Py_VISIT(st->empty_context);
    Py_VISIT(st->SSLSocket);
    Py_VISIT(st->CancelledError);
    Py_VISIT(st->InvalidStateError);
    Py_VISIT(st->get_event_loop);
    Py_VISIT(st->iscoroutine);
    Py_VISIT(st->iscoroutinefunction);
    Py_VISIT(st->register_task);
    Py_VISIT(st->tasks_data);
    Py_VISIT(st->tasks_remove);
    Py_VISIT(st->tasks_pending);
    Py_VISIT(st->enter_task);
    Py_VISIT(st->leave_task);
    Py_VISIT(st->swap_current_task);
    Py_VISIT(st->register_eager_task);
    Py_VISIT(st->unregister_eager_task);
    Py_VISIT(st->extract_stack);
    Py_VISIT(st->task_get_stack);
    Py_VISIT(st->task_print_stack);
    Py_VISIT(st->logger);
    Py_VISIT(st->inspect_isgenerator);
#if PY_VERSION_HEX >= 0x030E0000
    Py_VISIT(st->awaited_by_add);
    Py_VISIT(st->awaited_by_discard);
#endif
    Py_VISIT(st->future_repr);
    Py_VISIT(st->task_repr);
    Py_VISIT(st->handle_repr);
    Py_VISIT(st->report_error);
    Py_VISIT(st->empty_tuple);
    Py_VISIT(st->kw_context);
    Py_VISIT(st->str_call_soon);
    Py_VISIT(st->str_data_received);
    Py_VISIT(st->str_get_buffer);
    Py_VISIT(st->str_buffer_updated);
    return 0;
}

static int
module_clear(PyObject *mod)
{
    aioev_state *st = aioev_get_state(mod);
    aioev_handle_freelist_clear(st);
    aioev_blocks_clear(st);
    Py_CLEAR(st->LoopType);
    Py_CLEAR(st->HandleType);
    Py_CLEAR(st->TimerHandleType);
    Py_CLEAR(st->FutureType);
    Py_CLEAR(st->FutureIterType);
    Py_CLEAR(st->TaskType);
    Py_CLEAR(st->TaskCallbackType);
    Py_CLEAR(st->SockOpType);
    Py_CLEAR(st->SockCoroType);
    Py_CLEAR(st->StreamType);
    Py_CLEAR(st->TransportSocket);
    Py_CLEAR(st->BufferedProtocol);
    Py_CLEAR(st->set_result_unless_cancelled);
    Py_CLEAR(st->set_nodelay);
    Py_CLEAR(st->socket_socket);
    Py_CLEAR(st->set_wakeup_fd);
    Py_CLEAR(st->main_thread);
    Py_CLEAR(st->str__accept);
    Py_CLEAR(st->str_accept);
    Py_CLEAR(st->str_gettimeout);
    Py_CLEAR(st->StreamReaderProtocol);
    Py_CLEAR(st->StreamReader);
    for (int i = 0; i < 3; i++) {
        Py_CLEAR(st->stream_methods[i]);
    }
    Py_CLEAR(st->StreamWriter);
    Py_CLEAR(st->FastStreamReader);
    Py_CLEAR(st->FastStreamWriter);
    Py_CLEAR(st->StreamCoroType);
    for (int i = 0; i < AIOEV_STREAMRW_ORIG; i++) {
        Py_CLEAR(st->streamrw_orig[i]);
    }
    Py_CLEAR(st->str__exception);
    Py_CLEAR(st->str__loop);
    Py_CLEAR(st->str__reader);
    Py_CLEAR(st->str__protocol);
    Py_CLEAR(st->str__connection_lost);
    Py_CLEAR(st->str__client_connected_cb);
    Py_CLEAR(st->str_create_future);
    Py_CLEAR(st->str_resume_reading);
    Py_CLEAR(st->str_exception);
    Py_CLEAR(st->str_is_closing);
    Py_CLEAR(st->str_write);
    Py_CLEAR(st->str_stream_reader_wr);
    Py_CLEAR(st->str__eof);
    Py_CLEAR(st->str__buffer);
    Py_CLEAR(st->str__waiter);
    Py_CLEAR(st->str__transport);
    Py_CLEAR(st->str__paused);
    Py_CLEAR(st->str__limit);
    Py_CLEAR(st->str_fileno);
    Py_CLEAR(st->str_recvfrom);
    Py_CLEAR(st->str_recvfrom_into);
    Py_CLEAR(st->str_sendto);
    Py_CLEAR(st->str_setblocking);
    Py_CLEAR(st->empty_context);
    Py_CLEAR(st->SSLSocket);
    Py_CLEAR(st->CancelledError);
    Py_CLEAR(st->InvalidStateError);
    Py_CLEAR(st->get_event_loop);
    Py_CLEAR(st->iscoroutine);
    Py_CLEAR(st->iscoroutinefunction);
    Py_CLEAR(st->register_task);
    Py_CLEAR(st->tasks_data);
    Py_CLEAR(st->tasks_remove);
    Py_CLEAR(st->tasks_pending);
    Py_CLEAR(st->enter_task);
    Py_CLEAR(st->leave_task);
    Py_CLEAR(st->swap_current_task);
    Py_CLEAR(st->register_eager_task);
    Py_CLEAR(st->unregister_eager_task);
    Py_CLEAR(st->extract_stack);
    Py_CLEAR(st->task_get_stack);
    Py_CLEAR(st->task_print_stack);
    Py_CLEAR(st->logger);
    Py_CLEAR(st->inspect_isgenerator);
#if PY_VERSION_HEX >= 0x030E0000
    Py_CLEAR(st->awaited_by_add);
    Py_CLEAR(st->awaited_by_discard);
#endif
    Py_CLEAR(st->future_repr);
    Py_CLEAR(st->task_repr);
    Py_CLEAR(st->handle_repr);
    Py_CLEAR(st->report_error);
    Py_CLEAR(st->empty_tuple);
    Py_CLEAR(st->kw_context);
    Py_CLEAR(st->str_call_soon);
    Py_CLEAR(st->str_data_received);
    Py_CLEAR(st->str_get_buffer);
    Py_CLEAR(st->str_buffer_updated);
    return 0;
}

static void
module_free(void *mod)
{
    module_clear((PyObject *)mod);
}

/* Finds the WeakSet asyncio's _register_task adds to, and its parts, so
 * that registering one of our tasks costs a weakref and a set insertion
 * instead of a run of WeakSet.add in Python. Leaves them NULL (and the
 * slow path in use) if anything is not as expected. */
static void
open_task_registry(aioev_state *st)
{
    PyObject *tasks = PyImport_ImportModule("asyncio.tasks");
    PyObject *weakset = NULL, *cls = NULL;
    if (tasks == NULL) {
        goto done;
    }
    weakset = PyObject_GetAttrString(tasks, "_scheduled_tasks");
    if (weakset == NULL) {
        PyErr_Clear();
        weakset = PyObject_GetAttrString(tasks, "_all_tasks");
    }
    cls = import_attr("weakref", "WeakSet");
    if (weakset == NULL || cls == NULL || !Py_IS_TYPE(weakset,
                                                      (PyTypeObject *)cls)) {
        goto done;
    }
    st->tasks_data = PyObject_GetAttrString(weakset, "data");
    st->tasks_remove = PyObject_GetAttrString(weakset, "_remove");
    st->tasks_pending = PyObject_GetAttrString(weakset, "_pending_removals");
    if (st->tasks_data == NULL || !PySet_CheckExact(st->tasks_data)
        || st->tasks_remove == NULL || st->tasks_pending == NULL
        || !PyList_CheckExact(st->tasks_pending)) {
        Py_CLEAR(st->tasks_data);
        Py_CLEAR(st->tasks_remove);
        Py_CLEAR(st->tasks_pending);
    }
done:
    PyErr_Clear();
    Py_XDECREF(tasks);
    Py_XDECREF(weakset);
    Py_XDECREF(cls);
}

static int
module_exec(PyObject *mod)
{
    aioev_state *st = aioev_get_state(mod);
    static const struct {
        size_t offset;
        const char *module;
        const char *attr;
    } imports[] = {
        {offsetof(aioev_state, CancelledError), "asyncio", "CancelledError"},
        {offsetof(aioev_state, InvalidStateError), "asyncio",
         "InvalidStateError"},
        {offsetof(aioev_state, get_event_loop), "asyncio.events",
         "get_event_loop"},
        {offsetof(aioev_state, iscoroutine), "asyncio.coroutines",
         "iscoroutine"},
#if PY_VERSION_HEX >= 0x030E0000
        /* 3.14 deprecates the public name; asyncio itself uses this one */
        {offsetof(aioev_state, iscoroutinefunction), "asyncio.coroutines",
         "_iscoroutinefunction"},
#else
        {offsetof(aioev_state, iscoroutinefunction), "asyncio.coroutines",
         "iscoroutinefunction"},
#endif
        {offsetof(aioev_state, register_task), "asyncio.tasks",
         "_register_task"},
        {offsetof(aioev_state, enter_task), "asyncio.tasks", "_enter_task"},
        {offsetof(aioev_state, leave_task), "asyncio.tasks", "_leave_task"},
#ifdef AIOEV_PY312
        {offsetof(aioev_state, swap_current_task), "asyncio.tasks",
         "_swap_current_task"},
        {offsetof(aioev_state, register_eager_task), "asyncio.tasks",
         "_register_eager_task"},
        {offsetof(aioev_state, unregister_eager_task), "asyncio.tasks",
         "_unregister_eager_task"},
#endif
        {offsetof(aioev_state, extract_stack), "asyncio.format_helpers",
         "extract_stack"},
        {offsetof(aioev_state, task_get_stack), "asyncio.base_tasks",
         "_task_get_stack"},
        {offsetof(aioev_state, task_print_stack), "asyncio.base_tasks",
         "_task_print_stack"},
        {offsetof(aioev_state, logger), "asyncio.log", "logger"},
        {offsetof(aioev_state, inspect_isgenerator), "inspect",
         "isgenerator"},
#if PY_VERSION_HEX >= 0x030E0000
        {offsetof(aioev_state, awaited_by_add), "asyncio.futures",
         "future_add_to_awaited_by"},
        {offsetof(aioev_state, awaited_by_discard), "asyncio.futures",
         "future_discard_from_awaited_by"},
#endif
        {offsetof(aioev_state, TransportSocket), "asyncio.trsock",
         "TransportSocket"},
        {offsetof(aioev_state, BufferedProtocol), "asyncio",
         "BufferedProtocol"},
        {offsetof(aioev_state, set_result_unless_cancelled),
         "asyncio.futures", "_set_result_unless_cancelled"},
        {offsetof(aioev_state, set_nodelay), "asyncio.base_events",
         "_set_nodelay"},
        {offsetof(aioev_state, socket_socket), "socket", "socket"},
        {offsetof(aioev_state, set_wakeup_fd), "signal", "set_wakeup_fd"},
        {offsetof(aioev_state, main_thread), "threading", "main_thread"},
        {offsetof(aioev_state, StreamReaderProtocol), "asyncio.streams",
         "StreamReaderProtocol"},
        {offsetof(aioev_state, StreamReader), "asyncio.streams",
         "StreamReader"},
        {offsetof(aioev_state, StreamWriter), "asyncio.streams",
         "StreamWriter"},
        {offsetof(aioev_state, future_repr), "aioev._helpers",
         "future_repr"},
        {offsetof(aioev_state, task_repr), "aioev._helpers", "task_repr"},
        {offsetof(aioev_state, handle_repr), "aioev._helpers",
         "handle_repr"},
        {offsetof(aioev_state, report_error), "aioev._helpers",
         "report_callback_error"},
    };

    for (size_t i = 0; i < sizeof(imports) / sizeof(imports[0]); i++) {
        PyObject **slot = (PyObject **)((char *)st + imports[i].offset);
        *slot = import_attr(imports[i].module, imports[i].attr);
        if (*slot == NULL) {
            return -1;
        }
    }
#if PY_VERSION_HEX >= 0x030B0000
    st->wrap_stopiteration = Py_Version >= 0x030C0200;
#endif
    open_task_registry(st);
    st->stream_methods[0] = PyObject_GetAttrString(st->StreamReaderProtocol,
                                                   "data_received");
    st->stream_methods[1] = PyObject_GetAttrString(st->StreamReader,
                                                   "feed_data");
    st->stream_methods[2] = PyObject_GetAttrString(st->StreamReader,
                                                   "_wakeup_waiter");
    if (st->stream_methods[0] == NULL || st->stream_methods[1] == NULL
        || st->stream_methods[2] == NULL) {
        return -1;
    }
    st->empty_context = PyContext_New();
    if (st->empty_context == NULL) {
        return -1;
    }
    st->SSLSocket = import_attr("ssl", "SSLSocket");
    if (st->SSLSocket == NULL) {
        PyErr_Clear();  /* Python built without ssl */
    }
    st->kw_context = Py_BuildValue("(s)", "context");
    if (st->kw_context == NULL) {
        return -1;
    }
    /* method and attribute names used on hot paths, interned once */
    static const struct {
        size_t offset;
        const char *name;
    } names[] = {
        {offsetof(aioev_state, str_call_soon), "call_soon"},
        {offsetof(aioev_state, str_data_received), "data_received"},
        {offsetof(aioev_state, str_get_buffer), "get_buffer"},
        {offsetof(aioev_state, str_buffer_updated), "buffer_updated"},
        {offsetof(aioev_state, str__accept), "_accept"},
        {offsetof(aioev_state, str_accept), "accept"},
        {offsetof(aioev_state, str_gettimeout), "gettimeout"},
        {offsetof(aioev_state, str_fileno), "fileno"},
        {offsetof(aioev_state, str_stream_reader_wr), "_stream_reader_wr"},
        {offsetof(aioev_state, str__eof), "_eof"},
        {offsetof(aioev_state, str__buffer), "_buffer"},
        {offsetof(aioev_state, str__waiter), "_waiter"},
        {offsetof(aioev_state, str__transport), "_transport"},
        {offsetof(aioev_state, str__paused), "_paused"},
        {offsetof(aioev_state, str__limit), "_limit"},
        {offsetof(aioev_state, str__exception), "_exception"},
        {offsetof(aioev_state, str__loop), "_loop"},
        {offsetof(aioev_state, str__reader), "_reader"},
        {offsetof(aioev_state, str__protocol), "_protocol"},
        {offsetof(aioev_state, str__connection_lost), "_connection_lost"},
        {offsetof(aioev_state, str__client_connected_cb),
         "_client_connected_cb"},
        {offsetof(aioev_state, str_create_future), "create_future"},
        {offsetof(aioev_state, str_resume_reading), "resume_reading"},
        {offsetof(aioev_state, str_exception), "exception"},
        {offsetof(aioev_state, str_is_closing), "is_closing"},
        {offsetof(aioev_state, str_write), "write"},
        {offsetof(aioev_state, str_recvfrom), "recvfrom"},
        {offsetof(aioev_state, str_recvfrom_into), "recvfrom_into"},
        {offsetof(aioev_state, str_sendto), "sendto"},
        {offsetof(aioev_state, str_setblocking), "setblocking"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        PyObject **slot = (PyObject **)((char *)st + names[i].offset);
        *slot = PyUnicode_InternFromString(names[i].name);
        if (*slot == NULL) {
            return -1;
        }
    }
    st->empty_tuple = PyTuple_New(0);
#ifndef AIOEV_NO_FREELIST
    st->freelist_on = 1;  /* ASan builds go without: reuse hides misuse */
#endif
    if (st->empty_tuple == NULL) {
        return -1;
    }
    /* gc.callbacks.append(_gc_hook) */
    PyObject *hook = PyCFunction_NewEx(&aioev_gc_hook_def, mod, NULL);
    PyObject *cbs = hook ? import_attr("gc", "callbacks") : NULL;
    int rc = cbs ? PyList_Append(cbs, hook) : -1;
    Py_XDECREF(hook);
    Py_XDECREF(cbs);
    if (rc < 0) {
        return -1;
    }
    if (aioev_handle_init_types(mod, st) < 0
        || aioev_future_init_types(mod, st) < 0
        || aioev_task_init_types(mod, st) < 0
        || aioev_sock_init_types(mod, st) < 0
        || aioev_stream_init_types(mod, st) < 0
        || aioev_streamrw_init(mod, st) < 0
        || aioev_loop_init_type(mod, st) < 0) {
        return -1;
    }
    return 0;
}

/* ------------------------------------------------------------------------
 * slots / def / PyInit
 * ------------------------------------------------------------------------ */

static PyModuleDef_Slot module_slots[] = {
    {Py_mod_exec, module_exec},
#if PY_VERSION_HEX >= 0x030C0000
    {Py_mod_multiple_interpreters, Py_MOD_MULTIPLE_INTERPRETERS_NOT_SUPPORTED},
#endif
    {0, NULL},
};

PyDoc_STRVAR(module_doc, "aioev's native core: the libev loop, Future, "
             "Task and handles.");

PyModuleDef aioev_module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "aioev._core",
    .m_doc = module_doc,
    .m_size = sizeof(aioev_state),
    .m_slots = module_slots,
    .m_traverse = module_traverse,
    .m_clear = module_clear,
    .m_free = module_free,
};

PyMODINIT_FUNC
PyInit__core(void)
{
    return PyModuleDef_Init(&aioev_module_def);
}
