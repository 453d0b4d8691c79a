/* A dedicated connection that LISTENs: notifications are queued in C as
 * the driver reads them (inside a libuv callback, where no Lua may run) and
 * handed to the Lua dispatcher task one at a time. */
#include <stdlib.h>
#include <string.h>
#include "lm.h"
#include "db.h"
#include "driver.h"

#define LM_LISTENER_MT "loom.db.listener"

typedef struct lm_note {
  struct lm_note *next;
  char *channel;
  char *payload;
  int pid;
} lm_note;

typedef struct lm_listener {
  lm_ctx *ctx;
  const loom_db_driver_t *driver;
  loom_db_conn_t *conn;
  /* On the heap, not in the userdata: a request given up (its task
   * cancelled, the listener collected) is still the driver's until it
   * completes, and is freed then (orphan_done). */
  loom_db_req_t *req;
  lm_note *head, *tail;
  int lost;     /* the connection broke since the last _next */
  lm_request rq;         /* a task running _connect or _exec */
  lm_wait *note_waiting; /* the dispatcher in _next */
} lm_listener;

static char *dup(const char *s) {
  size_t n = strlen(s ? s : "") + 1;
  char *d = malloc(n);
  if (d)
    memcpy(d, s ? s : "", n);
  return d;
}

static void wake(lm_wait *w) {
  if (w)
    lm_wait_finish(w, 0, -1);
}

static void on_notify(loom_db_conn_t *conn, const char *channel, const char *payload, int pid) {
  lm_listener *l = conn->data;
  if (l == NULL)
    return;
  if (channel == NULL) {
    l->lost = 1;
  } else {
    lm_note *n = calloc(1, sizeof *n);
    if (n == NULL || (n->channel = dup(channel)) == NULL || (n->payload = dup(payload)) == NULL) {
      if (n) {
        free(n->channel);
        free(n);
      }
      l->lost = 1; /* dropping one silently would be worse */
    } else {
      n->pid = pid;
      if (l->tail)
        l->tail->next = n;
      else
        l->head = n;
      l->tail = n;
    }
  }
  wake(l->note_waiting);
}

static void drop_conn(lm_listener *l) {
  if (l->conn) {
    l->conn->data = NULL;
    l->driver->watch(l->conn, NULL);
    if (!l->ctx->closed)
      l->driver->close(l->conn);
    l->conn = NULL;
  }
}

static lm_listener *check(lua_State *L) {
  return lm_check_self(L, LM_LISTENER_MT, "loom.db.listener");
}

static void req_done(loom_db_req_t *req) {
  lm_listener *l = req->data;
  if (l)
    lm_request_complete(&l->rq);
}

/* Frees a request that is complete; a connection it opened and nobody
 * took is closed (no one will LISTEN on it). */
static void free_req(loom_db_req_t *req) {
  if (req->op == LOOM_DB_CONNECT && req->status == 0 && req->conn)
    req->conn->driver->close(req->conn);
  loom_db_result_free(req->result);
  loom_db_error_clear(&req->err);
  free(req);
}

/* A request given up while still out has completed. */
static void orphan_done(loom_db_req_t *req) {
  loom_loop_t *loop = req->data;
  free_req(req);
  loop->draining--;
}

/* Gives up the current request: one still out is left to complete on its
 * own (counted in loop->draining, so closing the loop waits for it), one
 * complete is freed. */
static void give_up_req(lm_listener *l) {
  loom_db_req_t *req = l->req;
  l->req = NULL;
  if (req == NULL)
    return;
  if (req->active && !l->ctx->closed) {
    req->data = &l->ctx->loop;
    req->cb = orphan_done;
    l->ctx->loop.draining++;
  } else if (!req->active) {
    free_req(req);
  }
}

/* A fresh request for the next call. */
static loom_db_req_t *new_req(lua_State *L, lm_listener *l) {
  give_up_req(l);
  l->req = calloc(1, sizeof *l->req);
  if (l->req == NULL)
    lm_error(L, "memory", "out of memory");
  l->req->cb = req_done;
  l->req->data = l;
  return l->req;
}

/* core _listener(driver, conninfo): the conninfo is kept as user value. */
static int l_listener(lua_State *L) {
  const loom_db_driver_t *drv = lm_to_driver(L, 1);
  if (drv == NULL)
    return lm_error(L, "argument", "bad argument #1 to '_listener' (driver expected, got %s)",
                    luaL_typename(L, 1));
  luaL_checkstring(L, 2);
  if (drv->watch == NULL)
    return lm_error(L, "argument", "the %s driver has no notifications to listen to", drv->name);
  lm_listener *l = lua_newuserdatauv(L, sizeof *l, 1);
  memset(l, 0, sizeof *l);
  l->ctx = lua_touserdata(L, lua_upvalueindex(1));
  l->rq.ctx = l->ctx;
  l->driver = drv;
  luaL_setmetatable(L, LM_LISTENER_MT);
  lua_pushvalue(L, 2);
  lua_setiuservalue(L, -2, 1);
  return 1;
}

static int raise_req(lua_State *L, loom_db_req_t *req) {
  const char *kind = req->status == LOOM_EDB_QUERY ? "query" : "connection";
  lm_push_error(L, kind, "%s", req->err.message ? req->err.message : loom_strerror(req->status));
  if (req->err.code[0]) {
    lua_pushstring(L, req->err.code);
    lua_setfield(L, -2, "code");
  }
  loom_db_error_clear(&req->err);
  return lua_error(L);
}

static int req_pending(lm_request *r) {
  lm_listener *l = LM_CONTAINER_OF(r, lm_listener, rq);
  return l->req != NULL && l->req->active;
}

/* A listener has no pool to drain into: a connect still out closes what
 * it opens when it ends; the connection a statement runs on goes (the
 * dispatcher reconnects). */
static void req_stop(lm_request *r) {
  lm_listener *l = LM_CONTAINER_OF(r, lm_listener, rq);
  give_up_req(l);
  drop_conn(l);
}

static const lm_request_ops req_ops = {req_pending, req_stop, NULL};

/* Both continuations: a request ran, or was given up meanwhile (the
 * listener closed under it). */
static int req_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status; (void)kctx;
  lm_listener *l = lua_touserdata(L, 1);
  if (l->req == NULL) {
    lm_request_check(L, &l->rq);
    return lm_error(L, "connection", "the listener's request was given up");
  }
  loom_db_result_free(l->req->result);
  l->req->result = NULL;
  if (l->req->status != 0)
    return raise_req(L, l->req);
  if (l->req->op == LOOM_DB_CONNECT) {
    l->conn = l->req->conn;
    l->req->conn = NULL; /* the listener's now, not the request's */
    l->conn->data = l;
    l->lost = 0;
    l->driver->watch(l->conn, on_notify);
  }
  return 0;
}

/* Starting failed: nothing to wait for. */
static int start_failed(lua_State *L, lm_listener *l) {
  lm_request_abort(&l->rq);
  return raise_req(L, l->req);
}

/* l:_connect() */
static int listener_connect(lua_State *L) {
  lm_listener *l = check(L);
  lua_settop(L, 1);
  drop_conn(l);
  new_req(L, l)->op = LOOM_DB_CONNECT;
  lm_request_prepare(L, &l->rq, &req_ops, 0);
  lua_getiuservalue(L, 1, 1);
  if (l->driver->connect(&l->ctx->loop, lua_tostring(L, -1), l->req) != 0)
    return start_failed(L, l);
  return lm_request_wait(L, &l->rq, req_k);
}

/* Runs the SQL at index 2 (kept there while it runs) on the listening
 * connection. */
static int run_sql(lua_State *L, lm_listener *l) {
  size_t len;
  const char *sql = lua_tolstring(L, 2, &len);
  lua_settop(L, 2);
  if (l->conn == NULL || l->conn->broken)
    return lm_error(L, "connection", "the listener is not connected");
  new_req(L, l)->op = LOOM_DB_QUERY;
  l->req->sql = sql;
  l->req->sql_len = len;
  lm_request_prepare(L, &l->rq, &req_ops, 0);
  if (l->driver->start(l->conn, l->req) != 0)
    return start_failed(L, l);
  return lm_request_wait(L, &l->rq, req_k);
}

/* l:_exec(sql): a statement on the listening connection, as the driver's
 * dialect wrote it (its LISTEN). */
static int listener_exec(lua_State *L) {
  check(L);
  size_t len;
  const char *sql = luaL_checklstring(L, 2, &len);
  if (memchr(sql, 0, len))
    return lm_error(L, "argument", "db:listen: a statement cannot contain NUL bytes");
  lua_settop(L, 2);
  return run_sql(L, check(L));
}

static int next_k(lua_State *L, int status, lua_KContext kctx);

/* l:_next() -> channel, payload, pid | nil when the connection was lost */
static int listener_next(lua_State *L) {
  lm_listener *l = check(L);
  lua_settop(L, 1);
  if (l->head) {
    lm_note *n = l->head;
    l->head = n->next;
    if (l->head == NULL)
      l->tail = NULL;
    lua_pushstring(L, n->channel);
    lua_pushstring(L, n->payload);
    lua_pushinteger(L, n->pid);
    free(n->channel);
    free(n->payload);
    free(n);
    return 3;
  }
  if (l->lost || l->conn == NULL || l->conn->broken) {
    l->lost = 0;
    drop_conn(l);
    return 0;
  }
  lm_wait *w = lm_wait_prepare(L, l->ctx);
  l->note_waiting = w;
  return lm_wait_begin(L, w, next_k);
}

static int next_k(lua_State *L, int status, lua_KContext kctx) {
  (void)status;
  lm_listener *l = lua_touserdata(L, 1);
  l->note_waiting = NULL;
  lm_wait_check(L, LM_WAIT_OF(kctx));
  return listener_next(L);
}

static int listener_close(lua_State *L) {
  lm_listener *l = lua_touserdata(L, 1);
  give_up_req(l);
  drop_conn(l);
  while (l->head) {
    lm_note *n = l->head;
    l->head = n->next;
    free(n->channel);
    free(n->payload);
    free(n);
  }
  l->tail = NULL;
  return 0;
}

static const luaL_Reg methods[] = {
  {"_connect", listener_connect},
  {"_exec", listener_exec},
  {"_next", listener_next},
  {"_close", listener_close},
  {NULL, NULL}
};

const luaL_Reg lm_listen_funcs[] = {{"_listener", l_listener}, {NULL, NULL}};

static const luaL_Reg metamethods[] = {{"__gc", listener_close}, {NULL, NULL}};

void lm_open_listen(lua_State *L) {
  lm_new_class(L, LM_LISTENER_MT, methods, metamethods);
}
