/* csensor/hooks311.h: the enter/leave front end (part of _csensor.c's single compilation unit).
 *
 * What code rewritten at import time by rewrite.py calls on 3.11: enter/leave/suspend/resume and
 * the rest of its hook set (enter_co, unwind, yield_, await_). Compiled on every version (the
 * methods exist on 3.12+ too, for tests and benchmarks).
 *
 * Relies on core.h (Core, stack_of, finish, end_segment, record), stack.h (Invocation tokens,
 * ThreadStack and its pending await), clock.h and util.h.
 */

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
    if (UNLIKELY(st == NULL)) {
        internal_error(core);
        Py_RETURN_NONE;
    }
    int32_t node = node_of_call(core, st, (int32_t)fid);
    Entry *e = stack_push(st);
    if (UNLIKELY(e == NULL)) {
        internal_error(core);
        Py_RETURN_NONE;
    }
    e->fid = (int32_t)fid;
    e->node = node;
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
    inv->e.node = node;
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
    PyObject *raised = NULL; /* control flow (a close, the end of an iteration) is not an error */
    if (exc != NULL && exc != Py_None && !is_control_flow(exc))
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
        finish(core, st, stack_top(st), &e, now, raised, NULL);
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
    finish(core, caller == stack_top(st) ? st : NULL, caller, &e, now, raised, NULL);
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
    stack_settled(core, st);
}

static void
resume_impl(Core *core, PyObject *token)
{
    if (!Invocation_Check(token))
        return;
    Invocation *inv = (Invocation *)token;
    inv->e.segment = now_ns();
    ThreadStack *st = stack_of(core);
    if (st != NULL)
        stack_settled(core, st); /* as an outermost call starts */
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
    if (st != NULL && st->pending_awaiter != NULL && coroutine_running(st->pending_awaitable)) {
        Invocation *inv = (Invocation *)token;
        Py_XSETREF(inv->awaiter, Py_NewRef(st->pending_awaiter));
        /* Its path runs through the coroutine that awaits it, not through what is below on the
         * stack (the awaiter is suspended while it awaits). */
        int32_t node = paths_node(core->paths, ((Invocation *)st->pending_awaiter)->e.node, inv->e.fid);
        if (node >= 0)
            inv->e.node = node;
    }
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
