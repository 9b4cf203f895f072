//! The OpenAPI document (`GET /openapi.json`): fetched from a running service over a real
//! socket, parsed with an OpenAPI 3.1 model (`oas3`) and checked — version, every `$ref`
//! resolves, every operation has an id, a success response, the bearer scheme with a scope and
//! 401/403 on API routes, and every JSON error response names an error schema. Every route of
//! the router is in the document and nothing else is. Real responses of the records, phones,
//! dial, DND, events, webhooks and readiness routes (successes and errors) are validated
//! against their schemas in the document with a JSON Schema validator.

use ctibridge::config::PhoneVendor;
use ctibridge::service::Service;
use ctibridge::sim::ami_server::AmiServer;
use ctibridge::sim::fixtures::load_capture_file;
use ctibridge::sim::phone::{PhoneSim, PhoneSimConfig};
use oas3::spec::{ObjectOrReference, Schema, Spec};
use serde_json::{json, Value};
use std::collections::BTreeSet;
use std::time::Duration;

mod common;

const WAIT: Duration = Duration::from_secs(10);

/// The schemas an error response may carry: `ApiError` and the dial and DND extensions of it.
const ERROR_SCHEMAS: [&str; 4] = [
    "ApiError",
    "RateLimitedError",
    "DialUnavailableError",
    "DndUnavailableError",
];

/// Operations whose success is not a 2xx: the WebSocket upgrade and the `/ui/` redirect.
const NON_2XX_SUCCESS: [(&str, &str, &str); 2] =
    [("GET", "/api/v1/ws", "101"), ("GET", "/ui/", "308")];

/// Error statuses answered with a JSON body that is not an error: the readiness report.
const NON_ERROR_BODIES: [(&str, &str, &str); 1] = [("GET", "/readyz", "503")];

/// API errors in plain text: axum's WebSocket upgrade extractor refuses a request that is no
/// upgrade before the handler runs.
const PLAIN_TEXT_API_ERRORS: [(&str, &str, &str); 2] =
    [("GET", "/api/v1/ws", "400"), ("GET", "/api/v1/ws", "426")];

// ------------------------------------------------------------------------------------------
// Every route of the router is documented.

/// The `(METHOD, path)` pairs of an axum router, read from its `Debug` form (axum has no
/// public route listing): the `node` maps route ids to paths, `routes` maps them to method
/// routers whose endpoints are `None` when the method is not routed.
fn router_routes(
    router: &axum::Router<std::sync::Arc<ctibridge::http::AppState>>,
) -> BTreeSet<(String, String)> {
    let text = format!("{router:?}");
    let changed = |what: &str| format!("axum's Router Debug form changed (no {what}): {text}");
    // The routes added with `route`; the fallback router after it holds axum's own fallback.
    let start = text
        .find("path_router: PathRouter { routes: {")
        .unwrap_or_else(|| panic!("{}", changed("path_router")));
    let end = text
        .find(", fallback_router: ")
        .unwrap_or_else(|| panic!("{}", changed("fallback_router")));
    let path_router = &text[start..end];
    let paths_at = path_router
        .find("node: Node { paths: {")
        .unwrap_or_else(|| panic!("{}", changed("node paths")));
    let (routes_part, paths_part) = path_router.split_at(paths_at);
    let mut paths = std::collections::HashMap::new();
    let mut rest = paths_part;
    while let Some(i) = rest.find("RouteId(") {
        rest = &rest[i + "RouteId(".len()..];
        let close = rest.find(')').unwrap();
        let id = rest[..close].to_string();
        let after = &rest[close..];
        let Some(path) = after.strip_prefix("): \"") else {
            continue;
        };
        let end = path.find('"').unwrap();
        paths.insert(id, path[..end].to_string());
        rest = &path[end..];
    }
    let mut out = BTreeSet::new();
    let mut rest = routes_part;
    while let Some(i) = rest.find("RouteId(") {
        rest = &rest[i + "RouteId(".len()..];
        let close = rest.find(')').unwrap();
        let id = rest[..close].to_string();
        let endpoint = &rest[close + 1..];
        let Some(fields) = endpoint.strip_prefix(": MethodRouter(MethodRouter { ") else {
            panic!(
                "route {:?} is not a method router (a nested router or a service): \
                 teach this test to read it",
                paths.get(&id)
            );
        };
        let fields = &fields[..fields.find(", fallback:").expect("MethodRouter fields")];
        let path = paths.get(&id).expect("every route id has a path").clone();
        for field in fields.split(", ") {
            let (method, endpoint) = field.split_once(": ").expect("`method: endpoint`");
            if endpoint != "None" {
                out.insert((method.to_uppercase(), path.clone()));
            }
        }
        rest = endpoint;
    }
    assert!(!paths.is_empty(), "no routes read from: {text}");
    out
}

fn spec_routes(spec: &Spec) -> BTreeSet<(String, String)> {
    spec.operations()
        .map(|(path, method, _)| (method.as_str().to_string(), path))
        .collect()
}

#[test]
fn every_route_of_the_router_is_documented_and_nothing_else_is() {
    let routes = router_routes(&ctibridge::http::routes());
    // The reader finds what is known to be there (so a change of axum's Debug form cannot
    // make this test pass on an empty list).
    for known in [
        ("GET", "/api/v1/calls"),
        ("POST", "/action-url/{event}"),
        ("PUT", "/api/v1/phones/{ext}/dnd"),
        ("GET", "/openapi.json"),
    ] {
        assert!(
            routes.contains(&(known.0.to_string(), known.1.to_string())),
            "{known:?} not read from the router: {routes:?}"
        );
    }
    let doc = ctibridge::http::openapi::document().unwrap();
    let spec = oas3::from_json(doc.to_string()).unwrap();
    let documented = spec_routes(&spec);
    let undocumented: Vec<_> = routes.difference(&documented).collect();
    let unrouted: Vec<_> = documented.difference(&routes).collect();
    assert!(
        undocumented.is_empty(),
        "routes without a #[utoipa::path] in the OpenAPI document: {undocumented:?}"
    );
    assert!(
        unrouted.is_empty(),
        "documented operations the router does not serve: {unrouted:?}"
    );
}

// ------------------------------------------------------------------------------------------
// The document's structure.

/// Every `$ref` in `value`, with where it was found.
fn refs(value: &Value, at: &str, out: &mut Vec<(String, String)>) {
    match value {
        Value::Object(map) => {
            for (k, v) in map {
                if k == "$ref" {
                    if let Some(r) = v.as_str() {
                        out.push((at.to_string(), r.to_string()));
                    }
                }
                refs(v, &format!("{at}/{k}"), out);
            }
        }
        Value::Array(items) => {
            for (i, v) in items.iter().enumerate() {
                refs(v, &format!("{at}/{i}"), out);
            }
        }
        _ => {}
    }
}

/// The schema name of a `#/components/schemas/<name>` reference.
fn schema_ref(schema: &Option<Schema>) -> Option<String> {
    match schema {
        Some(Schema::Object(o)) => match o.as_ref() {
            ObjectOrReference::Ref { ref_path, .. } => ref_path
                .strip_prefix("#/components/schemas/")
                .map(str::to_string),
            ObjectOrReference::Object(_) => None,
        },
        _ => None,
    }
}

fn check_structure(doc: &Value) {
    let spec = oas3::from_json(doc.to_string()).expect("an OpenAPI 3.1 document oas3 parses");
    let version = spec
        .validate_version()
        .expect("a supported OpenAPI version");
    assert_eq!((version.major, version.minor), (3, 1), "OpenAPI 3.1.x");

    let mut all = Vec::new();
    refs(doc, "#", &mut all);
    assert!(all.len() > 50, "refs are used: {}", all.len());
    for (at, r) in &all {
        let pointer = r
            .strip_prefix('#')
            .unwrap_or_else(|| panic!("{at}: non-local $ref {r}"));
        assert!(
            doc.pointer(pointer).is_some(),
            "{at}: $ref {r} does not resolve"
        );
    }

    let schemas = &doc["components"]["schemas"];
    for name in ERROR_SCHEMAS {
        let s = &schemas[name];
        for field in ["error", "message"] {
            assert_eq!(s["properties"][field]["type"], "string", "{name}.{field}");
            assert!(
                s["required"].as_array().unwrap().contains(&json!(field)),
                "{name} requires {field}"
            );
        }
    }
    let schemes = spec
        .components
        .as_ref()
        .map(|c| c.security_schemes.keys().cloned().collect::<BTreeSet<_>>())
        .unwrap_or_default();
    assert_eq!(
        schemes,
        ["access_token", "bearer"].map(String::from).into(),
        "security schemes"
    );
    assert_eq!(
        doc["components"]["securitySchemes"]["bearer"]["scheme"],
        "bearer"
    );

    let mut ids = BTreeSet::new();
    let mut operations = 0;
    for (path, method, op) in spec.operations() {
        operations += 1;
        let what = format!("{method} {path}");
        let id = op.operation_id.clone().unwrap_or_default();
        assert!(!id.is_empty(), "{what}: no operationId");
        assert!(
            ids.insert(id.clone()),
            "{what}: operationId {id} used twice"
        );
        assert!(!op.tags.is_empty(), "{what}: no tag");

        let responses = op.responses.as_ref().expect("responses");
        let mut resolved = Vec::new();
        for (status, response) in responses {
            let r = response
                .resolve(&spec)
                .unwrap_or_else(|e| panic!("{what} {status}: {e}"));
            assert!(
                r.description.as_deref().is_some_and(|d| !d.is_empty()),
                "{what} {status}: no description"
            );
            resolved.push((status.clone(), r));
        }
        let success = NON_2XX_SUCCESS
            .iter()
            .find(|(m, p, _)| *m == method.as_str() && *p == path)
            .map(|(_, _, s)| *s);
        assert!(
            resolved
                .iter()
                .any(|(s, _)| s.starts_with('2') || Some(s.as_str()) == success),
            "{what}: no success response"
        );

        // API routes: the bearer scheme with a scope, 401 and 403 with the error schema.
        let bearer_route = path.starts_with("/api/");
        if bearer_route {
            assert!(!op.security.is_empty(), "{what}: no security requirement");
            for requirement in &op.security {
                for (scheme, scopes) in &requirement.0 {
                    assert!(
                        scheme == "bearer" || scheme == "access_token",
                        "{what}: scheme {scheme}"
                    );
                    assert!(
                        !scopes.is_empty()
                            && scopes
                                .iter()
                                .all(|s| ["read", "dial", "admin"].contains(&s.as_str())),
                        "{what}: scopes {scopes:?}"
                    );
                }
            }
            assert!(
                op.security.iter().any(|r| r.0.contains_key("bearer")),
                "{what}: the bearer scheme is not accepted"
            );
            for status in ["401", "403"] {
                let (_, r) = resolved
                    .iter()
                    .find(|(s, _)| s == status)
                    .unwrap_or_else(|| panic!("{what}: no {status}"));
                assert_eq!(
                    schema_ref(&r.content["application/json"].schema).as_deref(),
                    Some("ApiError"),
                    "{what} {status}"
                );
            }
        } else {
            assert!(op.security.is_empty(), "{what}: needs no token");
        }

        // Every error answered with JSON names an error schema.
        for (status, r) in &resolved {
            if !(status.starts_with('4') || status.starts_with('5')) {
                continue;
            }
            let exempt = NON_ERROR_BODIES
                .iter()
                .any(|(m, p, s)| *m == method.as_str() && *p == path && s == status);
            if let Some(media) = r.content.get("application/json") {
                let name = schema_ref(&media.schema)
                    .unwrap_or_else(|| panic!("{what} {status}: an inline error schema"));
                assert!(
                    exempt || ERROR_SCHEMAS.contains(&name.as_str()),
                    "{what} {status}: {name} is not an error schema"
                );
            } else {
                let plain = PLAIN_TEXT_API_ERRORS
                    .iter()
                    .any(|(m, p, s)| *m == method.as_str() && *p == path && s == status);
                assert!(
                    !bearer_route || plain,
                    "{what} {status}: API errors are JSON ({:?})",
                    r.content.keys()
                );
            }
        }
    }
    assert!(operations >= 20, "{operations} operations");

    // The webhook (OpenAPI 3.1 `webhooks`): its body is the event union.
    let hook = spec
        .webhooks
        .get("event")
        .expect("the webhook is documented");
    let post = hook.post.as_ref().expect("POST");
    let body = post.request_body.as_ref().unwrap().resolve(&spec).unwrap();
    assert_eq!(
        schema_ref(&body.content["application/json"].schema).as_deref(),
        Some("Event")
    );
    assert!(!ids.contains(post.operation_id.as_deref().unwrap()));
}

// ------------------------------------------------------------------------------------------
// Real responses against their schemas.

/// `schema` with `additionalProperties: false` on every object schema that lists properties
/// (none of the document's object schemas is composed with `allOf`), so a response field the
/// document does not describe fails validation too.
fn strict(schema: &Value) -> Value {
    match schema {
        Value::Object(map) => {
            let mut out: serde_json::Map<String, Value> =
                map.iter().map(|(k, v)| (k.clone(), strict(v))).collect();
            if map.contains_key("properties") && !map.contains_key("additionalProperties") {
                out.insert("additionalProperties".into(), Value::Bool(false));
            }
            Value::Object(out)
        }
        Value::Array(items) => Value::Array(items.iter().map(strict).collect()),
        other => other.clone(),
    }
}

/// Validates `value` against the component schema `name`, allowing no undocumented field.
fn validate(doc: &Value, name: &str, value: &Value) {
    let schema = json!({
        "$schema": "https://json-schema.org/draft/2020-12/schema",
        "$ref": format!("#/components/schemas/{name}"),
        "components": strict(&doc["components"]),
    });
    let validator = jsonschema::validator_for(&schema)
        .unwrap_or_else(|e| panic!("{name} is not a valid JSON Schema: {e}"));
    let errors: Vec<String> = validator
        .iter_errors(value)
        .map(|e| format!("{e} (at {})", e.instance_path()))
        .collect();
    assert!(
        errors.is_empty(),
        "{name} does not describe the response: {errors:#?}\n{value:#}"
    );
}

/// The schema name an operation documents for `status` (`application/json`).
fn documented(doc: &Value, method: &str, path: &str, status: u16) -> String {
    let mut response =
        doc["paths"][path][method.to_lowercase()]["responses"][status.to_string()].clone();
    if let Some(r) = response["$ref"].as_str() {
        response = doc.pointer(r.strip_prefix('#').unwrap()).unwrap().clone();
    }
    let schema = &response["content"]["application/json"]["schema"];
    let r = schema["$ref"]
        .as_str()
        .or_else(|| schema["items"]["$ref"].as_str())
        .unwrap_or_else(|| panic!("{method} {path} {status}: no JSON schema documented"));
    r.strip_prefix("#/components/schemas/").unwrap().to_string()
}

struct Rig {
    service: Service,
    ami: AmiServer,
    _phone: PhoneSim,
    _dir: tempfile::TempDir,
}

impl Rig {
    async fn start() -> Rig {
        let dir = tempfile::tempdir().unwrap();
        let ami = common::ami_server("s3cret", true).await;
        let phone = PhoneSim::start(
            "127.0.0.1:0".parse().unwrap(),
            PhoneSimConfig::for_vendor(PhoneVendor::Yealink, "101"),
        )
        .await
        .unwrap();
        // A port that was free a moment ago: connections to "phone" 109 are refused.
        let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead_addr = dead.local_addr().unwrap();
        drop(dead);
        let extra = format!(
            r#"
[active_uri]
timeout = "500ms"
[dial]
rate_limit_per_phone = 1
[[phones]]
extension = "101"
address = "{phone}"
vendor = "yealink"
username = "admin"
password = "admin"
mac = "{mac}"
[[phones]]
extension = "109"
address = "{dead_addr}"
vendor = "fanvil"
username = "admin"
password = "admin"
"#,
            phone = phone.local_addr(),
            mac = phone.config().mac,
        );
        let settings = common::service_settings(&ami, dir.path(), &extra);
        let service = Service::start(&settings).await.expect("service starts");
        assert!(service.ami[0].wait_up(WAIT).await, "AMI link up");
        Rig {
            service,
            ami,
            _phone: phone,
            _dir: dir,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.service.http_addr)
    }

    async fn send(
        &self,
        method: &str,
        path: &str,
        token: Option<&str>,
        body: Option<Value>,
    ) -> (u16, reqwest::header::HeaderMap, Value) {
        let mut req = reqwest::Client::new().request(method.parse().unwrap(), self.url(path));
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        if let Some(b) = body {
            req = req.body(b.to_string());
        }
        let resp = tokio::time::timeout(WAIT, req.send())
            .await
            .expect("an answer in time")
            .unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        let value = serde_json::from_str(&text)
            .unwrap_or_else(|e| panic!("{method} {path} {status}: not JSON ({e}): {text}"));
        (status, headers, value)
    }
}

/// Sends a request and validates the answer against the schema the document gives for the
/// route template `template` and the status that came back (which must be `expected`).
#[allow(clippy::too_many_arguments)]
async fn conforms(
    rig: &Rig,
    doc: &Value,
    method: &str,
    path: &str,
    template: &str,
    token: Option<&str>,
    body: Option<Value>,
    expected: u16,
) -> (reqwest::header::HeaderMap, Value) {
    let (status, headers, value) = rig.send(method, path, token, body).await;
    assert_eq!(status, expected, "{method} {path}: {value}");
    let name = documented(doc, method, template, status);
    match value.as_array() {
        // A list: `documented` named the item schema.
        Some(items) => items.iter().for_each(|item| validate(doc, &name, item)),
        None => validate(doc, &name, &value),
    }
    (headers, value)
}

/// Reads SSE `data:` payloads (with their `event:` names) until `done` says stop.
async fn read_sse(
    resp: &mut reqwest::Response,
    mut done: impl FnMut(&str, &Value) -> bool,
) -> Vec<(String, Value)> {
    let (mut buf, mut out) = (String::new(), Vec::new());
    loop {
        while let Some(end) = buf.find("\n\n") {
            let block: String = buf.drain(..end + 2).collect();
            let mut event = String::from("message");
            for line in block.lines() {
                if let Some(v) = line.strip_prefix("event: ") {
                    event = v.to_string();
                } else if let Some(v) = line.strip_prefix("data: ") {
                    let data: Value = serde_json::from_str(v).unwrap();
                    let stop = done(&event, &data);
                    out.push((event.clone(), data));
                    if stop {
                        return out;
                    }
                }
            }
        }
        let chunk = tokio::time::timeout(WAIT, resp.chunk())
            .await
            .expect("an SSE event in time")
            .unwrap()
            .expect("the stream stays open");
        buf.push_str(std::str::from_utf8(&chunk).unwrap());
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_served_document_is_valid_and_real_responses_match_it() {
    let rig = Rig::start().await;

    // The document over the socket.
    let resp = reqwest::get(rig.url("/openapi.json")).await.unwrap();
    assert_eq!(resp.status(), 200);
    assert_eq!(resp.headers()["content-type"], "application/json");
    let doc: Value = resp.json().await.unwrap();
    check_structure(&doc);

    // Live events while a recorded call plays: every event matches `Event`.
    let mut sse = reqwest::Client::new()
        .get(rig.url("/api/v1/events?types=call.*"))
        .bearer_auth("reader")
        .send()
        .await
        .unwrap();
    assert_eq!(sse.status(), 200);
    let scenario = load_capture_file(&common::fixture("answered_caller_hangup.ami")).unwrap();
    rig.ami.play(&scenario.instantiate(1), 0.0).await;
    let events = read_sse(&mut sse, |event, _| event == "call.ended").await;
    let types: Vec<&str> = events.iter().map(|(e, _)| e.as_str()).collect();
    assert!(
        types.contains(&"call.started") && types.contains(&"call.answered"),
        "{types:?}"
    );
    for (event, data) in &events {
        assert_eq!(data["type"], event.as_str());
        validate(&doc, "Event", data);
    }
    drop(sse);

    // Resuming from an id that was never buffered starts with `stream.reset`.
    let mut resumed = reqwest::Client::new()
        .get(rig.url("/api/v1/events?access_token=reader"))
        .header("Last-Event-ID", "1")
        .send()
        .await
        .unwrap();
    assert_eq!(resumed.status(), 200);
    let first = read_sse(&mut resumed, |_, _| true).await;
    assert_eq!(first[0].0, "stream.reset");
    validate(&doc, "StreamReset", &first[0].1);
    drop(resumed);

    // Records.
    let (_, page) = conforms(
        &rig,
        &doc,
        "GET",
        "/api/v1/calls",
        "/api/v1/calls",
        Some("reader"),
        None,
        200,
    )
    .await;
    let record = page["records"][0].clone();
    assert!(record["id"].is_string(), "a record: {page}");
    assert!(!record["legs"].as_array().unwrap().is_empty());
    let id = record["id"].as_str().unwrap();
    conforms(
        &rig,
        &doc,
        "GET",
        &format!("/api/v1/calls/{id}"),
        "/api/v1/calls/{id}",
        Some("reader"),
        None,
        200,
    )
    .await;
    conforms(
        &rig,
        &doc,
        "GET",
        "/api/v1/calls/default:nope",
        "/api/v1/calls/{id}",
        Some("reader"),
        None,
        404,
    )
    .await;
    conforms(
        &rig,
        &doc,
        "GET",
        "/api/v1/calls?direction=sideways",
        "/api/v1/calls",
        Some("reader"),
        None,
        422,
    )
    .await;
    let (headers, _) = conforms(
        &rig,
        &doc,
        "GET",
        "/api/v1/calls",
        "/api/v1/calls",
        None,
        None,
        401,
    )
    .await;
    assert_eq!(headers["www-authenticate"], "Bearer");
    conforms(
        &rig,
        &doc,
        "GET",
        "/api/v1/calls",
        "/api/v1/calls",
        Some("dialer"),
        None,
        403,
    )
    .await;
    conforms(
        &rig,
        &doc,
        "GET",
        "/api/v1/orphans",
        "/api/v1/orphans",
        Some("reader"),
        None,
        200,
    )
    .await;

    // Phones.
    let (_, phones) = conforms(
        &rig,
        &doc,
        "GET",
        "/api/v1/phones",
        "/api/v1/phones",
        Some("reader"),
        None,
        200,
    )
    .await;
    assert_eq!(phones.as_array().unwrap().len(), 2);
    conforms(
        &rig,
        &doc,
        "GET",
        "/api/v1/phones/101",
        "/api/v1/phones/{ext}",
        Some("reader"),
        None,
        200,
    )
    .await;
    conforms(
        &rig,
        &doc,
        "GET",
        "/api/v1/phones/555",
        "/api/v1/phones/{ext}",
        Some("reader"),
        None,
        404,
    )
    .await;

    // DND: set on a phone that takes it, refused by one that cannot be reached, unknown.
    let (_, outcome) = conforms(
        &rig,
        &doc,
        "PUT",
        "/api/v1/phones/101/dnd",
        "/api/v1/phones/{ext}/dnd",
        Some("dialer"),
        Some(json!({"enabled": true})),
        200,
    )
    .await;
    assert_eq!(outcome["phone"]["applied"], true, "{outcome}");
    let (_, failed) = conforms(
        &rig,
        &doc,
        "PUT",
        "/api/v1/phones/109/dnd",
        "/api/v1/phones/{ext}/dnd",
        Some("dialer"),
        Some(json!({"enabled": true})),
        503,
    )
    .await;
    assert_eq!(failed["error"], "dnd_failed");
    assert!(failed["outcome"].is_object(), "{failed}");
    conforms(
        &rig,
        &doc,
        "PUT",
        "/api/v1/phones/555/dnd",
        "/api/v1/phones/{ext}/dnd",
        Some("dialer"),
        Some(json!({"enabled": true})),
        404,
    )
    .await;
    conforms(
        &rig,
        &doc,
        "PUT",
        "/api/v1/phones/101/dnd",
        "/api/v1/phones/{ext}/dnd",
        Some("dialer"),
        Some(json!({"enabled": "yes"})),
        422,
    )
    .await;

    // Dial: delivered through the phone; a failed delivery with its request; the phone's
    // rate limit; an unknown extension; a bad body; the request read back.
    let (headers, status) = conforms(
        &rig,
        &doc,
        "POST",
        "/api/v1/dial",
        "/api/v1/dial",
        Some("dialer"),
        Some(json!({"from": "101", "to": "+1 555 0100", "via": "phone"})),
        202,
    )
    .await;
    let request_id = status["request_id"].as_str().unwrap();
    assert_eq!(
        headers["location"].to_str().unwrap(),
        format!("/api/v1/dial/{request_id}")
    );
    let (_, failed) = conforms(
        &rig,
        &doc,
        "POST",
        "/api/v1/dial",
        "/api/v1/dial",
        Some("dialer"),
        Some(json!({"from": 109, "to": 5550100, "via": "phone"})),
        503,
    )
    .await;
    assert_eq!(failed["request"]["state"], "failed", "{failed}");
    let (headers, limited) = conforms(
        &rig,
        &doc,
        "POST",
        "/api/v1/dial",
        "/api/v1/dial",
        Some("dialer"),
        Some(json!({"from": "109", "to": "5550100", "via": "phone"})),
        429,
    )
    .await;
    assert_eq!(
        headers["retry-after"].to_str().unwrap(),
        limited["retry_after_s"].to_string()
    );
    conforms(
        &rig,
        &doc,
        "POST",
        "/api/v1/dial",
        "/api/v1/dial",
        Some("dialer"),
        Some(json!({"from": "555", "to": "5550100"})),
        404,
    )
    .await;
    conforms(
        &rig,
        &doc,
        "POST",
        "/api/v1/dial",
        "/api/v1/dial",
        Some("dialer"),
        Some(json!({"from": "101", "to": "5550100", "via": "fax"})),
        422,
    )
    .await;
    conforms(
        &rig,
        &doc,
        "GET",
        &format!("/api/v1/dial/{request_id}"),
        "/api/v1/dial/{request_id}",
        Some("reader"),
        None,
        200,
    )
    .await;
    conforms(
        &rig,
        &doc,
        "GET",
        "/api/v1/dial/dr_nope",
        "/api/v1/dial/{request_id}",
        Some("dialer"),
        None,
        404,
    )
    .await;

    // Webhook delivery log (admin) and readiness.
    conforms(
        &rig,
        &doc,
        "GET",
        "/api/v1/webhooks/deliveries",
        "/api/v1/webhooks/deliveries",
        Some("admin"),
        None,
        200,
    )
    .await;
    conforms(
        &rig,
        &doc,
        "GET",
        "/api/v1/webhooks/deliveries?limit=0",
        "/api/v1/webhooks/deliveries",
        Some("admin"),
        None,
        422,
    )
    .await;
    conforms(
        &rig,
        &doc,
        "GET",
        "/api/v1/webhooks/deliveries",
        "/api/v1/webhooks/deliveries",
        Some("reader"),
        None,
        403,
    )
    .await;
    conforms(&rig, &doc, "GET", "/readyz", "/readyz", None, None, 200).await;

    rig.service.stop().await.unwrap();
}
