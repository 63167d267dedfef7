//! What can be rented: `GET /instances`, `/availability`, `/locations`, `/images`, `/providers`
//! (scope `instances:read`). Answers come from the container's catalog cache; when the provider
//! is down the last good answer is served with `"stale": true`.

use lambda_http::{Body, Request, Response};
use mimiry_shared::aws::AwsClients;
use mimiry_shared::catalog::{Catalog, Fresh};
use mimiry_shared::config::Config;
use mimiry_shared::error::ApiError;
use mimiry_shared::http::{Reply, RequestCtx};
use mimiry_shared::lambda::HttpFunction;
use mimiry_shared::provider::InstanceTypeInfo;
use mimiry_shared::routes::RouteName;
use mimiry_shared::store::Store;
use mimiry_shared::time::rfc3339;
use mimiry_shared::wiring;
use serde_json::{json, Value};

pub const FUNCTION: &str = "catalog";

pub struct App {
    pub store: Store,
    pub catalog: Catalog,
}

impl HttpFunction for App {
    fn new(clients: &AwsClients, config: &Config) -> App {
        App {
            store: wiring::store(clients, config),
            catalog: wiring::catalog(wiring::provider(clients, config), config),
        }
    }
    async fn handle(&self, request: Request) -> Response<Body> {
        handle(self, request).await
    }
}

pub async fn handle(app: &App, request: Request) -> Response<Body> {
    let ctx = match RequestCtx::begin(request, FUNCTION, &app.store).await {
        Ok(ctx) => ctx,
        Err(response) => return response,
    };
    let result = match ctx.route() {
        RouteName::ListInstanceTypes => list_instance_types(app).await,
        RouteName::GetAvailability => availability(app, &ctx).await,
        RouteName::ListLocations => list_locations(app).await,
        RouteName::ListImages => list_images(app, &ctx).await,
        RouteName::ListProviders => list_providers(app).await,
        _ => Err(ApiError::RouteNotFound),
    };
    ctx.finish(result)
}

/// `{ "<name>": [...], "stale": bool, "as_of": time }`
fn listing<T>(name: &str, fresh: &Fresh<T>, items: Vec<Value>) -> Reply {
    Reply::ok(json!({ name: items, "stale": fresh.stale, "as_of": rfc3339(fresh.fetched_at) }))
}

fn instance_type_view(catalog: &Catalog, t: &InstanceTypeInfo) -> Value {
    json!({
        "instance_type": t.instance_type,
        "description": t.description,
        "price_per_hour": catalog.price(t.price_per_hour).to_string(),
        "currency": "USD",
        "gpu": { "description": t.gpu_description, "count": t.gpu_count, "memory_gb": t.gpu_memory_gb },
        "cpu": { "description": t.cpu_description, "cores": t.cpu_cores },
        "memory_gb": t.memory_gb,
        "storage": { "description": t.storage_description, "size_gb": t.storage_gb },
        "provider": catalog.provider().id(),
    })
}

async fn list_instance_types(app: &App) -> Result<Reply, ApiError> {
    let types = app.catalog.instance_types().await?;
    let items = types
        .value
        .iter()
        .map(|t| instance_type_view(&app.catalog, t))
        .collect();
    Ok(listing("instances", &types, items))
}

async fn availability(app: &App, ctx: &RequestCtx) -> Result<Reply, ApiError> {
    let wanted_type = ctx.query("instance_type");
    let wanted_location = ctx.query("location");
    // Filters must name real things: a typo should not look like "no capacity".
    if let Some(t) = &wanted_type {
        app.catalog.instance_type(t).await?;
    }
    if let Some(l) = &wanted_location {
        let known = app
            .catalog
            .locations()
            .await?
            .value
            .iter()
            .any(|loc| &loc.code == l);
        if !known {
            return Err(ApiError::validation(
                "location",
                format!("Unknown location `{l}`: see GET /locations"),
            ));
        }
    }
    let availability = app.catalog.availability().await?;
    let items = availability
        .value
        .iter()
        .filter(|a| wanted_location.as_ref().is_none_or(|l| &a.location_code == l))
        .map(|a| {
            let types: Vec<&String> = a
                .instance_types
                .iter()
                .filter(|t| wanted_type.as_ref().is_none_or(|w| *t == w))
                .collect();
            json!({ "location": a.location_code, "instance_types": types, "provider": app.catalog.provider().id() })
        })
        .collect();
    Ok(listing("availability", &availability, items))
}

async fn list_locations(app: &App) -> Result<Reply, ApiError> {
    let locations = app.catalog.locations().await?;
    let items = locations
        .value
        .iter()
        .map(|l| json!({ "code": l.code, "name": l.name, "country_code": l.country_code, "provider": app.catalog.provider().id() }))
        .collect();
    Ok(listing("locations", &locations, items))
}

async fn list_images(app: &App, ctx: &RequestCtx) -> Result<Reply, ApiError> {
    let instance_type = ctx.query("instance_type");
    if let Some(t) = &instance_type {
        app.catalog.instance_type(t).await?;
    }
    let images = app.catalog.images(instance_type.as_deref()).await?;
    let items = images
        .value
        .iter()
        .map(|i| {
            json!({
                "id": i.id,
                "name": i.name,
                "image_type": i.image_type,
                "details": i.details,
                "is_default": i.is_default,
            })
        })
        .collect();
    Ok(listing("images", &images, items))
}

/// One provider today; its status reflects whether its catalog answers.
async fn list_providers(app: &App) -> Result<Reply, ApiError> {
    let provider = app.catalog.provider();
    let status = match app.catalog.locations().await {
        Ok(fresh) if !fresh.stale => "operational",
        Ok(_) => "degraded",
        Err(_) => "unavailable",
    };
    Ok(Reply::ok(json!({
        "providers": [{ "id": provider.id(), "name": provider.name(), "status": status }]
    })))
}
