//! From ECS and EC2 errors (SDK errors and `RunTask` `failures[]`) to [`fargate_core::Error`].

use std::error::Error as StdError;

use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};
use fargate_core::{Error, ErrorKind};

/// An error with what the launcher should do next.
#[derive(Debug)]
pub(crate) struct Classified {
    pub(crate) error: Error,
    /// A capacity or ENI problem that another subnet may not have.
    pub(crate) try_next_subnet: bool,
}

impl From<Classified> for Error {
    fn from(c: Classified) -> Error {
        c.error
    }
}

const CAPACITY_HINT: &str = "Fargate had no capacity in that availability zone; \
    configure subnets in several zones, or a FARGATE_SPOT/FARGATE capacity provider strategy";
const ENI_HINT: &str =
    "the subnet has no free IP address or ENI left; add subnets or free addresses";

/// Classifies an error code and message from ECS (or EC2), whatever carried it (an
/// exception or a `failures[]` entry).
pub(crate) fn classify(code: &str, message: &str, what: &str) -> Classified {
    let lower = format!("{code} {message}").to_ascii_lowercase();
    let text = if message.is_empty() {
        code.to_owned()
    } else if code.is_empty() {
        message.to_owned()
    } else {
        format!("{code}: {message}")
    };
    let msg = format!("{what}: {text}");
    let mut try_next_subnet = false;
    let (kind, hint): (ErrorKind, Option<&str>) = if lower.contains("capacity is unavailable")
        || code == "RESOURCE:MEMORY"
        || code == "RESOURCE:CPU"
    {
        try_next_subnet = true;
        (ErrorKind::CapacityUnavailable, Some(CAPACITY_HINT))
    } else if code.contains("ENI")
        || lower.contains("free addresses")
        || lower.contains("no available ip")
        || lower.contains("insufficient free ip")
        || lower.contains("elastic network interface")
    {
        try_next_subnet = true;
        (ErrorKind::CapacityUnavailable, Some(ENI_HINT))
    } else if lower.contains("limit on the number of vcpus")
        || lower.contains("limit on the number of tasks")
        || code == "LimitExceededException"
    {
        (
            ErrorKind::CapacityUnavailable,
            Some(
                "the account's Fargate quota is used up; wait for other tasks or ask AWS for a higher quota",
            ),
        )
    } else if matches!(
        code,
        "ThrottlingException" | "Throttling" | "RequestLimitExceeded" | "TooManyRequestsException"
    ) || lower.contains("rate exceeded")
    {
        (
            ErrorKind::Throttled,
            Some("the AWS API rate limit was hit; fewer concurrent jobs or a higher quota help"),
        )
    } else if matches!(
        code,
        "AccessDeniedException" | "AccessDenied" | "UnauthorizedOperation" | "BlockedException"
    ) {
        (
            ErrorKind::PermissionDenied,
            Some(
                "the driver's IAM role needs ecs:RunTask, ecs:DescribeTasks, ecs:StopTask, \
                  ecs:ListTasks, ecs:TagResource (ecs:UntagResource for warm tasks) and \
                  iam:PassRole for the task's roles",
            ),
        )
    } else if matches!(
        code,
        "UnrecognizedClientException"
            | "InvalidSignatureException"
            | "ExpiredTokenException"
            | "InvalidClientTokenId"
            | "AuthFailure"
    ) {
        (
            ErrorKind::AuthenticationFailed,
            Some("check the AWS credentials the driver runs with"),
        )
    } else if code == "ResourceNotFoundException" {
        (
            ErrorKind::NotFound,
            Some("the task or task definition no longer exists (or is in another region)"),
        )
    } else if code == "ClusterNotFoundException" {
        (
            ErrorKind::NotFound,
            Some("check the cluster name and region in the driver configuration"),
        )
    } else if lower.contains("unable to describe task definition") {
        (
            ErrorKind::NotFound,
            Some("check the task definition (family, family:revision or ARN) and the region"),
        )
    } else if lower.contains("no container instances were found") {
        (
            ErrorKind::InvalidConfig,
            Some(
                "the cluster has no EC2 capacity for this launch; use launch type FARGATE or \
                  a FARGATE capacity provider strategy",
            ),
        )
    } else if lower.contains("is not a container in the taskdefinition")
        || lower.contains("override for container")
    {
        (
            ErrorKind::InvalidConfig,
            Some(
                "the container named in the driver configuration (default `ci-coordinator`) \
                  must exist in the task definition",
            ),
        )
    } else if lower.contains("capacity provider") {
        (
            ErrorKind::InvalidConfig,
            Some(
                "associate the capacity providers with the cluster \
                  (aws ecs put-cluster-capacity-providers)",
            ),
        )
    } else if code.starts_with("InvalidSubnet") || code.starts_with("InvalidGroup") {
        (
            ErrorKind::InvalidConfig,
            Some("check the subnets and security groups of the driver configuration"),
        )
    } else if matches!(
        code,
        "InvalidParameterException"
            | "ClientException"
            | "PlatformUnknownException"
            | "PlatformTaskDefinitionIncompatibilityException"
            | "UnsupportedFeatureException"
    ) {
        (ErrorKind::InvalidConfig, None)
    } else if matches!(
        code,
        "ServerException" | "InternalFailure" | "ServiceUnavailable" | "InternalError"
    ) {
        // A server error: the call may have been carried out.
        let error = Error::new(ErrorKind::Unexpected, msg)
            .with_backend("ecs")
            .set_temporary(true)
            .set_outcome_unknown(true);
        return Classified {
            error,
            try_next_subnet,
        };
    } else {
        (ErrorKind::Unexpected, None)
    };
    // ECS answered with a refusal: the call was not carried out.
    let mut error = Error::new(kind, msg)
        .with_backend("ecs")
        .set_outcome_unknown(false);
    if let Some(hint) = hint {
        error = error.with_hint(hint);
    }
    Classified {
        error,
        try_next_subnet,
    }
}

/// Whether `err` is ECS's answer to a call about a task it does not know (StopTask:
/// `InvalidParameterException`, "The referenced task was not found.").
pub(crate) fn is_task_not_found(err: &Error) -> bool {
    let lower = err.message().to_ascii_lowercase();
    lower.contains("task was not found") || lower.contains("task not found")
}

/// Classifies an SDK error of operation `what`. Whether the call may have been carried out
/// ([`Error::outcome_unknown`]) follows from how it failed: an API error answer means it
/// was not; no answer, a broken connection or a garbled answer means it may have been.
pub(crate) fn sdk<E, R>(err: SdkError<E, R>, what: &str) -> Classified
where
    E: ProvideErrorMetadata + StdError + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match &err {
        SdkError::ServiceError(_) => {
            let code = err.code().unwrap_or_default().to_owned();
            let message = err.message().unwrap_or_default().to_owned();
            let mut c = classify(&code, &message, what);
            c.error = c.error.with_source(err);
            c
        }
        SdkError::TimeoutError(_) => Classified {
            error: Error::new(
                ErrorKind::Timeout,
                format!("{what}: the AWS API did not answer in time"),
            )
            .with_backend("ecs")
            .set_temporary(true)
            .with_source(err),
            try_next_subnet: false,
        },
        SdkError::DispatchFailure(_) => Classified {
            error: Error::new(
                ErrorKind::Unreachable,
                format!("{what}: the AWS API could not be reached: {}", detail(&err)),
            )
            .with_backend("ecs")
            .with_hint("check the network, proxy and endpoint settings, and the credentials")
            .with_source(err),
            try_next_subnet: false,
        },
        SdkError::ConstructionFailure(_) => Classified {
            error: Error::new(
                ErrorKind::InvalidConfig,
                format!("{what}: the request could not be built: {}", detail(&err)),
            )
            .with_backend("ecs")
            .set_outcome_unknown(false)
            .with_hint("check the AWS region and credentials (AWS_REGION, AWS_PROFILE, ...)")
            .with_source(err),
            try_next_subnet: false,
        },
        _ => Classified {
            error: Error::new(
                ErrorKind::Unexpected,
                format!(
                    "{what}: unexpected answer from the AWS API: {}",
                    detail(&err)
                ),
            )
            .with_backend("ecs")
            .set_outcome_unknown(true)
            .with_source(err),
            try_next_subnet: false,
        },
    }
}

/// The whole source chain of `err`, for messages.
fn detail(err: &dyn StdError) -> String {
    let mut out = err.to_string();
    let mut next = err.source();
    while let Some(e) = next {
        let text = e.to_string();
        if !out.contains(&text) {
            out.push_str(": ");
            out.push_str(&text);
        }
        next = e.source();
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_failures_get_kinds_and_hints() {
        let cases = [
            (
                "",
                "Capacity is unavailable at this time. Please try again later or in a different availability zone",
                ErrorKind::CapacityUnavailable,
                true,
            ),
            ("RESOURCE:ENI", "", ErrorKind::CapacityUnavailable, true),
            (
                "InvalidParameterException",
                "You've reached the limit on the number of vCPUs you can run concurrently",
                ErrorKind::CapacityUnavailable,
                false,
            ),
            (
                "ThrottlingException",
                "Rate exceeded",
                ErrorKind::Throttled,
                false,
            ),
            (
                "AccessDeniedException",
                "User is not authorized",
                ErrorKind::PermissionDenied,
                false,
            ),
            (
                "ClusterNotFoundException",
                "Cluster not found.",
                ErrorKind::NotFound,
                false,
            ),
            (
                "ClientException",
                "Unable to describe task definition.",
                ErrorKind::NotFound,
                false,
            ),
            (
                "InvalidParameterException",
                "No Container Instances were found in your cluster.",
                ErrorKind::InvalidConfig,
                false,
            ),
            (
                "InvalidParameterException",
                "Override for container named foo is not a container in the TaskDefinition.",
                ErrorKind::InvalidConfig,
                false,
            ),
            (
                "ResourceNotFoundException",
                "The specified resource wasn't found.",
                ErrorKind::NotFound,
                false,
            ),
            ("MISSING", "", ErrorKind::Unexpected, false),
        ];
        for (code, message, kind, next) in cases {
            let c = classify(code, message, "RunTask");
            assert_eq!(c.error.kind(), kind, "{code} {message}");
            assert_eq!(c.try_next_subnet, next, "{code} {message}");
            assert_eq!(c.error.backend(), Some("ecs"));
            assert!(c.error.message().starts_with("RunTask: "));
            if kind != ErrorKind::Unexpected {
                assert!(c.error.hint().is_some(), "{code} {message}");
            }
        }
        assert!(
            classify("ThrottlingException", "", "x")
                .error
                .is_temporary()
        );
        assert!(
            classify("", "Capacity is unavailable at this time.", "x")
                .error
                .is_temporary()
        );
        assert!(
            !classify("AccessDeniedException", "", "x")
                .error
                .is_temporary()
        );
        assert!(
            classify("ServerException", "boom", "x")
                .error
                .is_temporary()
        );
    }
}
