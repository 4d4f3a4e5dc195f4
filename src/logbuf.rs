//! Access log lines, written in batches by the shard that made them.
//!
//! Written by hand because no library does it for a thread-per-core design:
//! tracing-appender's non-blocking writer hands every line to one logging thread over a
//! channel (a cross-thread wake-up per line while that thread sleeps, and one more thread to
//! place), and a plain stderr writer costs one `write(2)` per line on the shard. Here a shard
//! keeps its lines in a thread-local buffer and writes them with one `write(2)` on its own
//! flush tick ([`flush`]), or at once when the buffer passes [`FLUSH_AT`]. A thread that did not
//! ask for a buffer ([`buffer_here`]) writes each line as it comes.

use std::cell::RefCell;
use std::io::{self, Write};

/// Bytes a shard's buffer holds before it is written without waiting for the tick.
pub const FLUSH_AT: usize = 64 * 1024;

thread_local! {
    static BUFFER: RefCell<Option<Vec<u8>>> = const { RefCell::new(None) };
}

/// Buffer this thread's lines from now on (a shard, at start); [`flush`] writes them.
pub fn buffer_here() {
    BUFFER.with(|b| *b.borrow_mut() = Some(Vec::with_capacity(FLUSH_AT)));
}

/// Write this thread's buffered lines to stderr (a shard's flush tick, and its end).
pub fn flush() {
    BUFFER.with(|b| {
        if let Ok(mut b) = b.try_borrow_mut()
            && let Some(buf) = b.as_mut()
        {
            write_out(buf);
        }
    });
}

/// Whole lines to stderr in one write; what cannot be written is dropped (a log line is not
/// worth stalling a shard or failing a request).
fn write_out(buf: &mut Vec<u8>) {
    if !buf.is_empty() {
        let _ = io::stderr().lock().write_all(buf);
        buf.clear();
    }
}

/// The access log layer's writer (`tracing_subscriber::fmt::MakeWriter`).
#[derive(Debug, Clone, Copy, Default)]
pub struct Lines;

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Lines {
    type Writer = Lines;

    fn make_writer(&'a self) -> Self::Writer {
        Lines
    }
}

impl Write for Lines {
    fn write(&mut self, line: &[u8]) -> io::Result<usize> {
        let kept = BUFFER.with(|b| {
            let Ok(mut b) = b.try_borrow_mut() else {
                return false;
            };
            let Some(buf) = b.as_mut() else {
                return false;
            };
            buf.extend_from_slice(line);
            if buf.len() >= FLUSH_AT {
                write_out(buf);
            }
            true
        });
        if !kept {
            io::stderr().lock().write_all(line)?;
        }
        Ok(line.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn buffered() -> usize {
        BUFFER.with(|b| b.borrow().as_ref().map_or(0, Vec::len))
    }

    #[test]
    fn a_buffering_thread_keeps_lines_until_it_flushes() {
        std::thread::spawn(|| {
            let mut w = Lines;
            w.write_all(b"not kept: no buffer yet\n").unwrap();
            assert_eq!(buffered(), 0);
            buffer_here();
            w.write_all(b"kept\n").unwrap();
            assert_eq!(buffered(), 5);
            flush();
            assert_eq!(buffered(), 0);
            let big = vec![b'x'; FLUSH_AT];
            w.write_all(&big).unwrap();
            assert_eq!(buffered(), 0, "a full buffer is written at once");
        })
        .join()
        .unwrap();
    }
}
