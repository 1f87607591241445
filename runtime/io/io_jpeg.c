/*
** io_jpeg.c: JPEG decoding from memory with libjpeg(-turbo).
** libjpeg's default error handler calls exit(); ours copies the message and
** longjmps back to the setjmp in the decoder, which frees what it holds, so
** a corrupt or truncated file is an error for the caller, never the end of
** the process. Premature end of data is also an error here: libjpeg would
** only warn and fill the missing rows with gray.
*/
#include <stdio.h>     /* jpeglib.h needs FILE and size_t first */
#include <jpeglib.h>
#include <jerror.h>
#include <setjmp.h>
#include <stdlib.h>
#include <string.h>
#include "fdm_io.h"

typedef struct {
  struct jpeg_error_mgr pub;   /* first: libjpeg passes a pointer to it */
  jmp_buf jb;
  int plain;                   /* msg is ours (size, colour space): no "corrupt JPEG" prefix */
  char msg[JMSG_LENGTH_MAX + 64];
} jpeg_err;

/* our own refusals: the message as given, back to the setjmp */
#define REFUSE(e, ...) do { snprintf((e)->msg, sizeof (e)->msg, __VA_ARGS__); (e)->plain = 1; longjmp((e)->jb, 1); } while (0)

static void on_error(j_common_ptr cinfo) {
  jpeg_err *e = (jpeg_err *)cinfo->err;
  /* libjpeg's memory manager has no backing store: a progressive image whose
  ** coefficients exceed max_memory_to_use ends here, which is a size limit */
  if (cinfo->err->msg_code == JERR_NO_BACKING_STORE)
    REFUSE(e, "image too large for the decoder (its coefficients need more than %ld MiB)",
           cinfo->mem->max_memory_to_use >> 20);
  (*cinfo->err->format_message)(cinfo, e->msg);
  longjmp(e->jb, 1);
}

/* warnings (level -1) after which libjpeg carries on with invented pixels
** (premature end of data: gray rows; damaged entropy data) make us refuse
** the file, as a silently grayed-out image would be a wrong input. Benign
** ones (extraneous bytes before a marker, odd JFIF versions) are ignored. */
static void on_message(j_common_ptr cinfo, int level) {
  if (level >= 0) return;
  switch (cinfo->err->msg_code) {
  case JWRN_JPEG_EOF: case JWRN_HIT_MARKER: case JWRN_HUFF_BAD_CODE: case JWRN_ARITH_BAD_CODE:
  case JWRN_MUST_RESYNC:
    on_error(cinfo);
  default: break;
  }
}

int fdm_jpeg_decode_to(const uint8_t *buf, size_t n, size_t max_pixels, const fdm_png_sink *sink) {
  if (n < 3 || buf[0] != 0xFF || buf[1] != 0xD8 || buf[2] != 0xFF)
    return fdm_seterror(n < 3 ? "truncated file (%zu bytes)" : "not a JPEG file", n);
  if (n > (unsigned long)-1) return fdm_seterror("file too large");
  struct jpeg_decompress_struct cinfo;
  jpeg_err err;
  memset(&cinfo, 0, sizeof cinfo);
  memset(&err, 0, sizeof err);
  cinfo.err = jpeg_std_error(&err.pub);
  err.pub.error_exit = on_error;
  err.pub.emit_message = on_message;
  uint8_t *volatile row = NULL;
  volatile int sink_failed = 0;
  if (setjmp(err.jb)) {
    free(row);
    jpeg_destroy_decompress(&cinfo);
    if (sink_failed) return -1;   /* the sink set the error */
    if (err.plain) return fdm_seterror("%s", err.msg);
    return fdm_seterror("corrupt JPEG: %s", err.msg);
  }
  jpeg_create_decompress(&cinfo);
  /* libjpeg's own allocations (coefficient buffers of progressive files can
  ** be several times the image) are bounded too, not only the output */
  cinfo.mem->max_memory_to_use = 512L << 20;
  jpeg_mem_src(&cinfo, (const unsigned char *)buf, (unsigned long)n);
  jpeg_read_header(&cinfo, TRUE);
  switch (cinfo.jpeg_color_space) {
  case JCS_GRAYSCALE: cinfo.out_color_space = JCS_GRAYSCALE; break;
  case JCS_YCbCr: case JCS_RGB: cinfo.out_color_space = JCS_RGB; break;
  case JCS_CMYK: case JCS_YCCK:
    /* Adobe CMYK files store inverted inks and need a colour profile to look
    ** right; a naive conversion would give wrong colours, so refuse clearly */
    REFUSE(&err, "%s JPEG files are not supported (convert the image to RGB)",
           cinfo.jpeg_color_space == JCS_CMYK ? "CMYK" : "YCCK");
  default:
    REFUSE(&err, "JPEG with an unknown colour space (%d components) is not supported", cinfo.num_components);
  }
  unsigned w = cinfo.image_width, h = cinfo.image_height;
  if (w == 0 || h == 0) REFUSE(&err, "corrupt JPEG: empty image");
  if ((size_t)w * h > max_pixels) REFUSE(&err, "image too large (%ux%u, limit %zu pixels)", w, h, max_pixels);
  jpeg_start_decompress(&cinfo);
  int ch = cinfo.output_components;
  if ((ch != 1 && ch != 3) || cinfo.output_width != w || cinfo.output_height != h)
    REFUSE(&err, "unsupported JPEG pixel layout (%d components)", ch);
  /* libjpeg decodes row by row (its own buffers aside), like the PNG reader */
  if (sink->begin(sink->ud, (int)w, (int)h, ch, 0) != 0) { sink_failed = 1; longjmp(err.jb, 1); }
  row = malloc((size_t)w * ch);
  if (!row) REFUSE(&err, "out of memory");
  while (cinfo.output_scanline < h) {
    JSAMPROW r = row;
    int y = (int)cinfo.output_scanline;
    if (jpeg_read_scanlines(&cinfo, &r, 1) != 1) REFUSE(&err, "corrupt JPEG: truncated file");
    sink->row(sink->ud, y, row);
  }
  jpeg_finish_decompress(&cinfo);
  jpeg_destroy_decompress(&cinfo);
  free(row);
  return 0;
}

int fdm_jpeg_decode(const uint8_t *buf, size_t n, size_t max_pixels, fdm_image *out) {
  return fdm_image_decode(fdm_jpeg_decode_to, buf, n, max_pixels, out);
}

int fdm_jpeg_read(const char *path, fdm_image *out) {
  return fdm_image_read(path, fdm_jpeg_decode_to, FDM_JPEG_MAX_PIXELS, out);
}

int fdm_image_kind(const uint8_t *buf, size_t n) {
  static const uint8_t png_sig[8] = { 0x89, 'P', 'N', 'G', '\r', '\n', 0x1A, '\n' };
  if (n >= 8 && memcmp(buf, png_sig, 8) == 0) return FDM_IMAGE_PNG;
  if (n >= 3 && buf[0] == 0xFF && buf[1] == 0xD8 && buf[2] == 0xFF) return FDM_IMAGE_JPEG;
  return FDM_IMAGE_UNKNOWN;
}
