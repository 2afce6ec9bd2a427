/* Small helpers shared by the io and data code. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "internal.h"

int ttt__errbuf(char *err, size_t err_len, const char *fmt, ...) {
    if (err && err_len) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, err_len, fmt, ap);
        va_end(ap);
    }
    return TTT_ERR;
}

int ttt__grow(void **p, size_t *cap, size_t need, size_t sz) {
    if (need <= *cap) return TTT_OK;
    size_t c = *cap ? *cap : 16;
    while (c < need) {
        if (c > SIZE_MAX / 2 / sz) return TTT_ERR;
        c *= 2;
    }
    void *q = realloc(*p, c * sz);
    if (!q) return TTT_ERR;
    *p = q;
    *cap = c;
    return TTT_OK;
}


uint64_t ttt__fnv1a(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}
