/* Helpers shared by every backend, below all of them: bf16 conversion, the
 * backend error slot and the names of the kernel entries. (The registry of
 * backends sits above them, in runtime.c.) */
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "ttt/backend.h"

static _Thread_local char backend_msg[512];

void ttt_backend_error(const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(backend_msg, sizeof backend_msg, fmt, ap);
    va_end(ap);
}

const char *ttt_backend_last_error(void) { return backend_msg; }

uint16_t ttt_f32_to_bf16(float x) {
    uint32_t u;
    memcpy(&u, &x, sizeof u);
    if (isnan(x)) return (uint16_t)((u >> 16) | 0x40); /* keep NaN a NaN */
    u += 0x7fffu + ((u >> 16) & 1u);                   /* round to nearest even */
    return (uint16_t)(u >> 16);
}

float ttt_bf16_to_f32(uint16_t x) {
    uint32_t u = (uint32_t)x << 16;
    float f;
    memcpy(&f, &u, sizeof f);
    return f;
}

int64_t ttt_row_stride(const ttt_tensor *t) {
    const int nd = t->ndim;
    if (nd == 0) return 1;
    const int64_t v = t->shape[nd - 1];
    if (v > 1 && t->stride[nd - 1] != 1) return -1;
    /* the leading axes must walk rows like one axis: outer stride = inner stride * inner extent */
    int64_t ld = -1, inner_stride = 0, inner_extent = 1;
    for (int d = nd - 2; d >= 0; d--) {
        if (t->shape[d] == 1) continue;
        if (ld < 0) ld = t->stride[d];
        else if (t->stride[d] != inner_stride * inner_extent) return -1;
        inner_stride = t->stride[d], inner_extent = t->shape[d];
    }
    if (ld < 0) return v > 0 ? v : 1; /* one row */
    return ld >= v ? ld : -1;
}

const char *ttt_kernel_name(ttt_kernel k) {
    static const char *const names[TTT_K_COUNT] = {
#define NAME(name, params, args) #name,
        TTT_KERNEL_LIST(NAME)
#undef NAME
    };
    return (unsigned)k < TTT_K_COUNT ? names[k] : "?";
}

const char *ttt_unary_op_name(ttt_unary_op op) {
    static const char *const names[TTT_U_COUNT] = {"neg",  "exp",  "log",  "tanh", "sigmoid", "gelu",
                                                   "silu", "relu", "sqrt", "rsqrt", "abs",    "sign",
                                                   "step", "pow",  "clamp", "inrange", "affine", "elu1",
                                                   "gelu_grad", "silu_grad"};
    return (unsigned)op < TTT_U_COUNT ? names[op] : "?";
}

const char *ttt_binary_op_name(ttt_binary_op op) {
    static const char *const names[TTT_B_COUNT] = {"add", "sub", "mul", "div", "max", "min", "gt", "ge", "eq"};
    return (unsigned)op < TTT_B_COUNT ? names[op] : "?";
}
