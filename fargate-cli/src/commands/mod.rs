//! The dispatcher: one module per command, each run with the [`Context`] built once here.
//!
//! Only this module uses the command modules; they share what they need through the
//! crate's other modules ([`crate::context`], [`crate::driver`], [`crate::detached`],
//! [`crate::errors`], [`crate::exit_codes`]).

mod custom;
mod doctor;
mod gc;
mod keeper;
mod kept;
mod pool;
mod release;
mod slots;
mod store;

use fargate_core::JobContext;

use crate::args::{Args, Command};
use crate::context::Context;
use crate::errors::print_plain;
use crate::exit_codes;

/// Runs the command of `args`; returns its exit code ([`crate::exit_codes`]).
///
/// The one setup: [`Context::new`]; its error, printed here (logging may not exist yet),
/// fails a stage as the runner asked ([`custom::run`]) and any other command with
/// [`exit_codes::COMMAND_FAILED`].
pub(crate) async fn execute(args: Args) -> i32 {
    if let Command::Custom { stage } = &args.command {
        // The runner's variables first: their exit codes say how the stage fails.
        let job = match JobContext::from_env() {
            Ok(job) => job,
            Err(err) => {
                print_plain(&err);
                return exit_codes::COMMAND_FAILED;
            }
        };
        return custom::run(stage, &job, setup(&args)).await;
    }
    let Ok(context) = setup(&args) else {
        return exit_codes::COMMAND_FAILED;
    };
    match args.command {
        Command::Doctor(doctor) => doctor::run(&doctor, context).await,
        Command::Gc(gc) => gc::run(&gc, context).await,
        Command::Pool(pool) => pool::run(&pool, context).await,
        Command::Store(store) => store::run(&store, context).await,
        Command::Keeper(keeper) => keeper::run(&keeper, context).await,
        Command::Kept(kept) => kept::run(&kept, context).await,
        Command::Release(release) => release::run(&release, context).await,
        Command::Slots(slots) => slots::run(&slots, context).await,
        Command::Custom { .. } => unreachable!("the stages are run above"),
    }
}

fn setup(args: &Args) -> fargate_core::Result<Context> {
    Context::new(args).inspect_err(print_plain)
}
