#![doc = include_str!("../README.md")]

mod args;
mod backends;
mod config;
mod gc;
mod keeper;
mod logging;
mod signals;
mod stages;

pub use args::{Args, Command, GcArgs, KeeperArgs, Stage, normalize};
pub use stages::{VERSION, main_impl};
