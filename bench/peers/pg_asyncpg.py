# Peer: asyncpg point selects for SECONDS, on CONC plain connections ("conn": each
# worker keeps its own connection) or through an asyncpg pool of CONC ("pool").
#   python3 bench/peers/pg_asyncpg.py URL SECONDS SCALE CONC conn|pool
import asyncio, random, sys, time
import asyncpg

SQL = "SELECT abalance FROM pgbench_accounts WHERE aid = $1"

async def main(url, seconds, scale, conc, mode):
    n_acc = scale * 100000
    if mode == "pool":
        pool = await asyncpg.create_pool(url, min_size=conc, max_size=conc)
        def runner(w):
            return pool.fetchval
    else:
        conns = [await asyncpg.connect(url) for _ in range(conc)]
        def runner(w):
            return conns[w].fetchval
    counts = [0] * conc
    stop = [False]
    async def worker(w, warm):
        fetch = runner(w)
        n = 0
        if warm:
            for _ in range(200):
                await fetch(SQL, random.randint(1, n_acc))
            return
        while not stop[0]:
            for _ in range(20):
                await fetch(SQL, random.randint(1, n_acc))
            n += 20
        counts[w] = n
    await asyncio.gather(*(worker(w, True) for w in range(conc)))
    async def timer():
        await asyncio.sleep(seconds)
        stop[0] = True
    t0 = time.perf_counter()
    await asyncio.gather(timer(), *(worker(w, False) for w in range(conc)))
    dt = time.perf_counter() - t0
    print(f"RESULT asyncpg_{mode}{conc} {sum(counts) / dt:.1f}", flush=True)
    if mode == "pool":
        await pool.close()
    else:
        for c in conns:
            await c.close()

url, seconds, scale, conc, mode = sys.argv[1], float(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
asyncio.run(main(url, seconds, scale, conc, mode))
