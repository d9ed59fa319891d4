//! Where a run's output goes: straight to berth's own stdout/stderr, or into a bounded buffer.

use std::io::Write;

use berth_engine::Output;

/// Receives a run's output in order. Errors stop delivery to the sink but not the run.
pub trait OutputSink: Send + 'static {
    /// Writes one chunk.
    fn write(&mut self, chunk: &Output) -> std::io::Result<()>;
    /// Captured text, for sinks that capture: (stdout, stderr, truncated).
    fn captured(&mut self) -> Option<(String, String, bool)> {
        None
    }
}

/// Streams stdout to stdout and stderr to stderr as chunks arrive.
#[derive(Default)]
pub struct StdioSink;

impl OutputSink for StdioSink {
    fn write(&mut self, chunk: &Output) -> std::io::Result<()> {
        match chunk {
            Output::Stdout(b) => {
                let mut out = std::io::stdout().lock();
                out.write_all(b)?;
                out.flush()
            }
            Output::Stderr(b) => {
                let mut err = std::io::stderr().lock();
                err.write_all(b)?;
                err.flush()
            }
        }
    }
}

/// Keeps up to `limit` bytes of each stream in memory (for `--json` and tests).
pub struct CaptureSink {
    limit: usize,
    stdout: Vec<u8>,
    stderr: Vec<u8>,
    truncated: bool,
}

impl CaptureSink {
    /// A sink keeping at most `limit` bytes per stream.
    pub fn new(limit: usize) -> Self {
        Self {
            limit,
            stdout: Vec::new(),
            stderr: Vec::new(),
            truncated: false,
        }
    }
}

impl OutputSink for CaptureSink {
    fn write(&mut self, chunk: &Output) -> std::io::Result<()> {
        let (buf, data) = match chunk {
            Output::Stdout(b) => (&mut self.stdout, b),
            Output::Stderr(b) => (&mut self.stderr, b),
        };
        let room = self.limit.saturating_sub(buf.len());
        if data.len() > room {
            self.truncated = true;
        }
        buf.extend_from_slice(&data[..data.len().min(room)]);
        Ok(())
    }

    fn captured(&mut self) -> Option<(String, String, bool)> {
        Some((
            String::from_utf8_lossy(&std::mem::take(&mut self.stdout)).into_owned(),
            String::from_utf8_lossy(&std::mem::take(&mut self.stderr)).into_owned(),
            self.truncated,
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    #[test]
    fn capture_is_bounded() {
        let mut s = CaptureSink::new(4);
        s.write(&Output::Stdout(Bytes::from_static(b"abc")))
            .unwrap();
        s.write(&Output::Stdout(Bytes::from_static(b"def")))
            .unwrap();
        s.write(&Output::Stderr(Bytes::from_static(b"e"))).unwrap();
        assert_eq!(s.captured(), Some(("abcd".into(), "e".into(), true)));
    }
}
