//! The one place where error kinds become gRPC codes and HTTP statuses.

use crate::error::ServeError;
use accel_core::ErrorKind;

/// The gRPC code for a kind.
pub fn grpc_code(kind: ErrorKind) -> tonic::Code {
    match kind {
        ErrorKind::InvalidArgument => tonic::Code::InvalidArgument,
        ErrorKind::NotFound => tonic::Code::NotFound,
        ErrorKind::AlreadyExists => tonic::Code::AlreadyExists,
        ErrorKind::FailedPrecondition => tonic::Code::FailedPrecondition,
        ErrorKind::ResourceExhausted => tonic::Code::ResourceExhausted,
        ErrorKind::DeadlineExceeded => tonic::Code::DeadlineExceeded,
        ErrorKind::Unauthenticated => tonic::Code::Unauthenticated,
        ErrorKind::Unimplemented => tonic::Code::Unimplemented,
        ErrorKind::Unavailable => tonic::Code::Unavailable,
        ErrorKind::DataLoss => tonic::Code::DataLoss,
        _ => tonic::Code::Internal,
    }
}

/// The HTTP status for a kind.
pub fn http_status(kind: ErrorKind) -> http::StatusCode {
    use http::StatusCode as S;
    match kind {
        ErrorKind::InvalidArgument | ErrorKind::FailedPrecondition => S::BAD_REQUEST,
        ErrorKind::NotFound => S::NOT_FOUND,
        ErrorKind::AlreadyExists => S::CONFLICT,
        ErrorKind::ResourceExhausted => S::TOO_MANY_REQUESTS,
        ErrorKind::DeadlineExceeded => S::GATEWAY_TIMEOUT,
        ErrorKind::Unauthenticated => S::UNAUTHORIZED,
        ErrorKind::Unimplemented => S::NOT_IMPLEMENTED,
        ErrorKind::Unavailable => S::SERVICE_UNAVAILABLE,
        _ => S::INTERNAL_SERVER_ERROR,
    }
}

/// The label used in metrics: the gRPC code's canonical name.
pub fn code_label(kind: Option<ErrorKind>) -> &'static str {
    match kind {
        None => "OK",
        Some(k) => match grpc_code(k) {
            tonic::Code::InvalidArgument => "INVALID_ARGUMENT",
            tonic::Code::NotFound => "NOT_FOUND",
            tonic::Code::AlreadyExists => "ALREADY_EXISTS",
            tonic::Code::FailedPrecondition => "FAILED_PRECONDITION",
            tonic::Code::ResourceExhausted => "RESOURCE_EXHAUSTED",
            tonic::Code::DeadlineExceeded => "DEADLINE_EXCEEDED",
            tonic::Code::Unauthenticated => "UNAUTHENTICATED",
            tonic::Code::Unimplemented => "UNIMPLEMENTED",
            tonic::Code::Unavailable => "UNAVAILABLE",
            tonic::Code::DataLoss => "DATA_LOSS",
            _ => "INTERNAL",
        },
    }
}

impl From<ServeError> for tonic::Status {
    fn from(e: ServeError) -> Self {
        tonic::Status::new(grpc_code(e.kind), e.message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_kind_maps_consistently() {
        let kinds = [
            (
                ErrorKind::InvalidArgument,
                tonic::Code::InvalidArgument,
                400,
            ),
            (ErrorKind::NotFound, tonic::Code::NotFound, 404),
            (
                ErrorKind::Unauthenticated,
                tonic::Code::Unauthenticated,
                401,
            ),
            (
                ErrorKind::ResourceExhausted,
                tonic::Code::ResourceExhausted,
                429,
            ),
            (
                ErrorKind::DeadlineExceeded,
                tonic::Code::DeadlineExceeded,
                504,
            ),
            (ErrorKind::Unimplemented, tonic::Code::Unimplemented, 501),
            (ErrorKind::Unavailable, tonic::Code::Unavailable, 503),
            (ErrorKind::Internal, tonic::Code::Internal, 500),
        ];
        for (k, code, status) in kinds {
            assert_eq!(grpc_code(k), code);
            assert_eq!(http_status(k).as_u16(), status);
        }
        assert_eq!(
            code_label(Some(ErrorKind::ResourceExhausted)),
            "RESOURCE_EXHAUSTED"
        );
        assert_eq!(code_label(None), "OK");
    }
}
