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

#include "_crollup.h"
#include "funcsight/histogram.h" /* fs_bucket_of, shared with the sensor */

typedef struct {
    PyObject_HEAD
    PyObject *processor;       /* the RollupSpanProcessor: enabled, spans_per_trace, sink */
    PyObject *open;            /* dict: root span id -> table (the processor's own) */
    PyObject *by_trace;        /* dict: trace id -> table of its open local root */
    PyObject *current_request; /* the ContextVar the sensor reads */
    PyObject *request_changed; /* calls.request_changed(): tells the C sensor it was set */
    PyObject *windows;         /* a WindowAggregator: this module's (a C call) or windows.py's */
    PyObject *add_request;     /* windows.add_request(route, table, duration, failed), the Python twin's */
    PyObject *table_type;      /* the sensor's call table type (its sink's, chosen once) */
    PyObject *roll_up_child;   /* processor._roll_up_child(span, trace_id) */
    PyObject *queue_spans;     /* processor._queue_spans(table) */
    PyObject *route_of;        /* rollup.route_of(span, attributes) */
    PyObject *framing_scopes;  /* frozenset of instrumentation scope names */
    PyObject *server, *consumer; /* SpanKind.SERVER, SpanKind.CONSUMER */
    PyObject *status_error;    /* StatusCode.ERROR */
    /* Enclosures (rollup.py's on_start/on_end, instrumentation/enclosure.py): the sensor's
     * take_enclosed() and hold(table), processor._adopt_enclosed, and processor._after. */
    PyObject *take_enclosed, *hold, *adopt_enclosed, *after;
    Py_ssize_t max_open;
    Py_ssize_t failures;
} RollupCore;

static PyObject *s_kind, *s_parent, *s_context, *s_attributes, *s_dict, *s_status, *s_status_code,
    *s_start_time, *s_end_time, *s_scope, *s_name, *s_enabled, *s_spans_per_trace,
    *s_open, *s_trace_id, *s_spans, *s_route, *s_status_new, *s_status_old, *s_span_budget, *s_root;

/* SpanContext is a tuple (trace_id, span_id, is_remote, trace_flags, ...): rollup.py probes it. */
static inline int
is_span_context(PyObject *context)
{
    return PyTuple_Check(context) && PyTuple_GET_SIZE(context) >= 4;
}

/* list[index] += amount */
int
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
int
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
 * RollupCore: the rollup span processor's on_start/on_end.
 */

/* Fold a finished request into the open window: a C call into this module's WindowAggregator,
 * else the Python twin's public add_request. */
static int
fold(RollupCore *self, PyObject *route, PyObject *table, int64_t duration, int failed)
{
    if (Py_IS_TYPE(self->windows, &WindowsType))
        return windows_add_request(self->windows, route, table, duration, failed);
    PyObject *duration_obj = PyLong_FromLongLong(duration);
    if (duration_obj == NULL)
        return -1;
    PyObject *args[4] = {route, table, duration_obj, failed ? Py_True : Py_False};
    PyObject *res = PyObject_Vectorcall(self->add_request, args, 4, NULL);
    Py_DECREF(duration_obj);
    Py_XDECREF(res);
    return res == NULL ? -1 : 0;
}

/* rollup.py's _fold_held: a table the sensor held, folded under the route of the request that
 * handed it back (processor._after), else as background. */
static int
fold_held(RollupCore *self, PyObject *table)
{
    PyObject *route = Py_XNewRef(PyDict_GetItemWithError(self->after, table));
    if (route == NULL && PyErr_Occurred())
        return -1;
    int rc = (route != NULL && PyDict_DelItem(self->after, table) < 0) || PyObject_SetAttr(table, s_open, Py_False) < 0
                 ? -1 : windows_add_calls_c(self->windows, route, table);
    Py_XDECREF(route);
    return rc;
}

/* rollup.py's _adopt_enclosed, in C when the windows are this module's: the table to use (new
 * reference), Py_None for a new one, NULL on error. */
static PyObject *
adopt_enclosed(RollupCore *self, PyObject *enclosed, PyObject *budget, PyObject *trace_id, PyObject *context)
{
    if (!Py_IS_TYPE(self->windows, &WindowsType) || !PyTuple_Check(enclosed) || PyTuple_GET_SIZE(enclosed) != 2) {
        PyObject *args[4] = {enclosed, budget, trace_id, context};
        return PyObject_Vectorcall(self->adopt_enclosed, args, 4, NULL);
    }
    PyObject *held = PyTuple_GET_ITEM(enclosed, 0), *released = PyTuple_GET_ITEM(enclosed, 1);
    if (released != Py_None) {
        for (Py_ssize_t i = 0; i < PyList_GET_SIZE(released); i++)
            if (fold_held(self, PyList_GET_ITEM(released, i)) < 0)
                return NULL;
    }
    if (held == Py_None)
        Py_RETURN_NONE;
    int ended = PyDict_Contains(self->after, held); /* a request that ended in the same enclosing calls */
    if (ended != 0)
        return ended < 0 || fold_held(self, held) < 0 ? NULL : Py_NewRef(Py_None);
    if (PyObject_SetAttr(held, s_span_budget, budget) < 0 || PyObject_SetAttr(held, s_trace_id, trace_id) < 0 ||
        PyObject_SetAttr(held, s_root, context) < 0 || PyObject_SetAttr(held, s_open, Py_True) < 0)
        return NULL;
    return Py_NewRef(held);
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
    PyObject *enclosed = PyObject_CallNoArgs(self->take_enclosed);
    if (enclosed == NULL)
        goto done;
    if (enclosed != Py_None) { /* calls of enclosing code ran on this thread */
        table = adopt_enclosed(self, enclosed, budget, trace_id, context);
        Py_DECREF(enclosed);
        if (table == NULL)
            goto done;
        if (table == Py_None)
            Py_CLEAR(table);
    }
    else
        Py_DECREF(enclosed);
    if (table == NULL)
        table = PyObject_Vectorcall(self->table_type, table_args, 3, NULL);
    if (table == NULL || PyDict_SetItem(self->open, span_id, table) < 0 ||
        PyDict_SetItem(self->by_trace, trace_id, table) < 0)
        goto done;
    PyObject *token = PyContextVar_Set(self->current_request, table);
    if (token == NULL)
        goto done;
    Py_DECREF(token);
    PyObject *told = PyObject_CallNoArgs(self->request_changed); /* as calls.enter_request() */
    if (told == NULL)
        goto done;
    Py_DECREF(told);
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

/* rollup.py's request_failed: with an HTTP status (http.response.status_code, else the old
 * http.status_code) the request failed when it is >= 500, as the HTTP semantic conventions define
 * server errors (a 404 whose span an instrumentation marked ERROR did not fail); without one, when
 * the span's status is ERROR (an unhandled exception, a failed task). */
static int
request_failed(PyObject *attributes, int status_is_error)
{
    PyObject *owned;
    PyObject *status = attribute(attributes, s_status_new, &owned);
    if (status == NULL)
        status = attribute(attributes, s_status_old, &owned);
    int failed = status_is_error;
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
    int failed = request_failed(attributes, code == self->status_error);
    int64_t elapsed = time_ns_of(span, s_end_time) - time_ns_of(span, s_start_time);
    /* Enclosing calls still running on this thread: the sensor holds the table, folded later
     * (rollup.py, on_end). The route goes in first: drain may take the table once it is held. */
    if (PyDict_SetItem(self->after, table, route) < 0)
        goto done;
    PyObject *held = PyObject_CallOneArg(self->hold, table);
    int is_held = held == NULL ? -1 : PyObject_IsTrue(held);
    Py_XDECREF(held);
    if (is_held <= 0 && PyDict_DelItem(self->after, table) < 0)
        goto done;
    if (is_held < 0)
        goto done;
    /* max(0, end - start), as rollup.py: the clamp is here, fs_bucket_of takes any int64_t. */
    if (fold(self, route, is_held ? Py_None : table, elapsed > 0 ? elapsed : 0, failed) < 0)
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
                             "status_error", "max_open", "request_changed", NULL};
    PyObject *processor, *open, *by_trace, *current_request, *windows, *table_type, *roll_up_child, *queue_spans;
    PyObject *route_of, *framing_scopes, *server, *consumer, *status_error, *request_changed;
    Py_ssize_t max_open;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "OO!O!O!OOOOOO!OOOnO:RollupCore", kwlist, &processor, &PyDict_Type,
                                     &open, &PyDict_Type, &by_trace, &PyContextVar_Type, &current_request, &windows,
                                     &table_type, &roll_up_child, &queue_spans, &route_of, &PyFrozenSet_Type,
                                     &framing_scopes, &server, &consumer, &status_error, &max_open,
                                     &request_changed))
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
    self->request_changed = Py_NewRef(request_changed);
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
    self->take_enclosed = PyObject_GetAttrString(processor, "_take_enclosed");
    self->hold = self->take_enclosed ? PyObject_GetAttrString(processor, "_hold") : NULL;
    self->adopt_enclosed = self->hold ? PyObject_GetAttrString(processor, "_adopt_enclosed") : NULL;
    self->after = self->adopt_enclosed ? PyObject_GetAttrString(processor, "_after") : NULL;
    if (self->after == NULL || !PyDict_Check(self->after)) {
        if (!PyErr_Occurred())
            PyErr_SetString(PyExc_TypeError, "processor._after must be a dict");
        Py_DECREF(self);
        return NULL;
    }
    return (PyObject *)self;
}

static int
rollup_traverse(RollupCore *self, visitproc visit, void *arg)
{
    Py_VISIT(self->processor);
    Py_VISIT(self->open);
    Py_VISIT(self->by_trace);
    Py_VISIT(self->current_request);
    Py_VISIT(self->request_changed);
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
    Py_VISIT(self->take_enclosed);
    Py_VISIT(self->hold);
    Py_VISIT(self->adopt_enclosed);
    Py_VISIT(self->after);
    return 0;
}

static int
rollup_clear(RollupCore *self)
{
    Py_CLEAR(self->processor);
    Py_CLEAR(self->open);
    Py_CLEAR(self->by_trace);
    Py_CLEAR(self->current_request);
    Py_CLEAR(self->request_changed);
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
    Py_CLEAR(self->take_enclosed);
    Py_CLEAR(self->hold);
    Py_CLEAR(self->adopt_enclosed);
    Py_CLEAR(self->after);
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

/* bucket_of(duration_ns): funcsight/histogram.h as this module compiled it (parity tests). */
static PyObject *
mod_bucket_of(PyObject *mod, PyObject *arg)
{
    long long d = PyLong_AsLongLong(arg);
    if (d == -1 && PyErr_Occurred())
        return NULL;
    return PyLong_FromLong(fs_bucket_of(d));
}

static PyMethodDef module_methods[] = {
    {"bucket_of", mod_bucket_of, METH_O, "bucket_of(duration_ns): calls.bucket_of, in C"},
    {NULL},
};

static struct PyModuleDef module_def = {
    PyModuleDef_HEAD_INIT,
    .m_name = "funcsight.processors._crollup",
    .m_doc = "The rollup span processor's per-span path and its window aggregator, in C.",
    .m_size = -1,
    .m_methods = module_methods,
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
        {&s_open, "open"}, {&s_trace_id, "trace_id"}, {&s_spans, "spans"}, {&s_span_budget, "span_budget"},
        {&s_root, "root"},
        {&s_route, "http.route"}, {&s_status_new, "http.response.status_code"}, {&s_status_old, "http.status_code"},
    };
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++) {
        if (*names[i].slot == NULL && (*names[i].slot = PyUnicode_InternFromString(names[i].text)) == NULL)
            return NULL;
    }
    if (PyType_Ready(&RollupCoreType) < 0 || windows_ready() < 0)
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
