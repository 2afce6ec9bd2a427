/* The NCCL transport of data-parallel training (include/ttt/dist.h): grouped
 * point-to-point transfers of device memory, on a stream of its own, with a
 * deadline. Built when cmake finds NCCL (-DTTT_NCCL=AUTO|ON); the MPI side
 * (rank, the id's broadcast) is in dist.c. */
#include "dist_internal.h"

#ifndef TTT_HAVE_NCCL
int dist_nccl_available(void) { return 0; }
int dist_nccl_make_id(unsigned char id[DIST_NCCL_ID_BYTES], char *err, size_t err_len) {
    (void)id;
    if (err && err_len) err[0] = 0;
    return -1;
}
dist_nccl *dist_nccl_open(const unsigned char id[DIST_NCCL_ID_BYTES], int rank, int size, int device, char *err,
                          size_t err_len) {
    (void)id, (void)rank, (void)size, (void)device, (void)err, (void)err_len;
    return NULL;
}
int dist_nccl_exchange(dist_nccl *n, const dist_xfer *sends, int ns, const dist_xfer *recvs, int nr, double timeout_s,
                       const char *what, char *err, size_t err_len) {
    (void)n, (void)sends, (void)ns, (void)recvs, (void)nr, (void)timeout_s, (void)what, (void)err, (void)err_len;
    return -1;
}
void dist_nccl_close(dist_nccl *n) { (void)n; }
#else

#include <cuda_runtime.h>
#include <nccl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct dist_nccl {
    ncclComm_t comm;
    cudaStream_t stream;
    int device, rank;
};

_Static_assert(sizeof(ncclUniqueId) == DIST_NCCL_ID_BYTES, "NCCL's unique id is 128 bytes");

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

int dist_nccl_available(void) { return 1; }

int dist_nccl_make_id(unsigned char id[DIST_NCCL_ID_BYTES], char *err, size_t err_len) {
    ncclUniqueId u;
    ncclResult_t r = ncclGetUniqueId(&u);
    if (r != ncclSuccess) {
        snprintf(err, err_len, "ncclGetUniqueId: %s", ncclGetErrorString(r));
        return -1;
    }
    memcpy(id, &u, sizeof u);
    return 0;
}

dist_nccl *dist_nccl_open(const unsigned char id[DIST_NCCL_ID_BYTES], int rank, int size, int device, char *err,
                          size_t err_len) {
    dist_nccl *n = calloc(1, sizeof *n);
    if (!n) return snprintf(err, err_len, "out of host memory"), NULL;
    n->device = device, n->rank = rank;
    cudaError_t ce = cudaSetDevice(device);
    if (ce == cudaSuccess) ce = cudaStreamCreateWithFlags(&n->stream, cudaStreamNonBlocking);
    if (ce != cudaSuccess) {
        snprintf(err, err_len, "rank %d: CUDA device %d: %s", rank, device, cudaGetErrorString(ce));
        free(n);
        return NULL;
    }
    ncclUniqueId u;
    memcpy(&u, id, sizeof u);
    ncclResult_t r = ncclCommInitRank(&n->comm, size, u, rank);
    if (r != ncclSuccess) {
        snprintf(err, err_len, "rank %d: ncclCommInitRank on CUDA device %d: %s%s", rank, device, ncclGetErrorString(r),
                 r == ncclInvalidUsage ? " (NCCL refuses two ranks on one GPU: use one GPU per rank, or "
                                         "--dp-transport mpi)"
                                       : "");
        cudaStreamDestroy(n->stream);
        free(n);
        return NULL;
    }
    return n;
}

int dist_nccl_exchange(dist_nccl *n, const dist_xfer *sends, int ns, const dist_xfer *recvs, int nr, double timeout_s,
                       const char *what, char *err, size_t err_len) {
    cudaSetDevice(n->device);
    ncclResult_t r = ncclGroupStart();
    for (int i = 0; i < nr && r == ncclSuccess; i++)
        if (recvs[i].bytes) r = ncclRecv(recvs[i].p, recvs[i].bytes, ncclChar, recvs[i].peer, n->comm, n->stream);
    for (int i = 0; i < ns && r == ncclSuccess; i++)
        if (sends[i].bytes) r = ncclSend(sends[i].p, sends[i].bytes, ncclChar, sends[i].peer, n->comm, n->stream);
    ncclResult_t e = ncclGroupEnd();
    if (r == ncclSuccess) r = e;
    if (r != ncclSuccess) {
        snprintf(err, err_len, "rank %d: %s: NCCL: %s", n->rank, what, ncclGetErrorString(r));
        return -1;
    }
    /* NCCL cannot say which peer is missing; the runner's per-step exchange of
     * losses over MPI (before this) names a rank that died or hangs. */
    const double deadline = now_s() + timeout_s;
    for (;;) {
        cudaError_t q = cudaStreamQuery(n->stream);
        if (q == cudaSuccess) return 0;
        if (q != cudaErrorNotReady) {
            snprintf(err, err_len, "rank %d: %s: %s", n->rank, what, cudaGetErrorString(q));
            return -1;
        }
        ncclResult_t async = ncclSuccess;
        ncclCommGetAsyncError(n->comm, &async);
        if (async != ncclSuccess || now_s() > deadline) {
            snprintf(err, err_len, "rank %d: %s: %s after %.0f s (a peer rank is dead or hung)", n->rank, what,
                     async != ncclSuccess ? ncclGetErrorString(async) : "NCCL transfers not done", timeout_s);
            ncclCommAbort(n->comm);
            n->comm = NULL;
            return -1;
        }
        struct timespec ts = {0, 20000};
        nanosleep(&ts, NULL);
    }
}

void dist_nccl_close(dist_nccl *n) {
    if (!n) return;
    if (n->comm) ncclCommDestroy(n->comm);
    cudaStreamDestroy(n->stream);
    free(n);
}
#endif
