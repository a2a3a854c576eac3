/* csensor/clock.h: the sensor's clock, now_ns() (part of _csensor.c's single compilation unit).
 *
 * CLOCK_MONOTONIC nanoseconds, read from the TSC where the kernel itself trusts it, with its
 * calibration (tsc_calibrate at import, recalibrate on every sweep_parked). Relies on util.h
 * (Python.h for Py_BEGIN_ALLOW_THREADS, LIKELY). The module's now_ns()/clock()/use_clock() and
 * _clock_state() functions, in _csensor.c, read its state.
 */

/* ====================================================================================== clock
 *
 * Timestamps are CLOCK_MONOTONIC nanoseconds: the clock behind time.perf_counter_ns() on Linux,
 * so span timestamps taken here mix with the Python side's. One read per event.
 *
 * Where the kernel itself keeps CLOCK_MONOTONIC on the TSC (x86-64, invariant TSC, clocksource
 * "tsc"), the sensor reads the TSC directly and maps it onto CLOCK_MONOTONIC: an rdtsc costs less
 * than half of a vDSO clock_gettime (which fences and retries a seqlock), and the clock is the
 * largest single cost of a sensed call. The map (anchor + rate) is calibrated at import (2 ms) and
 * re-anchored by recalibrate() on every sweep_parked() call (the export thread, every interval):
 * the rate comes from an ever longer baseline and is slewed by at most 0.1 % so the mapped clock
 * converges on CLOCK_MONOTONIC without ever jumping (durations stay exact to the slew, time never
 * runs backwards). Anywhere else: clock_gettime(CLOCK_MONOTONIC).
 */
#if defined(__x86_64__) && defined(__linux__) && defined(__GNUC__)
#define HAVE_TSC 1
#include <x86intrin.h>
#include <cpuid.h>
#else
#define HAVE_TSC 0
#endif

static inline int64_t
monotonic_ns(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

#if HAVE_TSC
static int clock_tsc;                 /* 1: mapped TSC; 0: clock_gettime */
static int tsc_usable;                /* the platform allows it (decided once) */
static int64_t map_tsc, map_ns;       /* anchor of the map */
static int64_t map_mult;              /* ns per TSC tick, 32.32 fixed point */
static int64_t cal_tsc, cal_ns;       /* first calibration point: the rate's baseline */
static int64_t last_cal_ns;           /* CLOCK_MONOTONIC at the last (re)calibration */

static inline int64_t
tsc_to_ns(int64_t tsc)
{
    return map_ns + (int64_t)(((__int128)(tsc - map_tsc) * map_mult) >> 32);
}
#endif

static inline int64_t
now_ns(void)
{
#if HAVE_TSC
    if (LIKELY(clock_tsc))
        return tsc_to_ns((int64_t)__rdtsc());
#endif
    return monotonic_ns();
}

#if HAVE_TSC
/* A (TSC, CLOCK_MONOTONIC) pair read as close together as possible (best of a few tries). */
static void
clock_pair(int64_t *tsc, int64_t *ns)
{
    int64_t best = INT64_MAX;
    *tsc = *ns = 0;
    for (int i = 0; i < 7; i++) {
        int64_t t1 = (int64_t)__rdtsc();
        int64_t n = monotonic_ns();
        int64_t t2 = (int64_t)__rdtsc();
        if (t2 - t1 < best) {
            best = t2 - t1;
            *tsc = t1 + (t2 - t1) / 2;
            *ns = n;
        }
    }
}

static int
tsc_platform_ok(void)
{
    unsigned a, b, c, d;
    if (!__get_cpuid(0x80000007, &a, &b, &c, &d) || !(d & (1u << 8)))
        return 0; /* no invariant TSC */
    FILE *f = fopen("/sys/devices/system/clocksource/clocksource0/current_clocksource", "r");
    if (f == NULL)
        return 0;
    char buf[32] = {0};
    int ok = fgets(buf, sizeof buf, f) != NULL && strncmp(buf, "tsc", 3) == 0 && (buf[3] == '\n' || buf[3] == 0);
    fclose(f);
    return ok; /* the kernel trusts the TSC (synchronized, stable) for CLOCK_MONOTONIC itself */
}

/* Initial map: two pairs 2 ms apart (rate error ~1e-5, good for durations from the start). */
static void
tsc_calibrate(void)
{
    int64_t t2, n2;
    clock_pair(&cal_tsc, &cal_ns);
    struct timespec pause = {0, 2000000};
    Py_BEGIN_ALLOW_THREADS
    nanosleep(&pause, NULL);
    Py_END_ALLOW_THREADS
    clock_pair(&t2, &n2);
    if (t2 <= cal_tsc || n2 <= cal_ns) {
        clock_tsc = 0;
        return;
    }
    map_mult = (int64_t)(((__int128)(n2 - cal_ns) << 32) / (t2 - cal_tsc));
    map_tsc = t2;
    map_ns = n2;
    last_cal_ns = n2;
    clock_tsc = map_mult > 0;
}

/* Re-anchor the map where it is now (no jump) with the long-baseline rate, slewed so the mapped
 * clock meets CLOCK_MONOTONIC again about one recalibration interval later. A large error (the
 * machine was suspended, the clock was stepped) is corrected at once. Called with the GIL held,
 * like every reader. */
static void
recalibrate(void)
{
    if (!clock_tsc)
        return;
    int64_t tsc, ns;
    clock_pair(&tsc, &ns);
    int64_t interval = ns - last_cal_ns;
    if (interval < 50000000 || tsc <= cal_tsc)
        return; /* too soon to learn anything */
    int64_t rate = (int64_t)(((__int128)(ns - cal_ns) << 32) / (tsc - cal_tsc));
    int64_t mapped = tsc_to_ns(tsc);
    int64_t error = ns - mapped; /* > 0: the mapped clock is behind */
    if (error > 20000000 || error < -20000000) {
        map_tsc = tsc;
        map_ns = ns;
        map_mult = rate;
    }
    else {
        double slew = (double)error / (double)interval;
        if (slew > 1e-3)
            slew = 1e-3;
        if (slew < -1e-3)
            slew = -1e-3;
        map_tsc = tsc;
        map_ns = mapped;
        map_mult = rate + (int64_t)((double)rate * slew);
    }
    last_cal_ns = ns;
}
#else
static void
recalibrate(void)
{
}
#endif
