/* csensor/tables.h: call tables, the counting side (part of _csensor.c's single compilation unit).
 *
 * A CallTable holds the calls of one request (or of the background): per function id a Slot of
 * counters and a duration histogram, per path node a NodeSlot of counters (calls, errors, total
 * and self time; paths.h), errors by (fid, exception type) and by (node, type), and the calls kept
 * as spans. A call is found by its node: the NodeSlot links to its function's Slot, so one probe
 * updates both. This part is the hot path: table_count() and table_keep_span(), what record() calls on
 * every final exit, plus the buffer pool and the helpers they use. The Python face of the type
 * (constructor, getters, add_call, absorb, the type object) is table_type.h.
 *
 * Relies on util.h and funcsight/histogram.h (fs_bucket_of, N_BUCKETS: the histogram scheme
 * shared with the rollup extension and calls.bucket_of).
 */

/* ============================================================================== call tables */

/* One function's counters in one table. Most functions land in a few buckets, so the histogram
 * starts as a few inline (bucket, count) pairs and becomes a full array only when it spreads. */
#define INLINE_BUCKETS 4

typedef struct {
    int32_t fid;
    int32_t first_error; /* index into CallTable.errs of this function's first error, -1: none */
    uint64_t calls, errors;
    int64_t total_ns, self_ns;
    uint64_t *wide;      /* N_BUCKETS counts, once more than INLINE_BUCKETS buckets were hit */
    uint32_t n_inline;
    uint8_t inline_bucket[INLINE_BUCKETS];
    uint64_t inline_count[INLINE_BUCKETS];
} Slot;

/* calls.stack_sample, set by csensor.py through set_stack_sampler(): turns an exception into its
 * stack once per (fid, type) per table (a Python call on that rare path only). */
static PyObject *stack_sampler = NULL;
static int stack_sampler_native = 0; /* it is _csensor.stack_sample: call native_stack_sample() */

typedef struct {
    int32_t fid;
    int32_t next;        /* next error of the same function, -1: none */
    PyObject *type;      /* strong reference to the exception type */
    PyObject *sample;    /* stack_sampler(first exception of this (fid, type)), as the twin's
                          * table.samples; NULL for add_call or when no sampler is set */
    uint64_t count;
} ErrorCount;

/* One path node's counters in one table; `slot` is its function's Slot in the same table (-1 in a
 * window's table, where a folded "(other paths)" node has no single function). */
typedef struct {
    int32_t node;
    int32_t slot;
    uint64_t calls, errors;
    int64_t total_ns, self_ns;
} NodeSlot;

/* Errors by (node, exception type): only on the error path, so a plain array searched in order. */
typedef struct {
    int32_t node;
    PyObject *type;      /* strong reference */
    uint64_t count;
} NodeError;

typedef struct {
    PyObject_HEAD
    char open;
    Py_ssize_t span_budget;
    PyObject *trace_id;
    PyObject *root;
    PyObject *spans;     /* list, created on first use */
    /* fid -> slot: open addressing, linear probing, entry = (fid + 1) << 32 | slot index. Function
     * ids are dense small integers, so fid & mask spreads them well. */
    uint64_t *index;
    uint32_t index_mask;
    Slot *slots;         /* in order of first appearance, like a dict's insertion order */
    int32_t n_slots, cap_slots;
    ErrorCount *errs;
    int32_t n_errs, cap_errs;
    /* node -> NodeSlot: the same open addressing as fid -> Slot */
    uint64_t *node_index;
    uint32_t node_index_mask;
    NodeSlot *nodes;
    int32_t n_nodes, cap_nodes;
    NodeError *node_errs;
    int32_t n_node_errs, cap_node_errs;
} CallTable;

static PyTypeObject CallTableType;
#define CallTable_Check(op) (Py_TYPE(op) == &CallTableType)

/* The (index, slots) buffers of dead tables, for the next table's first slot: a request's table
 * would otherwise grow both from nothing on every request (3 callocs, 2 reallocs and their frees
 * for 20-30 functions; with a framework sensed, 200-500 path nodes: 7 reallocs and rehashes).
 * Bounded: POOL_SIZE entries of at most POOL_MAX_SLOTS slots and nodes (about 1.3 MB).
 * The GIL guards it (the module refuses free-threaded builds). */
#define POOL_SIZE 8
#define POOL_MAX_SLOTS 1024
typedef struct {
    uint64_t *index;
    uint32_t index_mask;
    Slot *slots;
    int32_t cap_slots;
    uint64_t *node_index;
    uint32_t node_index_mask;
    NodeSlot *nodes;
    int32_t cap_nodes;
} TableBuffers;
static TableBuffers buffer_pool[POOL_SIZE];
static int buffer_pool_len;

static void
table_release_buffers(CallTable *t)
{
    if (t->index != NULL && t->slots != NULL && t->cap_slots <= POOL_MAX_SLOTS && t->cap_nodes <= POOL_MAX_SLOTS
        && buffer_pool_len < POOL_SIZE) {
        memset(t->index, 0, ((size_t)t->index_mask + 1) * sizeof(uint64_t));
        if (t->node_index != NULL)
            memset(t->node_index, 0, ((size_t)t->node_index_mask + 1) * sizeof(uint64_t));
        buffer_pool[buffer_pool_len++] = (TableBuffers){t->index, t->index_mask, t->slots, t->cap_slots,
                                                        t->node_index, t->node_index_mask, t->nodes, t->cap_nodes};
    }
    else {
        PyMem_Free(t->slots);
        PyMem_Free(t->index);
        PyMem_Free(t->nodes);
        PyMem_Free(t->node_index);
    }
    t->index = t->node_index = NULL;
    t->slots = NULL;
    t->nodes = NULL;
    t->index_mask = t->node_index_mask = 0;
    t->cap_slots = t->n_slots = 0;
    t->cap_nodes = t->n_nodes = 0;
}

/* A table's first slot takes a pooled set of buffers, when there is one. */
static inline void
table_take_buffers(CallTable *t)
{
    if (t->index == NULL && t->slots == NULL && t->node_index == NULL && t->nodes == NULL && buffer_pool_len > 0) {
        TableBuffers *b = &buffer_pool[--buffer_pool_len];
        t->index = b->index;
        t->index_mask = b->index_mask;
        t->slots = b->slots;
        t->cap_slots = b->cap_slots;
        t->node_index = b->node_index;
        t->node_index_mask = b->node_index_mask;
        t->nodes = b->nodes;
        t->cap_nodes = b->cap_nodes;
    }
}

/* Open addressing, linear probing: entry = (key + 1) << 32 | position, 0 = empty. Keys (function
 * ids, node ids) are dense small integers, so key & mask spreads them well. */
static inline int32_t
index_find(const uint64_t *index, uint32_t mask, int32_t key)
{
    if (LIKELY(index != NULL)) {
        uint64_t tagged = (uint64_t)(uint32_t)(key + 1) << 32;
        uint32_t h = (uint32_t)key & mask;
        for (;;) {
            uint64_t e = index[h];
            if (e == 0)
                break;
            if ((e & 0xFFFFFFFF00000000ull) == tagged)
                return (int32_t)(uint32_t)e;
            h = (h + 1) & mask;
        }
    }
    return -1;
}

static inline void
index_put(uint64_t *index, uint32_t mask, int32_t key, int32_t position)
{
    uint32_t h = (uint32_t)key & mask;
    while (index[h])
        h = (h + 1) & mask;
    index[h] = ((uint64_t)(uint32_t)(key + 1) << 32) | (uint32_t)position;
}

/* Make room for one more key (load factor at most 1/2): -1 when memory ran out. `key_at(i)` is
 * the key at position i. */
#define INDEX_RESERVE(index, mask, n, key_at)                                          \
    do {                                                                               \
        if ((uint32_t)(n) * 2 >= ((index) ? (mask) + 1 : 0)) {                         \
            uint32_t cap_ = (index) ? ((mask) + 1) * 2 : 16;                           \
            uint64_t *grown_ = PyMem_Calloc(cap_, sizeof(uint64_t));                   \
            if (grown_ == NULL)                                                        \
                return NULL;                                                           \
            for (int32_t i_ = 0; i_ < (n); i_++)                                       \
                index_put(grown_, cap_ - 1, (key_at), i_);                             \
            PyMem_Free(index);                                                         \
            (index) = grown_;                                                          \
            (mask) = cap_ - 1;                                                         \
        }                                                                              \
    } while (0)

COLD static Slot *
table_new_slot(CallTable *t, int32_t fid)
{
    table_take_buffers(t);
    INDEX_RESERVE(t->index, t->index_mask, t->n_slots, t->slots[i_].fid);
    if (t->n_slots == t->cap_slots) {
        int32_t cap = t->cap_slots ? t->cap_slots * 2 : 8;
        Slot *slots = PyMem_Realloc(t->slots, (size_t)cap * sizeof(Slot));
        if (slots == NULL)
            return NULL;
        t->slots = slots;
        t->cap_slots = cap;
    }
    int32_t i = t->n_slots++;
    Slot *s = &t->slots[i];
    memset(s, 0, sizeof(Slot));
    s->fid = fid;
    s->first_error = -1;
    index_put(t->index, t->index_mask, fid, i);
    return s;
}

/* The slot of fid, or NULL when fid has none yet. */
static inline Slot *
table_find(CallTable *t, int32_t fid)
{
    int32_t i = index_find(t->index, t->index_mask, fid);
    return i >= 0 ? &t->slots[i] : NULL;
}

/* A new node slot (counters zero) linked to function slot `slot` (-1: none); NULL on memory. */
COLD static NodeSlot *
table_new_node(CallTable *t, int32_t node, int32_t slot)
{
    table_take_buffers(t);
    INDEX_RESERVE(t->node_index, t->node_index_mask, t->n_nodes, t->nodes[i_].node);
    if (t->n_nodes == t->cap_nodes) {
        int32_t cap = t->cap_nodes ? t->cap_nodes * 2 : 8;
        NodeSlot *nodes = PyMem_Realloc(t->nodes, (size_t)cap * sizeof(NodeSlot));
        if (nodes == NULL)
            return NULL;
        t->nodes = nodes;
        t->cap_nodes = cap;
    }
    int32_t i = t->n_nodes++;
    NodeSlot *n = &t->nodes[i];
    memset(n, 0, sizeof(NodeSlot));
    n->node = node;
    n->slot = slot;
    index_put(t->node_index, t->node_index_mask, node, i);
    return n;
}

static inline NodeSlot *
table_find_node(CallTable *t, int32_t node)
{
    int32_t i = index_find(t->node_index, t->node_index_mask, node);
    return i >= 0 ? &t->nodes[i] : NULL;
}

/* table_node_slot()'s first sight of a node or of its function in this table. */
COLD static NodeSlot *
table_node_slot_new(CallTable *t, NodeSlot *n, int32_t node, int32_t fid)
{
    Slot *s = table_find(t, fid);
    if (s == NULL && (s = table_new_slot(t, fid)) == NULL)
        return NULL;
    int32_t slot = (int32_t)(s - t->slots);
    if (n == NULL)
        return table_new_node(t, node, slot);
    n->slot = slot;
    return n;
}

/* The node slot of a call of fid at node, and through it the function's slot (made on first
 * appearance of either); NULL when memory ran out. */
static inline NodeSlot *
table_node_slot(CallTable *t, int32_t node, int32_t fid)
{
    NodeSlot *n = table_find_node(t, node);
    if (LIKELY(n != NULL && n->slot >= 0))
        return n;
    return table_node_slot_new(t, n, node, fid);
}

/* hist_add_n() once the inline pairs are full: the full array. */
COLD static int
hist_widen(Slot *s, int bucket, uint64_t n)
{
    uint64_t *wide = PyMem_Calloc(N_BUCKETS, sizeof(uint64_t));
    if (wide == NULL)
        return -1;
    for (uint32_t i = 0; i < s->n_inline; i++)
        wide[s->inline_bucket[i]] = s->inline_count[i];
    wide[bucket] += n;
    s->wide = wide;
    return 0;
}

/* n more calls in bucket (n = 1 on the hot path, where the compiler folds it). */
static inline int
hist_add_n(Slot *s, int bucket, uint64_t n)
{
    if (s->wide) {
        s->wide[bucket] += n;
        return 0;
    }
    for (uint32_t i = 0; i < s->n_inline; i++) {
        if (s->inline_bucket[i] == bucket) {
            s->inline_count[i] += n;
            return 0;
        }
    }
    if (s->n_inline < INLINE_BUCKETS) {
        s->inline_bucket[s->n_inline] = (uint8_t)bucket;
        s->inline_count[s->n_inline++] = n;
        return 0;
    }
    return hist_widen(s, bucket, n);
}

static inline int
hist_add(Slot *s, int bucket)
{
    return hist_add_n(s, bucket, 1);
}

/* into += from: counters and histogram (errors by type are merged by the caller, in Python). */
static int
slot_absorb(Slot *into, const Slot *from)
{
    into->calls += from->calls;
    into->errors += from->errors;
    into->total_ns += from->total_ns;
    into->self_ns += from->self_ns;
    if (from->wide) {
        for (int b = 0; b < N_BUCKETS; b++)
            if (from->wide[b] && hist_add_n(into, b, from->wide[b]) < 0)
                return -1;
        return 0;
    }
    for (uint32_t i = 0; i < from->n_inline; i++)
        if (hist_add_n(into, from->inline_bucket[i], from->inline_count[i]) < 0)
            return -1;
    return 0;
}

static int
error_add(CallTable *t, Slot *s, PyObject *exc_type, PyObject *exc)
{
    for (int32_t i = s->first_error; i >= 0; i = t->errs[i].next) {
        if (t->errs[i].type == exc_type) {
            t->errs[i].count++;
            return 0;
        }
    }
    if (t->n_errs == t->cap_errs) {
        int32_t cap = t->cap_errs ? t->cap_errs * 2 : 4;
        ErrorCount *errs = PyMem_Realloc(t->errs, (size_t)cap * sizeof(ErrorCount));
        if (errs == NULL)
            return -1;
        t->errs = errs;
        t->cap_errs = cap;
    }
    ErrorCount *e = &t->errs[t->n_errs];
    e->fid = s->fid;
    e->next = s->first_error;
    e->type = Py_NewRef(exc_type);
    e->sample = NULL;
    int sampler_failed = 0;
    if (exc != NULL && stack_sampler != NULL) {
        /* Once per (fid, type) per table: the stack as (code, line) pairs, never the exception
         * itself (its traceback would keep the app's frames and locals alive): samples.h. */
        e->sample = stack_sampler_native ? native_stack_sample(exc) : PyObject_CallOneArg(stack_sampler, exc);
        if (e->sample == NULL) {
            /* The call is counted all the same; a failing sampler is counted by the caller, but not
             * a RecursionError: the application is at its own limit, where no stack can be taken. */
            sampler_failed = !PyErr_ExceptionMatches(PyExc_RecursionError);
            PyErr_Clear();
        }
    }
    e->count = 1;
    s->first_error = t->n_errs++;
    return sampler_failed;
}

static int
node_error_add(CallTable *t, int32_t node, PyObject *exc_type)
{
    for (int32_t i = 0; i < t->n_node_errs; i++) {
        if (t->node_errs[i].node == node && t->node_errs[i].type == exc_type) {
            t->node_errs[i].count++;
            return 0;
        }
    }
    if (t->n_node_errs == t->cap_node_errs) {
        int32_t cap = t->cap_node_errs ? t->cap_node_errs * 2 : 4;
        NodeError *errs = PyMem_Realloc(t->node_errs, (size_t)cap * sizeof(NodeError));
        if (errs == NULL)
            return -1;
        t->node_errs = errs;
        t->cap_node_errs = cap;
    }
    t->node_errs[t->n_node_errs++] = (NodeError){node, Py_NewRef(exc_type), 1};
    return 0;
}

/* Count one call of fid at path node `node` that returned (exc_type NULL) or raised exc_type; the
 * first exception object `exc` of each (fid, type) is kept as the table's sample (NULL: none, as
 * add_call). Returns -1 (no exception set) when memory ran out, 1 when the call was counted but
 * its stack sample could not be taken (the sampler failed). */
static inline int
table_count(CallTable *t, int32_t node, int32_t fid, int64_t duration, int64_t self_ns, PyObject *exc_type,
            PyObject *exc)
{
    NodeSlot *n = table_node_slot(t, node, fid);
    if (UNLIKELY(n == NULL))
        return -1;
    n->calls++;
    n->total_ns += duration;
    n->self_ns += self_ns;
    Slot *s = &t->slots[n->slot];
    s->calls++;
    s->total_ns += duration;
    s->self_ns += self_ns;
    if (UNLIKELY(hist_add(s, fs_bucket_of(duration)) < 0))
        return -1;
    if (exc_type != NULL) {
        s->errors++;
        n->errors++;
        int sampled = error_add(t, s, exc_type, exc);
        if (sampled < 0 || node_error_add(t, node, exc_type) < 0)
            return -1;
        return sampled;
    }
    return 0;
}

/* Keep (fid, start, end, exc_type or None) for a span. May run Python code (allocation can start
 * the 3.11 collector), so it is the last thing record() does and it holds its own reference. */
static int
table_keep_span(CallTable *t, int32_t fid, int64_t start, int64_t end, PyObject *exc_type)
{
    int rc = -1;
    Py_INCREF(t);
    t->span_budget--;
    PyObject *item = Py_BuildValue("(iLLO)", fid, (long long)start, (long long)end,
                                   exc_type ? exc_type : Py_None);
    if (item != NULL) {
        if (t->spans == NULL)
            t->spans = PyList_New(0);
        if (t->spans != NULL)
            rc = PyList_Append(t->spans, item);
        Py_DECREF(item);
    }
    Py_DECREF(t);
    return rc;
}
