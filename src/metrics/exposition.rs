//! A writer for the Prometheus text exposition format, version 0.0.4.
//!
//! The format (<https://prometheus.io/docs/instrumenting/exposition_formats/>): per metric
//! family one `# HELP name text` and one `# TYPE name counter|gauge|histogram` line, then
//! its samples `name{label="value",…} value`, all samples of a family together. Label values
//! escape `\`, `"` and line feeds; HELP text escapes `\` and line feeds. Values are Go-style
//! floats: `+Inf`, `-Inf`, `NaN`, otherwise decimal.
//!
//! [`Exposition`] keeps that structure by construction: a family is opened with
//! [`Exposition::family`] and its samples are written through the returned [`Family`], so a
//! family's lines cannot interleave with another's.

use std::fmt::Write as _;

/// The `Content-Type` of this format.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// The type line of a family.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

impl Kind {
    fn as_str(self) -> &'static str {
        match self {
            Kind::Counter => "counter",
            Kind::Gauge => "gauge",
            Kind::Histogram => "histogram",
        }
    }
}

/// A text exposition being written.
#[derive(Debug, Default)]
pub struct Exposition {
    out: String,
}

/// One family's samples; see [`Exposition::family`].
pub struct Family<'a> {
    out: &'a mut String,
    name: &'static str,
}

impl Exposition {
    /// An empty exposition with room for `capacity` bytes.
    pub fn with_capacity(capacity: usize) -> Exposition {
        Exposition {
            out: String::with_capacity(capacity),
        }
    }

    /// Writes the `HELP` and `TYPE` lines of family `name` and returns the writer of its
    /// samples. `name` is a static, valid metric name (`[a-zA-Z_:][a-zA-Z0-9_:]*`).
    pub fn family(&mut self, name: &'static str, kind: Kind, help: &str) -> Family<'_> {
        debug_assert!(valid_name(name), "invalid metric name {name:?}");
        self.out.push_str("# HELP ");
        self.out.push_str(name);
        self.out.push(' ');
        escape_into(&mut self.out, help, false);
        self.out.push_str("\n# TYPE ");
        self.out.push_str(name);
        self.out.push(' ');
        self.out.push_str(kind.as_str());
        self.out.push('\n');
        Family {
            out: &mut self.out,
            name,
        }
    }

    /// The text written so far.
    pub fn finish(self) -> String {
        self.out
    }
}

impl Family<'_> {
    /// A sample named like the family.
    pub fn sample(&mut self, labels: &[(&str, &str)], value: impl Into<Number>) -> &mut Self {
        self.sample_suffixed("", labels, value)
    }

    /// A sample named `<family><suffix>` (a histogram's `_bucket`, `_sum`, `_count`).
    pub fn sample_suffixed(
        &mut self,
        suffix: &str,
        labels: &[(&str, &str)],
        value: impl Into<Number>,
    ) -> &mut Self {
        self.out.push_str(self.name);
        self.out.push_str(suffix);
        if !labels.is_empty() {
            self.out.push('{');
            for (i, (name, value)) in labels.iter().enumerate() {
                debug_assert!(valid_label_name(name), "invalid label name {name:?}");
                if i > 0 {
                    self.out.push(',');
                }
                self.out.push_str(name);
                self.out.push_str("=\"");
                escape_into(self.out, value, true);
                self.out.push('"');
            }
            self.out.push('}');
        }
        self.out.push(' ');
        value.into().write(self.out);
        self.out.push('\n');
        self
    }
}

/// A sample value: counts are written as integers, everything else as a float.
#[derive(Clone, Copy, Debug, PartialEq)]
pub enum Number {
    Int(u64),
    Float(f64),
}

impl From<u64> for Number {
    fn from(v: u64) -> Number {
        Number::Int(v)
    }
}

impl From<f64> for Number {
    fn from(v: f64) -> Number {
        Number::Float(v)
    }
}

impl From<bool> for Number {
    fn from(v: bool) -> Number {
        Number::Int(u64::from(v))
    }
}

impl Number {
    fn write(self, out: &mut String) {
        match self {
            Number::Int(v) => {
                let _ = write!(out, "{v}");
            }
            Number::Float(v) => out.push_str(&format_float(v)),
        }
    }
}

/// A float as Prometheus (Go's `strconv.ParseFloat`) reads it. Rust's `Display` for `f64`
/// never uses an exponent and prints the shortest text that reads back to the same value.
pub fn format_float(v: f64) -> String {
    if v.is_nan() {
        "NaN".to_string()
    } else if v == f64::INFINITY {
        "+Inf".to_string()
    } else if v == f64::NEG_INFINITY {
        "-Inf".to_string()
    } else {
        format!("{v}")
    }
}

/// Appends `text` escaped: `\` → `\\`, line feed → `\n`, and in label values also `"` → `\"`.
fn escape_into(out: &mut String, text: &str, quote: bool) {
    for c in text.chars() {
        match c {
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '"' if quote => out.push_str("\\\""),
            c => out.push(c),
        }
    }
}

fn valid_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_' || c == ':')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':')
}

fn valid_label_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn families_samples_and_escaping() {
        let mut e = Exposition::default();
        e.family("a_total", Kind::Counter, "Counts a \\ thing\nover lines.")
            .sample(&[("pbx", "x\"y\\z\nw")], 3u64)
            .sample(&[], 0u64);
        e.family("b", Kind::Gauge, "B.")
            .sample(&[("k", "v"), ("l", "")], 0.25)
            .sample_suffixed("_bucket", &[("le", "+Inf")], f64::INFINITY);
        assert_eq!(
            e.finish(),
            "# HELP a_total Counts a \\\\ thing\\nover lines.\n\
             # TYPE a_total counter\n\
             a_total{pbx=\"x\\\"y\\\\z\\nw\"} 3\n\
             a_total 0\n\
             # HELP b B.\n\
             # TYPE b gauge\n\
             b{k=\"v\",l=\"\"} 0.25\n\
             b_bucket{le=\"+Inf\"} +Inf\n"
        );
    }

    #[test]
    fn floats_read_back_exactly_without_exponents() {
        for v in [0.0001, 0.00025, 5.0, 1e-9, 123456789.125, 0.1 + 0.2] {
            let text = format_float(v);
            assert!(!text.contains('e'), "{text}");
            assert_eq!(text.parse::<f64>().unwrap(), v);
        }
        assert_eq!(format_float(f64::NAN), "NaN");
        assert_eq!(format_float(f64::NEG_INFINITY), "-Inf");
        assert_eq!(format_float(5.0), "5");
    }

    #[test]
    fn names_are_checked() {
        assert!(valid_name("ctibridge_ami_connected"));
        assert!(valid_name("a:b"));
        assert!(!valid_name("1a"));
        assert!(!valid_name("a-b"));
        assert!(valid_label_name("le"));
        assert!(!valid_label_name("a:b"));
    }
}
