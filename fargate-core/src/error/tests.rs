//! Tests of errors, failures and exit codes.

use super::*;

#[test]
fn script_failure_maps_to_build_code_and_records_its_own_code() {
    let codes = ExitCodes {
        build_failure: 11,
        system_failure: 22,
    };
    let d = Failure::script(3, "exit 3").exit(&codes);
    assert_eq!(
        d,
        ExitDecision {
            exit_code: 11,
            build_exit_code: Some(3)
        }
    );
}

#[test]
fn every_system_failure_maps_to_system_code() {
    let codes = ExitCodes::default();
    for kind in [
        ErrorKind::InvalidConfig,
        ErrorKind::Throttled,
        ErrorKind::Cancelled,
        ErrorKind::TaskStopped,
        ErrorKind::HostKeyMismatch,
        ErrorKind::Conflict,
        ErrorKind::LockLost,
    ] {
        let failure = Failure::from(Error::new(kind, "x"));
        assert_eq!(failure.class(), FailureClass::System, "{kind}");
        let d = failure.exit(&codes);
        assert_eq!(d.exit_code, 2, "{kind}");
        assert_eq!(d.build_exit_code, None);
        assert!(failure.as_system().is_some());
    }
}

#[test]
fn a_disallowed_request_is_a_script_failure_that_keeps_its_kind_and_hint() {
    let err = Error::new(
        ErrorKind::NotAllowed,
        "the job asks for task definition \"x\"",
    )
    .with_hint("allowed: ci-*");
    let failure = Failure::from(err);
    assert_eq!(failure.class(), FailureClass::Script);
    assert_eq!(failure.script_exit_code(), Some(1));
    assert_eq!(
        failure.exit(&ExitCodes::default()),
        ExitDecision {
            exit_code: 1,
            build_exit_code: Some(1)
        }
    );
    let err = failure.error().unwrap();
    assert_eq!(err.kind(), ErrorKind::NotAllowed);
    assert_eq!(err.hint(), Some("allowed: ci-*"));
    assert!(failure.as_system().is_none());
}

#[test]
fn failure_is_a_shareable_error_with_its_source_chain() {
    fn assert_error<E: StdError + Send + Sync + 'static>(_: &E) {}
    let failure = Failure::from(
        Error::new(ErrorKind::Io, "writing record").with_source(std::io::Error::other("disk full")),
    );
    assert_error(&failure);
    assert_eq!(failure.to_string(), "writing record");
    assert_eq!(failure.source().unwrap().to_string(), "disk full");
    let script = Failure::script(3, "the build script exited with status 3");
    assert_eq!(script.class(), FailureClass::Script);
    assert!(script.source().is_none() && script.error().is_none());
}

#[test]
fn context_is_structured_and_shown_in_display_and_chain() {
    let io = std::io::Error::other("disk full");
    let err = Error::new(ErrorKind::Io, "writing record")
        .with_source(io)
        .with_hint("free some space")
        .with_operation("prepare")
        .with_context("job", "runner-1/42")
        .with_context("task", "t-1")
        .with_context("job", "runner-1/43");
    assert_eq!(err.operation(), Some("prepare"));
    assert_eq!(err.message(), "writing record");
    assert_eq!(err.context_value("job"), Some("runner-1/43"));
    assert_eq!(err.context_value("cluster"), None);
    assert_eq!(
        err.context().collect::<Vec<_>>(),
        [("job", "runner-1/43"), ("task", "t-1")]
    );
    assert_eq!(
        err.chain(),
        "prepare: writing record (job: runner-1/43, task: t-1): disk full"
    );
    assert_eq!(
        err.to_string(),
        "prepare: writing record (job: runner-1/43, task: t-1) (hint: free some space)"
    );
    assert!(!err.is_temporary());
    assert!(Error::new(ErrorKind::Throttled, "slow down").is_temporary());
}
