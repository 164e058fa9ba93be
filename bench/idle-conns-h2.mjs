#!/usr/bin/env node
// Memory per idle HTTP/2 connection of a proxy (bench/conns.sh, mode `rss-h2`): what a
// browser storefront's connection costs while the shopper reads the page.
//
// As bench/idle-conns.py, over HTTP/2 (ALPN h2, node's own http2 client): opens COUNT TLS
// connections one after another, sends one request on each (the passthrough POST) and reads
// its whole answer, keeps them all open and idle, then sums VmRSS of the proxy's processes.
// Prints the same JSON line as idle-conns.py.
//
//   node bench/idle-conns-h2.mjs --port N --count N --pids PID[,PID] [--settle 5] [--label L]

import fs from "node:fs";
import http2 from "node:http2";
import { parseArgs } from "node:util";

const BODY =
  '{"data":{"type":"bench_event","order_id":"9b2f7c1e-3d4a-4b5c-8d6e-7f8a9b0c1d2e",' +
  '"customer":{"name":"Ada Lovelace","email":"ada@example.com"},"items":[{"sku":"BOOK-001",' +
  '"quantity":1,"amount":4999},{"sku":"PEN-042","quantity":2,"amount":350}],"currency":"USD"}}';

const { values: args } = parseArgs({
  options: {
    port: { type: "string" },
    count: { type: "string" },
    pids: { type: "string" },
    path: { type: "string", default: "/v2/bench/order-42" },
    key: { type: "string", default: "bench-storefront-key-0001" },
    settle: { type: "string", default: "5" },
    label: { type: "string", default: "" },
  },
});
const port = Number(args.port);
const count = Number(args.count);
const pids = (args.pids ?? "").split(",").filter(Boolean).map(Number);
const settleMs = Number(args.settle) * 1000;
if (!port || !count || pids.length === 0) {
  console.error("usage: idle-conns-h2.mjs --port N --count N --pids PID[,PID]");
  process.exit(2);
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function rssKib() {
  let total = 0;
  for (const pid of pids) {
    const status = fs.readFileSync(`/proc/${pid}/status`, "utf8");
    total += Number(/^VmRSS:\s+(\d+)/m.exec(status)[1]);
  }
  return total;
}

/** One HTTP/2 connection with one answered request on it, left open. */
function connect() {
  return new Promise((resolve, reject) => {
    const session = http2.connect(`https://127.0.0.1:${port}`, {
      servername: "localhost",
      rejectUnauthorized: false,
    });
    session.once("error", reject);
    session.on("goaway", () => {
      session.sawGoaway = true;
    });
    const req = session.request({
      ":method": "POST",
      ":path": args.path,
      "content-type": "application/json",
      authorization: `Bearer ${args.key}`,
    });
    let status = 0;
    req.on("response", (headers) => {
      status = headers[":status"];
    });
    req.on("data", () => {});
    req.on("error", reject);
    req.on("end", () => {
      if (session.alpnProtocol !== "h2") {
        reject(new Error(`ALPN chose ${session.alpnProtocol}, not h2`));
      } else if (status >= 400) {
        reject(new Error(`answer ${status}`));
      } else {
        resolve(session);
      }
    });
    req.end(BODY);
  });
}

(await connect()).close();
await sleep(settleMs);
const before = rssKib();
const sessions = [];
const started = performance.now();
for (let i = 0; i < count; i++) {
  sessions.push(await connect());
}
const openedS = (performance.now() - started) / 1000;
await sleep(settleMs);
const after = rssKib();
// Every connection must still be open (a proxy that closed idle ones would look lean).
const alive = sessions.filter((s) => !s.closed && !s.destroyed && !s.sawGoaway).length;
console.log(
  JSON.stringify({
    label: args.label,
    connections: count,
    alive,
    rss_before_kib: before,
    rss_after_kib: after,
    kib_per_conn: Number(((after - before) / count).toFixed(2)),
    open_seconds: Number(openedS.toFixed(1)),
  }),
);
for (const s of sessions) {
  s.destroy();
}
process.exitCode = alive === count ? 0 : 1;
