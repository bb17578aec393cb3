//! What Fargate offers and what it costs, for the driver: [`fargate_sizes`] (the task sizes,
//! the driver's [`SizeCatalog`]) and [`fargate_prices`] (public list prices, the driver's
//! [`PriceTable`]). The core knows neither: an embedder gives them to its options
//! (`ShapePolicy::sizes`) and driver (`Driver::with_price_table`).

use std::time::Duration;

use fargate_core::SizeCatalog;
use fargate_core::observe::{Price, PriceKey, PriceTable};

/// Fargate's task-level CPU and memory combinations: for each CPU value (CPU units, 1024 =
/// 1 vCPU), the smallest and largest memory (MiB) and the step between sizes. Source: the
/// ECS API reference, `RegisterTaskDefinition` `cpu` and `memory` (also in
/// `docs/ecs-api-rules.md`).
const SIZES: [(u32, u32, u32, u32); 7] = [
    // (cpu, smallest memory, largest memory, step)
    (256, 1024, 2048, 1024), // and 512, below the step's start
    (512, 1024, 4096, 1024),
    (1024, 2048, 8192, 1024),
    (2048, 4096, 16384, 1024),
    (4096, 8192, 30720, 1024),
    (8192, 16384, 61440, 4096),
    (16384, 32768, 122880, 8192),
];

/// Ephemeral storage a Fargate task may be given (GiB), and what it has without.
const STORAGE_GIB: (u32, u32) = (21, 200);
/// Ephemeral storage every Fargate task has, included in the price (GiB).
const DEFAULT_STORAGE_GIB: u32 = 20;
/// Fargate's shortest billed time per task.
const MINIMUM_BILLED: Duration = Duration::from_secs(60);

/// The task sizes Fargate offers, as the driver's [`SizeCatalog`] (backend name
/// `Fargate`).
pub fn fargate_sizes() -> SizeCatalog {
    SizeCatalog::new(
        "Fargate",
        SIZES.iter().map(|&(cpu, low, high, step)| {
            let mut memory: Vec<u32> = (low..=high).step_by(step as usize).collect();
            if cpu == 256 {
                memory.insert(0, 512);
            }
            (cpu, memory)
        }),
    )
    .with_storage(STORAGE_GIB.0, STORAGE_GIB.1, DEFAULT_STORAGE_GIB)
}

/// Fargate's public Linux on-demand list prices (USD) of a few regions, x86 and ARM, a 70 %
/// Spot discount, 20 GiB of storage included and a one-minute minimum. Prices change and
/// differ by account: administrators replace them (`[Cost]` in `fargate.toml`).
pub fn fargate_prices() -> PriceTable {
    let storage = 0.000111;
    let x86_low = Price::new(0.04048, 0.004445, storage);
    let arm_low = Price::new(0.03238, 0.00356, storage);
    let x86_fra = Price::new(0.04656, 0.00511, 0.000122);
    let arm_fra = Price::new(0.03725, 0.00409, 0.000122);
    let mut table = PriceTable::empty()
        .with_spot_discount(0.7)
        .with_billing(DEFAULT_STORAGE_GIB, MINIMUM_BILLED);
    for region in ["us-east-1", "us-east-2", "us-west-2", "eu-west-1"] {
        table = table
            .with_price(PriceKey::new(region, false), x86_low)
            .with_price(PriceKey::new(region, true), arm_low);
    }
    table
        .with_price(PriceKey::new("eu-central-1", false), x86_fra)
        .with_price(PriceKey::new("eu-central-1", true), arm_fra)
}

/// This runner's default share of ECS's API rate limits, for the driver's call budget
/// ([`fargate_core::budget`]): launches (`RunTask` calls) 10 per second with bursts of 10,
/// other changing calls (`StopTask`, `TagResource`, `UntagResource`) 20 per second with
/// bursts of 20, the tasks of batched launches (a warm pool's) 10 per second with bursts
/// of 50: with the launches, within Fargate's task-launch limit.
///
/// ECS throttles per account and region with token buckets; `RunTask` refills at 20 calls
/// per second with a bucket of 20 ("Request throttling for the Amazon ECS API"), and Fargate
/// task launches at 20 per second with a bucket of 100 ("AWS Fargate throttling quotas").
/// Half of `RunTask`'s and of the task launches' rates leaves room for other runners and
/// tools in the account; a runner that has the account to itself can take all of it
/// (`[RateLimit]`).
pub fn default_call_rates() -> fargate_core::budget::CallRates {
    use fargate_core::budget::{CallRates, Rate};
    CallRates::new(
        Rate::new(10.0, 10.0),
        Rate::new(20.0, 20.0),
        Rate::new(10.0, 50.0),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use fargate_core::TaskDetails;

    #[test]
    fn fargate_sizes_match_the_api_reference() {
        let c = fargate_sizes();
        assert_eq!(c.memory_sizes(256), [512, 1024, 2048]);
        assert_eq!(c.memory_sizes(512), [1024, 2048, 3072, 4096]);
        assert_eq!(c.memory_sizes(1024).len(), 7);
        assert_eq!(c.memory_sizes(2048).first(), Some(&4096));
        assert_eq!(c.memory_sizes(2048).last(), Some(&16384));
        assert_eq!(c.memory_sizes(4096).last(), Some(&30720));
        assert_eq!(c.memory_sizes(8192)[..2], [16384, 20480]);
        assert!(!c.offers(8192, 18432));
        assert_eq!(c.memory_sizes(16384).last(), Some(&122880));
        assert!(c.memory_sizes(3000).is_empty());
        assert!(c.offers(256, 512) && !c.offers(256, 4096));
        assert_eq!(c.cpu_range(), Some((256, 16384)));
        assert_eq!(c.memory_range(), Some((512, 122880)));
        assert_eq!(c.storage, Some((21, 200)));
    }

    #[test]
    fn an_hour_of_one_vcpu_and_two_gb_costs_the_list_price() {
        let details = |region: &str, arch: &str| {
            let mut d = TaskDetails::default();
            d.region = Some(region.into());
            d.cpu_units = Some(1024);
            d.memory_mib = Some(2048);
            d.cpu_architecture = Some(arch.into());
            d
        };
        let t = fargate_prices();
        let hour = Duration::from_secs(3600);
        let e = t.estimate(&details("us-east-1", "X86_64"), hour).unwrap();
        assert!(
            (e.amount - (0.04048 + 2.0 * 0.004445)).abs() < 1e-9,
            "{e:?}"
        );
        let e = t.estimate(&details("us-east-1", "ARM64"), hour).unwrap();
        assert!((e.amount - (0.03238 + 2.0 * 0.00356)).abs() < 1e-9, "{e:?}");
        let e = t
            .estimate(&details("eu-west-1", "X86_64"), Duration::from_secs(5))
            .unwrap();
        assert_eq!(e.billed, MINIMUM_BILLED);
    }
}
