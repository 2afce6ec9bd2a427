/* f32 products on the bf16 tensor cores, shared by the kernels that take them (ttt_scan.cuh, ttt_scan2.cuh,
 * mttt_step.cuh; and the host emulator's tests, which define TTT_EMU and include emu.h first); and, at the end,
 * the same products at TF32's precision (namespace tf32, mttt_step.cuh's TF32 instances).
 *
 * mma.sync.m16n8k16 multiplies bf16 and accumulates in f32. An f32 operand x is split into two bf16, hi =
 * bf16(x) and lo = bf16(x - hi), and a product taken as lo_a hi_b + hi_a lo_b + hi_a hi_b (mma3: the small
 * terms first; lo_a lo_b, ~2^-16 of it, dropped): about 2^-16 relative where FMAs in f32 give 2^-24. bf16
 * inputs have lo = 0, so their products are exact but for the other operand's 2^-16. */
#ifndef TTT_SPLIT_BF16_CUH
#define TTT_SPLIT_BF16_CUH

#ifndef TTT_EMU
#include <cuda_bf16.h>
#endif

namespace splitbf16 {

/* the bf16 bits of x, rounded to nearest even */
__device__ __forceinline__ uint32_t bf16_bits(float x) {
#ifdef TTT_EMU
    uint32_t b;
    memcpy(&b, &x, 4);
    if (x != x) return 0x7fc0u;
    return (b + 0x7fffu + ((b >> 16) & 1u)) >> 16;
#else
    return (uint32_t)__bfloat16_as_ushort(__float2bfloat16_rn(x));
#endif
}
__device__ __forceinline__ float bf16_value(uint32_t bits) {
#ifdef TTT_EMU
    const uint32_t b = bits << 16;
    float f;
    memcpy(&f, &b, 4);
    return f;
#else
    return __uint_as_float(bits << 16);
#endif
}
/* (x0, x1) as two bf16 pairs: hi, and lo = what hi missed; the lower index in the lower 16 bits */
__device__ __forceinline__ void split2(float x0, float x1, uint32_t &hi, uint32_t &lo) {
    const uint32_t h0 = bf16_bits(x0), h1 = bf16_bits(x1);
    hi = h0 | (h1 << 16);
    lo = bf16_bits(x0 - bf16_value(h0)) | (bf16_bits(x1 - bf16_value(h1)) << 16);
}
/* d += a b: a 16 x 16 (row), b 16 x 8 (col) bf16, d f32 */
__device__ __forceinline__ void mma16816(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#ifdef TTT_EMU
    emu::mma_bf16_16816(d, a, b);
#else
    asm volatile("mma.sync.aligned.m16n8k16.row.col.f32.bf16.bf16.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}
/* acc += A B, A = ah + al, B = bh + bl, dropping al bl */
__device__ __forceinline__ void mma3(float (&acc)[4], const uint32_t (&ah)[4], const uint32_t (&al)[4],
                                     const uint32_t (&bh)[2], const uint32_t (&bl)[2]) {
    mma16816(acc, al, bh);
    mma16816(acc, ah, bl);
    mma16816(acc, ah, bh);
}

} // namespace splitbf16

/* f32 products on the TF32 tensor cores (mma.sync.m16n8k8 .tf32: 10-bit mantissas, f32 accumulation, ~2^-11
 * relative a product), for kernels that may run at TF32's precision (contexts that allow it, as cuBLAS's TF32 mode
 * does): one product where split-bf16 takes three, no splitting. */
namespace tf32 {

/* x rounded to TF32 (cvt.rna: to nearest, ties away from zero), as the f32 bit pattern mma reads */
__device__ __forceinline__ uint32_t bits(float x) {
#ifdef TTT_EMU
    uint32_t b;
    memcpy(&b, &x, 4);
    if ((b & 0x7f800000u) == 0x7f800000u) return b; /* inf, NaN: kept */
    return (b + 0x1000u) & 0xffffe000u;
#else
    uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;\n" : "=r"(r) : "f"(x));
    return r;
#endif
}
/* d += a b: a 16 x 8 (row), b 8 x 8 (col) tf32, d f32 */
__device__ __forceinline__ void mma1688(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2]) {
#ifdef TTT_EMU
    emu::mma_tf32_1688(d, a, b);
#else
    asm volatile("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0,%1,%2,%3}, {%4,%5,%6,%7}, {%8,%9}, "
                 "{%0,%1,%2,%3};\n"
                 : "+f"(d[0]), "+f"(d[1]), "+f"(d[2]), "+f"(d[3])
                 : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#endif
}

} // namespace tf32

#endif
