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
 *
 * Layout: the parts live in the csensor/ folder and are #included below, in dependency order, into this
 * ONE compilation unit on purpose. The hot path crosses them on every event (on_start -> now_ns,
 * stack_of, stack_push; paths_node; final exit -> finish -> record -> table_count -> fs_bucket_of, hist_add):
 * as one unit the compiler inlines those static functions into the callbacks, and compiled
 * separately it could not (without LTO), adding calls and spills to each sensed call
 * (bench/instructions.py would show it). So the parts are not headers for other units: each relies
 * on the ones before it, and holds static definitions. This file is the module itself: its
 * functions, method table and init.
 *
 *   csensor/util.h         includes, HAS_MONITORING, LIKELY/UNLIKELY, function kinds
 *   csensor/clock.h        now_ns(): CLOCK_MONOTONIC, or the TSC mapped onto it
 *   funcsight/histogram.h  fs_bucket_of(), N_BUCKETS (shared with processors/_crollup.c)
 *   csensor/paths.h        the call tree's nodes: (parent, function) -> node, and its Python type
 *   csensor/samples.h      an exception's stack sample, in C (calls.stack_sample's twin)
 *   csensor/tables.h       call tables: counting (the hot path)
 *   csensor/table_type.h   call tables: the Python type
 *   csensor/stack.h        in-flight invocations, per-thread stacks, Invocation tokens
 *   csensor/core.h         Core, record()/finish(), the parking lot
 *   csensor/monitoring.h   the sys.monitoring front end (3.12+)
 *   csensor/hooks311.h     the enter/leave front end (rewrite.py's hooks, 3.11)
 *   csensor/core_type.h    Core's cold-path methods and type object
 *   csensor/bench.h        _floor/_floor2 benchmark yardsticks
 */
#include "csensor/util.h"
#include "csensor/clock.h"
#include "funcsight/histogram.h"
#include "csensor/paths.h"
#include "csensor/samples.h"
#include "csensor/tables.h"
#include "csensor/table_type.h"
#include "csensor/stack.h"
#include "csensor/core.h"
#include "csensor/monitoring.h"
#include "csensor/hooks311.h"
#include "csensor/core_type.h"
#include "csensor/bench.h"

/* ===================================================================================== module */

static PyObject *
mod_bucket_of(PyObject *mod, PyObject *arg)
{
    long long d = PyLong_AsLongLong(arg);
    if (d == -1 && PyErr_Occurred())
        return NULL;
    return PyLong_FromLong(fs_bucket_of(d));
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

static PyObject *
mod_set_stack_sampler(PyObject *self, PyObject *sampler)
{
    Py_XSETREF(stack_sampler, sampler == Py_None ? NULL : Py_NewRef(sampler));
    stack_sampler_native = stack_sampler != NULL && PyCFunction_Check(stack_sampler)
                           && PyCFunction_GET_FUNCTION(stack_sampler) == (PyCFunction)mod_stack_sample;
    Py_RETURN_NONE;
}

/* request_changed(): the request variable was set (see request_of() in core.h). */
static PyObject *
mod_request_changed(PyObject *self, PyObject *unused)
{
    request_generation++;
    Py_RETURN_NONE;
}

static PyMethodDef module_methods[] = {
    {"request_changed", mod_request_changed, METH_NOARGS, "request_changed(): calls.current_request was set (the sensor's per-thread copy is stale)"},
    {"stack_sample", mod_stack_sample, METH_O, "stack_sample(exc) -> (((code, offset), ...), None): calls.stack_sample in C"},
    {"set_stack_sampler", mod_set_stack_sampler, METH_O, "set_stack_sampler(fn): fn(exception) -> stack sample kept per (fid, type)"},
    {"_floor", (PyCFunction)(void (*)(void))mod_floor, METH_FASTCALL, "count + clock_gettime (bench yardstick)"},
    {"_floor2", (PyCFunction)(void (*)(void))mod_floor2, METH_FASTCALL, "count + clock_gettime, returns args[1]"},
    {"bucket_of", mod_bucket_of, METH_O, "bucket_of(duration_ns): funcsight/histogram.h, i.e. calls.bucket_of, in C"},
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
    if (PyType_Ready(&CallTableType) < 0 || PyType_Ready(&InvocationType) < 0 || PyType_Ready(&CoreType) < 0 ||
        PyType_Ready(&PathRegistryType) < 0)
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
        PyModule_AddObjectRef(m, "PathRegistry", (PyObject *)&PathRegistryType) < 0 ||
        PyModule_AddIntConstant(m, "HAS_MONITORING", HAS_MONITORING) < 0 ||
        PyModule_AddIntConstant(m, "PLAIN", PLAIN) < 0 || PyModule_AddIntConstant(m, "GENERATOR", GENERATOR) < 0 ||
        PyModule_AddIntConstant(m, "COROUTINE", COROUTINE) < 0) {
        Py_DECREF(m);
        return NULL;
    }
    return m;
}
