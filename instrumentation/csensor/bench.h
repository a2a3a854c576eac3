/* csensor/bench.h: benchmark yardsticks (part of _csensor.c's single compilation unit).
 *
 * _floor() and _floor2(): the cheapest callback that counts and reads the clock, which
 * bench/micro.py runs next to the sensor to show what dispatch and the clock alone cost. Not used
 * by the sensor. Relies on clock.h (monotonic_ns) and util.h.
 */

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
