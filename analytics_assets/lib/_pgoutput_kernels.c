/* Compiled kernels of the pgoutput decoder (analytics_assets/lib/pgoutput.py): a CPython
 * extension module built by the package's build backend (hatch_build.py), so every install
 * (`pip install .`, `uv pip install .`, `make install`) runs the same code.
 *
 * Two loops that numpy could only express as many whole-array passes: walking the TupleData of
 * many tuples (column by column, each tuple's values laid end to end) and building Arrow
 * StringView entries for the values found. Every read is checked against the end of the message
 * the tuple belongs to: malformed bytes make a call return an error tuple (pgoutput.py raises
 * DecodeError naming the byte), never read outside the message. Both release the GIL while they
 * run (the decoder works on a reader thread next to the warehouse's apply).
 */
#define PY_SSIZE_T_CLEAN
#include <Python.h>
#include <stdint.h>
#include <string.h>

#define KIND_NULL 'n'
#define KIND_UNCHANGED 'u'
#define KIND_TEXT 't'

/* Error codes, returned as (code, byte position, detail) */
#define KIND_PAST_END 1  /* a column's kind byte lies at or past the message end */
#define HEADER_PAST_END 2 /* a text value's int32 length runs past the message end */
#define VALUE_OUTSIDE 3  /* a value's length is negative or runs past the message end */
#define BAD_KIND 4       /* a kind byte other than t/n/u (detail: the byte) */
#define VIEW_OUTSIDE 5   /* a StringView would reference bytes outside the buffer */

static int check(Py_buffer *b, Py_ssize_t itemsize, Py_ssize_t items, const char *name) {
    if (b->len != itemsize * items) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes, expected %zd", name, b->len,
                     itemsize * items);
        return -1;
    }
    return 0;
}

/* walk_tuples(a, pos, lim, ncols, start, length, kind, end) -> None | (code, byte, detail)
 *
 * Walks m TupleData bodies (after their int16 column count): tuple i starts at pos[i] and must
 * end by lim[i]. Outputs are column-major (ncols x m): value start, length (0 unless text) and
 * kind byte; end[i] is the position after tuple i. */
static PyObject *walk_tuples(PyObject *self, PyObject *args) {
    Py_buffer a, pos, lim, start, length, kind, end;
    Py_ssize_t ncols;
    if (!PyArg_ParseTuple(args, "y*y*y*nw*w*w*w*", &a, &pos, &lim, &ncols, &start, &length,
                          &kind, &end))
        return NULL;
    PyObject *result = NULL;
    int64_t m = pos.len / 8;
    if (ncols < 0 || check(&pos, 8, m, "pos") || check(&lim, 8, m, "lim") ||
        check(&start, 8, ncols * m, "start") || check(&length, 8, ncols * m, "length") ||
        check(&kind, 1, ncols * m, "kind") || check(&end, 8, m, "end"))
        goto done;
    {
        const uint8_t *buf = a.buf;
        const int64_t alen = a.len;
        const int64_t *p0 = pos.buf, *lp = lim.buf;
        int64_t *st = start.buf, *ln_out = length.buf, *en = end.buf;
        uint8_t *kd = kind.buf;
        int code = 0;
        int64_t at_byte = 0, detail = 0;
        Py_BEGIN_ALLOW_THREADS
        for (int64_t i = 0; i < m && !code; i++) {
            int64_t p = p0[i];
            int64_t stop = lp[i] < alen ? lp[i] : alen;
            for (int64_t j = 0; j < ncols; j++) {
                if (p < 0 || p >= stop) { code = KIND_PAST_END; at_byte = p; break; }
                uint8_t k = buf[p];
                int64_t at = j * m + i;
                kd[at] = k;
                if (k == KIND_TEXT) {
                    if (p + 5 > stop) { code = HEADER_PAST_END; at_byte = p; break; }
                    int64_t ln = (int32_t)(((uint32_t)buf[p + 1] << 24) |
                                           ((uint32_t)buf[p + 2] << 16) |
                                           ((uint32_t)buf[p + 3] << 8) | (uint32_t)buf[p + 4]);
                    if (ln < 0 || p + 5 + ln > stop) {
                        code = VALUE_OUTSIDE; at_byte = p + 1; detail = ln; break;
                    }
                    st[at] = p + 5;
                    ln_out[at] = ln;
                    p += 5 + ln;
                } else if (k == KIND_NULL || k == KIND_UNCHANGED) {
                    st[at] = p + 1;
                    ln_out[at] = 0;
                    p += 1;
                } else {
                    code = BAD_KIND; at_byte = p; detail = k; break;
                }
            }
            en[i] = p;
        }
        Py_END_ALLOW_THREADS
        if (code)
            result = Py_BuildValue("(iLL)", code, (long long)at_byte, (long long)detail);
        else
            result = Py_NewRef(Py_None);
    }
done:
    PyBuffer_Release(&a); PyBuffer_Release(&pos); PyBuffer_Release(&lim);
    PyBuffer_Release(&start); PyBuffer_Release(&length); PyBuffer_Release(&kind);
    PyBuffer_Release(&end);
    return result;
}

/* string_views(a, starts, lengths, valid, views) -> None | (code, byte, detail)
 *
 * Arrow StringView entries (16 bytes each: int32 length, then the value inline when it is at
 * most 12 bytes, else a 4-byte prefix, buffer index 0 and the offset into `a`); an invalid
 * (null) value gets length 0. Short values are copied 12 bytes at a time, so the buffer must
 * have 12 bytes after its last value (decode() requires 16 of padding); the bytes after a short
 * value are not zeroed (their consumers read `length` bytes). */
static PyObject *string_views(PyObject *self, PyObject *args) {
    Py_buffer a, starts, lengths, valid, views;
    if (!PyArg_ParseTuple(args, "y*y*y*y*w*", &a, &starts, &lengths, &valid, &views))
        return NULL;
    PyObject *result = NULL;
    int64_t total = starts.len / 8;
    if (check(&starts, 8, total, "starts") || check(&lengths, 8, total, "lengths") ||
        check(&valid, 1, total, "valid") || check(&views, 16, total, "views"))
        goto done;
    {
        const uint8_t *buf = a.buf;
        const int64_t alen = a.len;
        const int64_t *sp = starts.buf, *lp = lengths.buf;
        const uint8_t *vp = valid.buf;
        int32_t *out = views.buf;
        int code = 0;
        int64_t at_byte = 0;
        Py_BEGIN_ALLOW_THREADS
        for (int64_t i = 0; i < total; i++) {
            int64_t st = sp[i];
            int64_t ln = vp[i] ? lp[i] : 0;
            int32_t *v = out + 4 * i;
            if (st < 0 || ln < 0 || st + 12 > alen || st + ln > alen || st > INT32_MAX ||
                ln > INT32_MAX) {
                code = VIEW_OUTSIDE; at_byte = st; break;
            }
            v[0] = (int32_t)ln;
            if (ln <= 12) {
                memcpy(v + 1, buf + st, 12);
            } else {
                memcpy(v + 1, buf + st, 4);
                v[2] = 0;
                v[3] = (int32_t)st;
            }
        }
        Py_END_ALLOW_THREADS
        if (code)
            result = Py_BuildValue("(iLL)", code, (long long)at_byte, 0LL);
        else
            result = Py_NewRef(Py_None);
    }
done:
    PyBuffer_Release(&a); PyBuffer_Release(&starts); PyBuffer_Release(&lengths);
    PyBuffer_Release(&valid); PyBuffer_Release(&views);
    return result;
}

static PyMethodDef methods[] = {
    {"walk_tuples", walk_tuples, METH_VARARGS, "Walk TupleData of many tuples, bounds-checked."},
    {"string_views", string_views, METH_VARARGS, "Arrow StringView entries for many values."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_pgoutput_kernels", "Compiled kernels of the pgoutput decoder.", -1,
    methods,
};

PyMODINIT_FUNC PyInit__pgoutput_kernels(void) { return PyModule_Create(&module); }
