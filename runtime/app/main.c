/*
** main.c: the `fdm` executable. A lua5.4-style standalone interpreter whose
** state comes with the fdm library preloaded: `fdm` is a global in scripts,
** in -e code and in the REPL (runtime/app/repl.c); chunks run through
** runtime/app/run.c. This file only handles the command line and sets up
** the state; it is modelled on lua.c so that
** `fdm script.lua a b` behaves as `lua script.lua a b` does.
*/
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <lua.h>
#include <lauxlib.h>
#include <lualib.h>

#include "fdm_lua.h"
#include "fdm_repl.h"

static const char *usage_text =
  "usage: " FDM_PROGNAME " [options] [script [args]]\n"
  "Available options are:\n"
  "  -e code        run the string 'code'\n"
  "  -l mod         require library 'mod' into global 'mod'\n"
  "  -i             enter the REPL after running script or -e code\n"
  "  -v, --version  show version information\n"
  "  -h, --help     show this help\n"
  "  --             stop handling options\n"
  "  -              run stdin as a script and stop handling options\n"
  "With no script and no -e, opens the REPL (stdin a terminal) or runs stdin.\n"
  "A script that is not a file names one of fdm's scripts: `fdm anagram` runs\n"
  "scripts/anagram.lua of the installation (or of the source tree), and\n"
  "`fdm anagram --help` lists its options.\n"
  "Environment: FDM_LUA_PATH (Lua library directory or ?-templates),\n"
  "FDM_SCRIPTS (where `fdm NAME` looks first), FDM_WEIGHTS (directories of\n"
  "weight files, ':'-separated), FDM_DEBUG=1 (stack traces for usage errors too),\n"
  "FDM_HISTORY (REPL history file, default ~/.fdm_history), FDM_DEVICE (the\n"
  "scripts' default device: --device auto picks it, else the GPU when one\n"
  "answers, else the CPU).\n";

/* exit status of a usage error: what the user typed was wrong (lua.c has
** no such case; 2 is what getopt-style tools use) */
#define EXIT_USAGE 2

/* ---- the Lua library path ---- */

static int file_exists(const char *path) { return access(path, R_OK) == 0; }

/* prepends to package.path where the fdm Lua files live: FDM_LUA_PATH (a
** directory, or templates when it contains '?'), else next to the
** executable: the build tree (build/fdm -> lua/) or an install
** (PREFIX/bin/fdm -> PREFIX/share/lua/5.4). Also returns in docs the path
** of docs/api.md when running from the source tree. */
static void set_lua_path(lua_State *L, char *docs, size_t ndocs) {
  char exe[PATH_MAX], buf[PATH_MAX + 64];  /* exe: the executable, then its root */
  const char *env = getenv("FDM_LUA_PATH");
  luaL_Buffer b;
  docs[0] = '\0';
  luaL_buffinit(L, &b);
  if (env && *env) {
    if (strchr(env, '?')) luaL_addstring(&b, env);
    else {
      lua_pushfstring(L, "%s/?.lua;%s/?/init.lua", env, env);
      luaL_addvalue(&b);
    }
  }
  ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
  if (n > 0) {
    exe[n] = '\0';
    for (int up = 0; up < 2; up++) {  /* .../build/fdm -> ... (the root) */
      char *slash = strrchr(exe, '/');
      if (slash) *slash = '\0';
    }
    const char *dir = NULL;
    snprintf(buf, sizeof buf, "%s/lua/fdm/init.lua", exe);
    if (file_exists(buf)) {
      dir = "lua";
      snprintf(buf, sizeof buf, "%s/docs/api.md", exe);
      if (file_exists(buf) && ndocs >= PATH_MAX && realpath(buf, docs) == NULL)
        docs[0] = '\0';
    } else {
      dir = "share/lua/5.4";   /* installed: the docs are in share/doc/fdm (make install) */
      snprintf(buf, sizeof buf, "%s/share/doc/fdm/docs/api.md", exe);
      if (file_exists(buf) && ndocs >= PATH_MAX && realpath(buf, docs) == NULL)
        docs[0] = '\0';
    }
    if (!(env && *env)) {
      lua_pushfstring(L, "%s/%s/?.lua;%s/%s/?/init.lua", exe, dir, exe, dir);
      luaL_addvalue(&b);
    }
  }
  luaL_pushresult(&b);
  if (lua_rawlen(L, -1) == 0) { lua_pop(L, 1); return; }
  lua_getglobal(L, "package");
  lua_getfield(L, -1, "path");
  lua_pushfstring(L, "%s;%s", lua_tostring(L, -3), lua_tostring(L, -1));
  lua_setfield(L, -3, "path");
  lua_pop(L, 3);
}

/* ---- the command line ---- */

typedef struct {
  int script;     /* index in argv of the script, 0 when none */
  int has_e, has_l, has_i, has_v, has_h;
} Args;

/* first pass: checks options; returns 0 on a bad option (usage printed) */
static int collect_args(int argc, char **argv, Args *a) {
  int i;
  memset(a, 0, sizeof *a);
  for (i = 1; i < argc; i++) {
    const char *o = argv[i];
    if (o[0] != '-') break;                /* the script */
    if (o[1] == '\0') break;               /* "-": stdin is the script */
    if (strcmp(o, "--") == 0) { i++; break; }
    if (strcmp(o, "--help") == 0) { a->has_h = 1; continue; }
    if (strcmp(o, "--version") == 0) { a->has_v = 1; continue; }
    switch (o[1]) {
    case 'e': case 'l':
      if (o[1] == 'e') a->has_e = 1; else a->has_l = 1;
      if (o[2] == '\0' && ++i >= argc) {
        fprintf(stderr, "%s: option '%s' needs an argument (%s)\n", FDM_PROGNAME, o,
                o[1] == 'e' ? "the Lua code to run" : "the module to require");
        return 0;
      }
      break;
    case 'i': case 'v': case 'h':
      if (o[2] != '\0') goto bad;
      if (o[1] == 'i') a->has_i = 1;
      if (o[1] == 'v') a->has_v = 1;
      if (o[1] == 'h') a->has_h = 1;
      break;
    default: bad:
      fprintf(stderr, "%s: unrecognized option '%s' (options: -e code, -l mod, -i, -v, -h, --help, --version, --, -)\n",
              FDM_PROGNAME, o);
      return 0;
    }
  }
  a->script = i < argc ? i : 0;
  return 1;
}

/* ---- `fdm NAME`: fdm's own scripts by name ---- */

/* the directory above the executable's: the source tree for build/fdm,
** PREFIX for PREFIX/bin/fdm; "" when unknown */
static void exe_root(char *root, size_t n) {
  char exe[PATH_MAX];
  ssize_t len = readlink("/proc/self/exe", exe, sizeof exe - 1);
  root[0] = '\0';
  if (len <= 0) return;
  exe[len] = '\0';
  for (int up = 0; up < 2; up++) {
    char *slash = strrchr(exe, '/');
    if (slash) *slash = '\0';
  }
  snprintf(root, n, "%s", exe);
}

static int is_regular_file(const char *path) {
  struct stat st;
  return stat(path, &st) == 0 && S_ISREG(st.st_mode);
}

/* The directories `fdm NAME` looks in, in order: FDM_SCRIPTS, the source
** tree's scripts/ (build/fdm), the installed PREFIX/share/fdm/scripts. */
static int script_dirs(char dirs[][PATH_MAX], int max) {
  char root[PATH_MAX];
  int n = 0;
  const char *env = getenv("FDM_SCRIPTS");
  if (env && *env && n < max) snprintf(dirs[n++], PATH_MAX, "%s", env);
  exe_root(root, sizeof root);
  if (root[0]) {
    if (n < max) snprintf(dirs[n++], PATH_MAX, "%.*s/scripts", PATH_MAX - 16, root);
    if (n < max) snprintf(dirs[n++], PATH_MAX, "%.*s/share/fdm/scripts", PATH_MAX - 24, root);
  }
  return n;
}

/* When the script argument is not a file, finds fdm's script of that name:
** DIR/NAME, DIR/NAME.lua, and for "scripts/X" DIR/X (so the source tree's
** `fdm scripts/anagram.lua` works from any directory). Returns the path in
** found, or 0 after printing a one-line error. */
static int find_script(const char *name, char *found, size_t nfound) {
  char dirs[3][PATH_MAX];
  if (strcmp(name, "-") == 0 || is_regular_file(name)) {
    snprintf(found, nfound, "%s", name);
    return 1;
  }
  int nd = script_dirs(dirs, 3);
  const char *bare = strncmp(name, "scripts/", 8) == 0 ? name + 8 : name;
  if (name[0] != '/')
    for (int d = 0; d < nd; d++) {
      const char *forms[2] = {"%s/%s", "%s/%s.lua"};
      for (int f = 0; f < 2; f++) {
        char path[2 * PATH_MAX + 8];
        snprintf(path, sizeof path, forms[f], dirs[d], bare);
        if (strlen(path) < nfound && is_regular_file(path)) {
          snprintf(found, nfound, "%s", path);
          return 1;
        }
      }
    }
  fprintf(stderr, "%s: cannot open %s: no such file%s", FDM_PROGNAME, name,
          name[0] == '/' || nd == 0 ? "" : ", and no script of that name in");
  if (name[0] != '/')
    for (int d = 0; d < nd; d++) fprintf(stderr, "%s %s", d ? "," : "", dirs[d]);
  fprintf(stderr, "\n");
  return 0;
}

/* arg[0] = script, arg[1..] its arguments, interpreter and options at
** negative indices (lua.c's layout) */
static void create_arg_table(lua_State *L, int argc, char **argv, int script) {
  int i;
  lua_createtable(L, argc > script ? argc - script - 1 : 0, script + 1);
  for (i = 0; i < argc; i++) {
    lua_pushstring(L, argv[i]);
    lua_rawseti(L, -2, i - script);
  }
  lua_setglobal(L, "arg");
}

/* second pass: -e code and -l mod, in command-line order */
static int run_options(lua_State *L, int argc, char **argv, int last) {
  int i;
  for (i = 1; i < last && i < argc; i++) {
    const char *o = argv[i];
    if (strcmp(o, "--") == 0) break;
    if (o[1] != 'e' && o[1] != 'l') continue;
    const char *x = o[2] ? o + 2 : argv[++i];
    int status;
    if (o[1] == 'e') {
      status = luaL_loadbuffer(L, x, strlen(x), "=(command line)");
      if (status == LUA_OK) status = fdm_docall(L, 0, 0);
    } else {
      lua_getglobal(L, "require");
      lua_pushstring(L, x);
      status = fdm_docall(L, 1, 1);
      if (status == LUA_OK) lua_setglobal(L, x);
    }
    if (fdm_report(L, status) != LUA_OK) return 0;
  }
  return 1;
}

/* runs the file fname (NULL: stdin) with args[0..n-1] as its ... */
static int run_file(lua_State *L, const char *fname, char **args, int n) {
  int i, status = luaL_loadfile(L, fname);
  if (status == LUA_OK) {
    luaL_checkstack(L, n + 3, "too many arguments to script");
    for (i = 0; i < n; i++) lua_pushstring(L, args[i]);
    status = fdm_docall(L, n, 0);
  }
  return fdm_report(L, status) == LUA_OK;
}

static int run_script(lua_State *L, int argc, char **argv, int script) {
  const char *fname = argv[script];
  if (strcmp(fname, "-") == 0 && strcmp(argv[script - 1], "--") != 0)
    fname = NULL;  /* "-" is stdin, unless after "--" */
  return run_file(L, fname, argv + script + 1, argc - script - 1);
}

static int pmain(lua_State *L) {
  int argc = (int)lua_tointeger(L, 1);
  char **argv = (char **)lua_touserdata(L, 2);
  Args *a = (Args *)lua_touserdata(L, 3);
  char docs[PATH_MAX];
  int status;

  luaL_checkversion(L);
  luaL_openlibs(L);
  /* the C core is linked into this binary: `require "fdm.core"` (from
  ** lua/fdm/init.lua) must find it here rather than look for core.so */
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
  lua_pushcfunction(L, luaopen_fdm_core);
  lua_setfield(L, -2, "fdm.core");
  lua_pop(L, 1);
  set_lua_path(L, docs, sizeof docs);
  create_arg_table(L, argc, argv, a->script);

  lua_getglobal(L, "require");
  lua_pushliteral(L, "fdm");
  status = fdm_docall(L, 1, 1);
  if (fdm_report(L, status) != LUA_OK) return 0;
  lua_setglobal(L, "fdm");
  fdm_repl_open(L, docs[0] ? docs : NULL);

  if (!run_options(L, argc, argv, a->script ? a->script : argc)) return 0;
  if (a->script && !run_script(L, argc, argv, a->script)) return 0;
  if (a->has_i)
    fdm_repl(L);
  else if (a->script == 0 && !a->has_e && !a->has_v) {
    if (isatty(0)) fdm_repl(L);
    else if (!run_file(L, NULL, NULL, 0)) return 0;  /* piped: a script, as lua */
  }
  lua_pushboolean(L, 1);
  return 1;
}

/* OpenMP threads that spin while waiting for work steal the cores from
** everything else (and from OpenBLAS): measured on the 2-core machine under
** load, a small training step took 17 ms with spinning and 1.6 ms with
** passive waiting (PERFORMANCE.md has the idle-machine comparison).
** libgomp reads the policy from the environment when it loads,
** before main, so fdm re-executes itself once with the variable set unless
** the user chose a policy. */
/* FDM_CPU_ISA=avx2 forces the AVX2 path on an AVX-512 machine: OpenBLAS
** picks its kernels when it loads, from OPENBLAS_CORETYPE, so that is set
** (Haswell) before the same re-execution. */
static void prefer_passive_openmp(char **argv) {
  if (getenv("FDM_NO_REEXEC")) return;
  int again = 0;
  const char *isa = getenv("FDM_CPU_ISA");
  if (isa && (!strcmp(isa, "avx2") || !strcmp(isa, "AVX2")) && !getenv("OPENBLAS_CORETYPE")) {
    setenv("OPENBLAS_CORETYPE", "Haswell", 1);
    again = 1;
  }
  if (!getenv("OMP_WAIT_POLICY")) { setenv("OMP_WAIT_POLICY", "passive", 1); again = 1; }
  if (!again) return;
  setenv("FDM_NO_REEXEC", "1", 1);
  execv("/proc/self/exe", argv);   /* returns only on failure: carry on as we are */
}

int main(int argc, char **argv) {
  Args a;
  if (argc < 1 || argv[0] == NULL) { static char *none[] = {FDM_PROGNAME, NULL}; argc = 1; argv = none; }
  prefer_passive_openmp(argv);
  if (!collect_args(argc, argv, &a)) return EXIT_USAGE;
  if (a.has_h) { fputs(usage_text, stdout); return EXIT_SUCCESS; }
  if (a.has_v) {
    printf("%s %s (%s)\n", FDM_PROGNAME, FDM_VERSION, LUA_RELEASE);
    fflush(stdout);
    if (!a.script && !a.has_e && !a.has_l && !a.has_i) return EXIT_SUCCESS;  /* `fdm -v` alone */
  }
  static char script_path[PATH_MAX];
  if (a.script && !(strcmp(argv[a.script], "-") == 0 && strcmp(argv[a.script - 1], "--") != 0)) {
    if (!find_script(argv[a.script], script_path, sizeof script_path)) return EXIT_USAGE;
    argv[a.script] = script_path;   /* arg[0] is the script found: scripts find their neighbours from it */
  }
  lua_State *L = luaL_newstate();
  if (L == NULL) {
    fprintf(stderr, "%s: cannot create state: not enough memory\n", FDM_PROGNAME);
    return EXIT_FAILURE;
  }
  /* everything that may raise runs inside pmain, so even a memory error
  ** during setup is reported instead of aborting */
  lua_pushcfunction(L, pmain);
  lua_pushinteger(L, argc);
  lua_pushlightuserdata(L, argv);
  lua_pushlightuserdata(L, &a);
  int status = lua_pcall(L, 3, 1, 0);
  int ok = status == LUA_OK && lua_toboolean(L, -1);
  fdm_report(L, status);
  lua_close(L);
  return ok ? EXIT_SUCCESS : fdm_usage_error_raised() ? EXIT_USAGE : EXIT_FAILURE;
}
