//! Walking a parsed TOML tree by hand so that every problem is collected: typed getters
//! that report wrong types and missing keys under their dotted path, `env:` / `file:`
//! indirection of string values, and the unknown-key check of each table.

use std::fmt::Display;
use std::path::Path;
use std::time::Duration;

use super::{Problem, Secret, duration::parse_duration};

/// Parses the text as a TOML table, turning a syntax error into one problem.
pub(super) fn parse_toml(text: &str) -> Result<toml::Table, Problem> {
    text.parse::<toml::Table>().map_err(|e| {
        let message = e.message().trim().trim_end_matches('.').to_owned();
        let message = match e.span() {
            Some(span) => {
                let before = &text[..span.start.min(text.len())];
                let line = before.matches('\n').count() + 1;
                let column = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
                format!("invalid toml at line {line}, column {column}: {message}")
            }
            None => format!("invalid toml: {message}"),
        };
        Problem::new("config", message)
    })
}

/// An I/O error as a lowercase message.
pub(super) fn io_message(e: &std::io::Error) -> String {
    let text = e.to_string();
    let text = match text.rfind(" (os error ") {
        Some(at) if text.ends_with(')') => &text[..at],
        _ => &text,
    };
    lower_first(text)
}

fn lower_first(s: &str) -> String {
    let mut chars = s.chars();
    match chars.next() {
        Some(c) => c.to_lowercase().chain(chars).collect(),
        None => String::new(),
    }
}

/// What the whole walk shares: where relative paths start, how `env:` is answered, and
/// the problems found so far.
pub(super) struct Ctx<'a> {
    pub base_dir: &'a Path,
    env: &'a dyn Fn(&str) -> Option<String>,
    pub problems: Vec<Problem>,
    /// The component domains read so far, with the table that has each, so that a
    /// second bridge on the same domain can be reported.
    pub component_domains: Vec<(String, String)>,
}

impl<'a> Ctx<'a> {
    pub fn new(base_dir: &'a Path, env: &'a dyn Fn(&str) -> Option<String>) -> Self {
        Self {
            base_dir,
            env,
            problems: Vec::new(),
            component_domains: Vec::new(),
        }
    }

    pub fn problem(&mut self, key: impl Into<String>, message: impl Into<String>) {
        self.problems.push(Problem::new(key, message));
    }

    /// Resolves `env:NAME` and `file:PATH`; `Ok(None)` for any other string, `Err(())`
    /// after reporting why the indirection failed.
    fn indirect(&mut self, key: &str, s: &str) -> Result<Option<String>, ()> {
        if let Some(name) = s.strip_prefix("env:") {
            if name.is_empty() {
                self.problem(key, "\"env:\" needs a variable name, e.g. \"env:NAME\"");
                return Err(());
            }
            return match (self.env)(name) {
                Some(value) => Ok(Some(value)),
                None => {
                    self.problem(key, format!("environment variable {name} is not set"));
                    Err(())
                }
            };
        }
        if let Some(path) = s.strip_prefix("file:") {
            if path.is_empty() {
                self.problem(key, "\"file:\" needs a path, e.g. \"file:secret.txt\"");
                return Err(());
            }
            let full = self.base_dir.join(path);
            return match std::fs::read_to_string(&full) {
                Ok(mut content) => {
                    if content.ends_with('\n') {
                        content.pop();
                        if content.ends_with('\r') {
                            content.pop();
                        }
                    }
                    Ok(Some(content))
                }
                Err(e) => {
                    self.problem(
                        key,
                        format!("cannot read file {}: {}", full.display(), io_message(&e)),
                    );
                    Err(())
                }
            };
        }
        Ok(None)
    }
}

/// The outcome of reading one key.
pub(super) enum Got<T> {
    /// The key is not there.
    Absent,
    /// The key is there but unusable; the problem has been reported.
    Bad,
    Ok(T),
}

/// One key's value with its dotted path, so that later checks can report against it.
pub(super) struct Field<T> {
    pub key: String,
    pub got: Got<T>,
}

impl<T> Field<T> {
    fn new(key: String, got: Got<T>) -> Self {
        Self { key, got }
    }

    pub fn is_absent(&self) -> bool {
        matches!(self.got, Got::Absent)
    }

    /// Treats an absent key as holding `default` (which later checks then see too).
    pub fn with_default(self, default: T) -> Field<T> {
        let got = match self.got {
            Got::Absent => Got::Ok(default),
            other => other,
        };
        Field::new(self.key, got)
    }

    /// The value; a missing key is reported.
    pub fn required(self, ctx: &mut Ctx) -> Option<T> {
        match self.got {
            Got::Ok(v) => Some(v),
            Got::Bad => None,
            Got::Absent => {
                ctx.problem(self.key, "missing required key");
                None
            }
        }
    }

    /// The value, or `default` when the key is absent; `None` when it was bad.
    pub fn or(self, default: T) -> Option<T> {
        match self.got {
            Got::Ok(v) => Some(v),
            Got::Absent => Some(default),
            Got::Bad => None,
        }
    }

    /// `Some(None)` when absent, `None` when bad.
    pub fn optional(self) -> Option<Option<T>> {
        match self.got {
            Got::Ok(v) => Some(Some(v)),
            Got::Absent => Some(None),
            Got::Bad => None,
        }
    }

    /// Checks and converts a present value; an error message is reported at this key.
    pub fn validate<U>(self, ctx: &mut Ctx, f: impl FnOnce(T) -> Result<U, String>) -> Field<U> {
        let got = match self.got {
            Got::Ok(v) => match f(v) {
                Ok(u) => Got::Ok(u),
                Err(message) => {
                    ctx.problem(self.key.clone(), message);
                    Got::Bad
                }
            },
            Got::Absent => Got::Absent,
            Got::Bad => Got::Bad,
        };
        Field::new(self.key, got)
    }
}

/// A value as found: a TOML value, or the text an `env:` / `file:` string stood for.
enum Raw<'t> {
    Value(&'t toml::Value),
    Text(String),
}

fn a_type(v: &toml::Value) -> &'static str {
    match v {
        toml::Value::String(_) => "a string",
        toml::Value::Integer(_) => "an integer",
        toml::Value::Float(_) => "a float",
        toml::Value::Boolean(_) => "a boolean",
        toml::Value::Datetime(_) => "a datetime",
        toml::Value::Array(_) => "an array",
        toml::Value::Table(_) => "a table",
    }
}

/// One TOML table being read: remembers which keys were asked for, so that
/// [`Table::finish`] can name the others.
pub(super) struct Table<'t> {
    path: String,
    table: &'t toml::Table,
    known: Vec<&'static str>,
}

impl<'t> Table<'t> {
    pub fn new(path: impl Into<String>, table: &'t toml::Table) -> Self {
        Self {
            path: path.into(),
            table,
            known: Vec::new(),
        }
    }

    pub fn path(&self) -> &str {
        &self.path
    }

    /// The dotted path of `name` in this table.
    pub fn key(&self, name: &str) -> String {
        if self.path.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.path)
        }
    }

    pub fn has(&self, name: &str) -> bool {
        self.table.contains_key(name)
    }

    fn raw(&mut self, ctx: &mut Ctx, name: &'static str) -> Field<Raw<'t>> {
        if !self.known.contains(&name) {
            self.known.push(name);
        }
        let key = self.key(name);
        let table: &'t toml::Table = self.table;
        let got = match table.get(name) {
            None => Got::Absent,
            Some(v @ toml::Value::String(s)) => match ctx.indirect(&key, s) {
                Ok(Some(text)) => Got::Ok(Raw::Text(text)),
                Ok(None) => Got::Ok(Raw::Value(v)),
                Err(()) => Got::Bad,
            },
            Some(v) => Got::Ok(Raw::Value(v)),
        };
        Field::new(key, got)
    }

    /// A string (after `env:` / `file:`).
    pub fn string(&mut self, ctx: &mut Ctx, name: &'static str) -> Field<String> {
        self.raw(ctx, name).validate(ctx, |raw| match raw {
            Raw::Text(t) => Ok(t),
            Raw::Value(toml::Value::String(s)) => Ok(s.clone()),
            Raw::Value(v) => Err(format!("expected a string, found {}", a_type(v))),
        })
    }

    /// A non-empty string that must not be logged.
    pub fn secret(&mut self, ctx: &mut Ctx, name: &'static str) -> Field<Secret> {
        self.string(ctx, name).validate(ctx, |s| {
            if s.is_empty() {
                Err("must not be empty".to_owned())
            } else {
                Ok(Secret(s))
            }
        })
    }

    /// A non-empty string without surrounding whitespace.
    pub fn word(&mut self, ctx: &mut Ctx, name: &'static str) -> Field<String> {
        self.string(ctx, name).validate(ctx, |s| {
            if s.is_empty() {
                Err("must not be empty".to_owned())
            } else if s.trim() != s {
                Err(format!("{s:?} has leading or trailing spaces"))
            } else {
                Ok(s)
            }
        })
    }

    /// An integer in `min..=max` (an `env:` / `file:` string holding one is accepted).
    pub fn int<T>(&mut self, ctx: &mut Ctx, name: &'static str, min: T, max: T) -> Field<T>
    where
        T: TryFrom<i64> + PartialOrd + Display + Copy,
    {
        self.raw(ctx, name).validate(ctx, |raw| {
            let n = match raw {
                Raw::Value(toml::Value::Integer(n)) => *n,
                Raw::Text(t) => t
                    .trim()
                    .parse::<i64>()
                    .map_err(|_| format!("expected an integer, found {t:?}"))?,
                Raw::Value(v) => return Err(format!("expected an integer, found {}", a_type(v))),
            };
            match T::try_from(n) {
                Ok(v) if v >= min && v <= max => Ok(v),
                _ => Err(format!("must be between {min} and {max}, found {n}")),
            }
        })
    }

    /// A boolean (an `env:` / `file:` string holding `true` / `false` is accepted).
    pub fn bool(&mut self, ctx: &mut Ctx, name: &'static str) -> Field<bool> {
        self.raw(ctx, name).validate(ctx, |raw| match raw {
            Raw::Value(toml::Value::Boolean(b)) => Ok(*b),
            Raw::Text(t) => match t.trim() {
                "true" => Ok(true),
                "false" => Ok(false),
                _ => Err(format!("expected true or false, found {t:?}")),
            },
            Raw::Value(v) => Err(format!("expected true or false, found {}", a_type(v))),
        })
    }

    /// A duration string such as `"90s"` or `"1h30m"`.
    pub fn duration(&mut self, ctx: &mut Ctx, name: &'static str) -> Field<Duration> {
        self.raw(ctx, name).validate(ctx, |raw| match raw {
            Raw::Text(t) => parse_duration(&t),
            Raw::Value(toml::Value::String(s)) => parse_duration(s),
            Raw::Value(v) => Err(format!(
                "expected a duration string such as \"90s\" or \"15m\", found {}",
                a_type(v)
            )),
        })
    }

    /// An array of strings, each checked by `check`; problems are reported per element
    /// (`key[i]`). The result holds the elements that passed (the others are reported).
    pub fn strings(
        &mut self,
        ctx: &mut Ctx,
        name: &'static str,
        mut check: impl FnMut(&str) -> Result<String, String>,
    ) -> Field<Vec<String>> {
        let Field { key, got } = self.raw(ctx, name);
        let items = match got {
            Got::Ok(Raw::Value(toml::Value::Array(items))) => items,
            Got::Ok(raw) => {
                let found = match raw {
                    Raw::Value(v) => a_type(v),
                    Raw::Text(_) => "a string",
                };
                ctx.problem(
                    key.clone(),
                    format!("expected an array of strings, found {found}"),
                );
                return Field::new(key, Got::Bad);
            }
            Got::Absent => return Field::new(key, Got::Absent),
            Got::Bad => return Field::new(key, Got::Bad),
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            let item_key = format!("{key}[{i}]");
            let text = match item {
                toml::Value::String(s) => match ctx.indirect(&item_key, s) {
                    Ok(Some(t)) => t,
                    Ok(None) => s.clone(),
                    Err(()) => continue,
                },
                v => {
                    ctx.problem(item_key, format!("expected a string, found {}", a_type(v)));
                    continue;
                }
            };
            match check(&text) {
                Ok(v) => out.push(v),
                Err(message) => ctx.problem(item_key, message),
            }
        }
        Field::new(key, Got::Ok(out))
    }

    /// A sub-table.
    pub fn table(&mut self, ctx: &mut Ctx, name: &'static str) -> Field<Table<'t>> {
        let field = self.raw(ctx, name);
        let key = field.key.clone();
        field.validate(ctx, |raw| match raw {
            Raw::Value(toml::Value::Table(t)) => Ok(Table::new(key, t)),
            Raw::Value(v) => Err(format!("expected a table ([{key}]), found {}", a_type(v))),
            Raw::Text(_) => Err(format!("expected a table ([{key}]), found a string")),
        })
    }

    /// An array of tables (`[[name]]`); element paths are `name[i]`. Elements that are
    /// not tables are reported and left out.
    pub fn tables(&mut self, ctx: &mut Ctx, name: &'static str) -> Field<Vec<Table<'t>>> {
        let Field { key, got } = self.raw(ctx, name);
        let items = match got {
            Got::Ok(Raw::Value(toml::Value::Array(items))) => items,
            Got::Ok(_) => {
                ctx.problem(
                    key.clone(),
                    format!("expected an array of tables ([[{key}]])"),
                );
                return Field::new(key, Got::Bad);
            }
            Got::Absent => return Field::new(key, Got::Absent),
            Got::Bad => return Field::new(key, Got::Bad),
        };
        let mut out = Vec::with_capacity(items.len());
        for (i, item) in items.iter().enumerate() {
            match item {
                toml::Value::Table(t) => out.push(Table::new(format!("{key}[{i}]"), t)),
                v => ctx.problem(
                    format!("{key}[{i}]"),
                    format!("expected a table, found {}", a_type(v)),
                ),
            }
        }
        Field::new(key, Got::Ok(out))
    }

    /// Reports every key of this table that was never asked for.
    pub fn finish(self, ctx: &mut Ctx) {
        for name in self.table.keys() {
            if self.known.contains(&name.as_str()) {
                continue;
            }
            let message = match self.suggest(name) {
                Some(close) => format!("unknown key (did you mean {close:?}?)"),
                None => "unknown key".to_owned(),
            };
            ctx.problem(self.key(name), message);
        }
    }

    fn suggest(&self, name: &str) -> Option<&'static str> {
        let name = name.to_ascii_lowercase();
        self.known
            .iter()
            .map(|k| (edit_distance(&name, k), *k))
            .filter(|(d, k)| *d <= if k.len() > 5 { 2 } else { 1 })
            .min_by_key(|(d, _)| *d)
            .map(|(_, k)| k)
    }
}

/// Edit distance counting a swap of neighbours as one edit (optimal string alignment),
/// for "did you mean" hints.
fn edit_distance(a: &str, b: &str) -> usize {
    let a: Vec<char> = a.chars().collect();
    let b: Vec<char> = b.chars().collect();
    let width = b.len() + 1;
    let mut d = vec![0usize; (a.len() + 1) * width];
    for i in 0..=a.len() {
        d[i * width] = i;
    }
    for (j, cell) in d.iter_mut().enumerate().take(width) {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[(i - 1) * width + j] + 1)
                .min(d[i * width + j - 1] + 1)
                .min(d[(i - 1) * width + j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[(i - 2) * width + j - 2] + 1);
            }
            d[i * width + j] = best;
        }
    }
    d[a.len() * width + b.len()]
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env(name: &str) -> Option<String> {
        match name {
            "FERRY_TEST_SECRET" => Some("s3cret".to_owned()),
            "FERRY_TEST_PORT" => Some("5348".to_owned()),
            _ => None,
        }
    }

    fn read(text: &str, dir: &Path) -> (Vec<Problem>, Option<String>, Option<u16>) {
        let table = parse_toml(text).expect("valid toml");
        let mut ctx = Ctx::new(dir, &env);
        let mut t = Table::new("", &table);
        let s = t.string(&mut ctx, "s").optional().flatten();
        let p = t.int(&mut ctx, "p", 1u16, u16::MAX).optional().flatten();
        t.finish(&mut ctx);
        (ctx.problems, s, p)
    }

    #[test]
    fn env_indirection() {
        let dir = Path::new("/nonexistent");
        let (problems, s, p) = read(
            "s = \"env:FERRY_TEST_SECRET\"\np = \"env:FERRY_TEST_PORT\"",
            dir,
        );
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(s.as_deref(), Some("s3cret"));
        assert_eq!(p, Some(5348));

        let (problems, s, _) = read("s = \"env:FERRY_NOT_SET\"", dir);
        assert_eq!(s, None);
        assert_eq!(
            problems,
            vec![Problem::new(
                "s",
                "environment variable FERRY_NOT_SET is not set"
            )]
        );

        let (problems, _, _) = read("s = \"env:\"", dir);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "s");
    }

    #[test]
    fn file_indirection() {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::write(dir.path().join("secret.txt"), "hunter2\n\n").expect("write");
        std::fs::write(dir.path().join("crlf.txt"), "x\r\n").expect("write");
        let (problems, s, _) = read("s = \"file:secret.txt\"", dir.path());
        assert!(problems.is_empty(), "{problems:?}");
        assert_eq!(
            s.as_deref(),
            Some("hunter2\n"),
            "only one newline is trimmed"
        );
        let (_, s, _) = read("s = \"file:crlf.txt\"", dir.path());
        assert_eq!(s.as_deref(), Some("x"));

        let (problems, s, _) = read("s = \"file:missing.txt\"", dir.path());
        assert_eq!(s, None);
        assert_eq!(problems.len(), 1);
        assert_eq!(problems[0].key, "s");
        assert!(
            problems[0].message.starts_with("cannot read file"),
            "{}",
            problems[0].message
        );
    }

    #[test]
    fn types_and_unknown_keys() {
        let dir = Path::new("/");
        let (problems, _, _) = read("s = 1\np = \"x\"\nextra = true\np0rt = 1", dir);
        let keys: Vec<&str> = problems.iter().map(|p| p.key.as_str()).collect();
        assert_eq!(keys, ["s", "p", "extra", "p0rt"]);
        assert_eq!(problems[0].message, "expected a string, found an integer");
        assert_eq!(problems[1].message, "expected an integer, found a string");
        assert_eq!(problems[2].message, "unknown key");

        let (problems, _, _) = read("p = 70000", dir);
        assert_eq!(
            problems[0].message,
            "must be between 1 and 65535, found 70000"
        );
    }

    #[test]
    fn syntax_error_has_position() {
        let err = parse_toml("a = 1\nb = = 2\n").expect_err("bad toml");
        assert_eq!(err.key, "config");
        assert!(
            err.message.starts_with("invalid toml at line 2"),
            "{}",
            err.message
        );
        assert!(!err.message.contains('\n'));
    }

    #[test]
    fn distance() {
        assert_eq!(edit_distance("imap_hots", "imap_host"), 1);
        assert_eq!(edit_distance("port", "host"), 2);
        assert_eq!(edit_distance("", "abc"), 3);
        assert_eq!(edit_distance("same", "same"), 0);
    }
}
