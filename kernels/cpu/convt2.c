/*
** convt2.c: ConvTranspose2d with kernel 4, stride 2, padding 1 (the UNets'
** UpConv, [N,C,H,W] -> [N,K,2H,2W]) as a sub-pixel split: output pixel
** (2i+a, 2j+b) of phase (a,b) depends on a 2x2 neighbourhood of x through a
** 2x2 sub-kernel of the 4x4 weight. Per dimension, with w the weight row:
**     phase 0: y[2i]   = x[i-1] w[3] + x[i]   w[1]
**     phase 1: y[2i+1] = x[i]   w[2] + x[i+1] w[0]
** so the op is four stride-1 2x2 convolutions whose outputs interleave. Each
** runs through Winograd F(2x2, 2x2) (9 multiplies per 2x2 output tile
** instead of 16, the same 9/16 as F(4x4,3x3) per output and exact to a few
** ulps: every transform entry is 0 or +-1):
**     B^T = [1 -1 0; 0 1 0; 0 -1 1], G = [1 0; 1 1; 0 1], A^T = [1 1 0; 0 1 1].
** A 2x2 tile of every phase at tile (ty,tx) is the 4x4 block of y at
** (4ty, 4tx); phase 0 reads x rows 2ty-1..2ty+1, phase 1 rows 2ty..2ty+2,
** and their transformed rows share one: d = x rows 2ty-1..2ty+2 give
**     e = (d0-d1, d1, d2-d1, d2, d3-d2);  phase 0 uses e0,e1,e2,
**     phase 1 uses -e2,e3,e4 (the sign goes into its weights).
** So the input transform makes 5x5 = 25 planes (not 36), and each plane's
** GEMM serves every phase that uses it at once: the users' transformed
** weights are stacked, 36 K x C blocks over 25 GEMMs of (users*K) x C x P.
**
** Data gradient: gx[i] = sum_t gy[2i-1+t] w[t], a 4-tap stride-2 conv whose
** even and odd gy samples are two F(2x2,2x2) convolutions summed; a 2x2 tile
** of gx reads a 6x6 tile of gy (stride 4), transformed per phase into 3x3,
** and the four phases are summed inside 9 GEMMs of C x (4K) x P.
** Weight gradient: the adjoint of the forward, dL/dU = sum over tiles of
** (A gy A^T) * (B^T d B) on the same 25 stacked planes, then G^T (.) G.
** Tiles are gathered per block of about 64 (as in winograd.c) and each
** transform runs over all of a block's tiles (`omp simd`); threads take
** blocks of images, each with single-threaded sgemm on its own slot of the
** caller's work buffer. No allocation. FDM_CONVT2=0|1 forces the path
** off/on (conv.c keeps im2col + sgemm + col2im otherwise), FDM_CONVT2_TILES
** sets the block size in tiles (default 64; 16-256 measured, 32-64 best).
*/
#include <cblas.h>
#include <string.h>
#include <stdlib.h>
#include "cpu_nn.h"
#include "convt2.h"
#ifdef _OPENMP
#include <omp.h>
#endif

#define CT_TARGET_TILES 64
#define CT_BUDGET ((size_t)48 << 20) /* floats of scratch over all thread slots */
/* automatic use: at least this many channels each way (smaller ones were
** not measured), and for the forward and the weight gradient only where the
** tiles waste little: 16 H W multiplies of the direct sum against 36 per 2x2
** tile, at least 1.5x fewer (14x14 maps: 1.78x; 7x7: 1.36x, where the
** smaller GEMMs (64 tiles against one im2col GEMM of ~640 columns) made the
** forward 5-20% slower, the weight gradient 0-15% slower and the data
** gradient 7-25% faster, measured at C256 K64 and C512 K128 (PERFORMANCE.md) */
#ifndef CT_MIN_CHANNELS
#define CT_MIN_CHANNELS 8
#endif
#ifndef CT_MIN_SAVING
#define CT_MIN_SAVING 1.5
#endif

int cpu_convt2_ok(const cpu_conv_params *p) {
  return p->kh == 4 && p->kw == 4 && p->sh == 2 && p->sw == 2 && p->ph == 1 && p->pw == 1 &&
         p->dh == 1 && p->dw == 1 && (p->groups == 1 || p->groups == 0) && p->N >= 1 &&
         p->C >= 1 && p->K >= 1 && p->H >= 1 && p->W >= 1 && p->OH == 2 * p->H &&
         p->OW == 2 * p->W && p->W <= (1 << 20) && p->H <= (1 << 20);
}

static int forced = -2;   /* -2: not read yet; -1 automatic; 0 off; 1 on */

void cpu_convt2_force(int mode) { forced = mode == 0 || mode == 1 ? mode : -1; }

int cpu_convt2_use(const cpu_conv_params *p, int what) {
  if (forced == -2) {
    const char *e = getenv("FDM_CONVT2");
    forced = e && *e ? (atoi(e) ? 1 : 0) : -1;
  }
  if (!cpu_convt2_ok(p) || forced == 0) return 0;
  if (forced == 1) return 1;
  if (p->C < CT_MIN_CHANNELS || p->K < CT_MIN_CHANNELS) return 0;
  if (what == 1) return 1;
  double tiles = (double)((p->H + 1) / 2) * ((p->W + 1) / 2);
  return 16.0 * p->H * p->W >= CT_MIN_SAVING * 36.0 * tiles;
}

/* ---- geometry ---- */

typedef struct {
  int TH, TW, tiles, nb, nblk, slots;
  size_t vsz, msz, ssz, gsz, slot;   /* floats per slot: V, M (or Y), scratch, gw partial */
} ct_plan;

static int ct_slots(void) {
#ifdef _OPENMP
  int n = omp_get_num_procs();
  return n < 1 ? 1 : n > 64 ? 64 : n;
#else
  return 1;
#endif
}

static void ct_sizes(ct_plan *g, int C, int K, int nb) {
  size_t P = (size_t)nb * g->tiles;
  size_t v = 25 * (size_t)C > 36 * (size_t)K ? 25 * (size_t)C : 36 * (size_t)K;
  size_t m = 36 * (size_t)K > 9 * (size_t)C ? 36 * (size_t)K : 9 * (size_t)C;
  g->vsz = (v * P + 15) & ~(size_t)15;
  g->msz = (m * P + 15) & ~(size_t)15;
  /* gathered tiles and their half-transformed rows, plus one zero-padded plane */
  g->ssz = (72 * P + (size_t)(4 * g->TH + 2) * (4 * g->TW + 2) + 15) & ~(size_t)15;
  g->gsz = (36 * (size_t)K * C + 15) & ~(size_t)15;
  g->slot = g->vsz + g->msz + g->ssz + g->gsz;
}

static void ct_plan_make(const cpu_conv_params *p, ct_plan *g) {
  g->TH = (p->H + 1) / 2; g->TW = (p->W + 1) / 2;
  g->tiles = g->TH * g->TW;
  g->slots = ct_slots();
  static int target = 0;
  if (!target) { const char *e = getenv("FDM_CONVT2_TILES"); target = e && atoi(e) > 0 ? atoi(e) : CT_TARGET_TILES; }
  int nb = (target + g->tiles - 1) / g->tiles;
  int share = p->N / (2 * g->slots);   /* two blocks per thread at least */
  if (nb > share) nb = share;
  if (nb < 1) nb = 1;
  for (;;) {
    ct_sizes(g, p->C, p->K, nb);
    if (nb == 1 || g->slot * g->slots <= CT_BUDGET) break;
    nb--;
  }
  g->nb = nb;
  g->nblk = (p->N + nb - 1) / nb;
}

size_t cpu_convt2_work(const cpu_conv_params *p) {
  if (!cpu_convt2_ok(p)) return 0;
  ct_plan g;
  ct_plan_make(p, &g);
  return 36 * (size_t)p->K * p->C + (size_t)g.slots * g.slot;
}

static int ct_threads(const ct_plan *g) {
  int nt = 1;
#ifdef _OPENMP
  nt = omp_get_max_threads();
  if (nt > g->slots) nt = g->slots;
  if (g->nblk < nt) nt = 1;
#endif
  return nt;
}

/* ---- the stacked planes of the forward / weight gradient ---- */

/* plane (r,s), r,s in 0..4, is used by 1, 2 or 4 phases; its users' K x C
** weight blocks (and K x P product blocks) are stacked, phases in order */
static int nusers(int r, int s) { return (r == 2 ? 2 : 1) * (s == 2 ? 2 : 1); }

static void plane_offsets(int off[25]) {
  int o = 0;
  for (int q = 0; q < 25; q++) { off[q] = o; o += nusers(q / 5, q % 5); }
}

/* the stacked block (0..35) that phase (a,b) uses for its Winograd tap (i,j) */
static int block_of(const int off[25], int a, int b, int i, int j) {
  int r = 2 * a + i, s = 2 * b + j;
  return off[r * 5 + s] + (r == 2 ? a : 0) * (s == 2 ? 2 : 1) + (s == 2 ? b : 0);
}

/* kernel row (or column) of phase a's tap p: forward / weight gradient, data gradient */
static const int KF[2][2] = {{3, 1}, {2, 0}};
static const int KG[2][2] = {{1, 3}, {0, 2}};
/* G per phase of the forward: phase 1's first row negated (it reads -e2) */
static const float GA[2][3][2] = {{{1, 0}, {1, 1}, {0, 1}}, {{-1, 0}, {1, 1}, {0, 1}}};

/* U[block][k][c] for the forward, w [C][K][4][4] */
static void weights_fwd(int C, int K, const float *w, float *U) {
  int off[25];
  plane_offsets(off);
  size_t KC = (size_t)K * C;
  #pragma omp parallel for schedule(static) if (KC >= 1024)
  for (size_t ck = 0; ck < KC; ck++) {
    int c = (int)(ck / K), k = (int)(ck % K);
    const float *f = w + ck * 16;
    for (int a = 0; a < 2; a++)
      for (int b = 0; b < 2; b++) {
        float g[2][2], t[3][2];
        for (int p = 0; p < 2; p++)
          for (int q = 0; q < 2; q++) g[p][q] = f[KF[a][p] * 4 + KF[b][q]];
        for (int i = 0; i < 3; i++)
          for (int q = 0; q < 2; q++) t[i][q] = GA[a][i][0] * g[0][q] + GA[a][i][1] * g[1][q];
        for (int i = 0; i < 3; i++)
          for (int j = 0; j < 3; j++)
            U[((size_t)block_of(off, a, b, i, j) * K + k) * C + c] =
                t[i][0] * GA[b][j][0] + t[i][1] * GA[b][j][1];
      }
  }
}

/* U[ij][c][ab*K + k] for the data gradient (phase ab = parity of gy's row, column) */
static void weights_gx(int C, int K, const float *w, float *U) {
  size_t KC = (size_t)K * C, K4 = 4 * (size_t)K;
  #pragma omp parallel for schedule(static) if (KC >= 1024)
  for (size_t ck = 0; ck < KC; ck++) {
    int c = (int)(ck / K), k = (int)(ck % K);
    const float *f = w + ck * 16;
    for (int a = 0; a < 2; a++)
      for (int b = 0; b < 2; b++) {
        float g[2][2], t[3][2];
        for (int p = 0; p < 2; p++)
          for (int q = 0; q < 2; q++) g[p][q] = f[KG[a][p] * 4 + KG[b][q]];
        for (int q = 0; q < 2; q++) { t[0][q] = g[0][q]; t[1][q] = g[0][q] + g[1][q]; t[2][q] = g[1][q]; }
        for (int i = 0; i < 3; i++) {
          float *u = U + ((size_t)(i * 3) * C + c) * K4 + (size_t)(a * 2 + b) * K + k;
          u[0] = t[i][0];
          u[C * K4] = t[i][0] + t[i][1];
          u[2 * C * K4] = t[i][1];
        }
      }
  }
}

/* ---- transforms ---- */

/* copies the H x W plane src into dst (rows of Wp floats) at row, column
** offset o; dst's other elements are left as they are (zeroed once per block) */
static void put_plane(float *dst, int Wp, int o, const float *src, int H, int W) {
  for (int i = 0; i < H; i++) memcpy(dst + (size_t)(i + o) * Wp + o, src + (size_t)i * W, sizeof(float) * W);
}

/* d[(i*n + j)*P + p]: element (i, j) of each n x n tile of the padded plane
** pl (rows of Wp floats), tile (ty, tx) of image b at row stride*ty, column
** stride*tx; p = b*tiles + ty*TW + tx. Called with constant n and stride
** (4, 2 for the forward; 6, 4 for the data gradient), which the compiler
** propagates into the inlined copies. */
static inline void gather_tiles(const ct_plan *g, const float *pl, int Wp, int n, int stride, int b, float *d,
                                size_t P) {
  for (int ty = 0; ty < g->TH; ty++) {
    size_t p0 = (size_t)b * g->tiles + (size_t)ty * g->TW;
    for (int i = 0; i < n; i++) {
      const float *r = pl + (size_t)(stride * ty + i) * Wp;
      float *o = d + (size_t)(i * n) * P + p0;
      for (int tx = 0; tx < g->TW; tx++) {
        const float *q = r + stride * tx;
        for (int j = 0; j < n; j++) o[(size_t)j * P + tx] = q[j];
      }
    }
  }
}

#define E5(d0, d1, d2, d3, o0, o1, o2, o3, o4) do { \
    o0 = (d0) - (d1); o1 = (d1); o2 = (d2) - (d1); o3 = (d2); o4 = (d3) - (d2); } while (0)

/* V[r*5+s][c][p]: the 25 planes of the 4x4 tiles (stride 2, from x row 2ty-1) */
static void input_fwd(const ct_plan *g, int C, int H, int W, const float *x, int n0, int nb,
                      float *V, float *scr) {
  const size_t P = (size_t)nb * g->tiles, CP = (size_t)C * P;
  const int TW = g->TW, TH = g->TH, Wp = 2 * TW + 2;
  const int Hp = 2 * TH + 2;
  float *d = scr, *t = d + 16 * P, *pl = t + 20 * P;
  memset(pl, 0, sizeof(float) * Hp * Wp);   /* x at offset 1, zero around */
  for (int c = 0; c < C; c++) {
    for (int b = 0; b < nb; b++) {
      put_plane(pl, Wp, 1, x + ((size_t)(n0 + b) * C + c) * H * W, H, W);
      gather_tiles(g, pl, Wp, 4, 2, b, d, P);
    }
    for (int j = 0; j < 4; j++) {   /* over the tile rows: t[r][j] */
      const float *restrict d0 = d + (size_t)j * P, *restrict d1 = d + (size_t)(4 + j) * P;
      const float *restrict d2 = d + (size_t)(8 + j) * P, *restrict d3 = d + (size_t)(12 + j) * P;
      float *restrict o0 = t + (size_t)j * P, *restrict o1 = t + (size_t)(4 + j) * P;
      float *restrict o2 = t + (size_t)(8 + j) * P, *restrict o3 = t + (size_t)(12 + j) * P;
      float *restrict o4 = t + (size_t)(16 + j) * P;
      #pragma omp simd
      for (size_t p = 0; p < P; p++) E5(d0[p], d1[p], d2[p], d3[p], o0[p], o1[p], o2[p], o3[p], o4[p]);
    }
    for (int r = 0; r < 5; r++) {   /* then over the columns, into V */
      const float *restrict q0 = t + (size_t)(r * 4) * P, *restrict q1 = q0 + P;
      const float *restrict q2 = q0 + 2 * P, *restrict q3 = q0 + 3 * P;
      float *restrict v = V + (size_t)(r * 5) * CP + (size_t)c * P;
      float *restrict o0 = v, *restrict o1 = v + CP, *restrict o2 = v + 2 * CP;
      float *restrict o3 = v + 3 * CP, *restrict o4 = v + 4 * CP;
      #pragma omp simd
      for (size_t p = 0; p < P; p++) E5(q0[p], q1[p], q2[p], q3[p], o0[p], o1[p], o2[p], o3[p], o4[p]);
    }
  }
}

/* y from the stacked products M[block][k][p]: per phase A^T m A, interleaved */
static void output_fwd(const ct_plan *g, int K, int OH, int OW, const float *M, const float *bias,
                       int n0, int nb, float *y, float *scr) {
  const size_t P = (size_t)nb * g->tiles, KP = (size_t)K * P;
  const int TW = g->TW;
  int off[25];
  plane_offsets(off);
  float *e = scr;   /* e[R*4+Q][p]: row R, column Q of each tile's 4x4 block of y */
  for (int k = 0; k < K; k++) {
    float bk = bias ? bias[k] : 0.0f;
    for (int a = 0; a < 2; a++)
      for (int b = 0; b < 2; b++) {
        const float *m[3][3];
        for (int i = 0; i < 3; i++)
          for (int j = 0; j < 3; j++) m[i][j] = M + (size_t)block_of(off, a, b, i, j) * KP + (size_t)k * P;
        const float *restrict m00 = m[0][0], *restrict m01 = m[0][1], *restrict m02 = m[0][2];
        const float *restrict m10 = m[1][0], *restrict m11 = m[1][1], *restrict m12 = m[1][2];
        const float *restrict m20 = m[2][0], *restrict m21 = m[2][1], *restrict m22 = m[2][2];
        float *restrict e00 = e + (size_t)(a * 4 + b) * P, *restrict e01 = e + (size_t)(a * 4 + 2 + b) * P;
        float *restrict e10 = e + (size_t)((2 + a) * 4 + b) * P, *restrict e11 = e + (size_t)((2 + a) * 4 + 2 + b) * P;
        #pragma omp simd
        for (size_t p = 0; p < P; p++) {
          float c0 = m00[p] + m10[p], c1 = m01[p] + m11[p], c2 = m02[p] + m12[p];
          float d0 = m10[p] + m20[p], d1 = m11[p] + m21[p], d2 = m12[p] + m22[p];
          e00[p] = c0 + c1 + bk; e01[p] = c1 + c2 + bk;
          e10[p] = d0 + d1 + bk; e11[p] = d1 + d2 + bk;
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
}

/* the data gradient's transform of 6 gy samples d0..d5 = gy[4t-1 .. 4t+4]:
** even phase (gy[4t], gy[4t+2], gy[4t+4]) then odd (gy[4t-1], gy[4t+1], gy[4t+3]) */
#define F6(d0, d1, d2, d3, d4, d5, o0, o1, o2, o3, o4, o5) do { \
    o0 = (d1) - (d3); o1 = (d3); o2 = (d5) - (d3); o3 = (d0) - (d2); o4 = (d2); o5 = (d4) - (d2); } while (0)

/* V[ij][ab][k][p] from the 6x6 tiles of gy (stride 4, from gy row 4ty-1) */
static void input_gx(const ct_plan *g, int K, int OH, int OW, const float *gy, int n0, int nb,
                     float *V, float *scr) {
  const size_t P = (size_t)nb * g->tiles, KP = (size_t)K * P;
  const int TW = g->TW, TH = g->TH, Wp = 4 * TW + 2;
  const int Hp = 4 * TH + 2;
  float *d = scr, *t = d + 36 * P, *pl = t + 36 * P;
  memset(pl, 0, sizeof(float) * Hp * Wp);   /* gy at offset 1, zero around */
  for (int k = 0; k < K; k++) {
    for (int b = 0; b < nb; b++) {
      put_plane(pl, Wp, 1, gy + ((size_t)(n0 + b) * K + k) * OH * OW, OH, OW);
      gather_tiles(g, pl, Wp, 6, 4, b, d, P);
    }
    for (int j = 0; j < 6; j++) {   /* over the tile rows: t[q][j] */
      const float *restrict d0 = d + (size_t)j * P, *restrict d1 = d + (size_t)(6 + j) * P;
      const float *restrict d2 = d + (size_t)(12 + j) * P, *restrict d3 = d + (size_t)(18 + j) * P;
      const float *restrict d4 = d + (size_t)(24 + j) * P, *restrict d5 = d + (size_t)(30 + j) * P;
      float *restrict o0 = t + (size_t)j * P, *restrict o1 = t + (size_t)(6 + j) * P;
      float *restrict o2 = t + (size_t)(12 + j) * P, *restrict o3 = t + (size_t)(18 + j) * P;
      float *restrict o4 = t + (size_t)(24 + j) * P, *restrict o5 = t + (size_t)(30 + j) * P;
      #pragma omp simd
      for (size_t p = 0; p < P; p++)
        F6(d0[p], d1[p], d2[p], d3[p], d4[p], d5[p], o0[p], o1[p], o2[p], o3[p], o4[p], o5[p]);
    }
    for (int q = 0; q < 6; q++) {   /* then over the columns: (q, s) -> V[(q%3)*3 + s%3][(q/3)*2 + s/3] */
      const float *restrict d0 = t + (size_t)(q * 6) * P, *restrict d1 = d0 + P, *restrict d2 = d0 + 2 * P;
      const float *restrict d3 = d0 + 3 * P, *restrict d4 = d0 + 4 * P, *restrict d5 = d0 + 5 * P;
      float *v = V + (size_t)(((q % 3) * 3) * 4 + (q / 3) * 2) * KP + (size_t)k * P;
      /* s = 0,1,2 (even columns): ij += s, ab += 0; s = 3,4,5: ij += s-3, ab += 1 */
      float *restrict o0 = v, *restrict o1 = v + 4 * KP, *restrict o2 = v + 8 * KP;
      float *restrict o3 = v + KP, *restrict o4 = v + 5 * KP, *restrict o5 = v + 9 * KP;
      #pragma omp simd
      for (size_t p = 0; p < P; p++)
        F6(d0[p], d1[p], d2[p], d3[p], d4[p], d5[p], o0[p], o1[p], o2[p], o3[p], o4[p], o5[p]);
    }
  }
}

/* gx from M[ij][c][p]: A^T m A per 2x2 tile */
static void output_gx(const ct_plan *g, int C, int H, int W, const float *M, int n0, int nb,
                      float *gx, float *scr) {
  const size_t P = (size_t)nb * g->tiles, CP = (size_t)C * P;
  const int TW = g->TW;
  float *e = scr;
  for (int c = 0; c < C; c++) {
    const float *m = M + (size_t)c * P;
    const float *restrict m00 = m, *restrict m01 = m + CP, *restrict m02 = m + 2 * CP;
    const float *restrict m10 = m + 3 * CP, *restrict m11 = m + 4 * CP, *restrict m12 = m + 5 * CP;
    const float *restrict m20 = m + 6 * CP, *restrict m21 = m + 7 * CP, *restrict m22 = m + 8 * CP;
    float *restrict e00 = e, *restrict e01 = e + P, *restrict e10 = e + 2 * P, *restrict e11 = e + 3 * P;
    #pragma omp simd
    for (size_t p = 0; p < P; p++) {
      float c0 = m00[p] + m10[p], c1 = m01[p] + m11[p], c2 = m02[p] + m12[p];
      float d0 = m10[p] + m20[p], d1 = m11[p] + m21[p], d2 = m12[p] + m22[p];
      e00[p] = c0 + c1; e01[p] = c1 + c2; e10[p] = d0 + d1; e11[p] = d1 + d2;
    }
    for (int b = 0; b < nb; b++) {
      float *gc = gx + ((size_t)(n0 + b) * C + c) * H * W;
      for (int ty = 0; ty < g->TH; ty++) {
        size_t p0 = (size_t)b * g->tiles + (size_t)ty * TW;
        for (int u = 0; u < 2 && 2 * ty + u < H; u++) {
          float *r = gc + (size_t)(2 * ty + u) * W;
          const float *f0 = e + (size_t)(2 * u) * P + p0, *f1 = f0 + P;
          int full = W / 2;
          for (int tx = 0; tx < full; tx++) { r[2 * tx] = f0[tx]; r[2 * tx + 1] = f1[tx]; }
          if (W & 1) r[W - 1] = f0[full];
        }
      }
    }
  }
}

/* Y[block][k][p] = (A g A^T) of each phase's 2x2 tile of gy (the 4x4 block of gy at (4ty, 4tx)) */
static void grad_gw(const ct_plan *g, int K, int OH, int OW, const float *gy, int n0, int nb,
                    float *Y, float *scr) {
  const size_t P = (size_t)nb * g->tiles, KP = (size_t)K * P;
  const int TW = g->TW, TH = g->TH, Wp = 4 * TW;
  int off[25];
  plane_offsets(off);
  const int Hp = 4 * TH;
  float *d = scr, *t = d + 16 * P, *pl = t + 24 * P;
  memset(pl, 0, sizeof(float) * Hp * Wp);   /* gy, zero below and right */
  for (int k = 0; k < K; k++) {
    for (int b = 0; b < nb; b++) {
      put_plane(pl, Wp, 0, gy + ((size_t)(n0 + b) * K + k) * OH * OW, OH, OW);
      for (int ty = 0; ty < TH; ty++) {
        size_t p0 = (size_t)b * g->tiles + (size_t)ty * TW;
        for (int i = 0; i < 4; i++) {
          const float *r = pl + (size_t)(4 * ty + i) * Wp;
          float *o = d + (size_t)(i * 4) * P + p0;
          for (int tx = 0; tx < TW; tx++) {
            const float *q = r + 4 * tx;
            o[tx] = q[0]; o[P + tx] = q[1]; o[2 * P + tx] = q[2]; o[3 * P + tx] = q[3];
          }
        }
      }
    }
    /* rows: phase a reads rows a and a+2 of the block: t[3a+i][j] */
    for (int a = 0; a < 2; a++)
      for (int j = 0; j < 4; j++) {
        const float *restrict ra = d + (size_t)(a * 4 + j) * P, *restrict rb = d + (size_t)((a + 2) * 4 + j) * P;
        float *restrict o0 = t + (size_t)((3 * a) * 4 + j) * P, *restrict o1 = t + (size_t)((3 * a + 1) * 4 + j) * P;
        float *restrict o2 = t + (size_t)((3 * a + 2) * 4 + j) * P;
        #pragma omp simd
        for (size_t p = 0; p < P; p++) { o0[p] = ra[p]; o1[p] = ra[p] + rb[p]; o2[p] = rb[p]; }
      }
    /* columns: phase b reads columns b and b+2 */
    for (int q = 0; q < 6; q++)
      for (int b = 0; b < 2; b++) {
        int a = q / 3, i = q % 3;
        const float *restrict ca = t + (size_t)(q * 4 + b) * P, *restrict cb = t + (size_t)(q * 4 + b + 2) * P;
        float *restrict o0 = Y + (size_t)block_of(off, a, b, i, 0) * KP + (size_t)k * P;
        float *restrict o1 = Y + (size_t)block_of(off, a, b, i, 1) * KP + (size_t)k * P;
        float *restrict o2 = Y + (size_t)block_of(off, a, b, i, 2) * KP + (size_t)k * P;
        #pragma omp simd
        for (size_t p = 0; p < P; p++) { o0[p] = ca[p]; o1[p] = ca[p] + cb[p]; o2[p] = cb[p]; }
      }
  }
}

/* ---- the three passes ---- */

void cpu_convt2_forward(const cpu_conv_params *p, const float *x, const float *w, const float *b,
                        float *y, float *work) {
  ct_plan g;
  ct_plan_make(p, &g);
  const int C = p->C, K = p->K, N = p->N;
  float *U = work, *slots = work + 36 * (size_t)K * C;
  weights_fwd(C, K, w, U);
  int off[25];
  plane_offsets(off);
  int nt = ct_threads(&g);
  #pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (nt > 1)
  for (int blk = 0; blk < g.nblk; blk++) {
    int tid = 0;
#ifdef _OPENMP
    tid = omp_get_thread_num();
#endif
    float *V = slots + (size_t)tid * g.slot, *M = V + g.vsz, *scr = M + g.msz;
    int n0 = blk * g.nb, nb = N - n0 < g.nb ? N - n0 : g.nb;
    int P = nb * g.tiles;
    input_fwd(&g, C, p->H, p->W, x, n0, nb, V, scr);
    for (int q = 0; q < 25; q++) {
      int nu = nusers(q / 5, q % 5);
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, nu * K, P, C, 1.0f,
                  U + (size_t)off[q] * K * C, C, V + (size_t)q * C * P, P, 0.0f,
                  M + (size_t)off[q] * K * P, P);
    }
    output_fwd(&g, K, p->OH, p->OW, M, b, n0, nb, y, scr);
  }
}

void cpu_convt2_data_grad(const cpu_conv_params *p, const float *w, const float *gy, float *gx,
                          float *work) {
  ct_plan g;
  ct_plan_make(p, &g);
  const int C = p->C, K = p->K, N = p->N;
  float *U = work, *slots = work + 36 * (size_t)K * C;
  weights_gx(C, K, w, U);
  int nt = ct_threads(&g);
  #pragma omp parallel for num_threads(nt) schedule(dynamic, 1) if (nt > 1)
  for (int blk = 0; blk < g.nblk; blk++) {
    int tid = 0;
#ifdef _OPENMP
    tid = omp_get_thread_num();
#endif
    float *V = slots + (size_t)tid * g.slot, *M = V + g.vsz, *scr = M + g.msz;
    int n0 = blk * g.nb, nb = N - n0 < g.nb ? N - n0 : g.nb;
    int P = nb * g.tiles;
    input_gx(&g, K, p->OH, p->OW, gy, n0, nb, V, scr);
    for (int ij = 0; ij < 9; ij++)
      cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, C, P, 4 * K, 1.0f,
                  U + (size_t)ij * C * 4 * K, 4 * K, V + (size_t)ij * 4 * K * P, P, 0.0f,
                  M + (size_t)ij * C * P, P);
    output_gx(&g, C, p->H, p->W, M, n0, nb, gx, scr);
  }
}

void cpu_convt2_weight_grad(const cpu_conv_params *p, const float *x, const float *gy, float *gw,
                            float *work) {
  ct_plan g;
  ct_plan_make(p, &g);
  const int C = p->C, K = p->K, N = p->N;
  const size_t KC = (size_t)K * C;
  float *slots = work + 36 * KC;
  int off[25];
  plane_offsets(off);
  int nt = ct_threads(&g);
  /* each thread accumulates its blocks into its own partial, summed in slot order */
  #pragma omp parallel num_threads(nt) if (nt > 1)
  {
    int tid = 0;
#ifdef _OPENMP
    tid = omp_get_thread_num();
#endif
    float *V = slots + (size_t)tid * g.slot, *Y = V + g.vsz, *scr = Y + g.msz, *Mp = scr + g.ssz;
    memset(Mp, 0, sizeof(float) * 36 * KC);
    #pragma omp for schedule(static)
    for (int blk = 0; blk < g.nblk; blk++) {
      int n0 = blk * g.nb, nb = N - n0 < g.nb ? N - n0 : g.nb;
      int P = nb * g.tiles;
      input_fwd(&g, C, p->H, p->W, x, n0, nb, V, scr);
      grad_gw(&g, K, p->OH, p->OW, gy, n0, nb, Y, scr);
      for (int q = 0; q < 25; q++) {
        int nu = nusers(q / 5, q % 5);
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, nu * K, C, P, 1.0f,
                    Y + (size_t)off[q] * K * P, P, V + (size_t)q * C * P, P, 1.0f,
                    Mp + (size_t)off[q] * KC, C);
      }
    }
  }
  /* sum the partials into work (the U area), then gw = G_a^T M G_b per phase */
  float *M0 = work;
  const float *P0 = slots + g.vsz + g.msz + g.ssz;
  memcpy(M0, P0, sizeof(float) * 36 * KC);
  for (int t = 1; t < nt; t++) {
    const float *Pt = P0 + (size_t)t * g.slot;
    for (size_t i = 0; i < 36 * KC; i++) M0[i] += Pt[i];
  }
  #pragma omp parallel for schedule(static) if (KC >= 1024)
  for (size_t ck = 0; ck < KC; ck++) {
    int c = (int)(ck / K), k = (int)(ck % K);
    float *o = gw + ck * 16;
    for (int a = 0; a < 2; a++)
      for (int b = 0; b < 2; b++) {
        float m[3][3], t[2][3];
        for (int i = 0; i < 3; i++)
          for (int j = 0; j < 3; j++) m[i][j] = M0[((size_t)block_of(off, a, b, i, j) * K + k) * C + c];
        for (int pp = 0; pp < 2; pp++)
          for (int j = 0; j < 3; j++)
            t[pp][j] = GA[a][0][pp] * m[0][j] + GA[a][1][pp] * m[1][j] + GA[a][2][pp] * m[2][j];
        for (int pp = 0; pp < 2; pp++)
          for (int q = 0; q < 2; q++)
            o[KF[a][pp] * 4 + KF[b][q]] = t[pp][0] * GA[b][0][q] + t[pp][1] * GA[b][1][q] + t[pp][2] * GA[b][2][q];
      }
  }
}
