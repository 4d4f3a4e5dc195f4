//! The one live probe: can this process set up an io_uring? (A sysctl, a seccomp profile or an
//! old kernel can each refuse it; no file under `/proc` tells them all apart.)

use super::IoUring;

/// Whether this process may set up an io_uring (`shard::probe_io_uring`, the gateway's own
/// start-up check).
pub fn probe_io_uring() -> IoUring {
    match crate::shard::probe_io_uring() {
        Ok(()) => IoUring::Available,
        Err(e) => IoUring::Blocked(e.to_string()),
    }
}
