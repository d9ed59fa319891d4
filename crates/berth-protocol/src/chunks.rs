//! Adapters between the protocol's chunked byte streams (`UploadChunk`, `DataChunk`) and the
//! blocking `std::io` world of tar: both ends pack and unpack archives on blocking threads while
//! the chunks travel over async channels.

use std::io::Read;

use bytes::{Buf, Bytes};

use tokio::sync::mpsc;

/// A blocking reader over chunks handed over from async code. Call it only from a blocking
/// thread (`spawn_blocking`): it waits with `blocking_recv`.
pub struct ChunkReader {
    rx: mpsc::Receiver<Bytes>,
    current: Bytes,
}

impl ChunkReader {
    /// Reads the chunks sent into `rx` until its senders are dropped.
    pub fn new(rx: mpsc::Receiver<Bytes>) -> Self {
        Self {
            rx,
            current: Bytes::new(),
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.current.is_empty() {
            match self.rx.blocking_recv() {
                Some(next) => self.current = next,
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len());
        self.current.copy_to_slice(&mut buf[..n]);
        Ok(n)
    }
}
