// Generates the berth.v1 client and server code from the protos kept in this crate.
// Needs `protoc` (Debian's protobuf-compiler, installed by scripts/deps.sh).
fn main() -> Result<(), Box<dyn std::error::Error>> {
    println!("cargo:rerun-if-changed=proto");
    tonic_build::configure()
        .build_client(true)
        .build_server(true)
        .compile_protos(&["proto/berth/v1/berth.proto"], &["proto"])?;
    Ok(())
}
