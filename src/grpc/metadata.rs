//! What a call's metadata says: when the caller gives up (`grpc-timeout`)
//! and which trace it belongs to (`traceparent`).

use std::time::Duration;

use tokio::time::Instant;
use tonic::Request;

/// Time kept back from the caller's deadline so that our answer (say, the
/// in-progress state at the end of a wait) arrives before the caller gives up.
const DEADLINE_MARGIN: Duration = Duration::from_millis(50);

/// Deadline of a call without `grpc-timeout`: waits are still bounded by
/// `--max-wait`, and each etcd request by `--etcd-request-timeout`.
const NO_DEADLINE: Duration = Duration::from_secs(3600);

/// When this call must have answered, from its `grpc-timeout` header.
pub fn deadline<T>(request: &Request<T>) -> Instant {
    let timeout = request
        .metadata()
        .get("grpc-timeout")
        .and_then(|v| v.to_str().ok())
        .and_then(parse_grpc_timeout)
        .map(|t| t.saturating_sub(DEADLINE_MARGIN))
        .unwrap_or(NO_DEADLINE);
    Instant::now() + timeout
}

/// The trace id of a W3C `traceparent` header ("00-<32 hex>-<16 hex>-<2 hex>"),
/// so that log lines join the caller's trace. Empty when absent or malformed.
pub fn trace_id<T>(request: &Request<T>) -> String {
    let Some(header) = request.metadata().get("traceparent").and_then(|v| v.to_str().ok()) else {
        return String::new();
    };
    let parts: Vec<&str> = header.trim().split('-').collect();
    let hex =
        |s: &str, len: usize| s.len() == len && s.bytes().all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase());
    match parts.as_slice() {
        [version, trace, parent, flags]
            if hex(version, 2)
                && *version != "ff"
                && hex(trace, 32)
                && hex(parent, 16)
                && hex(flags, 2)
                && trace.bytes().any(|b| b != b'0') =>
        {
            (*trace).to_owned()
        }
        _ => String::new(),
    }
}

/// Parses the gRPC wire format of a timeout: up to 8 digits and a unit.
fn parse_grpc_timeout(value: &str) -> Option<Duration> {
    if value.len() < 2 || value.len() > 9 {
        return None;
    }
    let (digits, unit) = value.split_at(value.len() - 1);
    let amount: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(amount.checked_mul(3600)?),
        "M" => Duration::from_secs(amount.checked_mul(60)?),
        "S" => Duration::from_secs(amount),
        "m" => Duration::from_millis(amount),
        "u" => Duration::from_micros(amount),
        "n" => Duration::from_nanos(amount),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trace_ids_come_from_valid_traceparents_only() {
        let with = |value: &str| {
            let mut request = Request::new(());
            request.metadata_mut().insert("traceparent", value.parse().unwrap());
            trace_id(&request)
        };
        assert_eq!(with("00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"), "4bf92f3577b34da6a3ce929d0e0e4736");
        for bad in [
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6-00f067aa0ba902b7-01",
            "garbage",
        ] {
            assert_eq!(with(bad), "", "{bad}");
        }
        assert_eq!(trace_id(&Request::new(())), "");
    }

    #[test]
    fn grpc_timeouts_parse_in_every_unit() {
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("2M"), Some(Duration::from_secs(120)));
        assert_eq!(parse_grpc_timeout("3S"), Some(Duration::from_secs(3)));
        assert_eq!(parse_grpc_timeout("250m"), Some(Duration::from_millis(250)));
        assert_eq!(parse_grpc_timeout("99999999u"), Some(Duration::from_micros(99_999_999)));
        assert_eq!(parse_grpc_timeout("5n"), Some(Duration::from_nanos(5)));
        for bad in ["", "S", "10", "10x", "123456789S", "-1S"] {
            assert_eq!(parse_grpc_timeout(bad), None, "{bad:?}");
        }
    }
}
