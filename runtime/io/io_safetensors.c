/*
** io_safetensors.c: the safetensors format.
**   8 bytes little-endian header length N, N bytes of JSON, the data section.
** The JSON is read with a small strict parser (RFC 8259: no trailing commas,
** no comments, valid UTF-8, no duplicate keys, nesting depth limited), and
** every entry is checked (known dtype, ndim <= FDM_MAXDIM, shape * element
** size == end - begin without overflow, offsets inside the data section, no
** overlaps) before the caller allocates anything.
*/
#include <stdlib.h>
#include <string.h>
#include "fdm_io.h"

static const struct { const char *name; size_t size; fdm_dtype target; } st_types[FDM_ST_NDTYPE] = {
  [FDM_ST_F64] = {"F64", 8, FDM_FLOAT32},     [FDM_ST_F32] = {"F32", 4, FDM_FLOAT32},
  [FDM_ST_F16] = {"F16", 2, FDM_FLOAT16},     [FDM_ST_BF16] = {"BF16", 2, FDM_BFLOAT16},
  [FDM_ST_I64] = {"I64", 8, FDM_INT64},       [FDM_ST_I32] = {"I32", 4, FDM_INT64},
  [FDM_ST_I16] = {"I16", 2, FDM_INT64},       [FDM_ST_I8] = {"I8", 1, FDM_INT64},
  [FDM_ST_U8] = {"U8", 1, FDM_UINT8},         [FDM_ST_BOOL] = {"BOOL", 1, FDM_BOOL},
  [FDM_ST_U16] = {"U16", 2, FDM_INT64},       [FDM_ST_U32] = {"U32", 4, FDM_INT64},
  [FDM_ST_U64] = {"U64", 8, FDM_INT64},
  [FDM_ST_F8_E4M3] = {"F8_E4M3", 1, FDM_FLOAT32}, [FDM_ST_F8_E5M2] = {"F8_E5M2", 1, FDM_FLOAT32},
};

const char *fdm_st_dtype_name(int d) { return d >= 0 && d < FDM_ST_NDTYPE ? st_types[d].name : "?"; }
size_t fdm_st_dtype_size(int d) { return d >= 0 && d < FDM_ST_NDTYPE ? st_types[d].size : 0; }
fdm_dtype fdm_st_target(int d) { return st_types[d].target; }

/* ------------------------------------------------------------------ */
/* strict JSON                                                          */

enum { J_NULL, J_BOOL, J_NUM, J_STR, J_ARR, J_OBJ };
typedef struct jval {
  int type;
  int is_uint;          /* J_NUM: a plain non-negative integer that fits uint64 */
  uint64_t u;
  char *s; size_t slen; /* J_STR */
  int n;                /* J_ARR / J_OBJ: item count */
  char **keys;          /* J_OBJ */
  struct jval **items;
} jval;

typedef struct {
  const char *p, *end, *start;
  char err[160];
  int depth;
} jparser;

#define J_MAXDEPTH 32

static void jfree(jval *v) {
  if (!v) return;
  for (int i = 0; i < v->n; i++) {
    if (v->keys) free(v->keys[i]);
    jfree(v->items[i]);
  }
  free(v->keys); free(v->items); free(v->s);
  free(v);
}

static int jerr(jparser *j, const char *what) {
  if (!j->err[0])
    snprintf(j->err, sizeof j->err, "invalid header JSON at byte %ld: %s", (long)(j->p - j->start), what);
  return -1;
}

static void jws(jparser *j) {
  while (j->p < j->end && (*j->p == ' ' || *j->p == '\t' || *j->p == '\n' || *j->p == '\r')) j->p++;
}

static int hexval(int c) {
  if (c >= '0' && c <= '9') return c - '0';
  if (c >= 'a' && c <= 'f') return c - 'a' + 10;
  if (c >= 'A' && c <= 'F') return c - 'A' + 10;
  return -1;
}

static int read_hex4(jparser *j, unsigned *out) {
  if (j->end - j->p < 4) return jerr(j, "truncated \\u escape");
  unsigned v = 0;
  for (int i = 0; i < 4; i++) {
    int h = hexval((unsigned char)j->p[i]);
    if (h < 0) return jerr(j, "bad \\u escape");
    v = v * 16 + (unsigned)h;
  }
  j->p += 4;
  *out = v;
  return 0;
}

/* length of a valid UTF-8 sequence at s (max n bytes), 0 if invalid */
static int utf8_len(const unsigned char *s, size_t n) {
  unsigned c = s[0];
  if (c < 0x80) return 1;
  int len; unsigned min;
  if ((c & 0xE0) == 0xC0) { len = 2; min = 0x80; c &= 0x1F; }
  else if ((c & 0xF0) == 0xE0) { len = 3; min = 0x800; c &= 0x0F; }
  else if ((c & 0xF8) == 0xF0) { len = 4; min = 0x10000; c &= 0x07; }
  else return 0;
  if ((size_t)len > n) return 0;
  for (int i = 1; i < len; i++) {
    if ((s[i] & 0xC0) != 0x80) return 0;
    c = (c << 6) | (s[i] & 0x3F);
  }
  if (c < min || c > 0x10FFFF || (c >= 0xD800 && c <= 0xDFFF)) return 0;
  return len;
}

static int put_utf8(char *o, unsigned cp) {
  if (cp < 0x80) { o[0] = (char)cp; return 1; }
  if (cp < 0x800) { o[0] = (char)(0xC0 | cp >> 6); o[1] = (char)(0x80 | (cp & 0x3F)); return 2; }
  if (cp < 0x10000) {
    o[0] = (char)(0xE0 | cp >> 12); o[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
    o[2] = (char)(0x80 | (cp & 0x3F)); return 3;
  }
  o[0] = (char)(0xF0 | cp >> 18); o[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
  o[2] = (char)(0x80 | ((cp >> 6) & 0x3F)); o[3] = (char)(0x80 | (cp & 0x3F));
  return 4;
}

/* parses a string at j->p (which is at '"'); result malloc'd, NUL-terminated;
** embedded NULs are refused since names are C strings */
static int jstring(jparser *j, char **out, size_t *outlen) {
  j->p++;  /* opening quote */
  const char *s = j->p;
  /* the decoded string is never longer than the source */
  while (j->p < j->end && *j->p != '"') {
    if (*j->p == '\\') { j->p++; if (j->p >= j->end) break; }
    j->p++;
  }
  if (j->p >= j->end) return jerr(j, "unterminated string");
  size_t srclen = (size_t)(j->p - s);
  char *o = malloc(srclen + 1);
  if (!o) return jerr(j, "out of memory");
  size_t k = 0;
  const char *q = s, *qe = j->p;
  j->p = s;
  while (q < qe) {
    unsigned char c = (unsigned char)*q;
    if (c < 0x20) { j->p = q; free(o); return jerr(j, "control character in string"); }
    if (c == '\\') {
      q++;
      char e = *q++;
      switch (e) {
      case '"': o[k++] = '"'; break;
      case '\\': o[k++] = '\\'; break;
      case '/': o[k++] = '/'; break;
      case 'b': o[k++] = '\b'; break;
      case 'f': o[k++] = '\f'; break;
      case 'n': o[k++] = '\n'; break;
      case 'r': o[k++] = '\r'; break;
      case 't': o[k++] = '\t'; break;
      case 'u': {
        unsigned cp, lo;
        j->p = q;
        if (read_hex4(j, &cp) != 0) { free(o); return -1; }
        q = j->p;
        if (cp >= 0xDC00 && cp <= 0xDFFF) { free(o); return jerr(j, "lone low surrogate"); }
        if (cp >= 0xD800 && cp <= 0xDBFF) {
          if (qe - q < 6 || q[0] != '\\' || q[1] != 'u') { free(o); return jerr(j, "lone high surrogate"); }
          j->p = q + 2;
          if (read_hex4(j, &lo) != 0) { free(o); return -1; }
          q = j->p;
          if (lo < 0xDC00 || lo > 0xDFFF) { free(o); return jerr(j, "bad surrogate pair"); }
          cp = 0x10000 + ((cp - 0xD800) << 10) + (lo - 0xDC00);
        }
        if (cp == 0) { free(o); return jerr(j, "NUL character in string"); }
        k += (size_t)put_utf8(o + k, cp);   /* \uXXXX is 6 source bytes, <= 4 output */
        break;
      }
      default:
        j->p = q - 1; free(o); return jerr(j, "bad escape");
      }
    } else if (c < 0x80) {
      o[k++] = (char)c; q++;
    } else {
      int l = utf8_len((const unsigned char *)q, (size_t)(qe - q));
      if (!l) { j->p = q; free(o); return jerr(j, "invalid UTF-8 in string"); }
      memcpy(o + k, q, (size_t)l); k += (size_t)l; q += l;
    }
  }
  o[k] = 0;
  j->p = qe + 1;
  *out = o;
  if (outlen) *outlen = k;
  return 0;
}

static int jnumber(jparser *j, jval *v) {
  const char *s = j->p;
  int neg = 0, frac = 0, over = 0;
  uint64_t u = 0;
  if (j->p < j->end && *j->p == '-') { neg = 1; j->p++; }
  if (j->p >= j->end || *j->p < '0' || *j->p > '9') return jerr(j, "bad number");
  if (*j->p == '0') {
    j->p++;
    if (j->p < j->end && *j->p >= '0' && *j->p <= '9') return jerr(j, "leading zero in number");
  } else {
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') {
      unsigned d = (unsigned)(*j->p - '0');
      if (u > (UINT64_MAX - d) / 10) over = 1; else u = u * 10 + d;
      j->p++;
    }
  }
  if (j->p < j->end && *j->p == '.') {
    frac = 1; j->p++;
    if (j->p >= j->end || *j->p < '0' || *j->p > '9') return jerr(j, "bad fraction");
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') j->p++;
  }
  if (j->p < j->end && (*j->p == 'e' || *j->p == 'E')) {
    frac = 1; j->p++;
    if (j->p < j->end && (*j->p == '+' || *j->p == '-')) j->p++;
    if (j->p >= j->end || *j->p < '0' || *j->p > '9') return jerr(j, "bad exponent");
    while (j->p < j->end && *j->p >= '0' && *j->p <= '9') j->p++;
  }
  (void)s;
  v->type = J_NUM;
  v->is_uint = !neg && !frac && !over;
  v->u = u;
  return 0;
}

static int jvalue(jparser *j, jval **out);

static int jlit(jparser *j, const char *lit) {
  size_t n = strlen(lit);
  if ((size_t)(j->end - j->p) < n || memcmp(j->p, lit, n) != 0) return jerr(j, "unexpected character");
  j->p += n;
  return 0;
}

static int jpush(jval *v, int *cap, char *key, jval *item) {
  if (v->n == *cap) {
    int nc = *cap ? *cap * 2 : 4;
    jval **ni = realloc(v->items, sizeof(jval *) * (size_t)nc);
    if (!ni) return -1;
    v->items = ni;
    if (v->type == J_OBJ) {
      char **nk = realloc(v->keys, sizeof(char *) * (size_t)nc);
      if (!nk) return -1;
      v->keys = nk;
    }
    *cap = nc;
  }
  if (v->type == J_OBJ) v->keys[v->n] = key;
  v->items[v->n++] = item;
  return 0;
}

static int jvalue(jparser *j, jval **out) {
  *out = NULL;
  jws(j);
  if (j->p >= j->end) return jerr(j, "unexpected end");
  jval *v = calloc(1, sizeof *v);
  if (!v) return jerr(j, "out of memory");
  char c = *j->p;
  int r = 0;
  if (c == '{' || c == '[') {
    int obj = c == '{', cap = 0;
    v->type = obj ? J_OBJ : J_ARR;
    if (++j->depth > J_MAXDEPTH) { jfree(v); return jerr(j, "nesting too deep"); }
    j->p++;
    jws(j);
    if (j->p < j->end && *j->p == (obj ? '}' : ']')) { j->p++; j->depth--; *out = v; return 0; }
    for (;;) {
      char *key = NULL;
      jval *item = NULL;
      jws(j);
      if (obj) {
        if (j->p >= j->end || *j->p != '"') { jfree(v); return jerr(j, "expected a string key"); }
        if (jstring(j, &key, NULL) != 0) { jfree(v); return -1; }
        for (int i = 0; i < v->n; i++)
          if (strcmp(v->keys[i], key) == 0) {
            free(key); jfree(v);
            return jerr(j, "duplicate key");
          }
        jws(j);
        if (j->p >= j->end || *j->p != ':') { free(key); jfree(v); return jerr(j, "expected ':'"); }
        j->p++;
      }
      if (jvalue(j, &item) != 0) { free(key); jfree(v); return -1; }
      if (jpush(v, &cap, key, item) != 0) { free(key); jfree(item); jfree(v); return jerr(j, "out of memory"); }
      jws(j);
      if (j->p >= j->end) { jfree(v); return jerr(j, "unexpected end"); }
      if (*j->p == ',') { j->p++; continue; }
      if (*j->p == (obj ? '}' : ']')) { j->p++; break; }
      jfree(v);
      return jerr(j, obj ? "expected ',' or '}'" : "expected ',' or ']'");
    }
    j->depth--;
  } else if (c == '"') {
    v->type = J_STR;
    r = jstring(j, &v->s, &v->slen);
  } else if (c == 't') { v->type = J_BOOL; r = jlit(j, "true"); }
  else if (c == 'f') { v->type = J_BOOL; r = jlit(j, "false"); }
  else if (c == 'n') { v->type = J_NULL; r = jlit(j, "null"); }
  else if (c == '-' || (c >= '0' && c <= '9')) r = jnumber(j, v);
  else r = jerr(j, "unexpected character");
  if (r != 0) { jfree(v); return -1; }
  *out = v;
  return 0;
}

/* ------------------------------------------------------------------ */

static uint64_t rd_le64(const uint8_t *p) {
  uint64_t v = 0;
  for (int i = 7; i >= 0; i--) v = (v << 8) | p[i];
  return v;
}

void fdm_st_free(fdm_st_file *f) {
  if (!f) return;
  for (int i = 0; i < f->n; i++) free(f->e[i].name);
  for (int i = 0; i < f->nmeta; i++) { free(f->meta[i].key); free(f->meta[i].value); }
  free(f->e); free(f->meta);
  memset(f, 0, sizeof *f);
}

int64_t fdm_st_numel(const fdm_st_entry *e) {
  int64_t n = 1;
  for (int i = 0; i < e->ndim; i++) n *= e->shape[i];
  return n;
}

static int cmp_begin(const void *a, const void *b) {
  const fdm_st_entry *x = *(fdm_st_entry *const *)a, *y = *(fdm_st_entry *const *)b;
  if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
  if (x->end != y->end) return x->end < y->end ? -1 : 1;
  return 0;
}

static int parse_entry(const char *name, const jval *v, uint64_t data_len, fdm_st_entry *e) {
  if (v->type != J_OBJ) return fdm_seterror("tensor '%s': entry is not an object", name);
  const jval *dt = NULL, *shape = NULL, *offs = NULL;
  for (int i = 0; i < v->n; i++) {
    if (strcmp(v->keys[i], "dtype") == 0) dt = v->items[i];
    else if (strcmp(v->keys[i], "shape") == 0) shape = v->items[i];
    else if (strcmp(v->keys[i], "data_offsets") == 0) offs = v->items[i];
    else return fdm_seterror("tensor '%s': unknown field '%s'", name, v->keys[i]);
  }
  if (!dt || !shape || !offs)
    return fdm_seterror("tensor '%s': missing field '%s'", name,
                        !dt ? "dtype" : !shape ? "shape" : "data_offsets");
  if (dt->type != J_STR) return fdm_seterror("tensor '%s': dtype is not a string", name);
  e->dtype = -1;
  for (int d = 0; d < FDM_ST_NDTYPE; d++)
    if (strcmp(dt->s, st_types[d].name) == 0) e->dtype = d;
  if (e->dtype < 0) return fdm_seterror("tensor '%s': unknown dtype '%.32s'", name, dt->s);
  if (shape->type != J_ARR) return fdm_seterror("tensor '%s': shape is not a list", name);
  if (shape->n > FDM_MAXDIM)
    return fdm_seterror("tensor '%s': %d dimensions (at most %d supported)", name, shape->n, FDM_MAXDIM);
  e->ndim = shape->n;
  uint64_t numel = 1;
  int overflow = 0;
  for (int i = 0; i < shape->n; i++) {
    const jval *d = shape->items[i];
    if (d->type != J_NUM || !d->is_uint || d->u > (uint64_t)INT64_MAX)
      return fdm_seterror("tensor '%s': shape entries must be non-negative integers", name);
    e->shape[i] = (int64_t)d->u;
    if (d->u && numel > UINT64_MAX / d->u) overflow = 1;
    else numel *= d->u;
  }
  if (offs->type != J_ARR || offs->n != 2 || offs->items[0]->type != J_NUM ||
      offs->items[1]->type != J_NUM || !offs->items[0]->is_uint || !offs->items[1]->is_uint)
    return fdm_seterror("tensor '%s': data_offsets must be two non-negative integers", name);
  e->begin = offs->items[0]->u;
  e->end = offs->items[1]->u;
  if (e->end < e->begin) return fdm_seterror("tensor '%s': data_offsets end before they begin", name);
  if (e->end > data_len)
    return fdm_seterror("tensor '%s': data_offsets [%llu, %llu] beyond the data section (%llu bytes; file truncated?)",
                        name, (unsigned long long)e->begin, (unsigned long long)e->end,
                        (unsigned long long)data_len);
  size_t es = st_types[e->dtype].size;
  if (overflow || numel > UINT64_MAX / es || numel * es != e->end - e->begin)
    return fdm_seterror("tensor '%s': shape and dtype %s need %s bytes but data_offsets give %llu",
                        name, st_types[e->dtype].name, overflow || numel > UINT64_MAX / es ? "too many" : "a different number of",
                        (unsigned long long)(e->end - e->begin));
  if (numel > (uint64_t)INT64_MAX) return fdm_seterror("tensor '%s': too many elements", name);
  return 0;
}

int fdm_st_parse(const uint8_t *file, size_t n, fdm_st_file *out) {
  memset(out, 0, sizeof *out);
  if (n < 8) return fdm_seterror("truncated file (%zu bytes, no header)", n);
  uint64_t hlen = rd_le64(file);
  if (hlen > FDM_ST_MAX_HEADER)
    return fdm_seterror("header size %llu is absurd (limit %llu)", (unsigned long long)hlen,
                        (unsigned long long)FDM_ST_MAX_HEADER);
  if (hlen > n - 8)
    return fdm_seterror("header size %llu exceeds the file size %zu (truncated?)", (unsigned long long)hlen, n);
  if (hlen < 2) return fdm_seterror("header too short (%llu bytes)", (unsigned long long)hlen);
  const char *js = (const char *)file + 8;
  if (js[0] != '{') return fdm_seterror("header does not start with '{'");
  jparser j;
  memset(&j, 0, sizeof j);
  j.p = j.start = js; j.end = js + hlen;
  jval *root = NULL;
  if (jvalue(&j, &root) != 0) return fdm_seterror("%s", j.err);
  jws(&j);
  if (j.p != j.end) {
    jfree(root);
    jerr(&j, "trailing characters after the header object");
    return fdm_seterror("%s", j.err);
  }
  out->header_len = hlen;
  out->data = file + 8 + hlen;
  out->data_len = (uint64_t)(n - 8 - hlen);
  int ntensors = 0;
  for (int i = 0; i < root->n; i++) ntensors += strcmp(root->keys[i], "__metadata__") != 0;
  out->e = calloc((size_t)(ntensors ? ntensors : 1), sizeof(fdm_st_entry));
  if (!out->e) { jfree(root); return fdm_seterror("out of memory"); }
  fdm_st_entry **order = NULL;
  for (int i = 0; i < root->n; i++) {
    const char *key = root->keys[i];
    const jval *v = root->items[i];
    if (strcmp(key, "__metadata__") == 0) {
      if (v->type != J_OBJ) { fdm_seterror("__metadata__ is not an object"); goto fail; }
      out->meta = calloc((size_t)(v->n ? v->n : 1), sizeof(fdm_st_meta));
      if (!out->meta) { fdm_seterror("out of memory"); goto fail; }
      for (int k = 0; k < v->n; k++) {
        if (v->items[k]->type != J_STR) {
          fdm_seterror("__metadata__ value of '%s' is not a string", v->keys[k]);
          goto fail;
        }
        out->meta[k].key = strdup(v->keys[k]);
        out->meta[k].value = strdup(v->items[k]->s);
        out->nmeta++;
        if (!out->meta[k].key || !out->meta[k].value) { fdm_seterror("out of memory"); goto fail; }
      }
      continue;
    }
    if (!*key) { fdm_seterror("empty tensor name"); goto fail; }
    fdm_st_entry *e = &out->e[out->n];
    e->name = strdup(key);
    if (!e->name) { fdm_seterror("out of memory"); goto fail; }
    out->n++;
    if (parse_entry(key, v, out->data_len, e) != 0) goto fail;
  }
  jfree(root); root = NULL;
  /* overlaps: sort by offsets; each tensor must begin at or after the previous end */
  order = malloc(sizeof(*order) * (size_t)(out->n ? out->n : 1));
  if (!order) { fdm_seterror("out of memory"); goto fail; }
  for (int i = 0; i < out->n; i++) order[i] = &out->e[i];
  qsort(order, (size_t)out->n, sizeof *order, cmp_begin);
  for (int i = 1; i < out->n; i++)
    if (order[i]->begin < order[i - 1]->end) {
      fdm_seterror("tensors '%s' and '%s' overlap in the data section", order[i - 1]->name, order[i]->name);
      goto fail;
    }
  /* the format packs the tensors: no gap before, between or after them */
  {
    uint64_t at = 0;
    for (int i = 0; i < out->n; i++) {
      if (order[i]->begin != at) {
        if (i == 0) fdm_seterror("gap in the data section: the first tensor ('%s') begins at byte %llu, not 0",
                                 order[i]->name, (unsigned long long)order[i]->begin);
        else fdm_seterror("gap in the data section: %llu bytes between tensors '%s' and '%s'",
                          (unsigned long long)(order[i]->begin - at), order[i - 1]->name, order[i]->name);
        goto fail;
      }
      at = order[i]->end;
    }
    if (at != out->data_len) {
      fdm_seterror("trailing bytes: the data section has %llu bytes, the tensors use %llu",
                   (unsigned long long)out->data_len, (unsigned long long)at);
      goto fail;
    }
  }
  free(order);
  return 0;
fail:
  free(order);
  jfree(root);
  fdm_st_free(out);
  return -1;
}

static float f8_to_float(uint8_t b, int e5m2) {
  int sign = b >> 7;
  int ebits = e5m2 ? 5 : 4, mbits = 7 - ebits, bias = e5m2 ? 15 : 7;
  int e = (b >> mbits) & ((1 << ebits) - 1), m = b & ((1 << mbits) - 1);
  float v;
  if (e5m2 && e == 31) v = m ? __builtin_nanf("") : __builtin_inff();
  else if (!e5m2 && e == 15 && m == 7) v = __builtin_nanf("");
  else if (e == 0) v = (float)m / (float)(1 << mbits) * __builtin_ldexpf(1.0f, 1 - bias);
  else v = (1.0f + (float)m / (float)(1 << mbits)) * __builtin_ldexpf(1.0f, e - bias);
  return sign ? -v : v;
}

void fdm_st_convert(const fdm_st_file *f, const fdm_st_entry *e, void *dst) {
  const uint8_t *s = f->data + e->begin;
  size_t n = (size_t)fdm_st_numel(e), i;
  float *fo = dst;
  int64_t *io = dst;
  switch (e->dtype) {
  case FDM_ST_F64:
    for (i = 0; i < n; i++) { double d; memcpy(&d, s + 8 * i, 8); fo[i] = (float)d; }
    break;
  case FDM_ST_I32:
    for (i = 0; i < n; i++) { int32_t v; memcpy(&v, s + 4 * i, 4); io[i] = v; }
    break;
  case FDM_ST_I16:
    for (i = 0; i < n; i++) { int16_t v; memcpy(&v, s + 2 * i, 2); io[i] = v; }
    break;
  case FDM_ST_I8:
    for (i = 0; i < n; i++) io[i] = (int8_t)s[i];
    break;
  case FDM_ST_U16:
    for (i = 0; i < n; i++) { uint16_t v; memcpy(&v, s + 2 * i, 2); io[i] = v; }
    break;
  case FDM_ST_U32:
    for (i = 0; i < n; i++) { uint32_t v; memcpy(&v, s + 4 * i, 4); io[i] = v; }
    break;
  case FDM_ST_F8_E4M3: case FDM_ST_F8_E5M2:
    for (i = 0; i < n; i++) fo[i] = f8_to_float(s[i], e->dtype == FDM_ST_F8_E5M2);
    break;
  case FDM_ST_BOOL:
    for (i = 0; i < n; i++) ((uint8_t *)dst)[i] = s[i] != 0;
    break;
  default:  /* same layout: F32 F16 BF16 I64 U64 U8 */
    if (n) memcpy(dst, s, n * st_types[e->dtype].size);
  }
}

/* ------------------------------------------------------------------ */
/* writing                                                              */

static int st_code(fdm_dtype d) {
  switch (d) {
  case FDM_FLOAT32: return FDM_ST_F32;
  case FDM_FLOAT16: return FDM_ST_F16;
  case FDM_BFLOAT16: return FDM_ST_BF16;
  case FDM_INT64: return FDM_ST_I64;
  case FDM_UINT8: return FDM_ST_U8;
  case FDM_BOOL: return FDM_ST_BOOL;
  default: return -1;
  }
}

static int put_jstring(fdm_membuf *b, const char *s) {
  static const char hex[] = "0123456789abcdef";
  int r = fdm_membuf_append(b, "\"", 1);
  for (const unsigned char *p = (const unsigned char *)s; *p && !r; p++) {
    char esc[7];
    if (*p == '"' || *p == '\\') { esc[0] = '\\'; esc[1] = (char)*p; r = fdm_membuf_append(b, esc, 2); }
    else if (*p < 0x20) {
      memcpy(esc, "\\u00", 4); esc[4] = hex[*p >> 4]; esc[5] = hex[*p & 15];
      r = fdm_membuf_append(b, esc, 6);
    } else r = fdm_membuf_append(b, p, 1);
  }
  return r ? r : fdm_membuf_append(b, "\"", 1);
}

static int put_str(fdm_membuf *b, const char *s) { return fdm_membuf_append(b, s, strlen(s)); }

static const fdm_st_tensor *sort_base;
static int cmp_write(const void *a, const void *b) {
  const fdm_st_tensor *x = &sort_base[*(const int *)a], *y = &sort_base[*(const int *)b];
  size_t sx = st_types[st_code(x->dtype)].size, sy = st_types[st_code(y->dtype)].size;
  if (sx != sy) return sx > sy ? -1 : 1;
  return strcmp(x->name, y->name);
}

static const fdm_st_meta *meta_base;
static int cmp_meta(const void *a, const void *b) {
  return strcmp(meta_base[*(const int *)a].key, meta_base[*(const int *)b].key);
}

static int valid_utf8(const char *s) {
  size_t n = strlen(s);
  for (size_t i = 0; i < n;) {
    int l = utf8_len((const unsigned char *)s + i, n - i);
    if (!l) return 0;
    i += (size_t)l;
  }
  return 1;
}

static int *write_order(int n, const fdm_st_tensor *t) {
  int *ord = malloc(sizeof(int) * (size_t)(n ? n : 1));
  if (!ord) { fdm_seterror("out of memory"); return NULL; }
  for (int i = 0; i < n; i++) ord[i] = i;
  sort_base = t;
  qsort(ord, (size_t)n, sizeof(int), cmp_write);
  return ord;
}

int fdm_st_serialize(int n, const fdm_st_tensor *t, int nmeta, const fdm_st_meta *meta,
                     fdm_membuf *hdr, uint64_t *data_len) {
  for (int i = 0; i < n; i++) {
    if (!t[i].name || !*t[i].name || !valid_utf8(t[i].name))
      return fdm_seterror("tensor names must be non-empty UTF-8 strings");
    if (strcmp(t[i].name, "__metadata__") == 0) return fdm_seterror("'__metadata__' cannot name a tensor");
    if (st_code(t[i].dtype) < 0) return fdm_seterror("tensor '%s': unsupported dtype", t[i].name);
    if (t[i].ndim < 0 || t[i].ndim > FDM_MAXDIM) return fdm_seterror("tensor '%s': bad ndim", t[i].name);
  }
  for (int i = 0; i < nmeta; i++)
    if (!valid_utf8(meta[i].key) || !valid_utf8(meta[i].value))
      return fdm_seterror("metadata must be UTF-8 strings");
  int *ord = write_order(n, t);
  if (!ord) return -1;
  for (int i = 1; i < n; i++)
    if (strcmp(t[ord[i]].name, t[ord[i - 1]].name) == 0) {
      fdm_seterror("duplicate tensor name '%s'", t[ord[i]].name);
      free(ord); return -1;
    }
  /* metadata in key order, so that equal contents give equal files */
  int *mord = malloc(sizeof(int) * (size_t)(nmeta > 0 ? nmeta : 1));
  if (!mord) { free(ord); return fdm_seterror("out of memory"); }
  for (int i = 0; i < nmeta; i++) mord[i] = i;
  meta_base = meta;
  qsort(mord, (size_t)(nmeta > 0 ? nmeta : 0), sizeof(int), cmp_meta);
  for (int i = 1; i < nmeta; i++)
    if (strcmp(meta[mord[i]].key, meta[mord[i - 1]].key) == 0) {
      fdm_seterror("duplicate metadata key '%s'", meta[mord[i]].key);
      free(mord); free(ord); return -1;
    }
  int r = put_str(hdr, "{");
  int first = 1;
  if (nmeta > 0) {
    r |= put_str(hdr, "\"__metadata__\":{");
    for (int k = 0; k < nmeta; k++) {
      const fdm_st_meta *m = &meta[mord[k]];
      if (k) r |= put_str(hdr, ",");
      r |= put_jstring(hdr, m->key);
      r |= put_str(hdr, ":");
      r |= put_jstring(hdr, m->value);
    }
    r |= put_str(hdr, "}");
    first = 0;
  }
  free(mord);
  uint64_t off = 0;
  char num[64];
  for (int k = 0; k < n && !r; k++) {
    const fdm_st_tensor *x = &t[ord[k]];
    int code = st_code(x->dtype);
    uint64_t nbytes = st_types[code].size;
    if (!first) r |= put_str(hdr, ",");
    first = 0;
    r |= put_jstring(hdr, x->name);
    r |= put_str(hdr, ":{\"dtype\":\"");
    r |= put_str(hdr, st_types[code].name);
    r |= put_str(hdr, "\",\"shape\":[");
    for (int d = 0; d < x->ndim; d++) {
      snprintf(num, sizeof num, "%s%lld", d ? "," : "", (long long)x->shape[d]);
      r |= put_str(hdr, num);
      nbytes *= (uint64_t)x->shape[d];
    }
    snprintf(num, sizeof num, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)off,
             (unsigned long long)(off + nbytes));
    r |= put_str(hdr, num);
    off += nbytes;
  }
  r |= put_str(hdr, "}");
  while (!r && hdr->len % 8) r |= put_str(hdr, " ");
  free(ord);
  if (r) return -1;
  *data_len = off;
  return 0;
}

int fdm_st_write(const char *path, int n, const fdm_st_tensor *t, int nmeta, const fdm_st_meta *meta) {
  fdm_membuf hdr = {0};
  uint64_t dlen;
  if (fdm_st_serialize(n, t, nmeta, meta, &hdr, &dlen) != 0) { fdm_membuf_free(&hdr); return -1; }
  int *ord = write_order(n, t);
  if (!ord) { fdm_membuf_free(&hdr); return -1; }
  fdm_atomic_file *f = fdm_atomic_open(path);
  if (!f) { free(ord); fdm_membuf_free(&hdr); return -1; }
  uint8_t len8[8];
  uint64_t hl = hdr.len;
  for (int i = 0; i < 8; i++) len8[i] = (uint8_t)(hl >> (8 * i));
  int r = fdm_atomic_write(f, len8, 8);
  if (!r) r = fdm_atomic_write(f, hdr.data, hdr.len);
  for (int k = 0; k < n && !r; k++) {
    const fdm_st_tensor *x = &t[ord[k]];
    size_t nbytes = st_types[st_code(x->dtype)].size;
    for (int d = 0; d < x->ndim; d++) nbytes *= (size_t)x->shape[d];
    r = fdm_atomic_write(f, x->data, nbytes);
  }
  free(ord);
  fdm_membuf_free(&hdr);
  if (r) { fdm_atomic_abort(f); return -1; }
  return fdm_atomic_commit(f);
}
