// Drives headless Chromium (Debian's `chromium`, through playwright-core from
// tests/sdk/node_modules: no browser download) through the storefront page's scenarios.
// Run by tests/it/browser/:
//
//   node tests/browser/run.mjs <plan.json>
//
// plan.json: {
//   "chromium": "/usr/bin/chromium",
//   "ca": "<test CA PEM file>",
//   "origins": ["https://localhost:PORT", ...],   every HTTPS origin the browser talks to
//   "watch": "https://localhost:PORT",            payshim's origin, whose requests are recorded
//   "steps": [{ "name", "page": "<storefront page URL>", "scenario", "args": {...} }, ...]
// }
// Prints {"<step name>": {"page": <what the page's scenario returned>, "network": [...]}}
// as JSON on the last line of stdout and exits 0, or prints the error to stderr and exits 1.
// `network` is the browser's own record of the step's requests to `plan.watch` (its
// DevTools protocol Network events, CORS preflights included): method, URL, resource type
// (`Preflight` for a preflight), status, protocol (`h2`) and, for a failed one, the
// browser's error and CORS error. The page's console goes to stderr.
//
// Trust: the browser is not told to ignore certificate errors in general. Each origin's
// certificate is first verified here against the test CA (Node's TLS, `ca` = the test CA
// only), and exactly those leaves are then trusted with
// `--ignore-certificate-errors-spki-list` (base64 SHA-256 of each leaf's
// SubjectPublicKeyInfo; Chromium honours it only with a `--user-data-dir`, given here as a
// fresh temporary profile).

import { createHash, X509Certificate } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { connect } from 'node:tls';

const require = createRequire(new URL('../sdk/package.json', import.meta.url));
const { chromium } = require('playwright-core');

/** Generous: a loaded 2-core machine. */
const TIMEOUT_MS = 60_000;

/** The base64 SHA-256 of the SPKI of `origin`'s certificate, verified against `ca`. */
function spkiPin(origin, ca) {
  const { hostname, port } = new URL(origin);
  return new Promise((resolve, reject) => {
    const socket = connect({ host: hostname, port: Number(port), servername: hostname, ca }, () => {
      const leaf = new X509Certificate(socket.getPeerX509Certificate().raw);
      socket.end();
      const spki = leaf.publicKey.export({ type: 'spki', format: 'der' });
      resolve(createHash('sha256').update(spki).digest('base64'));
    });
    socket.setTimeout(TIMEOUT_MS, () => socket.destroy(new Error(`${origin}: TLS timeout`)));
    socket.on('error', reject);
  });
}

/** Records the page's requests to `origin` as the browser's network layer sees them. */
async function watchNetwork(context, page, origin) {
  const cdp = await context.newCDPSession(page);
  const requests = new Map();
  cdp.on('Network.requestWillBeSent', (e) => {
    if (e.request.url.startsWith(`${origin}/`) && !requests.has(e.requestId)) {
      requests.set(e.requestId, { method: e.request.method, url: e.request.url, type: e.type });
    }
  });
  cdp.on('Network.responseReceived', (e) => {
    const r = requests.get(e.requestId);
    if (r) Object.assign(r, { type: e.type, status: e.response.status, protocol: e.response.protocol });
  });
  cdp.on('Network.loadingFailed', (e) => {
    const r = requests.get(e.requestId);
    if (r) Object.assign(r, { failed: e.errorText, corsError: e.corsErrorStatus?.corsError });
  });
  await cdp.send('Network.enable');
  return requests;
}

/** Waits until every recorded request has its answer or its failure: the page's promise
 * can settle before the browser has reported the last event of a request to the driver. */
async function settled(network) {
  const deadline = Date.now() + TIMEOUT_MS;
  const done = () => [...network.values()].every((r) => r.status !== undefined || r.failed);
  while (!done()) {
    if (Date.now() > deadline) throw new Error('network events did not complete');
    await new Promise((resolve) => setTimeout(resolve, 20));
  }
}

async function runStep(context, step, watch) {
  const page = await context.newPage();
  const network = await watchNetwork(context, page, watch);
  page.on('console', (m) => console.error(`[${step.name}] console.${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => console.error(`[${step.name}] page error: ${e}`));
  try {
    await page.goto(step.page, { timeout: TIMEOUT_MS });
    await page.waitForFunction(() => window.storefrontReady, null, { timeout: TIMEOUT_MS });
    await page.evaluate(() => window.storefrontReady);
    const result = await page.evaluate(
      ([scenario, args]) => window.storefront[scenario](args),
      [step.scenario, step.args],
    );
    await settled(network);
    return { page: result, network: [...network.values()] };
  } finally {
    await page.close();
  }
}

async function main() {
  const plan = JSON.parse(readFileSync(process.argv[2], 'utf8'));
  const ca = readFileSync(plan.ca);
  const pins = await Promise.all(plan.origins.map((o) => spkiPin(o, ca)));
  const profile = mkdtempSync(join(tmpdir(), 'payshim-chromium-'));
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: plan.chromium,
    headless: true,
    timeout: TIMEOUT_MS,
    args: [
      '--no-sandbox',
      '--disable-gpu',
      '--disable-quic',
      '--no-first-run',
      '--disable-background-networking',
      '--disable-component-update',
      '--disable-sync',
      `--ignore-certificate-errors-spki-list=${pins.join(',')}`,
    ],
  });
  context.setDefaultTimeout(TIMEOUT_MS);
  try {
    const results = {};
    for (const step of plan.steps) {
      results[step.name] = await runStep(context, step, plan.watch);
    }
    console.log(JSON.stringify(results));
  } finally {
    await context.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    console.error(`browser run failed: ${error?.stack ?? error}`);
    process.exit(1);
  },
);
