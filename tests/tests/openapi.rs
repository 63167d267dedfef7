//! `infra/openapi.yaml`, `template.yaml` and the route/scope table (`mimiry_shared::routes`)
//! describe one and the same API: the same routes, each with the same access (scope, any key,
//! job token), operation id and function. No stack needed.

use mimiry_shared::auth::Scope;
use mimiry_shared::routes::{api_routes, gateway_routes, Access, Route, ROUTES};
use mimiry_tests::workspace_root;
use serde_yaml::Value;
use std::collections::{BTreeMap, BTreeSet};

const METHODS: [&str; 8] = [
    "get", "put", "post", "delete", "patch", "head", "options", "trace",
];

fn load(relative: &str) -> Value {
    let path = workspace_root().join(relative);
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    serde_yaml::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()))
}

fn openapi() -> Value {
    load("infra/openapi.yaml")
}

/// `METHOD /path` → the OpenAPI operation.
fn operations(doc: &Value) -> BTreeMap<(String, String), &Value> {
    let paths = doc["paths"].as_mapping().expect("openapi.yaml has paths");
    let mut ops = BTreeMap::new();
    for (path, item) in paths {
        let path = path.as_str().expect("a path is a string").to_string();
        for (method, op) in item.as_mapping().expect("a path item is a mapping") {
            let method = method.as_str().unwrap();
            if METHODS.contains(&method) {
                ops.insert((method.to_uppercase(), path.clone()), op);
            }
        }
    }
    ops
}

/// `METHOD /path` → the function serving it, from template.yaml's HttpApi events.
fn template_routes() -> BTreeMap<(String, String), String> {
    let template = load("template.yaml");
    let mut routes = BTreeMap::new();
    for (id, resource) in template["Resources"]
        .as_mapping()
        .expect("template.yaml has Resources")
    {
        if resource["Type"].as_str() != Some("AWS::Serverless::Function") {
            continue;
        }
        let binary = resource["Metadata"]["BuildProperties"]["Binary"]
            .as_str()
            .unwrap_or_else(|| panic!("{id:?} has no BuildProperties.Binary"));
        let function = binary.strip_prefix("mimiry-").unwrap_or(binary);
        let Some(events) = resource["Properties"]["Events"].as_mapping() else {
            continue;
        };
        for (_, event) in events {
            if event["Type"].as_str() != Some("HttpApi") {
                continue;
            }
            let props = &event["Properties"];
            let method = props["Method"]
                .as_str()
                .expect("an HttpApi event has a Method")
                .to_uppercase();
            let path = props["Path"]
                .as_str()
                .expect("an HttpApi event has a Path")
                .to_string();
            let previous = routes.insert((method.clone(), path.clone()), function.to_string());
            assert!(
                previous.is_none(),
                "template.yaml declares {method} {path} twice"
            );
        }
    }
    routes
}

/// The JSON API's routes (the dashboard's HTML pages are not in the OpenAPI document).
fn table_routes() -> BTreeMap<(String, String), &'static Route> {
    api_routes()
        .map(|r| ((r.method.to_string(), r.path.to_string()), r))
        .collect()
}

fn describe(keys: &BTreeSet<&(String, String)>) -> Vec<String> {
    keys.iter().map(|(m, p)| format!("{m} {p}")).collect()
}

fn assert_same_routes(
    what: &str,
    a: BTreeSet<&(String, String)>,
    other: &str,
    b: BTreeSet<&(String, String)>,
) {
    let only_a: BTreeSet<_> = a.difference(&b).copied().collect();
    let only_b: BTreeSet<_> = b.difference(&a).copied().collect();
    assert!(
        only_a.is_empty() && only_b.is_empty(),
        "{what} and {other} disagree: only in {what}: {:?}; only in {other}: {:?}",
        describe(&only_a),
        describe(&only_b)
    );
}

#[test]
fn openapi_template_and_route_table_declare_the_same_routes() {
    let doc = openapi();
    let ops = operations(&doc);
    let template = template_routes();
    let table = table_routes();
    assert_eq!(
        table.len(),
        api_routes().count(),
        "the route table lists a route twice"
    );
    assert_same_routes(
        "infra/openapi.yaml",
        ops.keys().collect(),
        "the route table",
        table.keys().collect(),
    );
    // API Gateway matches methods exactly: the template declares HEAD beside every GET.
    let gateway: BTreeMap<(String, String), &str> = gateway_routes()
        .map(|(m, p, f)| ((m.to_string(), p.to_string()), f))
        .collect();
    assert_same_routes(
        "template.yaml",
        template.keys().collect(),
        "the route table (with HEAD beside GET)",
        gateway.keys().collect(),
    );
    // The dashboard's pages are in the template (API Gateway serves them), not in the API's
    // document.
    let pages: BTreeSet<(String, String)> = ROUTES
        .iter()
        .filter(|r| !r.is_api())
        .map(|r| (r.method.to_string(), r.path.to_string()))
        .collect();
    assert_same_routes(
        "infra/openapi.yaml",
        ops.keys().collect(),
        "template.yaml without its HEAD routes and dashboard pages",
        template
            .keys()
            .filter(|(m, p)| m != "HEAD" && !pages.contains(&(m.clone(), p.clone())))
            .collect(),
    );
    for (key, function) in &gateway {
        assert_eq!(
            template[key], *function,
            "{} {}: template.yaml and the route table name different functions",
            key.0, key.1
        );
    }
}

/// The access an operation declares: its security requirement, cross-checked with the
/// `x-mimiry-scope` / `x-mimiry-access` extensions.
fn declared_access(label: &str, op: &Value) -> Access {
    let security = op["security"]
        .as_sequence()
        .unwrap_or_else(|| panic!("{label}: no `security` (every operation states its own)"));
    assert_eq!(
        security.len(),
        1,
        "{label}: exactly one security requirement"
    );
    let requirement = security[0]
        .as_mapping()
        .expect("a security requirement is a mapping");
    assert_eq!(
        requirement.len(),
        1,
        "{label}: the requirement names one scheme"
    );
    let (scheme, scopes) = requirement.iter().next().unwrap();
    let scopes: Vec<&str> = scopes
        .as_sequence()
        .unwrap_or_else(|| panic!("{label}: the requirement's scopes are a list"))
        .iter()
        .map(|s| s.as_str().expect("a scope is a string"))
        .collect();
    let extension_scope = op["x-mimiry-scope"].as_str();
    let extension_access = op["x-mimiry-access"].as_str();
    match scheme.as_str() {
        Some("apiKey") => match scopes.as_slice() {
            [] => {
                assert_eq!(
                    extension_access,
                    Some("any-key"),
                    "{label}: an API key without scope is `x-mimiry-access: any-key`"
                );
                assert_eq!(
                    extension_scope, None,
                    "{label}: x-mimiry-scope without a required scope"
                );
                Access::AnyKey
            }
            [scope] => {
                let parsed: Scope = scope.parse().unwrap_or_else(|e| panic!("{label}: {e}"));
                assert_eq!(
                    extension_scope,
                    Some(*scope),
                    "{label}: x-mimiry-scope differs from the security requirement"
                );
                assert_eq!(
                    extension_access, None,
                    "{label}: a scoped route has no x-mimiry-access"
                );
                Access::Scope(parsed)
            }
            more => panic!("{label}: one scope per route, not {more:?}"),
        },
        Some("jobToken") => {
            assert!(scopes.is_empty(), "{label}: the job token has no scopes");
            assert_eq!(
                extension_access,
                Some("job-token"),
                "{label}: the job-token route is `x-mimiry-access: job-token`"
            );
            assert_eq!(
                extension_scope, None,
                "{label}: x-mimiry-scope on the job-token route"
            );
            Access::JobToken
        }
        Some("stripeSignature") => {
            assert_eq!(
                extension_access,
                Some("stripe-signature"),
                "{label}: the Stripe webhook is `x-mimiry-access: stripe-signature`"
            );
            Access::StripeSignature
        }
        other => panic!("{label}: unknown security scheme {other:?}"),
    }
}

/// `GetAccount` → `getAccount`.
fn operation_id(route: &Route) -> String {
    let name = format!("{:?}", route.name);
    let mut chars = name.chars();
    let first = chars.next().unwrap().to_ascii_lowercase();
    std::iter::once(first).chain(chars).collect()
}

#[test]
fn every_operation_declares_the_access_of_the_route_table() {
    let doc = openapi();
    let ops = operations(&doc);
    for route in api_routes() {
        let label = format!("{} {}", route.method, route.path);
        let op = ops[&(route.method.to_string(), route.path.to_string())];
        assert_eq!(
            declared_access(&label, op),
            route.access,
            "{label}: access differs from the route table"
        );
        assert_eq!(
            op["operationId"].as_str(),
            Some(operation_id(route).as_str()),
            "{label}: operationId"
        );
        let tags: Vec<&str> = op["tags"]
            .as_sequence()
            .into_iter()
            .flatten()
            .filter_map(Value::as_str)
            .collect();
        assert_eq!(tags, [route.function], "{label}: tagged with its function");
    }
    // The schemes the operations name exist, and are bearer tokens.
    for scheme in ["apiKey", "jobToken"] {
        let s = &doc["components"]["securitySchemes"][scheme];
        assert_eq!(s["type"].as_str(), Some("http"), "{scheme}");
        assert_eq!(s["scheme"].as_str(), Some("bearer"), "{scheme}");
    }
}

/// Follows a local `$ref` (`#/components/...`) to what it names.
fn resolve<'a>(doc: &'a Value, value: &'a Value) -> &'a Value {
    let mut value = value;
    for _ in 0..10 {
        let Some(reference) = value.get("$ref").and_then(Value::as_str) else {
            return value;
        };
        let pointer = reference
            .strip_prefix("#/")
            .unwrap_or_else(|| panic!("only local refs: {reference}"));
        value = pointer.split('/').fold(doc, |v, part| &v[part]);
        assert!(!value.is_null(), "{reference} names nothing");
    }
    panic!("a $ref chain longer than 10")
}

fn all_refs<'a>(value: &'a Value, out: &mut Vec<&'a str>) {
    match value {
        Value::Mapping(m) => {
            for (k, v) in m {
                if k.as_str() == Some("$ref") {
                    out.push(v.as_str().expect("a $ref is a string"));
                } else {
                    all_refs(v, out);
                }
            }
        }
        Value::Sequence(s) => s.iter().for_each(|v| all_refs(v, out)),
        Value::Tagged(t) => all_refs(&t.value, out),
        _ => {}
    }
}

#[test]
fn every_reference_resolves() {
    let doc = openapi();
    let mut refs = Vec::new();
    all_refs(&doc, &mut refs);
    assert!(
        refs.len() > 50,
        "expected the document to share its schemas by $ref"
    );
    for reference in refs {
        let pointer = reference
            .strip_prefix("#/")
            .unwrap_or_else(|| panic!("only local refs: {reference}"));
        let target = pointer.split('/').fold(&doc, |v, part| &v[part]);
        assert!(!target.is_null(), "{reference} names nothing");
    }
}

/// What every operation must document: its success, the refusals its access implies (401 for
/// all, 403 where a scope is needed), `x-request-id` on every response, the error body on
/// every error, and the API's version of the document.
#[test]
fn every_operation_documents_its_refusals_and_the_error_body() {
    let doc = openapi();
    assert!(
        doc["openapi"]
            .as_str()
            .is_some_and(|v| v.starts_with("3.1.")),
        "an OpenAPI 3.1 document"
    );
    let ops = operations(&doc);
    let error_schema = &doc["components"]["schemas"]["Error"];
    for field in ["error", "code", "request_id"] {
        assert!(
            error_schema["required"]
                .as_sequence()
                .unwrap()
                .iter()
                .any(|f| f.as_str() == Some(field)),
            "the error body requires `{field}`"
        );
    }
    for route in api_routes() {
        let label = format!("{} {}", route.method, route.path);
        let op = ops[&(route.method.to_string(), route.path.to_string())];
        let responses = op["responses"]
            .as_mapping()
            .unwrap_or_else(|| panic!("{label}: no responses"));
        let codes: BTreeSet<&str> = responses.keys().filter_map(Value::as_str).collect();
        assert!(
            codes.iter().any(|c| c.starts_with('2')),
            "{label}: no success response"
        );
        // Stripe's webhook has no key to refuse: a bad signature is its 400.
        assert_eq!(
            codes.contains("401"),
            route.access != Access::StripeSignature,
            "{label}: 401 documented iff the route takes a key or token"
        );
        assert_eq!(
            codes.contains("403"),
            matches!(route.access, Access::Scope(_)),
            "{label}: 403 documented iff the route needs a scope"
        );
        assert!(
            !codes.contains("default"),
            "{label}: every status is listed, no `default`"
        );
        for (code, response) in responses {
            let code = code.as_str().unwrap();
            let response = resolve(&doc, response);
            assert!(
                !response["headers"]["x-request-id"].is_null(),
                "{label} {code}: x-request-id is not documented"
            );
            let schema = resolve(&doc, &response["content"]["application/json"]["schema"]);
            assert!(
                !schema.is_null(),
                "{label} {code}: no application/json schema"
            );
            if code.starts_with('4') || code.starts_with('5') {
                let base = schema["allOf"][0]["$ref"].as_str();
                assert_eq!(
                    base,
                    Some("#/components/schemas/Error"),
                    "{label} {code}: not the error body"
                );
            }
        }
        // Request bodies are JSON objects that refuse unknown fields, as the handlers do (but
        // Stripe's events, which gain fields whenever Stripe adds them).
        if let Some(body) = op
            .get("requestBody")
            .filter(|_| route.access != Access::StripeSignature)
        {
            let schema = resolve(&doc, &body["content"]["application/json"]["schema"]);
            assert_eq!(
                schema["additionalProperties"].as_bool(),
                Some(false),
                "{label}: open request body"
            );
        }
    }
}

/// The guide's quick card (section 4), when the guide is next to the repository, agrees with
/// the route table: every route it lists exists with the scope it names.
#[test]
fn the_guides_quick_card_is_in_the_route_table() {
    let guide = workspace_root().join("../shared/docs/user-guide.md");
    let Ok(text) = std::fs::read_to_string(&guide) else {
        println!(
            "{} not found: skipping the quick-card check",
            guide.display()
        );
        return;
    };
    let table = table_routes();
    let mut rows = 0;
    for line in text.lines() {
        let cells: Vec<&str> = line
            .split('|')
            .map(|c| c.trim().trim_matches('`'))
            .collect();
        // | `GET` | `/instances` | `instances:read` | ... |
        if cells.len() < 5 || !["GET", "POST", "DELETE", "PUT", "PATCH"].contains(&cells[1]) {
            continue;
        }
        let path = cells[2].replace(":id", "{id}");
        let route = table
            .get(&(cells[1].to_string(), path.clone()))
            .unwrap_or_else(|| {
                panic!(
                    "the guide lists {} {path}, the route table does not",
                    cells[1]
                )
            });
        let scope: Scope = cells[3]
            .parse()
            .unwrap_or_else(|e| panic!("the guide's scope for {} {path}: {e}", cells[1]));
        assert_eq!(
            route.access,
            Access::Scope(scope),
            "{} {path}: the guide names another scope",
            cells[1]
        );
        rows += 1;
    }
    assert_eq!(rows, 12, "the guide's quick card has 12 routes");
}

/// The `Scope` schema (what `GET /account` and the key answers name) lists exactly the scopes
/// a key can hold: a scope added to the code but not here makes every answer that names it
/// violate the document (the fuzz run found `secrets:read` missing).
#[test]
fn the_scope_schema_lists_every_scope() {
    let doc = openapi();
    let listed: BTreeSet<&str> = doc["components"]["schemas"]["Scope"]["enum"]
        .as_sequence()
        .expect("components.schemas.Scope.enum")
        .iter()
        .map(|v| v.as_str().expect("a scope name"))
        .collect();
    let scopes: BTreeSet<&str> = Scope::ALL.iter().map(|s| s.as_str()).collect();
    assert_eq!(listed, scopes);
}
