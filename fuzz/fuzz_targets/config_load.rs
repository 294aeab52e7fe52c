//! `config::load` on hostile repository trees: the input is split on `0xFF`
//! bytes into up to five files (region, GTM policy, autoscale policy, a
//! second region, node-pool tfvars), so YAML, tfvars and the cross-file
//! checks all see fuzzed bytes. Must never panic; every diagnostic is placed
//! on a real (1-based) line and column.
#![no_main]

use libfuzzer_sys::fuzz_target;
use neutral_core::config::{FileContent, RepoFile, load};

const PATHS: [&str; 5] = [
    "platform-config/regions/jp.yaml",
    "platform-config/gtm/app.yaml",
    "platform-config/autoscale/jp.yaml",
    "platform-config/regions/sg.yaml",
    "infra/node-pool/jp.tfvars",
];

fuzz_target!(|data: &[u8]| {
    let files: Vec<RepoFile> = data
        .split(|b| *b == 0xff)
        .zip(PATHS)
        .map(|(bytes, path)| RepoFile {
            path: path.to_owned(),
            content: FileContent::Bytes(bytes.to_vec()),
        })
        .collect();
    let loaded = load(&files);
    for diagnostic in &loaded.diagnostics {
        let text = diagnostic.to_string();
        assert!(!text.contains(":0:"), "unplaced diagnostic: {text}");
    }
});
