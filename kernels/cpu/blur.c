/*
** blur.c: torchvision's gaussian_blur (separable, reflect padding) on P
** independent planes, and its adjoint for the backward pass. Each plane
** runs the horizontal pass into a scratch plane, then the vertical one;
** planes are split over threads.
*/
#include <stdlib.h>
#include <string.h>
#include "cpu_kernels.h"
#include "cpu_nn.h"

static inline int reflect(int i, int n) {
  if (i < 0) i = -i;
  if (i >= n) i = 2 * (n - 1) - i;
  return i;
}

/* yp = vertical(horizontal(xp)) through tmp */
static void blur_plane(int H, int W, int kx, int ky, const float *wx, const float *wy, const float *xp,
                       float *tmp, float *yp) {
  int rx = kx / 2, ry = ky / 2;
  for (int h = 0; h < H; h++)
    for (int w = 0; w < W; w++) {
      float s = 0;
      for (int t = 0; t < kx; t++) s += wx[t] * xp[h * W + reflect(w + t - rx, W)];
      tmp[h * W + w] = s;
    }
  for (int h = 0; h < H; h++)
    for (int w = 0; w < W; w++) {
      float s = 0;
      for (int t = 0; t < ky; t++) s += wy[t] * tmp[reflect(h + t - ry, H) * W + w];
      yp[h * W + w] = s;
    }
}

/* xp = the adjoint of blur_plane applied to yp (vertical, then horizontal, scattered) */
static void blur_plane_adjoint(int H, int W, int kx, int ky, const float *wx, const float *wy, float *xp,
                               float *tmp, const float *yp) {
  int rx = kx / 2, ry = ky / 2;
  memset(tmp, 0, sizeof(float) * H * W);
  memset(xp, 0, sizeof(float) * H * W);
  for (int h = 0; h < H; h++)
    for (int t = 0; t < ky; t++) {
      int hs = reflect(h + t - ry, H);
      float c = wy[t];
      for (int w = 0; w < W; w++) tmp[hs * W + w] += c * yp[h * W + w];
    }
  for (int h = 0; h < H; h++)
    for (int w = 0; w < W; w++) {
      float g = tmp[h * W + w];
      for (int t = 0; t < kx; t++) xp[h * W + reflect(w + t - rx, W)] += wx[t] * g;
    }
}

int cpu_blur_planes(int64_t P, int H, int W, int kx, int ky, const float *wx, const float *wy, int backward,
                    float *x, float *y) {
  int failed = 0;
#pragma omp parallel for schedule(static) if (P * H * W * (kx + ky) > CPU_PAR_MIN)
  for (int64_t p = 0; p < P; p++) {
    float *xp = x + p * H * W, *yp = y + p * H * W;
    float *tmp = malloc(sizeof(float) * H * W);
    if (!tmp) {
#pragma omp atomic write
      failed = 1;
      continue;
    }
    if (backward) blur_plane_adjoint(H, W, kx, ky, wx, wy, xp, tmp, yp);
    else blur_plane(H, W, kx, ky, wx, wy, xp, tmp, yp);
    free(tmp);
  }
  if (failed) return fdm_seterror("gaussian_blur: out of memory for a %dx%d scratch plane", H, W);
  return 0;
}

/* ---- kernel-table entries (cpu_kernels.h) ---- */

int cpu_kernel_blur_forward(const fdm_blur_params *p, const float *wx, const float *wy, const fdm_kview *x,
                            const fdm_kview *y) {
  return cpu_blur_planes(p->P, p->H, p->W, p->kx, p->ky, wx, wy, 0, x->data, y->data);
}

int cpu_kernel_blur_backward(const fdm_blur_params *p, const float *wx, const float *wy, const fdm_kview *gy,
                             const fdm_kview *gx) {
  return cpu_blur_planes(p->P, p->H, p->W, p->kx, p->ky, wx, wy, 1, gx->data, gy->data);
}
