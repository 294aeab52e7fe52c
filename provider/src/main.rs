//! The plugin binary Terraform starts. Run by hand, it says what it is
//! instead of waiting for a handshake that never comes.

use std::process::ExitCode;
use std::sync::Arc;

use terraform_provider_neutral::PROVIDER_NAME;
use terraform_provider_neutral::plugin::{self, MAGIC_COOKIE_KEY, MAGIC_COOKIE_VALUE};
use terraform_provider_neutral::provider::NeutralProvider;

fn main() -> ExitCode {
    if std::env::args().nth(1).as_deref() == Some("--version") {
        println!("terraform-provider-neutral {}", env!("CARGO_PKG_VERSION"));
        return ExitCode::SUCCESS;
    }
    if std::env::var(MAGIC_COOKIE_KEY).ok().as_deref() != Some(MAGIC_COOKIE_VALUE) {
        eprintln!(
            "terraform-provider-neutral is a Terraform plugin: Terraform starts it.\n\
             Point Terraform at it with a dev_overrides block in a CLI config file \
             (TF_CLI_CONFIG_FILE), or install it into a plugin directory."
        );
        return ExitCode::from(1);
    }
    let _ = rustls::crypto::ring::default_provider().install_default();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("terraform-provider-neutral: cannot start the runtime: {err}");
            return ExitCode::from(1);
        }
    };
    match runtime.block_on(plugin::serve(
        PROVIDER_NAME,
        Arc::new(NeutralProvider::new()),
    )) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("terraform-provider-neutral: {err:#}");
            ExitCode::from(1)
        }
    }
}
