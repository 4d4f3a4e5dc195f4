//! The tuning profile: *how fast* (shards, placement, rings, pools, buffers, flushes).
//! Separate from the gateway config, which says *what*. Profiles live in `tuning/*.toml`.

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;

use super::{ConfigError, parse_toml};

/// Default io_uring ring depth per shard.
pub const DEFAULT_RING_DEPTH: usize = 256;
/// Default io_uring-registered storage IO memory per shard (the gateway does no storage IO).
pub const DEFAULT_IO_MEMORY_KIB: usize = 128;
/// Default connection cap per shard.
pub const DEFAULT_MAX_CONNECTIONS_PER_SHARD: usize = 16_384;
/// Default HTTP/1 read buffer cap per connection (also bounds the request head).
pub const DEFAULT_H1_READ_BUFFER_BYTES: usize = 64 * 1024;
/// Default downstream HTTP/2 concurrent streams per connection.
pub const DEFAULT_H2_MAX_CONCURRENT_STREAMS: u32 = 256;
/// Default idle upstream HTTP/1 connections kept per endpoint per shard.
pub const DEFAULT_UPSTREAM_MAX_IDLE: usize = 256;
/// Default upstream HTTP/2 connections per endpoint per shard.
pub const DEFAULT_UPSTREAM_H2_CONNECTIONS: usize = 4;
/// Default upstream HTTP/2 streams per connection before another connection opens.
pub const DEFAULT_UPSTREAM_H2_STREAMS: u32 = 100;
/// Default largest read into an upstream HTTP/1.1 body buffer of known size.
pub const DEFAULT_UPSTREAM_READ_BYTES: usize = 1024 * 1024;
/// Smallest `upstream.read_bytes`: at or below it, reads go by way of a 16 KiB stack buffer.
pub const MIN_UPSTREAM_READ_BYTES: usize = 16 * 1024;
/// Largest `upstream.read_bytes`.
pub const MAX_UPSTREAM_READ_BYTES: usize = 64 * 1024 * 1024;
/// Default interval between re-resolutions of provider host names (off the shards).
pub const DEFAULT_DNS_REFRESH_SECS: u64 = 30;
/// Default bridge flush interval (shard → actor batches).
pub const DEFAULT_FLUSH_INTERVAL_MS: u64 = 50;
/// Default bridge batch size that forces a flush.
pub const DEFAULT_BATCH_SIZE: usize = 512;

/// Shard count: a number, or `"auto"` for one per available core.
#[derive(Debug, Clone, Deserialize)]
#[serde(untagged)]
enum RawCount {
    Number(usize),
    Word(String),
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawTuning {
    #[serde(default)]
    shards: RawShards,
    #[serde(default)]
    control_plane: RawControlPlane,
    #[serde(default)]
    io: RawIo,
    #[serde(default)]
    http: RawHttp,
    #[serde(default)]
    upstream: RawUpstream,
    #[serde(default)]
    bridge: RawBridge,
    #[serde(default)]
    memory: RawMemory,
}

/// `[memory]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawMemory {
    /// Let the kernel back the heap with transparent huge pages (default false).
    transparent_huge_pages: Option<bool>,
    /// Give freed heap back to the kernel once a burst of connections has closed (default true).
    release_after_burst: Option<bool>,
    /// Bytes of cached answers each shard keeps, at most (default 64 MiB).
    cache_mib_per_shard: Option<u64>,
}

/// `[shards]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawShards {
    /// Number of shards, or `"auto"` (one per core in `cores`, or per available core).
    count: Option<RawCount>,
    /// CPU ids to pin shards to, in order. Default: all available cores.
    cores: Option<Vec<usize>>,
    /// Pin each shard to its core (default true).
    pin: Option<bool>,
}

/// `[control_plane]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawControlPlane {
    /// CPU id for the control-plane thread; unset = not pinned.
    core: Option<usize>,
}

/// `[io]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawIo {
    /// io_uring entries per ring.
    ring_depth: Option<usize>,
    /// Busy-poll this long before a shard parks (0 = park at once).
    spin_before_park_us: Option<u64>,
    /// Memory registered with io_uring for storage IO, KiB (glommio's default is 10 MiB).
    io_memory_kib: Option<usize>,
}

/// `[http]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawHttp {
    /// Accepted connections per shard; past it the shard stops accepting until one closes.
    max_connections_per_shard: Option<usize>,
    /// HTTP/1 read buffer cap per connection.
    h1_read_buffer_bytes: Option<usize>,
    /// HTTP/2 concurrent streams per downstream connection.
    h2_max_concurrent_streams: Option<u32>,
}

/// `[upstream]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawUpstream {
    /// Idle HTTP/1 connections kept per endpoint per shard.
    max_idle_per_endpoint: Option<usize>,
    /// HTTP/2 connections per endpoint per shard (more open when streams run out).
    h2_connections_per_endpoint: Option<usize>,
    /// Streams per upstream HTTP/2 connection before another connection is opened.
    h2_streams_per_connection: Option<u32>,
    /// Seconds between re-resolutions of provider host names (0 = resolve once at start).
    dns_refresh_secs: Option<u64>,
    /// Largest single read into an upstream HTTP/1.1 body buffer when the size is known.
    read_bytes: Option<usize>,
}

/// `[bridge]`
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct RawBridge {
    /// Longest a batched message waits on a shard before it is sent to the control plane.
    flush_interval_ms: Option<u64>,
    /// Queue length at which a batch is sent at once.
    batch_size: Option<usize>,
}

/// Where shards run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    /// One entry per shard: the CPU id, or `None` when unpinned.
    pub cores: Vec<Option<usize>>,
}

/// The validated tuning profile.
#[derive(Debug, Clone)]
pub struct Tuning {
    /// Shard placement; `cores.len()` is the shard count.
    pub placement: Placement,
    /// CPU for the control-plane thread.
    pub control_plane_core: Option<usize>,
    /// io_uring entries per ring.
    pub ring_depth: usize,
    /// Busy-poll before parking.
    pub spin_before_park: Duration,
    /// io_uring-registered storage IO memory per shard, bytes.
    pub io_memory: usize,
    /// Connection cap per shard.
    pub max_connections_per_shard: usize,
    /// HTTP/1 read buffer cap.
    pub h1_read_buffer_bytes: usize,
    /// Downstream h2 streams per connection.
    pub h2_max_concurrent_streams: u32,
    /// Idle upstream h1 connections per endpoint per shard.
    pub upstream_max_idle: usize,
    /// Upstream h2 connections per endpoint per shard.
    pub upstream_h2_connections: usize,
    /// Streams per upstream h2 connection.
    pub upstream_h2_streams: u32,
    /// Largest single read into an upstream HTTP/1.1 body buffer of known size (a whole
    /// answer with a `content-length` lands in one buffer up to this size; reads of unknown
    /// size, streams among them, go through a 16 KiB stack buffer and hold nothing between
    /// reads).
    pub upstream_read_bytes: usize,
    /// Provider DNS re-resolution interval (`None` = never).
    pub dns_refresh: Option<Duration>,
    /// Bridge flush interval.
    pub flush_interval: Duration,
    /// Bridge batch size.
    pub batch_size: usize,
    /// Transparent huge pages for the process's heap. Off by default: the allocator asks
    /// for them on its arenas, and a burst of new connections then faults in and zeroes 2 MiB
    /// pages on the shard's thread (30–80 ms stalls under a connection flood, measured with
    /// `perf` during `scripts/exhaust.sh`), and a few live bytes keep a whole 2 MiB resident.
    pub transparent_huge_pages: bool,
    /// Give freed heap back to the kernel once at least half of a shard's peak connections
    /// (and 32 or more) have closed, checked on the sweep tick (`shard::mem`). Without it,
    /// a shard that served a burst keeps its peak RSS until its next burst.
    pub release_after_burst: bool,
    /// Bytes of cached answers each shard keeps, at most (its partition's budget).
    pub cache_bytes_per_shard: u64,
}

impl Tuning {
    /// The built-in profile (same as `tuning/default.toml`).
    pub fn embedded_default() -> Result<Self, ConfigError> {
        Self::from_toml("", "<embedded tuning>", available_cores())
    }

    /// Load and validate a tuning profile file.
    pub fn load(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_toml(&text, &path.display().to_string(), available_cores())
    }

    /// Validate a profile against the cores this process may run on.
    pub fn from_toml(text: &str, origin: &str, available: Vec<usize>) -> Result<Self, ConfigError> {
        let raw: RawTuning = parse_toml(text, origin)?;
        let invalid = |path: &str, message: String| ConfigError::Invalid {
            origin: origin.to_owned(),
            path: path.to_owned(),
            message,
        };
        let pin = raw.shards.pin.unwrap_or(true);
        let cores = match raw.shards.cores {
            Some(list) => {
                if list.is_empty() {
                    return Err(invalid(
                        "shards.cores",
                        "must list at least one core".into(),
                    ));
                }
                if let Some(c) = list.iter().find(|c| !available.contains(c)) {
                    return Err(invalid(
                        "shards.cores",
                        format!("core {c} is not available to this process (have {available:?})"),
                    ));
                }
                list
            }
            None => available.clone(),
        };
        let count = match raw.shards.count {
            None => cores.len(),
            Some(RawCount::Word(w)) if w == "auto" => cores.len(),
            Some(RawCount::Word(w)) => {
                return Err(invalid(
                    "shards.count",
                    format!("expected a number or \"auto\", got \"{w}\""),
                ));
            }
            Some(RawCount::Number(0)) => {
                return Err(invalid("shards.count", "must be at least 1".into()));
            }
            Some(RawCount::Number(n)) => n,
        };
        let placement = Placement {
            cores: (0..count)
                .map(|i| {
                    if pin && !cores.is_empty() {
                        Some(cores[i % cores.len()])
                    } else {
                        None
                    }
                })
                .collect(),
        };
        let ring_depth = raw.io.ring_depth.unwrap_or(DEFAULT_RING_DEPTH);
        if !(8..=32_768).contains(&ring_depth) || !ring_depth.is_power_of_two() {
            return Err(invalid(
                "io.ring_depth",
                "must be a power of two from 8 to 32768".into(),
            ));
        }
        let positive = |v: usize, path: &str| {
            if v == 0 {
                Err(invalid(path, "must be at least 1".into()))
            } else {
                Ok(v)
            }
        };
        let h1_read_buffer_bytes = raw
            .http
            .h1_read_buffer_bytes
            .unwrap_or(DEFAULT_H1_READ_BUFFER_BYTES);
        if h1_read_buffer_bytes < 8192 {
            return Err(invalid(
                "http.h1_read_buffer_bytes",
                "must be at least 8192".into(),
            ));
        }
        let upstream_read_bytes = raw
            .upstream
            .read_bytes
            .unwrap_or(DEFAULT_UPSTREAM_READ_BYTES);
        if !(MIN_UPSTREAM_READ_BYTES..=MAX_UPSTREAM_READ_BYTES).contains(&upstream_read_bytes) {
            return Err(invalid(
                "upstream.read_bytes",
                format!("must be from {MIN_UPSTREAM_READ_BYTES} to {MAX_UPSTREAM_READ_BYTES}"),
            ));
        }
        Ok(Self {
            placement,
            control_plane_core: raw.control_plane.core,
            ring_depth,
            io_memory: raw
                .io
                .io_memory_kib
                .unwrap_or(DEFAULT_IO_MEMORY_KIB)
                .max(64)
                * 1024,
            spin_before_park: Duration::from_micros(raw.io.spin_before_park_us.unwrap_or(0)),
            max_connections_per_shard: positive(
                raw.http
                    .max_connections_per_shard
                    .unwrap_or(DEFAULT_MAX_CONNECTIONS_PER_SHARD),
                "http.max_connections_per_shard",
            )?,
            h1_read_buffer_bytes,
            transparent_huge_pages: raw.memory.transparent_huge_pages.unwrap_or(false),
            release_after_burst: raw.memory.release_after_burst.unwrap_or(true),
            cache_bytes_per_shard: raw
                .memory
                .cache_mib_per_shard
                .unwrap_or(64)
                .saturating_mul(1 << 20),
            h2_max_concurrent_streams: raw
                .http
                .h2_max_concurrent_streams
                .unwrap_or(DEFAULT_H2_MAX_CONCURRENT_STREAMS)
                .max(1),
            upstream_max_idle: raw
                .upstream
                .max_idle_per_endpoint
                .unwrap_or(DEFAULT_UPSTREAM_MAX_IDLE),
            upstream_h2_connections: positive(
                raw.upstream
                    .h2_connections_per_endpoint
                    .unwrap_or(DEFAULT_UPSTREAM_H2_CONNECTIONS),
                "upstream.h2_connections_per_endpoint",
            )?,
            upstream_h2_streams: raw
                .upstream
                .h2_streams_per_connection
                .unwrap_or(DEFAULT_UPSTREAM_H2_STREAMS)
                .max(1),
            upstream_read_bytes,
            dns_refresh: match raw
                .upstream
                .dns_refresh_secs
                .unwrap_or(DEFAULT_DNS_REFRESH_SECS)
            {
                0 => None,
                s => Some(Duration::from_secs(s)),
            },
            flush_interval: Duration::from_millis(
                raw.bridge
                    .flush_interval_ms
                    .unwrap_or(DEFAULT_FLUSH_INTERVAL_MS)
                    .max(1),
            ),
            batch_size: positive(
                raw.bridge.batch_size.unwrap_or(DEFAULT_BATCH_SIZE),
                "bridge.batch_size",
            )?,
        })
    }

    /// Number of shards.
    pub fn shard_count(&self) -> usize {
        self.placement.cores.len()
    }
}

/// CPU ids this process may run on (its affinity mask), in order.
pub fn available_cores() -> Vec<usize> {
    let mut ids: Vec<usize> = core_affinity::get_core_ids()
        .unwrap_or_default()
        .into_iter()
        .map(|c| c.id)
        .collect();
    ids.sort_unstable();
    if ids.is_empty() {
        ids.push(0);
    }
    ids
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn auto_uses_every_available_core() {
        let t = Tuning::from_toml("[shards]\ncount = \"auto\"\n", "t", vec![0, 1, 2]).unwrap();
        assert_eq!(t.placement.cores, vec![Some(0), Some(1), Some(2)]);
    }

    #[test]
    fn explicit_cores_and_count() {
        let t = Tuning::from_toml("[shards]\ncount = 1\ncores = [1]\n", "t", vec![0, 1]).unwrap();
        assert_eq!(t.placement.cores, vec![Some(1)]);
        let t = Tuning::from_toml("[shards]\ncount = 2\npin = false\n", "t", vec![0]).unwrap();
        assert_eq!(t.placement.cores, vec![None, None]);
    }

    #[test]
    fn errors_name_the_path() {
        let e = Tuning::from_toml("[shards]\ncores = [7]\n", "t.toml", vec![0, 1]).unwrap_err();
        assert!(e.to_string().contains("shards.cores"), "{e}");
        let e = Tuning::from_toml("[io]\nring_depth = 100\n", "t.toml", vec![0]).unwrap_err();
        assert!(e.to_string().contains("io.ring_depth"), "{e}");
        let e = Tuning::from_toml("[io]\nrings = 1\n", "t.toml", vec![0]).unwrap_err();
        assert!(e.to_string().contains("rings"), "{e}");
        let e = Tuning::from_toml("[shards]\ncount = \"many\"\n", "t.toml", vec![0]).unwrap_err();
        assert!(e.to_string().contains("shards.count"), "{e}");
    }

    #[test]
    fn memory_and_buffer_knobs_default_and_validate() {
        let t = Tuning::from_toml("", "t", vec![0]).unwrap();
        assert!(t.release_after_burst && !t.transparent_huge_pages);
        let t = Tuning::from_toml("[memory]\nrelease_after_burst = false\n", "t", vec![0]).unwrap();
        assert!(!t.release_after_burst);
        assert_eq!(t.upstream_read_bytes, DEFAULT_UPSTREAM_READ_BYTES);
        let t = Tuning::from_toml("[upstream]\nread_bytes = 65536\n", "t", vec![0]).unwrap();
        assert_eq!(t.upstream_read_bytes, 65536);
        for bad in ["4096", "1073741824", "\"big\""] {
            let e = Tuning::from_toml(
                &format!("[upstream]\nread_bytes = {bad}\n"),
                "t.toml",
                vec![0],
            )
            .unwrap_err();
            assert!(e.to_string().contains("upstream.read_bytes"), "{bad}: {e}");
        }
        for bad in [
            "[memory]\nrelease_after_burst = 1\n",
            "[memory]\nrelease_after_bursts = true\n",
        ] {
            let e = Tuning::from_toml(bad, "t.toml", vec![0]).unwrap_err();
            assert!(e.to_string().contains("memory"), "{bad}: {e}");
        }
    }
}
