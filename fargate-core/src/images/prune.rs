//! Which derived task definitions `fargate gc` removes: unused for too long, or beyond the
//! bound on derived families.

use std::time::{Duration, SystemTime};

/// One derived family as the backend lists it.
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub struct DerivedFamily {
    /// The family's name.
    pub name: String,
    /// When a launch last used it (the newest of its revisions' marks); `None` when no
    /// revision says.
    pub last_used: Option<SystemTime>,
}

impl DerivedFamily {
    /// Family `name`, last used at `last_used`.
    pub fn new(name: impl Into<String>, last_used: Option<SystemTime>) -> Self {
        DerivedFamily {
            name: name.into(),
            last_used,
        }
    }
}

/// The families to remove at `now`: every family unused for `unused_after` or longer (one
/// without a mark counts as unused), then, of the rest, the least recently used beyond
/// `max_families`. In order of their last use, oldest first.
pub fn families_to_remove(
    families: &[DerivedFamily],
    now: SystemTime,
    unused_after: Duration,
    max_families: usize,
) -> Vec<String> {
    let mut sorted: Vec<&DerivedFamily> = families.iter().collect();
    // Newest first; ties by name, so that the choice does not depend on listing order.
    sorted.sort_by(|a, b| b.last_used.cmp(&a.last_used).then(a.name.cmp(&b.name)));
    let stale = |f: &DerivedFamily| {
        f.last_used
            .is_none_or(|t| now.duration_since(t).unwrap_or_default() >= unused_after)
    };
    let mut kept = 0usize;
    let mut removed: Vec<String> = Vec::new();
    for family in sorted {
        if stale(family) || kept >= max_families {
            removed.push(family.name.clone());
        } else {
            kept += 1;
        }
    }
    removed.reverse();
    removed
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stale_families_and_the_least_recent_beyond_the_bound_go() {
        let now = SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000);
        let ago = |s: u64| Some(now - Duration::from_secs(s));
        let day = 24 * 3600;
        let families = [
            DerivedFamily::new("fresh", ago(60)),
            DerivedFamily::new("old", ago(8 * day)),
            DerivedFamily::new("unmarked", None),
            DerivedFamily::new("yesterday", ago(day)),
            DerivedFamily::new("hour", ago(3600)),
        ];
        let week = Duration::from_secs(7 * day);
        assert_eq!(
            families_to_remove(&families, now, week, 10),
            ["unmarked", "old"]
        );
        // At most two families: the least recently used of the fresh ones goes too.
        assert_eq!(
            families_to_remove(&families, now, week, 2),
            ["unmarked", "old", "yesterday"]
        );
        assert!(families_to_remove(&[], now, week, 1).is_empty());
    }
}
