/*
** fdm_io.h: file formats of fdm (PNG, safetensors, IDX, GIF, cairo drawings)
** and the atomic file writer. Everything here is plain C over memory buffers
** or files and knows nothing of Lua or of tensors, so the fuzz targets and
** C tests can call it; the only runtime dependency is fdm_seterror().
** Functions returning int return 0 on success, -1 with fdm_seterror() set.
** Multi-byte data is read and written little endian (the host is assumed to
** be little endian, as every platform fdm runs on).
*/
#ifndef FDM_IO_H
#define FDM_IO_H

#include <stdio.h>
#include <stddef.h>
#include <stdint.h>
#include "fdm.h"

/* ---- growing memory buffer (io_atomic.c) ---- */
typedef struct { uint8_t *data; size_t len, cap; } fdm_membuf;
int fdm_membuf_append(fdm_membuf *b, const void *p, size_t n);
void fdm_membuf_free(fdm_membuf *b);

/* ---- atomic file writes (io_atomic.c) ----
** The data goes to a temporary file in the same directory ("<path>.tmp.XXXXXX"),
** which is flushed, fsync'ed and renamed over path; the directory is then
** fsync'ed. On any failure the temporary is removed and path is untouched. */
int fdm_write_file_atomic(const char *path, const void *buf, size_t n);
typedef struct fdm_atomic_file fdm_atomic_file;
fdm_atomic_file *fdm_atomic_open(const char *path);          /* NULL on error */
int fdm_atomic_write(fdm_atomic_file *f, const void *buf, size_t n);
FILE *fdm_atomic_stream(fdm_atomic_file *f);  /* for fprintf etc.; errors are caught at commit */
int fdm_atomic_commit(fdm_atomic_file *f);    /* frees f in every case */
void fdm_atomic_abort(fdm_atomic_file *f);    /* removes the temporary, frees f (NULL-safe) */
/* memory the system could give us now (MemAvailable), for size limits */
size_t fdm_mem_available(void);
/* reads a whole file (at most max bytes, else an error) into malloc'd memory */
int fdm_read_file(const char *path, size_t max, uint8_t **buf, size_t *n);

/* ---- 8-bit images, interleaved rows (H x W x C) ---- */
typedef struct { int w, h, c; uint8_t *px; } fdm_image;
void fdm_image_free(fdm_image *im);

/* ---- PNG (io_png.c) ---- */
#define FDM_PNG_MAX_PIXELS ((size_t)1 << 28)
/* decodes to C=1 (gray), 3 (RGB) or 4 (RGBA; also for gray+alpha), 8 bits.
** 16-bit, palette and low-bit-depth images are converted by libpng. */
int fdm_png_decode(const uint8_t *buf, size_t n, size_t max_pixels, fdm_image *out);
/* the same, row by row into a sink: begin(w, h, c, scratch) is called once
** the size is known (scratch: the bytes the decoder itself will then hold,
** the whole 8-bit image for interlaced files, else 0) and may refuse (-1 with
** the error set); row(y, pixels) gets each interleaved 8-bit row. Only one
** row is buffered for non-interlaced images, so a caller that converts
** (to float) needs no second copy of the image. */
typedef struct {
  int (*begin)(void *ud, int w, int h, int c, size_t scratch);
  void (*row)(void *ud, int y, const uint8_t *px);
  void *ud;
} fdm_png_sink;
int fdm_png_decode_to(const uint8_t *buf, size_t n, size_t max_pixels, const fdm_png_sink *sink);
/* any *_decode_to into an interleaved fdm_image, from memory or a file (io_atomic.c) */
typedef int (*fdm_image_decoder)(const uint8_t *buf, size_t n, size_t max_pixels, const fdm_png_sink *sink);
int fdm_image_decode(fdm_image_decoder decode_to, const uint8_t *buf, size_t n, size_t max_pixels,
                     fdm_image *out);
int fdm_image_read(const char *path, fdm_image_decoder decode_to, size_t max_pixels, fdm_image *out);
int fdm_png_read(const char *path, fdm_image *out);
int fdm_png_encode(const fdm_image *im, fdm_membuf *out);   /* C = 1, 2, 3, 4 */
int fdm_png_write(const char *path, const fdm_image *im);  /* atomic */

/* ---- JPEG (io_jpeg.c) ---- */
#define FDM_JPEG_MAX_PIXELS FDM_PNG_MAX_PIXELS
/* decodes baseline and progressive JPEG to C=1 (gray) or 3 (RGB), 8 bits,
** through the same sink as the PNG decoder (scratch is always 0: libjpeg
** keeps only a few rows). CMYK/YCCK files are refused with a clear error;
** truncated files and damaged entropy data are errors, not gray pixels. */
int fdm_jpeg_decode_to(const uint8_t *buf, size_t n, size_t max_pixels, const fdm_png_sink *sink);
int fdm_jpeg_decode(const uint8_t *buf, size_t n, size_t max_pixels, fdm_image *out);
int fdm_jpeg_read(const char *path, fdm_image *out);
/* which image format buf starts with (magic bytes, not the file name) */
enum { FDM_IMAGE_UNKNOWN, FDM_IMAGE_PNG, FDM_IMAGE_JPEG };
int fdm_image_kind(const uint8_t *buf, size_t n);

/* ---- safetensors (io_safetensors.c) ---- */
typedef enum {
  FDM_ST_F64, FDM_ST_F32, FDM_ST_F16, FDM_ST_BF16, FDM_ST_I64, FDM_ST_I32,
  FDM_ST_I16, FDM_ST_I8, FDM_ST_U8, FDM_ST_BOOL, FDM_ST_U16, FDM_ST_U32,
  FDM_ST_U64, FDM_ST_F8_E4M3, FDM_ST_F8_E5M2, FDM_ST_NDTYPE
} fdm_st_dtype;
#define FDM_ST_MAX_HEADER ((uint64_t)100 * 1000 * 1000)
const char *fdm_st_dtype_name(int d);
size_t fdm_st_dtype_size(int d);
/* the core dtype a file dtype loads as. The core has only float32, float16,
** bfloat16, int64, uint8 and bool, so F64 and F8_* load as float32 and
** I32/I16/I8/U16/U32/U64 as int64 (U64 values above 2^63-1 wrap). */
fdm_dtype fdm_st_target(int d);
typedef struct {
  char *name;
  int dtype;                       /* fdm_st_dtype */
  int ndim;
  int64_t shape[FDM_MAXDIM];
  uint64_t begin, end;             /* byte offsets into the data section */
} fdm_st_entry;
typedef struct { char *key, *value; } fdm_st_meta;
typedef struct {
  uint64_t header_len;
  const uint8_t *data;             /* data section (points into the caller's buffer) */
  uint64_t data_len;
  int n;  fdm_st_entry *e;         /* in header order */
  int nmeta; fdm_st_meta *meta;
} fdm_st_file;
/* validates the whole file image (header JSON, dtypes, shapes, offsets,
** overlaps) before anything is allocated for tensors */
int fdm_st_parse(const uint8_t *file, size_t n, fdm_st_file *out);
void fdm_st_free(fdm_st_file *f);
int64_t fdm_st_numel(const fdm_st_entry *e);
/* converts the bytes of e (from f->data + e->begin) into dst, an array of
** fdm_st_numel(e) elements of fdm_st_target(e->dtype) */
void fdm_st_convert(const fdm_st_file *f, const fdm_st_entry *e, void *dst);
/* writing: tensors must be contiguous; sorted by dtype size (desc) then name */
typedef struct {
  const char *name; fdm_dtype dtype; int ndim; const int64_t *shape; const void *data;
} fdm_st_tensor;
int fdm_st_write(const char *path, int n, const fdm_st_tensor *t,
                 int nmeta, const fdm_st_meta *meta);
/* the same, into memory (used by the writer and the tests) */
int fdm_st_serialize(int n, const fdm_st_tensor *t, int nmeta, const fdm_st_meta *meta,
                     fdm_membuf *header, uint64_t *data_len);

/* ---- IDX (io_idx.c) ---- */
typedef struct {
  int type;                        /* 0x08 u8, 0x09 i8, 0x0B i16, 0x0C i32, 0x0D f32, 0x0E f64 */
  int ndim;
  int64_t shape[FDM_MAXDIM];
  int64_t numel;
  size_t data_off;
} fdm_idx_info;
int fdm_idx_parse(const uint8_t *buf, size_t n, fdm_idx_info *out);
fdm_dtype fdm_idx_target(int type);  /* uint8 -> uint8, i8/i16/i32 -> int64, f32/f64 -> float32 */
void fdm_idx_convert(const fdm_idx_info *info, const uint8_t *buf, void *dst);
/* gzip (one or more members) from memory, at most max_out bytes of output */
int fdm_gunzip(const uint8_t *in, size_t n, size_t max_out, uint8_t **out, size_t *outn);
/* the same for an IDX file: once the header is inflated, the output may not
** exceed the size it declares (the first byte beyond is an error), and the
** buffer grows with the output, so a gzip bomb costs no more than its claim */
int fdm_gunzip_idx(const uint8_t *in, size_t n, size_t max_out, uint8_t **out, size_t *outn);
/* reads path, gunzipping it when it starts with the gzip magic */
int fdm_read_maybe_gz(const char *path, size_t max, uint8_t **buf, size_t *n);
/* reads an IDX file, plain or gzip'ed (fdm_gunzip_idx) */
int fdm_idx_read(const char *path, size_t max, uint8_t **buf, size_t *n);

/* ---- GIF (io_gif.c) ---- */
/* frames: same w/h; C=1 -> gray palette, C=3/4 -> fixed 6x7x6 RGB palette
** (alpha composited over white). delay in ms, loop 0 = forever, scale >= 1. */
int fdm_gif_write(const char *path, const fdm_image *frames, int nframes,
                  int delay_ms, int loop, int scale);
int fdm_gif_encode(const fdm_image *frames, int nframes, int delay_ms, int loop,
                   int scale, fdm_membuf *out);

/* ---- cairo drawings (io_draw.c) ---- */
/* Where a grid's text and images went (pixels, ink extents of each drawn
** line): what tests check to see that no caption or title is clipped. */
enum { FDM_TEXT_TITLE, FDM_TEXT_COL, FDM_TEXT_ROW, FDM_TEXT_CAPTION };
typedef struct { int kind, index; double x, y, w, h; char *text; } fdm_grid_text;
typedef struct {
  int width, height;                /* the canvas */
  fdm_grid_text *texts; int ntexts; /* one entry per drawn line; index: 0-based caption/row/column */
  double (*cells)[4]; int ncells;   /* x, y, w, h of each image */
} fdm_grid_layout;
void fdm_grid_layout_free(fdm_grid_layout *l);

typedef struct {
  int nrow;                        /* images per row; <= 0: ceil(sqrt(n)) */
  int scale;                       /* <= 0: smallest making cells >= 64 px */
  const char *const *row_captions; int nrow_captions;
  const char *const *col_captions; int ncol_captions;
  const char *const *captions;     int ncaptions;
  const char *title;
  fdm_grid_layout *layout;         /* optional: filled on success (free with fdm_grid_layout_free) */
} fdm_grid_opts;
/* Text is measured: columns widen for wide captions (up to a limit, then
** captions wrap at spaces), the canvas widens for a wide title (then it
** wraps), row captions wrap; nothing is clipped. */
int fdm_draw_grid(const char *path, const fdm_image *ims, int n, const fdm_grid_opts *o);
typedef struct { const char *name; const double *x; const double *y; int n; } fdm_plot_series;
typedef struct {
  int width, height;               /* <= 0: 800 x 500 */
  int logy;
  const char *title, *xlabel, *ylabel;
} fdm_plot_opts;
int fdm_plot_curves(const char *path, const fdm_plot_series *s, int ns, const fdm_plot_opts *o);

#endif
