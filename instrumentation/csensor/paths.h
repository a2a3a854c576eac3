/* csensor/paths.h: the path registry, the nodes of the call tree (part of _csensor.c's single
 * compilation unit, after util.h).
 *
 * Python twin and the rules: instrumentation/paths.py. A node is (parent node, function id);
 * node 0 is the root (the request). Per process, one registry: the arrays below give each node's
 * parent, function and depth; an open-addressing map gives the node of an edge (parent, fid),
 * which may be an ancestor (recursion folded) or an "(other paths)" node (depth or node cap).
 *
 * The hot path reads one word: last[fid] = (parent << 32 | node) of fid's last call. When the
 * parent matches (almost always) that is the node; otherwise paths_child() decides once per edge
 * (a probe into the edge map, and on a new edge the walk up the path that folds recursion).
 * Memory: 10 bytes per node and 12-24 per edge, bounded by max_nodes (+ one "(other paths)" node
 * per parent that overflowed).
 * The GIL guards everything here (the module refuses free-threaded builds).
 */

#define PATH_ROOT 0
#define PATH_OTHER (-1)   /* the function id of an "(other paths)" node */
#define PATH_NO_FUNCTION (-2)
#define PATH_NO_PARENT 0xFFFFFFFF00000000ull  /* a last[] word that matches no parent */

typedef struct {
    int32_t *parent, *fid;
    uint16_t *depth;
    int32_t n, cap;
    int32_t max_nodes, max_depth;
    uint64_t *edge_key;   /* (parent + 1) << 32 | (fid + 2), 0 = empty */
    int32_t *edge_node;
    uint32_t edge_mask;
    int32_t n_edges;
    uint64_t *last;       /* by function id */
    int32_t n_last;
    Py_ssize_t dropped;   /* edges folded into "(other paths)" by the node cap */
} Paths;

static int
paths_init(Paths *p, int32_t max_nodes, int32_t max_depth)
{
    memset(p, 0, sizeof(Paths));
    p->max_nodes = max_nodes;
    p->max_depth = max_depth > 65535 ? 65535 : max_depth;
    p->cap = 64;
    p->parent = PyMem_Malloc(sizeof(int32_t) * p->cap);
    p->fid = PyMem_Malloc(sizeof(int32_t) * p->cap);
    p->depth = PyMem_Malloc(sizeof(uint16_t) * p->cap);
    p->edge_mask = 127;
    p->edge_key = PyMem_Calloc(p->edge_mask + 1, sizeof(uint64_t));
    p->edge_node = PyMem_Calloc(p->edge_mask + 1, sizeof(int32_t));
    if (!p->parent || !p->fid || !p->depth || !p->edge_key || !p->edge_node)
        return -1;
    p->parent[0] = PATH_ROOT;
    p->fid[0] = PATH_NO_FUNCTION;
    p->depth[0] = 0;
    p->n = 1;
    return 0;
}

static void
paths_free(Paths *p)
{
    PyMem_Free(p->parent);
    PyMem_Free(p->fid);
    PyMem_Free(p->depth);
    PyMem_Free(p->edge_key);
    PyMem_Free(p->edge_node);
    PyMem_Free(p->last);
    memset(p, 0, sizeof(Paths));
}

/* Room in last[] for function ids up to fid (called when a function is registered, so the hot
 * path never checks bounds). */
static int
paths_ensure(Paths *p, int32_t fid)
{
    if (fid < p->n_last)
        return 0;
    int32_t cap = p->n_last ? p->n_last : 64;
    while (cap <= fid)
        cap *= 2;
    uint64_t *last = PyMem_Realloc(p->last, sizeof(uint64_t) * (size_t)cap);
    if (last == NULL)
        return -1;
    for (int32_t i = p->n_last; i < cap; i++)
        last[i] = PATH_NO_PARENT;
    p->last = last;
    p->n_last = cap;
    return 0;
}

static inline uint64_t
edge_key(int32_t parent, int32_t fid)
{
    return ((uint64_t)(uint32_t)(parent + 1) << 32) | (uint32_t)(fid + 2);
}

static inline uint32_t
edge_hash(uint64_t key)
{
    key *= 0x9E3779B97F4A7C15ull;
    return (uint32_t)(key >> 32);
}

static int32_t
edge_find(Paths *p, uint64_t key)
{
    uint32_t h = edge_hash(key) & p->edge_mask;
    for (;;) {
        uint64_t k = p->edge_key[h];
        if (k == key)
            return p->edge_node[h];
        if (k == 0)
            return -1;
        h = (h + 1) & p->edge_mask;
    }
}

static int
edge_put(Paths *p, uint64_t key, int32_t node)
{
    if ((uint32_t)(p->n_edges + 1) * 2 > p->edge_mask + 1) {
        uint32_t cap = (p->edge_mask + 1) * 2;
        uint64_t *keys = PyMem_Calloc(cap, sizeof(uint64_t));
        int32_t *nodes = PyMem_Calloc(cap, sizeof(int32_t));
        if (keys == NULL || nodes == NULL) {
            PyMem_Free(keys);
            PyMem_Free(nodes);
            return -1;
        }
        for (uint32_t i = 0; i <= p->edge_mask; i++) {
            if (p->edge_key[i] == 0)
                continue;
            uint32_t h = edge_hash(p->edge_key[i]) & (cap - 1);
            while (keys[h])
                h = (h + 1) & (cap - 1);
            keys[h] = p->edge_key[i];
            nodes[h] = p->edge_node[i];
        }
        PyMem_Free(p->edge_key);
        PyMem_Free(p->edge_node);
        p->edge_key = keys;
        p->edge_node = nodes;
        p->edge_mask = cap - 1;
    }
    uint32_t h = edge_hash(key) & p->edge_mask;
    while (p->edge_key[h])
        h = (h + 1) & p->edge_mask;
    p->edge_key[h] = key;
    p->edge_node[h] = node;
    p->n_edges++;
    return 0;
}

static int32_t
paths_new(Paths *p, int32_t parent, int32_t fid)
{
    if (p->n == p->cap) {
        int32_t cap = p->cap * 2;
        int32_t *parents = PyMem_Realloc(p->parent, sizeof(int32_t) * (size_t)cap);
        if (parents == NULL)
            return -1;
        p->parent = parents;
        int32_t *fids = PyMem_Realloc(p->fid, sizeof(int32_t) * (size_t)cap);
        if (fids == NULL)
            return -1;
        p->fid = fids;
        uint16_t *depths = PyMem_Realloc(p->depth, sizeof(uint16_t) * (size_t)cap);
        if (depths == NULL)
            return -1;
        p->depth = depths;
        p->cap = cap;
    }
    int32_t node = p->n++;
    p->parent[node] = parent;
    p->fid[node] = fid;
    p->depth[node] = (uint16_t)(p->depth[parent] + 1);
    return node;
}

/* The "(other paths)" child of parent (made once). */
static int32_t
paths_other(Paths *p, int32_t parent)
{
    uint64_t key = edge_key(parent, PATH_OTHER);
    int32_t node = edge_find(p, key);
    if (node >= 0)
        return node;
    node = paths_new(p, parent, PATH_OTHER);
    if (node < 0 || edge_put(p, key, node) < 0)
        return -1;
    return node;
}

static int32_t
paths_place(Paths *p, int32_t parent, int32_t fid)
{
    if (p->fid[parent] == PATH_OTHER)
        return parent;
    for (int32_t a = parent; a != PATH_ROOT; a = p->parent[a]) {
        if (p->fid[a] == fid)
            return a;
    }
    if (p->depth[parent] >= p->max_depth)
        return paths_other(p, parent);
    if (p->n >= p->max_nodes) {
        p->dropped++;
        return paths_other(p, parent);
    }
    return paths_new(p, parent, fid);
}

/* The node of a call of fid under parent (cold path: last[] missed). -1 on memory failure. */
static int32_t
paths_child(Paths *p, int32_t parent, int32_t fid)
{
    if (UNLIKELY(parent < 0 || parent >= p->n))
        parent = PATH_ROOT;
    uint64_t key = edge_key(parent, fid);
    int32_t node = edge_find(p, key);
    if (node < 0) {
        node = paths_place(p, parent, fid);
        if (node < 0 || edge_put(p, key, node) < 0)
            return -1;
    }
    if (fid >= 0 && fid < p->n_last)
        p->last[fid] = ((uint64_t)(uint32_t)parent << 32) | (uint32_t)node;
    return node;
}

/* The hot path: the node of a call of fid under parent. */
static inline int32_t
paths_node(Paths *p, int32_t parent, int32_t fid)
{
    if (UNLIKELY(fid >= p->n_last) && paths_ensure(p, fid) < 0)
        return -1;
    uint64_t last = p->last[fid];
    if (LIKELY((uint32_t)(last >> 32) == (uint32_t)parent))
        return (int32_t)(uint32_t)last;
    return paths_child(p, parent, fid);
}

/* ------------------------------------------------------------- PathRegistry, the Python face */

typedef struct {
    PyObject_HEAD
    Paths p;
} PathRegistry;

static PyTypeObject PathRegistryType;
#define PathRegistry_Check(op) (Py_TYPE(op) == &PathRegistryType)

static PyObject *
registry_new(PyTypeObject *type, PyObject *args, PyObject *kwds)
{
    static char *kwlist[] = {"max_nodes", "max_depth", NULL};
    int max_nodes = 100000, max_depth = 64; /* paths.MAX_NODES */
    if (!PyArg_ParseTupleAndKeywords(args, kwds, "|ii:PathRegistry", kwlist, &max_nodes, &max_depth))
        return NULL;
    if (max_nodes < 1 || max_depth < 1) {
        PyErr_SetString(PyExc_ValueError, "max_nodes and max_depth must be at least 1");
        return NULL;
    }
    PathRegistry *r = (PathRegistry *)type->tp_alloc(type, 0);
    if (r == NULL)
        return NULL;
    if (paths_init(&r->p, max_nodes, max_depth) < 0) {
        Py_DECREF(r);
        return PyErr_NoMemory();
    }
    return (PyObject *)r;
}

static void
registry_dealloc(PathRegistry *r)
{
    paths_free(&r->p);
    Py_TYPE(r)->tp_free((PyObject *)r);
}

static int
node_arg(PathRegistry *r, PyObject *arg, int32_t *node)
{
    long value = PyLong_AsLong(arg);
    if (value == -1 && PyErr_Occurred())
        return -1;
    if (value < 0 || value >= r->p.n) {
        PyErr_Format(PyExc_IndexError, "no path node %ld", value);
        return -1;
    }
    *node = (int32_t)value;
    return 0;
}

static PyObject *
registry_child(PathRegistry *r, PyObject *const *args, Py_ssize_t nargs)
{
    int32_t parent;
    if (nargs != 2) {
        PyErr_SetString(PyExc_TypeError, "child(parent, fid)");
        return NULL;
    }
    if (node_arg(r, args[0], &parent) < 0)
        return NULL;
    long fid = PyLong_AsLong(args[1]);
    if (fid == -1 && PyErr_Occurred())
        return NULL;
    if (fid < 0 || fid >= INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "function id %ld out of range", fid);
        return NULL;
    }
    if (paths_ensure(&r->p, (int32_t)fid) < 0)
        return PyErr_NoMemory();
    int32_t node = paths_child(&r->p, parent, (int32_t)fid);
    if (node < 0)
        return PyErr_NoMemory();
    return PyLong_FromLong(node);
}

static PyObject *
registry_parent_of(PathRegistry *r, PyObject *arg)
{
    int32_t node;
    if (node_arg(r, arg, &node) < 0)
        return NULL;
    return PyLong_FromLong(r->p.parent[node]);
}

static PyObject *
registry_fid_of(PathRegistry *r, PyObject *arg)
{
    int32_t node;
    if (node_arg(r, arg, &node) < 0)
        return NULL;
    return PyLong_FromLong(r->p.fid[node]);
}

static PyObject *
registry_path_of(PathRegistry *r, PyObject *arg)
{
    int32_t node;
    if (node_arg(r, arg, &node) < 0)
        return NULL;
    int depth = r->p.depth[node];
    PyObject *out = PyTuple_New(depth);
    if (out == NULL)
        return NULL;
    for (int i = depth - 1; i >= 0; i--, node = r->p.parent[node]) {
        PyObject *fid = PyLong_FromLong(r->p.fid[node]);
        if (fid == NULL) {
            Py_DECREF(out);
            return NULL;
        }
        PyTuple_SET_ITEM(out, i, fid);
    }
    return out;
}

static PyObject *
registry_other_of(PathRegistry *r, PyObject *arg)
{
    int32_t node;
    if (node_arg(r, arg, &node) < 0)
        return NULL;
    int32_t other = r->p.fid[node] == PATH_OTHER ? node : paths_other(&r->p, node);
    if (other < 0)
        return PyErr_NoMemory();
    return PyLong_FromLong(other);
}

static PyObject *
registry_ensure(PathRegistry *r, PyObject *arg)
{
    long fid = PyLong_AsLong(arg);
    if (fid == -1 && PyErr_Occurred())
        return NULL;
    if (fid < 0 || fid >= INT32_MAX) {
        PyErr_Format(PyExc_ValueError, "function id %ld out of range", fid);
        return NULL;
    }
    if (paths_ensure(&r->p, (int32_t)fid) < 0)
        return PyErr_NoMemory();
    Py_RETURN_NONE;
}

static PyObject *
registry_reset(PathRegistry *r, PyObject *Py_UNUSED(ignored))
{
    Py_RETURN_NONE; /* the GIL guards the C registry: nothing to re-create after a fork */
}

static Py_ssize_t
registry_len(PathRegistry *r)
{
    return r->p.n;
}

static PyObject *
registry_get_dropped(PathRegistry *r, void *closure)
{
    return PyLong_FromSsize_t(r->p.dropped);
}

static PyObject *
registry_get_max_nodes(PathRegistry *r, void *closure)
{
    return PyLong_FromLong(r->p.max_nodes);
}

static PyObject *
registry_get_max_depth(PathRegistry *r, void *closure)
{
    return PyLong_FromLong(r->p.max_depth);
}

static PyGetSetDef registry_getset[] = {
    {"dropped", (getter)registry_get_dropped, NULL, "edges folded into (other paths) by the node cap", NULL},
    {"max_nodes", (getter)registry_get_max_nodes, NULL, "node cap", NULL},
    {"max_depth", (getter)registry_get_max_depth, NULL, "depth cap", NULL},
    {NULL},
};

static PyMethodDef registry_methods[] = {
    {"child", (PyCFunction)(void (*)(void))registry_child, METH_FASTCALL, "child(parent, fid) -> node"},
    {"parent_of", (PyCFunction)registry_parent_of, METH_O, "parent_of(node) -> node"},
    {"fid_of", (PyCFunction)registry_fid_of, METH_O, "fid_of(node) -> function id (-1: other paths, -2: root)"},
    {"path_of", (PyCFunction)registry_path_of, METH_O, "path_of(node) -> function ids from the root's child down"},
    {"other_of", (PyCFunction)registry_other_of, METH_O, "other_of(node) -> its (other paths) child"},
    {"ensure", (PyCFunction)registry_ensure, METH_O, "ensure(fid): room for function ids up to fid"},
    {"reset", (PyCFunction)registry_reset, METH_NOARGS, "after fork (nothing to do in C)"},
    {NULL},
};

static PySequenceMethods registry_as_sequence = {
    .sq_length = (lenfunc)registry_len,
};

static PyTypeObject PathRegistryType = {
    PyVarObject_HEAD_INIT(NULL, 0)
    .tp_name = "funcsight.instrumentation._csensor.PathRegistry",
    .tp_basicsize = sizeof(PathRegistry),
    .tp_flags = Py_TPFLAGS_DEFAULT,
    .tp_doc = "PathRegistry(max_nodes=100000, max_depth=64): the call tree's nodes (paths.PathRegistry's twin).",
    .tp_new = registry_new,
    .tp_dealloc = (destructor)registry_dealloc,
    .tp_getset = registry_getset,
    .tp_methods = registry_methods,
    .tp_as_sequence = &registry_as_sequence,
};
