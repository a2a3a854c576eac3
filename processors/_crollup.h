/* Shared by the two files of funcsight.processors._crollup: _crollup.c (the rollup span
 * processor's per-span path, RollupCore, and the module) and _cwindow.c (WindowAggregator, the C twin
 * of windows.py's). */
#ifndef FUNCSIGHT_CROLLUP_H
#define FUNCSIGHT_CROLLUP_H

#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>

/* _crollup.c: the route counters (the bucket is funcsight/histogram.h's fs_bucket_of) */
int list_add(PyObject *list, Py_ssize_t index, int64_t amount); /* list[index] += amount */
int dict_increment(PyObject *dict, PyObject *key);            /* dict[key] = dict.get(key, 0) + 1 */

/* _cwindow.c */
extern PyTypeObject WindowsType;
int windows_ready(void); /* PyType_Ready and the names it uses; 0 or -1 */
/* Fold a finished request into a WindowAggregator (exactly WindowsType): a C call, under its lock. */
int windows_add_request(PyObject *windows, PyObject *route, PyObject *table, int64_t duration, int failed);
/* Calls of `route` (NULL: the background) without a request, e.g. after it ended: a C call. */
int windows_add_calls_c(PyObject *windows, PyObject *route, PyObject *table);

#endif
