//! TCP for shards: listeners built with socket2 (so the port and `SO_REUSEPORT` are ours to
//! control) and handed to each shard, and connects that never resolve DNS on a shard.

use std::io;
use std::net::{SocketAddr, TcpListener as StdListener};
use std::os::fd::{AsRawFd, FromRawFd, IntoRawFd};
use std::time::Duration;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};

/// A downstream TCP stream on a shard.
pub type TcpStream = glommio::net::TcpStream;

/// Backlog of each listener.
pub const LISTEN_BACKLOG: i32 = 4096;

/// Bind one listening socket on `addr` with `SO_REUSEPORT` per entry of `cpus`, one per shard.
///
/// A listener whose entry names a CPU (the core its shard is pinned to) gets `SO_INCOMING_CPU`:
/// among the sockets of the reuseport group, the kernel then prefers the one whose CPU is the
/// core that took the connection's packets. With the NIC's interrupts (or RPS) steered to the
/// shards' cores (`shardgate tuning detect` suggests how), a connection is served on the core
/// its packets arrive on, and completions need no cross-core wake-up. Where the interrupts
/// land elsewhere (loopback, a VM) nothing changes: the kernel falls back to its hash.
///
/// With a non-zero `defer_accept` (Linux `TCP_DEFER_ACCEPT`, whole seconds, rounded up) the
/// kernel hands over a connection only when its first bytes arrive, or once it has been
/// silent that long: a client that connects and says nothing holds no slot of ours, no
/// descriptor and no task, and never stands in the accept queue ahead of a live client.
///
/// First checks that no other socket holds the port: glommio (and any process using
/// `SO_REUSEPORT`) could otherwise silently share it and take part of the traffic. Port 0
/// resolves to one OS-chosen port that every shard then shares.
pub fn bind_reuseport(
    addr: SocketAddr,
    cpus: &[Option<usize>],
    defer_accept: Duration,
) -> io::Result<Vec<StdListener>> {
    let domain = Domain::for_address(addr);
    // The probe binds without SO_REUSEPORT: it fails if anyone holds the port at all.
    let probe = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
    probe.set_reuse_address(true)?;
    probe.bind(&SockAddr::from(addr)).map_err(|e| {
        if e.kind() == io::ErrorKind::AddrInUse {
            io::Error::new(
                io::ErrorKind::AddrInUse,
                "already in use by another socket (another shardgate, or a server using SO_REUSEPORT?)",
            )
        } else {
            e
        }
    })?;
    let bound = probe
        .local_addr()?
        .as_socket()
        .ok_or_else(|| io::Error::other("bound address is not an IP socket"))?;
    drop(probe);
    cpus.iter()
        .map(|cpu| {
            let s = Socket::new(domain, Type::STREAM, Some(Protocol::TCP))?;
            s.set_reuse_address(true)?;
            s.set_reuse_port(true)?;
            s.set_nodelay(true)?;
            if let Some(cpu) = *cpu {
                s.set_cpu_affinity(cpu)?;
            }
            s.bind(&SockAddr::from(bound))?;
            s.listen(LISTEN_BACKLOG)?;
            if !defer_accept.is_zero() {
                set_defer_accept(&s, defer_accept)?;
            }
            Ok(s.into())
        })
        .collect()
}

fn set_defer_accept(s: &Socket, after: Duration) -> io::Result<()> {
    use std::os::fd::AsRawFd;
    let secs = libc::c_int::try_from(after.as_secs() + u64::from(after.subsec_nanos() > 0))
        .unwrap_or(libc::c_int::MAX);
    // SAFETY: a valid socket descriptor, and a pointer to a c_int with its exact length, as
    // setsockopt(2) asks for TCP_DEFER_ACCEPT.
    let rc = unsafe {
        libc::setsockopt(
            s.as_raw_fd(),
            libc::IPPROTO_TCP,
            libc::TCP_DEFER_ACCEPT,
            (&secs as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// A shard's listener.
pub struct Listener(glommio::net::TcpListener);

impl Listener {
    /// Adopt a listening socket on the current shard.
    pub fn adopt(std: StdListener) -> io::Result<Self> {
        std.set_nonblocking(true)?;
        // SAFETY: `into_raw_fd` gives up ownership of a valid listening socket, which the
        // glommio listener now owns alone and closes on drop.
        Ok(Self(unsafe {
            glommio::net::TcpListener::from_raw_fd(std.into_raw_fd())
        }))
    }

    /// Accept one connection, with `TCP_NODELAY` set.
    pub async fn accept(&self) -> io::Result<TcpStream> {
        let s = self.0.accept().await.map_err(io::Error::from)?;
        s.set_nodelay(true).map_err(io::Error::from)?;
        Ok(s)
    }

    /// The bound address.
    pub fn local_addr(&self) -> io::Result<SocketAddr> {
        self.0.local_addr().map_err(io::Error::from)
    }
}

/// Connect to an already resolved address with a timeout; `TCP_NODELAY` set.
pub async fn connect(addr: SocketAddr, timeout: Duration) -> io::Result<TcpStream> {
    let s = glommio::net::TcpStream::connect_timeout(addr, timeout)
        .await
        .map_err(io::Error::from)?;
    s.set_nodelay(true).map_err(io::Error::from)?;
    Ok(s)
}

/// Whether an idle stream has nothing waiting: no close and no bytes from the peer (one
/// non-blocking `MSG_PEEK`, no wait). An HTTP/1.1 server says nothing between answers.
pub fn idle_and_open(stream: &TcpStream) -> bool {
    let mut byte = 0u8;
    // SAFETY: the descriptor is this stream's open socket; recv writes at most one byte into
    // `byte`, which outlives the call.
    let n = unsafe {
        libc::recv(
            stream.as_raw_fd(),
            (&raw mut byte).cast(),
            1,
            libc::MSG_PEEK | libc::MSG_DONTWAIT,
        )
    };
    n < 0 && io::Error::last_os_error().kind() == io::ErrorKind::WouldBlock
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn listeners_carry_their_shards_cpu() {
        let ls = bind_reuseport(
            "127.0.0.1:0".parse().unwrap(),
            &[Some(0), None],
            Duration::ZERO,
        )
        .unwrap();
        assert_eq!(ls.len(), 2);
        assert_eq!(ls[0].local_addr().unwrap(), ls[1].local_addr().unwrap());
        let pinned = Socket::from(ls[0].try_clone().unwrap());
        assert_eq!(pinned.cpu_affinity().unwrap(), 0);
        // Unset, the kernel reports -1 (no preference), which socket2 hands back as usize::MAX.
        let free = Socket::from(ls[1].try_clone().unwrap());
        assert_ne!(free.cpu_affinity().unwrap(), 0);
    }

    #[test]
    fn a_held_port_is_refused() {
        let held = StdListener::bind("127.0.0.1:0").unwrap();
        let e = bind_reuseport(held.local_addr().unwrap(), &[None], Duration::ZERO).unwrap_err();
        assert_eq!(e.kind(), io::ErrorKind::AddrInUse);
    }
}
