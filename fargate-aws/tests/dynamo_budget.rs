//! The fleet's API budget in the DynamoDB table ([`DynamoCallBudget`]), shared by runner
//! hosts that are separate OS processes (this test executable, re-run as workers, each with
//! its own store and host name), against moto's DynamoDB and its ECS throttling fixture.
//!
//! On moto only, unlike the store's other tests (`fargate_testkit::dynamodb_tests!` runs
//! those on dynalite too): what is measured is the fleet bucket against moto's ECS
//! throttling (`Moto::set_throttling`, `Moto::throttled_calls`), and the worker processes
//! reach ECS and the table through one endpoint. So the budget item's own path for a lost
//! write whose answer carries no item (it reads the item again), which dynalite would
//! take, is not run here.

#![allow(clippy::unwrap_used, clippy::expect_used)] // test code: a failed step is a failed test

use std::io::{BufRead as _, BufReader};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use fargate_aws::dynamo_store::{DynamoCallBudget, DynamoStore, TableSettings};
use fargate_aws::{EcsConfig, EcsLauncher, SdkTransport};
use fargate_core::budget::{
    BudgetedLauncher, CallBudget, CallClass, CallRates, MemoryCallBudget, Rate,
};
use fargate_core::testing::ManualClock;
use fargate_core::{ErrorKind, Namespace, TaskLauncher};
use fargate_testkit::moto::{Moto, MotoEcs};

const ROLE_ENV: &str = "FARGATE_FLEET_BUDGET_ROLE";
const ENDPOINT_ENV: &str = "FARGATE_FLEET_BUDGET_ENDPOINT";
const ECS_ENV: &str = "FARGATE_FLEET_BUDGET_ECS";
const RATE_ENV: &str = "FARGATE_FLEET_BUDGET_RATE";
const LAUNCHES_ENV: &str = "FARGATE_FLEET_BUDGET_LAUNCHES";
const HOST_ENV: &str = "FARGATE_FLEET_BUDGET_HOST";
const MARK: &str = "@@";
const TABLE: &str = "fleet";

fn namespace() -> Namespace {
    Namespace::parse("fleet").unwrap()
}

/// `per_second/burst` for launches; stops at twice that; tasks (one a launch here) never
/// the limit.
fn rates(text: &str) -> CallRates {
    let (per_second, burst) = text.split_once('/').unwrap();
    let (per_second, burst): (f64, f64) = (per_second.parse().unwrap(), burst.parse().unwrap());
    CallRates::new(
        Rate::new(per_second, burst),
        Rate::new(per_second * 2.0, burst * 2.0),
        Rate::new(per_second * 10.0, burst * 10.0),
    )
}

fn store(endpoint: &str, host: &str) -> DynamoStore {
    DynamoStore::new(
        TABLE,
        &fargate_testkit::moto::sdk_config_for(endpoint),
        None,
        &SdkTransport::default(),
    )
    .unwrap()
    .with_host(host)
}

fn now_secs() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

// ---- the workers (child processes) ----

/// A host: launches `LAUNCHES_ENV` tasks at once through its budget (`fleet`: the table's
/// shared bucket; `host`: a bucket of its own, as without the fleet bucket), each retried
/// at once when throttled (the budget decides when it goes). Reports its throttled calls
/// and the DynamoDB requests its budget made.
async fn host(role: &str, endpoint: &str) {
    let ecs: serde_json::Value = serde_json::from_str(&std::env::var(ECS_ENV).unwrap()).unwrap();
    let strings = |v: &serde_json::Value| -> Vec<String> {
        v.as_array()
            .unwrap()
            .iter()
            .map(|s| s.as_str().unwrap().to_owned())
            .collect()
    };
    let mut config = EcsConfig::new(
        ecs["cluster"].as_str().unwrap(),
        strings(&ecs["subnets"]),
        strings(&ecs["security_groups"]),
    );
    config.transport = SdkTransport::single_attempt();
    let fixture = MotoEcs {
        cluster: ecs["cluster"].as_str().unwrap().to_owned(),
        task_definition: ecs["task_definition"].as_str().unwrap().to_owned(),
        subnets: strings(&ecs["subnets"]),
        security_groups: strings(&ecs["security_groups"]),
    };
    let ecs_launcher = Arc::new(
        EcsLauncher::new(config, &fargate_testkit::moto::sdk_config_for(endpoint)).unwrap(),
    );
    let host_name = std::env::var(HOST_ENV).unwrap();
    let store = store(endpoint, &host_name);
    let rates = rates(&std::env::var(RATE_ENV).unwrap());
    let budget: Arc<dyn CallBudget> = match role {
        "fleet" => Arc::new(store.call_budget(&namespace(), rates)),
        _ => Arc::new(MemoryCallBudget::new(rates)),
    };
    // Warm both clients up (credentials, connections), so that the first launches are not
    // late and then bunched; neither call is budgeted nor throttled.
    ecs_launcher.find(&fixture.spec(0).key).await.unwrap();
    store.check_table().await.unwrap();
    store.api_calls().reset();
    let l: Arc<dyn TaskLauncher> = Arc::new(BudgetedLauncher::new(ecs_launcher, budget));
    let launches: u64 = std::env::var(LAUNCHES_ENV).unwrap().parse().unwrap();
    let offset = if host_name.ends_with('a') { 0 } else { 1000 };
    let mut handles = Vec::new();
    for job in 1..=launches {
        let l = l.clone();
        let spec = fixture.spec(offset + job);
        handles.push(tokio::spawn(async move {
            let mut throttled = 0u32;
            for _ in 0..50 {
                match l.launch(&spec).await {
                    Ok(_) => {
                        println!("{MARK}launched {:.3}", now_secs());
                        return throttled;
                    }
                    Err(e) if e.kind() == ErrorKind::Throttled => throttled += 1,
                    Err(e) => panic!("job {job}: {e}"),
                }
            }
            panic!("job {job}: still throttled after 50 attempts");
        }));
    }
    let mut throttled = 0;
    for h in handles {
        throttled += h.await.unwrap();
    }
    println!("{MARK}throttled {throttled}");
    println!("{MARK}dynamodb {}", store.api_calls().total());
}

/// A host that reserves launch tokens of the fleet bucket as fast as it can, never calling,
/// reporting each, until it is killed.
async fn hog(endpoint: &str) {
    let budget =
        store(endpoint, "hog").call_budget(&namespace(), rates(&std::env::var(RATE_ENV).unwrap()));
    loop {
        let r = budget.reserve(CallClass::Launch, 1).await.unwrap();
        println!("{MARK}reserved {}", r.wait.as_millis());
    }
}

/// Runs the worker this process was started as, if it was: whether it was.
async fn as_worker() -> bool {
    let (Ok(role), Ok(endpoint)) = (std::env::var(ROLE_ENV), std::env::var(ENDPOINT_ENV)) else {
        return false;
    };
    match role.as_str() {
        "hog" => hog(&endpoint).await,
        role => host(role, &endpoint).await,
    }
    true
}

// ---- the test's side ----

struct Fixture {
    moto: Moto,
    ecs: MotoEcs,
}

impl Fixture {
    async fn start() -> Fixture {
        let moto = Moto::start();
        let ecs = moto.setup().await;
        let check = store(&moto.endpoint_url(), "init")
            .init_table(&TableSettings::default())
            .await
            .unwrap();
        assert!(check.usable(), "{check:?}");
        Fixture { moto, ecs }
    }

    /// Starts worker `role` of `test` as host `host` with `rate` and `launches`.
    fn spawn(&self, test: &str, role: &str, host: &str, rate: &str, launches: u32) -> Worker {
        let ecs = serde_json::json!({
            "cluster": self.ecs.cluster,
            "task_definition": self.ecs.task_definition,
            "subnets": self.ecs.subnets,
            "security_groups": self.ecs.security_groups,
        });
        let child = Command::new(std::env::current_exe().unwrap())
            .args(["--exact", test, "--nocapture", "--test-threads=1"])
            .env(ROLE_ENV, role)
            .env(ENDPOINT_ENV, self.moto.endpoint_url())
            .env(ECS_ENV, ecs.to_string())
            .env(RATE_ENV, rate)
            .env(LAUNCHES_ENV, launches.to_string())
            .env(HOST_ENV, host)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap();
        Worker(Some(child))
    }

    /// Runs hosts `a` and `b` of `test` as `role` at `rate`, `launches` each, at once;
    /// returns their throttled calls, their DynamoDB requests and when each launch
    /// succeeded (Unix s).
    fn two_hosts(&self, test: &str, role: &str, rate: &str, launches: u32) -> (u64, u64, Vec<f64>) {
        let hosts = [
            self.spawn(test, role, "host-a", rate, launches),
            self.spawn(test, role, "host-b", rate, launches),
        ];
        let (mut throttled, mut requests, mut launched) = (0, 0, Vec::new());
        for mut w in hosts {
            let out = w.0.take().unwrap().wait_with_output().unwrap();
            assert!(out.status.success(), "a host failed");
            let text = String::from_utf8_lossy(&out.stdout);
            let value = |what: &str| -> u64 {
                text.lines()
                    .find_map(|l| l.split_once(&format!("{MARK}{what} ")))
                    .unwrap_or_else(|| panic!("no {what} in {text}"))
                    .1
                    .trim()
                    .parse()
                    .unwrap()
            };
            throttled += value("throttled");
            requests += value("dynamodb");
            launched.extend(text.lines().filter_map(|l| {
                l.split_once(&format!("{MARK}launched "))
                    .map(|(_, at)| at.trim().parse::<f64>().unwrap())
            }));
        }
        assert_eq!(launched.len() as u32, 2 * launches, "every launch reported");
        (throttled, requests, launched)
    }
}

/// A child process killed when the test ends, whichever way it ends.
struct Worker(Option<Child>);

impl Drop for Worker {
    fn drop(&mut self) {
        if let Some(child) = &mut self.0 {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

#[tokio::test]
async fn two_hosts_sharing_the_fleet_bucket_keep_to_its_rate() {
    if as_worker().await {
        return;
    }
    fargate_testkit::require_fixture!(Moto);
    let test = "two_hosts_sharing_the_fleet_bucket_keep_to_its_rate";
    let f = Fixture::start().await;
    // The account allows 3 launches a second (a bucket of 4); the fleet's share is 2 a
    // second (a bucket of 1), which both hosts are configured with. The margin lets calls
    // arrive up to 1.5 s late and then bunch (a loaded machine, a slow fixture) without
    // meeting the account's limit; two buckets of the share (4 a second together) still
    // exceed it by far.
    f.moto.set_throttling(&[("RunTask", 3.0, 4.0)]);
    let (throttled, requests, _) = f.two_hosts(test, "fleet", "2/1", 12);
    let fixture_saw = f.moto.throttled_calls();
    assert_eq!(
        (throttled, fixture_saw.len()),
        (0, 0),
        "the shared bucket was throttled: {fixture_saw:?}"
    );
    let per_launch = requests as f64 / 24.0;
    eprintln!(
        "DynamoDB requests of the fleet budget: {requests} for 24 launches ({per_launch:.2} each)"
    );
    assert!(
        per_launch <= 4.0,
        "{requests} DynamoDB requests for 24 launches"
    );

    // The same share in a bucket per host (as without the fleet bucket): together they go
    // at twice the account's rate, and are throttled.
    let (throttled, _, _) = f.two_hosts(test, "host", "2/1", 12);
    let fixture_saw = f.moto.throttled_calls().len();
    assert!(
        throttled > 0 && fixture_saw > 0,
        "two host buckets of the fleet's share were never throttled"
    );
}

#[tokio::test]
async fn a_throttling_storm_of_two_hosts_is_ended_by_the_fleet_bucket() {
    if as_worker().await {
        return;
    }
    fargate_testkit::require_fixture!(Moto);
    let test = "a_throttling_storm_of_two_hosts_is_ended_by_the_fleet_bucket";
    let f = Fixture::start().await;
    // The fleet's budget thinks it has twice what the account allows (another tool uses
    // the account): the first throttles, whichever host meets them, halve it for both
    // hosts, until it is well under the account's rate; the rate then recovers over 20 s,
    // longer than the rest of the burst takes. Low rates, so that even a slow fixture on a
    // loaded machine answers calls faster than the budget sends them.
    f.moto.set_throttling(&[("RunTask", 2.0, 2.0)]);
    let (throttled, _, mut launched) = f.two_hosts(test, "fleet", "4/2", 12);
    let seen = f.moto.throttled_calls();
    eprintln!("throttled calls of the optimistic fleet budget: {throttled}");
    assert!(
        throttled > 0,
        "the optimistic budget was throttled at first"
    );
    assert!(
        throttled <= 10,
        "{throttled} throttled calls for 24 launches: the hosts did not slow down"
    );
    // The storm ended: the last launches all went after the last throttle.
    let last_throttle = seen
        .iter()
        .map(|t| t["at"].as_f64().unwrap())
        .fold(0.0, f64::max);
    launched.sort_by(f64::total_cmp);
    let after = launched.iter().filter(|&&at| at > last_throttle).count();
    eprintln!("launches after the last throttle: {after} of 24");
    assert!(
        after >= 8,
        "only {after} of 24 launches went after the last throttle"
    );
}

#[tokio::test]
async fn a_throttle_seen_by_one_host_slows_the_other() {
    fargate_testkit::require_fixture!(Moto);
    let f = Fixture::start().await;
    let endpoint = f.moto.endpoint_url();
    let clock = Arc::new(ManualClock::at(SystemTime::now()));
    let on = |host: &str| -> DynamoCallBudget {
        store(&endpoint, host)
            .with_clock(clock.clone())
            .call_budget(&namespace(), rates("10/2"))
    };
    let (a, b) = (on("host-a"), on("host-b"));
    // Host b takes the burst and queues two more calls, 100 and 200 ms ahead (the clock
    // stands still: nothing refills).
    for _ in 0..2 {
        assert_eq!(
            b.reserve(CallClass::Launch, 1).await.unwrap().wait,
            Duration::ZERO
        );
    }
    b.reserve(CallClass::Launch, 1).await.unwrap();
    let queued = b.reserve(CallClass::Launch, 1).await.unwrap();
    assert_eq!(queued.wait, Duration::from_millis(200));
    // Host a is throttled by ECS: the shared rate halves and the queue is void.
    a.throttled(CallClass::Launch).await.unwrap();
    let again = b
        .confirm(CallClass::Launch, queued)
        .await
        .unwrap()
        .expect("host b's turn was voided by host a's throttle");
    // At half the rate: 200 ms for one token, not 100.
    assert!(again.wait >= Duration::from_millis(190), "{again:?}");
    // Host a's own next call queues behind it, at the slower rate too.
    let next = a.reserve(CallClass::Launch, 1).await.unwrap();
    assert!(next.wait >= Duration::from_millis(380), "{next:?}");
    // A second report within the second (host b met the same storm) halves nothing more.
    b.throttled(CallClass::Launch).await.unwrap();
    assert_eq!(a.confirm(CallClass::Launch, next).await.unwrap(), None);
}

#[tokio::test]
async fn a_host_killed_while_reserving_leaks_nothing() {
    if as_worker().await {
        return;
    }
    fargate_testkit::require_fixture!(Moto);
    let test = "a_host_killed_while_reserving_leaks_nothing";
    let f = Fixture::start().await;
    // The hog reserves far ahead of a 5/s bucket of 2, as fast as it can, and is killed
    // in the middle of it (whichever request it is in).
    let mut hog = f.spawn(test, "hog", "hog", "5/2", 0);
    let out = hog.0.as_mut().unwrap().stdout.take().unwrap();
    let mut lines = BufReader::new(out).lines();
    let mut reserved = 0u32;
    while reserved < 30 {
        let line = lines.next().expect("the hog reports").unwrap();
        if line.starts_with(&format!("{MARK}reserved ")) {
            reserved += 1;
        }
    }
    let child = hog.0.as_mut().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    // What the hog may have reserved: what it reported, and at most one write in flight
    // plus the lines not read yet.
    let more = lines
        .map_while(std::result::Result::ok)
        .filter(|l| l.starts_with(&format!("{MARK}reserved ")))
        .count() as u32;
    let spent = f64::from(reserved + more + 1);
    let clock = Arc::new(ManualClock::at(SystemTime::now()));
    let budget = store(&f.moto.endpoint_url(), "survivor")
        .with_clock(clock.clone())
        .call_budget(&namespace(), rates("5/2"));
    // The survivor queues behind the hog's reservations, and nothing else: its turn comes
    // when the tokens the hog spent have refilled.
    let r = budget.reserve(CallClass::Launch, 1).await.unwrap();
    let bound = Duration::from_secs_f64((spent - 2.0 + 1.0) / 5.0 + 0.05);
    assert!(
        r.wait > Duration::ZERO && r.wait <= bound,
        "{r:?}, the hog reserved at most {spent}"
    );
    clock.advance(r.wait);
    assert_eq!(budget.confirm(CallClass::Launch, r).await.unwrap(), None);
    // Once the bucket had time to refill, its burst is whole again: nothing is held.
    clock.advance(Duration::from_secs(1));
    for _ in 0..2 {
        assert_eq!(
            budget.reserve(CallClass::Launch, 1).await.unwrap().wait,
            Duration::ZERO
        );
    }
}
