/*
** fdm_repl.h: what runtime/app/main.c (argument handling, state setup) and
** runtime/app/repl.c (the interactive loop) share.
*/
#ifndef FDM_REPL_H
#define FDM_REPL_H

#include <lua.h>
#include "fdm.h"   /* FDM_VERSION */

#define FDM_PROGNAME "fdm"

/* main.c: calls the function on the stack below its narg arguments with a
** traceback message handler and Ctrl-C turned into the Lua error
** "interrupted!"; returns the lua_pcall status (the message on top). */
int fdm_docall(lua_State *L, int narg, int nres);
/* main.c: when status is not LUA_OK, prints "fdm: <message>" to stderr and
** pops the message; returns status. */
int fdm_report(lua_State *L, int status);

/* repl.c: defines the global help() (docs is the path of docs/api.md, or
** NULL when it is not on this machine) and, when FDM_TESTING is set in the
** environment, the global fdm_repl_complete(text) used by tests/cli_spec.lua. */
void fdm_repl_open(lua_State *L, const char *docs);
/* repl.c: the read-eval-print loop. With readline, prompts, banner and
** history when stdin is a terminal; otherwise reads stdin line by line,
** silently, still printing results. Returns when input ends. */
void fdm_repl(lua_State *L);

#endif
