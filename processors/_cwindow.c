/* funcsight.processors._crollup.WindowAggregator: the open window and the fold into it, in C.
 *
 * windows.py's WindowAggregator is the twin (same methods, same tests in tests/test_rollup.py) and
 * its docstrings give the semantics. The open window's parts live in this struct, under this
 * struct's lock; nothing else reads them. RollupCore (_crollup.c) folds a finished request in with
 * windows_add_request, a C call. drain() hands the parts to windows.close_window, which makes the
 * drained Window outside the lock; a table with errors is folded into the window's error counts by
 * windows.merge_errors (Python: it builds the error samples), under the lock.
 */
#include "_crollup.h"
#include "funcsight/histogram.h"

#include <pythread.h>
#include <structmember.h>

static PyObject *s_absorb, *s_absorb_paths, *s_has_errors, *s_series, *s_path_count;
static PyObject *time_time; /* time.time */

typedef struct {
    PyObject_HEAD
    PyThread_type_lock lock;
    Py_ssize_t max_series, max_routes;
    PyObject *close;            /* windows.close_window(start, end, tables, errors, routes, samples, ...) */
    PyObject *merge_errors;     /* windows.merge_errors(errors, samples, route, table) */
    PyObject *overflow_route;   /* names.OVERFLOW_ROUTE */
    PyObject *background_route; /* names.BACKGROUND_ROUTE */
    PyObject *paths;            /* the sensor's PathRegistry, or None: no call tree kept */
    Py_ssize_t max_paths;       /* path nodes per route */
    /* the open window */
    PyObject *start;            /* float, epoch seconds */
    PyObject *tables;           /* dict: table type -> {route -> call table of that route} */
    PyObject *errors, *routes, *samples;
    Py_ssize_t series, overflow_series, overflow_routes, overflow_paths;
} Windows;


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
    if (w->paths != Py_None) {
        /* The request's path nodes, within the route's FUNCSIGHT_MAX_PATHS (paths.h folds the rest). */
        PyObject *count = PyObject_GetAttr(into, s_path_count);
        Py_ssize_t held = count ? PyLong_AsSsize_t(count) : -1;
        Py_XDECREF(count);
        if (held == -1 && PyErr_Occurred())
            goto done;
        PyObject *path_room = PyLong_FromSsize_t(w->max_paths > held ? w->max_paths - held : 0);
        if (path_room == NULL)
            goto done;
        PyObject *path_args[4] = {into, table, w->paths, path_room};
        PyObject *result = PyObject_VectorcallMethod(s_absorb_paths, path_args, 4 | PY_VECTORCALL_ARGUMENTS_OFFSET, NULL);
        Py_DECREF(path_room);
        if (result == NULL)
            goto done;
        Py_ssize_t folded = PyTuple_Check(result) && PyTuple_GET_SIZE(result) == 2
                                ? PyLong_AsSsize_t(PyTuple_GET_ITEM(result, 1)) : -1;
        Py_DECREF(result);
        if (folded < 0) {
            if (!PyErr_Occurred())
                PyErr_SetString(PyExc_TypeError, "absorb_paths() must return (created, folded)");
            goto done;
        }
        w->overflow_paths += folded;
    }
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
        (bucket = PyLong_FromLong(fs_bucket_of(duration))) == NULL || dict_increment(PyList_GET_ITEM(stats, 3), bucket) < 0)
        goto done;
    rc = table == Py_None ? 0 : windows_merge(w, route, table); /* None: its calls come through add_calls */
done:
    Py_XDECREF(bucket);
    Py_DECREF(stats);
    Py_DECREF(route);
    return rc;
}

/* The fold RollupCore calls directly (a C call, no attribute looked up by name). */
int
windows_add_request(PyObject *windows, PyObject *route, PyObject *table, int64_t duration, int failed)
{
    Windows *w = (Windows *)windows;
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
    if (failed < 0 || windows_add_request((PyObject *)w, args[0], args[1], duration, failed) < 0)
        return NULL;
    Py_RETURN_NONE;
}

/* Calls of `route` (NULL: the background) without a request: a C call from RollupCore. */
int
windows_add_calls_c(PyObject *windows, PyObject *route, PyObject *table)
{
    Windows *w = (Windows *)windows;
    if (route == NULL)
        route = w->background_route;
    PyObject *series = PyObject_GetAttr(table, s_series);
    int any = series ? PyObject_IsTrue(series) : -1;
    Py_XDECREF(series);
    if (any == 0) {
        PyObject *has_errors = PyObject_GetAttr(table, s_has_errors);
        any = has_errors ? PyObject_IsTrue(has_errors) : -1;
        Py_XDECREF(has_errors);
    }
    if (any <= 0)
        return any;
    windows_lock(w);
    int known = PyDict_Contains(w->routes, route);
    int equal = known == 0 ? PyObject_RichCompareBool(route, w->background_route, Py_EQ) : 0;
    if (known == 0 && equal == 0 && PyDict_GET_SIZE(w->routes) >= w->max_routes)
        route = w->overflow_route;
    int rc = known < 0 || equal < 0 ? -1 : windows_merge(w, route, table);
    PyThread_release_lock(w->lock);
    return rc;
}

/* add_calls(route, table): windows.py's twin. */
static PyObject *
windows_add_calls(Windows *w, PyObject *const *args, Py_ssize_t nargs)
{
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "add_calls(route, table)");
        return NULL;
    }
    if (windows_add_calls_c((PyObject *)w, args[0], args[1]) < 0)
        return NULL;
    Py_RETURN_NONE;
}

static PyObject *
windows_add_background(Windows *w, PyObject *table)
{
    if (windows_add_calls_c((PyObject *)w, NULL, table) < 0)
        return NULL;
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
    Py_ssize_t overflow_paths = w->overflow_paths;
    w->start = Py_NewRef(start); /* the new window starts when the old one ends */
    w->tables = tables;
    w->errors = errors;
    w->routes = routes;
    w->samples = samples;
    w->series = w->overflow_series = w->overflow_routes = w->overflow_paths = 0;
    PyThread_release_lock(w->lock);
    PyObject *counts[3] = {PyLong_FromSsize_t(overflow_series), PyLong_FromSsize_t(overflow_routes),
                           PyLong_FromSsize_t(overflow_paths)};
    PyObject *window = NULL;
    if (counts[0] && counts[1] && counts[2]) {
        PyObject *args[10] = {old[0], start, old[1], old[2], old[3], old[4], counts[0], counts[1], counts[2], w->paths};
        window = PyObject_Vectorcall(w->close, args, 10, NULL);
    }
    for (int i = 0; i < 3; i++)
        Py_XDECREF(counts[i]);
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
    w->series = w->overflow_series = w->overflow_routes = w->overflow_paths = 0;
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
    PyObject *counts = Py_BuildValue("{s:n,s:n,s:L,s:n,s:n,s:n}", "routes", PyDict_GET_SIZE(w->routes), "series",
                                     w->series, "requests", requests, "overflow_routes", w->overflow_routes,
                                     "overflow_series", w->overflow_series, "overflow_paths", w->overflow_paths);
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
                             "background_route", "paths", "max_paths", NULL};
    Py_ssize_t max_series, max_routes, max_paths = 1000;
    PyObject *close, *merge_errors, *overflow_route, *background_route, *paths = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "nnOOUU|On:WindowAggregator", kwlist, &max_series, &max_routes, &close,
                                     &merge_errors, &overflow_route, &background_route, &paths, &max_paths))
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
    w->paths = Py_NewRef(paths);
    w->max_paths = max_paths;
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
    Py_VISIT(w->paths);
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
    Py_CLEAR(w->paths);
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
    {"add_calls", (PyCFunction)(void (*)(void))windows_add_calls, METH_FASTCALL,
     "add_calls(route, table): calls of route without a request (after it ended), or the background's"},
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
    {"max_paths", T_PYSSIZET, offsetof(Windows, max_paths), 0, "path nodes a route holds at most per window"},
    {NULL},
};

static PyGetSetDef windows_getset[] = {
    {"open_series", (getter)windows_get_open_series, NULL, "function x route entries the open window holds", NULL},
    {NULL},
};

PyTypeObject WindowsType = {
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

int
windows_ready(void)
{
    if (s_absorb == NULL && (s_absorb = PyUnicode_InternFromString("absorb")) == NULL)
        return -1;
    if (s_has_errors == NULL && (s_has_errors = PyUnicode_InternFromString("has_errors")) == NULL)
        return -1;
    if (s_series == NULL && (s_series = PyUnicode_InternFromString("series")) == NULL)
        return -1;
    if (s_absorb_paths == NULL && (s_absorb_paths = PyUnicode_InternFromString("absorb_paths")) == NULL)
        return -1;
    if (s_path_count == NULL && (s_path_count = PyUnicode_InternFromString("path_count")) == NULL)
        return -1;
    if (time_time == NULL) {
        PyObject *time_module = PyImport_ImportModule("time");
        time_time = time_module ? PyObject_GetAttrString(time_module, "time") : NULL;
        Py_XDECREF(time_module);
        if (time_time == NULL)
            return -1;
    }
    return PyType_Ready(&WindowsType);
}
