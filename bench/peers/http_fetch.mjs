// Node's side of bench/http.sh: CONC async workers on the built-in fetch
// (undici, keep-alive) fetching URL until N requests are done, after a
// warm-up round. Prints "rps <requests per second>".
//   node bench/peers/http_fetch.mjs URL N CONC
const [url, nArg, concArg] = process.argv.slice(2);
const n = Number(nArg || 20000), conc = Number(concArg || 64);

async function worker(count) {
  for (let i = 0; i < count; i++) {
    const res = await fetch(url);
    if (res.status !== 200) throw new Error(`status ${res.status}`);
    await res.text();
  }
}

async function round(count) {
  await Promise.all(Array.from({ length: conc }, () => worker(count)));
}

await round(2);
const share = Math.floor(n / conc);
const t0 = process.hrtime.bigint();
await round(share);
const dt = Number(process.hrtime.bigint() - t0) / 1e9;
console.log(`rps ${(share * conc / dt).toFixed(1)}`);
