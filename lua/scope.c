/* Cancel scopes: the machinery behind loom.timeout, group cancellation and
 * loom.shield. A scope belongs to the task that opened it (or to the code
 * outside tasks). Once it expires, by deadline or by cancel(), the wait its
 * owner is in ends with an error, and so does every later wait inside the
 * scope until it is closed: work cannot shrug a timeout off by catching one
 * error. A shield scope hides the scopes around it, and its task's cancel,
 * so cleanup can wait. */
#include "lm.h"

typedef struct lm_scope lm_scope;
struct lm_scope {
  lm_ctx *ctx;
  lm_task *task; /* owner; NULL for code outside tasks */
  lm_scope *outer;
  loom_timer_t timer;
  double seconds;
  unsigned char active, expired, shield;
  const char *kind; /* of the error raised once expired */
};

#define LM_SCOPE_MT "loom.scope"

static lm_scope **owner_list(lm_ctx *ctx, lm_task *t) {
  return t ? &t->scopes : &ctx->outside_scopes;
}

/* The outermost expired scope not hidden behind a shield, or NULL. */
lm_scope *lm_scope_expired(lm_scope *innermost) {
  lm_scope *hit = NULL;
  for (lm_scope *s = innermost; s; s = s->outer) {
    if (s->shield)
      break;
    if (s->expired)
      hit = s;
  }
  return hit;
}

/* Whether the task's cancel cannot reach its waits now: inside a shield
 * (a task:cancel() lands at the first wait after it), or while an error
 * unwinds the whole task (its <close> handlers may wait to clean up, and
 * the task ends anyway). */
int lm_cancel_held_off(const lm_task *t) {
  if (t->unwinding)
    return 1;
  for (lm_scope *s = t->scopes; s; s = s->outer)
    if (s->shield)
      return 1;
  return 0;
}

int lm_scope_raise(lua_State *L, lm_scope *s) {
  if (s->kind[0] == 't')
    lm_push_error(L, "timeout", "timed out after %f s", s->seconds);
  else
    lm_push_error(L, "cancelled", "cancelled: its scope was cancelled");
  lua_pushlightuserdata(L, s);
  lua_setfield(L, -2, "scope");
  return lua_error(L);
}

static void interrupt_owner(lm_scope *s) {
  lm_ctx *ctx = s->ctx;
  lm_wait *w = s->task ? &s->task->wait : ctx->driving_wait;
  if (w == NULL || w->done || w->shielded)
    return;
  if (s->task && s->task->state != LM_WAITING)
    return;
  if (lm_scope_expired(*owner_list(ctx, s->task)))
    lm_wait_finish(w, LM_EDEADLINE, -1);
}

static void expire(lm_scope *s, const char *kind) {
  if (!s->active || s->expired)
    return;
  s->expired = 1;
  s->kind = kind;
  loom_timer_stop(&s->ctx->loop, &s->timer);
  interrupt_owner(s);
}

static void deadline_passed(loom_timer_t *timer) { expire(timer->data, "timeout"); }

static void deactivate(lm_scope *s) {
  if (!s->active)
    return;
  lm_scope **p = owner_list(s->ctx, s->task);
  while (*p && *p != s)
    p = &(*p)->outer;
  if (*p)
    *p = s->outer;
  s->active = 0;
  s->outer = NULL;
  if (!s->ctx->closed)
    loom_timer_stop(&s->ctx->loop, &s->timer);
}

/* A finished task's scopes can never be closed by it any more. */
void lm_scope_release_all(lm_task *t) {
  while (t->scopes) {
    lm_scope *s = t->scopes;
    deactivate(s);
    s->task = NULL;
  }
}

static lm_scope *check_scope(lua_State *L) {
  return lm_check_self(L, LM_SCOPE_MT, "loom.scope");
}

/* core scope(seconds | nil [, shield]) */
static int l_scope(lua_State *L) {
  lm_ctx *ctx = lua_touserdata(L, lua_upvalueindex(1));
  double seconds = lm_optseconds(L, 1);
  int shield = lua_toboolean(L, 2);
  lm_scope *s = lua_newuserdatauv(L, sizeof *s, 0);
  s->ctx = ctx;
  s->task = ctx->current;
  s->seconds = seconds;
  s->expired = 0;
  s->shield = (unsigned char)shield;
  s->kind = "cancelled";
  loom_timer_init(&s->timer, deadline_passed, s);
  lm_scope **head = owner_list(ctx, s->task);
  s->outer = *head;
  *head = s;
  s->active = 1;
  luaL_setmetatable(L, LM_SCOPE_MT);
  if (seconds >= 0)
    lm_wait_arm_timer(ctx, &s->timer, seconds);
  return 1;
}

/* scope:close() -> expired, kind */
static int scope_close(lua_State *L) {
  lm_scope *s = check_scope(L);
  deactivate(s);
  lua_pushboolean(L, s->expired);
  lua_pushstring(L, s->expired ? s->kind : "");
  return 2;
}

static int scope_cancel(lua_State *L) {
  expire(check_scope(L), "cancelled");
  return 0;
}

static int scope_id(lua_State *L) {
  lua_pushlightuserdata(L, check_scope(L));
  return 1;
}

static int scope_gc(lua_State *L) {
  deactivate(lua_touserdata(L, 1));
  return 0;
}

static const luaL_Reg scope_methods[] = {
  {"close", scope_close},
  {"cancel", scope_cancel},
  {"id", scope_id},
  {NULL, NULL}
};

const luaL_Reg lm_scope_funcs[] = {{"_scope", l_scope}, {NULL, NULL}};

static const luaL_Reg scope_meta[] = {{"__gc", scope_gc}, {NULL, NULL}};

void lm_open_scope(lua_State *L) {
  lm_new_class(L, LM_SCOPE_MT, scope_methods, scope_meta);
}
