/*
** nn_resize.cu: nearest and bilinear resizing of NC planes with the index
** arithmetic of kernels/cpu/upsample.c: the size path (scale in/out in
** float, align_corners for bilinear) and PyTorch's scale_factor path
** (p->scaled: steps rh/rw, nearest's exact dst >> 1 for an exact 2x).
** The float operations are written with __fmul_rn/__fadd_rn/__fsub_rn so
** the compiler cannot fuse them into FMAs that would round differently
** from the CPU's separate multiply and add (a source index on an integer
** boundary must floor the same way).
**
** Forward: one thread per output. Backward: the gradient is zeroed, then
** each output adds its taps with atomicAdd (float sums in an order that
** varies from run to run, within float rounding of the CPU's).
*/
#include "nn_common.cuh"

/* size path, nearest: min(floor(dst * (in/out)), in-1) */
static __device__ __forceinline__ int nearest_src(int dst, int in, int out) {
  if (in == out) return dst;
  float scale = __fdiv_rn((float)in, (float)out);
  int s = (int)floorf(__fmul_rn((float)dst, scale));
  return s < in - 1 ? s : in - 1;
}

/* scale_factor path, nearest */
static __device__ __forceinline__ int near_src_scaled(int dst, int in, int out, float rs) {
  if (in == out) return dst;
  if (out == 2 * in) return dst >> 1;
  int s = (int)floorf(__fmul_rn((float)dst, rs));
  return s < in - 1 ? s : in - 1;
}

/* bilinear taps along one axis: i0, i1 = i0 + (i0 < in-1), weight l1 of i1 */
static __device__ __forceinline__ void lerp_tap(int dst, int in, int out, int align_corners, int scaled, float rs,
                                                int *i0, int *i1, float *l1) {
  float src;
  if (scaled) {
    src = __fsub_rn(__fmul_rn(rs, __fadd_rn((float)dst, 0.5f)), 0.5f);
    if (src < 0.0f) src = 0.0f;
  } else if (align_corners) {
    float scale = out > 1 ? __fdiv_rn((float)(in - 1), (float)(out - 1)) : 0.0f;
    src = __fmul_rn(scale, (float)dst);
  } else {
    float scale = __fdiv_rn((float)in, (float)out);
    src = __fsub_rn(__fmul_rn(scale, __fadd_rn((float)dst, 0.5f)), 0.5f);
    if (src < 0.0f) src = 0.0f;
  }
  int a = (int)src;
  if (a > in - 1) a = in - 1;
  *i0 = a;
  *i1 = a + (a < in - 1 ? 1 : 0);
  *l1 = __fsub_rn(src, (float)a);
}

static __global__ void resize_fwd(fdm_resize_params p, const float *x, float *y) {
  int64_t n = (int64_t)p.NC * p.OH * p.OW;
  NN_FOR(i, n) {
    int ow = (int)(i % p.OW), oh = (int)((i / p.OW) % p.OH);
    int64_t nc = i / ((int64_t)p.OH * p.OW);
    const float *xp = x + nc * p.H * p.W;
    if (!p.bilinear) {
      int sh = p.scaled ? near_src_scaled(oh, p.H, p.OH, p.rh) : nearest_src(oh, p.H, p.OH);
      int sw = p.scaled ? near_src_scaled(ow, p.W, p.OW, p.rw) : nearest_src(ow, p.W, p.OW);
      y[i] = xp[(int64_t)sh * p.W + sw];
      continue;
    }
    int h0, h1, w0, w1;
    float lh, lw;
    lerp_tap(oh, p.H, p.OH, p.align_corners, p.scaled, p.rh, &h0, &h1, &lh);
    lerp_tap(ow, p.W, p.OW, p.align_corners, p.scaled, p.rw, &w0, &w1, &lw);
    const float *r0 = xp + (int64_t)h0 * p.W, *r1 = xp + (int64_t)h1 * p.W;
    if (p.scaled) {
      /* upsample.c's cpu_resize_scaled: four products of the corner weights */
      float c00 = (1 - lh) * (1 - lw), c01 = (1 - lh) * lw, c10 = lh * (1 - lw), c11 = lh * lw;
      y[i] = c00 * r0[w0] + c01 * r0[w1] + c10 * r1[w0] + c11 * r1[w1];
    } else {
      float hl0 = 1.0f - lh, wl0 = 1.0f - lw;
      y[i] = hl0 * (wl0 * r0[w0] + lw * r0[w1]) + lh * (wl0 * r1[w0] + lw * r1[w1]);
    }
  }
}

static __global__ void resize_bwd(fdm_resize_params p, const float *gy, float *gx) {
  int64_t n = (int64_t)p.NC * p.OH * p.OW;
  NN_FOR(i, n) {
    int ow = (int)(i % p.OW), oh = (int)((i / p.OW) % p.OH);
    int64_t nc = i / ((int64_t)p.OH * p.OW);
    float *gp = gx + nc * p.H * p.W;
    float g = gy[i];
    if (!p.bilinear) {
      int sh = p.scaled ? near_src_scaled(oh, p.H, p.OH, p.rh) : nearest_src(oh, p.H, p.OH);
      int sw = p.scaled ? near_src_scaled(ow, p.W, p.OW, p.rw) : nearest_src(ow, p.W, p.OW);
      atomicAdd(gp + (int64_t)sh * p.W + sw, g);
      continue;
    }
    int h0, h1, w0, w1;
    float lh, lw;
    lerp_tap(oh, p.H, p.OH, p.align_corners, p.scaled, p.rh, &h0, &h1, &lh);
    lerp_tap(ow, p.W, p.OW, p.align_corners, p.scaled, p.rw, &w0, &w1, &lw);
    float *r0 = gp + (int64_t)h0 * p.W, *r1 = gp + (int64_t)h1 * p.W;
    float hl0 = 1.0f - lh, wl0 = 1.0f - lw;
    atomicAdd(r0 + w0, hl0 * wl0 * g);
    atomicAdd(r0 + w1, hl0 * lw * g);
    atomicAdd(r1 + w0, lh * wl0 * g);
    atomicAdd(r1 + w1, lh * lw * g);
  }
}

extern "C" int cuda_kernel_resize_forward(const fdm_resize_params *p, const fdm_kview *x, const fdm_kview *y) {
  int64_t n = (int64_t)p->NC * p->OH * p->OW;
  if (n <= 0) return 0;
  resize_fwd<<<nn_blocks(n), NN_THREADS, 0, fdm_cuda_stream()>>>(*p, nn_f(x), nn_f(y));
  NN_LAUNCHED("interpolate");
  return 0;
}

extern "C" int cuda_kernel_resize_backward(const fdm_resize_params *p, const fdm_kview *gy, const fdm_kview *gx) {
  int64_t nx = (int64_t)p->NC * p->H * p->W, n = (int64_t)p->NC * p->OH * p->OW;
  if (nx <= 0) return 0;
  cudaStream_t st = fdm_cuda_stream();
  NN_CUDA("interpolate", cudaMemsetAsync(gx->data, 0, (size_t)nx * sizeof(float), st));
  if (n <= 0) return 0;
  resize_bwd<<<nn_blocks(n), NN_THREADS, 0, st>>>(*p, nn_f(gy), nn_f(gx));
  NN_LAUNCHED("interpolate");
  return 0;
}
