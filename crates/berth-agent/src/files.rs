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
    let message = format!(
        "{what} {}: {}",
        path.display(),
        berth_protocol::io_reason(e)
    );
    match e.kind() {
        std::io::ErrorKind::NotFound => {
            Status::not_found(format!("{message}: give a path that exists in the sandbox"))
        }
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
    let resolved = resolve_links(&normal)?;
    for forbidden in [SANDBOX_DIR, AGENT_PATH] {
        if resolved.starts_with(forbidden) {
            return Err(Status::permission_denied(format!(
                "{path:?} is reserved for berth: give a path outside /.berth, e.g. /workspace/file"
            )));
        }
    }
    Ok(resolved)
}

/// `path` (absolute) with every symbolic link in it resolved, also a link whose target does
/// not exist yet: no name in the result is a link, so an operation on it cannot be led
/// somewhere the check above did not see (a dangling `/workspace/l -> /.berth/x`, say).
fn resolve_links(path: &Path) -> Result<PathBuf, Status> {
    /// As many links as Linux follows in one lookup.
    const MAX_LINKS: usize = 40;
    enum Part {
        Up,
        Name(std::ffi::OsString),
    }
    let parts = |p: &Path| -> Vec<Part> {
        p.components()
            .filter_map(|c| match c {
                Component::Normal(n) => Some(Part::Name(n.to_os_string())),
                Component::ParentDir => Some(Part::Up),
                _ => None,
            })
            .rev()
            .collect()
    };
    let mut todo = parts(path);
    let mut out = PathBuf::from("/");
    let mut links = 0;
    while let Some(part) = todo.pop() {
        let name = match part {
            Part::Up => {
                out.pop();
                continue;
            }
            Part::Name(name) => name,
        };
        let next = out.join(&name);
        let is_link = std::fs::symlink_metadata(&next).is_ok_and(|m| m.file_type().is_symlink());
        if !is_link {
            out = next;
            continue;
        }
        links += 1;
        if links > MAX_LINKS {
            return Err(Status::invalid_argument(format!(
                "{} goes through more than {MAX_LINKS} symbolic links: give a path without a link loop",
                path.display()
            )));
        }
        let target =
            std::fs::read_link(&next).map_err(|e| io_status("reading the link", &next, &e))?;
        if target.is_absolute() {
            out = PathBuf::from("/");
        }
        todo.extend(parts(&target));
    }
    Ok(out)
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
    if !first.file_name.is_empty() {
        return upload_file(identity, dest, first, stream).await;
    }
    let (tx, rx) = mpsc::channel::<bytes::Bytes>(8);
    let (uid, gid) = (identity.uid, identity.gid);
    let unpack_dest = dest.clone();
    let unpacker = tokio::task::spawn_blocking(move || {
        unpack_archive(ChunkReader::new(rx), &unpack_dest, (uid, gid))
    });
    let received = forward(first.data, &mut stream, &tx).await;
    drop(tx);
    let unpacked = unpacker
        .await
        .map_err(|e| Status::internal(e.to_string()))?;
    // A broken stream explains a failed unpack better than the unpacker's "unexpected EOF".
    received?;
    unpacked
}

/// Unpacks a tar stream under `dest` (which exists) with the rules of tar's `unpack_in`: no
/// entry lands outside `dest`, whatever its path or the links unpacked before it. Files are
/// given to `owner`. Reads `reader` to its end, so a sender is never left stuck.
pub fn unpack_archive<R: std::io::Read>(
    reader: R,
    dest: &Path,
    (uid, gid): (u32, u32),
) -> Result<(), Status> {
    let mut archive = tar::Archive::new(reader);
    archive.set_preserve_permissions(true);
    archive.set_overwrite(true);
    let entries = archive
        .entries()
        .map_err(|e| io_status("reading the upload into", dest, &e))?;
    for entry in entries {
        let mut entry = entry.map_err(|e| io_status("reading the upload into", dest, &e))?;
        let relative = entry
            .path()
            .map_err(|e| io_status("reading the upload into", dest, &e))?
            .into_owned();
        let unpacked = if entry.header().entry_type().is_file() {
            unpack_file(&mut entry, dest, &relative, (uid, gid))
        } else {
            entry.unpack_in(dest)
        }
        .map_err(|e| io_status("unpacking into", dest, &e))?;
        if unpacked {
            let _ = std::os::unix::fs::lchown(dest.join(&relative), Some(uid), Some(gid));
        }
    }
    let mut rest = archive.into_inner();
    let _ = std::io::copy(&mut rest, &mut std::io::sink());
    Ok(())
}

/// The name of a single-file upload: exactly one normal path component, with no `/` at all
/// (`d/` would otherwise pass as `d`; found by the `upload_file` fuzz target).
pub fn single_file_name(name: &str) -> Result<PathBuf, Status> {
    let path = PathBuf::from(name);
    let mut parts = path.components();
    match (parts.next(), parts.next()) {
        (Some(Component::Normal(_)), None) if !name.contains('/') => Ok(path),
        _ => Err(Status::invalid_argument(format!(
            "file name {name:?} must be a single path component, e.g. data.tar"
        ))),
    }
}

/// Writes `chunks` as the file `name` in `dest` under a temporary name, each chunk in one
/// write (no copy): nothing is in place until the caller commits it, which it does only when
/// the data was whole.
pub fn stage_file(
    dest: &Path,
    name: &Path,
    chunks: impl IntoIterator<Item = bytes::Bytes>,
) -> std::io::Result<NewFile> {
    let mut new =
        NewFile::create(dest, name)?.ok_or_else(|| std::io::Error::other("empty file name"))?;
    for chunk in chunks {
        new.file.write_all(&chunk)?;
    }
    Ok(new)
}

/// Hands an upload's chunks (starting with the first message's) to the blocking side until
/// the client ends the stream (`Ok`) or it breaks (`Err`), or the blocking side stops reading.
async fn forward(
    mut data: bytes::Bytes,
    stream: &mut Streaming<UploadChunk>,
    tx: &mpsc::Sender<bytes::Bytes>,
) -> Result<(), Status> {
    loop {
        if !data.is_empty() && tx.send(data).await.is_err() {
            return Ok(());
        }
        match stream.message().await? {
            Some(chunk) => data = chunk.data,
            None => return Ok(()),
        }
    }
}

/// Writes one uploaded regular file (`file_name` set on the first chunk) straight from the
/// received chunks into `dest`, with the same rules as a file in a tar upload.
async fn upload_file(
    identity: &Identity,
    dest: PathBuf,
    first: UploadChunk,
    mut stream: Streaming<UploadChunk>,
) -> Result<(), Status> {
    let name = single_file_name(&first.file_name)?;
    let (tx, mut rx) = mpsc::channel::<bytes::Bytes>(8);
    let owner = (identity.uid, identity.gid);
    let path = dest.join(&name);
    let failed = move |e: std::io::Error| io_status("writing", &path, &e);
    let (mode, mtime) = (first.mode, u64::try_from(first.mtime).unwrap_or(0));
    let writer = tokio::task::spawn_blocking(move || {
        stage_file(&dest, &name, std::iter::from_fn(|| rx.blocking_recv()))
    });
    let received = forward(first.data, &mut stream, &tx).await;
    drop(tx);
    let written = writer
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(&failed)?;
    // Only a stream the client ended itself is a whole file; a broken one is dropped here,
    // which removes the temporary file and leaves the old one untouched.
    received?;
    tokio::task::spawn_blocking(move || written.commit(mode, mtime, owner))
        .await
        .map_err(|e| Status::internal(e.to_string()))?
        .map_err(failed)
}

/// Unpacks one regular file under `dest` with the rules of tar's `unpack_in`, but copies the
/// data in large writes: tar's own copy writes 8 KiB at a time, which costs more than the
/// transfer for big files.
fn unpack_file<R: std::io::Read>(
    entry: &mut tar::Entry<'_, R>,
    dest: &Path,
    relative: &Path,
    owner: (u32, u32),
) -> std::io::Result<bool> {
    use std::io::Read;

    let Some(mut new) = NewFile::create(dest, relative)? else {
        return Ok(false);
    };
    let mut buf = vec![0u8; 1 << 20];
    let mut written = 0u64;
    loop {
        let n = entry.read(&mut buf)?;
        if n == 0 {
            break;
        }
        new.file.write_all(&buf[..n])?;
        written += n as u64;
    }
    // A stream that ends inside a file is not that file: never put a truncated one in place.
    if written != entry.size() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::UnexpectedEof,
            "the upload ended in the middle of a file",
        ));
    }
    let header = entry.header();
    new.commit(
        header.mode().unwrap_or(0o644),
        header.mtime().unwrap_or(0),
        owner,
    )?;
    Ok(true)
}

/// A regular file being uploaded: written under a temporary name next to its target, and put
/// in place by one `rename` only when complete. A failed or cancelled upload leaves the old
/// file as it was (and its temporary file is removed).
pub struct NewFile {
    file: std::fs::File,
    temp: PathBuf,
    target: PathBuf,
    committed: bool,
}

impl NewFile {
    /// Applies tar's `unpack_in` rules to `relative` under `dest`: a path with `..` is skipped
    /// (`None`), missing parents are created, and the parent must resolve inside `dest`. The
    /// target is replaced, never written through, so no symlink or hard link planted there can
    /// redirect the write.
    fn create(dest: &Path, relative: &Path) -> std::io::Result<Option<Self>> {
        use std::os::unix::fs::OpenOptionsExt;
        static NEXT: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

        let mut target = dest.to_path_buf();
        for part in relative.components() {
            match part {
                Component::Normal(name) => target.push(name),
                Component::ParentDir => return Ok(None),
                _ => {}
            }
        }
        let Some(parent) = target.parent().filter(|_| target != dest) else {
            return Ok(None);
        };
        std::fs::create_dir_all(parent)?;
        if !parent.canonicalize()?.starts_with(dest.canonicalize()?) {
            return Err(std::io::Error::other(format!(
                "{} would be written outside {}",
                relative.display(),
                dest.display()
            )));
        }
        let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let temp = parent.join(format!(".berth-upload-{}-{n}", std::process::id()));
        let file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .custom_flags(libc::O_NOFOLLOW)
            .mode(0o600)
            .open(&temp)?;
        Ok(Some(Self {
            file,
            temp,
            target,
            committed: false,
        }))
    }

    /// Gives the file its mode, time and owner, then renames it over the target. Whatever
    /// the target was (unless a directory) is replaced. Freeing a big old file can take longer
    /// than writing the new one, so the last reference to it is dropped on another thread.
    pub fn commit(mut self, mode: u32, mtime: u64, (uid, gid): (u32, u32)) -> std::io::Result<()> {
        use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
        std::os::unix::fs::fchown(&self.file, Some(uid), Some(gid))?;
        self.file
            .set_permissions(std::fs::Permissions::from_mode(mode & 0o7777))?;
        // A time the filesystem cannot store is not worth failing the copy for.
        let _ = self
            .file
            .set_modified(std::time::UNIX_EPOCH + std::time::Duration::from_secs(mtime));
        if std::fs::symlink_metadata(&self.target).is_ok_and(|m| m.is_dir()) {
            return Err(std::io::Error::new(
                std::io::ErrorKind::IsADirectory,
                "a directory is in the way",
            ));
        }
        // Holding the old file open makes removing its name cheap: its blocks are freed at
        // the last close, which happens on another thread.
        let old = std::fs::OpenOptions::new()
            .read(true)
            .custom_flags(libc::O_PATH | libc::O_NOFOLLOW)
            .open(&self.target)
            .ok();
        // Swap rather than rename over: ext4 flushes a file renamed over another before the
        // rename returns (its `auto_da_alloc` safeguard), which costs more than the copy.
        let swapped = old.is_some()
            && nix::fcntl::renameat2(
                nix::fcntl::AT_FDCWD,
                &self.temp,
                nix::fcntl::AT_FDCWD,
                &self.target,
                nix::fcntl::RenameFlags::RENAME_EXCHANGE,
            )
            .is_ok();
        if swapped {
            // The temporary name now holds the old file.
            self.committed = true;
            std::fs::remove_file(&self.temp)?;
        } else {
            std::fs::rename(&self.temp, &self.target)?;
            self.committed = true;
        }
        if let Some(old) = old {
            drop(tokio::task::spawn_blocking(move || drop(old)));
        }
        Ok(())
    }
}

impl Drop for NewFile {
    fn drop(&mut self) {
        if !self.committed {
            let _ = std::fs::remove_file(&self.temp);
        }
    }
}

/// Sends written bytes to the async side in chunks.
struct ChannelWriter {
    tx: mpsc::Sender<Result<DataChunk, Status>>,
}

impl Write for ChannelWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(DataChunk {
                data: bytes::Bytes::copy_from_slice(buf),
            }))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dangling_link_into_berths_directory_is_refused() {
        let dir = tempfile::tempdir().unwrap();
        let link = dir.path().join("l");
        std::os::unix::fs::symlink("/.berth/planted", &link).unwrap();
        let e = confine(&format!("{}/sub", link.display())).unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e}");
        let relative = dir.path().join("r");
        std::os::unix::fs::symlink("../../../../../../../.berth", &relative).unwrap();
        assert!(confine(&relative.display().to_string()).is_err());
    }

    #[test]
    fn a_single_file_name_is_one_component_without_a_slash() {
        assert!(single_file_name("data.tar").is_ok());
        for bad in ["d/", "/d", "a/b", ".", "..", "", "./d"] {
            assert!(single_file_name(bad).is_err(), "{bad:?}");
        }
    }

    #[test]
    fn links_are_resolved_and_loops_refused() {
        let dir = tempfile::tempdir().unwrap();
        let real = dir.path().canonicalize().unwrap();
        std::fs::create_dir(real.join("d")).unwrap();
        std::os::unix::fs::symlink("d", real.join("to-d")).unwrap();
        assert_eq!(
            confine(&format!("{}/to-d/new", real.display())).unwrap(),
            real.join("d/new")
        );
        std::os::unix::fs::symlink("loop", real.join("loop")).unwrap();
        let e = confine(&format!("{}/loop/x", real.display())).unwrap_err();
        assert!(e.message().contains("symbolic links"), "{e}");
    }
}
