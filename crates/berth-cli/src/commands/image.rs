//! `berth image build`: berth's images, offline.

use std::process::ExitCode;

use berth_engine::docker::DockerEngine;
use berth_sandbox::images;
use berth_spec::DEFAULT_IMAGE;

use crate::args::ImageBuildArgs;
use crate::progress::Progress;

pub async fn build(args: ImageBuildArgs) -> anyhow::Result<ExitCode> {
    let engine = DockerEngine::connect().await?;
    let tag = if args.debian {
        images::DEBIAN_IMAGE
    } else {
        DEFAULT_IMAGE
    };
    let progress = Progress::start(&format!("building {tag}"));
    let report = |e| progress.event(e);
    let result = if args.debian {
        images::build_debian(&engine, &args.mirror, &report).await
    } else {
        images::build_base(&engine, &report).await
    };
    let image = match result {
        Ok(image) => image,
        Err(e) => {
            progress.abandon();
            return Err(e.into());
        }
    };
    progress.finish(&format!("built {tag} ({})", image.id));
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "image": tag, "id": image.id }))?
        );
    }
    Ok(ExitCode::SUCCESS)
}
