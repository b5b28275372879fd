//! `idempotency-coordinator serve` runs the service, `gateway` the HTTP
//! Idempotency-Key proxy in front of another service; the other subcommands
//! are a command-line client for trying every RPC from a shell.

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use idempotency_coordinator::cli::{self, ClientArgs, ClientCommand};
use idempotency_coordinator::gateway::config::GatewayArgs;
use idempotency_coordinator::shell::auth::tokens::{MIN_TOKEN_CHARS, hash_token as hash_token_digest};
use idempotency_coordinator::shell::config::ServeArgs;
use idempotency_coordinator::shell::{print_config, server, shutdown, telemetry};

#[derive(Parser)]
#[command(version, about = "An etcd-backed gRPC idempotency coordinator and its command-line client")]
struct Cli {
    /// Flags of the client subcommands (global, so they may follow the subcommand).
    #[command(flatten)]
    client: ClientArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
#[allow(clippy::large_enum_variant)] // parsed once per process; boxing buys nothing
enum Command {
    /// Run the coordinator.
    Serve(ServeArgs),
    /// Run the HTTP Idempotency-Key gateway in front of a service (--coordinator names the coordinator).
    Gateway(GatewayArgs),
    /// Print the SHA-256 digest of the bearer token read from stdin, for a --tokens-file line.
    HashToken,
    #[command(flatten)]
    Client(ClientCommand),
}

#[tokio::main]
async fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Serve(args) => serve(args).await,
        Command::Gateway(args) => gateway(args, cli.client).await,
        Command::HashToken => hash_token(),
        Command::Client(command) => match cli::run(cli.client, command).await {
            Ok(exit) => return ExitCode::from(exit.code()),
            Err(error) => Err(anyhow::Error::msg(error)),
        },
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

async fn serve(args: ServeArgs) -> anyhow::Result<()> {
    if args.print_config {
        cli::print_line(format_args!("{}", serde_json::to_string_pretty(&print_config::effective(&args))?));
        return Ok(());
    }
    let telemetry =
        telemetry::init(args.log_format, &args.log, args.otlp_endpoint.as_deref()).map_err(anyhow::Error::msg)?;
    let config = args.validate().map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let shutdown = async {
        match shutdown::signal_received().await {
            Ok(signal) => tracing::info!(signal, "shutdown requested"),
            Err(error) => tracing::error!(%error, "cannot watch for signals; stopping"),
        }
    };
    let served = server::run(config, listener, shutdown).await;
    telemetry.shutdown().await;
    Ok(served?)
}

async fn gateway(args: GatewayArgs, coordinator: ClientArgs) -> anyhow::Result<()> {
    let config = args.validate().map_err(anyhow::Error::msg)?;
    if args.check {
        coordinator.endpoint().map_err(anyhow::Error::msg)?;
        cli::print_line(format_args!("{}", serde_json::to_string_pretty(&config.summary())?));
        return Ok(());
    }
    let telemetry = telemetry::init(args.log_format, &args.log, None).map_err(anyhow::Error::msg)?;
    let listener = tokio::net::TcpListener::bind(config.listen)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {}: {e}", config.listen))?;
    let served = idempotency_coordinator::gateway::server::run(config, &coordinator, listener, async {
        match shutdown::signal_received().await {
            Ok(signal) => tracing::info!(signal, "shutdown requested"),
            Err(error) => tracing::error!(%error, "cannot watch for signals; stopping"),
        }
    })
    .await;
    telemetry.shutdown().await;
    Ok(served?)
}

fn hash_token() -> anyhow::Result<()> {
    let mut token = String::new();
    std::io::stdin().read_line(&mut token)?;
    let token = token.trim_end_matches(['\n', '\r']);
    if token.chars().count() < MIN_TOKEN_CHARS || !token.chars().all(|c| c.is_ascii_graphic()) {
        anyhow::bail!(
            "a bearer token must be at least {MIN_TOKEN_CHARS} printable ASCII characters without spaces \
             (e.g. `openssl rand -hex 32`)"
        );
    }
    cli::print_line(format_args!("{}", hash_token_digest(token)));
    Ok(())
}
