/* core_random.cu: Philox draws with kernels/cpu/random.c's element ->
** (counter, lane) mapping and the transforms of kernels/common/philox.h, so
** a (seed, offset) gives the CPU's numbers bit for bit: uniform and normal
** draws use one block per 4 elements, integers one per 2. randperm sorts
** the same 64-bit keys (a stable radix sort: ties by position, as the CPU).
** The arange/linspace ramp. */
#include <cub/device/device_radix_sort.cuh>
#include "cuda_iter.cuh"

#define RT 256

/* (seed, base) are the launch's arguments, or with state non-NULL read from
** device memory (random_at: seed = state[0], base = state[1] + rel), so a
** replayed CUDA graph draws at the offset the host or a kernel wrote there */
struct draw_at {
  uint64_t seed, base;
  const int64_t *state;
  __device__ void resolve(uint64_t *s, uint64_t *b) const {
    *s = state ? (uint64_t)state[0] : seed;
    *b = state ? (uint64_t)state[1] + base : base;
  }
};

static __global__ void uniform_k(float *p, int64_t n, draw_at at) {
  uint64_t seed, base;
  at.resolve(&seed, &base);
  CI_FOR(b, (n + 3) / 4) {
    fdm_u32x4 r = fdm_philox(base + b, seed);
    for (int l = 0; l < 4 && b * 4 + l < n; l++) p[b * 4 + l] = fdm_u01(r.v[l]);
  }
}

static __global__ void normal_k(float *p, int64_t n, draw_at at) {
  uint64_t seed, base;
  at.resolve(&seed, &base);
  CI_FOR(b, (n + 3) / 4) {
    float out[4];
    fdm_philox_normal4(fdm_philox(base + b, seed), out);
    for (int l = 0; l < 4 && b * 4 + l < n; l++) p[b * 4 + l] = out[l];
  }
}

static __global__ void int_k(int64_t *p, int64_t n, draw_at at, int64_t lo, uint64_t range) {
  uint64_t seed, base;
  at.resolve(&seed, &base);
  CI_FOR(b, (n + 1) / 2) {
    fdm_u32x4 r = fdm_philox(base + b, seed);
    for (int l = 0; l < 2 && b * 2 + l < n; l++) {
      uint64_t u = ((uint64_t)r.v[2 * l] << 32) | r.v[2 * l + 1];
      p[b * 2 + l] = (int64_t)((uint64_t)lo + u % range);
    }
  }
}

static int draw(fdm_random_kind kind, const fdm_kview *out, draw_at at, int64_t lo, int64_t hi) {
  int64_t n = fdm_kview_numel(out);
  if (n == 0) return 0;
  cudaStream_t st = fdm_cuda_stream();
  switch (kind) {
    case FDM_RANDOM_UNIFORM:
      uniform_k<<<fdm_cuda_blocks((n + 3) / 4, RT), RT, 0, st>>>((float *)out->data, n, at);
      return fdm_cuda_launched("rand");
    case FDM_RANDOM_NORMAL:
      normal_k<<<fdm_cuda_blocks((n + 3) / 4, RT), RT, 0, st>>>((float *)out->data, n, at);
      return fdm_cuda_launched("randn");
    case FDM_RANDOM_INT:
      int_k<<<fdm_cuda_blocks((n + 1) / 2, RT), RT, 0, st>>>((int64_t *)out->data, n, at, lo,
                                                             (uint64_t)hi - (uint64_t)lo);
      return fdm_cuda_launched("randint");
  }
  return fdm_cuda_seterror("random: unknown distribution %d", (int)kind);
}

extern "C" int cuda_kernel_random(fdm_random_kind kind, const fdm_kview *out, uint64_t seed, uint64_t offset,
                                  int64_t lo, int64_t hi) {
  return draw(kind, out, draw_at{seed, offset, NULL}, lo, hi);
}

extern "C" int cuda_kernel_random_at(fdm_random_kind kind, const fdm_kview *out, const fdm_kview *state,
                                     uint64_t rel, int64_t lo, int64_t hi) {
  return draw(kind, out, draw_at{0, rel, (const int64_t *)state->data}, lo, hi);
}

static __global__ void counter_add_k(unsigned long long *c, long long delta) {
  *c += (unsigned long long)delta;
}

extern "C" int cuda_kernel_counter_add(const fdm_kview *counter, int64_t delta) {
  counter_add_k<<<1, 1, 0, fdm_cuda_stream()>>>((unsigned long long *)counter->data, (long long)delta);
  return fdm_cuda_launched("counter_add");
}

static __global__ void perm_keys_k(unsigned long long *key, int64_t *pos, int64_t n, uint64_t seed, uint64_t base) {
  CI_FOR(b, (n + 1) / 2) {
    fdm_u32x4 r = fdm_philox(base + b, seed);
    for (int l = 0; l < 2 && b * 2 + l < n; l++) {
      key[b * 2 + l] = ((unsigned long long)r.v[2 * l] << 32) | r.v[2 * l + 1];
      pos[b * 2 + l] = b * 2 + l;
    }
  }
}

extern "C" int cuda_kernel_randperm(const fdm_kview *out, uint64_t seed, uint64_t offset) {
  int64_t n = fdm_kview_numel(out);
  if (n == 0) return 0;
  if (n > INT32_MAX) return fdm_cuda_seterror("randperm: n = %lld is more than the GPU sort takes", (long long)n);
  cudaStream_t st = fdm_cuda_stream();
  size_t temp = 0;
  if (fdm_cuda_check(cub::DeviceRadixSort::SortPairs(NULL, temp, (unsigned long long *)NULL,
                                                     (unsigned long long *)NULL, (int64_t *)NULL, (int64_t *)NULL,
                                                     (int)n, 0, 64, st),
                     "randperm"))
    return -1;
  size_t kb = (size_t)n * 8, bytes = 3 * kb + temp + 256;
  char *s = (char *)fdm_cuda_scratch_alloc(bytes, "randperm");
  if (!s) return -1;
  unsigned long long *k_in = (unsigned long long *)s, *k_out = (unsigned long long *)(s + kb);
  int64_t *pos = (int64_t *)(s + 2 * kb);
  void *tmp = s + 3 * kb;
  perm_keys_k<<<fdm_cuda_blocks((n + 1) / 2, RT), RT, 0, st>>>(k_in, pos, n, seed, offset);
  int rc = fdm_cuda_launched("randperm");
  if (!rc)
    rc = fdm_cuda_check(cub::DeviceRadixSort::SortPairs(tmp, temp, k_in, k_out, pos, (int64_t *)out->data, (int)n, 0,
                                                        64, st),
                        "randperm");
  fdm_cuda_scratch_release(s, bytes);
  return rc;
}

/* the CPU's double expressions, with explicit roundings (no FMA contraction) */
static __global__ void ramp_k(void *out, int64_t n, int is_int, double start, double step, double stop,
                              int linspace) {
  CI_FOR(i, n) {
    if (is_int) ((int64_t *)out)[i] = (int64_t)__dadd_rn(start, __dmul_rn((double)i, step));
    else
      ((float *)out)[i] = (float)(linspace && i >= n / 2 ? __dsub_rn(stop, __dmul_rn(step, (double)(n - 1 - i)))
                                                         : __dadd_rn(start, __dmul_rn(step, (double)i)));
  }
}

extern "C" int cuda_kernel_ramp(const fdm_kview *out, double start, double step, double stop, int linspace) {
  int64_t n = fdm_kview_numel(out);
  if (n == 0) return 0;
  ramp_k<<<fdm_cuda_blocks(n, RT), RT, 0, fdm_cuda_stream()>>>(out->data, n, out->dtype == FDM_INT64, start, step,
                                                               stop, linspace);
  return fdm_cuda_launched(linspace ? "linspace" : "arange");
}
