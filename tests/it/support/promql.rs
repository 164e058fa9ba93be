//! The PromQL of payshim's monitoring files (`deploy/prometheus/payshim-rules.yml`,
//! `deploy/grafana/payshim.json`): their expressions, and the `payshim_*` metrics and
//! label matchers in them, found by a simple tokenizer (enough for the selectors,
//! functions and operators the files use).

use std::path::Path;

use serde_json::Value;

/// The alert rules and the dashboard, from the repository root.
pub const RULES: &str = "deploy/prometheus/payshim-rules.yml";
pub const DASHBOARD: &str = "deploy/grafana/payshim.json";

/// A file of the repository, by its path from the root.
pub fn read_repo_file(relative: &str) -> String {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The `expr:` values of a Prometheus rules file: inline, or a block scalar (`|`, `>`)
/// made of the more indented lines after it.
pub fn rule_exprs(yaml: &str) -> Vec<String> {
    let lines: Vec<&str> = yaml.lines().collect();
    let indent = |l: &str| l.len() - l.trim_start().len();
    let mut exprs = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(rest) = line.trim_start().strip_prefix("expr:") else {
            continue;
        };
        let rest = rest.trim();
        if rest.starts_with('|') || rest.starts_with('>') {
            let block: Vec<&str> = lines[i + 1..]
                .iter()
                .take_while(|l| l.trim().is_empty() || indent(l) > indent(line))
                .copied()
                .collect();
            exprs.push(block.join("\n"));
        } else if let Some(quoted) = rest
            .strip_prefix('\'')
            .and_then(|r| r.strip_suffix('\''))
            .or_else(|| rest.strip_prefix('"').and_then(|r| r.strip_suffix('"')))
        {
            exprs.push(quoted.to_string());
        } else {
            exprs.push(rest.to_string());
        }
    }
    exprs
}

/// Every PromQL expression of a Grafana dashboard: the panels' `expr` and the template
/// variables' `query` (a string, or an object holding one).
pub fn dashboard_exprs(json: &str) -> Vec<String> {
    fn walk(v: &Value, out: &mut Vec<String>) {
        match v {
            Value::Object(map) => {
                for (key, value) in map {
                    match (key.as_str(), value) {
                        ("expr" | "query", Value::String(s)) => out.push(s.clone()),
                        _ => walk(value, out),
                    }
                }
            }
            Value::Array(items) => items.iter().for_each(|i| walk(i, out)),
            _ => {}
        }
    }
    let dashboard: Value = serde_json::from_str(json).expect("the dashboard is JSON");
    let mut out = Vec::new();
    walk(&dashboard, &mut out);
    out
}

/// A metric a PromQL expression reads, with the label names its selector matches on.
#[derive(Debug, PartialEq)]
pub struct Selector {
    pub name: String,
    pub labels: Vec<String>,
    /// (label, the string it is matched against), for the matchers with a string.
    pub matched: Vec<(String, String)>,
}

/// The `payshim_*` metrics in a PromQL expression, skipping string literals: a simple
/// tokenizer, enough for the selectors, functions and operators the files use.
pub fn selectors(expr: &str) -> Vec<Selector> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            i = skip_string(&chars, i);
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            let ident: String = chars[start..i].iter().collect();
            if ident.starts_with("payshim_") {
                let (matched, next) = matchers(&chars, i);
                out.push(Selector {
                    name: ident,
                    labels: matched.iter().map(|(l, _)| l.clone()).collect(),
                    matched: matched
                        .into_iter()
                        .filter_map(|(l, v)| Some((l, v?)))
                        .collect(),
                });
                i = next;
            }
        } else {
            i += 1;
        }
    }
    out
}

fn is_ident(c: char) -> bool {
    c.is_ascii_alphanumeric() || c == '_' || c == ':'
}

/// The index after the string literal opening at `start` (backslash escapes skipped).
fn skip_string(chars: &[char], start: usize) -> usize {
    let quote = chars[start];
    let mut i = start + 1;
    while i < chars.len() && chars[i] != quote {
        i += if chars[i] == '\\' { 2 } else { 1 };
    }
    i + 1
}

/// The matchers of a `{...}` selector starting at `from` (after spaces): each label name
/// with the string it is matched against (its content, escapes left as written), and the
/// index after the selector; none when no `{` follows.
type Matchers = Vec<(String, Option<String>)>;

fn matchers(chars: &[char], from: usize) -> (Matchers, usize) {
    let mut i = from;
    while i < chars.len() && chars[i].is_whitespace() {
        i += 1;
    }
    if chars.get(i) != Some(&'{') {
        return (Vec::new(), from);
    }
    let mut found: Matchers = Vec::new();
    i += 1;
    while i < chars.len() && chars[i] != '}' {
        let c = chars[i];
        if matches!(c, '"' | '\'' | '`') {
            let end = skip_string(chars, i);
            let value: String = chars[i + 1..end.saturating_sub(1).max(i + 1)]
                .iter()
                .collect();
            if let Some(last) = found.last_mut().filter(|(_, v)| v.is_none()) {
                last.1 = Some(value);
            }
            i = end;
        } else if c.is_ascii_alphabetic() || c == '_' {
            let start = i;
            while i < chars.len() && is_ident(chars[i]) {
                i += 1;
            }
            found.push((chars[start..i].iter().collect(), None));
        } else {
            i += 1;
        }
    }
    (found, i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_tokenizer_finds_names_and_selector_labels_outside_strings() {
        let expr = r#"sum by (job) (rate(payshim_requests_total{status=~"5..", job=~"payshim_x"}[5m]))
            / histogram_quantile(0.99, payshim_a_bucket) or label_values(payshim_b, job)"#;
        let found = selectors(expr);
        assert_eq!(
            found,
            vec![
                Selector {
                    name: "payshim_requests_total".into(),
                    labels: vec!["status".into(), "job".into()],
                    matched: vec![
                        ("status".into(), "5..".into()),
                        ("job".into(), "payshim_x".into())
                    ],
                },
                Selector {
                    name: "payshim_a_bucket".into(),
                    labels: vec![],
                    matched: vec![],
                },
                Selector {
                    name: "payshim_b".into(),
                    labels: vec![],
                    matched: vec![],
                },
            ]
        );
    }

    #[test]
    fn rule_exprs_reads_inline_quoted_and_block_expressions() {
        let yaml = "      - alert: A\n        expr: payshim_a == 0\n        for: 1m\n\
                          - alert: B\n        expr: 'payshim_b > 1'\n\
                          - alert: C\n        expr: |\n          payshim_c\n            / payshim_d\n        labels:\n";
        assert_eq!(
            rule_exprs(yaml),
            vec![
                "payshim_a == 0",
                "payshim_b > 1",
                "          payshim_c\n            / payshim_d"
            ]
        );
    }
}
