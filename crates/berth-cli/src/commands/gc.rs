//! `berth gc`: removes what crashed or killed berth processes left behind.

use std::process::ExitCode;

use berth_engine::docker::DockerEngine;
use berth_sandbox::gc::{self, GcOptions};

use crate::args::GcArgs;

pub async fn run(args: GcArgs) -> anyhow::Result<ExitCode> {
    let engine = DockerEngine::connect().await?;
    let items = gc::collect(
        &engine,
        &super::store(),
        GcOptions {
            dry_run: args.dry_run,
            all: args.all,
        },
    )
    .await?;
    let failed = items.iter().any(|i| i.error.is_some());
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(
                &serde_json::json!({ "dry_run": args.dry_run, "items": items })
            )?
        );
    } else if items.is_empty() {
        println!("nothing to remove");
    } else {
        for item in &items {
            let verb = match (&item.error, args.dry_run) {
                (Some(_), _) => "could not remove",
                (None, true) => "would remove",
                (None, false) => "removed",
            };
            println!("{verb} {} {} ({})", item.kind, item.name, item.reason);
            if let Some(e) = &item.error {
                println!("  {e}");
            }
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
