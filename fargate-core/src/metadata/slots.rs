//! Named counters of slots ([`MetadataStore::acquire_slot`]): how a store counts the jobs
//! of a project against its `MaxConcurrentJobs`, on one host or across a fleet.
//!
//! A counter is a set of holders (job keys), each with the time until which it counts
//! even without a record. A holder counts while that time has not passed **or while its
//! job has a record**: prepare takes the slot before it writes the job's record (the time
//! covers the gap), and from then on the record keeps it; a prepare that crashed before
//! writing the record stops counting when its time is up, and a job whose record `gc`
//! removed stops counting at once. Every store applies the same rules through
//! [`SlotHolders`], under its own atomicity (a mutex, a lock file, a conditional write).
//!
//! [`MetadataStore::acquire_slot`]: super::MetadataStore::acquire_slot

use std::collections::BTreeMap;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use serde::{Deserialize, Serialize};

use crate::error::{Error, ErrorKind, Result};
use crate::job::JobKey;

/// The longest counter name.
pub const MAX_COUNTER_LEN: usize = 200;

/// The answer of [`MetadataStore::acquire_slot`](super::MetadataStore::acquire_slot).
#[derive(Clone, Debug, PartialEq, Eq)]
#[non_exhaustive]
pub enum SlotGrant {
    /// The holder has a slot (it had one already, or took a free one).
    Taken,
    /// All `limit` slots are held by others: these, sorted.
    Full {
        /// The holders that count.
        holders: Vec<JobKey>,
    },
}

/// Whether a holder of a counter counts, and why ([`SlotHolders::standings`], the one rule
/// every store's [`acquire_slot`](super::MetadataStore::acquire_slot) and
/// [`slot_holders`](super::MetadataStore::slot_holders) apply).
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum SlotStanding {
    /// Its time has not run out: it counts whether or not its job has a record (a prepare
    /// that took its slot and has not written its job's record yet).
    Time,
    /// Its time ran out, and it counts because its job has a record (the job runs, or its
    /// cleanup has not ended).
    Record,
    /// Its time ran out and its job has no record: it no longer counts (the counter's next
    /// acquire forgets it).
    Gone,
}

impl SlotStanding {
    /// Whether a holder with this standing takes one of the limit's slots.
    pub fn counts(self) -> bool {
        !matches!(self, SlotStanding::Gone)
    }

    /// The standing in words, for listings.
    pub fn as_str(self) -> &'static str {
        match self {
            SlotStanding::Time => "time",
            SlotStanding::Record => "record",
            SlotStanding::Gone => "gone",
        }
    }
}

/// One holder of a counter, as [`MetadataStore::slot_holders`](super::MetadataStore::slot_holders)
/// lists it.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[non_exhaustive]
pub struct SlotHolder {
    /// The holder: a job key.
    pub key: JobKey,
    /// Until when it counts without a record (Unix seconds).
    pub until: u64,
    /// Whether it counts, and why.
    pub standing: SlotStanding,
}

impl SlotHolder {
    /// Holder `key`, counting until `until` without a record, with `standing`.
    pub fn new(key: JobKey, until: u64, standing: SlotStanding) -> Self {
        SlotHolder {
            key,
            until,
            standing,
        }
    }
}

/// The holders of one counter and until when each counts without a record (Unix seconds):
/// the state every store keeps, in its own way, per counter.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct SlotHolders {
    /// Holder (a job key) → until when it counts without a record.
    pub holders: BTreeMap<JobKey, u64>,
}

impl SlotHolders {
    /// The holders whose time is up at `now`: they count only while their job has a
    /// record, which the caller checks before [`SlotHolders::try_take`].
    pub fn expired(&self, now: SystemTime) -> Vec<JobKey> {
        let now = unix(now);
        self.holders
            .iter()
            .filter(|(_, until)| !time_left(**until, now))
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// **The rule**: each holder's standing at `now`, in key order, given `without_record`,
    /// the holders of [`SlotHolders::expired`] whose job has no record (which the caller
    /// checked in its store). A holder counts while its time has not run out, or while its
    /// job has a record.
    pub fn standings(&self, now: SystemTime, without_record: &[JobKey]) -> Vec<SlotHolder> {
        let now = unix(now);
        self.holders
            .iter()
            .map(|(key, until)| {
                let standing = if time_left(*until, now) {
                    SlotStanding::Time
                } else if without_record.contains(key) {
                    SlotStanding::Gone
                } else {
                    SlotStanding::Record
                };
                SlotHolder::new(key.clone(), *until, standing)
            })
            .collect()
    }

    /// Forgets the holders that no longer count ([`SlotHolders::standings`] with
    /// `without_record`), then gives `holder` a slot if it has one or fewer than `limit`
    /// others count, counting until `now + ttl` without a record (a zero `ttl`: only while
    /// its job has a record). Whether the state changed is for the caller to compare.
    pub fn try_take(
        &mut self,
        holder: &JobKey,
        limit: u32,
        ttl: Duration,
        now: SystemTime,
        without_record: &[JobKey],
    ) -> SlotGrant {
        for gone in self.standings(now, without_record) {
            if !gone.standing.counts() && gone.key != *holder {
                self.holders.remove(&gone.key);
            }
        }
        let until = unix(now).saturating_add(ttl.as_secs());
        if let Some(old) = self.holders.get_mut(holder) {
            *old = (*old).max(until);
            return SlotGrant::Taken;
        }
        if self.holders.len() < limit as usize {
            self.holders.insert(holder.clone(), until);
            return SlotGrant::Taken;
        }
        SlotGrant::Full {
            holders: self.holders.keys().cloned().collect(),
        }
    }

    /// Gives back `holder`'s slot; whether it had one.
    pub fn release(&mut self, holder: &JobKey) -> bool {
        self.holders.remove(holder).is_some()
    }
}

/// Refuses a counter name a store could not use safely as (part of) a file name or an
/// item key: 1-[`MAX_COUNTER_LEN`] characters of `a-z A-Z 0-9 . _ -`, not starting with
/// `.`.
pub fn check_counter(counter: &str) -> Result<()> {
    let ok = (1..=MAX_COUNTER_LEN).contains(&counter.len())
        && !counter.starts_with('.')
        && counter
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || "._-".contains(c));
    if ok {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::InvalidInput,
        format!(
            "{counter:?} is not a counter name: use 1-{MAX_COUNTER_LEN} characters of a-z, A-Z, 0-9, '.', '_' and '-', not starting with '.'"
        ),
    ))
}

/// Whether a holder counting until `until` (Unix s) still counts by its time at `now`.
fn time_left(until: u64, now: u64) -> bool {
    until > now
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(n: u64) -> JobKey {
        JobKey::parse(&format!("ci-{n}")).unwrap()
    }

    #[test]
    fn a_full_counter_refuses_until_a_holder_is_gone() {
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        let mut s = SlotHolders::default();
        let ttl = Duration::from_secs(60);
        assert_eq!(s.try_take(&key(1), 2, ttl, now, &[]), SlotGrant::Taken);
        assert_eq!(s.try_take(&key(2), 2, ttl, now, &[]), SlotGrant::Taken);
        assert_eq!(
            s.try_take(&key(3), 2, ttl, now, &[]),
            SlotGrant::Full {
                holders: vec![key(1), key(2)]
            }
        );
        // A holder takes again what it holds.
        assert_eq!(s.try_take(&key(2), 2, ttl, now, &[]), SlotGrant::Taken);
        let later = now + Duration::from_secs(61);
        assert_eq!(s.expired(later), vec![key(1), key(2)]);
        assert_eq!(s.expired(now), Vec::<JobKey>::new());
        assert_eq!(
            s.try_take(&key(3), 2, ttl, later, &[key(1)]),
            SlotGrant::Taken
        );
        assert!(s.release(&key(2)));
        assert!(!s.release(&key(2)));
        assert_eq!(s.holders.keys().collect::<Vec<_>>(), [&key(3)]);
    }

    #[test]
    fn a_holder_counts_by_its_time_or_its_record() {
        let now = UNIX_EPOCH + Duration::from_secs(1000);
        let mut s = SlotHolders::default();
        s.holders.insert(key(1), 1001); // time left
        s.holders.insert(key(2), 1000); // time up, record
        s.holders.insert(key(3), 999); // time up, no record
        s.holders.insert(key(4), 2000); // time left, no record: still counts
        let without_record = [key(3), key(4)];
        let standings: Vec<_> = s
            .standings(now, &without_record)
            .into_iter()
            .map(|h| (h.key, h.standing))
            .collect();
        assert_eq!(
            standings,
            [
                (key(1), SlotStanding::Time),
                (key(2), SlotStanding::Record),
                (key(3), SlotStanding::Gone),
                (key(4), SlotStanding::Time),
            ]
        );
        // Acquire forgets exactly the holder that lists as gone.
        assert_eq!(
            s.try_take(&key(5), 4, Duration::ZERO, now, &without_record),
            SlotGrant::Taken
        );
        assert!(!s.holders.contains_key(&key(3)));
        assert_eq!(s.holders.len(), 4);
    }

    #[test]
    fn counter_names_stay_inside_a_directory() {
        for bad in ["", ".x", "a/b", "../x", "a b", &"x".repeat(201)] {
            assert!(check_counter(bad).is_err(), "{bad:?}");
        }
        check_counter("ns-1.project-42").unwrap();
    }
}
