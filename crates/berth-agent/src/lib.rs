//! The agent's parts, as a library so that fuzz targets and in-process tests reach the same
//! code the binary runs (`main.rs` only parses its arguments and starts the server).
//!
//! - `server`: the protocol's service on the unix socket, and the main process;
//! - `exec`, `spawn`, `reaper`, `background`: processes, their streams and their ends;
//! - `files`: file operations confined to the sandbox, uploads and downloads;
//! - `identity`: who the sandbox's processes run as.

pub mod background;
pub mod exec;
pub mod files;
pub mod identity;
pub mod reaper;
pub mod server;
pub mod spawn;
