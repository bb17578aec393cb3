//! `[Cost]` and `[Metrics]`: the price table of the job summary's estimate, and the metrics
//! file.

use std::path::PathBuf;

use fargate_core::observe::{Price, PriceKey};
use toml::de::{DeTable, DeValue};

use super::FileConfig;
use super::reader::{Reader, Table};

/// Reads `[Cost]`: `SpotDiscount` and `[[Cost.Prices]]` (`Region`, `Architecture`,
/// `VcpuHour`, `GbHour`, `StorageGbHour`), each price replacing the default of its region
/// and architecture.
pub(super) fn read_cost(r: &mut Reader<'_>, table: &DeTable<'_>, c: &mut FileConfig) {
    let mut t = Table::new("Cost", table);
    if let Some(v) = r.take(&mut t, "SpotDiscount") {
        match as_number(v.get_ref()).filter(|d| *d <= 1.0) {
            Some(d) => c.prices.spot_discount = d,
            None => r.type_error(
                &t,
                "SpotDiscount",
                v,
                "a share between 0 and 1 (0.7: Spot costs 30 % of on-demand)",
            ),
        }
    }
    if let Some(list) = r.take(&mut t, "Prices") {
        let Some(items) = list.get_ref().as_array() else {
            r.type_error(&t, "Prices", list, "an array of tables ([[Cost.Prices]])");
            r.finish(&t);
            return;
        };
        for item in items {
            let Some(table) = item.get_ref().as_table() else {
                r.type_error(&t, "Prices", item, "a table");
                continue;
            };
            let mut p = Table::new("Cost.Prices", table);
            let region = r.nonempty(&mut p, "Region");
            let arm = match r
                .string(&mut p, "Architecture")
                .map(|a| a.to_ascii_lowercase())
            {
                None => Some(false),
                Some(a) if a == "x86_64" || a == "x86" => Some(false),
                Some(a) if a == "arm64" || a == "arm" => Some(true),
                Some(_) => {
                    if let Some(v) = r.take(&mut p, "Architecture") {
                        r.type_error(&p, "Architecture", v, "\"x86_64\" or \"arm64\"");
                    }
                    None
                }
            };
            let vcpu = number(r, &mut p, "VcpuHour");
            let gb = number(r, &mut p, "GbHour");
            let storage = number(r, &mut p, "StorageGbHour").unwrap_or(0.000111);
            match (region, arm, vcpu, gb) {
                (Some(region), Some(arm), Some(vcpu), Some(gb)) => {
                    c.prices
                        .prices
                        .insert(PriceKey::new(region, arm), Price::new(vcpu, gb, storage));
                }
                _ => r.error(
                    item.span(),
                    "[[Cost.Prices]]".into(),
                    "needs Region, VcpuHour and GbHour".into(),
                ),
            }
            r.finish(&p);
        }
    }
    r.finish(&t);
}

/// Reads `[Metrics]`: `File`, the Prometheus text file for node_exporter's textfile
/// collector.
pub(super) fn read_metrics(r: &mut Reader<'_>, table: &DeTable<'_>, c: &mut FileConfig) {
    let mut t = Table::new("Metrics", table);
    c.metrics_file = r.nonempty(&mut t, "File").map(PathBuf::from);
    r.finish(&t);
}

/// A non-negative number (integer or float).
fn number(r: &mut Reader<'_>, t: &mut Table<'_, '_>, key: &'static str) -> Option<f64> {
    let v = r.take(t, key)?;
    let n = as_number(v.get_ref());
    if n.is_none() {
        r.type_error(t, key, v, "a number, 0 or more");
    }
    n
}

fn as_number(v: &DeValue<'_>) -> Option<f64> {
    match v {
        DeValue::Float(f) => f.as_str().replace('_', "").parse::<f64>().ok(),
        DeValue::Integer(i) => i.as_str().replace('_', "").parse::<f64>().ok(),
        _ => None,
    }
    .filter(|n| n.is_finite() && *n >= 0.0)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]

    use fargate_core::observe::{Price, PriceKey};

    const MINIMAL: &str = "[Fargate]\n  Cluster = \"ci\"\n  Subnet = \"subnet-1\"\n  \
                           SecurityGroup = \"sg-1\"\n  TaskDefinition = \"ci:1\"\n";

    fn parse(extra: &str) -> Result<super::super::LoadedConfig, String> {
        super::super::parse(&format!("{MINIMAL}{extra}"), "fargate.toml")
            .map_err(|e| fargate_core::Error::from(e).message().to_owned())
    }

    #[test]
    fn prices_replace_the_defaults_of_their_region_and_the_metrics_file_is_read() {
        let loaded = parse(
            "[Cost]\n  SpotDiscount = 0.5\n[[Cost.Prices]]\n  Region = \"eu-north-1\"\n  \
             Architecture = \"arm64\"\n  VcpuHour = 0.03\n  GbHour = 0.003\n  StorageGbHour = 0\n\
             [[Cost.Prices]]\n  Region = \"us-east-1\"\n  VcpuHour = 1\n  GbHour = 2\n\
             [Metrics]\n  File = \"/var/lib/node_exporter/fargate.prom\"\n",
        )
        .unwrap();
        let c = loaded.config;
        assert!(loaded.warnings.is_empty(), "{:?}", loaded.warnings);
        assert_eq!(c.prices.spot_discount, 0.5);
        assert_eq!(
            c.prices.prices.get(&PriceKey::new("eu-north-1", true)),
            Some(&Price::new(0.03, 0.003, 0.0))
        );
        assert_eq!(
            c.prices.prices.get(&PriceKey::new("us-east-1", false)),
            Some(&Price::new(1.0, 2.0, 0.000111))
        );
        // Other defaults stay.
        assert!(
            c.prices
                .prices
                .contains_key(&PriceKey::new("eu-west-1", false))
        );
        assert_eq!(
            c.metrics_file.as_deref(),
            Some(std::path::Path::new("/var/lib/node_exporter/fargate.prom"))
        );
    }

    #[test]
    fn bad_values_are_refused_with_their_key() {
        let e = parse("[Cost]\n  SpotDiscount = 1.5\n").unwrap_err();
        assert!(e.contains("[Cost] SpotDiscount"), "{e}");
        let e = parse("[[Cost.Prices]]\n  Region = \"x\"\n  VcpuHour = \"cheap\"\n  GbHour = 1\n")
            .unwrap_err();
        assert!(e.contains("VcpuHour") && e.contains("a number"), "{e}");
        let e = parse("[[Cost.Prices]]\n  Region = \"x\"\n  Architecture = \"mips\"\n  VcpuHour = 1\n  GbHour = 1\n")
            .unwrap_err();
        assert!(e.contains("arm64"), "{e}");
        let e = parse("[[Cost.Prices]]\n  VcpuHour = 1\n").unwrap_err();
        assert!(e.contains("needs Region, VcpuHour and GbHour"), "{e}");
    }
}
