//! [`PriceTable`]: an estimate of what a task cost, from Fargate's per-second prices.
//!
//! Fargate bills vCPU, memory and ephemeral storage above 20 GiB per second, from the
//! start of the image pull until the task stops, with a one-minute minimum; Spot capacity
//! is billed at a discount. The defaults are the public on-demand list prices (USD, Linux)
//! of a few regions; prices change and differ by account (savings plans), so every figure
//! is an estimate, and administrators can replace the table (`[Cost]` in `fargate.toml`).

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::task_details::TaskDetails;

/// Ephemeral storage Fargate includes in the price.
const FREE_STORAGE_GIB: u32 = 20;
/// Fargate's minimum billed time.
const MINIMUM_BILLED: Duration = Duration::from_secs(60);

/// Hourly prices of one region and architecture (USD).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Price {
    /// Per vCPU and hour.
    pub vcpu_hour: f64,
    /// Per GB of memory and hour.
    pub gb_hour: f64,
    /// Per GB of ephemeral storage above 20 GB and hour.
    pub storage_gb_hour: f64,
}

impl Price {
    /// A price per vCPU-hour, GB-hour of memory and GB-hour of extra storage.
    pub fn new(vcpu_hour: f64, gb_hour: f64, storage_gb_hour: f64) -> Self {
        Price {
            vcpu_hour,
            gb_hour,
            storage_gb_hour,
        }
    }
}

/// Which prices apply: a region and an architecture.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PriceKey {
    /// AWS region (`eu-west-1`).
    pub region: String,
    /// ARM (Graviton) rather than x86.
    pub arm: bool,
}

impl PriceKey {
    /// The key of `region`, ARM or x86.
    pub fn new(region: impl Into<String>, arm: bool) -> Self {
        PriceKey {
            region: region.into(),
            arm,
        }
    }
}

/// What a task cost, estimated.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct CostEstimate {
    /// The estimate, in USD (or the table's unit).
    pub amount: f64,
    /// The time billed (at least one minute, whole seconds).
    pub billed: Duration,
    /// Whether the Spot discount was applied.
    pub spot: bool,
    /// The prices used.
    pub key: PriceKey,
}

/// Prices by region and architecture, and the Spot discount.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PriceTable {
    /// Prices by region and architecture.
    pub prices: BTreeMap<PriceKey, Price>,
    /// The share Spot saves (0.7: Spot costs 30 % of on-demand).
    pub spot_discount: f64,
}

impl Default for PriceTable {
    /// Public Linux on-demand list prices of a few regions, and a 70 % Spot discount.
    fn default() -> Self {
        let storage = 0.000111;
        let x86_low = Price::new(0.04048, 0.004445, storage);
        let arm_low = Price::new(0.03238, 0.00356, storage);
        let x86_fra = Price::new(0.04656, 0.00511, 0.000122);
        let arm_fra = Price::new(0.03725, 0.00409, 0.000122);
        let mut prices = BTreeMap::new();
        for region in ["us-east-1", "us-east-2", "us-west-2", "eu-west-1"] {
            prices.insert(PriceKey::new(region, false), x86_low);
            prices.insert(PriceKey::new(region, true), arm_low);
        }
        prices.insert(PriceKey::new("eu-central-1", false), x86_fra);
        prices.insert(PriceKey::new("eu-central-1", true), arm_fra);
        PriceTable {
            prices,
            spot_discount: 0.7,
        }
    }
}

impl PriceTable {
    /// A table without prices (no estimates) and no Spot discount.
    pub fn empty() -> Self {
        PriceTable {
            prices: BTreeMap::new(),
            spot_discount: 0.0,
        }
    }

    /// Sets the price of `key`.
    pub fn with_price(mut self, key: PriceKey, price: Price) -> Self {
        self.prices.insert(key, price);
        self
    }

    /// Sets the Spot discount (a share between 0 and 1).
    pub fn with_spot_discount(mut self, discount: f64) -> Self {
        self.spot_discount = discount.clamp(0.0, 1.0);
        self
    }

    /// What a task of `details` costs when it runs for `run_time` (from the start of its
    /// image pull); `None` when its region, CPU or memory is unknown or the table has no
    /// price for its region and architecture.
    pub fn estimate(&self, details: &TaskDetails, run_time: Duration) -> Option<CostEstimate> {
        let key = PriceKey::new(details.region.clone()?, details.is_arm());
        let price = self.prices.get(&key)?;
        let vcpu = f64::from(details.cpu_units?) / 1024.0;
        let gb = f64::from(details.memory_mib?) / 1024.0;
        let extra_storage = f64::from(
            details
                .ephemeral_storage_gib
                .unwrap_or(FREE_STORAGE_GIB)
                .saturating_sub(FREE_STORAGE_GIB),
        );
        let secs = run_time.as_secs() + u64::from(run_time.subsec_nanos() > 0);
        let billed = Duration::from_secs(secs).max(MINIMUM_BILLED);
        let hours = billed.as_secs_f64() / 3600.0;
        let hourly =
            vcpu * price.vcpu_hour + gb * price.gb_hour + extra_storage * price.storage_gb_hour;
        let spot = details.is_spot();
        let factor = if spot { 1.0 - self.spot_discount } else { 1.0 };
        Some(CostEstimate {
            amount: hourly * hours * factor,
            billed,
            spot,
            key,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn details(cpu: u32, mib: u32, storage: Option<u32>) -> TaskDetails {
        TaskDetails {
            region: Some("us-east-1".into()),
            cpu_units: Some(cpu),
            memory_mib: Some(mib),
            ephemeral_storage_gib: storage,
            ..TaskDetails::default()
        }
    }

    fn close(a: f64, b: f64) -> bool {
        (a - b).abs() < 1e-9
    }

    #[test]
    fn an_hour_of_one_vcpu_and_two_gb_costs_the_list_price() {
        let t = PriceTable::default();
        let e = t
            .estimate(&details(1024, 2048, None), Duration::from_secs(3600))
            .unwrap();
        assert!(close(e.amount, 0.04048 + 2.0 * 0.004445), "{e:?}");
        assert_eq!(e.billed, Duration::from_secs(3600));
        assert!(!e.spot);
    }

    #[test]
    fn short_tasks_pay_a_minute_and_partial_seconds_round_up() {
        let t = PriceTable::empty()
            .with_price(PriceKey::new("us-east-1", false), Price::new(3.6, 0.0, 0.0));
        let d = details(1024, 2048, None);
        let e = t.estimate(&d, Duration::from_secs(5)).unwrap();
        assert_eq!(e.billed, Duration::from_secs(60));
        assert!(close(e.amount, 0.06), "{e:?}");
        let e = t.estimate(&d, Duration::from_millis(90_001)).unwrap();
        assert_eq!(e.billed, Duration::from_secs(91));
        assert!(close(e.amount, 0.091), "{e:?}");
    }

    #[test]
    fn storage_above_twenty_gib_and_spot_discount() {
        let t = PriceTable::empty()
            .with_price(PriceKey::new("us-east-1", false), Price::new(0.0, 0.0, 1.0))
            .with_spot_discount(0.7);
        let mut d = details(256, 512, Some(50));
        let e = t.estimate(&d, Duration::from_secs(3600)).unwrap();
        assert!(close(e.amount, 30.0), "{e:?}");
        d.capacity_provider = Some("FARGATE_SPOT".into());
        let e = t.estimate(&d, Duration::from_secs(3600)).unwrap();
        assert!(e.spot);
        assert!(close(e.amount, 9.0), "{e:?}");
    }

    #[test]
    fn arm_has_its_own_prices_and_unknown_regions_no_estimate() {
        let t = PriceTable::default();
        let mut d = details(1024, 2048, None);
        d.cpu_architecture = Some("ARM64".into());
        let e = t.estimate(&d, Duration::from_secs(3600)).unwrap();
        assert!(close(e.amount, 0.03238 + 2.0 * 0.00356), "{e:?}");
        assert!(e.key.arm);
        d.region = Some("xx-nowhere-1".into());
        assert_eq!(t.estimate(&d, Duration::from_secs(3600)), None);
        d.region = None;
        assert_eq!(t.estimate(&d, Duration::from_secs(3600)), None);
    }
}
