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
//!   handlers that finished, goes into the group's delayed sorted set
//!   (`<stream>:delayed:<group>`, scored by due time) and the original is acked, in one script;
//!   `receive` moves due ones back to the stream marked with the group (`group` field), and the
//!   stream's other groups ack such a copy unread, so that one group's retry never reaches them.
//!   Release → the entry stays pending, marked idle so the next `XAUTOCLAIM` takes it;
//! - an entry that is not a wire envelope is handed to Herald as a malformed message: Herald
//!   dead-letters it with reason `malformed`, and the settlement acks it.
//!
//! Every check-then-act step (is this entry still mine? then ack) runs as one Lua script, so a
//! settlement from a relay that lost its lease is ignored.
//!
//! **Trimming.** Entries every consumer group of the stream has finished are deleted, so the
//! stream does not grow forever; nothing another group may still need is. One Lua script (atomic
//! against concurrent reads and acks) finds, per group, the lowest entry it still needs: its
//! lowest pending entry (`XPENDING`: leased, released, or read and not yet acked), or else the
//! first entry after its last-delivered id (entries after it are not yet read by that group). It
//! then runs `XTRIM <stream> MINID <lowest of those>`, which deletes only entries below it. So an
//! entry pending in any group, or not yet read by any group, is never deleted, whatever the
//! groups' speeds; a group that stopped reading keeps everything from where it stopped (remove a
//! group you abandoned with `XGROUP DESTROY`). The trim runs after a settlement and on an idle
//! `receive`, at most once per [`trim_every`](RedisStreamsBuilder::trim_every) (default 1 s), and
//! on [`trim`](RedisStreams::trim) or a relay's retention sweep (which keeps finished entries
//! younger than its retention period: to keep finished entries for a while, turn the automatic
//! trim off with [`no_trimming`](RedisStreamsBuilder::no_trimming) and give the relay a
//! `retention`). Moving a group back with `XGROUP SETID` cannot bring trimmed entries back. Retries wait in the delayed set, which trimming never
//! touches: a retry is added to it and its original acked in one script, and a due one is added
//! to the stream and removed from the set in one script. There is deliberately no `MAXLEN`
//! setting: `MAXLEN` deletes the oldest entries whether or not a group has finished them, so it
//! would lose messages.
//!
//! **Waking.** An idle relay's `wait` wakes as soon as the group has an entry it has not read, or
//! when the earliest retry in the delayed set is due, instead of sleeping its whole poll
//! interval. It reads the group's last-delivered id and the delayed set's earliest due time (one
//! script), then blocks in `XREAD BLOCK … STREAMS <stream> <last-delivered id>`, which returns at
//! once if an entry arrived in between, or when one is added. `XREAD` reads without a consumer
//! group, so waiting claims nothing: the woken relay then leases entries with `receive` as usual,
//! and when several relays wake for one entry, `XREADGROUP` gives it to exactly one of them.
//! Each waiting relay blocks on a connection of its own (kept in a small pool and reused), never
//! on the connection `receive` uses. A lease that expires, or an entry another relay released, is
//! still found at the next poll. If Redis cannot be reached, `wait` sleeps out its timeout.
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
use redis::aio::{ConnectionManager, ConnectionManagerConfig, MultiplexedConnection};
use redis::streams::{StreamAutoClaimReply, StreamId, StreamInfoGroupsReply, StreamReadReply};
use redis::Script;
use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

/// The stream entry field holding the wire envelope.
pub const ENVELOPE_FIELD: &str = "envelope";
/// The stream entry field holding the message id (also inside the envelope), for tools.
pub const ID_FIELD: &str = "id";
/// On a retry's copy: the consumer group it is for. Other groups of the stream ack it unread
/// (each group retries its own copies).
pub const GROUP_FIELD: &str = "group";

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
    client: redis::Client,
    /// Writes and scripts.
    commands: ConnectionManager,
    /// Reads (`XREADGROUP`, `XAUTOCLAIM`) on their own connection, without a response timeout.
    reads: ConnectionManager,
    /// Idle connections for `wait`'s blocking `XREAD`, one per waiting relay.
    waiting: Mutex<Vec<MultiplexedConnection>>,
    /// How often the stream is trimmed, if at all.
    trim_every: Option<Duration>,
    /// When the stream was last trimmed (or the source opened).
    last_trim: Mutex<Instant>,
    next_receipt: AtomicU64,
    held: Mutex<HashMap<u64, Held>>,
}

/// Configures a [`RedisStreams`]: made by [`RedisStreams::builder`], opened by
/// [`connect`](Self::connect).
#[must_use = "a builder does nothing until `connect()`"]
#[derive(Clone)]
pub struct RedisStreamsBuilder {
    url: String,
    stream: String,
    group: String,
    trim_every: Option<Duration>,
}

impl fmt::Debug for RedisStreamsBuilder {
    // The URL is left out: it may hold a password.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RedisStreamsBuilder")
            .field("stream", &self.stream)
            .field("group", &self.group)
            .field("trim_every", &self.trim_every)
            .finish_non_exhaustive()
    }
}

impl RedisStreamsBuilder {
    /// How often, at most, the source trims the stream of the entries every consumer group has
    /// finished (default every second; `Duration::ZERO` trims after every settlement). The
    /// trim never deletes an entry pending in a group or not yet read by one (see the crate
    /// docs).
    pub fn trim_every(mut self, interval: Duration) -> Self {
        self.trim_every = Some(interval);
        self
    }

    /// Never trims the stream on its own: finished entries stay until [`RedisStreams::trim`] or a
    /// relay's retention sweep removes them, or something outside Herald does.
    pub fn no_trimming(mut self) -> Self {
        self.trim_every = None;
        self
    }

    /// Connects to Redis and creates the consumer group at the stream's start if it is missing
    /// (with the stream).
    ///
    /// # Errors
    /// When the URL is not valid, Redis cannot be reached, or the group cannot be created.
    pub async fn connect(self) -> Result<RedisStreams, RedisTransportError> {
        let client = redis::Client::open(self.url.as_str())
            .map_err(|source| RedisTransportError::InvalidUrl { source })?;
        let connect = |operation| move |source| RedisTransportError::Redis { operation, source };
        let commands = ConnectionManager::new_with_config(
            client.clone(),
            ConnectionManagerConfig::new().set_number_of_retries(3),
        )
        .await
        .map_err(connect("connect"))?;
        let reads = ConnectionManager::new_with_config(
            client.clone(),
            ConnectionManagerConfig::new()
                .set_number_of_retries(3)
                .set_response_timeout(None),
        )
        .await
        .map_err(connect("connect the reading connection"))?;
        let RedisStreamsBuilder {
            stream,
            group,
            trim_every,
            ..
        } = self;
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
                delayed: format!("{stream}:delayed:{group}"),
                stream,
                group,
                client,
                commands,
                reads,
                waiting: Mutex::new(Vec::new()),
                trim_every,
                last_trim: Mutex::new(Instant::now()),
                next_receipt: AtomicU64::new(0),
                held: Mutex::new(HashMap::new()),
            }),
        })
    }
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
            .field("trim_every", &self.shared.trim_every)
            .field("held", &self.shared.held.lock().len())
            .finish_non_exhaustive()
    }
}

/// How long a released entry looks idle: longer than any lease, so the next `XAUTOCLAIM` takes it.
const RELEASED_IDLE_MS: u64 = 365 * 24 * 3600 * 1000;

/// How often the stream is trimmed unless configured otherwise.
const DEFAULT_TRIM_EVERY: Duration = Duration::from_secs(1);

/// How much longer than its `BLOCK` time a waiting `XREAD` may take before its connection is
/// given up (a server that stopped answering without closing the connection).
const WAIT_GRACE: Duration = Duration::from_secs(2);

/// The longest one blocking `XREAD` lasts; a longer wait returns after it (an extra look costs
/// one `receive`), so a connection that died silently is noticed within a minute.
const MAX_BLOCK: Duration = Duration::from_secs(60);

/// Deletes the entries every group has finished; returns how many (KEYS: stream; ARGV: the age in
/// ms below which finished entries are kept, or -1). Stream ids are compared as decimal strings,
/// so ids beyond 2^53 are exact too.
const TRIM: &str = r"
local function less_number(a, b)
  if #a ~= #b then return #a < #b end
  return a < b
end
local function less(a, b)
  local ams, aseq = string.match(a, '^(%d+)%-(%d+)$')
  local bms, bseq = string.match(b, '^(%d+)%-(%d+)$')
  if ams ~= bms then return less_number(ams, bms) end
  return less_number(aseq, bseq)
end
-- The smallest id after `id`; `id` itself where its sequence is too long to add one exactly in
-- Lua's numbers (that keeps one finished entry more, never one less).
local function after(id)
  local ms, seq = string.match(id, '^(%d+)%-(%d+)$')
  if #seq > 15 then return id end
  return ms .. '-' .. string.format('%.0f', tonumber(seq) + 1)
end
local groups = redis.pcall('XINFO', 'GROUPS', KEYS[1])
if groups.err or #groups == 0 then return 0 end
local needed = nil
for _, g in ipairs(groups) do
  local name, last
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then last = g[i + 1] end
  end
  -- Entries after the last delivered one are not read by this group yet.
  local first = after(last)
  local pending = redis.call('XPENDING', KEYS[1], name)
  if pending[1] > 0 and less(pending[2], first) then first = pending[2] end
  if needed == nil or less(first, needed) then needed = first end
end
if tonumber(ARGV[1]) >= 0 then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  local young = string.format('%.0f', math.max(0, now - tonumber(ARGV[1]))) .. '-0'
  if less(young, needed) then needed = young end
end
return redis.call('XTRIM', KEYS[1], 'MINID', needed)
";

/// Where `wait` starts: the group's last-delivered id, and the ms until the earliest retry is due
/// (-1 when there is none); nil when the group is missing (KEYS: stream, delayed; ARGV: group).
const WAIT_FROM: &str = r"
local groups = redis.pcall('XINFO', 'GROUPS', KEYS[1])
if groups.err then return nil end
local last = nil
for _, g in ipairs(groups) do
  local name, id
  for i = 1, #g, 2 do
    if g[i] == 'name' then name = g[i + 1] elseif g[i] == 'last-delivered-id' then id = g[i + 1] end
  end
  if name == ARGV[1] then last = id end
end
if not last then return nil end
local due = -1
local first = redis.call('ZRANGE', KEYS[2], 0, 0, 'WITHSCORES')
if first[2] then
  local t = redis.call('TIME')
  local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
  due = math.max(0, math.ceil(tonumber(first[2]) - now))
end
return {last, due}
";

/// Moves due messages from the group's delayed set back to the stream, marked for the group
/// (KEYS: stream, delayed; ARGV: limit, group).
const PROMOTE: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local due = redis.call('ZRANGEBYSCORE', KEYS[2], '-inf', now, 'LIMIT', 0, tonumber(ARGV[1]))
for _, envelope in ipairs(due) do
  local ok, decoded = pcall(cjson.decode, envelope)
  local id = ''
  if ok and type(decoded) == 'table' and type(decoded.id) == 'string' then id = decoded.id end
  redis.call('XADD', KEYS[1], '*', 'id', id, 'envelope', envelope, 'group', ARGV[2])
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
    /// read by consumer group `group` (created at the stream's start if missing, with the stream),
    /// with the default settings (the stream trimmed every second). The same as
    /// `RedisStreams::builder(url, stream, group).connect()`.
    ///
    /// # Errors
    /// When the URL is not valid, Redis cannot be reached, or the group cannot be created.
    pub async fn connect(
        url: &str,
        stream: impl Into<String>,
        group: impl Into<String>,
    ) -> Result<Self, RedisTransportError> {
        Self::builder(url, stream, group).connect().await
    }

    /// Configures the transport for stream `stream` read by consumer group `group` on the
    /// Redis server at `url` (`redis://[:password@]host:port[/db]`).
    ///
    /// ```no_run
    /// # async fn run() -> Result<(), Box<dyn std::error::Error>> {
    /// use herald_transport_redis::RedisStreams;
    /// use std::time::Duration;
    ///
    /// let streams = RedisStreams::builder("redis://127.0.0.1:6379", "orders", "notifier")
    ///     .trim_every(Duration::from_secs(10))
    ///     .connect()
    ///     .await?;
    /// # Ok(()) }
    /// ```
    pub fn builder(
        url: impl Into<String>,
        stream: impl Into<String>,
        group: impl Into<String>,
    ) -> RedisStreamsBuilder {
        RedisStreamsBuilder {
            url: url.into(),
            stream: stream.into(),
            group: group.into(),
            trim_every: Some(DEFAULT_TRIM_EVERY),
        }
    }

    /// The stream's key.
    pub fn stream(&self) -> &str {
        &self.shared.stream
    }

    /// The sorted set holding this group's retries until they are due
    /// (`<stream>:delayed:<group>`).
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

    /// Deletes the entries every consumer group of the stream has finished, now; returns how
    /// many. An entry pending in a group, or not yet read by one, is kept, and so is every entry
    /// after it (see the crate docs). The source also does this on its own every
    /// [`trim_every`](RedisStreamsBuilder::trim_every).
    ///
    /// # Errors
    /// When Redis fails; nothing is deleted then.
    pub async fn trim(&self) -> Result<u64, redis::RedisError> {
        self.trim_keeping(None).await
    }

    /// Trims, keeping finished entries younger than `young` too.
    async fn trim_keeping(&self, young: Option<Duration>) -> Result<u64, redis::RedisError> {
        let young_ms = young.map_or(-1, |age| i64::try_from(age.as_millis()).unwrap_or(i64::MAX));
        Script::new(TRIM)
            .key(&self.shared.stream)
            .arg(young_ms)
            .invoke_async(&mut self.shared.commands.clone())
            .await
    }

    /// Trims if trimming is on and the last trim is `trim_every` ago. A failure is logged: the
    /// entries are trimmed by a later run.
    async fn trim_when_due(&self) {
        let Some(every) = self.shared.trim_every else {
            return;
        };
        {
            let mut last = self.shared.last_trim.lock();
            if last.elapsed() < every {
                return;
            }
            *last = Instant::now();
        }
        match self.trim().await {
            Ok(trimmed) => {
                tracing::trace!(stream = %self.shared.stream, trimmed, "trimmed finished entries");
            }
            Err(error) => {
                tracing::warn!(stream = %self.shared.stream, %error, "could not trim the stream's finished entries; trying again later");
            }
        }
    }

    /// Blocks until the group has an entry it has not read, the earliest retry is due, or
    /// `timeout` passes, on a connection of its own.
    async fn wait_for_entries(&self, timeout: Duration) -> Result<(), redis::RedisError> {
        let shared = &self.shared;
        let from: Option<(String, i64)> = Script::new(WAIT_FROM)
            .key(&shared.stream)
            .key(&shared.delayed)
            .arg(&shared.group)
            .invoke_async(&mut shared.commands.clone())
            .await?;
        let Some((last_delivered, due_in_ms)) = from else {
            // The group is gone (deleted by hand): `receive` reports it.
            tokio::time::sleep(timeout).await;
            return Ok(());
        };
        let block = match u64::try_from(due_in_ms) {
            Ok(due_in) => timeout.min(Duration::from_millis(due_in)),
            Err(_) => timeout,
        }
        .min(MAX_BLOCK);
        let block_ms = millis(block);
        if block_ms == 0 {
            // `BLOCK 0` would block forever.
            tokio::time::sleep(block).await;
            return Ok(());
        }
        let pooled = shared.waiting.lock().pop();
        let mut connection = match pooled {
            Some(connection) => connection,
            None => {
                let config = redis::AsyncConnectionConfig::new().set_response_timeout(None);
                shared
                    .client
                    .get_multiplexed_async_connection_with_config(&config)
                    .await?
            }
        };
        let mut read = redis::cmd("XREAD");
        read.arg("COUNT")
            .arg(1)
            .arg("BLOCK")
            .arg(block_ms)
            .arg("STREAMS")
            .arg(&shared.stream)
            .arg(&last_delivered);
        let woken = read.query_async::<redis::Value>(&mut connection);
        match tokio::time::timeout(block + WAIT_GRACE, woken).await {
            Ok(Ok(_)) => {
                shared.waiting.lock().push(connection);
                Ok(())
            }
            Ok(Err(error)) => Err(error),
            // The connection is dropped: it may still hold the blocked read.
            Err(_) => Ok(()),
        }
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

    /// Holds `entries` as received, except another group's retry copies, which it returns (to
    /// be acked unread).
    fn hold(&self, entries: Vec<StreamId>, into: &mut Vec<Received>) -> Vec<String> {
        let mut others = Vec::new();
        let mut held = self.shared.held.lock();
        for entry in entries {
            let group: Option<String> = entry.get(GROUP_FIELD);
            if group.is_some_and(|group| group != self.shared.group) {
                others.push(entry.id);
                continue;
            }
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
        others
    }

    /// Acks other groups' retry copies this group read: they are not its messages.
    async fn skip(&self, others: Vec<String>) -> Result<(), SourceError> {
        if others.is_empty() {
            return Ok(());
        }
        let _acked: u64 = redis::cmd("XACK")
            .arg(&self.shared.stream)
            .arg(&self.shared.group)
            .arg(others)
            .query_async(&mut self.shared.commands.clone())
            .await
            .map_err(backend("receive"))?;
        Ok(())
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

/// The consumer's lag for metrics and consoles: one reading, subscription `redis:<stream>`,
/// with the stream's entries its group has not finished, retries waiting included
/// ([`unfinished`](RedisStreams::unfinished)).
#[async_trait]
impl herald_core::ports::lag::ConsumerLag for RedisStreams {
    async fn lag(&self) -> Result<Vec<herald_core::ports::lag::LagReading>, SourceError> {
        let unfinished = self
            .unfinished()
            .await
            .map_err(|error| SourceError::backend("lag", error))?;
        Ok(vec![herald_core::ports::lag::LagReading::new(
            format!("redis:{}", self.stream()),
            unfinished,
        )])
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
        promotion.key(&shared.delayed).arg(limit).arg(&shared.group);
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
        let mut others = self.hold(claimed.claimed, &mut received);
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
            others.extend(self.hold(entries, &mut received));
        }
        self.skip(others).await?;
        if received.is_empty() {
            // Idle: a good moment to trim what other groups finished meanwhile.
            self.trim_when_due().await;
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
        self.trim_when_due().await;
        Ok(())
    }

    async fn wait(&self, timeout: Duration) {
        let started = Instant::now();
        if let Err(error) = self.wait_for_entries(timeout).await {
            tracing::debug!(stream = %self.shared.stream, %error, "could not block for new entries; waiting out the poll interval");
            tokio::time::sleep(timeout.saturating_sub(started.elapsed())).await;
        }
    }

    async fn sweep(&self, older_than: Duration, _batch: usize) -> Result<u64, SourceError> {
        // One exact `XTRIM`: it cannot be split into batches (only an approximate trim takes a
        // `LIMIT`), and it costs little per entry.
        self.trim_keeping(Some(older_than))
            .await
            .map_err(backend("sweep"))
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
        assert_send_sync::<RedisStreamsBuilder>();
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
