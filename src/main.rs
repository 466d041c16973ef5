//! callbackd: a telephony callback engine. This binary is the only part with I/O: it reads
//! the configuration, opens the store, serves the HTTP API and runs the lifecycle clock; the
//! rules live in the crates under `crates/`.

mod api;
mod calls;
mod chat;
mod cli;
mod config;
mod dialer;
mod dns;
mod hints;
mod http;
mod ivr;
mod limits;
mod listeners;
mod media;
mod metrics;
mod notifier;
mod queues;
mod records;
mod reload;
mod routing;
mod serve;
mod signalling;
mod systemd;
mod trace;

use std::io::IsTerminal;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(name = "callbackd", version, about = "Telephony callback engine")]
struct Args {
    /// The configuration file [default: ./callbackd.toml, else /etc/callbackd/callbackd.toml,
    /// whichever exists first, else the built-in default]. Relative paths in it are taken
    /// from its folder.
    #[arg(
        long,
        short,
        global = true,
        value_name = "FILE",
        env = "CALLBACKD_CONFIG"
    )]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run callbackd: the HTTP API and the callback lifecycle.
    Serve {
        /// Serve the API with no token at all: only on a loopback address, for trials.
        #[arg(long)]
        no_auth: bool,
    },
    /// Print the API token callbackd generated at first start (kept in the store).
    Token,
    /// Create or upgrade the store's schema, then exit.
    Migrate,
    /// Check the configuration.
    Config {
        #[command(subcommand)]
        command: ConfigCommand,
    },
    /// Work on callbacks directly in the store, for operators.
    Callbacks {
        #[command(subcommand)]
        command: cli::CallbacksCommand,
    },
    /// Read the call records in the store.
    Calls {
        #[command(subcommand)]
        command: calls::CallsCommand,
    },
    /// Check a dialplan, or try it without a phone.
    Dialplan {
        #[command(subcommand)]
        command: ivr::DialplanCommand,
    },
    /// Check the chat's bots.
    Chat {
        #[command(subcommand)]
        command: chat::ChatCommand,
    },
}

#[derive(Debug, Subcommand)]
enum ConfigCommand {
    /// Load and check the configuration, print a summary, and exit non-zero if it is wrong.
    Check,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let source = config::Source::choose(args.config);
    let config = match config::Config::load(&source, &std::env::vars().collect()) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("callbackd: bad configuration: {e}");
            return ExitCode::from(2);
        }
    };
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CALLBACKD_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info,sqlx=warn")),
        )
        .with_writer(std::io::stderr);
    match config.log.format {
        config::LogFormat::Text => logs.with_ansi(std::io::stderr().is_terminal()).init(),
        config::LogFormat::Json => logs.json().flatten_event(true).init(),
    }
    if matches!(args.command, Command::Serve { no_auth: true })
        && !config.api.listen.ip().is_loopback()
    {
        eprintln!(
            "callbackd: bad configuration: api.listen: {} is reachable from other machines; --no-auth is for loopback only",
            config.api.listen
        );
        return ExitCode::from(2);
    }
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .expect("the tokio runtime starts");
    let result = runtime.block_on(async {
        match args.command {
            Command::Serve { no_auth } => serve::run(config, &source, no_auth).await,
            Command::Token => serve::print_token(&config).await,
            Command::Migrate => {
                let store = store::Store::open(config.store.url.expose()).await?;
                println!("{} store is at the current schema", store.backend());
                store.close().await;
                Ok(())
            }
            Command::Config {
                command: ConfigCommand::Check,
            } => {
                println!(
                    "{source}: ok; API on {}, {} store, queues: {}",
                    config.api.listen,
                    config
                        .store
                        .url
                        .expose()
                        .split(':')
                        .next()
                        .unwrap_or_default(),
                    config.queues.keys().cloned().collect::<Vec<_>>().join(", ")
                );
                Ok(())
            }
            Command::Callbacks { command } => cli::run(config, command).await,
            Command::Calls { command } => calls::command(&config, command).await,
            Command::Dialplan { command } => ivr::command(config, command).await,
            Command::Chat { command } => chat::command(&config, command),
        }
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("callbackd: {e:#}");
            ExitCode::FAILURE
        }
    }
}
