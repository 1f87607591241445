/*
** pool.c: 2-D average and max pooling over N*C independent planes,
** PyTorch semantics (avg: count_include_pad = true; max: implicit -inf
** padding, NaN wins, first maximum kept). Planes are split over threads.
*/
#include "cpu_nn.h"
#include "cpu_kernels.h"
#include <string.h>

/* window [start, end) along one axis clipped to the padded extent, as in
** PyTorch: the avg divisor counts padding but not positions beyond it (those
** only exist with ceil_mode output sizes) */
static inline void pool_window(int o, int s, int p, int k, int n, int *lo, int *hi, int *plen) {
  int a = o * s - p, b = a + k;
  if (b > n + p) b = n + p;
  *plen = b - a;
  *lo = a < 0 ? 0 : a;
  *hi = b > n ? n : b;
}

void cpu_avg_pool2d_forward(int NC, int H, int W, int OH, int OW, int kh, int kw,
                            int sh, int sw, int ph, int pw, const float *x, float *y) {
  #pragma omp parallel for schedule(static)
  for (int nc = 0; nc < NC; nc++) {
    const float *xp = x + (size_t)nc * H * W;
    float *yp = y + (size_t)nc * OH * OW;
    for (int oh = 0; oh < OH; oh++) {
      int h0, h1, hl;
      pool_window(oh, sh, ph, kh, H, &h0, &h1, &hl);
      for (int ow = 0; ow < OW; ow++) {
        int w0, w1, wl;
        pool_window(ow, sw, pw, kw, W, &w0, &w1, &wl);
        float s = 0.0f;
        for (int ih = h0; ih < h1; ih++)
          for (int iw = w0; iw < w1; iw++) s += xp[(size_t)ih * W + iw];
        int cnt = hl * wl;
        yp[(size_t)oh * OW + ow] = cnt > 0 ? s / (float)cnt : 0.0f;
      }
    }
  }
}

void cpu_avg_pool2d_backward(int NC, int H, int W, int OH, int OW, int kh, int kw,
                             int sh, int sw, int ph, int pw, const float *gy, float *gx) {
  #pragma omp parallel for schedule(static)
  for (int nc = 0; nc < NC; nc++) {
    float *gp = gx + (size_t)nc * H * W;
    const float *yp = gy + (size_t)nc * OH * OW;
    memset(gp, 0, sizeof(float) * H * W);
    for (int oh = 0; oh < OH; oh++) {
      int h0, h1, hl;
      pool_window(oh, sh, ph, kh, H, &h0, &h1, &hl);
      for (int ow = 0; ow < OW; ow++) {
        int w0, w1, wl;
        pool_window(ow, sw, pw, kw, W, &w0, &w1, &wl);
        int cnt = hl * wl;
        if (cnt <= 0) continue;
        float g = yp[(size_t)oh * OW + ow] / (float)cnt;
        for (int ih = h0; ih < h1; ih++)
          for (int iw = w0; iw < w1; iw++) gp[(size_t)ih * W + iw] += g;
      }
    }
  }
}

void cpu_max_pool2d_forward(int NC, int H, int W, int OH, int OW, int kh, int kw,
                            int sh, int sw, int ph, int pw, const float *x, float *y, int64_t *idx) {
  #pragma omp parallel for schedule(static)
  for (int nc = 0; nc < NC; nc++) {
    const float *xp = x + (size_t)nc * H * W;
    float *yp = y + (size_t)nc * OH * OW;
    int64_t *ip = idx ? idx + (size_t)nc * OH * OW : NULL;
    for (int oh = 0; oh < OH; oh++) {
      int h0 = oh * sh - ph, h1 = h0 + kh;
      if (h0 < 0) h0 = 0;
      if (h1 > H) h1 = H;
      for (int ow = 0; ow < OW; ow++) {
        int w0 = ow * sw - pw, w1 = w0 + kw;
        if (w0 < 0) w0 = 0;
        if (w1 > W) w1 = W;
        float m = -__builtin_inff();
        int64_t mi = (int64_t)h0 * W + w0;  /* as PyTorch for an all -inf window */
        for (int ih = h0; ih < h1; ih++)
          for (int iw = w0; iw < w1; iw++) {
            float v = xp[(size_t)ih * W + iw];
            if (v > m || v != v) {
              m = v; mi = (int64_t)ih * W + iw;
              if (v != v) goto done;  /* NaN propagates */
            }
          }
      done:
        yp[(size_t)oh * OW + ow] = m;
        if (ip) ip[(size_t)oh * OW + ow] = mi;
      }
    }
  }
}

void cpu_max_pool2d_backward(int NC, int H, int W, int OH, int OW,
                             const float *gy, const int64_t *idx, float *gx) {
  #pragma omp parallel for schedule(static)
  for (int nc = 0; nc < NC; nc++) {
    float *gp = gx + (size_t)nc * H * W;
    const float *yp = gy + (size_t)nc * OH * OW;
    const int64_t *ip = idx + (size_t)nc * OH * OW;
    memset(gp, 0, sizeof(float) * H * W);
    for (size_t i = 0; i < (size_t)OH * OW; i++) {
      int64_t j = ip[i];
      if (j >= 0 && j < (int64_t)H * W) gp[j] += yp[i];  /* never write out of the plane */
    }
  }
}

/* ---- kernel-table entries (cpu_kernels.h) ---- */

int cpu_kernel_avg_pool2d_forward(const fdm_pool_params *p, const fdm_kview *x, const fdm_kview *y) {
  cpu_avg_pool2d_forward(p->NC, p->H, p->W, p->OH, p->OW, p->kh, p->kw, p->sh, p->sw, p->ph, p->pw,
                         x->data, y->data);
  return 0;
}

int cpu_kernel_avg_pool2d_backward(const fdm_pool_params *p, const fdm_kview *gy, const fdm_kview *gx) {
  cpu_avg_pool2d_backward(p->NC, p->H, p->W, p->OH, p->OW, p->kh, p->kw, p->sh, p->sw, p->ph, p->pw,
                          gy->data, gx->data);
  return 0;
}

int cpu_kernel_max_pool2d_forward(const fdm_pool_params *p, const fdm_kview *x, const fdm_kview *y,
                                  const fdm_kview *idx) {
  cpu_max_pool2d_forward(p->NC, p->H, p->W, p->OH, p->OW, p->kh, p->kw, p->sh, p->sw, p->ph, p->pw,
                         x->data, y->data, idx->data);
  return 0;
}

int cpu_kernel_max_pool2d_backward(const fdm_pool_params *p, const fdm_kview *gy, const fdm_kview *idx,
                                   const fdm_kview *gx) {
  cpu_max_pool2d_backward(p->NC, p->H, p->W, p->OH, p->OW, gy->data, idx->data, gx->data);
  return 0;
}
