// Peer comparison for `benches/outbox.rs` (the "1-tx" producer): N transactions, each
// `BEGIN; SELECT graphile_worker.add_job(...); COMMIT`, one after another on one connection,
// while a graphile-worker runner with a no-op task runs in the same process. Prints events/s from
// the first BEGIN to the moment the worker has run the last job (committed and handled).
//
// Optional and outside the product: nothing in the Rust build or CI runs it. See README.md.
//
//   npm ci && node bench.js
//   DATABASE_URL (default postgres://postgres@127.0.0.1:5432/test), N (default 10000),
//   RUNS (default 1), CONCURRENCY (worker concurrency, default 1, graphile-worker's default),
//   MODE: `tx` (default: `BEGIN; SELECT graphile_worker.add_job(...); COMMIT`, the shape of
//   Herald's `1-tx` rows) or `addJob` (`WorkerUtils.addJob`: one statement in its own implicit
//   transaction, one round trip instead of three).
"use strict";

const { Client } = require("pg");
const { run, runMigrations, makeWorkerUtils } = require("graphile-worker");

const connectionString =
  process.env.DATABASE_URL || "postgres://postgres@127.0.0.1:5432/test";
const n = Number(process.env.N || 10000);
const runs = Number(process.env.RUNS || 1);
const concurrency = Number(process.env.CONCURRENCY || 1);
const mode = process.env.MODE || "tx";
if (mode !== "tx" && mode !== "addJob") throw new Error(`MODE must be tx or addJob, not ${mode}`);

async function once() {
  // A fresh schema per run, like the Rust bench's `herald_bench` schema.
  const admin = new Client({ connectionString });
  await admin.connect();
  await admin.query("DROP SCHEMA IF EXISTS graphile_worker CASCADE");
  await admin.end();
  await runMigrations({ connectionString, logger: quietLogger() });

  let handled = 0;
  let finished;
  const allDone = new Promise((resolve) => (finished = resolve));
  const runner = await run({
    connectionString,
    concurrency,
    noHandleSignals: true,
    pollInterval: 1000,
    logger: quietLogger(),
    taskList: {
      noop: async () => {
        handled += 1;
        if (handled === n) finished();
      },
    },
  });

  const producer = new Client({ connectionString });
  await producer.connect();
  const utils = await makeWorkerUtils({ connectionString, logger: quietLogger() });
  const started = process.hrtime.bigint();
  for (let i = 0; i < n; i++) {
    if (mode === "tx") {
      await producer.query("BEGIN");
      await producer.query(
        "SELECT graphile_worker.add_job('noop', json_build_object('n', $1::int))",
        [i],
      );
      await producer.query("COMMIT");
    } else {
      await utils.addJob("noop", { n: i });
    }
  }
  const committed = process.hrtime.bigint();
  await allDone;
  const ended = process.hrtime.bigint();
  await producer.end();
  await utils.release();
  await runner.stop();

  const seconds = (t) => Number(t - started) / 1e9;
  const rate = n / seconds(ended);
  console.log(
    `| graphile-worker ${require("graphile-worker/package.json").version} | ${mode} | ` +
      `concurrency ${concurrency} | ${n} | ${rate.toFixed(0)} events/s | ` +
      `producer ${(n / seconds(committed)).toFixed(0)} commits/s |`,
  );
  return rate;
}

function quietLogger() {
  const { Logger } = require("graphile-worker");
  return new Logger(() => (level, message) => {
    if (level === "error") console.error(message);
  });
}

(async () => {
  const rates = [];
  for (let r = 0; r < runs; r++) rates.push(await once());
  rates.sort((a, b) => a - b);
  if (runs > 1) {
    console.log(`median ${rates[Math.floor(runs / 2)].toFixed(0)} events/s over ${runs} runs`);
  }
})().catch((e) => {
  console.error(e);
  process.exit(1);
});
