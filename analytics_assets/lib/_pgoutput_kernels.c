/* Compiled kernels for the pgoutput decoder (analytics_assets/lib/pgoutput.py).
 *
 * Two loops that numpy can only express as many whole-array passes: walking the TupleData of
 * many tuples (column by column, each tuple's values laid end to end) and building Arrow
 * StringView entries for the values found. pgoutput.py loads this file's shared library with
 * ctypes when `make install` has built it, and otherwise runs its numpy versions of the same
 * two steps (tests check that both give identical results). Every read is bounds-checked: a
 * malformed message makes the call return an error code, never read past the buffer.
 *
 * Build: cc -O2 -shared -fPIC -o _pgoutput_kernels.so _pgoutput_kernels.c (the Makefile does).
 */
#include <stdint.h>
#include <string.h>

#define KIND_NULL 'n'
#define KIND_UNCHANGED 'u'
#define KIND_TEXT 't'

/* Return codes */
#define OK 0
#define OUT_OF_BOUNDS 1
#define BAD_KIND 2

int pgo_kernels_version(void) { return 1; }

/* Walk `m` TupleData bodies (after their int16 column count) starting at `pos[i]`, `ncols`
 * columns each. Outputs are column-major (ncols x m): value start, length (0 unless text) and
 * kind byte; `end[i]` is the position after tuple i. On BAD_KIND, `*bad` is the kind byte. */
int pgo_walk_tuples(const uint8_t *a, int64_t alen, const int64_t *pos, int64_t m,
                    int64_t ncols, int64_t *start, int64_t *length, uint8_t *kind, int64_t *end,
                    int64_t *bad) {
    for (int64_t i = 0; i < m; i++) {
        int64_t p = pos[i];
        for (int64_t j = 0; j < ncols; j++) {
            if (p < 0 || p >= alen) return OUT_OF_BOUNDS;
            uint8_t k = a[p];
            int64_t at = j * m + i;
            kind[at] = k;
            if (k == KIND_TEXT) {
                if (p + 5 > alen) return OUT_OF_BOUNDS;
                int64_t ln = ((int64_t)a[p + 1] << 24) | ((int64_t)a[p + 2] << 16) |
                             ((int64_t)a[p + 3] << 8) | (int64_t)a[p + 4];
                if (a[p + 1] & 0x80) ln -= ((int64_t)1 << 32); /* int32, as numpy reads it */
                if (ln < 0 || p + 5 + ln > alen) return OUT_OF_BOUNDS;
                start[at] = p + 5;
                length[at] = ln;
                p += 5 + ln;
            } else if (k == KIND_NULL || k == KIND_UNCHANGED) {
                start[at] = p + 1;
                length[at] = 0;
                p += 1;
            } else {
                *bad = k;
                return BAD_KIND;
            }
        }
        end[i] = p;
    }
    return OK;
}

/* Arrow StringView entries (16 bytes each: int32 length, then the value inline when it is at
 * most 12 bytes, else a 4-byte prefix, buffer index 0 and the offset into `a`) for `total`
 * values; an invalid (null) value gets length 0. The buffer must be padded with 12 bytes
 * after its last value (decode() requires 16), since short values are copied 12 bytes at a
 * time; the bytes after a short value are not zeroed (their consumers read `length` bytes). */
int pgo_string_views(const uint8_t *a, int64_t alen, const int64_t *starts,
                     const int64_t *lengths, const uint8_t *valid, int64_t total,
                     int32_t *views) {
    for (int64_t i = 0; i < total; i++) {
        int64_t st = starts[i];
        int32_t ln = valid[i] ? (int32_t)lengths[i] : 0;
        int32_t *v = views + 4 * i;
        if (st < 0 || st + 12 > alen || st + ln > alen || st > INT32_MAX) return OUT_OF_BOUNDS;
        v[0] = ln;
        if (ln <= 12) {
            memcpy(v + 1, a + st, 12);
        } else {
            memcpy(v + 1, a + st, 4);
            v[2] = 0;
            v[3] = (int32_t)st;
        }
    }
    return OK;
}
