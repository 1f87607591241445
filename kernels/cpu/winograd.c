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
*/
#include <cblas.h>
#include <string.h>
#include "cpu_nn.h"
#include "winograd.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#define WG_TARGET_TILES 512          /* GEMM width per block */
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

typedef struct { int TH, TW, tiles, nb, nblk, slots; size_t slot; } wg_plan;

static void plan(int N, int C, int K, int OH, int OW, wg_plan *g) {
  g->TH = (OH + 1) / 2; g->TW = (OW + 1) / 2;
  g->tiles = g->TH * g->TW;
  g->slots = wg_slots();
  int nb = (WG_TARGET_TILES + g->tiles - 1) / g->tiles;
  /* at least two blocks per thread so the threads share the batch evenly */
  int share = N / (2 * g->slots);
  if (nb > share) nb = share;
  if (nb < 1) nb = 1;
  size_t per = WG_BUDGET / g->slots;
  while (nb > 1 && (size_t)16 * (C + K) * nb * g->tiles > per) nb--;
  g->nb = nb;
  g->nblk = (N + nb - 1) / nb;
  /* tiles of the image and column transforms, plus a weight-gradient partial */
  g->slot = ((size_t)16 * (C + K) * nb * g->tiles + (size_t)16 * K * C + 15) & ~(size_t)15;
}

size_t cpu_winograd_work(const cpu_conv_params *p) {
  wg_plan f, b;
  plan(p->N, p->C, p->K, p->OH, p->OW, &f);   /* forward */
  plan(p->N, p->K, p->C, p->H, p->W, &b);     /* data gradient */
  size_t slots = (size_t)f.slots * (f.slot > b.slot ? f.slot : b.slot);
  return (size_t)16 * p->K * p->C + slots;
}

/* U[xi][k][c] = (G g G^T)[xi] for each 3x3 filter g = w[k][c] (or, for the
** data gradient, g = rot180(w[c][k]) with the roles of K and C swapped) */
void cpu_winograd_weights(int K, int C, const float *w, int transpose_flip, float *U) {
  size_t KC = (size_t)K * C;
  #pragma omp parallel for schedule(static) if (KC > 4096)
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

void cpu_winograd_conv(int N, int C, int H, int W, int K, int ph, int pw, int OH, int OW,
                       const float *x, const float *U, const float *bias, float *y, float *work) {
  wg_plan g;
  plan(N, C, K, OH, OW, &g);
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
    float *M = V + (size_t)16 * C * P;
    input_transform(&g, C, H, W, ph, pw, x, n0, nb, V);
    for (int xi = 0; xi < 16; xi++)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, K, P, C, 1.0f,
                  U + (size_t)xi * K * C, C, V + (size_t)xi * C * P, P, 0.0f,
                  M + (size_t)xi * K * P, P);
    output_transform(&g, K, OH, OW, M, bias, n0, nb, y);
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

void cpu_winograd_weight_grad(int N, int C, int H, int W, int K, int ph, int pw, int OH, int OW,
                              const float *x, const float *gy, float *gw, float *work) {
  wg_plan g;
  plan(N, C, K, OH, OW, &g);
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
    float *Mp = slot + (size_t)16 * (C + K) * g.nb * g.tiles;
    memset(Mp, 0, (size_t)16 * KC * sizeof(float));
    #pragma omp for schedule(static)
    for (int blk = 0; blk < g.nblk; blk++) {
      int n0 = blk * g.nb, nb = N - n0 < g.nb ? N - n0 : g.nb;
      int P = nb * g.tiles;
      float *V = slot, *Y = slot + (size_t)16 * C * P;
      input_transform(&g, C, H, W, ph, pw, x, n0, nb, V);
      grad_transform(&g, K, OH, OW, gy, n0, nb, Y);
      for (int xi = 0; xi < 16; xi++)
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, K, C, P, 1.0f,
                    Y + (size_t)xi * K * P, P, V + (size_t)xi * C * P, P, 1.0f,
                    Mp + (size_t)xi * KC, C);
    }
  }
  /* sum the partials into slot 0's, then gw = G^T M G per filter */
  float *M0 = work + (size_t)16 * (C + K) * g.nb * g.tiles;
  for (int t = 1; t < nt; t++) {
    const float *Mt = work + (size_t)t * g.slot + (size_t)16 * (C + K) * g.nb * g.tiles;
    for (size_t i = 0; i < (size_t)16 * KC; i++) M0[i] += Mt[i];
  }
  #pragma omp parallel for schedule(static) if (KC > 4096)
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
