//! The moto fixture (`fargate_testkit::moto`) refuses and delays what ECS refuses and delays
//! (see `docs/ecs-api-rules.md`): each test sends the raw ECS request that breaks one rule and
//! checks the refusal (or the delay), and that the conforming request still works.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::fmt::Debug;
use std::future::Future;
use std::time::{Duration, Instant};

use aws_sdk_ecs::Client;
use aws_sdk_ecs::config::http::HttpResponse;
use aws_sdk_ecs::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_ecs::operation::run_task::builders::RunTaskFluentBuilder;
use aws_sdk_ecs::types::{
    AwsVpcConfiguration, Compatibility, ContainerDefinition, ContainerOverride, DesiredStatus,
    KeyValuePair, LaunchType, NetworkConfiguration, NetworkMode, Tag, TaskOverride,
};
use fargate_testkit::fault_proxy::{Fault, FaultProxy};
use fargate_testkit::moto::{Moto, MotoBuilder, MotoEcs};

const UNKNOWN: &str =
    "arn:aws:ecs:us-east-1:123456789012:task/ci/00000000-0000-4000-8000-000000000000";

/// A fixture with `builder`'s options, its ECS setup, a client as the code under test has
/// it (subject to the visibility lag) and an oracle client.
async fn fixture(builder: MotoBuilder) -> (Moto, MotoEcs, Client, Client) {
    let moto = builder.start();
    let ecs = moto.setup().await;
    let client = Client::new(&moto.sdk_config());
    let oracle = moto.ecs_client();
    (moto, ecs, client, oracle)
}

/// A conforming Fargate `RunTask` request in the fixture's cluster.
fn run(client: &Client, ecs: &MotoEcs) -> RunTaskFluentBuilder {
    client
        .run_task()
        .cluster(&ecs.cluster)
        .task_definition(&ecs.task_definition)
        .launch_type(LaunchType::Fargate)
        .network_configuration(
            NetworkConfiguration::builder()
                .awsvpc_configuration(
                    AwsVpcConfiguration::builder()
                        .subnets(&ecs.subnets[0])
                        .security_groups(&ecs.security_groups[0])
                        .build()
                        .unwrap(),
                )
                .build(),
        )
}

/// Starts one task with `request` and returns its ARN.
async fn start(request: RunTaskFluentBuilder) -> String {
    let out = request.send().await.expect("RunTask");
    assert!(out.failures().is_empty(), "{out:?}");
    assert_eq!(out.tasks().len(), 1, "{out:?}");
    out.tasks()[0].task_arn().unwrap().to_owned()
}

/// The refusal of a request: HTTP 400 and its error code; returns the message.
fn refused<O: Debug, E: ProvideErrorMetadata + Debug>(
    result: Result<O, SdkError<E, HttpResponse>>,
    code: &str,
) -> String {
    let err = result.expect_err("the request should have been refused");
    let status = err.raw_response().map(|r| r.status().as_u16());
    assert_eq!(status, Some(400), "{err:?}");
    assert_eq!(err.code(), Some(code), "{err:?}");
    err.message().unwrap_or_default().to_owned()
}

fn invalid<O: Debug, E: ProvideErrorMetadata + Debug>(
    result: Result<O, SdkError<E, HttpResponse>>,
) -> String {
    refused(result, "InvalidParameterException")
}

/// Polls `check` until it holds; panics after `within`.
async fn eventually<F, Fut>(what: &str, within: Duration, mut check: F)
where
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + within;
    while !check().await {
        assert!(Instant::now() < deadline, "{what}: not within {within:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// `DescribeTasks` of `arn`: (found in `tasks[]`, its `failures[]` reasons).
async fn describe(client: &Client, arn: &str) -> (bool, Vec<String>) {
    let out = client
        .describe_tasks()
        .cluster("ci")
        .tasks(arn)
        .send()
        .await
        .unwrap();
    let found = out.tasks().iter().any(|t| t.task_arn() == Some(arn));
    let reasons = out
        .failures()
        .iter()
        .map(|f| {
            assert_eq!(f.arn(), Some(arn), "{f:?}");
            f.reason().unwrap_or_default().to_owned()
        })
        .collect();
    (found, reasons)
}

/// Every task ARN `ListTasks` gives (following `nextToken`) with the default filters.
async fn listed(client: &Client) -> BTreeSet<String> {
    let mut all = BTreeSet::new();
    let mut next = None;
    loop {
        let out = client
            .list_tasks()
            .cluster("ci")
            .set_next_token(next)
            .send()
            .await
            .unwrap();
        all.extend(out.task_arns().iter().cloned());
        next = out.next_token().map(str::to_owned);
        if next.is_none() {
            return all;
        }
    }
}

#[tokio::test]
async fn a_new_task_is_missing_and_unlisted_until_the_lag_passed_but_the_oracle_sees_it() {
    fargate_testkit::require_fixture!(Moto);
    let lag = Duration::from_secs(3);
    let (moto, ecs, client, oracle) = fixture(Moto::builder().visibility_lag(lag)).await;
    let started = Instant::now();
    // The RunTask answer carries the task, as ECS's does.
    let arn = start(run(&client, &ecs)).await;

    assert_eq!(
        describe(&client, &arn).await,
        (false, vec!["MISSING".into()])
    );
    assert!(!listed(&client).await.contains(&arn));
    // The oracle view and the fixture's own inspection see it at once.
    assert_eq!(describe(&oracle, &arn).await, (true, vec![]));
    assert!(listed(&oracle).await.contains(&arn));
    assert_eq!(moto.describe_task("ci", &arn).await.task_arn(), Some(&*arn));
    assert!(
        started.elapsed() < lag,
        "the checks above ran after the lag ({:?}): they proved nothing",
        started.elapsed()
    );

    eventually("the task becomes visible", Duration::from_secs(20), || {
        let (client, arn) = (client.clone(), arn.clone());
        async move { describe(&client, &arn).await.0 && listed(&client).await.contains(&arn) }
    })
    .await;
    assert!(
        started.elapsed() >= lag,
        "visible after {:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn the_visibility_lag_can_be_set_at_run_time_for_new_tasks() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs, client, oracle) = fixture(Moto::builder()).await;
    // Default: no lag.
    let early = start(run(&client, &ecs)).await;
    assert_eq!(describe(&client, &early).await, (true, vec![]));

    moto.set_visibility_lag(Duration::from_secs(600));
    let late = start(run(&client, &ecs)).await;
    assert_eq!(
        describe(&client, &late).await,
        (false, vec!["MISSING".into()])
    );
    assert_eq!(
        describe(&client, &early).await,
        (true, vec![]),
        "older tasks stay visible"
    );
    assert_eq!(listed(&client).await, BTreeSet::from([early.clone()]));
    assert_eq!(listed(&oracle).await, BTreeSet::from([early, late.clone()]));
    // The lag is fixed when the task starts.
    moto.set_visibility_lag(Duration::ZERO);
    assert_eq!(
        describe(&client, &late).await,
        (false, vec!["MISSING".into()])
    );
}

#[tokio::test]
async fn a_lagged_task_is_unknown_to_stop_task_and_visible_once_stopped() {
    fargate_testkit::require_fixture!(Moto);
    let (_moto, ecs, client, oracle) =
        fixture(Moto::builder().visibility_lag(Duration::from_secs(600))).await;
    let arn = start(run(&client, &ecs)).await;
    assert_eq!(
        describe(&client, &arn).await,
        (false, vec!["MISSING".into()])
    );
    // Within the lag StopTask does not know it either (a caller must try again)...
    let err = client
        .stop_task()
        .cluster("ci")
        .task(&arn)
        .send()
        .await
        .unwrap_err();
    assert!(
        format!("{err:?}").contains("The referenced task was not found."),
        "{err:?}"
    );
    // ...and once stopped (here through the oracle view) it is visible to everyone.
    oracle
        .stop_task()
        .cluster("ci")
        .task(&arn)
        .reason("cancelled")
        .send()
        .await
        .unwrap();
    assert_eq!(describe(&client, &arn).await, (true, vec![]));
    let stopped = client
        .list_tasks()
        .cluster("ci")
        .desired_status(DesiredStatus::Stopped)
        .send()
        .await
        .unwrap();
    assert_eq!(stopped.task_arns(), [arn]);
}

#[tokio::test]
async fn describe_tasks_answers_unknown_tasks_missing() {
    fargate_testkit::require_fixture!(Moto);
    let (_moto, ecs, client, oracle) = fixture(Moto::builder()).await;
    let known = start(run(&client, &ecs)).await;
    for c in [&client, &oracle] {
        assert_eq!(describe(c, UNKNOWN).await, (false, vec!["MISSING".into()]));
        let id = "0123456789abcdef0123456789abcdef";
        assert_eq!(describe(c, id).await, (false, vec!["MISSING".into()]));
        let out = c
            .describe_tasks()
            .cluster("ci")
            .tasks(&known)
            .tasks(UNKNOWN)
            .send()
            .await
            .unwrap();
        assert_eq!(out.tasks().len(), 1, "{out:?}");
        assert_eq!(out.tasks()[0].task_arn(), Some(&*known));
        assert_eq!(out.failures().len(), 1, "{out:?}");
        assert_eq!(out.failures()[0].arn(), Some(UNKNOWN));
        assert_eq!(out.failures()[0].reason(), Some("MISSING"));
    }
}

#[tokio::test]
async fn list_tasks_started_by_must_be_the_only_filter() {
    fargate_testkit::require_fixture!(Moto);
    let (_moto, ecs, client, _oracle) = fixture(Moto::builder()).await;
    let arn = start(run(&client, &ecs).started_by("job-1")).await;
    let with_started_by = || client.list_tasks().cluster("ci").started_by("job-1");
    let combinations = [
        with_started_by().family("ci-coordinator"),
        with_started_by().container_instance("some-instance"),
        with_started_by().service_name("some-service"),
        with_started_by().desired_status(DesiredStatus::Running),
        with_started_by().launch_type(LaunchType::Fargate),
    ];
    for request in combinations {
        let message = invalid(request.send().await);
        assert!(message.contains("startedBy"), "{message}");
    }
    // startedBy alone (cluster is not a filter) works, and so does each other filter alone.
    let out = with_started_by().send().await.unwrap();
    assert_eq!(out.task_arns(), std::slice::from_ref(&arn));
    let list = || client.list_tasks().cluster("ci");
    for request in [
        list().family("ci-coordinator"),
        list().desired_status(DesiredStatus::Running),
        list().launch_type(LaunchType::Fargate),
    ] {
        assert_eq!(
            request.send().await.unwrap().task_arns(),
            std::slice::from_ref(&arn)
        );
    }
    let other = list().started_by("job-2").send().await.unwrap();
    assert!(other.task_arns().is_empty(), "{other:?}");
}

#[tokio::test]
async fn list_tasks_max_results_must_be_1_to_100() {
    fargate_testkit::require_fixture!(Moto);
    let (_moto, ecs, client, _oracle) = fixture(Moto::builder()).await;
    let arn = start(run(&client, &ecs)).await;
    for bad in [0, 101, -1] {
        invalid(
            client
                .list_tasks()
                .cluster("ci")
                .max_results(bad)
                .send()
                .await,
        );
    }
    for good in [1, 100] {
        let out = client
            .list_tasks()
            .cluster("ci")
            .max_results(good)
            .send()
            .await
            .unwrap();
        assert_eq!(out.task_arns(), std::slice::from_ref(&arn));
        assert_eq!(out.next_token(), None);
    }
}

#[tokio::test]
async fn list_tasks_paginates_so_a_caller_that_does_not_loses_tasks() {
    fargate_testkit::require_fixture!(Moto);
    let (_moto, ecs, client, _oracle) = fixture(Moto::builder()).await;
    let out = run(&client, &ecs).count(5).send().await.unwrap();
    let started: BTreeSet<String> = out
        .tasks()
        .iter()
        .map(|t| t.task_arn().unwrap().to_owned())
        .collect();
    assert_eq!(started.len(), 5);

    let first = client
        .list_tasks()
        .cluster("ci")
        .max_results(2)
        .send()
        .await
        .unwrap();
    assert_eq!(first.task_arns().len(), 2, "one page only");
    assert!(first.next_token().is_some());

    let mut pages = Vec::new();
    let mut next = None;
    loop {
        let out = client
            .list_tasks()
            .cluster("ci")
            .max_results(2)
            .set_next_token(next)
            .send()
            .await
            .unwrap();
        pages.push(out.task_arns().to_vec());
        next = out.next_token().map(str::to_owned);
        if next.is_none() {
            break;
        }
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [2, 2, 1]);
    let all: BTreeSet<String> = pages.into_iter().flatten().collect();
    assert_eq!(all, started);

    // The SDK's paginator gets them all too.
    let paginated: Vec<String> = client
        .list_tasks()
        .cluster("ci")
        .max_results(2)
        .into_paginator()
        .items()
        .send()
        .collect::<Result<Vec<_>, _>>()
        .await
        .unwrap();
    assert_eq!(paginated.into_iter().collect::<BTreeSet<_>>(), started);

    invalid(
        client
            .list_tasks()
            .cluster("ci")
            .next_token("garbage")
            .send()
            .await,
    );
}

#[tokio::test]
async fn list_tasks_pages_hold_100_tasks_by_default() {
    fargate_testkit::require_fixture!(Moto);
    let (_moto, ecs, client, _oracle) = fixture(Moto::builder()).await;
    for _ in 0..10 {
        run(&client, &ecs).count(10).send().await.unwrap();
    }
    start(run(&client, &ecs)).await;
    let first = client.list_tasks().cluster("ci").send().await.unwrap();
    assert_eq!(first.task_arns().len(), 100);
    let token = first.next_token().expect("a second page").to_owned();
    let second = client
        .list_tasks()
        .cluster("ci")
        .next_token(token)
        .send()
        .await
        .unwrap();
    assert_eq!(second.task_arns().len(), 1);
    assert_eq!(second.next_token(), None);
    assert_eq!(listed(&client).await.len(), 101);
}

#[tokio::test]
async fn list_tasks_lists_running_tasks_unless_asked_for_stopped_ones() {
    fargate_testkit::require_fixture!(Moto);
    let (_moto, ecs, client, _oracle) = fixture(Moto::builder()).await;
    let running = start(run(&client, &ecs)).await;
    let stopped = start(run(&client, &ecs)).await;
    client
        .stop_task()
        .cluster("ci")
        .task(&stopped)
        .send()
        .await
        .unwrap();
    assert_eq!(listed(&client).await, BTreeSet::from([running.clone()]));
    let list = |status| client.list_tasks().cluster("ci").desired_status(status);
    let out = list(DesiredStatus::Stopped).send().await.unwrap();
    assert_eq!(out.task_arns(), std::slice::from_ref(&stopped));
    let out = list(DesiredStatus::Running).send().await.unwrap();
    assert_eq!(out.task_arns(), [running]);
    // ECS never sets a desired status of PENDING.
    let out = list(DesiredStatus::Pending).send().await.unwrap();
    assert!(out.task_arns().is_empty());
    // A stopped task is still described.
    assert_eq!(describe(&client, &stopped).await, (true, vec![]));
}

#[tokio::test]
async fn run_task_started_by_is_36_letters_digits_dashes_slashes_underscores() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs, client, _oracle) = fixture(Moto::builder()).await;
    let good = format!("fgt-a/B_9{}", "x".repeat(27));
    assert_eq!(good.len(), 36);
    let arn = start(run(&client, &ecs).started_by(&good)).await;
    assert_eq!(
        moto.describe_task("ci", &arn).await.started_by(),
        Some(&*good)
    );

    let message = invalid(
        run(&client, &ecs)
            .started_by(format!("{good}x"))
            .send()
            .await,
    );
    assert!(message.contains("36"), "{message}");
    for bad in ["a b", "a.b", "job:1", "é"] {
        invalid(run(&client, &ecs).started_by(bad).send().await);
    }
    assert_eq!(
        moto.run_task_requests().len(),
        1,
        "refused requests start nothing"
    );
}

#[tokio::test]
async fn run_task_client_token_is_at_most_64_printable_ascii_characters() {
    fargate_testkit::require_fixture!(Moto);
    let (_moto, ecs, client, _oracle) = fixture(Moto::builder()).await;
    start(run(&client, &ecs).client_token("t".repeat(64))).await;
    start(run(&client, &ecs).client_token("!~token~!")).await;
    invalid(run(&client, &ecs).client_token("t".repeat(65)).send().await);
    invalid(run(&client, &ecs).client_token("with space").send().await);
}

fn tag(key: impl Into<String>, value: impl Into<String>) -> Tag {
    Tag::builder().key(key).value(value).build()
}

#[tokio::test]
async fn run_task_tags_are_at_most_50_and_within_ecs_limits() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs, client, _oracle) = fixture(Moto::builder()).await;
    let fifty: Vec<Tag> = (0..50).map(|i| tag(format!("k{i}"), "v")).collect();
    let arn = start(run(&client, &ecs).set_tags(Some(fifty.clone()))).await;
    assert_eq!(moto.describe_task("ci", &arn).await.tags().len(), 50);
    start(
        run(&client, &ecs)
            .tags(tag("k".repeat(128), "v".repeat(256)))
            .tags(tag("ok: +-=._:/@ é 1", "Ünïcode ok"))
            .tags(tag("awsome", "aws:value")),
    )
    .await;

    let mut fifty_one = fifty;
    fifty_one.push(tag("k50", "v"));
    invalid(run(&client, &ecs).set_tags(Some(fifty_one)).send().await);
    for bad in [
        tag("k".repeat(129), "v"),
        tag("k", "v".repeat(257)),
        tag("aws:reserved", "v"),
        tag("AWS:reserved", "v"),
        tag("a,b", "v"),
        tag("k", "a;b"),
        tag("", "v"),
    ] {
        invalid(run(&client, &ecs).tags(bad.clone()).send().await);
    }
    invalid(
        run(&client, &ecs)
            .tags(tag("same", "1"))
            .tags(tag("same", "2"))
            .send()
            .await,
    );
}

fn overrides_with_value(value: &str) -> TaskOverride {
    TaskOverride::builder()
        .container_overrides(
            ContainerOverride::builder()
                .name("ci-coordinator")
                .environment(KeyValuePair::builder().name("PAD").value(value).build())
                .build(),
        )
        .build()
}

#[tokio::test]
async fn run_task_overrides_are_at_most_8192_characters_of_json() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs, client, _oracle) = fixture(Moto::builder()).await;
    let skeleton = serde_json::json!({"containerOverrides": [{"name": "ci-coordinator",
        "environment": [{"name": "PAD", "value": ""}]}]})
    .to_string()
    .len();
    let pad = "x".repeat(8192 - skeleton);
    let arn = start(run(&client, &ecs).overrides(overrides_with_value(&pad))).await;
    let sent = moto.run_task_request(&arn).unwrap();
    assert_eq!(
        sent["overrides"].to_string().len(),
        8192,
        "right at the limit"
    );

    let message = invalid(
        run(&client, &ecs)
            .overrides(overrides_with_value(&format!("{pad}x")))
            .send()
            .await,
    );
    assert!(message.contains("8192"), "{message}");
}

#[tokio::test]
async fn run_task_count_is_1_to_10() {
    fargate_testkit::require_fixture!(Moto);
    let (_moto, ecs, client, _oracle) = fixture(Moto::builder()).await;
    for bad in [0, 11, -1] {
        invalid(run(&client, &ecs).count(bad).send().await);
    }
    let out = run(&client, &ecs).count(10).send().await.unwrap();
    assert_eq!(out.tasks().len(), 10);
    start(run(&client, &ecs).count(1)).await;
    assert_eq!(listed(&client).await.len(), 11);
}

/// Rule 12 with rules 7 and 21: a call of several tasks is replayed whole by its token, and
/// the Fargate task-launch bucket counts each of its tasks.
#[tokio::test]
async fn a_call_of_several_tasks_replays_whole_and_counts_each_task() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs, client, oracle) = fixture(Moto::builder()).await;
    let request = || run(&client, &ecs).client_token("pool-batch-1").count(4);
    let first = request().send().await.unwrap();
    let arns: BTreeSet<String> = first
        .tasks()
        .iter()
        .map(|t| t.task_arn().unwrap().to_owned())
        .collect();
    assert_eq!(arns.len(), 4);
    let again = request().send().await.unwrap();
    let replayed: BTreeSet<String> = again
        .tasks()
        .iter()
        .map(|t| t.task_arn().unwrap().to_owned())
        .collect();
    assert_eq!(replayed, arns, "a replay answers every task of the call");
    assert_eq!(listed(&oracle).await.len(), 4);
    // A bucket of 5 tasks: a call of 4 fits, the next call of 2 does not (and takes
    // nothing), a call of 1 does.
    moto.set_throttling(&[("FargateTasks", 0.01, 5.0)]);
    run(&client, &ecs).count(4).send().await.unwrap();
    let err = run(&client, &ecs).count(2).send().await.unwrap_err();
    assert_eq!(
        err.into_service_error().meta().code(),
        Some("ThrottlingException")
    );
    start(run(&client, &ecs)).await;
}

/// Rule 19, in part: a call over the capacity left starts what is left and answers a
/// failure for each task it did not start.
#[tokio::test]
async fn rule_19_a_call_may_be_placed_in_part() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs, client, oracle) = fixture(Moto::builder()).await;
    moto.set_capacity_tasks(Some(3));
    let out = run(&client, &ecs).count(5).send().await.unwrap();
    assert_eq!(out.tasks().len(), 3);
    assert_eq!(out.failures().len(), 2);
    assert!(
        out.failures()[0]
            .reason()
            .unwrap()
            .starts_with("Capacity is unavailable at this time"),
        "{out:?}"
    );
    let out = run(&client, &ecs).send().await.unwrap();
    assert!(
        out.tasks().is_empty() && out.failures().len() == 1,
        "{out:?}"
    );
    assert_eq!(listed(&oracle).await.len(), 3);
    moto.set_capacity_tasks(None);
    start(run(&client, &ecs)).await;
}

#[tokio::test]
async fn a_client_token_reused_with_other_parameters_is_a_conflict() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs, client, oracle) = fixture(Moto::builder()).await;
    let request = || {
        run(&client, &ecs)
            .client_token("job-7-attempt-1")
            .started_by("job-7")
    };
    let first = start(request()).await;
    // The same token and parameters: the first call's task, nothing new.
    assert_eq!(start(request()).await, first);
    assert_eq!(listed(&oracle).await.len(), 1);

    let err = run(&client, &ecs)
        .client_token("job-7-attempt-1")
        .started_by("job-8")
        .send()
        .await
        .expect_err("a reused token with other parameters");
    assert_eq!(err.raw_response().map(|r| r.status().as_u16()), Some(400));
    match err.into_service_error() {
        aws_sdk_ecs::operation::run_task::RunTaskError::ConflictException(c) => {
            assert_eq!(c.resource_ids(), std::slice::from_ref(&first));
        }
        other => panic!("not a ConflictException: {other:?}"),
    }
    assert_eq!(
        listed(&oracle).await.len(),
        1,
        "the conflict started nothing"
    );

    // Tokens belong to a cluster: the same token elsewhere is a new request.
    moto.create_fargate_cluster("ci2").await;
    let elsewhere = start(request().cluster("ci2")).await;
    assert_ne!(elsewhere, first);
    assert_eq!(start(request()).await, first);
}

#[tokio::test]
async fn describe_tasks_takes_at_most_100_tasks() {
    fargate_testkit::require_fixture!(Moto);
    let (_moto, _ecs, client, _oracle) = fixture(Moto::builder()).await;
    let ids = |n: usize| -> Vec<String> {
        (0..n)
            .map(|i| format!("arn:aws:ecs:us-east-1:123456789012:task/ci/{i:032x}"))
            .collect()
    };
    let describe = |n| {
        client
            .describe_tasks()
            .cluster("ci")
            .set_tasks(Some(ids(n)))
    };
    let message = invalid(describe(101).send().await);
    assert!(message.contains("100"), "{message}");
    let out = describe(100).send().await.unwrap();
    assert!(out.tasks().is_empty());
    assert_eq!(out.failures().len(), 100);
    assert!(out.failures().iter().all(|f| f.reason() == Some("MISSING")));
}

#[tokio::test]
async fn stop_task_refuses_unknown_tasks_and_long_reasons_and_repeats_fine() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs, client, _oracle) = fixture(Moto::builder()).await;
    let stop = |task: &str, reason: String| {
        client
            .stop_task()
            .cluster("ci")
            .task(task)
            .reason(reason)
            .send()
    };
    let message = invalid(stop(UNKNOWN, "gone".into()).await);
    assert_eq!(message, "The referenced task was not found.");
    let arn = start(run(&client, &ecs)).await;
    invalid(stop(&arn, "r".repeat(256)).await);
    assert_eq!(
        moto.describe_task("ci", &arn).await.last_status(),
        Some("RUNNING")
    );

    let out = stop(&arn, "é".repeat(255)).await.unwrap();
    assert_eq!(out.task().and_then(|t| t.last_status()), Some("STOPPED"));
    // Stopping an already stopped task succeeds.
    stop(&arn, "again".into()).await.unwrap();
    let task = moto.describe_task("ci", &arn).await;
    assert_eq!(task.desired_status(), Some("STOPPED"));
    assert_eq!(task.stop_code().map(|c| c.as_str()), Some("UserInitiated"));
}

#[tokio::test]
async fn tasks_carry_ecs_timestamps_sizes_and_zone() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs, client, _oracle) = fixture(Moto::builder()).await;
    let arn = start(run(&client, &ecs)).await;
    let task = moto.describe_task("ci", &arn).await;
    let created = task.created_at().expect("createdAt");
    let started = task.started_at().expect("startedAt");
    assert!(created <= started, "{task:?}");
    assert!(task.pull_started_at().is_some() && task.pull_stopped_at().is_some());
    assert!(task.stopped_at().is_none() && task.stop_code().is_none());
    assert_eq!(task.cpu(), Some("256"));
    assert_eq!(task.memory(), Some("512"));
    assert!(
        task.availability_zone()
            .is_some_and(|z| z.starts_with("us-east-1"))
    );

    client
        .stop_task()
        .cluster("ci")
        .task(&arn)
        .send()
        .await
        .unwrap();
    let task = moto.describe_task("ci", &arn).await;
    let stopped = task.stopped_at().expect("stoppedAt");
    assert!(task.stopping_at().is_some_and(|s| s <= stopped));
    assert!(started <= stopped);
}

#[tokio::test]
async fn a_task_that_dies_gets_a_stop_code_and_stop_times() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs, client, _oracle) = fixture(Moto::builder()).await;
    let arn = start(run(&client, &ecs)).await;
    moto.set_task_transition(1);
    let mut last = None;
    for _ in 0..8 {
        let out = client
            .describe_tasks()
            .cluster("ci")
            .tasks(&arn)
            .send()
            .await
            .unwrap();
        let task = out.tasks()[0].clone();
        if task.last_status() == Some("STOPPED") {
            last = Some(task);
            break;
        }
    }
    let task = last.expect("the task stopped");
    assert_eq!(
        task.stop_code().map(|c| c.as_str()),
        Some("EssentialContainerExited")
    );
    assert!(task.stopping_at().is_some() && task.stopped_at().is_some());
}

#[tokio::test]
async fn fargate_task_sizes_must_be_a_fargate_combination() {
    fargate_testkit::require_fixture!(Moto);
    let (_moto, _ecs, client, _oracle) = fixture(Moto::builder()).await;
    let register = |cpu: &str, memory: &str| {
        client
            .register_task_definition()
            .family("sized")
            .network_mode(NetworkMode::Awsvpc)
            .requires_compatibilities(Compatibility::Fargate)
            .cpu(cpu)
            .memory(memory)
            .container_definitions(
                ContainerDefinition::builder()
                    .name("c")
                    .image("registry.example/c:latest")
                    .memory(512)
                    .build(),
            )
            .send()
    };
    for (cpu, memory) in [
        ("256", "512"),
        ("256", "2048"),
        ("512", "4096"),
        ("1024", "2 GB"),
        ("1 vCPU", "8192"),
        ("4096", "30720"),
        ("8192", "61440"),
        ("16384", "122880"),
    ] {
        register(cpu, memory)
            .await
            .unwrap_or_else(|e| panic!("{cpu}/{memory}: {e:?}"));
    }
    for (cpu, memory) in [
        ("256", "4096"),
        ("512", "512"),
        ("1024", "1024"),
        ("8192", "18432"),
    ] {
        let message = refused(register(cpu, memory).await, "ClientException");
        assert!(
            message.starts_with("No Fargate configuration exists for given values"),
            "{message}"
        );
    }
    let message = refused(register("300", "1024").await, "ClientException");
    assert_eq!(message, "Invalid 'cpu' setting for task.");
}

#[tokio::test]
async fn a_delay_fault_hangs_only_its_operation() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs, _client, _oracle) = fixture(Moto::builder()).await;
    let proxy = FaultProxy::start(&moto.endpoint_url());
    let client = Client::new(&proxy.sdk_config());
    let arn = start(run(&client, &ecs)).await;
    let hang = Duration::from_secs(3);
    proxy.inject(Fault::delay("DescribeTasks", hang));

    let started = Instant::now();
    let hanging = {
        let (client, arn) = (client.clone(), arn.clone());
        tokio::spawn(async move { describe(&client, &arn).await })
    };
    eventually(
        "the proxy holds DescribeTasks",
        Duration::from_secs(10),
        || {
            let held = proxy
                .requests_of("DescribeTasks")
                .iter()
                .any(|r| r.delayed == Some(hang));
            async move { held }
        },
    )
    .await;
    // Other operations go through while DescribeTasks hangs.
    let list_started = Instant::now();
    assert_eq!(listed(&client).await, BTreeSet::from([arn.clone()]));
    start(run(&client, &ecs)).await;
    assert!(
        list_started.elapsed() < hang,
        "{:?}",
        list_started.elapsed()
    );
    assert!(
        !hanging.is_finished(),
        "DescribeTasks answered before the delay"
    );

    assert_eq!(hanging.await.unwrap(), (true, vec![]));
    assert!(started.elapsed() >= hang, "{:?}", started.elapsed());
    assert_eq!(proxy.pending_faults(), 0);
    // Used up: the next DescribeTasks is answered at once.
    let again = Instant::now();
    assert_eq!(describe(&client, &arn).await, (true, vec![]));
    assert!(again.elapsed() < hang);
    assert!(proxy.requests().iter().all(|r| !r.faulted));
}

/// Rule 18: task-level size overrides follow Fargate's sizes; the task reports them.
#[tokio::test]
async fn rule_18_size_overrides_follow_fargate_sizes() {
    fargate_testkit::require_fixture!(Moto);
    let (_moto, ecs, client, oracle) = fixture(Moto::builder()).await;
    let sized = |cpu: &str, memory: &str| {
        run(&client, &ecs).overrides(TaskOverride::builder().cpu(cpu).memory(memory).build())
    };
    let msg = refused(sized("256", "4096").send().await, "ClientException");
    assert!(msg.contains("No Fargate configuration exists"), "{msg}");
    let storage = aws_sdk_ecs::types::EphemeralStorage::builder()
        .size_in_gib(201)
        .build();
    invalid(
        run(&client, &ecs)
            .overrides(TaskOverride::builder().ephemeral_storage(storage).build())
            .send()
            .await,
    );
    let arn = start(sized("1024", "3072")).await;
    let task = oracle
        .describe_tasks()
        .cluster(&ecs.cluster)
        .tasks(&arn)
        .send()
        .await
        .unwrap();
    let task = &task.tasks()[0];
    assert_eq!((task.cpu(), task.memory()), (Some("1024"), Some("3072")));
}

/// Rule 19: no capacity on a provider is a `failures[]` answer with ECS's reason, for that
/// provider only.
#[tokio::test]
async fn rule_19_no_capacity_is_a_failure_per_provider() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs, client, _oracle) = fixture(Moto::builder()).await;
    moto.set_no_capacity(&["FARGATE_SPOT"]);
    let on = |provider: &str| {
        run(&client, &ecs)
            .set_launch_type(None)
            .capacity_provider_strategy(
                aws_sdk_ecs::types::CapacityProviderStrategyItem::builder()
                    .capacity_provider(provider)
                    .weight(1)
                    .build()
                    .unwrap(),
            )
    };
    let out = on("FARGATE_SPOT").send().await.unwrap();
    assert!(out.tasks().is_empty(), "{out:?}");
    assert_eq!(
        out.failures()[0].reason(),
        Some(
            "Capacity is unavailable at this time. Please try again later or in a different availability zone"
        )
    );
    start(on("FARGATE")).await;
    start(run(&client, &ecs)).await;
    moto.set_no_capacity(&[]);
    start(on("FARGATE_SPOT")).await;
}

/// Rule 20: a Spot interruption stops a FARGATE_SPOT task with ECS's code and reason, and
/// leaves other tasks alone.
#[tokio::test]
async fn rule_20_spot_interruption_stops_spot_tasks_only() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs, client, oracle) = fixture(Moto::builder()).await;
    let spot = start(
        run(&client, &ecs)
            .set_launch_type(None)
            .capacity_provider_strategy(
                aws_sdk_ecs::types::CapacityProviderStrategyItem::builder()
                    .capacity_provider("FARGATE_SPOT")
                    .weight(1)
                    .build()
                    .unwrap(),
            ),
    )
    .await;
    let on_demand = start(run(&client, &ecs)).await;
    moto.interrupt_spot_task(&spot);
    moto.interrupt_spot_task(&on_demand);
    let out = oracle
        .describe_tasks()
        .cluster(&ecs.cluster)
        .tasks(&spot)
        .tasks(&on_demand)
        .send()
        .await
        .unwrap();
    let by_arn = |arn: &str| {
        out.tasks()
            .iter()
            .find(|t| t.task_arn() == Some(arn))
            .unwrap()
    };
    let stopped = by_arn(&spot);
    assert_eq!(stopped.last_status(), Some("STOPPED"));
    assert_eq!(
        stopped.stop_code().map(|c| c.as_str()),
        Some("SpotInterruption")
    );
    assert_eq!(
        stopped.stopped_reason(),
        Some("Your Spot Task was interrupted.")
    );
    assert_eq!(by_arn(&on_demand).last_status(), Some("RUNNING"));
}

/// A Fargate task definition `family` with `containers` and `volumes`, registered by
/// `client`.
async fn register_containers(
    client: &Client,
    family: &str,
    containers: Vec<ContainerDefinition>,
    volumes: &[&str],
) -> Result<
    aws_sdk_ecs::operation::register_task_definition::RegisterTaskDefinitionOutput,
    SdkError<
        aws_sdk_ecs::operation::register_task_definition::RegisterTaskDefinitionError,
        HttpResponse,
    >,
> {
    client
        .register_task_definition()
        .family(family)
        .network_mode(NetworkMode::Awsvpc)
        .requires_compatibilities(Compatibility::Fargate)
        .cpu("256")
        .memory("512")
        .set_container_definitions(Some(containers))
        .set_volumes(Some(
            volumes
                .iter()
                .map(|v| aws_sdk_ecs::types::Volume::builder().name(*v).build())
                .collect(),
        ))
        .send()
        .await
}

fn container(
    name: &str,
    essential: bool,
) -> aws_sdk_ecs::types::builders::ContainerDefinitionBuilder {
    ContainerDefinition::builder()
        .name(name)
        .image("registry.example/c:latest")
        .essential(essential)
}

fn depends(
    on: &str,
    condition: aws_sdk_ecs::types::ContainerCondition,
) -> aws_sdk_ecs::types::ContainerDependency {
    aws_sdk_ecs::types::ContainerDependency::builder()
        .container_name(on)
        .condition(condition)
        .build()
        .unwrap()
}

#[tokio::test]
async fn task_definitions_follow_ecs_container_rules() {
    use aws_sdk_ecs::types::{ContainerCondition, MountPoint, PortMapping};
    fargate_testkit::require_fixture!(Moto);
    let (_moto, _ecs, client, _oracle) = fixture(Moto::builder()).await;
    // What a derived definition does is accepted: a non-essential init container the
    // essential one waits for with SUCCESS, a shared volume, matching awsvpc ports.
    register_containers(
        &client,
        "derived-ok",
        vec![
            container("init", false).build(),
            container("main", true)
                .depends_on(depends("init", ContainerCondition::Success))
                .mount_points(
                    MountPoint::builder()
                        .source_volume("shared")
                        .container_path("/s")
                        .build(),
                )
                .port_mappings(
                    PortMapping::builder()
                        .container_port(2222)
                        .host_port(2222)
                        .build(),
                )
                .build(),
        ],
        &["shared"],
    )
    .await
    .unwrap();

    let cases: Vec<(&str, Vec<ContainerDefinition>, &[&str], &str)> = vec![
        (
            "success-on-essential",
            vec![
                container("a", true).build(),
                container("b", true)
                    .depends_on(depends("a", ContainerCondition::Success))
                    .build(),
            ],
            &[],
            "Dependency condition SUCCESS can't be set on an essential container (a).",
        ),
        (
            "unknown-dependency",
            vec![
                container("a", true)
                    .depends_on(depends("x", ContainerCondition::Start))
                    .build(),
            ],
            &[],
            "Container a depends on unknown container x.",
        ),
        (
            "no-essential",
            vec![container("a", false).build()],
            &[],
            "A task definition must have at least one essential container.",
        ),
        (
            "unknown-volume",
            vec![
                container("a", true)
                    .mount_points(
                        MountPoint::builder()
                            .source_volume("nope")
                            .container_path("/n")
                            .build(),
                    )
                    .build(),
            ],
            &[],
            "Invalid 'mountPoints' setting for container a: unknown volume nope.",
        ),
        (
            "port-mismatch",
            vec![
                container("a", true)
                    .port_mappings(
                        PortMapping::builder()
                            .container_port(22)
                            .host_port(2022)
                            .build(),
                    )
                    .build(),
            ],
            &[],
            "When networkMode=awsvpc, the host ports and container ports in port mappings must match.",
        ),
        (
            "secrets-without-execution-role",
            vec![
                container("a", true)
                    .secrets(
                        aws_sdk_ecs::types::Secret::builder()
                            .name("PASSWORD")
                            .value_from("arn:aws:secretsmanager:us-east-1:123456789012:secret:x")
                            .build()
                            .unwrap(),
                    )
                    .build(),
            ],
            &[],
            "When you are specifying container secrets, you must also specify a value for 'executionRoleArn'.",
        ),
        (
            "duplicate",
            vec![container("a", true).build(), container("a", false).build()],
            &[],
            "Duplicate container name: a.",
        ),
        (
            "too-many",
            (0..11)
                .map(|i| container(&format!("c{i}"), true).build())
                .collect(),
            &[],
            "Too many containers: 11; a task definition has 1 to 10.",
        ),
        (
            "bad name!",
            vec![container("a", true).build()],
            &[],
            "Family name can be up to 255 letters (uppercase and lowercase), numbers, hyphens, and underscores.",
        ),
    ];
    for (family, containers, volumes, expected) in cases {
        let message = refused(
            register_containers(&client, family, containers, volumes).await,
            "ClientException",
        );
        assert_eq!(message, expected, "{family}");
    }
}

#[tokio::test]
async fn concurrent_revisions_of_a_family_are_refused_and_inactive_ones_not_used() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs, client, _oracle) = fixture(Moto::builder()).await;
    moto.set_register_hold(Duration::from_millis(400));
    let one = || register_containers(&client, "raced", vec![container("a", true).build()], &[]);
    // Both are sent at once; the hold keeps the first one ECS takes in flight, so the other
    // one (whichever it is) arrives while it registers.
    let refusal = match tokio::join!(one(), one()) {
        (Ok(_), refusal @ Err(_)) | (refusal @ Err(_), Ok(_)) => refusal,
        other => panic!("expected one registration and one refusal: {other:?}"),
    };
    let message = refused(refusal, "ClientException");
    assert_eq!(
        message,
        "Too many concurrent attempts to create a new revision of the specified family."
    );
    moto.set_register_hold(Duration::ZERO);
    // One after the other is fine; the family names its latest ACTIVE revision.
    let second = one().await.unwrap();
    let revision_2 = second
        .task_definition()
        .unwrap()
        .task_definition_arn()
        .unwrap()
        .to_owned();
    client
        .deregister_task_definition()
        .task_definition(&revision_2)
        .send()
        .await
        .unwrap();
    let latest = client
        .describe_task_definition()
        .task_definition("raced")
        .send()
        .await
        .unwrap();
    assert_eq!(latest.task_definition().unwrap().revision(), 1);
    // RunTask refuses the INACTIVE revision, runs the ACTIVE one.
    let message = refused(
        run(&client, &ecs).task_definition(&revision_2).send().await,
        "ClientException",
    );
    assert_eq!(message, "TaskDefinition is inactive");
    client
        .deregister_task_definition()
        .task_definition("raced:1")
        .send()
        .await
        .unwrap();
    let message = refused(
        client
            .describe_task_definition()
            .task_definition("raced")
            .send()
            .await,
        "ClientException",
    );
    assert_eq!(message, "Unable to describe task definition.");
}

/// TagResource follows RunTask's tag rules, and a resource keeps at most 50 tags after the
/// merge (`aws:` keys not counted); UntagResource and TagResource of an unknown resource
/// are ResourceNotFoundException; RegisterTaskDefinition's tags follow the same rules.
#[tokio::test]
async fn tag_resource_follows_the_tag_rules_and_50_per_resource_after_the_merge() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs, client, _oracle) = fixture(Moto::builder()).await;
    let forty_nine: Vec<Tag> = (0..49).map(|i| tag(format!("k{i}"), "v")).collect();
    let arn = start(run(&client, &ecs).set_tags(Some(forty_nine))).await;
    let tag_task = |t: Tag| client.tag_resource().resource_arn(&arn).tags(t).send();
    // Overwriting a key does not count twice; the 50th key fits, the 51st does not.
    tag_task(tag("k0", "changed")).await.unwrap();
    tag_task(tag("k49", "v")).await.unwrap();
    let message = invalid(tag_task(tag("k50", "v")).await);
    assert!(message.contains("50"), "{message}");
    for bad in [
        tag("aws:reserved", "v"),
        tag("a,b", "v"),
        tag("k", "v".repeat(257)),
    ] {
        invalid(tag_task(bad).await);
    }
    let tags = moto.describe_task("ci", &arn).await.tags().to_vec();
    assert_eq!(tags.len(), 50);
    assert!(tags.contains(&tag("k0", "changed")));
    // Untagging makes room again.
    client
        .untag_resource()
        .resource_arn(&arn)
        .tag_keys("k49")
        .send()
        .await
        .unwrap();
    tag_task(tag("k50", "v")).await.unwrap();
    let unknown = client
        .tag_resource()
        .resource_arn(UNKNOWN)
        .tags(tag("k", "v"))
        .send()
        .await;
    refused(unknown, "ResourceNotFoundException");
    let unknown = client
        .untag_resource()
        .resource_arn(UNKNOWN)
        .tag_keys("k")
        .send()
        .await;
    refused(unknown, "ResourceNotFoundException");
    // Task definitions: the same rules.
    tag_definition(&client, &ecs.task_definition, tag("cost-center", "ci"))
        .await
        .unwrap();
    invalid(tag_definition(&client, &ecs.task_definition, tag("aws:x", "v")).await);
    let registered = client
        .register_task_definition()
        .family("tagged")
        .requires_compatibilities(Compatibility::Fargate)
        .network_mode(NetworkMode::Awsvpc)
        .cpu("256")
        .memory("512")
        .container_definitions(
            ContainerDefinition::builder()
                .name("c")
                .image("i")
                .memory(512)
                .build(),
        )
        .tags(tag("aws:cloudformation:stack-name", "s"))
        .send()
        .await;
    invalid(registered);
}

async fn tag_definition(
    client: &Client,
    arn: &str,
    t: Tag,
) -> Result<
    aws_sdk_ecs::operation::tag_resource::TagResourceOutput,
    SdkError<aws_sdk_ecs::operation::tag_resource::TagResourceError, HttpResponse>,
> {
    client.tag_resource().resource_arn(arn).tags(t).send().await
}

/// `FaultProxy::hold` holds the next request of one operation until it is released, while
/// other operations go through: interleaving without sleeps.
#[tokio::test]
async fn a_held_request_waits_for_its_release_only() {
    fargate_testkit::require_fixture!(Moto);
    let (moto, ecs, _client, _oracle) = fixture(Moto::builder()).await;
    let proxy = FaultProxy::start(&moto.endpoint_url());
    let client = Client::new(&proxy.sdk_config());
    let mut held = proxy.hold("RunTask");
    let launching = {
        let request = run(&client, &ecs);
        tokio::spawn(async move { start(request).await })
    };
    held.arrived().await;
    assert!(moto.run_task_requests().is_empty(), "moto has not seen it");
    assert!(
        listed(&client).await.is_empty(),
        "other operations go through"
    );
    assert!(!launching.is_finished());
    held.release();
    let arn = launching.await.unwrap();
    assert_eq!(listed(&client).await, BTreeSet::from([arn]));
    // Used up: the next RunTask is not held.
    start(run(&client, &ecs)).await;
}
