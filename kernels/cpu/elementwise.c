/* elementwise.c: CPU kernels of the elementwise ops: binary arithmetic and
** comparisons over broadcast views, unary functions and their derivatives,
** axpy, clamp, where. float32 arithmetic in float; int64 arithmetic wraps on
** overflow (two's complement, as PyTorch) instead of being undefined. */
#include <math.h>
#include "cpu_kernels.h"
#include "cpu_iter.h"
#include "cpu_nn.h"

#define BIN_FLOAT_CASES(RUN) \
  case FDM_ADD: RUN(x + y); break; case FDM_SUB: RUN(x - y); break; \
  case FDM_MUL: RUN(x * y); break; case FDM_DIV: RUN(x / y); break; \
  case FDM_POW: RUN(powf(x, y)); break; \
  case FDM_MAXIMUM: RUN((x > y || isnan(x)) ? x : y); break; \
  case FDM_MINIMUM: RUN((x < y || isnan(x)) ? x : y); break; \
  default: break;
#define CMP_CASES(RUN) \
  case FDM_EQ: RUN(x == y); break; case FDM_NE: RUN(x != y); break; \
  case FDM_LT: RUN(x < y); break; case FDM_LE: RUN(x <= y); break; \
  case FDM_GT: RUN(x > y); break; case FDM_GE: RUN(x >= y); break; \
  case FDM_AND: RUN(x != 0 && y != 0); break; case FDM_OR: RUN(x != 0 || y != 0); break; \
  default: break;

/* wrapping int64 arithmetic */
static inline int64_t wadd(int64_t x, int64_t y) { return (int64_t)((uint64_t)x + (uint64_t)y); }
static inline int64_t wsub(int64_t x, int64_t y) { return (int64_t)((uint64_t)x - (uint64_t)y); }
static inline int64_t wmul(int64_t x, int64_t y) { return (int64_t)((uint64_t)x * (uint64_t)y); }
static inline int64_t wneg(int64_t x) { return (int64_t)(0 - (uint64_t)x); }

static int64_t ipow(int64_t x, int64_t y) {
  if (y < 0) return x == 1 ? 1 : x == -1 ? (y & 1 ? -1 : 1) : 0;
  int64_t r = 1;
  while (y) { if (y & 1) r = wmul(r, x); x = wmul(x, x); y >>= 1; }
  return r;
}

static int is_compare(fdm_binop op) { return op >= FDM_EQ; }

int cpu_kernel_binary(fdm_binop op, const fdm_kview *out, const fdm_kview *a, const fdm_kview *b) {
  const fdm_kview *ops[3] = {out, a, b};
  fdm_iter it;
  iter_init(&it, 3, ops);
  void *p0 = out->data;
  const void *p1 = a->data, *p2 = b->data;
  if (a->dtype == FDM_FLOAT32) {
    const float *pa = p1, *pb = p2;
    if (is_compare(op)) {
      uint8_t *po = p0;
#define RUN(E) ITER_FOR(it, { float x = pa[o1], y = pb[o2]; po[o0] = (uint8_t)(E); })
      switch (op) { CMP_CASES(RUN) }
#undef RUN
    } else {
      float *po = p0;
#define RUN(E) ITER_FOR(it, { float x = pa[o1], y = pb[o2]; po[o0] = (E); })
      switch (op) { BIN_FLOAT_CASES(RUN) }
#undef RUN
    }
  } else {
    const int64_t *pa = p1, *pb = p2;
    if (is_compare(op)) {
      uint8_t *po = p0;
#define RUN(E) ITER_FOR(it, { int64_t x = pa[o1], y = pb[o2]; po[o0] = (uint8_t)(E); })
      switch (op) { CMP_CASES(RUN) }
#undef RUN
    } else {
      int64_t *po = p0;
#define RUN(E) ITER_FOR(it, { int64_t x = pa[o1], y = pb[o2]; po[o0] = (E); })
      switch (op) {
        case FDM_ADD: RUN(wadd(x, y)); break; case FDM_SUB: RUN(wsub(x, y)); break;
        case FDM_MUL: RUN(wmul(x, y)); break;
        case FDM_POW: RUN(ipow(x, y)); break;
        case FDM_MAXIMUM: RUN(x > y ? x : y); break; case FDM_MINIMUM: RUN(x < y ? x : y); break;
        default: return fdm_seterror("%d: not an int64 operation", (int)op);
      }
#undef RUN
    }
  }
  return 0;
}

static float sigmoidf(float x) { return 1.0f / (1.0f + expf(-x)); }
static float gelu_tanhf(float x) {
  const float k = 0.7978845608028654f;
  return 0.5f * x * (1.0f + tanhf(k * (x + 0.044715f * x * x * x)));
}

/* out and x contiguous, one shape */
int cpu_kernel_unary(fdm_unop op, const fdm_kview *out, const fdm_kview *xv) {
  int64_t n = fdm_kview_numel(out);
  if (xv->dtype == FDM_INT64) {
    const int64_t *x = xv->data;
    int64_t *y = out->data;
    for (int64_t k = 0; k < n; k++) {
      int64_t v = x[k];
      switch (op) {
        case FDM_NEG: y[k] = wneg(v); break;
        case FDM_ABS: y[k] = v < 0 ? wneg(v) : v; break;   /* abs(INT64_MIN) wraps, as PyTorch */
        case FDM_SIGN: y[k] = (v > 0) - (v < 0); break;
        case FDM_RELU: y[k] = v > 0 ? v : 0; break;
        case FDM_SQUARE: y[k] = wmul(v, v); break;
        default: return fdm_seterror("%d: not an int64 operation", (int)op);
      }
    }
    return 0;
  }
  const float *x = xv->data;
  float *y = out->data;
#define U(E) _Pragma("omp parallel for schedule(static) if(n > CPU_PAR_MIN)") \
  for (int64_t k = 0; k < n; k++) { float v = x[k]; y[k] = (E); } break;
  switch (op) {
    case FDM_NEG: U(-v) case FDM_ABS: U(fabsf(v)) case FDM_SQRT: U(sqrtf(v))
    case FDM_RSQRT: U(1.0f / sqrtf(v)) case FDM_EXP: U(expf(v)) case FDM_LOG: U(logf(v))
    case FDM_SIN: U(sinf(v)) case FDM_COS: U(cosf(v)) case FDM_SQUARE: U(v * v)
    case FDM_SIGN: U((float)((v > 0) - (v < 0)))
    case FDM_RELU: U(v < 0 ? 0.0f : v)   /* NaN stays NaN, as PyTorch: a diverging run shows */
    case FDM_SIGMOID: U(sigmoidf(v)) case FDM_TANH: U(tanhf(v))
    case FDM_GELU: cpu_gelu_forward(n, x, y); break;
    case FDM_GELU_TANH: U(gelu_tanhf(v)) case FDM_SILU: U(v * sigmoidf(v))
    case FDM_RECIPROCAL: U(1.0f / v)
    default: return fdm_seterror("%d: not a float unary operation", (int)op);
  }
#undef U
  return 0;
}

/* gx = g * f'(x), where y = f(x) is available too; all contiguous float32 */
int cpu_kernel_unary_backward(fdm_unop op, const fdm_kview *gxv, const fdm_kview *xv,
                              const fdm_kview *yv, const fdm_kview *gv) {
  int64_t n = fdm_kview_numel(gxv);
  const float *x = xv->data, *y = yv->data, *g = gv->data;
  float *gx = gxv->data;
#define U(E) _Pragma("omp parallel for schedule(static) if(n > CPU_PAR_MIN)") \
  for (int64_t k = 0; k < n; k++) { float v = x[k], o = y[k], d = g[k]; (void)v; (void)o; (void)d; gx[k] = (E); } break;
  switch (op) {
    case FDM_NEG: U(-d) case FDM_ABS: U(d * (float)((v > 0) - (v < 0)))
    case FDM_SQRT: U(d * 0.5f / o) case FDM_RSQRT: U(-0.5f * d * o * o * o)
    case FDM_EXP: U(d * o) case FDM_LOG: U(d / v) case FDM_SIN: U(d * cosf(v))
    case FDM_COS: U(-d * sinf(v)) case FDM_SQUARE: U(2.0f * v * d) case FDM_SIGN: U(0.0f)
    case FDM_RELU: U(v > 0 ? d : 0.0f) case FDM_SIGMOID: U(d * o * (1.0f - o))
    case FDM_TANH: U(d * (1.0f - o * o))
    case FDM_GELU: cpu_gelu_backward(n, x, g, gx); break;
    case FDM_GELU_TANH: {
      const float k0 = 0.7978845608028654f, k1 = 0.044715f;
      U(({ float in = k0 * (v + k1 * v * v * v), th = tanhf(in);
           d * (0.5f * (1.0f + th) + 0.5f * v * (1.0f - th * th) * k0 * (1.0f + 3.0f * k1 * v * v)); }))
    }
    case FDM_SILU: U(({ float s = sigmoidf(v); d * (s + v * s * (1.0f - s)); }))
    case FDM_RECIPROCAL: U(-d * o * o)
    default: return fdm_seterror("%d: no derivative", (int)op);
  }
#undef U
  return 0;
}

int cpu_kernel_axpy(const fdm_kview *a, const fdm_kview *b, double alpha) {
  const fdm_kview *ops[2] = {a, b};
  fdm_iter it;
  iter_init(&it, 2, ops);
  float *p0 = a->data, al = (float)alpha;
  const float *p1 = b->data;
  ITER_FOR(it, { p0[o0] += al * p1[o1]; });
  return 0;
}

int cpu_kernel_clamp(const fdm_kview *out, const fdm_kview *x, double lo, double hi, int has_lo,
                     int has_hi) {
  const fdm_kview *ops[2] = {out, x};
  fdm_iter it;
  iter_init(&it, 2, ops);
  float *p0 = out->data, l = (float)lo, h = (float)hi;
  const float *p1 = x->data;
  ITER_FOR(it, {
    float v = p1[o1];
    if (has_lo && v < l) v = l;
    if (has_hi && v > h) v = h;
    p0[o0] = v;
  });
  return 0;
}

int cpu_kernel_clamp_backward(const fdm_kview *gx, const fdm_kview *x, const fdm_kview *g, double lo,
                              double hi, int has_lo, int has_hi) {
  const fdm_kview *ops[3] = {gx, x, g};
  fdm_iter it;
  iter_init(&it, 3, ops);
  float *p0 = gx->data, l = (float)lo, h = (float)hi;
  const float *p1 = x->data, *p2 = g->data;
  ITER_FOR(it, { p0[o0] = ((has_lo && p1[o1] < l) || (has_hi && p1[o1] > h)) ? 0.0f : p2[o2]; });
  return 0;
}

int cpu_kernel_where(const fdm_kview *out, const fdm_kview *cond, const fdm_kview *a, const fdm_kview *b) {
  const fdm_kview *ops[4] = {out, cond, a, b};
  fdm_iter it;
  iter_init(&it, 4, ops);
  const uint8_t *pc = cond->data;
  if (out->dtype == FDM_FLOAT32) {
    float *po = out->data; const float *pa = a->data, *pb = b->data;
    ITER_FOR(it, { po[o0] = pc[o1] ? pa[o2] : pb[o3]; });
  } else {
    int64_t *po = out->data; const int64_t *pa = a->data, *pb = b->data;
    ITER_FOR(it, { po[o0] = pc[o1] ? pa[o2] : pb[o3]; });
  }
  return 0;
}
