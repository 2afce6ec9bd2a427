/* The one atomic writer and whole-file reader (include/ttt/fileio.h). */
#include "ttt/fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ttt/tensor.h"

static int fail(char *err, size_t n, int e, const char *fmt, ...) {
    if (err && n) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, n, fmt, ap);
        va_end(ap);
    }
    errno = e;
    return TTT_ERR;
}

int ttt_sync_parent_dir(const char *path) {
    if (!path) return errno = EINVAL, -1;
    const char *slash = strrchr(path, '/');
    char *dir;
    if (!slash) dir = strdup(".");
    else if (slash == path) dir = strdup("/");
    else if ((dir = malloc((size_t)(slash - path) + 1))) memcpy(dir, path, (size_t)(slash - path)), dir[slash - path] = 0;
    if (!dir) return errno = ENOMEM, -1;
    int fd = open(dir, O_RDONLY | O_DIRECTORY);
    free(dir);
    if (fd < 0) return -1;
    int rc = fsync(fd), e = errno;
    close(fd);
    /* some file systems cannot fsync a directory; that is not a failed write */
    if (rc != 0 && (e == EINVAL || e == EBADF || e == ENOTSUP)) rc = 0;
    errno = e;
    return rc;
}

int ttt_atomic_open(ttt_atomic_file *af, const char *path, char *err, size_t err_len) {
    if (!af) return fail(err, err_len, EINVAL, "ttt_atomic_open: no file handle");
    *af = (ttt_atomic_file){0};
    if (!path || !*path) return fail(err, err_len, EINVAL, "ttt_atomic_open: no path");
    size_t n = strlen(path);
    af->path = strdup(path);
    af->tmp = malloc(n + 5);
    if (!af->path || !af->tmp) {
        free(af->path), free(af->tmp);
        *af = (ttt_atomic_file){0};
        return fail(err, err_len, ENOMEM, "cannot write %s: out of memory", path);
    }
    memcpy(af->tmp, path, n);
    memcpy(af->tmp + n, ".tmp", 5);
    if (!(af->f = fopen(af->tmp, "wb"))) {
        int e = errno;
        fail(err, err_len, e, "cannot write %s: cannot create %s: %s", path, af->tmp, strerror(e));
        free(af->path), free(af->tmp);
        *af = (ttt_atomic_file){0};
        return TTT_ERR;
    }
    return TTT_OK;
}

void ttt_atomic_abort(ttt_atomic_file *af) {
    if (!af) return;
    int e = errno;
    if (af->f) fclose(af->f);
    if (af->tmp) remove(af->tmp);
    free(af->path), free(af->tmp);
    *af = (ttt_atomic_file){0};
    errno = e;
}

int ttt_atomic_commit(ttt_atomic_file *af, char *err, size_t err_len) {
    if (!af || !af->f) return fail(err, err_len, EINVAL, "ttt_atomic_commit: the file is not open");
    int ok = fflush(af->f) == 0 && fsync(fileno(af->f)) == 0 && !ferror(af->f);
    int e = ok ? 0 : errno ? errno : EIO;
    FILE *f = af->f;
    af->f = NULL;
    if (fclose(f) != 0 && ok) ok = 0, e = errno;
    if (ok && rename(af->tmp, af->path) != 0) ok = 0, e = errno;
    if (!ok) {
        char path[4096];
        snprintf(path, sizeof path, "%s", af->path);
        ttt_atomic_abort(af);
        return fail(err, err_len, e, "cannot write %s: %s", path, strerror(e));
    }
    int rc = ttt_sync_parent_dir(af->path) == 0 ? TTT_OK : TTT_ERR;
    e = errno;
    if (rc != TTT_OK) fail(err, err_len, e, "%s: written, but its directory could not be synced: %s", af->path, strerror(e));
    free(af->path), free(af->tmp);
    *af = (ttt_atomic_file){0};
    errno = e;
    return rc;
}

int ttt_write_file_atomic(const char *path, const void *data, size_t len, char *err, size_t err_len) {
    if (len && !data) return fail(err, err_len, EINVAL, "ttt_write_file_atomic: %s: no data", path ? path : "(null)");
    ttt_atomic_file af;
    if (ttt_atomic_open(&af, path, err, err_len) != TTT_OK) return TTT_ERR;
    if (len && fwrite(data, 1, len, af.f) != len) {
        int e = errno;
        ttt_atomic_abort(&af);
        return fail(err, err_len, e, "cannot write %s: %s", path, strerror(e));
    }
    return ttt_atomic_commit(&af, err, err_len);
}

int ttt_write_files_atomic(int n, const char *const *paths, const void *const *data, const size_t *lens, char *err,
                           size_t err_len) {
    enum { MAX_FILES = 16 };
    if (n < 1 || n > MAX_FILES || !paths || !data || !lens)
        return fail(err, err_len, EINVAL, "ttt_write_files_atomic: 1 to %d files, with paths, data and lengths", MAX_FILES);
    ttt_atomic_file af[MAX_FILES] = {{0}};
    int i = 0, e = 0;
    /* every file complete and durable under its temporary name ... */
    for (; i < n; i++) {
        if (ttt_atomic_open(&af[i], paths[i], err, err_len) != TTT_OK) goto undo;
        FILE *f = af[i].f;
        int ok = (!lens[i] || (data[i] && fwrite(data[i], 1, lens[i], f) == lens[i])) && fflush(f) == 0 &&
                 fsync(fileno(f)) == 0;
        e = ok ? 0 : errno ? errno : EIO;
        af[i].f = NULL;
        if (fclose(f) != 0 && ok) ok = 0, e = errno;
        if (!ok) {
            fail(err, err_len, e, "cannot write %s: %s", paths[i], strerror(e));
            i++;
            goto undo;
        }
    }
    /* ... before the first rename: what a kill can leave mixed is only the few microseconds of these renames */
    for (int k = 0; k < n; k++)
        if (rename(af[k].tmp, af[k].path) != 0) {
            e = errno;
            fail(err, err_len, e, "cannot write %s: %s%s", paths[k], strerror(e),
                 k ? " (the files before it in the set were already replaced)" : "");
            for (int j = k; j < n; j++) ttt_atomic_abort(&af[j]);
            for (int j = 0; j < k; j++) free(af[j].path), free(af[j].tmp);
            errno = e;
            return TTT_ERR;
        }
    int rc = TTT_OK;
    for (int k = 0; k < n; k++) {
        if (rc == TTT_OK && ttt_sync_parent_dir(af[k].path) != 0) {
            e = errno;
            rc = fail(err, err_len, e, "%s: written, but its directory could not be synced: %s", af[k].path, strerror(e));
        }
        free(af[k].path), free(af[k].tmp);
    }
    return rc;
undo:
    e = errno;
    for (int k = 0; k < i; k++) ttt_atomic_abort(&af[k]);
    errno = e;
    return TTT_ERR;
}

int ttt_read_file(const char *path, char **data, size_t *len, char *err, size_t err_len) {
    if (data) *data = NULL;
    if (len) *len = 0;
    if (!path || !data) return fail(err, err_len, EINVAL, "ttt_read_file: no %s", path ? "output" : "path");
    FILE *f = fopen(path, "rb");
    if (!f) return fail(err, err_len, errno, "cannot open %s: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) == 0 && S_ISDIR(st.st_mode)) {
        fclose(f);
        return fail(err, err_len, EISDIR, "%s: is a directory", path);
    }
    /* read to the end rather than trusting the size: pipes and growing files have none */
    size_t cap = st.st_size > 0 ? (size_t)st.st_size + 1 : 1 << 16, n = 0;
    char *buf = malloc(cap);
    while (buf) {
        n += fread(buf + n, 1, cap - 1 - n, f);
        if (n < cap - 1) break;
        char *b = realloc(buf, cap * 2);
        if (!b) free(buf);
        buf = b, cap *= 2;
    }
    if (!buf) {
        fclose(f);
        return fail(err, err_len, ENOMEM, "%s: out of memory", path);
    }
    if (ferror(f)) {
        int e = errno ? errno : EIO;
        fclose(f), free(buf);
        return fail(err, err_len, e, "%s: read error: %s", path, strerror(e));
    }
    fclose(f);
    buf[n] = 0;
    *data = buf;
    if (len) *len = n;
    return TTT_OK;
}
