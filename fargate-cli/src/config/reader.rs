//! A case-insensitive walker over a TOML document, as the Go driver read its file: keys
//! match in any case, a key given twice (in two spellings) is an error, an unknown key is a
//! warning naming the closest known one, and every problem names its key, value and line.
//!
//! [`Reader`] collects problems instead of stopping at the first; the sections of
//! `fargate.toml` ([`super::sections`]) drive it.

use std::borrow::Cow;
use std::time::Duration;

use fargate_core::ConfigProblem;
use toml::Spanned;
use toml::de::{DeTable, DeValue};

use super::duration::parse_duration;

/// 1-based line of byte offset `pos` in `text`.
pub(crate) fn line_of(text: &str, pos: usize) -> usize {
    text.as_bytes()[..pos.min(text.len())]
        .iter()
        .filter(|&&b| b == b'\n')
        .count()
        + 1
}

type Entry<'a, 'i> = (&'a Spanned<Cow<'i, str>>, &'a Spanned<DeValue<'i>>);

/// The keys of one TOML table, matched case-insensitively, with unused ones reported.
pub(crate) struct Table<'a, 'i> {
    name: &'static str,
    entries: Vec<(Entry<'a, 'i>, bool)>,
    known: Vec<&'static str>,
}

impl<'a, 'i> Table<'a, 'i> {
    /// The keys of `table`, named `[name]` in messages (the top level has no name).
    pub(crate) fn new(name: &'static str, table: &'a DeTable<'i>) -> Self {
        Table {
            name,
            entries: table.iter().map(|e| (e, false)).collect(),
            known: Vec::new(),
        }
    }

    /// `[Table] Key`, or `Key` at the top level.
    pub(crate) fn label(&self, key: &str) -> String {
        if self.name.is_empty() {
            key.to_owned()
        } else {
            format!("[{}] {key}", self.name)
        }
    }
}

/// Reads values out of [`Table`]s, collecting every problem and warning.
pub(crate) struct Reader<'t> {
    text: &'t str,
    origin: &'t str,
    /// Problems found, each with its line.
    pub(crate) problems: Vec<ConfigProblem>,
    /// Unknown keys, one line each (`<origin>:<line>: unknown key ...`).
    pub(crate) warnings: Vec<String>,
    /// Every key looked for, as `[Table] Key` (`Key` at the top level): what the reader
    /// knows, for the test that the documented key table agrees.
    #[cfg(test)]
    pub(crate) asked: std::collections::BTreeSet<String>,
}

impl<'t> Reader<'t> {
    /// A reader of `text`, named `origin` in warnings.
    pub(crate) fn new(text: &'t str, origin: &'t str) -> Self {
        Reader {
            text,
            origin,
            problems: Vec::new(),
            warnings: Vec::new(),
            #[cfg(test)]
            asked: Default::default(),
        }
    }

    /// The line of `span`.
    pub(crate) fn line(&self, span: std::ops::Range<usize>) -> usize {
        line_of(self.text, span.start)
    }

    /// A problem of `key` at `span`.
    pub(crate) fn error(&mut self, span: std::ops::Range<usize>, key: String, msg: String) {
        let line = self.line(span);
        self.problems
            .push(ConfigProblem::new(key, msg).at_line(line));
    }

    /// Finds `key` (case-insensitively) and marks it used. Two spellings of one key are an error.
    pub(crate) fn take<'a, 'i>(
        &mut self,
        t: &mut Table<'a, 'i>,
        key: &'static str,
    ) -> Option<&'a Spanned<DeValue<'i>>> {
        t.known.push(key);
        #[cfg(test)]
        self.asked.insert(t.label(key));
        let mut found: Option<&'a Spanned<DeValue<'i>>> = None;
        let mut first_name = String::new();
        let mut dup = None;
        for ((k, v), used) in t.entries.iter_mut() {
            if k.get_ref().eq_ignore_ascii_case(key) {
                *used = true;
                if found.is_some() {
                    dup = Some((k.span(), k.get_ref().to_string()));
                } else {
                    first_name = k.get_ref().to_string();
                    found = Some(*v);
                }
            }
        }
        if let Some((span, name)) = dup {
            self.error(
                span,
                t.label(&name),
                format!("is given twice (also as {first_name:?}; keys are case-insensitive)"),
            );
        }
        found
    }

    /// `<key> = <value> must be <want>`.
    pub(crate) fn type_error(
        &mut self,
        t: &Table<'_, '_>,
        key: &str,
        v: &Spanned<DeValue<'_>>,
        want: &str,
    ) {
        self.error(
            v.span(),
            t.label(key),
            format!("= {} must be {want}", shown(v.get_ref())),
        );
    }

    /// The value of `key` as `convert` makes it, or a problem saying it must be `want`.
    fn typed<'a, 'i, T>(
        &mut self,
        t: &mut Table<'a, 'i>,
        key: &'static str,
        want: &str,
        convert: impl FnOnce(&'a DeValue<'i>) -> Option<T>,
    ) -> Option<T> {
        let v = self.take(t, key)?;
        let value = convert(v.get_ref());
        if value.is_none() {
            self.type_error(t, key, v, want);
        }
        value
    }

    /// A string.
    pub(crate) fn string(&mut self, t: &mut Table<'_, '_>, key: &'static str) -> Option<String> {
        self.typed(t, key, "a string", |v| v.as_str().map(str::to_owned))
    }

    /// A string that, when given, must not be empty or blank.
    pub(crate) fn nonempty(&mut self, t: &mut Table<'_, '_>, key: &'static str) -> Option<String> {
        let v = self.take(t, key)?;
        match v.get_ref().as_str() {
            Some(s) if !s.trim().is_empty() => Some(s.trim().to_owned()),
            Some(_) => {
                self.type_error(t, key, v, "a non-empty string");
                None
            }
            None => {
                self.type_error(t, key, v, "a string");
                None
            }
        }
    }

    /// `true` or `false`.
    pub(crate) fn boolean(&mut self, t: &mut Table<'_, '_>, key: &'static str) -> Option<bool> {
        self.typed(t, key, "true or false", DeValue::as_bool)
    }

    /// An integer within `range`.
    pub(crate) fn integer(
        &mut self,
        t: &mut Table<'_, '_>,
        key: &'static str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Option<i64> {
        let v = self.take(t, key)?;
        match int_value(v.get_ref()) {
            Some(n) if range.contains(&n) => Some(n),
            Some(_) => {
                let want = format!("an integer from {} to {}", range.start(), range.end());
                self.type_error(t, key, v, &want);
                None
            }
            None => {
                self.type_error(t, key, v, "an integer");
                None
            }
        }
    }

    /// A duration ([`parse_duration`], or whole seconds), zero only when `allow_zero`.
    pub(crate) fn duration(
        &mut self,
        t: &mut Table<'_, '_>,
        key: &'static str,
        allow_zero: bool,
    ) -> Option<Duration> {
        let v = self.take(t, key)?;
        let parsed = match v.get_ref() {
            DeValue::String(s) => parse_duration(s),
            other => int_value(other)
                .and_then(|n| u64::try_from(n).ok())
                .map(Duration::from_secs),
        };
        match parsed {
            Some(d) if allow_zero || !d.is_zero() => Some(d),
            _ => {
                let want = if allow_zero {
                    "a duration (seconds, or a string like \"500ms\", \"90s\", \"2m\")"
                } else {
                    "a positive duration (seconds, or a string like \"500ms\", \"90s\", \"2m\")"
                };
                self.type_error(t, key, v, want);
                None
            }
        }
    }

    /// A list of non-empty strings, trimmed.
    pub(crate) fn string_list(
        &mut self,
        t: &mut Table<'_, '_>,
        key: &'static str,
    ) -> Option<Vec<String>> {
        self.typed(t, key, "a list of non-empty strings", |v| {
            v.as_array()?
                .iter()
                .map(|i| {
                    let s = i.get_ref().as_str()?.trim();
                    (!s.is_empty()).then(|| s.to_owned())
                })
                .collect()
        })
    }

    /// A table.
    pub(crate) fn subtable<'a, 'i>(
        &mut self,
        t: &mut Table<'a, 'i>,
        key: &'static str,
    ) -> Option<&'a DeTable<'i>> {
        self.typed(t, key, "a table", DeValue::as_table)
    }

    /// Warns about every key of `t` that no `take` asked for.
    pub(crate) fn finish(&mut self, t: &Table<'_, '_>) {
        for ((k, _), used) in &t.entries {
            if *used {
                continue;
            }
            let name = k.get_ref();
            let closest = t
                .known
                .iter()
                .map(|known| {
                    (
                        strsim::jaro_winkler(&name.to_lowercase(), &known.to_lowercase()),
                        known,
                    )
                })
                .filter(|(score, _)| *score > 0.8)
                .max_by(|a, b| a.0.total_cmp(&b.0));
            let label = t.label(name);
            let line = self.line(k.span());
            let mut msg = format!("{}:{line}: unknown key {label} is ignored", self.origin);
            if let Some((_, known)) = closest {
                msg.push_str(&format!(" (did you mean {}?)", t.label(known)));
            }
            self.warnings.push(msg);
        }
    }
}

/// The span of `"[Table] Key"` (or of the table) in the document, for error lines.
pub(crate) fn find_key_span(doc: &DeTable<'_>, label: &str) -> Option<std::ops::Range<usize>> {
    fn find<'a, 'i>(
        t: &'a DeTable<'i>,
        name: &str,
    ) -> Option<(&'a Spanned<Cow<'i, str>>, &'a Spanned<DeValue<'i>>)> {
        t.iter()
            .find(|(k, _)| k.get_ref().eq_ignore_ascii_case(name))
    }
    match label
        .strip_prefix('[')
        .and_then(|rest| rest.split_once("] "))
    {
        None => find(doc, label).map(|(k, _)| k.span()),
        Some((table, key)) => {
            // A sub-table (`[Fargate.WarmPool] CPU`) is found part by part.
            let mut current = doc;
            let mut span = None;
            for part in table.split('.') {
                let (tk, tv) = find(current, part)?;
                span = Some(tk.span());
                match tv.get_ref().as_table() {
                    Some(inner) => current = inner,
                    None => return span,
                }
            }
            find(current, key).map(|(k, _)| k.span()).or(span)
        }
    }
}

fn int_value(v: &DeValue<'_>) -> Option<i64> {
    let i = v.as_integer()?;
    let digits: String = i.as_str().chars().filter(|c| *c != '_').collect();
    let digits = digits.trim_start_matches('+');
    let (neg, digits) = match digits.strip_prefix('-') {
        Some(d) => (true, d),
        None => (false, digits),
    };
    let digits = if i.radix() == 10 {
        digits
    } else {
        digits.get(2..)?
    };
    let n = i64::from_str_radix(digits, i.radix()).ok()?;
    Some(if neg { -n } else { n })
}

/// A value as the file wrote it (containers abbreviated).
pub(crate) fn shown(v: &DeValue<'_>) -> String {
    match v {
        DeValue::String(s) => format!("{s:?}"),
        DeValue::Integer(i) => i.as_str().to_owned(),
        DeValue::Float(f) => f.as_str().to_owned(),
        DeValue::Boolean(b) => b.to_string(),
        DeValue::Datetime(d) => d.to_string(),
        DeValue::Array(_) => "[...]".into(),
        DeValue::Table(_) => "{...}".into(),
    }
}
