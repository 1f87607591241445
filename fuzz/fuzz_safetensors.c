/* libFuzzer target: safetensors parsing and conversion of every tensor. */
#include <stdlib.h>
#include <string.h>
#include "fdm_io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
  fdm_st_file f;
  if (fdm_st_parse(data, n, &f) != 0) return 0;
  static const size_t tsize[FDM_NDTYPE] = {4, 2, 2, 8, 1, 1};
  for (int i = 0; i < f.n; i++) {
    const fdm_st_entry *e = &f.e[i];
    /* validated: e->end <= data_len <= n, so numel is bounded by the input */
    size_t numel = (size_t)fdm_st_numel(e);
    if (e->begin > f.data_len || e->end > f.data_len) abort();
    if (numel * fdm_st_dtype_size(e->dtype) != e->end - e->begin) abort();
    void *dst = malloc(numel * tsize[fdm_st_target(e->dtype)] + 1);
    fdm_st_convert(&f, e, dst);
    free(dst);
  }
  fdm_st_free(&f);
  return 0;
}
