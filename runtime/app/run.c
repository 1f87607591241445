/*
** run.c: running a Lua chunk for the fdm executable (main.c and the REPL):
** a message handler that adds tracebacks, one-line usage errors, Ctrl-C as
** the Lua error "interrupted!", and reporting errors on stderr.
*/
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <lua.h>
#include <lauxlib.h>

#include "fdm_repl.h"

/* ---- Ctrl-C while a chunk runs (as lua.c) ----
** A signal handler may not touch the Lua state, except lua_sethook, which is
** meant for this: the hook runs at the next instruction and raises the error
** in Lua's own context, so it unwinds through pcall cleanly. */
static lua_State *globalL = NULL;

static void lstop(lua_State *L, lua_Debug *ar) {
  (void)ar;
  lua_sethook(L, NULL, 0, 0);
  luaL_error(L, "interrupted!");
}

static void laction(int sig) {
  int flag = LUA_MASKCALL | LUA_MASKRET | LUA_MASKLINE | LUA_MASKCOUNT;
  signal(sig, SIG_DFL);  /* a second Ctrl-C before the hook fires kills, as in lua */
  lua_sethook(globalL, lstop, flag, 1);
}

/* set when the error being reported is a usage error (fdm.cli.usage_error):
** a table whose metatable is named "fdm.UsageError". Such errors are the
** user's mistakes, told in one line: no stack trace (unless FDM_DEBUG=1),
** and exit status 2. Every other error is a bug and keeps its trace. */
static int usage_error_raised = 0;

static int is_usage_error(lua_State *L, int idx) {
  int yes = 0;
  if (lua_type(L, idx) == LUA_TTABLE && luaL_getmetafield(L, idx, "__name") != LUA_TNIL) {
    const char *name = lua_tostring(L, -1);
    yes = name && strcmp(name, "fdm.UsageError") == 0;
    lua_pop(L, 1);
  }
  return yes;
}

static int debug_wanted(void) {
  const char *d = getenv("FDM_DEBUG");
  return d && *d && strcmp(d, "0") != 0;
}

/* adds a traceback to string messages; turns other error objects into text */
static int msghandler(lua_State *L) {
  if (is_usage_error(L, 1)) {
    usage_error_raised = 1;
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING) {
      if (!debug_wanted()) return 1;
      luaL_traceback(L, L, lua_tostring(L, -1), 1);
      return 1;
    }
  }
  const char *msg = lua_tostring(L, 1);
  if (msg == NULL) {
    if (luaL_callmeta(L, 1, "__tostring") && lua_type(L, -1) == LUA_TSTRING)
      return 1;
    msg = lua_pushfstring(L, "(error object is a %s value)", luaL_typename(L, 1));
  }
  luaL_traceback(L, L, msg, 1);
  return 1;
}

int fdm_usage_error_raised(void) { return usage_error_raised; }

int fdm_docall(lua_State *L, int narg, int nres) {
  int status;
  int base = lua_gettop(L) - narg;
  lua_pushcfunction(L, msghandler);
  lua_insert(L, base);
  usage_error_raised = 0;
  globalL = L;
  signal(SIGINT, laction);
  status = lua_pcall(L, narg, nres, base);
  signal(SIGINT, SIG_DFL);
  lua_remove(L, base);
  return status;
}

int fdm_report(lua_State *L, int status) {
  if (status != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    fflush(stdout);  /* keep the script's output before the error in pipes */
    fprintf(stderr, "%s: %s\n", FDM_PROGNAME, msg ? msg : "(error object is not a string)");
    fflush(stderr);
    lua_pop(L, 1);
  }
  return status;
}

