//! `berth fs`: the service's file operations (list, stat, mkdir -p, remove, rename) as verbs.
//! The agent resolves every path inside the sandbox; `/.berth` and the agent binary are
//! refused.

use std::process::ExitCode;

use berth_service::files::FileEntry;

use crate::args::{FsCommand, FsPathArgs};

fn row(f: &FileEntry) -> String {
    let modified = chrono::DateTime::from_timestamp(f.modified, 0)
        .map(|t| t.format("%Y-%m-%d %H:%M").to_string())
        .unwrap_or_default();
    let link = if f.link_target.is_empty() {
        String::new()
    } else {
        format!(" -> {}", f.link_target)
    };
    format!(
        "{:<7} {:04o} {:>5}:{:<5} {:>12} {} {}{}",
        f.kind,
        f.mode & 0o7777,
        f.uid,
        f.gid,
        f.size,
        modified,
        f.name,
        link
    )
}

fn json(f: &FileEntry) -> serde_json::Value {
    serde_json::json!({
        "name": f.name, "path": f.path, "kind": f.kind, "size": f.size,
        "mode": f.mode & 0o7777, "uid": f.uid, "gid": f.gid,
        "modified": f.modified, "link_target": f.link_target,
    })
}

/// The sandbox a `berth fs` verb acts on.
pub fn sandbox_of(command: &FsCommand) -> &str {
    match command {
        FsCommand::Ls(a) | FsCommand::Stat(a) | FsCommand::Mkdir(a) => &a.sandbox,
        FsCommand::Rm(a) => &a.sandbox,
        FsCommand::Mv(a) => &a.sandbox,
    }
}

/// Prints a listing (`ls`) or one entry (`stat`, `entries` of one), local or remote alike.
pub fn print(entries: &[FileEntry], as_json: bool, one: bool) -> anyhow::Result<()> {
    match (as_json, one) {
        (true, true) => {
            if let Some(e) = entries.first() {
                println!("{}", serde_json::to_string_pretty(&json(e))?);
            }
        }
        (true, false) => {
            let rows: Vec<_> = entries.iter().map(json).collect();
            println!("{}", serde_json::to_string_pretty(&rows)?);
        }
        (false, _) => {
            for e in entries {
                println!("{}", row(e));
            }
        }
    }
    Ok(())
}

pub async fn run(command: FsCommand) -> anyhow::Result<ExitCode> {
    let (service, record) = super::open(sandbox_of(&command))?;
    match command {
        FsCommand::Ls(FsPathArgs {
            json: j, path: p, ..
        }) => print(&service.list_dir(&record, &p).await?, j, false)?,
        FsCommand::Stat(FsPathArgs {
            json: j, path: p, ..
        }) => print(&[service.stat(&record, &p).await?], j, true)?,
        FsCommand::Mkdir(a) => service.mkdir(&record, &a.path).await?,
        FsCommand::Rm(a) => service.remove_path(&record, &a.path, a.recursive).await?,
        FsCommand::Mv(a) => service.rename(&record, &a.from, &a.to).await?,
    }
    Ok(ExitCode::SUCCESS)
}
