//! How a command reports: the output format it was asked for and the
//! outcome `main` turns into an exit code. A leaf of the binary.

use clap::ValueEnum;

/// The output format of the reading commands.
#[derive(Copy, Clone, Debug, Default, PartialEq, Eq, ValueEnum)]
pub enum Format {
    #[default]
    Text,
    Json,
}

/// What a command asks `main` to exit with.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Outcome {
    Ok,
    Invalid,
}
