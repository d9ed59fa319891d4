//! Files inside the sandbox: tar upload and download (streamed, any size), stat, list, mkdir,
//! remove, rename. Every path is resolved (symlinks included) before it is checked, and
//! berth's own directory and binary are off limits. New files belong to the sandbox user.

use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Component, Path, PathBuf};

use berth_protocol::chunks::ChunkReader;
use berth_protocol::v1::{DataChunk, FileInfo, ListDirReply, UploadChunk};
use berth_protocol::{AGENT_PATH, SANDBOX_DIR};
use tokio::sync::mpsc;
use tonic::{Status, Streaming};

use crate::identity::Identity;

const CHUNK: usize = 256 * 1024;

fn io_status(what: &str, path: &Path, e: &std::io::Error) -> Status {
    let message = format!("{what} {}: {e}", path.display());
    match e.kind() {
        std::io::ErrorKind::NotFound => Status::not_found(message),
        std::io::ErrorKind::PermissionDenied => Status::permission_denied(message),
        std::io::ErrorKind::AlreadyExists => Status::already_exists(message),
        _ => Status::internal(message),
    }
}

/// Resolves `path` (absolute, inside the sandbox) through its existing ancestors and refuses
/// berth's own files.
pub fn confine(path: &str) -> Result<PathBuf, Status> {
    let given = Path::new(path);
    if !given.is_absolute() {
        return Err(Status::invalid_argument(format!(
            "{path:?} is not absolute: give a path inside the sandbox such as /workspace/file"
        )));
    }
    // Lexically normalise, then resolve the longest existing prefix for symlinks.
    let mut normal = PathBuf::from("/");
    for c in given.components() {
        match c {
            Component::Normal(part) => normal.push(part),
            Component::ParentDir => {
                normal.pop();
            }
            _ => {}
        }
    }
    let mut existing = normal.clone();
    let mut rest = Vec::new();
    while std::fs::symlink_metadata(&existing).is_err() {
        match (
            existing.file_name().map(|n| n.to_os_string()),
            existing.parent(),
        ) {
            (Some(name), Some(parent)) => {
                rest.push(name);
                existing = parent.to_path_buf();
            }
            _ => break,
        }
    }
    let mut resolved = std::fs::canonicalize(&existing).unwrap_or(existing);
    for part in rest.into_iter().rev() {
        resolved.push(part);
    }
    for forbidden in [SANDBOX_DIR, AGENT_PATH] {
        if resolved.starts_with(forbidden) {
            return Err(Status::permission_denied(format!(
                "{path:?} is reserved for berth"
            )));
        }
    }
    Ok(resolved)
}

fn info(path: &Path) -> Result<FileInfo, Status> {
    let meta = std::fs::symlink_metadata(path).map_err(|e| io_status("stat", path, &e))?;
    let ft = meta.file_type();
    let kind = if ft.is_symlink() {
        "symlink"
    } else if ft.is_dir() {
        "dir"
    } else if ft.is_file() {
        "file"
    } else {
        "other"
    };
    Ok(FileInfo {
        name: path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "/".to_string()),
        path: path.display().to_string(),
        kind: kind.to_string(),
        size: meta.len(),
        mode: meta.mode() & 0o7777,
        uid: meta.uid(),
        gid: meta.gid(),
        modified: meta.mtime(),
        link_target: std::fs::read_link(path)
            .map(|t| t.display().to_string())
            .unwrap_or_default(),
    })
}

pub fn stat(path: &str) -> Result<FileInfo, Status> {
    info(&confine(path)?)
}

pub fn list_dir(path: &str) -> Result<ListDirReply, Status> {
    let dir = confine(path)?;
    let entries = std::fs::read_dir(&dir).map_err(|e| io_status("listing", &dir, &e))?;
    let mut out = Vec::new();
    for entry in entries.flatten() {
        if let Ok(i) = info(&entry.path()) {
            out.push(i);
        }
    }
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(ListDirReply { entries: out })
}

/// `mkdir -p`, giving new directories to the sandbox user.
fn make_dirs(identity: &Identity, dir: &Path) -> Result<(), Status> {
    let mut missing = Vec::new();
    let mut cur = dir.to_path_buf();
    while !cur.exists() {
        missing.push(cur.clone());
        if !cur.pop() {
            break;
        }
    }
    std::fs::create_dir_all(dir).map_err(|e| io_status("creating", dir, &e))?;
    for d in missing {
        let _ = std::os::unix::fs::lchown(&d, Some(identity.uid), Some(identity.gid));
    }
    Ok(())
}

pub fn make_dir(identity: &Identity, path: &str) -> Result<(), Status> {
    make_dirs(identity, &confine(path)?)
}

pub fn remove(path: &str, recursive: bool) -> Result<(), Status> {
    let p = confine(path)?;
    let meta = std::fs::symlink_metadata(&p).map_err(|e| io_status("removing", &p, &e))?;
    let result = if meta.is_dir() {
        if recursive {
            std::fs::remove_dir_all(&p)
        } else {
            std::fs::remove_dir(&p)
        }
    } else {
        std::fs::remove_file(&p)
    };
    result.map_err(|e| io_status("removing", &p, &e))
}

pub fn rename(from: &str, to: &str) -> Result<(), Status> {
    let (f, t) = (confine(from)?, confine(to)?);
    std::fs::rename(&f, &t).map_err(|e| io_status("renaming", &f, &e))
}

/// Unpacks an uploaded tar stream into a directory (created if missing).
pub async fn upload(identity: &Identity, mut stream: Streaming<UploadChunk>) -> Result<(), Status> {
    let first = stream
        .message()
        .await?
        .ok_or_else(|| Status::invalid_argument("empty upload"))?;
    let dest = confine(&first.path)?;
    make_dirs(identity, &dest)?;
    let (tx, rx) = mpsc::channel::<Vec<u8>>(8);
    let (uid, gid) = (identity.uid, identity.gid);
    let unpack_dest = dest.clone();
    let unpacker = tokio::task::spawn_blocking(move || -> Result<(), Status> {
        let reader = ChunkReader::new(rx);
        let mut archive = tar::Archive::new(reader);
        archive.set_preserve_permissions(true);
        archive.set_overwrite(true);
        let entries = archive
            .entries()
            .map_err(|e| io_status("reading the upload into", &unpack_dest, &e))?;
        for entry in entries {
            let mut entry =
                entry.map_err(|e| io_status("reading the upload into", &unpack_dest, &e))?;
            let relative = entry
                .path()
                .map_err(|e| io_status("reading the upload into", &unpack_dest, &e))?
                .into_owned();
            let unpacked = entry
                .unpack_in(&unpack_dest)
                .map_err(|e| io_status("unpacking into", &unpack_dest, &e))?;
            if unpacked {
                let _ =
                    std::os::unix::fs::lchown(unpack_dest.join(&relative), Some(uid), Some(gid));
            }
        }
        // Drain anything after the archive's end so the sender is never stuck.
        let mut rest = archive.into_inner();
        let _ = std::io::copy(&mut rest, &mut std::io::sink());
        Ok(())
    });
    if !first.data.is_empty() && tx.send(first.data).await.is_err() {
        return unpacker
            .await
            .map_err(|e| Status::internal(e.to_string()))?;
    }
    while let Some(chunk) = stream.message().await? {
        if tx.send(chunk.data).await.is_err() {
            break;
        }
    }
    drop(tx);
    unpacker
        .await
        .map_err(|e| Status::internal(e.to_string()))?
}

/// Sends written bytes to the async side in chunks.
struct ChannelWriter {
    tx: mpsc::Sender<Result<DataChunk, Status>>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(DataChunk { data: buf.to_vec() }))
            .map_err(|_| {
                std::io::Error::new(std::io::ErrorKind::BrokenPipe, "download cancelled")
            })?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// Streams `path` (a file or a directory tree) as a tar archive whose root entry is its name.
pub fn download(path: &str) -> Result<mpsc::Receiver<Result<DataChunk, Status>>, Status> {
    let source = confine(path)?;
    let meta = std::fs::symlink_metadata(&source).map_err(|e| io_status("reading", &source, &e))?;
    let name = source
        .file_name()
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("."));
    let (tx, rx) = mpsc::channel(8);
    tokio::task::spawn_blocking(move || {
        let error_tx = tx.clone();
        let writer = std::io::BufWriter::with_capacity(CHUNK, ChannelWriter { tx });
        let mut builder = tar::Builder::new(writer);
        builder.follow_symlinks(false);
        let result = if meta.is_dir() {
            builder.append_dir_all(&name, &source)
        } else {
            builder.append_path_with_name(&source, &name)
        }
        .and_then(|()| builder.into_inner())
        .and_then(|mut w| w.flush());
        if let Err(e) = result {
            if e.kind() != std::io::ErrorKind::BrokenPipe {
                let _ = error_tx.blocking_send(Err(io_status("archiving", &source, &e)));
            }
        }
    });
    Ok(rx)
}
