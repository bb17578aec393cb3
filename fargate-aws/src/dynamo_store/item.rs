//! The table's items as DynamoDB's JSON protocol writes them: attribute values, the names
//! of the attributes, and requests with their expressions.

use serde_json::{Map, Value, json};

/// The partition key: the record's (or lock's, or note's) key, a [`fargate_core::JobKey`].
pub(super) const KEY: &str = "pk";
/// The job record: its JSON, exactly as the file store writes it in a file.
pub(super) const RECORD: &str = "rec";
/// An interruption note (JSON).
pub(super) const NOTE: &str = "note";
/// Who holds the key's lock: `<host>/<pid>/<random hex>`, unique per acquisition.
pub(super) const HOLDER: &str = "lk_holder";
/// The lock's fencing token: a version, increased at every acquisition while the item lives.
pub(super) const FENCE: &str = "lk_fence";
/// Until when the lease runs: Unix milliseconds by the holder's clock.
pub(super) const UNTIL: &str = "lk_until";
/// The lease's duration in milliseconds (a waiter may take over a lease it saw unchanged
/// for this long by its own clock, whatever the clocks say).
pub(super) const LEASE: &str = "lk_lease";
/// The job's heartbeat: Unix seconds of the last sign of life of its stages.
pub(super) const BEAT: &str = "beat";
/// The host whose stages sent the heartbeat.
pub(super) const BEAT_HOST: &str = "beat_host";
/// The item's expiry for DynamoDB's TTL: Unix seconds. Every write pushes it
/// [`super::ITEM_TTL`] ahead; an interruption note's is the note's own end.
pub(super) const EXPIRES: &str = "expires_at";

/// A counter's holders: job key → until when it counts without a record (Unix s).
pub(super) const SLOTS: &str = "slots";
/// A counter's version: increased by every write of its holders.
pub(super) const SLOTS_VERSION: &str = "slots_ver";

/// The placeholders (`#rec`...) an expression may use, and the attributes they name.
const NAMES: [(&str, &str); 13] = [
    ("#pk", KEY),
    ("#rec", RECORD),
    ("#note", NOTE),
    ("#h", HOLDER),
    ("#f", FENCE),
    ("#u", UNTIL),
    ("#l", LEASE),
    ("#beat", BEAT),
    ("#bh", BEAT_HOST),
    ("#exp", EXPIRES),
    ("#lim", "lim"),
    ("#slots", SLOTS),
    ("#sv", SLOTS_VERSION),
];

/// A string attribute value.
pub(super) fn s(v: impl Into<String>) -> Value {
    json!({ "S": v.into() })
}

/// A number attribute value.
pub(super) fn n(v: impl std::fmt::Display) -> Value {
    json!({ "N": v.to_string() })
}

/// The string attribute `name` of `item`.
pub(super) fn get_s<'a>(item: &'a Value, name: &str) -> Option<&'a str> {
    item.get(name)?.get("S")?.as_str()
}

/// The number attribute `name` of `item` (a non-negative integer).
pub(super) fn get_n(item: &Value, name: &str) -> Option<u64> {
    item.get(name)?.get("N")?.as_str()?.parse().ok()
}

/// A request on the item of `key` in `table`: with the expressions given, the names their
/// placeholders use, and `values` (`:x` → attribute value).
pub(super) fn request(
    table: &str,
    key: &str,
    update: Option<&str>,
    condition: Option<&str>,
    values: &[(&str, Value)],
) -> Value {
    let mut input = Map::new();
    input.insert("TableName".into(), json!(table));
    input.insert("Key".into(), json!({ KEY: s(key) }));
    let mut used = String::new();
    if let Some(update) = update {
        input.insert("UpdateExpression".into(), json!(update));
        used.push_str(update);
    }
    if let Some(condition) = condition {
        input.insert("ConditionExpression".into(), json!(condition));
        used.push(' ');
        used.push_str(condition);
    }
    with_names_and_values(&mut input, &used, values);
    Value::Object(input)
}

/// Adds `ExpressionAttributeNames` for the placeholders `expressions` use (DynamoDB
/// refuses unused ones) and `ExpressionAttributeValues`.
pub(super) fn with_names_and_values(
    input: &mut Map<String, Value>,
    expressions: &str,
    values: &[(&str, Value)],
) {
    let names: Map<String, Value> = NAMES
        .iter()
        .filter(|(placeholder, _)| uses(expressions, placeholder))
        .map(|(placeholder, name)| ((*placeholder).to_owned(), json!(name)))
        .collect();
    if !names.is_empty() {
        input.insert("ExpressionAttributeNames".into(), Value::Object(names));
    }
    if !values.is_empty() {
        let values: Map<String, Value> = values
            .iter()
            .map(|(k, v)| ((*k).to_owned(), v.clone()))
            .collect();
        input.insert("ExpressionAttributeValues".into(), Value::Object(values));
    }
}

/// Whether `expression` uses `placeholder` as a whole word (`#h` is not in `#host`).
fn uses(expression: &str, placeholder: &str) -> bool {
    expression.match_indices(placeholder).any(|(at, _)| {
        !expression[at + placeholder.len()..]
            .chars()
            .next()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_names_an_expression_uses_are_sent() {
        let r = request(
            "t",
            "ci-1",
            Some("SET #rec = :r, #exp = :e"),
            Some("#h = :h AND #f = :f"),
            &[(":r", s("{}")), (":e", n(5))],
        );
        let names = r["ExpressionAttributeNames"].as_object().unwrap();
        let mut keys: Vec<&str> = names.keys().map(String::as_str).collect();
        keys.sort();
        assert_eq!(keys, ["#exp", "#f", "#h", "#rec"]);
        assert_eq!(r["Key"]["pk"]["S"], "ci-1");
        assert_eq!(r["ExpressionAttributeValues"][":e"]["N"], "5");
        assert!(!uses("#host", "#h"));
        assert!(uses("#h = :h", "#h"));
    }
}
