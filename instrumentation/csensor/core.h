/* csensor/core.h: the core both front ends feed (part of _csensor.c's single compilation unit).
 *
 * The Core object's layout, the per-thread stack lookup (a thread-local cache in front of a
 * pthread key), record() (where a finished call goes: the open request's table or the
 * background, and whether it is kept as a span), finish() and end_segment() (the crediting rules
 * of _pysensor), and the parking lot of suspended generators: its hash and removal, which
 * sweep_parked() needs on every version (the slot type, Parked, is in stack.h; parking and
 * unparking, 3.12+ only, in monitoring.h).
 * The methods and the type object of Core are in core_type.h, after the front ends.
 *
 * Relies on util.h, clock.h (now_ns), tables.h (CallTable, table_count, table_keep_span) and
 * stack.h (Entry, ThreadStack, Invocation, Parked).
 */

/* ==================================================================================== the core */

typedef struct {
    PyObject_HEAD
    uint64_t epoch;            /* unique per Core: tags this core's co_extra values and TLS cache */
    pthread_key_t key;         /* this core's per-thread stacks */
    int key_ok;
    PyObject *background;      /* CallTable for calls outside an open request */
    long long slow_ns;         /* calls at least this long are kept as spans (budget permitting) */
    PyObject *classify;        /* classify(code, module_name) -> fid or -1 */
    PyObject *request_var;     /* calls.current_request */
    uint8_t *kinds;            /* by function id (3.11 enter()) */
    Py_ssize_t n_kinds;
    Parked *parked;
    size_t parked_mask, parked_len;
    int parked_bits;
    Py_ssize_t internal_errors;
    PyObject *paths_obj;       /* the PathRegistry (strong) */
    Paths *paths;              /* its nodes, read on every PY_START */
    /* Enclosures (see held_table()): tables a thread holds now, tables whose enclosing call
     * ended, and the epoch that makes every thread's `held` pointer stale when the export thread
     * takes them all. */
    PyObject *holding;         /* set of CallTables */
    PyObject *released;        /* list of CallTables */
    uint64_t held_epoch;
    int enclosing;             /* a request started or ended inside sensed calls: hold from now on */
    Py_ssize_t held_fallbacks; /* calls sent to background because MAX_HELD tables were out */
} Core;

static PyTypeObject CoreType;
static uint64_t next_epoch = 1;
static PyObject *str_name;       /* "__name__" */
static PyObject *str_empty;      /* "" */
static PyObject *str_cr_running; /* "cr_running" */

/* The stack of the calling thread for this core. The thread-local cache makes the common case
 * one TLS read and one compare; the pthread key (one per core) owns the memory. initial-exec: a
 * %fs-relative load instead of a __tls_get_addr call per event (16 bytes of the static TLS
 * surplus glibc keeps for modules loaded later). */
#if defined(__GNUC__) && defined(__linux__)
#define TLS_MODEL __attribute__((tls_model("initial-exec")))
#else
#define TLS_MODEL
#endif
static __thread TLS_MODEL struct {
    uint64_t epoch;
    ThreadStack *stack;
} tls_cache;

static ThreadStack *
stack_of_slow(Core *core)
{
    if (!core->key_ok)
        return NULL;
    ThreadStack *st = pthread_getspecific(core->key);
    if (st == NULL) {
        st = calloc(1, sizeof(ThreadStack));
        if (st == NULL)
            return NULL;
        if (pthread_setspecific(core->key, st) != 0) {
            free(st);
            return NULL;
        }
    }
    tls_cache.epoch = core->epoch;
    tls_cache.stack = st;
    return st;
}

static inline ThreadStack *
stack_of(Core *core)
{
    if (LIKELY(tls_cache.epoch == core->epoch))
        return tls_cache.stack;
    return stack_of_slow(core);
}

/* The path node of a call of fid that starts now on this thread: under the node of the call below
 * it on the stack (the root when none). Call before pushing its entry. */
static COLD void release_held(Core *core, ThreadStack *st);

static inline int32_t
node_of_call(Core *core, ThreadStack *st, int32_t fid)
{
    int32_t parent;
    if (LIKELY(st->len > 0))
        parent = live(&st->items[st->len - 1])->node;
    else {
        parent = st->base_node;
        /* An outermost call starts: the one before it returned (it was recorded into the held
         * table, see core.h's enclosures), so the thread's held table is released now. */
        if (UNLIKELY(st->held != NULL))
            release_held(core, st);
    }
    int32_t node = paths_node(core->paths, parent, fid);
    return LIKELY(node >= 0) ? node : parent; /* out of memory: the call is counted at its parent */
}

/* An exit by GeneratorExit (a close), StopIteration or StopAsyncIteration (the end of an iteration,
 * e.g. an iterator's __next__ passing its source's StopIteration on) is control flow, not an
 * error; as _pysensor's CONTROL_FLOW. */
static inline int
is_control_flow(PyObject *exc)
{
    PyTypeObject *type = Py_TYPE(exc);
    return type == (PyTypeObject *)PyExc_GeneratorExit || type == (PyTypeObject *)PyExc_StopIteration
           || type == (PyTypeObject *)PyExc_StopAsyncIteration
           || PyObject_TypeCheck(exc, (PyTypeObject *)PyExc_StopIteration)
           || PyObject_TypeCheck(exc, (PyTypeObject *)PyExc_StopAsyncIteration)
           || PyObject_TypeCheck(exc, (PyTypeObject *)PyExc_GeneratorExit);
}

static inline void
internal_error(Core *core)
{
    core->internal_errors++;
    if (PyErr_Occurred())
        PyErr_Clear();
}

/* Bumped by request_changed() (calls.enter_request / leave_request, the rollup processor) on every
 * set of the request variable: with the thread state's context_ver (which CPython bumps when the
 * thread enters or leaves a context, e.g. each asyncio task step) it keys request_of()'s cache. */
static uint64_t request_generation = 1;

/* The value of the request variable (borrowed: the context keeps it), read from the context;
 * request_of() caches it per thread, the 3.11 awaiter path (no stack at hand) reads it directly. */
static int
request_value(Core *core, PyObject **request)
{
    PyObject *value = NULL;
    if (PyContextVar_Get(core->request_var, NULL, &value) < 0)
        return -1;
    Py_XDECREF(value); /* the context keeps it */
    *request = value;
    return 0;
}

/* The value of the request variable in the calling thread's context (borrowed), or NULL.
 * PyContextVar_Get costs ~45 instructions a call on 3.12 (a TLS read through __tls_get_addr in
 * libpython, its own cache check, a reference); st keeps the last value under its key (thread
 * state, its id, context_ver, request_generation). While the key holds, the thread is in the
 * same context and nobody set the variable, so the value is the same object and the context
 * keeps it alive. -1 on error. */
static inline int
request_of(Core *core, ThreadStack *st, PyObject **request)
{
    PyThreadState *ts = PyThreadState_Get();
    if (LIKELY(st->request_generation == request_generation && st->request_ts == ts && st->request_ts_id == ts->id
               && st->request_ctx_ver == ts->context_ver)) {
        *request = st->request;
        return 0;
    }
    PyObject *value = NULL;
    if (UNLIKELY(request_value(core, &value) < 0)) {
        st->request_generation = 0;
        return -1;
    }
    st->request_generation = request_generation;
    st->request_ts = ts;
    st->request_ts_id = ts->id;
    st->request_ctx_ver = ts->context_ver;
    st->request = value;
    *request = value;
    return 0;
}

/* ---------------------------------------------------------------------------------- enclosures
 * A framework's code runs around the request's span on the same thread: Flask.__call__ and
 * wsgi_app enclose it, URL matching runs in them before the span starts, teardown after it ends.
 * Such calls finish with no open request table but with a sensed call still running below them on
 * this thread: they are held in a table of the thread's own instead of the background. The rollup
 * processor decides where a held table goes: a request that starts while its enclosing call runs
 * takes it as its own table (take_enclosed()); a request that ends while enclosing calls run
 * hands its table back to be held (hold()), so the rest of the enclosing calls land in it; what
 * no request claimed is background, folded when the window closes (take_all_held()). Once the
 * outermost call has returned (recorded into the held table) or suspended, the held table is
 * released, when the next outermost call starts (node_of_call) or the thread's task suspends:
 * another request's or task's calls never join it.
 * Nothing is held until a request starts or ends inside sensed calls (`enclosing`), or from the
 * start when library packages are sensed (sensor.make_sensor): a process whose spans enclose all
 * its sensed code, or that has no requests, never pays for enclosures. */
#define MAX_HELD 256 /* held + released tables between two windows */

static inline int
held_valid(Core *core, ThreadStack *st)
{
    return st->held != NULL && st->held_epoch == core->held_epoch;
}

/* The thread's held table (borrowed), made on first use; the background when MAX_HELD tables are
 * out (a thread pool of enclosing loops that never meets a request). */
static COLD PyObject *
held_table(Core *core, ThreadStack *st)
{
    if (held_valid(core, st))
        return st->held;
    if (core->holding == NULL || PySet_GET_SIZE(core->holding) + PyList_GET_SIZE(core->released) >= MAX_HELD) {
        core->held_fallbacks++;
        return core->background;
    }
    PyObject *table = PyObject_CallNoArgs((PyObject *)&CallTableType);
    if (table == NULL || PySet_Add(core->holding, table) < 0) {
        Py_XDECREF(table);
        internal_error(core);
        return core->background;
    }
    Py_DECREF(table); /* the set owns it */
    st->held = table;
    st->held_epoch = core->held_epoch;
    return table;
}

/* Where a call that finished outside an open request goes once enclosures are on: the thread's
 * held table when a sensed call encloses it (or it is the enclosing call itself), else the
 * background. `st` is NULL when the caller credited is not the thread's top (a 3.11 awaiter). */
static COLD PyObject *
enclosed_table(Core *core, ThreadStack *st)
{
    if (st == NULL && (st = stack_of(core)) == NULL)
        return core->background;
    return st->len > 0 || held_valid(core, st) ? held_table(core, st) : core->background;
}

/* The thread's stack emptied: its held table (if any) moves from `holding` to `released`. */
static COLD void
release_held(Core *core, ThreadStack *st)
{
    PyObject *table = st->held;
    int valid = held_valid(core, st);
    st->held = NULL;
    if (!valid)
        return;
    if (PyList_Append(core->released, table) < 0 || PySet_Discard(core->holding, table) < 0)
        internal_error(core);
}

/* record(): where a finished call goes and what is counted. `table` is NULL except for calls
 * swept from the parking lot (the table captured when they were parked); `st` is the calling
 * thread's stack (NULL for swept calls). */
static HOT_INLINE void
record(Core *core, ThreadStack *st, int32_t fid, int32_t node, int64_t start, int64_t end, int64_t duration,
       int64_t self_ns, PyObject *exc, PyObject *table)
{
    PyObject *exc_type = exc ? (PyObject *)Py_TYPE(exc) : NULL;
    if (table == NULL) {
        PyObject *request = NULL;
        if (UNLIKELY((st != NULL ? request_of(core, st, &request) : request_value(core, &request)) < 0)) {
            internal_error(core);
            request = NULL;
        }
        if (request != NULL && CallTable_Check(request) && ((CallTable *)request)->open)
            table = request;
        else if (UNLIKELY(core->enclosing))
            table = enclosed_table(core, st);
        else
            table = core->background;
    }
    else if (!CallTable_Check(table) || !((CallTable *)table)->open) {
        /* Swept after its request ended (3.13 sends no event when a suspended generator is
         * closed or dropped): that table was folded into its window already, as _pysensor does. */
        table = core->background;
    }
    if (UNLIKELY(table == NULL || !CallTable_Check(table)))
        return;
    CallTable *t = (CallTable *)table;
    if (LIKELY(exc_type == NULL)) {
        if (UNLIKELY(table_count(t, node, fid, duration, self_ns, NULL, NULL) != 0))
            core->internal_errors++; /* out of memory */
        if (UNLIKELY(t->span_budget > 0 && duration >= core->slow_ns) && table_keep_span(t, fid, start, end, NULL) < 0)
            internal_error(core);
        return;
    }
    /* An error: the stack sampler runs Python code, so the (borrowed) table is held meanwhile. */
    Py_INCREF(t);
    int counted = table_count(t, node, fid, duration, self_ns, exc_type, exc);
    if (UNLIKELY(counted != 0))
        core->internal_errors++; /* out of memory (-1), or counted with no stack sample (1) */
    if (counted >= 0 && t->span_budget > 0 && table_keep_span(t, fid, start, end, exc_type) < 0)
        internal_error(core);
    Py_DECREF(t);
}

/* finish(): final exit of an invocation already off the stack. Credits `caller` (the new top, an
 * awaiter, or NULL) and records the call. As _pysensor: a plain call credits its duration, a
 * generator its last active segment (earlier ones were credited as they ended), a coroutine its
 * whole duration (its awaiter waits for it).
 * `e` is read before anything can run Python code, so it may be the slot just popped. With `st`,
 * the caller is st's top: re-read after record(), whose stack sampler runs Python code that may
 * push onto this thread's stack and move it. */
static HOT_INLINE void
finish(Core *core, ThreadStack *st, Entry *caller, const Entry *e, int64_t now, PyObject *exc, PyObject *table)
{
    int64_t duration = now - e->start, self_ns, credit;
    if (!e->suspended) {
        self_ns = duration - e->child;
        credit = duration;
    }
    else if (e->kind == COROUTINE) {
        self_ns = duration - e->child;
        credit = duration - e->active;
    }
    else {
        credit = now - e->segment;
        self_ns = e->active + credit - e->child;
    }
    if (caller != NULL)
        caller->child += credit;
    record(core, st, e->fid, e->node, e->start, now, duration, self_ns > 0 ? self_ns : 0, exc, table);
    if (UNLIKELY(exc != NULL && caller != NULL)) {
        if (st != NULL)
            caller = stack_top(st);
        if (caller != NULL)
            caller->child += now_ns() - now; /* the stack sample taken for an error is the sensor's
                                              * time, not the catching caller's */
    }
}

/* An active segment of `e` ends (yield/suspend; `e` is already off the stack): `caller` is
 * credited with it. */
static inline void
end_segment(Entry *caller, Entry *e, int64_t now)
{
    int64_t segment = now - e->segment;
    e->active += segment;
    e->segment = now;
    e->suspended = 1;
    if (caller != NULL)
        caller->child += segment;
}

/* An emptied stack releases the thread's held table: after a suspension, or before a task resumes
 * or a request starts on it (an outermost call that returned left its table held). */
static inline void
stack_settled(Core *core, ThreadStack *st)
{
    if (UNLIKELY(st->len == 0 && st->held != NULL))
        release_held(core, st);
}

/* Pop the top slot into *out (its live entry). */
static inline void
stack_pop(ThreadStack *st, Entry *out)
{
    Entry *slot = &st->items[--st->len];
    if (LIKELY(slot->owner == NULL)) {
        *out = *slot;
        return;
    }
    PyObject *owner = slot->owner;
    *out = ((Invocation *)owner)->e;
    Py_DECREF(owner);
}

/* ------------------------------------------------------------------------------- parking lot */

static inline size_t
parked_hash(Core *core, PyObject *frame)
{
    return (size_t)(((uint64_t)(uintptr_t)frame * 0x9E3779B97F4A7C15ull) >> (64 - core->parked_bits));
}

/* Take slot i out (the caller owns its references now). */
static void
parked_remove_at(Core *core, size_t i)
{
    size_t mask = core->parked_mask;
    Parked *slots = core->parked;
    size_t j = i;
    for (;;) {
        j = (j + 1) & mask;
        if (slots[j].frame == NULL)
            break;
        size_t k = parked_hash(core, slots[j].frame);
        /* slots[j] may move to the hole at i unless its home k lies cyclically in (i, j]. */
        if (i <= j ? (i < k && k <= j) : (i < k || k <= j))
            continue;
        slots[i] = slots[j];
        i = j;
    }
    slots[i].frame = NULL;
    slots[i].table = NULL;
    core->parked_len--;
}
