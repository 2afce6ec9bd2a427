/* Between dist.c (MPI, ZeRO-1) and dist_nccl.c (the NCCL transport). */
#ifndef TTT_TRAIN_DIST_INTERNAL_H
#define TTT_TRAIN_DIST_INTERNAL_H

#include <stddef.h>

/* One point-to-point transfer: bytes at p to or from rank peer. */
typedef struct {
    int peer;
    void *p;
    size_t bytes;
} dist_xfer;

typedef struct dist_nccl dist_nccl;
enum { DIST_NCCL_ID_BYTES = 128 };

/* 1 when this build has the NCCL transport. */
int dist_nccl_available(void);
/* rank 0 makes the id that every rank passes to dist_nccl_open. */
int dist_nccl_make_id(unsigned char id[DIST_NCCL_ID_BYTES], char *err, size_t err_len);
dist_nccl *dist_nccl_open(const unsigned char id[DIST_NCCL_ID_BYTES], int rank, int size, int device, char *err,
                          size_t err_len);
/* Device pointers; grouped ncclSend / ncclRecv on the transport's own stream,
 * waited for at most timeout_s (then the communicator is aborted). */
int dist_nccl_exchange(dist_nccl *n, const dist_xfer *sends, int ns, const dist_xfer *recvs, int nr, double timeout_s,
                       const char *what, char *err, size_t err_len);
void dist_nccl_close(dist_nccl *n);

#endif
