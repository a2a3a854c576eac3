/* funcsight.instrumentation._csensor: the sensor's hot path in C.
 *
 * Same semantics as funcsight.instrumentation._pysensor.PythonSensor, the reference twin: read
 * its docstring and finish()/record() first; every rule below mirrors one there.
 *
 * Two front ends feed one core (a Core object, one per sensor):
 *   3.12+  on_start/on_return/on_unwind/on_yield/on_resume/on_throw, registered with
 *          sys.monitoring by csensor.CSensor.start() (METH_FASTCALL C functions, so the
 *          interpreter calls them without building a Python frame).
 *   3.11   enter(fid) -> token, leave(token, exc=None), suspend(token), resume(token, value=None),
 *          and the rest of rewrite.py's hook set (enter_co, unwind, yield_, await_), called by
 *          code rewritten at import time.
 *
 * Cost per sensed call (bench/micro.py, shared 2-core VM, thread CPU time, medians): +70-85 ns
 * on 3.12/3.13 where REFERENCE.md's prototype (count + clock_gettime per event: +57 ns on a quiet
 * machine) measured +85-95 ns in the same runs, i.e. about 45-55 ns on that scale; about 50 ns
 * more with clock_gettime instead of the TSC. On 3.11 +70 ns, what hooks that only count and read
 * the clock cost. Per event: sys.monitoring dispatch, one co_extra read (code -> function id, no
 * hashing), one clock read, one thread-local read (the thread's stack of in-flight calls); the
 * final exit adds one PyContextVar_Get (cached per thread state) and one open-addressing probe
 * into the call table. Nothing allocates per call: the stack, the table slots and the parking
 * lot grow rarely; only calls kept as spans (slow or failed, while the trace's budget lasts)
 * build a tuple.
 *
 * Rules that keep the application safe:
 *   - no callback raises: internal failures are counted in Core.internal_errors and cleared;
 *   - PY_UNWIND and PY_THROW never return DISABLE (3.12/3.13 turn that into a ValueError in the
 *     application's code);
 *   - state is made consistent before anything that can run Python code (a DECREF, an allocation
 *     that may trigger the 3.11 garbage collector, the classify() call).
 *
 * GIL builds only: tables and the parking lot are shared between threads and rely on the GIL
 * (callbacks never release it in the middle of an update). Free-threaded builds refuse to import
 * the module and the Python sensor is used. POSIX only (pthread keys free a thread's stack when the
 * thread exits).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#if SIZEOF_VOID_P < 8
#error "funcsight's C sensor packs (sensor, function id, kind) into a 64-bit co_extra slot"
#endif

#define HAS_MONITORING (PY_VERSION_HEX >= 0x030C0000)

#if defined(__GNUC__)
#define LIKELY(x) __builtin_expect(!!(x), 1)
#define UNLIKELY(x) __builtin_expect(!!(x), 0)
#else
#define LIKELY(x) (x)
#define UNLIKELY(x) (x)
#endif

/* Function kinds, as _pysensor.kind_of(): they decide how a suspended invocation is credited. */
enum { PLAIN = 0, GENERATOR = 1, COROUTINE = 2 };

static inline int
kind_of_flags(int flags)
{
    if (flags & (CO_COROUTINE | CO_ITERABLE_COROUTINE))
        return COROUTINE;
    if (flags & (CO_GENERATOR | CO_ASYNC_GENERATOR))
        return GENERATOR;
    return PLAIN;
}

/* ====================================================================================== clock
 *
 * Timestamps are CLOCK_MONOTONIC nanoseconds: the clock behind time.perf_counter_ns() on Linux,
 * so span timestamps taken here mix with the Python side's. One read per event.
 *
 * Where the kernel itself keeps CLOCK_MONOTONIC on the TSC (x86-64, invariant TSC, clocksource
 * "tsc"), the sensor reads the TSC directly and maps it onto CLOCK_MONOTONIC: an rdtsc costs less
 * than half of a vDSO clock_gettime (which fences and retries a seqlock), and the clock is the
 * largest single cost of a sensed call. The map (anchor + rate) is calibrated at import (2 ms) and
 * re-anchored by recalibrate() on every sweep_parked() call (the export thread, every interval):
 * the rate comes from an ever longer baseline and is slewed by at most 0.1 % so the mapped clock
 * converges on CLOCK_MONOTONIC without ever jumping (durations stay exact to the slew, time never
 * runs backwards). Anywhere else: clock_gettime(CLOCK_MONOTONIC).
 */
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__)
#define HAVE_TSC 1
#include <x86intrin.h>
#include <cpuid.h>
#else
#define HAVE_TSC 0
#endif

static inline int64_t
monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

#if HAVE_TSC
static int clock_tsc;                 /* 1: mapped TSC; 0: clock_gettime */
static int tsc_usable;                /* the platform allows it (decided once) */
static int64_t map_tsc, map_ns;       /* anchor of the map */
static int64_t map_mult;              /* ns per TSC tick, 32.32 fixed point */
static int64_t cal_tsc, cal_ns;       /* first calibration point: the rate's baseline */
static int64_t last_cal_ns;           /* CLOCK_MONOTONIC at the last (re)calibration */

static inline int64_t
tsc_to_ns(int64_t tsc)
{
    return map_ns + (int64_t)(((__int128)(tsc - map_tsc) * map_mult) >> 32);
}
#endif

static inline int64_t
now_ns(void)
{
#if HAVE_TSC
    if (LIKELY(clock_tsc))
        return tsc_to_ns((int64_t)__rdtsc());
#endif
    return monotonic_ns();
}

#if HAVE_TSC
/* A (TSC, CLOCK_MONOTONIC) pair read as close together as possible (best of a few tries). */
static void
clock_pair(int64_t *tsc, int64_t *ns)
{
    int64_t best = INT64_MAX;
    *tsc = *ns = 0;
    for (int i = 0; i < 7; i++) {
        int64_t t1 = (int64_t)__rdtsc();
        int64_t n = monotonic_ns();
        int64_t t2 = (int64_t)__rdtsc();
        if (t2 - t1 < best) {
            best = t2 - t1;
            *tsc = t1 + (t2 - t1) / 2;
            *ns = n;
        }
    }
}

static int
tsc_platform_ok(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(0x80000007, &a, &b, &c, &d) || !(d & (1u << 8)))
        return 0; /* no invariant TSC */
    FILE *f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "r");
    if (f == NULL)
        return 0;
    char buf[32] = {0};
    int ok = fgets(buf, sizeof buf, f) != NULL && strncmp(buf, "tsc", 3) == 0 && (buf[3] == '\n' || buf[3] == 0);
    fclose(f);
    return ok; /* the kernel trusts the TSC (synchronized, stable) for CLOCK_MONOTONIC itself */
}

/* Initial map: two pairs 2 ms apart (rate error ~1e-5, good for durations from the start). */
static void
tsc_calibrate(void)
{
    int64_t t2, n2;
    clock_pair(&cal_tsc, &cal_ns);
    struct timespec pause = {0, 2000000};
    Py_BEGIN_ALLOW_THREADS
    nanosleep(&pause, NULL);
    Py_END_ALLOW_THREADS
    clock_pair(&t2, &n2);
    if (t2 <= cal_tsc || n2 <= cal_ns) {
        clock_tsc = 0;
        return;
    }
    map_mult = (int64_t)(((__int128)(n2 - cal_ns) << 32) / (t2 - cal_tsc));
    map_tsc = t2;
    map_ns = n2;
    last_cal_ns = n2;
    clock_tsc = map_mult > 0;
}

/* Re-anchor the map where it is now (no jump) with the long-baseline rate, slewed so the mapped
 * clock meets CLOCK_MONOTONIC again about one recalibration interval later. A large error (the
 * machine was suspended, the clock was stepped) is corrected at once. Called with the GIL held,
 * like every reader. */
static void
recalibrate(void)
{
    if (!clock_tsc)
        return;
    int64_t tsc, ns;
    clock_pair(&tsc, &ns);
    int64_t interval = ns - last_cal_ns;
    if (interval < 50000000 || tsc <= cal_tsc)
        return; /* too soon to learn anything */
    int64_t rate = (int64_t)(((__int128)(ns - cal_ns) << 32) / (tsc - cal_tsc));
    int64_t mapped = tsc_to_ns(tsc);
    int64_t error = ns - mapped; /* > 0: the mapped clock is behind */
    if (error > 20000000 || error < -20000000) {
        map_tsc = tsc;
        map_ns = ns;
        map_mult = rate;
    }
    else {
        double slew = (double)error / (double)interval;
        if (slew > 1e-3)
            slew = 1e-3;
        if (slew < -1e-3)
            slew = -1e-3;
        map_tsc = tsc;
        map_ns = mapped;
        map_mult = rate + (int64_t)((double)rate * slew);
    }
    last_cal_ns = ns;
}
#else
static void
recalibrate(void)
{
}
#endif

/* Bucket index: exactly calls.bucket_of() (2 * bit_length, plus the bit below the top one), for
 * negative values too (Python's bit_length of |d| and its flooring shift). 0..129. */
#define N_BUCKETS 130

static inline int
bucket_of(int64_t d)
{
    uint64_t mag = d < 0 ? (uint64_t)0 - (uint64_t)d : (uint64_t)d;
    int n = mag ? 64 - __builtin_clzll(mag) : 0;
    if (n < 2)
        return n << 1;
    return (n << 1) | (int)((d >> (n - 2)) & 1);
}

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

typedef struct {
    int32_t fid;
    int32_t next;        /* next error of the same function, -1: none */
    PyObject *type;      /* strong reference to the exception type */
    PyObject *sample;    /* stack_sampler(first exception of this (fid, type)), as the twin's
                          * table.samples; NULL for add_call or when no sampler is set */
    uint64_t count;
} ErrorCount;

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
} CallTable;

static PyTypeObject CallTableType;
#define CallTable_Check(op) (Py_TYPE(op) == &CallTableType)

/* The (index, slots) buffers of dead tables, for the next table's first slot: a request's table
 * would otherwise grow both from nothing on every request (3 callocs, 2 reallocs and their frees
 * for 20-30 functions). Bounded: POOL_SIZE entries of at most POOL_MAX_SLOTS slots (under 0.5 MB).
 * The GIL guards it (the module refuses free-threaded builds). */
#define POOL_SIZE 16
#define POOL_MAX_SLOTS 256
typedef struct {
    uint64_t *index;
    uint32_t index_mask;
    Slot *slots;
    int32_t cap_slots;
} TableBuffers;
static TableBuffers buffer_pool[POOL_SIZE];
static int buffer_pool_len;

static void
table_release_buffers(CallTable *t)
{
    if (t->index != NULL && t->slots != NULL && t->cap_slots <= POOL_MAX_SLOTS && buffer_pool_len < POOL_SIZE) {
        memset(t->index, 0, ((size_t)t->index_mask + 1) * sizeof(uint64_t));
        buffer_pool[buffer_pool_len++] = (TableBuffers){t->index, t->index_mask, t->slots, t->cap_slots};
    }
    else {
        PyMem_Free(t->slots);
        PyMem_Free(t->index);
    }
    t->index = NULL;
    t->slots = NULL;
    t->index_mask = 0;
    t->cap_slots = t->n_slots = 0;
}

static Slot *
table_new_slot(CallTable *t, int32_t fid)
{
    if (t->index == NULL && t->slots == NULL && buffer_pool_len > 0) {
        TableBuffers *b = &buffer_pool[--buffer_pool_len];
        t->index = b->index;
        t->index_mask = b->index_mask;
        t->slots = b->slots;
        t->cap_slots = b->cap_slots;
    }
    if ((uint32_t)t->n_slots * 2 >= (t->index ? t->index_mask + 1 : 0)) {
        /* Grow (or create) the index to keep the load factor at most 1/2. */
        uint32_t cap = t->index ? (t->index_mask + 1) * 2 : 16;
        uint64_t *index = PyMem_Calloc(cap, sizeof(uint64_t));
        if (index == NULL)
            return NULL;
        for (int32_t i = 0; i < t->n_slots; i++) {
            uint32_t h = (uint32_t)t->slots[i].fid & (cap - 1);
            while (index[h])
                h = (h + 1) & (cap - 1);
            index[h] = ((uint64_t)(uint32_t)(t->slots[i].fid + 1) << 32) | (uint32_t)i;
        }
        PyMem_Free(t->index);
        t->index = index;
        t->index_mask = cap - 1;
    }
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
    uint32_t h = (uint32_t)fid & t->index_mask;
    while (t->index[h])
        h = (h + 1) & t->index_mask;
    t->index[h] = ((uint64_t)(uint32_t)(fid + 1) << 32) | (uint32_t)i;
    return s;
}

/* The slot of fid, or NULL when fid has none yet. */
static inline Slot *
table_find(CallTable *t, int32_t fid)
{
    if (LIKELY(t->index != NULL)) {
        uint64_t key = (uint64_t)(uint32_t)(fid + 1) << 32;
        uint32_t h = (uint32_t)fid & t->index_mask;
        for (;;) {
            uint64_t e = t->index[h];
            if (e == 0)
                break;
            if ((e & 0xFFFFFFFF00000000ull) == key)
                return &t->slots[(uint32_t)e];
            h = (h + 1) & t->index_mask;
        }
    }
    return NULL;
}

/* The slot of fid (0 <= fid < INT32_MAX), created on first appearance; NULL when out of memory. */
static inline Slot *
table_slot(CallTable *t, int32_t fid)
{
    Slot *s = table_find(t, fid);
    return LIKELY(s != NULL) ? s : table_new_slot(t, fid);
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
    uint64_t *wide = PyMem_Calloc(N_BUCKETS, sizeof(uint64_t));
    if (wide == NULL)
        return -1;
    for (uint32_t i = 0; i < s->n_inline; i++)
        wide[s->inline_bucket[i]] = s->inline_count[i];
    wide[bucket] += n;
    s->wide = wide;
    return 0;
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
    if (exc != NULL && stack_sampler != NULL) {
        /* Once per (fid, type) per table: the stack as (code, line) pairs, never the exception
         * itself (its traceback would keep the app's frames and locals alive). */
        e->sample = PyObject_CallOneArg(stack_sampler, exc);
        if (e->sample == NULL)
            PyErr_Clear();
    }
    e->count = 1;
    s->first_error = t->n_errs++;
    return 0;
}

/* Count one call that returned (exc_type NULL) or raised exc_type; the first exception object
 * `exc` of each (fid, type) is kept as the table's sample (NULL: none, as add_call). Returns -1
 * (no exception set) when memory ran out. */
static inline int
table_count(CallTable *t, int32_t fid, int64_t duration, int64_t self_ns, PyObject *exc_type, PyObject *exc)
{
    Slot *s = table_slot(t, fid);
    if (UNLIKELY(s == NULL))
        return -1;
    s->calls++;
    s->total_ns += duration;
    s->self_ns += self_ns;
    if (UNLIKELY(hist_add(s, bucket_of(duration)) < 0))
        return -1;
    if (exc_type != NULL) {
        s->errors++;
        if (error_add(t, s, exc_type, exc) < 0)
            return -1;
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

static PyObject *
table_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"span_budget", "trace_id", "root", NULL};
    Py_ssize_t span_budget = 0;
    PyObject *trace_id = NULL, *root = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|nOO:CallTable", kwlist, &span_budget, &trace_id, &root))
        return NULL;
    CallTable *t = (CallTable *)type->tp_alloc(type, 0);
    if (t == NULL)
        return NULL;
    t->open = 1;
    t->span_budget = span_budget;
    t->trace_id = trace_id ? Py_NewRef(trace_id) : PyLong_FromLong(0);
    t->root = Py_NewRef(root);
    t->index_mask = 0;
    if (t->trace_id == NULL) {
        Py_DECREF(t);
        return NULL;
    }
    return (PyObject *)t;
}

/* CallTable(span_budget, trace_id, root) without argument parsing: the rollup processor makes
 * one per request. Keywords take the general path. */
static PyObject *
table_vectorcall(PyObject *type, PyObject *const *args, size_t nargsf, PyObject *kwnames)
{
    Py_ssize_t nargs = PyVectorcall_NARGS(nargsf);
    if (kwnames != NULL || nargs > 3 || (nargs > 0 && !PyLong_Check(args[0]))) {
        PyObject *tuple = PyTuple_New(nargs), *kwargs = NULL;
        if (tuple == NULL)
            return NULL;
        for (Py_ssize_t i = 0; i < nargs; i++)
            PyTuple_SET_ITEM(tuple, i, Py_NewRef(args[i]));
        if (kwnames != NULL && (kwargs = PyDict_New()) != NULL) {
            for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++) {
                if (PyDict_SetItem(kwargs, PyTuple_GET_ITEM(kwnames, i), args[nargs + i]) < 0) {
                    Py_CLEAR(kwargs);
                    break;
                }
            }
        }
        PyObject *table = kwnames != NULL && kwargs == NULL ? NULL : table_new((PyTypeObject *)type, tuple, kwargs);
        Py_DECREF(tuple);
        Py_XDECREF(kwargs);
        return table;
    }
    Py_ssize_t span_budget = nargs > 0 ? PyLong_AsSsize_t(args[0]) : 0;
    if (span_budget == -1 && PyErr_Occurred())
        return NULL;
    CallTable *t = (CallTable *)((PyTypeObject *)type)->tp_alloc((PyTypeObject *)type, 0);
    if (t == NULL)
        return NULL;
    t->open = 1;
    t->span_budget = span_budget;
    t->trace_id = nargs > 1 ? Py_NewRef(args[1]) : PyLong_FromLong(0);
    t->root = Py_NewRef(nargs > 2 ? args[2] : Py_None);
    if (t->trace_id == NULL) {
        Py_DECREF(t);
        return NULL;
    }
    return (PyObject *)t;
}

static int
table_traverse(CallTable *t, visitproc visit, void *arg)
{
    Py_VISIT(t->trace_id);
    Py_VISIT(t->root);
    Py_VISIT(t->spans);
    for (int32_t i = 0; i < t->n_errs; i++) {
        Py_VISIT(t->errs[i].type);
        Py_VISIT(t->errs[i].sample);
    }
    return 0;
}

static int
table_clear(CallTable *t)
{
    Py_CLEAR(t->trace_id);
    Py_CLEAR(t->root);
    Py_CLEAR(t->spans);
    for (int32_t i = 0; i < t->n_errs; i++) {
        Py_CLEAR(t->errs[i].type);
        Py_CLEAR(t->errs[i].sample);
    }
    return 0;
}

static void
table_dealloc(CallTable *t)
{
    PyObject_GC_UnTrack(t);
    table_clear(t);
    for (int32_t i = 0; i < t->n_slots; i++)
        PyMem_Free(t->slots[i].wide);
    table_release_buffers(t);
    PyMem_Free(t->errs);
    Py_TYPE(t)->tp_free((PyObject *)t);
}

/* d[key] = value for two new references (either may be NULL after a failed build); both are
 * released. -1 with an exception set when either was NULL or the insertion failed. */
static int
dict_set_new(PyObject *d, PyObject *key, PyObject *value)
{
    int rc = (key && value) ? PyDict_SetItem(d, key, value) : -1;
    Py_XDECREF(key);
    Py_XDECREF(value);
    return rc;
}

static PyObject *
hist_dict(Slot *s)
{
    PyObject *hist = PyDict_New();
    if (hist == NULL)
        return NULL;
    for (int b = 0; b < (s->wide ? N_BUCKETS : (int)s->n_inline); b++) {
        int bucket = s->wide ? b : s->inline_bucket[b];
        uint64_t count = s->wide ? s->wide[b] : s->inline_count[b];
        if (count == 0)
            continue;
        if (dict_set_new(hist, PyLong_FromLong(bucket), PyLong_FromUnsignedLongLong(count)) < 0) {
            Py_DECREF(hist);
            return NULL;
        }
    }
    return hist;
}

/* stats: {fid: [calls, errors, total_ns, self_ns, {bucket: count}]}, a fresh dict (read once per
 * request, at merge time). Each slot is copied before anything allocates: on 3.11 an allocation
 * may run the collector, whose finalizers may let another thread record into (and grow) this
 * table; tables are normally read only once nothing writes to them any more. */
static PyObject *
table_get_stats(CallTable *t, void *closure)
{
    PyObject *out = PyDict_New();
    if (out == NULL)
        return NULL;
    for (int32_t i = 0; i < t->n_slots; i++) {
        Slot snap = t->slots[i], *s = &snap;
        PyObject *hist = hist_dict(s);
        PyObject *row = hist ? Py_BuildValue("[KKLLN]", (unsigned long long)s->calls,
                                             (unsigned long long)s->errors, (long long)s->total_ns,
                                             (long long)s->self_ns, hist)
                             : NULL;
        if (dict_set_new(out, PyLong_FromLong(s->fid), row) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

/* errors: {(fid, exception type): count}, a fresh dict. */
static PyObject *
table_get_errors(CallTable *t, void *closure)
{
    PyObject *out = PyDict_New();
    if (out == NULL)
        return NULL;
    for (int32_t i = 0; i < t->n_errs; i++) {
        ErrorCount snap = t->errs[i], *e = &snap; /* copied: see table_get_stats */
        if (e->type == NULL)
            continue;
        if (dict_set_new(out, Py_BuildValue("(iO)", e->fid, e->type), PyLong_FromUnsignedLongLong(e->count)) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

/* samples: {(fid, exception type): stack sample of the first exception}, a fresh dict. */
static PyObject *
table_get_samples(CallTable *t, void *closure)
{
    PyObject *out = PyDict_New();
    if (out == NULL)
        return NULL;
    for (int32_t i = 0; i < t->n_errs; i++) {
        ErrorCount snap = t->errs[i], *e = &snap; /* copied: see table_get_stats */
        if (e->type == NULL || e->sample == NULL)
            continue;
        if (dict_set_new(out, Py_BuildValue("(iO)", e->fid, e->type), Py_NewRef(e->sample)) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

static PyObject *
table_get_open(CallTable *t, void *closure)
{
    return PyBool_FromLong(t->open);
}

static int
table_set_open(CallTable *t, PyObject *value, void *closure)
{
    if (value == NULL) {
        PyErr_SetString(PyExc_AttributeError, "cannot delete 'open'");
        return -1;
    }
    int truth = PyObject_IsTrue(value);
    if (truth < 0)
        return -1;
    t->open = (char)truth;
    return 0;
}

static PyObject *
table_get_spans(CallTable *t, void *closure)
{
    if (t->spans == NULL && (t->spans = PyList_New(0)) == NULL)
        return NULL;
    return Py_NewRef(t->spans);
}

static int
table_set_spans(CallTable *t, PyObject *value, void *closure)
{
    if (value == NULL || !PyList_Check(value)) {
        PyErr_SetString(PyExc_TypeError, "spans must be a list");
        return -1;
    }
    Py_XSETREF(t->spans, Py_NewRef(value));
    return 0;
}

static int
check_fid(long long fid)
{
    if (fid < 0 || fid >= INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "function id %lld out of range", fid);
        return -1;
    }
    return 0;
}

/* add_call(fid, duration_ns, self_ns, exc_type=None): one call from outside the sensor (a span of
 * another instrumentation). Like calls.CallTable.add_call: counted, never kept as a span. */
static PyObject *
table_add_call(CallTable *t, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fid", "duration_ns", "self_ns", "exc_type", NULL};
    long long fid, duration, self_ns;
    PyObject *exc_type = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "LLL|O:add_call", kwlist, &fid, &duration, &self_ns, &exc_type))
        return NULL;
    if (check_fid(fid) < 0)
        return NULL;
    if (table_count(t, (int32_t)fid, duration, self_ns, exc_type == Py_None ? NULL : exc_type, NULL) < 0)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

/* absorb(src, room, overflow) -> (created, overflowed): add src's counters into this table (a
 * window's table for one route), creating at most `room` new function slots; the calls of any
 * further new function go to `overflow` (the window's overflow-route table) instead. `created`
 * counts the slots made in both, `overflowed` the functions sent to overflow. This is what folds a
 * finished request into its window: a C loop over the request's slots, no Python object made. */
static PyObject *
table_absorb(CallTable *t, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t created = 0, overflowed = 0;
    if (nargs != 3 || !CallTable_Check(args[0]) || !CallTable_Check(args[2])) {
        PyErr_SetString(PyExc_TypeError, "absorb(src: CallTable, room: int, overflow: CallTable)");
        return NULL;
    }
    CallTable *src = (CallTable *)args[0], *overflow = (CallTable *)args[2];
    Py_ssize_t room = PyNumber_AsSsize_t(args[1], PyExc_OverflowError);
    if (room == -1 && PyErr_Occurred())
        return NULL;
    if (src == t || src == overflow) {
        PyErr_SetString(PyExc_ValueError, "a table cannot absorb itself");
        return NULL;
    }
    for (int32_t i = 0; i < src->n_slots; i++) {
        const Slot *from = &src->slots[i];
        Slot *into = table_find(t, from->fid);
        if (into == NULL) {
            CallTable *home = t;
            if (room > 0) {
                room--;
            } else {
                overflowed++;
                home = overflow;
                into = table_find(overflow, from->fid);
            }
            if (into == NULL) {
                if ((into = table_new_slot(home, from->fid)) == NULL)
                    return PyErr_NoMemory();
                created++;
            }
        }
        if (slot_absorb(into, from) < 0)
            return PyErr_NoMemory();
    }
    return Py_BuildValue("(nn)", created, overflowed);
}

static PyObject *
table_get_has_errors(CallTable *t, void *closure)
{
    return PyBool_FromLong(t->n_errs > 0);
}

static PyObject *
table_get_series(CallTable *t, void *closure)
{
    return PyLong_FromLong(t->n_slots);
}

static PyMemberDef table_members[] = {
    {"span_budget", T_PYSSIZET, offsetof(CallTable, span_budget), 0, "spans this table may still keep"},
    {"trace_id", T_OBJECT, offsetof(CallTable, trace_id), 0, "trace id of the request"},
    {"root", T_OBJECT, offsetof(CallTable, root), 0, "span context of the request's root span"},
    {NULL},
};

static PyGetSetDef table_getset[] = {
    {"open", (getter)table_get_open, (setter)table_set_open, "False once the request has ended", NULL},
    {"spans", (getter)table_get_spans, (setter)table_set_spans, "[(fid, start_ns, end_ns, exc_type or None)]", NULL},
    {"stats", (getter)table_get_stats, NULL, "{fid: [calls, errors, total_ns, self_ns, {bucket: count}]} (fresh dict)", NULL},
    {"errors", (getter)table_get_errors, NULL, "{(fid, exception type): count} (fresh dict)", NULL},
    {"samples", (getter)table_get_samples, NULL, "{(fid, exception type): stack sample of the first exception} (fresh dict)", NULL},
    {"has_errors", (getter)table_get_has_errors, NULL, "True when a call in this table raised", NULL},
    {"series", (getter)table_get_series, NULL, "number of functions with calls in this table", NULL},
    {NULL},
};

static PyMethodDef table_methods[] = {
    {"add_call", (PyCFunction)(void (*)(void))table_add_call, METH_VARARGS | METH_KEYWORDS,
     "add_call(fid, duration_ns, self_ns, exc_type=None)"},
    {"absorb", (PyCFunction)(void (*)(void))table_absorb, METH_FASTCALL,
     "absorb(src, room, overflow) -> (created, overflowed): see calls.CallTable.absorb"},
    {NULL},
};

static PyTypeObject CallTableType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "funcsight.instrumentation._csensor.CallTable",
    .tp_basicsize = sizeof(CallTable),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "CallTable(span_budget=0, trace_id=0, root=None): calls of one request (or of the "
              "background), in calls.CallTable's format.",
    .tp_new = table_new,
    .tp_vectorcall = table_vectorcall,
    .tp_dealloc = (destructor)table_dealloc,
    .tp_traverse = (traverseproc)table_traverse,
    .tp_clear = (inquiry)table_clear,
    .tp_members = table_members,
    .tp_getset = table_getset,
    .tp_methods = table_methods,
};

/* ======================================================================= in-flight invocations */

/* One in-flight invocation: _pysensor's [fid, start, child, segment, active, parked]. */
typedef struct {
    int64_t start;       /* first entry */
    int64_t child;       /* time credited by sensed direct callees */
    int64_t segment;     /* start of the current active segment (generators) */
    int64_t active;      /* active time of finished segments */
    int32_t fid;
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

static inline void
internal_error(Core *core)
{
    core->internal_errors++;
    if (PyErr_Occurred())
        PyErr_Clear();
}

/* record(): where a finished call goes and what is counted. `table` is NULL except for calls
 * swept from the parking lot (the table captured when they were parked). */
static void
record(Core *core, int32_t fid, int64_t start, int64_t end, int64_t duration, int64_t self_ns,
       PyObject *exc, PyObject *table)
{
    PyObject *exc_type = exc ? (PyObject *)Py_TYPE(exc) : NULL;
    PyObject *request = NULL;
    if (table == NULL) {
        if (UNLIKELY(PyContextVar_Get(core->request_var, NULL, &request) < 0)) {
            internal_error(core);
            request = NULL;
        }
        if (request != NULL && CallTable_Check(request) && ((CallTable *)request)->open)
            table = request;
        else
            table = core->background;
    }
    if (LIKELY(table != NULL && CallTable_Check(table))) {
        CallTable *t = (CallTable *)table;
        if (UNLIKELY(table_count(t, fid, duration, self_ns, exc_type, exc) < 0))
            internal_error(core);
        else if (UNLIKELY(t->span_budget > 0 && (exc_type != NULL || duration >= core->slow_ns))) {
            if (table_keep_span(t, fid, start, end, exc_type) < 0)
                internal_error(core);
        }
    }
    Py_XDECREF(request);
}

/* finish(): final exit of an invocation already off the stack. Credits `caller` (the new top, an
 * awaiter, or NULL) and records the call. As _pysensor: a plain call credits its duration, a
 * generator its last active segment (earlier ones were credited as they ended), a coroutine its
 * whole duration (its awaiter waits for it). */
static inline void
finish(Core *core, Entry *caller, const Entry *e, int64_t now, PyObject *exc, PyObject *table)
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
    record(core, e->fid, e->start, now, duration, self_ns > 0 ? self_ns : 0, exc, table);
    if (UNLIKELY(exc != NULL && caller != NULL))
        caller->child += now_ns() - now; /* the stack sample taken for an error is the sensor's
                                          * time, not the catching caller's */
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

#if HAS_MONITORING /* parking on PY_YIELD is the 3.12+ front end's; 3.11 tokens carry their entry */

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
    Entry *top = st ? stack_push(st) : NULL;
    if (top != NULL)
        *top = p.entry;
    else
        internal_error(core);
    /* State is consistent: dropping references may now run arbitrary code. */
    Py_DECREF(p.frame);
    Py_XDECREF(p.table);
}

/* =============================================================== sys.monitoring front end (3.12+) */

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
    Entry *e = st ? stack_push(st) : NULL;
    if (UNLIKELY(e == NULL)) {
        internal_error(core);
        Py_RETURN_NONE;
    }
    e->start = e->segment = now;
    e->child = e->active = 0;
    e->fid = TAG_FID(tag);
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
        Entry e;
        stack_pop(st, &e);
        finish(core, stack_top(st), &e, now, exc, NULL);
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
 * for unsensed code it must stay cheap: one co_extra read. GeneratorExit is a close, not an error. */
static PyObject *
core_on_unwind(Core *core, PyObject *const *args, Py_ssize_t nargs)
{
    if (UNLIKELY(nargs < 3))
        Py_RETURN_NONE;
    uint64_t tag = code_tag(args[0]);
    if ((tag >> EPOCH_SHIFT) != core->epoch || !TAG_SENSED(tag))
        Py_RETURN_NONE;
    PyObject *exc = args[2];
    final_exit(core, tag, Py_TYPE(exc) == (PyTypeObject *)PyExc_GeneratorExit ? NULL : exc);
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

/* ============================================================ enter/leave front end (3.11) */

/* Plain functions get their depth in the thread's stack as token: a cached small int below 257,
 * so the common path allocates nothing. Generators and coroutines get an Invocation, which holds
 * their entry while suspended; the stack then holds a marker with a reference to it. */
static PyObject *
enter_impl(Core *core, PyObject *arg)
{
    long fid = PyLong_AsLong(arg);
    if (UNLIKELY(fid < 0 || fid >= INT32_MAX)) {
        internal_error(core);
        Py_RETURN_NONE;
    }
    uint8_t kind = fid < core->n_kinds ? core->kinds[fid] : PLAIN;
    int64_t now = now_ns();
    ThreadStack *st = stack_of(core);
    Entry *e = st ? stack_push(st) : NULL;
    if (UNLIKELY(e == NULL)) {
        internal_error(core);
        Py_RETURN_NONE;
    }
    e->fid = (int32_t)fid;
    e->owner = NULL;
    if (LIKELY(kind == PLAIN)) {
        e->start = e->segment = now;
        e->child = e->active = 0;
        e->kind = PLAIN;
        e->suspended = 0;
        PyObject *token = PyLong_FromSsize_t(st->len - 1);
        if (UNLIKELY(token == NULL)) {
            st->len--;
            internal_error(core);
            Py_RETURN_NONE;
        }
        return token;
    }
    Invocation *inv = PyObject_New(Invocation, &InvocationType);
    if (inv == NULL) {
        st->len--;
        internal_error(core);
        Py_RETURN_NONE;
    }
    inv->e.start = inv->e.segment = now;
    inv->e.child = inv->e.active = 0;
    inv->e.fid = (int32_t)fid;
    inv->e.kind = kind;
    inv->e.suspended = 0;
    inv->e.owner = NULL;
    inv->awaiter = NULL;
    st->items[st->len - 1].owner = Py_NewRef(inv); /* the marker's reference */
    return (PyObject *)inv;
}

static inline int
top_is(ThreadStack *st, PyObject *inv)
{
    return st->len > 0 && st->items[st->len - 1].owner == inv;
}

/* leave(): as the twin, the token's entry comes off the stack with anything above it (`del
 * stack[depth:]`); an Invocation found nowhere (suspended) is finished as it is. With
 * `via_awaiter`, an Invocation on top credits its awaiter instead of the slot below. */
static void
leave_impl(Core *core, PyObject *token, PyObject *exc, int via_awaiter)
{
    int64_t now = now_ns();
    ThreadStack *st = stack_of(core);
    if (UNLIKELY(st == NULL)) {
        internal_error(core);
        return;
    }
    PyObject *raised = NULL; /* GeneratorExit is a close, not an error */
    if (exc != NULL && exc != Py_None && !PyObject_TypeCheck(exc, (PyTypeObject *)PyExc_GeneratorExit))
        raised = exc;
    Entry e;
    if (LIKELY(PyLong_CheckExact(token))) {
        Py_ssize_t depth = PyLong_AsSsize_t(token);
        if (UNLIKELY(depth < 0 || depth >= st->len || st->items[depth].owner != NULL)) {
            if (PyErr_Occurred())
                internal_error(core);
            return; /* already dropped with a frame below it */
        }
        e = st->items[depth];
        stack_truncate(st, depth);
        finish(core, stack_top(st), &e, now, raised, NULL);
        return;
    }
    if (!Invocation_Check(token))
        return; /* None: enter() failed */
    Invocation *inv = (Invocation *)token;
    Entry *caller;
    if (top_is(st, token)) {
        stack_truncate(st, st->len - 1);
        caller = via_awaiter && inv->awaiter ? &((Invocation *)inv->awaiter)->e : stack_top(st);
    }
    else {
        Py_ssize_t i = st->len;
        while (--i >= 0 && st->items[i].owner != token)
            ;
        if (i >= 0)
            stack_truncate(st, i);
        caller = stack_top(st);
    }
    e = inv->e;
    finish(core, caller, &e, now, raised, NULL);
    awaiter_done(st, token);
}

/* suspend(): the generator/coroutine on top yields or awaits; its caller (or its awaiter, with
 * `via_awaiter`) is credited with the segment. Not on top: nothing, as the twin. */
static void
suspend_impl(Core *core, PyObject *token, int via_awaiter)
{
    ThreadStack *st;
    if (!Invocation_Check(token) || (st = stack_of(core)) == NULL || !top_is(st, token))
        return;
    int64_t now = now_ns();
    Invocation *inv = (Invocation *)token;
    stack_truncate(st, st->len - 1); /* the caller still holds `token` */
    Entry *caller = via_awaiter && inv->awaiter ? &((Invocation *)inv->awaiter)->e : stack_top(st);
    end_segment(caller, &inv->e, now);
}

static void
resume_impl(Core *core, PyObject *token)
{
    if (!Invocation_Check(token))
        return;
    Invocation *inv = (Invocation *)token;
    inv->e.segment = now_ns();
    ThreadStack *st = stack_of(core);
    Entry *slot = st ? stack_push(st) : NULL;
    if (slot == NULL) {
        internal_error(core);
        return;
    }
    slot->fid = inv->e.fid;
    slot->owner = Py_NewRef(token);
    awaiter_done(st, token);
}

/* Positional-or-keyword (token, second=None) for the hooks that take two arguments. */
static int
two_args(PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames, const char *second_name,
         PyObject **token, PyObject **second)
{
    *token = nargs > 0 ? args[0] : NULL;
    *second = nargs > 1 ? args[1] : Py_None;
    if (kwnames != NULL) {
        for (Py_ssize_t i = 0; i < PyTuple_GET_SIZE(kwnames); i++) {
            PyObject *name = PyTuple_GET_ITEM(kwnames, i);
            if (PyUnicode_CompareWithASCIIString(name, second_name) == 0)
                *second = args[nargs + i];
            else if (PyUnicode_CompareWithASCIIString(name, "token") == 0)
                *token = args[nargs + i];
        }
    }
    return *token != NULL;
}

/* enter(fid) -> token */
static PyObject *
core_enter(Core *core, PyObject *arg)
{
    return enter_impl(core, arg);
}

/* leave(token, exc=None): final exit (3.11 rewritten code). GeneratorExit is a close. */
static PyObject *
core_leave(Core *core, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *token, *exc;
    if (UNLIKELY(!two_args(args, nargs, kwnames, "exc", &token, &exc)))
        internal_error(core);
    else
        leave_impl(core, token, exc, 0);
    Py_RETURN_NONE;
}

/* suspend(token) */
static PyObject *
core_suspend(Core *core, PyObject *token)
{
    suspend_impl(core, token, 0);
    Py_RETURN_NONE;
}

/* resume(token, value=None) -> value */
static PyObject *
core_resume(Core *core, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *token, *value;
    if (UNLIKELY(!two_args(args, nargs, kwnames, "value", &token, &value)))
        internal_error(core);
    else
        resume_impl(core, token);
    return Py_NewRef(value);
}

/* ---- the rest of rewrite.py's hook set (see its _make_hooks), for the C core ---------------- */

/* Is the coroutine `coro` running? (rewrite.py reads .cr_running; 3.11's public struct has it.) */
static int
coroutine_running(PyObject *coro)
{
#if PY_VERSION_HEX < 0x030C0000
    if (PyCoro_CheckExact(coro))
        return ((PyCoroObject *)coro)->cr_frame_state == 0; /* FRAME_EXECUTING */
#endif
    PyObject *running = PyObject_GetAttr(coro, str_cr_running);
    if (running == NULL) {
        PyErr_Clear();
        return 0;
    }
    Py_DECREF(running);
    return running == Py_True;
}

/* enter_co(fid) -> token: a coroutine entered while the coroutine its awaiter awaits is running
 * (i.e. it is that coroutine) remembers the awaiter. */
static PyObject *
core_enter_co(Core *core, PyObject *arg)
{
    PyObject *token = enter_impl(core, arg);
    if (!Invocation_Check(token))
        return token;
    ThreadStack *st = stack_of(core);
    if (st != NULL && st->pending_awaiter != NULL && coroutine_running(st->pending_awaitable))
        Py_XSETREF(((Invocation *)token)->awaiter, Py_NewRef(st->pending_awaiter));
    return token;
}

/* unwind(token, exc=None): final exit of a generator or coroutine. Thrown into while suspended
 * (throw(), close(), cancellation): first back on the stack. Then leave, via its awaiter. */
static PyObject *
core_unwind(Core *core, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    PyObject *token, *exc;
    if (UNLIKELY(!two_args(args, nargs, kwnames, "exc", &token, &exc))) {
        internal_error(core);
        Py_RETURN_NONE;
    }
    if (Invocation_Check(token)) {
        ThreadStack *st = stack_of(core);
        Py_ssize_t i = st ? st->len : 0;
        while (--i >= 0 && st->items[i].owner != token)
            ;
        if (i < 0)
            resume_impl(core, token);
    }
    leave_impl(core, token, exc, 1);
    Py_RETURN_NONE;
}

/* yield_(token, value) -> value: around a generator's yield. */
static PyObject *
core_yield(Core *core, PyObject *const *args, Py_ssize_t nargs)
{
    if (UNLIKELY(nargs != 2)) {
        internal_error(core);
        return Py_NewRef(nargs > 1 ? args[1] : Py_None);
    }
    suspend_impl(core, args[0], 0);
    return Py_NewRef(args[1]);
}

/* await_(token, awaitable) -> awaitable: off the stack (via the awaiter) before an await; a
 * coroutine awaited directly will find this token as its awaiter. */
static PyObject *
core_await(Core *core, PyObject *const *args, Py_ssize_t nargs)
{
    if (UNLIKELY(nargs != 2)) {
        internal_error(core);
        return Py_NewRef(nargs > 1 ? args[1] : Py_None);
    }
    PyObject *token = args[0], *awaitable = args[1];
    suspend_impl(core, token, 1);
    ThreadStack *st = stack_of(core);
    if (st != NULL) {
        PyObject *old_awaitable = st->pending_awaitable, *old_awaiter = st->pending_awaiter;
        int coro = PyCoro_CheckExact(awaitable) && Invocation_Check(token);
        st->pending_awaitable = coro ? Py_NewRef(awaitable) : NULL;
        st->pending_awaiter = coro ? Py_NewRef(token) : NULL;
        Py_XDECREF(old_awaitable); /* last: may free a coroutine, whose finalizer runs code */
        Py_XDECREF(old_awaiter);
    }
    return Py_NewRef(awaitable);
}

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
        finish(core, NULL, &over[j].entry, over[j].entry.segment, NULL, over[j].table);
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

static PyObject *
core_get_parked(Core *core, void *closure)
{
    return PyLong_FromSize_t(core->parked_len);
}

static PyObject *
core_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"classify", "current_request", "slow_ns", NULL};
    PyObject *classify, *request_var;
    long long slow_ns = 50000000;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO|L:Core", kwlist, &classify, &request_var, &slow_ns))
        return NULL;
    if (!PyCallable_Check(classify) || !PyContextVar_CheckExact(request_var)) {
        PyErr_SetString(PyExc_TypeError, "Core(classify: callable, current_request: ContextVar, slow_ns=...)");
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
    core->background = PyObject_CallNoArgs((PyObject *)&CallTableType);
    if (core->background == NULL) {
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
    {"stack_fids", (PyCFunction)core_stack_fids, METH_NOARGS, "function ids on this thread's stack"},
    {NULL},
};

static PyMemberDef core_members[] = {
    {"slow_ns", T_LONGLONG, offsetof(Core, slow_ns), 0, "calls at least this long become spans"},
    {"internal_errors", T_PYSSIZET, offsetof(Core, internal_errors), 0, "swallowed internal failures"},
    {NULL},
};

static PyGetSetDef core_getset[] = {
    {"background", (getter)core_get_background, (setter)core_set_background,
     "the CallTable for calls outside an open request", NULL},
    {"parked", (getter)core_get_parked, NULL, "number of suspended invocations parked", NULL},
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

/* ===================================================================================== module */

static PyObject *
mod_bucket_of(PyObject *mod, PyObject *arg)
{
    long long d = PyLong_AsLongLong(arg);
    if (d == -1 && PyErr_Occurred())
        return NULL;
    return PyLong_FromLong(bucket_of(d));
}

static PyObject *
mod_now_ns(PyObject *mod, PyObject *unused)
{
    return PyLong_FromLongLong(now_ns());
}

static PyObject *
clock_name(void)
{
#if HAVE_TSC
    if (clock_tsc)
        return PyUnicode_FromString("tsc");
#endif
    return PyUnicode_FromString("monotonic");
}

static PyObject *
mod_clock(PyObject *mod, PyObject *unused)
{
    return clock_name();
}

/* _clock_state() -> (map_tsc, map_ns, map_mult, cal_tsc, cal_ns, last_cal_ns): for tests. */
static PyObject *
mod_clock_state(PyObject *mod, PyObject *unused)
{
#if HAVE_TSC
    return Py_BuildValue("(LLLLLL)", (long long)map_tsc, (long long)map_ns, (long long)map_mult,
                         (long long)cal_tsc, (long long)cal_ns, (long long)last_cal_ns);
#else
    Py_RETURN_NONE;
#endif
}

/* use_clock("tsc" | "monotonic") -> the clock now in use ("tsc" only where the platform allows
 * it). For tests and benchmarks: switch only while no sensed call is in flight. */
static PyObject *
mod_use_clock(PyObject *mod, PyObject *arg)
{
    if (!PyUnicode_Check(arg)) {
        PyErr_SetString(PyExc_TypeError, "use_clock('tsc' | 'monotonic')");
        return NULL;
    }
    if (PyUnicode_CompareWithASCIIString(arg, "monotonic") == 0) {
#if HAVE_TSC
        clock_tsc = 0;
#endif
    }
    else if (PyUnicode_CompareWithASCIIString(arg, "tsc") == 0) {
#if HAVE_TSC
        if (tsc_usable && !clock_tsc)
            tsc_calibrate();
#endif
    }
    else {
        PyErr_SetString(PyExc_ValueError, "use_clock('tsc' | 'monotonic')");
        return NULL;
    }
    return clock_name();
}

/* _floor(*args): the REFERENCE.md prototype callback (count + clock_gettime), for bench/micro.py
 * to show in the same run what dispatch and the clock alone cost. */
static unsigned long long floor_count;
static long long floor_sink;

static PyObject *
mod_floor(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    floor_count++;
    floor_sink += monotonic_ns();
    return Py_NewRef(nargs > 0 ? args[0] : Py_None); /* as a 3.11 enter(): a non-None token */
}

/* _floor2(token, value=None) -> value: the same, for the 3.11 hooks that pass a value through. */
static PyObject *
mod_floor2(PyObject *mod, PyObject *const *args, Py_ssize_t nargs)
{
    floor_count++;
    floor_sink += monotonic_ns();
    return Py_NewRef(nargs > 1 ? args[1] : Py_None);
}

static PyObject *
mod_set_stack_sampler(PyObject *self, PyObject *sampler)
{
    Py_XSETREF(stack_sampler, sampler == Py_None ? NULL : Py_NewRef(sampler));
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"set_stack_sampler", mod_set_stack_sampler, METH_O, "set_stack_sampler(fn): fn(exception) -> stack sample kept per (fid, type)"},
    {"_floor", (PyCFunction)(void (*)(void))mod_floor, METH_FASTCALL, "count + clock_gettime (bench yardstick)"},
    {"_floor2", (PyCFunction)(void (*)(void))mod_floor2, METH_FASTCALL, "count + clock_gettime, returns args[1]"},
    {"bucket_of", mod_bucket_of, METH_O, "bucket_of(duration_ns): calls.bucket_of, in C"},
    {"now_ns", mod_now_ns, METH_NOARGS, "the sensor's clock (CLOCK_MONOTONIC, ns)"},
    {"clock", mod_clock, METH_NOARGS, "'tsc' (TSC mapped onto CLOCK_MONOTONIC) or 'monotonic'"},
    {"_clock_state", mod_clock_state, METH_NOARGS, "the TSC map (tests)"},
    {"use_clock", mod_use_clock, METH_O, "use_clock('tsc' | 'monotonic') -> the clock in use"},
    {NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "funcsight.instrumentation._csensor",
    .m_doc = "funcsight's sensor hot path in C (see _pysensor.py for the semantics).",
    .m_size = -1,
    .m_methods = module_methods,
};

PyMODINIT_FUNC
PyInit__csensor(void)
{
#ifdef Py_GIL_DISABLED
    PyErr_SetString(PyExc_ImportError, "funcsight's C sensor needs the GIL; free-threaded builds use the Python sensor");
    return NULL;
#endif
#if HAVE_TSC
    if (!tsc_usable && (tsc_usable = tsc_platform_ok()))
        tsc_calibrate();
#endif
    if (PyType_Ready(&CallTableType) < 0 || PyType_Ready(&InvocationType) < 0 || PyType_Ready(&CoreType) < 0)
        return NULL;
    str_name = PyUnicode_InternFromString("__name__");
    str_empty = PyUnicode_InternFromString("");
    str_cr_running = PyUnicode_InternFromString("cr_running");
    if (str_name == NULL || str_empty == NULL || str_cr_running == NULL)
        return NULL;
#if HAS_MONITORING
    if (extra_index < 0) {
        extra_index = PyUnstable_Eval_RequestCodeExtraIndex(NULL);
        if (extra_index < 0) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_ImportError, "no co_extra index left");
            return NULL;
        }
    }
    PyObject *sys_monitoring = PyImport_ImportModule("sys");
    if (sys_monitoring != NULL) {
        Py_SETREF(sys_monitoring, PyObject_GetAttrString(sys_monitoring, "monitoring"));
    }
    if (sys_monitoring == NULL)
        return NULL;
    Py_XSETREF(disable_obj, PyObject_GetAttrString(sys_monitoring, "DISABLE"));
    Py_DECREF(sys_monitoring);
    if (disable_obj == NULL)
        return NULL;
#endif
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "CallTable", (PyObject *)&CallTableType) < 0 ||
        PyModule_AddObjectRef(m, "Invocation", (PyObject *)&InvocationType) < 0 ||
        PyModule_AddObjectRef(m, "Core", (PyObject *)&CoreType) < 0 ||
        PyModule_AddIntConstant(m, "HAS_MONITORING", HAS_MONITORING) < 0 ||
        PyModule_AddIntConstant(m, "PLAIN", PLAIN) < 0 || PyModule_AddIntConstant(m, "GENERATOR", GENERATOR) < 0 ||
        PyModule_AddIntConstant(m, "COROUTINE", COROUTINE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
