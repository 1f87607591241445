/*
** nn_pool.cu: 2-D average and max pooling over NC planes with the window
** arithmetic of kernels/cpu/pool.c (avg: count_include_pad, divisor clipped
** to the padded extent; max: implicit -inf padding, NaN wins, first maximum
** kept, idx = position inside the input plane). One thread per output for
** the forward passes. The backward passes gather: one thread per input
** element sums the outputs whose window covers it, in the CPU's (oh, ow)
** order, so no atomics and no zero fill are needed.
*/
#include "nn_common.cuh"

/* window [lo, hi) along one axis and the divisor length (pool.c's pool_window) */
static __device__ __forceinline__ void pool_window(int o, int s, int p, int k, int n, int *lo, int *hi, int *plen) {
  int a = o * s - p, b = a + k;
  if (b > n + p) b = n + p;
  *plen = b - a;
  *lo = a < 0 ? 0 : a;
  *hi = b > n ? n : b;
}

/* outputs o in [first, last] whose window o*s - p + [0, k) holds input i */
static __device__ __forceinline__ void covering(int i, int s, int p, int k, int on, int *first, int *last) {
  int t = i + p - k + 1;                       /* o*s >= t */
  int f = t <= 0 ? 0 : (t + s - 1) / s;
  int l = (i + p) / s;                         /* o*s <= i + p */
  if (l > on - 1) l = on - 1;
  *first = f;
  *last = l;
}

static __global__ void avg_fwd(fdm_pool_params p, const float *x, float *y) {
  int64_t n = (int64_t)p.NC * p.OH * p.OW;
  NN_FOR(i, n) {
    int ow = (int)(i % p.OW), oh = (int)((i / p.OW) % p.OH);
    int64_t nc = i / ((int64_t)p.OH * p.OW);
    const float *xp = x + nc * p.H * p.W;
    int h0, h1, hl, w0, w1, wl;
    pool_window(oh, p.sh, p.ph, p.kh, p.H, &h0, &h1, &hl);
    pool_window(ow, p.sw, p.pw, p.kw, p.W, &w0, &w1, &wl);
    float s = 0.0f;
    for (int ih = h0; ih < h1; ih++)
      for (int iw = w0; iw < w1; iw++) s += xp[(int64_t)ih * p.W + iw];
    int cnt = hl * wl;
    y[i] = cnt > 0 ? s / (float)cnt : 0.0f;
  }
}

static __global__ void avg_bwd(fdm_pool_params p, const float *gy, float *gx) {
  int64_t n = (int64_t)p.NC * p.H * p.W;
  NN_FOR(i, n) {
    int iw = (int)(i % p.W), ih = (int)((i / p.W) % p.H);
    int64_t nc = i / ((int64_t)p.H * p.W);
    const float *yp = gy + nc * p.OH * p.OW;
    int oh0, oh1, ow0, ow1;
    covering(ih, p.sh, p.ph, p.kh, p.OH, &oh0, &oh1);
    covering(iw, p.sw, p.pw, p.kw, p.OW, &ow0, &ow1);
    float s = 0.0f;
    for (int oh = oh0; oh <= oh1; oh++) {
      int h0, h1, hl;
      pool_window(oh, p.sh, p.ph, p.kh, p.H, &h0, &h1, &hl);
      if (ih < h0 || ih >= h1) continue;
      for (int ow = ow0; ow <= ow1; ow++) {
        int w0, w1, wl;
        pool_window(ow, p.sw, p.pw, p.kw, p.W, &w0, &w1, &wl);
        if (iw < w0 || iw >= w1) continue;
        int cnt = hl * wl;
        if (cnt <= 0) continue;
        s += yp[(int64_t)oh * p.OW + ow] / (float)cnt;
      }
    }
    gx[i] = s;
  }
}

static __global__ void max_fwd(fdm_pool_params p, const float *x, float *y, int64_t *idx) {
  int64_t n = (int64_t)p.NC * p.OH * p.OW;
  NN_FOR(i, n) {
    int ow = (int)(i % p.OW), oh = (int)((i / p.OW) % p.OH);
    int64_t nc = i / ((int64_t)p.OH * p.OW);
    const float *xp = x + nc * p.H * p.W;
    int h0 = oh * p.sh - p.ph, h1 = h0 + p.kh, w0 = ow * p.sw - p.pw, w1 = w0 + p.kw;
    if (h0 < 0) h0 = 0;
    if (h1 > p.H) h1 = p.H;
    if (w0 < 0) w0 = 0;
    if (w1 > p.W) w1 = p.W;
    float m = -INFINITY;
    int64_t mi = (int64_t)h0 * p.W + w0;
    bool nan = false;
    for (int ih = h0; ih < h1 && !nan; ih++)
      for (int iw = w0; iw < w1; iw++) {
        float v = xp[(int64_t)ih * p.W + iw];
        if (v > m || v != v) {
          m = v;
          mi = (int64_t)ih * p.W + iw;
          if (v != v) { nan = true; break; }
        }
      }
    y[i] = m;
    if (idx) idx[i] = mi;
  }
}

static __global__ void max_bwd(fdm_pool_params p, const float *gy, const int64_t *idx, float *gx) {
  int64_t n = (int64_t)p.NC * p.H * p.W;
  NN_FOR(i, n) {
    int iw = (int)(i % p.W), ih = (int)((i / p.W) % p.H);
    int64_t nc = i / ((int64_t)p.H * p.W), me = (int64_t)ih * p.W + iw;
    const float *yp = gy + nc * p.OH * p.OW;
    const int64_t *ip = idx + nc * p.OH * p.OW;
    int oh0, oh1, ow0, ow1;
    covering(ih, p.sh, p.ph, p.kh, p.OH, &oh0, &oh1);
    covering(iw, p.sw, p.pw, p.kw, p.OW, &ow0, &ow1);
    float s = 0.0f;
    for (int oh = oh0; oh <= oh1; oh++)
      for (int ow = ow0; ow <= ow1; ow++) {
        int64_t o = (int64_t)oh * p.OW + ow;
        if (ip[o] == me) s += yp[o];
      }
    /* an index outside its window (never written by max_fwd) is never read
    ** back as another element's: the CPU drops indices outside the plane */
    gx[i] = s;
  }
}

extern "C" int cuda_kernel_avg_pool2d_forward(const fdm_pool_params *p, const fdm_kview *x, const fdm_kview *y) {
  int64_t n = (int64_t)p->NC * p->OH * p->OW;
  if (n <= 0) return 0;
  avg_fwd<<<nn_blocks(n), NN_THREADS, 0, fdm_cuda_stream()>>>(*p, nn_f(x), nn_f(y));
  NN_LAUNCHED("avg_pool2d");
  return 0;
}

extern "C" int cuda_kernel_avg_pool2d_backward(const fdm_pool_params *p, const fdm_kview *gy, const fdm_kview *gx) {
  int64_t n = (int64_t)p->NC * p->H * p->W;
  if (n <= 0) return 0;
  avg_bwd<<<nn_blocks(n), NN_THREADS, 0, fdm_cuda_stream()>>>(*p, nn_f(gy), nn_f(gx));
  NN_LAUNCHED("avg_pool2d");
  return 0;
}

extern "C" int cuda_kernel_max_pool2d_forward(const fdm_pool_params *p, const fdm_kview *x, const fdm_kview *y,
                                              const fdm_kview *idx) {
  int64_t n = (int64_t)p->NC * p->OH * p->OW;
  if (n <= 0) return 0;
  max_fwd<<<nn_blocks(n), NN_THREADS, 0, fdm_cuda_stream()>>>(*p, nn_f(x), nn_f(y),
                                                               idx ? (int64_t *)idx->data : (int64_t *)0);
  NN_LAUNCHED("max_pool2d");
  return 0;
}

extern "C" int cuda_kernel_max_pool2d_backward(const fdm_pool_params *p, const fdm_kview *gy, const fdm_kview *idx,
                                               const fdm_kview *gx) {
  int64_t n = (int64_t)p->NC * p->H * p->W;
  if (n <= 0) return 0;
  max_bwd<<<nn_blocks(n), NN_THREADS, 0, fdm_cuda_stream()>>>(*p, nn_f(gy), (const int64_t *)idx->data, nn_f(gx));
  NN_LAUNCHED("max_pool2d");
  return 0;
}
