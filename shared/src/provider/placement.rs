//! Where a job may run: the (provider, location, instance type, price) candidates the lifecycle
//! picks from (see `docs/decisions.md`, "Placement across providers").
//!
//! Type names are each provider's own. A job names one type (of one provider); it may run as
//! that type at any of its provider's locations with capacity or — unless the user named a
//! provider or a location — as an **equivalent** type at another enabled provider: the same
//! GPU model and count ([`InstanceTypeInfo::gpu_model`], `gpu_count`), at that provider's
//! Mimiry price, where the job's image can run. The lifecycle takes the cheapest untried one.

use super::InstanceTypeInfo;
use crate::catalog::Catalog;
use crate::error::ApiError;
use serde::{Deserialize, Serialize};

/// One place a job can be deployed now.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Placement {
    pub provider: String,
    pub location: String,
    /// The provider's type name there.
    pub instance_type: String,
    /// Mimiry's price for it, per hour.
    pub price_per_hour_micros: i64,
}

/// Whether `b` can stand in for `a`: the same GPU model (case-insensitive) and count, and no
/// less GPU memory when both say (an 80 GB A100 job must not land on a 40 GB one). CPU-only
/// types have no equivalents.
pub fn equivalent(a: &InstanceTypeInfo, b: &InstanceTypeInfo) -> bool {
    a.gpu_count > 0
        && a.gpu_count == b.gpu_count
        && matches!((a.gpu_model(), b.gpu_model()),
            (Some(x), Some(y)) if x.eq_ignore_ascii_case(y))
        && match (a.gpu_memory_gb, b.gpu_memory_gb) {
            (Some(need), Some(has)) => has >= need,
            _ => true,
        }
}

/// The catalog of provider `id` among `catalogs`.
pub fn catalog_of<'a>(catalogs: &'a [Catalog], id: &str) -> Option<&'a Catalog> {
    catalogs.iter().find(|c| c.provider().id() == id)
}

/// The type `name` as sold by `provider`, or by the first provider (in order of preference)
/// that sells it when none is named; a 400 naming `instance_type` otherwise.
pub async fn find_type<'a>(
    catalogs: &'a [Catalog],
    name: &str,
    provider: Option<&str>,
) -> Result<(&'a Catalog, InstanceTypeInfo), ApiError> {
    let mut first_error = None;
    for catalog in catalogs {
        if provider.is_some_and(|p| p != catalog.provider().id()) {
            continue;
        }
        match catalog.instance_types().await {
            Ok(types) => {
                if let Some(t) = types.value.into_iter().find(|t| t.instance_type == name) {
                    return Ok((catalog, t));
                }
            }
            Err(e) => {
                first_error.get_or_insert(e);
            }
        }
    }
    Err(match (provider, first_error) {
        (_, Some(e)) => e,
        (Some(p), None) => ApiError::validation(
            "instance_type",
            format!("instance_type `{name}` is not sold by provider `{p}`: see GET /instances?provider={p}"),
        ),
        (None, None) => ApiError::validation(
            "instance_type",
            format!("Unknown instance_type `{name}`: see GET /instances"),
        ),
    })
}

/// Whether `image` can run on `instance_type` at the provider of `catalog`: a provider whose
/// launches always run one image of its own ([`GpuProvider::image_is_fixed`]) runs any job.
async fn runs_image(catalog: &Catalog, instance_type: &str, image: &str) -> bool {
    if catalog.provider().image_is_fixed() {
        return true;
    }
    catalog
        .images(Some(instance_type))
        .await
        .map(|i| {
            i.value
                .iter()
                .any(|i| i.image_type == image || i.id == image)
        })
        .unwrap_or(false)
}

/// What a job needs to know of its placement candidates.
pub struct Wanted<'a> {
    /// The type named, and its provider.
    pub provider: &'a str,
    pub instance_type: &'a str,
    pub image: &'a str,
    /// Only the named type at its provider (a provider or location was asked for); otherwise
    /// equivalents at other providers too.
    pub pinned: bool,
    /// Spot capacity (issue 15): only the named type at its provider (spot is not sold alike
    /// elsewhere), where it has spot capacity, at its spot price.
    pub spot: bool,
}

/// Every placement with capacity now, in the catalogs' order (providers by preference, each
/// provider's locations in its own order). A provider that cannot answer adds none.
pub async fn candidates(catalogs: &[Catalog], wanted: &Wanted<'_>) -> Vec<Placement> {
    let Some(home) = catalog_of(catalogs, wanted.provider) else {
        return Vec::new();
    };
    let named = match home.instance_types().await {
        Ok(types) => types
            .value
            .into_iter()
            .find(|t| t.instance_type == wanted.instance_type),
        Err(_) => None,
    };
    let mut out = Vec::new();
    for catalog in catalogs {
        let id = catalog.provider().id();
        let types: Vec<InstanceTypeInfo> = if id == wanted.provider {
            named.iter().cloned().collect()
        } else if wanted.pinned || wanted.spot {
            continue;
        } else {
            let Some(named) = &named else { continue };
            match catalog.instance_types().await {
                Ok(all) => all
                    .value
                    .into_iter()
                    .filter(|t| equivalent(named, t))
                    .collect(),
                Err(_) => continue,
            }
        };
        for t in types {
            if id != wanted.provider && !runs_image(catalog, &t.instance_type, wanted.image).await {
                continue;
            }
            // Capacity changes quickly: a stale cached answer is still better than none.
            let (locations, price) = if wanted.spot {
                let Some(spot_price) = t.spot_price else {
                    continue;
                };
                let locations = catalog.spot_locations_with(&t.instance_type).await;
                (locations, catalog.price(spot_price).0)
            } else {
                let locations = catalog.locations_with(&t.instance_type).await;
                (locations, catalog.price(t.price_per_hour).0)
            };
            let locations = locations.unwrap_or_default();
            out.extend(locations.into_iter().map(|location| Placement {
                provider: id.to_string(),
                location,
                instance_type: t.instance_type.clone(),
                price_per_hour_micros: price,
            }));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::money::Micros;

    fn t(description: &str, count: u32, memory: Option<u32>) -> InstanceTypeInfo {
        InstanceTypeInfo {
            instance_type: "t".into(),
            description: String::new(),
            price_per_hour: Micros(1),
            spot_price: None,
            gpu_description: description.into(),
            gpu_count: count,
            gpu_memory_gb: memory,
            cpu_description: String::new(),
            cpu_cores: 1,
            memory_gb: None,
            storage_description: String::new(),
            storage_gb: None,
        }
    }

    #[test]
    fn equivalents_have_the_same_gpu_and_count_and_no_less_memory() {
        let dc = t("8x A100 SXM4 80GB", 8, Some(640));
        let lambda = t("8x A100", 8, Some(640));
        assert!(equivalent(&dc, &lambda) && equivalent(&lambda, &dc));
        // Fewer GPUs, another model, less memory, a CPU type: not the same.
        assert!(!equivalent(&dc, &t("1x A100", 1, Some(80))));
        assert!(!equivalent(&dc, &t("8x H100", 8, Some(640))));
        let small = t("1x A100", 1, Some(40));
        let big = t("1x A100 SXM4 80GB", 1, Some(80));
        assert!(!equivalent(&big, &small));
        assert!(equivalent(&small, &big));
        assert!(!equivalent(&t("", 0, None), &t("", 0, None)));
        // Memory unknown on either side: model and count decide.
        assert!(equivalent(
            &t("1x V100", 1, None),
            &t("1x Tesla V100", 1, Some(16))
        ));
    }
}
