//! DynamoDB's errors as [`fargate_core::Error`]s (backend `"dynamodb"`), and the failed
//! condition told apart: the answer every conditional write of the store expects.

use aws_smithy_types::error::metadata::ProvideErrorMetadata;
use fargate_core::{Error, ErrorKind};
use serde_json::Value;

use crate::aws_api::CallError;

/// The backend name in errors.
pub(super) const BACKEND: &str = "dynamodb";

/// What a call failed with.
#[derive(Debug)]
pub(super) enum Failed {
    /// `ConditionalCheckFailedException`: the item (as it was, when the request asked for
    /// it with `ReturnValuesOnConditionCheckFailure`) did not meet the condition.
    Condition(Option<Value>),
    /// Anything else.
    Error(Error),
}

impl Failed {
    /// As an error: a failed condition is `unexpected`, for calls that send none.
    pub(super) fn into_error(self, what: &str) -> Error {
        match self {
            Failed::Error(e) => e,
            Failed::Condition(_) => Error::new(
                ErrorKind::Unexpected,
                format!("{what}: a condition failed that the store did not set"),
            )
            .with_backend(BACKEND),
        }
    }
}

/// Classifies `err` of `operation` on `table`.
pub(super) fn classify(err: CallError, operation: &str, table: &str) -> Failed {
    let what = format!("DynamoDB {operation} on table {table}");
    let Some(service) = err.as_service_error() else {
        // No answer, a broken connection, a request that could not be built: as for ECS.
        let error = crate::errors::sdk(err, &what).error.with_backend(BACKEND);
        return Failed::Error(error);
    };
    let code = service.code().unwrap_or_default().to_owned();
    let message = service.message().unwrap_or_default().to_owned();
    if code == "ConditionalCheckFailedException" {
        let item = service.body().and_then(|b| b.get("Item")).cloned();
        return Failed::Condition(item);
    }
    let text = format!("{what}: {code}: {message}");
    let error = match code.as_str() {
        "ResourceNotFoundException" => Error::new(ErrorKind::InvalidConfig, text).with_hint(format!(
            "create the table with `fargate store init` (or check [TaskMetadata] DynamoDBTable = {table:?} and the region)"
        )),
        "AccessDeniedException" | "UnrecognizedClientException" | "MissingAuthenticationTokenException" => {
            Error::new(ErrorKind::PermissionDenied, text).with_hint(format!(
                "the runner's IAM role needs dynamodb:GetItem, dynamodb:UpdateItem, dynamodb:DeleteItem and dynamodb:Scan on table {table} (and kms:Decrypt, kms:GenerateDataKey on its key); see examples/iam-policy.json"
            ))
        }
        "ProvisionedThroughputExceededException"
        | "ThrottlingException"
        | "RequestLimitExceeded"
        | "LimitExceededException" => Error::new(ErrorKind::Throttled, text)
            .set_temporary(true)
            .with_hint("use on-demand capacity (`fargate store init` creates the table so), or raise the table's throughput"),
        "ValidationException" if message.contains("size") => {
            Error::new(ErrorKind::InvalidInput, text).with_hint(
                "a DynamoDB item holds at most 400 KB; the record is too large for the table",
            )
        }
        "InternalServerError" | "ServiceUnavailable" | "InternalFailure" => {
            Error::new(ErrorKind::Unexpected, text)
                .set_temporary(true)
                .set_outcome_unknown(true)
        }
        "TransactionConflictException" => Error::new(ErrorKind::Conflict, text).set_temporary(true),
        _ => Error::new(ErrorKind::Unexpected, text),
    };
    // DynamoDB answered: the call was not carried out (server errors said otherwise above).
    Failed::Error(error.with_backend(BACKEND).with_source(err))
}
