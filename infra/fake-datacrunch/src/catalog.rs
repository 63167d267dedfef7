//! The static catalog: instance types, locations, images and per-location availability.
//!
//! The data is fixed (ids included) so tests and the local stack can rely on it across restarts.
//! It is shaped to exercise the interesting paths of a client rather than to mirror today's
//! real price list:
//! - availability differs per location (no H100 in FIN-02/FIN-03 for the 8x, no V100 in ICE-01),
//!   and spot inventory is a separate, smaller table, so "offers = types × locations" is not a
//!   full cross product;
//! - image compatibility is not trivial: CPU types get no CUDA image, Volta (V100) cannot use the
//!   NVIDIA open kernel module images, Hopper (H100) cannot use CUDA 11.0, cluster images fit no
//!   single instance.

use serde_json::{json, Value};

/// GPU architecture, which drives image compatibility.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Arch {
    Cpu,
    Volta,
    Ampere,
    Hopper,
}

/// One instance type of the catalog.
#[derive(Debug, Clone, Copy)]
pub struct InstanceType {
    pub id: &'static str,
    pub instance_type: &'static str,
    /// On-demand price per hour in USD, as the API's decimal string.
    pub price_per_hour: &'static str,
    pub spot_price: &'static str,
    pub dynamic_price: &'static str,
    pub arch: Arch,
    /// Short model name (`H100`); empty for CPU types.
    pub model: &'static str,
    /// The per-GPU marketing name used in descriptions (`H100 SXM5 80GB`).
    pub gpu_name: &'static str,
    /// What `nvidia-smi` calls it (`NVIDIA H100 80GB HBM3`).
    pub smi_name: &'static str,
    pub gpus: u32,
    pub gpu_memory_per_gpu_gb: u32,
    pub cores: u32,
    pub memory_gb: u32,
    /// `None` = the API's `{"description": "dynamic"}` storage.
    pub storage_gb: Option<u32>,
    pub p2p: Option<&'static str>,
    pub best_for: &'static [&'static str],
    pub max_power_w: u32,
}

pub const INSTANCE_TYPES: &[InstanceType] = &[
    InstanceType {
        id: "4a7ed3f1-0b1c-4c71-9a10-5b2a4f0c1001",
        instance_type: "1V100.6V",
        price_per_hour: "0.89",
        spot_price: "0.36",
        dynamic_price: "0.62",
        arch: Arch::Volta,
        model: "V100",
        gpu_name: "Tesla V100 16GB",
        smi_name: "Tesla V100-SXM2-16GB",
        gpus: 1,
        gpu_memory_per_gpu_gb: 16,
        cores: 6,
        memory_gb: 23,
        storage_gb: None,
        p2p: None,
        best_for: &["Small inference", "Prototyping"],
        max_power_w: 300,
    },
    InstanceType {
        id: "4a7ed3f1-0b1c-4c71-9a10-5b2a4f0c1002",
        instance_type: "2V100.10V",
        price_per_hour: "1.78",
        spot_price: "0.72",
        dynamic_price: "1.24",
        arch: Arch::Volta,
        model: "V100",
        gpu_name: "Tesla V100 16GB",
        smi_name: "Tesla V100-SXM2-16GB",
        gpus: 2,
        gpu_memory_per_gpu_gb: 16,
        cores: 10,
        memory_gb: 45,
        storage_gb: None,
        p2p: Some("300 GB/s"),
        best_for: &["Inference", "Fine-tuning"],
        max_power_w: 300,
    },
    InstanceType {
        id: "4a7ed3f1-0b1c-4c71-9a10-5b2a4f0c1003",
        instance_type: "4V100.20V",
        price_per_hour: "3.56",
        spot_price: "1.44",
        dynamic_price: "2.48",
        arch: Arch::Volta,
        model: "V100",
        gpu_name: "Tesla V100 16GB",
        smi_name: "Tesla V100-SXM2-16GB",
        gpus: 4,
        gpu_memory_per_gpu_gb: 16,
        cores: 20,
        memory_gb: 90,
        storage_gb: None,
        p2p: Some("300 GB/s"),
        best_for: &["Fine-tuning", "Training"],
        max_power_w: 300,
    },
    InstanceType {
        id: "4a7ed3f1-0b1c-4c71-9a10-5b2a4f0c1004",
        instance_type: "8V100.48V",
        price_per_hour: "7.12",
        spot_price: "2.86",
        dynamic_price: "4.96",
        arch: Arch::Volta,
        model: "V100",
        gpu_name: "Tesla V100 16GB",
        smi_name: "Tesla V100-SXM2-16GB",
        gpus: 8,
        gpu_memory_per_gpu_gb: 16,
        cores: 48,
        memory_gb: 180,
        storage_gb: None,
        p2p: Some("300 GB/s"),
        best_for: &["Training"],
        max_power_w: 300,
    },
    InstanceType {
        id: "4a7ed3f1-0b1c-4c71-9a10-5b2a4f0c1005",
        instance_type: "1A100.80S.22V",
        price_per_hour: "1.89",
        spot_price: "0.72",
        dynamic_price: "1.29",
        arch: Arch::Ampere,
        model: "A100",
        gpu_name: "A100 SXM4 80GB",
        smi_name: "NVIDIA A100-SXM4-80GB",
        gpus: 1,
        gpu_memory_per_gpu_gb: 80,
        cores: 22,
        memory_gb: 120,
        storage_gb: None,
        p2p: None,
        best_for: &["Inference", "Fine-tuning"],
        max_power_w: 400,
    },
    InstanceType {
        id: "4a7ed3f1-0b1c-4c71-9a10-5b2a4f0c1006",
        instance_type: "8A100.80G",
        price_per_hour: "15.12",
        spot_price: "5.76",
        dynamic_price: "10.32",
        arch: Arch::Ampere,
        model: "A100",
        gpu_name: "A100 SXM4 80GB",
        smi_name: "NVIDIA A100-SXM4-80GB",
        gpus: 8,
        gpu_memory_per_gpu_gb: 80,
        cores: 176,
        memory_gb: 960,
        storage_gb: Some(7680),
        p2p: Some("600 GB/s"),
        best_for: &["Large model training"],
        max_power_w: 400,
    },
    InstanceType {
        id: "4a7ed3f1-0b1c-4c71-9a10-5b2a4f0c1007",
        instance_type: "1H100.80S.30V",
        price_per_hour: "3.95",
        spot_price: "1.58",
        dynamic_price: "2.65",
        arch: Arch::Hopper,
        model: "H100",
        gpu_name: "H100 SXM5 80GB",
        smi_name: "NVIDIA H100 80GB HBM3",
        gpus: 1,
        gpu_memory_per_gpu_gb: 80,
        cores: 30,
        memory_gb: 120,
        storage_gb: None,
        p2p: None,
        best_for: &["Inference", "Fine-tuning", "Training"],
        max_power_w: 700,
    },
    InstanceType {
        id: "4a7ed3f1-0b1c-4c71-9a10-5b2a4f0c1008",
        instance_type: "8H100.80S.176V",
        price_per_hour: "31.60",
        spot_price: "12.64",
        dynamic_price: "21.20",
        arch: Arch::Hopper,
        model: "H100",
        gpu_name: "H100 SXM5 80GB",
        smi_name: "NVIDIA H100 80GB HBM3",
        gpus: 8,
        gpu_memory_per_gpu_gb: 80,
        cores: 176,
        memory_gb: 1480,
        storage_gb: Some(7680),
        p2p: Some("900 GB/s"),
        best_for: &["Large model training", "Distributed training"],
        max_power_w: 700,
    },
    InstanceType {
        id: "4a7ed3f1-0b1c-4c71-9a10-5b2a4f0c1009",
        instance_type: "CPU.4V.16G",
        price_per_hour: "0.12",
        spot_price: "0.05",
        dynamic_price: "0.08",
        arch: Arch::Cpu,
        model: "",
        gpu_name: "",
        smi_name: "",
        gpus: 0,
        gpu_memory_per_gpu_gb: 0,
        cores: 4,
        memory_gb: 16,
        storage_gb: None,
        p2p: None,
        best_for: &["Data preparation", "CI"],
        max_power_w: 0,
    },
    InstanceType {
        id: "4a7ed3f1-0b1c-4c71-9a10-5b2a4f0c1010",
        instance_type: "CPU.8V.32G",
        price_per_hour: "0.24",
        spot_price: "0.10",
        dynamic_price: "0.16",
        arch: Arch::Cpu,
        model: "",
        gpu_name: "",
        smi_name: "",
        gpus: 0,
        gpu_memory_per_gpu_gb: 0,
        cores: 8,
        memory_gb: 32,
        storage_gb: None,
        p2p: None,
        best_for: &["Data preparation"],
        max_power_w: 0,
    },
];

pub fn instance_type(name: &str) -> Option<&'static InstanceType> {
    INSTANCE_TYPES.iter().find(|t| t.instance_type == name)
}

impl InstanceType {
    pub fn is_cpu(&self) -> bool {
        self.arch == Arch::Cpu
    }

    /// The price actually billed for an instance of this type.
    pub fn hourly_price(&self, is_spot: bool) -> f64 {
        let s = if is_spot {
            self.spot_price
        } else {
            self.price_per_hour
        };
        s.parse().unwrap_or(0.0)
    }

    /// The nested `cpu`, `gpu`, `gpu_memory`, `memory`, `storage` objects, shared by the
    /// instance-type listing and the instance object.
    pub fn hardware_json(&self) -> serde_json::Map<String, Value> {
        let mut m = serde_json::Map::new();
        m.insert(
            "cpu".into(),
            json!({
                "description": format!("{} CPU", self.cores),
                "number_of_cores": self.cores,
            }),
        );
        let gpu_desc = if self.gpus == 0 {
            String::new()
        } else {
            format!("{}x {}", self.gpus, self.gpu_name)
        };
        m.insert(
            "gpu".into(),
            json!({ "description": gpu_desc, "number_of_gpus": self.gpus }),
        );
        let vram = self.gpus * self.gpu_memory_per_gpu_gb;
        m.insert(
            "gpu_memory".into(),
            json!({
                "description": if vram == 0 { String::new() } else { format!("{vram} GB GPU RAM") },
                "size_in_gigabytes": vram,
            }),
        );
        m.insert(
            "memory".into(),
            json!({
                "description": format!("{} GB RAM", self.memory_gb),
                "size_in_gigabytes": self.memory_gb,
            }),
        );
        m.insert(
            "storage".into(),
            match self.storage_gb {
                Some(gb) => {
                    json!({ "description": format!("{gb} GB NVMe"), "size_in_gigabytes": gb })
                }
                None => json!({ "description": "dynamic" }),
            },
        );
        m
    }

    /// One element of `GET /instance-types`. `rate` converts the USD prices (1.0 for USD).
    pub fn to_json(&self, currency: &str, rate: f64) -> Value {
        let price = |s: &str| -> String {
            let usd: f64 = s.parse().unwrap_or(0.0);
            format!("{:.2}", usd * rate)
        };
        let description = if self.gpus == 0 {
            format!("Dedicated CPU instance, {} vCPU", self.cores)
        } else {
            format!("Dedicated {}x {} instance", self.gpus, self.gpu_name)
        };
        let name = if self.gpus == 0 {
            format!("CPU Node {}", self.cores)
        } else {
            self.gpu_name.to_string()
        };
        let mut m = serde_json::Map::new();
        m.insert("id".into(), json!(self.id));
        m.insert("instance_type".into(), json!(self.instance_type));
        m.insert("price_per_hour".into(), json!(price(self.price_per_hour)));
        m.insert("spot_price".into(), json!(price(self.spot_price)));
        m.insert("dynamic_price".into(), json!(price(self.dynamic_price)));
        m.insert(
            "max_dynamic_price".into(),
            json!(price(self.price_per_hour)),
        );
        // No serverless prices: the fields are optional and, when present, strings.
        m.insert("description".into(), json!(description));
        m.extend(self.hardware_json());
        m.insert(
            "model".into(),
            json!(if self.gpus == 0 { "CPU" } else { self.model }),
        );
        m.insert("name".into(), json!(name));
        m.insert(
            "display_name".into(),
            json!(if self.gpus == 0 {
                format!("{} vCPU", self.cores)
            } else {
                format!("{}x {}", self.gpus, self.model)
            }),
        );
        m.insert(
            "manufacturer".into(),
            json!(if self.gpus == 0 { "AMD" } else { "NVIDIA" }),
        );
        m.insert("currency".into(), json!(currency));
        m.insert("best_for".into(), json!(self.best_for));
        // Required and a string in the document: empty when there is no GPU interconnect.
        m.insert("p2p".into(), json!(self.p2p.unwrap_or_default()));
        m.insert(
            "supported_os".into(),
            json!(IMAGES
                .iter()
                .filter(|i| i.compatible_with(self))
                .map(|i| i.image_type)
                .collect::<Vec<_>>()),
        );
        // Optional; a string when present.
        if self.arch == Arch::Volta {
            m.insert(
                "deploy_warning".into(),
                json!("V100 instances do not support images with NVIDIA open kernel modules"),
            );
        }
        Value::Object(m)
    }
}

/// A datacenter location.
#[derive(Debug, Clone, Copy)]
pub struct Location {
    pub code: &'static str,
    pub name: &'static str,
    pub country_code: &'static str,
    /// On-demand inventory.
    pub on_demand: &'static [&'static str],
    /// Spot inventory (asked for separately with `is_spot=true`).
    pub spot: &'static [&'static str],
}

pub const LOCATIONS: &[Location] = &[
    Location {
        code: "FIN-01",
        name: "Finland 1",
        country_code: "FI",
        on_demand: &[
            "1V100.6V",
            "2V100.10V",
            "4V100.20V",
            "8V100.48V",
            "1A100.80S.22V",
            "8A100.80G",
            "1H100.80S.30V",
            "8H100.80S.176V",
            "CPU.4V.16G",
            "CPU.8V.32G",
        ],
        spot: &["1V100.6V", "8V100.48V", "1A100.80S.22V", "1H100.80S.30V"],
    },
    Location {
        code: "FIN-02",
        name: "Finland 2",
        country_code: "FI",
        on_demand: &[
            "1V100.6V",
            "2V100.10V",
            "4V100.20V",
            "8V100.48V",
            "1A100.80S.22V",
            "8A100.80G",
            "CPU.4V.16G",
        ],
        spot: &[],
    },
    Location {
        code: "FIN-03",
        name: "Finland 3",
        country_code: "FI",
        on_demand: &[
            "1V100.6V",
            "1A100.80S.22V",
            "1H100.80S.30V",
            "CPU.4V.16G",
            "CPU.8V.32G",
        ],
        spot: &["1V100.6V"],
    },
    Location {
        code: "ICE-01",
        name: "Iceland 1",
        country_code: "IS",
        on_demand: &[
            "1A100.80S.22V",
            "8A100.80G",
            "1H100.80S.30V",
            "8H100.80S.176V",
            "CPU.4V.16G",
        ],
        spot: &["1H100.80S.30V"],
    },
];

pub fn location(code: &str) -> Option<&'static Location> {
    LOCATIONS.iter().find(|l| l.code == code)
}

impl Location {
    pub fn inventory(&self, is_spot: bool) -> &'static [&'static str] {
        if is_spot {
            self.spot
        } else {
            self.on_demand
        }
    }

    pub fn has(&self, instance_type: &str, is_spot: bool) -> bool {
        self.inventory(is_spot).contains(&instance_type)
    }
}

/// An OS image.
#[derive(Debug, Clone, Copy)]
pub struct Image {
    pub id: &'static str,
    pub name: &'static str,
    pub image_type: &'static str,
    pub details: &'static [&'static str],
    pub cuda: Option<&'static str>,
    /// Uses NVIDIA's open kernel modules: not supported on Volta.
    pub open_modules: bool,
    pub is_cluster: bool,
}

pub const IMAGES: &[Image] = &[
    Image {
        id: "0888da25-8a8e-4c3f-9a7b-2d6f1c0e0001",
        name: "Ubuntu 24.04 + CUDA 12.8 Open + Docker",
        image_type: "ubuntu-24.04-cuda-12.8-open-docker",
        details: &["Ubuntu 24.04", "CUDA 12.8", "Open kernel modules", "Docker"],
        cuda: Some("12.8"),
        open_modules: true,
        is_cluster: false,
    },
    Image {
        id: "0888da25-8a8e-4c3f-9a7b-2d6f1c0e0002",
        name: "Ubuntu 22.04 + CUDA 12.0 + Docker",
        image_type: "ubuntu-22.04-cuda-12.0-docker",
        details: &["Ubuntu 22.04", "CUDA 12.0", "Docker"],
        cuda: Some("12.0"),
        open_modules: false,
        is_cluster: false,
    },
    Image {
        id: "0888da25-8a8e-4c3f-9a7b-2d6f1c0e0003",
        name: "Ubuntu 22.04 + CUDA 12.0",
        image_type: "ubuntu-22.04-cuda-12.0",
        details: &["Ubuntu 22.04", "CUDA 12.0"],
        cuda: Some("12.0"),
        open_modules: false,
        is_cluster: false,
    },
    Image {
        id: "0888da25-8a8e-4c3f-9a7b-2d6f1c0e0004",
        name: "Ubuntu 20.04 + CUDA 11.0",
        image_type: "ubuntu-20.04-cuda-11.0",
        details: &["Ubuntu 20.04", "CUDA 11.0"],
        cuda: Some("11.0"),
        open_modules: false,
        is_cluster: false,
    },
    Image {
        id: "0888da25-8a8e-4c3f-9a7b-2d6f1c0e0005",
        name: "Ubuntu 22.04",
        image_type: "ubuntu-22.04",
        details: &["Ubuntu 22.04"],
        cuda: None,
        open_modules: false,
        is_cluster: false,
    },
    Image {
        id: "0888da25-8a8e-4c3f-9a7b-2d6f1c0e0006",
        name: "Ubuntu 24.04",
        image_type: "ubuntu-24.04",
        details: &["Ubuntu 24.04"],
        cuda: None,
        open_modules: false,
        is_cluster: false,
    },
    Image {
        id: "0888da25-8a8e-4c3f-9a7b-2d6f1c0e0007",
        name: "Ubuntu 22.04 + CUDA 12.4 Cluster",
        image_type: "ubuntu-22.04-cuda-12.4-cluster",
        details: &["Ubuntu 22.04", "CUDA 12.4", "InfiniBand", "Cluster"],
        cuda: Some("12.4"),
        open_modules: false,
        is_cluster: true,
    },
];

/// Looks an image up by `image_type` or by `id`, as the deploy endpoint accepts either.
pub fn image(key: &str) -> Option<&'static Image> {
    IMAGES.iter().find(|i| i.image_type == key || i.id == key)
}

impl Image {
    /// Whether this image can be deployed on `t`.
    pub fn compatible_with(&self, t: &InstanceType) -> bool {
        if self.is_cluster {
            // Cluster images are for cluster deployments, never a single instance.
            return false;
        }
        match (t.arch, self.cuda) {
            (Arch::Cpu, Some(_)) => false,
            (Arch::Cpu, None) => true,
            (Arch::Volta, _) if self.open_modules => false,
            // CUDA 11.0 predates Hopper support (11.8).
            (Arch::Hopper, Some("11.0")) => false,
            _ => true,
        }
    }

    /// One element of `GET /images`. `default_for` marks the default image of the filtered
    /// instance type (or the global default without a filter).
    pub fn to_json(&self, default_for: Option<&InstanceType>) -> Value {
        let is_default = match default_for {
            None => self.image_type == "ubuntu-24.04-cuda-12.8-open-docker",
            Some(t) => self.image_type == default_image_for(t),
        };
        json!({
            "id": self.id,
            "name": self.name,
            "image_type": self.image_type,
            "details": self.details,
            "is_default": is_default,
            "is_cluster": self.is_cluster,
            "category": "ubuntu",
        })
    }
}

fn default_image_for(t: &InstanceType) -> &'static str {
    match t.arch {
        Arch::Cpu => "ubuntu-24.04",
        Arch::Volta => "ubuntu-22.04-cuda-12.0-docker",
        Arch::Ampere | Arch::Hopper => "ubuntu-24.04-cuda-12.8-open-docker",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn catalog_is_consistent() {
        // Every type named in an inventory exists, and every type is deployable somewhere.
        for loc in LOCATIONS {
            for t in loc.on_demand.iter().chain(loc.spot) {
                assert!(instance_type(t).is_some(), "{t} in {}", loc.code);
            }
        }
        for t in INSTANCE_TYPES {
            assert!(LOCATIONS.iter().any(|l| l.has(t.instance_type, false)));
            assert!(IMAGES.iter().any(|i| i.compatible_with(t)));
            assert!(t.hourly_price(false) > t.hourly_price(true));
            // The default image must be compatible.
            assert!(image(default_image_for(t)).unwrap().compatible_with(t));
        }
    }

    #[test]
    fn compatibility_rules() {
        let cpu = instance_type("CPU.4V.16G").unwrap();
        let v100 = instance_type("1V100.6V").unwrap();
        let h100 = instance_type("1H100.80S.30V").unwrap();
        assert!(!image("ubuntu-22.04-cuda-12.0")
            .unwrap()
            .compatible_with(cpu));
        assert!(image("ubuntu-22.04").unwrap().compatible_with(cpu));
        assert!(!image("ubuntu-24.04-cuda-12.8-open-docker")
            .unwrap()
            .compatible_with(v100));
        assert!(!image("ubuntu-20.04-cuda-11.0")
            .unwrap()
            .compatible_with(h100));
        assert!(image("0888da25-8a8e-4c3f-9a7b-2d6f1c0e0002")
            .unwrap()
            .compatible_with(h100));
    }
}
