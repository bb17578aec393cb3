//! `fargate store init|check`: the fleet's DynamoDB table ([`fargate_aws::dynamo_store`]).

use fargate_aws::dynamo_store::{TableCheck, TableSettings};
use fargate_core::{Error, ErrorKind};

use crate::args::{StoreAction, StoreArgs};
use crate::context::Context;
use crate::errors::print_plain;
use crate::{driver, exit_codes};

/// Runs `fargate store`; returns [`exit_codes::SUCCESS`] when the table is usable,
/// [`exit_codes::CHECKS_FAILED`] when it is not, [`exit_codes::COMMAND_FAILED`] when the
/// configuration names no table or AWS could not be asked.
pub(super) async fn run(args: &StoreArgs, context: Context) -> i32 {
    let Some(table) = driver::stores(&context.config).table else {
        print_plain(
            &Error::new(
                ErrorKind::InvalidConfig,
                format!(
                    "{} names no DynamoDB table: the records are in the metadata directory",
                    context.config_path.display()
                ),
            )
            .with_hint("set [TaskMetadata] DynamoDBTable = \"<name>\" on every runner host of the fleet (see docs/fleet.md)"),
        );
        return exit_codes::COMMAND_FAILED;
    };
    let checked = match table.get().await {
        Ok(store) => match &args.action {
            StoreAction::Init { kms_key } => {
                let settings = TableSettings::default().with_kms_key(kms_key.clone());
                store.init_table(&settings).await
            }
            StoreAction::Check => store.check_table().await,
        },
        Err(err) => Err(err),
    };
    match checked {
        Ok(check) => {
            print!("{}", report(table.table(), &check));
            if check.usable() {
                exit_codes::SUCCESS
            } else {
                exit_codes::CHECKS_FAILED
            }
        }
        Err(err) => {
            print_plain(&err);
            exit_codes::COMMAND_FAILED
        }
    }
}

/// The check as lines: what was done, what is wrong, what should change.
fn report(table: &str, check: &TableCheck) -> String {
    let mut out = String::new();
    for line in &check.done {
        out.push_str(&format!("done: {line}\n"));
    }
    for line in &check.errors {
        out.push_str(&format!("FAIL: {line}\n"));
    }
    for line in &check.warnings {
        out.push_str(&format!("warning: {line}\n"));
    }
    if check.usable() {
        out.push_str(&format!("table {table} is usable\n"));
    }
    out
}
