/*
** test_norm.c: batch/group/layer norm, softmax and GELU kernels against
** double-precision references; backward passes against central finite
** differences of those references (loss = sum(gy * f(x))). Exits 1 on failure.
** Ends with a timing of batch_norm_gelu forward+backward on [256,128,784]
** (skipped when FDM_TEST_NO_BENCH is set).
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <omp.h>
#include "cpu_nn.h"

static int failures;

/* ---------------------------------------------------------------- helpers */

static uint64_t rng_state = 0x9e3779b97f4a7c15ull;
static double urand(void) { /* [0, 1) */
  rng_state ^= rng_state << 13, rng_state ^= rng_state >> 7, rng_state ^= rng_state << 17;
  return (rng_state >> 11) * (1.0 / 9007199254740992.0);
}
static int irand(int lo, int hi) { return lo + (int)(urand() * (hi - lo + 1)); }
static void fill(float *p, size_t n, double lo, double hi) {
  for (size_t i = 0; i < n; i++) p[i] = (float)(lo + (hi - lo) * urand());
}
static double *to_d(const float *p, size_t n) {
  double *d = malloc(n * sizeof *d);
  for (size_t i = 0; i < n; i++) d[i] = p[i];
  return d;
}

/* |got - want| <= atol + rtol*|want| everywhere; reports the worst element */
static void check(const char *what, const float *got, const double *want, size_t n, double rtol,
                  double atol) {
  double worst = 0;
  size_t wi = 0;
  int bad = 0;
  for (size_t i = 0; i < n; i++) {
    double e = fabs(got[i] - want[i]), lim = atol + rtol * fabs(want[i]);
    if (!(e <= lim)) bad = 1; /* also catches NaN */
    double r = e / lim;
    if (!(r <= worst)) worst = r, wi = i;
  }
  if (bad) {
    failures++;
    printf("FAIL %s: element %zu got %.9g want %.9g (err/limit %.3g)\n", what, wi, got[wi],
           want[wi], worst);
  }
}

/* 1 + erf(z) as erfc(-z) so the reference stays exact for x << 0 */
static double gelu_d(double x) { return 0.5 * x * erfc(-x / sqrt(2.0)); }
static double gelu_grad_d(double x) {
  return 0.5 * erfc(-x / sqrt(2.0)) + x * exp(-0.5 * x * x) / sqrt(2 * M_PI);
}

/* ---------------------------------------------------------------- references */

typedef struct {
  int N, C, S, G, M, D; /* shapes: BN/GN [N,C,S]; LN [M,D]; softmax [N(outer),D,S(inner)] */
  int training, gelu, log;
  double eps, *x, *w, *b, *rm, *rv, *gy, *out;
} ctx;

/* batch norm (+gelu); training uses batch stats with the biased variance */
static void ref_bn(ctx *c, double *mean_out, double *var_out) {
  int64_t n = (int64_t)c->N * c->S;
  for (int ch = 0; ch < c->C; ch++) {
    double m, v;
    if (c->training) {
      double s = 0, ss = 0;
      for (int i = 0; i < c->N; i++)
        for (int k = 0; k < c->S; k++) s += c->x[((int64_t)i * c->C + ch) * c->S + k];
      m = s / n;
      for (int i = 0; i < c->N; i++)
        for (int k = 0; k < c->S; k++) {
          double d = c->x[((int64_t)i * c->C + ch) * c->S + k] - m;
          ss += d * d;
        }
      v = ss / n;
    } else {
      m = c->rm[ch], v = c->rv[ch];
    }
    if (mean_out) mean_out[ch] = m, var_out[ch] = v;
    for (int i = 0; i < c->N; i++)
      for (int k = 0; k < c->S; k++) {
        int64_t j = ((int64_t)i * c->C + ch) * c->S + k;
        double y = (c->x[j] - m) / sqrt(v + c->eps);
        if (c->w) y *= c->w[ch];
        if (c->b) y += c->b[ch];
        c->out[j] = c->gelu ? gelu_d(y) : y;
      }
  }
}

static void ref_gn(ctx *c) {
  int Cg = c->C / c->G;
  int64_t L = (int64_t)Cg * c->S;
  for (int64_t ng = 0; ng < (int64_t)c->N * c->G; ng++) {
    double *xb = c->x + ng * L, s = 0, ss = 0;
    for (int64_t k = 0; k < L; k++) s += xb[k];
    double m = s / L;
    for (int64_t k = 0; k < L; k++) ss += (xb[k] - m) * (xb[k] - m);
    double r = 1 / sqrt(ss / L + c->eps);
    for (int64_t k = 0; k < L; k++) {
      int ch = (int)(ng % c->G) * Cg + (int)(k / c->S);
      double y = (xb[k] - m) * r;
      if (c->w) y *= c->w[ch];
      if (c->b) y += c->b[ch];
      c->out[ng * L + k] = y;
    }
  }
}

static void ref_ln(ctx *c) {
  for (int i = 0; i < c->M; i++) {
    double *xr = c->x + (int64_t)i * c->D, s = 0, ss = 0;
    for (int d = 0; d < c->D; d++) s += xr[d];
    double m = s / c->D;
    for (int d = 0; d < c->D; d++) ss += (xr[d] - m) * (xr[d] - m);
    double r = 1 / sqrt(ss / c->D + c->eps);
    for (int d = 0; d < c->D; d++) {
      double y = (xr[d] - m) * r;
      if (c->w) y *= c->w[d];
      if (c->b) y += c->b[d];
      c->out[(int64_t)i * c->D + d] = y;
    }
  }
}

static void ref_softmax(ctx *c) {
  int O = c->N, D = c->D, I = c->S;
  for (int o = 0; o < O; o++)
    for (int i = 0; i < I; i++) {
      double mx = -INFINITY, s = 0;
      for (int d = 0; d < D; d++) mx = fmax(mx, c->x[((int64_t)o * D + d) * I + i]);
      for (int d = 0; d < D; d++) s += exp(c->x[((int64_t)o * D + d) * I + i] - mx);
      for (int d = 0; d < D; d++) {
        int64_t j = ((int64_t)o * D + d) * I + i;
        c->out[j] = c->log ? c->x[j] - mx - log(s) : exp(c->x[j] - mx) / s;
      }
    }
}

/* loss = sum(gy * f(x)) for the finite differences */
typedef void (*ref_fn)(ctx *);
static void ref_bn_plain(ctx *c) { ref_bn(c, NULL, NULL); }
static double loss(ref_fn f, ctx *c, size_t n) {
  f(c);
  double l = 0;
  for (size_t i = 0; i < n; i++) l += c->gy[i] * c->out[i];
  return l;
}
/* d loss / d p[i] for every i < np, by central differences */
static void fd_grad(ref_fn f, ctx *c, size_t nout, double *p, size_t np, double *g) {
  for (size_t i = 0; i < np; i++) {
    double save = p[i], h = 1e-4 * fmax(1.0, fabs(save));
    p[i] = save + h;
    double a = loss(f, c, nout);
    p[i] = save - h;
    double b = loss(f, c, nout);
    p[i] = save;
    g[i] = (a - b) / (2 * h);
  }
}

/* ---------------------------------------------------------------- tests */

#define GRAD_RTOL 2e-3
#define GRAD_ATOL 2e-4

static void test_batch_norm(int trial) {
  int N = irand(1, 4), C = irand(1, 5), S = irand(1, 7);
  if (N * S < 2) S = 2; /* batch stats need more than one value per channel */
  int affine = trial & 1, training = (trial >> 1) & 1, gelu = (trial >> 2) & 1;
  size_t n = (size_t)N * C * S;
  float *x = malloc(n * 4), *y = malloc(n * 4), *pre = malloc(n * 4), *gy = malloc(n * 4);
  float *gx = malloc(n * 4), *gpre = malloc(n * 4), w[8], b[8], rm[8], rv[8], rm0[8], rv0[8];
  float sm[8], si[8], gw[8], gb[8];
  float mom = 0.1f + 0.3f * (float)urand(), eps = 1e-5f;
  fill(x, n, -2, 3);
  fill(gy, n, -1, 1);
  fill(w, C, 0.5, 1.5);
  fill(b, C, -0.5, 0.5);
  fill(rm, C, -0.5, 0.5);
  fill(rv, C, 0.5, 2);
  memcpy(rm0, rm, sizeof rm);
  memcpy(rv0, rv, sizeof rv);
  char name[128];
  snprintf(name, sizeof name, "batch_norm%s N=%d C=%d S=%d affine=%d training=%d",
           gelu ? "_gelu" : "", N, C, S, affine, training);

  if (gelu)
    cpu_batch_norm_gelu_forward(N, C, S, x, affine ? w : NULL, affine ? b : NULL, rm, rv,
                                training, mom, eps, pre, y, sm, si);
  else
    cpu_batch_norm_forward(N, C, S, x, affine ? w : NULL, affine ? b : NULL, rm, rv, training,
                           mom, eps, y, sm, si);

  ctx c = {.N = N, .C = C, .S = S, .training = training, .eps = eps, .x = to_d(x, n),
           .w = affine ? to_d(w, C) : NULL, .b = affine ? to_d(b, C) : NULL,
           .rm = to_d(rm0, C), .rv = to_d(rv0, C), .gy = to_d(gy, n), .out = malloc(n * 8)};
  double mean[8] = {0}, var[8] = {0}, want[8] = {0}, s_want[8] = {0};
  ref_bn(&c, mean, var); /* plain bn: the pre-activation */
  char what[200];
  snprintf(what, sizeof what, "%s forward%s", name, gelu ? " pre" : "");
  check(what, gelu ? pre : y, c.out, n, 1e-5, 1e-5);
  if (gelu) {
    for (size_t i = 0; i < n; i++) c.out[i] = gelu_d(pre[i]);
    snprintf(what, sizeof what, "%s forward y", name);
    check(what, y, c.out, n, 1e-5, 1e-6);
  }
  /* saved stats and the momentum update with the unbiased variance */
  for (int i = 0; i < C; i++) s_want[i] = mean[i];
  snprintf(what, sizeof what, "%s save_mean", name);
  check(what, sm, s_want, C, 1e-6, 1e-6);
  for (int i = 0; i < C; i++) s_want[i] = 1 / sqrt(var[i] + eps);
  snprintf(what, sizeof what, "%s save_invstd", name);
  check(what, si, s_want, C, 1e-5, 0);
  int64_t cnt = (int64_t)N * S;
  for (int i = 0; i < C; i++)
    want[i] = training ? (1 - mom) * rm0[i] + mom * mean[i] : rm0[i];
  snprintf(what, sizeof what, "%s running_mean", name);
  check(what, rm, want, C, 1e-6, 1e-6);
  for (int i = 0; i < C; i++)
    want[i] = training ? (1 - mom) * rv0[i] + mom * var[i] * cnt / (cnt - 1) : rv0[i];
  snprintf(what, sizeof what, "%s running_var", name);
  check(what, rv, want, C, 1e-6, 1e-6);

  /* backward: bn_gelu backward is gelu_backward on pre, then bn backward */
  const float *gin = gy;
  if (gelu) cpu_gelu_backward(n, pre, gy, gpre), gin = gpre;
  cpu_batch_norm_backward(N, C, S, x, affine ? w : NULL, sm, si, training, gin, gx,
                          affine ? gw : NULL, affine ? gb : NULL);
  c.gelu = gelu;
  double *g = calloc(n, 8), gpw[8], gpb[8];
  fd_grad(ref_bn_plain, &c, n, c.x, n, g);
  snprintf(what, sizeof what, "%s grad x", name);
  check(what, gx, g, n, GRAD_RTOL, GRAD_ATOL);
  if (affine) {
    fd_grad(ref_bn_plain, &c, n, c.w, C, gpw);
    fd_grad(ref_bn_plain, &c, n, c.b, C, gpb);
    snprintf(what, sizeof what, "%s grad weight", name);
    check(what, gw, gpw, C, GRAD_RTOL, GRAD_ATOL);
    snprintf(what, sizeof what, "%s grad bias", name);
    check(what, gb, gpb, C, GRAD_RTOL, GRAD_ATOL);
  }
  /* weight/bias grads alone (gx = NULL), non-affine input still allowed */
  float gw2[8], gb2[8];
  cpu_batch_norm_backward(N, C, S, x, affine ? w : NULL, sm, si, training, gin, NULL, gw2, gb2);
  if (affine && (memcmp(gw, gw2, C * 4) || memcmp(gb, gb2, C * 4))) {
    failures++;
    printf("FAIL %s: weight/bias grads differ with gx = NULL\n", name);
  }
  free(x), free(y), free(pre), free(gy), free(gx), free(gpre), free(g);
  free(c.x), free(c.w), free(c.b), free(c.rm), free(c.rv), free(c.gy), free(c.out);
}

/* eval without running stats falls back to batch statistics (PyTorch's
** track_running_stats=False); and |mean| >> std must keep its precision */
static void test_batch_norm_special(void) {
  int N = 3, C = 2, S = 50;
  size_t n = (size_t)N * C * S;
  float *x = malloc(n * 4), *y = malloc(n * 4), sm[2], si[2];
  fill(x, n, -1, 1);
  for (size_t i = 0; i < n; i++) x[i] += 1000.0f; /* std ~0.58, mean ~1000 */
  cpu_batch_norm_forward(N, C, S, x, NULL, NULL, NULL, NULL, 0, 0.1f, 1e-5f, y, sm, si);
  ctx c = {.N = N, .C = C, .S = S, .training = 1, .eps = 1e-5, .x = to_d(x, n), .out = malloc(n * 8)};
  double mean[2], var[2], want[2];
  ref_bn(&c, mean, var);
  check("batch_norm eval without running stats / large mean: y", y, c.out, n, 1e-4, 1e-4);
  for (int i = 0; i < C; i++) want[i] = 1 / sqrt(var[i] + 1e-5);
  check("batch_norm large mean: invstd", si, want, C, 1e-5, 0);
  free(x), free(y), free(c.x), free(c.out);
}

static void test_group_norm(int trial) {
  int G = irand(1, 3), N = irand(1, 3), C = G * irand(1, 3), S = irand(1, 6);
  if (C / G * S < 2) S = 2;
  int affine = trial & 1;
  size_t n = (size_t)N * C * S;
  float *x = malloc(n * 4), *y = malloc(n * 4), *gy = malloc(n * 4), *gx = malloc(n * 4);
  float w[9], b[9], gw[9], gb[9], mean[9], rstd[9];
  fill(x, n, -2, 3), fill(gy, n, -1, 1), fill(w, C, 0.5, 1.5), fill(b, C, -0.5, 0.5);
  char name[128], what[200];
  snprintf(name, sizeof name, "group_norm N=%d C=%d S=%d G=%d affine=%d", N, C, S, G, affine);
  cpu_group_norm_forward(N, C, S, G, x, affine ? w : NULL, affine ? b : NULL, 1e-5f, y, mean, rstd);
  ctx c = {.N = N, .C = C, .S = S, .G = G, .eps = 1e-5f, .x = to_d(x, n),
           .w = affine ? to_d(w, C) : NULL, .b = affine ? to_d(b, C) : NULL, .gy = to_d(gy, n),
           .out = malloc(n * 8)};
  ref_gn(&c);
  snprintf(what, sizeof what, "%s forward", name);
  check(what, y, c.out, n, 1e-5, 1e-5);
  cpu_group_norm_backward(N, C, S, G, x, affine ? w : NULL, mean, rstd, gy, gx,
                          affine ? gw : NULL, affine ? gb : NULL);
  double *g = calloc(n, 8), gpw[9], gpb[9];
  fd_grad(ref_gn, &c, n, c.x, n, g);
  snprintf(what, sizeof what, "%s grad x", name);
  check(what, gx, g, n, GRAD_RTOL, GRAD_ATOL);
  if (affine) {
    fd_grad(ref_gn, &c, n, c.w, C, gpw);
    fd_grad(ref_gn, &c, n, c.b, C, gpb);
    snprintf(what, sizeof what, "%s grad weight", name);
    check(what, gw, gpw, C, GRAD_RTOL, GRAD_ATOL);
    snprintf(what, sizeof what, "%s grad bias", name);
    check(what, gb, gpb, C, GRAD_RTOL, GRAD_ATOL);
  }
  free(x), free(y), free(gy), free(gx), free(g);
  free(c.x), free(c.w), free(c.b), free(c.gy), free(c.out);
}

static void test_layer_norm(int trial) {
  int M = irand(1, 5), D = irand(2, 9);
  if (trial == 7) D = 300; /* more than one column block in the weight reduction */
  int affine = trial & 1;
  size_t n = (size_t)M * D;
  float *x = malloc(n * 4), *y = malloc(n * 4), *gy = malloc(n * 4), *gx = malloc(n * 4);
  float *w = malloc(D * 4), *b = malloc(D * 4), *gw = malloc(D * 4), *gb = malloc(D * 4);
  float mean[5], rstd[5];
  fill(x, n, -2, 3), fill(gy, n, -1, 1), fill(w, D, 0.5, 1.5), fill(b, D, -0.5, 0.5);
  char name[128], what[200];
  snprintf(name, sizeof name, "layer_norm M=%d D=%d affine=%d", M, D, affine);
  cpu_layer_norm_forward(M, D, x, affine ? w : NULL, affine ? b : NULL, 1e-5f, y, mean, rstd);
  ctx c = {.M = M, .D = D, .eps = 1e-5f, .x = to_d(x, n), .w = affine ? to_d(w, D) : NULL,
           .b = affine ? to_d(b, D) : NULL, .gy = to_d(gy, n), .out = malloc(n * 8)};
  ref_ln(&c);
  snprintf(what, sizeof what, "%s forward", name);
  check(what, y, c.out, n, 1e-5, 1e-5);
  cpu_layer_norm_backward(M, D, x, affine ? w : NULL, mean, rstd, gy, gx, affine ? gw : NULL,
                          affine ? gb : NULL);
  double *g = calloc(n, 8), *gpw = malloc(D * 8), *gpb = malloc(D * 8);
  fd_grad(ref_ln, &c, n, c.x, n, g);
  snprintf(what, sizeof what, "%s grad x", name);
  check(what, gx, g, n, GRAD_RTOL, GRAD_ATOL);
  if (affine) {
    fd_grad(ref_ln, &c, n, c.w, D, gpw);
    fd_grad(ref_ln, &c, n, c.b, D, gpb);
    snprintf(what, sizeof what, "%s grad weight", name);
    check(what, gw, gpw, D, GRAD_RTOL, GRAD_ATOL);
    snprintf(what, sizeof what, "%s grad bias", name);
    check(what, gb, gpb, D, GRAD_RTOL, GRAD_ATOL);
  }
  free(x), free(y), free(gy), free(gx), free(w), free(b), free(gw), free(gb);
  free(g), free(gpw), free(gpb), free(c.x), free(c.w), free(c.b), free(c.gy), free(c.out);
}

static void test_softmax(int trial) {
  int O = irand(1, 3), D = irand(1, 8), I = trial & 2 ? irand(2, 70) : 1, lg = trial & 1;
  if (trial == 5) O = 600, D = 70, I = 1; /* big enough to thread */
  size_t n = (size_t)O * D * I;
  float *x = malloc(n * 4), *y = malloc(n * 4), *gy = malloc(n * 4), *gx = malloc(n * 4);
  fill(x, n, -8, 8), fill(gy, n, -1, 1);
  if (trial == 3) x[0] = 80; /* large logits must not overflow */
  char name[128], what[200];
  snprintf(name, sizeof name, "%ssoftmax outer=%d D=%d inner=%d", lg ? "log_" : "", O, D, I);
  cpu_softmax_forward(O, D, I, lg, x, y);
  ctx c = {.N = O, .D = D, .S = I, .log = lg, .x = to_d(x, n), .gy = to_d(gy, n),
           .out = malloc(n * 8)};
  ref_softmax(&c);
  snprintf(what, sizeof what, "%s forward", name);
  check(what, y, c.out, n, 2e-6, lg ? 2e-6 : 1e-7);
  cpu_softmax_backward(O, D, I, lg, y, gy, gx);
  double *g = calloc(n, 8);
  if (n <= 2000) {
    fd_grad(ref_softmax, &c, n, c.x, n, g);
  } else { /* analytic double gradient where finite differences would be slow */
    for (int o = 0; o < O; o++) {
      double s = 0;
      for (int d = 0; d < D; d++) s += lg ? c.gy[o * D + d] : c.gy[o * D + d] * c.out[o * D + d];
      for (int d = 0; d < D; d++) {
        int j = o * D + d;
        g[j] = lg ? c.gy[j] - exp(c.out[j]) * s : c.out[j] * (c.gy[j] - s);
      }
    }
  }
  snprintf(what, sizeof what, "%s grad x", name);
  check(what, gx, g, n, GRAD_RTOL, GRAD_ATOL);
  free(x), free(y), free(gy), free(gx), free(g), free(c.x), free(c.gy), free(c.out);
}

static void test_gelu(void) {
  size_t n = 100003; /* odd size: vector remainder; large: threaded */
  float *x = malloc(n * 4), *y = malloc(n * 4), *gy = malloc(n * 4), *gx = malloc(n * 4);
  double *want = malloc(n * 8), *gwant = malloc(n * 8);
  fill(x, n, -12, 12), fill(gy, n, -1, 1);
  x[0] = 0, x[1] = -0.0f, x[2] = 1e-30f, x[3] = -40, x[4] = 40;
  cpu_gelu_forward(n, x, y);
  cpu_gelu_backward(n, x, gy, gx);
  for (size_t i = 0; i < n; i++) want[i] = gelu_d(x[i]), gwant[i] = gy[i] * gelu_grad_d(x[i]);
  check("gelu forward", y, want, n, 2e-6, 1e-7);
  check("gelu backward (analytic)", gx, gwant, n, 2e-6, 1e-7);
  /* the analytic derivative itself against finite differences */
  for (int i = 0; i < 200; i++) {
    double v = -6 + 12.0 * i / 199, h = 1e-5;
    double fd = (gelu_d(v + h) - gelu_d(v - h)) / (2 * h);
    if (fabs(fd - gelu_grad_d(v)) > 1e-8) {
      failures++;
      printf("FAIL gelu derivative at %g: fd %.12g analytic %.12g\n", v, fd, gelu_grad_d(v));
    }
  }
  free(x), free(y), free(gy), free(gx), free(want), free(gwant);
}

/* large-shape accuracy of the (threaded) BN stats, against double sums */
static void test_batch_norm_large(void) {
  int N = 16, C = 12, S = 28 * 28;
  size_t n = (size_t)N * C * S;
  float *x = malloc(n * 4), *y = malloc(n * 4), sm[12], si[12], rm[12] = {0}, rv[12];
  for (int i = 0; i < C; i++) rv[i] = 1;
  fill(x, n, -1, 5);
  cpu_batch_norm_forward(N, C, S, x, NULL, NULL, rm, rv, 1, 0.1f, 1e-5f, y, sm, si);
  ctx c = {.N = N, .C = C, .S = S, .training = 1, .eps = 1e-5, .x = to_d(x, n), .out = malloc(n * 8)};
  double mean[12], var[12], want[12];
  ref_bn(&c, mean, var);
  check("batch_norm [16,12,784] y", y, c.out, n, 1e-5, 1e-5);
  check("batch_norm [16,12,784] mean", sm, mean, C, 1e-6, 1e-7);
  for (int i = 0; i < C; i++) want[i] = 0.9 + 0.1 * var[i] * (N * S) / (N * S - 1.0);
  check("batch_norm [16,12,784] running_var", rv, want, C, 1e-6, 0);
  free(x), free(y), free(c.x), free(c.out);
}

/* ---------------------------------------------------------------- timing */

static void bench(void) {
  int N = 256, C = 128, S = 28 * 28, reps = 5;
  size_t n = (size_t)N * C * S;
  float *x = malloc(n * 4), *pre = malloc(n * 4), *y = malloc(n * 4), *gy = malloc(n * 4);
  float *gpre = malloc(n * 4), *gx = malloc(n * 4);
  float w[128], b[128], rm[128] = {0}, rv[128], sm[128], si[128], gw[128], gb[128];
  if (!x || !pre || !y || !gy || !gpre || !gx) {
    printf("bench: out of memory, skipped\n");
    return;
  }
  fill(w, C, 0.5, 1.5), fill(b, C, -0.5, 0.5);
  for (int i = 0; i < C; i++) rv[i] = 1;
#pragma omp parallel for
  for (size_t i = 0; i < n; i++) x[i] = (float)((i * 2654435761u % 1000) * 0.004 - 1.5), gy[i] = x[i] * 0.1f, pre[i] = y[i] = gpre[i] = gx[i] = 0;
  double tf = 1e9, tg = 1e9, tb = 1e9, tplain = 1e9;
  for (int r = 0; r < reps; r++) {
    double t0 = omp_get_wtime();
    cpu_batch_norm_gelu_forward(N, C, S, x, w, b, rm, rv, 1, 0.1f, 1e-5f, pre, y, sm, si);
    double t1 = omp_get_wtime();
    cpu_gelu_backward(n, pre, gy, gpre);
    double t2 = omp_get_wtime();
    cpu_batch_norm_backward(N, C, S, x, w, sm, si, 1, gpre, gx, gw, gb);
    double t3 = omp_get_wtime();
    cpu_batch_norm_forward(N, C, S, x, w, b, rm, rv, 1, 0.1f, 1e-5f, y, sm, si);
    double t4 = omp_get_wtime();
    tf = fmin(tf, t1 - t0), tg = fmin(tg, t2 - t1), tb = fmin(tb, t3 - t2), tplain = fmin(tplain, t4 - t3);
  }
  printf("bench batch_norm_gelu [256,128,784] (%d threads, best of %d): forward %.1f ms, "
         "gelu_backward %.1f ms, bn_backward %.1f ms, total %.1f ms (plain bn forward %.1f ms)\n",
         omp_get_max_threads(), reps, tf * 1e3, tg * 1e3, tb * 1e3, (tf + tg + tb) * 1e3,
         tplain * 1e3);
  free(x), free(pre), free(y), free(gy), free(gpre), free(gx);
}

int main(void) {
  for (int t = 0; t < 64; t++) test_batch_norm(t);
  test_batch_norm_special();
  test_batch_norm_large();
  for (int t = 0; t < 24; t++) test_group_norm(t);
  for (int t = 0; t < 24; t++) test_layer_norm(t);
  for (int t = 0; t < 24; t++) test_softmax(t % 8);
  test_gelu();
  if (failures) {
    printf("test_norm: %d FAILED\n", failures);
    return 1;
  }
  printf("test_norm: all passed\n");
  if (!getenv("FDM_TEST_NO_BENCH")) bench();
  return 0;
}
