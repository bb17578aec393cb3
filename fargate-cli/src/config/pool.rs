//! `[Fargate.WarmPool]`: the warm pool of idle tasks ([`WarmPoolOptions`]).

use fargate_core::options::{MAX_POOL_SIZE, WarmPoolOptions};
use toml::de::DeTable;

use super::reader::{Reader, Table};

/// The file keys of [`WarmPoolOptions`]' fields, for problems found after reading.
pub(super) fn file_key(field: &str) -> Option<&'static str> {
    Some(match field {
        "pool.size" => "[Fargate.WarmPool] Size",
        "pool.max_idle" => "[Fargate.WarmPool] MaxIdleTime",
        "pool.cpu" => "[Fargate.WarmPool] CPU",
        "pool.claim_timeout" => "[Fargate.WarmPool] ClaimTimeout",
        _ => return None,
    })
}

/// Reads `[Fargate.WarmPool]` into `pool`.
pub(super) fn read_pool(r: &mut Reader<'_>, table: &DeTable<'_>, pool: &mut WarmPoolOptions) {
    let mut t = Table::new("Fargate.WarmPool", table);
    if let Some(n) = r.integer(&mut t, "Size", 0..=MAX_POOL_SIZE as i64) {
        pool.size = n as usize;
    }
    if let Some(d) = r.duration(&mut t, "MaxIdleTime", false) {
        pool.max_idle = d;
    }
    if let Some(n) = r.integer(&mut t, "CPU", 256..=16384) {
        pool.cpu = Some(n as u32);
    }
    if let Some(n) = r.integer(&mut t, "Memory", 512..=122_880) {
        pool.memory = Some(n as u32);
    }
    if let Some(d) = r.duration(&mut t, "ClaimTimeout", false) {
        pool.claim_timeout = d;
    }
    r.finish(&t);
}
