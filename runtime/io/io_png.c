/*
** io_png.c: PNG decoding from memory and encoding to memory with libpng.
** libpng reports errors by longjmp; our error callback copies the message
** and jumps back to the setjmp in the caller, which frees what it holds.
*/
#include <png.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include "fdm_io.h"

typedef struct {
  jmp_buf jb;
  char msg[256];
  const uint8_t *buf;
  size_t n, pos;
  fdm_membuf *out;
} png_ctx;

static void on_error(png_structp p, png_const_charp msg) {
  png_ctx *c = png_get_error_ptr(p);
  snprintf(c->msg, sizeof c->msg, "%s", msg ? msg : "libpng error");
  longjmp(c->jb, 1);
}

static void on_warning(png_structp p, png_const_charp msg) { (void)p; (void)msg; }

static void on_read(png_structp p, png_bytep out, size_t len) {
  png_ctx *c = png_get_io_ptr(p);
  if (len > c->n - c->pos) png_error(p, "truncated file");
  memcpy(out, c->buf + c->pos, len);
  c->pos += len;
}

int fdm_png_decode_to(const uint8_t *buf, size_t n, size_t max_pixels, const fdm_png_sink *sink) {
  if (n < 8 || png_sig_cmp((png_const_bytep)buf, 0, 8) != 0)
    return fdm_seterror(n < 8 ? "truncated file (%zu bytes)" : "not a PNG file", n);
  png_ctx ctx;
  memset(&ctx, 0, sizeof ctx);
  ctx.buf = buf; ctx.n = n;
  png_structp p = png_create_read_struct(PNG_LIBPNG_VER_STRING, &ctx, on_error, on_warning);
  if (!p) return fdm_seterror("out of memory");
  png_infop info = png_create_info_struct(p);
  if (!info) { png_destroy_read_struct(&p, NULL, NULL); return fdm_seterror("out of memory"); }
  uint8_t *volatile px = NULL;
  png_bytep *volatile rows = NULL;
  volatile int sink_failed = 0;
  if (setjmp(ctx.jb)) {
    free(px); free(rows);
    png_destroy_read_struct(&p, &info, NULL);
    if (sink_failed) return -1;   /* the sink set the error */
    return fdm_seterror("corrupt PNG: %s", ctx.msg);
  }
  png_set_read_fn(p, &ctx, on_read);
#ifdef FDM_FUZZING
  /* fuzz builds only: mutated chunks would almost all die at the CRC check,
  ** so the fuzzer could never reach the decoder behind it */
  png_set_crc_action(p, PNG_CRC_QUIET_USE, PNG_CRC_QUIET_USE);
#endif
  png_set_user_limits(p, 1u << 20, 1u << 20);
  png_set_chunk_malloc_max(p, 64u << 20);
  png_read_info(p, info);
  png_uint_32 w, h;
  int depth, ctype, interlace;
  png_get_IHDR(p, info, &w, &h, &depth, &ctype, &interlace, NULL, NULL);
  if (w == 0 || h == 0) png_error(p, "empty image");
  if ((size_t)w * h > max_pixels) {
    snprintf(ctx.msg, sizeof ctx.msg, "image too large (%ux%u, limit %zu pixels)", (unsigned)w, (unsigned)h, max_pixels);
    longjmp(ctx.jb, 1);
  }
  int trns = png_get_valid(p, info, PNG_INFO_tRNS) != 0;
  png_set_expand(p);                     /* palette -> RGB(A), gray < 8 bits -> 8, tRNS -> alpha */
  if (depth == 16) png_set_scale_16(p);  /* 16-bit samples are scaled to 8 bits as they are read */
  if (ctype == PNG_COLOR_TYPE_GRAY_ALPHA || (ctype == PNG_COLOR_TYPE_GRAY && trns))
    png_set_gray_to_rgb(p);              /* gray + alpha -> RGBA */
  int passes = png_set_interlace_handling(p);
  png_read_update_info(p, info);
  int ch = png_get_channels(p, info);
  size_t rowbytes = png_get_rowbytes(p, info);
  if ((ch != 1 && ch != 3 && ch != 4) || png_get_bit_depth(p, info) != 8 || rowbytes != (size_t)w * ch)
    png_error(p, "unsupported pixel layout");
  /* interlaced images need the whole 8-bit image (the passes fill it in);
  ** the others are decoded one row at a time straight into the sink */
  size_t scratch = passes > 1 ? (size_t)h * rowbytes : rowbytes;
  if (sink->begin(sink->ud, (int)w, (int)h, ch, passes > 1 ? scratch : 0) != 0) { sink_failed = 1; longjmp(ctx.jb, 1); }
  px = malloc(scratch);
  if (!px) png_error(p, "out of memory");
  if (passes > 1) {
    rows = malloc(sizeof(png_bytep) * h);
    if (!rows) png_error(p, "out of memory");
    for (png_uint_32 y = 0; y < h; y++) rows[y] = px + (size_t)y * rowbytes;
    png_read_image(p, rows);
    for (png_uint_32 y = 0; y < h; y++) sink->row(sink->ud, (int)y, rows[y]);
  } else {
    for (png_uint_32 y = 0; y < h; y++) {
      png_read_row(p, px, NULL);
      sink->row(sink->ud, (int)y, px);
    }
  }
  png_read_end(p, NULL);
  png_destroy_read_struct(&p, &info, NULL);
  free(rows);
  free(px);
  return 0;
}

int fdm_png_decode(const uint8_t *buf, size_t n, size_t max_pixels, fdm_image *out) {
  return fdm_image_decode(fdm_png_decode_to, buf, n, max_pixels, out);
}

int fdm_png_read(const char *path, fdm_image *out) {
  return fdm_image_read(path, fdm_png_decode_to, FDM_PNG_MAX_PIXELS, out);
}

static void on_write(png_structp p, png_bytep data, size_t len) {
  png_ctx *c = png_get_io_ptr(p);
  if (fdm_membuf_append(c->out, data, len) != 0) png_error(p, "out of memory");
}
static void on_flush(png_structp p) { (void)p; }

int fdm_png_encode(const fdm_image *im, fdm_membuf *out) {
  static const int types[5] = { 0, PNG_COLOR_TYPE_GRAY, PNG_COLOR_TYPE_GRAY_ALPHA,
                                PNG_COLOR_TYPE_RGB, PNG_COLOR_TYPE_RGB_ALPHA };
  if (im->c < 1 || im->c > 4 || im->w <= 0 || im->h <= 0 || im->w > (1 << 24) || im->h > (1 << 24))
    return fdm_seterror("cannot encode a %dx%d image with %d channels as PNG", im->w, im->h, im->c);
  png_ctx ctx;
  memset(&ctx, 0, sizeof ctx);
  ctx.out = out;
  png_structp p = png_create_write_struct(PNG_LIBPNG_VER_STRING, &ctx, on_error, on_warning);
  if (!p) return fdm_seterror("out of memory");
  png_infop info = png_create_info_struct(p);
  if (!info) { png_destroy_write_struct(&p, NULL); return fdm_seterror("out of memory"); }
  png_bytep *volatile rows = NULL;
  if (setjmp(ctx.jb)) {
    free(rows);
    png_destroy_write_struct(&p, &info);
    return fdm_seterror("PNG encoding failed: %s", ctx.msg);
  }
  png_set_write_fn(p, &ctx, on_write, on_flush);
  png_set_IHDR(p, info, (png_uint_32)im->w, (png_uint_32)im->h, 8, types[im->c],
               PNG_INTERLACE_NONE, PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
  rows = malloc(sizeof(png_bytep) * (size_t)im->h);
  if (!rows) png_error(p, "out of memory");
  size_t rowbytes = (size_t)im->w * im->c;
  for (int y = 0; y < im->h; y++) rows[y] = im->px + (size_t)y * rowbytes;
  png_set_rows(p, info, rows);
  png_write_png(p, info, PNG_TRANSFORM_IDENTITY, NULL);
  png_destroy_write_struct(&p, &info);
  free(rows);
  return 0;
}

int fdm_png_write(const char *path, const fdm_image *im) {
  fdm_membuf b = {0};
  if (fdm_png_encode(im, &b) != 0) { fdm_membuf_free(&b); return -1; }
  int r = fdm_write_file_atomic(path, b.data, b.len);
  fdm_membuf_free(&b);
  return r;
}
