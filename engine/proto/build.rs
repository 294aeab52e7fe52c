//! Compiles `proto/stream.proto` with `protoc` (Debian `protobuf-compiler`,
//! installed by `scripts/setup`) into the client and server the agent and
//! the control plane use.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto/stream.proto");
    tonic_build::configure()
        .build_client(true)
        .build_server(true)
        // No `connect(url)` constructor (it would clash with the rpc `Connect`);
        // the agent builds its own channel.
        .build_transport(false)
        .compile_protos(&["proto/stream.proto"], &["proto"])?;
    Ok(())
}
