//! `fargate keeper` (hidden): holds one job's SSH connection for its `run` stages; prepare
//! starts it detached ([`crate::detached`]), cleanup ends it.

use std::io::Write as _;
use std::sync::Arc;

use fargate_core::{
    Error, ErrorKind, FileMetadataStore, JobKey, MetadataStore, Phase, Result, RunRequest,
};
use fargate_ssh::keeper::{self, KeeperOptions};

use crate::args::KeeperArgs;
use crate::config::FileConfig;
use crate::context::Context;
use crate::exit_codes;

/// Runs the keeper until it ends; returns [`exit_codes::SUCCESS`], or
/// [`exit_codes::COMMAND_FAILED`] when it could not serve (logged at debug level: nobody
/// reads its stderr).
pub(super) async fn run(command: &KeeperArgs, context: Context) -> i32 {
    match serve(command, context.config).await {
        Ok(()) => exit_codes::SUCCESS,
        Err(err) => {
            tracing::debug!("connection keeper: {}", err.chain());
            exit_codes::COMMAND_FAILED
        }
    }
}

/// `fargate keeper`: holds the job's SSH connection until cleanup, the task's end, its
/// idle time or the task's deadline (see [`fargate_ssh::keeper`]).
async fn serve(command: &KeeperArgs, config: FileConfig) -> Result<()> {
    let key = JobKey::parse(&command.job)?;
    let stores = crate::driver::stores(&config);
    let record = stores
        .store
        .get(&key)
        .await?
        .ok_or_else(|| Error::new(ErrorKind::NotFound, format!("no record of job {key}")))?;
    let (Phase::Ready, Some(endpoint)) = (record.phase, record.endpoint) else {
        return Err(Error::new(
            ErrorKind::InvalidInput,
            format!("job {key} is not ready"),
        ));
    };
    let login = RunRequest {
        endpoint,
        username: config.options.ssh.username.clone(),
        private_key: record.private_key.clone(),
        host_key: record.host_key.clone(),
        script: Arc::from(&b""[..]),
    };
    let mut options = KeeperOptions::new(command.socket.clone(), config.keeper.idle_timeout)
        .with_until(record.spec.as_ref().and_then(|s| s.deadline));
    if stores.table.is_none() {
        // A record file: the keeper ends when it goes (cleanup ends it anyway).
        let file = FileMetadataStore::new(config.metadata_dir.clone());
        options = options.while_exists(file.record_path(&key));
    }
    let ssh = config.ssh.clone();
    // Tells `start_keeper` that the socket is there: one byte on stdout, its only output.
    let listening = || {
        let mut out = std::io::stdout().lock();
        let _ = out.write_all(b"\n").and_then(|()| out.flush());
    };
    tokio::task::spawn_blocking(move || keeper::serve(&ssh, &login, &options, listening))
        .await
        .map_err(|e| {
            Error::new(
                ErrorKind::Unexpected,
                format!("the keeper thread failed: {e}"),
            )
        })?
}
