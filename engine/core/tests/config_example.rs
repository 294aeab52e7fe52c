//! The repository's own example intent (`platform-config/`, `infra/node-pool/`)
//! loads cleanly and declares what DESIGN.md describes.

use std::path::Path;
use std::time::Duration;

use neutral_core::config::{FileContent, RepoFile, load};
use neutral_core::model::{AllDownPolicy, CloudProvider, DnsBackendKind, RecordType};

fn walk(root: &Path, dir: &Path, out: &mut Vec<RepoFile>) {
    for entry in std::fs::read_dir(dir).expect("readable folder") {
        let entry = entry.expect("entry");
        let path = entry.path();
        let file_type = entry.file_type().expect("file type");
        if file_type.is_dir() {
            walk(root, &path, out);
            continue;
        }
        let relative = path
            .strip_prefix(root)
            .expect("inside the root")
            .to_string_lossy()
            .replace('\\', "/");
        let content = if file_type.is_symlink() {
            FileContent::Symlink(
                std::fs::read_link(&path)
                    .expect("link")
                    .to_string_lossy()
                    .into_owned(),
            )
        } else {
            FileContent::Bytes(std::fs::read(&path).expect("readable file"))
        };
        out.push(RepoFile {
            path: relative,
            content,
        });
    }
}

fn example_tree() -> Vec<RepoFile> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("../..");
    let mut files = Vec::new();
    walk(&root, &root.join("platform-config"), &mut files);
    walk(&root, &root.join("infra/node-pool"), &mut files);
    files
}

#[test]
fn the_example_tree_is_valid_without_warnings() {
    let loaded = load(&example_tree());
    let rendered: Vec<String> = loaded.diagnostics.iter().map(ToString::to_string).collect();
    assert_eq!(rendered, Vec::<String>::new());
    assert!(loaded.is_valid());
}

#[test]
fn the_example_tree_declares_three_regions_one_domain_two_policies_two_pools() {
    let decl = load(&example_tree()).declarations;
    assert_eq!(decl.regions.keys().collect::<Vec<_>>(), ["jp", "sg", "us"]);
    let jp = &decl.regions["jp"];
    assert_eq!(jp.provider, CloudProvider::Edge);
    assert_eq!((jp.min_nodes, jp.max_nodes, jp.base_weight), (1, 5, 100));
    assert_eq!(jp.failover, ["sg"]);
    assert_eq!(decl.regions["sg"].failover, ["jp", "us"]);
    assert!(decl.regions["us"].failover.is_empty());

    let app = &decl.gtm["app.example.com"];
    assert_eq!(app.name, "app");
    assert_eq!(app.zone, "example.com");
    assert_eq!(app.record_type, RecordType::A);
    assert_eq!((app.ttl, app.dns), (30, DnsBackendKind::Embedded));
    assert_eq!(app.all_down, AllDownPolicy::FailOpen);
    assert_eq!(
        app.regions
            .iter()
            .map(|(k, v)| (k.as_str(), *v))
            .collect::<Vec<_>>(),
        [("jp", 100), ("sg", 50), ("us", 50)]
    );
    assert_eq!(app.probe.http, "/healthz");
    assert_eq!(app.probe.interval, Duration::from_secs(10));
    assert_eq!(app.probe.timeout, Duration::from_secs(2));
    assert_eq!(app.slow_start, Some(Duration::from_secs(60)));

    let jp_scale = &decl.autoscale["jp"];
    assert_eq!(jp_scale.scale_up.cpu_above, Some(0.75));
    assert_eq!(jp_scale.scale_up.rtt_ms_above, Some(250.0));
    assert_eq!(jp_scale.scale_down.cpu_below, Some(0.30));
    assert_eq!(jp_scale.scale_down.rtt_ms_below, None);
    assert_eq!(jp_scale.scale_down.for_, Duration::from_secs(300));
    assert_eq!(jp_scale.cooldown, Duration::from_secs(300));
    assert!(jp_scale.failover_capacity);
    assert_eq!(
        decl.autoscale["sg"].scale_down.for_,
        Duration::from_secs(600)
    );

    assert_eq!(decl.node_pools.keys().collect::<Vec<_>>(), ["jp", "sg"]);
    assert_eq!(decl.desired_nodes("jp"), 1);
    // us has no node pool file: its desired count falls back to min_nodes.
    assert_eq!(decl.desired_nodes("us"), 1);
}
