//! The providers in use: one [`GpuProvider`] per enabled provider, in order of preference
//! (configuration: `PROVIDERS`). Code that knows which provider it deals with asks by id
//! ([`ProviderRegistry::get`]); provider names are never parsed out of ids.

use super::GpuProvider;
use std::sync::Arc;

#[derive(Clone)]
pub struct ProviderRegistry {
    providers: Vec<Arc<dyn GpuProvider>>,
}

impl ProviderRegistry {
    /// `providers` in order of preference; ids must be distinct (a later duplicate is dropped)
    /// and there must be at least one.
    pub fn new(providers: Vec<Arc<dyn GpuProvider>>) -> ProviderRegistry {
        let mut unique: Vec<Arc<dyn GpuProvider>> = Vec::with_capacity(providers.len());
        for p in providers {
            if unique.iter().any(|u| u.id() == p.id()) {
                tracing::warn!(
                    provider = p.id(),
                    "provider configured twice; using the first"
                );
            } else {
                unique.push(p);
            }
        }
        assert!(!unique.is_empty(), "a provider registry needs a provider");
        ProviderRegistry { providers: unique }
    }

    /// Every enabled provider, in order of preference.
    pub fn all(&self) -> &[Arc<dyn GpuProvider>] {
        &self.providers
    }

    /// The provider with this id, if enabled.
    pub fn get(&self, id: &str) -> Option<&Arc<dyn GpuProvider>> {
        self.providers.iter().find(|p| p.id() == id)
    }

    /// The most preferred provider (among equally priced places, jobs go here first).
    pub fn primary(&self) -> &Arc<dyn GpuProvider> {
        &self.providers[0]
    }

    pub fn ids(&self) -> Vec<&'static str> {
        self.providers.iter().map(|p| p.id()).collect()
    }
}

impl std::fmt::Debug for ProviderRegistry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ProviderRegistry")
            .field("providers", &self.ids())
            .finish()
    }
}
