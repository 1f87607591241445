/*
** philox.h: Philox4x32-10 (Salmon et al., SC'11), the counter-based generator
** behind every random draw, and its uniform transforms. Header-only and free
** of libm, so each device's kernels compile the same code and give the same
** bits for (seed, counter).
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
#endif
