/* core_autocast.cu: the autocast conversions of the GPU's products
** (cuda_autocast.cuh). */
#include <string.h>
#include "cuda_iter.cuh"
#include "cuda_autocast.cuh"

static __global__ void convert_k(const void *src, fdm_dtype from, int64_t n, void *dst, fdm_dtype to) {
  CI_FOR(i, n) ci_store(dst, to, i, ci_load(src, from, i));
}

int cuda_autocast_convert(const char *op, const void *src, fdm_dtype from, int64_t n, void *dst, fdm_dtype to) {
  if (n <= 0) return 0;
  convert_k<<<fdm_cuda_blocks(n, CI_THREADS), CI_THREADS, 0, fdm_cuda_stream()>>>(src, from, n, dst, to);
  return fdm_cuda_launched(op);
}

int cuda_autocast_operands(const char *op, fdm_dtype to, int n, const fdm_kview *const *in, cuda_narrowed *out) {
  memset(out, 0, (size_t)n * sizeof *out);
  for (int i = 0; i < n; i++) {
    if (!in[i]) continue;
    /* already narrow (IF's fp16 weights under fp16) and aligned as scratch would be: used in place, no copy */
    if (in[i]->dtype == to && (uintptr_t)in[i]->data % 16 == 0) {
      out[i].p = in[i]->data;
      continue;
    }
    int64_t e = fdm_kview_extent(in[i]);
    out[i].bytes = (size_t)(e > 0 ? e : 1) * 2;
    out[i].p = fdm_cuda_scratch_alloc(out[i].bytes, op);
    if (!out[i].p || cuda_autocast_convert(op, in[i]->data, in[i]->dtype, e, out[i].p, to)) {
      cuda_autocast_release(n, out);
      return -1;
    }
  }
  return 0;
}

void cuda_autocast_release(int n, cuda_narrowed *r) {
  for (int i = 0; i < n; i++) {
    if (r[i].p && r[i].bytes) fdm_cuda_scratch_release(r[i].p, r[i].bytes);   /* bytes 0: borrowed */
    r[i].p = NULL;
  }
}
