// Payments with the official Moltin / Elastic Path JS SDKs, exactly as their documentation
// shows them, with only `host` pointing at payshim. Run by tests/it/sdk_e2e.rs:
//
//   NODE_EXTRA_CA_CERTS=<test CA> node pay.mjs <host:port> <client_id> <order_id> [sdk] [scenario]
//
// sdk: `@moltin/sdk` (default) or `@elasticpath/js-sdk` (the same code under its new name).
// scenario:
//   pay   (default) one card_connect purchase; prints the SDK's result.
//   flow  token exchange, a card_connect authorize, its capture and refund, then a Stripe
//         token purchase; prints {"card","capture","refund","stripe"}, each {ok, result|error}.
//   twice two purchases for one order with two cards; prints {"first","second"} as in flow.
//
// Prints the result as JSON on the last line of stdout and exits 0 (for flow and twice also
// when a step failed: the test asserts on each step), or prints the error to stderr and
// exits 1. Each HTTP request the SDK makes is traced to stderr as `sdk-request {json}`
// (method, URL, headers with the bearer token shortened) and each answer as
// `sdk-response {json}` (status), so the test can check what the SDK sent and when it
// resent. Run it from a scratch directory: under Node the SDK keeps its token in
// ./localStorage.

const [host, client_id, orderId, sdk = '@moltin/sdk', scenario = 'pay'] = process.argv.slice(2);
if (!host || !client_id || !orderId) {
  console.error('usage: node pay.mjs <host:port> <client_id> <order_id> [sdk] [scenario]');
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
  const method = init.method || 'GET';
  console.error(
    'sdk-request ' + JSON.stringify({ method, url: String(url), headers, grant_type }),
  );
  const response = await realFetch(url, init);
  console.error(
    'sdk-response ' + JSON.stringify({ method, url: String(url), status: response.status }),
  );
  return response;
};

const { gateway } = await import(sdk);
const Moltin = gateway({ client_id, host });

/** A raw-card body as the SDK's documentation shows it (card_connect's 2020 form). */
function cardPayment(method, number) {
  return {
    gateway: 'card_connect',
    method,
    first_name: 'Ada',
    last_name: 'Lovelace',
    number,
    month: '12',
    year: '2031',
    verification_value: '123',
  };
}

/** An SDK error as JSON: the API's error body as the SDK rejects with it, or an Error. */
function describe(error) {
  if (error instanceof Error) {
    return { name: error.name, message: error.message, cause: String(error.cause ?? '') };
  }
  return error;
}

/** Runs one step; a failure is reported, not thrown, so the next steps still run. */
async function step(run) {
  try {
    return { ok: true, result: await run() };
  } catch (error) {
    return { ok: false, error: describe(error) };
  }
}

async function flow() {
  const card = await step(() =>
    Moltin.Orders.Payment(orderId, cardPayment('authorize', '4111111111111111')),
  );
  const transaction = card.result?.data?.id;
  const capture = await step(() => Moltin.Transactions.Capture({ order: orderId, transaction }));
  const refund = await step(() =>
    Moltin.Transactions.Refund({ order: orderId, transaction }, { amount: 4999 }),
  );
  const stripe = await step(() =>
    Moltin.Orders.Payment(orderId, {
      gateway: 'stripe',
      method: 'purchase',
      payment: 'tok_visa',
      options: { receipt_email: 'ada@example.com' },
    }),
  );
  return { card, capture, refund, stripe };
}

async function twice() {
  const first = await step(() =>
    Moltin.Orders.Payment(orderId, cardPayment('purchase', '4111111111111111')),
  );
  const second = await step(() =>
    Moltin.Orders.Payment(orderId, cardPayment('purchase', '5555555555554444')),
  );
  return { first, second };
}

const scenarios = {
  pay: () => Moltin.Orders.Payment(orderId, cardPayment('purchase', '4111111111111111')),
  flow,
  twice,
};

if (!scenarios[scenario]) {
  console.error(`unknown scenario ${scenario}`);
  process.exit(2);
}
scenarios[scenario]()
  .then((result) => {
    console.log(JSON.stringify(result));
    process.exit(0);
  })
  .catch((error) => {
    console.error(`payment failed: ${JSON.stringify(describe(error))}`);
    process.exit(1);
  });
