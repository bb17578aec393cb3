#![doc = include_str!("../README.md")]

mod args;
mod backends;
mod config;
mod gc;
mod logging;
mod signals;
mod stages;

pub use args::{Args, Command, GcArgs, Stage, normalize};
pub use stages::{VERSION, main_impl};
