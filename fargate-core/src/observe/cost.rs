//! [`PriceTable`]: an estimate of what a task cost, from per-second prices.
//!
//! A table holds hourly prices of CPU, memory and extra ephemeral storage per region and
//! architecture, the share a Spot-like capacity saves, how much storage the price includes
//! and the shortest time billed. The backend's crate provides its public list prices (the
//! ECS launcher's: `fargate_aws::fargate_prices`); prices change and differ by account, so
//! every figure is an estimate, and administrators can replace the table. The default
//! table is empty: no estimates.

use std::collections::BTreeMap;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::task_details::TaskDetails;

/// Hourly prices of one region and architecture (USD).
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct Price {
    /// Per vCPU and hour.
    pub vcpu_hour: f64,
    /// Per GB of memory and hour.
    pub gb_hour: f64,
    /// Per GB of ephemeral storage above what the price includes
    /// ([`PriceTable::included_storage_gib`]) and hour.
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

/// Prices by region and architecture, the Spot discount and the billing rules.
#[derive(Clone, Debug, Default, PartialEq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct PriceTable {
    /// Prices by region and architecture.
    pub prices: BTreeMap<PriceKey, Price>,
    /// The share Spot capacity saves (0.7: Spot costs 30 % of on-demand).
    pub spot_discount: f64,
    /// Ephemeral storage (GiB) the price includes: only storage above it is billed.
    pub included_storage_gib: u32,
    /// The shortest time billed for a task.
    pub minimum_billed: Duration,
}

impl PriceTable {
    /// A table without prices (no estimates), no Spot discount, no included storage and no
    /// minimum (the default).
    pub fn empty() -> Self {
        PriceTable::default()
    }

    /// Sets the billing rules: `included_storage_gib` of ephemeral storage in the price,
    /// and at least `minimum_billed` billed per task.
    pub fn with_billing(mut self, included_storage_gib: u32, minimum_billed: Duration) -> Self {
        self.included_storage_gib = included_storage_gib;
        self.minimum_billed = minimum_billed;
        self
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
                .unwrap_or(self.included_storage_gib)
                .saturating_sub(self.included_storage_gib),
        );
        let secs = run_time.as_secs() + u64::from(run_time.subsec_nanos() > 0);
        let billed = Duration::from_secs(secs).max(self.minimum_billed);
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
    fn the_default_table_estimates_nothing() {
        let d = details(1024, 2048, None);
        assert_eq!(
            PriceTable::default().estimate(&d, Duration::from_secs(3600)),
            None
        );
    }

    #[test]
    fn an_hour_costs_the_hourly_prices() {
        let t = PriceTable::empty().with_price(
            PriceKey::new("us-east-1", false),
            Price::new(0.04, 0.005, 0.0),
        );
        let e = t
            .estimate(&details(1024, 2048, None), Duration::from_secs(3600))
            .unwrap();
        assert!(close(e.amount, 0.04 + 2.0 * 0.005), "{e:?}");
        assert_eq!(e.billed, Duration::from_secs(3600));
        assert!(!e.spot);
    }

    #[test]
    fn short_tasks_pay_a_minute_and_partial_seconds_round_up() {
        let t = PriceTable::empty()
            .with_price(PriceKey::new("us-east-1", false), Price::new(3.6, 0.0, 0.0))
            .with_billing(0, Duration::from_secs(60));
        let d = details(1024, 2048, None);
        let e = t.estimate(&d, Duration::from_secs(5)).unwrap();
        assert_eq!(e.billed, Duration::from_secs(60));
        assert!(close(e.amount, 0.06), "{e:?}");
        let e = t.estimate(&d, Duration::from_millis(90_001)).unwrap();
        assert_eq!(e.billed, Duration::from_secs(91));
        assert!(close(e.amount, 0.091), "{e:?}");
    }

    #[test]
    fn storage_above_the_included_and_spot_discount() {
        let t = PriceTable::empty()
            .with_price(PriceKey::new("us-east-1", false), Price::new(0.0, 0.0, 1.0))
            .with_spot_discount(0.7)
            .with_billing(20, Duration::ZERO);
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
        let t = PriceTable::empty()
            .with_price(PriceKey::new("us-east-1", false), Price::new(1.0, 0.0, 0.0))
            .with_price(PriceKey::new("us-east-1", true), Price::new(0.5, 0.0, 0.0));
        let mut d = details(1024, 2048, None);
        d.cpu_architecture = Some("ARM64".into());
        let e = t.estimate(&d, Duration::from_secs(3600)).unwrap();
        assert!(close(e.amount, 0.5), "{e:?}");
        assert!(e.key.arm);
        d.region = Some("xx-nowhere-1".into());
        assert_eq!(t.estimate(&d, Duration::from_secs(3600)), None);
        d.region = None;
        assert_eq!(t.estimate(&d, Duration::from_secs(3600)), None);
    }
}
