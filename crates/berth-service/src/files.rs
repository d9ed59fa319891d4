//! Files in a sandbox, streamed both ways: one file's bytes (never buffered whole), a tar
//! archive of a path, directory listings and the small operations on paths.
//!
//! Every path is resolved by the agent inside the sandbox (symlinks included) and confined
//! there; `/.berth` and the agent binary are refused by the agent itself.

use std::io::Read;

use berth_engine::Engine;
use berth_protocol::chunks::ChunkReader;
use berth_protocol::v1::{FileInfo, PathRequest, RemoveRequest, RenameRequest, UploadChunk};
use berth_sandbox::sandbox::SandboxRecord;
use bytes::Bytes;
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::{Service, ServiceError};

/// Bytes as they arrive, or why they stopped.
pub type ByteReceiver = mpsc::Receiver<Result<Bytes, ServiceError>>;

/// One entry of a directory, or a stat.
#[derive(Debug, Clone, Serialize, Deserialize, utoipa::ToSchema)]
pub struct FileEntry {
    pub name: String,
    pub path: String,
    /// `file`, `dir`, `symlink` or `other`.
    pub kind: String,
    pub size: u64,
    pub mode: u32,
    pub uid: u32,
    pub gid: u32,
    /// Seconds since the epoch.
    pub modified: i64,
    #[serde(default, skip_serializing_if = "String::is_empty")]
    pub link_target: String,
}

impl From<FileInfo> for FileEntry {
    fn from(f: FileInfo) -> Self {
        Self {
            name: f.name,
            path: f.path,
            kind: f.kind,
            size: f.size,
            mode: f.mode,
            uid: f.uid,
            gid: f.gid,
            modified: f.modified,
            link_target: f.link_target,
        }
    }
}

/// What a written file gets besides its bytes.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct NewFile {
    /// Permission bits; 0: `0644`.
    pub mode: u32,
    /// Modification time, seconds since the epoch; `None`: now.
    pub mtime: Option<i64>,
}

fn absolute(path: &str) -> Result<(), ServiceError> {
    if path.contains('\0') {
        return Err(ServiceError::invalid(
            "the path contains a NUL byte, which no path can hold: remove it",
        ));
    }
    if path.starts_with('/') {
        Ok(())
    } else {
        Err(ServiceError::invalid(format!(
            "path {path:?} is not absolute: give a path inside the sandbox from /, e.g. /workspace/main.py"
        )))
    }
}

/// Splits `/a/b/c` into (`/a/b`, `c`).
fn split(path: &str) -> Result<(String, String), ServiceError> {
    absolute(path)?;
    let trimmed = path.trim_end_matches('/');
    match trimmed.rsplit_once('/') {
        Some((dir, name)) if !name.is_empty() && name != "." && name != ".." => Ok((
            if dir.is_empty() {
                "/".to_string()
            } else {
                dir.to_string()
            },
            name.to_string(),
        )),
        _ => Err(ServiceError::invalid(format!(
            "path {path:?} names no file: give a file path, e.g. /workspace/notes.txt"
        ))),
    }
}

impl<E: Engine> Service<E> {
    pub async fn stat(
        &self,
        record: &SandboxRecord,
        path: &str,
    ) -> Result<FileEntry, ServiceError> {
        absolute(path)?;
        let mut client = self.agent(record).await?;
        let info = self
            .answered(
                record,
                client.stat(PathRequest {
                    path: path.to_string(),
                }),
            )
            .await?;
        Ok(info.into_inner().into())
    }

    pub async fn list_dir(
        &self,
        record: &SandboxRecord,
        path: &str,
    ) -> Result<Vec<FileEntry>, ServiceError> {
        absolute(path)?;
        let mut client = self.agent(record).await?;
        let reply = self
            .answered(
                record,
                client.list_dir(PathRequest {
                    path: path.to_string(),
                }),
            )
            .await?;
        Ok(reply
            .into_inner()
            .entries
            .into_iter()
            .map(Into::into)
            .collect())
    }

    pub async fn mkdir(&self, record: &SandboxRecord, path: &str) -> Result<(), ServiceError> {
        absolute(path)?;
        let mut client = self.agent(record).await?;
        self.answered(
            record,
            client.make_dir(PathRequest {
                path: path.to_string(),
            }),
        )
        .await?;
        Ok(())
    }

    pub async fn remove_path(
        &self,
        record: &SandboxRecord,
        path: &str,
        recursive: bool,
    ) -> Result<(), ServiceError> {
        absolute(path)?;
        let mut client = self.agent(record).await?;
        self.answered(
            record,
            client.remove(RemoveRequest {
                path: path.to_string(),
                recursive,
            }),
        )
        .await?;
        Ok(())
    }

    pub async fn rename(
        &self,
        record: &SandboxRecord,
        from: &str,
        to: &str,
    ) -> Result<(), ServiceError> {
        absolute(from)?;
        absolute(to)?;
        let mut client = self.agent(record).await?;
        self.answered(
            record,
            client.rename(RenameRequest {
                from: from.to_string(),
                to: to.to_string(),
            }),
        )
        .await?;
        Ok(())
    }

    /// A tar archive of `path` (a file or a directory), as it streams from the agent.
    pub async fn read_archive(
        &self,
        record: &SandboxRecord,
        path: &str,
    ) -> Result<ByteReceiver, ServiceError> {
        absolute(path)?;
        let mut client = self.agent(record).await?;
        let mut stream = self
            .answered(
                record,
                client.download(PathRequest {
                    path: path.to_string(),
                }),
            )
            .await?
            .into_inner();
        let (tx, rx) = mpsc::channel(8);
        tokio::spawn(async move {
            let _client = client;
            loop {
                match stream.message().await {
                    Ok(Some(chunk)) => {
                        if tx.send(Ok(chunk.data)).await.is_err() {
                            break;
                        }
                    }
                    Ok(None) => break,
                    Err(status) => {
                        let _ = tx.send(Err(ServiceError::from(status))).await;
                        break;
                    }
                }
            }
        });
        Ok(rx)
    }

    /// One regular file's bytes, streamed (unpacked from the agent's archive as it arrives).
    /// Returns its size and the bytes.
    pub async fn read_file(
        &self,
        record: &SandboxRecord,
        path: &str,
    ) -> Result<(u64, ByteReceiver), ServiceError> {
        let entry = self.stat(record, path).await?;
        if entry.kind != "file" {
            return Err(ServiceError::invalid(format!(
                "{path} is a {}, not a regular file: list a directory, or read it as a tar archive",
                entry.kind
            )));
        }
        let mut archive = self.read_archive(record, path).await?;
        let (chunks_tx, chunks_rx) = mpsc::channel::<Bytes>(8);
        let (tx, rx) = mpsc::channel(8);
        let failed = tx.clone();
        tokio::spawn(async move {
            while let Some(chunk) = archive.recv().await {
                match chunk {
                    Ok(bytes) => {
                        if chunks_tx.send(bytes).await.is_err() {
                            break;
                        }
                    }
                    Err(e) => {
                        let _ = failed.send(Err(e)).await;
                        break;
                    }
                }
            }
        });
        tokio::task::spawn_blocking(move || {
            let mut tar = tar::Archive::new(ChunkReader::new(chunks_rx));
            let result = (|| -> std::io::Result<()> {
                let mut entries = tar.entries()?;
                let Some(entry) = entries.next() else {
                    return Err(std::io::Error::other("the archive was empty"));
                };
                let mut entry = entry?;
                let mut buf = vec![0u8; 256 << 10];
                loop {
                    let n = entry.read(&mut buf)?;
                    if n == 0 {
                        return Ok(());
                    }
                    if tx
                        .blocking_send(Ok(Bytes::copy_from_slice(&buf[..n])))
                        .is_err()
                    {
                        return Ok(());
                    }
                }
            })();
            if let Err(e) = result {
                let _ = tx.blocking_send(Err(ServiceError::unavailable(format!(
                    "reading the file from the sandbox failed: {e}"
                ))));
            }
        });
        Ok((entry.size, rx))
    }

    /// Writes one file from a stream of bytes, at most `limit` bytes. The agent writes it
    /// aside and swaps it in only once complete, so a failed or refused upload leaves the old
    /// file whole.
    pub async fn write_file<S>(
        &self,
        record: &SandboxRecord,
        path: &str,
        meta: NewFile,
        body: S,
        limit: u64,
    ) -> Result<u64, ServiceError>
    where
        S: Stream<Item = Result<Bytes, ServiceError>> + Send + 'static,
    {
        let (dir, name) = split(path)?;
        let first = UploadChunk {
            path: dir,
            data: Bytes::new(),
            file_name: name,
            mode: if meta.mode == 0 {
                0o644
            } else {
                meta.mode & 0o7777
            },
            mtime: meta.mtime.unwrap_or_else(|| {
                std::time::SystemTime::now()
                    .duration_since(std::time::UNIX_EPOCH)
                    .map_or(0, |d| d.as_secs() as i64)
            }),
        };
        self.upload(record, first, body, limit).await
    }

    /// Unpacks a tar stream into the directory `path` (created if missing), at most `limit`
    /// bytes of archive.
    pub async fn write_archive<S>(
        &self,
        record: &SandboxRecord,
        path: &str,
        body: S,
        limit: u64,
    ) -> Result<u64, ServiceError>
    where
        S: Stream<Item = Result<Bytes, ServiceError>> + Send + 'static,
    {
        absolute(path)?;
        let first = UploadChunk {
            path: path.to_string(),
            ..Default::default()
        };
        self.upload(record, first, body, limit).await
    }

    async fn upload<S>(
        &self,
        record: &SandboxRecord,
        first: UploadChunk,
        body: S,
        limit: u64,
    ) -> Result<u64, ServiceError>
    where
        S: Stream<Item = Result<Bytes, ServiceError>> + Send + 'static,
    {
        let mut client = self.agent(record).await?;
        let (tx, rx) = mpsc::channel::<UploadChunk>(8);
        let call = tokio::spawn(async move { client.upload(ReceiverStream::new(rx)).await });
        let _ = tx.send(first).await;
        let mut body = std::pin::pin!(body);
        let mut total = 0u64;
        let mut failure = None;
        while let Some(chunk) = body.next().await {
            match chunk {
                Ok(data) => {
                    total += data.len() as u64;
                    if total > limit {
                        failure = Some(ServiceError::new(
                            crate::ErrorKind::TooLarge,
                            format!(
                                "the upload is larger than this server's limit of {limit} bytes; nothing was written"
                            ),
                        ));
                        break;
                    }
                    if tx
                        .send(UploadChunk {
                            data,
                            ..Default::default()
                        })
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
                Err(e) => {
                    failure = Some(e);
                    break;
                }
            }
        }
        if let Some(e) = failure {
            // Cancelling the call resets the stream: the agent drops the half-written file.
            call.abort();
            return Err(e);
        }
        drop(tx);
        match call.await {
            Ok(Ok(_)) => Ok(total),
            Ok(Err(status)) => Err(self.explained(record, status).await),
            Err(e) => Err(ServiceError::internal(format!(
                "the upload task failed: {e}"
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths_split_into_dir_and_name() {
        assert_eq!(split("/a/b").unwrap(), ("/a".into(), "b".into()));
        assert_eq!(split("/a").unwrap(), ("/".into(), "a".into()));
        assert!(split("a/b").is_err());
        assert!(split("/").is_err());
        assert!(split("/a/..").is_err());
    }
}
