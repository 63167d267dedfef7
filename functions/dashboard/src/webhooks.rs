//! The Webhooks pages: list, add (the secret shown once), one endpoint with its delivery log,
//! delete with confirmation. Registering and finding go through `mimiry_shared::webhooks`, as
//! the API does, so the checks (SSRF, events, limit) and messages are the same.

use crate::views::{when, Chrome};
use crate::web::{DashError, Flash, Out, Req};
use crate::{page, App, Visitor};
use askama::Template;
use http::StatusCode;
use mimiry_shared::error::ApiError;
use mimiry_shared::routes::RouteName;
use mimiry_shared::store::webhooks::{Delivery, Endpoint};
use mimiry_shared::webhooks::{self, EventType};

/// Deliveries shown on an endpoint's page.
const RECENT_DELIVERIES: i32 = 50;

pub struct EndpointRow {
    pub id: String,
    pub url: String,
    pub events: String,
    pub description: String,
    pub state: &'static str,
    pub created: String,
}

impl EndpointRow {
    fn of(e: &Endpoint) -> EndpointRow {
        EndpointRow {
            id: e.endpoint_id.clone(),
            url: e.url.clone(),
            events: e.events.0.join(", "),
            description: e.description.clone().unwrap_or_default(),
            state: match (e.disabled_at, e.failing_since) {
                (Some(_), _) => "disabled",
                (None, Some(_)) => "failing",
                (None, None) => "active",
            },
            created: when(e.created_at),
        }
    }
}

pub struct DeliveryRow {
    pub at: String,
    pub event: String,
    pub job_id: String,
    pub attempt: u32,
    pub status: String,
    pub latency: String,
    pub outcome: String,
    pub error: String,
}

impl DeliveryRow {
    fn of(d: &Delivery) -> DeliveryRow {
        DeliveryRow {
            at: when(d.at),
            event: d.event.clone(),
            job_id: d.job_id.clone(),
            attempt: d.attempt,
            status: d
                .status_code
                .map(|s| s.to_string())
                .unwrap_or_else(|| "—".into()),
            latency: format!("{} ms", d.latency_ms),
            outcome: d.outcome.clone(),
            error: d.error.clone().unwrap_or_default(),
        }
    }
}

/// One event type's checkbox on the form.
pub struct EventBox {
    pub value: &'static str,
    pub id: String,
    pub checked: bool,
}

fn event_boxes(checked: &[&str]) -> Vec<EventBox> {
    std::iter::once("*")
        .chain(EventType::ALL.map(EventType::as_str))
        .map(|value| EventBox {
            value,
            id: format!("event-{}", value.replace(['.', '*'], "-").trim_matches('-')),
            checked: checked.contains(&value),
        })
        .map(|mut b| {
            if b.value == "*" {
                b.id = "event-all".into();
            }
            b
        })
        .collect()
}

#[derive(Template)]
#[template(path = "webhooks.html")]
pub struct WebhooksPage {
    pub c: Chrome,
    pub endpoints: Vec<EndpointRow>,
}

#[derive(Template)]
#[template(path = "webhook_new.html")]
pub struct NewWebhookPage {
    pub c: Chrome,
    pub url: String,
    pub description: String,
    pub events: Vec<EventBox>,
}

#[derive(Template)]
#[template(path = "webhook_created.html")]
pub struct CreatedWebhookPage {
    pub c: Chrome,
    pub endpoint: EndpointRow,
    pub secret: String,
}

#[derive(Template)]
#[template(path = "webhook.html")]
pub struct WebhookPage {
    pub c: Chrome,
    pub endpoint: EndpointRow,
    pub deliveries: Vec<DeliveryRow>,
}

#[derive(Template)]
#[template(path = "webhook_delete.html")]
pub struct DeleteWebhookPage {
    pub c: Chrome,
    pub endpoint: EndpointRow,
}

pub async fn handle(
    app: &App,
    req: &Req,
    v: &Visitor,
    account_id: &str,
    mut c: Chrome,
    name: RouteName,
) -> Result<Out, DashError> {
    use RouteName::*;
    match name {
        DashWebhooks => {
            let all = app.store.list_webhooks(account_id).await?;
            Ok(page(
                StatusCode::OK,
                &WebhooksPage {
                    c,
                    endpoints: all.iter().map(EndpointRow::of).collect(),
                },
            ))
        }
        DashNewWebhook => {
            c.title = "Add webhook endpoint";
            Ok(page(
                StatusCode::OK,
                &NewWebhookPage {
                    c,
                    url: String::new(),
                    description: String::new(),
                    events: event_boxes(&["*"]),
                },
            ))
        }
        DashAddWebhook => {
            c.title = "Add webhook endpoint";
            let (url, description) = (req.field("url"), req.field("description"));
            let events: Vec<String> = req.fields("events").iter().map(|e| e.to_string()).collect();
            let result = webhooks::register(
                &app.store,
                &app.webhook_config,
                account_id,
                url,
                &events,
                Some(description.to_string()),
            )
            .await;
            match result {
                Ok((endpoint, secret)) => {
                    c.title = "Your new webhook endpoint";
                    Ok(page(
                        StatusCode::OK,
                        &CreatedWebhookPage {
                            c,
                            endpoint: EndpointRow::of(&endpoint),
                            secret: secret.expose().to_string(),
                        },
                    ))
                }
                Err(e @ ApiError::Internal(_)) => Err(e.into()),
                Err(e) => {
                    c.error = Some(e.to_string());
                    let checked: Vec<&str> = events.iter().map(String::as_str).collect();
                    Ok(page(
                        e.status(),
                        &NewWebhookPage {
                            c,
                            url: url.to_string(),
                            description: description.to_string(),
                            events: event_boxes(&checked),
                        },
                    ))
                }
            }
        }
        DashWebhook => {
            let endpoint = webhooks::find(&app.store, account_id, req.param("id")).await?;
            let deliveries = app
                .store
                .recent_webhook_deliveries(&endpoint.endpoint_id, RECENT_DELIVERIES)
                .await?;
            c.title = "Webhook endpoint";
            Ok(page(
                StatusCode::OK,
                &WebhookPage {
                    c,
                    endpoint: EndpointRow::of(&endpoint),
                    deliveries: deliveries.iter().map(DeliveryRow::of).collect(),
                },
            ))
        }
        DashDeleteWebhookPage => {
            let endpoint = webhooks::find(&app.store, account_id, req.param("id")).await?;
            c.title = "Delete webhook endpoint";
            Ok(page(
                StatusCode::OK,
                &DeleteWebhookPage {
                    c,
                    endpoint: EndpointRow::of(&endpoint),
                },
            ))
        }
        DashDeleteWebhook => {
            let endpoint = webhooks::find(&app.store, account_id, req.param("id")).await?;
            app.store
                .delete_webhook(account_id, &endpoint.endpoint_id)
                .await?;
            Ok(Out::redirect("/dashboard/webhooks").flash(Flash::WebhookDeleted, v.secure))
        }
        _ => Err(DashError::Api(ApiError::RouteNotFound)),
    }
}
