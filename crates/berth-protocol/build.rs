//! Compiles `proto/berth_agent.proto` with protox (pure Rust: no system protoc needed).

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/berth_agent.proto");
    let fds = protox::compile(["berth_agent.proto"], ["proto"])?;
    // Byte fields are `bytes::Bytes`: decoding slices the received buffer instead of copying.
    tonic_prost_build::configure().bytes(".").compile_fds(fds)?;
    Ok(())
}
