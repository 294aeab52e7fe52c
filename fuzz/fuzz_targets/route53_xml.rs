//! The XML reader of the Route53 backend (`backend::xml::parse`), which
//! reads every Route53 answer. Must never panic; a tree it read writes back
//! (`to_xml`) as XML it reads again to the same tree.
#![no_main]

use libfuzzer_sys::fuzz_target;
use terraform_provider_neutral::backend::xml;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if let Ok(tree) = xml::parse(text) {
        let again = xml::parse(&tree.to_xml()).expect("our own XML reads back");
        assert_eq!(again, tree);
    }
});
