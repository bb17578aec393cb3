//! Timeouts and tunables of [`crate::Ssh2Shell`].

use std::time::Duration;

use fargate_core::CancelBudget;

/// Settings of an [`crate::Ssh2Shell`]. Build one with [`Ssh2Config::builder`] or use
/// [`Ssh2Config::default`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Ssh2Config {
    pub(crate) connect_timeout: Duration,
    pub(crate) handshake_timeout: Duration,
    pub(crate) keepalive_interval: Duration,
    pub(crate) probe_timeout: Duration,
    pub(crate) cancel_grace: Duration,
}

impl Default for Ssh2Config {
    fn default() -> Self {
        Ssh2Config {
            connect_timeout: Duration::from_secs(10),
            handshake_timeout: Duration::from_secs(10),
            keepalive_interval: Duration::from_secs(30),
            probe_timeout: Duration::from_secs(2),
            cancel_grace: CancelBudget::DEFAULT.grace,
        }
    }
}

impl Ssh2Config {
    /// A builder starting from the defaults.
    pub fn builder() -> Ssh2ConfigBuilder {
        Ssh2ConfigBuilder {
            config: Ssh2Config::default(),
        }
    }

    /// Time allowed for the TCP connection (default 10 s).
    pub fn connect_timeout(&self) -> Duration {
        self.connect_timeout
    }

    /// Time allowed for the SSH handshake and authentication (default 10 s).
    pub fn handshake_timeout(&self) -> Duration {
        self.handshake_timeout
    }

    /// Interval of SSH keepalive messages while a script runs (default 30 s; zero: none).
    pub fn keepalive_interval(&self) -> Duration {
        self.keepalive_interval
    }

    /// Time allowed for one [`fargate_core::RemoteShell::probe`]: TCP connect plus
    /// handshake (default 2 s).
    pub fn probe_timeout(&self) -> Duration {
        self.probe_timeout
    }

    /// After a cancel, how long the script gets to end on `SIGTERM` before its process
    /// group is sent `SIGKILL` (default 1 s).
    pub fn cancel_grace(&self) -> Duration {
        self.cancel_grace
    }
}

/// Builder of [`Ssh2Config`].
#[derive(Clone, Debug)]
pub struct Ssh2ConfigBuilder {
    config: Ssh2Config,
}

impl Ssh2ConfigBuilder {
    /// Time allowed for the TCP connection.
    pub fn connect_timeout(mut self, timeout: Duration) -> Self {
        self.config.connect_timeout = timeout;
        self
    }

    /// Time allowed for the SSH handshake and authentication.
    pub fn handshake_timeout(mut self, timeout: Duration) -> Self {
        self.config.handshake_timeout = timeout;
        self
    }

    /// Interval of SSH keepalive messages; zero turns them off. Rounded to whole seconds.
    pub fn keepalive_interval(mut self, interval: Duration) -> Self {
        self.config.keepalive_interval = interval;
        self
    }

    /// Time allowed for one probe (TCP connect plus handshake).
    pub fn probe_timeout(mut self, timeout: Duration) -> Self {
        self.config.probe_timeout = timeout;
        self
    }

    /// How long a cancelled script gets to end on `SIGTERM` before `SIGKILL`. Capped at
    /// [`CancelBudget::max_grace`] (1.5 s) so that a cancelled run still returns within
    /// [`CancelBudget::run`] (2 s).
    pub fn cancel_grace(mut self, grace: Duration) -> Self {
        self.config.cancel_grace = grace.min(CancelBudget::DEFAULT.max_grace());
        self
    }

    /// The finished configuration.
    pub fn build(self) -> Ssh2Config {
        self.config
    }
}
