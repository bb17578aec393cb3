//! [`Endpoint`]: where a task is reached. Its own module, so that the shell and the
//! launcher both name it without the shell depending on the launcher; `launcher`
//! re-exports it.

use std::fmt;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

/// Where the task can be reached.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Endpoint {
    /// IP address to connect to.
    pub ip: IpAddr,
    /// TCP port.
    pub port: u16,
}

impl fmt::Display for Endpoint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        std::net::SocketAddr::new(self.ip, self.port).fmt(f)
    }
}
