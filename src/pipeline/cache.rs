//! The cache phases: lookup (after admit, before the plan) and insert (as the answer goes
//! out), with the cross-shard hop to a key's owner and the coalescing of identical requests.
//!
//! A key's answers live on one shard, its owner ([`owner`]); a lookup from another shard is
//! one message over the shard mesh and one reply. The owner also keeps the requests in flight
//! per key: the first miss *leads* (goes upstream), later identical requests *follow* it and
//! get the leader's response head and every frame it sent, then each new one. When a leader
//! fails before it answered, its followers ask the owner again: one of them leads the next
//! attempt. The leader's answer, when it is complete and healthy, is stored at the owner
//! before the owner forgets the flight, so nobody who asks after that misses.
//!
//! A hit is served in the client's dialect and form: byte for byte when the form matches, or
//! through `providers::replay` (a whole answer streamed, a stream made whole). It costs the
//! tenant nothing: the request's tab settles with no tokens and no spend.
//!
//! Why by hand: the per-shard, `!Send` registry of flights and the hop over glommio's mesh
//! are what a thread-per-core design needs and no cache crate offers; eviction and admission
//! are quick_cache's (`cache::partition`).

use std::cell::{Cell, OnceCell, RefCell};
use std::convert::Infallible;
use std::pin::Pin;
use std::rc::Rc;
use std::sync::Arc;
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use bytes::Bytes;
use http::header::{AGE, CACHE_CONTROL, CONTENT_TYPE, ETAG, IF_NONE_MATCH};
use http::{HeaderMap, HeaderValue, Response, StatusCode};
use http_body::{Body, Frame};

use super::body::ResBody;
use super::state::ShardState;
use crate::auth::table::KeyRecord;
use crate::cache::directives::{Directives, X_CACHE, X_CACHE_KEY, X_CACHE_SIMILARITY};
use crate::cache::entry::StreamTee;
use crate::cache::hot::Seen;
use crate::cache::partition::owner;
use crate::cache::{CacheKey, Entry, Form, Partition, Selector, Tenant};
use crate::config::{CacheScope, ModelRoute};
use crate::providers::{Dialect, replay};
use crate::shard::mesh::Mesh;

/// Longest wait for the owner shard's answer before the lookup counts as a miss. The owner is
/// in this process and answers within a turn of its executor; this bounds only a shard stuck
/// in a long task (a loaded machine takes tens of milliseconds, so it is far above that).
const HOP_TIMEOUT: Duration = Duration::from_secs(2);
/// Times a follower whose leader failed asks the owner again before it goes alone.
const MAX_REFOLLOWS: u32 = 3;

/// The route name of embeddings requests in their cache key (chat is `chat` or `messages`).
pub const EMBEDDINGS: &str = "embeddings";

/// A request the cache may answer: what it is filed under and how it wants its answer.
#[derive(Debug)]
pub struct Cacheable {
    key: CacheKey,
    directives: Directives,
    ttl_ms: u64,
    tenant: Tenant,
    model: Arc<str>,
    dialect: Dialect,
    stream: bool,
    include_usage: bool,
    /// An embeddings request (its answer is checked as one, and never streamed).
    embeddings: bool,
    /// Its semantic side (a chat request on a model that uses the semantic cache).
    semantic: Option<super::semantic::Semantic>,
    /// The request, kept with its answer when hot answers are refreshed.
    source: Option<Arc<crate::cache::entry::Source>>,
    /// The gateway's own refresh: its lookups are not reported to the warmer (a refresh is
    /// not a read).
    quiet: bool,
}

/// What the lookup found.
pub enum Looked {
    /// Answered from the cache (or by riding an identical request in flight).
    Answer(Response<ResBody>),
    /// Go upstream; `lead` is set when identical requests will follow this one.
    Miss(Option<Flight>),
}

/// How a request may be coalesced: its followers must want the same form.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlightForm {
    stream: bool,
    include_usage: bool,
}

/// A flight: the shard that leads it and its id there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlightId {
    shard: u16,
    id: u64,
}

/// Messages between shards.
pub enum CacheMsg {
    /// To the owner: look `key` up (and coalesce, with `form`).
    Get {
        /// The asker's id for the reply.
        id: u64,
        /// The key.
        key: CacheKey,
        /// Now (unix ms), as the asker sees it.
        now_ms: u64,
        /// The oldest answer the asker accepts.
        max_age_ms: Option<u64>,
        /// Whether a cached answer may be served.
        read: bool,
        /// Coalesce with requests in flight wanting this form.
        form: Option<FlightForm>,
        /// A flight the asker found failed or gone (the owner forgets it now, whatever
        /// order its own end comes in).
        dead: Option<FlightId>,
    },
    /// To the asker: what the owner found.
    Got {
        /// The asker's id.
        id: u64,
        /// The key.
        key: CacheKey,
        /// What was found.
        found: Found,
    },
    /// To the owner: store an answer.
    Put {
        /// Its key.
        key: CacheKey,
        /// The answer.
        entry: Arc<Entry>,
    },
    /// To the owner: a flight is over.
    Landed {
        /// Its key.
        key: CacheKey,
        /// The flight.
        flight: FlightId,
    },
    /// To a flight's leader: send its events to `tx`.
    Follow {
        /// The flight's key.
        key: CacheKey,
        /// The flight.
        flight: FlightId,
        /// Where its events go.
        tx: flume::Sender<FlightEvent>,
    },
    /// To a key's owner, from the leader of a flight that is over: tell the follower to ask
    /// again. Through the owner, so it comes after the answer the leader stored there.
    Gone {
        /// The follower.
        tx: flume::Sender<FlightEvent>,
    },
    /// From a key's owner, whose answer for it was replaced: drop any copy of the old one.
    /// On the same line as the owner's earlier replies, so it comes after any copy they made.
    Forget {
        /// The key.
        key: CacheKey,
    },
}

/// What an owner found for a key.
pub enum Found {
    /// A fresh answer.
    Hit(Arc<Entry>),
    /// Nothing: go upstream alone.
    Miss,
    /// Nothing: go upstream and lead the identical requests that follow, as this flight.
    Lead(FlightId),
    /// An identical request is in flight: follow it.
    Follow(FlightId),
}

/// What a flight's followers receive.
#[derive(Debug, Clone)]
pub enum FlightEvent {
    /// The leader's response head.
    Head {
        /// Its status.
        status: u16,
        /// Its content type.
        content_type: Option<HeaderValue>,
    },
    /// A frame of the leader's body.
    Frame(Bytes),
    /// The leader's body is done.
    End,
    /// The leader failed before it answered, or the flight is gone: ask the owner again.
    Failed,
}

/// The cache as one shard holds it.
pub struct ShardCache {
    /// The answers this shard owns.
    pub partition: RefCell<Partition>,
    mesh: OnceCell<Rc<Mesh<CacheMsg>>>,
    /// The L2 in Redis (on the control plane) and how long a lookup may wait for it.
    l2: OnceCell<(crate::cache::l2::L2Sender, Duration)>,
    pending: RefCell<hashbrown::HashMap<u64, Rc<Slot<Found>>>>,
    next: Cell<u64>,
    /// Owner side: the flight of each key in flight.
    inflight: RefCell<hashbrown::HashMap<CacheKey, Inflight>>,
    /// Leader side: the flights this shard leads.
    led: RefCell<hashbrown::HashMap<u64, Led>>,
    swept_ms: Cell<u64>,
    /// The warmer: lookups seen (batched), and where the entries go at shutdown.
    warmer: OnceCell<WarmerLink>,
    /// The hottest keys over every shard (from the warmer).
    hot: RefCell<Arc<hashbrown::HashSet<CacheKey>>>,
    /// This shard's copies of hot answers it does not own (no hop for them).
    replicas: RefCell<hashbrown::HashMap<CacheKey, Arc<Entry>>>,
    /// Copies of other answers it fetched from their owners, bounded by [`COPY_SHARE`] of the
    /// shard's bytes and admitted like any entry (a copy read once goes first): a key another
    /// shard owns crosses once, then is answered here until its copy expires or is pushed out.
    copies: RefCell<Partition>,
    /// The semantic thread (a model uses the semantic cache).
    semantic: OnceCell<crate::cache::semantic::SemanticSender>,
    /// Owner side: hot keys being refreshed now.
    pub refreshing: RefCell<hashbrown::HashSet<CacheKey>>,
    /// When each hot key was last looked up on any shard (from the warmer, with refresh on).
    hot_reads: RefCell<Arc<hashbrown::HashMap<CacheKey, u64>>>,
}

/// A shard's line to the warmer.
pub struct WarmerLink {
    /// Lookups seen, batched to the warmer.
    pub seen: Rc<crate::shard::bridge::Batcher<Seen>>,
    /// Hands this shard's entries to the warmer (at shutdown, for the snapshot).
    pub entries: EntrySink,
}

/// Where a shard's entries go at shutdown.
pub type EntrySink = Box<dyn Fn(Vec<(CacheKey, Arc<Entry>)>)>;

struct Inflight {
    flight: FlightId,
    form: FlightForm,
    followers: usize,
}

#[derive(Default)]
struct Led {
    head: Option<(u16, Option<HeaderValue>)>,
    frames: Vec<Bytes>,
    followers: Vec<flume::Sender<FlightEvent>>,
}

/// The share of a shard's cache bytes its copies of other shards' answers may take (with more
/// than one shard; one shard owns every key and keeps no copies).
pub const COPY_SHARE: u64 = 8;

impl ShardCache {
    /// A shard's cache of `bytes` at most, one of `shards`: 1/[`COPY_SHARE`] of it for copies
    /// of answers other shards own, the rest for its own.
    pub fn new(bytes: u64, shards: usize) -> Self {
        let copies = if shards > 1 { bytes / COPY_SHARE } else { 0 };
        Self {
            partition: RefCell::new(Partition::new(bytes - copies)),
            copies: RefCell::new(Partition::new(copies)),
            mesh: OnceCell::new(),
            l2: OnceCell::new(),
            pending: RefCell::default(),
            next: Cell::new(0),
            inflight: RefCell::default(),
            led: RefCell::default(),
            swept_ms: Cell::new(0),
            warmer: OnceCell::new(),
            hot: RefCell::default(),
            replicas: RefCell::default(),
            semantic: OnceCell::new(),
            refreshing: RefCell::default(),
            hot_reads: RefCell::default(),
        }
    }

    /// The warmer's latest last-lookup times of the hot keys.
    pub fn set_hot_reads(&self, reads: Arc<hashbrown::HashMap<CacheKey, u64>>) {
        *self.hot_reads.borrow_mut() = reads;
    }

    /// Connect the semantic thread.
    pub fn set_semantic(&self, tx: crate::cache::semantic::SemanticSender) {
        let _ = self.semantic.set(tx);
    }

    /// The semantic thread, when connected.
    pub fn semantic(&self) -> Option<&crate::cache::semantic::SemanticSender> {
        self.semantic.get()
    }

    /// Connect the shard mesh (once, at start; without it the shard is the only one).
    pub fn set_mesh(&self, mesh: Rc<Mesh<CacheMsg>>) {
        let _ = self.mesh.set(mesh);
    }

    /// Connect the L2 (Redis configured): lookups wait for it at most `timeout`.
    pub fn set_l2(&self, tx: crate::cache::l2::L2Sender, timeout: Duration) {
        let _ = self.l2.set((tx, timeout));
    }

    /// Connect the warmer.
    pub fn set_warmer(&self, link: WarmerLink) {
        let _ = self.warmer.set(link);
    }

    /// Send the lookups seen so far to the warmer (the bridge's flush tick).
    pub fn flush_seen(&self) {
        if let Some(w) = self.warmer.get() {
            w.seen.flush();
        }
    }

    fn seen(&self, key: CacheKey, bytes: u64, read: bool) {
        if let Some(w) = self.warmer.get() {
            w.seen.push(Seen {
                key,
                bytes: u32::try_from(bytes).unwrap_or(u32::MAX),
                read,
            });
        }
    }

    /// A fresh local copy of an answer another shard owns (a hot one's, or one fetched from
    /// its owner before), no older than `max_age_ms`.
    fn replica(&self, key: &CacheKey, now_ms: u64, max_age_ms: Option<u64>) -> Option<Arc<Entry>> {
        let mut replicas = self.replicas.borrow_mut();
        let Some(e) = replicas.get(key) else {
            drop(replicas);
            return self.copies.borrow_mut().get(key, now_ms, max_age_ms);
        };
        if !e.is_fresh(now_ms) {
            replicas.remove(key);
            return None;
        }
        e.servable(now_ms, max_age_ms).then(|| e.clone())
    }

    /// Keep a copy of an answer another shard owns: among the replicas when it is hot, else
    /// among the copies (where the partition's admission decides how long it stays).
    fn keep_copy(&self, key: CacheKey, entry: Arc<Entry>) {
        if self.hot.borrow().contains(&key) {
            self.replicas.borrow_mut().insert(key, entry);
        } else {
            self.copies.borrow_mut().insert(key, entry);
        }
    }

    /// Drop this shard's copy of `key` (a replica's or a copy's), if it has one.
    fn forget_copy(&self, key: &CacheKey) {
        self.replicas.borrow_mut().remove(key);
        self.copies
            .borrow_mut()
            .invalidate(&crate::cache::partition::Selector::Key(*key));
    }

    fn next_id(&self) -> u64 {
        let n = self.next.get() + 1;
        self.next.set(n);
        n
    }

    fn shards(&self) -> usize {
        self.mesh.get().map_or(1, |m| m.shards())
    }
}

/// Whether the request is answered from (and stored in) the cache, and under which key:
/// `None` for a model without a cache TTL. Reads the body as JSON once (the canonical form).
#[allow(clippy::too_many_arguments)]
pub fn cacheable(
    state: &ShardState,
    (caller, tenant): (Option<&Arc<KeyRecord>>, Option<&Tenant>),
    model: &ModelRoute,
    route: &'static str,
    dialect: Dialect,
    body: &Bytes,
    headers: &HeaderMap,
    stream: bool,
    include_usage: bool,
) -> Option<Cacheable> {
    let ttl = model.cache_ttl?;
    let config = &state.config.cache;
    let directives = Directives::from_headers(headers, config.max_ttl.as_millis() as u64);
    let quiet = tenant.is_some();
    let tenant = match (tenant, config.scope, caller) {
        (Some(t), _, _) => t.clone(),
        (None, CacheScope::Global, _) | (None, _, None) => Tenant::Global,
        (None, CacheScope::Team, Some(k)) => match &k.team {
            Some(t) => Tenant::Team(t.clone()),
            None => Tenant::Key(k.id.clone()),
        },
        (None, CacheScope::Key, Some(k)) => Tenant::Key(k.id.clone()),
    };
    let value: serde_json::Value = serde_json::from_slice(body).ok()?;
    let ttl_ms = directives.ttl_ms.unwrap_or(ttl.as_millis() as u64).max(1);
    // Kept for a refresh before it expires (chat only: an embedding does not go stale).
    let source = (config.refresh.is_some() && route != EMBEDDINGS).then(|| {
        Arc::new(crate::cache::entry::Source {
            route,
            body: body.clone(),
            ttl_ms,
        })
    });
    let key = CacheKey::of(&tenant, route, &model.public.0, &value);
    let semantic = if route == EMBEDDINGS || directives.bypass {
        None
    } else {
        super::semantic::plan(state, model, &tenant, route, &value)
    };
    Some(Cacheable {
        quiet,
        semantic,
        source,
        key,
        ttl_ms,
        directives,
        tenant,
        model: model.public.0.clone(),
        dialect,
        stream,
        include_usage,
        embeddings: route == EMBEDDINGS,
    })
}

/// The lookup phase of a request that may be cacheable: `Break` with the answer (a hit, or a
/// ride on an identical request in flight), else `Continue` with the flight it leads, if any.
pub async fn before(
    state: &Rc<ShardState>,
    cacheable: Option<&Cacheable>,
    headers: &HeaderMap,
) -> std::ops::ControlFlow<Response<ResBody>, Option<Flight>> {
    match cacheable {
        Some(c) => match c.lookup(state, headers).await {
            Looked::Answer(res) => std::ops::ControlFlow::Break(res),
            Looked::Miss(flight) => std::ops::ControlFlow::Continue(flight),
        },
        None => std::ops::ControlFlow::Continue(None),
    }
}

/// The insert phase: the upstream's answer, teed into the cache and to the flight's
/// followers when the request was cacheable.
pub fn after(
    state: &Rc<ShardState>,
    cacheable: Option<Cacheable>,
    flight: Option<Flight>,
    res: Result<Response<ResBody>, crate::error::GatewayError>,
) -> Result<Response<ResBody>, crate::error::GatewayError> {
    match cacheable {
        Some(c) => c.respond(state, flight, res),
        None => res,
    }
}

impl Cacheable {
    /// Look the request up: a hit, a ride on an identical request in flight, or a miss
    /// (leading the identical requests that follow, when it may).
    pub async fn lookup(&self, state: &Rc<ShardState>, headers: &HeaderMap) -> Looked {
        let m = &state.metrics.cache;
        if self.directives.bypass {
            m.bypassed.inc();
            return Looked::Miss(None);
        }
        let form = FlightForm {
            stream: self.stream,
            include_usage: self.include_usage,
        };
        if self.directives.may_read() {
            let now = super::admit::now_ms();
            if let Some(entry) = state
                .cache
                .replica(&self.key, now, self.directives.max_age_ms)
                && let Some(res) = self.serve(&entry, headers, now)
            {
                m.hits.inc();
                m.replica_hits.inc();
                self.seen(state, entry.weight());
                return Looked::Answer(res);
            }
        } else {
            // `no-cache` (or a refresh): the owner's answer is about to be replaced. Its
            // `Forget` reaches the other shards after the store; this shard's copy goes now, so
            // its own next request asks the owner whatever order that message comes in.
            state.cache.forget_copy(&self.key);
        }
        let mut refollows = 0;
        let mut dead = None;
        // A key another shard owns: the L2 lookup leaves now, beside the hop, so a miss
        // waits no longer than the slower of the two. A key this shard owns is looked up here
        // at once, and Redis only asked on a miss.
        let remote = owner(&self.key, state.cache.shards()) != usize::from(state.id.0);
        let mut l2 = if remote { self.l2_lookup(state) } else { None };
        loop {
            let now = super::admit::now_ms();
            let found = ask(
                state,
                self.key,
                Query {
                    now_ms: now,
                    max_age_ms: self.directives.max_age_ms,
                    read: self.directives.may_read(),
                    form: Some(form),
                    dead,
                },
            )
            .await;
            match found {
                Found::Hit(entry) => {
                    // A hit from another shard left a copy here (`on_message`).
                    self.seen(state, entry.weight());
                    if let Some(res) = self.serve(&entry, headers, now) {
                        m.hits.inc();
                        return Looked::Answer(res);
                    }
                    // Cached in a form this request cannot be served from: fetch its own.
                    m.misses.inc();
                    return Looked::Miss(None);
                }
                Found::Miss => {
                    self.seen(state, 0);
                    let l2 = l2.take().or_else(|| self.l2_lookup(state));
                    if let Some(res) = self.answer_from_l2(state, l2, headers).await {
                        return Looked::Answer(res);
                    }
                    if let Some(res) = self.semantic_answer(state, headers).await {
                        return Looked::Answer(res);
                    }
                    m.misses.inc();
                    return Looked::Miss(None);
                }
                Found::Lead(id) => {
                    self.seen(state, 0);
                    let flight = Flight::lead(state, self.key, id);
                    let l2 = l2.take().or_else(|| self.l2_lookup(state));
                    let mut res = self.answer_from_l2(state, l2, headers).await;
                    if res.is_none() {
                        res = self.semantic_answer(state, headers).await;
                    }
                    let Some(res) = res else {
                        m.misses.inc();
                        return Looked::Miss(Some(flight));
                    };
                    // Stored at the owner before the flight ends: its followers, asking
                    // again, find it there.
                    flight.fail();
                    return Looked::Answer(res);
                }
                Found::Follow(flight) => {
                    if let Some(res) = self.follow(state, flight).await {
                        m.coalesced.inc();
                        return Looked::Answer(res);
                    }
                    dead = Some(flight);
                    refollows += 1;
                    if refollows >= MAX_REFOLLOWS {
                        m.misses.inc();
                        return Looked::Miss(None);
                    }
                }
            }
        }
    }

    /// Report a lookup to the warmer (not a refresh's).
    fn seen(&self, state: &ShardState, bytes: u64) {
        if !self.quiet {
            state.cache.seen(self.key, bytes, true);
        }
    }

    /// Start the L2 lookup, when there is an L2 and the request may be served from a cache.
    fn l2_lookup(
        &self,
        state: &ShardState,
    ) -> Option<(
        tokio::sync::oneshot::Receiver<Option<Arc<Entry>>>,
        std::time::Instant,
    )> {
        let (tx, timeout) = state.cache.l2.get()?;
        if !self.directives.may_read() {
            return None;
        }
        let (reply, rx) = tokio::sync::oneshot::channel();
        tx.send(crate::cache::l2::L2Request::Get {
            key: self.key,
            reply,
        })
        .ok()?;
        Some((rx, std::time::Instant::now() + *timeout))
    }

    /// The L2's answer, if it has one in time: served, and stored in this node's cache.
    async fn answer_from_l2(
        &self,
        state: &Rc<ShardState>,
        l2: Option<(
            tokio::sync::oneshot::Receiver<Option<Arc<Entry>>>,
            std::time::Instant,
        )>,
        headers: &HeaderMap,
    ) -> Option<Response<ResBody>> {
        let (rx, until) = l2?;
        let left = until.saturating_duration_since(std::time::Instant::now());
        let m = &state.metrics.cache;
        let entry = match crate::shard::timeout(left, rx).await {
            Ok(Ok(Some(entry))) => entry,
            Ok(_) => return None,
            Err(_) => {
                m.l2_timeouts.inc();
                return None;
            }
        };
        let now = super::admit::now_ms();
        if !entry.servable(now, self.directives.max_age_ms) {
            return None;
        }
        let res = self.serve(&entry, headers, now)?;
        m.l2_hits.inc();
        m.hits.inc();
        put_here(state, self.key, entry);
        Some(res)
    }

    /// A hit as the response this request wants; `None` when the entry cannot give it (an
    /// OpenAI stream without its usage chunk, asked for with usage).
    fn serve(&self, entry: &Entry, headers: &HeaderMap, now_ms: u64) -> Option<Response<ResBody>> {
        self.serve_as(&self.key, entry, headers, now_ms)
    }

    /// A hit on the answer filed under `key` (the request's own, or a semantic neighbour's).
    fn serve_as(
        &self,
        key: &CacheKey,
        entry: &Entry,
        headers: &HeaderMap,
        now_ms: u64,
    ) -> Option<Response<ResBody>> {
        let etag = entry.etag(key);
        let mut res = if headers
            .get(IF_NONE_MATCH)
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').any(|t| weak_match(t.trim(), &etag)))
        {
            let mut res = Response::new(ResBody::full(Bytes::new()));
            *res.status_mut() = StatusCode::NOT_MODIFIED;
            res
        } else {
            self.body(entry)?
        };
        let h = res.headers_mut();
        h.insert(X_CACHE.clone(), HeaderValue::from_static("hit"));
        h.insert(AGE, HeaderValue::from(entry.age_secs(now_ms)));
        if let Ok(v) = HeaderValue::from_str(&etag) {
            h.insert(ETAG, v);
        }
        stamp(h, key);
        Some(res)
    }

    /// After an exact miss: the answer to a similar earlier question, if the semantic cache
    /// has one (counted as a hit).
    async fn semantic_answer(
        &self,
        state: &Rc<ShardState>,
        headers: &HeaderMap,
    ) -> Option<Response<ResBody>> {
        let sem = self.semantic.as_ref()?;
        if !self.directives.may_read() {
            return None;
        }
        let near = super::semantic::nearest(state, sem).await?;
        let entry = fetch(state, near.key).await?;
        let now = super::admit::now_ms();
        if !entry.servable(now, self.directives.max_age_ms) {
            return None;
        }
        let mut res = self.serve_as(&near.key, &entry, headers, now)?;
        let h = res.headers_mut();
        h.insert(X_CACHE.clone(), HeaderValue::from_static("semantic-hit"));
        if let Some(v) = super::semantic::similarity_header(&near) {
            h.insert(X_CACHE_SIMILARITY.clone(), v);
        }
        let m = &state.metrics.cache;
        m.hits.inc();
        m.semantic_hits.inc();
        Some(res)
    }

    fn body(&self, entry: &Entry) -> Option<Response<ResBody>> {
        let (d, model) = (self.dialect, &*self.model);
        let body = match (entry.form, self.stream) {
            (Form::Whole, false) => ResBody::full(entry.body.clone()),
            (Form::Stream, true) if !self.needs_restream(entry) => ResBody::chunks(entry.frames()),
            (Form::Stream, true) => {
                if self.include_usage {
                    return None;
                }
                ResBody::chunks(replay::restream(d, &entry.body, model, false).ok()?)
            }
            (Form::Stream, false) => ResBody::full(Bytes::from(
                replay::stream_to_whole(d, &entry.body, model).ok()?,
            )),
            (Form::Whole, true) => ResBody::chunks(
                replay::whole_to_stream(d, &entry.body, model, self.include_usage).ok()?,
            ),
        };
        let mut res = Response::new(body);
        let h = res.headers_mut();
        if self.stream {
            h.insert(CONTENT_TYPE, HeaderValue::from_static("text/event-stream"));
            h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
        } else {
            h.insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
        }
        Some(res)
    }

    /// An OpenAI stream whose usage chunk does not match what this request asked for.
    fn needs_restream(&self, entry: &Entry) -> bool {
        self.dialect == Dialect::OpenAi && entry.usage_chunk != self.include_usage
    }

    /// Ride the flight: the leader's head, then its frames as they come. `None` when the
    /// leader failed before it answered (ask again).
    async fn follow(&self, state: &Rc<ShardState>, flight: FlightId) -> Option<Response<ResBody>> {
        let (tx, rx) = flume::unbounded();
        send(
            state,
            usize::from(flight.shard),
            CacheMsg::Follow {
                key: self.key,
                flight,
                tx,
            },
        );
        // Bounded: a leader whose task went away between its lead and its flight (its client
        // left in that instant) never answers; after the request timeout, ask again.
        let first = crate::shard::timeout(state.config.routing.request_timeout, rx.recv_async());
        let (status, content_type) = match first.await.ok()?.ok()? {
            FlightEvent::Head {
                status,
                content_type,
            } => (status, content_type),
            _ => return None,
        };
        let mut res = Response::new(ResBody::stream(Box::pin(Following {
            rx: rx.into_stream(),
            done: false,
            dialect: self.dialect,
        })));
        *res.status_mut() = StatusCode::from_u16(status).unwrap_or(StatusCode::OK);
        let h = res.headers_mut();
        if let Some(ct) = content_type {
            if ct.as_bytes().starts_with(b"text/event-stream") {
                h.insert(CACHE_CONTROL, HeaderValue::from_static("no-cache"));
            }
            h.insert(CONTENT_TYPE, ct);
        }
        h.insert(X_CACHE.clone(), HeaderValue::from_static("coalesced"));
        self.stamp(h);
        Some(res)
    }

    fn stamp(&self, h: &mut HeaderMap) {
        stamp(h, &self.key);
    }

    /// The upstream answer on its way out: stamped `miss` (or `bypass`), and, when it may be
    /// stored or others follow it, teed into the cache and to the followers.
    pub fn respond(
        self,
        state: &Rc<ShardState>,
        flight: Option<Flight>,
        res: Result<Response<ResBody>, crate::error::GatewayError>,
    ) -> Result<Response<ResBody>, crate::error::GatewayError> {
        let mut res = match res {
            Ok(res) => res,
            Err(e) => {
                if let Some(f) = flight {
                    f.fail();
                }
                return Err(e);
            }
        };
        let verdict = if self.directives.bypass {
            "bypass"
        } else {
            "miss"
        };
        res.headers_mut()
            .insert(X_CACHE.clone(), HeaderValue::from_static(verdict));
        self.stamp(res.headers_mut());
        if let Some(f) = &flight {
            let ct = res.headers().get(CONTENT_TYPE).cloned();
            f.head(res.status().as_u16(), ct);
        }
        let store = res.status() == StatusCode::OK && self.directives.may_write();
        if !store && flight.is_none() {
            if res.status() != StatusCode::OK && !self.directives.bypass {
                state.metrics.cache.not_stored.inc();
            }
            return Ok(res);
        }
        let (parts, body) = res.into_parts();
        let tee = Tee {
            inner: body,
            state: state.clone(),
            store: store.then(|| (self, StreamTee::default())),
            flight,
        };
        Ok(Response::from_parts(parts, ResBody::stream(Box::pin(tee))))
    }

    /// The entry to store for the body the client received, if it is a complete, healthy
    /// answer.
    fn entry(&self, body: Bytes, frames: Box<[u32]>, now_ms: u64) -> Option<Entry> {
        let form = if self.stream {
            Form::Stream
        } else {
            Form::Whole
        };
        let checked = match form {
            _ if self.embeddings => replay::check_embeddings(&body),
            Form::Stream => replay::check_stream(self.dialect, &body),
            Form::Whole => replay::check_whole(self.dialect, &body),
        };
        if !checked.complete {
            return None;
        }
        Some(Entry {
            form,
            frames: if form == Form::Stream {
                frames
            } else {
                Box::new([])
            },
            body,
            usage_chunk: form == Form::Stream
                && (self.dialect == Dialect::Anthropic || checked.usage.is_some()),
            usage: checked.usage,
            stored_ms: now_ms,
            expires_ms: now_ms.saturating_add(self.ttl_ms),
            model: self.model.clone(),
            tenant: self.tenant.clone(),
            tags: self.directives.tags.clone().into_boxed_slice(),
            source: self.source.clone(),
        })
    }
}

/// `x-shardgate-cache-key`: the key the answer is filed under.
fn stamp(h: &mut HeaderMap, key: &CacheKey) {
    if let Ok(v) = HeaderValue::from_bytes(&key.hex()) {
        h.insert(X_CACHE_KEY.clone(), v);
    }
}

/// The answer filed under `key`, from its owner (no flight: a plain read).
pub(super) async fn fetch(state: &Rc<ShardState>, key: CacheKey) -> Option<Arc<Entry>> {
    let q = Query {
        now_ms: super::admit::now_ms(),
        max_age_ms: None,
        read: true,
        form: None,
        dead: None,
    };
    match ask(state, key, q).await {
        Found::Hit(entry) => Some(entry),
        _ => None,
    }
}

/// `If-None-Match` compares weakly: `W/` on either side does not matter.
fn weak_match(asked: &str, etag: &str) -> bool {
    asked == "*" || asked.trim_start_matches("W/") == etag.trim_start_matches("W/")
}

/// What a lookup asks of the owner.
#[derive(Debug, Clone, Copy)]
struct Query {
    now_ms: u64,
    max_age_ms: Option<u64>,
    read: bool,
    form: Option<FlightForm>,
    dead: Option<FlightId>,
}

/// Ask `key`'s owner (this shard, or another over the mesh).
async fn ask(state: &Rc<ShardState>, key: CacheKey, q: Query) -> Found {
    let cache = &state.cache;
    let to = owner(&key, cache.shards());
    let me = usize::from(state.id.0);
    let id = cache.next_id();
    if to == me {
        return at_owner(state, me, id, key, q);
    }
    state.metrics.cache.cross_shard.inc();
    let slot = Rc::new(Slot::default());
    cache.pending.borrow_mut().insert(id, slot.clone());
    send(
        state,
        to,
        CacheMsg::Get {
            id,
            key,
            now_ms: q.now_ms,
            max_age_ms: q.max_age_ms,
            read: q.read,
            form: q.form,
            dead: q.dead,
        },
    );
    match crate::shard::timeout(HOP_TIMEOUT, slot.wait()).await {
        Ok(found) => found,
        Err(_) => {
            tracing::debug!(
                shard = me,
                owner = to,
                "Cache lookup: the owner shard did not answer in time."
            );
            cache.pending.borrow_mut().remove(&id);
            // Had the owner made this request a leader, the flight ends here.
            let flight = FlightId {
                shard: state.id.0,
                id,
            };
            send(state, to, CacheMsg::Landed { key, flight });
            Found::Miss
        }
    }
}

/// The owner's answer to a lookup from shard `from` (request `id` there, which names the
/// flight if the request is to lead one: ids are unique per asking shard).
fn at_owner(state: &ShardState, from: usize, id: u64, key: CacheKey, q: Query) -> Found {
    let cache = &state.cache;
    if q.read
        && let Some(entry) = cache
            .partition
            .borrow_mut()
            .get(&key, q.now_ms, q.max_age_ms)
    {
        return Found::Hit(entry);
    }
    let Some(form) = q.form else {
        return Found::Miss;
    };
    let mut inflight = cache.inflight.borrow_mut();
    if q.dead.is_some() && inflight.get(&key).map(|f| f.flight) == q.dead {
        inflight.remove(&key);
    }
    match inflight.get_mut(&key) {
        Some(f) if f.form == form && f.followers < state.config.cache.max_followers => {
            f.followers += 1;
            Found::Follow(f.flight)
        }
        Some(_) => Found::Miss,
        None => {
            let flight = FlightId {
                shard: u16::try_from(from).unwrap_or(u16::MAX),
                id,
            };
            inflight.insert(
                key,
                Inflight {
                    flight,
                    form,
                    followers: 0,
                },
            );
            Found::Lead(flight)
        }
    }
}

/// Send `msg` to shard `to`: over the mesh, or handled here on a later turn when `to` is
/// this shard (never inside the caller's borrows).
fn send(state: &Rc<ShardState>, to: usize, msg: CacheMsg) {
    let me = usize::from(state.id.0);
    if to == me {
        let st = state.clone();
        crate::shard::spawn("cache message", async move {
            on_message(&st, me, msg);
        });
        return;
    }
    if let Some(mesh) = state.cache.mesh.get() {
        mesh.send(to, msg);
    }
}

/// Handle a batch from shard `from`.
pub fn on_batch(state: &Rc<ShardState>, from: usize, batch: Vec<CacheMsg>) {
    for msg in batch {
        on_message(state, from, msg);
    }
}

fn on_message(state: &Rc<ShardState>, from: usize, msg: CacheMsg) {
    let cache = &state.cache;
    match msg {
        CacheMsg::Get {
            id,
            key,
            now_ms,
            max_age_ms,
            read,
            form,
            dead,
        } => {
            let q = Query {
                now_ms,
                max_age_ms,
                read,
                form,
                dead,
            };
            let found = at_owner(state, from, id, key, q);
            send(state, from, CacheMsg::Got { id, key, found });
        }
        CacheMsg::Got { id, key, found } => {
            let slot = cache.pending.borrow_mut().remove(&id);
            // Whoever asked may have gone (its client left) while the answer travelled.
            let waiting = slot.as_ref().is_some_and(|s| Rc::strong_count(s) > 1);
            if let Found::Lead(flight) = &found {
                if waiting {
                    // The flight exists from now: a follower's word may reach this shard
                    // before the leader's task runs again.
                    cache.led.borrow_mut().entry(flight.id).or_default();
                } else {
                    send(
                        state,
                        from,
                        CacheMsg::Landed {
                            key,
                            flight: *flight,
                        },
                    );
                }
            }
            // The copy is kept here, in the order the owner's messages come, not when the
            // asker runs again: a `Forget` the owner sent after this reply always wins.
            if let Found::Hit(entry) = &found {
                cache.keep_copy(key, entry.clone());
                gauges(state);
            }
            if let Some(slot) = slot.filter(|_| waiting) {
                slot.fill(found);
            }
        }
        CacheMsg::Forget { key } => cache.forget_copy(&key),
        CacheMsg::Put { key, entry } => store(state, key, entry),
        CacheMsg::Landed { key, flight } => {
            let mut inflight = cache.inflight.borrow_mut();
            if inflight.get(&key).is_some_and(|f| f.flight == flight) {
                inflight.remove(&key);
            }
        }
        CacheMsg::Gone { tx } => {
            let _ = tx.send(FlightEvent::Failed);
        }
        CacheMsg::Follow { key, flight, tx } => {
            let mut led = cache.led.borrow_mut();
            match led.get_mut(&flight.id) {
                Some(l) => {
                    if let Some((status, ct)) = &l.head {
                        let _ = tx.send(FlightEvent::Head {
                            status: *status,
                            content_type: ct.clone(),
                        });
                    }
                    for f in &l.frames {
                        let _ = tx.send(FlightEvent::Frame(f.clone()));
                    }
                    l.followers.push(tx);
                }
                None => {
                    // Over: if it ended well, its answer went to the owner before now, on
                    // this shard's channel to it; the word goes the same way, after it.
                    drop(led);
                    let to = owner(&key, cache.shards());
                    if to == usize::from(state.id.0) {
                        let _ = tx.send(FlightEvent::Failed);
                    } else {
                        send(state, to, CacheMsg::Gone { tx });
                    }
                }
            }
        }
    }
}

/// The warmer's hot keys: copies of keys no longer hot are dropped.
pub fn set_hot(state: &ShardState, hot: Arc<hashbrown::HashSet<CacheKey>>) {
    state
        .cache
        .replicas
        .borrow_mut()
        .retain(|k, _| hot.contains(k));
    *state.cache.hot.borrow_mut() = hot;
}

/// Hand this shard's entries to the warmer (once drained, for the snapshot).
pub fn hand_over(state: &ShardState) {
    let Some(w) = state.cache.warmer.get() else {
        return;
    };
    w.seen.flush();
    let entries: Vec<(CacheKey, Arc<Entry>)> = state
        .cache
        .partition
        .borrow()
        .iter()
        .map(|(k, e)| (*k, e.clone()))
        .collect();
    if !entries.is_empty() {
        (w.entries)(entries);
    }
}

/// Load answers from the warm snapshot into this shard's partition (at start).
pub fn warm(state: &ShardState, entries: Vec<(CacheKey, Entry)>) {
    let mut p = state.cache.partition.borrow_mut();
    for (key, entry) in entries {
        p.insert(key, Arc::new(entry));
    }
    drop(p);
    gauges(state);
}

/// Store an answer in this node's cache: at the key's owner (this shard, or a message to it
/// that goes before anything this shard sends the owner later).
fn put_here(state: &Rc<ShardState>, key: CacheKey, entry: Arc<Entry>) {
    let to = owner(&key, state.cache.shards());
    if to == usize::from(state.id.0) {
        store(state, key, entry);
    } else {
        send(state, to, CacheMsg::Put { key, entry });
    }
}

/// Store an answer in this shard's partition (the owner's side of a put).
fn store(state: &Rc<ShardState>, key: CacheKey, entry: Arc<Entry>) {
    let m = &state.metrics.cache;
    state.cache.seen(key, entry.weight(), false);
    let mut partition = state.cache.partition.borrow_mut();
    let replaced = partition.peek(&key).is_some();
    let r = partition.insert(key, entry);
    drop(partition);
    if r.stored {
        m.stored.inc();
    } else {
        m.refused.inc();
    }
    m.evictions.add(u64::from(r.evicted));
    gauges(state);
    // A new answer for a key (a `no-cache` request's, a refresh's): the other shards' copies
    // of the old one go, so none outlives it. Only replacements cost these messages.
    if replaced {
        let me = usize::from(state.id.0);
        for to in (0..state.cache.shards()).filter(|&to| to != me) {
            send(state, to, CacheMsg::Forget { key });
        }
    }
}

/// The cache gauges of this shard: entries it owns; bytes of those and of its copies.
fn gauges(state: &ShardState) {
    let p = state.cache.partition.borrow();
    let copies = state.cache.copies.borrow().bytes();
    let m = &state.metrics.cache;
    m.entries.set(i64::try_from(p.len()).unwrap_or(i64::MAX));
    m.bytes
        .set(i64::try_from(p.bytes() + copies).unwrap_or(i64::MAX));
}

/// How often a shard drops what expired unread.
const SWEEP_EVERY_MS: u64 = 10_000;

/// Drop what expired unread, at most every [`SWEEP_EVERY_MS`] (called on the shard's
/// flush tick).
pub fn sweep(state: &ShardState) {
    let now = super::admit::now_ms();
    let cache = &state.cache;
    if now.saturating_sub(cache.swept_ms.get()) < SWEEP_EVERY_MS {
        return;
    }
    cache.swept_ms.set(now);
    if let Ok(mut c) = cache.copies.try_borrow_mut() {
        c.sweep(now);
    }
    let Ok(mut p) = state.cache.partition.try_borrow_mut() else {
        return;
    };
    if p.sweep(now) > 0 {
        drop(p);
        gauges(state);
    }
}

/// The hot answers this shard owns that were read since they were stored, expire within
/// `before_ms` of `now_ms` and have their request kept (`Entry::source`), not already being
/// refreshed: each is marked as being refreshed (`ShardCache::refreshing`) until its refresh
/// ends. An answer nobody read since its last refresh is left to expire.
pub fn due_for_refresh(
    state: &ShardState,
    now_ms: u64,
    before_ms: u64,
) -> Vec<(CacheKey, Arc<Entry>)> {
    let cache = &state.cache;
    let me = usize::from(state.id.0);
    let reads = cache.hot_reads.borrow().clone();
    let partition = cache.partition.borrow();
    let mut refreshing = cache.refreshing.borrow_mut();
    let due: Vec<(CacheKey, Arc<Entry>)> = reads
        .iter()
        .filter(|(k, _)| owner(k, cache.shards()) == me && !refreshing.contains(*k))
        .filter_map(|(k, &read_ms)| {
            let e = partition.peek(k)?;
            let due = e.source.is_some()
                && read_ms > e.stored_ms
                && e.is_fresh(now_ms)
                && e.expires_ms.saturating_sub(now_ms) <= before_ms;
            due.then(|| (*k, e.clone()))
        })
        .collect();
    refreshing.extend(due.iter().map(|(k, _)| *k));
    due
}

/// Remove what `selector` names from this shard's partition (every shard gets the
/// control plane's command).
pub fn invalidate_here(state: &ShardState, selector: &Selector) {
    state
        .cache
        .replicas
        .borrow_mut()
        .retain(|k, e| !selector.matches(k, e));
    state.cache.copies.borrow_mut().invalidate(selector);
    let n = state.cache.partition.borrow_mut().invalidate(selector);
    state.metrics.cache.invalidated.add(n as u64);
    gauges(state);
    // Every shard gets each invalidation; one tells the semantic index.
    if state.id.0 == 0
        && let Some(tx) = state.cache.semantic()
    {
        let _ = tx.try_send(crate::cache::semantic::SemanticRequest::Invalidate(
            selector.clone(),
        ));
    }
}

/// A flight this shard leads: its followers get what its client gets. Dropped without an
/// answer (the leader failed, or its client left), the followers are told to ask again.
pub struct Flight {
    state: Rc<ShardState>,
    key: CacheKey,
    id: FlightId,
    ended: Cell<bool>,
}

impl Flight {
    fn lead(state: &Rc<ShardState>, key: CacheKey, id: FlightId) -> Self {
        state.cache.led.borrow_mut().entry(id.id).or_default();
        Self {
            state: state.clone(),
            key,
            id,
            ended: Cell::new(false),
        }
    }

    fn head(&self, status: u16, content_type: Option<HeaderValue>) {
        if let Some(l) = self.state.cache.led.borrow_mut().get_mut(&self.id.id) {
            for tx in &l.followers {
                let _ = tx.send(FlightEvent::Head {
                    status,
                    content_type: content_type.clone(),
                });
            }
            l.head = Some((status, content_type));
        }
    }

    fn frame(&self, frame: &Bytes) {
        if let Some(l) = self.state.cache.led.borrow_mut().get_mut(&self.id.id) {
            l.followers
                .retain(|tx| tx.send(FlightEvent::Frame(frame.clone())).is_ok());
            l.frames.push(frame.clone());
        }
    }

    /// The leader's answer is done (sent whole to its client).
    fn end(self) {
        self.finish(FlightEvent::End);
    }

    /// The leader failed before it answered.
    fn fail(self) {
        self.finish(FlightEvent::Failed);
    }

    fn finish(&self, last: FlightEvent) {
        if self.ended.replace(true) {
            return;
        }
        let led = self.state.cache.led.borrow_mut().remove(&self.id.id);
        if let Some(l) = led {
            // A follower that saw no head yet cannot use an end: it asks again.
            let last = if l.head.is_none() {
                FlightEvent::Failed
            } else {
                last
            };
            for tx in &l.followers {
                let _ = tx.send(last.clone());
            }
        }
        let to = owner(&self.key, self.state.cache.shards());
        send(
            &self.state,
            to,
            CacheMsg::Landed {
                key: self.key,
                flight: self.id,
            },
        );
    }
}

impl Drop for Flight {
    fn drop(&mut self) {
        // Not ended by its body's end: the leader failed or its client left.
        self.finish(FlightEvent::Failed);
    }
}

/// The leader's body on its way to its client: each frame teed to the followers and, for an
/// answer that may be stored, into the cache entry; stored at its end if it is complete.
struct Tee {
    inner: ResBody,
    state: Rc<ShardState>,
    store: Option<(Cacheable, StreamTee)>,
    flight: Option<Flight>,
}

impl Tee {
    fn done(&mut self) {
        if let Some((c, tee)) = self.store.take() {
            let stored = tee.finish().and_then(|(body, frames)| {
                let now = super::admit::now_ms();
                c.entry(body, frames, now)
            });
            match stored {
                Some(entry) => {
                    let entry = Arc::new(entry);
                    if let Some((l2, _)) = self.state.cache.l2.get() {
                        let _ = l2.send(crate::cache::l2::L2Request::Put {
                            key: c.key,
                            entry: entry.clone(),
                        });
                    }
                    put_here(&self.state, c.key, entry.clone());
                    if let Some(sem) = &c.semantic {
                        super::semantic::stored(&self.state, sem, c.key, &entry, c.dialect);
                    }
                }
                None => self.state.metrics.cache.not_stored.inc(),
            }
        }
        // The put goes before the flight's end, on the same channel: a follower that asks
        // again after the end finds the answer.
        if let Some(f) = self.flight.take() {
            f.end();
        }
    }
}

impl Body for Tee {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Pending => Poll::Pending,
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    let limit = this.state.config.cache.max_entry_bytes;
                    if let Some((_, tee)) = &mut this.store {
                        tee.push(data, limit);
                    }
                    if let Some(f) = &this.flight {
                        f.frame(data);
                    }
                }
                // A body of known length is not polled past its last frame.
                if this.inner.is_end_stream() {
                    this.done();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(None) => {
                this.done();
                Poll::Ready(None)
            }
        }
    }

    fn size_hint(&self) -> http_body::SizeHint {
        self.inner.size_hint()
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }
}

impl Drop for Tee {
    fn drop(&mut self) {
        if self.store.take().is_some() {
            // The client left before the end: nothing is stored.
            self.state.metrics.cache.not_stored.inc();
        }
    }
}

/// A follower's body: the leader's frames as they arrive. A flight that ends without its
/// leader's end (the leader's client left mid-answer) ends with an error event.
struct Following {
    rx: flume::r#async::RecvStream<'static, FlightEvent>,
    done: bool,
    dialect: Dialect,
}

impl Body for Following {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        use futures_lite::Stream;
        let this = &mut *self;
        if this.done {
            return Poll::Ready(None);
        }
        loop {
            return match Pin::new(&mut this.rx).poll_next(cx) {
                Poll::Pending => Poll::Pending,
                Poll::Ready(Some(FlightEvent::Frame(b))) => Poll::Ready(Some(Ok(Frame::data(b)))),
                Poll::Ready(Some(FlightEvent::Head { .. })) => continue,
                Poll::Ready(Some(FlightEvent::End)) => {
                    this.done = true;
                    Poll::Ready(None)
                }
                Poll::Ready(Some(FlightEvent::Failed) | None) => {
                    this.done = true;
                    let event = this.dialect.error_event(
                        crate::error::ErrorKind::UpstreamProtocol,
                        "The identical request this answer was shared with ended before it was complete.",
                    );
                    Poll::Ready(Some(Ok(Frame::data(event))))
                }
            };
        }
    }
}

/// A one-shot value for a task on this shard.
struct Slot<T> {
    value: RefCell<Option<T>>,
    waker: RefCell<Option<Waker>>,
}

impl<T> Default for Slot<T> {
    fn default() -> Self {
        Self {
            value: RefCell::new(None),
            waker: RefCell::new(None),
        }
    }
}

impl<T> Slot<T> {
    fn fill(&self, v: T) {
        *self.value.borrow_mut() = Some(v);
        if let Some(w) = self.waker.borrow_mut().take() {
            w.wake();
        }
    }

    fn wait(&self) -> impl std::future::Future<Output = T> + '_ {
        std::future::poll_fn(move |cx| match self.value.borrow_mut().take() {
            Some(v) => Poll::Ready(v),
            None => {
                *self.waker.borrow_mut() = Some(cx.waker().clone());
                Poll::Pending
            }
        })
    }
}
