/*
** fdm_repl.h: what runtime/app/main.c (argument handling, state setup),
** runtime/app/repl.c (the interactive loop) and runtime/app/run.c (running
** chunks) share. main.c uses repl.c and run.c; repl.c uses run.c.
*/
#ifndef FDM_REPL_H
#define FDM_REPL_H

#include <lua.h>
#include "fdm.h"   /* FDM_VERSION */

#define FDM_PROGNAME "fdm"

/* run.c: calls the function on the stack below its narg arguments with a
** traceback message handler and Ctrl-C turned into the Lua error
** "interrupted!"; returns the lua_pcall status (the message on top). */
int fdm_docall(lua_State *L, int narg, int nres);
/* run.c: when status is not LUA_OK, prints "fdm: <message>" to stderr and
** pops the message; returns status. */
int fdm_report(lua_State *L, int status);
/* run.c: whether the last error fdm_docall caught was a usage error
** (fdm.cli.usage_error): the user's mistake, exit status 2 */
int fdm_usage_error_raised(void);

/* repl.c: defines the global help() (docs is the path of docs/api.md, or
** NULL when it is not on this machine) and, when FDM_TESTING is set in the
** environment, the global fdm_repl_complete(text) used by tests/cli_spec.lua. */
void fdm_repl_open(lua_State *L, const char *docs);
/* repl.c: the read-eval-print loop. With readline, prompts, banner and
** history when stdin is a terminal; otherwise reads stdin line by line,
** silently, still printing results. Returns when input ends. */
void fdm_repl(lua_State *L);

#endif
