/* Small helpers shared by the io and data code. */
#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

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

/* fsync the directory holding path, so the rename is durable. */
int ttt__sync_dir(const char *path) {
    const char *slash = strrchr(path, '/');
    char *dir;
    if (!slash) dir = strdup(".");
    else if (slash == path) dir = strdup("/");
    else {
        dir = malloc((size_t)(slash - path) + 1);
        if (dir) memcpy(dir, path, (size_t)(slash - path)), dir[slash - path] = 0;
    }
    if (!dir) {
        errno = ENOMEM;
        return -1;
    }
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    free(dir);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    int e = errno;
    close(fd);
    /* some file systems cannot fsync a directory; that is not a failed save */
    if (rc != 0 && (e == EINVAL || e == EBADF || e == ENOTSUP)) rc = 0;
    errno = e;
    return rc;
}

uint64_t ttt__fnv1a(uint64_t h, const void *data, size_t n) {
    const unsigned char *p = data;
    for (size_t i = 0; i < n; i++) h = (h ^ p[i]) * 0x100000001b3ull;
    return h;
}
