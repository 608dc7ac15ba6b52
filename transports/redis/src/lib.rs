//! Redis Streams for [Herald](https://docs.rs/herald): a [`MessageSink`] that `XADD`s each
//! message's wire envelope (`docs/WIRE.md`) to a stream, and a [`MessageSource`] that reads the
//! stream through a consumer group, so that any number of processes share its messages.
//!
//! How the source maps Herald's leases onto a consumer group:
//! - a **lease** is a pending entry owned by the relay's consumer (the relay's owner name);
//!   `receive` first takes entries left idle longer than the lease (`XAUTOCLAIM`: a dead
//!   consumer's, or one released), then new ones (`XREADGROUP … >`);
//! - **keep** resets the idle time of the entries this consumer still owns (`XCLAIM … JUSTID`);
//! - **settle**: done or failed for good → `XACK`; retry → the message, attempt + 1 and the
//!   handlers that finished, goes into a delayed sorted set (`<stream>:delayed`, scored by due
//!   time) and the original is acked, in one script; `receive` moves due ones back to the stream.
//!   Release → the entry stays pending, marked idle so the next `XAUTOCLAIM` takes it;
//! - an entry that is not a wire envelope is handed to Herald as a malformed message: Herald
//!   dead-letters it with reason `malformed`, and the settlement acks it.
//!
//! Every check-then-act step (is this entry still mine? then ack) runs as one Lua script, so a
//! settlement from a relay that lost its lease is ignored.
//!
//! ```no_run
//! # async fn run(herald: herald_core::Herald) -> Result<(), Box<dyn std::error::Error>> {
//! use herald_core::outbox::Relay;
//! use herald_transport_redis::RedisStreams;
//! use std::sync::Arc;
//!
//! let streams = RedisStreams::connect("redis://127.0.0.1:6379", "orders", "notifier").await?;
//! let relay = Relay::builder(Arc::new(streams.clone()), &herald).start();
//! # relay.stop().await; Ok(()) }
//! ```
#![warn(
    missing_docs,
    missing_debug_implementations,
    unreachable_pub,
    rust_2018_idioms
)]

/// The Redis client this transport is built on, for tools and benchmarks that talk to the server
/// directly (`benches/transports.rs` compares against it).
pub use redis;

use async_trait::async_trait;
use herald_core::ports::{
    Capabilities, Confirmation, MessageSink, MessageSource, OutgoingMessage, Receipt, Received,
    Settlement, SinkError, SourceError, StoredMessage,
};
use herald_core::wire;
use parking_lot::Mutex;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use redis::streams::{StreamAutoClaimReply, StreamId, StreamInfoGroupsReply, StreamReadReply};
use redis::Script;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

/// The stream entry field holding the wire envelope.
pub const ENVELOPE_FIELD: &str = "envelope";
/// The stream entry field holding the message id (also inside the envelope), for tools.
pub const ID_FIELD: &str = "id";

/// Could not connect to Redis or prepare the stream.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RedisTransportError {
    /// The URL is not a Redis URL (it is not repeated here: it may hold a password).
    #[error(
        "the Redis URL is not valid: {source}; write it as redis://[:password@]host:port[/db]"
    )]
    InvalidUrl {
        /// The parser's error.
        #[source]
        source: redis::RedisError,
    },
    /// Redis did not answer or refused a command while setting up.
    #[error("Redis could not {operation}: {source}; check that the server is up and reachable")]
    Redis {
        /// What was being done.
        operation: &'static str,
        /// Redis's error.
        #[source]
        source: redis::RedisError,
    },
}

/// One stream and one consumer group on Redis, as a sink and as a source. Cheap to clone (one
/// `Arc`); clones share connections and the receipts they handed out.
#[derive(Clone)]
pub struct RedisStreams {
    shared: Arc<Shared>,
}

struct Shared {
    stream: String,
    delayed: String,
    group: String,
    /// Writes and scripts.
    commands: ConnectionManager,
    /// Reads (`XREADGROUP`, `XAUTOCLAIM`) on their own connection, without a response timeout.
    reads: ConnectionManager,
    next_receipt: AtomicU64,
    held: Mutex<HashMap<u64, Held>>,
}

/// What a receipt names: the stream entry and the message read from it.
struct Held {
    entry: String,
    message: StoredMessage,
}

impl fmt::Debug for RedisStreams {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStreams")
            .field("stream", &self.shared.stream)
            .field("group", &self.shared.group)
            .field("held", &self.shared.held.lock().len())
            .finish_non_exhaustive()
    }
}

/// How long a released entry looks idle: longer than any lease, so the next `XAUTOCLAIM` takes it.
const RELEASED_IDLE_MS: u64 = 365 * 24 * 3600 * 1000;

/// Moves due messages from the delayed set back to the stream (KEYS: stream, delayed; ARGV: limit).
const PROMOTE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, envelope in ipairs(due) do
  local ok, decoded = pcall(cjson.decode, envelope)
  local id = ''
  if ok and type(decoded) == 'table' and type(decoded.id) == 'string' then id = decoded.id end
  redis.call('XADD', KEYS[1], '*', 'id', id, 'envelope', envelope)
  redis.call('ZREM', KEYS[2], envelope)
end
return #due
";

/// Resets the idle time of the entries `owner` still owns; returns them (KEYS: stream; ARGV:
/// group, owner, ids…).
const KEEP: &str = r"
local kept = {}
for i = 3, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if p[1] and p[1][2] == ARGV[2] then
    redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[i], 'JUSTID')
    kept[#kept + 1] = ARGV[i]
  end
end
return kept
";

/// Settles a batch: each entry `owner` still owns is acked, retried or released; returns the
/// entries ignored because `owner` no longer owns them (KEYS: stream, delayed; ARGV: group,
/// owner, then per entry: id, action, delay ms, envelope). One script per batch, so a batch
/// costs one round trip, not one per message.
const SETTLE: &str = r"
local ignored = {}
local now = nil
for i = 3, #ARGV, 4 do
  local id = ARGV[i]
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if p[1] and p[1][2] == ARGV[2] then
    local action = ARGV[i + 1]
    if action == 'retry' then
      if not now then
        local t = redis.call('TIME')
        now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
      end
      redis.call('ZADD', KEYS[2], now + tonumber(ARGV[i + 2]), ARGV[i + 3])
      redis.call('XACK', KEYS[1], ARGV[1], id)
    elseif action == 'release' then
      redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id, 'IDLE', ARGV[i + 2], 'JUSTID')
    else
      redis.call('XACK', KEYS[1], ARGV[1], id)
    end
  else
    ignored[#ignored + 1] = id
  end
end
return ignored
";

fn backend(operation: &'static str) -> impl FnOnce(redis::RedisError) -> SourceError {
    move |error| SourceError::backend(operation, error)
}

fn millis(duration: Duration) -> u64 {
    u64::try_from(duration.as_millis()).unwrap_or(u64::MAX)
}

impl RedisStreams {
    /// The capabilities declared as sink and as source. Per-key order is not declared: consumers
    /// of one group take entries concurrently and a retry goes back to the end of the stream, so
    /// two messages of one key can run at once or swap. Persistence is not declared either: it
    /// depends on the server's configuration (AOF), which the transport does not control.
    pub const CAPABILITIES: Capabilities = Capabilities::none().with_per_message_ack();

    /// Connects to Redis at `url` (`redis://[:password@]host:port[/db]`), for stream `stream`
    /// read by consumer group `group` (created at the stream's start if missing, with the stream).
    ///
    /// # Errors
    /// When the URL is not valid, Redis cannot be reached, or the group cannot be created.
    pub async fn connect(
        url: &str,
        stream: impl Into<String>,
        group: impl Into<String>,
    ) -> Result<Self, RedisTransportError> {
        let client = redis::Client::open(url)
            .map_err(|source| RedisTransportError::InvalidUrl { source })?;
        let connect = |operation| move |source| RedisTransportError::Redis { operation, source };
        let commands = ConnectionManager::new_with_config(
            client.clone(),
            ConnectionManagerConfig::new().set_number_of_retries(3),
        )
        .await
        .map_err(connect("connect"))?;
        let reads = ConnectionManager::new_with_config(
            client,
            ConnectionManagerConfig::new()
                .set_number_of_retries(3)
                .set_response_timeout(None),
        )
        .await
        .map_err(connect("connect the reading connection"))?;
        let stream = stream.into();
        let group = group.into();
        let created: redis::RedisResult<()> = redis::cmd("XGROUP")
            .arg("CREATE")
            .arg(&stream)
            .arg(&group)
            .arg("0")
            .arg("MKSTREAM")
            .query_async(&mut commands.clone())
            .await;
        match created {
            Err(error) if error.code() != Some("BUSYGROUP") => {
                return Err(RedisTransportError::Redis {
                    operation: "create the consumer group",
                    source: error,
                })
            }
            _ => {}
        }
        Ok(RedisStreams {
            shared: Arc::new(Shared {
                delayed: format!("{stream}:delayed"),
                stream,
                group,
                commands,
                reads,
                next_receipt: AtomicU64::new(0),
                held: Mutex::new(HashMap::new()),
            }),
        })
    }

    /// The stream's key.
    pub fn stream(&self) -> &str {
        &self.shared.stream
    }

    /// The sorted set holding retries until they are due (`<stream>:delayed`).
    pub fn delayed_key(&self) -> &str {
        &self.shared.delayed
    }

    /// Messages of the stream the group has not finished: pending (leased or released), not yet
    /// read by the group, or waiting in the delayed set for a retry.
    ///
    /// # Errors
    /// When Redis fails.
    pub async fn unfinished(&self) -> Result<u64, redis::RedisError> {
        let mut conn = self.shared.commands.clone();
        let groups: StreamInfoGroupsReply = redis::cmd("XINFO")
            .arg("GROUPS")
            .arg(&self.shared.stream)
            .query_async(&mut conn)
            .await?;
        let delayed: u64 = redis::cmd("ZCARD")
            .arg(&self.shared.delayed)
            .query_async(&mut conn)
            .await?;
        let in_group = groups
            .groups
            .iter()
            .find(|g| g.name == self.shared.group)
            .map_or(0, |g| g.pending + g.lag.unwrap_or(0));
        Ok(in_group as u64 + delayed)
    }

    /// The stored message an entry holds; one that is not a wire envelope is handed over so that
    /// Herald dead-letters it as malformed (its id is not a UUID, and says why).
    fn read_entry(entry: &StreamId) -> StoredMessage {
        let bytes: Vec<u8> = entry.get(ENVELOPE_FIELD).unwrap_or_default();
        match wire::decode(&bytes) {
            Ok(message) => message,
            Err(error) => {
                let id: String = entry.get(ID_FIELD).unwrap_or_default();
                let name: String = entry.get("name").unwrap_or_default();
                let headers = malformed_headers(&entry.id, &id);
                tracing::warn!(entry = %entry.id, %error, "a stream entry is not a Herald wire envelope; it goes to the dead letters as malformed");
                StoredMessage {
                    message_id: format!("malformed wire envelope: {error}"),
                    name,
                    key: None,
                    payload: String::from_utf8_lossy(&bytes).into_owned(),
                    headers,
                    occurred_at: chrono::Utc::now(),
                    attempt: 1,
                    progress: herald_core::Progress::new(),
                    only_handlers: None,
                }
            }
        }
    }

    fn hold(&self, entries: Vec<StreamId>, into: &mut Vec<Received>) {
        let mut held = self.shared.held.lock();
        for entry in entries {
            let message = Self::read_entry(&entry);
            let receipt = self.shared.next_receipt.fetch_add(1, Ordering::Relaxed);
            held.insert(
                receipt,
                Held {
                    entry: entry.id,
                    message: message.clone(),
                },
            );
            into.push(Received {
                receipt: Receipt(receipt),
                message,
            });
        }
    }
}

/// The extra headers of a malformed entry: where it was, and the id its producer gave.
fn malformed_headers(entry: &str, id: &str) -> String {
    serde_json::json!({ "extra": { "redis-entry": entry, "redis-id-field": id } }).to_string()
}

#[async_trait]
impl MessageSink for RedisStreams {
    async fn publish(&self, batch: Vec<OutgoingMessage>) -> Result<Vec<Confirmation>, SinkError> {
        if batch.is_empty() {
            return Ok(Vec::new());
        }
        let mut pipe = redis::pipe();
        for message in &batch {
            pipe.cmd("XADD")
                .arg(&self.shared.stream)
                .arg("*")
                .arg(ID_FIELD)
                .arg(message.envelope.id.to_string())
                .arg("name")
                .arg(message.envelope.name.as_ref())
                .arg(ENVELOPE_FIELD)
                .arg(wire::encode(message));
        }
        let ids: Vec<String> = pipe
            .query_async(&mut self.shared.commands.clone())
            .await
            .map_err(SinkError::backend)?;
        Ok(ids.into_iter().map(|_| Confirmation::Confirmed).collect())
    }

    fn capabilities(&self) -> Capabilities {
        Self::CAPABILITIES
    }

    fn destination(&self) -> String {
        format!("redis:{}", self.stream())
    }
}

#[async_trait]
impl MessageSource for RedisStreams {
    async fn receive(
        &self,
        owner: &str,
        limit: usize,
        lease: Duration,
    ) -> Result<Vec<Received>, SourceError> {
        if limit == 0 {
            return Ok(Vec::new());
        }
        let shared = &self.shared;
        let promote = Script::new(PROMOTE);
        let mut commands = shared.commands.clone();
        let mut reads = shared.reads.clone();
        // Due retries are moved back and idle entries claimed at once, on the two connections:
        // one round trip instead of two before the read of new entries.
        let mut promotion = promote.key(&shared.stream);
        promotion.key(&shared.delayed).arg(limit);
        let mut autoclaim = redis::cmd("XAUTOCLAIM");
        autoclaim
            .arg(&shared.stream)
            .arg(&shared.group)
            .arg(owner)
            .arg(millis(lease))
            .arg("0-0")
            .arg("COUNT")
            .arg(limit);
        let (promoted, claimed) = tokio::join!(
            promotion.invoke_async::<u64>(&mut commands),
            autoclaim.query_async::<StreamAutoClaimReply>(&mut reads)
        );
        promoted.map_err(backend("receive"))?;
        let claimed = claimed.map_err(backend("receive"))?;
        let mut received = Vec::new();
        self.hold(claimed.claimed, &mut received);
        let room = limit.saturating_sub(received.len());
        if room > 0 {
            let read: Option<StreamReadReply> = redis::cmd("XREADGROUP")
                .arg("GROUP")
                .arg(&shared.group)
                .arg(owner)
                .arg("COUNT")
                .arg(room)
                .arg("STREAMS")
                .arg(&shared.stream)
                .arg(">")
                .query_async(&mut reads)
                .await
                .map_err(backend("receive"))?;
            let entries = read
                .into_iter()
                .flat_map(|reply| reply.keys)
                .flat_map(|key| key.ids)
                .collect();
            self.hold(entries, &mut received);
        }
        Ok(received)
    }

    async fn keep(
        &self,
        owner: &str,
        receipts: &[Receipt],
        _lease: Duration,
    ) -> Result<Vec<Receipt>, SourceError> {
        let wanted: Vec<(Receipt, String)> = {
            let held = self.shared.held.lock();
            receipts
                .iter()
                .filter_map(|r| held.get(&r.0).map(|h| (*r, h.entry.clone())))
                .collect()
        };
        if wanted.is_empty() {
            return Ok(Vec::new());
        }
        let script = Script::new(KEEP);
        let mut invocation = script.key(&self.shared.stream);
        invocation.arg(&self.shared.group).arg(owner);
        for (_, entry) in &wanted {
            invocation.arg(entry);
        }
        let kept: Vec<String> = invocation
            .invoke_async(&mut self.shared.commands.clone())
            .await
            .map_err(backend("keep"))?;
        let mut held = self.shared.held.lock();
        Ok(wanted
            .into_iter()
            .filter_map(|(receipt, entry)| {
                if kept.contains(&entry) {
                    Some(receipt)
                } else {
                    held.remove(&receipt.0);
                    None
                }
            })
            .collect())
    }

    async fn settle(
        &self,
        owner: &str,
        settled: Vec<(Receipt, Settlement)>,
    ) -> Result<(), SourceError> {
        let mine: Vec<(Held, Settlement)> = {
            let mut held = self.shared.held.lock();
            settled
                .into_iter()
                .filter_map(|(receipt, settlement)| {
                    held.remove(&receipt.0).map(|h| (h, settlement))
                })
                .collect()
        };
        if mine.is_empty() {
            return Ok(());
        }
        let script = Script::new(SETTLE);
        let mut invocation = script.key(&self.shared.stream);
        invocation
            .key(&self.shared.delayed)
            .arg(&self.shared.group)
            .arg(owner);
        for (held, settlement) in mine {
            let (action, delay_ms, envelope) = match settlement {
                Settlement::Done { .. } | Settlement::FailedForGood { .. } => {
                    ("ack", 0, Vec::new())
                }
                Settlement::Retry {
                    progress,
                    delay,
                    replacement_id,
                    ..
                } => {
                    let mut message = held.message;
                    message.progress = progress;
                    message.attempt = message.attempt.saturating_add(1);
                    if let Some(id) = replacement_id {
                        message.message_id = id.to_string();
                    }
                    ("retry", millis(delay), wire::encode_stored(&message))
                }
                // Release, and any settlement a newer Herald adds: leave it for a re-claim.
                _ => ("release", RELEASED_IDLE_MS, Vec::new()),
            };
            invocation
                .arg(held.entry)
                .arg(action)
                .arg(delay_ms)
                .arg(envelope);
        }
        let ignored: Vec<String> = invocation
            .invoke_async(&mut self.shared.commands.clone())
            .await
            .map_err(backend("settle"))?;
        for entry in ignored {
            tracing::warn!(%entry, %owner, "settlement for an entry this consumer no longer owns; ignored");
        }
        Ok(())
    }

    async fn wait(&self, timeout: Duration) {
        tokio::time::sleep(timeout).await;
    }

    fn capabilities(&self) -> Capabilities {
        Self::CAPABILITIES
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_transport_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<RedisStreams>();
        assert_send_sync::<RedisTransportError>();
    }

    #[test]
    fn an_invalid_url_does_not_show_the_password() {
        let error = redis::Client::open("redis://:s3cret@[bad").map(|_| ());
        let error = match error {
            Ok(()) => panic!("a bad URL was accepted"),
            Err(source) => RedisTransportError::InvalidUrl { source },
        };
        assert!(!error.to_string().contains("s3cret"), "{error}");
    }

    #[test]
    fn malformed_headers_are_json_with_escapes() {
        let text = malformed_headers("1-0", "a\"b\\c");
        let value: serde_json::Value = serde_json::from_str(&text).expect("json");
        assert_eq!(value["extra"]["redis-id-field"], "a\"b\\c");
    }
}
