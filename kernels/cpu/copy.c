/* copy.c: CPU kernels that move data: strided copy with dtype conversion,
** and fill. */
#include <math.h>
#include <string.h>
#include "cpu_kernels.h"
#include "cpu_iter.h"

/* float -> int64 without undefined behaviour: NaN gives 0, out of range saturates */
static inline int64_t to_i64(double v) {
  if (isnan(v)) return 0;
  if (v >= 9223372036854775807.0) return INT64_MAX;
  if (v <= -9223372036854775808.0) return INT64_MIN;
  return (int64_t)v;
}

/* load element k of a buffer of dtype dt as double / store a double */
static inline double load_d(const void *p, fdm_dtype dt, int64_t k) {
  switch (dt) {
    case FDM_FLOAT32: return ((const float *)p)[k];
    case FDM_FLOAT16: return fdm_half_to_float(((const uint16_t *)p)[k]);
    case FDM_BFLOAT16: return fdm_bf16_to_float(((const uint16_t *)p)[k]);
    case FDM_INT64: return (double)((const int64_t *)p)[k];
    case FDM_UINT8: return ((const uint8_t *)p)[k];
    case FDM_BOOL: return ((const uint8_t *)p)[k] != 0;
    default: return 0;
  }
}
static inline void store_d(void *p, fdm_dtype dt, int64_t k, double v) {
  switch (dt) {
    case FDM_FLOAT32: ((float *)p)[k] = (float)v; break;
    case FDM_FLOAT16: ((uint16_t *)p)[k] = fdm_float_to_half((float)v); break;
    case FDM_BFLOAT16: ((uint16_t *)p)[k] = fdm_float_to_bf16((float)v); break;
    case FDM_INT64: ((int64_t *)p)[k] = to_i64(v); break;
    case FDM_UINT8: ((uint8_t *)p)[k] = (uint8_t)to_i64(v); break;
    case FDM_BOOL: ((uint8_t *)p)[k] = v != 0; break;
    default: break;
  }
}

int cpu_kernel_copy(const fdm_kview *dst, const fdm_kview *src) {
  const fdm_kview *ops[2] = {dst, src};
  fdm_iter it;
  iter_init(&it, 2, ops);
  void *pd = dst->data;
  const void *ps = src->data;
  if (it.numel == 0) return 0;
  if (dst->dtype == src->dtype) {
    size_t es = fdm_dtype_size(dst->dtype);
    if (it.nd == 1 && it.st[0][0] == 1 && it.st[1][0] == 1) { memcpy(pd, ps, it.numel * es); return 0; }
    if (es == 4) { uint32_t *d = pd; const uint32_t *s = ps; ITER_FOR(it, { d[o0] = s[o1]; }); return 0; }
    if (es == 8) { uint64_t *d = pd; const uint64_t *s = ps; ITER_FOR(it, { d[o0] = s[o1]; }); return 0; }
    if (es == 2) { uint16_t *d = pd; const uint16_t *s = ps; ITER_FOR(it, { d[o0] = s[o1]; }); return 0; }
    uint8_t *d = pd; const uint8_t *s = ps; ITER_FOR(it, { d[o0] = s[o1]; });
    return 0;
  }
  fdm_dtype dd = dst->dtype, sd = src->dtype;
  if (dd == FDM_FLOAT32 && sd == FDM_UINT8) {
    float *d = pd; const uint8_t *s = ps; ITER_FOR(it, { d[o0] = s[o1]; }); return 0;
  }
  if (dd == FDM_FLOAT32 && sd == FDM_INT64) {
    float *d = pd; const int64_t *s = ps; ITER_FOR(it, { d[o0] = (float)s[o1]; }); return 0;
  }
  ITER_FOR(it, { store_d(pd, dd, o0, load_d(ps, sd, o1)); });
  return 0;
}

int cpu_kernel_fill(const fdm_kview *dst, double v) {
  const fdm_kview *ops[1] = {dst};
  fdm_iter it;
  iter_init(&it, 1, ops);
  void *p = dst->data;
  switch (dst->dtype) {
    case FDM_FLOAT32: { float *d = p, f = (float)v; ITER_FOR(it, { d[o0] = f; }); break; }
    case FDM_INT64: { int64_t *d = p, f = to_i64(v); ITER_FOR(it, { d[o0] = f; }); break; }
    default: { fdm_dtype dt = dst->dtype; ITER_FOR(it, { store_d(p, dt, o0, v); }); break; }
  }
  return 0;
}
