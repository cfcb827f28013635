//! The command line: `keyward <noun> <verb>`. Parses, calls the core, renders.

mod audit;
mod backup;
mod bundle;
mod ceremony;
mod image;
mod key;
mod piv;
pub mod prompt;
mod token;

use clap::{Parser, Subcommand, ValueEnum};
use keyward::home::Home;
use keyward::{Error, Keyward};
use std::path::PathBuf;

#[derive(Clone, Copy, Debug, PartialEq, Eq, ValueEnum, Default)]
pub enum Format {
    #[default]
    Text,
    Json,
}

#[derive(Parser, Debug)]
#[command(
    name = "keyward",
    version,
    about = "A console for the people who hold signing keys: PKCS#11 HSMs, YubiKeys, the software keystore, an audit log",
    long_about = None,
    after_help = "Examples:\n  keyward token init --module /usr/lib/softhsm/libsofthsm2.so --label keyward --name hsm\n  keyward key generate release --token hsm\n  keyward key sign release --input file --output file.sig\n  keyward audit verify\n\nPINs come from a no-echo prompt, --pin-file FILE, or KEYWARD_PIN / KEYWARD_SO_PIN / KEYWARD_PASSPHRASE; never from argv.\nRun `keyward` with no arguments to open the console."
)]
pub struct Cli {
    /// Home directory (else KEYWARD_HOME, else the platform data directory).
    #[arg(long, global = true, value_name = "DIR")]
    pub home: Option<PathBuf>,
    /// Output format (also accepted after most subcommands).
    #[arg(long = "output", value_enum, value_name = "FORMAT")]
    pub output: Option<Format>,
    /// Shorthand for --output json.
    #[arg(long, global = true)]
    pub json: bool,
    /// Never prompt: fail with a clear error when a PIN or confirmation is needed.
    #[arg(long, global = true)]
    pub batch: bool,
    /// Read the user PIN (or keystore passphrase) from the first line of FILE.
    #[arg(long, global = true, value_name = "FILE")]
    pub pin_file: Option<PathBuf>,
    /// Read the SO PIN from the first line of FILE.
    #[arg(long, global = true, value_name = "FILE")]
    pub so_pin_file: Option<PathBuf>,
    /// Allow a PIN attempt when the token says it is the final try (a wrong PIN locks it).
    #[arg(long, global = true)]
    pub allow_final_pin_try: bool,
    /// Confirm destructive actions without asking (batch mode).
    #[arg(long, global = true)]
    pub yes: bool,
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// `--output text|json` accepted after a subcommand.
#[derive(clap::Args, Debug, Default)]
pub struct FormatArg {
    /// Output format.
    #[arg(long = "output", value_enum, value_name = "FORMAT")]
    pub output: Option<Format>,
}

#[derive(Subcommand, Debug)]
pub enum Command {
    /// Tokens: list, initialise.
    #[command(subcommand)]
    Token(token::TokenCmd),
    /// Keys and versions: generate, list, show, activate, public-key, sign.
    #[command(subcommand)]
    Key(key::KeyCmd),
    /// The audit log: show, verify, checkpoint, export.
    #[command(subcommand)]
    Audit(audit::AuditCmd),
    /// Encrypted backups (age; M-of-N custodian shares): create, inspect, verify, restore, drill.
    #[command(subcommand)]
    Backup(backup::BackupCmd),
    /// Container images: sign (cosign format), attach, verify, signatures.
    #[command(subcommand)]
    Image(image::ImageCmd),
    /// Public-key distribution bundles: export, verify, diff.
    #[command(subcommand)]
    Bundle(bundle::BundleCmd),
    /// Witnessed key ceremonies: list, show, run (resumable), verify a transcript.
    #[command(subcommand)]
    Ceremony(ceremony::CeremonyCmd),
}

pub struct Ctx {
    pub kw: Keyward,
    pub format: Format,
    pub prompter: prompt::CliPrompter,
    /// The home was named (--home or KEYWARD_HOME), not the platform default.
    pub home_given: bool,
}

impl Ctx {
    pub fn format(&self, local: &FormatArg) -> Format {
        local.output.unwrap_or(self.format)
    }
}

pub fn print_json<T: serde::Serialize>(value: &T) -> Result<(), Error> {
    let s = serde_json::to_string_pretty(value).map_err(|e| Error::Other(e.to_string()))?;
    println!("{s}");
    Ok(())
}

pub fn run(cli: Cli) -> Result<(), Error> {
    let home_given =
        cli.home.is_some() || std::env::var_os("KEYWARD_HOME").is_some_and(|v| !v.is_empty());
    let home = Home::resolve(cli.home.clone()).map_err(Error::Config)?;
    let format = if cli.json {
        Format::Json
    } else {
        cli.output.unwrap_or_default()
    };
    let prompter = prompt::CliPrompter {
        batch: cli.batch,
        pin_file: cli.pin_file.clone(),
        so_pin_file: cli.so_pin_file.clone(),
        allow_final_pin_try: cli.allow_final_pin_try,
        yes: cli.yes,
    };
    let Some(command) = cli.command else {
        // No subcommand: the interactive console.
        return keyward::tui::run(home);
    };
    let mut ctx = Ctx {
        kw: Keyward::open(home)?,
        format,
        prompter,
        home_given,
    };
    match command {
        Command::Token(c) => token::run(&mut ctx, c),
        Command::Key(c) => key::run(&mut ctx, c),
        Command::Audit(c) => audit::run(&mut ctx, c),
        Command::Backup(c) => backup::run(&mut ctx, c),
        Command::Image(c) => image::run(&mut ctx, c),
        Command::Bundle(c) => bundle::run(&mut ctx, c),
        Command::Ceremony(c) => ceremony::run(&mut ctx, c),
    }
}
