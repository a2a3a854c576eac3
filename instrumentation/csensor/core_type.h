/* csensor/core_type.h: Core as a Python type (part of _csensor.c's single compilation unit).
 *
 * The cold-path methods (sweep_parked, set_kind, stack_depth, stack_fids), the background getter
 * and setter, construction, GC support and deallocation, and the method table that exposes both
 * front ends' callbacks. Included after them, since the method table names their functions.
 *
 * Relies on core.h, monitoring.h (3.12+), hooks311.h, table_type.h (CallTableType, to build the
 * background table), stack.h, clock.h (recalibrate) and util.h.
 */

/* ========================================================================== cold-path methods */

/* Is the invocation parked under `frame` over? Its generator is gone when the frame no longer
 * belongs to a generator (a dying generator hands its frame over to the frame object) or when
 * only the parking lot holds the frame; a generator still referenced may also have completed
 * (3.13 closes a suspended generator without any event). */
static int
parked_is_over(PyObject *frame)
{
    if (Py_REFCNT(frame) <= 1)
        return 1;
    PyObject *gen = PyFrame_GetGenerator((PyFrameObject *)frame);
    if (gen == NULL) {
        PyErr_Clear();
        return 1;
    }
    const char *attr = PyCoro_CheckExact(gen) ? "cr_frame" : PyGen_Check(gen) ? "gi_frame" : "ag_frame";
    PyObject *live = PyObject_GetAttrString(gen, attr); /* None once the generator completed */
    Py_DECREF(gen);
    if (live == NULL) {
        PyErr_Clear();
        return 0;
    }
    Py_DECREF(live);
    return live == Py_None;
}

/* sweep_parked(): finish invocations whose generator is gone or completed while suspended (3.13
 * sends no event when a suspended generator is closed or collected), as at the moment it was
 * parked. The call goes to the table captured at park time (else the current request, else the
 * background), as the twin. */
static PyObject *
core_sweep_parked(Core *core, PyObject *unused)
{
    recalibrate(); /* the export thread calls this every interval: keep the TSC map on time */
    size_t n_over = 0, cap = core->parked ? core->parked_mask + 1 : 0;
    for (size_t i = 0; i < cap; i++)
        if (core->parked[i].frame != NULL && parked_is_over(core->parked[i].frame))
            n_over++;
    if (n_over == 0)
        Py_RETURN_NONE;
    Parked *over = PyMem_Malloc(n_over * sizeof(Parked));
    if (over == NULL) {
        internal_error(core);
        Py_RETURN_NONE;
    }
    size_t n = 0;
    for (size_t i = 0; i < cap && n < n_over;) {
        Parked *p = &core->parked[i];
        if (p->frame != NULL && parked_is_over(p->frame)) {
            over[n++] = *p;
            parked_remove_at(core, i); /* shifts a later slot into i: look at i again */
        }
        else
            i++;
    }
    /* The parking lot is consistent; finishing and dropping references may run Python code. */
    for (size_t j = 0; j < n; j++) {
        finish(core, NULL, NULL, &over[j].entry, over[j].entry.segment, NULL, over[j].table);
        Py_DECREF(over[j].frame);
        Py_XDECREF(over[j].table);
    }
    PyMem_Free(over);
    Py_RETURN_NONE;
}

/* set_kind(fid, kind): what enter(fid) needs to know (called by CSensor.adopt_info). */
static PyObject *
core_set_kind(Core *core, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "set_kind(fid, kind)");
        return NULL;
    }
    long fid = PyLong_AsLong(args[0]), kind = PyLong_AsLong(args[1]);
    if (PyErr_Occurred())
        return NULL;
    if (fid < 0 || fid >= INT32_MAX || kind < PLAIN || kind > COROUTINE) {
        PyErr_SetString(PyExc_ValueError, "fid or kind out of range");
        return NULL;
    }
    if (fid >= core->n_kinds) {
        Py_ssize_t n = core->n_kinds ? core->n_kinds : 64;
        while (n <= fid)
            n *= 2;
        uint8_t *kinds = PyMem_Realloc(core->kinds, (size_t)n);
        if (kinds == NULL)
            return PyErr_NoMemory();
        memset(kinds + core->n_kinds, PLAIN, (size_t)(n - core->n_kinds));
        core->kinds = kinds;
        core->n_kinds = n;
    }
    core->kinds[fid] = (uint8_t)kind;
    Py_RETURN_NONE;
}

/* stack_depth(): in-flight sensed invocations on the calling thread (tests). */
static PyObject *
core_stack_depth(Core *core, PyObject *unused)
{
    ThreadStack *st = stack_of(core);
    return PyLong_FromSsize_t(st ? st->len : 0);
}

/* stack_fids(): function ids on the calling thread's stack, bottom first (tests, debugging). */
static PyObject *
core_stack_fids(Core *core, PyObject *unused)
{
    ThreadStack *st = stack_of(core);
    Py_ssize_t n = st ? st->len : 0;
    PyObject *out = PyList_New(n);
    for (Py_ssize_t i = 0; out != NULL && i < n; i++) {
        PyObject *fid = PyLong_FromLong(live(&st->items[i])->fid);
        if (fid == NULL)
            Py_CLEAR(out);
        else
            PyList_SET_ITEM(out, i, fid);
    }
    return out;
}

/* take_enclosed() -> None, or (held, released): the calling thread's held table (no longer
 * held: the caller owns it now, or None) and the tables released since the last call (a list, or
 * None). The rollup processor, when a request starts: the calls its enclosing calls made so far. */
static PyObject *
core_take_enclosed(Core *core, PyObject *unused)
{
    ThreadStack *st = stack_of(core);
    PyObject *held = NULL;
    if (st != NULL) {
        if (st->len > 0)
            core->enclosing = 1;
        stack_settled(core, st); /* left by an outermost call that returned: not this request's */
        if (held_valid(core, st)) {
            held = Py_NewRef(st->held);
            if (PySet_Discard(core->holding, held) < 0) {
                Py_DECREF(held);
                return NULL;
            }
        }
        st->held = NULL;
    }
    if (held == NULL && PyList_GET_SIZE(core->released) == 0)
        Py_RETURN_NONE;
    PyObject *released = Py_None;
    if (PyList_GET_SIZE(core->released) > 0) {
        PyObject *fresh = PyList_New(0);
        if (fresh == NULL) {
            Py_XDECREF(held);
            return NULL;
        }
        released = core->released; /* the reference moves to the tuple */
        core->released = fresh;
    }
    else
        Py_INCREF(released);
    return Py_BuildValue("(NN)", held ? held : Py_NewRef(Py_None), released);
}

/* hold(table) -> bool: when sensed calls run on this thread (they enclose the request that just
 * ended), hold `table` for the calls that finish before the stack empties; a table it held
 * already is released. False, and nothing held, on an empty stack. */
static PyObject *
core_hold(Core *core, PyObject *table)
{
    if (!CallTable_Check(table)) {
        PyErr_SetString(PyExc_TypeError, "hold() takes a _csensor.CallTable");
        return NULL;
    }
    ThreadStack *st = stack_of(core);
    if (st == NULL || st->len == 0)
        Py_RETURN_FALSE;
    core->enclosing = 1;
    release_held(core, st);
    if (PySet_Add(core->holding, table) < 0)
        return NULL;
    ((CallTable *)table)->span_budget = 0; /* its spans were queued with the request */
    st->held = table;
    st->held_epoch = core->held_epoch;
    Py_RETURN_TRUE;
}

/* take_all_held() -> list: every held and released table (the export thread, closing a window).
 * Every thread's held pointer goes stale: its next enclosed call starts a new table. */
static PyObject *
core_take_all_held(Core *core, PyObject *unused)
{
    PyObject *fresh_set = PySet_New(NULL), *fresh_list = PyList_New(0);
    if (fresh_set == NULL || fresh_list == NULL) {
        Py_XDECREF(fresh_set);
        Py_XDECREF(fresh_list);
        return NULL;
    }
    PyObject *holding = core->holding, *taken = core->released;
    core->holding = fresh_set;
    core->released = fresh_list;
    core->held_epoch++;
    PyObject *items = PySequence_List(holding);
    Py_DECREF(holding);
    int rc = items == NULL ? -1 : 0;
    for (Py_ssize_t i = 0; rc == 0 && i < PyList_GET_SIZE(items); i++)
        rc = PyList_Append(taken, PyList_GET_ITEM(items, i));
    Py_XDECREF(items);
    if (rc < 0) {
        Py_DECREF(taken);
        return NULL;
    }
    return taken;
}

static PyObject *
core_get_background(Core *core, void *closure)
{
    return Py_NewRef(core->background);
}

static int
core_set_background(Core *core, PyObject *value, void *closure)
{
    if (value == NULL || !CallTable_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "background must be a _csensor.CallTable");
        return -1;
    }
    Py_SETREF(core->background, Py_NewRef(value));
    return 0;
}

/* current_node(): the path node of the innermost sensed call in flight on this thread (0: none),
 * where a span of another instrumentation that ends now belongs. */
static PyObject *
core_current_node(Core *core, PyObject *unused)
{
    ThreadStack *st = stack_of(core);
    if (st == NULL)
        return PyLong_FromLong(PATH_ROOT);
    return PyLong_FromLong(st->len > 0 ? live(&st->items[st->len - 1])->node : st->base_node);
}

/* set_base_node(node) -> the previous one: the node this thread's outermost calls hang under. */
static PyObject *
core_set_base_node(Core *core, PyObject *arg)
{
    long node = PyLong_AsLong(arg);
    if (node == -1 && PyErr_Occurred())
        return NULL;
    ThreadStack *st = stack_of(core);
    if (st == NULL)
        return PyErr_NoMemory();
    long previous = st->base_node;
    st->base_node = node >= 0 && core->paths != NULL && node < core->paths->n ? (int32_t)node : PATH_ROOT;
    return PyLong_FromLong(previous);
}

static PyObject *
core_get_paths(Core *core, void *closure)
{
    return Py_NewRef(core->paths_obj ? core->paths_obj : Py_None);
}

static PyObject *
core_get_parked(Core *core, void *closure)
{
    return PyLong_FromSize_t(core->parked_len);
}

static PyObject *
core_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"classify", "current_request", "slow_ns", "paths", NULL};
    PyObject *classify, *request_var, *paths = NULL;
    long long slow_ns = 50000000;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|LO:Core", kwlist, &classify, &request_var, &slow_ns, &paths))
        return NULL;
    if (!PyCallable_Check(classify) || !PyContextVar_CheckExact(request_var) || (paths && !PathRegistry_Check(paths))) {
        PyErr_SetString(PyExc_TypeError,
                        "Core(classify: callable, current_request: ContextVar, slow_ns=..., paths: PathRegistry=...)");
        return NULL;
    }
#if HAS_MONITORING
    if (next_epoch > MAX_EPOCH) {
        PyErr_SetString(PyExc_RuntimeError, "too many sensors created in this process");
        return NULL;
    }
#endif
    Core *core = (Core *)type->tp_alloc(type, 0);
    if (core == NULL)
        return NULL;
    core->epoch = next_epoch++;
    core->slow_ns = slow_ns;
    core->classify = Py_NewRef(classify);
    core->request_var = Py_NewRef(request_var);
    core->paths_obj = paths ? Py_NewRef(paths) : PyObject_CallNoArgs((PyObject *)&PathRegistryType);
    if (core->paths_obj == NULL) {
        Py_DECREF(core);
        return NULL;
    }
    core->paths = &((PathRegistry *)core->paths_obj)->p;
    core->background = PyObject_CallNoArgs((PyObject *)&CallTableType);
    core->holding = PySet_New(NULL);
    core->released = PyList_New(0);
    core->held_epoch = 1;
    if (core->background == NULL || core->holding == NULL || core->released == NULL) {
        Py_DECREF(core);
        return NULL;
    }
    if (pthread_key_create(&core->key, free_thread_stack) != 0) {
        Py_DECREF(core);
        PyErr_SetString(PyExc_RuntimeError, "no pthread key left");
        return NULL;
    }
    core->key_ok = 1;
    return (PyObject *)core;
}

static int
core_traverse(Core *core, visitproc visit, void *arg)
{
    Py_VISIT(core->background);
    Py_VISIT(core->holding);
    Py_VISIT(core->released);
    Py_VISIT(core->classify);
    Py_VISIT(core->request_var);
    size_t cap = core->parked ? core->parked_mask + 1 : 0;
    for (size_t i = 0; i < cap; i++) {
        Py_VISIT(core->parked[i].frame);
        Py_VISIT(core->parked[i].table);
    }
    return 0;
}

static int
core_clear(Core *core)
{
    Py_CLEAR(core->background);
    core->held_epoch++; /* no thread's held pointer may be read once the set is gone */
    Py_CLEAR(core->holding);
    Py_CLEAR(core->released);
    Py_CLEAR(core->classify);
    Py_CLEAR(core->request_var);
    Parked *parked = core->parked;
    size_t cap = parked ? core->parked_mask + 1 : 0;
    core->parked = NULL;
    core->parked_len = 0;
    for (size_t i = 0; i < cap; i++) {
        Py_XDECREF(parked[i].frame);
        Py_XDECREF(parked[i].table);
    }
    PyMem_Free(parked);
    return 0;
}

static void
core_dealloc(Core *core)
{
    PyObject_GC_UnTrack(core);
    core_clear(core);
    PyMem_Free(core->kinds);
    core->paths = NULL;
    Py_CLEAR(core->paths_obj);
    if (core->key_ok) {
        /* This thread's stack can go now; other threads' stacks leak (a few KB per thread that is
         * still alive and ever ran sensed code under this core). */
        ThreadStack *st = pthread_getspecific(core->key);
        pthread_setspecific(core->key, NULL);
        if (st != NULL) {
            stack_truncate(st, 0);
            clear_pending(st);
        }
        free_thread_stack(st);
        pthread_key_delete(core->key);
        if (tls_cache.epoch == core->epoch)
            tls_cache.epoch = 0;
    }
    Py_TYPE(core)->tp_free((PyObject *)core);
}

static PyMethodDef core_methods[] = {
#if HAS_MONITORING
    {"on_start", (PyCFunction)(void (*)(void))core_on_start, METH_FASTCALL, "PY_START callback"},
    {"on_return", (PyCFunction)(void (*)(void))core_on_return, METH_FASTCALL, "PY_RETURN callback"},
    {"on_unwind", (PyCFunction)(void (*)(void))core_on_unwind, METH_FASTCALL, "PY_UNWIND callback"},
    {"on_yield", (PyCFunction)(void (*)(void))core_on_yield, METH_FASTCALL, "PY_YIELD callback"},
    {"on_resume", (PyCFunction)(void (*)(void))core_on_resume, METH_FASTCALL, "PY_RESUME callback"},
    {"on_throw", (PyCFunction)(void (*)(void))core_on_throw, METH_FASTCALL, "PY_THROW callback"},
    {"watch_functions", (PyCFunction)core_watch_functions, METH_O,
     "watch_functions(functions): classify their code and that of every function created later"},
    {"unwatch_functions", (PyCFunction)core_unwatch_functions, METH_NOARGS, "stop watching"},
#endif
    {"enter", (PyCFunction)core_enter, METH_O, "enter(fid) -> token"},
    {"enter_co", (PyCFunction)core_enter_co, METH_O, "enter_co(fid) -> token (rewrite.py hook)"},
    {"unwind", (PyCFunction)(void (*)(void))core_unwind, METH_FASTCALL | METH_KEYWORDS,
     "unwind(token, exc=None) (rewrite.py hook)"},
    {"yield_", (PyCFunction)(void (*)(void))core_yield, METH_FASTCALL, "yield_(token, value) -> value (rewrite.py hook)"},
    {"await_", (PyCFunction)(void (*)(void))core_await, METH_FASTCALL,
     "await_(token, awaitable) -> awaitable (rewrite.py hook)"},
    {"leave", (PyCFunction)(void (*)(void))core_leave, METH_FASTCALL | METH_KEYWORDS, "leave(token, exc=None)"},
    {"suspend", (PyCFunction)core_suspend, METH_O, "suspend(token)"},
    {"resume", (PyCFunction)(void (*)(void))core_resume, METH_FASTCALL | METH_KEYWORDS,
     "resume(token, value=None) -> value"},
    {"sweep_parked", (PyCFunction)core_sweep_parked, METH_NOARGS,
     "finish invocations whose generator was dropped while suspended"},
    {"set_kind", (PyCFunction)(void (*)(void))core_set_kind, METH_FASTCALL, "set_kind(fid, kind)"},
    {"stack_depth", (PyCFunction)core_stack_depth, METH_NOARGS, "in-flight invocations on this thread"},
    {"current_node", (PyCFunction)core_current_node, METH_NOARGS, "path node of the innermost sensed call on this thread"},
    {"set_base_node", (PyCFunction)core_set_base_node, METH_O, "set_base_node(node) -> previous: where this thread's outermost calls hang"},
    {"stack_fids", (PyCFunction)core_stack_fids, METH_NOARGS, "function ids on this thread's stack"},
    {"take_enclosed", (PyCFunction)core_take_enclosed, METH_NOARGS,
     "take_enclosed() -> None or (this thread's held table or None, released tables or None)"},
    {"hold", (PyCFunction)core_hold, METH_O, "hold(table) -> bool: hold it for the calls of this thread's enclosing calls"},
    {"take_all_held", (PyCFunction)core_take_all_held, METH_NOARGS, "take_all_held() -> every held and released table"},
    {NULL},
};

static PyMemberDef core_members[] = {
    {"slow_ns", T_LONGLONG, offsetof(Core, slow_ns), 0, "calls at least this long become spans"},
    {"internal_errors", T_PYSSIZET, offsetof(Core, internal_errors), 0, "swallowed internal failures"},
    {"enclosing", T_INT, offsetof(Core, enclosing), 0, "hold enclosed calls (core.h's enclosures); set by the first enclosed request"},
    {"held_fallbacks", T_PYSSIZET, offsetof(Core, held_fallbacks), READONLY,
     "enclosed calls counted in background because too many held tables were out"},
    {NULL},
};

static PyGetSetDef core_getset[] = {
    {"background", (getter)core_get_background, (setter)core_set_background,
     "the CallTable for calls outside an open request", NULL},
    {"parked", (getter)core_get_parked, NULL, "number of suspended invocations parked", NULL},
    {"paths", (getter)core_get_paths, NULL, "the PathRegistry this core records nodes in", NULL},
    {NULL},
};

static PyTypeObject CoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "funcsight.instrumentation._csensor.Core",
    .tp_basicsize = sizeof(Core),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "Core(classify, current_request, slow_ns=50_000_000): one sensor's hot path.",
    .tp_new = core_new,
    .tp_dealloc = (destructor)core_dealloc,
    .tp_traverse = (traverseproc)core_traverse,
    .tp_clear = (inquiry)core_clear,
    .tp_methods = core_methods,
    .tp_members = core_members,
    .tp_getset = core_getset,
};
