//! Launch retries and their client tokens: the same after a lost answer, a new one after a
//! refusal.

use super::*;

#[tokio::test(start_paused = true)]
async fn a_lost_launch_answer_is_retried_with_the_same_token() {
    let r = rig();
    r.launcher
        .faults
        .inject_at(Op::Launch, 1, Fault::LoseResponse(ErrorKind::Unreachable));
    r.prepare().await.unwrap();
    assert_eq!(
        r.launcher.tasks().len(),
        1,
        "the retry started a second task"
    );
    assert_eq!(r.launcher.faults.calls(Op::Launch), 2);
    let record = r.store.peek(&r.key()).unwrap();
    assert_eq!(record.attempts.len(), 1, "{:?}", record.attempts);
    assert!(matches!(
        record.attempts[0].outcome,
        AttemptOutcome::Accepted { .. }
    ));
}

#[tokio::test(start_paused = true)]
async fn a_refused_launch_is_retried_with_a_new_token() {
    let r = rig();
    r.launcher
        .faults
        .inject_at(Op::Launch, 1, Fault::Fail(ErrorKind::CapacityUnavailable));
    r.prepare().await.unwrap();
    assert_eq!(r.launcher.tasks().len(), 1);
    let record = r.store.peek(&r.key()).unwrap();
    assert_eq!(record.attempts.len(), 2, "{:?}", record.attempts);
    assert_eq!(record.attempts[0].outcome, AttemptOutcome::Refused);
    assert_ne!(
        record.attempts[0].client_token,
        record.attempts[1].client_token
    );
    let (_, task) = &r.launcher.tasks()[0];
    assert_eq!(task.spec.client_token, record.attempts[1].client_token);

    // A refusal that will not pass is not retried.
    let r = rig();
    r.launcher
        .faults
        .inject_always(Op::Launch, Fault::Fail(ErrorKind::NotFound));
    assert_eq!(
        system_kind(r.prepare().await.unwrap_err()),
        ErrorKind::NotFound
    );
    assert_eq!(r.launcher.faults.calls(Op::Launch), 1);
}
