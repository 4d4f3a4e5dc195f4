//! The one live probe: can this process set up an io_uring? (A sysctl, a seccomp profile or an
//! old kernel can each refuse it; no file under `/proc` tells them all apart.)

use super::IoUring;

/// Try `io_uring_setup` with one entry and close the ring at once.
pub fn probe_io_uring() -> IoUring {
    let mut params = [0u8; 120];
    // SAFETY: io_uring_setup(1, params) writes at most 120 bytes of io_uring_params into the
    // buffer we own; on success it returns a descriptor that we close below.
    let fd = unsafe { libc::syscall(libc::SYS_io_uring_setup, 1u32, params.as_mut_ptr()) };
    if fd < 0 {
        return IoUring::Blocked(std::io::Error::last_os_error().to_string());
    }
    // SAFETY: `fd` is the descriptor io_uring_setup just returned; we own it and close it once.
    unsafe { libc::close(fd as libc::c_int) };
    IoUring::Available
}
