//! Properties of `config::load` on arbitrary input: it never panics, its
//! diagnostics are sorted and point inside the files, and a tree of 1,000
//! small files loads quickly.

use std::time::{Duration, Instant};

use neutral_core::config::{FileContent, RepoFile, load};
use proptest::prelude::*;

const PATHS: [&str; 5] = [
    "platform-config/regions/jp.yaml",
    "platform-config/regions/sg.yaml",
    "platform-config/gtm/app.yaml",
    "platform-config/autoscale/jp.yaml",
    "infra/node-pool/jp.tfvars",
];

/// Text made of YAML and HCL punctuation, keywords of the schemas and a few
/// awkward characters, so random files hit the parsers' corners.
fn yamlish() -> impl Strategy<Value = String> {
    let atoms = prop::sample::select(vec![
        "name",
        "jp",
        "sg",
        ": ",
        "\n",
        "  ",
        "- ",
        "[",
        "]",
        "{",
        "}",
        ", ",
        "&a ",
        "*a",
        "!!str ",
        "!x ",
        "'",
        "\"",
        "#",
        "---\n",
        "...\n",
        "? ",
        "|",
        ">",
        "\t",
        "max_nodes",
        "min_nodes",
        "5",
        "-1",
        "0.5",
        "1e9",
        "~",
        "true",
        "<<",
        "10s",
        "failover",
        "regions",
        "=",
        "${",
        "é",
        "\r\n",
        "\u{feff}",
        "\u{0}",
        "region",
        "desired_nodes",
        "domain",
        "zone",
        "probe",
        "%YAML 1.2\n",
    ]);
    prop::collection::vec(atoms, 0..60).prop_map(|parts| parts.concat())
}

fn content() -> impl Strategy<Value = FileContent> {
    prop_oneof![
        4 => yamlish().prop_map(|text| FileContent::Bytes(text.into_bytes())),
        2 => prop::collection::vec(any::<u8>(), 0..200).prop_map(FileContent::Bytes),
        1 => prop::sample::select(vec!["../x", "jp.yaml", "../../../../etc", "/abs", "sg.yaml", ".."])
            .prop_map(|target| FileContent::Symlink(target.to_owned())),
        1 => any::<u64>().prop_map(FileContent::Oversized),
    ]
}

fn tree() -> impl Strategy<Value = Vec<RepoFile>> {
    prop::collection::vec((prop::sample::select(PATHS.to_vec()), content()), 0..6).prop_map(
        |files| {
            files
                .into_iter()
                .map(|(path, content)| RepoFile {
                    path: path.to_owned(),
                    content,
                })
                .collect()
        },
    )
}

fn line_count(content: &FileContent) -> u32 {
    match content {
        FileContent::Bytes(bytes) => {
            let newlines = bytes.iter().filter(|&&b| b == b'\n' || b == b'\r').count();
            u32::try_from(newlines)
                .unwrap_or(u32::MAX)
                .saturating_add(1)
        }
        // A symlink's diagnostics may come from its target's text.
        FileContent::Symlink(_) => u32::MAX,
        FileContent::Oversized(_) => 1,
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(256))]

    #[test]
    fn load_never_panics_and_sorts_diagnostics_inside_the_files(files in tree()) {
        let loaded = load(&files);
        let keys: Vec<_> = loaded
            .diagnostics
            .iter()
            .map(|d| (d.path.clone(), d.line, d.col, d.message.clone()))
            .collect();
        let mut sorted = keys.clone();
        sorted.sort();
        prop_assert_eq!(&keys, &sorted);
        for diagnostic in &loaded.diagnostics {
            prop_assert!(diagnostic.line >= 1 && diagnostic.col >= 1, "{}", diagnostic);
            let file = files.iter().find(|f| f.path == diagnostic.path);
            prop_assert!(file.is_some(), "diagnostic for a path not in the tree: {}", diagnostic);
            if let Some(file) = file {
                prop_assert!(
                    diagnostic.line <= line_count(&file.content).max(1),
                    "{} is past the end of the file", diagnostic
                );
            }
        }
        // A valid load declares only what the files name.
        if loaded.is_valid() {
            for name in loaded.declarations.regions.keys() {
                let path = format!("platform-config/regions/{name}.yaml");
                prop_assert!(files.iter().any(|f| f.path == path));
            }
        }
    }

    #[test]
    fn every_single_file_error_is_an_error_of_that_file(text in yamlish()) {
        let files = [RepoFile {
            path: "platform-config/regions/jp.yaml".into(),
            content: FileContent::Bytes(text.into_bytes()),
        }];
        let loaded = load(&files);
        prop_assert!(loaded.diagnostics.iter().all(|d| d.path == files[0].path));
        prop_assert_eq!(loaded.is_valid(), loaded.declarations.regions.contains_key("jp"));
    }
}

/// 1,000 small files: 250 regions with a node pool and an autoscale policy
/// each, and 250 domains.
fn large_tree() -> Vec<RepoFile> {
    let mut files = Vec::new();
    let mut add = |path: String, text: String| {
        files.push(RepoFile {
            path,
            content: FileContent::Bytes(text.into_bytes()),
        });
    };
    for i in 0..250 {
        let next = (i + 1) % 250;
        let failover = if next == 0 {
            String::new()
        } else {
            format!("r{next}")
        };
        add(
            format!("platform-config/regions/r{i}.yaml"),
            format!(
                "name: r{i}\nprovider: edge\nmin_nodes: 1\nmax_nodes: 5\nbase_weight: 100\nfailover: [{failover}]\n"
            ),
        );
        add(
            format!("platform-config/autoscale/r{i}.yaml"),
            format!(
                "region: r{i}\nscale_up: {{ cpu_above: 0.75, for: 60s }}\nscale_down: {{ cpu_below: 0.3, for: 300s }}\n"
            ),
        );
        add(
            format!("infra/node-pool/r{i}.tfvars"),
            format!("region        = \"r{i}\"\ndesired_nodes = 2\n"),
        );
        add(
            format!("platform-config/gtm/d{i}.yaml"),
            format!(
                "domain: d{i}.example.com\nzone: example.com\nregions: {{ r{i}: 100, r{next}: 50 }}\nprobe: {{ http: /healthz, interval: 10s, timeout: 2s }}\n"
            ),
        );
    }
    files
}

#[test]
fn a_thousand_file_tree_loads_valid_and_fast() {
    let files = large_tree();
    assert_eq!(files.len(), 1000);
    let started = Instant::now();
    let loaded = load(&files);
    let elapsed = started.elapsed();
    assert_eq!(loaded.diagnostics, vec![]);
    assert_eq!(loaded.declarations.regions.len(), 250);
    assert_eq!(loaded.declarations.gtm.len(), 250);
    // A few milliseconds in release; this debug-build bound only catches
    // accidental quadratic work.
    assert!(elapsed < Duration::from_secs(2), "took {elapsed:?}");
    eprintln!("1,000 files loaded in {elapsed:?} (debug build)");
}
