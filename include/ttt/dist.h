/* ttt/dist.h: data-parallel training across processes (docs/data-parallel.md).
 *
 * One process per device. MPI launches the processes and gives each its rank
 * (mpirun -np 8 ..., srun --mpi=pmix ...); the training runner
 * (include/ttt/train.h) takes a ttt_dist in ttt_train_config.dist and then:
 *   - gives rank r the micro-batches r * a .. r * a + a - 1 of every step's
 *     R * a (ttt_train_info.micro / n_micro are global), so a run depends on
 *     the global batch, not on the number of ranks;
 *   - after the backward pass, sums the gradients over the ranks in buckets, in
 *     a fixed order (rank 0's + rank 1's + ...; each bucket a reduce-scatter
 *     made of point-to-point transfers followed by that ordered sum), so runs
 *     are reproducible and one micro-batch per rank gives the bits of one rank
 *     with --grad-accum R;
 *   - ZeRO-1: each rank owns 1/R of every bucket, keeps AdamW's (or SGD's)
 *     state only for that slice, updates it, and the parameters are
 *     all-gathered after the step;
 *   - checkpoints: the optimizer state is gathered to rank 0, which writes the
 *     same single file a one-process run writes (so a run resumes on any number
 *     of ranks); metrics and progress come from rank 0 only;
 *   - failures: every transfer waits at most timeout_s; a rank that does not
 *     deliver in time is named in the error ("rank 1 sent nothing for 30 s"),
 *     and the program ends the job (ttt_dist_abort). The last checkpoint,
 *     written atomically, stays as it was.
 *
 * Transports: MPI (host memory; a CUDA context stages through the host) and,
 * when built with NCCL (cmake -DTTT_NCCL=AUTO|ON), NCCL on device memory for
 * CUDA contexts. The gradients' backward pass runs to its end before the
 * first bucket is sent: the engine's ttt_backward does not report per
 * parameter readiness, so there is no overlap of communication with backward.
 *
 * TTT_DIST_STAGE=1 in the environment sends CPU tensors through the host copies
 * a CUDA context without NCCL uses (so the CPU tests cover that path).
 *
 * Without MPI in the build, ttt_dist_init gives a one-process dist, and fails
 * if a launcher started several processes. */
#ifndef TTT_DIST_H
#define TTT_DIST_H

#include <stddef.h>
#include <stdint.h>

#include "ttt/optim.h"
#include "ttt/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct ttt_dist ttt_dist;

enum { TTT_DIST_AUTO = 0, TTT_DIST_MPI = 1, TTT_DIST_NCCL = 2 }; /* ttt_dist_config.transport */

typedef struct {
    int transport;    /* AUTO: NCCL for CUDA contexts when built with it, else MPI */
    double timeout_s; /* the longest a rank waits for a peer in one collective; 0: 300 */
    double bucket_mb; /* gradient bucket size in MiB (reduction unit, bounds nothing else); 0: 25 */
} ttt_dist_config;

/* Joins the job the launcher started (MPI_Init), or makes a one-process dist
 * when there is no launcher. argc/argv may be NULL. TTT_OK with *out set, or
 * TTT_ERR with a message in err. */
int ttt_dist_init(const ttt_dist_config *cfg, ttt_dist **out, char *err, size_t err_len);
/* Leaves the job (MPI_Finalize after a barrier); NULL is a no-op. */
void ttt_dist_finalize(ttt_dist *d);
/* Ends every process of the job at once (MPI_Abort): for a program whose rank
 * failed while the others may wait for it. Returns only without MPI. */
void ttt_dist_abort(ttt_dist *d, int code);

int ttt_dist_rank(const ttt_dist *d);       /* 0 for NULL */
int ttt_dist_size(const ttt_dist *d);       /* 1 for NULL */
int ttt_dist_local_rank(const ttt_dist *d); /* rank among the processes of this host */
int ttt_dist_local_size(const ttt_dist *d);
const char *ttt_dist_transport_name(const ttt_dist *d, ttt_device device); /* "mpi", "nccl", "none" */
/* 1 when a launcher (OMPI_COMM_WORLD_SIZE, PMI_SIZE, SLURM_STEP_NUM_TASKS) started
 * more than one process: a program that does not train data-parallel refuses to run. */
int ttt_dist_launched_many(void);

/* Sums n doubles over the ranks, in rank order (the same bits on every rank
 * and every run): out[i] = in_0[i] + in_1[i] + ... TTT_OK or TTT_ERR (err). */
int ttt_dist_sum_f64(ttt_dist *d, const double *in, double *out, int n, const char *what, char *err, size_t err_len);
/* Gathers n doubles from every rank: out[r * n + i] = rank r's in[i]. */
int ttt_dist_allgather_f64(ttt_dist *d, const double *in, double *out, int n, const char *what, char *err,
                           size_t err_len);
/* All ranks' flags: 1 if any rank passed a nonzero flag, naming the first such rank in *first_rank. */
int ttt_dist_any(ttt_dist *d, int flag, int *first_rank, const char *what, char *err, size_t err_len);

/* A persistent tensor summed over the ranks in place, in rank order (the
 * benchmark's all-reduce; the runner uses the ZeRO path below). */
int ttt_dist_allreduce(ttt_dist *d, ttt_ctx *ctx, ttt_tensor *t, char *err, size_t err_len);

/* ---- ZeRO-1 over a model's parameters (used by the runner) ---- */
typedef struct ttt_dist_zero ttt_dist_zero;
/* params: persistent, requires_grad, one float dtype; optimizer: TTT_TRAIN_ADAMW
 * (0) or TTT_TRAIN_SGD (1) with oc. The parameters are made equal to rank 0's. */
int ttt_dist_zero_new(ttt_dist *d, ttt_ctx *ctx, int n, ttt_tensor *const *params, const int *decay, int optimizer,
                      const ttt_optim_config *oc, ttt_dist_zero **out, char *err, size_t err_len);
/* After the backward pass of every micro-batch: sum the gradients over the
 * ranks, the global norm into *gnorm (before clipping), clip to max_norm (<= 0:
 * none), and unless the norm is not finite, the optimizer's update of this
 * rank's slice with lr and the parameters all-gathered. *updated = 0 when the
 * norm was not finite (nothing changed). */
int ttt_dist_zero_step(ttt_dist_zero *z, double lr, double max_norm, double *gnorm, int *updated, int64_t step,
                       char *err, size_t err_len);
/* The optimizer state of every rank into full, a full optimizer over the same
 * parameters on rank root (NULL on the other ranks). */
int ttt_dist_zero_gather_state(ttt_dist_zero *z, ttt_optimizer *full, int root, char *err, size_t err_len);
/* This rank's slice of full's state (every rank passes a full optimizer), and the step count. */
int ttt_dist_zero_load_state(ttt_dist_zero *z, const ttt_optimizer *full, int64_t steps, char *err, size_t err_len);
void ttt_dist_zero_free(ttt_dist_zero *z);

#ifdef __cplusplus
}
#endif
#endif
