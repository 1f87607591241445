/*
** cpu_autocast.h: autocast on the CPU (fdm_kernels_nn.h, "autocast"). The
** CPU has no bfloat16 arithmetic worth using, so a kernel under autocast
** rounds its operands into float32 copies and runs its float32 path on them:
** products of rounded operands are exact in float32 and the sums are float32,
** which is what a bfloat16 tensor-core GEMM with float32 accumulation computes.
*/
#ifndef CPU_AUTOCAST_H
#define CPU_AUTOCAST_H
#include "fdm.h"

typedef struct {
  fdm_kview v;      /* float32, the source's shape and strides, over owned */
  float *owned;     /* NULL when the source was NULL */
} cpu_rounded;

/* out[i] = in[i] (float32, float16 or bfloat16; any non-negative strides)
** rounded to d, for the n views (a NULL in[i] gives an empty out[i]). -1 with
** the error set (nothing left allocated) when memory runs out. */
int cpu_round_operands(const char *op, fdm_dtype d, int n, const fdm_kview *const *in, cpu_rounded *out);
void cpu_rounded_free(int n, cpu_rounded *r);
/* the rounded view, or NULL where the source was NULL */
static inline const fdm_kview *cpu_rounded_view(const cpu_rounded *r) { return r->owned ? &r->v : NULL; }
#endif
