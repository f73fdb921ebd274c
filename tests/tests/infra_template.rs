//! The SAM template (`infra/template.yaml`) says what the deployment promises: arm64
//! functions built by cargo-lambda, chat streamed through API Gateway REST and a Function
//! URL, the 5-minute schedule, the KMS key and its policy (only keys may create data keys,
//! Decrypt bound to the encryption context), the secrets, least-privilege roles, log
//! retention, a private database behind a TLS-only proxy, the migration step, the
//! pending-charge queue (its dead-letter queue, alarms and least-privilege access) and the
//! outputs. cfn-lint (run by scripts/test) checks the syntax; this test checks content.
//!
//! CloudFormation's short tags (`!Ref`, `!GetAtt`, `!Sub`, `!If` ...) are turned into
//! their long forms (`{"Ref": ..}`, `{"Fn::GetAtt": [..]}`) before asserting.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use std::collections::BTreeSet;

use serde_json::{Value, json};
use serde_yaml_ng::value::TaggedValue;

fn template() -> Value {
    let path = switchboard_tests::moto::workspace_root().join("infra/template.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let yaml: serde_yaml_ng::Value = serde_yaml_ng::from_str(&text).unwrap();
    to_json(yaml)
}

/// YAML → JSON, with CloudFormation's short tags in their long form.
fn to_json(value: serde_yaml_ng::Value) -> Value {
    use serde_yaml_ng::Value as Y;
    match value {
        Y::Null => Value::Null,
        Y::Bool(b) => Value::Bool(b),
        Y::Number(n) => serde_json::to_value(n).unwrap(),
        Y::String(s) => Value::String(s),
        Y::Sequence(items) => Value::Array(items.into_iter().map(to_json).collect()),
        Y::Mapping(map) => Value::Object(
            map.into_iter()
                .map(|(k, v)| (k.as_str().expect("string keys").to_owned(), to_json(v)))
                .collect(),
        ),
        Y::Tagged(tagged) => {
            let TaggedValue { tag, value } = *tagged;
            let name = tag.to_string().trim_start_matches('!').to_owned();
            let inner = to_json(value);
            match name.as_str() {
                "Ref" | "Condition" => json!({ name: inner }),
                "GetAtt" => match inner {
                    Value::String(s) => {
                        let (resource, attribute) = s.split_once('.').unwrap();
                        json!({"Fn::GetAtt": [resource, attribute]})
                    }
                    other => json!({"Fn::GetAtt": other}),
                },
                _ => json!({ format!("Fn::{name}"): inner }),
            }
        }
    }
}

fn resources(t: &Value) -> &serde_json::Map<String, Value> {
    t["Resources"].as_object().unwrap()
}

fn of_type<'a>(t: &'a Value, kind: &str) -> Vec<(&'a String, &'a Value)> {
    resources(t)
        .iter()
        .filter(|(_, r)| r["Type"] == kind)
        .collect()
}

/// Every statement of every inline policy of a role.
fn role_statements(t: &Value, role: &str) -> Vec<Value> {
    let role = &resources(t)[role];
    assert_eq!(role["Type"], "AWS::IAM::Role");
    role["Properties"]["Policies"]
        .as_array()
        .unwrap()
        .iter()
        .flat_map(|p| p["PolicyDocument"]["Statement"].as_array().unwrap().clone())
        .collect()
}

fn actions(statement: &Value) -> Vec<String> {
    match &statement["Action"] {
        Value::String(a) => vec![a.clone()],
        Value::Array(a) => a.iter().map(|v| v.as_str().unwrap().to_owned()).collect(),
        other => panic!("unexpected Action {other}"),
    }
}

fn refs_in(value: &Value) -> BTreeSet<String> {
    let mut out = BTreeSet::new();
    fn walk(v: &Value, out: &mut BTreeSet<String>) {
        match v {
            Value::Object(map) => {
                if let Some(Value::String(name)) = map.get("Ref") {
                    out.insert(name.clone());
                }
                if let Some(Value::Array(parts)) = map.get("Fn::GetAtt")
                    && let Some(Value::String(name)) = parts.first()
                {
                    out.insert(name.clone());
                }
                map.values().for_each(|v| walk(v, out));
            }
            Value::Array(items) => items.iter().for_each(|v| walk(v, out)),
            _ => {}
        }
    }
    walk(value, &mut out);
    out
}

const FUNCTIONS: [(&str, &str); 6] = [
    ("ChatFunction", "chat"),
    ("AdminFunction", "admin"),
    ("KeysFunction", "keys"),
    ("HealthCheckFunction", "health-check"),
    ("BillingExportFunction", "billing-export"),
    ("MigrateFunction", "migrate"),
];

#[test]
fn functions_are_arm64_provided_al2023_built_by_cargo_lambda() {
    let t = template();
    assert_eq!(t["Transform"], "AWS::Serverless-2016-10-31");
    let globals = &t["Globals"]["Function"];
    assert_eq!(globals["Runtime"], "provided.al2023");
    assert_eq!(globals["Architectures"], json!(["arm64"]));
    assert_eq!(globals["Handler"], "bootstrap");
    assert_eq!(globals["CodeUri"], "../", "the Cargo workspace");
    assert!(globals["VpcConfig"]["SubnetIds"] == json!({"Ref": "PrivateSubnetIds"}));
    let functions = of_type(&t, "AWS::Serverless::Function");
    assert_eq!(functions.len(), FUNCTIONS.len());
    for (name, binary) in FUNCTIONS {
        let f = &resources(&t)[name];
        assert_eq!(f["Type"], "AWS::Serverless::Function", "{name}");
        assert_eq!(f["Metadata"]["BuildMethod"], "rust-cargolambda", "{name}");
        assert_eq!(f["Metadata"]["BuildProperties"]["Binary"], binary, "{name}");
        // Each binary exists in the workspace.
        let root = switchboard_tests::moto::workspace_root();
        let manifests = [
            "functions/chat",
            "functions/admin",
            "functions/keys",
            "functions/health-check",
            "functions/billing-export",
            "functions/switchboard",
        ]
        .iter()
        .map(|dir| std::fs::read_to_string(root.join(dir).join("Cargo.toml")).unwrap())
        .collect::<String>();
        assert!(
            manifests.contains(&format!("name = \"{binary}\"")),
            "no [[bin]] {binary}"
        );
        // Its own role and log group.
        let role = f["Properties"]["Role"]["Fn::GetAtt"][0].as_str().unwrap();
        assert_eq!(role, format!("{name}Role"));
        let log_group = f["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
            .as_str()
            .unwrap();
        let group = &resources(&t)[log_group];
        assert_eq!(group["Type"], "AWS::Logs::LogGroup");
        assert_eq!(
            group["Properties"]["RetentionInDays"],
            json!({"Ref": "LogRetentionDays"})
        );
    }
    // Every log group has a retention.
    for (name, group) in of_type(&t, "AWS::Logs::LogGroup") {
        assert!(!group["Properties"]["RetentionInDays"].is_null(), "{name}");
    }
}

#[test]
fn chat_streams_through_the_rest_api_only() {
    let t = template();
    let chat = &resources(&t)["ChatFunction"]["Properties"];
    // No public Function URL: it would bypass the API's throttle (issue 33, finding 8).
    assert!(chat["FunctionUrlConfig"].is_null());
    assert!(of_type(&t, "AWS::Lambda::Url").is_empty());
    let api = &chat["Events"]["ChatApi"];
    assert_eq!(api["Type"], "Api", "REST API (HTTP APIs cannot stream)");
    assert_eq!(api["Properties"]["ResponseTransferMode"], "RESPONSE_STREAM");
    assert_eq!(api["Properties"]["Path"], "/v1/{proxy+}");
    assert_eq!(api["Properties"]["RestApiId"], json!({"Ref": "GatewayApi"}));
    assert_eq!(
        chat["Environment"]["Variables"]["AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH"],
        "true"
    );

    let gateway = &resources(&t)["GatewayApi"];
    assert_eq!(gateway["Type"], "AWS::Serverless::Api");
    assert_eq!(gateway["Properties"]["StageName"], json!({"Ref": "Stage"}));

    // Admin and keys are behind the same REST API, buffered.
    let admin = &resources(&t)["AdminFunction"]["Properties"]["Events"]["AdminApi"];
    assert_eq!(admin["Properties"]["Path"], "/admin/{proxy+}");
    assert!(admin["Properties"]["ResponseTransferMode"].is_null());
    let keys = &resources(&t)["KeysFunction"]["Properties"]["Events"];
    let paths: BTreeSet<&str> = keys
        .as_object()
        .unwrap()
        .values()
        .map(|e| {
            assert_eq!(e["Properties"]["RestApiId"], json!({"Ref": "GatewayApi"}));
            e["Properties"]["Path"].as_str().unwrap()
        })
        .collect();
    assert_eq!(
        paths,
        BTreeSet::from([
            "/v1/byok",
            "/v1/byok/{proxy+}",
            "/v1/api-keys",
            "/v1/api-keys/{proxy+}",
            "/v1/usage",
            "/v1/usage/{proxy+}",
            "/v1/billing/checkout",
            "/webhooks/stripe"
        ])
    );
}

/// One method of the REST API, as a function's `Api` event declares it.
struct ApiMethod {
    function: String,
    event: String,
    path: String,
    /// `ANY` or an HTTP verb, upper-case.
    method: String,
}

/// Every `Api` event of every function (all on `GatewayApi`).
fn api_methods(t: &Value) -> Vec<ApiMethod> {
    let mut methods = Vec::new();
    for (function, f) in of_type(t, "AWS::Serverless::Function") {
        let Some(events) = f["Properties"]["Events"].as_object() else {
            continue;
        };
        for (event, e) in events.iter().filter(|(_, e)| e["Type"] == "Api") {
            let p = &e["Properties"];
            assert_eq!(
                p["RestApiId"],
                json!({"Ref": "GatewayApi"}),
                "{function}.{event}"
            );
            methods.push(ApiMethod {
                function: function.clone(),
                event: event.clone(),
                path: p["Path"].as_str().unwrap().to_owned(),
                method: p["Method"].as_str().unwrap().to_ascii_uppercase(),
            });
        }
    }
    methods
}

fn segments(path: &str) -> Vec<&str> {
    path.split('/').filter(|s| !s.is_empty()).collect()
}

fn is_greedy(segment: &str) -> bool {
    segment.starts_with('{') && segment.ends_with("+}")
}

fn is_variable(segment: &str) -> bool {
    segment.starts_with('{')
}

/// The method API Gateway (REST) invokes for `method` on `route` (a router's path, whose
/// `{param}` segments stand for any value), or why none. The resource is chosen segment by
/// segment, the most specific child first: a literal, then a `{param}`, then a greedy
/// `{proxy+}`, which takes the rest; no backtracking is assumed (a request that reaches a
/// resource without a matching method is refused, not passed to a less specific one). A
/// trailing slash is ignored when matching (`/console/` is the `/console` resource). On the
/// resource, the exact method wins over `ANY`.
fn resolve<'a>(
    methods: &'a [ApiMethod],
    method: &str,
    route: &str,
) -> Result<&'a ApiMethod, String> {
    let resources: BTreeSet<Vec<&str>> = methods.iter().map(|m| segments(&m.path)).collect();
    let mut chosen: Vec<&str> = Vec::new();
    let request = segments(route);
    for segment in &request {
        let children: BTreeSet<&str> = resources
            .iter()
            .filter(|r| r.len() > chosen.len() && r[..chosen.len()] == chosen[..])
            .map(|r| r[chosen.len()])
            .collect();
        let literal = children.iter().find(|c| !is_variable(c));
        let next = if is_variable(segment) {
            // Any value: a literal sibling would take some values away.
            if let Some(literal) = literal {
                return Err(format!(
                    "the resource segment `{literal}` takes some values of `{segment}`"
                ));
            }
            None
        } else {
            children.get(segment)
        };
        let next = next
            .or_else(|| children.iter().find(|c| is_variable(c) && !is_greedy(c)))
            .or_else(|| children.iter().find(|c| is_greedy(c)));
        match next {
            Some(child) => chosen.push(child),
            None => {
                return Err(format!(
                    "no resource matches after /{} (segment `{segment}`)",
                    chosen.join("/")
                ));
            }
        }
        if chosen.last().is_some_and(|c| is_greedy(c)) {
            break; // it takes this segment and every one after it
        }
    }
    let on_resource: Vec<&ApiMethod> = methods
        .iter()
        .filter(|m| segments(&m.path) == chosen)
        .collect();
    on_resource
        .iter()
        .find(|m| m.method == method)
        .or_else(|| on_resource.iter().find(|m| m.method == "ANY"))
        .copied()
        .ok_or_else(|| {
            format!(
                "the resource /{} has no {method} or ANY method",
                chosen.join("/")
            )
        })
}

/// The resolver itself, on a made-up API: what it says API Gateway does.
#[test]
fn the_resolver_picks_the_most_specific_resource_then_the_method() {
    let api: Vec<ApiMethod> = [
        ("Greedy", "/v1/{proxy+}", "ANY"),
        ("Literal", "/v1/usage", "ANY"),
        ("Param", "/v1/items/{id}", "GET"),
        ("Post", "/v1/items/{id}", "POST"),
        ("Deep", "/v1/billing/checkout", "POST"),
    ]
    .into_iter()
    .map(|(function, path, method)| ApiMethod {
        function: function.into(),
        event: function.into(),
        path: path.into(),
        method: method.into(),
    })
    .collect();
    let on = |method: &str, path: &str| resolve(&api, method, path).map(|m| m.function.as_str());
    assert_eq!(on("GET", "/v1/models"), Ok("Greedy"));
    assert_eq!(
        on("GET", "/v1/a/b/c"),
        Ok("Greedy"),
        "greedy takes the rest"
    );
    assert_eq!(on("GET", "/v1/usage"), Ok("Literal"));
    assert_eq!(on("GET", "/v1/usage/"), Ok("Literal"), "trailing slash");
    assert!(
        on("GET", "/v1/usage/summary").is_err(),
        "no backtracking to the greedy resource"
    );
    assert_eq!(on("GET", "/v1/items/{x}"), Ok("Param"));
    assert_eq!(on("POST", "/v1/items/{x}"), Ok("Post"), "the exact method");
    assert!(on("DELETE", "/v1/items/{x}").is_err(), "no method, no ANY");
    assert!(
        on("GET", "/v1/billing").is_err(),
        "an intermediate resource has no method"
    );
    assert!(
        on("GET", "/v1").is_err(),
        "a greedy segment needs one segment at least"
    );
    assert!(on("GET", "/v2/models").is_err());
    assert!(
        on("GET", "/v1/{any}").is_err(),
        "a literal sibling shadows some values"
    );
}

/// A function's Lambda app with a database that cannot be reached: enough to tell a route
/// the router serves (any answer of a handler: 401, 400, 503 ...) from one it does not
/// (the router's own 404 "no route" or 405).
fn unreachable_db_state() -> switchboard_core::state::AppState {
    let config = switchboard_core::config::Config::from_lookup(|_| None).unwrap();
    let pool = switchboard_core::db::connect_pool(
        &switchboard_core::secret::Secret::new("postgres://nobody@127.0.0.1:1/none"),
        1,
    )
    .unwrap();
    switchboard_core::state::AppState::new(config, pool)
}

/// The REST API's Lambda proxy event for `method path` on `resource`, stage `prod`,
/// converted by lambda_http as deployed (the template's
/// `AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH=true`: the event's stage-free `path` as it is).
fn rest_api_event(method: &str, path: &str, resource: &str) -> lambda_http::Request {
    rest_api_event_on_stage("prod", method, path, resource)
}

fn rest_api_event_on_stage(
    stage: &str,
    method: &str,
    path: &str,
    resource: &str,
) -> lambda_http::Request {
    switchboard_tests::lambda_events::as_deployed();
    let host = "abc123.execute-api.us-east-1.amazonaws.com";
    let event = json!({
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": {"Host": host, "X-Forwarded-Proto": "https"},
        "multiValueHeaders": {"Host": [host], "X-Forwarded-Proto": ["https"]},
        "queryStringParameters": null,
        "multiValueQueryStringParameters": null,
        "pathParameters": null,
        "stageVariables": null,
        "requestContext": {
            "accountId": "123456789012",
            "resourceId": "abc123",
            "stage": stage,
            "requestId": "c6af9ac6-7b61-11e6-9a41-93e8deadbeef",
            "identity": {"sourceIp": "203.0.113.7"},
            "resourcePath": resource,
            "httpMethod": method,
            "apiId": "abc123",
            "path": format!("/{stage}{path}"),
            "protocol": "HTTP/1.1",
            "requestTimeEpoch": 1795766400000_u64
        },
        "body": null,
        "isBase64Encoded": false
    });
    lambda_http::request::from_str(&event.to_string()).unwrap()
}

/// Finding 9 of issue 27: every route `switchboard serve` answers from the functions'
/// routers is reachable through the template's API Gateway, and lands on the function whose
/// router serves it: resolved against the `Api` events as API Gateway resolves them, then
/// sent as a REST API proxy event (in-process) to that function's Lambda app, which must
/// not answer "no route".
/// (`/healthz`, `/metrics` and `/openapi.json` are `serve`'s own, not a function's.)
#[tokio::test]
async fn every_route_of_the_functions_reaches_its_function_through_api_gateway() {
    use tower::ServiceExt as _;
    let t = template();
    let methods = api_methods(&t);
    let state = unreachable_db_state();
    let functions = [
        (
            "ChatFunction",
            switchboard_chat::route_list(),
            switchboard_chat::app(state.clone()),
        ),
        (
            "KeysFunction",
            switchboard_keys::route_list(),
            switchboard_keys::app(state.clone()),
        ),
        (
            "AdminFunction",
            switchboard_admin::route_list(),
            switchboard_admin::app(state),
        ),
    ];
    // The routers the template must serve, each seen once at least.
    for (function, routes, _) in &functions {
        assert!(routes.len() >= 2, "{function}: {routes:?}");
    }
    let paths: BTreeSet<&str> = functions
        .iter()
        .flat_map(|(_, routes, _)| routes.iter().map(|(_, p)| p.as_str()))
        .collect();
    for needed in [
        "/v1/chat/completions",
        "/v1/usage",
        "/v1/usage/summary",
        "/console",
    ] {
        assert!(
            paths.contains(needed),
            "{needed} is in no function's route list"
        );
    }

    let mut failures = Vec::new();
    for (owner, routes, _) in &functions {
        for (method, route) in routes {
            let landed = match resolve(&methods, method.as_str(), route) {
                Ok(landed) => landed,
                Err(why) => {
                    failures.push(format!("{method} {route} ({owner}): unreachable: {why}"));
                    continue;
                }
            };
            if landed.function != *owner {
                failures.push(format!(
                    "{method} {route} ({owner}): lands on {} ({} {} {})",
                    landed.function, landed.event, landed.method, landed.path
                ));
                continue;
            }
            // The REST API's proxy event for it, through lambda_http's conversion, exactly
            // as the function's Lambda main serves it.
            let (_, _, app) = functions
                .iter()
                .find(|(f, _, _)| *f == landed.function)
                .unwrap();
            let uri: String = route
                .split('/')
                .map(|s| if is_variable(s) { "sample-1" } else { s })
                .collect::<Vec<_>>()
                .join("/");
            let request = rest_api_event(method.as_str(), &uri, &landed.path);
            let response = app.clone().oneshot(request).await.unwrap();
            let status = response.status();
            let body = axum::body::to_bytes(response.into_body(), usize::MAX)
                .await
                .unwrap();
            let body = String::from_utf8_lossy(&body);
            if status == http::StatusCode::METHOD_NOT_ALLOWED
                || (status == http::StatusCode::NOT_FOUND && body.contains("no route for"))
            {
                failures.push(format!(
                    "{method} {uri}: {} does not serve it ({status} {body})",
                    landed.function
                ));
            }
        }
    }
    assert!(
        failures.is_empty(),
        "routes API Gateway does not bring to their function:\n{}",
        failures.join("\n")
    );

    // Every API method invokes one of these functions, which sees paths without the stage.
    for m in &methods {
        assert!(
            functions.iter().any(|(f, _, _)| *f == m.function),
            "{}.{}: not an HTTP function",
            m.function,
            m.event
        );
        assert_eq!(
            resources(&t)[&m.function]["Properties"]["Environment"]["Variables"]["AWS_LAMBDA_HTTP_IGNORE_STAGE_IN_PATH"],
            "true",
            "{}: the stage stays out of the path its router matches",
            m.function
        );
    }
}

/// Finding 5 of issue 33: the stage is dropped once. The template allows a stage named like
/// a route's first segment (`v1`, `admin`, `webhooks`, `console`); each of the functions'
/// routes still lands on its handler behind such a stage.
#[tokio::test]
async fn a_stage_named_like_a_route_segment_still_routes() {
    use tower::ServiceExt as _;
    let t = template();
    let pattern = t["Parameters"]["Stage"]["AllowedPattern"].as_str().unwrap();
    assert_eq!(
        pattern, "^[a-z][a-z0-9]{0,15}$",
        "v1, admin and webhooks are allowed"
    );
    let state = unreachable_db_state();
    let cases = [
        (
            "v1",
            switchboard_chat::app(state.clone()),
            "POST",
            "/v1/chat/completions",
            "/v1/{proxy+}",
        ),
        (
            "v1",
            switchboard_chat::app(state.clone()),
            "GET",
            "/v1/models",
            "/v1/{proxy+}",
        ),
        (
            "v1",
            switchboard_keys::app(state.clone()),
            "GET",
            "/v1/usage",
            "/v1/usage",
        ),
        (
            "admin",
            switchboard_admin::app(state.clone()),
            "GET",
            "/admin/providers",
            "/admin/{proxy+}",
        ),
        (
            "webhooks",
            switchboard_keys::app(state.clone()),
            "POST",
            "/webhooks/stripe",
            "/webhooks/stripe",
        ),
        (
            "console",
            switchboard_admin::app(state),
            "GET",
            "/console/",
            "/console",
        ),
    ];
    for (stage, app, method, path, resource) in cases {
        let request = rest_api_event_on_stage(stage, method, path, resource);
        assert_eq!(
            request.uri().path(),
            path,
            "stage {stage}: the router sees the path as sent"
        );
        let response = app.oneshot(request).await.unwrap();
        let status = response.status();
        let body = axum::body::to_bytes(response.into_body(), usize::MAX)
            .await
            .unwrap();
        let body = String::from_utf8_lossy(&body);
        assert!(
            status != http::StatusCode::METHOD_NOT_ALLOWED
                && !(status == http::StatusCode::NOT_FOUND && body.contains("no route for")),
            "stage {stage}: {method} {path} answered {status} {body}"
        );
    }
}

#[test]
fn health_check_runs_every_five_minutes() {
    let t = template();
    let events = &resources(&t)["HealthCheckFunction"]["Properties"]["Events"];
    let schedules: Vec<&Value> = events
        .as_object()
        .unwrap()
        .values()
        .filter(|e| e["Type"] == "Schedule")
        .collect();
    assert_eq!(schedules.len(), 1);
    assert_eq!(schedules[0]["Properties"]["Schedule"], "rate(5 minutes)");
    assert_ne!(schedules[0]["Properties"]["Enabled"], json!(false));
}

#[test]
fn kms_key_has_alias_rotation_and_a_least_privilege_policy() {
    let t = template();
    let key = &resources(&t)["ByokKey"];
    assert_eq!(key["Type"], "AWS::KMS::Key");
    assert_eq!(
        key["DeletionPolicy"], "Retain",
        "losing the key loses every BYOK key"
    );
    assert_eq!(key["Properties"]["EnableKeyRotation"], true);
    let alias = &resources(&t)["ByokKeyAlias"];
    assert_eq!(alias["Type"], "AWS::KMS::Alias");
    assert_eq!(
        alias["Properties"]["TargetKeyId"],
        json!({"Ref": "ByokKey"})
    );
    // Every function is told the key (Lambda refuses to start without one).
    assert_eq!(
        t["Globals"]["Function"]["Environment"]["Variables"]["SWITCHBOARD_KMS_KEY_ID"],
        json!({"Fn::GetAtt": ["ByokKey", "Arn"]})
    );

    let statements = key["Properties"]["KeyPolicy"]["Statement"]
        .as_array()
        .unwrap();
    let mut generate = Vec::new();
    let mut decrypt = Vec::new();
    for s in statements {
        // The optional operator statement sits in an Fn::If.
        let s = match s.get("Fn::If") {
            Some(branches) => &branches[1],
            None => s,
        };
        assert_eq!(s["Effect"], "Allow");
        let acts = actions(s);
        assert!(
            !acts.iter().any(|a| a == "kms:*"),
            "no kms:* for anyone: {s}"
        );
        let principal = s["Principal"]["AWS"].clone();
        let context_bound = || {
            let c = &s["Condition"];
            assert_eq!(
                c["ForAllValues:StringEquals"]["kms:EncryptionContextKeys"],
                json!(["user_id", "provider"]),
                "{s}"
            );
            assert_eq!(c["Null"]["kms:EncryptionContext:user_id"], "false", "{s}");
            assert_eq!(c["Null"]["kms:EncryptionContext:provider"], "false", "{s}");
        };
        if acts.iter().any(|a| a.starts_with("kms:GenerateDataKey")) {
            context_bound();
            generate.push(principal.clone());
        }
        if acts.iter().any(|a| a == "kms:Decrypt") {
            context_bound();
            decrypt.push(principal.clone());
        }
        if acts
            .iter()
            .any(|a| a.starts_with("kms:ReEncrypt") || a == "kms:Encrypt")
        {
            assert_eq!(
                s["Condition"]["ForAllValues:StringEquals"]["kms:EncryptionContextKeys"],
                json!(["user_id", "provider"])
            );
            assert_eq!(principal, json!({"Ref": "KeyOperatorRoleArn"}));
        }
        // The account root administers the key but cannot use it.
        if principal.get("Fn::Sub").is_some() {
            assert!(
                acts.iter().all(|a| !matches!(
                    a.as_str(),
                    "kms:Decrypt"
                        | "kms:Encrypt"
                        | "kms:GenerateDataKey"
                        | "kms:ReEncryptFrom"
                        | "kms:ReEncryptTo"
                ) && !a.starts_with("kms:GenerateDataKey")),
                "{s}"
            );
        }
    }
    assert_eq!(
        generate,
        vec![json!({"Fn::GetAtt": ["KeysFunctionRole", "Arn"]})]
    );
    assert_eq!(
        decrypt,
        vec![
            json!({"Fn::GetAtt": ["KeysFunctionRole", "Arn"]}),
            json!({"Fn::GetAtt": ["ChatFunctionRole", "Arn"]}),
        ]
    );
    // No IAM policy in the template grants KMS actions at all: the key policy is the gate.
    for (name, _) in of_type(&t, "AWS::IAM::Role") {
        for s in role_statements(&t, name) {
            assert!(
                actions(&s).iter().all(|a| !a.starts_with("kms:")),
                "{name}: {s}"
            );
        }
    }
}

#[test]
fn secrets_exist_hold_no_values_and_each_role_reads_only_its_own() {
    let t = template();
    let secrets = of_type(&t, "AWS::SecretsManager::Secret");
    let names: BTreeSet<&str> = secrets.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from([
            "AdminKeySecret",
            "ProviderKeysSecret",
            "DatabaseSecret",
            "LagoApiKeySecret",
            "BillingSecret"
        ])
    );
    assert_eq!(
        resources(&t)["LagoApiKeySecret"]["Properties"]["SecretString"],
        r#"{"api_key": ""}"#
    );
    assert_eq!(
        resources(&t)["AdminKeySecret"]["Properties"]["SecretString"],
        r#"{"admin_key": ""}"#
    );
    assert_eq!(
        resources(&t)["ProviderKeysSecret"]["Properties"]["SecretString"],
        "{}"
    );
    let db = &resources(&t)["DatabaseSecret"]["Properties"]["GenerateSecretString"];
    assert_eq!(
        db["GenerateStringKey"], "password",
        "generated by Secrets Manager"
    );

    // Which secret references each role may read.
    let expected: [(&str, &[&str]); 6] = [
        (
            "ChatFunctionRole",
            &[
                "DatabaseSecret",
                "ExistingDatabaseSecretArn",
                "ProviderKeysSecret",
            ],
        ),
        (
            // POST /admin/billing/export runs billing-export's pass.
            "AdminFunctionRole",
            &[
                "BillingSecret",
                "DatabaseSecret",
                "ExistingDatabaseSecretArn",
                "LagoApiKeySecret",
                "ProviderKeysSecret",
            ],
        ),
        (
            "KeysFunctionRole",
            &[
                "BillingSecret",
                "DatabaseSecret",
                "ExistingDatabaseSecretArn",
            ],
        ),
        (
            "HealthCheckFunctionRole",
            &[
                "DatabaseSecret",
                "ExistingDatabaseSecretArn",
                "ProviderKeysSecret",
            ],
        ),
        (
            "BillingExportFunctionRole",
            &[
                "BillingSecret",
                "DatabaseSecret",
                "ExistingDatabaseSecretArn",
                "LagoApiKeySecret",
            ],
        ),
        (
            "MigrateFunctionRole",
            &[
                "AdminKeySecret",
                "DatabaseSecret",
                "ExistingDatabaseSecretArn",
            ],
        ),
    ];
    for (role, secrets) in expected {
        let statements = role_statements(&t, role);
        let readable: BTreeSet<String> = statements
            .iter()
            .filter(|s| actions(s).contains(&"secretsmanager:GetSecretValue".to_owned()))
            .flat_map(|s| refs_in(&s["Resource"]))
            .collect();
        let expected: BTreeSet<String> = secrets.iter().map(|s| s.to_string()).collect();
        assert_eq!(readable, expected, "{role}");
        for s in &statements {
            assert_eq!(s["Effect"], "Allow");
            for action in actions(s) {
                assert!(!action.ends_with(":*") && action != "*", "{role}: {action}");
                if action.starts_with("secretsmanager:") || action.starts_with("logs:") {
                    assert_ne!(s["Resource"], "*", "{role}: {action} on *");
                }
                if action == "secretsmanager:PutSecretValue" {
                    assert_eq!(role, "MigrateFunctionRole");
                    assert_eq!(s["Resource"], json!({"Ref": "AdminKeySecret"}));
                }
            }
        }
    }
    // Functions are told where the secrets are, never their values.
    let env = |f: &str| resources(&t)[f]["Properties"]["Environment"]["Variables"].clone();
    assert_eq!(
        env("ChatFunction")["SWITCHBOARD_PROVIDER_KEYS_SECRET_ARN"],
        json!({"Ref": "ProviderKeysSecret"})
    );
    assert_eq!(
        env("MigrateFunction")["SWITCHBOARD_ADMIN_KEY_SECRET_ARN"],
        json!({"Ref": "AdminKeySecret"})
    );
    assert!(
        env("KeysFunction")
            .get("SWITCHBOARD_PROVIDER_KEYS_SECRET_ARN")
            .is_none()
    );
    let globals = &t["Globals"]["Function"]["Environment"]["Variables"];
    assert!(
        globals.get("DATABASE_URL").is_none() && globals.get("SWITCHBOARD_ADMIN_KEY").is_none()
    );
    assert!(refs_in(&globals["DATABASE_SECRET_ARN"]).contains("DatabaseSecret"));
}

#[test]
fn database_is_private_encrypted_and_reached_over_verified_tls_through_the_proxy() {
    let t = template();
    let db = &resources(&t)["DatabaseInstance"];
    assert_eq!(
        db["Condition"], "CreateDatabase",
        "or an existing database by parameter"
    );
    let p = &db["Properties"];
    assert_eq!(p["Engine"], "postgres");
    assert_eq!(p["PubliclyAccessible"], false);
    assert_eq!(p["StorageEncrypted"], true);
    assert_eq!(
        p["DBSubnetGroupName"],
        json!({"Ref": "DatabaseSubnetGroup"})
    );
    assert!(
        p["MasterUserPassword"]["Fn::Sub"]
            .as_str()
            .unwrap()
            .starts_with("{{resolve:secretsmanager:")
    );
    assert_eq!(
        resources(&t)["DatabaseSubnetGroup"]["Properties"]["SubnetIds"],
        json!({"Ref": "PrivateSubnetIds"})
    );
    assert_eq!(
        resources(&t)["DatabaseParameterGroup"]["Properties"]["Parameters"]["rds.force_ssl"],
        "1"
    );
    let proxy = &resources(&t)["DatabaseProxy"]["Properties"];
    assert_eq!(proxy["EngineFamily"], "POSTGRESQL");
    assert_eq!(proxy["RequireTLS"], true);
    assert_eq!(
        proxy["Auth"][0]["SecretArn"],
        json!({"Ref": "DatabaseSecret"})
    );
    assert_eq!(
        resources(&t)["DatabaseProxyTargetGroup"]["Properties"]["DBInstanceIdentifiers"],
        json!([{"Ref": "DatabaseInstance"}])
    );
    // Security groups: database from the proxy only, proxy from the functions only.
    let db_ingress = &resources(&t)["DatabaseSecurityGroup"]["Properties"]["SecurityGroupIngress"];
    assert_eq!(db_ingress.as_array().unwrap().len(), 1);
    assert_eq!(
        db_ingress[0]["SourceSecurityGroupId"],
        json!({"Ref": "ProxySecurityGroup"})
    );
    let proxy_ingress = &resources(&t)["ProxySecurityGroup"]["Properties"]["SecurityGroupIngress"];
    assert_eq!(
        proxy_ingress[0]["SourceSecurityGroupId"],
        json!({"Ref": "FunctionSecurityGroup"})
    );
    assert!(resources(&t)["FunctionSecurityGroup"]["Properties"]["SecurityGroupIngress"].is_null());

    // The functions: TLS forced, verified against the CA bundle of the layer.
    let env = &t["Globals"]["Function"]["Environment"]["Variables"];
    assert_eq!(env["SWITCHBOARD_DB_TLS"], "1");
    assert_eq!(env["SWITCHBOARD_DB_CA_FILE"], "/opt/switchboard/db-ca.pem");
    assert!(refs_in(&env["SWITCHBOARD_DB_HOST"]).contains("DatabaseProxy"));
    assert_eq!(
        t["Globals"]["Function"]["Layers"],
        json!([{"Ref": "DatabaseCaLayer"}])
    );
    let layer = &resources(&t)["DatabaseCaLayer"];
    assert_eq!(layer["Metadata"]["BuildMethod"], "makefile");
    let makefile = std::fs::read_to_string(
        switchboard_tests::moto::workspace_root().join("infra/ca-bundle/Makefile"),
    )
    .unwrap();
    assert!(makefile.contains("build-DatabaseCaLayer:"));
    assert!(makefile.contains("switchboard/db-ca.pem"));
    assert!(makefile.contains("global-bundle.pem"), "the RDS CA bundle");
}

#[test]
fn migrations_run_on_deploy_before_the_functions_change() {
    let t = template();
    let step = &resources(&t)["MigrateOnDeploy"];
    assert!(step["Type"].as_str().unwrap().starts_with("Custom::"));
    // A published version (through the alias), never $LATEST: `!GetAtt MigrateFunction.Arn`
    // is the unqualified ARN, i.e. $LATEST (issue 33, finding 2).
    assert_eq!(
        step["Properties"]["ServiceToken"],
        json!({"Ref": "MigrateFunction.Alias"})
    );
    // A new function version (new code, new migrations) means an Update, i.e. a run.
    assert_eq!(
        step["Properties"]["FunctionVersion"],
        json!({"Ref": "MigrateFunction.Version"})
    );
    assert_eq!(
        resources(&t)["MigrateFunction"]["Properties"]["AutoPublishAlias"],
        "live"
    );
    assert!(refs_in(&step["Properties"]).contains("DatabaseProxyTargetGroup"));
    for name in [
        "ChatFunction",
        "AdminFunction",
        "KeysFunction",
        "HealthCheckFunction",
        "BillingExportFunction",
    ] {
        assert_eq!(
            resources(&t)[name]["DependsOn"],
            "MigrateOnDeploy",
            "{name}"
        );
    }
}

/// The longest stream is the chat timeout less the deadline margin: every stream ends,
/// settled, before Lambda stops the function, and before its hold could expire.
#[test]
fn the_chat_timeout_bounds_streams_consistently() {
    let t = template();
    let timeout = &t["Parameters"]["ChatTimeoutSeconds"];
    let chat = &resources(&t)["ChatFunction"]["Properties"];
    assert_eq!(chat["Timeout"], json!({"Ref": "ChatTimeoutSeconds"}));
    assert_eq!(
        chat["Environment"]["Variables"]["SWITCHBOARD_MAX_STREAM_SECS"],
        json!({"Ref": "ChatTimeoutSeconds"}),
        "serve's stream limit never ends a Lambda stream before its deadline does"
    );
    let margin = switchboard_core::chat::LAMBDA_DEADLINE_MARGIN.as_secs();
    let min = timeout["MinValue"].as_u64().unwrap();
    let max = timeout["MaxValue"].as_u64().unwrap();
    let default = timeout["Default"].as_u64().unwrap();
    assert!(
        min > margin + 20,
        "a useful stream fits the shortest timeout"
    );
    assert!((min..=max).contains(&default));
    // Each value of the parameter makes a configuration the chat function accepts.
    for secs in [min, default, max] {
        let config = switchboard_core::config::Config::from_lookup(|name| {
            (name == "SWITCHBOARD_MAX_STREAM_SECS").then(|| secs.to_string())
        });
        assert!(config.is_ok(), "ChatTimeoutSeconds = {secs}: {config:?}");
    }
    assert!(
        timeout["Description"]
            .as_str()
            .unwrap()
            .contains(&format!("{margin} s")),
        "the description names the margin"
    );
}

#[test]
fn parameters_and_outputs() {
    let t = template();
    let params = t["Parameters"].as_object().unwrap();
    for p in [
        "Stage",
        "VpcId",
        "PrivateSubnetIds",
        "ExistingDatabaseSecretArn",
        "DatabaseInstanceClass",
        "DatabaseAllocatedStorage",
        "ChatMemorySize",
        "FunctionMemorySize",
        "LogRetentionDays",
    ] {
        assert!(params.contains_key(p), "parameter {p}");
    }
    assert_eq!(
        params["PrivateSubnetIds"]["Type"],
        "List<AWS::EC2::Subnet::Id>"
    );
    assert_eq!(params["ExistingDatabaseSecretArn"]["Default"], "");
    let outputs = t["Outputs"].as_object().unwrap();
    for o in [
        "ApiUrl",
        "OpenAiBaseUrl",
        "AdminUrl",
        "AdminKeySecretArn",
        "ProviderKeysSecretArn",
        "ByokKeyArn",
    ] {
        assert!(outputs.contains_key(o), "output {o}");
    }
    assert!(!outputs.contains_key("ChatFunctionUrl"), "no Function URL");
    assert!(
        outputs["ApiUrl"]["Value"]["Fn::Sub"]
            .as_str()
            .unwrap()
            .contains("${GatewayApi}.execute-api")
    );
}

/// The value a parameter takes: its default, and each end of its range when it has one.
fn parameter_values(t: &Value, name: &str) -> Vec<u64> {
    let p = &t["Parameters"][name];
    let number = |v: &Value| {
        v.as_u64()
            .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
            .unwrap()
    };
    let mut values = vec![number(&p["Default"])];
    for bound in ["MinValue", "MaxValue"] {
        if !p[bound].is_null() {
            values.push(number(&p[bound]));
        }
    }
    if let Some(allowed) = p["AllowedValues"].as_array() {
        values.extend(allowed.iter().map(number));
    }
    values
}

/// A number in the template: a literal, or every value of the parameter it refers to.
fn numbers(t: &Value, value: &Value) -> Vec<u64> {
    match value {
        Value::Number(n) => vec![n.as_u64().unwrap()],
        Value::String(s) => vec![s.parse().unwrap()],
        Value::Object(o) if o.contains_key("Ref") => {
            parameter_values(t, o["Ref"].as_str().unwrap())
        }
        other => panic!("not a number or a parameter: {other}"),
    }
}

/// Finding 1 of issue 33: every streaming route's integration waits at least as long as its
/// function may run (API Gateway's default, 29 s, would cut longer streams), at most the
/// 15 minutes stream mode allows. Checked for every value the parameters allow.
#[test]
fn every_streaming_route_waits_as_long_as_its_function_runs() {
    let t = template();
    let global_timeout = &t["Globals"]["Function"]["Timeout"];
    let mut streaming = 0;
    for (name, f) in of_type(&t, "AWS::Serverless::Function") {
        let Some(events) = f["Properties"]["Events"].as_object() else {
            continue;
        };
        for (event, e) in events {
            if e["Type"] != "Api" || e["Properties"]["ResponseTransferMode"].is_null() {
                continue;
            }
            streaming += 1;
            assert_eq!(e["Properties"]["ResponseTransferMode"], "RESPONSE_STREAM");
            let timeout = match &f["Properties"]["Timeout"] {
                Value::Null => global_timeout,
                own => own,
            };
            let longest_run = numbers(&t, timeout).into_iter().max().unwrap();
            let waits = &e["Properties"]["TimeoutInMillis"];
            assert!(
                !waits.is_null(),
                "{name}.{event}: no TimeoutInMillis (29 s default)"
            );
            for millis in numbers(&t, waits) {
                assert!(
                    millis >= longest_run * 1000,
                    "{name}.{event}: the integration gives up after {millis} ms, the function may run {longest_run} s"
                );
                assert!(
                    millis <= 900_000,
                    "{name}.{event}: {millis} ms > 15 minutes"
                );
            }
        }
    }
    assert_eq!(streaming, 1, "chat's /v1/{{proxy+}}");
}

/// Finding 3 of issue 33: a first deploy that fails after the database exists can roll
/// back (no deletion protection by default), the database secret outlives the stack like
/// the final snapshot it opens, and the default engine version is the major alone.
#[test]
fn the_database_can_roll_back_and_its_snapshot_keeps_its_password() {
    let t = template();
    let protection = &t["Parameters"]["DatabaseDeletionProtection"];
    assert_eq!(protection["Default"], "false");
    let instance = &resources(&t)["DatabaseInstance"];
    assert_eq!(
        instance["Properties"]["DeletionProtection"],
        json!({"Ref": "DatabaseDeletionProtection"})
    );
    assert_eq!(instance["DeletionPolicy"], "Snapshot");
    let secret = &resources(&t)["DatabaseSecret"];
    assert_eq!(secret["DeletionPolicy"], "Retain");
    assert_eq!(secret["UpdateReplacePolicy"], "Retain");

    let version = &t["Parameters"]["DatabaseEngineVersion"];
    assert_eq!(version["Default"], "17");
    let pattern = version["AllowedPattern"].as_str().unwrap();
    assert_eq!(pattern, "^17(\\.[0-9]+)?$");
    assert_eq!(
        resources(&t)["DatabaseParameterGroup"]["Properties"]["Family"],
        "postgres17"
    );

    // docs/deploy.md says how to turn protection on after the first deploy.
    let deploy =
        std::fs::read_to_string(switchboard_tests::moto::workspace_root().join("docs/deploy.md"))
            .unwrap();
    assert!(
        deploy.contains("DatabaseDeletionProtection=true"),
        "docs/deploy.md"
    );
}

/// Finding 6 and 7 of issue 33: `POST /admin/billing/export` has what billing-export has;
/// scheduled functions are not retried (the next run is the retry); chat's concurrency is
/// reserved from a parameter (0: none).
#[test]
fn admin_exports_like_billing_scheduled_runs_are_not_retried_and_chat_is_reserved() {
    let t = template();
    let env_of = |f: &str| resources(&t)[f]["Properties"]["Environment"]["Variables"].clone();
    let (admin, billing) = (env_of("AdminFunction"), env_of("BillingExportFunction"));
    for name in [
        "SWITCHBOARD_LAGO_API_URL",
        "SWITCHBOARD_LAGO_API_KEY_SECRET_ARN",
        "SWITCHBOARD_ALERT_WEBHOOK_URL",
        "SWITCHBOARD_BILLING_SECRETS_ARN",
    ] {
        assert!(!billing[name].is_null(), "{name}");
        assert_eq!(admin[name], billing[name], "{name}");
    }
    let reads = |role: &str| -> BTreeSet<String> {
        role_statements(&t, role)
            .iter()
            .filter(|s| actions(s).contains(&"secretsmanager:GetSecretValue".to_owned()))
            .flat_map(|s| refs_in(&s["Resource"]))
            .collect()
    };
    let admin_reads = reads("AdminFunctionRole");
    for secret in ["LagoApiKeySecret", "BillingSecret"] {
        assert!(admin_reads.contains(secret), "admin reads {secret}");
    }

    let mut scheduled = 0;
    for (name, f) in of_type(&t, "AWS::Serverless::Function") {
        let events = f["Properties"]["Events"].as_object();
        if events.is_some_and(|e| e.values().any(|e| e["Type"] == "Schedule")) {
            scheduled += 1;
            assert_eq!(
                f["Properties"]["EventInvokeConfig"]["MaximumRetryAttempts"], 0,
                "{name}: Lambda's async retries overlap the next run"
            );
        }
    }
    assert_eq!(scheduled, 2, "health-check and billing-export");

    let chat = &resources(&t)["ChatFunction"]["Properties"];
    assert_eq!(
        chat["ReservedConcurrentExecutions"],
        json!({"Fn::If": ["ReserveChatConcurrency", {"Ref": "ChatReservedConcurrency"}, {"Ref": "AWS::NoValue"}]})
    );
    assert_eq!(
        t["Conditions"]["ReserveChatConcurrency"],
        json!({"Fn::Not": [{"Fn::Equals": [{"Ref": "ChatReservedConcurrency"}, 0]}]})
    );
    let reserved = &t["Parameters"]["ChatReservedConcurrency"];
    assert_eq!(reserved["MinValue"], 0);
    // The default fits RDS Proxy's share of the default instance's connections: 2 per chat
    // instance (the Lambda pool), and some left for the other functions.
    let lambda_pool = switchboard_core::config::Config::from_lookup(|name| match name {
        "AWS_LAMBDA_RUNTIME_API" => Some("127.0.0.1:9001".to_owned()),
        "SWITCHBOARD_KMS_KEY_ID" => Some("alias/test".to_owned()),
        _ => None,
    })
    .unwrap()
    .database
    .pool_size as u64;
    assert_eq!(lambda_pool, 2);
    assert_eq!(
        t["Parameters"]["DatabaseInstanceClass"]["Default"],
        "db.t4g.micro"
    );
    let percent =
        resources(&t)["DatabaseProxyTargetGroup"]["Properties"]["ConnectionPoolConfigurationInfo"]
            ["MaxConnectionsPercent"]
            .as_u64()
            .unwrap();
    // db.t4g.micro: max_connections = 1 GiB less the OS's share / 9531392, about 80.
    let proxy_budget = 80 * percent / 100;
    let default = reserved["Default"].as_u64().unwrap();
    assert!(
        default * lambda_pool + 10 <= proxy_budget,
        "{default} chat instances"
    );
}

/// Finding 8 of issue 33: alarms on AWS's own metrics, which the app's EMF lines cannot
/// show (a crashed, timed-out or throttled function writes none): API Gateway's 5XXError,
/// each function's Lambda Errors and Throttles, RDS Proxy's pinned connections.
#[test]
fn alarms_watch_api_gateway_lambda_and_the_proxy() {
    let t = template();
    let alarms = of_type(&t, "AWS::CloudWatch::Alarm");
    let watching = |namespace: &str, metric: &str| -> Vec<&Value> {
        alarms
            .iter()
            .map(|(_, a)| &a["Properties"])
            .filter(|p| p["Namespace"] == namespace && p["MetricName"] == metric)
            .collect()
    };
    for (_, alarm) in &alarms {
        assert_eq!(
            alarm["Properties"]["AlarmActions"],
            json!({"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]})
        );
    }
    let api = watching("AWS/ApiGateway", "5XXError");
    assert_eq!(api.len(), 1);
    let dims = &api[0]["Dimensions"];
    assert_eq!(dims[0]["Name"], "ApiName");
    assert_eq!(
        dims[0]["Value"],
        resources(&t)["GatewayApi"]["Properties"]["Name"],
        "the API's name as the template sets it"
    );
    assert_eq!(dims[1], json!({"Name": "Stage", "Value": {"Ref": "Stage"}}));

    let functions: BTreeSet<String> = of_type(&t, "AWS::Serverless::Function")
        .iter()
        .map(|(n, _)| n.to_string())
        .collect();
    for metric in ["Errors", "Throttles"] {
        let watched: BTreeSet<String> = watching("AWS/Lambda", metric)
            .iter()
            .map(|p| {
                assert_eq!(p["Dimensions"][0]["Name"], "FunctionName");
                p["Dimensions"][0]["Value"]["Ref"]
                    .as_str()
                    .unwrap()
                    .to_owned()
            })
            .collect();
        assert_eq!(
            watched, functions,
            "AWS/Lambda {metric}: one alarm per function"
        );
    }

    let pinned = watching("AWS/RDS", "DatabaseConnectionsCurrentlySessionPinned");
    assert_eq!(pinned.len(), 1);
    assert_eq!(
        pinned[0]["Dimensions"],
        json!([{"Name": "ProxyName", "Value": {"Ref": "DatabaseProxy"}}])
    );
    let (name, _) = alarms
        .iter()
        .find(|(_, a)| a["Properties"]["MetricName"] == "DatabaseConnectionsCurrentlySessionPinned")
        .unwrap();
    assert_eq!(resources(&t)[name.as_str()]["Condition"], "CreateDatabase");
}

/// Finding 8 of issue 33: docs/deploy.md and infra/README.md say what the template creates
/// in numbers counted from it (one line of a fixed form in each), name every function's
/// binary and every schedule, and infra/README.md names every secret.
#[test]
fn the_docs_count_what_the_template_creates() {
    let t = template();
    let functions = of_type(&t, "AWS::Serverless::Function");
    let secrets = of_type(&t, "AWS::SecretsManager::Secret");
    let schedules: Vec<String> = functions
        .iter()
        .filter_map(|(_, f)| f["Properties"]["Events"].as_object())
        .flat_map(|events| events.values())
        .filter(|e| e["Type"] == "Schedule")
        .map(|e| e["Properties"]["Schedule"].as_str().unwrap().to_owned())
        .collect();
    let alarms = of_type(&t, "AWS::CloudWatch::Alarm").len();
    let counted = format!(
        "Counted from the template (`tests/tests/infra_template.rs` keeps these numbers in step): {} functions, {} secrets, {} schedules, {alarms} alarms.",
        functions.len(),
        secrets.len(),
        schedules.len()
    );
    let root = switchboard_tests::moto::workspace_root();
    for doc in ["docs/deploy.md", "infra/README.md"] {
        let text = std::fs::read_to_string(root.join(doc)).unwrap();
        // Line breaks are the writer's: compare with whitespace collapsed.
        let flat = text.split_whitespace().collect::<Vec<_>>().join(" ");
        assert!(flat.contains(&counted), "{doc} does not say: {counted}");
        for (name, f) in &functions {
            let binary = f["Metadata"]["BuildProperties"]["Binary"].as_str().unwrap();
            assert!(
                flat.contains(binary),
                "{doc} does not name {name} ({binary})"
            );
        }
        for schedule in &schedules {
            assert!(
                flat.contains(schedule.as_str()),
                "{doc} does not name {schedule}"
            );
        }
        if doc == "infra/README.md" {
            for (name, secret) in &secrets {
                let full = secret["Properties"]["Name"]["Fn::Sub"].as_str().unwrap();
                let short = full.trim_start_matches("${AWS::StackName}");
                assert!(
                    flat.contains(&format!("`<stack>{short}`")),
                    "{doc} does not name {name} (<stack>{short})"
                );
            }
        }
    }
}

#[test]
fn pending_charges_wait_in_an_encrypted_queue_sent_by_chat_drained_by_billing_export_and_alarmed() {
    let t = template();
    let queues = of_type(&t, "AWS::SQS::Queue");
    let names: BTreeSet<&str> = queues.iter().map(|(n, _)| n.as_str()).collect();
    assert_eq!(
        names,
        BTreeSet::from(["PendingChargesQueue", "PendingChargesDeadLetterQueue"])
    );
    let queue = &resources(&t)["PendingChargesQueue"];
    let dlq = &resources(&t)["PendingChargesDeadLetterQueue"];
    for (name, q) in [("queue", queue), ("dead-letter queue", dlq)] {
        let p = &q["Properties"];
        assert_eq!(p["SqsManagedSseEnabled"], true, "{name}: encrypted at rest");
        assert_eq!(
            p["MessageRetentionPeriod"], 1_209_600,
            "{name}: 14 days, SQS's maximum"
        );
        assert_eq!(
            q["DeletionPolicy"], "Retain",
            "{name}: charges outlive the stack"
        );
        assert!(p.get("FifoQueue").is_none(), "{name}: a standard queue");
    }
    let p = &queue["Properties"];
    let billing_timeout = resources(&t)["BillingExportFunction"]["Properties"]["Timeout"]
        .as_u64()
        .unwrap();
    assert!(
        p["VisibilityTimeout"].as_u64().unwrap() > billing_timeout,
        "a message being written is not handed to a second run"
    );
    let redrive = &p["RedrivePolicy"];
    assert_eq!(
        redrive["deadLetterTargetArn"],
        json!({"Fn::GetAtt": ["PendingChargesDeadLetterQueue", "Arn"]})
    );
    let receives = redrive["maxReceiveCount"].as_u64().unwrap();
    assert!((3..=10).contains(&receives), "{receives}");

    // Both functions are told the queue; no other function knows it.
    let queue_url = json!({"Ref": "PendingChargesQueue"});
    for (function, _) in FUNCTIONS {
        let variables = &resources(&t)[function]["Properties"]["Environment"]["Variables"];
        let told = variables.get("SWITCHBOARD_PENDING_CHARGES_QUEUE_URL");
        if ["ChatFunction", "BillingExportFunction"].contains(&function) {
            assert_eq!(told, Some(&queue_url), "{function}");
        } else {
            assert!(told.is_none(), "{function} has no business with the queue");
        }
    }
    assert!(
        t["Globals"]["Function"]["Environment"]["Variables"]
            .get("SWITCHBOARD_PENDING_CHARGES_QUEUE_URL")
            .is_none()
    );

    // Least privilege: chat only sends, billing-export only receives, deletes and reads the
    // depth, both on this queue alone; no other role touches SQS.
    let queue_arn = json!({"Fn::GetAtt": ["PendingChargesQueue", "Arn"]});
    for (role, expected) in [
        ("ChatFunctionRole", vec!["sqs:SendMessage"]),
        (
            "BillingExportFunctionRole",
            vec![
                "sqs:DeleteMessage",
                "sqs:GetQueueAttributes",
                "sqs:ReceiveMessage",
            ],
        ),
        ("AdminFunctionRole", vec![]),
        ("KeysFunctionRole", vec![]),
        ("HealthCheckFunctionRole", vec![]),
        ("MigrateFunctionRole", vec![]),
    ] {
        let mut granted = Vec::new();
        for statement in role_statements(&t, role) {
            for action in actions(&statement) {
                if action.starts_with("sqs:") {
                    assert_eq!(statement["Resource"], queue_arn, "{role}: {action}");
                    granted.push(action);
                }
            }
        }
        granted.sort();
        assert_eq!(granted, expected, "{role}");
    }

    // Alarms: a charge waiting 10 minutes, and any charge in the dead-letter queue.
    let alarm = |name: &str| resources(&t)[name]["Properties"].clone();
    let age = alarm("PendingChargesAgeAlarm");
    assert_eq!(age["Namespace"], "AWS/SQS");
    assert_eq!(age["MetricName"], "ApproximateAgeOfOldestMessage");
    assert_eq!(
        age["Dimensions"],
        json!([{"Name": "QueueName", "Value": {"Fn::GetAtt": ["PendingChargesQueue", "QueueName"]}}])
    );
    assert_eq!(age["Threshold"], 600);
    assert_eq!(age["ComparisonOperator"], "GreaterThanOrEqualToThreshold");
    assert_eq!(age["Statistic"], "Maximum");
    let dead = alarm("PendingChargesDeadLetterAlarm");
    assert_eq!(dead["Namespace"], "AWS/SQS");
    assert_eq!(dead["MetricName"], "ApproximateNumberOfMessagesVisible");
    assert_eq!(
        dead["Dimensions"],
        json!([{"Name": "QueueName", "Value": {"Fn::GetAtt": ["PendingChargesDeadLetterQueue", "QueueName"]}}])
    );
    assert_eq!(dead["Threshold"], 1);
    assert_eq!(dead["ComparisonOperator"], "GreaterThanOrEqualToThreshold");
    for a in [&age, &dead] {
        assert_eq!(
            a["AlarmActions"],
            json!({"Fn::If": ["HasAlarmTopic", [{"Ref": "AlarmTopicArn"}], {"Ref": "AWS::NoValue"}]})
        );
        assert_eq!(a["TreatMissingData"], "notBreaching");
    }
    let outputs = t["Outputs"].as_object().unwrap();
    assert_eq!(outputs["PendingChargesQueueUrl"]["Value"], queue_url);
    assert_eq!(
        outputs["PendingChargesDeadLetterQueueUrl"]["Value"],
        json!({"Ref": "PendingChargesDeadLetterQueue"})
    );
}

#[test]
fn no_secret_values_in_the_template() {
    let text = std::fs::read_to_string(
        switchboard_tests::moto::workspace_root().join("infra/template.yaml"),
    )
    .unwrap();
    for needle in [
        "sk-proj",
        "sk-ant-",
        "AKIA",
        "postgres://",
        "BEGIN PRIVATE KEY",
    ] {
        assert!(!text.contains(needle), "{needle} in the template");
    }
    // Gateway keys are only ever described (`sk-sb-...`), never written out.
    for (at, _) in text.match_indices("sk-sb-") {
        assert!(
            text[at + 6..].starts_with("..."),
            "a gateway key in the template"
        );
    }
}

/// Every `switchboard_*` name in `text`, without the histogram series' suffixes.
fn metric_names(text: &str) -> BTreeSet<String> {
    let mut names = BTreeSet::new();
    let mut rest = text;
    while let Some(at) = rest.find("switchboard_") {
        let tail = &rest[at..];
        let end = tail
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
            .unwrap_or(tail.len());
        let mut name = &tail[..end];
        for suffix in ["_bucket", "_sum", "_count"] {
            if let Some(base) = name.strip_suffix(suffix)
                && switchboard_core::metrics::ALL.contains(&base)
            {
                name = base;
            }
        }
        names.insert(name.to_string());
        rest = &tail[end..];
    }
    names
}

#[test]
fn the_dashboard_and_alarms_read_metrics_the_functions_write() {
    let t = template();
    let dashboards = of_type(&t, "AWS::CloudWatch::Dashboard");
    assert_eq!(dashboards.len(), 1);
    let body = dashboards[0].1["Properties"]["DashboardBody"]["Fn::Sub"]
        .as_str()
        .unwrap();
    // `${…}` are CloudFormation's substitutions; the rest must be the dashboard's JSON.
    let mut json_text = String::new();
    let mut rest = body;
    while let Some(at) = rest.find("${") {
        json_text.push_str(&rest[..at]);
        let close = rest[at..].find('}').unwrap();
        json_text.push_str("SUBSTITUTED");
        rest = &rest[at + close + 1..];
    }
    json_text.push_str(rest);
    let dashboard: Value = serde_json::from_str(&json_text).unwrap();
    let widgets = dashboard["widgets"].as_array().unwrap();
    assert!(widgets.len() >= 6);
    let titles: String = widgets
        .iter()
        .map(|w| w["properties"]["title"].as_str().unwrap().to_lowercase())
        .collect::<Vec<_>>()
        .join(" | ");
    for topic in [
        "requests",
        "overhead",
        "first token",
        "spend",
        "providers",
        "backlog",
    ] {
        assert!(titles.contains(topic), "no {topic} widget: {titles}");
    }

    let alarms = of_type(&t, "AWS::CloudWatch::Alarm");
    let alarm_text = serde_json::to_string(&alarms).unwrap();
    for (metric, what) in [
        ("switchboard_requests_total", "5xx rate"),
        ("switchboard_gateway_overhead_seconds", "p99 overhead"),
        (
            "switchboard_provider_auto_disables_total",
            "a provider auto-disabled",
        ),
        (
            "switchboard_billing_export_backlog_age_seconds",
            "export backlog age",
        ),
    ] {
        assert!(alarm_text.contains(metric), "no alarm on {what}");
    }
    for (name, alarm) in &alarms {
        assert!(
            alarm["Properties"]["AlarmActions"]["Fn::If"][0] == "HasAlarmTopic",
            "{name} notifies the optional topic"
        );
    }

    let grafana_path =
        switchboard_tests::moto::workspace_root().join("infra/grafana/switchboard.json");
    let grafana_text = std::fs::read_to_string(grafana_path).unwrap();
    let grafana: Value = serde_json::from_str(&grafana_text).unwrap();
    for panel in grafana["panels"].as_array().unwrap() {
        assert!(!panel["targets"].as_array().unwrap().is_empty(), "{panel}");
    }
    let used: BTreeSet<String> = metric_names(body)
        .into_iter()
        .chain(metric_names(&alarm_text))
        .chain(metric_names(&grafana_text))
        .collect();
    let unknown: Vec<&String> = used
        .iter()
        .filter(|n| !switchboard_core::metrics::ALL.contains(&n.as_str()))
        .collect();
    assert!(
        unknown.is_empty(),
        "metrics no function writes: {unknown:?}"
    );
    for needed in [
        "switchboard_requests_total",
        "switchboard_gateway_overhead_seconds",
        "switchboard_time_to_first_token_seconds",
        "switchboard_charged_usd_total",
        "switchboard_provider_enabled",
        "switchboard_billing_export_backlog",
    ] {
        assert!(used.contains(needed), "{needed} is on no dashboard");
    }
}

#[test]
fn bedrock_invoke_is_limited_to_the_listed_models_and_absent_without_them() {
    let t = template();
    let parameter = &t["Parameters"]["BedrockModelArns"];
    assert_eq!(parameter["Type"], "CommaDelimitedList");
    assert_eq!(parameter["Default"], "");
    assert_eq!(
        t["Conditions"]["HasBedrockModels"],
        json!({"Fn::Not": [{"Fn::Equals": [{"Fn::Join": ["", {"Ref": "BedrockModelArns"}]}, ""]}]})
    );
    let policies = of_type(&t, "AWS::IAM::Policy");
    let (_, policy) = policies
        .iter()
        .find(|(name, _)| name.as_str() == "BedrockInvokePolicy")
        .expect("the Bedrock policy");
    assert_eq!(policy["Condition"], "HasBedrockModels");
    let roles = &policy["Properties"]["Roles"];
    for role in ["ChatFunctionRole", "HealthCheckFunctionRole"] {
        assert!(
            roles.as_array().unwrap().contains(&json!({"Ref": role})),
            "{role}: {roles}"
        );
    }
    let statements = policy["Properties"]["PolicyDocument"]["Statement"]
        .as_array()
        .unwrap();
    assert_eq!(statements.len(), 1);
    assert_eq!(
        actions(&statements[0]),
        [
            "bedrock:InvokeModel",
            "bedrock:InvokeModelWithResponseStream"
        ]
    );
    assert_eq!(
        statements[0]["Resource"],
        json!({"Ref": "BedrockModelArns"})
    );
    // No role grants Bedrock by itself.
    for (name, _) in of_type(&t, "AWS::IAM::Role") {
        for statement in role_statements(&t, name) {
            assert!(
                !actions(&statement)
                    .iter()
                    .any(|a| a.starts_with("bedrock:")),
                "{name}"
            );
        }
    }
}
