/* csensor/stack.h: in-flight invocations (part of _csensor.c's single compilation unit).
 *
 * Entry (one in-flight call), the 3.11 Invocation token type, ThreadStack (a thread's stack of
 * entries, plain C memory a pthread key destructor can free) with push/top/truncate and the
 * pending await of the 3.11 front end, and the Parked slot the core's parking lot stores.
 *
 * Relies on util.h (LIKELY/UNLIKELY).
 */

/* ======================================================================= in-flight invocations */

/* One in-flight invocation: _pysensor's [fid, start, child, segment, active, parked, node]. */
typedef struct {
    int64_t start;       /* first entry */
    int64_t child;       /* time credited by sensed direct callees */
    int64_t segment;     /* start of the current active segment (generators) */
    int64_t active;      /* active time of finished segments */
    int32_t fid;
    int32_t node;        /* its path node (paths.h): under the node of the entry below it */
    uint8_t kind;
    uint8_t suspended;   /* has been suspended at least once */
    /* 3.11 generator/coroutine tokens: the stack slot is only a marker holding a reference to the
     * Invocation, whose `e` is the live entry (it must survive suspension and may be credited
     * while off the stack, as an awaiter). NULL for entries that live in the stack itself. */
    PyObject *owner;
} Entry;

/* 3.11 token of a generator or coroutine invocation (plain calls get their depth as token). */
typedef struct {
    PyObject_HEAD
    Entry e;
    PyObject *awaiter;   /* Invocation of the coroutine awaiting this one, credited instead of
                          * the stack below (rewrite.py's 7th list item), or NULL */
} Invocation;

static void
invocation_dealloc(Invocation *inv)
{
    Py_XDECREF(inv->awaiter); /* a chain of Invocations: frees memory, runs no Python code */
    PyObject_Free(inv);
}

static PyTypeObject InvocationType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "funcsight.instrumentation._csensor.Invocation",
    .tp_basicsize = sizeof(Invocation),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "Token of a sensed generator or coroutine invocation (3.11 front end).",
    .tp_dealloc = (destructor)invocation_dealloc,
};
#define Invocation_Check(op) (Py_TYPE(op) == &InvocationType)

/* The live entry of a stack slot. */
static inline Entry *
live(Entry *slot)
{
    return UNLIKELY(slot->owner != NULL) ? &((Invocation *)slot->owner)->e : slot;
}

/* Per thread (and per Core): a growable array used as a stack. Plain C memory, so the pthread key
 * destructor can free it at thread exit without the GIL. */
typedef struct {
    Entry *items;
    Py_ssize_t len, cap;
    /* 3.11 await_(): the coroutine this thread's awaiter is about to await, and the awaiter's
     * token (strong references, held from the await until the awaiter resumes or exits). */
    PyObject *pending_awaitable, *pending_awaiter;
    /* The path node the thread's outermost calls hang under: 0 (the request's root), or the node
     * of the call that handed this thread its work (a thread pool's task, see agent/threads.py). */
    int32_t base_node;
    /* request_of()'s copy of the request variable's value in this thread's context, and its key
     * (0: none). `request` is borrowed: the context holds it while the key is unchanged. */
    uint64_t request_generation;
    PyThreadState *request_ts;
    uint64_t request_ts_id, request_ctx_ver;
    PyObject *request;
    /* Calls that finished outside an open request while a sensed call enclosed them on this
     * thread (core.h, held_table()). Borrowed: the core's `holding` set owns it; stale once
     * held_epoch differs from the core's (take_all_held() took every table). */
    PyObject *held;
    uint64_t held_epoch;
} ThreadStack;

static void
free_thread_stack(void *p)
{
    if (p != NULL) {
        /* Markers still in it (leave() was never called) and a pending await (the thread ended
         * inside one) leak their objects: there is no GIL here. */
        free(((ThreadStack *)p)->items);
        free(p);
    }
}

/* Forget the pending await (the caller holds the GIL; drops the references last). */
static void
clear_pending(ThreadStack *st)
{
    PyObject *awaitable = st->pending_awaitable, *awaiter = st->pending_awaiter;
    st->pending_awaitable = st->pending_awaiter = NULL;
    Py_XDECREF(awaitable);
    Py_XDECREF(awaiter);
}

/* The awaiter resumed or exited: its pending await (if still the thread's) is over. The twin
 * keeps it until the next await, but a completed coroutine never runs again, so the answer of
 * enter_co() is the same; dropping it early keeps per-thread references short-lived. */
static inline void
awaiter_done(ThreadStack *st, PyObject *token)
{
    if (UNLIKELY(st != NULL && st->pending_awaiter == token))
        clear_pending(st);
}

static int
stack_grow(ThreadStack *st)
{
    Py_ssize_t cap = st->cap ? st->cap * 2 : 64;
    Entry *items = realloc(st->items, (size_t)cap * sizeof(Entry));
    if (items == NULL)
        return -1;
    st->items = items;
    st->cap = cap;
    return 0;
}

/* A new top slot, or NULL (memory). */
static inline Entry *
stack_push(ThreadStack *st)
{
    if (UNLIKELY(st->len == st->cap) && stack_grow(st) < 0)
        return NULL;
    return &st->items[st->len++];
}

/* The live entry on top (the caller to credit), or NULL. */
static inline Entry *
stack_top(ThreadStack *st)
{
    return st != NULL && st->len > 0 ? live(&st->items[st->len - 1]) : NULL;
}

/* Drop the slots from `depth` up. Markers release their Invocation (whose dealloc runs no Python
 * code, so the stack may be left as is while it happens). */
static void
stack_truncate(ThreadStack *st, Py_ssize_t depth)
{
    while (st->len > depth) {
        PyObject *owner = st->items[--st->len].owner;
        Py_XDECREF(owner);
    }
}

/* Parking lot: suspended generators/coroutines, keyed by their frame object (stable for the
 * generator's lifetime). Open addressing, linear probing, backward-shift deletion. */
typedef struct {
    PyObject *frame;     /* key, strong reference; NULL = empty */
    PyObject *table;     /* the open request table at park time (strong), or NULL */
    Entry entry;
} Parked;
