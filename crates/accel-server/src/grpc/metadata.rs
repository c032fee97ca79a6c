//! Reading what gRPC metadata carries: the API key, the Azure routing
//! header and the deadline; writing the stage times of an answer.

use crate::auth::{bearer, ApiKey};
use crate::request::{InferResponse, SERVER_TIMING};
use std::time::Duration;
use tonic::metadata::MetadataMap;

/// Azure ML's routing header.
pub const ROUTE_HEADER: &str = "x-ms-aml-grpc-service-route";

/// The key from `authorization: Bearer <key>`.
pub fn api_key(md: &MetadataMap) -> Option<ApiKey> {
    md.get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(bearer)
}

/// The Azure routing header's value.
pub fn route(md: &MetadataMap) -> Option<String> {
    md.get(ROUTE_HEADER)
        .and_then(|v| v.to_str().ok())
        .map(str::to_string)
}

/// The client's deadline from the `grpc-timeout` header (`<digits><unit>`,
/// unit one of H M S m u n), as the gRPC spec defines it.
pub fn timeout(md: &MetadataMap) -> Option<Duration> {
    parse_grpc_timeout(md.get("grpc-timeout")?.to_str().ok()?)
}

/// `resp` with the answer's stage times in the `server-timing` initial
/// metadata (the same value as the HTTP `Server-Timing` header).
pub fn with_server_timing<T>(
    mut resp: tonic::Response<T>,
    answer: &InferResponse,
) -> tonic::Response<T> {
    if let Ok(v) = answer.server_timing().parse() {
        resp.metadata_mut().insert(SERVER_TIMING, v);
    }
    resp
}

/// Parses a `grpc-timeout` value.
pub fn parse_grpc_timeout(v: &str) -> Option<Duration> {
    if v.len() < 2 || v.len() > 9 {
        return None;
    }
    let (digits, unit) = v.split_at(v.len() - 1);
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n.checked_mul(3600)?),
        "M" => Duration::from_secs(n.checked_mul(60)?),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn grpc_timeout_units() {
        assert_eq!(parse_grpc_timeout("100m"), Some(Duration::from_millis(100)));
        assert_eq!(parse_grpc_timeout("2S"), Some(Duration::from_secs(2)));
        assert_eq!(parse_grpc_timeout("1H"), Some(Duration::from_secs(3600)));
        assert_eq!(parse_grpc_timeout("99u"), Some(Duration::from_micros(99)));
        assert_eq!(parse_grpc_timeout("5x"), None);
        assert_eq!(parse_grpc_timeout("m"), None);
    }
}
