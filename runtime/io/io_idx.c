/*
** io_idx.c: the IDX format of MNIST (big-endian):
**   0x00 0x00 <type> <ndim>, ndim x uint32 dims, the data.
** type 0x08 uint8, 0x09 int8, 0x0B int16, 0x0C int32, 0x0D float32, 0x0E float64.
** Gzip'ed files (.gz, recognised by their magic) are inflated in memory.
*/
#include <stdlib.h>
#include <string.h>
#include <zlib.h>
#include "fdm_io.h"

static int idx_size(int type) {
  switch (type) {
  case 0x08: case 0x09: return 1;
  case 0x0B: return 2;
  case 0x0C: case 0x0D: return 4;
  case 0x0E: return 8;
  default: return 0;
  }
}

fdm_dtype fdm_idx_target(int type) {
  switch (type) {
  case 0x08: return FDM_UINT8;
  case 0x0D: case 0x0E: return FDM_FLOAT32;
  default: return FDM_INT64;
  }
}

static uint32_t be32(const uint8_t *p) {
  return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3];
}

int fdm_idx_parse(const uint8_t *buf, size_t n, fdm_idx_info *out) {
  memset(out, 0, sizeof *out);
  if (n < 4) return fdm_seterror("truncated file (%zu bytes)", n);
  if (buf[0] != 0 || buf[1] != 0) return fdm_seterror("not an IDX file (bad magic)");
  int type = buf[2], ndim = buf[3];
  int es = idx_size(type);
  if (!es) return fdm_seterror("unknown IDX data type 0x%02x", type);
  if (ndim < 1 || ndim > FDM_MAXDIM)
    return fdm_seterror("IDX file with %d dimensions (1 to %d supported)", ndim, FDM_MAXDIM);
  size_t hdr = 4 + 4 * (size_t)ndim;
  if (n < hdr) return fdm_seterror("truncated header (%zu bytes, need %zu)", n, hdr);
  uint64_t numel = 1;
  for (int i = 0; i < ndim; i++) {
    uint32_t d = be32(buf + 4 + 4 * i);
    out->shape[i] = d;
    if (d && numel > (UINT64_MAX >> 4) / d) return fdm_seterror("IDX dimensions too large");
    numel *= d;
  }
  uint64_t need = numel * (uint64_t)es;
  if (need != (uint64_t)(n - hdr))
    return fdm_seterror("%s: dimensions need %llu data bytes, file has %zu",
                        need > n - hdr ? "truncated file" : "trailing data",
                        (unsigned long long)need, n - hdr);
  out->type = type;
  out->ndim = ndim;
  out->numel = (int64_t)numel;
  out->data_off = hdr;
  return 0;
}

void fdm_idx_convert(const fdm_idx_info *info, const uint8_t *buf, void *dst) {
  const uint8_t *s = buf + info->data_off;
  size_t n = (size_t)info->numel;
  int64_t *io = dst;
  float *fo = dst;
  switch (info->type) {
  case 0x08: if (n) memcpy(dst, s, n); break;
  case 0x09: for (size_t i = 0; i < n; i++) io[i] = (int8_t)s[i]; break;
  case 0x0B:
    for (size_t i = 0; i < n; i++) io[i] = (int16_t)(uint16_t)(s[2 * i] << 8 | s[2 * i + 1]);
    break;
  case 0x0C: for (size_t i = 0; i < n; i++) io[i] = (int32_t)be32(s + 4 * i); break;
  case 0x0D:
    for (size_t i = 0; i < n; i++) { uint32_t u = be32(s + 4 * i); memcpy(&fo[i], &u, 4); }
    break;
  case 0x0E:
    for (size_t i = 0; i < n; i++) {
      uint64_t u = (uint64_t)be32(s + 8 * i) << 32 | be32(s + 8 * i + 4);
      double d; memcpy(&d, &u, 8); fo[i] = (float)d;
    }
    break;
  }
}

/* IDX mode of the inflater: the total size the header at buf declares.
** Returns 1 and *total when known, 0 when more bytes are needed, -1 with the
** error set when the header is bad. */
static int idx_declared(const uint8_t *buf, size_t len, uint64_t *total) {
  if (len < 4) return 0;
  if (buf[0] != 0 || buf[1] != 0) return fdm_seterror("not an IDX file (bad magic)");
  int es = idx_size(buf[2]), ndim = buf[3];
  if (!es) return fdm_seterror("unknown IDX data type 0x%02x", buf[2]);
  if (ndim < 1 || ndim > FDM_MAXDIM)
    return fdm_seterror("IDX file with %d dimensions (1 to %d supported)", ndim, FDM_MAXDIM);
  size_t hdr = 4 + 4 * (size_t)ndim;
  if (len < hdr) return 0;
  uint64_t numel = 1;
  for (int i = 0; i < ndim; i++) {
    uint32_t d = be32(buf + 4 + 4 * i);
    if (d && numel > (UINT64_MAX >> 4) / d) return fdm_seterror("IDX dimensions too large");
    numel *= d;
  }
  *total = hdr + numel * (uint64_t)es;
  return 1;
}

/* Inflates gzip data (one or more members) into a buffer that grows as the
** output does, never past max_out. With idx set, the output is an IDX file:
** as soon as its header is out, the limit becomes the size it declares, and
** the first byte beyond that is an error, so a small file claiming a small
** array cannot make us inflate (or allocate) more than that. */
static int gunzip_impl(const uint8_t *in, size_t n, size_t max_out, int idx, uint8_t **out, size_t *outn) {
  *out = NULL; *outn = 0;
  z_stream zs;
  memset(&zs, 0, sizeof zs);
  if (inflateInit2(&zs, 16 + MAX_WBITS) != Z_OK) return fdm_seterror("zlib init failed");
  uint64_t declared = 0;
  int known = !idx;     /* the limit is final */
  /* one byte of slack past the limit, so a stream of exactly the limit can
  ** finish and one byte more is seen */
  size_t limit = max_out, cap = 0, len = 0;
  uint8_t *buf = NULL;
  const uint8_t *p = in;
  size_t left = n;
  int ended = 0, rc = -1;
  for (;;) {
    size_t lim = limit < SIZE_MAX ? limit + 1 : limit;
    /* while the IDX header is not out, inflate only up to its end */
    size_t want = lim;
    if (!known) want = len < 4 ? 4 : 4 + 4 * (size_t)(buf ? buf[3] : 0);
    if (want > lim) want = lim;
    if (len == want && want == lim) {
      if (known && idx)
        fdm_seterror("trailing data: the IDX header declares %llu bytes, the gzip data holds more",
                     (unsigned long long)declared);
      else fdm_seterror("gzip data inflates to more than %zu bytes", max_out);
      goto done;
    }
    if (len == cap) {   /* full: grow geometrically with the output, at most to the limit */
      size_t nc = cap ? (cap > lim / 2 ? lim : cap * 2) : 65536;
      if (nc > lim) nc = lim;
      uint8_t *nb = realloc(buf, nc ? nc : 1);
      if (!nb) { fdm_seterror("out of memory (%zu bytes)", nc); goto done; }
      buf = nb; cap = nc;
    }
    size_t room = (want < cap ? want : cap) - len;
    zs.next_in = (Bytef *)p;
    zs.avail_in = left > (1u << 30) ? (1u << 30) : (uInt)left;
    size_t before = zs.avail_in;
    zs.next_out = buf + len;
    zs.avail_out = room > (1u << 30) ? (1u << 30) : (uInt)room;
    size_t avail_before = zs.avail_out;
    int r = inflate(&zs, Z_NO_FLUSH);
    len += avail_before - zs.avail_out;
    p += before - zs.avail_in;
    left -= before - zs.avail_in;
    if (!known) {
      int k = idx_declared(buf, len, &declared);
      if (k < 0) goto done;
      if (k > 0) {
        known = 1;
        if (declared > (uint64_t)max_out) {
          fdm_seterror("the IDX header declares %llu bytes, more than the limit of %zu",
                       (unsigned long long)declared, max_out);
          goto done;
        }
        limit = (size_t)declared;
        if (len > limit) {
          fdm_seterror("trailing data: the IDX header declares %llu bytes, the gzip data holds more",
                       (unsigned long long)declared);
          goto done;
        }
      }
    }
    if (r == Z_STREAM_END) {
      ended = 1;
      if (left == 0) break;
      /* another member, or garbage (some tools pad with zeros) */
      if (left >= 2 && p[0] == 0x1f && p[1] == 0x8b) { inflateReset(&zs); ended = 0; continue; }
      fdm_seterror("trailing garbage after the gzip data");
      goto done;
    }
    if (r != Z_OK && r != Z_BUF_ERROR) {
      const char *m = zs.msg ? zs.msg : r == Z_MEM_ERROR ? "out of memory" : "bad data";
      fdm_seterror("corrupt gzip data: %s", m);
      goto done;
    }
    /* no progress with room left: the input is used up, the stream cut short */
    if (before == zs.avail_in && avail_before == zs.avail_out && zs.avail_out != 0) break;
  }
  if (!ended) { fdm_seterror("truncated gzip data"); goto done; }
  if (len > limit) { fdm_seterror("gzip data inflates to more than %zu bytes", limit); goto done; }
  *out = buf; *outn = len; buf = NULL;
  rc = 0;
done:
  free(buf);
  inflateEnd(&zs);
  return rc;
}

int fdm_gunzip(const uint8_t *in, size_t n, size_t max_out, uint8_t **out, size_t *outn) {
  return gunzip_impl(in, n, max_out, 0, out, outn);
}

int fdm_gunzip_idx(const uint8_t *in, size_t n, size_t max_out, uint8_t **out, size_t *outn) {
  return gunzip_impl(in, n, max_out, 1, out, outn);
}

int fdm_read_maybe_gz(const char *path, size_t max, uint8_t **buf, size_t *n) {
  uint8_t *raw; size_t rn;
  if (fdm_read_file(path, max, &raw, &rn) != 0) return -1;
  if (rn >= 2 && raw[0] == 0x1f && raw[1] == 0x8b) {
    int r = fdm_gunzip(raw, rn, max, buf, n);
    free(raw);
    return r;
  }
  *buf = raw; *n = rn;
  return 0;
}

int fdm_idx_read(const char *path, size_t max, uint8_t **buf, size_t *n) {
  uint8_t *raw; size_t rn;
  if (fdm_read_file(path, max, &raw, &rn) != 0) return -1;
  if (rn >= 2 && raw[0] == 0x1f && raw[1] == 0x8b) {
    int r = fdm_gunzip_idx(raw, rn, max, buf, n);
    free(raw);
    return r;
  }
  *buf = raw; *n = rn;
  return 0;
}
