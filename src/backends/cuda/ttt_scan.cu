/* The fused TTT-Linear scan's CUDA entries (backend.h: ttt_linear_scan, ttt_linear_scan_bwd).
 * Not yet written: they decline, and the op composes the same math of the other kernels. */
#include "cuda_internal.h"

int ttt__cu_ttt_linear_scan(ttt_backend_state *, ttt_tensor *, ttt_tensor *, ttt_tensor *, ttt_tensor *, ttt_tensor *,
                            const ttt_tensor *, const ttt_tensor *, const ttt_tensor *, const ttt_tensor *,
                            const ttt_tensor *, const ttt_tensor *, const ttt_tensor *, const ttt_tensor *,
                            const ttt_tensor *, double) {
    return TTT_BACKEND_DECLINED;
}

int ttt__cu_ttt_linear_scan_bwd(ttt_backend_state *, ttt_tensor *, ttt_tensor *, ttt_tensor *, ttt_tensor *, ttt_tensor *,
                                ttt_tensor *, ttt_tensor *, ttt_tensor *, ttt_tensor *, const ttt_tensor *,
                                const ttt_tensor *, const ttt_tensor *, const ttt_tensor *, const ttt_tensor *,
                                const ttt_tensor *, const ttt_tensor *, const ttt_tensor *, const ttt_tensor *,
                                const ttt_tensor *, const ttt_tensor *, const ttt_tensor *, double) {
    return TTT_BACKEND_DECLINED;
}
