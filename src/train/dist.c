/* Data-parallel training (include/ttt/dist.h, docs/data-parallel.md): ranks from
 * MPI, transfers with deadlines that name a missing rank, sums in rank order,
 * and ZeRO-1 (the optimizer state sharded, the parameters all-gathered).
 * Public headers only, like the runner; the NCCL transport is dist_nccl.c. */
#include "ttt/dist.h"

#include <math.h>
#include <sched.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "dist_internal.h"
#include "ttt/autodiff.h"
#include "ttt/ops.h"
#include "ttt/runtime.h"

#ifdef TTT_HAVE_MPI
#include <mpi.h>
#endif

struct ttt_dist {
    int rank, size, local_rank, local_size;
    ttt_dist_config cfg;
    int mpi_here; /* MPI_Init was called by ttt_dist_init */
    int tag;      /* each collective its own tag, so late messages never match a later one */
#ifdef TTT_HAVE_MPI
    MPI_Comm comm;
#endif
    dist_nccl *nccl;
    int nccl_failed;     /* NCCL could not open (AUTO falls back to MPI through the host) */
    char describe[320];  /* ttt_dist_transport_name's answer after such a fallback */
    int stage_cpu;       /* TTT_DIST_STAGE=1: CPU tensors go the way of CUDA ones without NCCL (tests) */
};

static int set_err(char *err, size_t n, const char *fmt, ...) {
    if (err && n) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, n, fmt, ap);
        va_end(ap);
    }
    return TTT_ERR;
}

static int env_int(const char *name) {
    const char *v = getenv(name);
    return v && *v ? atoi(v) : 0;
}

int ttt_dist_launched_many(void) {
    return env_int("OMPI_COMM_WORLD_SIZE") > 1 || env_int("PMI_SIZE") > 1 || env_int("SLURM_STEP_NUM_TASKS") > 1;
}

int ttt_dist_rank(const ttt_dist *d) { return d ? d->rank : 0; }
int ttt_dist_size(const ttt_dist *d) { return d ? d->size : 1; }
int ttt_dist_local_rank(const ttt_dist *d) { return d ? d->local_rank : 0; }
int ttt_dist_local_size(const ttt_dist *d) { return d ? d->local_size : 1; }

int ttt_dist_init(const ttt_dist_config *cfg, ttt_dist **out, char *err, size_t err_len) {
    if (!out) return set_err(err, err_len, "ttt_dist_init: no output");
    *out = NULL;
    ttt_dist *d = calloc(1, sizeof *d);
    if (!d) return set_err(err, err_len, "out of host memory");
    d->size = d->local_size = 1;
    if (cfg) d->cfg = *cfg;
    if (!(d->cfg.timeout_s > 0)) d->cfg.timeout_s = 300;
    if (!(d->cfg.bucket_mb > 0)) d->cfg.bucket_mb = 25;
    d->stage_cpu = env_int("TTT_DIST_STAGE") != 0;
    if (d->cfg.transport < TTT_DIST_AUTO || d->cfg.transport > TTT_DIST_NCCL) {
        const int tr = d->cfg.transport;
        free(d);
        return set_err(err, err_len, "ttt_dist_init: unknown transport %d", tr);
    }
    if (d->cfg.transport == TTT_DIST_NCCL && !dist_nccl_available()) {
        free(d);
        return set_err(err, err_len, "the NCCL transport was asked for, but this ttt was built without NCCL "
                                     "(cmake -DTTT_NCCL=ON; scripts/get-nccl.sh)");
    }
#ifdef TTT_HAVE_MPI
    if (ttt_dist_launched_many()) {
        int inited = 0;
        MPI_Initialized(&inited);
        if (!inited) {
            if (MPI_Init(NULL, NULL) != MPI_SUCCESS) {
                free(d);
                return set_err(err, err_len, "MPI_Init failed");
            }
            d->mpi_here = 1;
        }
        MPI_Comm_dup(MPI_COMM_WORLD, &d->comm);
        MPI_Comm_set_errhandler(d->comm, MPI_ERRORS_RETURN);
        MPI_Comm_rank(d->comm, &d->rank);
        MPI_Comm_size(d->comm, &d->size);
        MPI_Comm local;
        MPI_Comm_split_type(d->comm, MPI_COMM_TYPE_SHARED, d->rank, MPI_INFO_NULL, &local);
        MPI_Comm_rank(local, &d->local_rank);
        MPI_Comm_size(local, &d->local_size);
        MPI_Comm_free(&local);
    }
#else
    if (ttt_dist_launched_many()) {
        free(d);
        return set_err(err, err_len, "a launcher started several processes, but this ttt was built without MPI "
                                     "(install libopenmpi-dev: scripts/install-deps.sh, and rebuild)");
    }
#endif
    *out = d;
    return TTT_OK;
}

void ttt_dist_finalize(ttt_dist *d) {
    if (!d) return;
    dist_nccl_close(d->nccl);
#ifdef TTT_HAVE_MPI
    if (d->size > 1 || d->mpi_here) {
        MPI_Comm_free(&d->comm);
        if (d->mpi_here) MPI_Finalize();
    }
#endif
    free(d);
}

void ttt_dist_abort(ttt_dist *d, int code) {
#ifdef TTT_HAVE_MPI
    if (d && d->size > 1) {
        fflush(stdout), fflush(stderr);
        MPI_Abort(MPI_COMM_WORLD, code);
    }
#else
    (void)d, (void)code;
#endif
}

const char *ttt_dist_transport_name(const ttt_dist *d, ttt_device device) {
    if (!d || d->size == 1) return "none";
    if (device == TTT_CUDA && dist_nccl_available() && d->cfg.transport != TTT_DIST_MPI && !d->nccl_failed)
        return "nccl";
    if (device == TTT_CUDA && d->nccl_failed) return d->describe;
    return device == TTT_CUDA ? "mpi (staged through host memory)" : "mpi";
}

/* ---- MPI transfers with a deadline --------------------------------------------------------- */

#ifdef TTT_HAVE_MPI
static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

enum { MAX_MSG = 1 << 30 }; /* MPI counts are ints: larger transfers go in pieces */

static int pieces(size_t bytes) { return bytes ? (int)((bytes + MAX_MSG - 1) / MAX_MSG) : 0; }

/* Posts every receive and send, then waits for all of them until the
 * deadline; a peer whose data has not come by then is named. */
static int mpi_exchange(ttt_dist *d, const dist_xfer *sends, int ns, const dist_xfer *recvs, int nr, const char *what,
                        char *err, size_t err_len) {
    int total = 0;
    for (int i = 0; i < ns; i++) total += pieces(sends[i].bytes);
    for (int i = 0; i < nr; i++) total += pieces(recvs[i].bytes);
    if (!total) return TTT_OK;
    MPI_Request *req = malloc(sizeof *req * (size_t)total);
    int *peer = malloc(sizeof *peer * (size_t)total * 2), *idx = peer + total;
    if (!req || !peer) {
        free(req), free(peer);
        return set_err(err, err_len, "out of host memory");
    }
    const int tag = d->tag = (d->tag + 1) % 30000;
    int k = 0, rc = MPI_SUCCESS;
    for (int i = 0; i < nr; i++)
        for (size_t off = 0; off < recvs[i].bytes && rc == MPI_SUCCESS; off += MAX_MSG) {
            const size_t b = recvs[i].bytes - off < MAX_MSG ? recvs[i].bytes - off : MAX_MSG;
            peer[k] = recvs[i].peer; /* >= 0: a receive */
            rc = MPI_Irecv((char *)recvs[i].p + off, (int)b, MPI_BYTE, recvs[i].peer, tag, d->comm, &req[k++]);
        }
    for (int i = 0; i < ns; i++)
        for (size_t off = 0; off < sends[i].bytes && rc == MPI_SUCCESS; off += MAX_MSG) {
            const size_t b = sends[i].bytes - off < MAX_MSG ? sends[i].bytes - off : MAX_MSG;
            peer[k] = -1 - sends[i].peer; /* < 0: a send */
            rc = MPI_Isend((char *)sends[i].p + off, (int)b, MPI_BYTE, sends[i].peer, tag, d->comm, &req[k++]);
        }
    if (rc != MPI_SUCCESS) {
        free(req), free(peer);
        return set_err(err, err_len, "rank %d: %s: posting MPI transfers failed", d->rank, what);
    }
    const double t0 = now_s(), deadline = t0 + d->cfg.timeout_s;
    int left = total;
    while (left > 0) {
        int done = 0;
        if (MPI_Testsome(total, req, &done, idx, MPI_STATUSES_IGNORE) != MPI_SUCCESS) {
            free(req), free(peer);
            return set_err(err, err_len, "rank %d: %s: an MPI transfer failed", d->rank, what);
        }
        if (done != MPI_UNDEFINED) left -= done;
        if (left == 0) break;
        if (now_s() > deadline) {
            /* name the ranks whose data did not come, else those that did not take ours */
            char who[256] = "";
            size_t u = 0;
            for (int pass = 0; pass < 2 && !u; pass++)
                for (int i = 0; i < total; i++) {
                    if (req[i] == MPI_REQUEST_NULL || (pass == 0) != (peer[i] >= 0)) continue;
                    const int p = peer[i] >= 0 ? peer[i] : -1 - peer[i];
                    char tok[16];
                    snprintf(tok, sizeof tok, "rank %d", p);
                    if (!strstr(who, tok) && u + 24 < sizeof who)
                        u += (size_t)snprintf(who + u, sizeof who - u, "%s%s", u ? ", " : "", tok);
                }
            int any_recv = 0;
            for (int i = 0; i < total; i++) any_recv |= req[i] != MPI_REQUEST_NULL && peer[i] >= 0;
            set_err(err, err_len, "rank %d: %s: %s %s for %g s (dead or hung; --dp-timeout); ending the job",
                    d->rank, what, u ? who : "a peer", any_recv ? "sent nothing" : "took nothing", d->cfg.timeout_s);
            free(req), free(peer); /* the requests stay posted: the job is ending */
            return TTT_ERR;
        }
        /* Open MPI moves large messages only while it is polled: poll hard (yielding the core)
         * for half a second, then gently: a long wait is a peer's evaluation or a failure */
        if (now_s() - t0 < 0.5) sched_yield();
        else nanosleep(&(struct timespec){0, 1000000}, NULL);
    }
    free(req), free(peer);
    return TTT_OK;
}
#else
static int mpi_exchange(ttt_dist *d, const dist_xfer *sends, int ns, const dist_xfer *recvs, int nr, const char *what,
                        char *err, size_t err_len) {
    (void)sends, (void)recvs;
    if (ns == 0 && nr == 0) return TTT_OK;
    return set_err(err, err_len, "rank %d: %s: built without MPI", d->rank, what);
}
#endif

int ttt_dist_allgather_f64(ttt_dist *d, const double *in, double *out, int n, const char *what, char *err,
                           size_t err_len) {
    const int R = ttt_dist_size(d), r = ttt_dist_rank(d);
    if (n < 0 || (n && (!in || !out))) return set_err(err, err_len, "ttt_dist_allgather_f64: bad arguments");
    memmove(out + (size_t)r * (size_t)n, in, sizeof(double) * (size_t)n);
    if (R == 1) return TTT_OK;
    dist_xfer *s = malloc(sizeof *s * (size_t)R * 2), *v = s ? s + R : NULL;
    if (!s) return set_err(err, err_len, "out of host memory");
    int k = 0;
    for (int p = 0; p < R; p++)
        if (p != r) {
            s[k] = (dist_xfer){p, out + (size_t)r * (size_t)n, sizeof(double) * (size_t)n};
            v[k++] = (dist_xfer){p, out + (size_t)p * (size_t)n, sizeof(double) * (size_t)n};
        }
    int rc = mpi_exchange(d, s, k, v, k, what, err, err_len);
    free(s);
    return rc;
}

int ttt_dist_sum_f64(ttt_dist *d, const double *in, double *out, int n, const char *what, char *err, size_t err_len) {
    const int R = ttt_dist_size(d);
    double *all = malloc(sizeof(double) * (size_t)R * (size_t)(n > 0 ? n : 1));
    if (!all) return set_err(err, err_len, "out of host memory");
    int rc = ttt_dist_allgather_f64(d, in, all, n, what, err, err_len);
    for (int i = 0; i < n && rc == TTT_OK; i++) {
        double s = all[i];
        for (int p = 1; p < R; p++) s += all[(size_t)p * (size_t)n + (size_t)i];
        out[i] = s;
    }
    free(all);
    return rc;
}

int ttt_dist_any(ttt_dist *d, int flag, int *first_rank, const char *what, char *err, size_t err_len) {
    const int R = ttt_dist_size(d);
    double f = flag ? 1 : 0, *all = malloc(sizeof(double) * (size_t)R);
    if (!all) return set_err(err, err_len, "out of host memory");
    int rc = ttt_dist_allgather_f64(d, &f, all, 1, what, err, err_len), who = -1;
    for (int p = 0; p < R && rc == TTT_OK && who < 0; p++)
        if (all[p] != 0) who = p;
    free(all);
    if (first_rank) *first_rank = who;
    return rc == TTT_OK ? (who >= 0) : TTT_ERR;
}

/* ---- transfers of tensor slices -------------------------------------------------------------- */

/* A slice of a dense persistent 1-d tensor. */
typedef struct {
    int peer;
    ttt_tensor *t;
    int64_t off, n;
} tx;

static int want_nccl(ttt_dist *d, ttt_ctx *ctx) {
    return ttt_ctx_device(ctx) == TTT_CUDA && dist_nccl_available() && d->cfg.transport != TTT_DIST_MPI &&
           !d->nccl_failed;
}

/* Opens NCCL on first use: rank 0's id reaches every rank over MPI. */
static int nccl_ready(ttt_dist *d, char *err, size_t err_len) {
    if (d->nccl) return TTT_OK;
    unsigned char id[DIST_NCCL_ID_BYTES] = {0};
    char e[512] = "";
    double ok = d->rank != 0 || dist_nccl_make_id(id, e, sizeof e) == 0;
    double all_ok = 0;
    if (ttt_dist_sum_f64(d, &ok, &all_ok, 1, "NCCL setup", err, err_len) != TTT_OK) return TTT_ERR;
    if (all_ok != d->size) return set_err(err, err_len, "rank 0 could not make an NCCL id%s%s", e[0] ? ": " : "", e);
    /* the id: 128 bytes from rank 0 to every rank */
    dist_xfer s[1], *sv = NULL, *rv = NULL;
    int ns = 0, nr = 0;
    if (d->rank == 0) {
        sv = malloc(sizeof *sv * (size_t)d->size);
        if (!sv) return set_err(err, err_len, "out of host memory");
        for (int p = 1; p < d->size; p++) sv[ns++] = (dist_xfer){p, id, sizeof id};
    } else {
        s[0] = (dist_xfer){0, id, sizeof id}, rv = s, nr = 1;
    }
    int rc = mpi_exchange(d, sv, ns, rv, nr, "NCCL setup", err, err_len);
    free(sv);
    if (rc != TTT_OK) return TTT_ERR;
    int devices = ttt_device_count(TTT_CUDA);
    d->nccl = dist_nccl_open(id, d->rank, d->size, devices > 0 ? d->local_rank % devices : 0, e, sizeof e);
    ok = d->nccl != NULL;
    if (ttt_dist_sum_f64(d, &ok, &all_ok, 1, "NCCL setup", err, err_len) != TTT_OK) return TTT_ERR;
    if (all_ok != d->size) {
        if (d->cfg.transport == TTT_DIST_AUTO) { /* every rank falls back, since every rank saw the same sum */
            dist_nccl_close(d->nccl);
            d->nccl = NULL;
            d->nccl_failed = 1;
            snprintf(d->describe, sizeof d->describe, "mpi (staged through host memory; NCCL did not open%s%.200s)",
                     e[0] ? ": " : "", e);
            return TTT_OK;
        }
        if (!d->nccl) return set_err(err, err_len, "%s", e);
        return set_err(err, err_len, "rank %d: another rank could not open NCCL", d->rank);
    }
    return TTT_OK;
}

static void *addr(const tx *x) { return (char *)x->t->data + (size_t)x->off * ttt_dtype_size(x->t->dtype); }

/* Moves tensor slices between ranks: NCCL on device memory, MPI on host memory
 * (a CUDA context without NCCL stages each tensor through a host copy). */
static int exchange(ttt_dist *d, ttt_ctx *ctx, const tx *sends, int ns, const tx *recvs, int nr, const char *what,
                    char *err, size_t err_len) {
    dist_xfer *xs = malloc(sizeof *xs * (size_t)(ns + nr + 1)), *xr = xs + ns;
    if (!xs) return set_err(err, err_len, "out of host memory");
    int rc = TTT_OK;
    if (want_nccl(d, ctx) && nccl_ready(d, err, err_len) != TTT_OK) {
        free(xs);
        return TTT_ERR;
    }
    if ((ttt_ctx_device(ctx) == TTT_CPU && !d->stage_cpu) || want_nccl(d, ctx)) {
        const int nccl = ttt_ctx_device(ctx) == TTT_CUDA;
        if (nccl && ttt_synchronize(ctx) != TTT_OK) {
            free(xs);
            return set_err(err, err_len, "%s", ttt_error(ctx));
        }
        for (int i = 0; i < ns; i++)
            xs[i] = (dist_xfer){sends[i].peer, addr(&sends[i]), (size_t)sends[i].n * ttt_dtype_size(sends[i].t->dtype)};
        for (int i = 0; i < nr; i++)
            xr[i] = (dist_xfer){recvs[i].peer, addr(&recvs[i]), (size_t)recvs[i].n * ttt_dtype_size(recvs[i].t->dtype)};
        rc = nccl ? (dist_nccl_exchange(d->nccl, xs, ns, xr, nr, d->cfg.timeout_s, what, err, err_len) == 0 ? TTT_OK
                                                                                                             : TTT_ERR)
                  : mpi_exchange(d, xs, ns, xr, nr, what, err, err_len);
        free(xs);
        return rc;
    }
    /* staged: each slice through a host buffer of its own */
    void **host = calloc((size_t)(ns + nr + 1), sizeof *host);
    if (!host) rc = set_err(err, err_len, "out of host memory");
    for (int i = 0; i < ns + nr && rc == TTT_OK; i++) {
        const tx *x = i < ns ? &sends[i] : &recvs[i - ns];
        const size_t bytes = (size_t)x->n * ttt_dtype_size(x->t->dtype);
        if (!(host[i] = malloc(bytes ? bytes : 1))) rc = set_err(err, err_len, "out of host memory");
        else if (i < ns) {
            ttt_mark_t m = ttt_mark(ctx);
            if (ttt_copy_to_host(ctx, ttt_slice(ctx, x->t, 0, x->off, x->off + x->n, 1), host[i], x->t->dtype) != TTT_OK)
                rc = set_err(err, err_len, "%s", ttt_error(ctx));
            ttt_release(ctx, m);
        }
        xs[i] = (dist_xfer){x->peer, host[i], bytes}; /* xs[ns + j] is xr[j] */
    }
    if (rc == TTT_OK) rc = mpi_exchange(d, xs, ns, xr, nr, what, err, err_len);
    for (int i = 0; i < nr && rc == TTT_OK; i++) {
        const tx *x = &recvs[i];
        ttt_mark_t m = ttt_mark(ctx);
        ttt_tensor *up = ttt_from_host(ctx, x->t->dtype, 1, (const int64_t[]){x->n}, host[ns + i]);
        if (!up || ttt_assign(ctx, ttt_slice(ctx, x->t, 0, x->off, x->off + x->n, 1), up) != TTT_OK)
            rc = set_err(err, err_len, "%s", ttt_error(ctx));
        ttt_release(ctx, m);
    }
    for (int i = 0; host && i < ns + nr; i++) free(host[i]);
    free(host);
    free(xs);
    return rc;
}

/* views: elements [off, off + n) of a dense tensor, flattened */
static ttt_tensor *flat_view(ttt_ctx *ctx, ttt_tensor *t, int64_t off, int64_t n) {
    return ttt_slice(ctx, ttt_reshape(ctx, t, 1, (const int64_t[]){-1}), 0, off, off + n, 1);
}

/* ---- ZeRO-1 ---------------------------------------------------------------------------------- */

/* The flat order of every parameter's elements is cut into buckets; bucket b
 * has n_b elements in chunks of c_b = ceil(n_b / R), chunk k belonging to rank
 * k. The padded buffer holds bucket b at pad_b with R * c_b elements. */
typedef struct {
    int64_t start, n, chunk, pad;
} bucket;
typedef struct { /* elements [poff, poff + n) of parameter param, at padded position pad */
    int param;
    int64_t poff, n, pad;
} piece;
typedef struct { /* this rank's slice: elements [poff, poff + n) of param, in bucket b at chunk offset o */
    int param, b;
    int64_t poff, n, o;
} seg;

struct ttt_dist_zero {
    ttt_dist *d;
    ttt_ctx *ctx;
    int n, kind;
    ttt_tensor **params;
    ttt_dtype dt;
    bucket *bk;
    int nb;
    piece *pc;
    int npc;
    seg *sg;
    int nsg;
    ttt_tensor **seg_t; /* persistent [n] copies of the slice's parameters (their ->grad: the summed gradient) */
    int *seg_decay;
    ttt_optimizer *opt; /* over seg_t; NULL if this rank owns nothing */
    ttt_tensor *flat;   /* [P]: packed local gradients, then the gathered parameters or state */
    ttt_tensor *recv;   /* [max R * c_b]: one bucket's chunks from every rank */
};

void ttt_dist_zero_free(ttt_dist_zero *z) {
    if (!z) return;
    ttt_optimizer_free(z->opt);
    for (int i = 0; i < z->nsg && z->seg_t; i++) ttt_persistent_free(z->ctx, z->seg_t[i]);
    ttt_persistent_free(z->ctx, z->flat);
    ttt_persistent_free(z->ctx, z->recv);
    free(z->seg_t), free(z->seg_decay), free(z->sg), free(z->pc), free(z->bk), free(z->params);
    free(z);
}

static int ctx_err(ttt_ctx *ctx, char *err, size_t err_len, const char *what) {
    return set_err(err, err_len, "%s: %s", what, ttt_error(ctx)[0] ? ttt_error(ctx) : "failed");
}

/* Packs every parameter (or its gradient, or a full optimizer's state tensor
 * k * n + i) into flat. */
static int pack_all(ttt_dist_zero *z, ttt_tensor *const *src) {
    ttt_ctx *ctx = z->ctx;
    ttt_mark_t m = ttt_mark(ctx);
    int rc = TTT_OK;
    for (int i = 0; i < z->npc && rc == TTT_OK; i++) {
        const piece *p = &z->pc[i];
        rc = ttt_assign(ctx, ttt_slice(ctx, z->flat, 0, p->pad, p->pad + p->n, 1), flat_view(ctx, src[p->param], p->poff, p->n));
    }
    ttt_release(ctx, m);
    return rc;
}

static int unpack_all(ttt_dist_zero *z, ttt_tensor *const *dst) {
    ttt_ctx *ctx = z->ctx;
    ttt_mark_t m = ttt_mark(ctx);
    int rc = TTT_OK;
    for (int i = 0; i < z->npc && rc == TTT_OK; i++) {
        const piece *p = &z->pc[i];
        rc = ttt_assign(ctx, flat_view(ctx, dst[p->param], p->poff, p->n), ttt_slice(ctx, z->flat, 0, p->pad, p->pad + p->n, 1));
    }
    ttt_release(ctx, m);
    return rc;
}

/* flat's position of element o of rank k's chunk of bucket b */
static int64_t chunk_pos(const ttt_dist_zero *z, int b, int k, int64_t o) { return z->bk[b].pad + (int64_t)k * z->bk[b].chunk + o; }

/* Every rank's chunks of flat to every other rank (an all-gather in place). */
static int allgather_flat(ttt_dist_zero *z, const char *what, char *err, size_t err_len) {
    const int R = z->d->size, r = z->d->rank;
    tx *s = malloc(sizeof *s * (size_t)z->nb * (size_t)R * 2), *v = s ? s + (size_t)z->nb * (size_t)R : NULL;
    if (!s) return set_err(err, err_len, "out of host memory");
    int k = 0;
    for (int b = 0; b < z->nb; b++)
        for (int p = 0; p < R; p++)
            if (p != r) {
                s[k] = (tx){p, z->flat, chunk_pos(z, b, r, 0), z->bk[b].chunk};
                v[k++] = (tx){p, z->flat, chunk_pos(z, b, p, 0), z->bk[b].chunk};
            }
    int rc = exchange(z->d, z->ctx, s, k, v, k, what, err, err_len);
    free(s);
    return rc;
}

/* Rank root's copy of flat gets every rank's chunks. */
static int gather_flat(ttt_dist_zero *z, int root, const char *what, char *err, size_t err_len) {
    const int R = z->d->size, r = z->d->rank;
    tx *x = malloc(sizeof *x * (size_t)z->nb * (size_t)R);
    if (!x) return set_err(err, err_len, "out of host memory");
    int k = 0;
    for (int b = 0; b < z->nb; b++) {
        if (r != root) x[k++] = (tx){root, z->flat, chunk_pos(z, b, r, 0), z->bk[b].chunk};
        else
            for (int p = 0; p < R; p++)
                if (p != root) x[k++] = (tx){p, z->flat, chunk_pos(z, b, p, 0), z->bk[b].chunk};
    }
    int rc = r == root ? exchange(z->d, z->ctx, NULL, 0, x, k, what, err, err_len)
                       : exchange(z->d, z->ctx, x, k, NULL, 0, what, err, err_len);
    free(x);
    return rc;
}

int ttt_dist_zero_new(ttt_dist *d, ttt_ctx *ctx, int n, ttt_tensor *const *params, const int *decay, int optimizer,
                      const ttt_optim_config *oc, ttt_dist_zero **out, char *err, size_t err_len) {
    if (!out) return set_err(err, err_len, "ttt_dist_zero_new: no output");
    *out = NULL;
    if (!d || !ctx || n <= 0 || !params || !oc || (optimizer != 0 && optimizer != 1))
        return set_err(err, err_len, "ttt_dist_zero_new: bad arguments");
    const ttt_dtype dt = params[0]->dtype;
    for (int i = 0; i < n; i++)
        if (!params[i] || !params[i]->persistent || !params[i]->requires_grad || params[i]->dtype != dt ||
            (dt != TTT_F32 && dt != TTT_F64) || !ttt_is_contiguous(params[i]))
            return set_err(err, err_len, "data-parallel training: parameter %d is not a dense persistent %s parameter "
                                         "(ZeRO packs parameters of one dtype, f32 or f64)", i, ttt_dtype_name(dt));
    ttt_dist_zero *z = calloc(1, sizeof *z);
    if (!z) return set_err(err, err_len, "out of host memory");
    z->d = d, z->ctx = ctx, z->n = n, z->kind = optimizer, z->dt = dt;
    const int R = d->size, r = d->rank;
    int64_t N = 0;
    for (int i = 0; i < n; i++) N += ttt_numel(params[i]);
    int64_t per = (int64_t)(d->cfg.bucket_mb * 1048576.0 / (double)ttt_dtype_size(dt));
    if (per < R) per = R;
    z->nb = (int)((N + per - 1) / per);
    z->params = malloc(sizeof *z->params * (size_t)n);
    z->bk = calloc((size_t)z->nb, sizeof *z->bk);
    /* each parameter meets at most (its size / per + 2) buckets */
    size_t max_pieces = (size_t)n + (size_t)z->nb * 2;
    z->pc = calloc(max_pieces, sizeof *z->pc);
    z->sg = calloc(max_pieces, sizeof *z->sg);
    if (!z->params || !z->bk || !z->pc || !z->sg) {
        ttt_dist_zero_free(z);
        return set_err(err, err_len, "out of host memory");
    }
    memcpy(z->params, params, sizeof *z->params * (size_t)n);
    int64_t P = 0, max_recv = 0;
    for (int b = 0; b < z->nb; b++) {
        bucket *k = &z->bk[b];
        k->start = (int64_t)b * per;
        k->n = N - k->start < per ? N - k->start : per;
        k->chunk = (k->n + R - 1) / R;
        k->pad = P;
        P += (int64_t)R * k->chunk;
        if ((int64_t)R * k->chunk > max_recv) max_recv = (int64_t)R * k->chunk;
    }
    /* pieces: parameter x bucket; segments: parameter x this rank's chunk of a bucket */
    int64_t F = 0;
    for (int i = 0, b = 0; i < n; i++) {
        const int64_t len = ttt_numel(params[i]), end = F + len;
        for (; b < z->nb && z->bk[b].start < end; b++) {
            const bucket *k = &z->bk[b];
            const int64_t lo = F > k->start ? F : k->start, hi = end < k->start + k->n ? end : k->start + k->n;
            if (hi > lo) z->pc[z->npc++] = (piece){i, lo - F, hi - lo, k->pad + (lo - k->start)};
            const int64_t c0 = k->start + (int64_t)r * k->chunk, c1 = c0 + k->chunk < k->start + k->n ? c0 + k->chunk : k->start + k->n;
            const int64_t slo = lo > c0 ? lo : c0, shi = hi < c1 ? hi : c1;
            if (shi > slo) z->sg[z->nsg++] = (seg){i, b, slo - F, shi - slo, slo - c0};
            if (k->start + k->n > end) break; /* the bucket goes on into the next parameter */
        }
        F = end;
    }
    z->seg_t = calloc((size_t)(z->nsg ? z->nsg : 1), sizeof *z->seg_t);
    z->seg_decay = calloc((size_t)(z->nsg ? z->nsg : 1), sizeof *z->seg_decay);
    int rc = z->seg_t && z->seg_decay ? TTT_OK : set_err(err, err_len, "out of host memory");
    if (rc == TTT_OK &&
        (!(z->flat = ttt_persistent(ctx, dt, 1, (const int64_t[]){P}, "zero.flat")) ||
         !(z->recv = ttt_persistent(ctx, dt, 1, (const int64_t[]){max_recv}, "zero.recv")) ||
         ttt_fill(ctx, z->flat, 0.0) != TTT_OK || ttt_fill(ctx, z->recv, 0.0) != TTT_OK))
        rc = ctx_err(ctx, err, err_len, "data-parallel buffers");
    /* the parameters of rank 0 everywhere (a model initialised differently per process is made equal) */
    if (rc == TTT_OK && R > 1) {
        rc = r == 0 ? pack_all(z, params) : TTT_OK;
        if (rc != TTT_OK) ctx_err(ctx, err, err_len, "broadcasting the parameters");
        tx *x = rc == TTT_OK ? malloc(sizeof *x * (size_t)R) : NULL;
        int k = 0;
        if (rc == TTT_OK && !x) rc = set_err(err, err_len, "out of host memory");
        if (rc == TTT_OK) {
            if (r == 0)
                for (int p = 1; p < R; p++) x[k++] = (tx){p, z->flat, 0, P};
            else
                x[k++] = (tx){0, z->flat, 0, P};
            rc = r == 0 ? exchange(d, ctx, x, k, NULL, 0, "broadcasting the parameters", err, err_len)
                        : exchange(d, ctx, NULL, 0, x, k, "broadcasting the parameters", err, err_len);
        }
        free(x);
        if (rc == TTT_OK && r != 0 && unpack_all(z, params) != TTT_OK) rc = ctx_err(ctx, err, err_len, "broadcasting the parameters");
    }
    for (int s = 0; s < z->nsg && rc == TTT_OK; s++) {
        const seg *g = &z->sg[s];
        z->seg_decay[s] = decay ? decay[g->param] != 0 : 1;
        ttt_mark_t m = ttt_mark(ctx);
        if (!(z->seg_t[s] = ttt_param(ctx, dt, 1, (const int64_t[]){g->n}, params[g->param]->name)) ||
            ttt_assign(ctx, z->seg_t[s], flat_view(ctx, params[g->param], g->poff, g->n)) != TTT_OK)
            rc = ctx_err(ctx, err, err_len, "data-parallel slices");
        ttt_release(ctx, m);
    }
    if (rc == TTT_OK && z->nsg) {
        if (ttt_zero_grad(ctx, z->nsg, z->seg_t) != TTT_OK) rc = ctx_err(ctx, err, err_len, "data-parallel slices");
        else if (!(z->opt = optimizer ? ttt_sgd_new(ctx, z->nsg, z->seg_t, z->seg_decay, oc)
                                      : ttt_adamw_new(ctx, z->nsg, z->seg_t, z->seg_decay, oc)))
            rc = ctx_err(ctx, err, err_len, "data-parallel optimizer");
    }
    if (rc != TTT_OK) {
        ttt_dist_zero_free(z);
        return TTT_ERR;
    }
    *out = z;
    return TTT_OK;
}

int ttt_dist_zero_step(ttt_dist_zero *z, double lr, double max_norm, double *gnorm, int *updated, int64_t step,
                       char *err, size_t err_len) {
    if (!z) return set_err(err, err_len, "ttt_dist_zero_step: no state");
    ttt_ctx *ctx = z->ctx;
    ttt_dist *d = z->d;
    const int R = d->size, r = d->rank;
    char what[96];
    *updated = 0;
    ttt_no_grad_begin(ctx);
    int rc = TTT_OK;
    /* 1. this rank's gradients, packed; the runner made every ->grad */
    ttt_tensor **grads = malloc(sizeof *grads * (size_t)z->n);
    tx *s = malloc(sizeof *s * (size_t)R * 2), *v = s ? s + R : NULL;
    if (!grads || !s) {
        free(grads), free(s);
        ttt_no_grad_end(ctx);
        return set_err(err, err_len, "out of host memory");
    }
    for (int i = 0; i < z->n && rc == TTT_OK; i++)
        if (!(grads[i] = z->params[i]->grad)) rc = set_err(err, err_len, "parameter %d has no gradient", i);
    if (rc == TTT_OK && pack_all(z, grads) != TTT_OK) rc = ctx_err(ctx, err, err_len, "packing the gradients");
    /* 2. per bucket: chunk k to rank k, then this rank's chunk summed in rank order */
    for (int b = 0, si = 0; b < z->nb && rc == TTT_OK; b++) {
        const bucket *k = &z->bk[b];
        int m = 0;
        for (int p = 0; p < R; p++)
            if (p != r) {
                s[m] = (tx){p, z->flat, chunk_pos(z, b, p, 0), k->chunk};
                v[m++] = (tx){p, z->recv, (int64_t)p * k->chunk, k->chunk};
            }
        snprintf(what, sizeof what, "step %lld: gradient bucket %d of %d", (long long)step + 1, b + 1, z->nb);
        if ((rc = exchange(d, ctx, s, m, v, m, what, err, err_len)) != TTT_OK) break;
        ttt_mark_t mk = ttt_mark(ctx);
        for (; si < z->nsg && z->sg[si].b == b && rc == TTT_OK; si++) {
            const seg *g = &z->sg[si];
            ttt_tensor *acc = NULL;
            for (int p = 0; p < R; p++) {
                ttt_tensor *term = p == r ? ttt_slice(ctx, z->flat, 0, chunk_pos(z, b, r, g->o), chunk_pos(z, b, r, g->o) + g->n, 1)
                                          : ttt_slice(ctx, z->recv, 0, p * k->chunk + g->o, p * k->chunk + g->o + g->n, 1);
                acc = p == 0 ? term : ttt_add(ctx, acc, term);
            }
            if (ttt_assign(ctx, z->seg_t[si]->grad, acc) != TTT_OK) rc = ctx_err(ctx, err, err_len, what);
        }
        ttt_release(ctx, mk);
    }
    /* 3. the global norm: this rank's sum of squares, summed over the ranks in order */
    double local = 0, total = 0;
    ttt_mark_t mk = ttt_mark(ctx);
    for (int i = 0; i < z->nsg && rc == TTT_OK; i++) {
        ttt_tensor *g = z->seg_t[i]->grad;
        const double q = ttt_item(ctx, ttt_sum(ctx, ttt_mul(ctx, g, g), 0, NULL, 0));
        if (isnan(q) && ttt_error(ctx)[0]) rc = ctx_err(ctx, err, err_len, "gradient norm");
        local += q;
    }
    ttt_release(ctx, mk);
    snprintf(what, sizeof what, "step %lld: gradient norm", (long long)step + 1);
    if (rc == TTT_OK) rc = ttt_dist_sum_f64(d, &local, &total, 1, what, err, err_len);
    const double norm = sqrt(total);
    if (gnorm) *gnorm = norm;
    if (rc == TTT_OK && isfinite(norm)) {
        /* 4. clip, update this rank's slice, all-gather the parameters */
        if (max_norm > 0 && norm > max_norm) {
            const double scale = max_norm / (norm + 1e-6);
            for (int i = 0; i < z->nsg && rc == TTT_OK; i++) {
                ttt_mark_t m2 = ttt_mark(ctx);
                if (ttt_assign(ctx, z->seg_t[i]->grad, ttt_scale(ctx, z->seg_t[i]->grad, scale)) != TTT_OK)
                    rc = ctx_err(ctx, err, err_len, "clipping");
                ttt_release(ctx, m2);
            }
        }
        if (rc == TTT_OK && z->opt && ttt_optimizer_step(z->opt, lr) != TTT_OK) rc = ctx_err(ctx, err, err_len, "optimizer");
        ttt_mark_t m3 = ttt_mark(ctx);
        for (int i = 0; i < z->nsg && rc == TTT_OK; i++) {
            const seg *g = &z->sg[i];
            const int64_t at = chunk_pos(z, g->b, r, g->o);
            if (ttt_assign(ctx, ttt_slice(ctx, z->flat, 0, at, at + g->n, 1), z->seg_t[i]) != TTT_OK)
                rc = ctx_err(ctx, err, err_len, "packing the parameters");
        }
        ttt_release(ctx, m3);
        snprintf(what, sizeof what, "step %lld: parameter all-gather", (long long)step + 1);
        if (rc == TTT_OK) rc = allgather_flat(z, what, err, err_len);
        if (rc == TTT_OK && unpack_all(z, z->params) != TTT_OK) rc = ctx_err(ctx, err, err_len, "unpacking the parameters");
        if (rc == TTT_OK) *updated = 1;
    }
    ttt_no_grad_end(ctx);
    free(grads), free(s);
    return rc;
}

/* The state tensors of an optimizer over n parameters: k * n + i is kind k of parameter i. */
static int state_kinds(const ttt_dist_zero *z) { return z->kind == 0 ? 2 : 1; }

int ttt_dist_zero_gather_state(ttt_dist_zero *z, ttt_optimizer *full, int root, char *err, size_t err_len) {
    if (!z) return set_err(err, err_len, "ttt_dist_zero_gather_state: no state");
    ttt_ctx *ctx = z->ctx;
    const int r = z->d->rank, K = state_kinds(z);
    int nfull = 0, nseg = 0;
    ttt_tensor *const *fs = r == root && full ? ttt_optimizer_state(full, &nfull) : NULL;
    ttt_tensor *const *ss = z->opt ? ttt_optimizer_state(z->opt, &nseg) : NULL;
    if (r == root && nfull != K * z->n) return set_err(err, err_len, "gather: the full optimizer has %d state tensors, not %d", nfull, K * z->n);
    int rc = TTT_OK;
    for (int k = 0; k < K && rc == TTT_OK; k++) {
        ttt_mark_t m = ttt_mark(ctx);
        for (int i = 0; i < z->nsg && rc == TTT_OK; i++) {
            const seg *g = &z->sg[i];
            const int64_t at = chunk_pos(z, g->b, r, g->o);
            if (ttt_assign(ctx, ttt_slice(ctx, z->flat, 0, at, at + g->n, 1), ss[k * z->nsg + i]) != TTT_OK)
                rc = ctx_err(ctx, err, err_len, "packing the optimizer state");
        }
        ttt_release(ctx, m);
        if (rc == TTT_OK) rc = gather_flat(z, root, "checkpoint: gathering the optimizer state", err, err_len);
        if (rc == TTT_OK && r == root && unpack_all(z, fs + (size_t)k * (size_t)z->n) != TTT_OK)
            rc = ctx_err(ctx, err, err_len, "unpacking the optimizer state");
    }
    if (rc == TTT_OK && r == root && ttt_optimizer_set_steps(full, z->opt ? ttt_optimizer_steps(z->opt) : 0) != TTT_OK)
        rc = ctx_err(ctx, err, err_len, "optimizer steps");
    return rc;
}

int ttt_dist_zero_load_state(ttt_dist_zero *z, const ttt_optimizer *full, int64_t steps, char *err, size_t err_len) {
    if (!z || !full) return set_err(err, err_len, "ttt_dist_zero_load_state: bad arguments");
    ttt_ctx *ctx = z->ctx;
    const int K = state_kinds(z);
    int nfull = 0, nseg = 0;
    ttt_tensor *const *fs = ttt_optimizer_state(full, &nfull);
    ttt_tensor *const *ss = z->opt ? ttt_optimizer_state(z->opt, &nseg) : NULL;
    if (nfull != K * z->n) return set_err(err, err_len, "load: the full optimizer has %d state tensors, not %d", nfull, K * z->n);
    int rc = TTT_OK;
    ttt_mark_t m = ttt_mark(ctx);
    for (int k = 0; k < K && rc == TTT_OK; k++)
        for (int i = 0; i < z->nsg && rc == TTT_OK; i++) {
            const seg *g = &z->sg[i];
            if (ttt_assign(ctx, ss[k * z->nsg + i], flat_view(ctx, fs[k * z->n + g->param], g->poff, g->n)) != TTT_OK)
                rc = ctx_err(ctx, err, err_len, "loading the optimizer state");
        }
    /* and the slices' parameters, which the caller loaded into the full ones */
    for (int i = 0; i < z->nsg && rc == TTT_OK; i++) {
        const seg *g = &z->sg[i];
        if (ttt_assign(ctx, z->seg_t[i], flat_view(ctx, z->params[g->param], g->poff, g->n)) != TTT_OK)
            rc = ctx_err(ctx, err, err_len, "loading the parameters");
    }
    ttt_release(ctx, m);
    if (rc == TTT_OK && z->opt && ttt_optimizer_set_steps(z->opt, steps) != TTT_OK) rc = ctx_err(ctx, err, err_len, "optimizer steps");
    return rc;
}

/* ---- all-reduce of one tensor (the benchmark's) ------------------------------------------- */

int ttt_dist_allreduce(ttt_dist *d, ttt_ctx *ctx, ttt_tensor *t, char *err, size_t err_len) {
    if (!d || !ctx || !t || !t->persistent || !ttt_is_contiguous(t) || t->ndim != 1)
        return set_err(err, err_len, "ttt_dist_allreduce: needs a dense persistent 1-d tensor");
    const int R = d->size, r = d->rank;
    if (R == 1) return TTT_OK;
    const int64_t N = ttt_numel(t), c = (N + R - 1) / R;
    if (N % R) return set_err(err, err_len, "ttt_dist_allreduce: %lld elements do not split into %d ranks", (long long)N, R);
    ttt_tensor *recv = ttt_persistent(ctx, t->dtype, 1, (const int64_t[]){N}, "allreduce.recv");
    tx *s = malloc(sizeof *s * (size_t)R * 2), *v = s ? s + R : NULL;
    int rc = recv && s ? TTT_OK : set_err(err, err_len, "%s", recv ? "out of host memory" : ttt_error(ctx));
    int m = 0;
    for (int p = 0; p < R && rc == TTT_OK; p++)
        if (p != r) s[m] = (tx){p, t, p * c, c}, v[m++] = (tx){p, recv, p * c, c};
    if (rc == TTT_OK) rc = exchange(d, ctx, s, m, v, m, "all-reduce", err, err_len);
    if (rc == TTT_OK) {
        ttt_mark_t mk = ttt_mark(ctx);
        ttt_tensor *acc = NULL;
        for (int p = 0; p < R; p++) {
            ttt_tensor *term = ttt_slice(ctx, p == r ? t : recv, 0, p == r ? r * c : p * c, (p == r ? r * c : p * c) + c, 1);
            acc = p == 0 ? term : ttt_add(ctx, acc, term);
        }
        if (ttt_assign(ctx, ttt_slice(ctx, t, 0, r * c, r * c + c, 1), acc) != TTT_OK) rc = ctx_err(ctx, err, err_len, "all-reduce");
        ttt_release(ctx, mk);
    }
    m = 0;
    for (int p = 0; p < R && rc == TTT_OK; p++)
        if (p != r) s[m] = (tx){p, t, r * c, c}, v[m++] = (tx){p, t, p * c, c};
    if (rc == TTT_OK) rc = exchange(d, ctx, s, m, v, m, "all-reduce", err, err_len);
    free(s);
    ttt_persistent_free(ctx, recv);
    return rc;
}
