/* csensor/monitoring.h: the sys.monitoring front end, 3.12+ (part of _csensor.c's single
 * compilation unit; empty unless HAS_MONITORING).
 *
 * Parking a generator on PY_YIELD and unparking it on PY_RESUME/PY_THROW (the parking lot's
 * other half is in core.h), the co_extra tag (code object -> this core's function id and kind,
 * classified once), the function watcher that switches local events on per sensed code object,
 * and the callbacks core_on_start/return/unwind/yield/resume/throw that CSensor.start() registers.
 *
 * Relies on core.h (Core, stack_of, finish, end_segment, the parking lot), stack.h, clock.h and
 * util.h. The module init (in _csensor.c) sets extra_index and disable_obj.
 */

#if HAS_MONITORING /* the whole file */

/* =============================================================== sys.monitoring front end (3.12+) */

/* ------------------------------------------------ parking lot, 3.12+ half (core.h has the rest)
 * Parking on PY_YIELD is the 3.12+ front end's; 3.11 tokens carry their entry. */

static Py_ssize_t
parked_find(Core *core, PyObject *frame)
{
    if (core->parked == NULL)
        return -1;
    for (size_t i = parked_hash(core, frame);; i = (i + 1) & core->parked_mask) {
        if (core->parked[i].frame == frame)
            return (Py_ssize_t)i;
        if (core->parked[i].frame == NULL)
            return -1;
    }
}

static int
parked_grow(Core *core)
{
    int bits = core->parked ? core->parked_bits + 1 : 6;
    size_t cap = (size_t)1 << bits;
    Parked *slots = PyMem_Calloc(cap, sizeof(Parked));
    if (slots == NULL)
        return -1;
    Parked *old = core->parked;
    size_t old_cap = old ? core->parked_mask + 1 : 0;
    core->parked = slots;
    core->parked_mask = cap - 1;
    core->parked_bits = bits;
    for (size_t j = 0; j < old_cap; j++) {
        if (old[j].frame == NULL)
            continue;
        size_t i = parked_hash(core, old[j].frame);
        while (slots[i].frame != NULL)
            i = (i + 1) & core->parked_mask;
        slots[i] = old[j];
    }
    PyMem_Free(old);
    return 0;
}

/* Park `e` under `frame` (new references to frame and table are taken). */
static int
park(Core *core, PyObject *frame, PyObject *table, const Entry *e)
{
    if ((core->parked_len + 1) * 2 > (core->parked ? core->parked_mask + 1 : 0) && parked_grow(core) < 0)
        return -1;
    size_t i = parked_hash(core, frame);
    while (core->parked[i].frame != NULL && core->parked[i].frame != frame)
        i = (i + 1) & core->parked_mask;
    Parked old = core->parked[i];
    core->parked[i].frame = Py_NewRef(frame);
    core->parked[i].table = Py_XNewRef(table);
    core->parked[i].entry = *e;
    if (old.frame == NULL)
        core->parked_len++;
    else { /* cannot happen (a frame yields once before it resumes); keep the newest */
        Py_DECREF(old.frame);
        Py_XDECREF(old.table);
    }
    return 0;
}

/* The open request table of the current context (new reference), or NULL. */
static PyObject *
open_request_table(Core *core)
{
    PyObject *request = NULL;
    if (PyContextVar_Get(core->request_var, NULL, &request) < 0) {
        internal_error(core);
        return NULL;
    }
    if (request != NULL && CallTable_Check(request) && ((CallTable *)request)->open)
        return request;
    Py_XDECREF(request);
    return NULL;
}

/* Unpark the invocation suspended in `frame` and push it: the start of a new active segment. */
static void
unpark(Core *core, PyObject *frame)
{
    Py_ssize_t i = parked_find(core, frame);
    if (i < 0)
        return;
    Parked p = core->parked[i];
    parked_remove_at(core, (size_t)i);
    p.entry.segment = now_ns();
    ThreadStack *st = stack_of(core);
    if (st != NULL)
        stack_settled(core, st); /* a task resumes on an emptied stack: as an outermost call starts */
    Entry *top = st ? stack_push(st) : NULL;
    if (top != NULL)
        *top = p.entry;
    else
        internal_error(core);
    /* State is consistent: dropping references may now run arbitrary code. */
    Py_DECREF(p.frame);
    Py_XDECREF(p.table);
}

/* ---------------------------------------------------------------- code object -> tag (co_extra) */

static Py_ssize_t extra_index = -1;    /* our co_extra slot (PEP 523), one per interpreter */
static PyObject *disable_obj;           /* sys.monitoring.DISABLE */

/* co_extra value: epoch << 34 | (fid + 1) << 2 | kind. fid + 1 == 0 means "not sensed"; an epoch
 * other than the core's means "not classified by this core yet" (another sensor, or none). */
#define EPOCH_SHIFT 34
#define MAX_EPOCH (((uint64_t)1 << (64 - EPOCH_SHIFT)) - 1)
#define TAG(epoch, fid, kind) \
    (((uint64_t)(epoch) << EPOCH_SHIFT) | ((uint64_t)(uint32_t)((fid) + 1) << 2) | (uint64_t)(kind))
#define TAG_SENSED(tag) (((tag) >> 2) & 0xFFFFFFFFull)
#define TAG_FID(tag) ((int32_t)(TAG_SENSED(tag) - 1))
#define TAG_KIND(tag) ((uint8_t)((tag) & 3))

/* The code object's extra slot (the layout of CPython's _PyCodeObjectExtra, unchanged since 3.6),
 * read inline: this is on every event, including PY_UNWIND of unsensed code, which cannot be
 * disabled. PyUnstable_Code_SetExtra writes it. */
typedef struct {
    Py_ssize_t ce_size;
    void *ce_extras[1];
} CodeExtra;

static inline uint64_t
code_tag(PyObject *code)
{
    if (UNLIKELY(!PyCode_Check(code)))
        return 0;
    CodeExtra *extra = (CodeExtra *)((PyCodeObject *)code)->co_extra;
    if (extra == NULL || extra_index >= extra->ce_size)
        return 0;
    return (uint64_t)(uintptr_t)extra->ce_extras[extra_index];
}

/* First sight of a code object by this core: ask Python (classify(code, module)) once and store
 * the answer in the code object. The module is the name in the globals the code runs in. */
static uint64_t
classify_code_in(Core *core, PyObject *code, PyObject *globals)
{
    int32_t fid = -1;
    if (!PyCode_Check(code))
        return TAG(core->epoch, -1, 0);
    PyObject *module = NULL;
    if (globals != NULL && PyDict_Check(globals)) {
        module = PyDict_GetItemWithError(globals, str_name); /* borrowed */
        if (module == NULL && PyErr_Occurred())
            PyErr_Clear();
    }
    if (module == NULL || PyObject_IsTrue(module) != 1) {
        PyErr_Clear();
        module = str_empty;
    }
    Py_INCREF(module); /* classify() may run arbitrary code that drops the globals' reference */
    PyObject *res = PyObject_CallFunctionObjArgs(core->classify, code, module, NULL);
    Py_DECREF(module);
    if (res == NULL) {
        internal_error(core);
    }
    else {
        long value = PyLong_AsLong(res);
        Py_DECREF(res);
        if (value == -1 && PyErr_Occurred())
            internal_error(core);
        else if (value >= 0 && value < INT32_MAX - 1)
            fid = (int32_t)value;
    }
    uint64_t tag = TAG(core->epoch, fid, fid >= 0 ? kind_of_flags(((PyCodeObject *)code)->co_flags) : 0);
    if (PyUnstable_Code_SetExtra(code, extra_index, (void *)(uintptr_t)tag) < 0)
        internal_error(core);
    return tag;
}

/* Code met by an event before any function of it was seen (the sensor started mid-call, or
 * monitoring is global): the frame of `code` is running, so its globals are the current ones. */
static uint64_t
classify_code(Core *core, PyObject *code)
{
    return classify_code_in(core, code, PyEval_GetGlobals());
}

/* ------------------------------------------------ local events: the function watcher (3.12+)
 * A tool with any local event (PY_START...) switched on globally makes CPython run every code
 * object instrumented, sensed or not: about 1.4 % more instructions in unsensed code on 3.12,
 * even after every location returned DISABLE (bench/README.md). So the events that can be local
 * are switched on per sensed code object instead, when a function of it is created: classify()
 * turns them on for sensed code (CSensor.classify). Only PY_UNWIND and PY_THROW stay global (they
 * cannot be local; they cost one co_extra read per unwinding frame of unsensed code). One core
 * watches per sys.monitoring tool id in use by a funcsight sensor. */
#define MAX_WATCHING 4
static int function_watcher_id = -1;
static Core *watching[MAX_WATCHING]; /* strong references while watching */

/* Classify the code of `func` unless this core already did; never raises. */
static void
adopt_function_code(Core *core, PyObject *code, PyObject *globals)
{
    if (code == NULL || !PyCode_Check(code) || (code_tag(code) >> EPOCH_SHIFT) == core->epoch)
        return;
    PyObject *exc = PyErr_GetRaisedException();
    Py_INCREF(code);
    Py_XINCREF(globals);
    classify_code_in(core, code, globals);
    Py_XDECREF(globals);
    Py_DECREF(code);
    if (PyErr_Occurred()) {
        PyErr_Clear();
        internal_error(core);
    }
    PyErr_SetRaisedException(exc);
}

static int
on_function_event(PyFunction_WatchEvent event, PyFunctionObject *func, PyObject *new_value)
{
    PyObject *code;
    if (event == PyFunction_EVENT_CREATE)
        code = func->func_code;
    else if (event == PyFunction_EVENT_MODIFY_CODE)
        code = new_value;
    else
        return 0;
    for (int i = 0; i < MAX_WATCHING; i++) {
        if (watching[i] != NULL)
            adopt_function_code(watching[i], code, func->func_globals);
    }
    return 0;
}

/* watch_functions(functions): classify the code of every function given (those that exist now)
 * and of every function created from now on, until unwatch_functions(). */
static PyObject *
core_watch_functions(Core *core, PyObject *functions)
{
    if (function_watcher_id < 0) {
        function_watcher_id = PyFunction_AddWatcher(on_function_event);
        if (function_watcher_id < 0)
            return NULL;
    }
    int slot = -1;
    for (int i = 0; i < MAX_WATCHING && slot < 0; i++) {
        if (watching[i] == core)
            slot = i;
    }
    for (int i = 0; i < MAX_WATCHING && slot < 0; i++) {
        if (watching[i] == NULL)
            slot = i;
    }
    if (slot < 0) {
        PyErr_SetString(PyExc_RuntimeError, "too many funcsight sensors watching functions");
        return NULL;
    }
    Py_XSETREF(watching[slot], (Core *)Py_NewRef(core));
    PyObject *it = PyObject_GetIter(functions);
    if (it == NULL)
        return NULL;
    PyObject *item;
    while ((item = PyIter_Next(it)) != NULL) {
        if (PyFunction_Check(item)) {
            PyFunctionObject *func = (PyFunctionObject *)item;
            adopt_function_code(core, func->func_code, func->func_globals);
        }
        Py_DECREF(item);
    }
    Py_DECREF(it);
    if (PyErr_Occurred())
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
core_unwatch_functions(Core *core, PyObject *Py_UNUSED(ignored))
{
    for (int i = 0; i < MAX_WATCHING; i++) {
        if (watching[i] == core)
            Py_CLEAR(watching[i]);
    }
    Py_RETURN_NONE;
}

/* The tag of `code` for this core, classifying it on first sight. */
static inline uint64_t
tag_of(Core *core, PyObject *code)
{
    uint64_t tag = code_tag(code);
    if (UNLIKELY((tag >> EPOCH_SHIFT) != core->epoch))
        tag = classify_code(core, code);
    return tag;
}

static inline PyObject *
disable(void)
{
    return Py_NewRef(disable_obj);
}

/* PY_START(code, offset): push. Unsensed code is disabled here for good. */
static PyObject *
core_on_start(Core *core, PyObject *const *args, Py_ssize_t nargs)
{
    if (UNLIKELY(nargs < 1))
        Py_RETURN_NONE;
    uint64_t tag = tag_of(core, args[0]);
    if (!TAG_SENSED(tag))
        return disable();
    int64_t now = now_ns();
    ThreadStack *st = stack_of(core);
    if (UNLIKELY(st == NULL)) {
        internal_error(core);
        Py_RETURN_NONE;
    }
    int32_t fid = TAG_FID(tag), node = node_of_call(core, st, fid);
    Entry *e = stack_push(st);
    if (UNLIKELY(e == NULL)) {
        internal_error(core);
        Py_RETURN_NONE;
    }
    e->start = e->segment = now;
    e->child = e->active = 0;
    e->fid = fid;
    e->node = node;
    e->kind = TAG_KIND(tag);
    e->suspended = 0;
    e->owner = NULL;
    Py_RETURN_NONE;
}

/* PY_RETURN / PY_UNWIND: pop the top entry when it is this function's, and finish it. A top entry
 * of another function means events were missed (the sensor started mid-call): leave it alone. */
static inline void
final_exit(Core *core, uint64_t tag, PyObject *exc)
{
    int64_t now = now_ns();
    ThreadStack *st = stack_of(core);
    if (LIKELY(st != NULL && st->len > 0 && st->items[st->len - 1].fid == TAG_FID(tag))) {
        if (LIKELY(st->items[st->len - 1].owner == NULL)) {
            Entry *e = &st->items[--st->len]; /* read in place: see finish() */
            finish(core, st, stack_top(st), e, now, exc, NULL);
            return;
        }
        Entry e;
        stack_pop(st, &e);
        finish(core, st, stack_top(st), &e, now, exc, NULL);
    }
}

static PyObject *
core_on_return(Core *core, PyObject *const *args, Py_ssize_t nargs)
{
    if (UNLIKELY(nargs < 1))
        Py_RETURN_NONE;
    uint64_t tag = tag_of(core, args[0]);
    if (!TAG_SENSED(tag))
        return disable();
    final_exit(core, tag, NULL);
    Py_RETURN_NONE;
}

/* PY_UNWIND(code, offset, exc): cannot be disabled (DISABLE here raises in the application), so
 * for unsensed code it must stay cheap: one co_extra read. Control flow (is_control_flow) is not an error. */
static PyObject *
core_on_unwind(Core *core, PyObject *const *args, Py_ssize_t nargs)
{
    if (UNLIKELY(nargs < 3))
        Py_RETURN_NONE;
    uint64_t tag = code_tag(args[0]);
    if ((tag >> EPOCH_SHIFT) != core->epoch || !TAG_SENSED(tag))
        Py_RETURN_NONE;
    PyObject *exc = args[2];
    final_exit(core, tag, is_control_flow(exc) ? NULL : exc);
    Py_RETURN_NONE;
}

/* PY_YIELD: the invocation leaves the stack and is parked under its frame, with the request
 * table current at that moment (used only if the generator is dropped while suspended). */
static PyObject *
core_on_yield(Core *core, PyObject *const *args, Py_ssize_t nargs)
{
    if (UNLIKELY(nargs < 1))
        Py_RETURN_NONE;
    uint64_t tag = tag_of(core, args[0]);
    if (!TAG_SENSED(tag))
        return disable();
    int64_t now = now_ns();
    ThreadStack *st = stack_of(core);
    if (st == NULL || st->len == 0 || st->items[st->len - 1].fid != TAG_FID(tag))
        Py_RETURN_NONE;
    Entry e;
    stack_pop(st, &e);
    end_segment(stack_top(st), &e, now);
    stack_settled(core, st);
    PyObject *frame = (PyObject *)PyEval_GetFrame(); /* borrowed: the generator's own frame */
    if (frame == NULL) {
        internal_error(core);
        Py_RETURN_NONE;
    }
    PyObject *table = open_request_table(core);
    if (park(core, frame, table, &e) < 0)
        internal_error(core);
    Py_XDECREF(table);
    Py_RETURN_NONE;
}

/* PY_RESUME: unpark and push. */
static PyObject *
core_on_resume(Core *core, PyObject *const *args, Py_ssize_t nargs)
{
    if (UNLIKELY(nargs < 1))
        Py_RETURN_NONE;
    uint64_t tag = tag_of(core, args[0]);
    if (!TAG_SENSED(tag))
        return disable();
    if (core->parked_len > 0) {
        PyObject *frame = (PyObject *)PyEval_GetFrame();
        if (frame != NULL)
            unpark(core, frame);
        else
            internal_error(core);
    }
    Py_RETURN_NONE;
}

/* PY_THROW: like PY_RESUME, but never DISABLE. 3.12.1 also sends it (and PY_UNWIND with
 * GeneratorExit) when a suspended generator is closed, which finishes the invocation. */
static PyObject *
core_on_throw(Core *core, PyObject *const *args, Py_ssize_t nargs)
{
    if (UNLIKELY(nargs < 1))
        Py_RETURN_NONE;
    uint64_t tag = code_tag(args[0]);
    if ((tag >> EPOCH_SHIFT) == core->epoch && TAG_SENSED(tag) && core->parked_len > 0) {
        PyObject *frame = (PyObject *)PyEval_GetFrame();
        if (frame != NULL)
            unpark(core, frame);
        else
            internal_error(core);
    }
    Py_RETURN_NONE;
}

#endif /* HAS_MONITORING */
