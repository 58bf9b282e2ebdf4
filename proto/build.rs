//! Compiles `proto/collector.proto` with protox (a pure-Rust protobuf compiler), so building
//! needs no system `protoc`.

fn main() -> Result<(), Box<dyn std::error::Error>> {
    let schema = "proto/collector.proto";
    println!("cargo:rerun-if-changed={schema}");
    let descriptors = protox::compile([schema], ["proto"])?;
    prost_build::Config::new()
        // Status maps render in a stable order (the CLI prints them as JSON).
        .btree_map(["."])
        .compile_fds(descriptors)?;
    Ok(())
}
