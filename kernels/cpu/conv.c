/*
** conv.c: conv2d and conv_transpose2d (forward/backward) via im2col + sgemm.
**
** Both ops are built on one linear map D between an "image" tensor
** img [N, ci, Hi, Wi] and a "column-space" tensor cs [N, co, Ho, Wo]:
**     D(img) = W * im2col(img)         (per group; W_g is [co/G, ci/G*kh*kw])
** conv2d:            img = x, cs = y:  y = D(x),  gx = D^T(gy)
** conv_transpose2d:  img = y, cs = x:  y = D^T(x), gx = D(gy)
** and in both cases gw_g = sum_n cs_g * im2col(img)_g^T. The two weight
** layouts ([K, C/G, kh, kw] and PyTorch's transposed [C, K/G, kh, kw]) are
** both exactly "[co/G, ci/G*kh*kw] per group, groups contiguous".
**
** Threading: for the training shapes (many images, a few MB of columns each)
** running one single-threaded sgemm per OpenMP thread over blocks of images
** is faster than one 2-thread sgemm per image (no fork/join per gemm, the
** im2col/col2im run in parallel too). When there are too few image blocks
** to share, the images are processed in order and OpenBLAS threads the gemm.
** Small images are batched (nb images side by side in the columns) so the
** gemm is wide enough to run near peak.
** 3x3 stride-1 convs go through Winograd (winograd.c) and k4 s2 p1
** transposed convs (the UpConv) through four sub-pixel F(2x2,2x2) convs
** (convt2.c) where those are measured faster; everything else comes here.
*/
#include "cpu_nn.h"
#include "cpu_autocast.h"
#include "cpu_kernels.h"
#include "winograd.h"
#include "convt2.h"
#include <stdlib.h>
#include <string.h>
#include <cblas.h>
#ifdef _OPENMP
#include <omp.h>
#endif

/* target gemm width (columns) when batching small images, and the scratch
** budget in floats over all thread slots (~192 MB) */
#define CONV_TARGET_COLS 640
#define CONV_BUDGET ((size_t)48 << 20)
#define CONV_MAX_SLOTS 64
#ifndef CONV_DIRECT_MAX_CO
#define CONV_DIRECT_MAX_CO 2   /* most column-space channels for direct loops */
#endif

typedef struct {
  int N, G, ci, co;          /* batch, groups, image / column-space channels */
  int Hi, Wi, Ho, Wo;        /* image and column-space spatial sizes */
  int kh, kw, sh, sw, ph, pw, dh, dw;
  int ckk;                   /* ci/G * kh * kw: rows of one group's columns */
  int ident;                 /* 1x1, stride 1, no padding: im2col is a copy */
  int direct;                /* few column-space channels: direct loops, no gemm */
  /* tiling */
  int nb;                    /* images per block */
  int rows;                  /* column-space rows per chunk when nb == 1 */
  int nblk;                  /* number of image blocks */
  int slots;                 /* thread slots the work buffer holds */
  size_t col_sz, t_sz, gw_sz, slot_sz;  /* floats per slot */
} conv_geom;

/* thread slots: fixed per process so that *_work and the kernels agree even
** if the OpenMP thread count changes in between */
static int conv_slots(void) {
#ifdef _OPENMP
  int n = omp_get_num_procs();
  return n < 1 ? 1 : n > CONV_MAX_SLOTS ? CONV_MAX_SLOTS : n;
#else
  return 1;
#endif
}

static int conv_threads(const conv_geom *g) {
#ifdef _OPENMP
  int nt = omp_get_max_threads();
  if (nt > g->slots) nt = g->slots;
  /* share blocks only when every thread gets a fair part */
  if (nt > 1 && (g->nblk >= 4 * nt || (g->nblk >= nt && g->nblk % nt == 0))) return nt;
#endif
  return 1;
}

static void conv_plan(conv_geom *g) {
  size_t HWo = (size_t)g->Ho * g->Wo;
  g->ckk = g->ci / g->G * g->kh * g->kw;
  g->ident = g->kh == 1 && g->kw == 1 && g->sh == 1 && g->sw == 1 && g->ph == 0 &&
             g->pw == 0 && g->Hi == g->Ho && g->Wi == g->Wo;
  g->slots = conv_slots();
  g->gw_sz = (size_t)g->co * g->ckk;
  size_t per = CONV_BUDGET / g->slots;
  size_t colsmax = per > g->gw_sz ? (per - g->gw_sz) / ((size_t)g->ckk + 2 * (size_t)g->co) : 0;
  if (colsmax < (size_t)g->Wo) colsmax = g->Wo > 0 ? (size_t)g->Wo : 1;
  g->nb = 1;
  g->rows = g->Ho;
  /* with one or two column-space channels (the UNet's output conv) the gemm
  ** degenerates to a matrix-vector product and im2col dominates: loop directly */
  g->direct = g->co <= CONV_DIRECT_MAX_CO && g->sw == 1;
  if (g->direct) {
    /* one image at a time, no scratch but the weight-gradient partials */
  } else if (HWo > 0 && HWo < CONV_TARGET_COLS && g->N > 1) {
    size_t nb = (CONV_TARGET_COLS + HWo - 1) / HWo;
    if (nb * HWo > colsmax) nb = colsmax / HWo;
    /* leave at least two blocks per thread slot, so that the threads share */
    size_t share = (size_t)g->N / (2 * (size_t)g->slots);
    if (nb > share) nb = share;
    g->nb = nb < 1 ? 1 : (int)nb;
  } else if (HWo > colsmax) {
    g->rows = (int)(colsmax / g->Wo);
  }
  if (g->rows < 1) g->rows = 1;
  size_t cols = g->nb > 1 ? (size_t)g->nb * HWo : (size_t)g->rows * g->Wo;
  g->col_sz = g->direct ? 0 : (size_t)g->ckk * cols;
  g->t_sz = g->nb > 1 ? (size_t)g->co * cols : 0;
  /* round slots to 16 floats (64 bytes) to keep them cache-line aligned */
  g->slot_sz = (g->col_sz + 2 * g->t_sz + g->gw_sz + 15) & ~(size_t)15;
  g->nblk = (g->N + g->nb - 1) / g->nb;
}

/* conv2d: image = x, column space = y */
static void geom_conv(const cpu_conv_params *p, conv_geom *g) {
  memset(g, 0, sizeof *g);
  g->N = p->N; g->G = p->groups > 0 ? p->groups : 1; g->ci = p->C; g->co = p->K;
  g->Hi = p->H; g->Wi = p->W; g->Ho = p->OH; g->Wo = p->OW;
  g->kh = p->kh; g->kw = p->kw; g->sh = p->sh; g->sw = p->sw;
  g->ph = p->ph; g->pw = p->pw; g->dh = p->dh; g->dw = p->dw;
  conv_plan(g);
}

/* conv_transpose2d: image = y (K channels, OH x OW), column space = x */
static void geom_convt(const cpu_conv_params *p, conv_geom *g) {
  memset(g, 0, sizeof *g);
  g->N = p->N; g->G = p->groups > 0 ? p->groups : 1; g->ci = p->K; g->co = p->C;
  g->Hi = p->OH; g->Wi = p->OW; g->Ho = p->H; g->Wo = p->W;
  g->kh = p->kh; g->kw = p->kw; g->sh = p->sh; g->sw = p->sw;
  g->ph = p->ph; g->pw = p->pw; g->dh = p->dh; g->dw = p->dw;
  conv_plan(g);
}

/* valid column range [lo, hi) of output positions o with 0 <= o*s - p + k*d < n */
static void valid_range(int n, int on, int s, int p, int kd, int *lo, int *hi) {
  int t = p - kd, u = n - 1 + p - kd;
  int l = t <= 0 ? 0 : (t + s - 1) / s;
  int h = u < 0 ? 0 : u / s + 1;
  if (h > on) h = on;
  if (l > h) l = h;
  *lo = l; *hi = h;
}

/* im2col of column-space rows [r0, r1) of one group's image planes img
** [ci/G, Hi, Wi] into col (ckk rows, leading dimension ldc) */
static void im2col(const conv_geom *g, const float *img, int r0, int r1, float *col, size_t ldc) {
  int Cg = g->ci / g->G, H = g->Hi, W = g->Wi, OW = g->Wo;
  for (int c = 0; c < Cg; c++)
    for (int ki = 0; ki < g->kh; ki++)
      for (int kj = 0; kj < g->kw; kj++) {
        const float *plane = img + (size_t)c * H * W;
        float *dst = col + ((size_t)(c * g->kh + ki) * g->kw + kj) * ldc;
        int lo, hi, off = kj * g->dw - g->pw;
        valid_range(W, OW, g->sw, g->pw, kj * g->dw, &lo, &hi);
        for (int oh = r0; oh < r1; oh++, dst += OW) {
          int ih = oh * g->sh - g->ph + ki * g->dh;
          if (ih < 0 || ih >= H || lo >= hi) { memset(dst, 0, sizeof(float) * OW); continue; }
          const float *src = plane + (size_t)ih * W + off;
          if (lo > 0) memset(dst, 0, sizeof(float) * lo);
          if (g->sw == 1) memcpy(dst + lo, src + lo, sizeof(float) * (hi - lo));
          else for (int ow = lo; ow < hi; ow++) dst[ow] = src[ow * g->sw];
          if (hi < OW) memset(dst + hi, 0, sizeof(float) * (OW - hi));
        }
      }
}

/* adjoint of im2col: accumulates col into the image planes */
static void col2im(const conv_geom *g, const float *col, size_t ldc, int r0, int r1, float *img) {
  int Cg = g->ci / g->G, H = g->Hi, W = g->Wi, OW = g->Wo;
  for (int c = 0; c < Cg; c++)
    for (int ki = 0; ki < g->kh; ki++)
      for (int kj = 0; kj < g->kw; kj++) {
        float *plane = img + (size_t)c * H * W;
        const float *src = col + ((size_t)(c * g->kh + ki) * g->kw + kj) * ldc;
        int lo, hi, off = kj * g->dw - g->pw;
        valid_range(W, OW, g->sw, g->pw, kj * g->dw, &lo, &hi);
        for (int oh = r0; oh < r1; oh++, src += OW) {
          int ih = oh * g->sh - g->ph + ki * g->dh;
          if (ih < 0 || ih >= H) continue;
          float *dst = plane + (size_t)ih * W + off;
          if (g->sw == 1) for (int ow = lo; ow < hi; ow++) dst[ow] += src[ow];
          else for (int ow = lo; ow < hi; ow++) dst[ow * g->sw] += src[ow];
        }
      }
}

/* what one pass computes; any pointer may be NULL */
typedef struct {
  const float *img;   /* image input to im2col */
  const float *cs;    /* column-space input (gemm operand) */
  const float *w;
  float *cs_out;      /* = W * im2col(img) (+ cs_bias) */
  const float *cs_bias;
  float *img_out;     /* = col2im(W^T * cs) (+ img_bias) */
  const float *img_bias;
  float *gw;          /* = sum cs * im2col(img)^T */
} conv_pass;

/* one block of nb images starting at image n0, in thread slot s */
static void conv_block(const conv_geom *g, const conv_pass *P, int n0, int nb, float *slot,
                       float *gwp) {
  int G = g->G, cog = g->co / G;
  size_t HWi = (size_t)g->Hi * g->Wi, HWo = (size_t)g->Ho * g->Wo;
  size_t img_n = (size_t)g->ci * HWi, cs_n = (size_t)g->co * HWo;
  size_t img_g = (size_t)(g->ci / G) * HWi, w_g = (size_t)cog * g->ckk;
  float *col = slot, *tin = slot + g->col_sz, *tout = tin + g->t_sz;
  int need_col = P->cs_out || P->gw;

  if (P->img_out) /* col2im accumulates: start from the bias (or zero) */
    for (int b = 0; b < nb; b++)
      for (int c = 0; c < g->ci; c++) {
        float *d = P->img_out + (size_t)(n0 + b) * img_n + c * HWi;
        float v = P->img_bias ? P->img_bias[c] : 0.0f;
        if (v == 0.0f) memset(d, 0, sizeof(float) * HWi);
        else for (size_t i = 0; i < HWi; i++) d[i] = v;
      }

  if (nb > 1) {
    /* batched small images: images side by side, so operands go through
    ** tin/tout with leading dimension cols */
    size_t cols = (size_t)nb * HWo;
    if (P->cs)
      for (int c = 0; c < g->co; c++)
        for (int b = 0; b < nb; b++)
          memcpy(tin + c * cols + b * HWo, P->cs + (size_t)(n0 + b) * cs_n + c * HWo,
                 sizeof(float) * HWo);
    for (int gi = 0; gi < G; gi++) {
      const float *wg = P->w + gi * w_g;
      if (need_col)
        for (int b = 0; b < nb; b++)
          im2col(g, P->img + (size_t)(n0 + b) * img_n + gi * img_g, 0, g->Ho, col + b * HWo, cols);
      if (P->gw)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, cog, g->ckk, (int)cols, 1.0f,
                    tin + gi * cog * cols, (int)cols, col, (int)cols, 1.0f, gwp + gi * w_g, g->ckk);
      if (P->cs_out)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cog, (int)cols, g->ckk, 1.0f,
                    wg, g->ckk, col, (int)cols, 0.0f, tout + gi * cog * cols, (int)cols);
      if (P->img_out) {
        cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, g->ckk, (int)cols, cog, 1.0f,
                    wg, g->ckk, tin + gi * cog * cols, (int)cols, 0.0f, col, (int)cols);
        for (int b = 0; b < nb; b++)
          col2im(g, col + b * HWo, cols, 0, g->Ho, P->img_out + (size_t)(n0 + b) * img_n + gi * img_g);
      }
    }
    if (P->cs_out)
      for (int c = 0; c < g->co; c++) {
        float bv = P->cs_bias ? P->cs_bias[c] : 0.0f;
        for (int b = 0; b < nb; b++) {
          float *d = P->cs_out + (size_t)(n0 + b) * cs_n + c * HWo;
          const float *s = tout + c * cols + b * HWo;
          for (size_t i = 0; i < HWo; i++) d[i] = s[i] + bv;
        }
      }
    return;
  }

  /* one image, in chunks of column-space rows; operands are used in place */
  for (int r0 = 0; r0 < g->Ho; r0 += g->rows) {
    int r1 = r0 + g->rows < g->Ho ? r0 + g->rows : g->Ho;
    int cols = (r1 - r0) * g->Wo;
    size_t off = (size_t)r0 * g->Wo;
    for (int gi = 0; gi < G; gi++) {
      const float *wg = P->w + gi * w_g;
      const float *img = P->img ? P->img + (size_t)n0 * img_n + gi * img_g : NULL;
      const float *cs = P->cs ? P->cs + (size_t)n0 * cs_n + gi * cog * HWo + off : NULL;
      const float *cm = col;
      int ldcol = cols;
      if (need_col) {
        if (g->ident) { cm = img + off; ldcol = (int)HWi; }
        else im2col(g, img, r0, r1, col, cols);
      }
      if (P->gw)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, cog, g->ckk, cols, 1.0f,
                    cs, (int)HWo, cm, ldcol, 1.0f, gwp + gi * w_g, g->ckk);
      if (P->cs_out) {
        float *d = P->cs_out + (size_t)n0 * cs_n + gi * cog * HWo + off;
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, cog, cols, g->ckk, 1.0f,
                    wg, g->ckk, cm, ldcol, 0.0f, d, (int)HWo);
        if (P->cs_bias)
          for (int c = 0; c < cog; c++) {
            float bv = P->cs_bias[gi * cog + c];
            for (int i = 0; i < cols; i++) d[c * HWo + i] += bv;
          }
      }
      if (P->img_out) {
        float *io = P->img_out + (size_t)n0 * img_n + gi * img_g;
        if (g->ident) /* the columns are the image: accumulate straight into it */
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, g->ckk, cols, cog, 1.0f,
                      wg, g->ckk, cs, (int)HWo, 1.0f, io + off, (int)HWi);
        else {
          cblas_sgemm(CblasRowMajor, CblasTrans, CblasNoTrans, g->ckk, cols, cog, 1.0f,
                      wg, g->ckk, cs, (int)HWo, 0.0f, col, cols);
          col2im(g, col, cols, r0, r1, io);
        }
      }
    }
  }
}

/* direct loops for one image (g->direct: stride 1 along width). Each tap
** (k, c, ki, kj) is a shifted multiply-add of whole rows, which vectorises. */
static void conv_direct_image(const conv_geom *g, const conv_pass *P, int n, float *gwp) {
  int G = g->G, cog = g->co / G, cig = g->ci / G, Wi = g->Wi, Wo = g->Wo;
  size_t HWi = (size_t)g->Hi * Wi, HWo = (size_t)g->Ho * Wo;
  const float *img = P->img ? P->img + (size_t)n * g->ci * HWi : NULL;
  const float *cs = P->cs ? P->cs + (size_t)n * g->co * HWo : NULL;
  float *cso = P->cs_out ? P->cs_out + (size_t)n * g->co * HWo : NULL;
  float *imo = P->img_out ? P->img_out + (size_t)n * g->ci * HWi : NULL;
  if (cso)
    for (int k = 0; k < g->co; k++)
      for (size_t i = 0; i < HWo; i++) cso[k * HWo + i] = P->cs_bias ? P->cs_bias[k] : 0.0f;
  if (imo)
    for (int c = 0; c < g->ci; c++)
      for (size_t i = 0; i < HWi; i++) imo[c * HWi + i] = P->img_bias ? P->img_bias[c] : 0.0f;
  for (int k = 0; k < g->co; k++) {
    int gi = k / cog;
    for (int c = 0; c < cig; c++)
      for (int ki = 0; ki < g->kh; ki++)
        for (int kj = 0; kj < g->kw; kj++) {
          size_t wi = (((size_t)k * cig + c) * g->kh + ki) * g->kw + kj;
          size_t ic = (size_t)(gi * cig + c) * HWi;
          int lo, hi, off = kj * g->dw - g->pw;
          float wv = P->w[wi], acc = 0.0f;
          valid_range(Wi, Wo, 1, g->pw, kj * g->dw, &lo, &hi);
          for (int oh = 0; oh < g->Ho; oh++) {
            int ih = oh * g->sh - g->ph + ki * g->dh;
            if (ih < 0 || ih >= g->Hi) continue;
            size_t io = ic + (size_t)ih * Wi + off, oo = (size_t)k * HWo + (size_t)oh * Wo;
            if (cso) {
              float *restrict d = cso + oo;
              const float *restrict s = img + io;
              for (int ow = lo; ow < hi; ow++) d[ow] += wv * s[ow];
            }
            if (imo) {
              float *restrict d = imo + io;
              const float *restrict s = cs + oo;
              for (int ow = lo; ow < hi; ow++) d[ow] += wv * s[ow];
            }
            if (gwp) {
              const float *a = cs + oo, *b = img + io;
              #pragma omp simd reduction(+:acc)
              for (int ow = lo; ow < hi; ow++) acc += a[ow] * b[ow];
            }
          }
          if (gwp) gwp[wi] += acc;
        }
  }
}

/* runs a pass over the whole batch; gw (if any) is overwritten */
static void conv_run(const conv_geom *g, const conv_pass *P, float *work) {
  if (P->gw) memset(P->gw, 0, sizeof(float) * g->gw_sz);
  if (g->N <= 0) return;
  if ((size_t)g->Ho * g->Wo == 0 || g->ckk == 0 || g->co == 0) { /* no terms: outputs are the bias */
    size_t HWi = (size_t)g->Hi * g->Wi;
    if (P->img_out)
      for (size_t nc = 0; nc < (size_t)g->N * g->ci; nc++)
        for (size_t i = 0; i < HWi; i++)
          P->img_out[nc * HWi + i] = P->img_bias ? P->img_bias[nc % g->ci] : 0.0f;
    size_t HWo = (size_t)g->Ho * g->Wo;
    if (P->cs_out)
      for (size_t nc = 0; nc < (size_t)g->N * g->co; nc++)
        for (size_t i = 0; i < HWo; i++)
          P->cs_out[nc * HWo + i] = P->cs_bias ? P->cs_bias[nc % g->co] : 0.0f;
    return;
  }
  int nt = conv_threads(g);
  if (nt <= 1) { /* in order; OpenBLAS threads each gemm */
    for (int b = 0; b < g->nblk; b++) {
      int n0 = b * g->nb, nb = g->N - n0 < g->nb ? g->N - n0 : g->nb;
      if (g->direct) conv_direct_image(g, P, n0, P->gw);
      else conv_block(g, P, n0, nb, work, P->gw);
    }
    return;
  }
#ifdef _OPENMP
  /* one single-threaded sgemm per OpenMP thread. Only the pthreads build of
  ** OpenBLAS needs telling (the OpenMP build goes serial inside a parallel
  ** region by itself, and its set_num_threads would change ours). */
  int bl_par = openblas_get_parallel(), bl_nt = 0;
  if (bl_par == 1) { bl_nt = openblas_get_num_threads(); openblas_set_num_threads(1); }
  #pragma omp parallel num_threads(nt)
  {
    int t = omp_get_thread_num();
    float *slot = work + (size_t)t * g->slot_sz;
    float *gwp = slot + g->col_sz + 2 * g->t_sz;
    if (P->gw) memset(gwp, 0, sizeof(float) * g->gw_sz);
    #pragma omp for schedule(static)
    for (int b = 0; b < g->nblk; b++) {
      int n0 = b * g->nb, nb = g->N - n0 < g->nb ? g->N - n0 : g->nb;
      if (g->direct) conv_direct_image(g, P, n0, P->gw ? gwp : NULL);
      else conv_block(g, P, n0, nb, slot, gwp);
    }
    if (P->gw) { /* sum the per-thread partial weight gradients, in slot order */
      #pragma omp for schedule(static)
      for (size_t i = 0; i < g->gw_sz; i++) {
        float s = 0.0f;
        for (int u = 0; u < nt; u++) s += work[(size_t)u * g->slot_sz + g->col_sz + 2 * g->t_sz + i];
        P->gw[i] = s;
      }
    }
  }
  if (bl_par == 1) openblas_set_num_threads(bl_nt);
#endif
}

/* gb[k] = sum over n and space of gy [N, K, S] */
static void bias_grad(int N, int K, size_t S, const float *gy, float *gb) {
  #pragma omp parallel for schedule(static)
  for (int k = 0; k < K; k++) {
    double s = 0.0;
    for (int n = 0; n < N; n++) {
      const float *p = gy + ((size_t)n * K + k) * S;
      float t = 0.0f;
      for (size_t i = 0; i < S; i++) t += p[i];
      s += t;
    }
    gb[k] = (float)s;
  }
}

/* 3x3 stride-1 convs (most of the UNet's FLOPs) run forward and both
** gradients through Winograd (winograd.c) when the batch gives it enough
** tiles; FDM_NO_WINOGRAD=1 in the environment turns it off, for comparisons */
static int use_winograd(const cpu_conv_params *p) {
  static int off = -1;
  if (off < 0) { const char *e = getenv("FDM_NO_WINOGRAD"); off = e && *e && *e != '0'; }
  return !off && cpu_winograd_ok(p) && cpu_winograd_worth(p);
}

size_t cpu_conv2d_work(const cpu_conv_params *p) {
  conv_geom g;
  geom_conv(p, &g);
  size_t n = (size_t)g.slots * g.slot_sz;
  if (use_winograd(p)) { size_t w = cpu_winograd_work(p); if (w > n) n = w; }
  return n;
}

void cpu_conv2d_forward(const cpu_conv_params *p, const float *x, const float *w,
                        const float *b, float *y, float *work) {
  if (use_winograd(p)) {
    int m = cpu_winograd_tile(p);
    cpu_winograd_weights(m, p->K, p->C, w, 0, work);
    cpu_winograd_conv(m, p->N, p->C, p->H, p->W, p->K, p->ph, p->pw, p->OH, p->OW, x, work, b, y,
                      work + cpu_winograd_ufloats(m, p->K, p->C));
    return;
  }
  conv_geom g;
  geom_conv(p, &g);
  conv_pass P = {0};
  P.img = x; P.w = w; P.cs_out = y; P.cs_bias = b;
  conv_run(&g, &P, work);
}

void cpu_conv2d_backward(const cpu_conv_params *p, const float *x, const float *w,
                         const float *gy, float *gx, float *gw, float *gb, float *work) {
  conv_geom g;
  geom_conv(p, &g);
  if (gb) bias_grad(p->N, p->K, (size_t)p->OH * p->OW, gy, gb);
  if (gx && use_winograd(p)) {
    /* gx = full correlation of gy with the transposed, rotated filters */
    int m = cpu_winograd_tile(p);
    cpu_winograd_weights(m, p->C, p->K, w, 1, work);
    cpu_winograd_conv(m, p->N, p->K, p->OH, p->OW, p->C, 2 - p->ph, 2 - p->pw, p->H, p->W, gy, work,
                      NULL, gx, work + cpu_winograd_ufloats(m, p->K, p->C));
    gx = NULL;
  }
  if (gw && use_winograd(p)) {
    cpu_winograd_weight_grad(cpu_winograd_tile(p), p->N, p->C, p->H, p->W, p->K, p->ph, p->pw, p->OH, p->OW, x, gy, gw, work);
    gw = NULL;
  }
  if (!gx && !gw) return;
  conv_pass P = {0};
  P.img = x; P.cs = gy; P.w = w; P.gw = gw; P.img_out = gx;
  conv_run(&g, &P, work);
}

/* k4 s2 p1 transposed convs (the UNets' UpConv) with enough channels run
** forward, data gradient and weight gradient as four sub-pixel 2x2 convs
** through Winograd F(2x2, 2x2) (convt2.c); FDM_CONVT2=0|1 forces it off/on */
size_t cpu_conv_transpose2d_work(const cpu_conv_params *p) {
  size_t n = 0;
  if (!cpu_convt2_use(p, 0) || !cpu_convt2_use(p, 1) || !cpu_convt2_use(p, 2)) {
    conv_geom g;
    geom_convt(p, &g);
    n = (size_t)g.slots * g.slot_sz;
  }
  if (cpu_convt2_use(p, 0) || cpu_convt2_use(p, 1) || cpu_convt2_use(p, 2)) {
    size_t t = cpu_convt2_work(p);
    if (t > n) n = t;
  }
  return n;
}

void cpu_conv_transpose2d_forward(const cpu_conv_params *p, const float *x, const float *w,
                                  const float *b, float *y, float *work) {
  if (cpu_convt2_use(p, 0)) { cpu_convt2_forward(p, x, w, b, y, work); return; }
  conv_geom g;
  geom_convt(p, &g);
  conv_pass P = {0};
  P.cs = x; P.w = w; P.img_out = y; P.img_bias = b;
  conv_run(&g, &P, work);
}

void cpu_conv_transpose2d_backward(const cpu_conv_params *p, const float *x, const float *w,
                                   const float *gy, float *gx, float *gw, float *gb, float *work) {
  conv_geom g;
  geom_convt(p, &g);
  if (gb) bias_grad(p->N, p->K, (size_t)p->OH * p->OW, gy, gb);
  if (gx && cpu_convt2_use(p, 1)) { cpu_convt2_data_grad(p, w, gy, gx, work); gx = NULL; }
  if (gw && cpu_convt2_use(p, 2)) { cpu_convt2_weight_grad(p, x, gy, gw, work); gw = NULL; }
  if (!gx && !gw) return;
  conv_pass P = {0};
  P.img = gy; P.cs = x; P.w = w; P.gw = gw; P.cs_out = gx;
  conv_run(&g, &P, work);
}

/* ---- kernel-table entries (cpu_kernels.h) ---- */

/* the weight as float32: the view's own data, or a converted copy of a
** float16/bfloat16 weight (once per call; *owned is then freed by the caller) */
static const float *float_weights(const char *op, const fdm_kview *w, float **owned) {
  *owned = NULL;
  if (w->dtype == FDM_FLOAT32) return w->data;
  int64_t n = fdm_kview_numel(w);
  *owned = malloc((size_t)(n ? n : 1) * sizeof(float));
  if (!*owned) {
    fdm_seterror("%s: out of memory converting the %s weight to float32", op, fdm_dtype_name(w->dtype));
    return NULL;
  }
  cpu_weights_to_float(w, 0, n, *owned);
  return *owned;
}

#define VDATA(v) ((v) ? (float *)(v)->data : NULL)

/* autocast (cpu_autocast.h): the float32 entry f on rounded operands */
typedef int (*conv_forward_fn)(const fdm_conv_params *, const fdm_kview *, const fdm_kview *, const fdm_kview *,
                               const fdm_kview *, const fdm_kview *);
typedef int (*conv_backward_fn)(const fdm_conv_params *, const fdm_kview *, const fdm_kview *, const fdm_kview *,
                                const fdm_kview *, const fdm_kview *, const fdm_kview *, const fdm_kview *);

static int forward_autocast(const char *op, conv_forward_fn f, const fdm_conv_params *p, const fdm_kview *x,
                            const fdm_kview *w, const fdm_kview *b, const fdm_kview *y, const fdm_kview *work) {
  const fdm_kview *ops[2] = {x, w};
  cpu_rounded r[2];
  if (cpu_round_operands(op, p->autocast, 2, ops, r)) return -1;
  fdm_conv_params q = *p;
  q.autocast = FDM_FLOAT32;
  int rc = f(&q, &r[0].v, &r[1].v, b, y, work);
  cpu_rounded_free(2, r);
  return rc;
}

/* x is rounded only for gw, w only for gx; the bias gradient sums the float32 gy */
static int backward_autocast(const char *op, conv_backward_fn f, const fdm_conv_params *p, const fdm_kview *x,
                             const fdm_kview *w, const fdm_kview *gy, const fdm_kview *gx, const fdm_kview *gw,
                             const fdm_kview *gb, const fdm_kview *work) {
  const fdm_kview *ops[3] = {gw ? x : NULL, gx ? w : NULL, gy};
  cpu_rounded r[3];
  if (cpu_round_operands(op, p->autocast, 3, ops, r)) return -1;
  fdm_conv_params q = *p;
  q.autocast = FDM_FLOAT32;
  int rc = (gx || gw) ? f(&q, gw ? &r[0].v : x, gx ? &r[1].v : w, &r[2].v, gx, gw, NULL, work) : 0;
  cpu_rounded_free(3, r);
  return rc || !gb ? rc : f(&q, x, w, gy, NULL, NULL, gb, work);
}

int cpu_kernel_conv2d_work(const fdm_conv_params *p, size_t *floats) {
  *floats = cpu_conv2d_work(p);
  return 0;
}

int cpu_kernel_conv2d_forward(const fdm_conv_params *p, const fdm_kview *x, const fdm_kview *w,
                              const fdm_kview *b, const fdm_kview *y, const fdm_kview *work) {
  if (p->autocast != FDM_FLOAT32)
    return forward_autocast("conv2d", cpu_kernel_conv2d_forward, p, x, w, b, y, work);
  float *owned;
  const float *pw = float_weights("conv2d", w, &owned);
  if (!pw) return -1;
  cpu_conv2d_forward(p, x->data, pw, VDATA(b), y->data, work->data);
  free(owned);
  return 0;
}

int cpu_kernel_conv2d_backward(const fdm_conv_params *p, const fdm_kview *x, const fdm_kview *w,
                               const fdm_kview *gy, const fdm_kview *gx, const fdm_kview *gw,
                               const fdm_kview *gb, const fdm_kview *work) {
  if (p->autocast != FDM_FLOAT32)
    return backward_autocast("conv2d", cpu_kernel_conv2d_backward, p, x, w, gy, gx, gw, gb, work);
  float *owned;
  const float *pw = float_weights("conv2d", w, &owned);
  if (!pw) return -1;
  cpu_conv2d_backward(p, x->data, pw, gy->data, VDATA(gx), VDATA(gw), VDATA(gb), work->data);
  free(owned);
  return 0;
}

int cpu_kernel_conv_transpose2d_work(const fdm_conv_params *p, size_t *floats) {
  *floats = cpu_conv_transpose2d_work(p);
  return 0;
}

int cpu_kernel_conv_transpose2d_forward(const fdm_conv_params *p, const fdm_kview *x, const fdm_kview *w,
                                        const fdm_kview *b, const fdm_kview *y, const fdm_kview *work) {
  if (p->autocast != FDM_FLOAT32)
    return forward_autocast("conv_transpose2d", cpu_kernel_conv_transpose2d_forward, p, x, w, b, y, work);
  float *owned;
  const float *pw = float_weights("conv_transpose2d", w, &owned);
  if (!pw) return -1;
  cpu_conv_transpose2d_forward(p, x->data, pw, VDATA(b), y->data, work->data);
  free(owned);
  return 0;
}

int cpu_kernel_conv_transpose2d_backward(const fdm_conv_params *p, const fdm_kview *x, const fdm_kview *w,
                                         const fdm_kview *gy, const fdm_kview *gx, const fdm_kview *gw,
                                         const fdm_kview *gb, const fdm_kview *work) {
  if (p->autocast != FDM_FLOAT32)
    return backward_autocast("conv_transpose2d", cpu_kernel_conv_transpose2d_backward, p, x, w, gy, gx, gw, gb, work);
  float *owned;
  const float *pw = float_weights("conv_transpose2d", w, &owned);
  if (!pw) return -1;
  cpu_conv_transpose2d_backward(p, x->data, pw, gy->data, VDATA(gx), VDATA(gw), VDATA(gb), work->data);
  free(owned);
  return 0;
}
