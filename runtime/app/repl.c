/*
** repl.c: fdm's read-eval-print loop. Follows lua.c (a line is first tried
** as `return <line>` so expressions print; a chunk whose syntax error is at
** "<eof>" is incomplete and continues on a ">>" prompt) and adds GNU
** readline editing, a history file and tab completion of Lua names, table
** fields and methods.
*/
#include <errno.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/select.h>
#include <unistd.h>

#include <readline/readline.h>
#include <readline/history.h>

#include <lua.h>
#include <lauxlib.h>

#include "fdm_repl.h"

#define HISTORY_MAX 1000
#define CHAIN_MAX 16        /* __index links followed by completion */

/* ================= completion candidates =================
** Plain Lua, no readline: for "a.b.pre" the string fields of a.b that start
** with "pre"; for "a.b:pre" the methods reachable through the metatable
** __index chain of a.b; for "pre" globals and keywords. Exposed to tests as
** fdm_repl_complete(text) when FDM_TESTING is set. */

static const char *const keywords[] = {
  "and", "break", "do", "else", "elseif", "end", "false", "for", "function",
  "goto", "if", "in", "local", "nil", "not", "or", "repeat", "return", "then",
  "true", "until", "while", NULL
};

static int is_alpha_(char ch) { return ch == '_' || ((ch | 32) >= 'a' && (ch | 32) <= 'z'); }

static int is_ident(const char *s, size_t len) {
  size_t i;
  if (len == 0 || !is_alpha_(s[0])) return 0;
  for (i = 1; i < len; i++)
    if (!is_alpha_(s[i]) && !(s[i] >= '0' && s[i] <= '9')) return 0;
  return 1;
}

typedef struct {
  const char *head; size_t hlen;  /* text up to and including the last '.'/':' */
  const char *pre;  size_t plen;  /* the partial name after it */
  int names, kinds;               /* result tables: array of names, name -> type */
} Cands;

static void add_cand(lua_State *L, Cands *c, const char *key, size_t klen, const char *kind) {
  luaL_Buffer b;
  luaL_buffinit(L, &b);
  luaL_addlstring(&b, c->head, c->hlen);
  luaL_addlstring(&b, key, klen);
  luaL_pushresult(&b);
  lua_pushvalue(L, -1);
  if (lua_rawget(L, c->kinds) != LUA_TNIL) { lua_pop(L, 2); return; }  /* seen */
  lua_pop(L, 1);
  lua_pushvalue(L, -1);
  lua_pushstring(L, kind);
  lua_rawset(L, c->kinds);
  lua_rawseti(L, c->names, (lua_Integer)lua_rawlen(L, c->names) + 1);
}

/* the identifier keys of table t that start with the prefix; only functions
** when funcs. Metamethod-like "__x" keys only when the user typed '_'
** (t:<TAB> should not offer __index), never when nometa. */
static void add_keys(lua_State *L, Cands *c, int t, int funcs, int nometa) {
  lua_pushnil(L);
  while (lua_next(L, t)) {
    if (lua_type(L, -2) == LUA_TSTRING) {
      size_t klen;
      const char *k = lua_tolstring(L, -2, &klen);
      if (is_ident(k, klen) && klen >= c->plen && memcmp(k, c->pre, c->plen) == 0 &&
          (!funcs || lua_isfunction(L, -1)) &&
          !(klen > 2 && k[0] == '_' && k[1] == '_' && (nometa || c->plen == 0)))
        add_cand(L, c, k, klen, luaL_typename(L, -1));
    }
    lua_pop(L, 1);
  }
}

/* what `v.x`/`v:x` finds through metatables: each __index table in the
** chain; when __index is a function (properties computed in C, as tensors
** do), the methods are listed in the metatable's __methods, or kept in the
** metatable itself. */
static void add_chain(lua_State *L, Cands *c, int v, int funcs) {
  int top = lua_gettop(L), d;
  lua_pushvalue(L, v);
  for (d = 0; d < CHAIN_MAX; d++) {
    int cur = lua_gettop(L);
    if (!lua_getmetatable(L, cur)) break;
    lua_pushliteral(L, "__index");
    int t = lua_rawget(L, cur + 1);
    if (t == LUA_TTABLE) {
      add_keys(L, c, cur + 2, funcs, 0);
      lua_copy(L, cur + 2, cur);  /* go on with the __index table */
      lua_settop(L, cur);
      continue;
    }
    if (t == LUA_TFUNCTION) {
      /* a metatable may publish the methods its __index function serves
      ** as __methods (tensors do); else they may sit in the metatable */
      lua_pushliteral(L, "__methods");
      if (lua_rawget(L, cur + 1) == LUA_TTABLE) add_keys(L, c, cur + 3, funcs, 0);
      else add_keys(L, c, cur + 1, funcs, 1);
    }
    break;
  }
  lua_settop(L, top);
}

static int cmp_str(const void *a, const void *b) {
  return strcmp(*(const char *const *)a, *(const char *const *)b);
}

static int index_value(lua_State *L) {
  lua_gettable(L, 1);
  return 1;
}

/* fdm_repl_complete(text) -> sorted array of completions, {name = type} */
static int l_complete(lua_State *L) {
  size_t len, i, n;
  const char *text = luaL_checklstring(L, 1, &len);
  Cands c;
  const char *sep = NULL;
  for (i = len; i > 0; i--)
    if (text[i - 1] == '.' || text[i - 1] == ':') { sep = text + i - 1; break; }
  lua_settop(L, 1);
  lua_newtable(L); c.names = 2;
  lua_newtable(L); c.kinds = 3;
  c.head = text; c.hlen = sep ? (size_t)(sep - text) + 1 : 0;
  c.pre = text + c.hlen; c.plen = len - c.hlen;
  if (!sep) {
    lua_pushglobaltable(L);
    add_keys(L, &c, 4, 0, 0);
    add_chain(L, &c, 4, 0);
    for (i = 0; keywords[i]; i++)
      if (strncmp(keywords[i], text, len) == 0) add_cand(L, &c, keywords[i], strlen(keywords[i]), "keyword");
  } else {
    /* resolve the dotted name before the separator, from _G */
    const char *p = text, *end = sep;
    lua_pushglobaltable(L);
    while (p < end) {
      const char *dot = memchr(p, '.', (size_t)(end - p));
      const char *e = dot ? dot : end;
      if (!is_ident(p, (size_t)(e - p)) || memchr(p, ':', (size_t)(e - p))) goto done;
      if (lua_type(L, -1) != LUA_TTABLE) {  /* indexable only through a metatable */
        if (!lua_getmetatable(L, -1)) goto done;
        lua_pop(L, 1);
      }
      /* may run an __index function: an error there means no completions */
      lua_pushcfunction(L, index_value);
      lua_insert(L, -2);
      lua_pushlstring(L, p, (size_t)(e - p));
      if (lua_pcall(L, 2, 1, 0) != LUA_OK) goto done;
      p = dot ? dot + 1 : end;
      if (dot && p == end) goto done;  /* "a..b" */
    }
    int funcs = *sep == ':';
    if (lua_istable(L, -1)) add_keys(L, &c, 4, funcs, 0);
    add_chain(L, &c, 4, funcs);
  }
done:
  lua_settop(L, 3);
  /* sort: the strings stay referenced by the kinds table meanwhile */
  n = lua_rawlen(L, c.names);
  if (n > 1) {
    const char **v = (const char **)lua_newuserdatauv(L, n * sizeof *v, 0);
    for (i = 0; i < n; i++) {
      lua_rawgeti(L, c.names, (lua_Integer)i + 1);
      v[i] = lua_tostring(L, -1);
      lua_pop(L, 1);
    }
    qsort(v, n, sizeof *v, cmp_str);
    lua_createtable(L, (int)n, 0);
    for (i = 0; i < n; i++) {
      lua_pushstring(L, v[i]);
      lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_replace(L, c.names);
    lua_settop(L, 3);
  }
  return 2;
}

/* ================= readline glue ================= */

static lua_State *replL;        /* readline's callbacks carry no context */
static char **cands;            /* the current completions, for cand_gen */
static int ncands, icand;

static void free_cands(void) {
  int i;
  for (i = 0; i < ncands; i++) free(cands[i]);
  free(cands);
  cands = NULL; ncands = 0;
}

static char *cand_gen(const char *text, int state) {
  (void)text;
  if (state == 0) icand = 0;
  return icand < ncands ? strdup(cands[icand++]) : NULL;
}

static char *no_entries(const char *text, int state) { (void)text; (void)state; return NULL; }

static char **attempt_completion(const char *text, int start, int end) {
  lua_State *L = replL;
  int top = lua_gettop(L), i;
  (void)start; (void)end;
  rl_attempted_completion_over = 1;  /* never fall back to file names */
  free_cands();
  lua_pushcfunction(L, l_complete);
  lua_pushstring(L, text);
  if (lua_pcall(L, 1, 2, 0) == LUA_OK) {
    int n = (int)lua_rawlen(L, -2);
    cands = (char **)malloc((size_t)(n > 0 ? n : 1) * sizeof *cands);
    for (i = 0; cands && i < n; i++) {
      lua_rawgeti(L, -2, i + 1);
      cands[ncands++] = strdup(lua_tostring(L, -1));
      lua_pop(L, 1);
    }
    if (n == 1) {  /* a unique completion: go on with what it is */
      lua_getfield(L, -1, cands[0]);
      const char *k = lua_tostring(L, -1);
      rl_completion_append_character =
        !k ? '\0' : strcmp(k, "function") == 0 ? '(' : strcmp(k, "table") == 0 ? '.' :
        strcmp(k, "keyword") == 0 ? ' ' : '\0';
    }
  }
  lua_settop(L, top);
  return ncands ? rl_completion_matches(text, cand_gen) : NULL;
}

/* lists candidates by their last component ("zeros", not "fdm.zeros") */
static void display_matches(char **matches, int num, int max) {
  char **d = (char **)malloc((size_t)(num + 2) * sizeof *d);
  int i, m = 0;
  (void)max;
  if (!d) return;
  d[0] = matches[0];
  for (i = 1; i <= num; i++) {
    char *s = matches[i], *p = s + strlen(s);
    while (p > s && p[-1] != '.' && p[-1] != ':') p--;
    d[i] = p;
    if ((int)strlen(p) > m) m = (int)strlen(p);
  }
  d[num + 1] = NULL;
  rl_display_match_list(d, num, m);
  rl_forced_update_display();
  free(d);
}

/* ================= history ================= */

static char *history_file;

static void history_open(void) {
  const char *p = getenv("FDM_HISTORY"), *home;
  if (p && *p) history_file = strdup(p);
  else {
    home = getenv("HOME");
    if (!home || !*home) {
      struct passwd *pw = getpwuid(getuid());
      home = pw ? pw->pw_dir : NULL;
    }
    if (home && *home) {
      size_t n = strlen(home) + sizeof "/.fdm_history";
      history_file = (char *)malloc(n);
      if (history_file) snprintf(history_file, n, "%s/.fdm_history", home);
    }
  }
  /* timestamp lines ("#<time>") separate entries, so that multi-line
  ** chunks come back whole */
  history_write_timestamps = 1;
  history_comment_char = '#';
  if (!history_file) return;
  /* but a file without them (older, hand-made) has one entry a line:
  ** joining its lines would make one huge entry */
  FILE *f = fopen(history_file, "r");
  int c0 = f ? getc(f) : EOF, c1 = f ? getc(f) : EOF;
  if (f) fclose(f);
  history_multiline_entries = c0 == EOF || (c0 == '#' && c1 >= '0' && c1 <= '9');
  read_history(history_file);  /* failures (no file, no home) are fine */
  if (access(history_file, F_OK) != 0) write_history(history_file);
}

/* saved at once, so os.exit() or a crash loses nothing */
static void history_save(const char *chunk) {
  HIST_ENTRY *last;
  if (!*chunk) return;
  last = history_length > 0 ? history_get(history_base + history_length - 1) : NULL;
  if (last && strcmp(last->line, chunk) == 0) return;
  add_history(chunk);
  if (history_file) append_history(1, history_file);
}

static void history_close(void) {
  if (history_file) history_truncate_file(history_file, HISTORY_MAX);
  free(history_file);
  history_file = NULL;
}

/* ================= reading lines ================= */

static int interactive;
static volatile sig_atomic_t got_sigint;
static char *rl_line;
static int rl_done_line;

static void on_sigint(int sig) { (void)sig; got_sigint = 1; }

static void on_line(char *line) {
  rl_line = line;
  rl_done_line = 1;
  rl_callback_handler_remove();
}

#define READ_EOF  (-1)
#define READ_INTR (-2)

/* reads one line into *out (malloc'd, no '\n'). Interactive input goes
** through readline's callback interface: we wait in select(), which a
** Ctrl-C interrupts, and then drop the line being edited and start over
** (readline() itself would only return once Enter is pressed). */
static int read_line(const char *prompt, char **out) {
  struct sigaction sa, old;
  int status = 0;
  *out = NULL;
  if (!interactive) {
    size_t cap = 0;
    ssize_t n = getline(out, &cap, stdin);
    if (n < 0) { free(*out); *out = NULL; return READ_EOF; }
    if (n > 0 && (*out)[n - 1] == '\n') (*out)[n - 1] = '\0';
    return 0;
  }
  memset(&sa, 0, sizeof sa);
  sa.sa_handler = on_sigint;  /* no SA_RESTART: select() must see EINTR */
  sigemptyset(&sa.sa_mask);
  sigaction(SIGINT, &sa, &old);
  got_sigint = 0;
  rl_done_line = 0;
  rl_line = NULL;
  rl_callback_handler_install(prompt, on_line);
  while (!rl_done_line) {
    if (!got_sigint) {
      fd_set fds;
      int fd = fileno(rl_instream);
      FD_ZERO(&fds);
      FD_SET(fd, &fds);
      int r = select(fd + 1, &fds, NULL, NULL, NULL);
      if (r > 0) { rl_callback_read_char(); continue; }
      if (r < 0 && errno != EINTR) { rl_callback_handler_remove(); break; }
    }
    if (got_sigint) {
      rl_free_line_state();
      rl_callback_sigcleanup();
      rl_cleanup_after_signal();
      rl_callback_handler_remove();
      fputs("\n", stdout);
      fflush(stdout);
      status = READ_INTR;
      break;
    }
  }
  sigaction(SIGINT, &old, NULL);
  if (status == READ_INTR) { free(rl_line); return READ_INTR; }
  if (!rl_line) return READ_EOF;
  *out = rl_line;
  return 0;
}

static const char *get_prompt(lua_State *L, int first) {
  const char *p;
  lua_getglobal(L, first ? "_PROMPT" : "_PROMPT2");
  p = lua_tostring(L, -1);
  lua_pop(L, 1);  /* the global keeps the string alive */
  return p ? p : first ? "> " : ">> ";
}

/* ================= the loop ================= */

#define CHUNK_NONE (-10)   /* nothing to run: an interrupted or empty read */

static int incomplete(lua_State *L, int status) {
  size_t len;
  const char *msg;
  if (status != LUA_ERRSYNTAX) return 0;
  msg = lua_tolstring(L, -1, &len);
  return len >= 5 && strcmp(msg + len - 5, "<eof>") == 0;
}

/* reads a chunk and compiles it: LUA_OK with the function on the stack, an
** error status with the message, READ_EOF, or CHUNK_NONE */
static int load_chunk(lua_State *L) {
  char *line;
  int status = read_line(get_prompt(L, 1), &line);
  if (status == READ_INTR) return CHUNK_NONE;
  if (status == READ_EOF) return READ_EOF;
  /* "=expr" is accepted, as in Lua 5.2 */
  lua_pushstring(L, line[0] == '=' ? line + 1 : line);
  free(line);
  /* first as an expression, so its values print */
  const char *ret = lua_pushfstring(L, "return %s;", lua_tostring(L, -1));
  status = luaL_loadbuffer(L, ret, strlen(ret), "=stdin");
  if (status == LUA_OK) {
    lua_remove(L, -2);
    if (interactive) history_save(lua_tostring(L, -2));
    lua_remove(L, -2);
    return LUA_OK;
  }
  lua_pop(L, 2);
  for (;;) {  /* then as statements, reading more lines while incomplete */
    size_t len;
    const char *src = lua_tolstring(L, -1, &len);
    status = luaL_loadbuffer(L, src, len, "=stdin");
    if (!incomplete(L, status)) break;
    if ((status = read_line(get_prompt(L, 0), &line)) == READ_INTR) {
      lua_pop(L, 2);
      return CHUNK_NONE;
    }
    if (status == READ_EOF) {
      status = LUA_ERRSYNTAX;  /* report the "<eof>" error */
      break;
    }
    lua_pop(L, 1);
    lua_pushliteral(L, "\n");
    lua_pushstring(L, line);
    free(line);
    lua_concat(L, 3);
  }
  if (interactive) history_save(lua_tostring(L, -2));
  lua_remove(L, -2);
  return status;
}

/* the values of a chunk, tab-separated, through tostring (__tostring) */
static int print_values(lua_State *L) {
  int i, n = lua_gettop(L);
  for (i = 1; i <= n; i++) {
    size_t len;
    const char *s;
    /* plain tables (t.shape, options) through fdm.repr: {1, 4, 8, 8} */
    if (lua_type(L, i) == LUA_TTABLE && !luaL_getmetafield(L, i, "__tostring") &&
        lua_getglobal(L, "fdm") == LUA_TTABLE && lua_getfield(L, -1, "repr") == LUA_TFUNCTION) {
      lua_pushvalue(L, i);
      if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_type(L, -1) == LUA_TSTRING) {
        s = lua_tolstring(L, -1, &len);
        if (i > 1) fputc('\t', stdout);
        fwrite(s, 1, len, stdout);
        lua_pop(L, 2);
        continue;
      }
      lua_pop(L, 2);
    } else if (lua_type(L, i) == LUA_TTABLE) {
      lua_settop(L, n);
    } else if (luaL_testudata(L, i, "fdm.Tensor")) {
      lua_settop(L, n);
      /* a big tensor prints a one-line summary (shape, dtype, min/max/mean)
      ** above its elided values */
      if (lua_getglobal(L, "fdm") == LUA_TTABLE && lua_getfield(L, -1, "summary") == LUA_TFUNCTION) {
        lua_pushvalue(L, i);
        if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_type(L, -1) == LUA_TSTRING &&
            lua_getfield(L, -2, "numel") == LUA_TFUNCTION) {
          lua_pushvalue(L, i);
          if (lua_pcall(L, 1, 1, 0) == LUA_OK && lua_tointeger(L, -1) > 1000)
            printf("%s\n", lua_tostring(L, -2));
        }
      }
      lua_settop(L, n);
    }
    s = luaL_tolstring(L, i, &len);
    if (i > 1) fputc('\t', stdout);
    fwrite(s, 1, len, stdout);
    lua_pop(L, 1);
  }
  fputc('\n', stdout);
  fflush(stdout);
  return 0;
}

void fdm_repl(lua_State *L) {
  int top = lua_gettop(L), status;
  replL = L;
  interactive = isatty(0);
  if (interactive) {
    rl_readline_name = "fdm";  /* for $if fdm in ~/.inputrc */
    rl_attempted_completion_function = attempt_completion;
    rl_completion_entry_function = no_entries;
    rl_completion_display_matches_hook = display_matches;
    /* '.' and ':' are not breaks: the word is the whole "fdm.F.con" */
    rl_basic_word_break_characters = " \t\n\"'`@$><=;|&{}()[],+-*/%^~#";
    rl_completer_word_break_characters = (char *)rl_basic_word_break_characters;
    rl_catch_signals = 0;  /* SIGINT is ours (read_line, fdm_docall) */
    history_open();
    printf("%s %s (%s) \xe2\x80\x94 type help() or fdm.<TAB>\n",
           FDM_PROGNAME, FDM_VERSION, LUA_VERSION);
    fflush(stdout);
  }
  while ((status = load_chunk(L)) != READ_EOF) {
    if (status == LUA_OK) {
      int base = lua_gettop(L) - 1;
      status = fdm_docall(L, 0, LUA_MULTRET);
      if (status == LUA_OK && lua_gettop(L) > base) {
        lua_pushcfunction(L, print_values);
        lua_insert(L, base + 1);
        if (lua_pcall(L, lua_gettop(L) - base - 1, 0, 0) != LUA_OK) {
          lua_pushfstring(L, "error calling 'print' (%s)", lua_tostring(L, -1));
          status = LUA_ERRRUN;
        }
      }
    }
    if (status != CHUNK_NONE) fdm_report(L, status);
    lua_settop(L, top);
  }
  if (interactive) {
    fputs("\n", stdout);
    fflush(stdout);
    history_close();
    free_cands();
  }
  lua_settop(L, top);
}

/* ================= help() ================= */

static int l_help(lua_State *L) {
  const char *docs = lua_tostring(L, lua_upvalueindex(1));
  printf(
    "fdm: tensors, autograd and diffusion/flow-matching models in Lua.\n"
    "The API reference is %s%s.\n"
    "The library is the global table `fdm`; fdm.<TAB> lists it, t:<TAB> a tensor's methods.\n"
    "Try:\n"
    "  t = fdm.randn(2, 3)            -- a 2x3 tensor of N(0, 1) samples\n"
    "  t, t.shape, t:sum()            -- expressions print their values\n"
    "  fdm.F.softmax(t, -1)           -- neural-network ops are in fdm.F\n"
    "  x = fdm.ones(3, {requires_grad = true})\n"
    "  (x * x):sum():backward()\n"
    "  x.grad                         -- 2 * x\n"
    "Models (fdm.diffusion, fdm.ddpm_model, fdm.deepfloyd, ... load on first use):\n"
    "  m = fdm.ddpm_model.load()      -- the shipped MNIST DDPM (docs/partA.md)\n"
    "  x = fdm.diffusion.sample(m, 4, {cond = m:encode(\"7\"), uncond = m:encode(\"\"), cfg = 5})\n"
    "  fdm.io.save_grid(\"sevens.png\", fdm.ddpm_model.from_model(x))\n"
    "  m = fdm.deepfloyd.load(\"DeepFloyd/IF-I-M-v1.0\")   -- IF, with its weights (docs/deepfloyd.md)\n"
    "Ctrl-C interrupts a running chunk; Ctrl-D leaves. History is kept in\n"
    "~/.fdm_history (FDM_HISTORY overrides).\n",
    docs ? docs : "docs/api.md", docs ? "" : " in the fdm source tree");
  fflush(stdout);
  return 0;
}

void fdm_repl_open(lua_State *L, const char *docs) {
  if (docs) lua_pushstring(L, docs); else lua_pushnil(L);
  lua_pushcclosure(L, l_help, 1);
  lua_setglobal(L, "help");
  if (getenv("FDM_TESTING")) {
    lua_pushcfunction(L, l_complete);
    lua_setglobal(L, "fdm_repl_complete");
  }
}
