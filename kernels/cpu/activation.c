/*
** activation.c: exact (erf) GELU and its derivative.
** gelu(x) = x Phi(x), Phi(x) = 0.5 (1 + erf(x/sqrt2)); gelu'(x) = Phi(x) + x phi(x),
** phi(x) = exp(-x^2/2)/sqrt(2 pi).
** libm's erff/expf are scalar calls (~15 ns each) and dominate these memory-bound
** loops, so Phi and phi use branch-free inline approximations that GCC
** vectorises: an exp with ~1 ulp error and the Numerical Recipes erfc (relative
** error < 1.2e-7 for z >= 0, so the tail Phi(x << 0) keeps relative precision
** rather than cancelling in 1 + erf as PyTorch's float kernel does).
*/
/* Under the default -ftrapping-math GCC will not if-convert the selects below
** (it turns them into branches), so these loops would stay scalar. No code
** here relies on floating-point traps. */
#if defined(__GNUC__) && !defined(__clang__)
#pragma GCC optimize("no-trapping-math")
#endif
#include <math.h>
#include <string.h>
#include "cpu_nn.h"

#define PAR_MIN 32768
#define INV_SQRT_2PI 0.3989422804014327f

/* exp(a) for a <= 0 (Cephes expf polynomial), flushed to 0 below ~-87.7
** (where 2^n would be subnormal: n = -127 gives the bit pattern of +0) */
static inline float cpu_exp_neg(float a) {
  float c = a < -88.0f ? -88.0f : a;
  float n = floorf(c * 1.44269504088896341f + 0.5f);
  float r = c - n * 0.693359375f + n * 2.12194440e-4f; /* c - n ln2, ln2 split hi/lo */
  float p = 1.9875691500e-4f;
  p = p * r + 1.3981999507e-3f;
  p = p * r + 8.3334519073e-3f;
  p = p * r + 4.1665795894e-2f;
  p = p * r + 1.6666665459e-1f;
  p = p * r + 5.0000001201e-1f;
  p = p * r * r + r + 1.0f;
  uint32_t bits = ((uint32_t)(int32_t)n + 127u) << 23;
  float s;
  memcpy(&s, &bits, sizeof s);
  return p * s;
}

/* Phi(x), and phi(x) in *pdf when wanted. With z = |x|/sqrt2,
** 0.5 erfc(z) = 0.5 t exp(-z^2 + P(t)), t = 1/(1 + z/2) (Numerical Recipes erfcc). */
static inline float cpu_normal_cdf(float x, float *pdf) {
  float z = fabsf(x) * (float)M_SQRT1_2, z2 = z * z;
  float t = 1.0f / (1.0f + 0.5f * z);
  float p = 0.17087277f;
  p = p * t - 0.82215223f;
  p = p * t + 1.48851587f;
  p = p * t - 1.13520398f;
  p = p * t + 0.27886807f;
  p = p * t - 0.18628806f;
  p = p * t + 0.09678418f;
  p = p * t + 0.37409196f;
  p = p * t + 1.00002368f;
  p = p * t - 1.26551223f;
  float q = 0.5f * t * cpu_exp_neg(p - z2); /* Phi(-|x|) */
  if (pdf) *pdf = INV_SQRT_2PI * cpu_exp_neg(-z2);
  return x < 0.0f ? q : 1.0f - q;
}

static void cpu_gelu_span(int64_t n, const float *x, float *y) {
#pragma omp simd
  for (int64_t i = 0; i < n; i++) y[i] = x[i] * cpu_normal_cdf(x[i], NULL);
}

static void cpu_gelu_grad_span(int64_t n, const float *x, const float *gy, float *gx) {
#pragma omp simd
  for (int64_t i = 0; i < n; i++) {
    float pdf, cdf = cpu_normal_cdf(x[i], &pdf);
    gx[i] = gy[i] * (cdf + x[i] * pdf);
  }
}

/* Small n runs inline without entering an OpenMP region at all: an if(false)
** parallel region still builds a team, which costs far more than the loop when
** called per row from inside another parallel region (batch_norm_gelu). */
void cpu_gelu_forward(int64_t n, const float *x, float *y) {
  if (n < PAR_MIN) {
    cpu_gelu_span(n, x, y);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i += PAR_MIN / 4)
    cpu_gelu_span(n - i < PAR_MIN / 4 ? n - i : PAR_MIN / 4, x + i, y + i);
}

void cpu_gelu_backward(int64_t n, const float *x, const float *gy, float *gx) {
  if (n < PAR_MIN) {
    cpu_gelu_grad_span(n, x, gy, gx);
    return;
  }
#pragma omp parallel for schedule(static)
  for (int64_t i = 0; i < n; i += PAR_MIN / 4)
    cpu_gelu_grad_span(n - i < PAR_MIN / 4 ? n - i : PAR_MIN / 4, x + i, gy + i, gx + i);
}
