//! `berth cp`: files and directory trees between the host and a sandbox, as streams
//! (constant memory for any size), with `docker cp`'s naming rules, through the service
//! layer's file operations.

use std::io::Write;
use std::path::{Component, Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context};
use berth_protocol::chunks::ChunkReader;
use berth_service::files::NewFile;
use berth_service::ServiceError;
use bytes::Bytes;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

use crate::args::CpArgs;

const CHUNK: usize = 1 << 20;

/// `SANDBOX:/path` → (sandbox, path).
fn remote(spec: &str) -> Option<(String, String)> {
    let (sandbox, path) = spec.split_once(':')?;
    (!sandbox.is_empty() && !sandbox.contains('/') && path.starts_with('/'))
        .then(|| (sandbox.to_string(), path.to_string()))
}

pub async fn run(args: CpArgs) -> anyhow::Result<ExitCode> {
    match (remote(&args.source), remote(&args.destination)) {
        (None, Some((sb, path))) => upload(Path::new(&args.source), &sb, &path).await?,
        (Some((sb, path)), None) => download(&sb, &path, Path::new(&args.destination)).await?,
        _ => bail!(
            "exactly one of SOURCE and DESTINATION must be SANDBOX:/ABSOLUTE/PATH, e.g. `berth cp ./data.tar $id:/workspace/` or `berth cp $id:/workspace/out ./out`"
        ),
    }
    Ok(ExitCode::SUCCESS)
}

/// What the packer hands the upload: bytes, or why reading the host's files failed (which
/// aborts the upload, so nothing half-read is written).
type Chunks = mpsc::Sender<Result<Bytes, ServiceError>>;

/// Writes each buffer as one upload chunk.
struct ChunkWriter {
    tx: Chunks,
}

impl Write for ChunkWriter {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.tx
            .blocking_send(Ok(Bytes::copy_from_slice(buf)))
            .map_err(|_| std::io::Error::new(std::io::ErrorKind::BrokenPipe, "upload ended"))?;
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// What an upload's host side is, or why it cannot be read.
pub fn source_metadata(source: &Path) -> anyhow::Result<std::fs::Metadata> {
    std::fs::metadata(source).map_err(|e| {
        anyhow::anyhow!(
            "cannot read {}: {}; give a host file or directory that exists, e.g. berth cp ./data.txt $id:/workspace/",
            source.display(),
            berth_sandbox::io_reason(&e)
        )
    })
}

async fn upload(source: &Path, reference: &str, dest: &str) -> anyhow::Result<()> {
    let meta = source_metadata(source)?;
    let (service, record) = super::open(reference)?;
    let source_name = source
        .canonicalize()?
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_else(|| "root".to_string());
    // docker cp rules: into DEST if it ends with / or is a directory, else as DEST.
    let (dir, name) = if dest.ends_with('/') {
        (dest.to_string(), source_name)
    } else {
        match service.stat(&record, dest).await {
            Ok(info) if info.kind == "dir" => (dest.to_string(), source_name),
            _ => {
                let p = Path::new(dest);
                let parent = p
                    .parent()
                    .map_or("/".to_string(), |p| p.display().to_string());
                let name = p
                    .file_name()
                    .map_or(source_name, |n| n.to_string_lossy().into_owned());
                (parent, name)
            }
        }
    };
    let (tx, rx) = mpsc::channel(8);
    let body = ReceiverStream::new(rx);
    let source = source.to_path_buf();
    // One regular file goes raw (no tar on either side); anything else as a tar stream.
    if meta.is_file() {
        use std::os::unix::fs::MetadataExt;
        let file = NewFile {
            mode: meta.mode() & 0o7777,
            mtime: Some(meta.mtime()),
        };
        let path = format!("{}/{name}", dir.trim_end_matches('/'));
        tokio::task::spawn_blocking(move || send_file(&source, &tx));
        service
            .write_file(&record, &path, file, body, u64::MAX)
            .await?;
    } else {
        tokio::task::spawn_blocking(move || send_tar(&source, &name, meta.is_dir(), &tx));
        service.write_archive(&record, &dir, body, u64::MAX).await?;
    }
    Ok(())
}

/// Why reading the host's files for an upload failed, as the upload's error.
fn unreadable(source: &Path, e: &std::io::Error) -> ServiceError {
    ServiceError::invalid(format!(
        "reading {} to upload it failed: {}; nothing was written",
        source.display(),
        berth_sandbox::io_reason(e)
    ))
}

/// Sends a file's bytes as upload chunks, each read straight into the buffer that is sent
/// (not zeroed first: at this size even a memset is a visible share of the copy).
fn send_file(source: &Path, tx: &Chunks) {
    if let Err(e) = send_file_bytes(source, tx) {
        let _ = tx.blocking_send(Err(unreadable(source, &e)));
    }
}

fn send_file_bytes(source: &Path, tx: &Chunks) -> std::io::Result<()> {
    use std::os::fd::AsRawFd;
    let file = std::fs::File::open(source)?;
    loop {
        let mut buf = bytes::BytesMut::with_capacity(CHUNK);
        // SAFETY: read(2) writes at most CHUNK bytes into the buffer's spare capacity (which is
        // at least CHUNK), and only the bytes it reports written are exposed by `set_len`.
        let n = unsafe { libc::read(file.as_raw_fd(), buf.as_mut_ptr().cast(), CHUNK) };
        let n = match usize::try_from(n) {
            Ok(0) => return Ok(()),
            Ok(n) => n,
            Err(_) => match std::io::Error::last_os_error() {
                e if e.kind() == std::io::ErrorKind::Interrupted => continue,
                e => return Err(e),
            },
        };
        // SAFETY: the first `n` bytes were initialised by read(2) above.
        unsafe { buf.set_len(n) };
        if tx.blocking_send(Ok(buf.freeze())).is_err() {
            // The agent stopped reading; its answer says why.
            return Ok(());
        }
    }
}

/// Packs `source` (a directory tree or a special file) as a tar stream of upload chunks.
fn send_tar(source: &Path, name: &str, is_dir: bool, tx: &Chunks) {
    if let Err(e) = pack(source, name, is_dir, tx.clone()) {
        let _ = tx.blocking_send(Err(unreadable(source, &e)));
    }
}

fn pack(source: &Path, name: &str, is_dir: bool, tx: Chunks) -> std::io::Result<()> {
    let writer = std::io::BufWriter::with_capacity(CHUNK, ChunkWriter { tx });
    let mut builder = tar::Builder::new(writer);
    builder.follow_symlinks(false);
    if is_dir {
        builder.append_dir_all(name, source)?;
    } else {
        builder.append_path_with_name(source, name)?;
    }
    builder.into_inner()?.flush()
}

/// Moves a finished download from `temp` to `target`. Over an existing file it swaps the two
/// and then removes the old one: ext4 flushes a file renamed over another before the rename
/// returns (`auto_da_alloc`), which costs more than the copy itself.
pub fn put_in_place(temp: &Path, target: &Path) -> std::io::Result<()> {
    use nix::fcntl::{renameat2, RenameFlags, AT_FDCWD};
    let exists = std::fs::symlink_metadata(target).is_ok_and(|m| m.is_file());
    if exists
        && renameat2(
            AT_FDCWD,
            temp,
            AT_FDCWD,
            target,
            RenameFlags::RENAME_EXCHANGE,
        )
        .is_ok()
    {
        // `temp` now names the old file.
        return std::fs::remove_file(temp);
    }
    std::fs::rename(temp, target)
}

/// A downloaded file's temporary name beside its target: hidden, and naming the target and
/// this process (`.NAME.berth-part-PID`), so [`sweep_parts`] can tell a dead download's.
pub fn part_path(target: &Path) -> PathBuf {
    let name = target.file_name().unwrap_or_default().to_string_lossy();
    target.with_file_name(format!(".{name}.berth-part-{}", std::process::id()))
}

/// Removes from `dir` what downloads left there when they were killed before they finished
/// (nothing can clean up after a SIGKILL): `.NAME.berth-part-PID` files whose process is
/// gone. A live process's — another download under way — is left alone.
pub fn sweep_parts(dir: &Path) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let name = entry.file_name();
        let Some(pid) = name
            .to_str()
            .filter(|n| n.starts_with('.'))
            .and_then(|n| n.rsplit_once(".berth-part-"))
            .and_then(|(_, pid)| pid.parse::<i32>().ok())
        else {
            continue;
        };
        let gone = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), None)
            == Err(nix::errno::Errno::ESRCH);
        if gone && entry.file_type().is_ok_and(|t| t.is_file()) {
            let _ = std::fs::remove_file(entry.path());
        }
    }
}

/// Where a download lands: into DEST if it is a directory (keeping the name), else as DEST
/// in its directory, which must exist (as with `docker cp`, nothing is created above it).
pub fn download_target(dest: &Path) -> anyhow::Result<(PathBuf, Option<std::ffi::OsString>)> {
    if dest.is_dir() {
        return Ok((dest.to_path_buf(), None));
    }
    let parent = dest
        .parent()
        .filter(|p| !p.as_os_str().is_empty())
        .unwrap_or(Path::new("."));
    if !parent.is_dir() {
        bail!(
            "the destination's directory {} does not exist: create it first (mkdir -p {}) or copy into an existing one, e.g. berth cp $id:/workspace/out ./",
            parent.display(),
            parent.display()
        );
    }
    let name = dest
        .file_name()
        .context("the destination needs a file name, e.g. ./out.txt")?
        .to_os_string();
    Ok((parent.to_path_buf(), Some(name)))
}

async fn download(reference: &str, path: &str, dest: &Path) -> anyhow::Result<()> {
    let (service, record) = super::open(reference)?;
    let mut stream = service.read_archive(&record, path).await?;
    let (base, rename) = download_target(dest)?;
    let (tx, rx) = mpsc::channel::<Bytes>(8);
    let unpacker =
        tokio::task::spawn_blocking(move || unpack(ChunkReader::new(rx), &base, rename.as_deref()));
    let mut failure = None;
    while let Some(chunk) = stream.recv().await {
        match chunk {
            Ok(data) => {
                if tx.send(data).await.is_err() {
                    break;
                }
            }
            Err(e) => {
                failure = Some(e);
                break;
            }
        }
    }
    drop(tx);
    let unpacked = unpacker.await?;
    if let Some(e) = failure {
        bail!("downloading {path} failed: {e}");
    }
    unpacked
}

/// Unpacks a downloaded archive under `base` (its first component renamed to `rename`, when
/// given), local or remote alike. Only plain relative paths are accepted. A file lands under
/// a temporary name and is renamed into place only when whole: a download that fails (or is
/// killed) never leaves a truncated file under the real name, and an old file there stays as
/// it was; each directory a file lands in is swept of dead downloads' leftovers, once.
pub fn unpack(
    reader: impl std::io::Read,
    base: &Path,
    rename: Option<&std::ffi::OsStr>,
) -> anyhow::Result<()> {
    let mut archive = tar::Archive::new(reader);
    let mut swept = std::collections::HashSet::new();
    for entry in archive.entries()? {
        let mut entry = entry?;
        let original = entry.path()?.into_owned();
        let mut relative = PathBuf::new();
        for (i, c) in original.components().enumerate() {
            match c {
                Component::Normal(part) if i == 0 => relative.push(rename.unwrap_or(part)),
                Component::Normal(part) => relative.push(part),
                Component::CurDir => {}
                _ => bail!(
                    "refusing an unsafe path in the archive: {}",
                    original.display()
                ),
            }
        }
        // Nothing is written through a symbolic link the download itself made (an archive
        // with `dir -> /elsewhere` and then `dir/file`): every directory on the way must be a
        // real one.
        let mut on_the_way = base.to_path_buf();
        let parents = relative.components().count().saturating_sub(1);
        for part in relative.components().take(parents) {
            on_the_way.push(part);
            if std::fs::symlink_metadata(&on_the_way).is_ok_and(|m| m.file_type().is_symlink()) {
                bail!(
                    "refusing to write {} through the symbolic link {}",
                    original.display(),
                    on_the_way.display()
                );
            }
        }
        let target = base.join(&relative);
        if let Some(parent) = target.parent() {
            std::fs::create_dir_all(parent)?;
            if swept.insert(parent.to_path_buf()) {
                sweep_parts(parent);
            }
        }
        entry.set_preserve_permissions(true);
        if !entry.header().entry_type().is_file() {
            entry
                .unpack(&target)
                .with_context(|| format!("writing {}", target.display()))?;
            continue;
        }
        let temp = part_path(&target);
        let written = entry
            .unpack(&temp)
            .and_then(|_| put_in_place(&temp, &target));
        if let Err(e) = written {
            let _ = std::fs::remove_file(&temp);
            return Err(e).with_context(|| format!("writing {}", target.display()));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn archive(build: impl FnOnce(&mut tar::Builder<Vec<u8>>)) -> Vec<u8> {
        let mut builder = tar::Builder::new(Vec::new());
        build(&mut builder);
        builder.into_inner().unwrap()
    }

    fn file(builder: &mut tar::Builder<Vec<u8>>, path: &str, data: &[u8]) {
        let mut header = tar::Header::new_gnu();
        header.set_size(data.len() as u64);
        header.set_mode(0o644);
        header.set_entry_type(tar::EntryType::Regular);
        builder.append_data(&mut header, path, data).unwrap();
    }

    #[test]
    fn a_download_never_writes_through_a_link_it_made() {
        let outside = tempfile::tempdir().unwrap();
        let base = tempfile::tempdir().unwrap();
        let tar = archive(|b| {
            let mut link = tar::Header::new_gnu();
            link.set_entry_type(tar::EntryType::Symlink);
            link.set_size(0);
            b.append_link(&mut link, "out/dir", outside.path()).unwrap();
            file(b, "out/dir/evil", b"escaped");
        });
        let err = unpack(&tar[..], base.path(), None).unwrap_err();
        assert!(err.to_string().contains("symbolic link"), "{err}");
        assert!(!outside.path().join("evil").exists());
    }

    #[test]
    fn a_dead_downloads_leftover_goes_and_a_live_ones_stays() {
        let base = tempfile::tempdir().unwrap();
        // No process has a pid this large (pid_max is at most 2^22).
        let dead = base.path().join(".data.berth-part-99999999");
        // PID 1 is always alive: its download would still be under way.
        let live = base.path().join(".data.berth-part-1");
        std::fs::write(&dead, "partial").unwrap();
        std::fs::write(&live, "under way").unwrap();
        let tar = archive(|b| file(b, "data", b"whole"));
        unpack(&tar[..], base.path(), None).unwrap();
        assert!(!dead.exists(), "the dead download's part was swept");
        assert_eq!(std::fs::read_to_string(&live).unwrap(), "under way");
        assert_eq!(
            std::fs::read_to_string(base.path().join("data")).unwrap(),
            "whole"
        );
    }
}
