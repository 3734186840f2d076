//! A strict parser for the Prometheus text exposition format, version 0.0.4
//! (<https://prometheus.io/docs/instrumenting/exposition_formats/>).
//!
//! Strict means: every rule the format states is checked, and the first
//! broken one is returned with its 1-based line number. The rules:
//!
//! - Lines end with `\n`, the last one included; blank lines are ignored;
//!   leading and trailing blanks/tabs are ignored.
//! - `# HELP name docstring` (escapes `\\`, `\n`) and `# TYPE name type`
//!   (`counter`, `gauge`, `histogram`, `summary`, `untyped`); other `#`
//!   lines are comments. At most one HELP and one TYPE per name, both
//!   before the family's first sample.
//! - All lines of one family form one group: a family that reappears after
//!   another one started is an error.
//! - Samples: `name [{label="value",...[,]}] value [timestamp]`; names match
//!   `[a-zA-Z_:][a-zA-Z0-9_:]*`, label names `[a-zA-Z_][a-zA-Z0-9_]*`
//!   (names starting with `__` are reserved), label values escape `\\`,
//!   `\"` and `\n` and nothing else. Values are floats as Go's `ParseFloat`
//!   reads them (`NaN`, `+Inf`, `-Inf`, any case, hex floats; out-of-range
//!   literals are errors); timestamps are `i64` milliseconds.
//! - A series (sample name and label set) appears once.
//! - A histogram `x` has only `x_bucket{le=..}`, `x_sum`, `x_count`
//!   samples; a summary `x` only `x{quantile=..}`, `x_sum`, `x_count`.
//!   Bucket bounds and quantiles rise within a series; every histogram
//!   series has an `le="+Inf"` bucket equal to its `x_count`.
//!
//! What it does not check: that counters are non-negative or that bucket
//! counts are cumulative (the format does not state these for 0.0.4).

use std::collections::{HashMap, HashSet};
use std::fmt;

/// The type a `# TYPE` line declares; `Untyped` without one.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum MetricType {
    Counter,
    Gauge,
    Histogram,
    Summary,
    Untyped,
}

impl MetricType {
    /// The keyword used in `# TYPE` lines.
    pub fn as_str(self) -> &'static str {
        match self {
            MetricType::Counter => "counter",
            MetricType::Gauge => "gauge",
            MetricType::Histogram => "histogram",
            MetricType::Summary => "summary",
            MetricType::Untyped => "untyped",
        }
    }

    fn parse(s: &str) -> Option<Self> {
        Some(match s {
            "counter" => MetricType::Counter,
            "gauge" => MetricType::Gauge,
            "histogram" => MetricType::Histogram,
            "summary" => MetricType::Summary,
            "untyped" => MetricType::Untyped,
            _ => return None,
        })
    }
}

impl fmt::Display for MetricType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One sample line.
#[derive(Clone, Debug, PartialEq)]
pub struct Sample {
    /// The sample's own name (`x_bucket` for a histogram `x`'s bucket).
    pub name: String,
    /// Labels in the order written, values unescaped. Names are unique.
    pub labels: Vec<(String, String)>,
    pub value: f64,
    /// Milliseconds since the Unix epoch, when given.
    pub timestamp_ms: Option<i64>,
    /// 1-based line number in the exposition.
    pub line: usize,
}

impl Sample {
    /// The value of label `name`.
    pub fn label(&self, name: &str) -> Option<&str> {
        self.labels
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

/// A metric family: its metadata and its samples, in exposition order.
#[derive(Clone, Debug, PartialEq)]
pub struct Family {
    pub name: String,
    pub kind: MetricType,
    /// The unescaped docstring of its `# HELP` line.
    pub help: Option<String>,
    pub samples: Vec<Sample>,
}

/// Why an exposition was rejected, and where.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
#[error("line {line}: {kind}")]
pub struct ExpositionError {
    /// 1-based line number.
    pub line: usize,
    pub kind: ExpositionErrorKind,
}

/// The rule an exposition broke.
#[derive(Clone, Debug, PartialEq, thiserror::Error)]
pub enum ExpositionErrorKind {
    #[error("invalid metric name {0:?} (must match [a-zA-Z_:][a-zA-Z0-9_:]*)")]
    InvalidMetricName(String),
    #[error("invalid label name {0:?} (must match [a-zA-Z_][a-zA-Z0-9_]*)")]
    InvalidLabelName(String),
    #[error("label name {0:?} is reserved (names starting with \"__\" are)")]
    ReservedLabelName(String),
    #[error("label {0:?} appears twice in one sample")]
    DuplicateLabel(String),
    #[error("bad label syntax: {0}")]
    BadLabelSyntax(String),
    #[error("invalid escape sequence \"\\{0}\" (only \\\\, \\\" in label values, and \\n)")]
    InvalidEscape(char),
    #[error("missing sample value")]
    MissingValue,
    #[error("invalid sample value {0:?}")]
    InvalidValue(String),
    #[error("invalid timestamp {0:?} (must be an int64 of milliseconds)")]
    InvalidTimestamp(String),
    #[error("unexpected text after the timestamp: {0:?}")]
    TrailingText(String),
    #[error("malformed {keyword} line: {reason}")]
    MalformedMetadata {
        keyword: &'static str,
        reason: String,
    },
    #[error("unknown metric type {0:?} (counter, gauge, histogram, summary or untyped)")]
    UnknownType(String),
    #[error("second TYPE line for {0}")]
    DuplicateType(String),
    #[error("second HELP line for {0}")]
    DuplicateHelp(String),
    #[error("TYPE line for {0} after its samples")]
    TypeAfterSamples(String),
    #[error("HELP line for {0} after its samples")]
    HelpAfterSamples(String),
    #[error("lines of {family} are not one group: the family already started at line {first_line} and another began since")]
    FamilyNotContiguous { family: String, first_line: usize },
    #[error("sample {sample} does not belong to {kind} {family}: expected {expected}")]
    SampleNameMismatch {
        sample: String,
        family: String,
        kind: MetricType,
        expected: String,
    },
    #[error("sample {sample} lacks its {label:?} label")]
    MissingLabel { sample: String, label: &'static str },
    #[error("sample {sample} must not carry a {label:?} label")]
    UnexpectedLabel { sample: String, label: &'static str },
    #[error("label {label}={value:?} is not a number")]
    InvalidBound { label: &'static str, value: String },
    #[error("{label} values of {series} do not rise: {value} after {previous}")]
    BoundsOutOfOrder {
        series: String,
        label: &'static str,
        previous: f64,
        value: f64,
    },
    #[error("histogram series {0} has no le=\"+Inf\" bucket")]
    MissingInfBucket(String),
    #[error("histogram series {0} has no _count sample")]
    MissingCount(String),
    #[error("histogram series {series}: le=\"+Inf\" bucket is {bucket} but _count is {count}")]
    InfBucketMismatch {
        series: String,
        bucket: f64,
        count: f64,
    },
    #[error("duplicate series {0}")]
    DuplicateSeries(String),
    #[error("the last line does not end with a line feed")]
    MissingFinalNewline,
}

/// Parses a whole exposition into its families, in order of appearance.
pub fn parse_exposition(text: &str) -> Result<Vec<Family>, ExpositionError> {
    let mut p = Parser::default();
    let mut last_line = 0;
    for (i, raw) in text.split('\n').enumerate() {
        let line = i + 1;
        let s = raw.trim_matches(BLANKS);
        if s.is_empty() {
            continue;
        }
        last_line = line;
        let r = if let Some(rest) = s.strip_prefix('#') {
            p.handle_comment(rest, line)
        } else {
            p.handle_sample(s, line)
        };
        r.map_err(|kind| ExpositionError {
            line: p.error_line.take().unwrap_or(line),
            kind,
        })?;
    }
    p.close_current()?;
    if !text.is_empty() && !text.ends_with('\n') {
        return Err(ExpositionError {
            line: last_line.max(1),
            kind: ExpositionErrorKind::MissingFinalNewline,
        });
    }
    Ok(p.families.into_iter().map(|f| f.family).collect())
}

const BLANKS: &[char] = &[' ', '\t'];

type Kind = ExpositionErrorKind;

/// A sample's labels, in the order written.
type Labels = Vec<(String, String)>;

#[derive(Default)]
struct Parser {
    families: Vec<FamilyState>,
    by_name: HashMap<String, usize>,
    /// The family whose group is open.
    current: Option<usize>,
    /// Where an error found while closing a group lies (its last line),
    /// when that is not the line being parsed.
    error_line: Option<usize>,
}

struct FamilyState {
    family: Family,
    first_line: usize,
    last_line: usize,
    has_type: bool,
    /// Series keys (sample name and sorted labels) seen so far.
    series: HashSet<String>,
    /// Histogram and summary series (labels without `le`/`quantile`).
    groups: HashMap<String, GroupState>,
    /// Order of `groups` keys, for deterministic error reports.
    group_order: Vec<String>,
}

#[derive(Default)]
struct GroupState {
    last_bound: Option<f64>,
    inf_bucket: Option<f64>,
    count: Option<f64>,
}

impl Parser {
    fn handle_comment(&mut self, rest: &str, line: usize) -> Result<(), Kind> {
        let rest = rest.trim_start_matches(BLANKS);
        let (keyword, rest) = split_token(rest);
        match keyword {
            "HELP" => {
                let (name, doc) = split_token(rest);
                if name.is_empty() {
                    return Err(Kind::MalformedMetadata {
                        keyword: "HELP",
                        reason: "no metric name".into(),
                    });
                }
                check_metric_name(name)?;
                let help = unescape_help(doc)?;
                let idx = self.enter(name, line)?;
                let f = &mut self.families[idx];
                if f.family.help.is_some() {
                    return Err(Kind::DuplicateHelp(name.into()));
                }
                if !f.family.samples.is_empty() {
                    return Err(Kind::HelpAfterSamples(name.into()));
                }
                f.family.help = Some(help);
                Ok(())
            }
            "TYPE" => {
                let (name, rest) = split_token(rest);
                let (kind, extra) = split_token(rest);
                if name.is_empty() || kind.is_empty() {
                    return Err(Kind::MalformedMetadata {
                        keyword: "TYPE",
                        reason: "needs a metric name and a type".into(),
                    });
                }
                if !extra.is_empty() {
                    return Err(Kind::MalformedMetadata {
                        keyword: "TYPE",
                        reason: format!("unexpected text after the type: {extra:?}"),
                    });
                }
                check_metric_name(name)?;
                let kind = MetricType::parse(kind).ok_or_else(|| Kind::UnknownType(kind.into()))?;
                let idx = self.enter(name, line)?;
                let f = &mut self.families[idx];
                if f.has_type {
                    return Err(Kind::DuplicateType(name.into()));
                }
                if !f.family.samples.is_empty() {
                    return Err(Kind::TypeAfterSamples(name.into()));
                }
                f.has_type = true;
                f.family.kind = kind;
                Ok(())
            }
            // Any other comment is ignored.
            _ => Ok(()),
        }
    }

    fn handle_sample(&mut self, s: &str, line: usize) -> Result<(), Kind> {
        let name_len = s.find(|c: char| !is_metric_name_char(c)).unwrap_or(s.len());
        let (name, rest) = s.split_at(name_len);
        match rest.chars().next() {
            None | Some(' ' | '\t' | '{') => check_metric_name(name)?,
            Some(_) => {
                let (token, _) = split_token(s);
                let token = token.split('{').next().unwrap_or(token);
                return Err(Kind::InvalidMetricName(token.into()));
            }
        }
        let rest = rest.trim_start_matches(BLANKS);
        let (labels, rest) = match rest.strip_prefix('{') {
            Some(r) => parse_labels(r)?,
            None => (Vec::new(), rest),
        };
        let rest = rest.trim_start_matches(BLANKS);
        let (value, rest) = split_token(rest);
        if value.is_empty() {
            return Err(Kind::MissingValue);
        }
        let value = parse_float(value).ok_or_else(|| Kind::InvalidValue(value.into()))?;
        let (ts, rest) = split_token(rest);
        let timestamp_ms = if ts.is_empty() {
            None
        } else {
            Some(parse_timestamp(ts).ok_or_else(|| Kind::InvalidTimestamp(ts.into()))?)
        };
        if !rest.is_empty() {
            return Err(Kind::TrailingText(rest.into()));
        }

        let idx = self.resolve(name);
        let idx = self.enter_index(idx, name, line)?;
        let sample = Sample {
            name: name.into(),
            labels,
            value,
            timestamp_ms,
            line,
        };
        self.families[idx].add_sample(sample)
    }

    /// The family a sample named `name` belongs to (`None`: a new one).
    fn resolve(&self, name: &str) -> Option<usize> {
        if let Some(c) = self.current {
            let f = &self.families[c].family;
            if derived_name_kind(&f.name, f.kind, name).is_some() {
                return Some(c);
            }
        }
        if let Some(&i) = self.by_name.get(name) {
            return Some(i);
        }
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix) {
                if let Some(&i) = self.by_name.get(base) {
                    let f = &self.families[i].family;
                    if derived_name_kind(&f.name, f.kind, name).is_some() {
                        return Some(i);
                    }
                }
            }
        }
        None
    }

    /// Opens (or continues) the group of family `name`.
    fn enter(&mut self, name: &str, line: usize) -> Result<usize, Kind> {
        let idx = self.by_name.get(name).copied();
        self.enter_index(idx, name, line)
    }

    fn enter_index(&mut self, idx: Option<usize>, name: &str, line: usize) -> Result<usize, Kind> {
        match idx {
            Some(i) if self.current == Some(i) => {
                self.families[i].last_line = line;
                Ok(i)
            }
            Some(i) => {
                let f = &self.families[i];
                Err(Kind::FamilyNotContiguous {
                    family: f.family.name.clone(),
                    first_line: f.first_line,
                })
            }
            None => {
                if let Err(e) = self.close_current() {
                    self.error_line = Some(e.line);
                    return Err(e.kind);
                }
                let i = self.families.len();
                self.families.push(FamilyState {
                    family: Family {
                        name: name.into(),
                        kind: MetricType::Untyped,
                        help: None,
                        samples: Vec::new(),
                    },
                    first_line: line,
                    last_line: line,
                    has_type: false,
                    series: HashSet::new(),
                    groups: HashMap::new(),
                    group_order: Vec::new(),
                });
                self.by_name.insert(name.into(), i);
                self.current = Some(i);
                Ok(i)
            }
        }
    }

    /// Ends the open group, checking what can only be checked at its end.
    fn close_current(&mut self) -> Result<(), ExpositionError> {
        let Some(c) = self.current.take() else {
            return Ok(());
        };
        let f = &self.families[c];
        if f.family.kind != MetricType::Histogram {
            return Ok(());
        }
        let err = |kind| ExpositionError {
            line: f.last_line,
            kind,
        };
        for key in &f.group_order {
            let g = &f.groups[key];
            let series = format!("{}{}", f.family.name, key);
            let Some(bucket) = g.inf_bucket else {
                return Err(err(Kind::MissingInfBucket(series)));
            };
            let Some(count) = g.count else {
                return Err(err(Kind::MissingCount(series)));
            };
            let same = bucket == count || (bucket.is_nan() && count.is_nan());
            if !same {
                return Err(err(Kind::InfBucketMismatch {
                    series,
                    bucket,
                    count,
                }));
            }
        }
        Ok(())
    }
}

/// Which derived sample of family (`base`, `kind`) `name` is, if any.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Derived {
    Plain,
    Bucket,
    Quantile,
    Sum,
    Count,
}

fn derived_name_kind(base: &str, kind: MetricType, name: &str) -> Option<Derived> {
    let suffix = name.strip_prefix(base)?;
    match (kind, suffix) {
        (MetricType::Histogram, "_bucket") => Some(Derived::Bucket),
        (MetricType::Summary, "") => Some(Derived::Quantile),
        (MetricType::Histogram | MetricType::Summary, "_sum") => Some(Derived::Sum),
        (MetricType::Histogram | MetricType::Summary, "_count") => Some(Derived::Count),
        (MetricType::Counter | MetricType::Gauge | MetricType::Untyped, "") => Some(Derived::Plain),
        _ => None,
    }
}

impl FamilyState {
    fn add_sample(&mut self, s: Sample) -> Result<(), Kind> {
        let f = &self.family;
        let Some(derived) = derived_name_kind(&f.name, f.kind, &s.name) else {
            let expected = match f.kind {
                MetricType::Histogram => format!("{0}_bucket, {0}_sum or {0}_count", f.name),
                MetricType::Summary => format!("{0}, {0}_sum or {0}_count", f.name),
                _ => f.name.clone(),
            };
            return Err(Kind::SampleNameMismatch {
                sample: s.name.clone(),
                family: f.name.clone(),
                kind: f.kind,
                expected,
            });
        };
        let key = series_key(&s.name, &s.labels, None);
        if !self.series.insert(key.clone()) {
            return Err(Kind::DuplicateSeries(key));
        }
        // The label that tells a series' buckets or quantiles apart.
        let special: &'static str = match f.kind {
            MetricType::Histogram => "le",
            MetricType::Summary => "quantile",
            _ => "",
        };
        if derived != Derived::Plain {
            let group = series_key("", &s.labels, Some(special));
            let g = match self.groups.get_mut(&group) {
                Some(g) => g,
                None => {
                    self.group_order.push(group.clone());
                    self.groups.entry(group.clone()).or_default()
                }
            };
            match derived {
                Derived::Bucket | Derived::Quantile => {
                    let Some(raw) = s.label(special) else {
                        return Err(Kind::MissingLabel {
                            sample: s.name.clone(),
                            label: special,
                        });
                    };
                    let bound = parse_float(raw).filter(|b| !b.is_nan()).ok_or_else(|| {
                        Kind::InvalidBound {
                            label: special,
                            value: raw.into(),
                        }
                    })?;
                    if let Some(prev) = g.last_bound {
                        if bound <= prev {
                            return Err(Kind::BoundsOutOfOrder {
                                series: format!("{}{}", f.name, group),
                                label: special,
                                previous: prev,
                                value: bound,
                            });
                        }
                    }
                    g.last_bound = Some(bound);
                    if derived == Derived::Bucket && bound == f64::INFINITY {
                        g.inf_bucket = Some(s.value);
                    }
                }
                Derived::Sum | Derived::Count => {
                    if s.label(special).is_some() {
                        return Err(Kind::UnexpectedLabel {
                            sample: s.name.clone(),
                            label: special,
                        });
                    }
                    if derived == Derived::Count {
                        g.count = Some(s.value);
                    }
                }
                Derived::Plain => unreachable!("handled above"),
            }
        }
        self.family.samples.push(s);
        Ok(())
    }
}

/// `name{a="x",b="y"}` with labels sorted by name, `skip` left out.
fn series_key(name: &str, labels: &[(String, String)], skip: Option<&str>) -> String {
    let mut sorted: Vec<&(String, String)> = labels
        .iter()
        .filter(|(k, _)| Some(k.as_str()) != skip)
        .collect();
    sorted.sort();
    let mut out = String::from(name);
    out.push('{');
    for (i, (k, v)) in sorted.iter().enumerate() {
        if i > 0 {
            out.push(',');
        }
        out.push_str(k);
        out.push_str("=\"");
        out.push_str(&escape_label_value(v));
        out.push('"');
    }
    out.push('}');
    out
}

/// Escapes a label value for the exposition format.
pub fn escape_label_value(v: &str) -> String {
    let mut out = String::with_capacity(v.len());
    for c in v.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '"' => out.push_str("\\\""),
            '\n' => out.push_str("\\n"),
            c => out.push(c),
        }
    }
    out
}

/// Splits off the first blank-separated token; the rest starts at the next
/// non-blank character.
fn split_token(s: &str) -> (&str, &str) {
    let end = s.find(BLANKS).unwrap_or(s.len());
    let (tok, rest) = s.split_at(end);
    (tok, rest.trim_start_matches(BLANKS))
}

fn is_metric_name_char(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

fn check_metric_name(name: &str) -> Result<(), Kind> {
    let ok = name.chars().next().is_some_and(|c| !c.is_ascii_digit())
        && name.chars().all(is_metric_name_char);
    if ok {
        Ok(())
    } else {
        Err(Kind::InvalidMetricName(name.into()))
    }
}

fn check_label_name(name: &str) -> Result<(), Kind> {
    let ok = name.chars().next().is_some_and(|c| !c.is_ascii_digit())
        && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
    if !ok {
        return Err(Kind::InvalidLabelName(name.into()));
    }
    if name.starts_with("__") {
        return Err(Kind::ReservedLabelName(name.into()));
    }
    Ok(())
}

/// Parses the label set after its `{`; returns the labels and the text
/// after the closing `}`.
fn parse_labels(mut s: &str) -> Result<(Labels, &str), Kind> {
    let mut labels = Labels::new();
    loop {
        s = s.trim_start_matches(BLANKS);
        if let Some(rest) = s.strip_prefix('}') {
            return Ok((labels, rest));
        }
        let end = s
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(s.len());
        let (name, rest) = s.split_at(end);
        if name.is_empty() {
            return Err(match rest.chars().next() {
                None => Kind::BadLabelSyntax("label set not closed with '}'".into()),
                Some(c) => {
                    Kind::BadLabelSyntax(format!("expected a label name or '}}', found {c:?}"))
                }
            });
        }
        check_label_name(name)?;
        let rest = rest.trim_start_matches(BLANKS);
        let Some(rest) = rest.strip_prefix('=') else {
            return Err(Kind::BadLabelSyntax(format!(
                "expected '=' after label {name}"
            )));
        };
        let rest = rest.trim_start_matches(BLANKS);
        let Some(rest) = rest.strip_prefix('"') else {
            return Err(Kind::BadLabelSyntax(format!(
                "label {name}'s value must be in double quotes"
            )));
        };
        let (value, rest) = parse_label_value(rest)?;
        if labels.iter().any(|(k, _)| k == name) {
            return Err(Kind::DuplicateLabel(name.into()));
        }
        labels.push((name.into(), value));
        let rest = rest.trim_start_matches(BLANKS);
        s = if let Some(r) = rest.strip_prefix(',') {
            r
        } else if rest.starts_with('}') {
            rest
        } else {
            return Err(Kind::BadLabelSyntax(match rest.chars().next() {
                None => "label set not closed with '}'".into(),
                Some(c) => format!("expected ',' or '}}' after label {name}, found {c:?}"),
            }));
        };
    }
}

/// Reads a label value after its opening quote, up to the closing one.
fn parse_label_value(s: &str) -> Result<(String, &str), Kind> {
    let mut out = String::new();
    let mut chars = s.char_indices();
    while let Some((i, c)) = chars.next() {
        match c {
            '"' => return Ok((out, &s[i + 1..])),
            '\\' => match chars.next() {
                Some((_, '\\')) => out.push('\\'),
                Some((_, '"')) => out.push('"'),
                Some((_, 'n')) => out.push('\n'),
                Some((_, other)) => return Err(Kind::InvalidEscape(other)),
                None => break,
            },
            c => out.push(c),
        }
    }
    Err(Kind::BadLabelSyntax(
        "label value not closed with '\"'".into(),
    ))
}

fn unescape_help(s: &str) -> Result<String, Kind> {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars();
    while let Some(c) = chars.next() {
        if c != '\\' {
            out.push(c);
            continue;
        }
        match chars.next() {
            Some('\\') => out.push('\\'),
            Some('n') => out.push('\n'),
            Some(other) => return Err(Kind::InvalidEscape(other)),
            None => return Err(Kind::InvalidEscape(' ')),
        }
    }
    Ok(out)
}

/// Parses a float the way Go's `strconv.ParseFloat(s, 64)` does, which the
/// format names: decimal and hex (`0x1p-3`) literals, `Inf`/`Infinity`
/// with an optional sign and `NaN` in any case; a finite literal that
/// overflows is an error. Underscores are not accepted.
pub fn parse_float(s: &str) -> Option<f64> {
    let (neg, body) = match s.as_bytes().first()? {
        b'+' => (false, &s[1..]),
        b'-' => (true, &s[1..]),
        _ => (false, s),
    };
    let sign = if neg { -1.0 } else { 1.0 };
    if body.eq_ignore_ascii_case("inf") || body.eq_ignore_ascii_case("infinity") {
        return Some(sign * f64::INFINITY);
    }
    if body.eq_ignore_ascii_case("nan") {
        // Go accepts "NaN" without a sign only.
        return (body.len() == s.len()).then_some(f64::NAN);
    }
    if body.len() > 2 && (body.starts_with("0x") || body.starts_with("0X")) {
        return parse_hex_float(&body[2..]).map(|v| sign * v);
    }
    if !is_decimal_literal(body) {
        return None;
    }
    let v: f64 = body.parse().ok()?;
    v.is_finite().then_some(sign * v)
}

/// `digits [. digits] [e [+-] digits]` or `. digits ...`.
fn is_decimal_literal(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    let digits = |i: &mut usize| {
        let start = *i;
        while *i < b.len() && b[*i].is_ascii_digit() {
            *i += 1;
        }
        *i - start
    };
    let mut mantissa = digits(&mut i);
    if i < b.len() && b[i] == b'.' {
        i += 1;
        mantissa += digits(&mut i);
    }
    if mantissa == 0 {
        return false;
    }
    if i < b.len() && (b[i] == b'e' || b[i] == b'E') {
        i += 1;
        if i < b.len() && (b[i] == b'+' || b[i] == b'-') {
            i += 1;
        }
        if digits(&mut i) == 0 {
            return false;
        }
    }
    i == b.len()
}

/// Hex mantissa `h[.h]` or `.h` followed by a mandatory `p[+-]d` exponent.
fn parse_hex_float(s: &str) -> Option<f64> {
    let (mantissa, exp) = s.split_once(['p', 'P'])?;
    let exp: i32 = {
        let digits = exp.strip_prefix(['+', '-']).unwrap_or(exp);
        if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
            return None;
        }
        exp.parse().ok()?
    };
    let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
    if int.is_empty() && frac.is_empty() {
        return None;
    }
    let mut v = 0f64;
    for c in int.chars() {
        v = v * 16.0 + f64::from(c.to_digit(16)?);
    }
    let mut scale = 1.0 / 16.0;
    for c in frac.chars() {
        v += f64::from(c.to_digit(16)?) * scale;
        scale /= 16.0;
    }
    let v = v * 2f64.powi(exp);
    v.is_finite().then_some(v)
}

fn parse_timestamp(s: &str) -> Option<i64> {
    let digits = s.strip_prefix(['+', '-']).unwrap_or(s);
    if digits.is_empty() || !digits.bytes().all(|c| c.is_ascii_digit()) {
        return None;
    }
    s.parse().ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(text: &str) -> ExpositionError {
        parse_exposition(text).expect_err("must be rejected")
    }

    #[test]
    fn parses_metadata_labels_and_special_values() {
        let text = "# HELP a_total Requests \\\\ and\\nnewline.\n\
                    # TYPE a_total counter\n\
                    a_total{path=\"/x\",q=\"say \\\"hi\\\"\\n\\\\\"} 3 1700000000000\n\
                    a_total{path=\"/y\",} 4\n\
                    \n\
                    # just a comment\n\
                    b NaN\n\
                    c{} +Inf\n\
                    d -Inf -5\n\
                    \te  1e3\t \n\
                    f 0x1p-2\n";
        let f = parse_exposition(text).unwrap();
        assert_eq!(f.len(), 6);
        assert_eq!(f[0].kind, MetricType::Counter);
        assert_eq!(f[0].help.as_deref(), Some("Requests \\ and\nnewline."));
        let s = &f[0].samples[0];
        assert_eq!(s.label("q"), Some("say \"hi\"\n\\"));
        assert_eq!(s.timestamp_ms, Some(1_700_000_000_000));
        assert_eq!(f[0].samples[1].label("path"), Some("/y"));
        assert!(f[1].samples[0].value.is_nan());
        assert_eq!(f[1].kind, MetricType::Untyped);
        assert_eq!(f[2].samples[0].value, f64::INFINITY);
        assert_eq!(f[3].samples[0].value, f64::NEG_INFINITY);
        assert_eq!(f[3].samples[0].timestamp_ms, Some(-5));
        assert_eq!(f[4].samples[0].value, 1000.0);
        assert_eq!(f[5].samples[0].value, 0.25);
    }

    #[test]
    fn parses_histogram_and_summary() {
        let text = "# TYPE h histogram\n\
                    h_bucket{x=\"1\",le=\"0.1\"} 1\n\
                    h_bucket{x=\"1\",le=\"1\"} 2\n\
                    h_bucket{x=\"1\",le=\"+Inf\"} 3\n\
                    h_sum{x=\"1\"} 2.5\n\
                    h_count{x=\"1\"} 3\n\
                    h_bucket{x=\"2\",le=\"+Inf\"} 0\n\
                    h_count{x=\"2\"} 0\n\
                    # TYPE s summary\n\
                    s{quantile=\"0.5\"} 1\n\
                    s{quantile=\"0.99\"} 2\n\
                    s_sum 10\n\
                    s_count 7\n";
        let f = parse_exposition(text).unwrap();
        assert_eq!(f.len(), 2);
        assert_eq!(f[0].samples.len(), 7);
        assert_eq!(f[1].samples.len(), 4);
    }

    #[test]
    fn rejects_with_line_numbers() {
        type Case = (&'static str, usize, fn(&Kind) -> bool);
        let cases: &[Case] = &[
            ("# TYPE a counter\n# TYPE a gauge\n", 2, |k| {
                matches!(k, Kind::DuplicateType(_))
            }),
            ("a 1\n# TYPE a counter\n", 2, |k| {
                matches!(k, Kind::TypeAfterSamples(_))
            }),
            ("a 1\n# HELP a x\n", 2, |k| {
                matches!(k, Kind::HelpAfterSamples(_))
            }),
            ("# HELP a x\n# HELP a y\n", 2, |k| {
                matches!(k, Kind::DuplicateHelp(_))
            }),
            ("# TYPE a countr\n", 1, |k| {
                matches!(k, Kind::UnknownType(_))
            }),
            ("# TYPE a\n", 1, |k| {
                matches!(k, Kind::MalformedMetadata { .. })
            }),
            ("# TYPE a gauge extra\n", 1, |k| {
                matches!(k, Kind::MalformedMetadata { .. })
            }),
            ("# HELP\n", 1, |k| {
                matches!(k, Kind::MalformedMetadata { .. })
            }),
            ("a 1\nb 1\na{x=\"1\"} 2\n", 3, |k| {
                matches!(k, Kind::FamilyNotContiguous { first_line: 1, .. })
            }),
            ("a 1\na 2\n", 2, |k| matches!(k, Kind::DuplicateSeries(_))),
            ("a{x=\"1\",y=\"2\"} 1\na{y=\"2\",x=\"1\"} 1\n", 2, |k| {
                matches!(k, Kind::DuplicateSeries(_))
            }),
            ("1a 1\n", 1, |k| matches!(k, Kind::InvalidMetricName(_))),
            (
                "a-b 1\n",
                1,
                |k| matches!(k, Kind::InvalidMetricName(n) if n == "a-b"),
            ),
            ("a{1x=\"1\"} 1\n", 1, |k| {
                matches!(k, Kind::InvalidLabelName(_))
            }),
            ("a{__x=\"1\"} 1\n", 1, |k| {
                matches!(k, Kind::ReservedLabelName(_))
            }),
            ("a{x=\"1\",x=\"2\"} 1\n", 1, |k| {
                matches!(k, Kind::DuplicateLabel(_))
            }),
            ("a{x=1} 1\n", 1, |k| matches!(k, Kind::BadLabelSyntax(_))),
            ("a{x=\"1\" 1\n", 1, |k| matches!(k, Kind::BadLabelSyntax(_))),
            ("a{x=\"1} 1\n", 1, |k| matches!(k, Kind::BadLabelSyntax(_))),
            ("a{x=\"1\"y=\"2\"} 1\n", 1, |k| {
                matches!(k, Kind::BadLabelSyntax(_))
            }),
            ("a{,} 1\n", 1, |k| matches!(k, Kind::BadLabelSyntax(_))),
            ("a{x:y=\"1\"} 1\n", 1, |k| {
                matches!(k, Kind::BadLabelSyntax(_))
            }),
            ("a{x=\"\\t\"} 1\n", 1, |k| {
                matches!(k, Kind::InvalidEscape('t'))
            }),
            ("# HELP a bad \\t escape\n", 1, |k| {
                matches!(k, Kind::InvalidEscape('t'))
            }),
            ("a\n", 1, |k| matches!(k, Kind::MissingValue)),
            ("a{x=\"1\"}\n", 1, |k| matches!(k, Kind::MissingValue)),
            ("a one\n", 1, |k| matches!(k, Kind::InvalidValue(_))),
            ("a 1e400\n", 1, |k| matches!(k, Kind::InvalidValue(_))),
            ("a 1_000\n", 1, |k| matches!(k, Kind::InvalidValue(_))),
            ("a -NaN\n", 1, |k| matches!(k, Kind::InvalidValue(_))),
            ("a 1 1.5\n", 1, |k| matches!(k, Kind::InvalidTimestamp(_))),
            ("a 1 2 3\n", 1, |k| matches!(k, Kind::TrailingText(_))),
            ("a 1", 1, |k| matches!(k, Kind::MissingFinalNewline)),
            ("# TYPE h histogram\nh 1\n", 2, |k| {
                matches!(k, Kind::SampleNameMismatch { .. })
            }),
            ("# TYPE h histogram\nh_bucket 1\n", 2, |k| {
                matches!(k, Kind::MissingLabel { label: "le", .. })
            }),
            ("# TYPE h histogram\nh_bucket{le=\"x\"} 1\n", 2, |k| {
                matches!(k, Kind::InvalidBound { .. })
            }),
            (
                "# TYPE h histogram\nh_bucket{le=\"2\"} 1\nh_bucket{le=\"1\"} 1\n",
                3,
                |k| matches!(k, Kind::BoundsOutOfOrder { .. }),
            ),
            (
                "# TYPE h histogram\nh_bucket{le=\"1\"} 1\nh_count 1\n",
                3,
                |k| matches!(k, Kind::MissingInfBucket(_)),
            ),
            (
                "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_count 2\nx 1\n",
                3,
                |k| matches!(k, Kind::InfBucketMismatch { .. }),
            ),
            ("# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\n", 2, |k| {
                matches!(k, Kind::MissingCount(_))
            }),
            (
                "# TYPE h histogram\nh_bucket{le=\"+Inf\"} 1\nh_count{le=\"1\"} 1\n",
                3,
                |k| matches!(k, Kind::UnexpectedLabel { .. }),
            ),
            ("# TYPE s summary\ns 1\n", 2, |k| {
                matches!(
                    k,
                    Kind::MissingLabel {
                        label: "quantile",
                        ..
                    }
                )
            }),
            (
                "# TYPE s summary\ns{quantile=\"0.9\"} 1\ns{quantile=\"0.5\"} 1\n",
                3,
                |k| matches!(k, Kind::BoundsOutOfOrder { .. }),
            ),
        ];
        for (text, line, want) in cases {
            match parse_exposition(text) {
                Ok(f) => panic!("{text:?} accepted: {f:?}"),
                Err(e) => {
                    assert!(want(&e.kind), "{text:?}: wrong error {e}");
                    assert_eq!(e.line, *line, "{text:?}: {e}");
                }
            }
        }
    }

    #[test]
    fn whitespace_and_trailing_comma_are_accepted() {
        let f = parse_exposition("a { x = \"1\" , y=\"2\", }   7  \n").unwrap();
        assert_eq!(f[0].samples[0].labels.len(), 2);
        assert_eq!(f[0].samples[0].value, 7.0);
        assert!(parse_exposition("").unwrap().is_empty());
        // A `_sum` sample with its own TYPE is its own family, as the node
        // writes commit latency today.
        let f =
            parse_exposition("# TYPE x_sum counter\nx_sum 1\n# TYPE x_count counter\nx_count 1\n")
                .unwrap();
        assert_eq!(f.len(), 2);
    }

    #[test]
    fn error_message_names_the_line() {
        let e = err("a 1\n\n# TYPE a gauge\n");
        assert_eq!(e.to_string(), "line 3: TYPE line for a after its samples");
    }

    #[test]
    fn float_forms() {
        for (s, v) in [
            ("1", 1.0),
            ("-1.5", -1.5),
            (".5", 0.5),
            ("5.", 5.0),
            ("1E-2", 0.01),
            ("+Inf", f64::INFINITY),
            ("-inf", f64::NEG_INFINITY),
            ("Infinity", f64::INFINITY),
            ("0X1.8P1", 3.0),
        ] {
            assert_eq!(parse_float(s), Some(v), "{s}");
        }
        for s in [
            "", ".", "e1", "1e", "0x1", "0x1.p", "1.2.3", "inf1", "+nan", " 1",
        ] {
            assert_eq!(parse_float(s), None, "{s:?}");
        }
        assert!(parse_float("nan").unwrap().is_nan());
    }
}
