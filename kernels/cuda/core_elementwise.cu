/* core_elementwise.cu: binary arithmetic and comparisons over broadcast
** views, unary functions and their derivatives, axpy, clamp, where; the
** semantics of kernels/cpu/elementwise.c (NaN through maximum/minimum and
** relu, wrapping int64 arithmetic). */
#include "cuda_iter.cuh"

static __device__ __forceinline__ int64_t wadd(int64_t x, int64_t y) { return (int64_t)((uint64_t)x + (uint64_t)y); }
static __device__ __forceinline__ int64_t wsub(int64_t x, int64_t y) { return (int64_t)((uint64_t)x - (uint64_t)y); }
static __device__ __forceinline__ int64_t wmul(int64_t x, int64_t y) { return (int64_t)((uint64_t)x * (uint64_t)y); }
static __device__ __forceinline__ int64_t wneg(int64_t x) { return (int64_t)(0 - (uint64_t)x); }
static __device__ int64_t ipow(int64_t x, int64_t y) {
  if (y < 0) return x == 1 ? 1 : x == -1 ? (y & 1 ? -1 : 1) : 0;
  int64_t r = 1;
  while (y) { if (y & 1) r = wmul(r, x); x = wmul(x, x); y >>= 1; }
  return r;
}

template <typename T> static __device__ __forceinline__ uint8_t compare(fdm_binop op, T x, T y) {
  switch (op) {
    case FDM_EQ: return x == y; case FDM_NE: return x != y;
    case FDM_LT: return x < y; case FDM_LE: return x <= y;
    case FDM_GT: return x > y; case FDM_GE: return x >= y;
    case FDM_AND: return x != 0 && y != 0; case FDM_OR: return x != 0 || y != 0;
    default: return 0;
  }
}

static __device__ __forceinline__ float fbin(fdm_binop op, float x, float y) {
  switch (op) {
    case FDM_ADD: return x + y; case FDM_SUB: return x - y;
    case FDM_MUL: return x * y; case FDM_DIV: return x / y;
    case FDM_POW: return powf(x, y);
    case FDM_MAXIMUM: return (x > y || x != x) ? x : y;
    case FDM_MINIMUM: return (x < y || x != x) ? x : y;
    default: return 0.0f;
  }
}
static __device__ __forceinline__ int64_t ibin(fdm_binop op, int64_t x, int64_t y) {
  switch (op) {
    case FDM_ADD: return wadd(x, y); case FDM_SUB: return wsub(x, y); case FDM_MUL: return wmul(x, y);
    case FDM_POW: return ipow(x, y);
    case FDM_MAXIMUM: return x > y ? x : y; case FDM_MINIMUM: return x < y ? x : y;
    default: return 0;
  }
}

extern "C" int cuda_kernel_binary(fdm_binop op, const fdm_kview *out, const fdm_kview *a, const fdm_kview *b) {
  const fdm_kview *ops[3] = {out, a, b};
  void *p0 = out->data;
  const void *p1 = a->data, *p2 = b->data;
  int cmp = op >= FDM_EQ;
  if (a->dtype == FDM_FLOAT32) {
    if (cmp)
      return cuda_iter_run<3>("binary", ops, [=] __device__(const int64_t *o) {
        ((uint8_t *)p0)[o[0]] = compare<float>(op, ((const float *)p1)[o[1]], ((const float *)p2)[o[2]]); });
    switch (op) {   /* the common ones without the switch inside the loop */
      case FDM_ADD: return cuda_iter_run<3>("add", ops, [=] __device__(const int64_t *o) {
          ((float *)p0)[o[0]] = ((const float *)p1)[o[1]] + ((const float *)p2)[o[2]]; });
      case FDM_MUL: return cuda_iter_run<3>("mul", ops, [=] __device__(const int64_t *o) {
          ((float *)p0)[o[0]] = ((const float *)p1)[o[1]] * ((const float *)p2)[o[2]]; });
      default: return cuda_iter_run<3>("binary", ops, [=] __device__(const int64_t *o) {
          ((float *)p0)[o[0]] = fbin(op, ((const float *)p1)[o[1]], ((const float *)p2)[o[2]]); });
    }
  }
  if (cmp)
    return cuda_iter_run<3>("binary", ops, [=] __device__(const int64_t *o) {
      ((uint8_t *)p0)[o[0]] = compare<int64_t>(op, ((const int64_t *)p1)[o[1]], ((const int64_t *)p2)[o[2]]); });
  if (op == FDM_DIV) return fdm_cuda_seterror("%d: not an int64 operation", (int)op);
  return cuda_iter_run<3>("binary", ops, [=] __device__(const int64_t *o) {
    ((int64_t *)p0)[o[0]] = ibin(op, ((const int64_t *)p1)[o[1]], ((const int64_t *)p2)[o[2]]); });
}

#define K_SQRT1_2 0.70710678118654752440f
#define K_INV_SQRT_2PI 0.3989422804014327f
static __device__ __forceinline__ float sigmoidf_(float x) { return 1.0f / (1.0f + expf(-x)); }

static __device__ __forceinline__ float funary(fdm_unop op, float v) {
  switch (op) {
    case FDM_NEG: return -v; case FDM_ABS: return fabsf(v); case FDM_SQRT: return sqrtf(v);
    case FDM_RSQRT: return 1.0f / sqrtf(v); case FDM_EXP: return expf(v); case FDM_LOG: return logf(v);
    case FDM_SIN: return sinf(v); case FDM_COS: return cosf(v); case FDM_SQUARE: return v * v;
    case FDM_SIGN: return (float)((v > 0) - (v < 0));
    case FDM_RELU: return v < 0 ? 0.0f : v;
    case FDM_SIGMOID: return sigmoidf_(v); case FDM_TANH: return tanhf(v);
    case FDM_GELU: return 0.5f * v * erfcf(v * -K_SQRT1_2);
    case FDM_GELU_TANH: return 0.5f * v * (1.0f + tanhf(0.7978845608028654f * (v + 0.044715f * v * v * v)));
    case FDM_SILU: return v * sigmoidf_(v);
    case FDM_RECIPROCAL: return 1.0f / v;
    default: return 0.0f;
  }
}

static __device__ __forceinline__ int64_t iunary(fdm_unop op, int64_t v) {
  switch (op) {
    case FDM_NEG: return wneg(v); case FDM_ABS: return v < 0 ? wneg(v) : v;
    case FDM_SIGN: return (v > 0) - (v < 0); case FDM_RELU: return v > 0 ? v : 0;
    case FDM_SQUARE: return wmul(v, v);
    default: return 0;
  }
}

/* out and x contiguous, one shape */
extern "C" int cuda_kernel_unary(fdm_unop op, const fdm_kview *out, const fdm_kview *xv) {
  int64_t n = fdm_kview_numel(out);
  if (n == 0) return 0;
  const fdm_kview *ops[2] = {out, xv};
  void *py = out->data;
  const void *px = xv->data;
  if (xv->dtype == FDM_INT64) {
    if (!(op == FDM_NEG || op == FDM_ABS || op == FDM_SIGN || op == FDM_RELU || op == FDM_SQUARE))
      return fdm_cuda_seterror("%d: not an int64 operation", (int)op);
    return cuda_iter_run<2>("unary", ops, [=] __device__(const int64_t *o) {
      ((int64_t *)py)[o[0]] = iunary(op, ((const int64_t *)px)[o[1]]); });
  }
  if (op == FDM_NOT || op >= FDM_NUNOP) return fdm_cuda_seterror("%d: not a float unary operation", (int)op);
  return cuda_iter_run<2>("unary", ops, [=] __device__(const int64_t *o) {
    ((float *)py)[o[0]] = funary(op, ((const float *)px)[o[1]]); });
}

static __device__ __forceinline__ float dunary(fdm_unop op, float v, float o, float d) {
  switch (op) {
    case FDM_NEG: return -d;
    case FDM_ABS: return d * (float)((v > 0) - (v < 0));
    case FDM_SQRT: return d * 0.5f / o;
    case FDM_RSQRT: return -0.5f * d * o * o * o;
    case FDM_EXP: return d * o;
    case FDM_LOG: return d / v;
    case FDM_SIN: return d * cosf(v);
    case FDM_COS: return -d * sinf(v);
    case FDM_SQUARE: return 2.0f * v * d;
    case FDM_SIGN: return 0.0f;
    case FDM_RELU: return v > 0 ? d : 0.0f;
    case FDM_SIGMOID: return d * o * (1.0f - o);
    case FDM_TANH: return d * (1.0f - o * o);
    case FDM_GELU: {
      float cdf = 0.5f * erfcf(v * -K_SQRT1_2), pdf = K_INV_SQRT_2PI * expf(-0.5f * v * v);
      return d * (cdf + v * pdf);
    }
    case FDM_GELU_TANH: {
      const float k0 = 0.7978845608028654f, k1 = 0.044715f;
      float in = k0 * (v + k1 * v * v * v), th = tanhf(in);
      return d * (0.5f * (1.0f + th) + 0.5f * v * (1.0f - th * th) * k0 * (1.0f + 3.0f * k1 * v * v));
    }
    case FDM_SILU: { float s = sigmoidf_(v); return d * (s + v * s * (1.0f - s)); }
    case FDM_RECIPROCAL: return -d * o * o;
    default: return 0.0f;
  }
}

extern "C" int cuda_kernel_unary_backward(fdm_unop op, const fdm_kview *gxv, const fdm_kview *xv,
                                          const fdm_kview *yv, const fdm_kview *gv) {
  if (op == FDM_NOT || op >= FDM_NUNOP) return fdm_cuda_seterror("%d: no derivative", (int)op);
  const fdm_kview *ops[4] = {gxv, xv, yv, gv};
  float *gx = (float *)gxv->data;
  const float *x = (const float *)xv->data, *y = (const float *)yv->data, *g = (const float *)gv->data;
  return cuda_iter_run<4>("unary backward", ops, [=] __device__(const int64_t *o) {
    gx[o[0]] = dunary(op, x[o[1]], y[o[2]], g[o[3]]); });
}

extern "C" int cuda_kernel_axpy(const fdm_kview *a, const fdm_kview *b, double alpha) {
  const fdm_kview *ops[2] = {a, b};
  float *p0 = (float *)a->data, al = (float)alpha;
  const float *p1 = (const float *)b->data;
  return cuda_iter_run<2>("axpy", ops, [=] __device__(const int64_t *o) { p0[o[0]] += al * p1[o[1]]; });
}

extern "C" int cuda_kernel_clamp(const fdm_kview *out, const fdm_kview *x, double lo, double hi, int has_lo,
                                 int has_hi) {
  const fdm_kview *ops[2] = {out, x};
  float *p0 = (float *)out->data, l = (float)lo, h = (float)hi;
  const float *p1 = (const float *)x->data;
  return cuda_iter_run<2>("clamp", ops, [=] __device__(const int64_t *o) {
    float v = p1[o[1]];
    if (has_lo && v < l) v = l;
    if (has_hi && v > h) v = h;
    p0[o[0]] = v;
  });
}

extern "C" int cuda_kernel_clamp_backward(const fdm_kview *gx, const fdm_kview *x, const fdm_kview *g, double lo,
                                          double hi, int has_lo, int has_hi) {
  const fdm_kview *ops[3] = {gx, x, g};
  float *p0 = (float *)gx->data, l = (float)lo, h = (float)hi;
  const float *p1 = (const float *)x->data, *p2 = (const float *)g->data;
  return cuda_iter_run<3>("clamp backward", ops, [=] __device__(const int64_t *o) {
    p0[o[0]] = ((has_lo && p1[o[1]] < l) || (has_hi && p1[o[1]] > h)) ? 0.0f : p2[o[2]];
  });
}

extern "C" int cuda_kernel_where(const fdm_kview *out, const fdm_kview *cond, const fdm_kview *a, const fdm_kview *b) {
  const fdm_kview *ops[4] = {out, cond, a, b};
  const uint8_t *pc = (const uint8_t *)cond->data;
  void *po = out->data;
  const void *pa = a->data, *pb = b->data;
  if (out->dtype == FDM_FLOAT32)
    return cuda_iter_run<4>("where", ops, [=] __device__(const int64_t *o) {
      ((float *)po)[o[0]] = pc[o[1]] ? ((const float *)pa)[o[2]] : ((const float *)pb)[o[3]]; });
  return cuda_iter_run<4>("where", ops, [=] __device__(const int64_t *o) {
    ((int64_t *)po)[o[0]] = pc[o[1]] ? ((const int64_t *)pa)[o[2]] : ((const int64_t *)pb)[o[3]]; });
}
