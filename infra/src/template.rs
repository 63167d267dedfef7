//! Reads `template.yaml`, the deployable truth, so the local stack serves the same routes and
//! creates the same table and queues as AWS would.

use anyhow::{anyhow, Context, Result};
use serde_yaml::Value;
use std::collections::BTreeSet;
use std::path::Path;

pub struct Template {
    root: Value,
}

/// A route as the template declares it: `GET /jobs/{id}` served by `jobs`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct TemplateRoute {
    pub method: String,
    pub path: String,
    pub function: String,
}

impl Template {
    pub fn load(path: &Path) -> Result<Template> {
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let root: Value = serde_yaml::from_str(&text).context("parsing template.yaml")?;
        Ok(Template { root })
    }

    /// Finds `template.yaml` in the current directory or its ancestors.
    pub fn find() -> Result<Template> {
        let mut dir = std::env::current_dir()?;
        loop {
            let candidate = dir.join("template.yaml");
            if candidate.exists() {
                return Template::load(&candidate);
            }
            if !dir.pop() {
                return Err(anyhow!(
                    "template.yaml not found in this directory or above"
                ));
            }
        }
    }

    pub fn resource(&self, logical_id: &str) -> Result<&Value> {
        self.root
            .get("Resources")
            .and_then(|r| r.get(logical_id))
            .ok_or_else(|| anyhow!("template.yaml has no resource {logical_id}"))
    }

    pub fn properties(&self, logical_id: &str) -> Result<&Value> {
        self.resource(logical_id)?
            .get("Properties")
            .ok_or_else(|| anyhow!("{logical_id} has no Properties"))
    }

    /// Every HttpApi route of every function, with the function named after its binary
    /// (`mimiry-ssh-keys` → `ssh-keys`).
    pub fn routes(&self) -> Result<BTreeSet<TemplateRoute>> {
        let mut routes = BTreeSet::new();
        let resources = self
            .root
            .get("Resources")
            .and_then(Value::as_mapping)
            .ok_or_else(|| anyhow!("template.yaml has no Resources"))?;
        for (id, resource) in resources {
            if resource.get("Type").and_then(Value::as_str) != Some("AWS::Serverless::Function") {
                continue;
            }
            let binary = resource
                .get("Metadata")
                .and_then(|m| m.get("BuildProperties"))
                .and_then(|b| b.get("Binary"))
                .and_then(Value::as_str)
                .ok_or_else(|| anyhow!("{id:?} has no BuildProperties.Binary"))?;
            let function = binary.strip_prefix("mimiry-").unwrap_or(binary).to_string();
            let events = resource
                .get("Properties")
                .and_then(|p| p.get("Events"))
                .and_then(Value::as_mapping);
            for (_, event) in events.into_iter().flatten() {
                if event.get("Type").and_then(Value::as_str) != Some("HttpApi") {
                    continue;
                }
                let props = event.get("Properties");
                let field = |name: &str| {
                    props
                        .and_then(|p| p.get(name))
                        .and_then(Value::as_str)
                        .map(str::to_string)
                        .ok_or_else(|| anyhow!("an HttpApi event of {id:?} has no {name}"))
                };
                routes.insert(TemplateRoute {
                    method: field("Method")?.to_uppercase(),
                    path: field("Path")?,
                    function: function.clone(),
                });
            }
        }
        Ok(routes)
    }
}

/// The routes of the shared route table as API Gateway declares them (`HEAD` beside `GET`).
pub fn shared_routes() -> BTreeSet<TemplateRoute> {
    mimiry_shared::routes::gateway_routes()
        .map(|(method, path, function)| TemplateRoute {
            method: method.to_string(),
            path: path.to_string(),
            function: function.to_string(),
        })
        .collect()
}

/// Fails unless template.yaml and the shared route table declare exactly the same routes.
pub fn check_routes(template: &Template) -> Result<()> {
    let declared = template.routes()?;
    let shared = shared_routes();
    if declared != shared {
        let missing: Vec<_> = shared.difference(&declared).collect();
        let extra: Vec<_> = declared.difference(&shared).collect();
        return Err(anyhow!(
            "template.yaml and shared::routes disagree; not in template: {missing:?}; not in route table: {extra:?}"
        ));
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_routes_are_the_route_table() {
        let template =
            Template::load(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../template.yaml"))
                .unwrap();
        check_routes(&template).unwrap();
    }
}
