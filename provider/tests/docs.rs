//! Every attribute of every schema is described in the provider's docs, as
//! `` `name` `` at the start of a list item of the right page.

use terraform_provider_neutral::framework::Block;
use terraform_provider_neutral::{config, data, gtm, pool};

fn documented(page: &str, block: &Block, prefix: &str) -> Vec<String> {
    let mut missing = Vec::new();
    for attribute in &block.attributes {
        let item = format!("{prefix}- `{}` (", attribute.name);
        if !page.contains(&item) {
            missing.push(attribute.name.to_owned());
        }
    }
    for nested in &block.blocks {
        if !page.contains(&format!("- `{}` (", nested.name)) {
            missing.push(nested.name.to_owned());
        }
        missing.extend(documented(page, &nested.block, "  "));
    }
    missing
}

#[test]
fn every_attribute_is_described() {
    let pages = [
        (
            "docs/index.md",
            include_str!("../docs/index.md"),
            config::schema(),
        ),
        (
            "docs/resources/gtm_record.md",
            include_str!("../docs/resources/gtm_record.md"),
            gtm::schema(),
        ),
        (
            "docs/resources/node_pool.md",
            include_str!("../docs/resources/node_pool.md"),
            pool::schema(),
        ),
        (
            "docs/data-sources/region.md",
            include_str!("../docs/data-sources/region.md"),
            data::region_schema(),
        ),
        (
            "docs/data-sources/domain.md",
            include_str!("../docs/data-sources/domain.md"),
            data::domain_schema(),
        ),
    ];
    for (path, page, schema) in pages {
        let missing = documented(page, &schema, "");
        assert!(missing.is_empty(), "{path} does not describe {missing:?}");
    }
}
