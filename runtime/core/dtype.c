/* dtype.c: element types, their names and the half-precision conversions. */
#include <string.h>
#include "fdm.h"
#ifdef __F16C__
#include <immintrin.h>
#endif

static const struct { const char *name; size_t size; } dtypes[FDM_NDTYPE] = {
  [FDM_FLOAT32] = {"float32", 4}, [FDM_FLOAT16] = {"float16", 2},
  [FDM_BFLOAT16] = {"bfloat16", 2}, [FDM_INT64] = {"int64", 8},
  [FDM_UINT8] = {"uint8", 1}, [FDM_BOOL] = {"bool", 1},
};

size_t fdm_dtype_size(fdm_dtype d) { return (unsigned)d < FDM_NDTYPE ? dtypes[d].size : 0; }
const char *fdm_dtype_name(fdm_dtype d) { return (unsigned)d < FDM_NDTYPE ? dtypes[d].name : "?"; }

int fdm_dtype_from_name(const char *name, fdm_dtype *out) {
  static const struct { const char *alias; fdm_dtype d; } aliases[] = {
    {"float", FDM_FLOAT32}, {"half", FDM_FLOAT16}, {"long", FDM_INT64}, {"byte", FDM_UINT8},
  };
  for (int i = 0; i < FDM_NDTYPE; i++)
    if (strcmp(name, dtypes[i].name) == 0) { *out = (fdm_dtype)i; return 0; }
  for (size_t i = 0; i < sizeof aliases / sizeof *aliases; i++)
    if (strcmp(name, aliases[i].alias) == 0) { *out = aliases[i].d; return 0; }
  return -1;
}

const char *fdm_device_name(fdm_device d) {
  return d == FDM_CPU ? "cpu" : d == FDM_CUDA ? "cuda" : d == FDM_FAKE ? "fake" : "?";
}

int fdm_device_from_name(const char *name, fdm_device *out) {
  if (strcmp(name, "cpu") == 0) { *out = FDM_CPU; return 0; }
  if (strcmp(name, "cuda") == 0 || strcmp(name, "cuda:0") == 0) { *out = FDM_CUDA; return 0; }
  if (strcmp(name, "fake") == 0) { *out = FDM_FAKE; return 0; }
  return -1;
}

static uint32_t f2u(float f) { uint32_t u; memcpy(&u, &f, 4); return u; }
static float u2f(uint32_t u) { float f; memcpy(&f, &u, 4); return f; }

/* IEEE half <-> float with round-to-nearest-even, as PyTorch/numpy do */
float fdm_half_to_float(uint16_t h) {
  uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff;
  if (exp == 0) {
    if (man == 0) return u2f(sign);
    float f = (float)man / 1024.0f / 16384.0f;  /* subnormal: man * 2^-24 */
    return sign ? -f : f;
  }
  if (exp == 31) return u2f(sign | 0x7f800000u | (man << 13));
  return u2f(sign | ((exp + 112) << 23) | (man << 13));
}

uint16_t fdm_float_to_half(float f) {
  uint32_t u = f2u(f), sign = (u >> 16) & 0x8000;
  uint32_t au = u & 0x7fffffffu;
  if (au >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (au > 0x7f800000u ? 0x200 : 0));
  if (au >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);      /* overflow -> inf */
  if (au < 0x38800000u) {                                       /* subnormal or zero */
    float af = u2f(au) * 16777216.0f;                           /* scale by 2^24 */
    uint32_t m = (uint32_t)af;                                  /* truncate then round */
    float rem = af - (float)m;
    if (rem > 0.5f || (rem == 0.5f && (m & 1))) m++;
    return (uint16_t)(sign | m);
  }
  uint32_t mant = au & 0x7fffff, exp = (au >> 23) - 112;
  uint32_t h = (exp << 10) | (mant >> 13);
  uint32_t rest = mant & 0x1fff;
  if (rest > 0x1000 || (rest == 0x1000 && (h & 1))) h++;
  return (uint16_t)(sign | h);
}

float fdm_bf16_to_float(uint16_t h) { return u2f((uint32_t)h << 16); }

/* half-precision weights are widened at every use (kernels/cpu/linear.c), so
** these run over billions of values: one call per value cost as much as the
** matrix product it fed (IF's 8x8 convs at batch 2) */
void fdm_half_to_float_n(const uint16_t *h, float *dst, size_t n) {
  size_t i = 0;
#ifdef __F16C__
  /* exact, as the scalar path; a signalling NaN comes back quiet */
  for (; i + 8 <= n; i += 8)
    _mm256_storeu_ps(dst + i, _mm256_cvtph_ps(_mm_loadu_si128((const __m128i *)(h + i))));
#endif
  for (; i < n; i++) dst[i] = fdm_half_to_float(h[i]);
}

void fdm_bf16_to_float_n(const uint16_t *h, float *dst, size_t n) {
  for (size_t i = 0; i < n; i++) {   /* a shift: the compiler vectorises it */
    uint32_t u = (uint32_t)h[i] << 16;
    memcpy(dst + i, &u, 4);
  }
}

uint16_t fdm_float_to_bf16(float f) {
  uint32_t u = f2u(f);
  if ((u & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((u >> 16) | 0x40);  /* quiet NaN */
  u += 0x7fff + ((u >> 16) & 1);
  return (uint16_t)(u >> 16);
}

float fdm_round_to(fdm_dtype d, float v) {
  switch (d) {
    case FDM_BFLOAT16: return fdm_bf16_to_float(fdm_float_to_bf16(v));
    case FDM_FLOAT16: return fdm_half_to_float(fdm_float_to_half(v));
    default: return v;
  }
}
