//! The fenced ledger: the resource the workers' side effects write to. Like a
//! database row guarded by a version, it accepts a write for a key only with a
//! fencing token at least as high as any it has seen for that key; it knows
//! nothing else about idempotency, so a second accepted effect for a key is a
//! double charge. It runs in the test process and speaks one line per request
//! over loopback TCP:
//!   `CLAIM key token`        -> `OK <effect>` | `OK -` | `STALE`   (a fenced read)
//!   `WRITE key token effect` -> `OK` | `STALE`

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};

#[derive(Default, Debug)]
pub struct KeyEntry {
    pub highest_token: u64,
    /// Every accepted effect, with the token that wrote it.
    pub effects: Vec<(u64, String)>,
}

#[derive(Default, Debug)]
pub struct LedgerState {
    pub keys: HashMap<String, KeyEntry>,
    pub stale_writes_rejected: u64,
    pub stale_claims_rejected: u64,
}

#[derive(Clone)]
pub struct Ledger {
    pub addr: SocketAddr,
    pub state: Arc<Mutex<LedgerState>>,
}

impl Ledger {
    pub async fn start() -> Ledger {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind the ledger");
        let ledger = Ledger { addr: listener.local_addr().unwrap(), state: Default::default() };
        let state = ledger.state.clone();
        tokio::spawn(async move {
            while let Ok((stream, _)) = listener.accept().await {
                tokio::spawn(serve(stream, state.clone()));
            }
        });
        ledger
    }
}

async fn serve(stream: TcpStream, state: Arc<Mutex<LedgerState>>) {
    let (read, mut write) = stream.into_split();
    let mut lines = BufReader::new(read).lines();
    while let Ok(Some(line)) = lines.next_line().await {
        let answer = apply(&line, &state);
        if write.write_all(format!("{answer}\n").as_bytes()).await.is_err() {
            return;
        }
    }
}

fn apply(line: &str, state: &Mutex<LedgerState>) -> String {
    let parts: Vec<&str> = line.split(' ').collect();
    let mut state = state.lock().unwrap();
    match parts.as_slice() {
        ["CLAIM", key, token] => {
            let token: u64 = token.parse().unwrap();
            let entry = state.keys.entry(key.to_string()).or_default();
            if token < entry.highest_token {
                state.stale_claims_rejected += 1;
                return "STALE".into();
            }
            entry.highest_token = token;
            match entry.effects.first() {
                Some((_, effect)) => format!("OK {effect}"),
                None => "OK -".into(),
            }
        }
        ["WRITE", key, token, effect] => {
            let token: u64 = token.parse().unwrap();
            let entry = state.keys.entry(key.to_string()).or_default();
            if token < entry.highest_token {
                state.stale_writes_rejected += 1;
                return "STALE".into();
            }
            entry.highest_token = token;
            entry.effects.push((token, effect.to_string()));
            "OK".into()
        }
        _ => format!("ERROR unknown request {line:?}"),
    }
}

/// A worker's connection to the ledger.
pub struct LedgerClient {
    lines: tokio::io::Lines<BufReader<tokio::net::tcp::OwnedReadHalf>>,
    write: tokio::net::tcp::OwnedWriteHalf,
}

impl LedgerClient {
    pub async fn connect(addr: &str) -> LedgerClient {
        let stream = TcpStream::connect(addr).await.expect("the ledger is up for the whole run");
        let (read, write) = stream.into_split();
        LedgerClient { lines: BufReader::new(read).lines(), write }
    }

    async fn ask(&mut self, request: String) -> String {
        self.write.write_all(format!("{request}\n").as_bytes()).await.expect("ledger write");
        self.lines.next_line().await.expect("ledger read").expect("ledger answers")
    }

    /// The effect already recorded for `key`, as seen with `token`; Err if
    /// the token is stale.
    pub async fn claim(&mut self, key: &str, token: u64) -> Result<Option<String>, ()> {
        let answer = self.ask(format!("CLAIM {key} {token}")).await;
        match answer.strip_prefix("OK ") {
            Some("-") => Ok(None),
            Some(effect) => Ok(Some(effect.to_owned())),
            None => Err(()),
        }
    }

    /// Performs the side effect; Err if the token is stale.
    pub async fn write(&mut self, key: &str, token: u64, effect: &str) -> Result<(), ()> {
        if self.ask(format!("WRITE {key} {token} {effect}")).await == "OK" { Ok(()) } else { Err(()) }
    }
}
