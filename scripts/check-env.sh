#!/usr/bin/env bash
# Can this machine run shardgate's io_uring shards? Says what to change in one sentence.
set -u
memlock_kib=$(ulimit -l)
if [ "$memlock_kib" != "unlimited" ] && [ "$memlock_kib" -lt 1024 ]; then
  echo "check-env: the locked-memory limit is ${memlock_kib} KiB; shardgate needs 512 KiB per shard: raise it with 'ulimit -l' (or LimitMEMLOCK=, or docker --ulimit memlock)." >&2
  exit 1
fi
if ! python3 - <<'PY' 2>/dev/null
import ctypes, os
libc = ctypes.CDLL(None, use_errno=True)
params = ctypes.create_string_buffer(120)
fd = libc.syscall(425, 1, params)  # io_uring_setup on x86_64 and aarch64
if fd < 0:
    raise SystemExit(1)
os.close(fd)
PY
then
  echo "check-env: io_uring is not available: the kernel lacks it or a seccomp profile blocks it (Docker's default does; use --security-opt seccomp=unconfined)." >&2
  exit 1
fi
echo "check-env: ok (memlock ${memlock_kib} KiB, io_uring available)"
