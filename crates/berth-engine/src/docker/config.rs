//! Translates an engine-neutral [`ContainerPlan`] into Docker's container-create body.
//!
//! Pure, so the exact JSON Docker receives is unit-tested without a daemon.

use std::collections::HashMap;

use bollard::models::{ContainerCreateBody, HostConfig};

use crate::types::ContainerPlan;

/// The Docker `POST /containers/create` body for a plan.
pub fn container_body(plan: &ContainerPlan) -> ContainerCreateBody {
    let binds = plan
        .binds
        .iter()
        .map(|b| {
            let mode = if b.read_only { "ro" } else { "rw" };
            format!("{}:{}:{mode}", b.source, b.target)
        })
        .collect::<Vec<_>>();
    let host_config = HostConfig {
        memory: Some(plan.memory_bytes),
        memory_swap: Some(plan.memory_swap_bytes),
        nano_cpus: Some(plan.nano_cpus),
        pids_limit: Some(plan.pids_limit),
        cap_drop: Some(plan.cap_drop.clone()),
        cap_add: (!plan.cap_add.is_empty()).then(|| plan.cap_add.clone()),
        security_opt: Some(plan.security_opt.clone()),
        readonly_rootfs: Some(plan.read_only_rootfs),
        tmpfs: Some(
            plan.tmpfs
                .iter()
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect::<HashMap<_, _>>(),
        ),
        binds: (!binds.is_empty()).then_some(binds),
        network_mode: Some(plan.network.clone()),
        privileged: Some(false),
        oom_score_adj: plan.oom_score_adj,
        init: Some(false),
        dns: (!plan.dns.is_empty()).then(|| plan.dns.clone()),
        dns_options: (!plan.dns_options.is_empty()).then(|| plan.dns_options.clone()),
        runtime: plan.runtime.clone(),
        ..Default::default()
    };
    ContainerCreateBody {
        image: Some(plan.image.clone()),
        entrypoint: plan.entrypoint.clone(),
        cmd: Some(plan.cmd.clone()),
        user: Some(plan.user.clone()),
        working_dir: plan.workdir.clone(),
        env: Some(plan.env.clone()),
        labels: Some(plan.labels.clone().into_iter().collect()),
        attach_stdin: Some(plan.open_stdin),
        attach_stdout: Some(true),
        attach_stderr: Some(true),
        open_stdin: Some(plan.open_stdin),
        stdin_once: Some(plan.open_stdin),
        tty: Some(plan.tty),
        network_disabled: Some(plan.network == "none"),
        stop_timeout: plan.stop_timeout,
        host_config: Some(host_config),
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::types::BindMount;

    #[test]
    fn hardening_reaches_the_docker_body() {
        let plan = ContainerPlan {
            name: "berth-run-abc".into(),
            image: "berth/base:latest".into(),
            cmd: vec!["echo".into(), "$HOME `x`".into()],
            user: "1000:1000".into(),
            memory_bytes: 64 << 20,
            memory_swap_bytes: 64 << 20,
            nano_cpus: 500_000_000,
            pids_limit: 64,
            cap_drop: vec!["ALL".into()],
            security_opt: vec!["no-new-privileges".into()],
            read_only_rootfs: true,
            tmpfs: [("/tmp".to_string(), "rw,size=1m".to_string())].into(),
            binds: vec![BindMount {
                source: "/src".into(),
                target: "/workspace".into(),
                read_only: true,
            }],
            network: "none".into(),
            labels: [("berth.managed".to_string(), "true".to_string())].into(),
            ..Default::default()
        };
        let body = serde_json::to_value(container_body(&plan)).unwrap();
        let host = &body["HostConfig"];
        assert_eq!(body["User"], "1000:1000");
        assert_eq!(body["Cmd"][1], "$HOME `x`");
        assert_eq!(body["NetworkDisabled"], true);
        assert_eq!(body["Labels"]["berth.managed"], "true");
        assert_eq!(host["Memory"], 64 << 20);
        assert_eq!(host["MemorySwap"], 64 << 20);
        assert_eq!(host["NanoCpus"], 500_000_000);
        assert_eq!(host["PidsLimit"], 64);
        assert_eq!(host["CapDrop"][0], "ALL");
        assert!(host.get("CapAdd").is_none());
        assert_eq!(host["SecurityOpt"][0], "no-new-privileges");
        assert_eq!(host["ReadonlyRootfs"], true);
        assert_eq!(host["Privileged"], false);
        assert_eq!(host["Binds"][0], "/src:/workspace:ro");
        assert_eq!(host["Tmpfs"]["/tmp"], "rw,size=1m");
        assert_eq!(host["NetworkMode"], "none");
    }
}
