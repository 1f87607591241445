/* libFuzzer target: PNG decoding from memory (libpng with our transforms). */
#include <stdlib.h>
#include <string.h>
#include "fdm_io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
  fdm_image im;
  if (fdm_png_decode(data, n, (size_t)1 << 22, &im) == 0) {
    if (im.c != 1 && im.c != 3 && im.c != 4) abort();
    volatile unsigned sum = 0;
    for (size_t i = 0; i < (size_t)im.w * im.h * im.c; i++) sum += im.px[i];
    /* and back: the encoder must accept what the decoder produced */
    fdm_membuf b = {0};
    if (im.w * im.h < 4096 && fdm_png_encode(&im, &b) != 0) abort();
    fdm_membuf_free(&b);
    fdm_image_free(&im);
  }
  return 0;
}
