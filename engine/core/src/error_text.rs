//! An error's text with the causes behind it, for messages a person reads:
//! "error sending request" alone does not say that the certificate was
//! refused or the connection reset. Pure: it only formats.

use std::error::Error;

/// `error`'s text followed by each cause not already in it, `: `-separated.
pub fn with_causes(error: &dyn Error) -> String {
    let mut text = error.to_string();
    push_causes(&mut text, error.source());
    text
}

/// Appends `source` and the causes behind it to `text`, each unless its
/// text is already there.
pub fn push_causes(text: &mut String, mut source: Option<&dyn Error>) {
    while let Some(cause) = source {
        let cause_text = cause.to_string();
        if !text.contains(&cause_text) {
            text.push_str(": ");
            text.push_str(&cause_text);
        }
        source = cause.source();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[derive(Debug)]
    struct Layer(&'static str, Option<Box<Layer>>);

    impl std::fmt::Display for Layer {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str(self.0)
        }
    }

    impl Error for Layer {
        fn source(&self) -> Option<&(dyn Error + 'static)> {
            self.1.as_deref().map(|l| l as &(dyn Error + 'static))
        }
    }

    #[test]
    fn causes_follow_the_text_once_each() {
        let chain = Layer(
            "error performing TLS handshake",
            Some(Box::new(Layer(
                "invalid peer certificate: UnknownIssuer",
                Some(Box::new(Layer("UnknownIssuer", None))),
            ))),
        );
        assert_eq!(
            with_causes(&chain),
            "error performing TLS handshake: invalid peer certificate: UnknownIssuer"
        );
        assert_eq!(with_causes(&Layer("alone", None)), "alone");
    }
}
