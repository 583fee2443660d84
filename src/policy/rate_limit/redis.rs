//! The shared limiter store: the same GCRA as the local table, run as one Lua script per
//! decision on Redis (one atomic round trip, Redis's own clock), over a multiplexed,
//! auto-reconnecting connection. A short timeout and a breaker keep a dead Redis from costing
//! latency: while the breaker is open, decisions go straight to `on_error`.

use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::cluster::ClusterClient;
use redis::cluster_async::ClusterConnection;
use tokio::sync::OnceCell;

use super::gcra::{Outcome, Rate};
use crate::upstream::now_ms;

/// What to do when Redis does not answer in time.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum OnError {
    /// Decide with this instance's own table (limits become per instance).
    Local,
    Allow,
    Deny,
}

const SCRIPT: &str = r#"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]))
if tat == nil or tat < now then tat = now end
if ARGV[3] == '1' then
  local back = tat - interval
  if back < now then back = now end
  redis.call('SET', KEYS[1], string.format('%.0f', back), 'PX', math.floor((back - now) / 1000) + 1000)
  return {1, 0, 0}
end
local new_tat = tat + interval
local ahead = new_tat - now
if ahead > tolerance then
  return {0, ahead - tolerance, tat - now}
end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.floor(ahead / 1000) + 1000)
return {1, math.floor((tolerance - ahead) / interval), ahead}
"#;

/// Consecutive failures that open the breaker, and how long it stays open.
const BREAKER_FAILURES: u32 = 3;
const BREAKER_OPEN_MS: u64 = 1_000;

/// One node (auto-reconnecting), or a cluster (keys routed to their slot's node).
enum Backend {
    Node {
        client: redis::Client,
        connection: OnceCell<ConnectionManager>,
    },
    Cluster {
        client: ClusterClient,
        connection: OnceCell<ClusterConnection>,
    },
}

pub struct RedisStore {
    backend: Backend,
    script: redis::Script,
    pub timeout: Duration,
    pub on_error: OnError,
    failures: AtomicU32,
    open_until_ms: AtomicU64,
    pub errors: AtomicU64,
}

#[derive(Debug)]
pub struct StoreUnavailable;

impl RedisStore {
    /// One URL is a single node; a comma-separated list is the seed nodes of a cluster.
    pub fn new(url: &str, timeout: Duration, on_error: OnError) -> Result<RedisStore, String> {
        let urls: Vec<&str> = url
            .split(',')
            .map(str::trim)
            .filter(|u| !u.is_empty())
            .collect();
        let backend = match urls[..] {
            [] => return Err("is empty".into()),
            [one] => Backend::Node {
                client: redis::Client::open(one).map_err(|e| format!("not a Redis URL: {e}"))?,
                connection: OnceCell::new(),
            },
            _ => Backend::Cluster {
                client: ClusterClient::builder(urls)
                    .connection_timeout(timeout.max(Duration::from_millis(100)))
                    .response_timeout(timeout)
                    .retries(1)
                    .build()
                    .map_err(|e| format!("not a list of Redis cluster URLs: {e}"))?,
                connection: OnceCell::new(),
            },
        };
        Ok(RedisStore {
            backend,
            script: redis::Script::new(SCRIPT),
            timeout,
            on_error,
            failures: AtomicU32::new(0),
            open_until_ms: AtomicU64::new(0),
            errors: AtomicU64::new(0),
        })
    }

    /// One decision (or, with `refund`, gives one request back) for `key`.
    pub async fn check(
        &self,
        key: &[u8],
        rate: Rate,
        refund: bool,
    ) -> Result<Outcome, StoreUnavailable> {
        let now = now_ms();
        if self.open_until_ms.load(Ordering::Relaxed) > now {
            return Err(StoreUnavailable);
        }
        let result = tokio::time::timeout(self.timeout, self.run(key, rate, refund)).await;
        match result {
            Ok(Ok(outcome)) => {
                self.failures.store(0, Ordering::Relaxed);
                Ok(outcome)
            }
            Ok(Err(e)) => {
                log::debug!("redis limiter error: {e}");
                self.failed(now)
            }
            Err(_) => self.failed(now),
        }
    }

    fn failed(&self, now: u64) -> Result<Outcome, StoreUnavailable> {
        self.errors.fetch_add(1, Ordering::Relaxed);
        if self.failures.fetch_add(1, Ordering::Relaxed) + 1 >= BREAKER_FAILURES {
            if self
                .open_until_ms
                .swap(now + BREAKER_OPEN_MS, Ordering::Relaxed)
                <= now
            {
                log::warn!("redis limiter store is not answering; deciding with on_error for {BREAKER_OPEN_MS} ms");
            }
            self.failures.store(0, Ordering::Relaxed);
        }
        Err(StoreUnavailable)
    }

    async fn run(&self, key: &[u8], rate: Rate, refund: bool) -> redis::RedisResult<Outcome> {
        let mut invocation = self.script.key(key);
        invocation
            .arg(rate.interval_us)
            .arg(rate.tolerance_us)
            .arg(if refund { "1" } else { "0" });
        let reply: Vec<i64> = match &self.backend {
            Backend::Node { client, connection } => {
                let connection = connection
                    .get_or_try_init(|| async {
                        let config = ConnectionManagerConfig::new()
                            .set_connection_timeout(self.timeout.max(Duration::from_millis(100)))
                            .set_response_timeout(self.timeout)
                            .set_number_of_retries(1);
                        ConnectionManager::new_with_config(client.clone(), config).await
                    })
                    .await?;
                invocation.invoke_async(&mut connection.clone()).await?
            }
            Backend::Cluster { client, connection } => {
                let connection = connection
                    .get_or_try_init(|| client.get_async_connection())
                    .await?;
                invocation.invoke_async(&mut connection.clone()).await?
            }
        };
        let [allowed, n, reset] = reply[..] else {
            return Err(redis::RedisError::from((
                redis::ErrorKind::TypeError,
                "unexpected script reply",
            )));
        };
        let non_negative = |v: i64| u64::try_from(v).unwrap_or(0);
        Ok(if allowed == 1 {
            Outcome {
                allowed: true,
                remaining: non_negative(n),
                retry_after_us: 0,
                reset_us: non_negative(reset),
            }
        } else {
            Outcome {
                allowed: false,
                remaining: 0,
                retry_after_us: non_negative(n),
                reset_us: non_negative(reset),
            }
        })
    }
}
