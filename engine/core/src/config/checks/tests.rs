use super::*;
use crate::config::{FileContent, RepoFile, load};

fn files(entries: &[(&str, &str)]) -> Vec<RepoFile> {
    entries
        .iter()
        .map(|(path, text)| RepoFile {
            path: (*path).to_owned(),
            content: FileContent::Bytes(text.as_bytes().to_vec()),
        })
        .collect()
}

#[test]
fn mutual_failover_is_valid() {
    let loaded = load(&files(&[
        (
            "platform-config/regions/jp.yaml",
            "name: jp\nprovider: edge\nmax_nodes: 5\nfailover: [sg]\n",
        ),
        (
            "platform-config/regions/sg.yaml",
            "name: sg\nprovider: edge\nmax_nodes: 5\nfailover: [jp]\n",
        ),
    ]));
    let rendered: Vec<String> = loaded
        .diagnostics
        .iter()
        .map(Diagnostic::to_string)
        .collect();
    assert_eq!(rendered, Vec::<String>::new());
    assert_eq!(loaded.declarations.regions["sg"].failover, ["jp"]);
}
