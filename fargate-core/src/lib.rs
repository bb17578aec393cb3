#![doc = include_str!("../README.md")]

pub mod budget;
pub mod cancel;
pub mod driver;
mod endpoint;
pub mod error;
pub mod gc;
pub mod images;
pub mod job;
pub mod launcher;
pub mod metadata;
pub mod observe;
pub mod options;
mod problem;
pub mod retry;
pub mod setting;
pub mod shape;
pub mod shell;
pub mod task_details;
#[cfg(any(test, feature = "testing"))]
pub mod testing;
pub mod world;

pub use cancel::CancelBudget;
pub use driver::{AdminOverrides, Driver, TaskDefinitionChoice};
pub use error::{Error, ErrorKind, ExitCodes, ExitDecision, Failure, FailureClass, Result};
pub use job::{JobContext, JobIdentity, JobKey, JobResponse, Namespace};
pub use launcher::{
    ContainerStatus, ContainerStop, DebugCommands, DynTaskLauncher, Endpoint, Launched,
    LaunchedBatch, ListedTask, StopDetails, StopOutcome, TaskLauncher, TaskRef, TaskSpec,
    TaskState, TaskStatus,
};
pub use metadata::{
    DynMetadataStore, FileMetadataStore, JobLock, JobRecord, MetadataStore, NamespaceClaim, Phase,
};
pub use observe::{DynObserver, Event, JobSummary, Observer, PriceTable};
pub use options::{ConfigError, ConfigProblem, DriverOptions};
pub use retry::RetryPolicy;
pub use setting::Setting;
pub use shape::{CapacityChoice, CapacityProvider, SizeCatalog, TaskShape};
pub use shell::{
    CapturedOutput, ChannelSink, DynRemoteShell, HostKey, KeyPair, KeyType, MAX_OUTPUT_CHUNK,
    OutputChunk, OutputSink, PrivateKey, RemoteShell, RunOutcome, RunRequest, StdioSink,
};
pub use task_details::TaskDetails;
