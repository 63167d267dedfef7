//! The events Lambda hands each function: API Gateway HTTP API (payload v2) requests, SQS
//! batches, the EventBridge schedule.

use serde_json::{json, Value};

/// An HTTP API v2 request as API Gateway sends it for `route_key` (e.g. `GET /jobs/{id}`).
pub fn http(method: &str, path: &str, route_key: &str, key: &str, body: Option<&Value>) -> Value {
    let mut headers = json!({
        "authorization": format!("Bearer {key}"),
        "host": "api.mimiry.local",
        "user-agent": "mimiry-bench",
        "x-forwarded-proto": "https",
        "x-forwarded-port": "443",
    });
    if body.is_some() {
        headers["content-type"] = json!("application/json");
    }
    let mut path_parameters = serde_json::Map::new();
    for (template, actual) in route_key
        .split_once(' ')
        .map_or("", |r| r.1)
        .split('/')
        .zip(path.split('/'))
    {
        if let Some(name) = template.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
            path_parameters.insert(name.to_string(), json!(actual));
        }
    }
    let mut event = json!({
        "version": "2.0",
        "routeKey": route_key,
        "rawPath": path,
        "rawQueryString": "",
        "headers": headers,
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "bench",
            "domainName": "api.mimiry.local",
            "domainPrefix": "api",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "127.0.0.1",
                "userAgent": "mimiry-bench"
            },
            "requestId": "bench-request",
            "routeKey": route_key,
            "stage": "$default",
            "time": "01/Jan/2026:00:00:00 +0000",
            "timeEpoch": 1767225600000u64
        },
        "isBase64Encoded": false
    });
    if !path_parameters.is_empty() {
        event["pathParameters"] = Value::Object(path_parameters);
    }
    if let Some(body) = body {
        event["body"] = json!(body.to_string());
    }
    event
}

/// An SQS batch of job references, as the event-source mapping delivers it.
pub fn sqs(job_refs: &[(String, String)], queue_arn: &str) -> Value {
    let records: Vec<Value> = job_refs
        .iter()
        .enumerate()
        .map(|(i, (account_id, job_id))| {
            json!({
                "messageId": format!("bench-message-{i}-{job_id}"),
                "receiptHandle": format!("bench-receipt-{i}"),
                "body": json!({"account_id": account_id, "job_id": job_id}).to_string(),
                "attributes": {
                    "ApproximateReceiveCount": "1",
                    "SentTimestamp": "1767225600000",
                    "SenderId": "bench",
                    "ApproximateFirstReceiveTimestamp": "1767225600000"
                },
                "messageAttributes": {},
                "md5OfBody": "",
                "eventSource": "aws:sqs",
                "eventSourceARN": queue_arn,
                "awsRegion": "us-east-1"
            })
        })
        .collect();
    json!({ "Records": records })
}

/// The reconciler's `rate(1 minute)` schedule event.
pub fn schedule() -> Value {
    json!({
        "version": "0",
        "id": "bench-schedule",
        "detail-type": "Scheduled Event",
        "source": "aws.events",
        "account": "123456789012",
        "time": "2026-01-01T00:00:00Z",
        "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/mimiry-reconcile"],
        "detail": {}
    })
}

/// Status code of an HTTP function's answer (API Gateway v2 response).
pub fn status_of(answer: &Value) -> u16 {
    answer["statusCode"].as_u64().unwrap_or(0) as u16
}
