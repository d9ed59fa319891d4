//! `berth fs`: the agent's file calls (list, stat, mkdir -p, remove, rename) as verbs. The
//! agent resolves every path inside the sandbox; `/.berth` and the agent binary are refused.

use std::process::ExitCode;

use berth_protocol::v1::{FileInfo, PathRequest, RemoveRequest, RenameRequest};
use berth_sandbox::sandbox;

use crate::args::{FsCommand, FsPathArgs};

fn row(f: &FileInfo) -> String {
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

fn json(f: &FileInfo) -> serde_json::Value {
    serde_json::json!({
        "name": f.name, "path": f.path, "kind": f.kind, "size": f.size,
        "mode": f.mode & 0o7777, "uid": f.uid, "gid": f.gid,
        "modified": f.modified, "link_target": f.link_target,
    })
}

/// The agent's own words (it names the path and the reason).
fn said(status: tonic::Status) -> anyhow::Error {
    anyhow::anyhow!("{}", status.message())
}

pub async fn run(command: FsCommand) -> anyhow::Result<ExitCode> {
    let reference = match &command {
        FsCommand::Ls(a) | FsCommand::Stat(a) | FsCommand::Mkdir(a) => &a.sandbox,
        FsCommand::Rm(a) => &a.sandbox,
        FsCommand::Mv(a) => &a.sandbox,
    };
    let record = sandbox::find(&berth_sandbox::store::FileStore::local(), reference)?;
    let mut client = super::exec::connect(&record).await?;
    let path = |p: &str| PathRequest {
        path: p.to_string(),
    };
    match command {
        FsCommand::Ls(FsPathArgs {
            json: j, path: p, ..
        }) => {
            let entries = client
                .list_dir(path(&p))
                .await
                .map_err(said)?
                .into_inner()
                .entries;
            if j {
                let rows: Vec<_> = entries.iter().map(json).collect();
                println!("{}", serde_json::to_string_pretty(&rows)?);
            } else {
                for e in &entries {
                    println!("{}", row(e));
                }
            }
        }
        FsCommand::Stat(FsPathArgs {
            json: j, path: p, ..
        }) => {
            let info = client.stat(path(&p)).await.map_err(said)?.into_inner();
            if j {
                println!("{}", serde_json::to_string_pretty(&json(&info))?);
            } else {
                println!("{}", row(&info));
            }
        }
        FsCommand::Mkdir(a) => {
            client.make_dir(path(&a.path)).await.map_err(said)?;
        }
        FsCommand::Rm(a) => {
            client
                .remove(RemoveRequest {
                    path: a.path,
                    recursive: a.recursive,
                })
                .await
                .map_err(said)?;
        }
        FsCommand::Mv(a) => {
            client
                .rename(RenameRequest {
                    from: a.from,
                    to: a.to,
                })
                .await
                .map_err(said)?;
        }
    }
    Ok(ExitCode::SUCCESS)
}
