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
#define KIND_BINARY 'b'

/* Error codes, returned as (code, byte position, detail) */
#define KIND_PAST_END 1  /* a column's kind byte lies at or past the message end */
#define HEADER_PAST_END 2 /* a text value's int32 length runs past the message end */
#define VALUE_OUTSIDE 3  /* a value's length is negative or runs past the message end */
#define BAD_KIND 4       /* a kind byte other than t/b/n/u (detail: the byte) */
#define VIEW_OUTSIDE 5   /* a StringView would reference bytes outside the buffer */

static int check(Py_buffer *b, Py_ssize_t itemsize, Py_ssize_t items, const char *name) {
    if (b->len != itemsize * items) {
        PyErr_Format(PyExc_ValueError, "%s: %zd bytes, expected %zd", name, b->len,
                     itemsize * items);
        return -1;
    }
    return 0;
}

/* A kernel's outcome: None, or the (code, byte position, detail) of what it found wrong. */
static PyObject *outcome(int code, int64_t at_byte, int64_t detail) {
    if (code)
        return Py_BuildValue("(iLL)", code, (long long)at_byte, (long long)detail);
    return Py_NewRef(Py_None);
}

/* The values the last three kernels read: a buffer, and per value its start, length and
 * whether it is one (not NULL). */
typedef struct {
    Py_buffer a, starts, lengths, valid;
    int64_t total;
} Values;

static int values_check(Values *v) {
    v->total = v->starts.len / 8;
    return check(&v->starts, 8, v->total, "starts") ||
           check(&v->lengths, 8, v->total, "lengths") || check(&v->valid, 1, v->total, "valid");
}

static void values_release(Values *v, Py_buffer *out) {
    PyBuffer_Release(&v->a); PyBuffer_Release(&v->starts); PyBuffer_Release(&v->lengths);
    PyBuffer_Release(&v->valid); PyBuffer_Release(out);
}

/* Does [st, st + ln) lie inside a buffer of `alen` bytes? */
static int inside(int64_t st, int64_t ln, int64_t alen) {
    return st >= 0 && ln >= 0 && st + ln <= alen;
}

/* walk_tuples(a, pos, lim, ncols, start, length, kind, end) -> None | (code, byte, detail)
 *
 * Walks m TupleData bodies (after their int16 column count): tuple i starts at pos[i] and must
 * end by lim[i]. Outputs are column-major (ncols x m): value start, length (0 unless text or
 * binary) and kind byte; end[i] is the position after tuple i. */
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
                if (k == KIND_TEXT || k == KIND_BINARY) {
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
        result = outcome(code, at_byte, detail);
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
    Values v;
    Py_buffer views;
    if (!PyArg_ParseTuple(args, "y*y*y*y*w*", &v.a, &v.starts, &v.lengths, &v.valid, &views))
        return NULL;
    PyObject *result = NULL;
    if (values_check(&v) || check(&views, 16, v.total, "views"))
        goto done;
    {
        const uint8_t *buf = v.a.buf;
        const int64_t alen = v.a.len, total = v.total;
        const int64_t *sp = v.starts.buf, *lp = v.lengths.buf;
        const uint8_t *vp = v.valid.buf;
        int32_t *out = views.buf;
        int code = 0;
        int64_t at_byte = 0;
        Py_BEGIN_ALLOW_THREADS
        for (int64_t i = 0; i < total; i++) {
            int64_t st = sp[i];
            int64_t ln = vp[i] ? lp[i] : 0;
            int32_t *view = out + 4 * i;
            if (!inside(st, ln, alen) || st + 12 > alen || st > INT32_MAX || ln > INT32_MAX) {
                code = VIEW_OUTSIDE; at_byte = st; break;
            }
            view[0] = (int32_t)ln;
            if (ln <= 12) {
                memcpy(view + 1, buf + st, 12);
            } else {
                memcpy(view + 1, buf + st, 4);
                view[2] = 0;
                view[3] = (int32_t)st;
            }
        }
        Py_END_ALLOW_THREADS
        result = outcome(code, at_byte, 0);
    }
done:
    values_release(&v, &views);
    return result;
}

/* numeric_text(a, starts, lengths, valid, offsets) -> bytes | (code, byte, detail)
 *
 * PostgreSQL's text (numeric_out) of binary numerics (numeric_send: int16 ndigits, int16 weight,
 * uint16 sign, uint16 dscale, then ndigits base-10000 int16 digits), as the data of an Arrow
 * string array whose int64 offsets (total + 1) are written to `offsets`; an invalid (null)
 * value is empty. A value whose length does not match its digit count, or with a digit, sign or
 * scale numeric_send never writes, is an error (its start in detail). */
#define BAD_NUMERIC 6
static int64_t numeric_len(const uint8_t *p, int64_t ln) {
    if (ln < 8) return -1;
    int ndigits = (int16_t)((p[0] << 8) | p[1]);
    int weight = (int16_t)((p[2] << 8) | p[3]);
    int sign = (p[4] << 8) | p[5];
    int dscale = (p[6] << 8) | p[7];
    if (ndigits < 0 || ln != 8 + 2 * (int64_t)ndigits || dscale > 0x3FFF) return -1;
    if (sign == 0xC000) return ndigits == 0 ? 3 : -1;              /* NaN */
    if (sign == 0xD000) return ndigits == 0 ? 8 : -1;              /* Infinity */
    if (sign == 0xF000) return ndigits == 0 ? 9 : -1;              /* -Infinity */
    if (sign != 0 && sign != 0x4000) return -1;
    for (int d = 0; d < ndigits; d++)
        if (((p[8 + 2 * d] << 8) | p[9 + 2 * d]) > 9999) return -1;
    int64_t n = (sign == 0x4000) + 1; /* the integer part's first digit */
    if (weight >= 0) {                /* its first group is printed without leading zeros */
        int first = ndigits > 0 ? ((p[8] << 8) | p[9]) : 0;
        n += (first >= 10) + (first >= 100) + (first >= 1000) + 4 * (int64_t)weight;
    }
    return n + (dscale > 0 ? 1 + dscale : 0);
}

/* The four decimal digits of base-10000 digit `d` (0 outside the value's digits). */
static void numeric_group(const uint8_t *p, int ndigits, int d, char four[4]) {
    int dig = d >= 0 && d < ndigits ? ((p[8 + 2 * d] << 8) | p[9 + 2 * d]) : 0;
    four[0] = '0' + dig / 1000;
    four[1] = '0' + dig / 100 % 10;
    four[2] = '0' + dig / 10 % 10;
    four[3] = '0' + dig % 10;
}

static int64_t numeric_write(const uint8_t *p, char *out) {
    int ndigits = (int16_t)((p[0] << 8) | p[1]);
    int weight = (int16_t)((p[2] << 8) | p[3]);
    int sign = (p[4] << 8) | p[5];
    int dscale = (p[6] << 8) | p[7];
    if (sign == 0xC000) { memcpy(out, "NaN", 3); return 3; }
    if (sign == 0xD000) { memcpy(out, "Infinity", 8); return 8; }
    if (sign == 0xF000) { memcpy(out, "-Infinity", 9); return 9; }
    char *o = out;
    if (sign == 0x4000) *o++ = '-';
    if (weight < 0) {
        *o++ = '0';
    } else {
        for (int d = 0; d <= weight; d++) {
            char four[4];
            numeric_group(p, ndigits, d, four);
            int skip = 0;
            if (d == 0) /* the first group is printed without leading zeros */
                while (skip < 3 && four[skip] == '0') skip++;
            memcpy(o, four + skip, 4 - skip);
            o += 4 - skip;
        }
    }
    if (dscale > 0) {
        *o++ = '.';
        for (int i = 0, d = weight + 1; i < dscale; d++) {
            char four[4];
            numeric_group(p, ndigits, d, four);
            for (int k = 0; k < 4 && i < dscale; k++, i++) *o++ = four[k];
        }
    }
    return o - out;
}

static PyObject *numeric_text(PyObject *self, PyObject *args) {
    Values v;
    Py_buffer offsets;
    if (!PyArg_ParseTuple(args, "y*y*y*y*w*", &v.a, &v.starts, &v.lengths, &v.valid, &offsets))
        return NULL;
    PyObject *result = NULL;
    if (values_check(&v) || check(&offsets, 8, v.total + 1, "offsets"))
        goto done;
    {
        const uint8_t *buf = v.a.buf;
        const int64_t alen = v.a.len, total = v.total;
        const int64_t *sp = v.starts.buf, *lp = v.lengths.buf;
        const uint8_t *vp = v.valid.buf;
        int64_t *off = offsets.buf;
        int code = 0;
        int64_t at_byte = 0, size = 0;
        off[0] = 0;
        Py_BEGIN_ALLOW_THREADS
        for (int64_t i = 0; i < total; i++) {
            int64_t st = sp[i], ln = lp[i], n = 0;
            if (vp[i]) {
                if (!inside(st, ln, alen)) { code = VIEW_OUTSIDE; at_byte = st; break; }
                n = numeric_len(buf + st, ln);
                if (n < 0) { code = BAD_NUMERIC; at_byte = st; break; }
            }
            size += n;
            off[i + 1] = size;
        }
        Py_END_ALLOW_THREADS
        if (code) {
            result = outcome(code, at_byte, 0);
            goto done;
        }
        result = PyBytes_FromStringAndSize(NULL, size);
        if (result == NULL) goto done;
        char *out = PyBytes_AS_STRING(result);
        Py_BEGIN_ALLOW_THREADS
        for (int64_t i = 0; i < total; i++)
            if (vp[i]) numeric_write(buf + sp[i], out + off[i]);
        Py_END_ALLOW_THREADS
    }
done:
    values_release(&v, &offsets);
    return result;
}

/* fixed_values(a, starts, lengths, valid, width, swap, out) -> None | (code, byte, detail)
 *
 * The `width` bytes of each fixed-size binary value into `out` (total x width), reversed with
 * `swap` (PostgreSQL sends integers and floats big-endian; the supported machines are
 * little-endian); an invalid (null) value is zeros. A valid value whose length is not `width`
 * is an error (detail: its length). */
#define BAD_WIDTH 7
static PyObject *fixed_values(PyObject *self, PyObject *args) {
    Values v;
    Py_buffer out;
    Py_ssize_t width;
    int swap;
    if (!PyArg_ParseTuple(args, "y*y*y*y*npw*", &v.a, &v.starts, &v.lengths, &v.valid, &width,
                          &swap, &out))
        return NULL;
    PyObject *result = NULL;
    if (values_check(&v) || width < 1 || width > 16 || check(&out, width, v.total, "out"))
        goto done;
    {
        const uint8_t *buf = v.a.buf;
        const int64_t alen = v.a.len, total = v.total;
        const int64_t *sp = v.starts.buf, *lp = v.lengths.buf;
        const uint8_t *vp = v.valid.buf;
        uint8_t *o = out.buf;
        int code = 0;
        int64_t at_byte = 0, detail = 0;
        Py_BEGIN_ALLOW_THREADS
        for (int64_t i = 0; i < total; i++, o += width) {
            if (!vp[i]) { memset(o, 0, width); continue; }
            int64_t st = sp[i], ln = lp[i];
            if (ln != width) { code = BAD_WIDTH; at_byte = st; detail = ln; break; }
            if (!inside(st, ln, alen)) { code = VIEW_OUTSIDE; at_byte = st; break; }
            if (swap)
                for (Py_ssize_t k = 0; k < width; k++) o[k] = buf[st + width - 1 - k];
            else
                memcpy(o, buf + st, width);
        }
        Py_END_ALLOW_THREADS
        result = outcome(code, at_byte, detail);
    }
done:
    values_release(&v, &out);
    return result;
}

static PyMethodDef methods[] = {
    {"walk_tuples", walk_tuples, METH_VARARGS, "Walk TupleData of many tuples, bounds-checked."},
    {"string_views", string_views, METH_VARARGS, "Arrow StringView entries for many values."},
    {"numeric_text", numeric_text, METH_VARARGS, "PostgreSQL's text of binary numerics."},
    {"fixed_values", fixed_values, METH_VARARGS, "Fixed-size binary values, byte-swapped."},
    {NULL, NULL, 0, NULL},
};

static struct PyModuleDef module = {
    PyModuleDef_HEAD_INIT, "_pgoutput_kernels", "Compiled kernels of the pgoutput decoder.", -1,
    methods,
};

PyMODINIT_FUNC PyInit__pgoutput_kernels(void) { return PyModule_Create(&module); }
