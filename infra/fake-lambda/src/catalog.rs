//! The static Lambda Cloud catalog: instance types (names, prices in cents, specs) and the
//! regions where each has capacity.
//!
//! Names follow Lambda's scheme (`gpu_{count}x_{model}[_{variant}]`) and descriptions its
//! `"{count}x {model} ({memory} GB {form})"` shape, which is what a client has to parse for the
//! GPU model and count (the v1.4.0 OpenAPI document has no GPU fields in `specs`). The data is
//! shaped for tests, not a copy of today's price list:
//! - GPUs DataCrunch's fake does not sell (A10, GH200), so a job can only land here;
//! - an 8x A100 both providers sell, at a different price, for placement by price;
//! - capacity differs per region, and one type is listed with capacity nowhere.
//!
//! Each type carries the `fake_datacrunch` hardware description its instances are created
//! with, so execute mode's `nvidia-smi` shim prints the right GPUs.

use fake_datacrunch::catalog::{Arch, InstanceType};
use serde_json::{json, Value};

/// A Lambda region (`{"name", "description"}` on the wire).
#[derive(Debug, Clone, Copy)]
pub struct Region {
    pub name: &'static str,
    pub description: &'static str,
}

pub const REGIONS: &[Region] = &[
    Region {
        name: "us-east-1",
        description: "Virginia, USA",
    },
    Region {
        name: "us-west-1",
        description: "California, USA",
    },
    Region {
        name: "us-south-1",
        description: "Texas, USA",
    },
    Region {
        name: "europe-central-1",
        description: "Germany",
    },
];

pub fn region(name: &str) -> Option<&'static Region> {
    REGIONS.iter().find(|r| r.name == name)
}

impl Region {
    pub fn to_json(&self) -> Value {
        json!({ "name": self.name, "description": self.description })
    }
}

/// One Lambda instance type.
#[derive(Debug, Clone, Copy)]
pub struct LambdaType {
    /// What instances of this type are made of (the name is the Lambda name).
    pub hw: InstanceType,
    pub price_cents_per_hour: u64,
    /// e.g. `1x A10 (24 GB PCIe)`.
    pub description: &'static str,
    /// Regions with capacity now.
    pub regions: &'static [&'static str],
}

const fn hw(
    name: &'static str,
    arch: Arch,
    model: &'static str,
    smi_name: &'static str,
    // (count, GB per GPU)
    (gpus, gpu_memory_per_gpu_gb): (u32, u32),
    // (vCPUs, RAM GiB, storage GiB)
    (cores, memory_gb, storage_gb): (u32, u32, u32),
) -> InstanceType {
    InstanceType {
        id: name,
        instance_type: name,
        // Not used by this fake (prices are the cents below); kept parseable.
        price_per_hour: "0",
        spot_price: "0",
        dynamic_price: "0",
        arch,
        model,
        gpu_name: model,
        smi_name,
        gpus,
        gpu_memory_per_gpu_gb,
        cores,
        memory_gb,
        storage_gb: Some(storage_gb),
        p2p: None,
        best_for: &[],
        max_power_w: 300,
    }
}

pub const TYPES: &[LambdaType] = &[
    LambdaType {
        hw: hw(
            "gpu_1x_a10",
            Arch::Ampere,
            "A10",
            "NVIDIA A10",
            (1, 24),
            (30, 200, 1400),
        ),
        price_cents_per_hour: 75,
        description: "1x A10 (24 GB PCIe)",
        regions: &["us-east-1", "us-west-1"],
    },
    LambdaType {
        hw: hw(
            "gpu_1x_a100_sxm4",
            Arch::Ampere,
            "A100",
            "NVIDIA A100-SXM4-40GB",
            (1, 40),
            (30, 200, 512),
        ),
        price_cents_per_hour: 129,
        description: "1x A100 (40 GB SXM4)",
        regions: &["us-east-1", "us-south-1"],
    },
    LambdaType {
        hw: hw(
            "gpu_8x_a100_80gb_sxm4",
            Arch::Ampere,
            "A100",
            "NVIDIA A100-SXM4-80GB",
            (8, 80),
            (240, 1800, 20480),
        ),
        // Dearer than DataCrunch's 8A100.80G (15.12): a job for it tries DataCrunch first.
        price_cents_per_hour: 1599,
        description: "8x A100 (80 GB SXM4)",
        regions: &["us-south-1"],
    },
    LambdaType {
        hw: hw(
            "gpu_1x_gh200",
            Arch::Hopper,
            "GH200",
            "NVIDIA GH200 480GB",
            (1, 96),
            (64, 432, 4096),
        ),
        price_cents_per_hour: 149,
        description: "1x GH200 (96 GB)",
        regions: &["us-east-1", "europe-central-1"],
    },
    LambdaType {
        hw: hw(
            "gpu_1x_h100_pcie",
            Arch::Hopper,
            "H100",
            "NVIDIA H100 PCIe",
            (1, 80),
            (26, 200, 1024),
        ),
        price_cents_per_hour: 249,
        description: "1x H100 (80 GB PCIe)",
        regions: &["us-west-1"],
    },
    LambdaType {
        hw: hw(
            "gpu_8x_v100",
            Arch::Volta,
            "V100",
            "Tesla V100-SXM2-16GB",
            (8, 16),
            (88, 448, 5800),
        ),
        price_cents_per_hour: 440,
        description: "8x Tesla V100 (16 GB)",
        // Listed, sold out everywhere.
        regions: &[],
    },
];

pub fn instance_type(name: &str) -> Option<&'static LambdaType> {
    TYPES.iter().find(|t| t.hw.instance_type == name)
}

impl LambdaType {
    pub fn name(&self) -> &'static str {
        self.hw.instance_type
    }

    pub fn has_capacity_in(&self, region: &str) -> bool {
        self.regions.contains(&region)
    }

    /// The `instance_type` object (`instanceType` in the OpenAPI document).
    pub fn to_json(&self) -> Value {
        json!({
            "name": self.name(),
            "description": self.description,
            "price_cents_per_hour": self.price_cents_per_hour,
            "specs": {
                "vcpus": self.hw.cores,
                "memory_gib": self.hw.memory_gb,
                "storage_gib": self.hw.storage_gb.unwrap_or(0),
            },
        })
    }

    /// One value of `GET /instance-types`'s `data` map.
    pub fn listing_json(&self) -> Value {
        let regions: Vec<Value> = self
            .regions
            .iter()
            .filter_map(|r| region(r))
            .map(Region::to_json)
            .collect();
        json!({
            "instance_type": self.to_json(),
            "regions_with_capacity_available": regions,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_is_consistent() {
        for t in TYPES {
            for r in t.regions {
                assert!(region(r).is_some(), "{} lists unknown region {r}", t.name());
            }
            // The description starts with the GPU count the name has: clients parse either.
            let count = t.description.split('x').next().unwrap();
            assert_eq!(count.parse::<u32>().unwrap(), t.hw.gpus, "{}", t.name());
            assert!(t.name().starts_with(&format!("gpu_{}x_", t.hw.gpus)));
        }
        assert!(TYPES.iter().any(|t| t.regions.is_empty()));
    }
}
