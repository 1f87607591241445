/*
** test_conv.c: checks the conv / conv_transpose / pooling / upsampling
** kernels of cpu_nn.h against naive double-precision loops on random shapes,
** checks the backward passes both against the naive gradients and with the
** adjoint identity <A x, gy> = <x, A^T gy>, and times the UNet-sized conv.
** Usage: [TEST_SEED=n] test_conv [--bench]   (--bench times more UNet shapes)
** Exit code 1 on any failure.
*/
#include "cpu_nn.h"
#include "winograd.h"
#include "convt2.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <math.h>
#include <time.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static int failures = 0, checks = 0;
static double last_rel = 0;   /* worst error / scale of the latest check */
static double rel_log[3];     /* conv_case_rel: y, gx, gw */
static int rel_n = -1;
static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rng(void) {
  rng_state ^= rng_state << 13; rng_state ^= rng_state >> 7; rng_state ^= rng_state << 17;
  return rng_state;
}
static int irand(int lo, int hi) { return lo + (int)(rng() % (uint64_t)(hi - lo + 1)); } /* [lo,hi] */
static float frand(void) { return (float)((rng() >> 11) * (1.0 / 9007199254740992.0)) * 2.0f - 1.0f; }

static float *randv(size_t n) {
  float *p = malloc(sizeof(float) * (n ? n : 1));
  for (size_t i = 0; i < n; i++) p[i] = frand();
  return p;
}
static double *zerod(size_t n) { return calloc(n ? n : 1, sizeof(double)); }
static float *nanv(size_t n) { /* poisoned outputs: every element must be written */
  float *p = malloc(sizeof(float) * (n ? n : 1));
  for (size_t i = 0; i < n; i++) p[i] = NAN;
  return p;
}

/* compares got against the reference; relative to the reference's max magnitude */
static void check_min(const char *what, const char *shape, const float *got, const double *ref,
                      size_t n, double tol, double scale) {
  double worst = 0;
  size_t wi = 0;
  for (size_t i = 0; i < n; i++) scale = fmax(scale, fabs(ref[i]));
  for (size_t i = 0; i < n; i++) {
    double e = fabs((double)got[i] - ref[i]);
    if (!(e <= worst)) { worst = e; wi = i; }  /* NaN counts as worst */
  }
  if (n == 0) return;
  checks++;
  last_rel = worst / scale;
  if (!(worst <= tol * scale)) {
    failures++;
    printf("FAIL %s %s: max err %.3g at [%zu] got %.7g want %.7g (scale %.3g)\n", what, shape,
           worst, wi, got[wi], ref[wi], scale);
  }
}
static void check(const char *what, const char *shape, const float *got, const double *ref,
                  size_t n, double tol) {
  check_min(what, shape, got, ref, n, tol, 1e-6);
}
/* |a - b| within tol of scale (the sum of |terms|, as the dots may cancel) */
static void check_scalar(const char *what, const char *shape, double a, double b, double scale,
                         double tol) {
  checks++;
  if (!(fabs(a - b) <= tol * fmax(1e-6, scale))) {
    failures++;
    printf("FAIL %s %s: %.9g vs %.9g\n", what, shape, a, b);
  }
}
static double dotf(const float *a, const float *b, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) s += (double)a[i] * b[i];
  return s;
}
static double dotabs(const float *a, const float *b, size_t n) {
  double s = 0;
  for (size_t i = 0; i < n; i++) s += fabs((double)a[i] * b[i]);
  return s;
}

/* ---------------------------------------------------------------- conv */

/* naive conv (transposed = 0) or conv_transpose (1): forward into y, and
** the gradients for gy. Every term is one product x*w at a tap. */
static void naive_conv(int transposed, const cpu_conv_params *p, const float *x, const float *w,
                       const float *b, const float *gy, double *y, double *gx, double *gw,
                       double *gb) {
  int G = p->groups, Cg = p->C / G, Kg = p->K / G;
  /* the spatial side that the kernel slides over (conv: x; transpose: y) */
  int Hs = transposed ? p->OH : p->H, Ws = transposed ? p->OW : p->W;
  int Ht = transposed ? p->H : p->OH, Wt = transposed ? p->W : p->OW;
  size_t ysz = (size_t)p->N * p->K * p->OH * p->OW;
  for (size_t i = 0; i < ysz; i++) y[i] = b ? b[(i / ((size_t)p->OH * p->OW)) % p->K] : 0.0;
  for (int n = 0; n < p->N; n++)
    for (int g = 0; g < G; g++)
      for (int c = 0; c < Cg; c++)
        for (int k = 0; k < Kg; k++)
          for (int ki = 0; ki < p->kh; ki++)
            for (int kj = 0; kj < p->kw; kj++)
              for (int th = 0; th < Ht; th++)
                for (int tw = 0; tw < Wt; tw++) {
                  int sh_ = th * p->sh - p->ph + ki * p->dh, sw_ = tw * p->sw - p->pw + kj * p->dw;
                  if (sh_ < 0 || sh_ >= Hs || sw_ < 0 || sw_ >= Ws) continue;
                  size_t xi, yi, wi;
                  if (!transposed) {
                    xi = (((size_t)n * p->C + g * Cg + c) * p->H + sh_) * p->W + sw_;
                    yi = (((size_t)n * p->K + g * Kg + k) * p->OH + th) * p->OW + tw;
                    wi = (((size_t)(g * Kg + k) * Cg + c) * p->kh + ki) * p->kw + kj;
                  } else {
                    xi = (((size_t)n * p->C + g * Cg + c) * p->H + th) * p->W + tw;
                    yi = (((size_t)n * p->K + g * Kg + k) * p->OH + sh_) * p->OW + sw_;
                    wi = (((size_t)(g * Cg + c) * Kg + k) * p->kh + ki) * p->kw + kj;
                  }
                  y[yi] += (double)x[xi] * w[wi];
                  gx[xi] += (double)gy[yi] * w[wi];
                  gw[wi] += (double)gy[yi] * x[xi];
                }
  for (int k = 0; k < p->K; k++) gb[k] = 0;
  for (size_t i = 0; i < ysz; i++) gb[(i / ((size_t)p->OH * p->OW)) % p->K] += gy[i];
}

static void conv_case(int transposed, const cpu_conv_params *p, int use_bias, int gmask) {
  char shape[200];
  snprintf(shape, sizeof shape,
           "%s N%d C%d K%d %dx%d->%dx%d k%dx%d s%d,%d p%d,%d d%d,%d g%d bias%d mask%d",
           transposed ? "convT" : "conv", p->N, p->C, p->K, p->H, p->W, p->OH, p->OW, p->kh,
           p->kw, p->sh, p->sw, p->ph, p->pw, p->dh, p->dw, p->groups, use_bias, gmask);
  size_t xsz = (size_t)p->N * p->C * p->H * p->W, ysz = (size_t)p->N * p->K * p->OH * p->OW;
  size_t wsz = transposed ? (size_t)p->C * (p->K / p->groups) * p->kh * p->kw
                          : (size_t)p->K * (p->C / p->groups) * p->kh * p->kw;
  float *x = randv(xsz), *w = randv(wsz), *b = use_bias ? randv(p->K) : NULL, *gy = randv(ysz);
  float *y = nanv(ysz), *gx = nanv(xsz), *gw = nanv(wsz), *gb = nanv(p->K);
  double *ry = zerod(ysz), *rgx = zerod(xsz), *rgw = zerod(wsz), *rgb = zerod(p->K);
  size_t wk = transposed ? cpu_conv_transpose2d_work(p) : cpu_conv2d_work(p);
  float *work = nanv(wk);
  naive_conv(transposed, p, x, w, b, gy, ry, rgx, rgw, rgb);
  float *ggx = gmask & 1 ? gx : NULL, *ggw = gmask & 2 ? gw : NULL, *ggb = gmask & 4 ? gb : NULL;
  if (!transposed) {
    cpu_conv2d_forward(p, x, w, b, y, work);
    cpu_conv2d_backward(p, x, w, gy, ggx, ggw, ggb, work);
  } else {
    cpu_conv_transpose2d_forward(p, x, w, b, y, work);
    cpu_conv_transpose2d_backward(p, x, w, gy, ggx, ggw, ggb, work);
  }
  /* error bounds, relative to the reference's largest magnitude: 1e-5 for
  ** im2col + GEMM, direct loops and Winograd F(2x2,3x3) (measured <= 7e-7 at
  ** the UNet's sizes); 3e-5 for F(4x4,3x3), whose transforms scale by up to
  ** 8 and 1/24 (measured <= 1.2e-5 at the UNet's sizes: printed below) */
  double tol = !transposed && cpu_winograd_ok(p) && cpu_winograd_tile(p) == 4 ? 3e-5 : 1e-5;
  check("forward y", shape, y, ry, ysz, tol);
  if (rel_n == 0) rel_log[rel_n++] = last_rel;
  if (ggx) check("backward gx", shape, gx, rgx, xsz, tol);
  if (rel_n == 1) rel_log[rel_n++] = last_rel;
  if (ggw) check("backward gw", shape, gw, rgw, wsz, tol);
  if (rel_n == 2) rel_log[rel_n++] = last_rel;
  if (ggb) { /* sums of many terms that may cancel: relative to sum |gy| */
    double sc = 1e-6;
    for (size_t i = 0; i < ysz; i++) sc = fmax(sc, fabs(gy[i]));
    check_min("backward gb", shape, gb, rgb, p->K, 1e-5, sc * ysz / (p->K ? p->K : 1));
  }
  /* adjoint identities (bias-free forward is linear in x and in w):
  ** <y(x) - b, gy> = <x, gx> = <w, gw> */
  if (ggx || ggw) {
    double lhs = 0, sc = 0;
    for (size_t i = 0; i < ysz; i++) {
      double t = ((double)y[i] - (b ? b[(i / ((size_t)p->OH * p->OW)) % p->K] : 0.0)) * gy[i];
      lhs += t; sc += fabs(t);
    }
    if (ggx) check_scalar("adjoint <y,gy>=<x,gx>", shape, lhs, dotf(x, gx, xsz), sc, 1e-5);
    if (ggw) check_scalar("adjoint <y,gy>=<w,gw>", shape, lhs, dotf(w, gw, wsz), sc, 1e-5);
  }
  free(x); free(w); free(b); free(gy); free(y); free(gx); free(gw); free(gb);
  free(ry); free(rgx); free(rgw); free(rgb); free(work);
}

/* conv_case with all gradients, returning the relative errors of y, gx, gw */
static void conv_case(int transposed, const cpu_conv_params *p, int use_bias, int gmask);
static void conv_case_rel(const cpu_conv_params *p, double e[3]) {
  rel_n = 0;
  conv_case(0, p, 1, 7);
  rel_n = -1;
  for (int i = 0; i < 3; i++) e[i] = rel_log[i];
}
static void convt_case_rel(const cpu_conv_params *p, double e[3]) {
  rel_n = 0;
  conv_case(1, p, 1, 7);
  rel_n = -1;
  for (int i = 0; i < 3; i++) e[i] = rel_log[i];
}

static cpu_conv_params mkp(int N, int C, int K, int H, int W, int kh, int kw, int sh, int sw,
                           int ph, int pw, int dh, int dw, int groups) {
  cpu_conv_params p = {N, C, H, W, K, kh, kw, sh, sw, ph, pw, dh, dw, groups, 0, 0};
  p.OH = (H + 2 * ph - dh * (kh - 1) - 1) / sh + 1;
  p.OW = (W + 2 * pw - dw * (kw - 1) - 1) / sw + 1;
  return p;
}
static cpu_conv_params mkpt(int N, int C, int K, int H, int W, int kh, int kw, int sh, int sw,
                            int ph, int pw, int dh, int dw, int groups, int oph, int opw) {
  cpu_conv_params p = {N, C, H, W, K, kh, kw, sh, sw, ph, pw, dh, dw, groups, 0, 0};
  p.OH = (H - 1) * sh - 2 * ph + dh * (kh - 1) + oph + 1;
  p.OW = (W - 1) * sw - 2 * pw + dw * (kw - 1) + opw + 1;
  return p;
}

static void test_conv(void) {
  /* the UNet's shapes (small batches) and the code paths: batched small
  ** images, whole large images, 1x1 in place, row chunks of a huge image */
  cpu_conv_params fixed[] = {
    mkp(0, 2, 3, 4, 4, 3, 3, 1, 1, 1, 1, 1, 1, 1), /* empty batch */
    mkp(3, 4, 5, 28, 28, 3, 3, 1, 1, 1, 1, 1, 1, 1),
    mkp(3, 4, 6, 28, 28, 3, 3, 2, 2, 1, 1, 1, 1, 2),
    mkp(8, 3, 4, 7, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1),
    mkp(5, 6, 4, 14, 14, 3, 3, 2, 2, 1, 1, 1, 1, 1),
    mkp(4, 1, 4, 28, 28, 3, 3, 1, 1, 1, 1, 1, 1, 1),
    mkp(4, 4, 1, 28, 28, 3, 3, 1, 1, 1, 1, 1, 1, 1),
    mkp(3, 6, 4, 26, 27, 1, 1, 1, 1, 0, 0, 1, 1, 2),
    mkp(9, 6, 4, 5, 5, 1, 1, 1, 1, 0, 0, 1, 1, 1),
    mkp(2, 5, 3, 30, 29, 5, 3, 1, 2, 2, 1, 2, 1, 1),
    mkp(1, 64, 4, 224, 224, 3, 3, 1, 1, 1, 1, 1, 1, 1), /* chunked rows (2 slots) */
    /* Winograd F(2x2,3x3) path: 3x3 stride 1, >= 8 channels; odd sizes, pads 0-2,
    ** a batch that is not a multiple of the block, tiny images */
    mkp(3, 8, 9, 7, 9, 3, 3, 1, 1, 1, 1, 1, 1, 1),
    mkp(2, 16, 8, 28, 28, 3, 3, 1, 1, 1, 1, 1, 1, 1),
    mkp(2, 8, 8, 6, 5, 3, 3, 1, 1, 0, 0, 1, 1, 1),
    mkp(2, 9, 12, 5, 7, 3, 3, 1, 1, 2, 0, 1, 1, 1),
    mkp(1, 8, 8, 2, 2, 3, 3, 1, 1, 1, 1, 1, 1, 1),
    mkp(5, 64, 64, 14, 14, 3, 3, 1, 1, 1, 1, 1, 1, 1),
    mkp(65, 8, 10, 7, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1),
  };
  for (size_t i = 0; i < sizeof fixed / sizeof *fixed; i++) conv_case(0, &fixed[i], i & 1, 7);
  cpu_conv_params fixedt[] = {
    mkpt(3, 6, 4, 7, 7, 4, 4, 2, 2, 1, 1, 1, 1, 1, 0, 0),
    mkpt(2, 4, 6, 14, 14, 4, 4, 2, 2, 1, 1, 1, 1, 2, 0, 0),
    mkpt(8, 5, 4, 1, 1, 7, 7, 7, 7, 0, 0, 1, 1, 1, 0, 0),
    mkpt(3, 4, 4, 9, 8, 3, 3, 2, 2, 1, 1, 1, 1, 1, 1, 1),
    mkpt(2, 4, 6, 27, 26, 1, 1, 1, 1, 0, 0, 1, 1, 2, 0, 0),
  };
  for (size_t i = 0; i < sizeof fixedt / sizeof *fixedt; i++) conv_case(1, &fixedt[i], !(i & 1), 7);
  /* k4 s2 p1 transposed convs (the UpConv) through the sub-pixel Winograd
  ** F(2x2,2x2) path (convt2.c): each shape with the path forced on, then
  ** forced off (im2col + sgemm + col2im), whatever the automatic thresholds;
  ** odd sizes, N=1, C != K, 1 to 256 channels, batches that are not a
  ** multiple of the block, and an output_padding=1 shape that never qualifies */
  cpu_conv_params subp[] = {
    mkpt(1, 1, 1, 1, 1, 4, 4, 2, 2, 1, 1, 1, 1, 1, 0, 0),
    mkpt(2, 3, 5, 7, 7, 4, 4, 2, 2, 1, 1, 1, 1, 1, 0, 0),
    mkpt(1, 16, 8, 5, 9, 4, 4, 2, 2, 1, 1, 1, 1, 1, 0, 0),
    mkpt(3, 8, 12, 14, 14, 4, 4, 2, 2, 1, 1, 1, 1, 1, 0, 0),
    mkpt(5, 24, 16, 6, 3, 4, 4, 2, 2, 1, 1, 1, 1, 1, 0, 0),
    mkpt(65, 8, 4, 2, 2, 4, 4, 2, 2, 1, 1, 1, 1, 1, 0, 0),
    mkpt(9, 20, 17, 7, 7, 4, 4, 2, 2, 1, 1, 1, 1, 1, 0, 0),
    mkpt(1, 4, 6, 1, 13, 4, 4, 2, 2, 1, 1, 1, 1, 1, 0, 0),
    mkpt(2, 64, 32, 7, 7, 4, 4, 2, 2, 1, 1, 1, 1, 1, 0, 0),
    mkpt(1, 256, 64, 7, 7, 4, 4, 2, 2, 1, 1, 1, 1, 1, 0, 0),
    mkpt(2, 128, 64, 14, 14, 4, 4, 2, 2, 1, 1, 1, 1, 1, 0, 0),
    mkpt(3, 6, 5, 7, 6, 4, 4, 2, 2, 1, 1, 1, 1, 1, 1, 1),   /* 15x14: not sub-pixel */
  };
  for (int i = 0; i < 11; i++)
    if (!cpu_convt2_ok(&subp[i])) { failures++; printf("FAIL convt2_ok: subp[%d] should qualify\n", i); }
  checks++;
  if (cpu_convt2_ok(&subp[11])) { failures++; printf("FAIL convt2_ok: output_padding shape qualifies\n"); }
  for (int force = 1; force >= 0; force--) {
    cpu_convt2_force(force);
    for (size_t i = 0; i < sizeof subp / sizeof *subp; i++) conv_case(1, &subp[i], !(i & 1), 7);
    for (int it = 0; it < 40; it++) {
      cpu_conv_params p = mkpt(irand(1, 9), irand(1, 20), irand(1, 20), irand(1, 12), irand(1, 12),
                               4, 4, 2, 2, 1, 1, 1, 1, 1, 0, 0);
      conv_case(1, &p, irand(0, 1), irand(0, 7));
    }
  }
  cpu_convt2_force(-1);
  /* Winograd only with 96 tiles or more per call (PERFORMANCE.md, "DeepFloyd
  ** IF on the CPU"), unless a tile size is forced */
  {
    struct { cpu_conv_params p; int want; } rule[] = {
      {mkp(2, 832, 832, 8, 8, 3, 3, 1, 1, 1, 1, 1, 1, 1), 0},     /* IF-I 8x8, batch 2: 8 tiles */
      {mkp(4, 576, 576, 16, 16, 3, 3, 1, 1, 1, 1, 1, 1, 1), 0},   /* 64 tiles */
      {mkp(1, 128, 128, 28, 28, 3, 3, 1, 1, 1, 1, 1, 1, 1), 0},   /* 49 tiles */
      {mkp(2, 128, 128, 28, 28, 3, 3, 1, 1, 1, 1, 1, 1, 1), 1},   /* 98 tiles */
      {mkp(64, 128, 128, 7, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1), 1},    /* MNIST training, 7x7: 256 tiles */
      {mkp(2, 192, 192, 64, 64, 3, 3, 1, 1, 1, 1, 1, 1, 1), 1},   /* 512 tiles */
    };
    for (size_t i = 0; i < sizeof rule / sizeof *rule; i++)
      if (cpu_winograd_worth(&rule[i].p) != rule[i].want) {
        failures++;
        printf("FAIL winograd_worth N%d C%d %dx%d: expected %d\n", rule[i].p.N, rule[i].p.C, rule[i].p.H,
               rule[i].p.W, rule[i].want);
      }
    cpu_winograd_force_tile(4);
    if (!cpu_winograd_worth(&rule[0].p)) { failures++; printf("FAIL winograd_worth: a forced tile must apply\n"); }
    cpu_winograd_force_tile(0);
  }
  /* random Winograd-eligible shapes: automatic tile choice, then every
  ** shape again with F(2x2,3x3) and with F(4x4,3x3) forced */
  for (int tile = 0; tile <= 4; tile += 2) {
    cpu_winograd_force_tile(tile);
    for (int it = 0; it < 60; it++) {
      int N = irand(1, 9), C = irand(8, 20), K = irand(8, 20), H = irand(1, 16), W = irand(1, 16);
      int ph = irand(0, 2), pw = irand(0, 2);
      cpu_conv_params p = mkp(N, C, K, H, W, 3, 3, 1, 1, ph, pw, 1, 1, 1);
      if (p.OH < 1 || p.OW < 1) { it--; continue; }
      conv_case(0, &p, irand(0, 1), irand(0, 7));
    }
    if (tile) /* the fixed Winograd shapes too */
      for (size_t i = 11; i < sizeof fixed / sizeof *fixed; i++) conv_case(0, &fixed[i], i & 1, 7);
  }
  cpu_winograd_force_tile(0);
  /* the error of each tile size at the UNet's sizes and widths (inputs and
  ** weights uniform in [-1, 1]), against double-precision direct sums:
  ** max |err| / max |ref| of y, gx, gw; the check bounds are 1e-5 (F(2x2))
  ** and 3e-5 (F(4x4)) */
  cpu_conv_params unet[] = {
    mkp(2, 64, 64, 28, 28, 3, 3, 1, 1, 1, 1, 1, 1, 1),
    mkp(2, 128, 64, 28, 28, 3, 3, 1, 1, 1, 1, 1, 1, 1),
    mkp(2, 64, 64, 14, 14, 3, 3, 1, 1, 1, 1, 1, 1, 1),
    mkp(2, 128, 128, 7, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1),
    mkp(1, 256, 256, 7, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1),
  };
  for (int tile = 2; tile <= 4; tile += 2) {
    cpu_winograd_force_tile(tile);
    for (size_t i = 0; i < sizeof unet / sizeof *unet; i++) {
      double e[3];
      conv_case_rel(&unet[i], e);
      printf("winograd F(%dx%d,3x3) N%d C%d K%d %dx%d: max rel err y %.2g, gx %.2g, gw %.2g\n", tile, tile,
             unet[i].N, unet[i].C, unet[i].K, unet[i].H, unet[i].W, e[0], e[1], e[2]);
    }
  }
  cpu_winograd_force_tile(0);
  /* the same for the UpConvs (k4 s2 p1 transposed, D=64 and D=128 widths):
  ** sub-pixel F(2x2,2x2) against im2col, same bound 1e-5 */
  cpu_conv_params upc[] = {
    mkpt(2, 256, 64, 7, 7, 4, 4, 2, 2, 1, 1, 1, 1, 1, 0, 0),
    mkpt(2, 128, 64, 14, 14, 4, 4, 2, 2, 1, 1, 1, 1, 1, 0, 0),
    mkpt(1, 512, 128, 7, 7, 4, 4, 2, 2, 1, 1, 1, 1, 1, 0, 0),
    mkpt(1, 256, 128, 14, 14, 4, 4, 2, 2, 1, 1, 1, 1, 1, 0, 0),
  };
  for (int force = 1; force >= 0; force--) {
    cpu_convt2_force(force);
    for (size_t i = 0; i < sizeof upc / sizeof *upc; i++) {
      double e[3];
      convt_case_rel(&upc[i], e);
      printf("convT k4s2 %s N%d C%d K%d %dx%d: max rel err y %.2g, gx %.2g, gw %.2g\n",
             force ? "sub-pixel F(2x2,2x2)" : "im2col/col2im", upc[i].N, upc[i].C, upc[i].K,
             upc[i].H, upc[i].W, e[0], e[1], e[2]);
    }
  }
  cpu_convt2_force(-1);
  /* random shapes, every gradient subset */
  for (int it = 0; it < 400; it++) {
    int transposed = it & 1;
    int G = irand(1, 3), kh = irand(1, 4), kw = irand(1, 4), sh = irand(1, 3), sw = irand(1, 3);
    int dh = irand(1, 2), dw = irand(1, 2), ph = irand(0, 2), pw = irand(0, 2);
    int N = irand(1, 12), C = G * irand(1, 4), K = G * irand(1, 4), H = irand(1, 13), W = irand(1, 13);
    cpu_conv_params p;
    if (!transposed) {
      p = mkp(N, C, K, H, W, kh, kw, sh, sw, ph, pw, dh, dw, G);
    } else {
      int oph = irand(0, (sh > dh ? sh : dh) - 1), opw = irand(0, (sw > dw ? sw : dw) - 1);
      p = mkpt(N, C, K, H, W, kh, kw, sh, sw, ph, pw, dh, dw, G, oph, opw);
    }
    if (p.OH < 1 || p.OW < 1) { it--; continue; }
    conv_case(transposed, &p, irand(0, 1), irand(0, 7));
  }
}

/* ------------------------------------------------------------- pooling */

/* inputs lie in [-1, 1], so errors are judged against 1 (sums may cancel) */
static void pool_case(int NC, int H, int W, int k, int s, int p, int ceil_mode) {
  char shape[160];
  int OH = (H + 2 * p - k) / s + 1, OW = (W + 2 * p - k) / s + 1;
  if (ceil_mode) { /* PyTorch: ceil, but the last window must start inside input or left pad */
    OH = (H + 2 * p - k + s - 1) / s + 1; if ((OH - 1) * s >= H + p) OH--;
    OW = (W + 2 * p - k + s - 1) / s + 1; if ((OW - 1) * s >= W + p) OW--;
  }
  snprintf(shape, sizeof shape, "NC%d %dx%d->%dx%d k%d s%d p%d ceil%d", NC, H, W, OH, OW, k, s, p, ceil_mode);
  size_t xs = (size_t)NC * H * W, ys = (size_t)NC * OH * OW;
  float *x = randv(xs), *gy = randv(ys), *y = nanv(ys), *gx = nanv(xs);
  double *ry = zerod(ys), *rgx = zerod(xs);
  int64_t *idx = malloc(sizeof(int64_t) * (ys ? ys : 1));
  if (NC > 1) x[1] = x[0];  /* a tie: the first maximum must win */

  /* avg, count_include_pad: divisor = window positions inside [-p, n+p) */
  for (int nc = 0; nc < NC; nc++)
    for (int oh = 0; oh < OH; oh++)
      for (int ow = 0; ow < OW; ow++) {
        double sum = 0;
        int cnt = 0;
        for (int ki = 0; ki < k; ki++)
          for (int kj = 0; kj < k; kj++) {
            int ih = oh * s - p + ki, iw = ow * s - p + kj;
            if (ih >= H + p || iw >= W + p) continue;
            cnt++;
            if (ih >= 0 && ih < H && iw >= 0 && iw < W) sum += x[((size_t)nc * H + ih) * W + iw];
          }
        ry[((size_t)nc * OH + oh) * OW + ow] = sum / cnt;
        for (int ki = 0; ki < k; ki++)
          for (int kj = 0; kj < k; kj++) {
            int ih = oh * s - p + ki, iw = ow * s - p + kj;
            if (ih >= 0 && ih < H && iw >= 0 && iw < W)
              rgx[((size_t)nc * H + ih) * W + iw] += gy[((size_t)nc * OH + oh) * OW + ow] / cnt;
          }
      }
  cpu_avg_pool2d_forward(NC, H, W, OH, OW, k, k, s, s, p, p, x, y);
  cpu_avg_pool2d_backward(NC, H, W, OH, OW, k, k, s, s, p, p, gy, gx);
  check_min("avg_pool y", shape, y, ry, ys, 1e-6, 1.0);
  check_min("avg_pool gx", shape, gx, rgx, xs, 1e-5, 1.0);
  check_scalar("avg_pool adjoint", shape, dotf(y, gy, ys), dotf(x, gx, xs), dotabs(y, gy, ys), 1e-5);

  memset(rgx, 0, sizeof(double) * xs);
  for (int nc = 0; nc < NC; nc++)
    for (int oh = 0; oh < OH; oh++)
      for (int ow = 0; ow < OW; ow++) {
        double m = -INFINITY;
        int64_t mi = -1;
        for (int ki = 0; ki < k; ki++)
          for (int kj = 0; kj < k; kj++) {
            int ih = oh * s - p + ki, iw = ow * s - p + kj;
            if (ih < 0 || ih >= H || iw < 0 || iw >= W) continue;
            double v = x[((size_t)nc * H + ih) * W + iw];
            if (v > m) { m = v; mi = (int64_t)ih * W + iw; }
          }
        size_t o = ((size_t)nc * OH + oh) * OW + ow;
        ry[o] = m;
        rgx[(size_t)nc * H * W + mi] += gy[o];
      }
  cpu_max_pool2d_forward(NC, H, W, OH, OW, k, k, s, s, p, p, x, y, idx);
  cpu_max_pool2d_backward(NC, H, W, OH, OW, gy, idx, gx);
  check("max_pool y", shape, y, ry, ys, 0);
  check_min("max_pool gx", shape, gx, rgx, xs, 1e-5, 1.0);
  free(x); free(gy); free(y); free(gx); free(ry); free(rgx); free(idx);
}

static void test_pool(void) {
  pool_case(4, 28, 28, 2, 2, 0, 0);
  pool_case(3, 7, 7, 2, 2, 0, 0);
  pool_case(3, 7, 7, 3, 2, 1, 1);
  for (int it = 0; it < 200; it++) {
    int k = irand(1, 4), s = irand(1, 3), p = irand(0, k / 2);
    int H = irand(1, 12), W = irand(1, 12);
    if (H + 2 * p < k || W + 2 * p < k) { it--; continue; }
    pool_case(irand(1, 5), H, W, k, s, p, irand(0, 1));
  }
  /* NaN propagates through max */
  float x[4] = {1, NAN, 3, 2}, y[1];
  int64_t idx[1];
  cpu_max_pool2d_forward(1, 2, 2, 1, 1, 2, 2, 2, 2, 0, 0, x, y, idx);
  checks++;
  if (!(y[0] != y[0] && idx[0] == 1)) { failures++; printf("FAIL max_pool NaN: %g idx %lld\n", y[0], (long long)idx[0]); }
}

/* ------------------------------------------------------------ upsample */

/* independent reference of the PyTorch formulas, in double where harmless */
static void ref_taps(int d, int in, int out, int mode, int *i0, int *i1, double *l1) {
  if (mode == 0) { /* nearest */
    int s = in == out ? d : (int)floorf((float)d * ((float)in / (float)out));
    *i0 = *i1 = s < in - 1 ? s : in - 1; *l1 = 0; return;
  }
  float src;
  if (mode == 2) src = out > 1 ? (float)d * ((float)(in - 1) / (float)(out - 1)) : 0.0f;
  else src = fmaxf(((float)d + 0.5f) * ((float)in / (float)out) - 0.5f, 0.0f);
  *i0 = (int)floorf(src);
  if (*i0 > in - 1) *i0 = in - 1;
  *i1 = *i0 < in - 1 ? *i0 + 1 : *i0;
  *l1 = src - *i0;
}

static void ups_case(int NC, int H, int W, int OH, int OW, int mode /* 0 near, 1 bilin, 2 bilin ac */) {
  char shape[120];
  snprintf(shape, sizeof shape, "NC%d %dx%d->%dx%d %s", NC, H, W, OH, OW,
           mode == 0 ? "nearest" : mode == 1 ? "bilinear" : "bilinear align_corners");
  size_t xs = (size_t)NC * H * W, ys = (size_t)NC * OH * OW;
  float *x = randv(xs), *gy = randv(ys), *y = nanv(ys), *gx = nanv(xs);
  double *ry = zerod(ys), *rgx = zerod(xs);
  for (int nc = 0; nc < NC; nc++)
    for (int oh = 0; oh < OH; oh++)
      for (int ow = 0; ow < OW; ow++) {
        int h[2], w[2];
        double lh, lw;
        ref_taps(oh, H, OH, mode, &h[0], &h[1], &lh);
        ref_taps(ow, W, OW, mode, &w[0], &w[1], &lw);
        double wh[2] = {1 - lh, lh}, ww[2] = {1 - lw, lw};
        size_t o = ((size_t)nc * OH + oh) * OW + ow;
        for (int a = 0; a < 2; a++)
          for (int b = 0; b < 2; b++) {
            size_t i = ((size_t)nc * H + h[a]) * W + w[b];
            ry[o] += wh[a] * ww[b] * x[i];
            rgx[i] += wh[a] * ww[b] * gy[o];
          }
      }
  if (mode == 0) {
    cpu_upsample_nearest_forward(NC, H, W, OH, OW, x, y);
    cpu_upsample_nearest_backward(NC, H, W, OH, OW, gy, gx);
  } else {
    cpu_upsample_bilinear_forward(NC, H, W, OH, OW, mode == 2, x, y);
    cpu_upsample_bilinear_backward(NC, H, W, OH, OW, mode == 2, gy, gx);
  }
  check_min("upsample y", shape, y, ry, ys, 1e-6, 1.0);
  check_min("upsample gx", shape, gx, rgx, xs, 1e-5, 1.0);
  check_scalar("upsample adjoint", shape, dotf(y, gy, ys), dotf(x, gx, xs), dotabs(y, gy, ys), 1e-5);
  free(x); free(gy); free(y); free(gx); free(ry); free(rgx);
}

static void test_upsample(void) {
  /* values printed by PyTorch's F.interpolate for [[1,2],[3,4]] */
  const float x[4] = {1, 2, 3, 4};
  const double near3[9] = {1, 1, 2, 1, 1, 2, 3, 3, 4};
  const double bil4[16] = {1, 1.25, 1.75, 2, 1.5, 1.75, 2.25, 2.5,
                           2.5, 2.75, 3.25, 3.5, 3, 3.25, 3.75, 4};
  const double bil4ac[16] = {1, 4 / 3., 5 / 3., 2, 5 / 3., 2, 7 / 3., 8 / 3.,
                             7 / 3., 8 / 3., 3, 10 / 3., 3, 10 / 3., 11 / 3., 4};
  float y[16];
  cpu_upsample_nearest_forward(1, 2, 2, 3, 3, x, y);
  check("nearest known", "2x2->3x3", y, near3, 9, 1e-7);
  cpu_upsample_bilinear_forward(1, 2, 2, 4, 4, 0, x, y);
  check("bilinear known", "2x2->4x4", y, bil4, 16, 1e-7);
  cpu_upsample_bilinear_forward(1, 2, 2, 4, 4, 1, x, y);
  check("bilinear ac known", "2x2->4x4", y, bil4ac, 16, 1e-6);
  for (int mode = 0; mode < 3; mode++) {
    ups_case(3, 7, 7, 14, 14, mode);
    ups_case(2, 14, 14, 28, 28, mode);
    ups_case(2, 9, 5, 4, 11, mode);
    ups_case(2, 1, 1, 3, 2, mode);
    ups_case(1, 3, 1500, 2, 1501, mode); /* wider than the cached taps */
  }
  for (int it = 0; it < 150; it++)
    ups_case(irand(1, 4), irand(1, 12), irand(1, 12), irand(1, 25), irand(1, 25), it % 3);
}

/* -------------------------------------------------------------- timing */

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* times forward and backward (gx, gw, gb) of one conv; returns fwd+bwd GFLOP/s */
static double bench_conv(int transposed, cpu_conv_params p, int reps, int quiet) {
  size_t xsz = (size_t)p.N * p.C * p.H * p.W, ysz = (size_t)p.N * p.K * p.OH * p.OW;
  size_t wsz = transposed ? (size_t)p.C * (p.K / p.groups) * p.kh * p.kw
                          : (size_t)p.K * (p.C / p.groups) * p.kh * p.kw;
  size_t wk = transposed ? cpu_conv_transpose2d_work(&p) : cpu_conv2d_work(&p);
  float *x = randv(xsz), *w = randv(wsz), *b = randv(p.K), *y = randv(ysz), *gy = randv(ysz);
  float *gx = randv(xsz), *gw = randv(wsz), *gb = randv(p.K), *work = randv(wk);
  /* MACs of one pass: every output position of the smaller-side tensor times taps */
  double flop = transposed ? 2.0 * p.N * p.H * p.W * p.C * (p.K / p.groups) * p.kh * p.kw
                           : 2.0 * p.N * p.OH * p.OW * p.K * (p.C / p.groups) * p.kh * p.kw;
  double tf = 1e30, tb = 1e30;
  for (int r = 0; r < reps + 1; r++) { /* first rep warms up */
    double t0 = now();
    if (transposed) cpu_conv_transpose2d_forward(&p, x, w, b, y, work);
    else cpu_conv2d_forward(&p, x, w, b, y, work);
    double t1 = now();
    if (transposed) cpu_conv_transpose2d_backward(&p, x, w, gy, gx, gw, gb, work);
    else cpu_conv2d_backward(&p, x, w, gy, gx, gw, gb, work);
    double t2 = now();
    if (r) { tf = fmin(tf, t1 - t0); tb = fmin(tb, t2 - t1); }
  }
  if (!quiet)
    printf("  %-6s N%-3d C%-3d K%-3d %2dx%-2d -> %2dx%-2d k%d s%d: fwd %7.2f ms %6.1f GFLOP/s | "
           "bwd %7.2f ms %6.1f GFLOP/s | work %.1f MB\n",
           transposed ? "convT" : "conv", p.N, p.C, p.K, p.H, p.W, p.OH, p.OW, p.kh, p.sh,
           tf * 1e3, flop / tf * 1e-9, tb * 1e3, 2 * flop / tb * 1e-9, wk * 4.0 / 1048576);
  free(x); free(w); free(b); free(y); free(gy); free(gx); free(gw); free(gb); free(work);
  return 3 * flop / (tf + tb) * 1e-9;
}

static double cpu_now(void) {
  struct timespec t;
  clock_gettime(CLOCK_PROCESS_CPUTIME_ID, &t);
  return t.tv_sec + 1e-9 * t.tv_nsec;
}

/* --convt: the k4 s2 p1 transposed convs, im2col path (old) against the
** sub-pixel path (new) in the same run: process CPU ms (both threads), min
** over reps, of the forward, the data gradient alone and the weight gradient alone */
static const char *auto_paths(const cpu_conv_params *p) {
  static char s[16];
  for (int i = 0; i < 3; i++) s[i] = cpu_convt2_use(p, i) ? 'N' : 'o';
  s[3] = 0;
  return s;   /* fwd, gx, gw: N new, o old */
}

static void bench_convt(int reps) {
  cpu_conv_params shapes[] = {
    mkpt(64, 256, 64, 7, 7, 4, 4, 2, 2, 1, 1, 1, 1, 1, 0, 0),    /* cc D64 B64 up1 */
    mkpt(64, 128, 64, 14, 14, 4, 4, 2, 2, 1, 1, 1, 1, 1, 0, 0),  /* cc D64 B64 up2 */
    mkpt(256, 512, 128, 7, 7, 4, 4, 2, 2, 1, 1, 1, 1, 1, 0, 0),  /* D128 B256 up1 */
    mkpt(256, 256, 128, 14, 14, 4, 4, 2, 2, 1, 1, 1, 1, 1, 0, 0),/* D128 B256 up2 */
    mkpt(64, 32, 8, 7, 7, 4, 4, 2, 2, 1, 1, 1, 1, 1, 0, 0),      /* D=8 widths */
    mkpt(64, 16, 8, 14, 14, 4, 4, 2, 2, 1, 1, 1, 1, 1, 0, 0),
    mkpt(64, 16, 16, 7, 7, 4, 4, 2, 2, 1, 1, 1, 1, 1, 0, 0),
    mkpt(64, 16, 16, 14, 14, 4, 4, 2, 2, 1, 1, 1, 1, 1, 0, 0),
    mkpt(64, 32, 32, 14, 14, 4, 4, 2, 2, 1, 1, 1, 1, 1, 0, 0),
    mkpt(64, 8, 8, 14, 14, 4, 4, 2, 2, 1, 1, 1, 1, 1, 0, 0),
  };
  const char *only = getenv("CONVT_SHAPES");   /* e.g. "0,1": a subset */
  printf("convT k4 s2 p1, process CPU ms, min of %d (old = im2col+col2im, new = sub-pixel F(2x2,2x2)):\n", reps);
  printf("  %-28s %9s %9s %6s | %9s %9s %6s | %9s %9s %6s\n", "shape", "fwd old", "new", "x",
         "gx old", "new", "x", "gw old", "new", "x");
  for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
    if (only && *only) {
      int hit = 0;
      for (const char *q = only; *q; ) { char *e; long v = strtol(q, &e, 10); if (e == q) break; if (v == (long)si) hit = 1; q = *e ? e + 1 : e; }
      if (!hit) continue;
    }
    cpu_conv_params p = shapes[si];
    size_t xsz = (size_t)p.N * p.C * p.H * p.W, ysz = (size_t)p.N * p.K * p.OH * p.OW;
    size_t wsz = (size_t)p.C * p.K * 16;
    float *x = randv(xsz), *w = randv(wsz), *b = randv(p.K), *y = randv(ysz), *gy = randv(ysz);
    float *gx = randv(xsz), *gw = randv(wsz);
    double t[2][3];
    const char *paths = getenv("CONVT_PATHS");   /* "1": the new path only (profiling) */
    for (int k = 0; k < 3; k++) t[0][k] = t[1][k] = 1e30;
    for (int f = paths && *paths == '1' ? 1 : 0; f < 2; f++) {
      cpu_convt2_force(f);
      size_t wk = cpu_conv_transpose2d_work(&p);
      float *work = randv(wk);
      for (int k = 0; k < 3; k++) t[f][k] = 1e30;
      for (int r = 0; r < reps + 1; r++) {   /* the first rep warms up */
        double t0 = cpu_now();
        cpu_conv_transpose2d_forward(&p, x, w, b, y, work);
        double t1 = cpu_now();
        cpu_conv_transpose2d_backward(&p, x, w, gy, gx, NULL, NULL, work);
        double t2 = cpu_now();
        cpu_conv_transpose2d_backward(&p, x, w, gy, NULL, gw, NULL, work);
        double t3 = cpu_now();
        if (r) { t[f][0] = fmin(t[f][0], t1 - t0); t[f][1] = fmin(t[f][1], t2 - t1); t[f][2] = fmin(t[f][2], t3 - t2); }
      }
      free(work);
    }
    cpu_convt2_force(-1);
    char sh[64];
    snprintf(sh, sizeof sh, "N%d C%d K%d %dx%d->%dx%d", p.N, p.C, p.K, p.H, p.W, p.OH, p.OW);
    printf("  %-28s %9.2f %9.2f %6.2f | %9.2f %9.2f %6.2f | %9.2f %9.2f %6.2f  auto: %s\n", sh,
           t[0][0] * 1e3, t[1][0] * 1e3, t[0][0] / t[1][0], t[0][1] * 1e3, t[1][1] * 1e3, t[0][1] / t[1][1],
           t[0][2] * 1e3, t[1][2] * 1e3, t[0][2] / t[1][2], auto_paths(&p));
    fflush(stdout);
    free(x); free(w); free(b); free(y); free(gy); free(gx); free(gw);
  }
}

int main(int argc, char **argv) {
  if (argc > 1 && !strcmp(argv[1], "--convt")) {
    bench_convt(argc > 2 ? atoi(argv[2]) : 6);
    return 0;
  }
  int bench = argc > 1 && !strcmp(argv[1], "--bench");
  const char *seed = getenv("TEST_SEED"); /* other random shapes, for soak runs */
  if (seed && atoll(seed)) rng_state = (uint64_t)atoll(seed) * 0x9E3779B97F4A7C15ull;
  test_conv();
  test_pool();
  test_upsample();
  printf("%d checks, %d failures\n", checks, failures);
#ifdef _OPENMP
  printf("timing with %d OpenMP threads:\n", omp_get_max_threads());
#endif
  double gf = bench_conv(0, mkp(64, 64, 64, 28, 28, 3, 3, 1, 1, 1, 1, 1, 1, 1), 3, 0);
  printf("UNet conv N64 C64 K64 28x28 k3 fwd+bwd: %.1f GFLOP/s\n", gf);
  if (bench) {
    cpu_conv_params shapes[] = {
      mkp(256, 1, 64, 28, 28, 3, 3, 1, 1, 1, 1, 1, 1, 1),
      mkp(256, 64, 64, 28, 28, 3, 3, 1, 1, 1, 1, 1, 1, 1),
      mkp(256, 64, 128, 28, 28, 3, 3, 2, 2, 1, 1, 1, 1, 1),
      mkp(256, 128, 128, 14, 14, 3, 3, 1, 1, 1, 1, 1, 1, 1),
      mkp(256, 128, 256, 14, 14, 3, 3, 2, 2, 1, 1, 1, 1, 1),
      mkp(256, 256, 256, 7, 7, 3, 3, 1, 1, 1, 1, 1, 1, 1),
      mkp(256, 64, 1, 28, 28, 3, 3, 1, 1, 1, 1, 1, 1, 1),
      mkp(256, 128, 64, 28, 28, 1, 1, 1, 1, 0, 0, 1, 1, 1),
    };
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) bench_conv(0, shapes[i], 2, 0);
    bench_conv(1, mkpt(256, 256, 128, 7, 7, 4, 4, 2, 2, 1, 1, 1, 1, 1, 0, 0), 2, 0);
    bench_conv(1, mkpt(256, 128, 64, 14, 14, 4, 4, 2, 2, 1, 1, 1, 1, 1, 0, 0), 2, 0);
    bench_conv(1, mkpt(256, 256, 256, 1, 1, 7, 7, 7, 7, 0, 0, 1, 1, 1, 0, 0), 2, 0);
  }
  if (failures) { printf("FAILED\n"); return 1; }
  printf("OK\n");
  return 0;
}
