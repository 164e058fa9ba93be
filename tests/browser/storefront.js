// The storefront's checkout code, as a shop would write it with the official SDK's browser
// bundle: `gateway({ client_id, host })` (implicit grant, the SDK keeps its token in
// localStorage) and `Orders.Payment(order, body)`, with `host` pointing at payshim.
//
// The test driver (tests/browser/run.mjs) calls `window.storefront.<scenario>(args)` once
// `window.storefrontReady` resolves, and reads back the JSON each one returns: what the
// page's code got (a result, or the error as the SDK handed it over) and the page's own
// Resource Timing entries for payshim (URL and the answer's status as the page sees it).

function loadSdk() {
  const name = new URLSearchParams(location.search).get('sdk') || 'elasticpath';
  return new Promise((resolve, reject) => {
    const script = document.createElement('script');
    script.src = `/sdk/${name}.js`;
    // The UMD bundles define `window.moltin` (@moltin/sdk) and `window.index`
    // (@elasticpath/js-sdk, whose bundle is built under that name).
    script.onload = () => resolve(name === 'moltin' ? window.moltin : window.index);
    script.onerror = () => reject(new Error(`could not load /sdk/${name}.js`));
    document.head.appendChild(script);
  });
}

let sdk;
window.storefrontReady = loadSdk().then((loaded) => {
  sdk = loaded;
  document.getElementById('status').textContent = 'ready';
  return true;
});

/** A clean start for each scenario: no stored token, no earlier trace or timings. */
function reset() {
  localStorage.clear();
  performance.clearResourceTimings();
}

/** An error as JSON: the API's error body as the SDK rejects with it, or an Error. */
function describe(error) {
  if (error instanceof Error) {
    return { name: error.name, message: error.message };
  }
  return error;
}

function card(number) {
  return {
    gateway: 'card_connect',
    method: 'purchase',
    first_name: 'Ada',
    last_name: 'Lovelace',
    number,
    month: '12',
    year: '2031',
    verification_value: '123',
  };
}

/** What the page saw: the outcome and the browser's timing entries. `nextHopProtocol`
 * stays empty here: payshim sends no `Timing-Allow-Origin`, so the driver reads the
 * protocol from the browser's network events instead. */
async function settle(run, host) {
  let outcome;
  try {
    outcome = { ok: true, result: await run() };
  } catch (error) {
    outcome = { ok: false, error: describe(error) };
  }
  const resources = performance
    .getEntriesByType('resource')
    .filter((e) => e.name.startsWith(`https://${host}/`))
    .map((e) => ({
      url: e.name,
      initiatorType: e.initiatorType,
      responseStatus: e.responseStatus,
    }));
  return { ...outcome, resources };
}

window.storefront = {
  /** One payment through the SDK: implicit grant, then the payment. */
  async pay({ host, client_id, order, number }) {
    reset();
    const shop = sdk.gateway({ client_id, host });
    return settle(() => shop.Orders.Payment(order, card(number)), host);
  },

  /** A payment with a token the SDK still believes valid but payshim no longer accepts
   * (`stale`: the answer of an earlier token exchange, as the SDK stores it). */
  async staleToken({ host, client_id, order, number, stale, storageKey }) {
    reset();
    localStorage.setItem(
      storageKey,
      JSON.stringify({
        client_id,
        access_token: stale.access_token,
        expires: stale.expires,
        expires_in: stale.expires_in,
        identifier: stale.identifier,
        token_type: stale.token_type,
      }),
    );
    const shop = sdk.gateway({ client_id, host });
    return settle(() => shop.Orders.Payment(order, card(number)), host);
  },

  /** From an origin payshim does not allow: a simple (not preflighted) token request
   * with the browser's own fetch, then a payment through the SDK. */
  async foreign({ host, client_id, order, number }) {
    reset();
    const simple = await settle(
      () =>
        fetch(`https://${host}/oauth/access_token`, {
          method: 'POST',
          body: new URLSearchParams({ grant_type: 'implicit', client_id }),
        }).then((r) => r.text()),
      host,
    );
    reset();
    const shop = sdk.gateway({ client_id, host });
    const payment = await settle(() => shop.Orders.Payment(order, card(number)), host);
    return { simple, payment };
  },
};
