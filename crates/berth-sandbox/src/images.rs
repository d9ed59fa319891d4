//! berth's own images, built offline.
//!
//! The engine here has no registry, so `berth/base` is assembled from the host's static busybox
//! (Debian's `busybox-static`), and `berth/debian` from a `debootstrap` root file system. Both
//! are `FROM scratch` builds whose context holds one `rootfs.tar`, which the builder unpacks with
//! its owners and modes, so the non-root user owns its home and `/workspace`.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use berth_engine::{BuildEvent, Engine, ImageInfo};
use berth_spec::{labels, DEFAULT_IMAGE, SANDBOX_GID, SANDBOX_UID};
use bytes::Bytes;

use crate::error::SandboxError;

/// The fuller Debian image (`berth image build --debian`).
pub const DEBIAN_IMAGE: &str = "berth/debian:latest";
/// The Debian suite the Debian image is made from.
pub const DEBIAN_SUITE: &str = "bookworm";
/// Packages the Debian image carries beyond the minimal base.
pub const DEBIAN_PACKAGES: &str = "bash,coreutils,python3,git,ca-certificates,procps";

const BUSYBOX_REMEDY: &str =
    "install Debian's busybox-static (`sudo apt-get install busybox-static`) or set BERTH_BUSYBOX to a static busybox";

/// The static busybox berth builds `berth/base` from: `$BERTH_BUSYBOX` or `/bin/busybox`.
pub fn busybox_path() -> PathBuf {
    std::env::var_os("BERTH_BUSYBOX")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from("/bin/busybox"))
}

/// True when `path` is an ELF executable without a dynamic loader (a static binary). Reads
/// only the ELF header and the program header table.
pub fn is_static_elf(path: &Path) -> std::io::Result<bool> {
    use std::io::{Read, Seek, SeekFrom};
    let mut file = std::fs::File::open(path)?;
    let mut header = [0u8; 64];
    if file.read_exact(&mut header).is_err() {
        return Ok(false);
    }
    // 64-bit little-endian ELF only (the machines berth targets).
    if header[..6] != [0x7f, b'E', b'L', b'F', 2, 1] {
        return Ok(false);
    }
    let mut phoff = [0u8; 8];
    phoff.copy_from_slice(&header[0x20..0x28]);
    let phoff = u64::from_le_bytes(phoff);
    let phentsize = usize::from(u16::from_le_bytes([header[0x36], header[0x37]]));
    let phnum = usize::from(u16::from_le_bytes([header[0x38], header[0x39]]));
    if phentsize < 4 {
        return Ok(false);
    }
    let mut table = vec![0u8; phentsize * phnum];
    file.seek(SeekFrom::Start(phoff))?;
    if file.read_exact(&mut table).is_err() {
        return Ok(false);
    }
    const PT_INTERP: u32 = 3;
    Ok(!table
        .chunks_exact(phentsize)
        .any(|entry| u32::from_le_bytes([entry[0], entry[1], entry[2], entry[3]]) == PT_INTERP))
}

fn image_labels() -> Vec<(String, String)> {
    vec![
        (labels::MANAGED.to_string(), "true".to_string()),
        (labels::KIND.to_string(), labels::KIND_IMAGE.to_string()),
    ]
}

fn dockerfile(extra_env: &str) -> String {
    format!(
        "FROM scratch\n\
         ADD rootfs.tar /\n\
         ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/home/berth{extra_env}\n\
         USER {SANDBOX_UID}:{SANDBOX_GID}\n\
         WORKDIR /workspace\n\
         CMD [\"sh\"]\n"
    )
}

fn header(kind: tar::EntryType, mode: u32, uid: u32, size: u64) -> tar::Header {
    let mut h = tar::Header::new_gnu();
    h.set_entry_type(kind);
    h.set_mode(mode);
    h.set_uid(u64::from(uid));
    h.set_gid(u64::from(uid));
    h.set_size(size);
    h.set_mtime(0);
    h
}

fn tar_err(e: std::io::Error) -> SandboxError {
    SandboxError::io("assembling the image's root file system", e)
}

/// The build context (Dockerfile + rootfs.tar) of `berth/base`, from a static busybox.
pub fn base_context(busybox: &Path) -> Result<Bytes, SandboxError> {
    let missing = || SandboxError::MissingTool {
        tool: format!("a static busybox at {}", busybox.display()),
        purpose: "build the berth/base image",
        remedy: BUSYBOX_REMEDY,
    };
    if !busybox.exists() || !is_static_elf(busybox).map_err(|_| missing())? {
        return Err(missing());
    }
    let binary = std::fs::read(busybox).map_err(|_| missing())?;
    let listing = Command::new(busybox)
        .arg("--list-full")
        .output()
        .map_err(|e| SandboxError::io(format!("running {} --list-full", busybox.display()), e))?;
    let applets = String::from_utf8_lossy(&listing.stdout).into_owned();

    let mut rootfs = tar::Builder::new(Vec::new());
    let dirs: [(&str, u32, u32); 14] = [
        ("bin", 0o755, 0),
        ("sbin", 0o755, 0),
        ("usr", 0o755, 0),
        ("usr/bin", 0o755, 0),
        ("usr/sbin", 0o755, 0),
        ("etc", 0o755, 0),
        ("dev", 0o755, 0),
        ("proc", 0o755, 0),
        ("sys", 0o755, 0),
        ("root", 0o700, 0),
        ("home", 0o755, 0),
        ("home/berth", 0o755, SANDBOX_UID),
        ("workspace", 0o755, SANDBOX_UID),
        ("tmp", 0o1777, 0),
    ];
    for (path, mode, uid) in dirs {
        let mut h = header(tar::EntryType::Directory, mode, uid, 0);
        rootfs
            .append_data(&mut h, path, std::io::empty())
            .map_err(tar_err)?;
    }
    let mut h = header(tar::EntryType::Regular, 0o755, 0, binary.len() as u64);
    rootfs
        .append_data(&mut h, "bin/busybox", binary.as_slice())
        .map_err(tar_err)?;
    for applet in applets.lines().map(str::trim).filter(|a| !a.is_empty()) {
        if applet == "bin/busybox" || applet.contains("..") {
            continue;
        }
        let mut h = header(tar::EntryType::Symlink, 0o777, 0, 0);
        rootfs
            .append_link(&mut h, applet, "/bin/busybox")
            .map_err(tar_err)?;
    }
    let files = [
        (
            "etc/passwd",
            format!(
                "root:x:0:0:root:/root:/bin/sh\nberth:x:{SANDBOX_UID}:{SANDBOX_GID}:berth:/home/berth:/bin/sh\nnobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
            ),
        ),
        (
            "etc/group",
            format!("root:x:0:\nberth:x:{SANDBOX_GID}:\nnogroup:x:65534:\n"),
        ),
        ("etc/os-release", "NAME=\"berth base (busybox)\"\nID=berth-base\n".to_string()),
    ];
    for (path, content) in files {
        let mut h = header(tar::EntryType::Regular, 0o644, 0, content.len() as u64);
        rootfs
            .append_data(&mut h, path, content.as_bytes())
            .map_err(tar_err)?;
    }
    let rootfs = rootfs.into_inner().map_err(tar_err)?;
    context_with(&dockerfile(""), &rootfs)
}

fn context_with(dockerfile: &str, rootfs: &[u8]) -> Result<Bytes, SandboxError> {
    let mut context = tar::Builder::new(Vec::new());
    let mut h = header(tar::EntryType::Regular, 0o644, 0, dockerfile.len() as u64);
    context
        .append_data(&mut h, "Dockerfile", dockerfile.as_bytes())
        .map_err(tar_err)?;
    let mut h = header(tar::EntryType::Regular, 0o644, 0, rootfs.len() as u64);
    context
        .append_data(&mut h, "rootfs.tar", rootfs)
        .map_err(tar_err)?;
    Ok(Bytes::from(context.into_inner().map_err(tar_err)?))
}

/// The repository of the egress gateway's image; its tag is the binary's digest, so a new
/// gateway binary gets a new image and an old one is never run by mistake.
pub const GATEWAY_REPOSITORY: &str = "berth/gateway";

/// The build context of the gateway image: only the static gateway and a `/tmp`.
pub fn gateway_context(binary: &[u8]) -> Result<Bytes, SandboxError> {
    let mut rootfs = tar::Builder::new(Vec::new());
    let mut h = header(tar::EntryType::Directory, 0o1777, 0, 0);
    rootfs
        .append_data(&mut h, "tmp", std::io::empty())
        .map_err(tar_err)?;
    let mut h = header(tar::EntryType::Regular, 0o555, 0, binary.len() as u64);
    rootfs
        .append_data(&mut h, "berth-gateway", binary)
        .map_err(tar_err)?;
    let rootfs = rootfs.into_inner().map_err(tar_err)?;
    let dockerfile = "FROM scratch\nADD rootfs.tar /\nUSER 65534:65534\nENTRYPOINT [\"/berth-gateway\"]\nCMD [\"serve\"]\n";
    context_with(dockerfile, &rootfs)
}

/// Makes sure the image for this gateway binary exists (built offline, in a second, the
/// first time) and returns its reference.
pub async fn ensure_gateway<E: Engine>(engine: &E, binary: &Path) -> Result<String, SandboxError> {
    use sha2::Digest;
    let bytes = std::fs::read(binary)
        .map_err(|e| SandboxError::io(format!("reading {}", binary.display()), e))?;
    let digest = hex::encode(&sha2::Sha256::digest(&bytes)[..8]);
    let reference = format!("{GATEWAY_REPOSITORY}:{digest}");
    if engine.image_inspect(&reference).await?.is_none() {
        let context = gateway_context(&bytes)?;
        engine
            .image_build(context, &reference, &image_labels(), &|_| {})
            .await?;
    }
    Ok(reference)
}

/// Builds `berth/base` from the host's static busybox.
pub async fn build_base<E: Engine>(
    engine: &E,
    progress: &(dyn Fn(BuildEvent) + Send + Sync),
) -> Result<ImageInfo, SandboxError> {
    let context = base_context(&busybox_path())?;
    Ok(engine
        .image_build(context, DEFAULT_IMAGE, &image_labels(), progress)
        .await?)
}

/// Builds `berth/debian` with `debootstrap` (needs root and a reachable Debian mirror).
pub async fn build_debian<E: Engine>(
    engine: &E,
    mirror: &str,
    progress: &(dyn Fn(BuildEvent) + Send + Sync),
) -> Result<ImageInfo, SandboxError> {
    let work = tempfile::Builder::new()
        .prefix("berth-debian-")
        .tempdir()
        .map_err(|e| SandboxError::io("creating a temporary directory", e))?;
    let root = work.path().join("rootfs");
    let mut child = Command::new("debootstrap")
        .args([
            "--variant=minbase",
            &format!("--include={DEBIAN_PACKAGES}"),
            DEBIAN_SUITE,
        ])
        .arg(&root)
        .arg(mirror)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::NotFound => SandboxError::MissingTool {
                tool: "debootstrap".to_string(),
                purpose: "build the berth/debian image",
                remedy: "sudo apt-get install debootstrap",
            },
            _ => SandboxError::io("running debootstrap", e),
        })?;
    if let Some(stdout) = child.stdout.take() {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            progress(BuildEvent::Log(line));
        }
    }
    let status = child
        .wait()
        .map_err(|e| SandboxError::io("waiting for debootstrap", e))?;
    if !status.success() {
        return Err(SandboxError::ImageUnavailable {
            image: DEBIAN_IMAGE.to_string(),
            reason: format!(
                "debootstrap failed ({status}); it needs root and a reachable Debian mirror ({mirror})"
            ),
        });
    }
    add_sandbox_user(&root)?;
    let rootfs_tar = work.path().join("rootfs.tar");
    progress(BuildEvent::Log("packing the root file system".to_string()));
    let packed = Command::new("tar")
        .args([
            "--numeric-owner",
            "--exclude=./dev/*",
            "--exclude=./proc/*",
            "--exclude=./sys/*",
        ])
        .args(["--exclude=./var/cache/apt/archives/*.deb", "-C"])
        .arg(&root)
        .arg("-cf")
        .arg(&rootfs_tar)
        .arg(".")
        .status()
        .map_err(|e| SandboxError::io("running tar", e))?;
    if !packed.success() {
        return Err(SandboxError::ImageUnavailable {
            image: DEBIAN_IMAGE.to_string(),
            reason: format!("packing the root file system failed ({packed})"),
        });
    }
    let rootfs = std::fs::read(&rootfs_tar)
        .map_err(|e| SandboxError::io(format!("reading {}", rootfs_tar.display()), e))?;
    let context = context_with(&dockerfile(" LANG=C.UTF-8"), &rootfs)?;
    drop(rootfs);
    Ok(engine
        .image_build(context, DEBIAN_IMAGE, &image_labels(), progress)
        .await?)
}

/// Adds the unprivileged `berth` user, its home and `/workspace` to a Debian root.
fn add_sandbox_user(root: &Path) -> Result<(), SandboxError> {
    use std::io::Write;
    let append = |file: &str, line: String| -> Result<(), SandboxError> {
        let path = root.join(file);
        let mut f = std::fs::OpenOptions::new()
            .append(true)
            .open(&path)
            .map_err(|e| SandboxError::io(format!("opening {}", path.display()), e))?;
        f.write_all(line.as_bytes())
            .map_err(|e| SandboxError::io(format!("writing {}", path.display()), e))
    };
    append(
        "etc/passwd",
        format!("berth:x:{SANDBOX_UID}:{SANDBOX_GID}:berth:/home/berth:/bin/bash\n"),
    )?;
    append("etc/group", format!("berth:x:{SANDBOX_GID}:\n"))?;
    for dir in ["home/berth", "workspace"] {
        let path = root.join(dir);
        std::fs::create_dir_all(&path)
            .map_err(|e| SandboxError::io(format!("creating {}", path.display()), e))?;
        std::os::unix::fs::chown(&path, Some(SANDBOX_UID), Some(SANDBOX_GID))
            .map_err(|e| SandboxError::io(format!("chown {}", path.display()), e))?;
    }
    Ok(())
}

/// Makes sure `reference` is present: inspects it, builds `berth/base` offline if that is what
/// is missing, otherwise pulls it.
pub async fn ensure<E: Engine>(
    engine: &E,
    reference: &str,
    progress: &(dyn Fn(BuildEvent) + Send + Sync),
) -> Result<ImageInfo, SandboxError> {
    berth_spec::check_image(reference)?;
    if let Some(info) = engine.image_inspect(reference).await? {
        return Ok(info);
    }
    if reference == DEFAULT_IMAGE {
        return build_base(engine, progress).await;
    }
    if reference == DEBIAN_IMAGE {
        return Err(SandboxError::ImageUnavailable {
            image: reference.to_string(),
            reason: "build it first with `berth image build --debian`".to_string(),
        });
    }
    engine
        .image_pull(reference, progress)
        .await
        .map_err(|e| SandboxError::ImageUnavailable {
            image: reference.to_string(),
            reason: format!(
                "it is not present locally and pulling it failed ({e}); build or load it, or use the default image (berth image build)"
            ),
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base_context_has_a_dockerfile_and_a_rootfs_with_owned_dirs() {
        let busybox = busybox_path();
        if !busybox.exists() {
            // Exercised for real by the integration tests, which require busybox-static.
            return;
        }
        let ctx = base_context(&busybox).unwrap();
        let mut outer = tar::Archive::new(ctx.as_ref());
        let mut names = Vec::new();
        let mut rootfs = Vec::new();
        for entry in outer.entries().unwrap() {
            let mut entry = entry.unwrap();
            let name = entry.path().unwrap().display().to_string();
            if name == "rootfs.tar" {
                std::io::Read::read_to_end(&mut entry, &mut rootfs).unwrap();
            }
            names.push(name);
        }
        assert_eq!(names, ["Dockerfile", "rootfs.tar"]);
        let mut inner = tar::Archive::new(rootfs.as_slice());
        let mut saw_workspace = false;
        let mut saw_sh = false;
        for entry in inner.entries().unwrap() {
            let entry = entry.unwrap();
            let path = entry.path().unwrap().display().to_string();
            if path == "workspace" {
                assert_eq!(entry.header().uid().unwrap(), u64::from(SANDBOX_UID));
                saw_workspace = true;
            }
            if path == "bin/sh" {
                saw_sh = true;
            }
        }
        assert!(saw_workspace && saw_sh);
    }

    #[test]
    fn dynamic_binaries_are_not_static() {
        assert!(!is_static_elf(Path::new("/bin/ls")).unwrap());
    }

    #[test]
    fn missing_busybox_says_what_to_install() {
        let e = base_context(Path::new("/nonexistent/busybox")).unwrap_err();
        assert!(e.to_string().contains("busybox-static"), "{e}");
    }
}
