//! A command-line client, so a person can try every RPC from a shell and read
//! the answer. Output is one line naming the outcome, then indented fields.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use tonic::metadata::{Ascii, MetadataValue};
use tonic::service::Interceptor;
use tonic::service::interceptor::InterceptedService;
use tonic::transport::{Certificate, Channel, ClientTlsConfig, Endpoint, Identity};
use tonic_health::pb::{HealthCheckRequest, health_client::HealthClient};
use tonic_types::StatusExt;

use crate::proto::convert;
use crate::proto::v1::{
    self, admin_service_client::AdminServiceClient, begin_response::Outcome,
    coordinator_service_client::CoordinatorServiceClient,
};

/// `println!` that never panics: see [`print_line`].
macro_rules! say {
    ($($arg:tt)*) => { $crate::cli::print_line(format_args!($($arg)*)) };
}

/// Prints one line to stdout. A reader that has gone away
/// (`records list --all | head -1`) ends the process quietly with success, as
/// Unix tools do, where `println!` would panic: the call it reports on has
/// already been made.
pub fn print_line(line: std::fmt::Arguments<'_>) {
    use std::io::Write;
    match writeln!(std::io::stdout().lock(), "{line}") {
        Ok(()) => {}
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(error) => {
            eprintln!("error: cannot write to stdout: {error}");
            std::process::exit(1);
        }
    }
}

#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The coordinator's address (`--coordinator` is the same flag, as the gateway names it).
    #[arg(
        long,
        visible_alias = "coordinator",
        global = true,
        env = "IDEMPOTENCY_ADDR",
        default_value = "http://127.0.0.1:50051"
    )]
    pub addr: String,

    /// Deadline of the call.
    #[arg(long, global = true, value_parser = humantime::parse_duration, default_value = "10s")]
    pub timeout: Duration,

    /// PEM CA certificate that signs the coordinator's certificate (use an https:// --addr).
    #[arg(long, global = true, env = "IDEMPOTENCY_CA_CERT")]
    pub ca_cert: Option<PathBuf>,

    /// PEM client certificate, for a coordinator with mutual TLS.
    #[arg(long, global = true, env = "IDEMPOTENCY_CLIENT_CERT", requires = "client_key")]
    pub client_cert: Option<PathBuf>,

    /// PEM private key of --client-cert.
    #[arg(long, global = true, env = "IDEMPOTENCY_CLIENT_KEY", requires = "client_cert")]
    pub client_key: Option<PathBuf>,

    /// Bearer token, sent as `authorization: Bearer <token>`; prefer the environment variable.
    #[arg(long, global = true, env = "IDEMPOTENCY_BEARER_TOKEN", hide_env_values = true)]
    pub bearer_token: Option<String>,
}

impl ClientArgs {
    async fn connect(&self) -> Result<Channel, String> {
        let endpoint = self.endpoint()?.timeout(self.timeout);
        endpoint.connect().await.map_err(|e| format!("cannot connect to {}: {e}", self.addr))
    }

    /// The coordinator's endpoint with TLS as configured and `--timeout` to
    /// connect; each call sets its own deadline.
    pub fn endpoint(&self) -> Result<Endpoint, String> {
        let read = |flag: &str, path: &PathBuf| {
            std::fs::read(path).map_err(|e| format!("--{flag}: cannot read {}: {e}", path.display()))
        };
        let mut endpoint = Channel::from_shared(self.addr.clone())
            .map_err(|e| format!("--addr {:?} is not a URI: {e}", self.addr))?
            .connect_timeout(self.timeout);
        if self.addr.starts_with("https://") {
            let mut tls = ClientTlsConfig::new();
            if let Some(ca) = &self.ca_cert {
                tls = tls.ca_certificate(Certificate::from_pem(read("ca-cert", ca)?));
            }
            if let (Some(cert), Some(key)) = (&self.client_cert, &self.client_key) {
                tls = tls.identity(Identity::from_pem(read("client-cert", cert)?, read("client-key", key)?));
            }
            endpoint = endpoint.tls_config(tls).map_err(|e| format!("cannot set up TLS: {e}"))?;
        } else if self.ca_cert.is_some() || self.client_cert.is_some() || self.bearer_token.is_some() {
            // Never send a token where anyone on the path can read it.
            return Err("--ca-cert, --client-cert and --bearer-token need an https:// --addr".into());
        }
        Ok(endpoint)
    }

    /// Adds the bearer token, if any, to every call.
    pub fn authorization(&self) -> Result<Authorization, String> {
        match &self.bearer_token {
            Some(token) => Ok(Authorization(Some(
                format!("Bearer {token}").parse().map_err(|_| "--bearer-token must be printable ASCII".to_owned())?,
            ))),
            None => Ok(Authorization(None)),
        }
    }
}

/// The `authorization` header every call carries, when a token is configured.
#[derive(Debug, Clone)]
pub struct Authorization(Option<MetadataValue<Ascii>>);

impl Interceptor for Authorization {
    fn call(&mut self, mut request: tonic::Request<()>) -> Result<tonic::Request<()>, tonic::Status> {
        if let Some(header) = &self.0 {
            request.metadata_mut().insert("authorization", header.clone());
        }
        Ok(request)
    }
}

#[derive(Debug, Args)]
pub struct RecordArgs {
    /// Tenant (ignored by a server with authentication on).
    #[arg(long, default_value = "")]
    pub tenant: String,
    /// The operation, e.g. payments.create.
    #[arg(long, short)]
    pub namespace: String,
    /// The idempotency key.
    #[arg(long, short)]
    pub key: String,
}

#[derive(Debug, Subcommand)]
pub enum ClientCommand {
    /// Claim a key before performing a side effect.
    Begin {
        #[command(flatten)]
        record: RecordArgs,
        /// The request to fingerprint (the coordinator hashes it).
        #[arg(long, conflicts_with = "fingerprint")]
        payload: Option<String>,
        /// Fingerprint the payload as canonical JSON (RFC 8785) instead of raw bytes.
        #[arg(long, requires = "payload")]
        json: bool,
        /// JSON Pointer of a volatile field to leave out of the fingerprint (repeatable).
        #[arg(long = "ignore-field", requires = "json")]
        ignore_fields: Vec<String>,
        /// A SHA-256 fingerprint you computed, as 64 hex digits.
        #[arg(long, required_unless_present = "payload")]
        fingerprint: Option<String>,
        /// Lease of the attempt, e.g. 30s.
        #[arg(long, value_parser = humantime::parse_duration)]
        lease_ttl: Option<Duration>,
        /// Wait this long for another owner to finish, e.g. 5s.
        #[arg(long, value_parser = humantime::parse_duration)]
        wait: Option<Duration>,
        /// Your label (host, pod).
        #[arg(long, default_value = "")]
        owner: String,
        /// Reuse on retries of the same logical call.
        #[arg(long, default_value = "")]
        request_id: String,
    },
    /// Store the outcome of your attempt.
    Complete {
        #[command(flatten)]
        record: RecordArgs,
        /// The fencing token Begin returned.
        #[arg(long)]
        token: u64,
        /// Response body to replay.
        #[arg(long, required_unless_present = "resource_ref", conflicts_with = "resource_ref")]
        response: Option<String>,
        /// Where the outcome lives (URI or id), instead of a body.
        #[arg(long)]
        resource_ref: Option<String>,
        #[arg(long, default_value = "")]
        content_type: String,
        #[arg(long, default_value_t = 0)]
        status_code: u32,
        /// How long to keep the record, e.g. 24h.
        #[arg(long, value_parser = humantime::parse_duration)]
        retention: Option<Duration>,
    },
    /// End your attempt with an error.
    Fail {
        #[command(flatten)]
        record: RecordArgs,
        /// The fencing token Begin returned.
        #[arg(long)]
        token: u64,
        /// Machine-readable error code.
        #[arg(long)]
        code: String,
        #[arg(long, default_value = "")]
        message: String,
        /// Release the key for another attempt instead of storing the failure.
        #[arg(long)]
        retryable: bool,
        #[arg(long, value_parser = humantime::parse_duration)]
        retention: Option<Duration>,
    },
    /// Push your attempt's lease out.
    Extend {
        #[command(flatten)]
        record: RecordArgs,
        /// The fencing token Begin returned.
        #[arg(long)]
        token: u64,
        #[arg(long, value_parser = humantime::parse_duration)]
        lease_ttl: Option<Duration>,
    },
    /// Read a record.
    Lookup {
        #[command(flatten)]
        record: RecordArgs,
    },
    /// Show the fingerprint Begin would compute for a payload (changes nothing).
    Fingerprint {
        /// The request to fingerprint.
        #[arg(long)]
        payload: String,
        /// Fingerprint the payload as canonical JSON (RFC 8785) instead of raw bytes.
        #[arg(long)]
        json: bool,
        /// JSON Pointer of a volatile field to leave out of the fingerprint (repeatable).
        #[arg(long = "ignore-field", requires = "json")]
        ignore_fields: Vec<String>,
    },
    /// Operators: list a namespace's records, or forget a finished one (an admin tenant's credentials).
    #[command(subcommand)]
    Records(RecordsCommand),
    /// Operators: where a shard map change stands, and whether the map may settle (an admin tenant's credentials).
    #[command(subcommand)]
    Shards(ShardsCommand),
    /// Ask the gRPC health service ("", liveness, readiness, idempotency.v1.CoordinatorService).
    Health {
        #[arg(long, default_value = "")]
        service: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum RecordsCommand {
    /// List a namespace's records, a page at a time.
    List {
        /// The records' tenant (empty: "default").
        #[arg(long, default_value = "")]
        tenant: String,
        #[arg(long, short)]
        namespace: String,
        /// Records per page (1..1000).
        #[arg(long, default_value_t = 100)]
        page_size: u32,
        /// Where to start: a previous page's next page token.
        #[arg(long, default_value = "")]
        page_token: String,
        /// Follow the pages to the end.
        #[arg(long)]
        all: bool,
    },
    /// Forget a finished record, so that its key is new again.
    Forget {
        #[command(flatten)]
        record: RecordArgs,
        /// Why, for the server's log.
        #[arg(long)]
        reason: String,
    },
}

#[derive(Debug, Subcommand)]
pub enum ShardsCommand {
    /// Each shard's step, token generation and settle check, the records left where the new map
    /// won't look, and whether the map may settle now. Asked of a replica of the switch step, it
    /// scans every shard, and marks the shards ready to settle once nothing is left there.
    /// Exits 0 when settle is safe, 3 when not yet, 1 on errors and for a server that is not
    /// sharded.
    Status {
        /// Print the answer as one JSON object, its fields named as in admin.proto.
        #[arg(long)]
        json: bool,
        /// First move each record no attempt holds (finished, released, or with its lease lapsed)
        /// from a previous home to its new home (behind a forwarding record), so that the map can
        /// settle before those records expire.
        #[arg(long)]
        migrate: bool,
    },
}

/// How a client command that got its answer ends.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    Success,
    /// `shards status`: the map may not settle yet.
    SettleNotSafe,
}

impl Exit {
    /// The process exit code: 0, or 3 (1 is left for errors).
    pub fn code(self) -> u8 {
        match self {
            Exit::Success => 0,
            Exit::SettleNotSafe => 3,
        }
    }
}

/// Runs one client command and prints its answer; Err carries the text to
/// print for a failed call.
pub async fn run(args: ClientArgs, command: ClientCommand) -> Result<Exit, String> {
    let channel = args.connect().await?;
    let mut client = CoordinatorServiceClient::with_interceptor(channel.clone(), args.authorization()?);
    match command {
        ClientCommand::Begin {
            record,
            payload,
            json,
            ignore_fields,
            fingerprint,
            lease_ttl,
            wait,
            owner,
            request_id,
        } => {
            let request = match (payload, fingerprint) {
                (Some(data), _) => v1::begin_request::Request::Payload(v1::Payload {
                    data: data.into_bytes(),
                    canonicalization: if json { v1::Canonicalization::Json } else { v1::Canonicalization::Raw } as i32,
                    ignore_fields,
                }),
                (None, Some(hex_digest)) => v1::begin_request::Request::Fingerprint(
                    hex::decode(&hex_digest).map_err(|e| format!("--fingerprint is not hex: {e}"))?,
                ),
                (None, None) => return Err("give --payload or --fingerprint".into()),
            };
            let response = client
                .begin(v1::BeginRequest {
                    tenant: record.tenant,
                    namespace: record.namespace,
                    key: record.key,
                    request: Some(request),
                    lease_ttl: lease_ttl.map(convert::duration),
                    wait: wait.map(convert::duration),
                    owner,
                    request_id,
                })
                .await
                .map_err(describe_status)?;
            print_outcome(response.into_inner().outcome);
        }
        ClientCommand::Complete { record, token, response, resource_ref, content_type, status_code, retention } => {
            let body = match (response, resource_ref) {
                (Some(r), _) => v1::result::Body::Response(r.into_bytes()),
                (None, Some(r)) => v1::result::Body::ResourceRef(r),
                (None, None) => return Err("give --response or --resource-ref".into()),
            };
            let reply = client
                .complete(v1::CompleteRequest {
                    tenant: record.tenant,
                    namespace: record.namespace,
                    key: record.key,
                    fencing_token: token,
                    result: Some(v1::Result { body: Some(body), content_type, status_code }),
                    retention: retention.map(convert::duration),
                })
                .await
                .map_err(describe_status)?;
            print_record("completed", reply.into_inner().record.as_ref());
        }
        ClientCommand::Fail { record, token, code, message, retryable, retention } => {
            let reply = client
                .fail(v1::FailRequest {
                    tenant: record.tenant,
                    namespace: record.namespace,
                    key: record.key,
                    fencing_token: token,
                    error: Some(v1::Error { code, message, details: vec![] }),
                    retryable,
                    retention: retention.map(convert::duration),
                })
                .await
                .map_err(describe_status)?;
            print_record(if retryable { "released" } else { "failed" }, reply.into_inner().record.as_ref());
        }
        ClientCommand::Extend { record, token, lease_ttl } => {
            let reply = client
                .extend(v1::ExtendRequest {
                    tenant: record.tenant,
                    namespace: record.namespace,
                    key: record.key,
                    fencing_token: token,
                    lease_ttl: lease_ttl.map(convert::duration),
                })
                .await
                .map_err(describe_status)?;
            say!("extended");
            print_field("lease_expires_at", time(reply.into_inner().lease_expires_at.as_ref()));
        }
        ClientCommand::Lookup { record } => {
            let reply = client
                .lookup(v1::LookupRequest { tenant: record.tenant, namespace: record.namespace, key: record.key })
                .await
                .map_err(describe_status)?;
            print_record("record", reply.into_inner().record.as_ref());
        }
        ClientCommand::Records(command) => {
            let mut admin = AdminServiceClient::with_interceptor(channel.clone(), args.authorization()?);
            records(&mut admin, command).await?;
        }
        ClientCommand::Shards(ShardsCommand::Status { json, migrate }) => {
            let mut admin = AdminServiceClient::with_interceptor(channel.clone(), args.authorization()?);
            let status = admin
                .get_shard_map_status(v1::GetShardMapStatusRequest { migrate })
                .await
                .map_err(describe_status)?
                .into_inner();
            return shards_status(&status, json);
        }
        ClientCommand::Fingerprint { payload, json, ignore_fields } => {
            let reply = client
                .fingerprint(v1::FingerprintRequest {
                    payload: Some(v1::Payload {
                        data: payload.into_bytes(),
                        canonicalization: if json { v1::Canonicalization::Json } else { v1::Canonicalization::Raw }
                            as i32,
                        ignore_fields,
                    }),
                    include_canonical: true,
                })
                .await
                .map_err(describe_status)?
                .into_inner();
            say!("fingerprint");
            print_field("fingerprint", hex::encode(&reply.fingerprint));
            match std::str::from_utf8(&reply.canonical) {
                Ok(text) => print_field("hashed", text),
                Err(_) => print_field("hashed (hex)", hex::encode(&reply.canonical)),
            }
            for member in reply.members {
                print_field(&format!("member {:?}", member.name), hex::encode(&member.digest));
            }
        }
        ClientCommand::Health { service } => {
            let reply = HealthClient::new(channel)
                .check(HealthCheckRequest { service: service.clone() })
                .await
                .map_err(describe_status)?;
            let status = tonic_health::pb::health_check_response::ServingStatus::try_from(reply.into_inner().status)
                .map(|s| s.as_str_name().to_owned())
                .unwrap_or_else(|_| "UNKNOWN".into());
            say!("{status}");
            if status != "SERVING" {
                return Err(format!("service {service:?} is {status}"));
            }
        }
    }
    Ok(Exit::Success)
}

async fn records(
    admin: &mut AdminServiceClient<InterceptedService<Channel, Authorization>>,
    command: RecordsCommand,
) -> Result<(), String> {
    match command {
        RecordsCommand::List { tenant, namespace, page_size, mut page_token, all } => loop {
            let page = admin
                .list_records(v1::ListRecordsRequest {
                    tenant: tenant.clone(),
                    namespace: namespace.clone(),
                    page_size,
                    page_token: page_token.clone(),
                })
                .await
                .map_err(describe_status)?
                .into_inner();
            for listed in page.records {
                let Some(r) = listed.record else { continue };
                say!(
                    "{}\t{}\tattempt {}\towner {:?}\tupdated {}\texpires {}",
                    listed.key,
                    r.state().as_str_name(),
                    r.attempt,
                    r.owner,
                    time(r.updated_at.as_ref()),
                    time(r.expires_at.as_ref())
                );
            }
            page_token = page.next_page_token;
            if page_token.is_empty() {
                return Ok(());
            }
            if !all {
                say!("next page: --page-token {page_token}");
                return Ok(());
            }
        },
        RecordsCommand::Forget { record, reason } => {
            let reply = admin
                .forget_record(v1::ForgetRecordRequest {
                    tenant: record.tenant,
                    namespace: record.namespace,
                    key: record.key,
                    reason,
                })
                .await
                .map_err(describe_status)?;
            print_record("forgotten: the key is new again", reply.into_inner().forgotten.as_ref());
            Ok(())
        }
    }
}

/// Prints a shard map status, as text or JSON; settle safe or not is the
/// exit code, so that a script can wait for it.
fn shards_status(status: &v1::GetShardMapStatusResponse, json: bool) -> Result<Exit, String> {
    if json {
        let shards: Vec<_> = status
            .shards
            .iter()
            .map(|shard| {
                serde_json::json!({
                    "name": shard.name,
                    "step": shard.step,
                    "token_generation": shard.token_generation,
                    "settle_checked": shard.settle_checked,
                })
            })
            .collect();
        let answer = serde_json::json!({
            "sharded": status.sharded,
            "replica_step": status.replica_step,
            "shards": shards,
            "left_behind": status.left_behind,
            "migrated": status.migrated,
            "last_expires_at": status.last_expires_at.as_ref().map(|t| t.to_string()),
            "settle_safe": status.settle_safe,
        });
        say!("{answer:#}");
    }
    if !status.sharded {
        return Err(
            "not sharded: this server keeps its records in one store, so there is no shard map to settle".into()
        );
    }
    if !json {
        say!("replica at {}", status.replica_step);
        for shard in &status.shards {
            let checked = if shard.settle_checked { "settle checked" } else { "settle not checked" };
            say!("{}\t{}\tgeneration {}\t{checked}", shard.name, shard.step, shard.token_generation);
        }
        let last = match (status.left_behind, &status.last_expires_at) {
            (0, _) => String::new(),
            (_, Some(at)) => format!(" (last expires at {at})"),
            (_, None) => " (last expiry unknown)".into(),
        };
        if status.migrated > 0 {
            say!("migrated: {}", status.migrated);
        }
        say!("left behind: {}{last}", status.left_behind);
        if status.settle_safe {
            say!("settle: safe");
        } else if status.left_behind > 0 {
            say!(
                "settle: not yet — {} record(s) still at a previous home; ask again with --migrate (every one \
                 no attempt holds moves; attempts with a live lease move once they finish or it lapses)",
                status.left_behind
            );
        } else {
            say!(
                "settle: not yet — this replica is at {}, not at a switch step; ask a replica of the switch step \
                 (README, \"Resharding\")",
                status.replica_step
            );
        }
    }
    Ok(if status.settle_safe { Exit::Success } else { Exit::SettleNotSafe })
}

/// The status code, ErrorInfo reason, message, field violations and retry
/// delay of a failed call.
fn describe_status(status: tonic::Status) -> String {
    let details = status.get_error_details();
    let mut text = format!("{:?}", status.code());
    if let Some(info) = details.error_info() {
        text.push_str(&format!(" {}", info.reason));
    }
    let message = match status.message() {
        // tonic says nothing more; the usual cause is the admin service being off.
        "" if status.code() == tonic::Code::Unimplemented => {
            "the server does not offer this call (the records and shards commands need a server run with \
             --admin-tenants)"
        }
        message => message,
    };
    text.push_str(&format!(": {message}"));
    if let Some(members) = details.error_info().and_then(|info| info.metadata.get("differing_members")) {
        text.push_str(&format!("\n  differing members: {members}"));
    }
    if let Some(bad_request) = details.bad_request() {
        for violation in &bad_request.field_violations {
            text.push_str(&format!("\n  {}: {}", violation.field, violation.description));
        }
    }
    if let Some(delay) = details.retry_info().and_then(|r| r.retry_delay) {
        text.push_str(&format!("\n  retry after {delay:?}"));
    }
    text
}

fn print_field(name: &str, value: impl std::fmt::Display) {
    say!("  {name:<17} {value}");
}

fn time(t: Option<&prost_types::Timestamp>) -> String {
    t.map(|t| t.to_string()).unwrap_or_else(|| "-".into())
}

fn print_outcome(outcome: Option<Outcome>) {
    match outcome {
        Some(Outcome::Acquired(a)) => {
            say!("acquired: perform the side effect, then complete or fail with the token");
            print_field("fencing_token", a.fencing_token);
            print_field("attempt", a.attempt);
            print_field("lease_expires_at", time(a.lease_expires_at.as_ref()));
            if let Some(r) = a.recovered {
                print_field(
                    "recovered",
                    format!("{:?} attempt {} by {:?}", r.reason(), r.previous_attempt, r.previous_owner),
                );
                if let Some(e) = r.last_error {
                    print_field("last_error", format!("{}: {}", e.code, e.message));
                }
            }
        }
        Some(Outcome::Completed(c)) => {
            say!("completed: replay this result, perform nothing");
            print_field("attempt", c.attempt);
            print_field("completed_at", time(c.completed_at.as_ref()));
            print_result(c.result.as_ref());
        }
        Some(Outcome::Failed(f)) => {
            say!("failed: replay this error, perform nothing");
            print_field("attempt", f.attempt);
            print_field("failed_at", time(f.failed_at.as_ref()));
            print_error(f.error.as_ref());
        }
        Some(Outcome::InProgress(p)) => {
            say!("in_progress: another owner is working on it");
            print_field("owner", &p.owner);
            print_field("attempt", p.attempt);
            print_field("lease_expires_at", time(p.lease_expires_at.as_ref()));
            print_field("retry_after", p.retry_after.map(|d| d.to_string()).unwrap_or_default());
        }
        None => say!("(no outcome: the server sent an empty response)"),
    }
}

fn print_record(title: &str, record: Option<&v1::Record>) {
    say!("{title}");
    let Some(r) = record else { return };
    print_field("state", r.state().as_str_name());
    print_field("attempt", r.attempt);
    print_field("owner", &r.owner);
    print_field("fencing_token", r.fencing_token);
    print_field("lease_expires_at", time(r.lease_expires_at.as_ref()));
    print_field("fingerprint", hex::encode(&r.fingerprint));
    print_field("created_at", time(r.created_at.as_ref()));
    print_field("updated_at", time(r.updated_at.as_ref()));
    print_field("expires_at", time(r.expires_at.as_ref()));
    print_result(r.result.as_ref());
    print_error(r.error.as_ref());
}

fn print_result(result: Option<&v1::Result>) {
    let Some(result) = result else { return };
    match &result.body {
        Some(v1::result::Body::Response(bytes)) => match std::str::from_utf8(bytes) {
            Ok(text) => print_field("response", text),
            Err(_) => print_field("response (hex)", hex::encode(bytes)),
        },
        Some(v1::result::Body::ResourceRef(r)) => print_field("resource_ref", r),
        None => {}
    }
    if !result.content_type.is_empty() {
        print_field("content_type", &result.content_type);
    }
    if result.status_code != 0 {
        print_field("status_code", result.status_code);
    }
}

fn print_error(error: Option<&v1::Error>) {
    if let Some(e) = error {
        print_field("error", format!("{}: {}", e.code, e.message));
    }
}
