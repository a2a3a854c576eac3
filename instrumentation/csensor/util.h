/* csensor/util.h: what every part of the C sensor shares (part of _csensor.c's single
 * compilation unit, included first).
 *
 * The Python and C headers, the 64-bit check the co_extra tag needs, HAS_MONITORING (3.12+:
 * the sys.monitoring front end is compiled), LIKELY/UNLIKELY, and the function kinds (PLAIN,
 * GENERATOR, COROUTINE) with kind_of_flags(). Relies on nothing.
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
/* Rare paths (a table's first sight of a function, a histogram spreading): kept out of line so
 * the per-call code stays small and the compiler inlines it into the callbacks. */
#define COLD __attribute__((noinline, cold))
/* The per-call path, inlined into each callback (one call frame fewer per event). */
#define HOT_INLINE inline __attribute__((always_inline))
#else
#define LIKELY(x) (x)
#define UNLIKELY(x) (x)
#define COLD
#define HOT_INLINE inline
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
