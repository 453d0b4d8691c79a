#!/usr/bin/env bash
# A throwaway nginx for the HTTP client's specs, examples and benchmark,
# in a directory of its own:
#   nginx_server.sh start DIR   start on 127.0.0.1, print the plain URL
#   nginx_server.sh stop DIR    stop it and remove DIR
# After start DIR/url is the plain HTTP/1.1 URL, DIR/h2c_url one that
# speaks HTTP/2 without TLS (prior knowledge only), DIR/https_url HTTPS
# with HTTP/2 by ALPN, its self-signed certificate DIR/cert.pem. DIR/www
# holds the static files: small.txt, lines.txt (1000 numbered lines) and
# large.bin (8 MiB). The routes written in Lua (nginx's Lua module):
#   /echo         the request body back; X-Method, X-Test (the request's
#                 X-Test), X-Length (the body's length), X-Connection (the
#                 connection's serial number) and two Set-Cookie
#   /status/N     status N
#   /redirect/N   N redirects before "arrived"
#   /chunked      ten chunked lines, a flush and a short sleep apart
#   /slow?s=S     "late", after S seconds (default 5)
#   /drop         headers announcing 1 MB, 1000 bytes, then the connection cut
#   /nothing      the connection closed without a response
#   /flaky/K?fail=N  503 for the first N requests of key K, then "ok K"
set -euo pipefail
unset LD_PRELOAD # the sanitizer runs' preload is for the test process only

cmd=${1:?usage: nginx_server.sh start|stop DIR}
dir=${2:?usage: nginx_server.sh start|stop DIR}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
case "$dir" in /*) ;; *) dir=$PWD/$dir ;; esac
server_log="$dir/error.log"
# shellcheck source=spec/support/server.sh
. "$here/server.sh"

nginx=$(command -v nginx || echo /usr/sbin/nginx)
modules=/usr/lib/nginx/modules

case "$cmd" in
start)
  if [ ! -x "$nginx" ]; then
    echo "nginx not found: install the Debian packages 'nginx' and 'libnginx-mod-http-lua'" >&2
    exit 1
  fi
  if [ ! -f "$modules/ngx_http_lua_module.so" ]; then
    echo "nginx's Lua module not found: install the Debian package 'libnginx-mod-http-lua'" >&2
    exit 1
  fi
  mkdir -p "$dir/www" "$dir/tmp"
  printf 'hello from nginx\n' > "$dir/www/small.txt"
  seq -f 'line %g' 1 1000 > "$dir/www/lines.txt"
  head -c 8388608 /dev/urandom > "$dir/www/large.bin"
  openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
    -subj "/CN=localhost" -addext "subjectAltName=IP:127.0.0.1,DNS:localhost" \
    -keyout "$dir/key.pem" -out "$dir/cert.pem" 2>/dev/null ||
    fail_with_log "openssl could not make the test certificate (Debian package 'openssl')"
  user=""
  [ "$(id -u)" -eq 0 ] && user="user root;"
  # A port free when asked may be taken by the time nginx binds it (another
  # test's connection got it as its local port): then again, on others.
  for attempt in 1 2 3 4 5; do
  port=$(free_port)
  h2c_port=$(free_port)
  tls_port=$(free_port)
  cat > "$dir/nginx.conf" <<CONF
load_module $modules/ndk_http_module.so;
load_module $modules/ngx_http_lua_module.so;
$user
worker_processes 1;
daemon on;
pid $dir/nginx.pid;
error_log $dir/error.log warn;
events { worker_connections 1024; }
http {
  access_log off;
  client_body_temp_path $dir/tmp/body;
  proxy_temp_path $dir/tmp/proxy;
  fastcgi_temp_path $dir/tmp/fastcgi;
  uwsgi_temp_path $dir/tmp/uwsgi;
  scgi_temp_path $dir/tmp/scgi;
  default_type application/octet-stream;
  keepalive_requests 100000;
  lua_need_request_body on;
  lua_shared_dict flaky 1m;
  server {
    listen 127.0.0.1:$port;
    listen 127.0.0.1:$h2c_port http2;
    listen 127.0.0.1:$tls_port ssl http2;
    ssl_certificate $dir/cert.pem;
    ssl_certificate_key $dir/key.pem;
    root $dir/www;
    location /echo {
      content_by_lua_block {
        local body = ngx.req.get_body_data()
        if not body and ngx.req.get_body_file() then
          local f = io.open(ngx.req.get_body_file(), "rb"); body = f:read("a"); f:close()
        end
        body = body or ""
        ngx.header["X-Method"] = ngx.req.get_method()
        ngx.header["X-Test"] = ngx.var.http_x_test
        ngx.header["X-Length"] = #body
        ngx.header["Set-Cookie"] = { "a=1", "b=2" }
        ngx.header["X-Connection"] = ngx.var.connection
        ngx.print(body)
      }
    }
    location ~ ^/status/(\d+)\$ {
      content_by_lua_block { ngx.status = tonumber(ngx.var[1]); ngx.say("status ", ngx.var[1]) }
    }
    location ~ ^/redirect/(\d+)\$ {
      content_by_lua_block {
        local n = tonumber(ngx.var[1])
        if n > 0 then return ngx.redirect("/redirect/" .. (n - 1)) end
        ngx.say("arrived")
      }
    }
    location /chunked {
      content_by_lua_block {
        for i = 1, 10 do ngx.say("chunk ", i); ngx.flush(true); ngx.sleep(0.01) end
      }
    }
    location /slow {
      content_by_lua_block { ngx.sleep(tonumber(ngx.var.arg_s) or 5); ngx.say("late") }
    }
    location /drop {
      content_by_lua_block {
        ngx.header["Content-Length"] = 1000000
        ngx.print(string.rep("x", 1000)); ngx.flush(true)
        ngx.sleep(0.05)
        ngx.exit(444)
      }
    }
    location /nothing { return 444; }
    location ~ ^/flaky/(\w+)\$ {
      content_by_lua_block {
        local seen = ngx.shared.flaky:incr(ngx.var[1], 1, 0)
        if seen <= (tonumber(ngx.var.arg_fail) or 1) then ngx.status = 503 end
        ngx.say(ngx.status == 503 and "busy " or "ok ", ngx.var[1])
      }
    }
  }
}
CONF
  if "$nginx" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" 2>"$dir/start.log"; then break; fi
  grep -q "Address already in use" "$dir/start.log" && [ "$attempt" -lt 5 ] && continue
  cat "$dir/start.log" >&2
  fail_with_log "nginx did not start"
  done
  for _ in $(seq 1 100); do
    (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null && break
    sleep 0.05
  done
  echo "http://127.0.0.1:$port" > "$dir/url"
  echo "http://127.0.0.1:$h2c_port" > "$dir/h2c_url"
  echo "https://127.0.0.1:$tls_port" > "$dir/https_url"
  cat "$dir/url"
  ;;
stop)
  if [ -f "$dir/nginx.pid" ]; then
    "$nginx" -p "$dir" -c "$dir/nginx.conf" -e "$dir/error.log" -s stop 2>/dev/null ||
      kill "$(cat "$dir/nginx.pid")" 2>/dev/null || true
    for _ in $(seq 1 100); do [ -f "$dir/nginx.pid" ] || break; sleep 0.05; done
  fi
  rm -rf "$dir"
  ;;
*)
  echo "usage: nginx_server.sh start|stop DIR" >&2
  exit 2
  ;;
esac
