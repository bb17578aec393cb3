//! Tests of the launcher's types and the forwarding impl.

use super::*;

#[test]
fn stop_details_read_well() {
    let d = StopDetails {
        code: Some("TaskFailedToStart".into()),
        reason: Some("CannotPullContainerError: pull access denied".into()),
        containers: vec![
            ContainerStop::new("ci-coordinator", Some("OOM".into()), Some(137)),
            ContainerStop::new("idle", None, None),
        ],
        reclaimed: false,
        pull_failed: None,
    };
    assert_eq!(
        d.to_string(),
        "CannotPullContainerError: pull access denied; stop code TaskFailedToStart; \
         container ci-coordinator exited with 137: OOM"
    );
    assert_eq!(StopDetails::default().to_string(), "no reason given");
}

#[test]
fn spec_debug_hides_environment_values() {
    let job = JobIdentity::from_response(
        crate::job::Namespace::parse("ci").unwrap(),
        &crate::job::JobResponse::new(2),
    );
    let mut spec = TaskSpec::new(job, "td").with_client_token("tok");
    spec.environment = [("SSH_PUBLIC_KEY".to_owned(), "ssh-ed25519 AAAA".to_owned())].into();
    let s = format!("{spec:?}");
    assert!(s.contains("SSH_PUBLIC_KEY") && !s.contains("AAAA"), "{s}");
}
