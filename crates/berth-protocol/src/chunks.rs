//! Adapters between the protocol's chunked byte streams (`UploadChunk`, `DataChunk`) and the
//! blocking `std::io` world of tar: both ends pack and unpack archives on blocking threads while
//! the chunks travel over async channels.

use std::io::Read;

use tokio::sync::mpsc;

/// A blocking reader over chunks handed over from async code. Call it only from a blocking
/// thread (`spawn_blocking`): it waits with `blocking_recv`.
pub struct ChunkReader {
    rx: mpsc::Receiver<Vec<u8>>,
    current: Vec<u8>,
    pos: usize,
}

impl ChunkReader {
    /// Reads the chunks sent into `rx` until its senders are dropped.
    pub fn new(rx: mpsc::Receiver<Vec<u8>>) -> Self {
        Self {
            rx,
            current: Vec::new(),
            pos: 0,
        }
    }
}

impl Read for ChunkReader {
    fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
        while self.pos == self.current.len() {
            match self.rx.blocking_recv() {
                Some(next) => {
                    self.current = next;
                    self.pos = 0;
                }
                None => return Ok(0),
            }
        }
        let n = buf.len().min(self.current.len() - self.pos);
        buf[..n].copy_from_slice(&self.current[self.pos..self.pos + n]);
        self.pos += n;
        Ok(n)
    }
}
