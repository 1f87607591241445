/* random.c: CPU random draws from Philox (kernels/common/philox.h) and the
** arange/linspace ramp. Uniform and normal draws use one 128-bit block per
** 4 elements, integers one block per 2 elements. */
#include <stdlib.h>
#include "cpu_kernels.h"
#include "common/philox.h"

static void fill_uniform(float *p, int64_t n, uint64_t seed, uint64_t base) {
#pragma omp parallel for schedule(static) if (n > CPU_PAR_MIN)
  for (int64_t b = 0; b < (n + 3) / 4; b++) {
    fdm_u32x4 r = fdm_philox(base + b, seed);
    for (int l = 0; l < 4 && b * 4 + l < n; l++) p[b * 4 + l] = fdm_u01(r.v[l]);
  }
}

/* Box-Muller on lanes (0,1) and (2,3) of each block, with the transform
** every device shares (philox.h: no libm, so CUDA gives the same floats) */
static void fill_normal(float *p, int64_t n, uint64_t seed, uint64_t base) {
#pragma omp parallel for schedule(static) if (n > CPU_PAR_MIN)
  for (int64_t b = 0; b < (n + 3) / 4; b++) {
    float out[4];
    fdm_philox_normal4(fdm_philox(base + b, seed), out);
    for (int l = 0; l < 4 && b * 4 + l < n; l++) p[b * 4 + l] = out[l];
  }
}

/* [lo, hi) with 64 random bits each; the range is computed unsigned, so
** [INT64_MIN, INT64_MAX) does not overflow */
static void fill_int(int64_t *p, int64_t n, uint64_t seed, uint64_t base, int64_t lo, int64_t hi) {
  uint64_t range = (uint64_t)hi - (uint64_t)lo;
#pragma omp parallel for schedule(static) if (n > CPU_PAR_MIN)
  for (int64_t b = 0; b < (n + 1) / 2; b++) {
    fdm_u32x4 r = fdm_philox(base + b, seed);
    for (int l = 0; l < 2 && b * 2 + l < n; l++) {
      uint64_t u = ((uint64_t)r.v[2 * l] << 32) | r.v[2 * l + 1];
      p[b * 2 + l] = (int64_t)((uint64_t)lo + u % range);
    }
  }
}

int cpu_kernel_random(fdm_random_kind kind, const fdm_kview *out, uint64_t seed, uint64_t offset,
                      int64_t lo, int64_t hi) {
  int64_t n = fdm_kview_numel(out);
  switch (kind) {
    case FDM_RANDOM_UNIFORM: fill_uniform(out->data, n, seed, offset); return 0;
    case FDM_RANDOM_NORMAL: fill_normal(out->data, n, seed, offset); return 0;
    case FDM_RANDOM_INT: fill_int(out->data, n, seed, offset, lo, hi); return 0;
  }
  return fdm_seterror("random: unknown distribution %d", (int)kind);
}

typedef struct { uint64_t key; int64_t i; } keyed;
static int cmp_keyed(const void *a, const void *b) {
  const keyed *x = a, *y = b;
  if (x->key != y->key) return x->key < y->key ? -1 : 1;
  return (x->i > y->i) - (x->i < y->i);
}

/* a permutation: positions sorted by random 64-bit keys (ties by position) */
int cpu_kernel_randperm(const fdm_kview *out, uint64_t seed, uint64_t offset) {
  int64_t n = fdm_kview_numel(out);
  keyed *k = malloc((n ? n : 1) * sizeof *k);
  if (!k) return fdm_seterror("randperm: out of memory for %lld keys", (long long)n);
  for (int64_t b = 0; b < (n + 1) / 2; b++) {
    fdm_u32x4 r = fdm_philox(offset + b, seed);
    for (int l = 0; l < 2 && b * 2 + l < n; l++) {
      k[b * 2 + l].key = ((uint64_t)r.v[2 * l] << 32) | r.v[2 * l + 1];
      k[b * 2 + l].i = b * 2 + l;
    }
  }
  qsort(k, n, sizeof *k, cmp_keyed);
  int64_t *p = out->data;
  for (int64_t j = 0; j < n; j++) p[j] = k[j].i;
  free(k);
  return 0;
}

int cpu_kernel_ramp(const fdm_kview *out, double start, double step, double stop, int linspace) {
  int64_t n = fdm_kview_numel(out);
  if (out->dtype == FDM_INT64) {
    int64_t *p = out->data;
    for (int64_t i = 0; i < n; i++) p[i] = (int64_t)(start + i * step);
    return 0;
  }
  float *p = out->data;
  for (int64_t i = 0; i < n; i++)
    p[i] = (float)(linspace && i >= n / 2 ? stop - step * (n - 1 - i) : start + step * i);
  return 0;
}

/* the draw of cpu_kernel_random at the (seed, offset) kept in state[0], state[1] + rel */
int cpu_kernel_random_at(fdm_random_kind kind, const fdm_kview *out, const fdm_kview *state, uint64_t rel,
                         int64_t lo, int64_t hi) {
  const int64_t *s = state->data;
  return cpu_kernel_random(kind, out, (uint64_t)s[0], (uint64_t)s[1] + rel, lo, hi);
}

/* unsigned arithmetic: an offset counter wraps as the host's uint64 does */
int cpu_kernel_counter_add(const fdm_kview *counter, int64_t delta) {
  int64_t *c = counter->data;
  *c = (int64_t)((uint64_t)*c + (uint64_t)delta);
  return 0;
}
