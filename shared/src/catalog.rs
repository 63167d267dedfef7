//! The GPU catalog as Mimiry sells it: the provider's types, availability, locations and images,
//! cached in the container for a short TTL, with Mimiry's prices (provider price × markup).
//!
//! When the provider cannot answer, the last good answer is served marked `stale`; with nothing
//! cached the caller gets a clear 502 instead of a 500.

use crate::error::ApiError;
use crate::money::{Micros, MICROS_PER_UNIT};
use crate::provider::{
    GpuProvider, ImageInfo, InstanceTypeInfo, LocationAvailability, LocationInfo, ProviderError,
};
use crate::time::{now_ms, Millis};
use std::collections::HashMap;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::sync::Mutex;

/// A catalog answer and how fresh it is.
#[derive(Debug, Clone)]
pub struct Fresh<T> {
    pub value: T,
    /// True when the provider failed and this is the last good answer.
    pub stale: bool,
    pub fetched_at: Millis,
}

struct Slot<T> {
    value: T,
    at: Instant,
    fetched_at: Millis,
}

/// One cached answer per key, refreshed after the TTL.
struct Cache<T> {
    slots: Mutex<HashMap<String, Slot<T>>>,
}

impl<T: Clone> Cache<T> {
    fn new() -> Self {
        Cache {
            slots: Mutex::new(HashMap::new()),
        }
    }

    /// The lock is held across the fetch on purpose: concurrent requests in one container wait
    /// for one provider call instead of each making their own.
    async fn get<F, Fut>(&self, key: &str, ttl: Duration, fetch: F) -> Result<Fresh<T>, ApiError>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = Result<T, ProviderError>>,
    {
        let mut slots = self.slots.lock().await;
        if let Some(slot) = slots.get(key) {
            if slot.at.elapsed() < ttl {
                return Ok(Fresh {
                    value: slot.value.clone(),
                    stale: false,
                    fetched_at: slot.fetched_at,
                });
            }
        }
        match fetch().await {
            Ok(value) => {
                let fetched_at = now_ms();
                slots.insert(
                    key.to_string(),
                    Slot {
                        value: value.clone(),
                        at: Instant::now(),
                        fetched_at,
                    },
                );
                Ok(Fresh {
                    value,
                    stale: false,
                    fetched_at,
                })
            }
            Err(e) => {
                tracing::warn!(error = %e, key, "provider catalog call failed");
                match slots.get(key) {
                    Some(slot) => Ok(Fresh {
                        value: slot.value.clone(),
                        stale: true,
                        fetched_at: slot.fetched_at,
                    }),
                    None => Err(ApiError::provider_unavailable(&e)),
                }
            }
        }
    }
}

pub struct Catalog {
    provider: Arc<dyn GpuProvider>,
    ttl: Duration,
    markup: Micros,
    types: Cache<Vec<InstanceTypeInfo>>,
    availability: Cache<Vec<LocationAvailability>>,
    locations: Cache<Vec<LocationInfo>>,
    images: Cache<Vec<ImageInfo>>,
}

impl Catalog {
    pub fn new(provider: Arc<dyn GpuProvider>, ttl: Duration, markup: Micros) -> Catalog {
        Catalog {
            provider,
            ttl,
            markup,
            types: Cache::new(),
            availability: Cache::new(),
            locations: Cache::new(),
            images: Cache::new(),
        }
    }

    pub fn provider(&self) -> &Arc<dyn GpuProvider> {
        &self.provider
    }

    /// Mimiry's price for a provider price, rounded up to the micro.
    pub fn price(&self, provider_price: Micros) -> Micros {
        provider_price.mul_div_ceil(self.markup.0, MICROS_PER_UNIT)
    }

    pub async fn instance_types(&self) -> Result<Fresh<Vec<InstanceTypeInfo>>, ApiError> {
        self.types
            .get("", self.ttl, || self.provider.instance_types())
            .await
    }

    pub async fn availability(&self) -> Result<Fresh<Vec<LocationAvailability>>, ApiError> {
        self.availability
            .get("", self.ttl, || self.provider.availability(None))
            .await
    }

    pub async fn locations(&self) -> Result<Fresh<Vec<LocationInfo>>, ApiError> {
        self.locations
            .get("", self.ttl, || self.provider.locations())
            .await
    }

    pub async fn images(
        &self,
        instance_type: Option<&str>,
    ) -> Result<Fresh<Vec<ImageInfo>>, ApiError> {
        let key = instance_type.unwrap_or("");
        self.images
            .get(key, self.ttl, || self.provider.images(instance_type))
            .await
    }

    /// The type, or a 400 naming it.
    pub async fn instance_type(&self, name: &str) -> Result<InstanceTypeInfo, ApiError> {
        self.instance_types()
            .await?
            .value
            .into_iter()
            .find(|t| t.instance_type == name)
            .ok_or_else(|| {
                ApiError::validation(
                    "instance_type",
                    format!("Unknown instance_type `{name}`: see GET /instances"),
                )
            })
    }

    /// Locations where `instance_type` has capacity now, in the provider's order.
    pub async fn locations_with(&self, instance_type: &str) -> Result<Vec<String>, ApiError> {
        Ok(Self::having(
            self.availability().await?.value,
            instance_type,
        ))
    }

    /// Locations with spot capacity for `instance_type` (none at a provider without spot).
    pub async fn spot_locations_with(&self, instance_type: &str) -> Result<Vec<String>, ApiError> {
        let spot = self
            .availability
            .get("spot", self.ttl, || self.provider.spot_availability())
            .await?;
        Ok(Self::having(spot.value, instance_type))
    }

    fn having(list: Vec<LocationAvailability>, instance_type: &str) -> Vec<String> {
        list.into_iter()
            .filter(|l| l.instance_types.iter().any(|t| t == instance_type))
            .map(|l| l.location_code)
            .collect()
    }
}
