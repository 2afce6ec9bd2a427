/* ttt/gradcheck.h: op-by-op gradient checks in float64 against central
 * finite differences, at order 1 (the VJP) and order 2 (a Hessian-vector
 * product through grad-of-grad). Used by the test suite and `ttt gradcheck`. */
#ifndef TTT_GRADCHECK_H
#define TTT_GRADCHECK_H

#include <stdint.h>

#include "ttt/tensor.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    const char *name;
    char shapes[160];  /* the random input shapes used */
    double err1, err2; /* worst scaled error |analytic - numeric| / (atol + rtol |numeric|); pass when <= 1 */
    int ok1, ok2;
    double parity;     /* off the CPU: max |device - cpu| / max |cpu| over f, gradient and HVP (f64 both) */
    double parity32;   /* off the CPU: the same with the device computing in f32, the gradient also once
                          without create_graph (the first-order route of fused backward kernels that take
                          f32 only); tolerance 1e-3 */
    double parity16;   /* off the CPU: the device computing in bf16 against the CPU in f64, both given
                          the same bf16-rounded inputs (tolerance 5e-2); -1 where the op has no bf16 path */
    char msg[512];     /* error text when the case could not run */
} ttt_gradcheck_result;

int ttt_gradcheck_count(void);
const char *ttt_gradcheck_name(int i);
/* Run case i on a fresh CPU context with inputs drawn from seed. Returns
 * TTT_OK when both orders pass. */
int ttt_gradcheck_run(int i, uint64_t seed, ttt_gradcheck_result *res);
/* The same on another device; there it also compares the analytic values with
 * a CPU run of the same case (res->parity). */
int ttt_gradcheck_run_on(int i, uint64_t seed, ttt_device device, ttt_gradcheck_result *res);

#ifdef __cplusplus
}
#endif
#endif
