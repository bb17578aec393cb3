//! Removing derived task definitions (`fargate gc`): the derived families of a base that no
//! launch used for a while, or beyond the bound on their number
//! ([`fargate_core::images::families_to_remove`]), and revisions a newer one replaced.
//!
//! # The rule
//!
//! **gc deregisters a derived revision only once it has carried gc's mark ([`GC_MARK`])
//! for [`DEREGISTER_GRACE`], and a launch never uses a marked revision and sends its
//! `RunTask` within [`RECHECK_AFTER`](crate::derived::RECHECK_AFTER) (plus one call's timeout) of finding it unmarked.**
//!
//! ECS has no conditional deregistration, so "check that no launch uses it, then
//! deregister" always leaves a window: a prepare could find the revision active between
//! gc's reading of its tags and its `DeregisterTaskDefinition`, and then fail its `RunTask`
//! ("TaskDefinition is inactive"). With the mark, a launch that found the revision unmarked
//! checked before gc set the mark (at time `m`), so its `RunTask` went out before
//! `m + RECHECK_AFTER + timeout`, long before `m + DEREGISTER_GRACE`, the earliest
//! deregistration; a launch that finds the mark registers a new revision of the family
//! instead. Tasks already running from a deregistered revision keep running (ECS), so a
//! job loses nothing. The guarantee assumes
//! [`SdkTransport::operation_timeout`](crate::SdkTransport::operation_timeout) well below
//! `DEREGISTER_GRACE - RECHECK_AFTER` (default 60 s) and clocks of the gc hosts within
//! minutes of each other (marks hold the marking host's time).
//!
//! # What a run does
//!
//! For every family `<base family>-<16 hex digits>` whose latest revision carries
//! [`DERIVED_HASH`]:
//!
//! * a family chosen for removal (unused for `unused_after`, or beyond `max_families`;
//!   judged by the latest revision's [`LAST_USED`]): each active revision is marked when
//!   it is not, deregistered when its mark is `DEREGISTER_GRACE` old; once no revision is
//!   active the family's inactive revisions are deleted and it is reported removed, until
//!   then pending;
//! * any other family: its active revisions older than the latest (replaced: launches only
//!   use the latest) are handled the same way, and deleted once deregistered.
//!
//! So a family gc decides to remove goes at the first run `DEREGISTER_GRACE` after the one
//! that marked it, unless a launch wanted it meanwhile (then a new revision serves it and
//! only the marked one goes).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_ecs::types::{Tag, TaskDefinitionFamilyStatus, TaskDefinitionStatus};
use fargate_core::images::{DerivedFamily, families_to_remove};
use fargate_core::{Error, Result};
use tracing::{debug, info};

use crate::derived::{DERIVED_HASH, FAMILY_HASH_LEN, GC_MARK, LAST_USED, unix_now};
use crate::errors;
use crate::launcher::EcsLauncher;

/// How long a derived revision carries gc's mark ([`GC_MARK`]) before gc may deregister
/// it: far longer than a launch's window from its check to its `RunTask`
/// ([`RECHECK_AFTER`](crate::derived::RECHECK_AFTER) plus one call's timeout).
pub const DEREGISTER_GRACE: Duration = Duration::from_secs(3600);

/// Most task definitions one `DeleteTaskDefinitions` call takes.
pub const MAX_DELETE_TASK_DEFINITIONS: usize = 10;

/// What [`EcsLauncher::prune_derived`] did (or, in a dry run, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PruneReport {
    /// Derived families kept.
    pub kept: Vec<String>,
    /// Derived families removed (every revision deregistered, and deleted), or to remove
    /// in a dry run.
    pub removed: Vec<String>,
    /// Derived families chosen for removal whose revisions are marked and wait for
    /// [`DEREGISTER_GRACE`] (marked by this run, or to mark in a dry run).
    pub pending: Vec<String>,
    /// Revisions (ARNs) deregistered by this run, those of removed families and replaced
    /// revisions of kept ones (or to deregister in a dry run).
    pub deregistered: Vec<String>,
    /// Families whose removal failed, with the error.
    pub failed: Vec<(String, String)>,
    /// Whether nothing was changed.
    pub dry_run: bool,
}

impl fmt::Display for PruneReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verb = if self.dry_run {
            "would remove"
        } else {
            "removed"
        };
        writeln!(
            f,
            "derived task definitions: {} kept, {verb} {}, {} pending, {} revisions deregistered, {} failed",
            self.kept.len(),
            self.removed.len(),
            self.pending.len(),
            self.deregistered.len(),
            self.failed.len()
        )?;
        for family in &self.removed {
            writeln!(f, "  {verb} {family}")?;
        }
        for family in &self.pending {
            writeln!(
                f,
                "  pending {family} (marked; removed {} after the mark)",
                duration_text(DEREGISTER_GRACE)
            )?;
        }
        for (family, error) in &self.failed {
            writeln!(f, "  failed {family}: {error}")?;
        }
        Ok(())
    }
}

/// Every item of a paginated listing: `page(next token)` gives a page's items and the
/// token of the next page (none or empty: the last).
async fn all_pages<F, Fut>(mut page: F) -> Result<Vec<String>>
where
    F: FnMut(Option<String>) -> Fut,
    Fut: std::future::Future<Output = Result<(Vec<String>, Option<String>)>>,
{
    let mut items = Vec::new();
    let mut next = None;
    loop {
        let (mut found, token) = page(next.take()).await?;
        items.append(&mut found);
        match token {
            Some(t) if !t.is_empty() => next = Some(t),
            _ => return Ok(items),
        }
    }
}

fn duration_text(d: Duration) -> String {
    let secs = d.as_secs();
    if secs.is_multiple_of(3600) {
        format!("{} h", secs / 3600)
    } else {
        format!("{} min", secs / 60)
    }
}

/// What gc does with one active revision it wants gone, from its [`GC_MARK`] at Unix
/// time `now`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Step {
    /// Not marked (or the mark is unreadable): mark it now.
    Mark,
    /// Marked less than [`DEREGISTER_GRACE`] ago: leave it.
    Wait,
    /// Marked [`DEREGISTER_GRACE`] ago or more: deregister it.
    Deregister,
}

fn step(mark: Option<&str>, now: u64) -> Step {
    match mark.and_then(|v| v.trim().parse::<u64>().ok()) {
        None => Step::Mark,
        Some(t) if now.saturating_sub(t) >= DEREGISTER_GRACE.as_secs() => Step::Deregister,
        Some(_) => Step::Wait,
    }
}

fn tag<'a>(tags: &'a [Tag], key: &str) -> Option<&'a str> {
    tags.iter()
        .find(|t| t.key() == Some(key))
        .and_then(|t| t.value())
}

/// The revision number of a task definition ARN (`...:7`), 0 when it has none.
fn revision_of(arn: &str) -> u64 {
    arn.rsplit(':')
        .next()
        .and_then(|r| r.parse().ok())
        .unwrap_or(0)
}

/// A derived family as gc found it: its latest active revision and that revision's tags.
struct Found {
    name: String,
    latest: String,
    tags: Vec<Tag>,
}

/// The family of a task definition named as `family`, `family:revision` or an ARN.
pub(crate) fn family_of(task_definition: &str) -> &str {
    let name = task_definition
        .rsplit('/')
        .next()
        .unwrap_or(task_definition);
    name.split(':').next().unwrap_or(name)
}

impl EcsLauncher {
    /// Removes the derived families of `base` (a task definition name or ARN) unused for
    /// `unused_after`, and the least recently used beyond `max_families`, and the replaced
    /// revisions of the others, by the rule of the [module docs](self): a revision is
    /// marked first and deregistered by a run [`DEREGISTER_GRACE`] later, then deleted.
    /// Only families named `<base family>-<16 hex digits>` whose latest revision carries
    /// [`DERIVED_HASH`] are touched; a dry run reads only.
    pub async fn prune_derived(
        &self,
        base: &str,
        unused_after: Duration,
        max_families: usize,
        dry_run: bool,
    ) -> Result<PruneReport> {
        let prefix = format!("{}-", family_of(base));
        let mut found = Vec::new();
        let mut families = Vec::new();
        for name in self.families(&prefix).await? {
            let suffix = &name[prefix.len()..];
            if suffix.len() != FAMILY_HASH_LEN || !suffix.chars().all(|c| c.is_ascii_hexdigit()) {
                continue;
            }
            let Some((td, tags)) = self.describe_definition(&name).await? else {
                continue;
            };
            if tag(&tags, DERIVED_HASH).is_none() {
                continue;
            }
            let last_used = tag(&tags, LAST_USED)
                .and_then(|v| v.parse::<u64>().ok())
                .map(|s| UNIX_EPOCH + Duration::from_secs(s));
            let Some(latest) = td.task_definition_arn else {
                continue;
            };
            families.push(DerivedFamily::new(name.clone(), last_used));
            found.push(Found { name, latest, tags });
        }
        let remove = families_to_remove(&families, SystemTime::now(), unused_after, max_families);
        let mut report = PruneReport {
            dry_run,
            ..PruneReport::default()
        };
        // Chosen families in the order families_to_remove gives (least recently used first).
        found.sort_by_key(|f| remove.iter().position(|n| *n == f.name));
        for family in found {
            let chosen = remove.contains(&family.name);
            match self.retire(&family, chosen, dry_run).await {
                Ok((deregistered, all_gone)) => {
                    report.deregistered.extend(deregistered);
                    if !chosen {
                        report.kept.push(family.name);
                    } else if all_gone {
                        report.removed.push(family.name);
                    } else {
                        report.pending.push(family.name);
                    }
                }
                Err(e) => report.failed.push((family.name, e.to_string())),
            }
        }
        Ok(report)
    }

    /// Marks, or deregisters and deletes, the revisions of `family` gc wants gone: all
    /// active ones when the family is `chosen`, else those older than its latest. Returns
    /// the revisions deregistered (or to deregister, in a `dry_run`) and whether none is
    /// left active.
    async fn retire(
        &self,
        family: &Found,
        chosen: bool,
        dry_run: bool,
    ) -> Result<(Vec<String>, bool)> {
        // Revision 1 is the only one the family ever had: no need to list.
        let active = if revision_of(&family.latest) <= 1 {
            vec![family.latest.clone()]
        } else {
            self.revisions(&family.name, TaskDefinitionStatus::Active)
                .await?
        };
        let wanted: Vec<&String> = active
            .iter()
            .filter(|arn| chosen || **arn != family.latest)
            .collect();
        let now = unix_now();
        let mut deregistered = Vec::new();
        for arn in &wanted {
            let mark = if **arn == family.latest {
                tag(&family.tags, GC_MARK).map(str::to_owned)
            } else {
                match self.describe_definition(arn).await? {
                    Some((_, tags)) => tag(&tags, GC_MARK).map(str::to_owned),
                    None => continue, // gone meanwhile
                }
            };
            match step(mark.as_deref(), now) {
                Step::Wait => {}
                Step::Mark if dry_run => {}
                Step::Mark => {
                    self.ecs_client()
                        .tag_resource()
                        .resource_arn(*arn)
                        .tags(Tag::builder().key(GC_MARK).value(now.to_string()).build())
                        .send()
                        .await
                        .map_err(|e| {
                            Error::from(errors::sdk(e, "TagResource"))
                                .with_context("task definition", arn)
                        })?;
                    debug!(task_definition = %arn, "marked the derived task definition for removal");
                }
                Step::Deregister => {
                    if !dry_run {
                        self.ecs_client()
                            .deregister_task_definition()
                            .task_definition(*arn)
                            .send()
                            .await
                            .map_err(|e| {
                                Error::from(errors::sdk(e, "DeregisterTaskDefinition"))
                                    .with_context("task definition", arn)
                            })?;
                        info!(task_definition = %arn, "deregistered the derived task definition");
                    }
                    deregistered.push((*arn).clone());
                }
            }
        }
        let all_gone = chosen && deregistered.len() == active.len();
        if dry_run {
            return Ok((deregistered, all_gone));
        }
        let inactive = if all_gone {
            self.revisions(&family.name, TaskDefinitionStatus::Inactive)
                .await?
        } else {
            deregistered.clone()
        };
        self.delete_definitions(&inactive).await?;
        Ok((deregistered, all_gone))
    }

    /// Active families starting with `prefix`.
    async fn families(&self, prefix: &str) -> Result<Vec<String>> {
        let names = all_pages(|next| async move {
            let out = self
                .ecs_client()
                .list_task_definition_families()
                .family_prefix(prefix)
                .status(TaskDefinitionFamilyStatus::Active)
                .set_next_token(next)
                .send()
                .await
                .map_err(|e| Error::from(errors::sdk(e, "ListTaskDefinitionFamilies")))?;
            Ok((out.families().to_vec(), out.next_token().map(str::to_owned)))
        })
        .await?;
        Ok(names
            .into_iter()
            .filter(|f| f.starts_with(prefix))
            .collect())
    }

    /// The ARNs of `family`'s revisions in `status`.
    pub(crate) async fn revisions(
        &self,
        family: &str,
        status: TaskDefinitionStatus,
    ) -> Result<Vec<String>> {
        let arns = all_pages(|next| {
            let status = status.clone();
            async move {
                let out = self
                    .ecs_client()
                    .list_task_definitions()
                    .family_prefix(family)
                    .status(status)
                    .set_next_token(next)
                    .send()
                    .await
                    .map_err(|e| Error::from(errors::sdk(e, "ListTaskDefinitions")))?;
                Ok((
                    out.task_definition_arns().to_vec(),
                    out.next_token().map(str::to_owned),
                ))
            }
        })
        .await?;
        // familyPrefix matches other families too: keep `family` itself.
        Ok(arns
            .into_iter()
            .filter(|arn| family_of(arn) == family)
            .collect())
    }

    /// Deletes `inactive` task definitions (deregistered ones).
    pub(crate) async fn delete_definitions(&self, inactive: &[String]) -> Result<()> {
        for chunk in inactive.chunks(MAX_DELETE_TASK_DEFINITIONS) {
            let out = self
                .ecs_client()
                .delete_task_definitions()
                .set_task_definitions(Some(chunk.to_vec()))
                .send()
                .await
                .map_err(|e| Error::from(errors::sdk(e, "DeleteTaskDefinitions")))?;
            if let Some(f) = out.failures().first() {
                return Err(errors::classify(
                    f.reason().unwrap_or_default(),
                    f.detail().unwrap_or_default(),
                    "DeleteTaskDefinitions",
                )
                .error);
            }
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_revision_is_marked_then_deregistered_after_the_grace() {
        let now = 1_000_000;
        let grace = DEREGISTER_GRACE.as_secs();
        assert_eq!(step(None, now), Step::Mark);
        assert_eq!(step(Some("soon"), now), Step::Mark);
        assert_eq!(step(Some(&now.to_string()), now), Step::Wait);
        assert_eq!(step(Some(&(now - grace + 1).to_string()), now), Step::Wait);
        assert_eq!(
            step(Some(&(now - grace).to_string()), now),
            Step::Deregister
        );
        // A mark from a host whose clock is ahead waits.
        assert_eq!(step(Some(&(now + 60).to_string()), now), Step::Wait);
        // The grace dwarfs a launch's window from its check to its RunTask.
        assert!(DEREGISTER_GRACE >= crate::derived::RECHECK_AFTER * 10);
    }

    #[test]
    fn revisions_of_arns() {
        assert_eq!(
            revision_of("arn:aws:ecs:us-east-1:1:task-definition/ci-0123456789abcdef:12"),
            12
        );
        assert_eq!(revision_of("ci"), 0);
    }

    #[test]
    fn families_of_every_name_form() {
        assert_eq!(family_of("ci"), "ci");
        assert_eq!(family_of("ci:3"), "ci");
        assert_eq!(
            family_of("arn:aws:ecs:us-east-1:123456789012:task-definition/ci-0123456789abcdef:2"),
            "ci-0123456789abcdef"
        );
    }
}
