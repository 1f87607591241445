/* libFuzzer target: JPEG decoding from memory (libjpeg with our error and
** warning handlers: every failure must come back as -1, never exit()). */
#include <stdlib.h>
#include <string.h>
#include "fdm_io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
  fdm_image im;
  if (fdm_jpeg_decode(data, n, (size_t)1 << 22, &im) == 0) {
    if (im.c != 1 && im.c != 3) abort();
    volatile unsigned sum = 0;
    for (size_t i = 0; i < (size_t)im.w * im.h * im.c; i++) sum += im.px[i];
    fdm_image_free(&im);
  }
  /* the magic-byte sniffing read_image uses */
  volatile int k = fdm_image_kind(data, n);
  (void)k;
  return 0;
}
