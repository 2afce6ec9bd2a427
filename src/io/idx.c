/* IDX reader (MNIST / Fashion-MNIST files), gzipped or plain; see include/ttt/io.h. */
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

#include "../core/engine_private.h"
#include "ttt/io.h"

enum { IDX_UBYTE = 0x08, READ_CHUNK = 1 << 24 };


/* Reads up to n bytes; returns the count read (short only at end of file), or
 * -1 on a read or decompression error. */
static int64_t read_some(gzFile gz, uint8_t *buf, int64_t n) {
    int64_t got = 0;
    while (got < n) {
        int64_t want = n - got < READ_CHUNK ? n - got : READ_CHUNK;  /* gzread takes an unsigned int */
        int r = gzread(gz, buf + got, (unsigned)want);
        if (r < 0) return -1;
        if (r == 0) break;
        got += r;
    }
    return got;
}

/* The zlib message for the last error, or strerror for a system error. */
static const char *gz_message(gzFile gz) {
    int code = 0;
    const char *msg = gzerror(gz, &code);
    if (code == Z_ERRNO) return strerror(errno);
    return msg && *msg ? msg : "unknown error";
}

/* A corrupt or cut-off gzip stream reads short and leaves an error behind:
 * mention it after the truncation message. */
static const char *gz_note(gzFile gz) {
    int code = 0;
    gzerror(gz, &code);
    return code == Z_OK ? "" : code == Z_ERRNO ? " (read error)" : " (gzip stream damaged or cut off)";
}

static int load(gzFile gz, const char *path, ttt_idx *out, char *err, size_t err_len) {
    uint8_t head[4 + 4 * 4];
    int64_t got = read_some(gz, head, 4);
    if (got < 0) return ttt__errbuf(err, err_len, "%s: read error: %s", path, gz_message(gz));
    if (got < 4)
        return ttt__errbuf(err, err_len, "%s: truncated: expected a 4-byte IDX header, got %lld bytes%s", path,
                    (long long)got, gz_note(gz));
    if (head[0] != 0 || head[1] != 0)
        return ttt__errbuf(err, err_len,
                    "%s: bad magic %02x %02x %02x %02x: not an IDX file (the first two bytes must be 0)", path,
                    head[0], head[1], head[2], head[3]);
    if (head[2] != IDX_UBYTE)
        return ttt__errbuf(err, err_len, "%s: unsupported IDX type 0x%02x in magic (only unsigned byte, 0x08, is supported)",
                    path, head[2]);
    int ndim = head[3];
    if (ndim < 1 || ndim > 4)
        return ttt__errbuf(err, err_len, "%s: bad magic: IDX ndim %d (must be 1..4)", path, ndim);

    got = read_some(gz, head + 4, 4 * ndim);
    if (got < 0) return ttt__errbuf(err, err_len, "%s: read error: %s", path, gz_message(gz));
    if (got < 4 * ndim)
        return ttt__errbuf(err, err_len, "%s: truncated: expected %d bytes of dimensions, got %lld%s", path, 4 * ndim,
                    (long long)got, gz_note(gz));
    /* The data size must fit both int64 (element counts) and size_t (malloc). */
    const int64_t limit = (uint64_t)INT64_MAX < (uint64_t)SIZE_MAX ? INT64_MAX : (int64_t)SIZE_MAX;
    int64_t total = 1;
    for (int i = 0; i < ndim; i++) {
        const uint8_t *p = head + 4 + 4 * i;
        int64_t d = (int64_t)p[0] << 24 | (int64_t)p[1] << 16 | (int64_t)p[2] << 8 | p[3];
        if (d == 0) return ttt__errbuf(err, err_len, "%s: IDX dimension %d of %d is 0", path, i, ndim);
        if (total > limit / d)
            return ttt__errbuf(err, err_len, "%s: IDX dimensions overflow: dimension %d (%lld) makes more than %lld bytes",
                        path, i, (long long)d, (long long)limit);
        total *= d;
        out->dims[i] = d;
    }

    /* Grow the buffer as data arrives rather than trusting the header with one
     * big allocation: a damaged header on a small file then fails as
     * "truncated" instead of asking for terabytes. */
    int64_t cap = total < READ_CHUNK ? total : READ_CHUNK, have = 0;
    uint8_t *data = malloc((size_t)cap);
    if (!data) return ttt__errbuf(err, err_len, "%s: out of memory (%lld bytes)", path, (long long)cap);
    for (;;) {
        got = read_some(gz, data + have, cap - have);
        if (got < 0) {
            free(data);
            return ttt__errbuf(err, err_len, "%s: read error: %s", path, gz_message(gz));
        }
        have += got;
        if (have < cap || cap == total) break;  /* end of file, or everything read */
        int64_t next = cap > total / 2 ? total : cap * 2;
        uint8_t *bigger = realloc(data, (size_t)next);
        if (!bigger) {
            free(data);
            return ttt__errbuf(err, err_len, "%s: out of memory (%lld bytes)", path, (long long)next);
        }
        data = bigger;
        cap = next;
    }
    if (have < total) {
        free(data);
        return ttt__errbuf(err, err_len, "%s: truncated: expected %lld bytes of data, got %lld%s", path, (long long)total,
                    (long long)have, gz_note(gz));
    }
    out->ndim = ndim;
    out->data = data;
    return TTT_OK;
}

int ttt_idx_load(const char *path, ttt_idx *out, char *err, size_t err_len) {
    if (out) memset(out, 0, sizeof *out);
    if (!path || !out) return ttt__errbuf(err, err_len, "ttt_idx_load: path or out is NULL");
    errno = 0;
    gzFile gz = gzopen(path, "rb");
    if (!gz) return ttt__errbuf(err, err_len, "cannot open %s: %s", path, errno ? strerror(errno) : "out of memory");
    int rc = load(gz, path, out, err, err_len);
    gzclose(gz);
    if (rc != TTT_OK) memset(out, 0, sizeof *out);  /* dims may be half filled */
    return rc;
}

void ttt_idx_free(ttt_idx *idx) {
    if (!idx) return;
    free(idx->data);
    memset(idx, 0, sizeof *idx);
}

int64_t ttt_idx_count(const ttt_idx *idx) {
    if (!idx || idx->ndim < 1) return 0;
    int64_t n = 1;
    for (int i = 0; i < idx->ndim; i++) n *= idx->dims[i];
    return n;
}

/* ---- Fashion-MNIST ------------------------------------------------------------ */

enum { FMNIST_SIDE = 28, FMNIST_CLASSES = 10 };

static int check_fashion(const char *ipath, const char *lpath, const ttt_idx *im, const ttt_idx *lb, char *err,
                         size_t err_len) {
    if (im->ndim != 3 || im->dims[1] != FMNIST_SIDE || im->dims[2] != FMNIST_SIDE)
        return ttt__errbuf(err, err_len, "%s: expected images [N,28,28], got %d dimensions [%lld,%lld,%lld,...]", ipath,
                    im->ndim, (long long)im->dims[0], (long long)im->dims[1], (long long)im->dims[2]);
    if (lb->ndim != 1)
        return ttt__errbuf(err, err_len, "%s: expected labels [N], got %d dimensions", lpath, lb->ndim);
    if (lb->dims[0] != im->dims[0])
        return ttt__errbuf(err, err_len, "%s has %lld labels but %s has %lld images", lpath, (long long)lb->dims[0], ipath,
                    (long long)im->dims[0]);
    for (int64_t i = 0; i < lb->dims[0]; i++)
        if (lb->data[i] >= FMNIST_CLASSES)
            return ttt__errbuf(err, err_len, "%s: label %lld is %d (must be 0..9)", lpath, (long long)i, lb->data[i]);
    return TTT_OK;
}

int ttt_fashion_mnist_load(const char *dir, int train, ttt_idx *images, ttt_idx *labels, char *err,
                           size_t err_len) {
    if (images) memset(images, 0, sizeof *images);
    if (labels) memset(labels, 0, sizeof *labels);
    if (!images || !labels) return ttt__errbuf(err, err_len, "ttt_fashion_mnist_load: images or labels is NULL");
    if (!dir) dir = TTT_FASHION_MNIST_DIR;
    const char *split = train ? "train" : "t10k";
    char ipath[4096], lpath[4096];
    int ni = snprintf(ipath, sizeof ipath, "%s/%s-images-idx3-ubyte.gz", dir, split);
    int nl = snprintf(lpath, sizeof lpath, "%s/%s-labels-idx1-ubyte.gz", dir, split);
    if (ni < 0 || nl < 0 || (size_t)ni >= sizeof ipath || (size_t)nl >= sizeof lpath)
        return ttt__errbuf(err, err_len, "ttt_fashion_mnist_load: directory name too long: %.64s...", dir);
    if (ttt_idx_load(ipath, images, err, err_len) != TTT_OK) return TTT_ERR;
    if (ttt_idx_load(lpath, labels, err, err_len) != TTT_OK ||
        check_fashion(ipath, lpath, images, labels, err, err_len) != TTT_OK) {
        ttt_idx_free(images);
        ttt_idx_free(labels);
        return TTT_ERR;
    }
    return TTT_OK;
}
