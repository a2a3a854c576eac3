/* csensor/table_type.h: CallTable as a Python type (part of _csensor.c's single compilation unit).
 *
 * Constructor, GC support, the getters that build calls.CallTable's dict format (stats, errors,
 * samples), add_call() and absorb() (the rollup and window code's entry points) and the type
 * object. Cold path: called per request or per window, never per call.
 *
 * Relies on tables.h (CallTable, Slot, the pool, table_count) and util.h.
 */

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
    for (int32_t i = 0; i < t->n_node_errs; i++)
        Py_VISIT(t->node_errs[i].type);
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
    for (int32_t i = 0; i < t->n_node_errs; i++)
        Py_CLEAR(t->node_errs[i].type);
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
    PyMem_Free(t->node_errs);
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

/* paths: {node: [calls, errors, total_ns, self_ns]}, a fresh dict (copied first: see stats). */
static PyObject *
table_get_paths(CallTable *t, void *closure)
{
    PyObject *out = PyDict_New();
    if (out == NULL)
        return NULL;
    for (int32_t i = 0; i < t->n_nodes; i++) {
        NodeSlot snap = t->nodes[i], *n = &snap;
        PyObject *row = Py_BuildValue("[KKLL]", (unsigned long long)n->calls, (unsigned long long)n->errors,
                                      (long long)n->total_ns, (long long)n->self_ns);
        if (dict_set_new(out, PyLong_FromLong(n->node), row) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

/* path_errors: {(node, exception type): count}, a fresh dict. */
static PyObject *
table_get_path_errors(CallTable *t, void *closure)
{
    PyObject *out = PyDict_New();
    if (out == NULL)
        return NULL;
    for (int32_t i = 0; i < t->n_node_errs; i++) {
        NodeError snap = t->node_errs[i], *e = &snap;
        if (e->type == NULL)
            continue;
        PyObject *key = Py_BuildValue("(iO)", e->node, e->type), *count = PyLong_FromUnsignedLongLong(e->count);
        PyObject *old = key ? PyDict_GetItemWithError(out, key) : NULL; /* folded nodes may repeat */
        if (old != NULL && count != NULL)
            Py_SETREF(count, PyNumber_Add(old, count));
        if (dict_set_new(out, key, count) < 0) {
            Py_DECREF(out);
            return NULL;
        }
    }
    return out;
}

static PyObject *
table_get_path_count(CallTable *t, void *closure)
{
    return PyLong_FromLong(t->n_nodes);
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

/* add_call(fid, duration_ns, self_ns, exc_type=None, node=-1): one call from outside the sensor (a
 * span of another instrumentation) at path node `node` (a node of fid; -1: none, the call is in
 * the function's figures only). Like calls.CallTable.add_call: counted, never kept as a span. */
static PyObject *
table_add_call(CallTable *t, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"fid", "duration_ns", "self_ns", "exc_type", "node", NULL};
    long long fid, duration, self_ns, node = -1;
    PyObject *exc_type = Py_None;
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "LLL|OL:add_call", kwlist, &fid, &duration, &self_ns, &exc_type, &node))
        return NULL;
    if (check_fid(fid) < 0 || (node >= 0 && check_fid(node) < 0))
        return NULL;
    PyObject *type = exc_type == Py_None ? NULL : exc_type;
    if (node >= 0) {
        if (table_count(t, (int32_t)node, (int32_t)fid, duration, self_ns, type, NULL) < 0)
            return PyErr_NoMemory();
        Py_RETURN_NONE;
    }
    Slot *s = table_find(t, (int32_t)fid);
    if (s == NULL && (s = table_new_slot(t, (int32_t)fid)) == NULL)
        return PyErr_NoMemory();
    s->calls++;
    s->total_ns += duration;
    s->self_ns += self_ns;
    if (hist_add(s, fs_bucket_of(duration)) < 0)
        return PyErr_NoMemory();
    if (type != NULL) {
        s->errors++;
        if (error_add(t, s, type, NULL) < 0)
            return PyErr_NoMemory();
    }
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

/* into += from, for one node's counters. */
static inline void
node_absorb(NodeSlot *into, const NodeSlot *from)
{
    into->calls += from->calls;
    into->errors += from->errors;
    into->total_ns += from->total_ns;
    into->self_ns += from->self_ns;
}

/* absorb_paths(src, registry, room) -> (created, folded): add src's path nodes into this table (a
 * window's table for one route), creating at most `room` new nodes. A further new node is folded
 * into the "(other paths)" child of its deepest ancestor this table keeps (the root at worst):
 * its calls and times stay, its function identity does not (the function slots keep that exactly).
 * Errors by (node, type) follow their node. `folded` counts the nodes folded so. */
static PyObject *
table_absorb_paths(CallTable *t, PyObject *const *args, Py_ssize_t nargs)
{
    Py_ssize_t created = 0, folded = 0;
    if (nargs != 3 || !CallTable_Check(args[0]) || !PathRegistry_Check(args[1])) {
        PyErr_SetString(PyExc_TypeError, "absorb_paths(src: CallTable, registry: PathRegistry, room: int)");
        return NULL;
    }
    CallTable *src = (CallTable *)args[0];
    Paths *p = &((PathRegistry *)args[1])->p;
    Py_ssize_t room = PyNumber_AsSsize_t(args[2], PyExc_OverflowError);
    if (room == -1 && PyErr_Occurred())
        return NULL;
    if (src == t) {
        PyErr_SetString(PyExc_ValueError, "a table cannot absorb itself");
        return NULL;
    }
    /* Where each of src's nodes lands here, for its errors below. */
    int32_t *landed = PyMem_Malloc(sizeof(int32_t) * (size_t)(src->n_nodes ? src->n_nodes : 1));
    if (landed == NULL)
        return PyErr_NoMemory();
    for (int32_t i = 0; i < src->n_nodes; i++) {
        const NodeSlot *from = &src->nodes[i];
        int32_t node = from->node;
        NodeSlot *into = table_find_node(t, node);
        if (into == NULL && room > 0 && node < p->n) {
            room--;
            created++;
            into = table_new_node(t, node, -1);
        }
        else if (into == NULL) {
            folded++;
            int32_t kept = node < p->n ? p->parent[node] : PATH_ROOT;
            while (kept != PATH_ROOT && table_find_node(t, kept) == NULL)
                kept = p->parent[kept];
            node = p->fid[kept] == PATH_OTHER ? kept : paths_other(p, kept);
            if (node >= 0 && (into = table_find_node(t, node)) == NULL)
                into = table_new_node(t, node, -1);
        }
        if (node < 0 || into == NULL) {
            PyMem_Free(landed);
            return PyErr_NoMemory();
        }
        node_absorb(into, from);
        landed[i] = node;
    }
    for (int32_t i = 0; i < src->n_node_errs; i++) {
        const NodeError *e = &src->node_errs[i];
        int32_t at = index_find(src->node_index, src->node_index_mask, e->node);
        int32_t node = at >= 0 ? landed[at] : e->node;
        int found = 0;
        for (int32_t j = 0; j < t->n_node_errs && !found; j++) {
            if (t->node_errs[j].node == node && t->node_errs[j].type == e->type) {
                t->node_errs[j].count += e->count;
                found = 1;
            }
        }
        if (!found) {
            if (node_error_add(t, node, e->type) < 0) {
                PyMem_Free(landed);
                return PyErr_NoMemory();
            }
            t->node_errs[t->n_node_errs - 1].count = e->count;
        }
    }
    PyMem_Free(landed);
    return Py_BuildValue("(nn)", created, folded);
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
    {"paths", (getter)table_get_paths, NULL, "{node: [calls, errors, total_ns, self_ns]} (fresh dict)", NULL},
    {"path_errors", (getter)table_get_path_errors, NULL, "{(node, exception type): count} (fresh dict)", NULL},
    {"path_count", (getter)table_get_path_count, NULL, "number of path nodes with calls in this table", NULL},
    {"has_errors", (getter)table_get_has_errors, NULL, "True when a call in this table raised", NULL},
    {"series", (getter)table_get_series, NULL, "number of functions with calls in this table", NULL},
    {NULL},
};

static PyMethodDef table_methods[] = {
    {"add_call", (PyCFunction)(void (*)(void))table_add_call, METH_VARARGS | METH_KEYWORDS,
     "add_call(fid, duration_ns, self_ns, exc_type=None, node=-1)"},
    {"absorb", (PyCFunction)(void (*)(void))table_absorb, METH_FASTCALL,
     "absorb(src, room, overflow) -> (created, overflowed): see calls.CallTable.absorb"},
    {"absorb_paths", (PyCFunction)(void (*)(void))table_absorb_paths, METH_FASTCALL,
     "absorb_paths(src, registry, room) -> (created, folded): see calls.CallTable.absorb_paths"},
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
