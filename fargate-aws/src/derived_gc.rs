//! Removing derived task definitions (`fargate gc`): deregisters and deletes the derived
//! families of a base that no launch used for a while, or beyond the bound on their number
//! ([`fargate_core::images::families_to_remove`]).

use std::fmt;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use aws_sdk_ecs::types::{TaskDefinitionFamilyStatus, TaskDefinitionStatus};
use fargate_core::images::{DerivedFamily, FAMILY_HASH_LEN, families_to_remove};
use fargate_core::{Error, Result};

use crate::derived::{DERIVED_HASH, LAST_USED};
use crate::errors;
use crate::launcher::EcsLauncher;

/// Most task definitions one `DeleteTaskDefinitions` call takes.
pub const MAX_DELETE_TASK_DEFINITIONS: usize = 10;

/// What [`EcsLauncher::prune_derived`] did (or, in a dry run, would do).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct PruneReport {
    /// Derived families kept.
    pub kept: Vec<String>,
    /// Derived families removed (deregistered, and deleted), or to remove in a dry run.
    pub removed: Vec<String>,
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
            "derived task definitions: {} kept, {verb} {}, {} failed",
            self.kept.len(),
            self.removed.len(),
            self.failed.len()
        )?;
        for family in &self.removed {
            writeln!(f, "  {verb} {family}")?;
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

/// The family of a task definition named as `family`, `family:revision` or an ARN.
fn family_of(task_definition: &str) -> &str {
    let name = task_definition
        .rsplit('/')
        .next()
        .unwrap_or(task_definition);
    name.split(':').next().unwrap_or(name)
}

impl EcsLauncher {
    /// Removes the derived families of `base` (a task definition name or ARN) unused for
    /// `unused_after`, and the least recently used beyond `max_families`: each active
    /// revision is deregistered, then every inactive one deleted. Only families named
    /// `<base family>-<16 hex digits>` whose latest revision carries
    /// [`DERIVED_HASH`] are touched.
    pub async fn prune_derived(
        &self,
        base: &str,
        unused_after: Duration,
        max_families: usize,
        dry_run: bool,
    ) -> Result<PruneReport> {
        let prefix = format!("{}-", family_of(base));
        let mut families = Vec::new();
        for name in self.families(&prefix).await? {
            let suffix = &name[prefix.len()..];
            if suffix.len() != FAMILY_HASH_LEN || !suffix.chars().all(|c| c.is_ascii_hexdigit()) {
                continue;
            }
            let Some((_, tags)) = self.describe_definition(&name).await? else {
                continue;
            };
            let tag = |k: &str| {
                tags.iter()
                    .find(|t| t.key() == Some(k))
                    .and_then(|t| t.value())
            };
            if tag(DERIVED_HASH).is_none() {
                continue;
            }
            let last_used = tag(LAST_USED)
                .and_then(|v| v.parse::<u64>().ok())
                .map(|s| UNIX_EPOCH + Duration::from_secs(s));
            families.push(DerivedFamily::new(name, last_used));
        }
        let remove = families_to_remove(&families, SystemTime::now(), unused_after, max_families);
        let mut report = PruneReport {
            kept: families
                .iter()
                .map(|f| f.name.clone())
                .filter(|n| !remove.contains(n))
                .collect(),
            dry_run,
            ..PruneReport::default()
        };
        for family in remove {
            if dry_run {
                report.removed.push(family);
                continue;
            }
            match self.remove_family(&family).await {
                Ok(()) => report.removed.push(family),
                Err(e) => report.failed.push((family, e.to_string())),
            }
        }
        Ok(report)
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
    async fn revisions(&self, family: &str, status: TaskDefinitionStatus) -> Result<Vec<String>> {
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

    async fn remove_family(&self, family: &str) -> Result<()> {
        for arn in self.revisions(family, TaskDefinitionStatus::Active).await? {
            self.ecs_client()
                .deregister_task_definition()
                .task_definition(&arn)
                .send()
                .await
                .map_err(|e| Error::from(errors::sdk(e, "DeregisterTaskDefinition")))?;
        }
        let inactive = self
            .revisions(family, TaskDefinitionStatus::Inactive)
            .await?;
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
    use super::family_of;

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
