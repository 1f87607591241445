/*
** philox.h: Philox4x32-10 (Salmon et al., SC'11), the counter-based generator
** behind every random draw, its uniform transforms and the normal transform.
** Header-only and free of libm's transcendental functions, so each device's
** kernels compile the same code and give the same bits for (seed, counter).
*/
#ifndef FDM_PHILOX_H
#define FDM_PHILOX_H
#include <stdint.h>

#ifdef __CUDACC__
#define FDM_HOSTDEV __host__ __device__
#else
#define FDM_HOSTDEV
#endif

typedef struct { uint32_t v[4]; } fdm_u32x4;

static inline FDM_HOSTDEV fdm_u32x4 fdm_philox(uint64_t counter, uint64_t seed) {
  uint32_t c0 = (uint32_t)counter, c1 = (uint32_t)(counter >> 32), c2 = 0, c3 = 0;
  uint32_t k0 = (uint32_t)seed, k1 = (uint32_t)(seed >> 32);
  for (int r = 0; r < 10; r++) {
    uint64_t p0 = (uint64_t)0xD2511F53u * c0, p1 = (uint64_t)0xCD9E8D57u * c2;
    uint32_t n0 = (uint32_t)(p1 >> 32) ^ c1 ^ k0, n2 = (uint32_t)(p0 >> 32) ^ c3 ^ k1;
    c0 = n0; c1 = (uint32_t)p1; c2 = n2; c3 = (uint32_t)p0;
    k0 += 0x9E3779B9u; k1 += 0xBB67AE85u;
  }
  fdm_u32x4 r = {{c0, c1, c2, c3}};
  return r;
}

/* [0, 1) and (0, 1] with 24 random bits */
static inline FDM_HOSTDEV float fdm_u01(uint32_t x) { return (float)(x >> 8) * (1.0f / 16777216.0f); }
static inline FDM_HOSTDEV float fdm_u01_open(uint32_t x) {
  return ((float)(x >> 8) + 1.0f) * (1.0f / 16777216.0f);
}

/*
** The uniform -> normal transform (Box-Muller), shared by every device so a
** seed gives the same normal draws everywhere. libm's logf/sinf/cosf differ
** between glibc and CUDA, so the transform has its own log and sin/cos
** (polynomials accurate to a few float ulps, far below what sampling can
** see) built only from operations IEEE rounds identically on both: +, -, *,
** /, sqrt and fmaf. Every product that feeds a sum is an explicit fmaf, so no
** compiler contraction (GCC's -ffp-contract=fast, nvcc's --fmad) finds a
** mul+add pair left to fuse; the device side uses the _rn intrinsics, which
** are never contracted. (tests/rng_spec.lua checks the moments and the
** normality of 10^6 draws.)
*/
#ifdef __CUDA_ARCH__
#define FDM_FMUL(a, b) __fmul_rn(a, b)
#define FDM_FADD(a, b) __fadd_rn(a, b)
#define FDM_FDIV(a, b) __fdiv_rn(a, b)
#define FDM_FSQRT(a) __fsqrt_rn(a)
#define FDM_FMA(a, b, c) __fmaf_rn(a, b, c)
#else
#include <math.h>
#define FDM_FMUL(a, b) ((a) * (b))
#define FDM_FADD(a, b) ((a) + (b))
#define FDM_FDIV(a, b) ((a) / (b))
#define FDM_FSQRT(a) sqrtf(a)
#define FDM_FMA(a, b, c) fmaf(a, b, c)
#endif

static inline FDM_HOSTDEV uint32_t fdm_f2u(float f) { union { float f; uint32_t u; } c; c.f = f; return c.u; }
static inline FDM_HOSTDEV float fdm_u2f(uint32_t u) { union { float f; uint32_t u; } c; c.u = u; return c.f; }

/* ln(u) for a normal positive float u: u = m 2^e with m in [sqrt(1/2),
** sqrt(2)), ln(m) = 2 atanh(s) with s = (m - 1) / (m + 1), |s| < 0.172 */
static inline FDM_HOSTDEV float fdm_philox_log(float u) {
  uint32_t b = fdm_f2u(u);
  int e = (int)((b >> 23) & 0xff) - 127;
  float m = fdm_u2f((b & 0x007fffffu) | 0x3f800000u);   /* [1, 2) */
  if (m > 1.41421356f) { m = FDM_FMUL(m, 0.5f); e += 1; }
  float f = FDM_FADD(m, -1.0f);                          /* exact */
  float s = FDM_FDIV(f, FDM_FADD(f, 2.0f));
  float z = FDM_FMUL(s, s);
  float p = 1.333333333e-01f;
  p = FDM_FMA(p, z, 1.538461538e-01f); p = FDM_FMA(p, z, 1.818181818e-01f); p = FDM_FMA(p, z, 2.222222222e-01f);
  p = FDM_FMA(p, z, 2.857142857e-01f); p = FDM_FMA(p, z, 4.000000000e-01f); p = FDM_FMA(p, z, 6.666666667e-01f);
  float l = FDM_FMA(s, FDM_FMUL(z, p), FDM_FMUL(s, 2.0f));   /* 2s + 2s^3/3 + 2s^5/5 ... */
  return FDM_FMA((float)e, 6.931471806e-01f, l);
}

/* sin and cos of (pi/2) r for r in [0, 1/2] (Taylor, error < 1e-9) */
static inline FDM_HOSTDEV void fdm_philox_sincos_q(float r, float *sn, float *cs) {
  float z = FDM_FMUL(r, r);
  float ps = 5.692172922e-08f;
  ps = FDM_FMA(ps, z, -3.598843235e-06f); ps = FDM_FMA(ps, z, 1.604411848e-04f); ps = FDM_FMA(ps, z, -4.681754135e-03f);
  ps = FDM_FMA(ps, z, 7.969262625e-02f); ps = FDM_FMA(ps, z, -6.459640975e-01f); ps = FDM_FMA(ps, z, 1.570796327e+00f);
  float pc = -6.386603084e-09f;
  pc = FDM_FMA(pc, z, 4.710874779e-07f); pc = FDM_FMA(pc, z, -2.520204237e-05f); pc = FDM_FMA(pc, z, 9.192602748e-04f);
  pc = FDM_FMA(pc, z, -2.086348076e-02f); pc = FDM_FMA(pc, z, 2.536695079e-01f); pc = FDM_FMA(pc, z, -1.233700550e+00f);
  pc = FDM_FMA(pc, z, 1.0f);
  *sn = FDM_FMUL(r, ps);
  *cs = pc;
}

/* sin and cos of 2 pi t for t in [0, 1): the quadrant from 4t (exact), the
** rest folded into [0, 1/2] of a quarter turn (exact) */
static inline FDM_HOSTDEV void fdm_philox_sincos_turn(float t, float *sn, float *cs) {
  float t4 = FDM_FMUL(t, 4.0f);
  int q = (int)t4;
  float r = FDM_FADD(t4, -(float)q);
  float s, c;
  if (r > 0.5f) fdm_philox_sincos_q(FDM_FADD(1.0f, -r), &c, &s);
  else fdm_philox_sincos_q(r, &s, &c);
  switch (q & 3) {
    case 0: *sn = s; *cs = c; break;
    case 1: *sn = c; *cs = -s; break;
    case 2: *sn = -s; *cs = -c; break;
    default: *sn = -c; *cs = s; break;
  }
}

/* two standard normal draws from two random words (Box-Muller): radius
** sqrt(-2 ln u1), u1 in (0, 1]; angle 2 pi u2, u2 in [0, 1) */
static inline FDM_HOSTDEV void fdm_philox_normal2(uint32_t w1, uint32_t w2, float *a, float *b) {
  float rad = FDM_FSQRT(FDM_FMUL(-2.0f, fdm_philox_log(fdm_u01_open(w1))));
  float sn, cs;
  fdm_philox_sincos_turn(fdm_u01(w2), &sn, &cs);
  *a = FDM_FMUL(rad, cs);
  *b = FDM_FMUL(rad, sn);
}

/* the four normal draws of one Philox block: (0, 1) from words 0 and 1,
** (2, 3) from words 2 and 3 */
static inline FDM_HOSTDEV void fdm_philox_normal4(fdm_u32x4 r, float out[4]) {
  fdm_philox_normal2(r.v[0], r.v[1], &out[0], &out[1]);
  fdm_philox_normal2(r.v[2], r.v[3], &out[2], &out[3]);
}
#endif
