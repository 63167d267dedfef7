//! The user documentation (`docs/api.md`, `docs/getting-started.md`, the README) describes the
//! API of `infra/openapi.yaml`: every operation has its section with a `curl` example, every
//! `curl` in the docs calls a route that exists, the scopes and query parameters agree, and
//! every error code the API can answer is explained. No stack needed.

use mimiry_tests::workspace_root;
use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

const METHODS: [&str; 5] = ["get", "put", "post", "delete", "patch"];
const API_DOC: &str = "docs/api.md";
/// Every file whose `curl` lines must call real routes.
const DOCS_WITH_CURL: [&str; 3] = ["docs/api.md", "docs/getting-started.md", "README.md"];

fn read(relative: &str) -> String {
    let path = workspace_root().join(relative);
    std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn openapi() -> Value {
    serde_yaml::from_str(&read("infra/openapi.yaml")).expect("infra/openapi.yaml parses")
}

/// `(METHOD, /path/{param})` → the operation.
fn operations(doc: &Value) -> BTreeMap<(String, String), Value> {
    let mut ops = BTreeMap::new();
    for (path, item) in doc["paths"].as_mapping().expect("paths") {
        let path = path.as_str().unwrap().to_string();
        for (method, op) in item.as_mapping().unwrap() {
            let method = method.as_str().unwrap();
            if METHODS.contains(&method) {
                ops.insert((method.to_uppercase(), path.clone()), op.clone());
            }
        }
    }
    ops
}

/// `### METHOD /path` → the section's text, up to the next heading of any level.
fn route_sections(text: &str) -> BTreeMap<(String, String), String> {
    let mut sections = BTreeMap::new();
    let mut current: Option<((String, String), String)> = None;
    for line in text.lines() {
        if line.starts_with('#') {
            if let Some((key, body)) = current.take() {
                let previous = sections.insert(key.clone(), body);
                assert!(previous.is_none(), "{API_DOC}: `{} {}` twice", key.0, key.1);
            }
            let mut words = line.trim_start_matches('#').split_whitespace();
            if let (Some(method), Some(path), None) = (words.next(), words.next(), words.next()) {
                if METHODS.contains(&method.to_lowercase().as_str()) && path.starts_with('/') {
                    current = Some(((method.to_string(), path.to_string()), String::new()));
                }
            }
        } else if let Some((_, body)) = current.as_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    if let Some((key, body)) = current {
        sections.insert(key, body);
    }
    sections
}

/// One `curl` command of a document: its method and the path it calls (query string dropped).
#[derive(Debug)]
struct Curl {
    method: String,
    path: String,
    line: String,
}

/// Every `curl` command in `text`, continuation lines (`\`) joined. Only calls to `$BASE` count:
/// the docs never call anything else with curl.
fn curls(text: &str) -> Vec<Curl> {
    let joined = text.replace("\\\n", " ");
    let mut found = Vec::new();
    for line in joined.lines() {
        let Some(start) = line.find("curl ") else {
            continue;
        };
        let command = &line[start..];
        let Some(url_at) = command.find("$BASE") else {
            continue;
        };
        let url: String = command[url_at + "$BASE".len()..]
            .chars()
            .take_while(|c| !c.is_whitespace() && *c != '"' && *c != '\'')
            .collect();
        let path = url.split('?').next().unwrap().to_string();
        let words: Vec<&str> = command.split_whitespace().collect();
        let method = words
            .iter()
            .position(|w| *w == "-X")
            .map(|i| words[i + 1].to_string())
            .unwrap_or_else(|| "GET".into());
        found.push(Curl {
            method,
            path,
            line: command.to_string(),
        });
    }
    found
}

/// Does a concrete documented path (`/jobs/$JOB_ID`) call the template (`/jobs/{id}`)?
fn calls(template: &str, path: &str) -> bool {
    let t: Vec<&str> = template.split('/').collect();
    let p: Vec<&str> = path.split('/').collect();
    t.len() == p.len()
        && t.iter()
            .zip(&p)
            .all(|(t, p)| t == p || (t.starts_with('{') && p.starts_with('$')))
}

#[test]
fn every_operation_has_a_section_with_a_curl_example_and_no_section_is_invented() {
    let ops = operations(&openapi());
    let text = read(API_DOC);
    let sections = route_sections(&text);
    let documented: BTreeSet<_> = sections.keys().cloned().collect();
    let described: BTreeSet<_> = ops.keys().cloned().collect();
    assert_eq!(
        documented.difference(&described).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "{API_DOC} documents routes infra/openapi.yaml does not have"
    );
    assert_eq!(
        described.difference(&documented).collect::<Vec<_>>(),
        Vec::<&(String, String)>::new(),
        "{API_DOC} has no `### METHOD /path` section for these operations"
    );
    for ((method, path), body) in &sections {
        let examples = curls(body);
        assert!(
            examples
                .iter()
                .any(|c| &c.method == method && calls(path, &c.path)),
            "{API_DOC} `{method} {path}`: no `curl` example calling it (found {examples:?})"
        );
        // Every query parameter the operation takes is explained in its section.
        let op = &ops[&(method.clone(), path.clone())];
        for parameter in op["parameters"].as_sequence().into_iter().flatten() {
            if parameter["in"].as_str() == Some("query") {
                let name = parameter["name"].as_str().unwrap();
                assert!(
                    body.contains(&format!("`{name}`")),
                    "{API_DOC} `{method} {path}`: query parameter `{name}` is not explained"
                );
            }
        }
    }
}

#[test]
fn every_curl_in_the_docs_calls_a_route_that_exists() {
    let ops = operations(&openapi());
    let mut checked = 0;
    for file in DOCS_WITH_CURL {
        for curl in curls(&read(file)) {
            assert!(
                ops.keys()
                    .any(|(m, t)| *m == curl.method && calls(t, &curl.path)),
                "{file}: `{}` calls {} {}, which infra/openapi.yaml does not describe",
                curl.line,
                curl.method,
                curl.path
            );
            checked += 1;
        }
    }
    assert!(
        checked >= 20,
        "expected the docs' curl examples, found {checked}"
    );
}

/// The quick card (`| `GET` | [`/account`](#…) | any key | … |`) names each route's access as
/// the OpenAPI document declares it.
#[test]
fn the_route_table_names_the_access_of_each_operation() {
    let ops = operations(&openapi());
    let mut rows = 0;
    for line in read(API_DOC).lines() {
        let cells: Vec<&str> = line.split('|').map(str::trim).collect();
        if cells.len() < 5 {
            continue;
        }
        let method = cells[1].trim_matches('`');
        if !METHODS.contains(&method.to_lowercase().as_str()) {
            continue;
        }
        // [`/jobs/{id}`](#get-jobsid) → /jobs/{id}
        let path = cells[2]
            .split('`')
            .nth(1)
            .unwrap_or_else(|| panic!("{API_DOC}: no path in `{line}`"));
        let op = ops
            .get(&(method.to_string(), path.to_string()))
            .unwrap_or_else(|| panic!("{API_DOC}: the route table lists {method} {path}"));
        let expected = match (
            op["x-mimiry-scope"].as_str(),
            op["x-mimiry-access"].as_str(),
        ) {
            (Some(scope), _) => format!("`{scope}`"),
            (None, Some("any-key")) => "any key".to_string(),
            (None, Some("job-token")) => "job token".to_string(),
            (None, Some("stripe-signature")) => "Stripe signature".to_string(),
            other => panic!("{method} {path}: unknown access {other:?}"),
        };
        assert_eq!(cells[3], expected, "{API_DOC}: access of {method} {path}");
        rows += 1;
    }
    assert_eq!(
        rows,
        ops.len(),
        "{API_DOC}: the route table lists every operation once"
    );
}

/// Snake-case string literals: `"job_finished"`.
fn snake_literals(text: &str, after: &str) -> BTreeSet<String> {
    text.match_indices(after)
        .filter(|(i, _)| {
            // `code: "…"`, not `country_code: "…"`.
            text[..*i]
                .chars()
                .next_back()
                .is_none_or(|c| !c.is_alphanumeric() && c != '_')
        })
        .filter_map(|(i, m)| {
            let rest = &text[i + m.len()..];
            let literal = &rest[..rest.find('"')?];
            (!literal.is_empty() && literal.chars().all(|c| c.is_ascii_lowercase() || c == '_'))
                .then(|| literal.to_string())
        })
        .collect()
}

fn rust_files(dir: &Path, out: &mut Vec<std::path::PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display())) {
        let path = entry.unwrap().path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// Every error code the API can answer: the OpenAPI `ErrorCode` enum, the codes of
/// `ApiError::code` and every `code: "…"` of a conflict raised in the functions or `shared`.
fn error_codes() -> BTreeSet<String> {
    let doc = openapi();
    let mut codes: BTreeSet<String> = doc["components"]["schemas"]["ErrorCode"]["enum"]
        .as_sequence()
        .expect("components.schemas.ErrorCode.enum")
        .iter()
        .map(|c| c.as_str().unwrap().to_string())
        .collect();
    let error_rs = read("shared/src/error.rs");
    let code_fn = error_rs
        .split("pub fn code(&self)")
        .nth(1)
        .and_then(|rest| rest.split("\n    }\n").next())
        .expect("shared/src/error.rs has `pub fn code(&self)`");
    let from_code_fn = snake_literals(code_fn, "=> \"");
    assert!(
        from_code_fn.len() >= 10,
        "expected ApiError::code's literals, got {from_code_fn:?}"
    );
    codes.extend(from_code_fn);
    let root = workspace_root();
    let mut files = Vec::new();
    rust_files(&root.join("shared/src"), &mut files);
    rust_files(&root.join("functions"), &mut files);
    for file in files {
        let text = std::fs::read_to_string(&file).unwrap();
        codes.extend(snake_literals(&text, "code: \""));
    }
    codes
}

#[test]
fn every_error_code_is_explained() {
    let text = read(API_DOC);
    let codes = error_codes();
    assert!(codes.contains("insufficient_credits") && codes.contains("job_finished"));
    let missing: Vec<_> = codes
        .iter()
        .filter(|c| !text.contains(&format!("`{c}`")))
        .collect();
    assert!(
        missing.is_empty(),
        "{API_DOC} does not explain these error codes: {missing:?}"
    );
}

#[test]
fn the_readme_leads_to_the_docs() {
    let readme = read("README.md");
    for doc in ["docs/getting-started.md", "docs/api.md"] {
        assert!(
            readme.contains(&format!("]({doc})")),
            "README.md does not link {doc}"
        );
    }
}

/// The readers above, on known input: a check that reads nothing passes anything.
#[test]
fn the_doc_readers_read_what_is_written() {
    let text = "curl -s -X POST \"$BASE/jobs\" -H x \\\n  -d '{}'\n\
                curl -s \"$BASE/jobs/$JOB_ID?x=1\" -H y\n\
                curl https://example.com\n";
    let found = curls(text);
    assert_eq!(found.len(), 2, "{found:?}");
    assert_eq!(
        (found[0].method.as_str(), found[0].path.as_str()),
        ("POST", "/jobs")
    );
    assert_eq!(
        (found[1].method.as_str(), found[1].path.as_str()),
        ("GET", "/jobs/$JOB_ID")
    );
    assert!(calls("/jobs/{id}", "/jobs/$JOB_ID"));
    assert!(!calls("/jobs/{id}", "/jobs"));
    assert!(!calls("/jobs/{id}/report", "/jobs/$JOB_ID"));
    assert_eq!(
        snake_literals(
            "code: \"busy\", country_code: \"FI\", code: \"FIN-01\"",
            "code: \""
        ),
        BTreeSet::from(["busy".to_string()])
    );
}
