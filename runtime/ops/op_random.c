/* op_random.c: random tensors (uniform, normal, integers, permutations)
** drawn by the device's kernels from the stream of core/rng.c, and the
** ramps arange and linspace. Each draw reserves its blocks of the stream
** before the kernel runs, so the numbers depend on (seed, offset) only. */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include "fdm_internal.h"

/* a fresh tensor filled by the random kernel; blocks = 128-bit blocks it consumes */
static fdm_tensor *draw(const char *op, fdm_random_kind kind, fdm_dtype dt, int ndim, const int64_t *shape,
                        fdm_device dev, uint64_t per_block, int64_t lo, int64_t hi) {
  fdm_tensor *t = fdm_empty(dt, ndim, shape, dev);
  if (!t) return NULL;
  uint64_t n = (uint64_t)fdm_numel(t), seed, offset, blocks = (n + per_block - 1) / per_block;
  fdm_kview v = fdm_kview_of(t);
  fdm_tensor *state = fdm_rng_device_state();
  int rc;
  if (state) {   /* inside a graph: the offset is read on the device */
    if (state->device != dev) {
      fdm_release(t);
      fdm_seterror("%s: inside a graph on device '%s', random draws must be made there too, not on '%s'", op,
                   fdm_device_name(state->device), fdm_device_name(dev));
      return NULL;
    }
    fdm_kview vs = fdm_kview_of(state);
    rc = FDM_KERNEL(dev, op, random_at, kind, &v, &vs, fdm_rng_device_take(blocks), lo, hi);
  } else {
    fdm_rng_get(&seed, &offset);
    offset = fdm_rng_take(blocks);
    rc = FDM_KERNEL(dev, op, random, kind, &v, seed, offset, lo, hi);
  }
  if (rc) { fdm_release(t); return NULL; }
  return t;
}

fdm_tensor *fdm_rand(int ndim, const int64_t *shape, fdm_device dev) {
  return draw("rand", FDM_RANDOM_UNIFORM, FDM_FLOAT32, ndim, shape, dev, 4, 0, 0);
}

fdm_tensor *fdm_randn(int ndim, const int64_t *shape, fdm_device dev) {
  return draw("randn", FDM_RANDOM_NORMAL, FDM_FLOAT32, ndim, shape, dev, 4, 0, 0);
}

fdm_tensor *fdm_randint(int64_t lo, int64_t hi, int ndim, const int64_t *shape, fdm_device dev) {
  if (hi <= lo) { fdm_seterror("randint: high (%lld) must be greater than low (%lld)", (long long)hi, (long long)lo); return NULL; }
  return draw("randint", FDM_RANDOM_INT, FDM_INT64, ndim, shape, dev, 2, lo, hi);
}

fdm_tensor *fdm_randperm(int64_t n, fdm_device dev) {
  if (n < 0) { fdm_seterror("randperm: n must be non-negative, got %lld", (long long)n); return NULL; }
  if (fdm_rng_device_state()) {
    fdm_seterror("randperm: not available inside a graph (its offset is not read on the device); "
                 "draw the permutation outside the captured function");
    return NULL;
  }
  fdm_tensor *t = fdm_empty(FDM_INT64, 1, &n, dev);
  if (!t) return NULL;
  uint64_t seed, offset;
  fdm_rng_get(&seed, &offset);
  offset = fdm_rng_take(((uint64_t)n + 1) / 2);
  fdm_kview v = fdm_kview_of(t);
  if (FDM_KERNEL(dev, "randperm", randperm, &v, seed, offset)) { fdm_release(t); return NULL; }
  return t;
}

static fdm_tensor *ramp(fdm_tensor *t, const char *op, double start, double step, double stop, int linspace) {
  fdm_kview v = fdm_kview_of(t);
  if (FDM_KERNEL(t->device, op, ramp, &v, start, step, stop, linspace)) { fdm_release(t); return NULL; }
  return t;
}

fdm_tensor *fdm_arange(double start, double stop, double step, fdm_dtype dt, fdm_device dev) {
  if (step == 0 || isnan(step)) { fdm_seterror("arange: step must be nonzero"); return NULL; }
  double cnt = ceil((stop - start) / step);
  if (cnt > 1e12) { fdm_seterror("arange: too many elements"); return NULL; }
  int64_t n = cnt > 0 ? (int64_t)cnt : 0;
  fdm_tensor *t = fdm_empty(dt, 1, &n, dev);
  if (!t) return NULL;
  if (dt != FDM_INT64 && dt != FDM_FLOAT32) {
    fdm_release(t);
    fdm_seterror("arange: dtype %s not supported (float32 or int64)", fdm_dtype_name(dt));
    return NULL;
  }
  return ramp(t, "arange", start, step, stop, 0);
}

fdm_tensor *fdm_linspace(double start, double stop, int64_t n, fdm_dtype dt, fdm_device dev) {
  if (n < 0) { fdm_seterror("linspace: number of steps must be non-negative"); return NULL; }
  if (dt != FDM_FLOAT32) { fdm_seterror("linspace: only float32 is supported, got %s", fdm_dtype_name(dt)); return NULL; }
  fdm_tensor *t = fdm_empty(dt, 1, &n, dev);
  if (!t) return NULL;
  double step = n > 1 ? (stop - start) / (double)(n - 1) : 0;
  return ramp(t, "linspace", start, step, stop, 1);
}
