//! HTTP front door standing in for API Gateway: turns each request into the `lambda_http`
//! request a function receives and its response back.

use super::functions::Functions;
use axum::body::{to_bytes, Body as AxumBody};
use axum::extract::{Request as AxumRequest, State};
use axum::response::Response as AxumResponse;
use lambda_http::Body;
use mimiry_shared::error::ApiError;
use mimiry_shared::http::render_error;
use mimiry_shared::routes::match_route;
use std::sync::Arc;

/// API Gateway HTTP APIs accept payloads up to 10 MB; the functions apply their own, smaller
/// limit with a clear error.
const GATEWAY_BODY_LIMIT: usize = 10 * 1024 * 1024;

/// Local-only path (not an API route, absent in AWS): counters for the chaos test.
pub const STATS_PATH: &str = "/__local/stats";

pub fn router(functions: Arc<Functions>) -> axum::Router {
    axum::Router::new()
        .route(STATS_PATH, axum::routing::get(stats))
        .fallback(dispatch)
        .with_state(functions)
}

async fn stats() -> axum::Json<serde_json::Value> {
    let (messages, duplicates) = super::event_source::delivery_counts();
    axum::Json(serde_json::json!({
        "messages": messages,
        "duplicate_deliveries": duplicates,
        "reconciler": super::event_source::reconciler_totals(),
        "simulated_crashes": mimiry_shared::chaos::crashes(),
    }))
}

async fn dispatch(State(functions): State<Arc<Functions>>, request: AxumRequest) -> AxumResponse {
    let (parts, body) = request.into_parts();
    let request_id = uuid::Uuid::new_v4().to_string();
    let response = match to_bytes(body, GATEWAY_BODY_LIMIT).await {
        Err(_) => render_error(
            &ApiError::PayloadTooLarge {
                limit: GATEWAY_BODY_LIMIT,
            },
            &request_id,
        ),
        Ok(bytes) => {
            let body = if bytes.is_empty() {
                Body::Empty
            } else {
                match String::from_utf8(bytes.to_vec()) {
                    Ok(text) => Body::Text(text),
                    Err(e) => Body::Binary(e.into_bytes()),
                }
            };
            let lambda_request = http::Request::from_parts(parts, body);
            // Unknown paths and methods are answered like the functions would answer them.
            match match_route(
                lambda_request.method().as_str(),
                lambda_request.uri().path(),
            ) {
                Err(e) => render_error(&e, &request_id),
                Ok(matched) => match functions.call(matched.route.function, lambda_request).await {
                    Some(response) => response,
                    None => render_error(&ApiError::RouteNotFound, &request_id),
                },
            }
        }
    };
    let (parts, body) = response.into_parts();
    let bytes: Vec<u8> = match body {
        Body::Empty => Vec::new(),
        Body::Text(t) => t.into_bytes(),
        Body::Binary(b) => b,
        _ => Vec::new(),
    };
    AxumResponse::from_parts(parts, AxumBody::from(bytes))
}
