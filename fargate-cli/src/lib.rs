#![doc = include_str!("../README.md")]

mod args;
mod backends;
mod config;
mod logging;
mod signals;
mod stages;

pub use args::{Args, Command, Stage, normalize};
pub use stages::{VERSION, main_impl};
