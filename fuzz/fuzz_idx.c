/* libFuzzer target: IDX parsing (plain, or gzip'ed when the input starts
** with the gzip magic), with the real decompression limit: fdm_gunzip_idx
** stops at the size the header declares, so no cap of its own is needed. */
#include <stdlib.h>
#include "fdm_io.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t n) {
  uint8_t *buf = NULL;
  size_t len = n;
  const uint8_t *p = data;
  if (n >= 2 && data[0] == 0x1f && data[1] == 0x8b) {
    if (fdm_gunzip_idx(data, n, (size_t)1 << 36, &buf, &len) != 0) return 0;
    p = buf;
  }
  fdm_idx_info info;
  if (fdm_idx_parse(p, len, &info) == 0) {
    size_t es = fdm_idx_target(info.type) == FDM_UINT8 ? 1 : fdm_idx_target(info.type) == FDM_FLOAT32 ? 4 : 8;
    void *dst = malloc((size_t)info.numel * es + 1);
    fdm_idx_convert(&info, p, dst);
    free(dst);
  }
  free(buf);
  return 0;
}
