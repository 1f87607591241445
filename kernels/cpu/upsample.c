/*
** upsample.c: nearest and bilinear resizing of N*C planes with the index
** arithmetic of PyTorch's F.interpolate (size given, no scale_factor), so
** results match it bit for bit up to float summation order.
*/
#include "cpu_nn.h"
#include "cpu_kernels.h"
#include <math.h>
#include <string.h>

/* nearest: src = min(floor(dst * (in/out)), in-1), scale in float as PyTorch */
static inline int nearest_src(int dst, int in, int out) {
  if (in == out) return dst;
  float scale = (float)in / (float)out;
  int s = (int)__builtin_floorf((float)dst * scale);
  return s < in - 1 ? s : in - 1;
}

void cpu_upsample_nearest_forward(int NC, int H, int W, int OH, int OW, const float *x, float *y) {
  #pragma omp parallel for schedule(static)
  for (int nc = 0; nc < NC; nc++) {
    const float *xp = x + (size_t)nc * H * W;
    float *yp = y + (size_t)nc * OH * OW;
    for (int oh = 0; oh < OH; oh++) {
      const float *row = xp + (size_t)nearest_src(oh, H, OH) * W;
      for (int ow = 0; ow < OW; ow++) yp[(size_t)oh * OW + ow] = row[nearest_src(ow, W, OW)];
    }
  }
}

void cpu_upsample_nearest_backward(int NC, int H, int W, int OH, int OW, const float *gy, float *gx) {
  #pragma omp parallel for schedule(static)
  for (int nc = 0; nc < NC; nc++) {
    float *gp = gx + (size_t)nc * H * W;
    const float *yp = gy + (size_t)nc * OH * OW;
    memset(gp, 0, sizeof(float) * H * W);
    for (int oh = 0; oh < OH; oh++) {
      float *row = gp + (size_t)nearest_src(oh, H, OH) * W;
      for (int ow = 0; ow < OW; ow++) row[nearest_src(ow, W, OW)] += yp[(size_t)oh * OW + ow];
    }
  }
}

/* bilinear source taps along one axis: i0, i1 = i0 + (i0 < in-1), weights l0, l1 */
typedef struct { int i0, i1; float l0, l1; } lerp_tap;

static inline lerp_tap bilinear_tap(int dst, int in, int out, int align_corners) {
  lerp_tap t;
  float src;
  if (align_corners) {
    float scale = out > 1 ? (float)(in - 1) / (float)(out - 1) : 0.0f;
    src = scale * (float)dst;
  } else {
    float scale = (float)in / (float)out;
    src = scale * ((float)dst + 0.5f) - 0.5f;
    if (src < 0.0f) src = 0.0f;
  }
  t.i0 = (int)src;
  if (t.i0 > in - 1) t.i0 = in - 1;
  t.i1 = t.i0 + (t.i0 < in - 1 ? 1 : 0);
  t.l1 = src - (float)t.i0;
  t.l0 = 1.0f - t.l1;
  return t;
}

/* the column taps fit on the stack for any realistic width; wider outputs
** recompute them per row */
#define UPS_MAX_TAPS 1024

void cpu_upsample_bilinear_forward(int NC, int H, int W, int OH, int OW, int align_corners,
                                   const float *x, float *y) {
  #pragma omp parallel for schedule(static)
  for (int nc = 0; nc < NC; nc++) {
    lerp_tap wt[UPS_MAX_TAPS];
    int cached = OW <= UPS_MAX_TAPS;
    if (cached)
      for (int ow = 0; ow < OW; ow++) wt[ow] = bilinear_tap(ow, W, OW, align_corners);
    const float *xp = x + (size_t)nc * H * W;
    float *yp = y + (size_t)nc * OH * OW;
    for (int oh = 0; oh < OH; oh++) {
      lerp_tap ht = bilinear_tap(oh, H, OH, align_corners);
      const float *r0 = xp + (size_t)ht.i0 * W, *r1 = xp + (size_t)ht.i1 * W;
      for (int ow = 0; ow < OW; ow++) {
        lerp_tap t = cached ? wt[ow] : bilinear_tap(ow, W, OW, align_corners);
        yp[(size_t)oh * OW + ow] = ht.l0 * (t.l0 * r0[t.i0] + t.l1 * r0[t.i1]) +
                                   ht.l1 * (t.l0 * r1[t.i0] + t.l1 * r1[t.i1]);
      }
    }
  }
}

void cpu_upsample_bilinear_backward(int NC, int H, int W, int OH, int OW, int align_corners,
                                    const float *gy, float *gx) {
  #pragma omp parallel for schedule(static)
  for (int nc = 0; nc < NC; nc++) {
    lerp_tap wt[UPS_MAX_TAPS];
    int cached = OW <= UPS_MAX_TAPS;
    if (cached)
      for (int ow = 0; ow < OW; ow++) wt[ow] = bilinear_tap(ow, W, OW, align_corners);
    float *gp = gx + (size_t)nc * H * W;
    const float *yp = gy + (size_t)nc * OH * OW;
    memset(gp, 0, sizeof(float) * H * W);
    for (int oh = 0; oh < OH; oh++) {
      lerp_tap ht = bilinear_tap(oh, H, OH, align_corners);
      float *r0 = gp + (size_t)ht.i0 * W, *r1 = gp + (size_t)ht.i1 * W;
      for (int ow = 0; ow < OW; ow++) {
        lerp_tap t = cached ? wt[ow] : bilinear_tap(ow, W, OW, align_corners);
        float g = yp[(size_t)oh * OW + ow];
        r0[t.i0] += ht.l0 * t.l0 * g;
        r0[t.i1] += ht.l0 * t.l1 * g;
        r1[t.i0] += ht.l1 * t.l0 * g;
        r1[t.i1] += ht.l1 * t.l1 * g;
      }
    }
  }
}

/* ---- PyTorch's scale_factor path (moved from runtime/ops/op_nn.c) ----
** With a scale_factor PyTorch maps indices with 1/scale instead of in/out;
** the op takes this path only where the two differ. */
static inline int near_src(int dst, int in, int out, float rs) {
  if (in == out) return dst;
  if (out == 2 * in) return dst >> 1;
  int s = (int)floorf((float)dst * rs);
  return s < in - 1 ? s : in - 1;
}

static inline void lin_src(int dst, int in, float rs, int *i0, int *i1, float *l1) {
  float src = rs * ((float)dst + 0.5f) - 0.5f;
  if (src < 0) src = 0;
  int a = (int)src;
  if (a > in - 1) a = in - 1;
  *i0 = a; *i1 = a + (a < in - 1); *l1 = src - (float)a;
}

void cpu_resize_scaled(int NC, int H, int W, int OH, int OW, float rh, float rw, int bilinear, int backward,
                       float *x, float *y) {
#pragma omp parallel for schedule(static) if ((int64_t)NC * OH * OW > CPU_PAR_MIN)
  for (int nc = 0; nc < NC; nc++) {
    float *xp = x + (size_t)nc * H * W, *yp = y + (size_t)nc * OH * OW;
    if (backward) memset(xp, 0, sizeof(float) * H * W);
    for (int oh = 0; oh < OH; oh++)
      for (int ow = 0; ow < OW; ow++) {
        float *yo = yp + (size_t)oh * OW + ow;
        if (!bilinear) {
          float *xi = xp + (size_t)near_src(oh, H, OH, rh) * W + near_src(ow, W, OW, rw);
          if (backward) *xi += *yo; else *yo = *xi;
        } else {
          int h0, h1, w0, w1; float lh, lw;
          lin_src(oh, H, rh, &h0, &h1, &lh);
          lin_src(ow, W, rw, &w0, &w1, &lw);
          float c00 = (1 - lh) * (1 - lw), c01 = (1 - lh) * lw, c10 = lh * (1 - lw), c11 = lh * lw;
          float *r0 = xp + (size_t)h0 * W, *r1 = xp + (size_t)h1 * W;
          if (backward) {
            r0[w0] += c00 * *yo; r0[w1] += c01 * *yo; r1[w0] += c10 * *yo; r1[w1] += c11 * *yo;
          } else {
            *yo = c00 * r0[w0] + c01 * r0[w1] + c10 * r1[w0] + c11 * r1[w1];
          }
        }
      }
  }
}

/* ---- kernel-table entries (cpu_kernels.h) ---- */

int cpu_kernel_resize_forward(const fdm_resize_params *p, const fdm_kview *x, const fdm_kview *y) {
  if (p->scaled)
    cpu_resize_scaled(p->NC, p->H, p->W, p->OH, p->OW, p->rh, p->rw, p->bilinear, 0, x->data, y->data);
  else if (p->bilinear)
    cpu_upsample_bilinear_forward(p->NC, p->H, p->W, p->OH, p->OW, p->align_corners, x->data, y->data);
  else
    cpu_upsample_nearest_forward(p->NC, p->H, p->W, p->OH, p->OW, x->data, y->data);
  return 0;
}

int cpu_kernel_resize_backward(const fdm_resize_params *p, const fdm_kview *gy, const fdm_kview *gx) {
  if (p->scaled)
    cpu_resize_scaled(p->NC, p->H, p->W, p->OH, p->OW, p->rh, p->rw, p->bilinear, 1, gx->data, gy->data);
  else if (p->bilinear)
    cpu_upsample_bilinear_backward(p->NC, p->H, p->W, p->OH, p->OW, p->align_corners, gy->data, gx->data);
  else
    cpu_upsample_nearest_backward(p->NC, p->H, p->W, p->OH, p->OW, gy->data, gx->data);
  return 0;
}
