//! The `berth.*` labels every Docker object berth creates carries.
//!
//! Labels are berth's only memory that survives a crash: `berth gc` and later reconciliation
//! find objects by them, and the owner label says which live process (if any) still owns one.

/// Present (value `true`) on everything berth creates.
pub const MANAGED: &str = "berth.managed";
/// berth's short id of the sandbox the object belongs to.
pub const ID: &str = "berth.id";
/// What the object is for: [`KIND_RUN`], [`KIND_NETWORK`], [`KIND_IMAGE`].
pub const KIND: &str = "berth.kind";
/// RFC 3339 creation time.
pub const CREATED: &str = "berth.created";
/// `host:pid:start-ticks` of the berth process that owns the object while it runs.
pub const OWNER: &str = "berth.owner";
/// The id of the `berth serve` instance that made the object: the server's reconcile owns it,
/// and the daemonless CLI (`berth gc` included) never touches it.
pub const SERVER: &str = "berth.server";
/// The tenant (API key name) a server-made sandbox belongs to.
pub const TENANT: &str = "berth.tenant";
/// Present (value `true`) on objects the user asked berth to keep (`--keep`).
pub const KEEP: &str = "berth.keep";

/// A container made by a one-shot `berth run`.
pub const KIND_RUN: &str = "run";
/// A long-lived sandbox (`berth create`), with berth's agent as PID 1.
pub const KIND_SANDBOX: &str = "sandbox";
/// The user-given name of a sandbox.
pub const NAME: &str = "berth.name";
/// A network berth made for one sandbox (`--network isolated`).
pub const KIND_NETWORK: &str = "network";
/// The egress gateway of one sandbox (`--allow-host`, `--secret`).
pub const KIND_GATEWAY: &str = "gateway";
/// The sandbox's egress policy as text (allowed hosts, comma-separated); never a secret value.
pub const EGRESS_ALLOW: &str = "berth.egress.allow";
/// The sandbox's secrets as `NAME@host,host;…` (names and hosts only, never a value).
pub const EGRESS_SECRETS: &str = "berth.egress.secrets";
/// An image berth built.
pub const KIND_IMAGE: &str = "image";
/// Kind of a volume (an agent CLI's home).
pub const KIND_VOLUME: &str = "volume";
/// Name of the agent (`berth agent run --name`) a sandbox or volume belongs to.
pub const AGENT: &str = "berth.agent";

/// The label filter that selects every berth object (`label=berth.managed=true`).
pub fn managed_filter() -> String {
    format!("{MANAGED}=true")
}
