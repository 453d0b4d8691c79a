// Node's side of bench/host.sh: the point select route of
// spec/support/h2o_handler.lua, on node:http and pg (npm), with a pool the
// same size as loom's. pg comes from HOST_BENCH_NODE_MODULES (host.sh
// installs it into a temporary directory).
import http from 'node:http';
import { createRequire } from 'node:module';

const require = createRequire(process.env.HOST_BENCH_NODE_MODULES + '/');
const pg = require('pg');
const pool = new pg.Pool({
  connectionString: process.env.LOOM_PG_URL,
  max: Number(process.env.H2O_HOST_POOL || 8),
});
const text = { 'content-type': 'text/plain' };

const server = http.createServer(async (req, res) => {
  const url = new URL(req.url, 'http://x');
  if (url.pathname !== '/pg') {
    res.writeHead(404, text).end('no such route\n');
    return;
  }
  try {
    const id = Number(url.searchParams.get('id') || 1);
    const r = await pool.query({
      name: 'point',
      text: 'SELECT id, name FROM hosts_bench WHERE id = $1',
      values: [id],
    });
    if (r.rows.length === 0) res.writeHead(404, text).end('no such row\n');
    else res.writeHead(200, text).end(`${r.rows[0].id} ${r.rows[0].name}\n`);
  } catch (err) {
    console.error(err);
    res.writeHead(500, text).end('handler failed\n');
  }
});
server.keepAliveTimeout = 60000;
server.listen(0, '127.0.0.1', () => {
  console.log(`listening on 127.0.0.1:${server.address().port}`);
});
