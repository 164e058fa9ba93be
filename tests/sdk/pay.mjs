// A payment with the official Moltin / Elastic Path JS SDK, exactly as its documentation
// shows it, with only `host` pointing at payshim. Run by tests/sdk_e2e.rs:
//
//   NODE_EXTRA_CA_CERTS=<test CA> node pay.mjs <host:port> <client_id> <order_id>
//
// Prints the SDK's result as JSON on the last line of stdout and exits 0, or prints the
// error to stderr and exits 1. Each HTTP request the SDK makes is also traced to stderr as
// `sdk-request {json}` (method, URL, headers with the bearer token shortened), so the test
// can check what the SDK sent to payshim. Run it from a scratch directory: under Node the
// SDK keeps its token in ./localStorage.
import { gateway as MoltinGateway } from '@moltin/sdk';

const [host, client_id, orderId] = process.argv.slice(2);
if (!host || !client_id || !orderId) {
  console.error('usage: node pay.mjs <host:port> <client_id> <order_id>');
  process.exit(2);
}

// Observe, do not change: wrap the global fetch the SDK resolves when it is configured.
const realFetch = globalThis.fetch;
globalThis.fetch = async (url, init = {}) => {
  const headers = {};
  for (const [name, value] of new Headers(init.headers || {})) {
    headers[name] =
      name === 'authorization' ? value.replace(/^(Bearer\s+\S{0,8})\S*$/i, '$1...') : value;
  }
  let grant_type;
  if (typeof init.body === 'string' && String(url).endsWith('/oauth/access_token')) {
    grant_type = new URLSearchParams(init.body).get('grant_type');
  }
  console.error(
    'sdk-request ' +
      JSON.stringify({ method: init.method || 'GET', url: String(url), headers, grant_type }),
  );
  return realFetch(url, init);
};

const Moltin = MoltinGateway({
  client_id,
  host,
});

Moltin.Orders.Payment(orderId, {
  gateway: 'card_connect',
  method: 'purchase',
  first_name: 'Ada',
  last_name: 'Lovelace',
  number: '4111111111111111',
  month: '12',
  year: '2031',
  verification_value: '123',
})
  .then((result) => {
    console.log(JSON.stringify(result));
    process.exit(0);
  })
  .catch((error) => {
    const text =
      error instanceof Error
        ? `${error.name}: ${error.message}${error.cause ? ` (cause: ${error.cause})` : ''}`
        : JSON.stringify(error);
    console.error(`payment failed: ${text}`);
    process.exit(1);
  });
