/*
** winograd.c: 3x3 stride-1 convolution with Winograd's F(2x2, 3x3)
** (Lavin & Gray, 2016). Each 2x2 output tile comes from a 4x4 input tile
** with 16 multiplies per (input, output) channel pair instead of 36: the
** tile is transformed (B^T d B), multiplied by the transformed weights
** (G g G^T) as 16 independent GEMMs over channels, and transformed back
** (A^T m A). Used by conv2d forward and by its data gradient, which is the
** same convolution with the weights transposed and rotated by 180 degrees,
** and for the weight gradient by the adjoint: dL/dU = sum over tiles of
** (A gy A^T) * (B^T d B), then dL/dg = G^T (dL/dU) G.
** Threads take blocks of images; each runs single-threaded sgemm on its own
** slice of the work buffer.
**
** F(4x4, 3x3) (interpolation points 0, +-1, +-2, infinity; 6x6 input tiles,
** 36 multiplies per 4x4 output tile: 2.25 per output instead of 4) is the
** same scheme with B^T 6x6, G 6x3, A^T 4x6; cpu_winograd_tile picks it where
** it needs clearly fewer multiplies (28x28, 14x14 and 7x7 maps: 1.78x, 1.36x,
** 1.78x fewer than F(2x2)). Its rounding error is larger (the transforms
** scale by up to 8 and 1/24): measured max |err| / max |y| 2e-6 to 1.2e-5 at
** the UNets' widths, against 2e-7 to 7e-7 for F(2x2); tests/c/test_conv.c
** bounds it by 3e-5 (F(2x2): 1e-5) against double-precision direct sums.
** FDM_WINOGRAD_TILE=2 or 4 forces one tile size where Winograd applies.
*/
#include <cblas.h>
#include <string.h>
#include <stdlib.h>
#include "cpu_nn.h"
#include "winograd.h"
#ifdef _OPENMP
#include <omp.h>
#endif

/* GEMM width per block, in tiles. Small: a block's 16 or 36 planes of
** transformed tiles (V) and products (M) then stay in L2 between the
** transform, the GEMMs and the inverse transform. Measured (N64 28x28 C64
** K64, F(4x4), 2 threads, CPU time): 512 tiles 26 ms forward, 128: 19 ms,
** 64: 18 ms; 14x14: 8.6 / 6.4 / 6.3 ms; 7x7 C128: equal. */
#define WG_TARGET_TILES 64
#define WG_BUDGET ((size_t)48 << 20) /* floats of scratch over all thread slots */

int cpu_winograd_ok(const cpu_conv_params *p) {
  return p->kh == 3 && p->kw == 3 && p->sh == 1 && p->sw == 1 && p->dh == 1 && p->dw == 1 &&
         p->groups == 1 && p->C >= 8 && p->K >= 8 && p->OH >= 2 && p->OW >= 2 &&
         p->ph <= 2 && p->pw <= 2 &&
         p->W <= 4096 && p->OW <= 4096;   /* row buffers live on the thread's stack */
}

static int wg_slots(void) {
#ifdef _OPENMP
  int n = omp_get_num_procs();
  return n < 1 ? 1 : n > 64 ? 64 : n;
#else
  return 1;
#endif
}

typedef struct { int m, a, a2, TH, TW, tiles, nb, nblk, slots; size_t slot; } wg_plan;

static void plan(int m, int N, int C, int K, int OH, int OW, wg_plan *g) {
  g->m = m; g->a = m + 2; g->a2 = g->a * g->a;
  g->TH = (OH + m - 1) / m; g->TW = (OW + m - 1) / m;
  g->tiles = g->TH * g->TW;
  g->slots = wg_slots();
  int nb = (WG_TARGET_TILES + g->tiles - 1) / g->tiles;
  /* at least two blocks per thread so the threads share the batch evenly */
  int share = N / (2 * g->slots);
  if (nb > share) nb = share;
  if (nb < 1) nb = 1;
  size_t per = WG_BUDGET / g->slots;
  while (nb > 1 && (size_t)g->a2 * (C + K) * nb * g->tiles > per) nb--;
  g->nb = nb;
  g->nblk = (N + nb - 1) / nb;
  /* tiles of the image and column transforms, plus a weight-gradient partial */
  g->slot = ((size_t)g->a2 * (C + K) * nb * g->tiles + (size_t)g->a2 * K * C + 15) & ~(size_t)15;
}

/* multiplies of the tiled output map with tile size m (alpha^2 per tile) */
static double tile_cost(int m, int OH, int OW) {
  return (double)(m + 2) * (m + 2) * ((OH + m - 1) / m) * ((OW + m - 1) / m);
}

static int forced = -1;   /* -1: not read yet; 0: automatic; 2 or 4 */

void cpu_winograd_force_tile(int m) { forced = m == 2 || m == 4 ? m : 0; }

int cpu_winograd_tile(const cpu_conv_params *p) {
  if (forced < 0) {
    const char *e = getenv("FDM_WINOGRAD_TILE");
    forced = e && (atoi(e) == 2 || atoi(e) == 4) ? atoi(e) : 0;
  }
  if (p->W > 1024 || p->OW > 1024) return 2;   /* F(4x4)'s row buffers live on the stack */
  if (forced) return forced;
  /* F(4x4) only with 32 or more channels each way: its error relative to
  ** the output's largest value shrinks as more products are summed (measured
  ** 2e-6 - 1.2e-5 at 64-256 channels); with 8-16 channels it reached the
  ** 1e-5-of-max tolerance of tests/unet_spec.lua's golden gradients (D=8). */
  if (p->C < 32 || p->K < 32) return 2;
  /* and only where it saves a fifth of the multiplies or more: its
  ** transforms cost more memory traffic per tile */
  int OH = p->OH > p->H ? p->OH : p->H, OW = p->OW > p->W ? p->OW : p->W;
  return tile_cost(4, OH, OW) <= 0.8 * tile_cost(2, OH, OW) ? 4 : 2;
}

/* Winograd pays only with enough tiles per call. Each call transforms every
** filter (alpha^2 K C floats) and its GEMMs stream those once per block of
** tiles, so with few tiles (IF's 8x8 and 16x16 levels at batch 2, a
** one-image sampler at 7x7) the GEMMs are memory-bound and im2col's one
** GEMM is faster. Measured forward on the 2-core EPYC, C = K 64 to 1408:
** with 64 tiles or fewer im2col ran 1.1x-6.7x faster, with 98 or more
** Winograd did (PERFORMANCE.md, "DeepFloyd IF on the CPU"). A forced tile
** size skips the rule. */
#define WG_MIN_TILES 96

int cpu_winograd_worth(const cpu_conv_params *p) {
  int m = cpu_winograd_tile(p);   /* reads FDM_WINOGRAD_TILE once */
  if (forced) return 1;
  int OH = p->OH > p->H ? p->OH : p->H, OW = p->OW > p->W ? p->OW : p->W;
  double tiles = (double)p->N * ((OH + m - 1) / m) * ((OW + m - 1) / m);
  return tiles >= WG_MIN_TILES;
}

size_t cpu_winograd_ufloats(int m, int K, int C) { return (size_t)(m + 2) * (m + 2) * K * C; }

size_t cpu_winograd_work(const cpu_conv_params *p) {
  int m = cpu_winograd_tile(p);
  wg_plan f, b;
  plan(m, p->N, p->C, p->K, p->OH, p->OW, &f);   /* forward */
  plan(m, p->N, p->K, p->C, p->H, p->W, &b);     /* data gradient */
  size_t slots = (size_t)f.slots * (f.slot > b.slot ? f.slot : b.slot);
  return cpu_winograd_ufloats(m, p->K, p->C) + slots;
}

/* U[xi][k][c] = (G g G^T)[xi] for each 3x3 filter g = w[k][c] (or, for the
** data gradient, g = rot180(w[c][k]) with the roles of K and C swapped) */
static void weights4(int K, int C, const float *w, int transpose_flip, float *U);

void cpu_winograd_weights(int m, int K, int C, const float *w, int transpose_flip, float *U) {
  if (m == 4) { weights4(K, C, w, transpose_flip, U); return; }
  size_t KC = (size_t)K * C;
  #pragma omp parallel for schedule(static) if (KC >= 1024)
  for (size_t kc = 0; kc < KC; kc++) {
    int k = (int)(kc / C), c = (int)(kc % C);
    float g[9];
    if (!transpose_flip) memcpy(g, w + kc * 9, sizeof g);
    else {
      const float *s = w + ((size_t)c * K + k) * 9;   /* forward weight [c][k], c = its output */
      for (int i = 0; i < 9; i++) g[i] = s[8 - i];
    }
    float t[4][3];
    for (int j = 0; j < 3; j++) {
      float g0 = g[j], g1 = g[3 + j], g2 = g[6 + j];
      t[0][j] = g0; t[1][j] = 0.5f * (g0 + g1 + g2); t[2][j] = 0.5f * (g0 - g1 + g2); t[3][j] = g2;
    }
    for (int i = 0; i < 4; i++) {
      float a = t[i][0], b = t[i][1], d = t[i][2];
      float u[4] = {a, 0.5f * (a + b + d), 0.5f * (a - b + d), d};
      for (int j = 0; j < 4; j++) U[(size_t)(i * 4 + j) * KC + kc] = u[j];
    }
  }
}

/* V[xi][c][p] for the tiles of images n0..n0+nb-1. The four input rows of a
** tile row are first copied into zero-padded row buffers, so the tile loop
** has no bounds checks and each of the 16 outputs is a contiguous stream. */
static void input_transform(const wg_plan *g, int C, int H, int W, int ph, int pw, const float *x,
                            int n0, int nb, float *V) {
  size_t P = (size_t)nb * g->tiles, CP = (size_t)C * P;
  int Wp = 2 * g->TW + 2;
  float rb[4][Wp];
  for (int c = 0; c < C; c++)
    for (int b = 0; b < nb; b++) {
      const float *xc = x + ((size_t)(n0 + b) * C + c) * H * W;
      for (int ty = 0; ty < g->TH; ty++) {
        for (int i = 0; i < 4; i++) {
          int yy = 2 * ty - ph + i;
          float *r = rb[i];
          if (yy < 0 || yy >= H) { memset(r, 0, Wp * sizeof(float)); continue; }
          int lo = pw < Wp ? pw : Wp, n = W < Wp - lo ? W : Wp - lo;
          memset(r, 0, lo * sizeof(float));
          memcpy(r + lo, xc + (size_t)yy * W, n * sizeof(float));
          if (lo + n < Wp) memset(r + lo + n, 0, (Wp - lo - n) * sizeof(float));
        }
        /* B^T d: four row combinations, whole rows at a time (vectorised) */
        float tr[4][Wp];
        for (int k = 0; k < Wp; k++) {
          float d0 = rb[0][k], d1 = rb[1][k], d2 = rb[2][k], d3 = rb[3][k];
          tr[0][k] = d0 - d2; tr[1][k] = d1 + d2; tr[2][k] = d2 - d1; tr[3][k] = d1 - d3;
        }
        /* (B^T d) B: each of the 16 outputs is one contiguous stream over the tiles */
        float *v = V + (size_t)c * P + (size_t)b * g->tiles + (size_t)ty * g->TW;
        const int TW = g->TW;
        for (int i = 0; i < 4; i++) {
          const float *T = tr[i];
          float *v0 = v + (size_t)(i * 4 + 0) * CP, *v1 = v + (size_t)(i * 4 + 1) * CP;
          float *v2 = v + (size_t)(i * 4 + 2) * CP, *v3 = v + (size_t)(i * 4 + 3) * CP;
          for (int tx = 0; tx < TW; tx++) {
            float a0 = T[2 * tx], a1 = T[2 * tx + 1], a2 = T[2 * tx + 2], a3 = T[2 * tx + 3];
            v0[tx] = a0 - a2; v1[tx] = a1 + a2; v2[tx] = a2 - a1; v3[tx] = a1 - a3;
          }
        }
      }
    }
}

static void output_transform(const wg_plan *g, int K, int OH, int OW, const float *M, const float *bias,
                             int n0, int nb, float *y) {
  size_t P = (size_t)nb * g->tiles, KP = (size_t)K * P;
  const int TW = g->TW;
  float e[2][2][TW];   /* the two output rows of a tile row, even and odd columns */
  for (int k = 0; k < K; k++) {
    float bk = bias ? bias[k] : 0.0f;
    for (int b = 0; b < nb; b++) {
      float *yk = y + ((size_t)(n0 + b) * K + k) * OH * OW;
      for (int ty = 0; ty < g->TH; ty++) {
        const float *m = M + (size_t)k * P + (size_t)b * g->tiles + (size_t)ty * TW;
        const float *m0 = m, *m1 = m + KP, *m2 = m + 2 * KP, *m3 = m + 3 * KP;
        const float *m4 = m + 4 * KP, *m5 = m + 5 * KP, *m6 = m + 6 * KP, *m7 = m + 7 * KP;
        const float *m8 = m + 8 * KP, *m9 = m + 9 * KP, *m10 = m + 10 * KP, *m11 = m + 11 * KP;
        const float *m12 = m + 12 * KP, *m13 = m + 13 * KP, *m14 = m + 14 * KP, *m15 = m + 15 * KP;
        /* A^T m A with contiguous loads over the tiles (vectorised) */
        for (int tx = 0; tx < TW; tx++) {
          float s00 = m0[tx] + m4[tx] + m8[tx], s01 = m1[tx] + m5[tx] + m9[tx];
          float s02 = m2[tx] + m6[tx] + m10[tx], s03 = m3[tx] + m7[tx] + m11[tx];
          float s10 = m4[tx] - m8[tx] - m12[tx], s11 = m5[tx] - m9[tx] - m13[tx];
          float s12 = m6[tx] - m10[tx] - m14[tx], s13 = m7[tx] - m11[tx] - m15[tx];
          e[0][0][tx] = s00 + s01 + s02 + bk; e[0][1][tx] = s01 - s02 - s03 + bk;
          e[1][0][tx] = s10 + s11 + s12 + bk; e[1][1][tx] = s11 - s12 - s13 + bk;
        }
        for (int i = 0; i < 2; i++) {
          int oy = 2 * ty + i;
          if (oy >= OH) break;
          float *row = yk + (size_t)oy * OW;
          for (int tx = 0; tx < TW; tx++) {
            row[2 * tx] = e[i][0][tx];
            if (2 * tx + 1 < OW) row[2 * tx + 1] = e[i][1][tx];
          }
        }
      }
    }
  }
}

/* ---- F(4x4, 3x3) transforms ---- */

static const float G4[6][3] = {
  {1.0f / 4, 0, 0}, {-1.0f / 6, -1.0f / 6, -1.0f / 6}, {-1.0f / 6, 1.0f / 6, -1.0f / 6},
  {1.0f / 24, 1.0f / 12, 1.0f / 6}, {1.0f / 24, -1.0f / 12, 1.0f / 6}, {0, 0, 1}};

/* U[xi][k][c] = (G g G^T)[xi], 36 planes */
static void weights4(int K, int C, const float *w, int transpose_flip, float *U) {
  size_t KC = (size_t)K * C;
  #pragma omp parallel for schedule(static) if (KC >= 1024)
  for (size_t kc = 0; kc < KC; kc++) {
    int k = (int)(kc / C), c = (int)(kc % C);
    float g[9];
    if (!transpose_flip) memcpy(g, w + kc * 9, sizeof g);
    else {
      const float *s = w + ((size_t)c * K + k) * 9;
      for (int i = 0; i < 9; i++) g[i] = s[8 - i];
    }
    float t[6][3];
    for (int r = 0; r < 6; r++)
      for (int j = 0; j < 3; j++)
        t[r][j] = G4[r][0] * g[j] + G4[r][1] * g[3 + j] + G4[r][2] * g[6 + j];
    for (int r = 0; r < 6; r++)
      for (int q = 0; q < 6; q++)
        U[(size_t)(r * 6 + q) * KC + kc] = t[r][0] * G4[q][0] + t[r][1] * G4[q][1] + t[r][2] * G4[q][2];
  }
}

/* B^T applied to six values (one column or row of a 6x6 tile) */
#define BT6(d0, d1, d2, d3, d4, d5, o0, o1, o2, o3, o4, o5) do { \
    float t4_ = (d4) - 4.0f * (d2), t3_ = (d3) - 4.0f * (d1); \
    float t2_ = (d4) - (d2), t1_ = 2.0f * ((d3) - (d1)); \
    o0 = 4.0f * (d0) - 5.0f * (d2) + (d4); \
    o1 = t4_ + t3_; o2 = t4_ - t3_; o3 = t2_ + t1_; o4 = t2_ - t1_; \
    o5 = 4.0f * (d1) - 5.0f * (d3) + (d5); } while (0)

/* V[xi][c][p], 36 planes, for the 6x6 tiles (stride 4) of images n0..n0+nb-1.
** Per channel, the raw tiles of the whole block are gathered first,
** d[i][j][p] (p the tile), so both transforms run over contiguous arrays of
** all P tiles (vectorised; the tile loops are too short for that at 14x14). */
static void input4(const wg_plan *g, int C, int H, int W, int ph, int pw, const float *x,
                   int n0, int nb, float *V) {
  const size_t P = (size_t)nb * g->tiles, CP = (size_t)C * P;
  const int TW = g->TW, TH = g->TH, Wp = 4 * TW + 2;
  float *d = malloc(sizeof(float) * (72 * P + 6 * (size_t)Wp));
  if (!d) return;   /* 72 P floats: a few hundred KB */
  float *t = d + 36 * P, *row = t + 36 * P;
  for (int c = 0; c < C; c++) {
    for (int b = 0; b < nb; b++) {
      const float *xc = x + ((size_t)(n0 + b) * C + c) * H * W;
      for (int ty = 0; ty < TH; ty++) {
        size_t p0 = (size_t)b * g->tiles + (size_t)ty * TW;
        for (int i = 0; i < 6; i++) {
          int yy = 4 * ty - ph + i;
          float *r = row + i * Wp;
          if (yy < 0 || yy >= H) { memset(r, 0, Wp * sizeof(float)); continue; }
          int lo = pw < Wp ? pw : Wp, n = W < Wp - lo ? W : Wp - lo;
          memset(r, 0, lo * sizeof(float));
          memcpy(r + lo, xc + (size_t)yy * W, n * sizeof(float));
          if (lo + n < Wp) memset(r + lo + n, 0, (Wp - lo - n) * sizeof(float));
        }
        for (int i = 0; i < 6; i++) {
          const float *r = row + i * Wp;
          float *o = d + (size_t)(i * 6) * P + p0;
          for (int tx = 0; tx < TW; tx++) {
            const float *a = r + 4 * tx;
            o[tx] = a[0]; o[P + tx] = a[1]; o[2 * P + tx] = a[2];
            o[3 * P + tx] = a[3]; o[4 * P + tx] = a[4]; o[5 * P + tx] = a[5];
          }
        }
      }
    }
    /* B^T over the tile rows, then over the columns, each over all P tiles */
    for (int j = 0; j < 6; j++) {
      const float *restrict d0 = d + (size_t)j * P, *restrict d1 = d + (size_t)(6 + j) * P;
      const float *restrict d2 = d + (size_t)(12 + j) * P, *restrict d3 = d + (size_t)(18 + j) * P;
      const float *restrict d4 = d + (size_t)(24 + j) * P, *restrict d5 = d + (size_t)(30 + j) * P;
      float *restrict o0 = t + (size_t)j * P, *restrict o1 = t + (size_t)(6 + j) * P;
      float *restrict o2 = t + (size_t)(12 + j) * P, *restrict o3 = t + (size_t)(18 + j) * P;
      float *restrict o4 = t + (size_t)(24 + j) * P, *restrict o5 = t + (size_t)(30 + j) * P;
      #pragma omp simd
      for (size_t p = 0; p < P; p++)
        BT6(d0[p], d1[p], d2[p], d3[p], d4[p], d5[p], o0[p], o1[p], o2[p], o3[p], o4[p], o5[p]);
    }
    for (int i = 0; i < 6; i++) {
      const float *restrict d0 = t + (size_t)(i * 6) * P, *restrict d1 = d0 + P, *restrict d2 = d0 + 2 * P;
      const float *restrict d3 = d0 + 3 * P, *restrict d4 = d0 + 4 * P, *restrict d5 = d0 + 5 * P;
      float *restrict v = V + (size_t)c * P + (size_t)(i * 6) * CP;
      float *restrict o0 = v, *restrict o1 = v + CP, *restrict o2 = v + 2 * CP;
      float *restrict o3 = v + 3 * CP, *restrict o4 = v + 4 * CP, *restrict o5 = v + 5 * CP;
      #pragma omp simd
      for (size_t p = 0; p < P; p++)
        BT6(d0[p], d1[p], d2[p], d3[p], d4[p], d5[p], o0[p], o1[p], o2[p], o3[p], o4[p], o5[p]);
    }
  }
  free(d);
}

/* A^T applied to six values */
#define AT6(m0, m1, m2, m3, m4, m5, o0, o1, o2, o3) do { \
    float a_ = (m1) + (m2), b_ = (m1) - (m2), c_ = (m3) + (m4), d_ = (m3) - (m4); \
    o0 = (m0) + a_ + c_; o1 = b_ + 2.0f * d_; o2 = a_ + 4.0f * c_; o3 = b_ + 8.0f * d_ + (m5); } while (0)

static void output4(const wg_plan *g, int K, int OH, int OW, const float *M, const float *bias,
                    int n0, int nb, float *y) {
  const size_t P = (size_t)nb * g->tiles, KP = (size_t)K * P;
  const int TW = g->TW;
  float *sb = malloc(sizeof(float) * 40 * P);
  if (!sb) return;
  float *e = sb + 24 * P;
  for (int k = 0; k < K; k++) {
    float bk = bias ? bias[k] : 0.0f;
    const float *m = M + (size_t)k * P;
    for (int c = 0; c < 6; c++) {   /* A^T over the tile rows, per column c, over all P tiles */
      const float *restrict p0 = m + (size_t)c * KP, *restrict p1 = m + (size_t)(6 + c) * KP;
      const float *restrict p2 = m + (size_t)(12 + c) * KP, *restrict p3 = m + (size_t)(18 + c) * KP;
      const float *restrict p4 = m + (size_t)(24 + c) * KP, *restrict p5 = m + (size_t)(30 + c) * KP;
      float *restrict s0 = sb + (size_t)c * P, *restrict s1 = sb + (size_t)(6 + c) * P;
      float *restrict s2 = sb + (size_t)(12 + c) * P, *restrict s3 = sb + (size_t)(18 + c) * P;
      #pragma omp simd
      for (size_t p = 0; p < P; p++)
        AT6(p0[p], p1[p], p2[p], p3[p], p4[p], p5[p], s0[p], s1[p], s2[p], s3[p]);
    }
    for (int i = 0; i < 4; i++) {   /* then over the columns */
      const float *restrict q = sb + (size_t)(i * 6) * P;
      float *restrict e0 = e + (size_t)(i * 4) * P, *restrict e1 = e0 + P, *restrict e2 = e0 + 2 * P,
            *restrict e3 = e0 + 3 * P;
      #pragma omp simd
      for (size_t p = 0; p < P; p++) {
        float o0, o1, o2, o3;
        AT6(q[p], q[P + p], q[2 * P + p], q[3 * P + p], q[4 * P + p], q[5 * P + p], o0, o1, o2, o3);
        e0[p] = o0 + bk; e1[p] = o1 + bk; e2[p] = o2 + bk; e3[p] = o3 + bk;
      }
    }
    for (int b = 0; b < nb; b++) {
      float *yk = y + ((size_t)(n0 + b) * K + k) * OH * OW;
      for (int ty = 0; ty < g->TH; ty++) {
        size_t p0 = (size_t)b * g->tiles + (size_t)ty * TW;
        for (int i = 0; i < 4 && 4 * ty + i < OH; i++) {
          float *r = yk + (size_t)(4 * ty + i) * OW;
          const float *f0 = e + (size_t)(i * 4) * P + p0, *f1 = f0 + P, *f2 = f0 + 2 * P, *f3 = f0 + 3 * P;
          int full = OW / 4;
          if (full > TW) full = TW;
          for (int tx = 0; tx < full; tx++) {
            r[4 * tx] = f0[tx]; r[4 * tx + 1] = f1[tx]; r[4 * tx + 2] = f2[tx]; r[4 * tx + 3] = f3[tx];
          }
          for (int ox = 4 * full; ox < OW; ox++) r[ox] = f0[(size_t)(ox & 3) * P + (ox >> 2)];
        }
      }
    }
  }
  free(sb);
}

/* the 6x6 Winograd-domain view of each 4x4 tile of gy: Y[xi][k][p] = (A d A^T)[xi] */
#define A6(d0, d1, d2, d3, o0, o1, o2, o3, o4, o5) do { \
    float e_ = (d0) + (d2), f_ = (d1) + (d3), g_ = (d0) + 4.0f * (d2), h_ = 2.0f * (d1) + 8.0f * (d3); \
    o0 = (d0); o1 = e_ + f_; o2 = e_ - f_; o3 = g_ + h_; o4 = g_ - h_; o5 = (d3); } while (0)

static void grad4(const wg_plan *g, int K, int OH, int OW, const float *gy, int n0, int nb, float *Y) {
  const size_t P = (size_t)nb * g->tiles, KP = (size_t)K * P;
  const int TW = g->TW, TH = g->TH, Wp = 4 * TW;
  float *d = malloc(sizeof(float) * (40 * P + 4 * (size_t)Wp));
  if (!d) return;
  float *t = d + 16 * P, *row = t + 24 * P;
  for (int k = 0; k < K; k++) {
    for (int b = 0; b < nb; b++) {   /* gather the 4x4 tiles: d[i][j][p] */
      const float *gk = gy + ((size_t)(n0 + b) * K + k) * OH * OW;
      for (int ty = 0; ty < TH; ty++) {
        size_t p0 = (size_t)b * g->tiles + (size_t)ty * TW;
        for (int i = 0; i < 4; i++) {
          float *r = row + i * Wp;
          int yy = 4 * ty + i, n = OW < Wp ? OW : Wp;
          if (yy >= OH) { memset(r, 0, Wp * sizeof(float)); continue; }
          memcpy(r, gk + (size_t)yy * OW, n * sizeof(float));
          if (n < Wp) memset(r + n, 0, (Wp - n) * sizeof(float));
        }
        for (int i = 0; i < 4; i++) {
          const float *r = row + i * Wp;
          float *o = d + (size_t)(i * 4) * P + p0;
          for (int tx = 0; tx < TW; tx++) {
            const float *a = r + 4 * tx;
            o[tx] = a[0]; o[P + tx] = a[1]; o[2 * P + tx] = a[2]; o[3 * P + tx] = a[3];
          }
        }
      }
    }
    for (int j = 0; j < 4; j++) {   /* A over the tile rows: t[r][j] */
      const float *restrict d0 = d + (size_t)j * P, *restrict d1 = d + (size_t)(4 + j) * P;
      const float *restrict d2 = d + (size_t)(8 + j) * P, *restrict d3 = d + (size_t)(12 + j) * P;
      float *restrict o0 = t + (size_t)j * P, *restrict o1 = t + (size_t)(4 + j) * P;
      float *restrict o2 = t + (size_t)(8 + j) * P, *restrict o3 = t + (size_t)(12 + j) * P;
      float *restrict o4 = t + (size_t)(16 + j) * P, *restrict o5 = t + (size_t)(20 + j) * P;
      #pragma omp simd
      for (size_t p = 0; p < P; p++)
        A6(d0[p], d1[p], d2[p], d3[p], o0[p], o1[p], o2[p], o3[p], o4[p], o5[p]);
    }
    for (int r = 0; r < 6; r++) {   /* then over the columns, into Y[r*6+q][k] */
      const float *restrict q0 = t + (size_t)(r * 4) * P, *restrict q1 = q0 + P;
      const float *restrict q2 = q0 + 2 * P, *restrict q3 = q0 + 3 * P;
      float *restrict y = Y + (size_t)k * P + (size_t)(r * 6) * KP;
      float *restrict o0 = y, *restrict o1 = y + KP, *restrict o2 = y + 2 * KP;
      float *restrict o3 = y + 3 * KP, *restrict o4 = y + 4 * KP, *restrict o5 = y + 5 * KP;
      #pragma omp simd
      for (size_t p = 0; p < P; p++)
        A6(q0[p], q1[p], q2[p], q3[p], o0[p], o1[p], o2[p], o3[p], o4[p], o5[p]);
    }
  }
  free(d);
}

void cpu_winograd_conv(int m, int N, int C, int H, int W, int K, int ph, int pw, int OH, int OW,
                       const float *x, const float *U, const float *bias, float *y, float *work) {
  wg_plan g;
  plan(m, N, C, K, OH, OW, &g);
  int nt = 1;
#ifdef _OPENMP
  nt = omp_get_max_threads();
  if (nt > g.slots) nt = g.slots;
  if (g.nblk < nt) nt = 1;
#endif
  #pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (nt > 1)
  for (int blk = 0; blk < g.nblk; blk++) {
    int tid = 0;
#ifdef _OPENMP
    tid = omp_get_thread_num();
#endif
    float *V = work + (size_t)tid * g.slot;
    int n0 = blk * g.nb, nb = N - n0 < g.nb ? N - n0 : g.nb;
    int P = nb * g.tiles;
    float *M = V + (size_t)g.a2 * C * P;
    if (m == 4) input4(&g, C, H, W, ph, pw, x, n0, nb, V);
    else input_transform(&g, C, H, W, ph, pw, x, n0, nb, V);
    for (int xi = 0; xi < g.a2; xi++)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, K, P, C, 1.0f,
                  U + (size_t)xi * K * C, C, V + (size_t)xi * C * P, P, 0.0f,
                  M + (size_t)xi * K * P, P);
    if (m == 4) output4(&g, K, OH, OW, M, bias, n0, nb, y);
    else output_transform(&g, K, OH, OW, M, bias, n0, nb, y);
  }
}

/* the 4x4 Winograd-domain view of each 2x2 tile of gy: Y[xi][k][p] = (A g A^T)[xi] */
static void grad_transform(const wg_plan *g, int K, int OH, int OW, const float *gy, int n0, int nb,
                           float *Y) {
  size_t P = (size_t)nb * g->tiles, KP = (size_t)K * P;
  for (int k = 0; k < K; k++)
    for (int b = 0; b < nb; b++) {
      const float *gk = gy + ((size_t)(n0 + b) * K + k) * OH * OW;
      for (int ty = 0; ty < g->TH; ty++)
        for (int tx = 0; tx < g->TW; tx++) {
          int oy = 2 * ty, ox = 2 * tx;
          float d[2][2];
          for (int i = 0; i < 2; i++)
            for (int j = 0; j < 2; j++)
              d[i][j] = (oy + i < OH && ox + j < OW) ? gk[(oy + i) * OW + ox + j] : 0.0f;
          float t[4][2];
          for (int j = 0; j < 2; j++) {
            t[0][j] = d[0][j]; t[1][j] = d[0][j] + d[1][j];
            t[2][j] = d[0][j] - d[1][j]; t[3][j] = -d[1][j];
          }
          size_t p = (size_t)b * g->tiles + (size_t)ty * g->TW + tx;
          float *y = Y + (size_t)k * P + p;
          for (int i = 0; i < 4; i++) {
            float a = t[i][0], c = t[i][1];
            y[(size_t)(i * 4 + 0) * KP] = a;
            y[(size_t)(i * 4 + 1) * KP] = a + c;
            y[(size_t)(i * 4 + 2) * KP] = a - c;
            y[(size_t)(i * 4 + 3) * KP] = -c;
          }
        }
    }
}

void cpu_winograd_weight_grad(int m, int N, int C, int H, int W, int K, int ph, int pw, int OH, int OW,
                              const float *x, const float *gy, float *gw, float *work) {
  wg_plan g;
  plan(m, N, C, K, OH, OW, &g);
  const int a2 = g.a2;
  size_t KC = (size_t)K * C;
  int nt = 1;
#ifdef _OPENMP
  nt = omp_get_max_threads();
  if (nt > g.slots) nt = g.slots;
  if (g.nblk < nt) nt = 1;
#endif
  /* each thread accumulates its blocks into its own partial, summed in a fixed order */
  #pragma omp parallel num_threads(nt) if (nt > 1)
  {
    int tid = 0;
#ifdef _OPENMP
    tid = omp_get_thread_num();
#endif
    float *slot = work + (size_t)tid * g.slot;
    float *Mp = slot + (size_t)a2 * (C + K) * g.nb * g.tiles;
    memset(Mp, 0, (size_t)a2 * KC * sizeof(float));
    #pragma omp for schedule(static)
    for (int blk = 0; blk < g.nblk; blk++) {
      int n0 = blk * g.nb, nb = N - n0 < g.nb ? N - n0 : g.nb;
      int P = nb * g.tiles;
      float *V = slot, *Y = slot + (size_t)a2 * C * P;
      if (m == 4) {
        input4(&g, C, H, W, ph, pw, x, n0, nb, V);
        grad4(&g, K, OH, OW, gy, n0, nb, Y);
      } else {
        input_transform(&g, C, H, W, ph, pw, x, n0, nb, V);
        grad_transform(&g, K, OH, OW, gy, n0, nb, Y);
      }
      for (int xi = 0; xi < a2; xi++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, K, C, P, 1.0f,
                    Y + (size_t)xi * K * P, P, V + (size_t)xi * C * P, P, 1.0f,
                    Mp + (size_t)xi * KC, C);
    }
  }
  /* sum the partials into slot 0's, then gw = G^T M G per filter */
  float *M0 = work + (size_t)a2 * (C + K) * g.nb * g.tiles;
  for (int t = 1; t < nt; t++) {
    const float *Mt = work + (size_t)t * g.slot + (size_t)a2 * (C + K) * g.nb * g.tiles;
    for (size_t i = 0; i < (size_t)a2 * KC; i++) M0[i] += Mt[i];
  }
  if (m == 4) {   /* gw = G^T M G per filter, G 6x3 */
    #pragma omp parallel for schedule(static) if (KC >= 1024)
    for (size_t kc = 0; kc < KC; kc++) {
      float t[3][6];
      for (int i = 0; i < 3; i++)
        for (int q = 0; q < 6; q++) {
          float acc = 0.0f;
          for (int r = 0; r < 6; r++) acc += G4[r][i] * M0[(size_t)(r * 6 + q) * KC + kc];
          t[i][q] = acc;
        }
      float *o = gw + kc * 9;
      for (int i = 0; i < 3; i++)
        for (int j = 0; j < 3; j++) {
          float acc = 0.0f;
          for (int q = 0; q < 6; q++) acc += t[i][q] * G4[q][j];
          o[i * 3 + j] = acc;
        }
    }
    return;
  }
  #pragma omp parallel for schedule(static) if (KC >= 1024)
  for (size_t kc = 0; kc < KC; kc++) {
    float m[4][4], s[3][4];
    for (int i = 0; i < 4; i++)
      for (int j = 0; j < 4; j++) m[i][j] = M0[(size_t)(i * 4 + j) * KC + kc];
    for (int j = 0; j < 4; j++) {
      s[0][j] = m[0][j] + 0.5f * (m[1][j] + m[2][j]);
      s[1][j] = 0.5f * (m[1][j] - m[2][j]);
      s[2][j] = 0.5f * (m[1][j] + m[2][j]) + m[3][j];
    }
    float *o = gw + kc * 9;
    for (int i = 0; i < 3; i++) {
      o[i * 3 + 0] = s[i][0] + 0.5f * (s[i][1] + s[i][2]);
      o[i * 3 + 1] = 0.5f * (s[i][1] - s[i][2]);
      o[i * 3 + 2] = 0.5f * (s[i][1] + s[i][2]) + s[i][3];
    }
  }
}
