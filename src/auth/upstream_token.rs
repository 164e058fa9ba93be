//! The store's real bearer token, which replaces the storefront's on every forwarded
//! request and never leaves payshim in any other way.
//!
//! A static token comes from the config. With `client_id` + `client_secret`, payshim
//! obtains a token from `{upstream.url}/oauth/access_token` itself and refreshes it at 80%
//! of its lifetime. Every fetch goes through one single-flight lock, so any number of
//! concurrent requests cause at most one token call per refresh.
//!
//! A request that finds no valid token does not fail at once while a fetch is under way
//! (at start-up the first one is still in flight when `/healthz` already answers): it
//! waits for that fetch's outcome, which `upstream.connect_timeout` and `upstream.timeout`
//! bound, and only then gets 503. With no fetch in flight after a failed one, it gets 503
//! at once, so a token endpoint that is down costs requests no extra wait.
//!
//! A reload that changes `upstream.auth` replaces the source whole ([`UpstreamToken::replace`]):
//! new credentials fetch a new token at once; a request already holding the old token
//! finishes with it.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{HeaderValue, Method};
use secrecy::{ExposeSecret, SecretString};
use tokio::sync::{Mutex, MutexGuard, RwLock};

use crate::config::UpstreamAuth;
use crate::swap::Swap;
use crate::upstream::Upstream;

/// Where the upstream `Authorization` value comes from.
pub struct UpstreamToken {
    source: Swap<Source>,
    upstream: Arc<Upstream>,
}

enum Source {
    /// A long-lived token from the config, prepared once.
    Static(HeaderValue),
    /// Sandbox without a token: the value is never sent anywhere.
    Sandbox(HeaderValue),
    /// Obtained and refreshed by payshim.
    Managed(Arc<Managed>),
}

pub struct Managed {
    client_id: String,
    client_secret: SecretString,
    upstream: Arc<Upstream>,
    current: RwLock<Option<Current>>,
    /// Single flight: only the holder talks to the token endpoint.
    fetching: Mutex<()>,
    /// Set once the first fetch has finished (either way): until then a request without
    /// a token waits for it, or makes it if the refresher has not started yet.
    attempted: AtomicBool,
    /// Set while fetches fail, so a failure streak is logged once.
    failing: AtomicBool,
    /// Wakes the refresher early when the token was dropped (rejected upstream).
    wake: Arc<tokio::sync::Notify>,
}

#[derive(Clone)]
struct Current {
    value: HeaderValue,
    refresh_at: Instant,
    expires_at: Instant,
}

/// Why a token could not be obtained.
#[derive(Debug, thiserror::Error)]
enum FetchError {
    #[error("token endpoint unreachable: {0}")]
    Upstream(#[from] crate::upstream::UpstreamError),
    #[error("token endpoint answered {0}")]
    Status(u16),
    #[error("token endpoint answer has no access_token / expires_in")]
    Shape,
}

impl UpstreamToken {
    /// Must run inside the runtime: a managed token starts its refresher task here.
    pub fn start(auth: &UpstreamAuth, upstream: Arc<Upstream>) -> UpstreamToken {
        UpstreamToken {
            source: Swap::new(Source::start(auth, &upstream)),
            upstream,
        }
    }

    /// New credentials from a reload; a managed token is fetched for them at once.
    pub fn replace(&self, auth: &UpstreamAuth) {
        self.source
            .store(Arc::new(Source::start(auth, &self.upstream)));
        tracing::info!("upstream credentials replaced");
    }

    /// When the current token expires (Unix seconds), for the expiry metric: `None`
    /// without a token, or for a static token, whose lifetime payshim does not know.
    pub fn expiry_unix(&self) -> Option<u64> {
        let Source::Managed(m) = &*self.source.load() else {
            return None;
        };
        let current = m.current.try_read().ok()?;
        let left = current
            .as_ref()?
            .expires_at
            .saturating_duration_since(Instant::now());
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH);
        now.ok().map(|n| (n + left).as_secs())
    }
}

impl Source {
    /// Must run inside the runtime: a managed token starts its refresher task here.
    fn start(auth: &UpstreamAuth, upstream: &Arc<Upstream>) -> Source {
        match auth {
            UpstreamAuth::Static(token) => Source::Static(bearer_value(token.expose_secret())),
            UpstreamAuth::None => Source::Sandbox(bearer_value("sandbox")),
            UpstreamAuth::ClientCredentials {
                client_id,
                client_secret,
            } => {
                let managed = Arc::new(Managed {
                    client_id: client_id.clone(),
                    client_secret: client_secret.clone(),
                    upstream: upstream.clone(),
                    current: RwLock::new(None),
                    fetching: Mutex::new(()),
                    attempted: AtomicBool::new(false),
                    failing: AtomicBool::new(false),
                    wake: Arc::new(tokio::sync::Notify::new()),
                });
                tokio::spawn(refresher(Arc::downgrade(&managed), managed.wake.clone()));
                Source::Managed(managed)
            }
        }
    }
}

impl UpstreamToken {
    /// The `Authorization` header value for the next upstream call. Without a valid
    /// token it waits for a fetch in flight (see the module doc) before giving up with
    /// `None`.
    pub async fn bearer(&self) -> Option<HeaderValue> {
        match &*self.source.load() {
            Source::Static(v) | Source::Sandbox(v) => Some(v.clone()),
            Source::Managed(m) => match m.valid_now() {
                Some(v) => Some(v),
                // Boxed: the waiting path (a token fetch included) is ten times the size
                // of the rest, and every request's future would carry it.
                None => Box::pin(m.valid_or_in_flight()).await,
            },
        }
    }

    /// Whether a rejected token can be replaced by a fresh one (client credentials): only
    /// then is a request worth keeping for its one resend.
    pub fn can_refresh(&self) -> bool {
        matches!(*self.source.load(), Source::Managed(_))
    }

    /// After the upstream rejected `used` with 401: a fresh token to resend with, once.
    /// None when the token cannot be refreshed (static token, endpoint down).
    pub async fn refresh_after_rejection(&self, used: &HeaderValue) -> Option<HeaderValue> {
        match &*self.source.load() {
            Source::Managed(m) => m.refresh(Some(used)).await,
            Source::Static(_) | Source::Sandbox(_) => None,
        }
    }

    /// True when a token is in hand (readiness).
    pub async fn is_available(&self) -> bool {
        match &*self.source.load() {
            Source::Static(_) | Source::Sandbox(_) => true,
            Source::Managed(m) => m.valid().await.is_some(),
        }
    }
}

impl Managed {
    /// The valid token without waiting, if the lock is free (it is held for writing only
    /// while a fetched token is stored).
    fn valid_now(&self) -> Option<HeaderValue> {
        unexpired(&*self.current.try_read().ok()?)
    }

    async fn valid(&self) -> Option<HeaderValue> {
        unexpired(&*self.current.read().await)
    }

    /// The valid token, else the outcome of the fetch in flight (or of the first one,
    /// made here if no fetch has been tried yet). Never starts a retry after a failure:
    /// that stays the refresher's, on its backoff.
    async fn valid_or_in_flight(&self) -> Option<HeaderValue> {
        if let Some(v) = self.valid().await {
            return Some(v);
        }
        // Taking the single-flight lock waits out the fetch that holds it.
        let flight = self.fetching.lock().await;
        if self.attempted.load(Ordering::Acquire) {
            return self.valid().await;
        }
        self.refresh_locked(flight, None).await
    }

    /// Fetches a new token unless another task already replaced `stale` (or, with no
    /// `stale`, unless the current one is not yet due). Returns the token to use.
    async fn refresh(&self, stale: Option<&HeaderValue>) -> Option<HeaderValue> {
        let flight = self.fetching.lock().await;
        self.refresh_locked(flight, stale).await
    }

    /// `refresh` once the single-flight lock is held; keeps it until the fetch is done.
    async fn refresh_locked(
        &self,
        _flight: MutexGuard<'_, ()>,
        stale: Option<&HeaderValue>,
    ) -> Option<HeaderValue> {
        if let Some(c) = self.current.read().await.as_ref() {
            let replaced = stale.is_some_and(|s| *s != c.value);
            let fresh = stale.is_none() && Instant::now() < c.refresh_at;
            if replaced || fresh {
                return Some(c.value.clone());
            }
        }
        let fetched = self.fetch().await;
        self.attempted.store(true, Ordering::Release);
        match fetched {
            Ok(next) => {
                if self.failing.swap(false, Ordering::Relaxed) {
                    tracing::info!("upstream token endpoint recovered");
                }
                let value = next.value.clone();
                *self.current.write().await = Some(next);
                Some(value)
            }
            Err(e) => {
                if !self.failing.swap(true, Ordering::Relaxed) {
                    tracing::error!(error = %e, "cannot obtain an upstream token; requests that need one get 503 until it recovers");
                }
                if stale.is_some() {
                    // The rejected token is useless: drop it and let the refresher retry
                    // on its backoff instead of at the old token's refresh time.
                    *self.current.write().await = None;
                    self.wake.notify_one();
                }
                None
            }
        }
    }

    /// One client_credentials call to the token endpoint.
    async fn fetch(&self) -> Result<Current, FetchError> {
        let form = form_urlencoded::Serializer::new(String::new())
            .append_pair("grant_type", "client_credentials")
            .append_pair("client_id", &self.client_id)
            .append_pair("client_secret", self.client_secret.expose_secret())
            .finish();
        let started = Instant::now();
        let (status, body) = self
            .upstream
            .send_plain(
                Method::POST,
                "/oauth/access_token",
                "application/x-www-form-urlencoded",
                Bytes::from(zeroize::Zeroizing::new(form).as_bytes().to_vec()),
            )
            .await?;
        if status != 200 && status != 201 {
            return Err(FetchError::Status(status));
        }
        let v: serde_json::Value = serde_json::from_slice(&body).map_err(|_| FetchError::Shape)?;
        let token = v["access_token"].as_str().ok_or(FetchError::Shape)?;
        let lifetime = v["expires_in"].as_u64().ok_or(FetchError::Shape)?.max(1);
        let lifetime = Duration::from_secs(lifetime);
        tracing::info!(expires_in_s = lifetime.as_secs(), "upstream token obtained");
        Ok(Current {
            value: bearer_value(token),
            refresh_at: started + lifetime.mul_f64(0.8),
            expires_at: started + lifetime,
        })
    }
}

/// Keeps a managed token fresh: fetches at start, then at 80% of each lifetime; on
/// failure retries with backoff (0.5 s doubling to 30 s). Ends when payshim drops it.
async fn refresher(managed: std::sync::Weak<Managed>, wake: Arc<tokio::sync::Notify>) {
    let mut backoff = Duration::from_millis(500);
    loop {
        let Some(m) = managed.upgrade() else { return };
        let wait = match m.refresh(None).await {
            Some(_) => {
                backoff = Duration::from_millis(500);
                let due = m.current.read().await.as_ref().map(|c| c.refresh_at);
                due.map_or(backoff, |d| d.saturating_duration_since(Instant::now()))
            }
            None => {
                let w = backoff;
                backoff = (backoff * 2).min(Duration::from_secs(30));
                w
            }
        };
        drop(m);
        tokio::select! {
            _ = tokio::time::sleep(wait.max(Duration::from_millis(100))) => {}
            _ = wake.notified() => {}
        }
    }
}

/// The token's header value while it has not expired.
fn unexpired(current: &Option<Current>) -> Option<HeaderValue> {
    current
        .as_ref()
        .filter(|c| Instant::now() < c.expires_at)
        .map(|c| c.value.clone())
}

/// `Bearer <token>`, marked sensitive so hyper and any debug output leave it out.
fn bearer_value(token: &str) -> HeaderValue {
    let mut v = HeaderValue::from_str(&format!("Bearer {}", token.trim()))
        .unwrap_or_else(|_| HeaderValue::from_static("Bearer invalid"));
    v.set_sensitive(true);
    v
}
