/* funcsight.processors._crollup: the rollup span processor's per-span path in C.
 *
 * Every span the process starts and ends passes through RollupSpanProcessor.on_start/on_end, and
 * for a request's root span they open and close its call table. In Python that was about 38,000
 * instructions per Flask request (bench/instructions.py), most of it Python frames and the SDK
 * span's properties. This type does the same work (rollup.py's Python methods are its twin, and
 * the semantics live there) reading the SDK span's own fields, which rollup.py checks once are where
 * this reads them (SDK_FIELDS_READABLE). What is rare (a child span to roll up, a route not set as
 * http.route, a request with kept spans) calls the Python methods.
 *
 * WindowAggregator is the C twin of windows.py's WindowAggregator (same methods, same tests): it owns
 * its lock and the open window's parts, and RollupCore folds a finished request into it with a C
 * call (windows_add_request). With the Python twin, RollupCore calls its public add_request.
 *
 * Nothing here raises into the application: a failure is counted in `failures` and the span is
 * left alone.
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <structmember.h>
#include <pythread.h>

typedef struct {
    PyObject_HEAD
    PyObject *processor;       /* the RollupSpanProcessor: enabled, spans_per_trace, sink */
    PyObject *open;            /* dict: root span id -> table (the processor's own) */
    PyObject *by_trace;        /* dict: trace id -> table of its open local root */
    PyObject *current_request; /* the ContextVar the sensor reads */
    PyObject *windows;         /* a WindowAggregator: this module's (a C call) or windows.py's */
    PyObject *add_request;     /* windows.add_request(route, table, duration, failed), the Python twin's */
    PyObject *table_type;      /* the sensor's call table type (its sink's, chosen once) */
    PyObject *roll_up_child;   /* processor._roll_up_child(span, trace_id) */
    PyObject *queue_spans;     /* processor._queue_spans(table) */
    PyObject *route_of;        /* rollup.route_of(span, attributes) */
    PyObject *framing_scopes;  /* frozenset of instrumentation scope names */
    PyObject *server, *consumer; /* SpanKind.SERVER, SpanKind.CONSUMER */
    PyObject *status_error;    /* StatusCode.ERROR */
    Py_ssize_t max_open;
    Py_ssize_t failures;
} RollupCore;

static PyObject *s_absorb, *s_has_errors, *s_series, *s_time;
static PyObject *s_kind, *s_parent, *s_context, *s_attributes, *s_dict, *s_status, *s_status_code,
    *s_start_time, *s_end_time, *s_scope, *s_name, *s_enabled, *s_spans_per_trace,
    *s_open, *s_trace_id, *s_spans, *s_route, *s_status_new, *s_status_old;
static PyObject *time_time; /* time.time */

/* SpanContext is a tuple (trace_id, span_id, is_remote, trace_flags, ...): rollup.py probes it. */
static inline int
is_span_context(PyObject *context)
{
    return PyTuple_Check(context) && PyTuple_GET_SIZE(context) >= 4;
}

/* calls.bucket_of: the histogram bucket of a duration (two buckets per power of two). */
static long
bucket_of(int64_t ns)
{
    uint64_t v = ns > 0 ? (uint64_t)ns : 0;
    int n = v ? 64 - __builtin_clzll(v) : 0;
    if (n < 2)
        return n << 1;
    return (n << 1) | (long)((v >> (n - 2)) & 1);
}

/* list[index] += amount */
static int
list_add(PyObject *list, Py_ssize_t index, int64_t amount)
{
    PyObject *add = PyLong_FromLongLong(amount);
    if (add == NULL)
        return -1;
    PyObject *sum = PyNumber_Add(PyList_GET_ITEM(list, index), add);
    Py_DECREF(add);
    return sum == NULL ? -1 : PyList_SetItem(list, index, sum); /* steals sum, releases the old value */
}

/* dict[key] = dict.get(key, 0) + 1 */
static int
dict_increment(PyObject *dict, PyObject *key)
{
    PyObject *old = PyDict_GetItemWithError(dict, key);
    if (old == NULL && PyErr_Occurred())
        return -1;
    PyObject *one = PyLong_FromLong(1);
    PyObject *sum = old == NULL || one == NULL ? Py_XNewRef(one) : PyNumber_Add(old, one);
    Py_XDECREF(one);
    int rc = sum == NULL ? -1 : PyDict_SetItem(dict, key, sum);
    Py_XDECREF(sum);
    return rc;
}

/* ------------------------------------------------------------------------------------------------
 * WindowAggregator: the open window and the fold into it (windows.py's WindowAggregator is the
 * twin, and its docstrings the semantics). The open window's parts live in this struct, under this
 * struct's lock; nothing else reads them. drain() hands them to windows.close_window, which makes
 * the drained Window outside the lock; a table with errors is folded into the window's error counts
 * by windows.merge_errors (Python: it builds the error samples), under the lock.
 */
typedef struct {
    PyObject_HEAD
    PyThread_type_lock lock;
    Py_ssize_t max_series, max_routes;
    PyObject *close;            /* windows.close_window(start, end, tables, errors, routes, samples, ...) */
    PyObject *merge_errors;     /* windows.merge_errors(errors, samples, route, table) */
    PyObject *overflow_route;   /* names.OVERFLOW_ROUTE */
    PyObject *background_route; /* names.BACKGROUND_ROUTE */
    /* the open window */
    PyObject *start;            /* float, epoch seconds */
    PyObject *tables;           /* dict: table type -> {route -> call table of that route} */
    PyObject *errors, *routes, *samples;
    Py_ssize_t series, overflow_series, overflow_routes;
} Windows;

static PyTypeObject WindowsType;

/* Take the window's lock; when another thread holds it (it may be running Python code, absorb() of
 * a Python table or merge_errors), wait with the GIL released. */
static void
windows_lock(Windows *w)
{
    if (!PyThread_acquire_lock(w->lock, NOWAIT_LOCK)) {
        Py_BEGIN_ALLOW_THREADS
        PyThread_acquire_lock(w->lock, WAIT_LOCK);
        Py_END_ALLOW_THREADS
    }
}

/* A fresh open window (new references), or -1: nothing changed. */
static int
windows_fresh(PyObject **start, PyObject **tables, PyObject **errors, PyObject **routes, PyObject **samples)
{
    *start = PyObject_CallNoArgs(time_time);
    *tables = PyDict_New();
    *errors = PyDict_New();
    *routes = PyDict_New();
    *samples = PyDict_New();
    if (*start && *tables && *errors && *routes && *samples)
        return 0;
    Py_CLEAR(*start);
    Py_CLEAR(*tables);
    Py_CLEAR(*errors);
    Py_CLEAR(*routes);
    Py_CLEAR(*samples);
    return -1;
}

/* Fold `table` into the open window's table for `route` and its type (lock held). */
static int
windows_merge(Windows *w, PyObject *route, PyObject *table)
{
    PyObject *type = (PyObject *)Py_TYPE(table);
    PyObject *by_type = NULL, *into = NULL, *overflow = NULL, *room = NULL, *absorbed = NULL, *has_errors = NULL;
    int rc = -1;
    by_type = Py_XNewRef(PyDict_GetItemWithError(w->tables, type));
    if (by_type == NULL) {
        if (PyErr_Occurred() || (by_type = PyDict_New()) == NULL)
            goto done;
        if ((overflow = PyObject_CallNoArgs(type)) == NULL || PyDict_SetItem(by_type, w->overflow_route, overflow) < 0 ||
            PyDict_SetItem(w->tables, type, by_type) < 0)
            goto done;
        Py_CLEAR(overflow);
    }
    into = Py_XNewRef(PyDict_GetItemWithError(by_type, route));
    if (into == NULL) {
        if (PyErr_Occurred() || (into = PyObject_CallNoArgs(type)) == NULL || PyDict_SetItem(by_type, route, into) < 0)
            goto done;
    }
    overflow = Py_XNewRef(PyDict_GetItemWithError(by_type, w->overflow_route));
    if (overflow == NULL) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_RuntimeError, "the window lost its overflow table");
        goto done;
    }
    if ((room = PyLong_FromSsize_t(w->max_series - w->series)) == NULL)
        goto done;
    PyObject *args[4] = {into, table, room, overflow};
    absorbed = PyObject_VectorcallMethod(s_absorb, args, 4 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
    if (absorbed == NULL)
        goto done;
    if (!PyTuple_Check(absorbed) || PyTuple_GET_SIZE(absorbed) != 2) {
        PyErr_SetString(PyExc_TypeError, "absorb() must return (created, overflowed)");
        goto done;
    }
    Py_ssize_t created = PyLong_AsSsize_t(PyTuple_GET_ITEM(absorbed, 0));
    Py_ssize_t overflowed = created == -1 && PyErr_Occurred() ? -1 : PyLong_AsSsize_t(PyTuple_GET_ITEM(absorbed, 1));
    if (overflowed == -1 && PyErr_Occurred())
        goto done;
    w->series += created;
    w->overflow_series += overflowed;
    if ((has_errors = PyObject_GetAttr(table, s_has_errors)) == NULL)
        goto done;
    int failed = PyObject_IsTrue(has_errors);
    if (failed < 0)
        goto done;
    if (failed) {
        PyObject *merge_args[4] = {w->errors, w->samples, route, table};
        PyObject *res = PyObject_Vectorcall(w->merge_errors, merge_args, 4, NULL);
        if (res == NULL)
            goto done;
        Py_DECREF(res);
    }
    rc = 0;
done:
    Py_XDECREF(by_type);
    Py_XDECREF(into);
    Py_XDECREF(overflow);
    Py_XDECREF(room);
    Py_XDECREF(absorbed);
    Py_XDECREF(has_errors);
    return rc;
}

/* add_request under the lock: the route's statistics [requests, errors, total_ns, {bucket: n}],
 * then the table. The routes dict is this struct's own, so the statistics keep their shape. */
static int
windows_add_request_locked(Windows *w, PyObject *route, PyObject *table, int64_t duration, int failed)
{
    PyObject *stats = PyDict_GetItemWithError(w->routes, route); /* borrowed */
    if (stats == NULL) {
        if (PyErr_Occurred())
            return -1;
        if (PyDict_GET_SIZE(w->routes) >= w->max_routes) {
            w->overflow_routes++;
            route = w->overflow_route;
            stats = PyDict_GetItemWithError(w->routes, route);
            if (stats == NULL && PyErr_Occurred())
                return -1;
        }
        if (stats == NULL) {
            PyObject *histogram = PyDict_New();
            stats = histogram ? Py_BuildValue("[iiiN]", 0, 0, 0, histogram) : NULL;
            if (stats == NULL || PyDict_SetItem(w->routes, route, stats) < 0) {
                Py_XDECREF(stats);
                return -1;
            }
            Py_DECREF(stats); /* the dict holds it */
        }
    }
    Py_INCREF(stats);
    Py_INCREF(route);
    PyObject *bucket = NULL;
    int rc = -1;
    if (list_add(stats, 0, 1) < 0 || (failed && list_add(stats, 1, 1) < 0) || list_add(stats, 2, duration) < 0 ||
        (bucket = PyLong_FromLong(bucket_of(duration))) == NULL || dict_increment(PyList_GET_ITEM(stats, 3), bucket) < 0)
        goto done;
    rc = windows_merge(w, route, table);
done:
    Py_XDECREF(bucket);
    Py_DECREF(stats);
    Py_DECREF(route);
    return rc;
}

/* The fold RollupCore calls directly (a C call, no attribute looked up by name). */
static int
windows_add_request(Windows *w, PyObject *route, PyObject *table, int64_t duration, int failed)
{
    windows_lock(w);
    int rc = windows_add_request_locked(w, route, table, duration, failed);
    PyThread_release_lock(w->lock);
    return rc;
}

static PyObject *
windows_py_add_request(Windows *w, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 4) {
        PyErr_SetString(PyExc_TypeError, "add_request(route, table, duration_ns, failed)");
        return NULL;
    }
    int64_t duration = PyLong_AsLongLong(args[2]);
    if (duration == -1 && PyErr_Occurred())
        return NULL;
    int failed = PyObject_IsTrue(args[3]);
    if (failed < 0 || windows_add_request(w, args[0], args[1], duration, failed) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
windows_add_background(Windows *w, PyObject *table)
{
    PyObject *series = PyObject_GetAttr(table, s_series);
    int any = series ? PyObject_IsTrue(series) : -1;
    Py_XDECREF(series);
    if (any == 0) {
        PyObject *has_errors = PyObject_GetAttr(table, s_has_errors);
        any = has_errors ? PyObject_IsTrue(has_errors) : -1;
        Py_XDECREF(has_errors);
    }
    if (any < 0)
        return NULL;
    if (any) {
        windows_lock(w);
        int rc = windows_merge(w, w->background_route, table);
        PyThread_release_lock(w->lock);
        if (rc < 0)
            return NULL;
    }
    Py_RETURN_NONE;
}

static PyObject *
windows_drain(Windows *w, PyObject *Py_UNUSED(ignored))
{
    PyObject *start, *tables, *errors, *routes, *samples;
    if (windows_fresh(&start, &tables, &errors, &routes, &samples) < 0)
        return NULL;
    windows_lock(w);
    PyObject *old[5] = {w->start, w->tables, w->errors, w->routes, w->samples};
    Py_ssize_t overflow_series = w->overflow_series, overflow_routes = w->overflow_routes;
    w->start = Py_NewRef(start); /* the new window starts when the old one ends */
    w->tables = tables;
    w->errors = errors;
    w->routes = routes;
    w->samples = samples;
    w->series = w->overflow_series = w->overflow_routes = 0;
    PyThread_release_lock(w->lock);
    PyObject *counts[2] = {PyLong_FromSsize_t(overflow_series), PyLong_FromSsize_t(overflow_routes)};
    PyObject *window = NULL;
    if (counts[0] && counts[1]) {
        PyObject *args[8] = {old[0], start, old[1], old[2], old[3], old[4], counts[0], counts[1]};
        window = PyObject_Vectorcall(w->close, args, 8, NULL);
    }
    Py_XDECREF(counts[0]);
    Py_XDECREF(counts[1]);
    Py_DECREF(start);
    for (int i = 0; i < 5; i++)
        Py_DECREF(old[i]);
    return window;
}

static PyObject *
windows_reset(Windows *w, PyObject *Py_UNUSED(ignored))
{
    /* After fork: the lock may have been copied held by a thread that does not exist here (it is
     * left allocated, not freed), and the parent's calls are the parent's. */
    PyThread_type_lock lock = PyThread_allocate_lock();
    if (lock == NULL)
        return PyErr_NoMemory();
    PyObject *start, *tables, *errors, *routes, *samples;
    if (windows_fresh(&start, &tables, &errors, &routes, &samples) < 0) {
        PyThread_free_lock(lock);
        return NULL;
    }
    w->lock = lock;
    Py_SETREF(w->start, start);
    Py_SETREF(w->tables, tables);
    Py_SETREF(w->errors, errors);
    Py_SETREF(w->routes, routes);
    Py_SETREF(w->samples, samples);
    w->series = w->overflow_series = w->overflow_routes = 0;
    Py_RETURN_NONE;
}

static PyObject *
windows_open_counts(Windows *w, PyObject *Py_UNUSED(ignored))
{
    windows_lock(w);
    long long requests = 0;
    PyObject *route, *stats;
    Py_ssize_t pos = 0;
    while (PyDict_Next(w->routes, &pos, &route, &stats))
        requests += PyLong_AsLongLong(PyList_GET_ITEM(stats, 0));
    PyObject *counts = Py_BuildValue("{s:n,s:n,s:L,s:n,s:n}", "routes", PyDict_GET_SIZE(w->routes), "series",
                                     w->series, "requests", requests, "overflow_routes", w->overflow_routes,
                                     "overflow_series", w->overflow_series);
    PyThread_release_lock(w->lock);
    return counts;
}

static PyObject *
windows_get_open_series(Windows *w, void *closure)
{
    return PyLong_FromSsize_t(w->series);
}

static PyObject *
windows_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"max_series", "max_routes", "close", "merge_errors", "overflow_route",
                             "background_route", NULL};
    Py_ssize_t max_series, max_routes;
    PyObject *close, *merge_errors, *overflow_route, *background_route;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "nnOOUU:WindowAggregator", kwlist, &max_series, &max_routes, &close,
                                     &merge_errors, &overflow_route, &background_route))
        return NULL;
    Windows *w = (Windows *)type->tp_alloc(type, 0);
    if (w == NULL)
        return NULL;
    w->max_series = max_series;
    w->max_routes = max_routes;
    w->close = Py_NewRef(close);
    w->merge_errors = Py_NewRef(merge_errors);
    w->overflow_route = Py_NewRef(overflow_route);
    w->background_route = Py_NewRef(background_route);
    if ((w->lock = PyThread_allocate_lock()) == NULL) {
        Py_DECREF(w);
        return PyErr_NoMemory();
    }
    if (windows_fresh(&w->start, &w->tables, &w->errors, &w->routes, &w->samples) < 0) {
        Py_DECREF(w);
        return NULL;
    }
    return (PyObject *)w;
}

static int
windows_traverse(Windows *w, visitproc visit, void *arg)
{
    Py_VISIT(w->close);
    Py_VISIT(w->merge_errors);
    Py_VISIT(w->tables);
    Py_VISIT(w->errors);
    Py_VISIT(w->routes);
    Py_VISIT(w->samples);
    return 0;
}

static int
windows_clear(Windows *w)
{
    Py_CLEAR(w->close);
    Py_CLEAR(w->merge_errors);
    Py_CLEAR(w->overflow_route);
    Py_CLEAR(w->background_route);
    Py_CLEAR(w->start);
    Py_CLEAR(w->tables);
    Py_CLEAR(w->errors);
    Py_CLEAR(w->routes);
    Py_CLEAR(w->samples);
    return 0;
}

static void
windows_dealloc(Windows *w)
{
    PyObject_GC_UnTrack(w);
    windows_clear(w);
    if (w->lock != NULL)
        PyThread_free_lock(w->lock);
    Py_TYPE(w)->tp_free((PyObject *)w);
}

static PyMethodDef windows_methods[] = {
    {"add_request", (PyCFunction)(void (*)(void))windows_py_add_request, METH_FASTCALL,
     "add_request(route, table, duration_ns, failed): fold a finished request in under its route"},
    {"add_background", (PyCFunction)windows_add_background, METH_O,
     "add_background(table): fold calls made outside any request in"},
    {"drain", (PyCFunction)windows_drain, METH_NOARGS, "drain() -> Window: close the open window, start a new one"},
    {"reset", (PyCFunction)windows_reset, METH_NOARGS, "reset(): after fork, an empty window and a new lock"},
    {"open_counts", (PyCFunction)windows_open_counts, METH_NOARGS, "open_counts() -> dict: what the open window holds"},
    {NULL},
};

static PyMemberDef windows_members[] = {
    {"max_series", T_PYSSIZET, offsetof(Windows, max_series), 0, "function x route entries a window holds at most"},
    {"max_routes", T_PYSSIZET, offsetof(Windows, max_routes), 0, "routes a window holds at most"},
    {NULL},
};

static PyGetSetDef windows_getset[] = {
    {"open_series", (getter)windows_get_open_series, NULL, "function x route entries the open window holds", NULL},
    {NULL},
};

static PyTypeObject WindowsType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "funcsight.processors._crollup.WindowAggregator",
    .tp_basicsize = sizeof(Windows),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The open window and the fold into it (see windows.py's WindowAggregator, the twin).",
    .tp_new = windows_new,
    .tp_dealloc = (destructor)windows_dealloc,
    .tp_traverse = (traverseproc)windows_traverse,
    .tp_clear = (inquiry)windows_clear,
    .tp_methods = windows_methods,
    .tp_members = windows_members,
    .tp_getset = windows_getset,
};

/* ------------------------------------------------------------------------------------------------
 * RollupCore: the rollup span processor's on_start/on_end.
 */

/* Fold a finished request into the open window: a C call into this module's WindowAggregator,
 * else the Python twin's public add_request. */
static int
fold(RollupCore *self, PyObject *route, PyObject *table, int64_t duration, int failed)
{
    if (Py_IS_TYPE(self->windows, &WindowsType))
        return windows_add_request((Windows *)self->windows, route, table, duration, failed);
    PyObject *duration_obj = PyLong_FromLongLong(duration);
    if (duration_obj == NULL)
        return -1;
    PyObject *args[4] = {route, table, duration_obj, failed ? Py_True : Py_False};
    PyObject *res = PyObject_Vectorcall(self->add_request, args, 4, NULL);
    Py_DECREF(duration_obj);
    Py_XDECREF(res);
    return res == NULL ? -1 : 0;
}

static int
start_request(RollupCore *self, PyObject *span)
{
    PyObject *kind = PyObject_GetAttr(span, s_kind);
    if (kind == NULL)
        return -1;
    int entry = kind == self->server || kind == self->consumer;
    Py_DECREF(kind);
    if (!entry)
        return 0;
    PyObject *enabled = PyObject_GetAttr(self->processor, s_enabled);
    if (enabled == NULL)
        return -1;
    int on = PyObject_IsTrue(enabled);
    Py_DECREF(enabled);
    if (on <= 0)
        return on;
    PyObject *parent = PyObject_GetAttr(span, s_parent);
    if (parent == NULL)
        return -1;
    int local_child = 0;
    if (parent != Py_None) {
        local_child = is_span_context(parent) ? !PyObject_IsTrue(PyTuple_GET_ITEM(parent, 2)) : -1;
    }
    Py_DECREF(parent);
    if (local_child != 0 || PyDict_GET_SIZE(self->open) >= self->max_open)
        return local_child < 0 ? -1 : 0; /* a local child: its calls belong to the enclosing request */

    PyObject *context = PyObject_GetAttr(span, s_context);
    PyObject *budget = NULL, *table = NULL;
    int rc = -1;
    if (context == NULL || !is_span_context(context))
        goto done;
    PyObject *trace_id = PyTuple_GET_ITEM(context, 0), *span_id = PyTuple_GET_ITEM(context, 1);
    long flags = PyLong_AsLong(PyTuple_GET_ITEM(context, 3));
    if (flags == -1 && PyErr_Occurred())
        goto done;
    budget = (flags & 1) ? PyObject_GetAttr(self->processor, s_spans_per_trace) : PyLong_FromLong(0);
    if (budget == NULL)
        goto done;
    PyObject *table_args[3] = {budget, trace_id, context};
    table = PyObject_Vectorcall(self->table_type, table_args, 3, NULL);
    if (table == NULL || PyDict_SetItem(self->open, span_id, table) < 0 ||
        PyDict_SetItem(self->by_trace, trace_id, table) < 0)
        goto done;
    PyObject *token = PyContextVar_Set(self->current_request, table);
    if (token == NULL)
        goto done;
    Py_DECREF(token);
    rc = 0;
done:
    Py_XDECREF(context);
    Py_XDECREF(budget);
    Py_XDECREF(table);
    return rc;
}

/* A span that is not an open request's root: roll it up into its request unless it frames one. */
static int
end_child(RollupCore *self, PyObject *span, PyObject *trace_id)
{
    if (PyDict_GET_SIZE(self->by_trace) == 0)
        return 0; /* no request is open: nothing to roll up into */
    PyObject *scope = PyObject_GetAttr(span, s_scope);
    if (scope == NULL)
        return -1;
    int framing = 0;
    if (scope != Py_None) {
        PyObject *name = PyObject_GetAttr(scope, s_name);
        framing = name == NULL ? -1 : PySet_Contains(self->framing_scopes, name);
        Py_XDECREF(name);
    }
    Py_DECREF(scope);
    if (framing != 0)
        return framing < 0 ? -1 : 0;
    PyObject *args[2] = {span, trace_id};
    PyObject *res = PyObject_Vectorcall(self->roll_up_child, args, 2, NULL);
    Py_XDECREF(res);
    return res == NULL ? -1 : 0;
}

/* The span's attribute dict: the SDK keeps a BoundedAttributes over a dict in `_dict` (new ref). */
static PyObject *
attributes_of(PyObject *span)
{
    PyObject *attributes = PyObject_GetAttr(span, s_attributes);
    if (attributes == NULL || attributes == Py_None) {
        Py_XDECREF(attributes);
        return PyErr_Occurred() ? NULL : PyDict_New();
    }
    if (PyDict_Check(attributes))
        return attributes;
    PyObject *inner = PyObject_GetAttr(attributes, s_dict);
    if (inner != NULL && PyDict_Check(inner)) {
        Py_DECREF(attributes);
        return inner;
    }
    Py_XDECREF(inner);
    PyErr_Clear();
    return attributes; /* another mapping: PyObject_GetItem below */
}

/* attributes[key] or NULL (borrowed for a dict; `*owned` set when a new reference was made). */
static PyObject *
attribute(PyObject *attributes, PyObject *key, PyObject **owned)
{
    *owned = NULL;
    if (PyDict_Check(attributes)) {
        PyObject *value = PyDict_GetItemWithError(attributes, key);
        if (value == NULL && PyErr_Occurred())
            PyErr_Clear();
        return value;
    }
    PyObject *value = PyObject_GetItem(attributes, key);
    if (value == NULL)
        PyErr_Clear();
    *owned = value;
    return value;
}

/* http.response.status_code (else the old http.status_code) is an int >= 500. */
static int
server_error(PyObject *attributes)
{
    PyObject *owned;
    PyObject *status = attribute(attributes, s_status_new, &owned);
    if (status == NULL)
        status = attribute(attributes, s_status_old, &owned);
    int failed = 0;
    if (status != NULL && PyLong_Check(status)) {
        long code = PyLong_AsLong(status);
        failed = code >= 500;
        if (code == -1 && PyErr_Occurred()) {
            PyErr_Clear();
            failed = 1; /* too large for a long: it is >= 500 */
        }
    }
    Py_XDECREF(owned);
    return failed;
}

static int64_t
time_ns_of(PyObject *span, PyObject *name)
{
    PyObject *value = PyObject_GetAttr(span, name);
    if (value == NULL) {
        PyErr_Clear();
        return 0;
    }
    int64_t ns = value == Py_None ? 0 : PyLong_AsLongLong(value);
    Py_DECREF(value);
    if (ns == -1 && PyErr_Occurred()) {
        PyErr_Clear();
        return 0;
    }
    return ns;
}

static int
end_request(RollupCore *self, PyObject *span, PyObject *table)
{
    PyObject *trace_id = NULL, *attributes = NULL, *route = NULL, *status = NULL, *code = NULL;
    PyObject *spans = NULL, *res = NULL;
    int rc = -1;
    /* Closed, the table takes no more calls; it stays current in the request's context until the
     * next request replaces it (rollup.py, on_end). */
    if (PyObject_SetAttr(table, s_open, Py_False) < 0 || (trace_id = PyObject_GetAttr(table, s_trace_id)) == NULL)
        goto done;
    PyObject *current = PyDict_GetItemWithError(self->by_trace, trace_id);
    if (current == table && PyDict_DelItem(self->by_trace, trace_id) < 0)
        goto done;
    if (current == NULL && PyErr_Occurred())
        goto done;

    if ((attributes = attributes_of(span)) == NULL)
        goto done;
    PyObject *owned;
    PyObject *named = attribute(attributes, s_route, &owned);
    if (named != NULL && PyUnicode_CheckExact(named) && PyUnicode_GET_LENGTH(named) > 0) {
        route = Py_NewRef(named);
        Py_XDECREF(owned);
    }
    else {
        Py_XDECREF(owned);
        PyObject *args[2] = {span, attributes};
        if ((route = PyObject_Vectorcall(self->route_of, args, 2, NULL)) == NULL)
            goto done;
    }
    if ((status = PyObject_GetAttr(span, s_status)) == NULL || (code = PyObject_GetAttr(status, s_status_code)) == NULL)
        goto done;
    int failed = code == self->status_error || server_error(attributes);
    int64_t elapsed = time_ns_of(span, s_end_time) - time_ns_of(span, s_start_time);
    if (fold(self, route, table, elapsed > 0 ? elapsed : 0, failed) < 0)
        goto done;
    if ((spans = PyObject_GetAttr(table, s_spans)) == NULL)
        goto done;
    int kept = PyObject_IsTrue(spans);
    if (kept < 0)
        goto done;
    if (kept && (res = PyObject_CallOneArg(self->queue_spans, table)) == NULL)
        goto done;
    rc = 0;
done:
    Py_XDECREF(trace_id);
    Py_XDECREF(attributes);
    Py_XDECREF(route);
    Py_XDECREF(status);
    Py_XDECREF(code);
    Py_XDECREF(spans);
    Py_XDECREF(res);
    return rc;
}

static int
end_span(RollupCore *self, PyObject *span)
{
    PyObject *context = PyObject_GetAttr(span, s_context);
    if (context == NULL)
        return -1;
    int rc = -1;
    if (is_span_context(context)) {
        PyObject *span_id = PyTuple_GET_ITEM(context, 1);
        PyObject *table = PyDict_GetItemWithError(self->open, span_id); /* borrowed */
        if (table != NULL) {
            Py_INCREF(table);
            rc = PyDict_DelItem(self->open, span_id) < 0 ? -1 : end_request(self, span, table);
            Py_DECREF(table);
        }
        else if (!PyErr_Occurred()) {
            rc = end_child(self, span, PyTuple_GET_ITEM(context, 0));
        }
    }
    Py_DECREF(context);
    return rc;
}

static void
swallow(RollupCore *self)
{
    /* A span processor must never raise into the application. */
    PyErr_Clear();
    self->failures++;
}

static PyObject *
rollup_on_start(RollupCore *self, PyObject *const *args, Py_ssize_t nargs, PyObject *kwnames)
{
    if (nargs >= 1 && start_request(self, args[0]) < 0)
        swallow(self);
    Py_RETURN_NONE;
}

static PyObject *
rollup_on_end(RollupCore *self, PyObject *span)
{
    if (end_span(self, span) < 0)
        swallow(self);
    Py_RETURN_NONE;
}

static PyObject *
rollup_on_ending(RollupCore *self, PyObject *span)
{
    Py_RETURN_NONE; /* SpanProcessor._on_ending: nothing to do, without a Python frame per span */
}

static PyObject *
rollup_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"processor", "open", "by_trace", "current_request", "windows", "table_type",
                             "roll_up_child", "queue_spans", "route_of", "framing_scopes", "server", "consumer",
                             "status_error", "max_open", NULL};
    PyObject *processor, *open, *by_trace, *current_request, *windows, *table_type, *roll_up_child, *queue_spans;
    PyObject *route_of, *framing_scopes, *server, *consumer, *status_error;
    Py_ssize_t max_open;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO!O!O!OOOOOO!OOOn:RollupCore", kwlist, &processor, &PyDict_Type,
                                     &open, &PyDict_Type, &by_trace, &PyContextVar_Type, &current_request, &windows,
                                     &table_type, &roll_up_child, &queue_spans, &route_of, &PyFrozenSet_Type,
                                     &framing_scopes, &server, &consumer, &status_error, &max_open))
        return NULL;
    /* The Python twin is folded into through its public method; this module's with a C call. */
    PyObject *add_request = Py_IS_TYPE(windows, &WindowsType) ? Py_NewRef(Py_None)
                                                               : PyObject_GetAttrString(windows, "add_request");
    if (add_request == NULL)
        return NULL;
    RollupCore *self = (RollupCore *)type->tp_alloc(type, 0);
    if (self == NULL) {
        Py_DECREF(add_request);
        return NULL;
    }
    self->processor = Py_NewRef(processor);
    self->open = Py_NewRef(open);
    self->by_trace = Py_NewRef(by_trace);
    self->current_request = Py_NewRef(current_request);
    self->windows = Py_NewRef(windows);
    self->add_request = add_request;
    self->table_type = Py_NewRef(table_type);
    self->roll_up_child = Py_NewRef(roll_up_child);
    self->queue_spans = Py_NewRef(queue_spans);
    self->route_of = Py_NewRef(route_of);
    self->framing_scopes = Py_NewRef(framing_scopes);
    self->server = Py_NewRef(server);
    self->consumer = Py_NewRef(consumer);
    self->status_error = Py_NewRef(status_error);
    self->max_open = max_open;
    return (PyObject *)self;
}

static int
rollup_traverse(RollupCore *self, visitproc visit, void *arg)
{
    Py_VISIT(self->processor);
    Py_VISIT(self->open);
    Py_VISIT(self->by_trace);
    Py_VISIT(self->current_request);
    Py_VISIT(self->windows);
    Py_VISIT(self->add_request);
    Py_VISIT(self->table_type);
    Py_VISIT(self->roll_up_child);
    Py_VISIT(self->queue_spans);
    Py_VISIT(self->route_of);
    Py_VISIT(self->framing_scopes);
    Py_VISIT(self->server);
    Py_VISIT(self->consumer);
    Py_VISIT(self->status_error);
    return 0;
}

static int
rollup_clear(RollupCore *self)
{
    Py_CLEAR(self->processor);
    Py_CLEAR(self->open);
    Py_CLEAR(self->by_trace);
    Py_CLEAR(self->current_request);
    Py_CLEAR(self->windows);
    Py_CLEAR(self->add_request);
    Py_CLEAR(self->table_type);
    Py_CLEAR(self->roll_up_child);
    Py_CLEAR(self->queue_spans);
    Py_CLEAR(self->route_of);
    Py_CLEAR(self->framing_scopes);
    Py_CLEAR(self->server);
    Py_CLEAR(self->consumer);
    Py_CLEAR(self->status_error);
    return 0;
}

static void
rollup_dealloc(RollupCore *self)
{
    PyObject_GC_UnTrack(self);
    rollup_clear(self);
    Py_TYPE(self)->tp_free((PyObject *)self);
}

static PyMethodDef rollup_methods[] = {
    {"on_start", (PyCFunction)(void (*)(void))rollup_on_start, METH_FASTCALL | METH_KEYWORDS,
     "on_start(span, parent_context=None)"},
    {"on_end", (PyCFunction)rollup_on_end, METH_O, "on_end(span)"},
    {"on_ending", (PyCFunction)rollup_on_ending, METH_O, "_on_ending(span): nothing"},
    {NULL},
};

static PyMemberDef rollup_members[] = {
    {"failures", T_PYSSIZET, offsetof(RollupCore, failures), READONLY, "spans left alone after an internal failure"},
    {NULL},
};

static PyTypeObject RollupCoreType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "funcsight.processors._crollup.RollupCore",
    .tp_basicsize = sizeof(RollupCore),
    .tp_flags = Py_TPFLAGS_DEFAULT | Py_TPFLAGS_HAVE_GC,
    .tp_doc = "The rollup span processor's on_start/on_end (see rollup.py for the semantics).",
    .tp_new = rollup_new,
    .tp_dealloc = (destructor)rollup_dealloc,
    .tp_traverse = (traverseproc)rollup_traverse,
    .tp_clear = (inquiry)rollup_clear,
    .tp_methods = rollup_methods,
    .tp_members = rollup_members,
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "funcsight.processors._crollup",
    .m_doc = "The rollup span processor's per-span path and its window aggregator, in C.",
    .m_size = -1,
};

PyMODINIT_FUNC
PyInit__crollup(void)
{
    struct {
        PyObject **slot;
        const char *text;
    } names[] = {
        {&s_kind, "_kind"}, {&s_parent, "_parent"}, {&s_context, "_context"}, {&s_attributes, "_attributes"},
        {&s_dict, "_dict"}, {&s_status, "_status"}, {&s_status_code, "_status_code"},
        {&s_start_time, "_start_time"}, {&s_end_time, "_end_time"}, {&s_scope, "_instrumentation_scope"},
        {&s_name, "_name"}, {&s_enabled, "enabled"}, {&s_spans_per_trace, "spans_per_trace"},
        {&s_open, "open"}, {&s_trace_id, "trace_id"}, {&s_spans, "spans"},
        {&s_series, "series"}, {&s_absorb, "absorb"}, {&s_has_errors, "has_errors"}, {&s_time, "time"},
        {&s_route, "http.route"}, {&s_status_new, "http.response.status_code"}, {&s_status_old, "http.status_code"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (*names[i].slot == NULL && (*names[i].slot = PyUnicode_InternFromString(names[i].text)) == NULL)
            return NULL;
    }
    if (time_time == NULL) {
        PyObject *time_module = PyImport_ImportModule("time");
        time_time = time_module ? PyObject_GetAttr(time_module, s_time) : NULL;
        Py_XDECREF(time_module);
        if (time_time == NULL)
            return NULL;
    }
    if (PyType_Ready(&RollupCoreType) < 0 || PyType_Ready(&WindowsType) < 0)
        return NULL;
    PyObject *m = PyModule_Create(&module_def);
    if (m == NULL)
        return NULL;
    if (PyModule_AddObjectRef(m, "RollupCore", (PyObject *)&RollupCoreType) < 0 ||
        PyModule_AddObjectRef(m, "WindowAggregator", (PyObject *)&WindowsType) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
