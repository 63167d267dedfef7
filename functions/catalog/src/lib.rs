//! What can be rented: `GET /instances`, `/availability`, `/locations`, `/images`, `/providers`
//! (scope `instances:read`), across every enabled provider, each item naming its `provider`.
//! Answers come from the container's catalog caches (one per provider); when a provider is down
//! its last good answer is served and the listing says `"stale": true`.

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
use mimiry_shared::time::{rfc3339, Millis};
use mimiry_shared::wiring;
use serde_json::{json, Value};
use std::future::Future;

pub const FUNCTION: &str = "catalog";

pub struct App {
    pub store: Store,
    /// One per enabled provider, in order of preference.
    pub catalogs: Vec<Catalog>,
}

impl HttpFunction for App {
    fn new(clients: &AwsClients, config: &Config) -> App {
        let registry = wiring::providers(clients, config);
        App {
            store: wiring::store(clients, config),
            catalogs: wiring::catalogs(&registry, config),
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
        RouteName::ListInstanceTypes => list_instance_types(app, &ctx).await,
        RouteName::GetAvailability => availability(app, &ctx).await,
        RouteName::ListLocations => list_locations(app).await,
        RouteName::ListImages => list_images(app, &ctx).await,
        RouteName::ListProviders => list_providers(app).await,
        _ => Err(ApiError::RouteNotFound),
    };
    ctx.finish(result)
}

/// One answer from every provider's catalog: stale when any part is (or a provider could not
/// answer at all while others could), as of the oldest part. Only when no provider answers is
/// it an error (the first one).
struct Merged<T> {
    parts: Vec<(usize, T)>,
    stale: bool,
    fetched_at: Millis,
}

async fn merged<'a, T, F, Fut>(app: &'a App, fetch: F) -> Result<Merged<T>, ApiError>
where
    F: Fn(usize, &'a Catalog) -> Fut,
    Fut: Future<Output = Result<Fresh<T>, ApiError>>,
{
    let mut parts = Vec::new();
    let mut stale = false;
    let mut fetched_at: Option<Millis> = None;
    let mut first_error = None;
    for (i, catalog) in app.catalogs.iter().enumerate() {
        match fetch(i, catalog).await {
            Ok(fresh) => {
                stale |= fresh.stale;
                fetched_at = Some(fetched_at.map_or(fresh.fetched_at, |t| t.min(fresh.fetched_at)));
                parts.push((i, fresh.value));
            }
            Err(e) => {
                stale = true;
                first_error.get_or_insert(e);
            }
        }
    }
    match (fetched_at, first_error) {
        (Some(fetched_at), _) => Ok(Merged {
            parts,
            stale,
            fetched_at,
        }),
        (None, Some(e)) => Err(e),
        (None, None) => Err(ApiError::Internal("no provider is enabled".into())),
    }
}

/// `{ "<name>": [...], "stale": bool, "as_of": time }`
fn listing(name: &str, stale: bool, fetched_at: Millis, items: Vec<Value>) -> Reply {
    Reply::ok(json!({ name: items, "stale": stale, "as_of": rfc3339(fetched_at) }))
}

fn instance_type_view(catalog: &Catalog, t: &InstanceTypeInfo) -> Value {
    json!({
        "instance_type": t.instance_type,
        "description": t.description,
        "price_per_hour": catalog.price(t.price_per_hour).to_string(),
        // Interruptible capacity (issue 15), marked up like on-demand; null where not sold.
        "spot_price": t.spot_price.map(|p| catalog.price(p).to_string()),
        "currency": "USD",
        "gpu": { "description": t.gpu_description, "count": t.gpu_count, "memory_gb": t.gpu_memory_gb, "model": t.gpu_model() },
        "cpu": { "description": t.cpu_description, "cores": t.cpu_cores },
        "memory_gb": t.memory_gb,
        "storage": { "description": t.storage_description, "size_gb": t.storage_gb },
        "provider": catalog.provider().id(),
    })
}

/// The Mimiry-wide GPU filter of `GET /instances`: `gpu` (model, any case, e.g. `A100`) and
/// `gpu_count`, across providers whatever their type names.
struct GpuFilter {
    model: Option<String>,
    count: Option<u32>,
}

impl GpuFilter {
    fn from(ctx: &RequestCtx) -> Result<GpuFilter, ApiError> {
        let count =
            match ctx.query("gpu_count") {
                None => None,
                Some(c) => Some(c.trim().parse::<u32>().ok().filter(|n| *n > 0).ok_or_else(
                    || {
                        ApiError::validation(
                            "gpu_count",
                            "gpu_count must be a positive whole number",
                        )
                    },
                )?),
            };
        Ok(GpuFilter {
            model: ctx
                .query("gpu")
                .map(|m| m.trim().to_string())
                .filter(|m| !m.is_empty()),
            count,
        })
    }

    fn matches(&self, t: &InstanceTypeInfo) -> bool {
        self.model
            .as_ref()
            .is_none_or(|m| t.gpu_model().is_some_and(|g| g.eq_ignore_ascii_case(m)))
            && self.count.is_none_or(|c| t.gpu_count == c)
    }
}

async fn list_instance_types(app: &App, ctx: &RequestCtx) -> Result<Reply, ApiError> {
    let filter = GpuFilter::from(ctx)?;
    let types = merged(app, |_, c| c.instance_types()).await?;
    let items = types
        .parts
        .iter()
        .flat_map(|(i, list)| {
            let catalog = &app.catalogs[*i];
            list.iter()
                .filter(|t| filter.matches(t))
                .map(move |t| instance_type_view(catalog, t))
        })
        .collect();
    Ok(listing("instances", types.stale, types.fetched_at, items))
}

async fn availability(app: &App, ctx: &RequestCtx) -> Result<Reply, ApiError> {
    let wanted_type = ctx.query("instance_type");
    let wanted_location = ctx.query("location");
    // Filters must name real things: a typo should not look like "no capacity".
    if let Some(t) = &wanted_type {
        let types = merged(app, |_, c| c.instance_types()).await?;
        if !types
            .parts
            .iter()
            .any(|(_, l)| l.iter().any(|x| &x.instance_type == t))
        {
            return Err(ApiError::validation(
                "instance_type",
                format!("Unknown instance_type `{t}`: see GET /instances"),
            ));
        }
    }
    if let Some(l) = &wanted_location {
        let locations = merged(app, |_, c| c.locations()).await?;
        if !locations
            .parts
            .iter()
            .any(|(_, ls)| ls.iter().any(|loc| &loc.code == l))
        {
            return Err(ApiError::validation(
                "location",
                format!("Unknown location `{l}`: see GET /locations"),
            ));
        }
    }
    let availability = merged(app, |_, c| c.availability()).await?;
    let items = availability
        .parts
        .iter()
        .flat_map(|(i, list)| {
            let provider = app.catalogs[*i].provider().id();
            let wanted_type = &wanted_type;
            list.iter()
                .filter(|a| wanted_location.as_ref().is_none_or(|l| &a.location_code == l))
                .map(move |a| {
                    let types: Vec<&String> = a
                        .instance_types
                        .iter()
                        .filter(|t| wanted_type.as_ref().is_none_or(|w| *t == w))
                        .collect();
                    json!({ "location": a.location_code, "instance_types": types, "provider": provider })
                })
        })
        .collect();
    Ok(listing(
        "availability",
        availability.stale,
        availability.fetched_at,
        items,
    ))
}

async fn list_locations(app: &App) -> Result<Reply, ApiError> {
    let locations = merged(app, |_, c| c.locations()).await?;
    let items = locations
        .parts
        .iter()
        .flat_map(|(i, list)| {
            let provider = app.catalogs[*i].provider().id();
            list.iter().map(move |l| {
                json!({ "code": l.code, "name": l.name, "country_code": l.country_code, "provider": provider })
            })
        })
        .collect();
    Ok(listing(
        "locations",
        locations.stale,
        locations.fetched_at,
        items,
    ))
}

async fn list_images(app: &App, ctx: &RequestCtx) -> Result<Reply, ApiError> {
    let instance_type = ctx.query("instance_type");
    // With a type, only the providers that sell it are asked (an unknown type is a 400).
    let mut sellers: Vec<bool> = vec![true; app.catalogs.len()];
    if let Some(t) = &instance_type {
        let types = merged(app, |_, c| c.instance_types()).await?;
        sellers = vec![false; app.catalogs.len()];
        for (i, list) in &types.parts {
            sellers[*i] = list.iter().any(|x| &x.instance_type == t);
        }
        if !sellers.iter().any(|s| *s) {
            return Err(ApiError::validation(
                "instance_type",
                format!("Unknown instance_type `{t}`: see GET /instances"),
            ));
        }
    }
    let images = merged(app, |index, c| {
        let ask = sellers[index];
        let instance_type = instance_type.clone();
        async move {
            if ask {
                c.images(instance_type.as_deref()).await
            } else {
                Ok(Fresh {
                    value: Vec::new(),
                    stale: false,
                    fetched_at: mimiry_shared::time::now_ms(),
                })
            }
        }
    })
    .await?;
    let items = images
        .parts
        .iter()
        .flat_map(|(i, list)| {
            let provider = app.catalogs[*i].provider().id();
            list.iter().map(move |i| {
                json!({
                    "id": i.id,
                    "name": i.name,
                    "image_type": i.image_type,
                    "details": i.details,
                    "is_default": i.is_default,
                    "provider": provider,
                })
            })
        })
        .collect();
    Ok(listing("images", images.stale, images.fetched_at, items))
}

/// Every enabled provider; its status reflects whether its catalog answers.
async fn list_providers(app: &App) -> Result<Reply, ApiError> {
    let mut providers = Vec::new();
    for catalog in &app.catalogs {
        let provider = catalog.provider();
        let status = match catalog.locations().await {
            Ok(fresh) if !fresh.stale => "operational",
            Ok(_) => "degraded",
            Err(_) => "unavailable",
        };
        providers.push(json!({ "id": provider.id(), "name": provider.name(), "status": status }));
    }
    Ok(Reply::ok(json!({ "providers": providers })))
}
