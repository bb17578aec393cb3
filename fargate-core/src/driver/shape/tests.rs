use super::*;
use crate::options::{CapacityProfile, ProjectRule};
use crate::shape::{CapacityProvider, SizeCatalog};

const DEPLOY_ROLE: &str = "arn:aws:iam::123456789012:role/ci/deploy";

/// A backend's catalog, as a launcher crate provides one (these are some of Fargate's sizes,
/// as test data: the core knows none).
fn catalog() -> SizeCatalog {
    let steps = |low: u32, high: u32| (low..=high).step_by(1024).collect::<Vec<_>>();
    SizeCatalog::new(
        "Fargate",
        [
            (256, vec![512, 1024, 2048]),
            (512, steps(1024, 4096)),
            (1024, steps(2048, 8192)),
            (2048, steps(4096, 16384)),
            (4096, steps(8192, 30720)),
        ],
    )
    .with_storage(21, 200, 20)
}

fn policy() -> ShapePolicy {
    let mut deploy = ProjectRule::new("deploy");
    deploy.projects = vec!["infra/*".into()];
    deploy.task_roles = vec![DEPLOY_ROLE.into()];
    deploy.subnets = vec!["subnet-private".into()];
    deploy.security_groups = vec!["sg-deploy".into()];
    ShapePolicy {
        cpu: SizeLimit::new(Some(512), Some(4096), OverMax::Clamp),
        memory: SizeLimit::new(None, Some(16384), OverMax::Refuse),
        ephemeral_storage: SizeLimit::new(None, Some(100), OverMax::Clamp),
        capacity_profiles: vec![
            CapacityProfile::new("spot", vec![CapacityProvider::new("FARGATE_SPOT")])
                .with_fallback("on-demand"),
            CapacityProfile::new("on-demand", vec![CapacityProvider::new("FARGATE")]),
        ],
        project_rules: vec![deploy],
        sizes: Some(catalog()),
        ..ShapePolicy::default()
    }
}

fn request(cpu: Option<&str>, memory: Option<&str>) -> ShapeRequest {
    ShapeRequest {
        cpu: cpu.map(str::to_owned),
        memory: memory.map(str::to_owned),
        ..ShapeRequest::default()
    }
}

fn infra() -> TrustedProject {
    TrustedProject {
        path: Some("infra/site".into()),
        id: Some(7),
    }
}

fn resolve(p: &ShapePolicy, r: &ShapeRequest) -> Result<ShapeDecision> {
    resolve_shape(p, r, &TrustedProject::default(), None)
}

#[test]
fn nothing_asked_and_no_defaults_changes_nothing() {
    let d = resolve(&ShapePolicy::default(), &ShapeRequest::default()).unwrap();
    assert!(d.shape.is_empty() && d.fallbacks.is_empty() && d.notes.is_empty());
}

#[test]
fn without_the_backends_catalog_sizes_pass_as_asked_within_the_maxima() {
    let p = ShapePolicy {
        sizes: None,
        ..policy()
    };
    let d = resolve(&p, &request(Some("1024"), Some("3000"))).unwrap();
    assert_eq!((d.shape.cpu, d.shape.memory), (Some(1024), Some(3000)));
    assert!(d.notes.is_empty(), "{:?}", d.notes);
    let d = resolve(&p, &request(None, Some("3000"))).unwrap();
    assert_eq!((d.shape.cpu, d.shape.memory), (Some(512), Some(3000)));
    let d = resolve(
        &p,
        &ShapeRequest {
            ephemeral_storage: Some("10".into()),
            ..ShapeRequest::default()
        },
    )
    .unwrap();
    assert_eq!(d.shape.ephemeral_storage, Some(10), "the backend judges it");
}

#[test]
fn defaults_apply_when_the_job_asks_for_nothing() {
    let d = resolve(&policy(), &ShapeRequest::default()).unwrap();
    // The CPU default alone gets the smallest memory of that size.
    assert_eq!((d.shape.cpu, d.shape.memory), (Some(512), Some(1024)));
    assert_eq!(d.shape.ephemeral_storage, None);
    assert_eq!(d.shape.capacity, None);
}

#[test]
fn sizes_in_every_accepted_notation() {
    let p = policy();
    for (cpu, memory, want) in [
        ("1024", "2048", (1024, 2048)),
        ("1 vCPU", "2 GB", (1024, 2048)),
        ("2vcpu", "4Gi", (2048, 4096)),
        ("0.25 vCPU", "512Mi", (256, 512)),
        ("4096", "16384 MiB", (4096, 16384)),
    ] {
        let d = resolve(&p, &request(Some(cpu), Some(memory))).unwrap();
        assert_eq!(
            (d.shape.cpu.unwrap(), d.shape.memory.unwrap()),
            want,
            "{cpu} {memory}"
        );
        assert!(d.notes.is_empty(), "{:?}", d.notes);
    }
    let d = resolve(
        &p,
        &ShapeRequest {
            ephemeral_storage: Some("50 GB".into()),
            ..ShapeRequest::default()
        },
    )
    .unwrap();
    assert_eq!(d.shape.ephemeral_storage, Some(50));
}

#[test]
fn a_size_above_its_maximum_is_clamped_with_a_note_or_refused() {
    let p = policy();
    let d = resolve(&p, &request(Some("16384"), None)).unwrap();
    assert_eq!((d.shape.cpu, d.shape.memory), (Some(4096), Some(8192)));
    assert_eq!(
        d.notes,
        [
            "FARGATE_CPU=16384 is above this runner's maximum of 4096 CPU units: the task gets 4096 CPU units"
        ]
    );
    let err = resolve(&p, &request(None, Some("32 GB"))).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotAllowed);
    assert_eq!(
        err.message(),
        "FARGATE_MEMORY=32 GB is above this runner's maximum of 16384 MiB"
    );
    assert_eq!(
        err.hint(),
        Some("ask for at most 16384 MiB (the most memory per job)")
    );
    assert_eq!(err.settings(), [crate::Setting::MaxMemory]);
    let d = resolve(
        &p,
        &ShapeRequest {
            ephemeral_storage: Some("500".into()),
            ..ShapeRequest::default()
        },
    )
    .unwrap();
    assert_eq!(d.shape.ephemeral_storage, Some(100));
    assert_eq!(d.notes.len(), 1);
}

#[test]
fn a_key_without_a_maximum_may_not_be_asked_for() {
    let err = resolve(&ShapePolicy::default(), &request(Some("1024"), None)).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotAllowed);
    assert!(
        err.message().contains("does not let jobs choose it"),
        "{err}"
    );
    assert_eq!(err.settings(), [crate::Setting::MaxCpu]);
    assert_eq!(err.kind().failure_class(), crate::FailureClass::Script);
}

#[test]
fn unreadable_sizes_are_refused_naming_the_variable() {
    for (cpu, memory) in [(Some("lots"), None), (None, Some("-1")), (Some("0"), None)] {
        let err = resolve(&policy(), &request(cpu, memory)).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotAllowed);
        assert!(err.message().contains("is not a size"), "{err}");
    }
}

#[test]
fn invalid_combinations_get_the_nearest_larger_fargate_size() {
    let p = policy();
    // 3000 MiB is no size: 1024 units go up to 3072.
    let d = resolve(&p, &request(Some("1024"), Some("3000"))).unwrap();
    assert_eq!((d.shape.cpu, d.shape.memory), (Some(1024), Some(3072)));
    assert_eq!(d.notes.len(), 1, "{:?}", d.notes);
    assert!(
        d.notes[0].contains("1024 CPU units and 3072 MiB"),
        "{:?}",
        d.notes
    );
    // 3000 units is no CPU value: the next is 4096, whose smallest memory is 8 GB.
    let d = resolve(&p, &request(Some("3000"), None)).unwrap();
    assert_eq!((d.shape.cpu, d.shape.memory), (Some(4096), Some(8192)));
    // 256 units cannot have 8 GB: memory alone raises the CPU to what that size needs.
    let d = resolve(&p, &request(Some("256"), Some("8 GB"))).unwrap();
    assert_eq!((d.shape.cpu, d.shape.memory), (Some(1024), Some(8192)));
    // Beyond what the maxima allow: refused, listing the sizes allowed.
    let mut small = policy();
    small.cpu.max = Some(512);
    let err = resolve(&small, &request(None, Some("8192"))).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotAllowed);
    assert_eq!(
        err.hint(),
        Some("sizes this runner allows: 256 CPU units: 512-2048 MiB; 512 CPU units: 1024-4096 MiB")
    );
}

#[test]
fn small_ephemeral_storage_keeps_the_default() {
    let d = resolve(
        &policy(),
        &ShapeRequest {
            ephemeral_storage: Some("10".into()),
            ..ShapeRequest::default()
        },
    )
    .unwrap();
    assert_eq!(d.shape.ephemeral_storage, None);
    assert_eq!(d.notes.len(), 1);
}

#[test]
fn capacity_profiles_with_their_fallbacks() {
    let p = policy();
    let ask = |c: &str| ShapeRequest {
        capacity: Some(c.into()),
        ..ShapeRequest::default()
    };
    let d = resolve(&p, &ask("spot")).unwrap();
    assert_eq!(d.shape.capacity.as_ref().unwrap().profile, "spot");
    assert_eq!(d.fallbacks.len(), 1);
    assert_eq!(d.fallbacks[0].providers, [CapacityProvider::new("FARGATE")]);
    let d = resolve(&p, &ask("on-demand")).unwrap();
    assert!(d.fallbacks.is_empty());
    let err = resolve(&p, &ask("cheapest")).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotAllowed);
    assert_eq!(err.hint(), Some("allowed: spot, on-demand"));
    let err = resolve(&ShapePolicy::default(), &ask("spot")).unwrap_err();
    assert!(err.hint().unwrap().contains("capacity profiles"), "{err:?}");
    assert_eq!(err.settings(), [crate::Setting::CapacityProfiles]);
    // The default profile applies to jobs that ask for none.
    let mut p = policy();
    p.default_capacity = Some("spot".into());
    let d = resolve(&p, &ShapeRequest::default()).unwrap();
    assert_eq!(d.shape.capacity.unwrap().profile, "spot");
}

#[test]
fn a_remembered_reclaim_starts_the_job_on_the_fallback() {
    let mut p = policy();
    p.default_capacity = Some("spot".into());
    let d = resolve_shape(
        &p,
        &ShapeRequest::default(),
        &TrustedProject::default(),
        Some("Your Spot Task was interrupted."),
    )
    .unwrap();
    assert_eq!(d.shape.capacity.unwrap().profile, "on-demand");
    assert!(d.fallbacks.is_empty());
    assert_eq!(
        d.notes,
        [
            "the previous attempt of this job lost its task on spot (FARGATE_SPOT) (Your Spot Task was interrupted.): this attempt runs on on-demand (FARGATE)"
        ]
    );
    // Nothing to fall back to: the profile stays.
    p.default_capacity = Some("on-demand".into());
    let d = resolve_shape(
        &p,
        &ShapeRequest::default(),
        &TrustedProject::default(),
        Some("x"),
    )
    .unwrap();
    assert_eq!(d.shape.capacity.unwrap().profile, "on-demand");
}

#[test]
fn task_roles_only_for_the_trusted_project_of_a_rule() {
    let p = policy();
    for asked in [DEPLOY_ROLE, "deploy"] {
        let r = ShapeRequest {
            task_role: Some(asked.into()),
            ..ShapeRequest::default()
        };
        let d = resolve_shape(&p, &r, &infra(), None).unwrap();
        assert_eq!(d.shape.task_role.as_deref(), Some(DEPLOY_ROLE), "{asked}");
        assert_eq!(d.shape.subnets, ["subnet-private"]);
        assert_eq!(d.shape.security_groups, ["sg-deploy"]);
    }
    let r = ShapeRequest {
        task_role: Some("deploy".into()),
        ..ShapeRequest::default()
    };
    let other = TrustedProject {
        path: Some("app/web".into()),
        id: Some(8),
    };
    let err = resolve_shape(&p, &r, &other, None).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotAllowed);
    assert_eq!(
        err.message(),
        "the job asks for task role \"deploy\" (FARGATE_TASK_ROLE), which no project rule of this runner grants to project app/web (id 8)"
    );
    assert!(err.hint().unwrap().contains("project rule"));
    assert_eq!(err.settings(), [crate::Setting::ProjectTaskRoles]);
    // Without JOB_RESPONSE_FILE there is no trusted project: nothing matches.
    let err = resolve_shape(&p, &r, &TrustedProject::default(), None).unwrap_err();
    assert!(
        err.message().contains("unknown (no JOB_RESPONSE_FILE)"),
        "{err}"
    );
    // A role of the project that is not the one listed.
    let r = ShapeRequest {
        task_role: Some("arn:aws:iam::123456789012:role/admin".into()),
        ..ShapeRequest::default()
    };
    let err = resolve_shape(&p, &r, &infra(), None).unwrap_err();
    assert_eq!(
        err.hint(),
        Some(format!("this project may use: {DEPLOY_ROLE}").as_str())
    );
    // Other projects get no network of the rule.
    let d = resolve_shape(&p, &ShapeRequest::default(), &other, None).unwrap();
    assert!(d.shape.subnets.is_empty() && d.shape.security_groups.is_empty());
    assert_eq!(d.shape.task_role, None);
}

#[test]
fn requests_come_from_the_jobs_variables() {
    let job = JobContext::new(crate::job::JobResponse::new(1))
        .with_variable(CPU_VARIABLE, " 2 vCPU ")
        .with_variable(MEMORY_VARIABLE, "4 GB")
        .with_variable(EPHEMERAL_STORAGE_VARIABLE, "")
        .with_variable(CAPACITY_VARIABLE, "spot")
        .with_variable(TASK_ROLE_VARIABLE, "deploy");
    let r = ShapeRequest::from_job(&job);
    assert_eq!(r.cpu.as_deref(), Some("2 vCPU"));
    assert_eq!(r.memory.as_deref(), Some("4 GB"));
    assert_eq!(r.ephemeral_storage, None);
    assert_eq!(r.capacity.as_deref(), Some("spot"));
    assert_eq!(r.task_role.as_deref(), Some("deploy"));
}

#[test]
fn only_projects_that_keep_failed_tasks_get_shell_access() {
    let mut p = policy();
    let mut debug = ProjectRule::new("debug");
    debug.projects = vec!["infra/site".into()];
    debug.keep_failed_for = Some(std::time::Duration::from_secs(1800));
    p.project_rules.push(debug);
    let d = resolve_shape(&p, &ShapeRequest::default(), &infra(), None).unwrap();
    assert!(d.shape.debug_access);
    assert!(
        d.notes.iter().any(|n| n
            == "project rule \"debug\" applies to project infra/site (id 7): if the job fails, its task is kept for 30 min to debug it, with shell access"),
        "{:?}",
        d.notes
    );
    assert!(
        d.shape
            .to_string()
            .ends_with(", shell access for debugging")
    );
    // Another project, or none known (job variables never name it), gets none.
    let other = TrustedProject {
        path: Some("infra/other".into()),
        id: Some(9),
    };
    for project in [other, TrustedProject::default()] {
        let d = resolve_shape(&p, &ShapeRequest::default(), &project, None).unwrap();
        assert!(!d.shape.debug_access, "{project:?}");
    }
}

#[test]
fn a_cpu_architecture_only_within_the_allowlist() {
    let mut p = policy();
    let mut r = request(None, None);
    r.cpu_architecture = Some("arm64".into());
    let err = resolve(&p, &r).unwrap_err();
    assert_eq!(err.kind(), ErrorKind::NotAllowed);
    assert!(
        err.to_string().contains(
            "the job asks for CPU architecture \"arm64\" (FARGATE_CPU_ARCHITECTURE), which this runner does not allow"
        ),
        "{err}"
    );
    assert_eq!(err.settings(), [Setting::CpuArchitectures]);
    p.cpu_architectures = vec!["ARM64".into()];
    let d = resolve(&p, &r).unwrap();
    assert_eq!(d.shape.cpu_architecture.as_deref(), Some("ARM64"));
    r.cpu_architecture = Some("X86_64".into());
    assert!(
        resolve(&p, &r)
            .unwrap_err()
            .hint()
            .unwrap()
            .contains("allowed: ARM64")
    );
    // Without the variable, the task definition's own architecture.
    assert_eq!(
        resolve(&p, &request(None, None))
            .unwrap()
            .shape
            .cpu_architecture,
        None
    );
    let job = JobContext::new(crate::job::JobResponse::new(1))
        .with_variable(CPU_ARCHITECTURE_VARIABLE, " ARM64 ");
    assert_eq!(
        ShapeRequest::from_job(&job).cpu_architecture.as_deref(),
        Some("ARM64")
    );
}
