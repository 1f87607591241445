/*
** io_gif.c: animated GIFs with giflib. One global 256-entry palette:
** 256 gray levels when every frame is gray, else a fixed 6x7x6 RGB cube
** (each pixel mapped to the nearest level per channel; no dithering, so
** still parts of an animation do not flicker). Alpha is composited over white.
*/
#include <gif_lib.h>
#include <stdlib.h>
#include <string.h>
#include "fdm_io.h"

static int gif_out(GifFileType *g, const GifByteType *d, int n) {
  fdm_membuf *b = g->UserData;
  return fdm_membuf_append(b, d, (size_t)n) == 0 ? n : 0;
}

static inline uint8_t over_white(int v, int a) { return (uint8_t)((v * a + 255 * (255 - a) + 127) / 255); }

int fdm_gif_encode(const fdm_image *fr, int nf, int delay_ms, int loop, int scale, fdm_membuf *out) {
  if (nf < 1) return fdm_seterror("no frames");
  if (scale < 1) scale = 1;
  int w = fr[0].w, h = fr[0].h, gray = 1;
  for (int i = 0; i < nf; i++) {
    if (fr[i].w != w || fr[i].h != h)
      return fdm_seterror("frame %d is %dx%d, frame 1 is %dx%d", i + 1, fr[i].w, fr[i].h, w, h);
    if (fr[i].c < 1 || fr[i].c > 4) return fdm_seterror("frame %d has %d channels", i + 1, fr[i].c);
    if (fr[i].c >= 3) gray = 0;
  }
  if ((int64_t)w * scale > 65535 || (int64_t)h * scale > 65535)
    return fdm_seterror("GIF size %lldx%lld exceeds 65535", (long long)w * scale, (long long)h * scale);
  int W = w * scale, H = h * scale;
  if (delay_ms < 0) delay_ms = 0;
  int delay = (delay_ms + 5) / 10;
  if (delay > 65535) delay = 65535;
  if (loop < 0) loop = 0;
  if (loop > 65535) loop = 65535;

  GifColorType colors[256];
  memset(colors, 0, sizeof colors);
  for (int i = 0; i < 256; i++) {
    if (gray) colors[i].Red = colors[i].Green = colors[i].Blue = (GifByteType)i;
    else if (i < 252) {
      colors[i].Red = (GifByteType)((i / 42) * 255 / 5);
      colors[i].Green = (GifByteType)(((i / 6) % 7) * 255 / 6);
      colors[i].Blue = (GifByteType)((i % 6) * 255 / 5);
    }
  }
  int err = 0;
  GifFileType *g = EGifOpen(out, gif_out, &err);
  if (!g) return fdm_seterror("giflib: %s", GifErrorString(err));
  ColorMapObject *cmap = GifMakeMapObject(256, colors);
  GifByteType *line = malloc((size_t)W);
  uint8_t *idx = malloc((size_t)w);
  if (!cmap || !line || !idx) { err = E_GIF_ERR_NOT_ENOUGH_MEM; goto fail; }
  EGifSetGifVersion(g, true);
  if (EGifPutScreenDesc(g, W, H, 8, 0, cmap) == GIF_ERROR) goto fail_g;
  {
    GifByteType app[11], sub[3] = {1, (GifByteType)(loop & 255), (GifByteType)(loop >> 8)};
    memcpy(app, "NETSCAPE2.0", 11);
    if (EGifPutExtensionLeader(g, APPLICATION_EXT_FUNC_CODE) == GIF_ERROR ||
        EGifPutExtensionBlock(g, 11, app) == GIF_ERROR ||
        EGifPutExtensionBlock(g, 3, sub) == GIF_ERROR ||
        EGifPutExtensionTrailer(g) == GIF_ERROR) goto fail_g;
  }
  for (int f = 0; f < nf; f++) {
    GifByteType gcb[4] = {1 << 2, (GifByteType)(delay & 255), (GifByteType)(delay >> 8), 0};
    if (EGifPutExtension(g, GRAPHICS_EXT_FUNC_CODE, 4, gcb) == GIF_ERROR) goto fail_g;
    if (EGifPutImageDesc(g, 0, 0, W, H, false, NULL) == GIF_ERROR) goto fail_g;
    const fdm_image *im = &fr[f];
    for (int y = 0; y < h; y++) {
      const uint8_t *row = im->px + (size_t)y * w * im->c;
      for (int x = 0; x < w; x++) {
        const uint8_t *p = row + (size_t)x * im->c;
        int r, gg, b;
        switch (im->c) {
        case 1: r = gg = b = p[0]; break;
        case 2: r = gg = b = over_white(p[0], p[1]); break;
        case 3: r = p[0]; gg = p[1]; b = p[2]; break;
        default: r = over_white(p[0], p[3]); gg = over_white(p[1], p[3]); b = over_white(p[2], p[3]);
        }
        if (gray) idx[x] = (uint8_t)r;
        else idx[x] = (uint8_t)(((r * 5 + 127) / 255) * 42 + ((gg * 6 + 127) / 255) * 6 + (b * 5 + 127) / 255);
      }
      for (int x = 0; x < W; x++) line[x] = idx[x / scale];
      for (int s = 0; s < scale; s++)
        if (EGifPutLine(g, line, W) == GIF_ERROR) goto fail_g;
    }
  }
  GifFreeMapObject(cmap);
  free(line); free(idx);
  if (EGifCloseFile(g, &err) == GIF_ERROR) return fdm_seterror("giflib: %s", GifErrorString(err));
  return 0;
fail_g:
  err = g->Error;
fail:
  if (cmap) GifFreeMapObject(cmap);
  free(line); free(idx);
  { int e2; EGifCloseFile(g, &e2); }
  return fdm_seterror("giflib: %s", GifErrorString(err));
}

int fdm_gif_write(const char *path, const fdm_image *frames, int nframes, int delay_ms, int loop, int scale) {
  fdm_membuf b = {0};
  if (fdm_gif_encode(frames, nframes, delay_ms, loop, scale, &b) != 0) { fdm_membuf_free(&b); return -1; }
  int r = fdm_write_file_atomic(path, b.data, b.len);
  fdm_membuf_free(&b);
  return r;
}
