/*
** rng.c: random numbers from Philox4x32-10 (Salmon et al., SC'11), a
** counter-based generator: element i of a draw is a pure function of
** (seed, draw offset, i), so results do not depend on thread count or on the
** device. Each draw advances the offset by the number of 128-bit blocks used.
** Also: arange and linspace.
*/
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "fdm_internal.h"

static uint64_t rng_seed = 0x5eed, rng_offset = 0;

void fdm_manual_seed(uint64_t seed) { rng_seed = seed; rng_offset = 0; }
void fdm_rng_get(uint64_t *seed, uint64_t *offset) { *seed = rng_seed; *offset = rng_offset; }
void fdm_rng_set(uint64_t seed, uint64_t offset) { rng_seed = seed; rng_offset = offset; }

typedef struct { uint32_t v[4]; } u32x4;

static inline u32x4 philox(uint64_t counter, uint64_t seed) {
  uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
  for (int r = 0; r < 10; r++) {
    uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
    uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
    c0 = n0; c1 = (uint32_t)p1; c2 = n2; c3 = (uint32_t)p0;
    k0 += 0x9E3779B9u; k1 += 0xBB67AE85u;
  }
  u32x4 r = {{c0, c1, c2, c3}};
  return r;
}

static inline float u01(uint32_t x) { return (float)(x >> 8) * (1.0f / 16777216.0f); }   /* [0,1) */
static inline float u01_open(uint32_t x) { return ((float)(x >> 8) + 1.0f) * (1.0f / 16777216.0f); } /* (0,1] */

/* reserves n/4 blocks of the stream and returns the first block's counter */
static uint64_t take(int64_t n) {
  uint64_t start = rng_offset;
  rng_offset += (uint64_t)(n + 3) / 4;
  return start;
}

fdm_tensor *fdm_rand(int ndim, const int64_t *shape, fdm_device dev) {
  fdm_tensor *t = fdm_empty(FDM_FLOAT32, ndim, shape, dev);
  if (!t) return NULL;
  int64_t n = fdm_numel(t);
  uint64_t base = take(n), seed = rng_seed;
  float *p = fdm_data(t);
#pragma omp parallel for schedule(static) if (n > FDM_PAR_MIN)
  for (int64_t b = 0; b < (n + 3) / 4; b++) {
    u32x4 r = philox(base + b, seed);
    for (int l = 0; l < 4 && b * 4 + l < n; l++) p[b * 4 + l] = u01(r.v[l]);
  }
  return t;
}

fdm_tensor *fdm_randn(int ndim, const int64_t *shape, fdm_device dev) {
  fdm_tensor *t = fdm_empty(FDM_FLOAT32, ndim, shape, dev);
  if (!t) return NULL;
  int64_t n = fdm_numel(t);
  uint64_t base = take(n), seed = rng_seed;
  float *p = fdm_data(t);
  /* Box-Muller on lanes (0,1) and (2,3) of each block */
#pragma omp parallel for schedule(static) if (n > FDM_PAR_MIN)
  for (int64_t b = 0; b < (n + 3) / 4; b++) {
    u32x4 r = philox(base + b, seed);
    float out[4];
    for (int h = 0; h < 2; h++) {
      float rad = sqrtf(-2.0f * logf(u01_open(r.v[2 * h]))), th = 6.2831853071795864f * u01(r.v[2 * h + 1]);
      out[2 * h] = rad * cosf(th); out[2 * h + 1] = rad * sinf(th);
    }
    for (int l = 0; l < 4 && b * 4 + l < n; l++) p[b * 4 + l] = out[l];
  }
  return t;
}

fdm_tensor *fdm_randint(int64_t lo, int64_t hi, int ndim, const int64_t *shape, fdm_device dev) {
  if (hi <= lo) { fdm_seterror("randint: high (%lld) must be greater than low (%lld)", (long long)hi, (long long)lo); return NULL; }
  fdm_tensor *t = fdm_empty(FDM_INT64, ndim, shape, dev);
  if (!t) return NULL;
  int64_t n = fdm_numel(t);
  uint64_t range = (uint64_t)(hi - lo), base = take(2 * n), seed = rng_seed;
  int64_t *p = fdm_data(t);
#pragma omp parallel for schedule(static) if (n > FDM_PAR_MIN)
  for (int64_t b = 0; b < (n + 1) / 2; b++) {
    u32x4 r = philox(base + b, seed);
    for (int l = 0; l < 2 && b * 2 + l < n; l++) {
      uint64_t u = ((uint64_t)r.v[2 * l] << 32) | r.v[2 * l + 1];
      p[b * 2 + l] = lo + (int64_t)(u % range);
    }
  }
  return t;
}

typedef struct { uint64_t key; int64_t i; } keyed;
static int cmp_keyed(const void *a, const void *b) {
  const keyed *x = a, *y = b;
  if (x->key != y->key) return x->key < y->key ? -1 : 1;
  return (x->i > y->i) - (x->i < y->i);
}

fdm_tensor *fdm_randperm(int64_t n, fdm_device dev) {
  if (n < 0) { fdm_seterror("randperm: n must be non-negative, got %lld", (long long)n); return NULL; }
  fdm_tensor *t = fdm_empty(FDM_INT64, 1, &n, dev);
  keyed *k = t ? malloc((n ? n : 1) * sizeof *k) : NULL;
  if (!k) { fdm_release(t); if (t) fdm_seterror("randperm: out of memory"); return NULL; }
  uint64_t base = take(2 * n), seed = rng_seed;
  for (int64_t b = 0; b < (n + 1) / 2; b++) {
    u32x4 r = philox(base + b, seed);
    for (int l = 0; l < 2 && b * 2 + l < n; l++) {
      k[b * 2 + l].key = ((uint64_t)r.v[2 * l] << 32) | r.v[2 * l + 1];
      k[b * 2 + l].i = b * 2 + l;
    }
  }
  qsort(k, n, sizeof *k, cmp_keyed);
  int64_t *p = fdm_data(t);
  for (int64_t j = 0; j < n; j++) p[j] = k[j].i;
  free(k);
  return t;
}

fdm_tensor *fdm_arange(double start, double stop, double step, fdm_dtype dt, fdm_device dev) {
  if (step == 0 || isnan(step)) { fdm_seterror("arange: step must be nonzero"); return NULL; }
  double cnt = ceil((stop - start) / step);
  if (cnt > 1e12) { fdm_seterror("arange: too many elements"); return NULL; }
  int64_t n = cnt > 0 ? (int64_t)cnt : 0;
  fdm_tensor *t = fdm_empty(dt, 1, &n, dev);
  if (!t) return NULL;
  if (dt == FDM_INT64) { int64_t *p = fdm_data(t); for (int64_t i = 0; i < n; i++) p[i] = (int64_t)(start + i * step); }
  else if (dt == FDM_FLOAT32) { float *p = fdm_data(t); for (int64_t i = 0; i < n; i++) p[i] = (float)(start + i * step); }
  else { fdm_release(t); fdm_seterror("arange: dtype %s not supported (float32 or int64)", fdm_dtype_name(dt)); return NULL; }
  return t;
}

fdm_tensor *fdm_linspace(double start, double stop, int64_t n, fdm_dtype dt, fdm_device dev) {
  if (n < 0) { fdm_seterror("linspace: number of steps must be non-negative"); return NULL; }
  if (dt != FDM_FLOAT32) { fdm_seterror("linspace: only float32 is supported, got %s", fdm_dtype_name(dt)); return NULL; }
  fdm_tensor *t = fdm_empty(dt, 1, &n, dev);
  if (!t) return NULL;
  float *p = fdm_data(t);
  double step = n > 1 ? (stop - start) / (double)(n - 1) : 0;
  /* PyTorch fills the second half from the end, so the last value is exactly stop */
  for (int64_t i = 0; i < n; i++) p[i] = (float)(i < n / 2 ? start + step * i : stop - step * (n - 1 - i));
  return t;
}
