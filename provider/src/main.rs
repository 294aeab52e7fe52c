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
    exit_when_orphaned();
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

/// How often the provider checks that Terraform, which started it, is still
/// its parent.
const PARENT_CHECK: std::time::Duration = std::time::Duration::from_millis(250);

/// Exits the provider once Terraform is gone. A Terraform killed outright
/// (its daemon SIGKILLed, which takes Terraform along through the parent-
/// death signal `neutral serve` gives it) cannot stop its plugins; a
/// provider left behind would go on applying a plan nobody records, beside
/// the next run. When Terraform dies the kernel hands the provider to
/// another parent (init or a subreaper), so a changed parent id means it.
/// The agents the local launcher started are nodes of their own and stay.
fn exit_when_orphaned() {
    let parent = std::os::unix::process::parent_id();
    let watch = std::thread::Builder::new()
        .name("parent-watch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(PARENT_CHECK);
                if std::os::unix::process::parent_id() != parent {
                    // Not `eprintln!`: stderr was Terraform's pipe, and
                    // writing to it now fails (a panic there would end
                    // this thread, not the process).
                    use std::io::Write as _;
                    let _ = writeln!(
                        std::io::stderr(),
                        "terraform-provider-neutral: Terraform (pid {parent}) is gone; exiting"
                    );
                    std::process::exit(1);
                }
            }
        });
    if let Err(err) = watch {
        eprintln!("terraform-provider-neutral: cannot watch for Terraform's exit: {err}");
    }
}
