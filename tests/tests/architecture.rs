//! The layering of `ARCHITECTURE.md`, enforced by reading the sources: no build tooling, just a
//! small Rust tokenizer (comments dropped, string literals kept as literals) and the paths the
//! code names — `use` trees expanded (`crate::{db::x, flows}` is `crate::db::x` and
//! `crate::flows`) and fully qualified paths in expressions (`crate::shopify::gid(…)`).
//!
//! Simplifications, on purpose: `super::` and `self::` count as the layer the file is in (true for
//! every file but a layer's `mod.rs`, whose `super::` is the crate root — none of them uses it
//! today); a name brought in by `use` is checked where it is imported, not where it is used.
//!
//! Each rule is a test of its own; a failure lists every offending `file:line` with the rule.

use std::{
    fmt::Write as _,
    path::{Path, PathBuf},
};

// ---------------------------------------------------------------------------------------------
// Rules.

/// The top-level modules of `levelup_common` (and its `Config` re-export), by layer name.
const COMMON_MODULES: &[&str] =
    &["config", "db", "domain", "flows", "jobs", "mail", "resilience", "runtime", "shopify", "Config"];

/// (a) `domain` is parsed values and states: it imports nothing of ours outside itself.
#[test]
fn a_domain_imports_nothing_outside_domain() {
    check_crate_imports(
        "(a) common/src/domain imports nothing of ours outside `domain`",
        &["common/src/domain"],
        &["domain"],
    );
}

/// (b) `db` is SQL over domain types; it reads the configuration (pool settings) and nothing else.
#[test]
fn b_db_imports_only_domain_config_and_itself() {
    check_crate_imports(
        "(b) common/src/db imports only `crate::domain`, `crate::config`/`crate::Config` and `crate::db`",
        &["common/src/db"],
        &["domain", "config", "Config", "db"],
    );
}

/// (c) `flows` are subscriber operations over `db` and `domain`.
#[test]
fn c_flows_import_only_domain_db_and_flows() {
    check_crate_imports(
        "(c) common/src/flows imports only `crate::domain`, `crate::db` and `crate::flows`",
        &["common/src/flows"],
        &["domain", "db", "flows"],
    );
}

/// (d) The integrations and the resilience toolkit know nothing of the database or the jobs.
#[test]
fn d_integrations_never_import_db_flows_or_jobs() {
    let rule = "(d) common/src/{mail,shopify,resilience} never import `crate::db`, `crate::flows` or `crate::jobs`";
    let mut violations = Vec::new();
    for file in rust_files(&["common/src/mail", "common/src/shopify", "common/src/resilience"]) {
        for path in file.paths() {
            if let Some(module) = path.crate_module()
                && ["db", "flows", "jobs"].contains(&module)
            {
                violations.push(file.at(path.line, &path.text()));
            }
        }
    }
    assert_none(rule, violations);
}

/// (e) The API never sends mail (the worker does); the scheduler only enqueues.
#[test]
fn e_api_and_scheduler_never_send_mail() {
    let mut violations = Vec::new();
    let api_rule =
        "(e) api/src never references `mail::ses`, `mail::outbox`, `SesTransport`, `Outbox` or `levelup_worker`";
    for file in rust_files(&["api/src"]) {
        for path in file.paths() {
            if path.contains(&["mail", "ses"]) || path.contains(&["mail", "outbox"]) {
                violations.push(format!("{} [{api_rule}]", file.at(path.line, &path.text())));
            }
        }
        for (line, ident) in file.idents() {
            if ["SesTransport", "Outbox", "levelup_worker"].contains(&ident) {
                violations.push(format!("{} [{api_rule}]", file.at(line, ident)));
            }
        }
    }
    let scheduler_rule = "(e) scheduler/src never references `mail::ses` or `mail::outbox` (it only enqueues)";
    for file in rust_files(&["scheduler/src"]) {
        for path in file.paths() {
            if path.contains(&["mail", "ses"]) || path.contains(&["mail", "outbox"]) {
                violations.push(format!("{} [{scheduler_rule}]", file.at(path.line, &path.text())));
            }
        }
    }
    violations.sort();
    violations.dedup();
    assert_none("(e) the API never sends mail; the scheduler only enqueues", violations);
}

/// (f) SQL lives in `common/src/db/` only (and in `migrations/`).
#[test]
fn f_sql_lives_in_common_db_only() {
    const SQL_CALLS: &[&str] = &[
        "query",
        "query_as",
        "query_scalar",
        "query_with",
        "query_as_with",
        "query_scalar_with",
        "query_file",
        "query_file_as",
        "query_file_scalar",
        "raw_sql",
        "QueryBuilder",
    ];
    let rule = "(f) no `sqlx::query*` outside common/src/db";
    let mut violations = Vec::new();
    for file in rust_files(&["common/src", "api/src", "worker/src", "scheduler/src"]) {
        if file.rel.starts_with("common/src/db/") {
            continue;
        }
        for path in file.paths() {
            if path.segments.windows(2).any(|w| w[0] == "sqlx" && SQL_CALLS.contains(&w[1].as_str())) {
                violations.push(file.at(path.line, &path.text()));
            }
        }
    }
    assert_none(rule, violations);
}

/// (g) HTML is built by templates that escape by construction, never by `format!`.
#[test]
fn g_no_html_built_with_format() {
    /// `format!` literals that look like markup but are not: (file, text in the literal, why).
    const ALLOWED: &[(&str, &str, &str)] = &[(
        "common/src/config.rs",
        "arn:aws:sns:<region>:<account>:<topic>",
        // A configuration error naming the expected shape of an SNS topic ARN; the `<…>` are
        // placeholders for a person reading the error, never markup.
        "placeholders in an error message",
    )];
    let rule = "(g) no `format!(` whose literal contains `<` followed by a letter, `/` or `!`";
    let mut violations = Vec::new();
    let mut allowed_used = vec![false; ALLOWED.len()];
    for file in rust_files(&["common/src", "api/src"]) {
        for (line, literal) in file.format_literals() {
            if !looks_like_markup(&literal) {
                continue;
            }
            if let Some(k) = ALLOWED.iter().position(|(f, text, _why)| file.rel == *f && literal.contains(text)) {
                allowed_used[k] = true;
                continue;
            }
            violations.push(file.at(line, &format!("format!({literal:?})")));
        }
    }
    // A stale entry would silently allow the next literal that happens to match it.
    for ((f, text, _why), used) in ALLOWED.iter().zip(allowed_used) {
        if !used {
            violations.push(format!("{f}: allowlist entry {text:?} matches no `format!` any more: remove it"));
        }
    }
    assert_none(rule, violations);
}

fn looks_like_markup(literal: &str) -> bool {
    let chars: Vec<char> = literal.chars().collect();
    chars.windows(2).any(|w| w[0] == '<' && (w[1].is_ascii_alphabetic() || w[1] == '/' || w[1] == '!'))
}

/// Every `crate::x` path in files under `roots` names a module in `allowed`.
fn check_crate_imports(rule: &str, roots: &[&str], allowed: &[&str]) {
    let mut violations = Vec::new();
    for file in rust_files(roots) {
        for path in file.paths() {
            let Some(module) = path.crate_module() else { continue };
            if !allowed.contains(&module) {
                let known = if COMMON_MODULES.contains(&module) { "" } else { " (not a known module)" };
                violations.push(file.at(path.line, &format!("{}{known}", path.text())));
            }
        }
    }
    assert_none(rule, violations);
}

fn assert_none(rule: &str, violations: Vec<String>) {
    if violations.is_empty() {
        return;
    }
    let mut message = format!("{} violation(s) of {rule}:\n", violations.len());
    for v in &violations {
        let _ = writeln!(message, "  {v} — {rule}");
    }
    panic!("{message}");
}

// ---------------------------------------------------------------------------------------------
// Reading the sources.

fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("tests/ is inside the workspace").to_owned()
}

struct SourceFile {
    /// Relative to the workspace root, with `/` separators.
    rel: String,
    tokens: Vec<Token>,
}

impl SourceFile {
    fn at(&self, line: usize, what: &str) -> String {
        format!("{}:{line}: {what}", self.rel)
    }

    fn paths(&self) -> Vec<PathRef> {
        extract_paths(&self.tokens)
    }

    fn idents(&self) -> impl Iterator<Item = (usize, &str)> {
        self.tokens.iter().filter_map(|t| match &t.kind {
            Kind::Ident(name) => Some((t.line, name.as_str())),
            _ => None,
        })
    }

    /// The first string literal of every `format!(…)`, with the line of the literal.
    fn format_literals(&self) -> Vec<(usize, String)> {
        let mut found = Vec::new();
        for (i, t) in self.tokens.iter().enumerate() {
            if t.is_ident("format")
                && self.tokens.get(i + 1).is_some_and(|t| t.is_punct("!"))
                && self.tokens.get(i + 2).is_some_and(|t| t.is_punct("(") || t.is_punct("[") || t.is_punct("{"))
                && let Some(Token { kind: Kind::Str(literal), line }) = self.tokens.get(i + 3)
            {
                found.push((*line, literal.clone()));
            }
        }
        found
    }
}

/// Every `*.rs` under the given directories (relative to the workspace root), sorted.
fn rust_files(roots: &[&str]) -> Vec<SourceFile> {
    let root = workspace_root();
    let mut paths = Vec::new();
    for dir in roots {
        let dir = root.join(dir);
        assert!(dir.is_dir(), "{} exists (the architecture test's layout is out of date)", dir.display());
        collect_rs(&dir, &mut paths);
    }
    paths.sort();
    paths
        .into_iter()
        .map(|path| {
            let source = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
            let rel = path.strip_prefix(&root).unwrap().to_string_lossy().replace('\\', "/");
            let tokens = tokenize(&source).unwrap_or_else(|e| panic!("tokenizing {rel}: {e}"));
            SourceFile { rel, tokens }
        })
        .collect()
}

fn collect_rs(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            collect_rs(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

// ---------------------------------------------------------------------------------------------
// A Rust tokenizer good enough for paths and string literals.

#[derive(Debug, Clone, PartialEq)]
enum Kind {
    Ident(String),
    /// The contents of a string literal (escapes left as written).
    Str(String),
    /// `::` or a single punctuation character.
    Punct(&'static str),
    /// Numbers, char literals, lifetimes and punctuation the checks do not look at.
    Other,
}

#[derive(Debug, Clone)]
struct Token {
    kind: Kind,
    line: usize,
}

impl Token {
    fn is_ident(&self, name: &str) -> bool {
        matches!(&self.kind, Kind::Ident(n) if n == name)
    }

    fn is_punct(&self, p: &str) -> bool {
        matches!(&self.kind, Kind::Punct(q) if *q == p)
    }
}

fn tokenize(source: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = source.chars().collect();
    let mut tokens = Vec::new();
    let mut i = 0;
    let mut line = 1;
    let at = |i: usize| chars.get(i).copied().unwrap_or('\0');
    while i < chars.len() {
        let c = chars[i];
        let start_line = line;
        if c == '\n' {
            line += 1;
            i += 1;
        } else if c.is_whitespace() {
            i += 1;
        } else if c == '/' && at(i + 1) == '/' {
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '/' && at(i + 1) == '*' {
            let mut depth = 0;
            loop {
                if i >= chars.len() {
                    return Err(format!("unterminated block comment from line {start_line}"));
                }
                if chars[i] == '/' && at(i + 1) == '*' {
                    depth += 1;
                    i += 2;
                } else if chars[i] == '*' && at(i + 1) == '/' {
                    depth -= 1;
                    i += 2;
                    if depth == 0 {
                        break;
                    }
                } else {
                    if chars[i] == '\n' {
                        line += 1;
                    }
                    i += 1;
                }
            }
        } else if let Some((prefix_len, hashes)) = raw_string_start(&chars, i) {
            // r"…", r#"…"#, br"…", cr#"…"#: no escapes, ends at `"` followed by the same hashes.
            i += prefix_len;
            let begin = i;
            loop {
                if i >= chars.len() {
                    return Err(format!("unterminated raw string from line {start_line}"));
                }
                if chars[i] == '"' && (0..hashes).all(|k| at(i + 1 + k) == '#') {
                    break;
                }
                if chars[i] == '\n' {
                    line += 1;
                }
                i += 1;
            }
            tokens.push(Token { kind: Kind::Str(chars[begin..i].iter().collect()), line: start_line });
            i += 1 + hashes;
        } else if c == '"' || ((c == 'b' || c == 'c') && at(i + 1) == '"') {
            i += if c == '"' { 1 } else { 2 };
            let begin = i;
            loop {
                if i >= chars.len() {
                    return Err(format!("unterminated string from line {start_line}"));
                }
                match chars[i] {
                    '\\' => {
                        if at(i + 1) == '\n' {
                            line += 1;
                        }
                        i += 2;
                    }
                    '"' => break,
                    '\n' => {
                        line += 1;
                        i += 1;
                    }
                    _ => i += 1,
                }
            }
            tokens.push(Token { kind: Kind::Str(chars[begin..i].iter().collect()), line: start_line });
            i += 1;
        } else if c == '\'' || (c == 'b' && at(i + 1) == '\'') {
            // A char literal ('x', '\n', '\u{1F600}', b'x') or a lifetime ('a, 'static).
            let q = if c == 'b' { i + 1 } else { i };
            if at(q + 1) == '\\' {
                i = q + 2;
                while i < chars.len() && chars[i] != '\'' {
                    i += 1;
                }
                i += 1;
            } else if at(q + 2) == '\'' {
                i = q + 3;
            } else {
                i = q + 1;
                while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
            tokens.push(Token { kind: Kind::Other, line: start_line });
        } else if c.is_alphabetic() || c == '_' {
            let mut begin = i;
            if c == 'r' && at(i + 1) == '#' && (at(i + 2).is_alphabetic() || at(i + 2) == '_') {
                i += 2; // raw identifier r#type
                begin = i;
            }
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push(Token { kind: Kind::Ident(chars[begin..i].iter().collect()), line: start_line });
        } else if c.is_ascii_digit() {
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push(Token { kind: Kind::Other, line: start_line });
        } else if c == ':' && at(i + 1) == ':' {
            tokens.push(Token { kind: Kind::Punct("::"), line: start_line });
            i += 2;
        } else {
            let punct = match c {
                '{' => "{",
                '}' => "}",
                '(' => "(",
                ')' => ")",
                '[' => "[",
                ']' => "]",
                ',' => ",",
                ';' => ";",
                '*' => "*",
                '!' => "!",
                '$' => "$",
                '<' => "<",
                _ => "",
            };
            tokens.push(Token {
                kind: if punct.is_empty() { Kind::Other } else { Kind::Punct(punct) },
                line: start_line,
            });
            i += 1;
        }
    }
    Ok(tokens)
}

/// If a raw string literal starts at `i`: the length of its prefix (up to and including the
/// opening `"`) and its number of `#`s.
fn raw_string_start(chars: &[char], i: usize) -> Option<(usize, usize)> {
    let mut j = i;
    if matches!(chars.get(j), Some('b' | 'c')) {
        j += 1;
    }
    if chars.get(j) != Some(&'r') {
        return None;
    }
    j += 1;
    let mut hashes = 0;
    while chars.get(j) == Some(&'#') {
        hashes += 1;
        j += 1;
    }
    (chars.get(j) == Some(&'"')).then_some((j + 1 - i, hashes))
}

// ---------------------------------------------------------------------------------------------
// Paths: `a::b::c`, with `use` groups expanded.

#[derive(Debug)]
struct PathRef {
    segments: Vec<String>,
    /// The line of the path's last segment (the leaf a group names).
    line: usize,
}

impl PathRef {
    fn text(&self) -> String {
        self.segments.join("::")
    }

    /// The top-level module of `crate::module::…` (`$crate` too), if the path is one.
    fn crate_module(&self) -> Option<&str> {
        match self.segments.as_slice() {
            [first, second, ..] if first == "crate" && second != "self" => Some(second),
            _ => None,
        }
    }

    fn contains(&self, needle: &[&str]) -> bool {
        self.segments.windows(needle.len()).any(|w| w.iter().zip(needle).all(|(a, b)| a == b))
    }
}

/// Every path of two segments or more (`a::b`, `a::{b, c::d}`), outside comments and strings.
fn extract_paths(tokens: &[Token]) -> Vec<PathRef> {
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let starts_path = matches!(tokens[i].kind, Kind::Ident(_))
            && tokens.get(i + 1).is_some_and(|t| t.is_punct("::"))
            && !(i > 0 && tokens[i - 1].is_punct("::"));
        if starts_path {
            i = expand(tokens, i, &mut Vec::new(), &mut out);
        } else {
            i += 1;
        }
    }
    out
}

/// Reads a path (with groups) starting at `tokens[i]`, pushing each leaf after `prefix`;
/// returns the index after it.
fn expand(tokens: &[Token], mut i: usize, prefix: &mut Vec<String>, out: &mut Vec<PathRef>) -> usize {
    let depth = prefix.len();
    loop {
        match tokens.get(i).map(|t| &t.kind) {
            Some(Kind::Ident(name)) => {
                prefix.push(name.clone());
                let line = tokens[i].line;
                i += 1;
                if tokens.get(i).is_some_and(|t| t.is_punct("::")) {
                    i += 1;
                    continue;
                }
                out.push(PathRef { segments: prefix.clone(), line });
                break;
            }
            Some(Kind::Punct("*")) => {
                prefix.push("*".to_owned());
                out.push(PathRef { segments: prefix.clone(), line: tokens[i].line });
                i += 1;
                break;
            }
            Some(Kind::Punct("{")) => {
                i += 1;
                loop {
                    match tokens.get(i) {
                        None => break,
                        Some(t) if t.is_punct("}") => {
                            i += 1;
                            break;
                        }
                        Some(t) if t.is_punct(",") => i += 1,
                        Some(_) => {
                            let before = i;
                            i = expand(tokens, i, prefix, out);
                            // `x as y`: skip the rename.
                            if tokens.get(i).is_some_and(|t| t.is_ident("as")) {
                                i += 2;
                            }
                            if i == before {
                                i += 1;
                            }
                        }
                    }
                }
                break;
            }
            // `Vec::<T>`, `$crate` and the like: the path ends here.
            _ => {
                if prefix.len() > depth {
                    out.push(PathRef { segments: prefix.clone(), line: tokens[i.saturating_sub(1)].line });
                }
                break;
            }
        }
    }
    prefix.truncate(depth);
    i
}

// ---------------------------------------------------------------------------------------------
// The checker's own tests: a rule that cannot fail protects nothing.

#[test]
fn the_tokenizer_and_path_expansion_see_what_the_rules_need() {
    let source = r##"
        use crate::{db::subscribers, domain::{Level, SubscriberStatus as Status}, Config};
        // use crate::jobs::hidden;
        /* crate::mail::also_hidden */
        fn f<'a>(x: &'a str) -> char {
            let s = "crate::runtime::in_a_string";
            let r = r#"<p>raw "quoted"</p>"#;
            let h = format!("<b>{}</b>", x);
            let c = '<';
            crate::shopify::gid("Customer", x);
            levelup_common::mail::{ses::SesTransport, outbox};
            sqlx::query_as::<_, (i64,)>("SELECT 1");
            'x'
        }
    "##;
    let tokens = tokenize(source).unwrap();
    let paths: Vec<String> = extract_paths(&tokens).iter().map(PathRef::text).collect();
    assert_eq!(
        paths,
        [
            "crate::db::subscribers",
            "crate::domain::Level",
            "crate::domain::SubscriberStatus",
            "crate::Config",
            "crate::shopify::gid",
            "levelup_common::mail::ses::SesTransport",
            "levelup_common::mail::outbox",
            "sqlx::query_as",
        ]
    );
    let file = SourceFile { rel: "x.rs".to_owned(), tokens };
    let literals: Vec<String> = file.format_literals().into_iter().map(|(_, l)| l).collect();
    assert_eq!(literals, ["<b>{}</b>"]);
    assert!(looks_like_markup("<b>{}</b>") && looks_like_markup("</p>") && looks_like_markup("<!DOCTYPE"));
    assert!(!looks_like_markup("a < b") && !looks_like_markup("{a}<{b}") && !looks_like_markup("<="));
    let lines: Vec<usize> = extract_paths(&file.tokens).iter().map(|p| p.line).collect();
    assert_eq!(lines, [2, 2, 2, 2, 10, 11, 11, 12]);
}
