/* autocast.c: the CPU kernels' rounded operand copies (cpu_autocast.h). */
#include <stdlib.h>
#include <string.h>
#include "cpu_autocast.h"
#include "cpu_kernels.h"   /* CPU_PAR_MIN */

static float element(const fdm_kview *v, int64_t i) {
  switch (v->dtype) {
    case FDM_FLOAT16: return fdm_half_to_float(((const uint16_t *)v->data)[i]);
    case FDM_BFLOAT16: return fdm_bf16_to_float(((const uint16_t *)v->data)[i]);
    default: return ((const float *)v->data)[i];
  }
}

static int round_one(const char *op, fdm_dtype d, const fdm_kview *in, cpu_rounded *out) {
  int64_t n = fdm_kview_extent(in);
  out->owned = malloc((size_t)(n > 0 ? n : 1) * sizeof(float));
  if (!out->owned)
    return fdm_seterror("%s: out of memory rounding an operand of %lld elements to %s (autocast)", op,
                        (long long)n, fdm_dtype_name(d));
  float *dst = out->owned;
#pragma omp parallel for if (n > CPU_PAR_MIN)
  for (int64_t i = 0; i < n; i++) dst[i] = fdm_round_to(d, element(in, i));
  out->v = *in;
  out->v.data = dst;
  out->v.dtype = FDM_FLOAT32;
  return 0;
}

int cpu_round_operands(const char *op, fdm_dtype d, int n, const fdm_kview *const *in, cpu_rounded *out) {
  memset(out, 0, (size_t)n * sizeof *out);
  for (int i = 0; i < n; i++)
    if (in[i] && round_one(op, d, in[i], &out[i])) {
      cpu_rounded_free(n, out);
      return -1;
    }
  return 0;
}

void cpu_rounded_free(int n, cpu_rounded *r) {
  for (int i = 0; i < n; i++) { free(r[i].owned); r[i].owned = NULL; }
}
