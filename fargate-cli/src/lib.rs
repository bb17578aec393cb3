#![doc = include_str!("../README.md")]

mod args;
mod backends;
mod config;
mod doctor;
mod gc;
mod human_log;
mod job_log;
mod keeper;
mod logging;
mod metrics;
mod pool;
mod signals;
mod stages;

pub use args::{Args, Command, DoctorArgs, GcArgs, KeeperArgs, Stage, normalize};
pub use stages::{VERSION, main_impl};
