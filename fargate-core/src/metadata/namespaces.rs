//! Which runner entry a namespace of a [`FileMetadataStore`] serves
//! ([`FileMetadataStore::claim_namespace`]).
//!
//! Runner entries may share a metadata directory as long as each has its own namespace (the
//! default one differs per configuration file): every loop over records keeps to its own.
//! Two entries that set the same namespace share its jobs, pool and `gc`, which is only
//! right when they launch the same tasks. The directory records, per namespace, the entry
//! (configuration file) that serves it and a fingerprint of its launch settings, and
//! refuses a second entry with other settings.

use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use super::file_store::FileMetadataStore;
use crate::error::{Error, ErrorKind, Result};
use crate::job::{JobKey, Namespace};
use crate::setting::Setting;

/// The runner entry that serves a namespace: its configuration file and a fingerprint of
/// what it launches (for ECS the launcher's
/// [`settings_fingerprint`](crate::TaskLauncher::settings_fingerprint) and the default task
/// definition).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct NamespaceClaim {
    /// The entry's configuration file (absolute).
    pub config: PathBuf,
    /// What its tasks are made of.
    pub settings: String,
}

impl NamespaceClaim {
    /// The entry configured by `config` whose launches have `settings`.
    pub fn new(config: impl Into<PathBuf>, settings: impl Into<String>) -> Self {
        NamespaceClaim {
            config: config.into(),
            settings: settings.into(),
        }
    }
}

impl FileMetadataStore {
    /// The file recording who serves `namespace`: `<dir>/<namespace>.namespace`.
    pub fn namespace_path(&self, namespace: &Namespace) -> PathBuf {
        self.dir().join(format!("{namespace}.namespace"))
    }

    /// Records that `claim`'s runner entry serves `namespace`, or refuses
    /// ([`ErrorKind::InvalidConfig`], with a hint) when another entry (another
    /// configuration file) serves it with other settings. The same entry with changed
    /// settings (an administrator's edit) takes its namespace over; another entry with the
    /// same settings shares it. Blocking (one small file, written atomically only when it
    /// changes); under the namespace's own lock, so that two entries starting at once
    /// cannot both win.
    pub fn claim_namespace(&self, namespace: &Namespace, claim: &NamespaceClaim) -> Result<()> {
        let key = JobKey(format!("{namespace}_namespace"));
        let _lock = self.lock_blocking(&key, std::time::Duration::from_secs(5))?;
        let path = self.namespace_path(namespace);
        let current = match self.read_file(&path, "namespace claim")? {
            // An unreadable claim is replaced: it only ever refuses.
            Some(bytes) => serde_json::from_slice::<NamespaceClaim>(&bytes).ok(),
            None => None,
        };
        match current {
            Some(current) if current == *claim => Ok(()),
            Some(current)
                if current.config != claim.config && current.settings != claim.settings =>
            {
                Err(conflict(namespace, &path, &current.config, &claim.config))
            }
            Some(current) if current.config != claim.config => Ok(()),
            _ => {
                let bytes = serde_json::to_vec_pretty(claim).map_err(|e| {
                    Error::new(
                        ErrorKind::Unexpected,
                        format!("encoding a namespace claim: {e}"),
                    )
                })?;
                self.write_atomic(&key, &path, &bytes, "namespace claim")
            }
        }
    }
}

fn conflict(namespace: &Namespace, path: &Path, theirs: &Path, ours: &Path) -> Error {
    Error::new(
        ErrorKind::InvalidConfig,
        format!(
            "namespace {namespace} is served by the runner entry configured by {} with other launch settings (cluster, network, tags or task definition); two runner entries that share a namespace share its jobs, warm pool and gc, so they must launch the same tasks",
            theirs.display()
        ),
    )
    .with_context("configuration", ours.display())
    .with_hint(format!(
        "give this runner entry its own namespace in {} (or leave it unset: the default one differs per configuration file) or its own metadata directory; if {} no longer exists, delete {}",
        ours.display(),
        theirs.display(),
        path.display()
    ))
    .with_setting(Setting::Namespace)
    .with_setting(Setting::MetadataDirectory)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_second_entry_with_other_settings_is_refused_and_the_same_settings_share() {
        let dir = tempfile::tempdir().unwrap();
        let store = FileMetadataStore::new(dir.path().join("m"));
        let ns = Namespace::parse("ci").unwrap();
        let a = NamespaceClaim::new("/etc/gitlab-runner/a.toml", "cluster-a");
        store.claim_namespace(&ns, &a).unwrap();
        store.claim_namespace(&ns, &a).unwrap();
        // Another entry, same settings: one runner to the driver.
        let twin = NamespaceClaim::new("/etc/gitlab-runner/twin.toml", "cluster-a");
        store.claim_namespace(&ns, &twin).unwrap();
        // Another entry, other settings: refused, with the way out.
        let b = NamespaceClaim::new("/etc/gitlab-runner/b.toml", "cluster-b");
        let err = store.claim_namespace(&ns, &b).unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidConfig);
        let text = err.to_string();
        assert!(
            text.contains("a.toml") && text.contains("namespace ci"),
            "{text}"
        );
        assert!(err.hint().unwrap().contains("own namespace"), "{err:?}");
        assert_eq!(
            err.settings(),
            [crate::Setting::Namespace, crate::Setting::MetadataDirectory]
        );
        // Another namespace in the same directory: its own claim.
        store
            .claim_namespace(&Namespace::parse("cd").unwrap(), &b)
            .unwrap();
        // The first entry's administrator changes its settings: it keeps its namespace.
        let a2 = NamespaceClaim::new("/etc/gitlab-runner/a.toml", "cluster-a2");
        store.claim_namespace(&ns, &a2).unwrap();
        let saved: NamespaceClaim =
            serde_json::from_slice(&std::fs::read(store.namespace_path(&ns)).unwrap()).unwrap();
        assert_eq!(saved, a2);
        // No record is listed for it, and nothing else is left.
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        assert!(
            rt.block_on(crate::MetadataStore::list(&store))
                .unwrap()
                .is_empty()
        );
        let mut names: Vec<String> = std::fs::read_dir(store.dir())
            .unwrap()
            .map(|e| e.unwrap().file_name().into_string().unwrap())
            .collect();
        names.sort();
        assert_eq!(names, ["cd.namespace", "ci.namespace"]);
    }
}
