//! Which container runs which stage.

/// The container a stage script runs in, when the job has its own image.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum StageContainer {
    /// The helper (the task image): the runner's own work (sources, caches, artifacts).
    Helper,
    /// The job container (the job's image): the job's scripts.
    Job,
}

/// Where `stage` runs: `build_script`, `step_*` and `after_script` in the job container,
/// everything else (`prepare_script`, `get_sources`, `restore_cache`, `download_artifacts`,
/// `archive_cache*`, `upload_artifacts_on_*`, `cleanup_file_variables` and stages a newer
/// runner may add) in the helper, where git, git-lfs and the runner's helper binary live.
pub fn stage_container(stage: &str) -> StageContainer {
    if stage == "build_script" || stage == "after_script" || stage.starts_with("step_") {
        StageContainer::Job
    } else {
        StageContainer::Helper
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_runners_stages_run_in_the_helper() {
        for stage in [
            "prepare_script",
            "get_sources",
            "restore_cache",
            "download_artifacts",
            "archive_cache",
            "archive_cache_on_failure",
            "upload_artifacts_on_success",
            "upload_artifacts_on_failure",
            "cleanup_file_variables",
            "some_future_stage",
        ] {
            assert_eq!(stage_container(stage), StageContainer::Helper, "{stage}");
        }
        for stage in [
            "build_script",
            "step_script",
            "step_release",
            "after_script",
        ] {
            assert_eq!(stage_container(stage), StageContainer::Job, "{stage}");
        }
    }
}
