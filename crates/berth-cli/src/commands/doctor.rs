//! `berth doctor`: prints each check with its remedy; exits 1 when berth cannot work.

use std::process::ExitCode;

use berth_engine::docker::Endpoint;
use berth_sandbox::doctor::{self, Status};

use crate::args::DoctorArgs;

pub async fn run(args: DoctorArgs) -> anyhow::Result<ExitCode> {
    let checks = doctor::run(&Endpoint::from_env()).await;
    let failed = checks.iter().any(|c| c.status == Status::Fail);
    if args.json {
        println!(
            "{}",
            serde_json::to_string_pretty(&serde_json::json!({ "ok": !failed, "checks": checks }))?
        );
    } else {
        for check in &checks {
            let mark = match check.status {
                Status::Ok => "ok  ",
                Status::Warn => "warn",
                Status::Fail => "FAIL",
            };
            println!("{mark}  {:<16} {}", check.name, check.detail);
            if let Some(remedy) = &check.remedy {
                println!("      {:<16} → {remedy}", "");
            }
        }
        if failed {
            println!("\nberth cannot work on this machine until the FAIL lines are fixed.");
        } else {
            println!("\nberth is ready: try `berth run -- echo hello`.");
        }
    }
    Ok(if failed {
        ExitCode::FAILURE
    } else {
        ExitCode::SUCCESS
    })
}
