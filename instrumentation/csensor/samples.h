/* csensor/samples.h: the stack sample of an exception, taken once per (function, type) per table
 * (part of _csensor.c's single compilation unit, after util.h).
 *
 * calls.frames_of()'s twin: ((code, offset), ...) outermost first - the callers of the function
 * the exception is leaving, then the traceback down to the raise point - at most MAX_STACK_FRAMES.
 * Instruction offsets, not lines: a frame's line costs a walk of its code's line table
 * (PyFrame_GetLineNumber), about a thousand instructions a frame, while the offset is a field; the
 * window turns offsets into lines once per sample it keeps (calls.line_of). Frameworks that raise
 * and catch an exception on every request (werkzeug's header lookups) took ~81k instructions a
 * request in the Python sampler (bench/where.py).
 */

#define MAX_STACK_FRAMES 30 /* calls.MAX_STACK_FRAMES */

/* (code, offset) of a frame, or NULL (error set). */
static PyObject *
frame_pair(PyFrameObject *frame, int offset)
{
    PyCodeObject *code = PyFrame_GetCode(frame);
    PyObject *pair = Py_BuildValue("(Ni)", (PyObject *)code, offset);
    return pair;
}

/* calls.stack_sample(exc) in C: ((frames...), None). */
static PyObject *
native_stack_sample(PyObject *exc)
{
    int n_inner = 0, n_outer = 0;
    PyObject *tb = PyException_GetTraceback(exc);
    if (tb == NULL || !PyTraceBack_Check(tb)) {
        Py_XDECREF(tb);
        return Py_BuildValue("(()O)", Py_None);
    }
    PyObject *inner[MAX_STACK_FRAMES], *outer[MAX_STACK_FRAMES];
    PyObject *result = NULL;
    for (PyTracebackObject *t = (PyTracebackObject *)tb; t != NULL && n_inner < MAX_STACK_FRAMES; t = t->tb_next) {
        if ((inner[n_inner] = frame_pair(t->tb_frame, t->tb_lasti)) == NULL)
            goto done;
        n_inner++;
    }
    PyFrameObject *frame = PyFrame_GetBack(((PyTracebackObject *)tb)->tb_frame); /* new reference */
    while (frame != NULL && n_outer + n_inner < MAX_STACK_FRAMES) {
        outer[n_outer] = frame_pair(frame, PyFrame_GetLasti(frame));
        PyFrameObject *back = PyFrame_GetBack(frame);
        Py_DECREF(frame);
        frame = back;
        if (outer[n_outer] == NULL) {
            Py_XDECREF(frame);
            goto done;
        }
        n_outer++;
    }
    Py_XDECREF(frame);
    PyObject *frames = PyTuple_New(n_outer + n_inner);
    if (frames == NULL)
        goto done;
    for (int i = 0; i < n_outer; i++)
        PyTuple_SET_ITEM(frames, i, outer[n_outer - 1 - i]);
    for (int i = 0; i < n_inner; i++)
        PyTuple_SET_ITEM(frames, n_outer + i, inner[i]);
    n_outer = n_inner = 0; /* the tuple owns them */
    result = Py_BuildValue("(NO)", frames, Py_None);
done:
    for (int i = 0; i < n_outer; i++)
        Py_DECREF(outer[i]);
    for (int i = 0; i < n_inner; i++)
        Py_DECREF(inner[i]);
    Py_DECREF(tb);
    return result;
}

/* _csensor.stack_sample, the builtin: error_add() recognises it and calls native_stack_sample()
 * without a Python-level call. */
static PyObject *
mod_stack_sample(PyObject *self, PyObject *exc)
{
    if (!PyExceptionInstance_Check(exc)) {
        PyErr_SetString(PyExc_TypeError, "stack_sample(exception)");
        return NULL;
    }
    return native_stack_sample(exc);
}
