/*
** test_dtype.c: the bulk half-precision conversions (runtime/core/dtype.c)
** against the one-value ones, over every one of the 65536 bit patterns, at
** every alignment and length the vector loop and its tail can see; then
** cpu_weights_to_float (kernels/cpu/linear.c) over a buffer long enough to
** be widened by several threads. NaNs must stay NaNs (F16C quiets a
** signalling NaN); every other value must be bit for bit the same.
** Exits 1 on failure.
*/
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include "fdm.h"
#include "cpu_nn.h"

static int failures;

static int same(float a, float b) {
  if (isnan(a) || isnan(b)) return isnan(a) && isnan(b);
  return memcmp(&a, &b, sizeof a) == 0;
}

static void check(const char *what, float (*one)(uint16_t), void (*bulk)(const uint16_t *, float *, size_t),
                  const uint16_t *h, size_t n) {
  float *out = malloc((n + 1) * sizeof *out);
  out[n] = 12345.0f;   /* a guard: nothing past n is written */
  bulk(h, out, n);
  for (size_t i = 0; i < n; i++)
    if (!same(out[i], one(h[i]))) {
      if (failures++ < 10) printf("FAIL %s: 0x%04x -> %a, expected %a\n", what, h[i], out[i], one(h[i]));
    }
  if (out[n] != 12345.0f) { failures++; printf("FAIL %s: wrote past %zu values\n", what, n); }
  free(out);
}

int main(void) {
  enum { ALL = 65536 };
  uint16_t *h = malloc((ALL + 16) * sizeof *h);
  for (int i = 0; i < ALL + 16; i++) h[i] = (uint16_t)(i * 40503u);   /* every pattern, scrambled order */
  check("half, all patterns", fdm_half_to_float, fdm_half_to_float_n, h, ALL);
  check("bf16, all patterns", fdm_bf16_to_float, fdm_bf16_to_float_n, h, ALL);
  for (size_t off = 0; off < 9; off++)
    for (size_t n = 0; n < 40; n++) {
      check("half, short", fdm_half_to_float, fdm_half_to_float_n, h + off, n);
      check("bf16, short", fdm_bf16_to_float, fdm_bf16_to_float_n, h + off, n);
    }

  /* the kernels' entry point, half and bfloat16, with an offset */
  size_t n = 3 * ALL + 7;
  uint16_t *big = malloc((n + 5) * sizeof *big);
  for (size_t i = 0; i < n + 5; i++) big[i] = (uint16_t)(i * 2654435761u >> 7);
  float *dst = malloc(n * sizeof *dst);
  fdm_dtype types[2] = {FDM_FLOAT16, FDM_BFLOAT16};
  for (int t = 0; t < 2; t++) {
    fdm_kview v;
    memset(&v, 0, sizeof v);
    v.data = big;
    v.dtype = types[t];
    cpu_weights_to_float(&v, 5, (int64_t)n, dst);
    int bad = 0;
    for (size_t i = 0; i < n; i++) {
      float want = t == 0 ? fdm_half_to_float(big[5 + i]) : fdm_bf16_to_float(big[5 + i]);
      if (!same(dst[i], want)) bad++;
    }
    if (bad) { failures++; printf("FAIL cpu_weights_to_float %s: %d of %zu values differ\n", fdm_dtype_name(types[t]), bad, n); }
  }
  free(big); free(dst); free(h);
  printf("test_dtype: %s\n", failures ? "FAILED" : "all passed");
  return failures ? 1 : 0;
}
